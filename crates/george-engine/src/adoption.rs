//! At start-up the engine looks at every agent its runtime still has: an
//! agent of a job's current attempt is adopted (watched as if it had been
//! spawned by this engine process); any other agent is stopped and removed.
//! So a restarted engine never leaves a job with two live agents.

use crate::context::Context;
use crate::decide::NEVER_STARTED;
use george_runtime::{AgentStatus, OwnedAgent, RuntimeError};
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
pub(crate) async fn adopt_orphans(ctx: &Context) -> Result<Adopted, AdoptionError> {
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
                if let Err(e) = ctx.runtime.adopt(&owned).await {
                    // Still the attempt's agent (its handle is stored): its
                    // status and heartbeats decide, as for any agent, and it
                    // is replaced (stopped first) if it cannot report. One
                    // agent that cannot be adopted never stops the engine.
                    tracing::error!(agent = %id, error = %e, "cannot adopt a running agent; its health checks decide");
                }
                out.adopted.push(id);
            }
            (true, _) if attempt.as_ref().is_some_and(|a| a.last_heartbeat.is_none()) => {
                // Never heard from: the engine died before releasing it (a
                // gated process ended when its gate closed; a container was
                // created, never started). Not the agent's failure.
                let end = AttemptEnd {
                    exit_code: None,
                    outcome: format!("{NEVER_STARTED} (the engine stopped before releasing its agent)"),
                };
                ctx.store.end_attempt(&owned.job_id, owned.attempt, end).await?;
                ctx.runtime.cleanup(&owned.job_id, owned.attempt).await?;
                out.cleaned.push(id);
            }
            (true, _) => {
                // Dead while the engine was away; the reconciler ends the attempt.
                if attempt.as_ref().is_some_and(|a| a.handle.is_none()) {
                    ctx.store.attempt_spawned(&owned.job_id, owned.attempt, owned.handle.clone()).await?;
                }
            }
            (false, status) => {
                remove_stale(ctx, &owned, status, attempt.is_some_and(|a| a.state.is_live())).await?;
                if status == AgentStatus::Running {
                    out.stopped.push(id);
                } else {
                    out.cleaned.push(id);
                }
            }
        }
    }
    if !out.adopted.is_empty() || !out.stopped.is_empty() {
        tracing::info!(adopted = ?out.adopted, stopped = ?out.stopped, "adopted agents from a previous run");
    }
    Ok(out)
}

/// Stops (if it runs) and removes the agent of an attempt that is not its
/// job's current, live one, ending the attempt if the store still has it live.
async fn remove_stale(ctx: &Context, owned: &OwnedAgent, status: AgentStatus, live: bool) -> Result<(), AdoptionError> {
    let id = george_core::api::agent_id(&owned.job_id, owned.attempt);
    if status == AgentStatus::Running {
        tracing::warn!(agent = %id, "stopping an agent of a superseded attempt");
        ctx.runtime.terminate(&owned.job_id, owned.attempt, &owned.handle, ctx.cfg.termination_grace).await?;
    }
    if live {
        let end = AttemptEnd { exit_code: None, outcome: "superseded; removed at engine start".into() };
        ctx.store.end_attempt(&owned.job_id, owned.attempt, end).await?;
    }
    ctx.runtime.cleanup(&owned.job_id, owned.attempt).await?;
    Ok(())
}

/// The periodic sweep: any running agent the runtime has whose attempt is
/// no longer its job's current one is killed at once and removed. (An engine
/// never leaves one behind on purpose; this catches what a crash might.)
pub(crate) async fn sweep(ctx: &Context) -> Result<Vec<String>, AdoptionError> {
    let mut killed = Vec::new();
    for owned in ctx.runtime.list_owned().await? {
        if owned.status != AgentStatus::Running {
            continue;
        }
        let job = ctx.store.get_job(&owned.job_id).await?;
        if job.is_some_and(|j| j.attempt <= owned.attempt) {
            // The current attempt (or one being started): the reconciler's.
            continue;
        }
        let id = george_core::api::agent_id(&owned.job_id, owned.attempt);
        tracing::warn!(agent = %id, "killing an agent of a superseded attempt");
        ctx.runtime.terminate(&owned.job_id, owned.attempt, &owned.handle, std::time::Duration::ZERO).await?;
        ctx.runtime.cleanup(&owned.job_id, owned.attempt).await?;
        killed.push(id);
    }
    Ok(killed)
}
