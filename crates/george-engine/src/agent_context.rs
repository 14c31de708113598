//! What an agent is told of its attempt ([`AgentContext`]): the answer to
//! its first call (`attach`), or — for George's own agent, run by the
//! launcher — delivered with its release (the process runtime's gate, a warm
//! agent's binding), so that it starts its first step without a round trip
//! to the engine.

use crate::context::Context;
use george_core::api::{views, AgentContext};
use george_core::record::Job;
use george_governor::ProviderApi;
use george_store::StoreError;

/// The context of `job`'s attempt `attempt`, as the store has it now.
pub(crate) async fn of(ctx: &Context, job: Job, attempt: u32) -> Result<AgentContext, StoreError> {
    let comments = ctx.store.comments(&job.id).await?;
    with_comments(ctx, job, attempt, comments).await
}

/// [`of`], the job's conversation read already.
async fn with_comments(
    ctx: &Context,
    job: Job,
    attempt: u32,
    comments: Vec<george_core::record::Comment>,
) -> Result<AgentContext, StoreError> {
    let catalog = ctx.catalog.get(ctx.store.as_ref()).await?;
    let spec = catalog.agents.get(&job.agent);
    let capabilities = spec.map(|a| a.spec.capabilities.clone()).unwrap_or_default();
    let may_ask_human = spec.and_then(|a| a.spec.safety.can_escalate_to_human).unwrap_or(true);
    let context_window = spec.and_then(|a| a.spec.resources.context_window).map(|w| {
        // Yellow or worse: load less context (seed 003 §4).
        if crate::alerts::color(ctx, job.chapter.as_deref()) >= crate::alerts::Color::Yellow {
            w / 2
        } else {
            w
        }
    });
    // No provider or model configured for it: the agent has no LLM (its LLM
    // steps block), as the proxy would refuse its calls.
    let choice = spec.and_then(|a| a.spec.llm.as_ref());
    let llm_api = crate::llm::choose(ctx, choice).ok().map(|(p, _)| match p.api {
        ProviderApi::OpenAi => "openai".to_string(),
        ProviderApi::Anthropic => "anthropic".to_string(),
    });
    Ok(AgentContext {
        job: job.into(),
        attempt,
        comments: views(comments),
        heartbeat_interval_ms: ctx.cfg.health.interval.get().as_millis() as u64,
        capabilities,
        llm_api,
        may_ask_human,
        context_window,
    })
}

/// The context of the attempt `spawn` has just recorded — `job` as the
/// attempt left it, with its conversation (read while the attempt was
/// recorded: the attempt does not change it) — as JSON for its release
/// ([`george_runtime::SpawnRequest::context`]). `None` when it cannot be
/// assembled: the agent then asks for it (`attach`), as any agent may.
pub(crate) async fn released_with(
    ctx: &Context,
    job: Job,
    comments: Result<Vec<george_core::record::Comment>, StoreError>,
) -> Option<String> {
    let (job_id, attempt) = (job.id.clone(), job.attempt);
    let assembled = match comments {
        Ok(comments) => with_comments(ctx, job, attempt, comments).await,
        Err(e) => Err(e),
    };
    match assembled {
        Ok(context) => serde_json::to_string(&context).ok(),
        Err(e) => {
            tracing::debug!(job = job_id, attempt, error = %e, "the agent will ask for its context");
            None
        }
    }
}
