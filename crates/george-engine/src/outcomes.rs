//! What the event log says, as metrics: every job that reaches `completed`,
//! `failed` or `aborted` — by its agent's verdict, the reconciler or an
//! operator — counted once from its `job.status` event, with its duration
//! from creation (`george_jobs_finished_total`, `george_job_duration_seconds`);
//! every step run that ends, with its duration (`george_step_duration_seconds`);
//! when each source last applied or rejected a revision, and when each
//! trigger last fired (`…_timestamp_seconds`, for "has not happened for
//! too long" alerts).

use crate::context::Context;
use crate::metrics::{FinishedLabel, SourceLabel, TemplateOutcomeLabel, TriggerLabel};
use george_core::event::EventKind;
use george_core::record::Event;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Follows the store's events until `shutdown`.
pub(crate) async fn run(ctx: Arc<Context>, mut events: broadcast::Receiver<Event>, shutdown: CancellationToken) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => e,
        };
        match event {
            Ok(e) if e.kind == EventKind::JobStatus => count(&ctx, &e).await,
            Ok(e) if e.kind == EventKind::StepStatus => time_step(&ctx, &e).await,
            Ok(e) => stamp(&ctx, &e),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "job outcome metrics fell behind: some endings are not counted");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Notes when a source applied or rejected a revision, or a trigger fired.
fn stamp(ctx: &Context, e: &Event) {
    let at = e.ts.timestamp();
    let source = || SourceLabel { source: e.actor.strip_prefix("source:").unwrap_or(&e.actor).to_string() };
    match e.kind {
        EventKind::SourceApplied => {
            ctx.metrics.source_applied.get_or_create(&source()).set(at);
        }
        EventKind::SourceRejected => {
            ctx.metrics.source_rejected.get_or_create(&source()).set(at);
        }
        EventKind::TriggerFired => {
            let trigger = e.data["trigger"].as_str().unwrap_or_default().to_string();
            let kind = e.data["type"].as_str().unwrap_or_default().to_string();
            ctx.metrics.trigger_fired.get_or_create(&TriggerLabel { trigger, kind }).set(at);
        }
        _ => {}
    }
}

/// Times the step `e` ends, if it ends one that ran.
async fn time_step(ctx: &Context, e: &Event) {
    let (Some(id), Some(step)) = (e.job_id.as_deref(), e.data["step"].as_str()) else { return };
    let Some(to) = e.data["to"].as_str().filter(|t| matches!(*t, "completed" | "failed" | "blocked")) else { return };
    let job = match ctx.store.get_job(id).await {
        Ok(Some(job)) => job,
        Ok(None) => return,
        Err(err) => {
            tracing::debug!(job = id, error = %err, "cannot read a job for its step metrics");
            return;
        }
    };
    let Some(s) = job.steps.iter().find(|s| s.spec.id == step) else { return };
    // A step that never ran (blocked before it started, set by hand) has no duration.
    let Some((start, end)) = s.started_at.zip(s.ended_at) else { return };
    let took = (end - start).to_std().unwrap_or_default().as_secs_f64();
    let label = TemplateOutcomeLabel { template: job.template.clone(), outcome: to.to_string() };
    ctx.metrics.step_duration.get_or_create(&label).observe(took);
}

/// Counts `e` if it ends its job.
async fn count(ctx: &Context, e: &Event) {
    let (from, to) = (e.data["from"].as_str(), e.data["to"].as_str());
    let Some(to) = to.filter(|t| Some(*t) != from && matches!(*t, "completed" | "failed" | "aborted")) else { return };
    let Some(id) = e.job_id.as_deref() else { return };
    let job = match ctx.store.get_job(id).await {
        Ok(Some(job)) => job,
        Ok(None) => return,
        Err(err) => {
            tracing::debug!(job = id, error = %err, "cannot read an ended job for its metrics");
            return;
        }
    };
    let took = (e.ts - job.created_at).to_std().unwrap_or_default().as_secs_f64();
    let by_template = TemplateOutcomeLabel { template: job.template.clone(), outcome: to.to_string() };
    ctx.metrics.job_duration.get_or_create(&by_template).observe(took);
    let chapter = job.chapter.unwrap_or_default();
    let label = FinishedLabel { template: job.template, chapter, outcome: to.to_string() };
    ctx.metrics.jobs_finished.get_or_create(&label).inc();
}
