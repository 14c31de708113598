//! The engine's side of the LLM proxy: which provider and model an agent's
//! call goes to, the budgets it is charged against, and what happens after
//! (the ledger, or a blocked job when a budget refuses it).

use crate::context::Context;
use chrono::{DateTime, Utc};
use george_core::api::UsageRecord;
use george_core::manifest::{Chapter, Kind, Policy};
use george_core::{EventKind, JobStatus};
use george_governor::{Budgets, Charge, Level, Limit, Pace, Period, Provider, RateScope, Refusal, Reservation, Usage};
use george_store::StoreError;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// LLM settings of the engine.
#[derive(Debug, Clone, Default)]
pub struct LlmSettings {
    /// Providers by name.
    pub providers: HashMap<String, Provider>,
    /// Provider for agents whose spec names none.
    pub default_provider: Option<String>,
    /// Model for agents whose spec names none.
    pub default_model: Option<String>,
    /// Organisation budgets: tokens per month and per day.
    pub org_monthly: Option<u64>,
    /// See `org_monthly`.
    pub org_daily: Option<u64>,
    /// Output tokens one call may produce when nothing stricter applies.
    pub default_cap: u64,
}

/// Where one agent's call goes and who pays for it.
#[derive(Debug, Clone)]
pub struct Route {
    /// The provider.
    pub provider: Provider,
    /// The model.
    pub model: String,
    /// What the call is charged to.
    pub charge: Charge,
    /// The trace of the calling attempt.
    pub trace: crate::trace::AttemptTrace,
}

/// Why a call cannot be routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The attempt is not the job's current, live one.
    #[error("attempt {attempt} of job `{job}` is superseded; this agent must stop")]
    Superseded {
        /// Job.
        job: String,
        /// Attempt.
        attempt: u32,
    },
    /// No provider or model is configured for this agent.
    #[error("{0}")]
    NotConfigured(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The provider and model an agent's calls go to: its AgentSpec's `llm`
/// choice, else the engine's defaults.
pub(crate) fn choose<'a>(
    ctx: &'a Context,
    choice: Option<&'a george_core::manifest::LlmChoice>,
) -> Result<(&'a Provider, &'a String), RouteError> {
    let llm = &ctx.cfg.llm;
    let name = choice.and_then(|c| c.provider.as_ref()).or(llm.default_provider.as_ref()).ok_or_else(|| {
        RouteError::NotConfigured("no LLM provider is configured (llm.default.provider or --agent-provider)".into())
    })?;
    let provider = llm.providers.get(name).ok_or_else(|| {
        RouteError::NotConfigured(format!("LLM provider `{name}` is not configured under llm.providers"))
    })?;
    let model = choice.and_then(|c| c.model.as_ref()).or(llm.default_model.as_ref()).ok_or_else(|| {
        RouteError::NotConfigured("no LLM model is configured (llm.default.model or --agent-model)".into())
    })?;
    Ok((provider, model))
}

/// The route of a call by the agent of `job`'s `attempt`.
pub(crate) async fn route(ctx: &Arc<Context>, job: &str, attempt: u32) -> Result<Route, RouteError> {
    let superseded = || RouteError::Superseded { job: job.into(), attempt };
    let state = ctx.store.job_state(job).await?.ok_or_else(superseded)?;
    let live = state.current.as_ref().is_some_and(|a| a.attempt == attempt && a.state.is_live());
    if state.job.attempt != attempt || !live {
        return Err(superseded());
    }
    let catalog = ctx.catalog.get(ctx.store.as_ref()).await?;
    let choice = catalog.agents.get(&state.job.agent).and_then(|a| a.spec.llm.as_ref());
    let (provider, model) = choose(ctx, choice).map(|(p, m)| (p.clone(), m.clone()))?;
    let charge = Charge {
        job: job.into(),
        attempt,
        agent_spec: state.job.agent.clone(),
        chapter: state.job.chapter.clone().unwrap_or_default(),
    };
    let trace = crate::trace::AttemptTrace::of(job, state.job.created_at, attempt);
    Ok(Route { provider, model, charge, trace })
}

