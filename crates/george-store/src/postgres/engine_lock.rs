//! One engine per database: a session-level advisory lock that an engine
//! holds on a connection of its own for as long as it runs. A second engine
//! on the same database is refused at start; when the holder dies (even by
//! `kill -9`) its connection closes and PostgreSQL releases the lock. The
//! holder checks its connection every few seconds: if it broke, the lock is
//! gone (another engine may take it), and [`EngineLock::lost`] says so, so
//! the engine stops rather than act beside another. Leader election
//! (several replicas, one leading, fenced writes) replaces this lock.

use super::{describe, parse_config, ENGINE_LOCK};
use crate::{Result, StoreError};
use std::sync::mpsc;
use std::time::Duration;

/// How often the holder checks that its connection (and so the lock) is alive.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Held while the engine runs; dropping it releases the lock.
#[derive(Debug)]
pub struct EngineLock {
    /// Closing this ends the thread that holds the connection.
    _release: mpsc::Sender<()>,
    lost: Option<tokio::sync::oneshot::Receiver<String>>,
}

impl EngineLock {
    /// Resolves when the lock was lost (its connection broke), with why.
    /// Never resolves while the lock is held; once taken, it stays pending.
    pub async fn lost(&mut self) -> String {
        match self.lost.as_mut() {
            Some(rx) => {
                let why = rx.await.unwrap_or_else(|_| "the lock's holder stopped".into());
                self.lost = None;
                why
            }
            None => std::future::pending().await,
        }
    }
}

/// Takes the engine lock of the database at `url`, or says who cannot.
pub fn lock_engine(url: &str) -> Result<EngineLock> {
    let config = parse_config(url)?;
    let database = describe(&config);
    let (taken_tx, taken_rx) = mpsc::channel::<Result<()>>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<String>();
    // The synchronous client runs its own runtime: keep it on a thread of its own.
    std::thread::Builder::new()
        .name("george-engine-lock".into())
        .spawn(move || {
            let taken = (|| -> Result<postgres::Client> {
                let mut client = config.connect(postgres::NoTls)?;
                let got: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&ENGINE_LOCK])?.try_get(0)?;
                if !got {
                    return Err(StoreError::Conflict(format!(
                        "another george engine is running on the database {database}; several engines on one \
                         database need leader election, which this version does not have yet"
                    )));
                }
                Ok(client)
            })();
            match taken {
                Ok(mut client) => {
                    let _ = taken_tx.send(Ok(()));
                    // Held until the engine drops its EngineLock (or the process ends).
                    while let Err(mpsc::RecvTimeoutError::Timeout) = release_rx.recv_timeout(CHECK_EVERY) {
                        if let Err(e) = client.simple_query("SELECT 1") {
                            tracing::error!(error = %e, "lost the connection that holds the engine lock");
                            let _ = lost_tx.send(format!("the connection holding the engine lock broke: {e}"));
                            break;
                        }
                    }
                    drop(client);
                }
                Err(e) => {
                    let _ = taken_tx.send(Err(e));
                }
            }
        })
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
    let taken = taken_rx.recv().map_err(|e| StoreError::Backend(Box::new(e)))?;
    taken.map(|()| EngineLock { _release: release_tx, lost: Some(lost_rx) })
}
