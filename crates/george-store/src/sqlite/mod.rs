//! The embedded store: one SQLite file in WAL mode. Writes go through one
//! connection in `BEGIN IMMEDIATE` transactions, so a transaction takes the
//! write lock up front and two writers can never deadlock upgrading a read
//! lock; reads use [`READERS`] read-only connections and never block writes.

mod dialect;

use crate::dialect::Writer;
use dialect::Lite;

use crate::delegate::impl_store;
use crate::{Event, Result, StoreError};
use george_core::{Clock, SystemClock};
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::broadcast;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/0001_init.sql")),
    (2, include_str!("../../migrations/0002_triggers.sql")),
    (3, include_str!("../../migrations/0003_ledger.sql")),
    (4, include_str!("../../migrations/0004_settings.sql")),
    (5, include_str!("../../migrations/0005_attempts_by_start.sql")),
    (6, include_str!("../../migrations/0006_retention.sql")),
    (7, include_str!("../../migrations/0007_step_graph.sql")),
    (8, include_str!("../../migrations/0008_labels.sql")),
];

/// Prepared statements kept per connection: more than the store has.
const STATEMENT_CACHE: usize = 128;

/// Read-only connections: reads run side by side (WAL gives each its own
/// snapshot), as many at once as this machine's cores usually allow.
const READERS: usize = 2;

/// The SQLite implementation of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<Event>,
    path: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.path).finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` with the system clock.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    /// Opens the store with a given clock (tests use a manual one).
    pub fn open_with_clock(path: impl AsRef<Path>, clock: Arc<dyn Clock>) -> Result<Self> {
        let path = path.as_ref();
        let writer = Connection::open(path)?;
        configure(&writer)?;
        migrate(&writer)?;
        let readers = (0..READERS)
            .map(|_| {
                let reader = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
                )?;
                configure(&reader)?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<Vec<_>>>()?;
        let (events, _) = broadcast::channel(4096);
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                next_reader: Default::default(),
                clock,
                events,
                path: path.display().to_string(),
            }),
        })
    }

    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer<Lite<'_>>) -> Result<T> + Send + 'static,
    {
        Ok(self.transact(f).await?.0)
    }

    /// Runs `f` in a write transaction, broadcasts the events it committed,
    /// and returns what it returned with them.
    async fn transact<T, F>(&self, f: F) -> Result<(T, Vec<Event>)>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer<Lite<'_>>) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let (value, events) = tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Stored with microseconds: what a write returns (and broadcasts) equals what a read gives.
            let now = chrono::SubsecRound::trunc_subsecs(inner.clock.now(), 6);
            let mut w = Writer::new(Lite(&tx), now);
            let value = f(&mut w)?;
            let events = std::mem::take(&mut w.events);
            tx.commit()?;
            Ok::<_, StoreError>((value, events))
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))??;
        for e in &events {
            // No receiver is fine: nobody is watching.
            let _ = self.inner.events.send(e.clone());
        }
        Ok((value, events))
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Lite<'_>) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = crate::readers::pick(&inner.readers, &inner.next_reader, |r| !r.is_locked()).lock();
            f(&mut Lite(&conn))
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    fn events(&self) -> &broadcast::Sender<Event> {
        &self.inner.events
    }
}

fn configure(conn: &Connection) -> Result<()> {
    // Every statement the store runs stays prepared.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if !conn.is_readonly(rusqlite::MAIN_DB)? {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // In WAL mode NORMAL loses no committed transaction when a process is
        // killed; only an OS crash can lose the last few.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    Ok(())
}

fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (v, sql) in MIGRATIONS {
        if *v > version {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", v)?;
            tx.commit()?;
        }
    }
    let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if version > latest {
        return Err(StoreError::Invalid(format!(
            "the database schema is version {version} but this george only knows up to {latest}; upgrade george"
        )));
    }
    Ok(())
}

impl_store!(SqliteStore);