/// Records a finished call: the ledger row and the governor's accounts.
pub(crate) async fn finish(
    ctx: &Arc<Context>,
    route: &Route,
    reservation: &Reservation,
    usage: Option<Usage>,
    streamed: bool,
) -> Result<(), StoreError> {
    let now = ctx.clock.now();
    let used = usage.map(|u| u.total()).unwrap_or(0);
    ctx.governor.commit(reservation, used, now);
    if let Some(u) = usage {
        for (kind, n) in [("input", u.input), ("output", u.output)] {
            let label = crate::metrics::TokensLabel {
                chapter: route.charge.chapter.clone(),
                agent_spec: route.charge.agent_spec.clone(),
                model: route.model.clone(),
                kind: kind.into(),
            };
            ctx.metrics.llm_tokens.get_or_create(&label).inc_by(n);
        }
        ctx.store
            .record_usage(&UsageRecord {
                ts: now,
                job_id: route.charge.job.clone(),
                attempt: route.charge.attempt,
                agent_spec: route.charge.agent_spec.clone(),
                chapter: route.charge.chapter.clone(),
                provider: route.provider.name.clone(),
                model: route.model.clone(),
                input_tokens: u.input,
                output_tokens: u.output,
                streamed,
            })
            .await?;
    }
    crate::alerts::check(ctx, &route.charge).await
}

