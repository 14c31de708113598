//! Working a step without `run`: a tool-calling loop through George's LLM
//! proxy. The model sees the step, the job and the conversation; it may use
//! only the tools its capabilities grant, and it ends the step by calling
//! `complete_step`, `fail_step`, `ask_human` or `report_missing_capability`.
//! Every tool call is evidence; the conversation is saved after every turn.

use crate::conversation::{
    anthropic_answer, anthropic_request, openai_answer, openai_request, Answer, Conversation, Msg,
};
use crate::tools;
use george_client::{Client, ClientError};
use george_core::api::{AgentContext, EvidenceReport, StepView};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// How a step's LLM loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmOutcome {
    /// Done; the model's summary.
    Done(String),
    /// Cannot be done.
    Failed(String),
    /// Needs something: `capability missing: X` or `waiting for human: Q`.
    Blocked(String),
    /// A budget refused the call; the engine blocked the job already.
    BudgetRefused(String),
    /// The agent is stopping.
    Stopped,
}

/// Turns allowed per step, over all attempts.
fn max_turns() -> u32 {
    std::env::var("GEORGE_LLM_MAX_TURNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

fn system_prompt(ctx: &AgentContext, step: &StepView) -> String {
    format!(
        "You are an agent run by George, working on job `{job}` (template `{template}`), step `{step}`.\n\
         Your capabilities: [{caps}]. Use only the tools you are given. If the step needs a capability you \
         do not have, call report_missing_capability; never work around it. {escalate}\
         When the step is done, call complete_step with a short summary; if it cannot be done, call fail_step.",
        escalate = if ctx.may_ask_human {
            "If you need a person's decision, call ask_human. "
        } else {
            "You may not ask a person: decide yourself or call fail_step. "
        },
        job = ctx.job.id,
        template = ctx.job.template,
        step = step.spec.id,
        caps = ctx.capabilities.join(", ")
    )
}

fn task(ctx: &AgentContext, step: &StepView) -> String {
    let mut t = format!("Step `{}`: {}\n", step.spec.id, step.spec.description);
    if !ctx.job.params.is_empty() {
        t.push_str(&format!("Job parameters: {}\n", serde_json::to_string(&ctx.job.params).unwrap_or_default()));
    }
    if let Some(check) = &step.spec.done_when {
        t.push_str(&format!("The step counts as done when `{check}` exits 0.\n"));
    }
    t
}

async fn save(client: &Client, job: &str, step: &str, convo: &Conversation) -> Result<(), ClientError> {
    let ev = EvidenceReport {
        step_id: Some(step.into()),
        kind: "llm.conversation".into(),
        content: serde_json::to_string(convo).unwrap_or_default(),
    };
    client.add_evidence(job, &ev).await.map(|_| ())
}

async fn load(client: &Client, job: &str, step: &str) -> Result<Option<Conversation>, ClientError> {
    let evidence = client.evidence(job).await?;
    Ok(evidence
        .iter()
        .rev()
        .filter(|e| e.kind == "llm.conversation" && e.step_id.as_deref() == Some(step) && !e.truncated)
        .find_map(|e| serde_json::from_str(&e.content).ok()))
}

/// Works `step` with the LLM. `api` is `openai` or `anthropic`; git tools
/// act on `repo`, the job's repository if it has one.
pub async fn work(
    client: &Client,
    ctx: &AgentContext,
    step: &StepView,
    api: &str,
    stop: &CancellationToken,
    repo: Option<&crate::git::Repo>,
) -> Result<LlmOutcome, ClientError> {
    let job = ctx.job.id.as_str();
    let step_id = step.spec.id.as_str();
    let mut granted = tools::granted(&ctx.capabilities);
    if !ctx.may_ask_human {
        granted.retain(|t| t.name != "ask_human");
    }
    let system = system_prompt(ctx, step);
    let mut convo = match load(client, job, step_id).await? {
        Some(c) => c,
        None => Conversation {
            step: step_id.into(),
            messages: vec![Msg::User { text: task(ctx, step) }],
            ..Default::default()
        },
    };
    // What people said since the conversation last looked (e.g. a reply to ask_human).
    let seen = convo.last_comment;
    for c in ctx.comments.iter().filter(|c| c.id > seen) {
        if !c.author.starts_with("agent:") {
            convo.messages.push(Msg::User { text: format!("Comment from {}: {}", c.author, c.body) });
        }
        convo.last_comment = convo.last_comment.max(c.id);
    }
    loop {
        if stop.is_cancelled() {
            save(client, job, step_id, &convo).await?;
            return Ok(LlmOutcome::Stopped);
        }
        if convo.turns >= max_turns() {
            save(client, job, step_id, &convo).await?;
            return Ok(LlmOutcome::Failed(format!("no result after {} LLM turns", convo.turns)));
        }
        convo.turns += 1;
        let messages = match ctx.context_window {
            Some(window) => {
                // The system prompt and the tool definitions go with every call.
                let fixed = crate::conversation::estimate_tokens(&openai_request(&system, &[], &granted));
                crate::conversation::fit(&convo.messages, window.saturating_sub(fixed))
            }
            None => convo.messages.clone(),
        };
        let (path, body) = match api {
            "anthropic" => ("messages", anthropic_request(&system, &messages, &granted)),
            _ => ("chat/completions", openai_request(&system, &messages, &granted)),
        };
        let resp = match client.llm(path, &body).await {
            Ok(r) => r,
            Err(ClientError::Api { status: 429, message, code, .. }) if code == "budget_exhausted" => {
                return Ok(LlmOutcome::BudgetRefused(message))
            }
            Err(ClientError::Api { status: 429, retry_after, .. })
            | Err(ClientError::Api { status: 503, retry_after: retry_after @ Some(_), .. }) => {
                // Paced by George's rate limits (`rate_limited`) or the provider's own,
                // or a replica that does not lead (`not_leading`): come back when told.
                convo.turns -= 1;
                let wait = std::time::Duration::from_secs(retry_after.unwrap_or(5).clamp(1, 3600));
                tracing::info!(wait_secs = wait.as_secs(), "LLM call rate-limited; waiting");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => {}
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let answer: Answer = if api == "anthropic" { anthropic_answer(&resp) } else { openai_answer(&resp) };
        convo.messages.push(Msg::Assistant { text: answer.text.clone(), calls: answer.calls.clone() });
        if answer.calls.is_empty() && answer.text.as_deref().is_none_or(|t| t.trim().is_empty()) {
            save(client, job, step_id, &convo).await?;
            return Ok(LlmOutcome::Failed("the model gave an empty answer".into()));
        }
        if answer.calls.is_empty() {
            // A plain answer: the model considers the step done.
            save(client, job, step_id, &convo).await?;
            return Ok(LlmOutcome::Done(answer.text.unwrap_or_default()));
        }
        let mut ending = None;
        for call in &answer.calls {
            if ending.is_some() {
                // Every call needs a result, even those the step ended before.
                convo.messages.push(Msg::Tool { call_id: call.id.clone(), content: "not run: the step ended".into() });
                continue;
            }
            let arg = |k: &str| call.args.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            let granted_tool = granted.iter().any(|t| t.name == call.name);
            let result = if !granted_tool {
                // Never run a tool outside the grants: stop and say what is missing.
                let cap = tools::capability_of(&call.name).unwrap_or(call.name.as_str()).to_string();
                ending = Some(LlmOutcome::Blocked(format!("capability missing: {cap}")));
                format!("refused: `{}` needs capability `{cap}`, which this agent does not have", call.name)
            } else {
                match call.name.as_str() {
                    "complete_step" => {
                        let verdict = match &step.spec.done_when {
                            Some(check)
                                if !crate::step::run_command(
                                    check,
                                    std::time::Duration::from_secs(120),
                                    stop,
                                    4096,
                                )
                                .await
                                .succeeded() =>
                            {
                                format!("not done yet: `{check}` does not hold")
                            }
                            _ => {
                                ending = Some(LlmOutcome::Done(arg("summary")));
                                "ok".to_string()
                            }
                        };
                        verdict
                    }
                    "fail_step" => {
                        ending = Some(LlmOutcome::Failed(arg("reason")));
                        "ok".into()
                    }
                    "ask_human" => {
                        let q = arg("question");
                        client.comment(job, &format!("Question: {q}")).await?;
                        ending = Some(LlmOutcome::Blocked(format!("waiting for human: {q}")));
                        "asked; the job waits for the answer".into()
                    }
                    "report_missing_capability" => {
                        ending = Some(LlmOutcome::Blocked(format!("capability missing: {}", arg("capability"))));
                        "ok".into()
                    }
                    "comment" => {
                        client.comment(job, &arg("text")).await?;
                        "posted".into()
                    }
                    "spawn_subagent" => spawn_subagent(client, job, &call.args).await?,
                    "wait_for" => {
                        let (result, waiting) = wait_for(client, job, &call.args).await?;
                        ending = waiting.map(LlmOutcome::Blocked);
                        result
                    }
                    name => tools::run(name, &call.args, stop, repo).await,
                }
            };
            let record = json!({"tool": call.name, "args": call.args, "granted": granted_tool, "result": result.chars().take(4096).collect::<String>()});
            client
                .add_evidence(
                    job,
                    &EvidenceReport {
                        step_id: Some(step_id.into()),
                        kind: "tool_call".into(),
                        content: record.to_string(),
                    },
                )
                .await?;
            convo.messages.push(Msg::Tool { call_id: call.id.clone(), content: result });
        }
        save(client, job, step_id, &convo).await?;
        if let Some(outcome) = ending {
            return Ok(outcome);
        }
    }
}

/// `spawn_subagent`: a child job; a refusal (a limit, a bad template) is the model's to read.
async fn spawn_subagent(client: &Client, job: &str, args: &Value) -> Result<String, ClientError> {
    let text = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_string);
    let req = george_core::api::ChildRequest {
        key: text("key").unwrap_or_default(),
        template: text("template").unwrap_or_default(),
        params: args
            .get("params")
            .and_then(Value::as_object)
            .map(|o| o.clone().into_iter().collect())
            .unwrap_or_default(),
        task: text("task"),
        agent: None,
        priority: None,
        tokens: args.get("tokens").and_then(Value::as_u64),
    };
    match client.spawn_child(job, &req).await {
        Ok(c) => Ok(format!("child `{}` is job `{}`, {}", c.key, c.id, c.status)),
        Err(e) if e.is_superseded() => Err(e),
        Err(ClientError::Api { message, .. }) => Ok(format!("refused: {message}")),
        Err(e) => Err(e),
    }
}

/// `wait_for`: the children's results if they have all ended; else the
/// reason to block with (the job resumes when they have).
async fn wait_for(client: &Client, job: &str, args: &Value) -> Result<(String, Option<String>), ClientError> {
    let keys: Vec<String> = args
        .get("keys")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    if keys.is_empty() {
        return Ok(("error: name the keys of the children to wait for".into(), None));
    }
    let children = client.children(job).await?;
    let mut lines = Vec::new();
    let mut running = Vec::new();
    for key in &keys {
        match children.iter().find(|c| &c.key == key) {
            None => return Ok((format!("error: no child has the key `{key}`"), None)),
            Some(c) if !c.status.is_final() => running.push(key.clone()),
            Some(c) => {
                let mut line = format!("- {key} ({}): {}", c.id, c.status);
                if let Some(why) = c.reason.as_deref().filter(|_| c.status != george_core::JobStatus::Completed) {
                    line.push_str(&format!(" — {why}"));
                }
                if let Some(s) = &c.summary {
                    line.push_str(&format!("\n  {s}"));
                }
                lines.push(line);
            }
        }
    }
    if running.is_empty() {
        return Ok((format!("every child has ended:\n{}", lines.join("\n")), None));
    }
    let reason = format!("{}{}", george_core::api::WAITING_FOR_CHILDREN, keys.join(", "));
    Ok(("waiting: this job resumes when they have ended, with their results in a comment".into(), Some(reason)))
}
