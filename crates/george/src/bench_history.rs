//! `george bench --preload N`: a store that already holds N finished jobs,
//! written through the `Store` as the engine would have written them
//! (created, attempt started and spawned, heartbeat, step reports, verdict,
//! attempt ended), so the engine starts on a history of that size.

use futures_util::StreamExt;
use george_core::api::StepReport;
use george_core::plan::{NewJob, Origin};
use george_core::template::StepSpec;
use george_core::{DesiredState, JobStatus, Priority, StepStatus};
use george_store::{AttemptEnd, NewAttempt, Store};
use std::sync::Arc;

/// Writes `n` finished jobs (`history-000000`, ...), `concurrency` at a time.
pub async fn preload(store: Arc<dyn Store>, n: usize, concurrency: usize) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let store = store.clone();
            async move { finished_job(store.as_ref(), i).await }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

async fn finished_job(store: &dyn Store, i: usize) -> anyhow::Result<()> {
    let id = format!("history-{i:06}");
    store.create_job(job(&id), "api").await?;
    // Unique, like a real token's hash; no agent ever presents it.
    let token_hash = format!("{i:064x}");
    let attempt = store
        .start_attempt(
            &id,
            NewAttempt {
                after: 0,
                agent_spec: "bench-agent".into(),
                runtime: "process".into(),
                token_hash,
                held_by: None,
                handle: None,
            },
        )
        .await?
        .attempt;
    store.attempt_spawned(&id, attempt, serde_json::json!({"pid": 1, "start_time": i})).await?;
    store.heartbeat(&id, attempt).await?;
    for status in [StepStatus::InProgress, StepStatus::Completed] {
        store.report_step(&id, attempt, "noop", &StepReport { status, reason: None }).await?;
    }
    store.report_job(&id, attempt, JobStatus::Completed, None).await?;
    store.end_attempt(&id, attempt, AttemptEnd { exit_code: Some(0), outcome: "exited with code 0".into() }).await?;
    Ok(())
}

fn job(id: &str) -> NewJob {
    NewJob {
        id: id.into(),
        template: "noop".into(),
        agent: "bench-agent".into(),
        params: Default::default(),
        priority: Priority::default(),
        chapter: None,
        desired: DesiredState::Active,
        env: Default::default(),
        steps: vec![StepSpec {
            id: "noop".into(),
            description: "do nothing".into(),
            run: Some("true".into()),
            ..Default::default()
        }],
        max_attempts: None,
        parallelism: george_core::plan::DEFAULT_PARALLELISM,
        fail_fast: true,
        origin: Origin { source: "api".into(), reference: None, revision: None },
        labels: Default::default(),
        not_before: None,
    }
}

/// Writes `n` pending bench jobs (`<prefix>-000000`, ...) as the API would.
pub async fn backlog(store: &dyn Store, n: usize, prefix: &str, concurrency: usize) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            store.create_job(job(&format!("{prefix}-{i:06}")), "api").await?;
            Ok(())
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}