/// A budget refused a call: the job is blocked with the reason.
pub(crate) async fn refused(ctx: &Arc<Context>, route: &Route, refusal: &Refusal) -> Result<(), StoreError> {
    let reason = format!("budget exhausted: {refusal}");
    ctx.store
        .record_event(
            Some(&route.charge.job),
            EventKind::BudgetRefused,
            "governor",
            json!({"level": refusal.level, "period": refusal.period, "limit": refusal.limit, "remaining": refusal.remaining, "needed": refusal.needed}),
        )
        .await?;
    match ctx.store.report_job(&route.charge.job, route.charge.attempt, JobStatus::Blocked, Some(&reason)).await {
        Ok(()) | Err(StoreError::Conflict(_)) | Err(StoreError::Superseded { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A job's family budget refused a call: the job is blocked with the reason.
pub(crate) async fn refused_family(
    ctx: &Arc<Context>,
    route: &Route,
    refusal: &crate::family_budget::FamilyError,
) -> Result<(), StoreError> {
    let reason = format!("budget exhausted: {refusal}");
    let data = match refusal {
        crate::family_budget::FamilyError::Exhausted { job, limit, remaining, needed, .. } => {
            json!({"level": {"level": "family", "name": job}, "limit": limit, "remaining": remaining, "needed": needed})
        }
        crate::family_budget::FamilyError::Store(_) => json!({}),
    };
    ctx.store.record_event(Some(&route.charge.job), EventKind::BudgetRefused, "governor", data).await?;
    match ctx.store.report_job(&route.charge.job, route.charge.attempt, JobStatus::Blocked, Some(&reason)).await {
        Ok(()) | Err(StoreError::Conflict(_)) | Err(StoreError::Superseded { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Budgets from the engine settings and the manifests.
pub(crate) async fn configure(ctx: &Arc<Context>) -> Result<(), StoreError> {
    let llm = &ctx.cfg.llm;
    let mut b = Budgets { default_cap: llm.default_cap.max(1), ..Default::default() };
    let mut org_daily = llm.org_daily;
    if let Some(t) = llm.org_monthly {
        b.limits.push(Limit { level: Level::Org, period: Period::Month, tokens: t });
    }
    for m in ctx.store.manifests(Some(Kind::Policy)).await? {
        if let Ok(p) = serde_json::from_value::<Policy>(m.body) {
            if let Some(r) = p.spec.rate_limits {
                b.rates.instance_per_minute = min_of(b.rates.instance_per_minute, r.per_minute);
                b.rates.chapter_per_hour = min_of(b.rates.chapter_per_hour, r.per_hour);
                if let Some(cap) = r.per_invocation {
                    b.default_cap = b.default_cap.min(cap);
                }
                if let Some(d) = r.per_day {
                    org_daily = Some(org_daily.map_or(d, |o| o.min(d)));
                }
            }
        }
    }
    if let Some(t) = org_daily {
        b.limits.push(Limit { level: Level::Org, period: Period::Day, tokens: t });
    }
    for m in ctx.store.manifests(Some(Kind::Chapter)).await? {
        if let Ok(c) = serde_json::from_value::<Chapter>(m.body) {
            if let Some(t) = c.spec.token_budget {
                b.limits.push(Limit {
                    level: Level::Chapter(c.metadata.name.clone()),
                    period: Period::Month,
                    tokens: t,
                });
            }
        }
    }
    for (name, a) in ctx.catalog.get(ctx.store.as_ref()).await?.agents.iter() {
        if let Some(tb) = &a.spec.resources.token_budget {
            if let Some(t) = tb.per_month {
                b.limits.push(Limit { level: Level::Agent(name.clone()), period: Period::Month, tokens: t });
            }
            if let Some(t) = tb.per_day {
                b.limits.push(Limit { level: Level::Agent(name.clone()), period: Period::Day, tokens: t });
            }
            if let Some(cap) = tb.per_invocation {
                b.per_invocation.insert(name.clone(), cap);
            }
            if let Some(t) = tb.per_minute {
                b.rates.agent_per_minute.insert(name.clone(), t);
            }
            if let Some(t) = tb.per_hour {
                b.rates.agent_per_hour.insert(name.clone(), t);
            }
        }
    }
    for (key, value) in ctx.store.settings(THROTTLE_PREFIX).await? {
        if let (Some(chapter), Some(t)) = (key.strip_prefix(THROTTLE_PREFIX), value.as_u64()) {
            b.rates.chapter_throttle.insert(chapter.to_string(), t);
        }
    }
    ctx.governor.configure(b);
    Ok(())
}

/// Settings keys of chapter throttles: `throttle:<chapter>` → tokens per hour.
pub const THROTTLE_PREFIX: &str = "throttle:";

fn min_of(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether a call of `needed` tokens must wait for a rate limit. Each wait
/// is an event on the job; a chapter over its hourly rate also raises a
/// `rate.alert` (once per chapter and hour) and a notification.
pub(crate) async fn pace(ctx: &Arc<Context>, route: &Route, needed: u64) -> Result<Option<Pace>, StoreError> {
    let now = ctx.clock.now();
    let Some(pace) = ctx.governor.pace(&route.charge, needed, now) else { return Ok(None) };
    let wait_ms = pace.wait.num_milliseconds();
    tracing::info!(job = %route.charge.job, scope = %pace.limit.scope, wait_ms, "LLM call paced by a rate limit");
    let data = json!({"scope": pace.limit.scope.to_string(), "limit": pace.limit.tokens, "window_secs": pace.limit.window.num_seconds(), "used": pace.used, "wait_ms": wait_ms});
    ctx.store.record_event(Some(&route.charge.job), EventKind::LlmPaced, "governor", data.clone()).await?;
    if let RateScope::Chapter(chapter) = &pace.limit.scope {
        let key = format!("rate-alert:{chapter}");
        let hour = now.format("%Y-%m-%dT%H").to_string();
        if ctx.store.setting(&key).await?.as_ref().and_then(|v| v.as_str()) != Some(hour.as_str()) {
            ctx.store.set_setting(&key, Some(json!(hour))).await?;
            ctx.store.record_event(None, EventKind::RateAlert, "governor", data).await?;
            crate::alerts::notify(
                ctx,
                Some(chapter),
                &format!(
                    "George rate alert: chapter {chapter} is over its hourly rate ({pace}); its calls are throttled"
                ),
            )
            .await?;
        }
    }
    Ok(Some(pace))
}

/// At start-up: the usage of the current day and month from the ledger.
pub(crate) async fn load_usage(ctx: &Arc<Context>, now: DateTime<Utc>) -> Result<(), StoreError> {
    for period in [Period::Day, Period::Month] {
        let start = period.start(now);
        let mut sums: HashMap<Level, u64> = HashMap::new();
        for t in ctx.store.usage_totals(start).await? {
            let n = t.input_tokens + t.output_tokens;
            *sums.entry(Level::Org).or_default() += n;
            *sums.entry(Level::Chapter(t.chapter)).or_default() += n;
            *sums.entry(Level::Agent(t.agent_spec)).or_default() += n;
        }
        for (level, n) in sums {
            ctx.governor.load(level, period, start, n);
        }
    }
    // The last hour's calls, so rate windows survive a restart.
    for r in ctx.store.usage_records(now - chrono::Duration::hours(1), None).await? {
        let charge = Charge { job: r.job_id, attempt: r.attempt, agent_spec: r.agent_spec, chapter: r.chapter };
        ctx.governor.remember_call(&charge, r.input_tokens + r.output_tokens, r.ts);
    }
    Ok(())
}
