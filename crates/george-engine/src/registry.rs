//! The agent registry (seed 003 §3): every AgentSpec with its lifecycle
//! state derived from its instances, its recent health, and the filters of
//! the seed's discovery patterns (by type, chapter, capability, status).

use crate::context::Context;
use george_core::manifest::TriggerType;
use george_core::record::Attempt;
use george_core::schedule::CronSchedule;
use george_core::{AgentState, EventKind};
use george_store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

/// Consecutive failed instances after which a spec is degraded.
pub const DEGRADED_AFTER: u32 = 3;

/// The setting that marks an AgentSpec dismissed (seed 003's Dormant): its
/// jobs are held, not started, until it is summoned again.
pub fn dismissal_key(agent_spec: &str) -> String {
    format!("agents.dismissed.{agent_spec}")
}

/// One AgentSpec in the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RegistryEntry {
    /// AgentSpec name.
    pub name: String,
    /// Its role (`spec.type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_type: Option<String>,
    /// Chapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chapter: Option<String>,
    /// Version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Lifecycle state derived from its instances: the liveliest of them, or dormant.
    pub state: AgentState,
    /// Live instances.
    pub instances: usize,
    /// Instances that failed in a row, most recent first.
    pub consecutive_failures: u32,
    /// More than three failures in a row.
    pub degraded: bool,
    /// Latest heartbeat of any live instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<chrono::DateTime<chrono::Utc>>,
    /// Its warm pool, when it has one (`spec.pool`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<crate::pool::PoolStatus>,
}

/// Filters of `GET /api/v1/registry`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryQuery {
    /// By role.
    #[serde(default, rename = "type")]
    pub agent_type: Option<String>,
    /// By chapter.
    #[serde(default)]
    pub chapter: Option<String>,
    /// By capability.
    #[serde(default)]
    pub capability: Option<String>,
    /// By lifecycle state.
    #[serde(default)]
    pub status: Option<AgentState>,
}

/// A trigger with its next fire time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TriggerEntry {
    /// Trigger name.
    pub name: String,
    /// The trigger.
    #[serde(flatten)]
    pub spec: george_core::manifest::TriggerSpec,
    /// For cron triggers: the next fire time (none while suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_fire: Option<chrono::DateTime<chrono::Utc>>,
    /// Set while an operator has suspended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<crate::suspension::Suspension>,
}

/// One trigger with what it did lately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TriggerDetail {
    /// The trigger.
    #[serde(flatten)]
    pub entry: TriggerEntry,
    /// Its newest events (fired, debounced, replayed, skipped, failed,
    /// suspended, resumed), newest first: at most [`HISTORY`], from the last
    /// [`HISTORY_WINDOW`] events of the log.
    pub history: Vec<george_core::api::EventView>,
}

/// How many of a trigger's events its detail shows.
pub const HISTORY: usize = 50;
/// How far back in the event log a trigger's history looks.
pub const HISTORY_WINDOW: i64 = 20_000;

/// Whether an ended instance counts as a failure (it was not stopped on
/// purpose and did not exit cleanly).
pub fn failed(a: &Attempt) -> bool {
    let on_purpose =
        ["job paused", "job aborted", "preempted", "did not exit after", "superseded", "dismissed", "halted"];
    let outcome = a.outcome.as_deref().unwrap_or("");
    a.state == AgentState::Terminated && a.exit_code != Some(0) && !on_purpose.iter().any(|p| outcome.starts_with(p))
}

fn liveliest(instances: &[&Attempt]) -> AgentState {
    [AgentState::Active, AgentState::Awakening, AgentState::Cooling]
        .into_iter()
        .find(|s| instances.iter().any(|a| a.state == *s))
        .unwrap_or(AgentState::Dormant)
}

