//! Runs the sources: each on its interval, all at once on request
//! (`POST /api/v1/sync`), always one sync at a time and in the configured
//! order (manifest sources before the work file that uses their templates).

use crate::{Source, SyncOutcome};
use george_store::Store;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A request to sync every source now; the reply carries each outcome.
#[derive(Debug)]
pub struct SyncRequest {
    /// Where to send the outcomes.
    pub reply: oneshot::Sender<Vec<SyncOutcome>>,
}

/// Polls sources and answers sync requests.
#[derive(Debug)]
pub struct SourceRunner {
    sources: Vec<Arc<dyn Source>>,
    store: Arc<dyn Store>,
}

impl SourceRunner {
    /// A runner over `sources`, in order.
    pub fn new(sources: Vec<Arc<dyn Source>>, store: Arc<dyn Store>) -> Self {
        Self { sources, store }
    }

    /// Syncs every source once, in order.
    pub async fn sync_all(&self) -> Vec<SyncOutcome> {
        let mut out = Vec::with_capacity(self.sources.len());
        for s in &self.sources {
            out.push(self.sync_one(s.as_ref()).await);
        }
        out
    }

    async fn sync_one(&self, source: &dyn Source) -> SyncOutcome {
        match source.sync(self.store.as_ref()).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(source = source.name(), error = %e, "source sync failed");
                SyncOutcome { source: source.name().into(), errors: vec![e.to_string()], ..Default::default() }
            }
        }
    }

    /// Runs until `shutdown`: syncs every source once (then says so on
    /// `applied`), then each source when due and every source on request.
    pub async fn run(
        self,
        mut requests: mpsc::Receiver<SyncRequest>,
        shutdown: CancellationToken,
        applied: oneshot::Sender<()>,
    ) {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = self.sync_all() => {}
        }
        let _ = applied.send(());
        let now = Instant::now();
        let mut due: Vec<Instant> = self.sources.iter().map(|s| now + s.interval()).collect();
        loop {
            let next = due.iter().min().copied();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                req = requests.recv() => {
                    let Some(req) = req else { return };
                    let outcomes = self.sync_all().await;
                    let now = Instant::now();
                    for (d, s) in due.iter_mut().zip(&self.sources) {
                        *d = now + s.interval();
                    }
                    let _ = req.reply.send(outcomes);
                }
                _ = async { match next { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    let now = Instant::now();
                    for (i, s) in self.sources.iter().enumerate() {
                        if due[i] <= now {
                            self.sync_one(s.as_ref()).await;
                            due[i] = Instant::now() + s.interval();
                        }
                    }
                }
            }
        }
    }
}
