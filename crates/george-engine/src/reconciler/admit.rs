//! Between a reconcile pass and [`crate::admission`]: asks it for a slot,
//! feeds it limits and running jobs from the store, and carries out what
//! it decides — a job admitted is reconciled now, a preemption stops its
//! victim, a job that waits says why (each recorded as an event).

use crate::admission::Decision;
use crate::context::Context;
use crate::metrics::PriorityLabel;
use crate::scheduler::{Limits, QueuedJob, RunningJob, Shares};
use george_core::manifest::{Chapter, Kind, Policy};
use george_core::record::Job;
use george_core::JobStatus;
use george_core::{AgentState, EventKind};
use george_store::{StatusChange, StoreError};
use serde_json::json;
use std::sync::Arc;

fn queued(job: &Job) -> QueuedJob {
    QueuedJob {
        id: job.id.clone(),
        priority: job.priority,
        chapter: job.chapter.clone().unwrap_or_default(),
        agent_spec: job.agent.clone(),
        due: due(job).timestamp_micros(),
    }
}

/// When the job became due to start, its place among jobs of its class: a
/// first attempt's, its creation (or the end of its delay); a later one's,
/// its last change (the end of the attempt before, a preemption, a resume)
/// or the end of its backoff, so that it queues again at the back.
fn due(job: &Job) -> chrono::DateTime<chrono::Utc> {
    let entered = if job.attempt == 0 { job.created_at } else { job.updated_at };
    job.next_attempt_at.map_or(entered, |at| at.max(entered))
}

/// Asks for the job to start. Returns whether it holds a slot now.
pub(crate) async fn request(ctx: &Arc<Context>, job: &Job) -> Result<bool, StoreError> {
    let answer = ctx.admission.request(queued(job));
    carry_out(ctx, answer.decisions).await?;
    Ok(answer.holds)
}

/// Gives back the job's slot (its agent is gone, or it will not start).
pub(crate) async fn release(ctx: &Arc<Context>, id: &str) -> Result<(), StoreError> {
    let decisions = ctx.admission.release(id);
    carry_out(ctx, decisions).await
}

/// Loads limits and shares from the manifests and the engine's settings.
pub(crate) async fn reload_limits(ctx: &Arc<Context>) -> Result<(), StoreError> {
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
    let decisions = ctx.admission.configure(limits, shares);
    carry_out(ctx, decisions).await
}

/// At start-up: every live attempt holds a slot.
pub(crate) async fn restore(ctx: &Context) -> Result<(), StoreError> {
    for a in ctx.store.live_attempts().await? {
        if let Some(job) = ctx.store.get_job(&a.job_id).await? {
            ctx.admission.restore(RunningJob {
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
pub(crate) fn backpressure(ctx: &Context, priority: george_core::Priority) -> Option<std::time::Duration> {
    let bp = &ctx.cfg.backpressure;
    if !bp.refuse.contains(&priority) {
        return None;
    }
    (ctx.admission.queued_len() >= bp.threshold).then_some(bp.retry_after)
}

/// Carries out admission's decisions, in order.
async fn carry_out(ctx: &Arc<Context>, decisions: Vec<Decision>) -> Result<(), StoreError> {
    for d in decisions {
        match d {
            Decision::Start { job, waited } => {
                if let Some(w) = waited {
                    ctx.metrics
                        .queue_wait
                        .get_or_create(&PriorityLabel { priority: job.priority.to_string() })
                        .observe(w.as_secs_f64());
                }
                ctx.queue.add(&job.id);
            }
            Decision::Wait { job, priority, reason, ahead } => {
                // The job itself says why it waits (`jobs ls`, the dashboard),
                // before the event says it: whoever sees the event finds the reason.
                let change = StatusChange {
                    from: JobStatus::Pending,
                    to: JobStatus::Pending,
                    reason: Some(match ahead {
                        0 => format!("queued ({priority}): waiting for a slot: {reason}"),
                        n => format!("queued ({priority}; {n} ahead when it joined): waiting for a slot: {reason}"),
                    }),
                    next_attempt_at: None,
                    count_failure: false,
                };
                ctx.store.change_status(&job, change, "scheduler").await?;
                ctx.store
                    .record_event(
                        Some(&job),
                        EventKind::JobQueued,
                        "scheduler",
                        json!({"reason": reason, "priority": priority, "ahead": ahead}),
                    )
                    .await?;
            }
            Decision::Preempt { victim, for_job } => preempt(ctx, &victim, &for_job).await?,
        }
    }
    Ok(())
}

/// Stops `victim`'s agent for `for_job`. Admitted but not spawned yet, or
/// stopping already: nothing to stop now; the next decision looks again.
async fn preempt(ctx: &Arc<Context>, victim: &str, for_job: &str) -> Result<(), StoreError> {
    let Some(state) = ctx.store.job_state(victim).await? else { return Ok(()) };
    let Some(agent) = state.current.filter(|a| a.state.is_live() && a.state != AgentState::Cooling) else {
        return Ok(());
    };
    if !ctx.admission.begin_preempting(victim) {
        return Ok(());
    }
    tracing::info!(job = %victim, for_job = %for_job, "preempting");
    ctx.store
        .record_event(
            Some(victim),
            EventKind::JobPreempted,
            "scheduler",
            json!({"by": for_job, "attempt": agent.attempt}),
        )
        .await?;
    super::stop(ctx, &agent, agent.attempt, &format!("preempted by job {for_job}")).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Duration, Utc};
    use george_core::{DesiredState, Priority};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn job(attempt: u32, next_attempt_at: Option<DateTime<Utc>>) -> Job {
        Job {
            id: "j".into(),
            template: "t".into(),
            agent: "a".into(),
            status: JobStatus::Pending,
            reason: None,
            desired: DesiredState::Active,
            priority: Priority::P2,
            chapter: None,
            params: Default::default(),
            labels: Default::default(),
            origin: Default::default(),
            attempt,
            failures: attempt,
            max_attempts: None,
            parallelism: 1,
            fail_fast: true,
            next_attempt_at,
            created_at: at(0),
            updated_at: at(50),
            steps: vec![],
        }
    }

    #[test]
    fn a_job_is_due_at_its_creation_and_a_retry_at_the_back() {
        let micros = |t: DateTime<Utc>| t.timestamp_micros();
        // A first attempt: its creation, whatever changed since; delayed, the end of its delay.
        assert_eq!(queued(&job(0, None)).due, micros(at(0)));
        assert_eq!(queued(&job(0, Some(at(0) + Duration::seconds(60)))).due, micros(at(60)));
        // A later attempt: when it asked again, or the end of its backoff.
        assert_eq!(queued(&job(1, None)).due, micros(at(50)));
        assert_eq!(queued(&job(1, Some(at(10)))).due, micros(at(50)));
        assert_eq!(queued(&job(1, Some(at(80)))).due, micros(at(80)));
    }
}
