//! LLM metering in one place. An agent's call is routed, paced and
//! reserved here ([`Meter`]); the reservation is a [`Metered`] guard that
//! is settled with the provider's figures — or, when the HTTP side drops it
//! unsettled (the agent hung up mid-stream, the server shuts down), settled
//! by the engine's task tracker with the best figures seen, else the
//! reservation's worst case. The guard holds the tracker open, so an engine
//! that stops waits for every call's usage to reach the ledger: none is lost
//! at shutdown. The HTTP handler only forwards bytes.

use crate::context::Context;
use crate::family_budget::{FamilyError, FamilyHold};
use crate::llm::{self, Route, RouteError};
use george_governor::{Pace, Refusal, Reservation, Usage};
use george_store::StoreError;
use std::sync::Arc;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// The engine's LLM meter (a focused handle for the proxy).
#[derive(Debug, Clone)]
pub struct Meter {
    pub(crate) ctx: Arc<Context>,
}

/// Why a call was not reserved.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    /// A budget refused it; the job is blocked.
    #[error("{0}")]
    Refused(Refusal),
    /// The job's family budget refused it; the job is blocked.
    #[error("{0}")]
    FamilyRefused(String),
    /// The store failed while blocking the job.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Meter {
    /// Where a call by the agent of `job`'s `attempt` goes.
    pub async fn route(&self, job: &str, attempt: u32) -> Result<Route, RouteError> {
        llm::route(&self.ctx, job, attempt).await
    }

    /// The output cap of a call by an agent of `agent_spec` that asked for
    /// `requested` (the smallest cap it gave).
    pub fn cap(&self, agent_spec: &str, requested: Option<u64>) -> u64 {
        self.ctx.governor.cap(agent_spec, requested)
    }

    /// Whether a call of `needed` tokens must first wait for a rate limit.
    pub async fn pace(&self, route: &Route, needed: u64) -> Result<Option<Pace>, StoreError> {
        llm::pace(&self.ctx, route, needed).await
    }

    /// Reserves the call's worst case (`input` estimated, `output` at most)
    /// against every budget. A refusal blocks the job.
    pub async fn reserve(&self, route: Route, input: u64, output: u64) -> Result<Metered, ReserveError> {
        let family = self.reserve_family(&route, input.saturating_add(output)).await?;
        let now = self.ctx.clock.now();
        match self.ctx.governor.reserve(route.charge.clone(), input, output, now) {
            Ok(reservation) => Ok(Metered {
                ctx: self.ctx.clone(),
                route,
                reservation,
                family,
                seen: None,
                settled: false,
                _held: self.ctx.tasks.token(),
            }),
            Err(refusal) => {
                if let Some(hold) = family {
                    self.ctx.family.release(hold);
                }
                llm::refused(&self.ctx, &route, &refusal).await?;
                Err(ReserveError::Refused(refusal))
            }
        }
    }

    /// Holds `needed` against the job's family budget, if it has one.
    async fn reserve_family(&self, route: &Route, needed: u64) -> Result<Option<FamilyHold>, ReserveError> {
        let store = self.ctx.store.as_ref();
        let Some(job) = store.get_job(&route.charge.job).await? else { return Ok(None) };
        let catalog = self.ctx.catalog.get(store).await?;
        match self.ctx.family.reserve(store, &catalog, &job, needed).await {
            Ok(hold) => Ok(hold),
            Err(FamilyError::Store(e)) => Err(e.into()),
            Err(e @ FamilyError::Exhausted { .. }) => {
                llm::refused_family(&self.ctx, route, &e).await?;
                Err(ReserveError::FamilyRefused(e.to_string()))
            }
        }
    }

    /// The token governor's accounts.
    pub fn governor(&self) -> &george_governor::Governor {
        &self.ctx.governor
    }

    /// The HTTP client for providers.
    pub fn http(&self) -> &reqwest::Client {
        &self.ctx.http
    }
}

/// A reserved call, until its usage is in the ledger.
#[derive(Debug)]
pub struct Metered {
    ctx: Arc<Context>,
    route: Route,
    reservation: Reservation,
    /// Its hold on the job's family budget, given back once the usage is in the ledger.
    family: Option<FamilyHold>,
    /// The provider's figures as far as they arrived (a stream's usage chunk).
    seen: Option<Usage>,
    settled: bool,
    /// Keeps the engine's shutdown waiting until the call is settled.
    _held: TaskTrackerToken,
}

impl Metered {
    /// Where the call goes.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// The provider's figures, when they arrived; else the reservation's
    /// worst case, so budgets stay on the safe side.
    pub fn usage_or_worst_case(&self, usage: Option<Usage>) -> Usage {
        usage.unwrap_or_else(|| {
            tracing::warn!(job = %self.route.charge.job, "no usage figures from the provider; charging the call's worst case");
            Usage { input: self.reservation.tokens.saturating_sub(self.reservation.cap), output: self.reservation.cap }
        })
    }

    /// Notes the provider's figures seen so far (used if the call is dropped).
    pub fn saw(&mut self, usage: Option<Usage>) {
        if usage.is_some() {
            self.seen = usage;
        }
    }

    /// Records the finished call: the ledger row and the governor's
    /// accounts (once; a second settle does nothing).
    pub async fn settle(&mut self, usage: Option<Usage>, streamed: bool) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        if let Err(e) = llm::finish(&self.ctx, &self.route, &self.reservation, usage, streamed).await {
            tracing::warn!(error = %e, job = %self.route.charge.job, "cannot record LLM usage");
        }
        if let Some(hold) = self.family.take() {
            self.ctx.family.release(hold);
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let usage = Some(self.usage_or_worst_case(self.seen));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(job = %self.route.charge.job, "an LLM call was dropped outside the runtime; its usage is not recorded");
            return;
        };
        let (ctx, route, reservation) = (self.ctx.clone(), self.route.clone(), self.reservation.clone());
        let family = self.family.take();
        // Tracked: the engine's shutdown waits for it.
        self.ctx.tasks.spawn_on(
            async move {
                if let Err(e) = llm::finish(&ctx, &route, &reservation, usage, true).await {
                    tracing::warn!(error = %e, job = %route.charge.job, "cannot record LLM usage");
                }
                if let Some(hold) = family {
                    ctx.family.release(hold);
                }
            },
            &runtime,
        );
    }
}
