//! Leader election for engine replicas sharing one PostgreSQL database.
//! Every replica serves the API; only the one holding the lease runs the
//! engine (sources, triggers, scheduler, reconciler, Jira write-back). The
//! lease's expiry is judged by the database's clock; the leader renews every
//! `retryPeriod` and gives up leading when it could not renew for
//! `renewDeadline`, which is shorter than `leaseDuration`, so it stops
//! before anyone else may take over. Its store writes are fenced by its
//! term's epoch ([`george_store::Fence`]): a leader that was paused past its
//! lease has every write refused once it wakes up. A replica that lost the
//! lease stops and exits with an error; its supervisor restarts it as a
//! standby, with fresh in-memory state.

use george_store::{Fence, PostgresStore};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The lease every replica of one database competes for.
pub const LEASE: &str = "george-engine";

/// How the lease is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long a lease lasts without renewal (default 15s).
    pub lease: Duration,
    /// How long the leader keeps leading while renewals fail (default 10s).
    pub renew_deadline: Duration,
    /// How often the leader renews and a standby tries (default 2s).
    pub retry: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self { lease: Duration::from_secs(15), renew_deadline: Duration::from_secs(10), retry: Duration::from_secs(2) }
    }
}

impl Timings {
    /// Checks the order the election relies on.
    pub fn check(&self) -> anyhow::Result<()> {
        if !(self.retry < self.renew_deadline && self.renew_deadline < self.lease) {
            anyhow::bail!(
                "engine.leaderElection: expected retryPeriod < renewDeadline < leaseDuration, got {:?} < {:?} < {:?}",
                self.retry,
                self.renew_deadline,
                self.lease
            );
        }
        Ok(())
    }
}

/// One replica's candidacy.
#[derive(Debug, Clone)]
pub struct Election {
    store: PostgresStore,
    holder: String,
    timings: Timings,
}

impl Election {
    /// A candidacy for `holder` (unique per process).
    pub fn new(store: PostgresStore, holder: String, timings: Timings) -> Self {
        Self { store, holder, timings }
    }

    /// This replica's name in the lease.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// One campaign, given up after half the renew deadline: a partitioned
    /// replica's call may hang on a dead connection, and the renew deadline
    /// must still be judged on time.
    async fn campaign(&self) -> Result<Option<i64>, String> {
        let call = self.store.campaign(LEASE, &self.holder, self.timings.lease);
        match tokio::time::timeout(self.timings.renew_deadline / 2, call).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("no answer from the database in time".into()),
        }
    }

    /// Waits until this replica holds the lease; fences the store with the
    /// term and returns its epoch. `None` if `shutdown` came first.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> Option<i64> {
        loop {
            match self.campaign().await {
                Ok(Some(epoch)) => {
                    self.store.set_fence(Some(Fence { lease: LEASE.into(), holder: self.holder.clone(), epoch }));
                    tracing::info!(holder = %self.holder, epoch, "leading: this replica holds the lease");
                    return Some(epoch);
                }
                Ok(None) => tracing::debug!(holder = %self.holder, "standby: another replica leads"),
                Err(e) => tracing::warn!(holder = %self.holder, error = %e, "cannot campaign for the lease"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(self.timings.retry) => {}
            }
        }
    }

    /// Gives the lease up at once, so a standby takes over at its next try.
    pub async fn resign(&self) {
        if let Err(e) = self.store.resign(LEASE, &self.holder).await {
            tracing::warn!(error = %e, "cannot resign the lease; it expires on its own");
        }
    }

    /// Renews the lease of term `epoch` until it is lost (returns why) or
    /// `shutdown` (returns `None`, after resigning so a standby takes over at once).
    pub async fn hold(&self, epoch: i64, shutdown: &CancellationToken) -> Option<String> {
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.resign().await;
                    return None;
                }
                _ = tokio::time::sleep(self.timings.retry) => {}
            }
            match self.campaign().await {
                Ok(Some(e)) if e == epoch => renewed = Instant::now(),
                Ok(Some(e)) => {
                    return Some(format!("the lease lapsed and a new term ({e}) began; term {epoch} is over"))
                }
                Ok(None) => return Some(format!("another replica took the lease; term {epoch} is over")),
                Err(e) if renewed.elapsed() >= self.timings.renew_deadline => {
                    return Some(format!("could not renew the lease for {:?}: {e}", self.timings.renew_deadline))
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the lease; retrying"),
            }
            if renewed.elapsed() >= self.timings.renew_deadline {
                return Some(format!("could not renew the lease for {:?}", self.timings.renew_deadline));
            }
        }
    }
}
