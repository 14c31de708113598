//! One reconcile pass for one job: read its state, observe its agent, decide
//! the next action ([`crate::decide`]) and carry it out. Every write is
//! guarded by what was read, so a pass that raced with another change simply
//! has no effect and the job is looked at again.

pub(crate) mod admit;

use crate::context::Context;
use crate::decide::{decide, Action, Observed, Rules};
use crate::metrics::{OutcomeLabel, ReasonLabel};
use crate::tokens;
use crate::trace::{AttemptTrace, RootSpan};
use george_core::record::{Attempt, Job};
use george_core::{AgentState, JobStatus};
use george_runtime::{AgentStatus, RuntimeError, SpawnRequest};
use george_store::{AttemptEnd, JobState, NewAttempt, StatusChange, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// Errors of a reconcile pass; the job is retried later.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A job's family (see [`crate::children`]): an ended child's parent is
/// looked at (it may be waiting for it); a parent waiting for children whose
/// children have ended gets their results (true: it did); a paused or
/// aborted parent's children follow it, and so do a resumed one's.
async fn family(ctx: &Arc<Context>, job: &george_core::record::Job) -> Result<bool, StoreError> {
    use crate::children;
    if job.status.is_final() {
        if let Some(parent) = children::parent_of(job) {
            crate::family_budget::give_back(ctx.store.as_ref(), parent, &job.id).await?;
            ctx.queue.add(parent);
        }
    }
    if job.desired != george_core::DesiredState::Active || job.status == JobStatus::Paused {
        children::cascade(ctx.store.as_ref(), job).await?;
    }
    if job.desired == george_core::DesiredState::Paused && children::follow_parent(ctx.store.as_ref(), job).await? {
        return Ok(true);
    }
    if job.status == JobStatus::Blocked && job.reason.as_deref().is_some_and(|r| r.starts_with(children::WAITING)) {
        return children::settle_wait(ctx.store.as_ref(), job).await;
    }
    Ok(false)
}

/// Reconciles job `id` once. Returns when to look again, if a timer is needed.
pub async fn reconcile(ctx: &Arc<Context>, id: &str) -> Result<Option<Duration>, ReconcileError> {
    let Some(mut state) = ctx.store.job_state(id).await? else { return Ok(None) };
    let observed = observe(ctx, &state).await;
    if matches!(observed, Observed::Gone(_)) && state.current.as_ref().is_some_and(|a| a.state != AgentState::Cooling) {
        // This engine may have stopped the agent after the state was read
        // (it marks the attempt cooling, with why, before it stops it): read
        // again, so the attempt's end says why (a preemption is no failure).
        let attempt = state.current.as_ref().map(|a| a.attempt);
        match ctx.store.job_state(id).await? {
            Some(fresh) if fresh.current.as_ref().map(|a| a.attempt) == attempt => state = fresh,
            Some(_) => return Ok(Some(Duration::ZERO)),
            None => return Ok(None),
        }
    }
    if family(ctx, &state.job).await? {
        // It wrote a waiting parent's children's results: look again.
        return Ok(Some(Duration::ZERO));
    }
    let catalog = ctx.catalog.get(ctx.store.as_ref()).await?;
    let spec = catalog.agents.get(&state.job.agent);
    let now = ctx.clock.now();
    let rules = Rules {
        heard_since: ctx.availability.since(now),
        health: spec.and_then(|s| s.spec.health_check).unwrap_or(ctx.cfg.health),
        retry: ctx.cfg.retry,
        exit_grace: ctx.cfg.exit_grace,
        max_active: spec.and_then(|s| s.spec.resources.max_active_duration).map(|d| {
            // Orange budget alert: shorter active durations.
            if crate::alerts::color(ctx, state.job.chapter.as_deref()) >= crate::alerts::Color::Orange {
                d.get() / 2
            } else {
                d.get()
            }
        }),
    };
    let action = decide(&state, observed, now, &rules);
    let label = match &action {
        Action::Wait(_) => "wait",
        Action::Spawn => "spawn",
        Action::Terminate { .. } => "terminate",
        Action::EndAttempt { .. } => "end_attempt",
        Action::SetStatus(_) => "set_status",
    };
    ctx.metrics.reconciles.get_or_create(&OutcomeLabel { outcome: label.into() }).inc();
    if label != "wait" {
        tracing::debug!(job = id, action = ?action, "reconcile");
    }
    // A job holds a scheduler slot only while its agent lives or is about to start.
    let live = state.current.as_ref().is_some_and(|a| a.state.is_live());
    if !live && !matches!(action, Action::Spawn) && ctx.admission.is_tracked(id) {
        admit::release(ctx, id).await?;
    }
    match action {
        Action::Wait(after) => Ok(after),
        Action::Spawn => {
            if let Some(reason) = crate::alerts::hold(ctx, &state.job).await? {
                // Held by a budget alert: say why, and look again later.
                admit::release(ctx, id).await?;
                explain_wait(ctx, &state.job, reason, "governor").await?;
                return Ok(Some(ctx.cfg.reconcile_interval.min(Duration::from_secs(5))));
            }
            if !admit::request(ctx, &state.job).await? {
                // Queued: the scheduler wakes the job when it may start.
                return Ok(None);
            }
            spawn(ctx, &state).await
        }
        Action::Terminate { attempt, reason, .. } => {
            if let Some(agent) = state.current.as_ref() {
                if reason.starts_with("unhealthy") {
                    tracing::warn!(
                        job = id,
                        attempt,
                        last_heartbeat = ?agent.last_heartbeat,
                        started_at = %agent.started_at,
                        heard_since = %rules.heard_since,
                        now = %now,
                        "agent silent past its health deadline"
                    );
                }
                stop(ctx, agent, attempt, &reason).await?;
            }
            Ok(None)
        }
        Action::EndAttempt { attempt, end } => {
            tracing::info!(job = id, attempt, outcome = %end.outcome, "agent ended");
            if let Some(agent) = state.current.as_ref().filter(|a| a.attempt == attempt) {
                let lived = (now - agent.started_at).to_std().unwrap_or_default().as_secs_f64();
                let outcome = match end.exit_code {
                    Some(0) => "exited_0",
                    Some(_) => "exited_nonzero",
                    None if end.outcome.starts_with("spawn failed") => "spawn_failed",
                    None => "lost_or_killed",
                };
                ctx.metrics.attempt_duration.get_or_create(&OutcomeLabel { outcome: outcome.into() }).observe(lived);
                let root = RootSpan {
                    job: id,
                    attempt,
                    agent_spec: &agent.agent_spec,
                    runtime: &agent.runtime,
                    outcome: &end.outcome,
                    exit_code: end.exit_code,
                };
                AttemptTrace::of(id, state.job.created_at, attempt).finish(&root, agent.started_at, now);
            }
            ctx.store.end_attempt(id, attempt, end).await?;
            if let Err(e) = ctx.runtime.cleanup(id, attempt).await {
                tracing::warn!(job = id, attempt, error = %e, "cleanup failed");
            }
            if let Some(agent) = &state.current {
                crate::registry::note_ended(ctx, &agent.agent_spec).await?;
            }
            Ok(None)
        }
        Action::SetStatus(change) => {
            if change.to != change.from {
                tracing::info!(job = id, from = %change.from, to = %change.to, reason = change.reason.as_deref().unwrap_or(""), "job status");
            }
            let (to, failure) = (change.to, change.count_failure);
            ctx.store.change_status(id, change, "reconciler").await?;
            count_retry(ctx, &state.job, to, failure);
            Ok(None)
        }
    }
}

/// A failed attempt the engine retries, counted (how jobs end is counted
/// from the store's events: `crate::outcomes`).
fn count_retry(ctx: &Context, job: &Job, to: JobStatus, failure: bool) {
    if failure && to == JobStatus::Pending {
        let label = crate::metrics::TemplateLabel { template: job.template.clone() };
        ctx.metrics.job_retries.get_or_create(&label).inc();
    }
}

async fn observe(ctx: &Context, state: &JobState) -> Observed {
    let Some(agent) = state.current.as_ref().filter(|a| a.state.is_live()) else { return Observed::NoAgent };
    let Some(handle) = agent.handle.as_ref() else { return Observed::NotSpawned };
    match ctx.runtime.status(&agent.job_id, agent.attempt, handle).await {
        Ok(AgentStatus::Running) if ctx.is_stopping(&agent.job_id, agent.attempt) => Observed::Stopping,
        Ok(AgentStatus::Running) => Observed::Running,
        Ok(gone) => Observed::Gone(gone),
        // A handle this runtime cannot use belongs to no agent it could ever see again.
        Err(e @ RuntimeError::Handle { .. }) => {
            tracing::warn!(job = %agent.job_id, attempt = agent.attempt, error = %e, "unusable agent handle");
            Observed::Gone(AgentStatus::Exited { code: None, signal: None })
        }
        Err(e) => {
            tracing::warn!(job = %agent.job_id, attempt = agent.attempt, error = %e, "cannot read agent status; will look again");
            Observed::Unknown
        }
    }
}

/// Parameters longer than this are not passed as `GEORGE_PARAM_*` variables.
pub const MAX_PARAM_ENV_BYTES: usize = 32 << 10;

/// Records why a pending job does not start (once, not on every look).
async fn explain_wait(ctx: &Context, job: &Job, reason: String, actor: &str) -> Result<(), StoreError> {
    if job.reason.as_deref() != Some(reason.as_str()) {
        let change = StatusChange {
            from: JobStatus::Pending,
            to: JobStatus::Pending,
            reason: Some(reason),
            next_attempt_at: None,
            count_failure: false,
        };
        ctx.store.change_status(&job.id, change, actor).await?;
    }
    Ok(())
}

/// Starts the next attempt of a pending job.
async fn spawn(ctx: &Arc<Context>, state: &JobState) -> Result<Option<Duration>, ReconcileError> {
    let job = &state.job;
    let catalog = ctx.catalog.get(ctx.store.as_ref()).await?;
    let Some(spec) = catalog.agents.get(&job.agent) else {
        // It cannot start: do not hold a slot while waiting for the AgentSpec.
        admit::release(ctx, &job.id).await?;
        let reason = format!("waiting: AgentSpec `{}` is not defined", job.agent);
        explain_wait(ctx, job, reason, "reconciler").await?;
        return Ok(Some(ctx.cfg.reconcile_interval));
    };
    let template = catalog.templates.get(&job.template);
    let secrets = match crate::secrets::entitled(spec, template, ctx.cfg.secrets_dir.as_deref()) {
        Ok(s) => s,
        Err(reason) => {
            // Retrying cannot help: wait for someone to fix it (and say so).
            block(ctx, &job.id, JobStatus::Pending, reason).await?;
            return Ok(None);
        }
    };
    // A warm agent is taken before the attempt is recorded: a handle its
    // runtime knows before the claim is recorded with the attempt, in its
    // transaction. Held to the end of this spawn: the pool refills once the
    // claim is over.
    let (warm, _claiming) = ctx.pools.take(ctx, &crate::pool::warm_spec(ctx, spec)).unzip();
    let known = warm.as_ref().and_then(|w| ctx.runtime.warm_handle(w));
    let token = tokens::mint();
    let new = NewAttempt {
        after: job.attempt,
        agent_spec: spec.metadata.name.clone(),
        runtime: ctx.runtime.kind().into(),
        token_hash: tokens::hash(&token),
        // Dismissed, the AgentSpec starts no agent: checked as the attempt is recorded.
        held_by: Some(crate::registry::dismissal_key(&job.agent)),
        handle: known.clone(),
    };
    // The attempt recorded, and meanwhile what its agent is given read: the
    // job's environment and, for an agent told its context with its release
    // (a gate's, or a warm agent's binding), the job's conversation (the
    // attempt changes neither).
    let with_context = ctx.runtime.releases_with_context() || spec.spec.pool.is_some();
    let comments = async {
        match with_context {
            true => Some(ctx.store.comments(&job.id).await),
            false => None,
        }
    };
    let (started, job_env, comments) =
        tokio::join!(ctx.store.start_attempt(&job.id, new), load_job_env(ctx, &job.id), comments);
    let recorded = match started.and_then(|started| job_env.map(|env| (started, env))) {
        Ok(both) => crate::alerts::spend_approval(ctx, job).await.map(|()| both),
        Err(e) => Err(e),
    };
    let (started, job_env) = match recorded {
        Ok(both) => both,
        Err(e) => {
            // Not claimed, and given to no other job either.
            if let Some(w) = &warm {
                let _ = ctx.runtime.discard(w).await;
            }
            return not_started(ctx, job, e).await;
        }
    };
    let attempt = started.attempt;
    if attempt == 1 {
        let waited = (ctx.clock.now() - job.created_at).to_std().unwrap_or_default();
        ctx.metrics.start_latency.observe(waited.as_secs_f64());
    }
    let heartbeat = spec.spec.health_check.unwrap_or(ctx.cfg.health).interval.get();
    let mut env: BTreeMap<String, String> = spec.spec.env.clone();
    env.extend(job_env);
    for (k, v) in &job.params {
        let value = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if value.len() > MAX_PARAM_ENV_BYTES {
            // Too big for one environment variable (Linux allows 128 KiB); the agent reads it from its context.
            continue;
        }
        env.insert(format!("GEORGE_PARAM_{}", k.to_ascii_uppercase().replace(['-', '.'], "_")), value);
    }
    env.insert("GEORGE_JOB_ID".into(), job.id.clone());
    env.insert("GEORGE_ATTEMPT".into(), attempt.to_string());
    env.insert("GEORGE_API_URL".into(), ctx.cfg.api_url.clone());
    env.insert("GEORGE_ENGINE_ID".into(), ctx.cfg.engine_id.clone());
    env.insert("GEORGE_HEARTBEAT_INTERVAL_MS".into(), heartbeat.as_millis().to_string());
    env.insert("GEORGE_ENGINE_PATIENCE_MS".into(), ctx.cfg.engine_patience.as_millis().to_string());
    // One trace per attempt, when traces are exported; the agent continues it.
    let trace = crate::trace::enabled().then(|| AttemptTrace::of(&job.id, job.created_at, attempt));
    if let Some(t) = &trace {
        env.insert(crate::trace::ENV.into(), t.traceparent());
    }
    let span = tracing::info_span!(target: crate::trace::TARGET, "spawn", george.job = %job.id, george.attempt = attempt, george.runtime = ctx.runtime.kind(), george.warm = tracing::field::Empty);
    if let Some(t) = &trace {
        t.adopt(&span, None);
    }
    let mut req = SpawnRequest {
        job_id: job.id.clone(),
        attempt,
        agent_spec: spec.metadata.name.clone(),
        command: spec.spec.command.clone(),
        image: spec.spec.image.clone(),
        env,
        agent_token: Some(george_runtime::AgentToken(token)),
        resources: crate::pool::resources(ctx, spec),
        labels: BTreeMap::from([
            ("george.io/job".to_string(), job.id.clone()),
            ("george.io/attempt".to_string(), attempt.to_string()),
            ("george.io/template".to_string(), job.template.clone()),
            ("george.io/engine".to_string(), ctx.cfg.engine_id.clone()),
        ]),
        output_dir: ctx.cfg.output_dir.as_ref().map(|d| d.join(&job.id)),
        secrets,
        max_active: spec.spec.resources.max_active_duration.map(|d| d.get()),
        network: spec.spec.network,
        context: None,
    };
    crate::failpoint::hit("attempt.recorded");
    let claimed = std::time::Instant::now();
    let began = ctx.clock.now();
    // George's own agent gets its context with its release (a gate's, or a
    // warm agent's binding on any runtime), and starts at once.
    if ctx.runtime.releases_with_context() || warm.is_some() {
        let comments = match comments {
            Some(read) => read,
            None => ctx.store.comments(&job.id).await,
        };
        req.context = crate::agent_context::released_with(ctx, started, comments).await;
    }
    let spawned = async {
        match warm {
            Some(warm) => match ctx.runtime.claim(req.clone(), warm.clone()).await {
                Ok(handle) => Ok((handle, true)),
                Err(e) => {
                    // Gone meanwhile: start one instead.
                    tracing::debug!(job = %job.id, attempt, warm = %warm.id, error = %e, "warm agent not claimed");
                    let _ = ctx.runtime.discard(&warm).await;
                    ctx.runtime.spawn(req).await.map(|h| (h, false))
                }
            },
            None => ctx.runtime.spawn(req).await.map(|h| (h, false)),
        }
    }
    .instrument(span.clone())
    .await;
    span.record("george.warm", spawned.as_ref().is_ok_and(|(_, warm)| *warm));
    match spawned {
        Ok((handle, warm)) => {
            ctx.metrics.spawns.inc();
            // Ownership before action: the agent is held until its handle is
            // in the store, so a restarted engine always finds it. (A warm
            // agent gets its binding — job, token, secrets — only then.)
            crate::failpoint::hit(if warm { "claim.window" } else { "spawn.window" });
            // (Recorded with the attempt already when its runtime knew it.)
            if known.as_ref() != Some(&handle) {
                ctx.store.attempt_spawned(&job.id, attempt, handle.clone()).await?;
            }
            crate::failpoint::hit("spawn.recorded");
            if let Err(e) = ctx.runtime.release(&job.id, attempt, &handle).await {
                // The next pass sees the agent gone and ends the attempt.
                tracing::warn!(job = %job.id, attempt, error = %e, "cannot release the agent");
            } else if warm {
                ctx.pools.claimed_in(ctx, &job.agent, claimed.elapsed());
            }
        }
        Err(e) => {
            ctx.metrics.spawn_failures.inc();
            tracing::warn!(job = %job.id, attempt, error = %e, "spawn failed");
            let end = AttemptEnd { exit_code: None, outcome: format!("spawn failed: {e}") };
            if let Some(t) = &trace {
                let root = RootSpan {
                    job: &job.id,
                    attempt,
                    agent_spec: &job.agent,
                    runtime: ctx.runtime.kind(),
                    outcome: &end.outcome,
                    exit_code: None,
                };
                t.finish(&root, began, ctx.clock.now());
            }
            ctx.store.end_attempt(&job.id, attempt, end).await?;
            if let RuntimeError::Unrunnable { message, .. } = e {
                // Not a failed attempt to retry: the job waits until someone fixes it.
                block(ctx, &job.id, JobStatus::InProgress, message).await?;
            }
        }
    }
    Ok(None)
}

/// Why an attempt did not start: a dismissed AgentSpec holds its job (and
/// no slot) until it is summoned again; any other conflict means the job
/// changed, and it is looked at again.
async fn not_started(ctx: &Arc<Context>, job: &Job, e: StoreError) -> Result<Option<Duration>, ReconcileError> {
    let StoreError::Conflict(why) = e else { return Err(e.into()) };
    if ctx.store.setting(&crate::registry::dismissal_key(&job.agent)).await?.is_some() {
        admit::release(ctx, &job.id).await?;
        let reason = format!("held: AgentSpec `{}` is dismissed; summon it to resume", job.agent);
        explain_wait(ctx, job, reason, "reconciler").await?;
        return Ok(Some(ctx.cfg.reconcile_interval));
    }
    tracing::debug!(job = %job.id, why, "attempt not started; state changed");
    Ok(Some(Duration::ZERO))
}

/// Blocks a job whose agent cannot run; a comment (after the fix) unblocks it.
async fn block(ctx: &Context, id: &str, from: JobStatus, reason: String) -> Result<(), StoreError> {
    tracing::warn!(job = id, reason = %reason, "job blocked: its agent cannot run");
    let change = StatusChange {
        from,
        to: JobStatus::Blocked,
        reason: Some(reason),
        next_attempt_at: None,
        count_failure: false,
    };
    ctx.store.change_status(id, change, "reconciler").await.map(|_| ())
}

/// The job's own environment (kept in the store, not in the view).
async fn load_job_env(ctx: &Context, id: &str) -> Result<BTreeMap<String, String>, StoreError> {
    ctx.store.job_env(id).await
}

/// Marks the attempt as cooling and stops its agent in the background.
pub(crate) async fn stop(ctx: &Arc<Context>, agent: &Attempt, attempt: u32, reason: &str) -> Result<(), StoreError> {
    stop_with_grace(ctx, agent, attempt, reason, ctx.cfg.termination_grace).await
}

/// Like [`stop`], with a given grace period (zero: kill at once).
pub(crate) async fn stop_with_grace(
    ctx: &Arc<Context>,
    agent: &Attempt,
    attempt: u32,
    reason: &str,
    grace: Duration,
) -> Result<(), StoreError> {
    let key = (agent.job_id.clone(), attempt);
    if !ctx.stopping.lock().insert(key.clone()) {
        return Ok(());
    }
    let class = reason.split(':').next().unwrap_or(reason).split_whitespace().next().unwrap_or("other");
    ctx.metrics.terminations.get_or_create(&ReasonLabel { reason: class.to_string() }).inc();
    if reason.starts_with("timeout") || reason.starts_with("unhealthy") {
        tracing::warn!(job = %agent.job_id, attempt, reason, "stopping agent");
    } else {
        tracing::info!(job = %agent.job_id, attempt, reason, "stopping agent");
    }
    if let Err(e) =
        ctx.store.set_attempt_state(&agent.job_id, attempt, AgentState::Cooling, "reconciler", Some(reason)).await
    {
        ctx.stopping.lock().remove(&key);
        return Err(e);
    }
    let Some(handle) = agent.handle.clone() else {
        ctx.stopping.lock().remove(&key);
        return Ok(());
    };
    let ctx2 = ctx.clone();
    ctx.tasks.spawn(async move {
        if let Err(e) = ctx2.runtime.terminate(&key.0, key.1, &handle, grace).await {
            tracing::warn!(job = %key.0, attempt = key.1, error = %e, "terminate failed");
        }
        ctx2.stopping.lock().remove(&key);
        ctx2.queue.add(&key.0);
    });
    Ok(())
}
