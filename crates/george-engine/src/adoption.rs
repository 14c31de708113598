//! At start-up the engine looks at every agent its runtime still has: an
//! agent of a job's current attempt is adopted (watched as if it had been
//! spawned by this engine process); any other agent is stopped and removed.
//! So a restarted engine never leaves a job with two live agents.

use crate::context::Context;
use george_runtime::{AgentStatus, RuntimeError};
use george_store::{AttemptEnd, StoreError};

/// Errors while adopting.
#[derive(Debug, thiserror::Error)]
pub enum AdoptionError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// What adoption did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// Running agents of current attempts, now watched.
    pub adopted: Vec<String>,
    /// Stale agents stopped.
    pub stopped: Vec<String>,
    /// Leftovers of finished attempts cleaned up.
    pub cleaned: Vec<String>,
}

/// Adopts or removes what the runtime still has.
pub async fn adopt_orphans(ctx: &Context) -> Result<Adopted, AdoptionError> {
    let mut out = Adopted::default();
    for owned in ctx.runtime.list_owned().await? {
        let id = george_core::api::agent_id(&owned.job_id, owned.attempt);
        let attempt = ctx.store.get_agent(&owned.job_id, owned.attempt).await?;
        let job = ctx.store.get_job(&owned.job_id).await?;
        let current = matches!((&attempt, &job), (Some(a), Some(j)) if a.state.is_live() && j.attempt == owned.attempt);
        match (current, owned.status) {
            (true, AgentStatus::Running) => {
                if attempt.as_ref().is_some_and(|a| a.handle.is_none()) {
                    ctx.store.attempt_spawned(&owned.job_id, owned.attempt, owned.handle.clone()).await?;
                }
                ctx.runtime.adopt(&owned).await?;
                out.adopted.push(id);
            }
            (true, _) => {
                // Dead while the engine was away; the reconciler ends the attempt.
                if attempt.as_ref().is_some_and(|a| a.handle.is_none()) {
                    ctx.store.attempt_spawned(&owned.job_id, owned.attempt, owned.handle.clone()).await?;
                }
            }
            (false, status) => {
                if status == AgentStatus::Running {
                    tracing::warn!(agent = %id, "stopping an agent of a superseded attempt");
                    ctx.runtime
                        .terminate(&owned.job_id, owned.attempt, &owned.handle, ctx.cfg.termination_grace)
                        .await?;
                    out.stopped.push(id.clone());
                } else {
                    out.cleaned.push(id.clone());
                }
                if attempt.is_some_and(|a| a.state.is_live()) {
                    let end = AttemptEnd { exit_code: None, outcome: "superseded; removed at engine start".into() };
                    ctx.store.end_attempt(&owned.job_id, owned.attempt, end).await?;
                }
                ctx.runtime.cleanup(&owned.job_id, owned.attempt).await?;
            }
        }
    }
    if !out.adopted.is_empty() || !out.stopped.is_empty() {
        tracing::info!(adopted = ?out.adopted, stopped = ?out.stopped, "adopted agents from a previous run");
    }
    Ok(out)
}