/// The registry, filtered.
pub(crate) async fn entries(ctx: &Arc<Context>, q: &RegistryQuery) -> Result<Vec<RegistryEntry>, StoreError> {
    let catalog = ctx.catalog.get(ctx.store.as_ref()).await?;
    let recent = ctx.store.list_agents(false, 2000).await?;
    let mut out = Vec::new();
    let mut pools: std::collections::HashMap<String, crate::pool::PoolStatus> =
        ctx.pools.status().into_iter().map(|p| (p.agent_spec.clone(), p)).collect();
    for (name, spec) in &catalog.agents {
        let mine: Vec<&Attempt> = recent.iter().filter(|a| &a.agent_spec == name).collect();
        let live: Vec<&Attempt> = mine.iter().copied().filter(|a| a.state.is_live()).collect();
        let consecutive_failures = mine.iter().filter(|a| !a.state.is_live()).take_while(|a| failed(a)).count() as u32;
        let entry = RegistryEntry {
            name: name.clone(),
            agent_type: spec.spec.agent_type.clone(),
            chapter: spec.metadata.chapter.clone(),
            version: spec.spec.version.clone(),
            capabilities: spec.spec.capabilities.clone(),
            state: liveliest(&live),
            instances: live.len(),
            consecutive_failures,
            degraded: consecutive_failures > DEGRADED_AFTER,
            last_heartbeat: live.iter().filter_map(|a| a.last_heartbeat).max(),
            pool: pools.remove(name).or_else(|| {
                // Configured, not started yet (or on a runtime without pools).
                spec.spec.pool.map(|p| crate::pool::PoolStatus::empty(name, &p))
            }),
        };
        let keep = q.agent_type.as_ref().is_none_or(|t| entry.agent_type.as_ref() == Some(t))
            && q.chapter.as_ref().is_none_or(|c| entry.chapter.as_ref() == Some(c))
            && q.capability.as_ref().is_none_or(|c| entry.capabilities.contains(c))
            && q.status.is_none_or(|s| entry.state == s);
        if keep {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Every trigger, with the next fire time of the cron ones.
pub(crate) async fn triggers(ctx: &Arc<Context>) -> Result<Vec<TriggerEntry>, StoreError> {
    let catalog = ctx.catalog.get(ctx.store.as_ref()).await?;
    let mut suspended = crate::suspension::all(ctx).await?;
    let now = ctx.clock.now();
    Ok(catalog.triggers.iter().map(|(name, spec)| entry(name, spec, suspended.remove(name), now)).collect())
}

fn entry(
    name: &str,
    spec: &george_core::manifest::TriggerSpec,
    suspended: Option<crate::suspension::Suspension>,
    now: chrono::DateTime<chrono::Utc>,
) -> TriggerEntry {
    TriggerEntry {
        name: name.to_string(),
        spec: spec.clone(),
        next_fire: (spec.trigger_type == TriggerType::Cron && suspended.is_none())
            .then(|| spec.schedule.as_deref().and_then(|s| CronSchedule::parse(s, spec.timezone.as_deref()).ok()))
            .flatten()
            .and_then(|s| s.next_after(now)),
        suspended,
    }
}

/// Trigger `name` with its history, if it exists.
pub(crate) async fn trigger(ctx: &Arc<Context>, name: &str) -> Result<Option<TriggerDetail>, StoreError> {
    let catalog = ctx.catalog.get(ctx.store.as_ref()).await?;
    let Some(spec) = catalog.triggers.get(name) else { return Ok(None) };
    let entry = entry(name, spec, crate::suspension::of(ctx, name).await?, ctx.clock.now());
    let kinds = [
        EventKind::TriggerFired,
        EventKind::TriggerDebounced,
        EventKind::TriggerReplayed,
        EventKind::TriggerSkipped,
        EventKind::TriggerFailed,
        EventKind::TriggerSuspended,
        EventKind::TriggerResumed,
    ];
    let history = george_store::recent_events(ctx.store.as_ref(), HISTORY_WINDOW, HISTORY, |e| {
        kinds.contains(&e.kind) && e.data["trigger"].as_str() == Some(name)
    })
    .await?;
    Ok(Some(TriggerDetail { entry, history: george_core::api::views(history) }))
}

/// After an instance of `spec` ended: raise an alert the moment the spec
/// crosses into degraded.
pub(crate) async fn note_ended(ctx: &Arc<Context>, spec: &str) -> Result<(), StoreError> {
    // Only the newest few of this spec: enough to see the run cross the line.
    let recent = ctx.store.ended_agents(spec, DEGRADED_AFTER + 2).await?;
    let run = recent.iter().take_while(|a| failed(a)).count() as u32;
    if run == DEGRADED_AFTER + 1 {
        tracing::warn!(agent_spec = spec, failures = run, "agent degraded");
        ctx.store
            .record_event(
                None,
                george_core::EventKind::AgentDegraded,
                "registry",
                json!({"agent_spec": spec, "consecutive_failures": run, "level": "alert"}),
            )
            .await?;
    }
    Ok(())
}
