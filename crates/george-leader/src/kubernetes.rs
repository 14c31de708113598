//! The lease as a Kubernetes `coordination.k8s.io/v1` Lease, the way
//! client-go's leader election holds one:
//!
//! - Every update is a `replace` carrying the `resourceVersion` that was
//!   read, so of two replicas racing for the lease the API server accepts
//!   one and answers the other `409 Conflict`.
//! - Expiry is judged by **local monotonic time**, never by comparing the
//!   Lease's timestamps with this machine's clock: a replica remembers when
//!   it first saw the current record (holder, renew time, transitions) and
//!   takes the lease only when that record has not changed for
//!   `leaseDurationSeconds`. Clock skew between replicas cannot shorten a
//!   lease.
//! - `leaseTransitions` grows every time the lease is taken by a new term
//!   (unlike client-go, also when a holder takes back a lease it let
//!   expire); the term's epoch is `leaseTransitions + 1`.
//! - Fencing: the store checks writes against the `leases` row of the
//!   PostgreSQL store, so each term won here is recorded there
//!   ([`PostgresStore::record_term`]) before it counts: from then on, the
//!   writes of every older term are refused.

use super::{LeaseError, LeaseLock, LEASE};
use async_trait::async_trait;
use george_store::PostgresStore;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::PostParams;
use kube::Api;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A monotonic clock: time elapsed since some fixed start.
pub type MonotonicClock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// The system's monotonic clock.
pub fn system_clock() -> MonotonicClock {
    let start = Instant::now();
    Arc::new(move || start.elapsed())
}

/// What this replica last saw of the Lease, and when (by its own clock).
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    holder: Option<String>,
    renew: Option<MicroTime>,
    transitions: Option<i32>,
    duration: Duration,
    at: Duration,
}

/// A replica's bid for one Kubernetes Lease.
pub struct KubernetesLease {
    api: Api<Lease>,
    name: String,
    holder: String,
    duration: Duration,
    store: PostgresStore,
    clock: MonotonicClock,
    observed: Mutex<Option<Observed>>,
}

impl std::fmt::Debug for KubernetesLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesLease")
            .field("name", &self.name)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl KubernetesLease {
    /// `holder`'s bid for the Lease `name` (in `api`'s namespace), held for
    /// `duration` per renewal; terms are recorded in `store` for fencing.
    pub fn new(
        api: Api<Lease>,
        name: &str,
        holder: String,
        duration: Duration,
        store: PostgresStore,
        clock: MonotonicClock,
    ) -> Self {
        Self { api, name: name.to_string(), holder, duration, store, clock, observed: Mutex::new(None) }
    }

    fn observed(&self) -> parking_lot::MutexGuard<'_, Option<Observed>> {
        self.observed.lock()
    }

    /// Notes the Lease's record; returns when this replica first saw it unchanged.
    fn observe(&self, spec: &LeaseSpec) -> Observed {
        let now = (self.clock)();
        let seen = Observed {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew: spec.renew_time.clone(),
            transitions: spec.lease_transitions,
            duration: spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(s.max(1) as u64))
                .unwrap_or(self.duration),
            at: now,
        };
        let mut observed = self.observed();
        match observed.as_ref() {
            Some(o) if (&o.holder, &o.renew, o.transitions) == (&seen.holder, &seen.renew, seen.transitions) => {
                o.clone()
            }
            _ => {
                *observed = Some(seen.clone());
                seen
            }
        }
    }

    fn spec_for(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let mine = previous.and_then(|p| p.holder_identity.as_deref()) == Some(self.holder.as_str());
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            acquire_time: if mine { previous.and_then(|p| p.acquire_time.clone()) } else { Some(now.clone()) },
            renew_time: Some(now),
            lease_transitions: Some(match previous {
                None => 0,
                Some(_) if mine => transitions,
                Some(_) => transitions + 1,
            }),
            ..Default::default()
        }
    }

    fn failed(&self, action: &'static str) -> impl FnOnce(kube::Error) -> LeaseError + '_ {
        move |source| LeaseError::Kubernetes { action, name: self.name.clone(), source }
    }

    /// Takes or renews the Lease in the API server. `Some(epoch)` when held.
    async fn claim(&self) -> Result<Option<i64>, LeaseError> {
        let current = self.api.get_opt(&self.name).await.map_err(self.failed("get"))?;
        let written = match current {
            None => {
                let mut lease = Lease { spec: Some(self.spec_for(None)), ..Default::default() };
                lease.metadata.name = Some(self.name.clone());
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(l) => l,
                    Err(e) if conflict(&e) => return Ok(None),
                    Err(e) => return Err(self.failed("create")(e)),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let seen = self.observe(&spec);
                let mine = seen.holder.as_deref() == Some(self.holder.as_str());
                let expired = (self.clock)() >= seen.at + seen.duration;
                if !mine && seen.holder.is_some() && !expired {
                    return Ok(None);
                }
                let mut next = self.spec_for(Some(&spec));
                if mine && expired {
                    // This holder let its lease lapse: what follows is a new term.
                    next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                lease.spec = Some(next);
                // `lease.metadata.resourceVersion` is what was read: the precondition.
                match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                    Ok(l) => l,
                    Err(e) if conflict(&e) => return Ok(None),
                    Err(e) => return Err(self.failed("update")(e)),
                }
            }
        };
        let spec = written.spec.unwrap_or_default();
        self.observe(&spec);
        Ok(Some(spec.lease_transitions.unwrap_or(0) as i64 + 1))
    }
}

#[async_trait]
impl LeaseLock for KubernetesLease {
    async fn try_acquire_or_renew(&self) -> Result<Option<i64>, LeaseError> {
        let Some(epoch) = self.claim().await? else { return Ok(None) };
        match self.store.record_term(LEASE, &self.holder, epoch, self.duration).await? {
            true => Ok(Some(epoch)),
            false => Err(LeaseError::Superseded(epoch)),
        }
    }

    async fn release(&self) -> Result<(), LeaseError> {
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(self.failed("get"))? else { return Ok(()) };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.holder.as_str()) {
            return Ok(());
        }
        // As client-go: an empty holder, a one-second lease, renewed now.
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        lease.spec = Some(spec);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => {}
            Err(e) if conflict(&e) => {}
            Err(e) => return Err(self.failed("release")(e)),
        }
        Ok(self.store.resign(LEASE, &self.holder).await?)
    }
}
