//! Between the reconciler and the scheduler: a pending job that wants an
//! agent asks for admission; the scheduler's decisions (start, preempt) are
//! carried out here and recorded as events with their reason. A job holds
//! a scheduler slot from admission until it has no live attempt and is not
//! about to spawn one, which the reconciler re-checks on every pass.

use crate::context::Context;
use crate::metrics::PriorityLabel;
use crate::scheduler::{Admission, Limits, QueuedJob, RunningJob, Shares};
use george_core::api::JobView;
use george_core::manifest::{Chapter, Kind, Policy};
use george_core::AgentState;
use george_store::{Store, StoreError};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

fn queued(job: &JobView) -> QueuedJob {
    QueuedJob {
        id: job.id.clone(),
        priority: job.priority,
        chapter: job.chapter.clone().unwrap_or_default(),
        agent_spec: job.agent.clone(),
    }
}

/// Asks for the job to start. Returns whether it holds a slot now.
pub async fn request(ctx: &Arc<Context>, job: &JobView) -> Result<bool, StoreError> {
    let newly_queued = {
        let mut s = ctx.scheduler.lock().unwrap_or_else(|e| e.into_inner());
        if s.is_running(&job.id) {
            return Ok(true);
        }
        let newly = !s.is_queued(&job.id);
        if newly {
            s.enqueue(queued(job));
            ctx.queued_at.lock().unwrap_or_else(|e| e.into_inner()).insert(job.id.clone(), Instant::now());
        }
        newly
    };
    pump(ctx).await?;
    let (holds, blocked) = {
        let s = ctx.scheduler.lock().unwrap_or_else(|e| e.into_inner());
        let holds = s.is_running(&job.id);
        (holds, if holds { None } else { Some(s.blocked_by(&queued(job)).map(|b| b.to_string())) })
    };
    if newly_queued && !holds {
        let reason = blocked.flatten().unwrap_or_else(|| crate::scheduler::Blocked::Behind.to_string());
        ctx.store
            .record_event(Some(&job.id), "job.queued", "scheduler", json!({"reason": reason, "priority": job.priority}))
            .await?;
    }
    Ok(holds)
}

/// Gives back the job's slot (its agent is gone, or it will not start).
pub async fn release(ctx: &Arc<Context>, id: &str) -> Result<(), StoreError> {
    let changed = {
        let mut s = ctx.scheduler.lock().unwrap_or_else(|e| e.into_inner());
        let was = s.is_running(id) || s.is_queued(id);
        s.finished(id);
        s.dequeue(id);
        was
    };
    ctx.queued_at.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    ctx.preempting.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    if changed {
        pump(ctx).await?;
    }
    Ok(())
}

/// Whether the job holds a slot or waits for one.
pub fn is_tracked(ctx: &Context, id: &str) -> bool {
    let s = ctx.scheduler.lock().unwrap_or_else(|e| e.into_inner());
    s.is_running(id) || s.is_queued(id)
}

/// Starts every job the scheduler admits now, and preempts for a waiting P0.
pub async fn pump(ctx: &Arc<Context>) -> Result<(), StoreError> {
    loop {
        let decision = ctx.scheduler.lock().unwrap_or_else(|e| e.into_inner()).admit();
        match decision {
            Admission::Start(job) => {
                let waited =
                    ctx.queued_at.lock().unwrap_or_else(|e| e.into_inner()).remove(&job.id).map(|t| t.elapsed());
                if let Some(w) = waited {
                    ctx.metrics
                        .queue_wait
                        .get_or_create(&PriorityLabel { priority: job.priority.to_string() })
                        .observe(w.as_secs_f64());
                }
                ctx.queue.add(&job.id);
            }
            Admission::Preempt { victim, for_job } => {
                if ctx.preempting.lock().unwrap_or_else(|e| e.into_inner()).contains(&victim) {
                    return Ok(()); // already being stopped; its slot frees when it is gone
                }
                let Some(state) = ctx.store.job_state(&victim).await? else { return Ok(()) };
                // Admitted but not spawned yet, or stopping already: nothing to
                // stop now; the next pump looks again.
                let Some(agent) = state.current.filter(|a| a.state.is_live() && a.state != AgentState::Cooling) else {
                    return Ok(());
                };
                ctx.preempting.lock().unwrap_or_else(|e| e.into_inner()).insert(victim.clone());
                tracing::info!(job = %victim, for_job = %for_job, "preempting");
                ctx.store
                    .record_event(
                        Some(&victim),
                        "job.preempted",
                        "scheduler",
                        json!({"by": for_job, "attempt": agent.attempt}),
                    )
                    .await?;
                crate::reconciler::stop(ctx, &agent, agent.attempt, &format!("preempted by job {for_job}")).await?;
                return Ok(());
            }
            Admission::Idle => return Ok(()),
        }
    }
}

/// Loads limits and shares from the manifests and the engine's settings.
pub async fn configure(ctx: &Arc<Context>) -> Result<(), StoreError> {
    let mut limits = Limits { global: ctx.cfg.max_concurrent, ..Default::default() };
    let mut shares = Shares::default();
    for m in ctx.store.manifests(Some(Kind::Policy)).await? {
        if let Ok(p) = serde_json::from_value::<Policy>(m.body) {
            if let Some(n) = p.spec.max_concurrent {
                limits.global = Some(limits.global.map_or(n, |g| g.min(n)));
            }
        }
    }
    for m in ctx.store.manifests(Some(Kind::Chapter)).await? {
        if let Ok(c) = serde_json::from_value::<Chapter>(m.body) {
            let name = c.metadata.name.clone();
            if let Some(n) = c.spec.max_concurrent {
                limits.chapter.insert(name.clone(), n);
            }
            if let Some(w) = c.spec.weight {
                shares.weight.insert(name.clone(), w);
            }
            if let Some(n) = c.spec.min_share {
                shares.min_share.insert(name, n);
            }
        }
    }
    for (name, a) in ctx.catalog.get(ctx.store.as_ref()).await?.agents.iter() {
        if let Some(n) = a.spec.max_concurrent {
            limits.agent_spec.insert(name.clone(), n);
        }
    }
    ctx.scheduler.lock().unwrap_or_else(|e| e.into_inner()).configure(limits, shares);
    pump(ctx).await
}

/// At start-up: every live attempt holds a slot.
pub async fn restore(ctx: &Arc<Context>, store: &dyn Store) -> Result<(), StoreError> {
    for a in store.live_attempts().await? {
        if let Some(job) = store.get_job(&a.job_id).await? {
            ctx.scheduler.lock().unwrap_or_else(|e| e.into_inner()).started(RunningJob {
                id: job.id.clone(),
                priority: job.priority,
                chapter: job.chapter.clone().unwrap_or_default(),
                agent_spec: job.agent.clone(),
            });
        }
    }
    Ok(())
}

/// Whether a new submission of `priority` is refused because the queue is deep.
pub fn backpressure(ctx: &Context, priority: george_core::Priority) -> Option<std::time::Duration> {
    let bp = &ctx.cfg.backpressure;
    if !bp.refuse.contains(&priority) {
        return None;
    }
    let depth = ctx.scheduler.lock().unwrap_or_else(|e| e.into_inner()).queued_len();
    (depth >= bp.threshold).then_some(bp.retry_after)
}
