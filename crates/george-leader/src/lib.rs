//! Leader election for engine replicas sharing one PostgreSQL database.
//! Every replica serves the API; only the one holding the lease runs the
//! engine (sources, triggers, scheduler, reconciler, Jira write-back). The
//! leader renews every `retryPeriod` and gives up leading when it could not
//! renew for `renewDeadline`, which is shorter than `leaseDuration`, so it
//! stops before anyone else may take over.
//!
//! The lease is a [`LeaseLock`], with two implementations: a PostgreSQL
//! lease row whose expiry is judged by the database's clock
//! ([`postgres::PostgresLease`]), and a Kubernetes `coordination.k8s.io/v1`
//! Lease updated with a `resourceVersion` precondition and judged by local
//! monotonic time, as client-go does ([`kubernetes::KubernetesLease`]).
//!
//! Either way, the leader's store writes are fenced by its term's epoch
//! ([`george_store::Fence`]): a leader that was paused past its lease has
//! every write refused once it wakes up. A replica that lost the lease stops
//! and exits with an error; its supervisor restarts it as a standby, with
//! fresh in-memory state.

pub mod kubernetes;
pub mod postgres;

use async_trait::async_trait;
use george_store::{Fence, PostgresStore, StoreError};
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
    pub fn check(&self) -> Result<(), TimingsError> {
        if !(self.retry < self.renew_deadline && self.renew_deadline < self.lease) {
            return Err(TimingsError(*self));
        }
        Ok(())
    }
}

/// Timings out of the order the election relies on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "engine.leaderElection: expected retryPeriod < renewDeadline < leaseDuration, got {:?} < {:?} < {:?}",
    .0.retry,
    .0.renew_deadline,
    .0.lease
)]
pub struct TimingsError(pub Timings);

/// Why the lease could not be campaigned for or given up.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The PostgreSQL store (its lease row, or the term recorded for fencing) failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Kubernetes API failed on the Lease.
    #[error("{action} Lease {name}: {source}")]
    Kubernetes {
        /// What was done (`get`, `create`, `update`, `release`).
        action: &'static str,
        /// The Lease's name.
        name: String,
        /// The API's error.
        #[source]
        source: kube::Error,
    },
    /// The store has recorded a newer term than the one won: this one is over.
    #[error("the store has recorded a term newer than {0}; this term is over")]
    Superseded(i64),
    /// The backend did not answer in time.
    #[error("no answer from the lease's backend in time")]
    Timeout,
}

/// A lease one replica at a time may hold.
#[async_trait]
pub trait LeaseLock: Send + Sync + std::fmt::Debug {
    /// Takes the lease for this replica if it is free or expired, or renews
    /// it if this replica holds it. Returns the term's epoch (which grows
    /// with every change of hands) when held, `None` when another holds it.
    async fn try_acquire_or_renew(&self) -> Result<Option<i64>, LeaseError>;
    /// Gives the lease up at once, if this replica holds it.
    async fn release(&self) -> Result<(), LeaseError>;
}

/// One replica's candidacy.
#[derive(Debug, Clone)]
pub struct Election {
    lock: std::sync::Arc<dyn LeaseLock>,
    store: PostgresStore,
    holder: String,
    timings: Timings,
}

impl Election {
    /// A candidacy for `holder` (unique per process) on `lock`; `store` is fenced with each term.
    pub fn new(lock: std::sync::Arc<dyn LeaseLock>, store: PostgresStore, holder: String, timings: Timings) -> Self {
        Self { lock, store, holder, timings }
    }

    /// This replica's name in the lease.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// One campaign, given up after half the renew deadline: a partitioned
    /// replica's call may hang on a dead connection, and the renew deadline
    /// must still be judged on time.
    async fn campaign(&self) -> Result<Option<i64>, LeaseError> {
        let call = self.lock.try_acquire_or_renew();
        match tokio::time::timeout(self.timings.renew_deadline / 2, call).await {
            Ok(result) => result,
            Err(_) => Err(LeaseError::Timeout),
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
        if let Err(e) = self.lock.release().await {
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
