//! The control plane of seed 003 §6: the registry, triggers, status,
//! diagnose, and the manual (dismiss) and emergency (halt) shutdowns.

use crate::body::{OptionalBody, QueryParams};
use crate::jobs::find_agent;
use crate::{ApiError, ApiState, Caller};
use axum::extract::{Path, State};
use axum::Json;
use george_core::api::{ActionRequest, EventView};
use george_core::Role;
use george_core::{DesiredState, EventKind, JobStatus};
use george_engine::registry::{RegistryEntry, RegistryQuery, TriggerEntry};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub async fn registry(
    State(st): State<ApiState>,
    caller: Caller,
    QueryParams(q): QueryParams<RegistryQuery>,
) -> Result<Json<Vec<RegistryEntry>>, ApiError> {
    caller.viewer()?;
    Ok(Json(st.engine.control().registry(&q).await?))
}

pub async fn triggers(State(st): State<ApiState>, caller: Caller) -> Result<Json<Vec<TriggerEntry>>, ApiError> {
    caller.viewer()?;
    Ok(Json(st.engine.triggers().list().await?))
}

pub async fn status(State(st): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.viewer()?;
    let agents = st.engine.control().registry(&RegistryQuery::default()).await?;
    let queue: serde_json::Map<String, Value> =
        st.engine.scheduler_depth().into_iter().map(|(p, n)| (p.to_string(), json!(n))).collect();
    let jobs: serde_json::Map<String, Value> =
        st.store.count_by_status().await?.into_iter().map(|(s, n)| (s.to_string(), json!(n))).collect();
    let mut out = json!({"agents": agents, "queue": queue, "jobs": jobs});
    if let Some(iso) = st.engine.isolation() {
        if !iso.warnings.is_empty() {
            out["isolation_warnings"] = json!(iso.warnings);
        }
    }
    Ok(Json(out))
}

pub async fn diagnose(State(st): State<ApiState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.viewer()?;
    let t = Instant::now();
    let store_ok = st.store.count_by_status().await;
    let read_ms = t.elapsed().as_secs_f64() * 1000.0;
    let m = st.engine.metrics();
    let live = st.store.list_agents(true, 10_000).await?.len();
    let problems =
        [EventKind::SourceRejected, EventKind::TriggerFailed, EventKind::AgentDegraded, EventKind::JobRejected];
    // The last 5000 events are enough for "recent".
    let recent: Vec<EventView> =
        george_store::recent_events(st.store.as_ref(), 5000, 20, |e| problems.contains(&e.kind))
            .await?
            .into_iter()
            .map(EventView::from)
            .collect();
    let failed_jobs = st
        .store
        .list_jobs(&george_store::JobFilter { status: vec![JobStatus::Failed], ..Default::default() })
        .await?
        .len();
    Ok(Json(json!({
        "store": {"ok": store_ok.is_ok(), "read_ms": read_ms, "error": store_ok.err().map(|e| e.to_string())},
        "reconcile_queue": st.engine.queue_depth(),
        "scheduler_queue": st.engine.scheduler_depth().values().sum::<usize>(),
        "live_agents": live,
        "spawns": m.spawns.get(),
        "spawn_failures": m.spawn_failures.get(),
        "failed_jobs": failed_jobs,
        "recent_problems": recent,
        "isolation": st.engine.isolation(),
    })))
}

/// Manual shutdown: every live instance of an AgentSpec stops gracefully;
/// their jobs are paused (resume them to continue).
pub async fn dismiss(
    State(st): State<ApiState>,
    caller: Caller,
    Path(agent): Path<String>,
    OptionalBody(req): OptionalBody<ActionRequest>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    if st.engine.control().registry(&RegistryQuery::default()).await?.iter().all(|e| e.name != agent) {
        return Err(ApiError::NotFound(format!("AgentSpec `{agent}` not found")));
    }
    let reason = format!("dismissed: {}", req.reason.as_deref().unwrap_or("by an operator"));
    // Its queued jobs wait too, until it is summoned again.
    let mark = json!({"by": caller.actor(), "reason": reason});
    st.store.set_setting(&george_engine::registry::dismissal_key(&agent), Some(mark)).await?;
    let mut dismissed = Vec::new();
    for a in st.store.list_agents(true, 10_000).await?.into_iter().filter(|a| a.agent_spec == agent) {
        match st.store.set_desired(&a.job_id, DesiredState::Paused, &caller.actor(), Some(&reason)).await {
            Ok(_) => {}
            // The job ended meanwhile; its agent is going anyway.
            Err(george_store::StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
        st.engine.nudge(&a.job_id);
        dismissed.push(json!({"agent": a.id(), "job": a.job_id}));
    }
    st.store
        .record_event(
            None,
            EventKind::AgentDismissed,
            &caller.actor(),
            json!({"agent_spec": agent, "instances": dismissed, "reason": reason}),
        )
        .await?;
    Ok(Json(json!({"agent_spec": agent, "dismissed": dismissed, "acknowledged": true})))
}

/// Emergency shutdown of one instance: killed at once, its job paused.
pub async fn halt(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalBody(req): OptionalBody<ActionRequest>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let agent = find_agent(&st, &id).await?;
    if !agent.state.is_live() {
        return Err(ApiError::Conflict(format!("agent `{id}` is not running")));
    }
    let reason = format!("halted: {}", req.reason.as_deref().unwrap_or("emergency stop"));
    // Kill first: pausing first would let the reconciler start a graceful stop
    // (the usual answer to a pause), which the kill could then not overtake.
    // The kill only begins here; the pause is written long before the
    // reconciler sees the agent gone, so no new attempt starts.
    st.engine.control().stop_agent(&agent.job_id, agent.attempt, &reason, Duration::ZERO).await?;
    match st.store.set_desired(&agent.job_id, DesiredState::Paused, &caller.actor(), Some(&reason)).await {
        // A job that already ended is not paused; its agent is still killed.
        Ok(_) | Err(george_store::StoreError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }
    st.store
        .record_event(
            Some(&agent.job_id),
            EventKind::AgentHalted,
            &caller.actor(),
            json!({"agent": id, "reason": reason, "level": "alert"}),
        )
        .await?;
    Ok(Json(json!({"agent": id, "job": agent.job_id, "halted": true})))
}
