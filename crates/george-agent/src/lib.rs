//! The reference agent, `george agent run`: what the runtimes start by
//! default. It reads its job from the engine, works out where it is, runs the
//! steps in dependency order and reports each one before moving on, so a
//! replacement agent resumes instead of starting over:
//!
//! - a step whose `done_when` already holds is recorded as done, not redone;
//! - a `run` step is done when its command exits 0 (within `timeout`, with
//!   `retries` extra tries) and its `done_when`, if any, then holds;
//! - a step with no `run` is worked by an LLM tool loop through George's
//!   proxy (see `llm_step`); with no LLM configured it stops the job as
//!   `blocked` with reason `capability missing: llm` — it never pretends the
//!   step is done.
//!
//! It heartbeats throughout, stops at once if the engine says its attempt is
//! superseded, and on SIGTERM abandons the current step cleanly and exits.

mod conversation;
mod env;
mod forge;
mod git;
mod graph;
mod llm_step;
mod process_tree;
mod reports;
mod step;
mod tools;

pub use env::{AgentEnv, EnvError};

use george_client::{Client, ClientError};
use george_core::api::{AgentContext, AgentReport, CommentRequest, EvidenceReport, JobReport, ReportBatch};
use george_core::template::{topological_order, StepSpec};
use george_core::{JobStatus, StepStatus};
use std::future::Future;
use std::time::Duration;
use step::{run_command, CommandResult};
use tokio_util::sync::CancellationToken;

/// Largest captured output kept as evidence (the tail is kept).
pub const MAX_EVIDENCE_BYTES: usize = 64 << 10;
/// The reason a step without `run` blocks its job.
pub const LLM_MISSING: &str = "capability missing: llm";

/// How the agent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Reported the job completed.
    Completed,
    /// Reported the job blocked.
    Blocked(String),
    /// Reported the job failed.
    Failed(String),
    /// Stopped on request (SIGTERM) with the job unfinished.
    Abandoned,
    /// The engine refused this attempt.
    Superseded,
}

impl Outcome {
    /// The process exit code for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Completed | Outcome::Blocked(_) | Outcome::Failed(_) | Outcome::Abandoned => 0,
            Outcome::Superseded => 3,
        }
    }
}

/// Errors that end the agent without a verdict; the engine retries the job.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The environment is incomplete.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The engine could not be reached or refused a call.
    #[error("engine: {0}")]
    Engine(#[from] ClientError),
}

struct Agent {
    client: Client,
    job: String,
    stop: CancellationToken,
    superseded: CancellationToken,
    /// How long calls are retried while the engine cannot be reached.
    patience: Duration,
    /// The longest wait between two tries of a call: never more than the
    /// heartbeat interval, so an agent whose engine comes back is heard from
    /// well within its health deadline.
    retry_cap: Duration,
    /// Reports not yet sent (see `reports`).
    reports: reports::Reports,
}

/// Runs the agent with settings from the environment, until it has a verdict.
pub async fn run(env: AgentEnv) -> Result<Outcome, AgentError> {
    run_with(env, None).await
}

/// What every agent's start initialises once per process (its HTTP
/// client's TLS provider and roots), done ahead by a warm launcher. It
/// keeps nothing of the environment: the agent's own client is built from
/// its job's.
pub fn prepare() {
    drop(Client::new("http://127.0.0.1", ""));
}

/// [`run`], given its context when the engine delivered it with the agent's
/// release (see `george_runtime::launch`): the agent then starts its first
/// step at once, and its first report batch is its first heartbeat. A
/// context for another job is ignored (the agent asks for its own).
pub async fn run_with(env: AgentEnv, context: Option<AgentContext>) -> Result<Outcome, AgentError> {
    let client = Client::new(&env.api_url, &env.token)?.with_traceparent(env.traceparent.as_deref());
    let agent = Agent {
        client,
        job: env.job_id.clone(),
        stop: CancellationToken::new(),
        superseded: CancellationToken::new(),
        patience: env.engine_patience,
        retry_cap: env
            .heartbeat_interval
            .unwrap_or(Duration::from_secs(5))
            .clamp(Duration::from_millis(50), Duration::from_secs(5)),
        reports: reports::Reports::default(),
    };
    // SIGTERM (the engine stopping us) or a superseded attempt ends the work.
    let context = context.filter(|c| c.job.id == env.job_id);
    tokio::select! {
        outcome = attempt(&agent, &env, context) => outcome,
        never = cancel_on_sigterm(agent.stop.clone()) => match never {},
    }
}

/// Cancels `stop` when SIGTERM arrives; never ends by itself (the attempt
/// stops its work and ends on its own).
async fn cancel_on_sigterm(stop: CancellationToken) -> std::convert::Infallible {
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        term.recv().await;
        tracing::info!("SIGTERM: abandoning the current step");
        stop.cancel();
    }
    std::future::pending().await
}

/// The attempt: its context and a first heartbeat (one call, unless the
/// context came with the release), then the work with heartbeats.
async fn attempt(agent: &Agent, env: &AgentEnv, delivered: Option<AgentContext>) -> Result<Outcome, AgentError> {
    let ctx = match delivered {
        Some(ctx) => ctx,
        None => match agent.call(|| agent.client.attach(&agent.job)).await {
            // One call for the context and the first heartbeat: the agent is
            // active from its first step on.
            Ok(ctx) => ctx,
            Err(e) if e.is_superseded() => return Ok(Outcome::Superseded),
            Err(e) => return Err(e.into()),
        },
    };
    tracing::info!(job = %ctx.job.id, attempt = ctx.attempt, steps = ctx.job.steps.len(), "agent starting");
    let interval = env.heartbeat_interval.unwrap_or(Duration::from_millis(ctx.heartbeat_interval_ms.max(100)));

    let beats = heartbeat_loop(&agent.client, &agent.job, interval, agent.patience, &agent.stop, &agent.superseded);
    let sends = agent.reports.run(agent, &agent.stop, &agent.superseded);
    let done = CancellationToken::new();
    let (outcome, ()) = tokio::join!(
        async {
            let mut o = agent.work(&ctx).await;
            // Whatever the work left queued (a step abandoned on SIGTERM,
            // evidence before an error) goes now.
            if let Err(e) = agent.flush().await {
                if o.is_ok() {
                    o = Err(e);
                }
            }
            done.cancel();
            o
        },
        async {
            tokio::select! {
                _ = beats => {}
                _ = sends => {}
                _ = done.cancelled() => {}
            }
        }
    );
    match outcome {
        Err(e) if e.is_superseded() => Ok(Outcome::Superseded),
        _ if agent.superseded.is_cancelled() => Ok(Outcome::Superseded),
        other => other.map_err(AgentError::from),
    }
}

/// Heartbeats every `every` until `stop`. A superseded attempt stops the
/// work at once (the step's whole process tree is killed). While the engine
/// cannot be reached the work goes on; after `patience` without one
/// heartbeat getting through, the work stops.
async fn heartbeat_loop(
    client: &Client,
    job: &str,
    every: Duration,
    patience: Duration,
    stop: &CancellationToken,
    superseded: &CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first one was `attach`, before the work began; or, with a context
    // delivered at release, the first report batch (within `reports::LINGER`).
    tick.tick().await;
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A beat that hangs (the engine frozen) must not hold back the next
        // check: give each at most the patience left.
        let left = patience.saturating_sub(heard.elapsed());
        match tokio::time::timeout(left.max(every), client.heartbeat(job)).await {
            Ok(Ok(())) => heard = tokio::time::Instant::now(),
            Ok(Err(e)) if e.is_superseded() => {
                tracing::warn!("the engine superseded this attempt; stopping its step at once");
                superseded.cancel();
                stop.cancel();
                return;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed; working on"),
            Err(_) => tracing::warn!("heartbeat unanswered; working on"),
        }
        if heard.elapsed() >= patience {
            tracing::error!(patience_s = patience.as_secs(), "the engine has been unreachable too long; stopping");
            stop.cancel();
            return;
        }
    }
}

impl reports::Sender for Agent {
    async fn send(&self, batch: &ReportBatch) -> Result<(), ClientError> {
        self.call(|| self.client.reports(&self.job, batch)).await
    }
}

impl Agent {
    /// Calls the engine, retrying while it is unreachable or failing (it may
    /// be restarting); a refusal is returned at once.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, ClientError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut delay = Duration::from_millis(100).min(self.retry_cap);
        // A stopping agent reports what it can, once: it never waits for an
        // engine that may be gone (george up stopping everything).
        let patience = if self.stop.is_cancelled() { Duration::ZERO } else { self.patience };
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match f().await {
                Err(e @ ClientError::Unreachable { .. }) | Err(e @ ClientError::Api { status: 500..=599, .. })
                    if tokio::time::Instant::now() < deadline =>
                {
                    tracing::warn!(error = %e, "engine call failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.retry_cap);
                }
                other => return other,
            }
        }
    }

    /// Sends the queued reports now.
    async fn flush(&self) -> Result<(), ClientError> {
        self.reports.flush(self).await
    }

    fn step_status(&self, step: &str, status: StepStatus, reason: Option<String>) {
        self.reports.push(AgentReport::Step { step: step.into(), status, reason, at: Some(chrono::Utc::now()) });
    }

    fn evidence(&self, step: &str, kind: &str, content: String) {
        self.reports.push(AgentReport::Evidence(EvidenceReport {
            step_id: Some(step.into()),
            kind: kind.into(),
            content,
        }));
    }

    fn job_evidence(&self, kind: &str, content: String) {
        self.reports.push(AgentReport::Evidence(EvidenceReport { step_id: None, kind: kind.into(), content }));
    }

    /// Blocks the job (and the step, if any) with `reason`.
    async fn block(&self, step: Option<&str>, reason: String) -> Result<Outcome, ClientError> {
        if let Some(step) = step {
            self.step_status(step, StepStatus::Blocked, Some(reason.clone()));
        }
        self.verdict(JobStatus::Blocked, Some(reason.clone())).await?;
        Ok(Outcome::Blocked(reason))
    }

    /// The job's repository, cloned and on its branch; the working directory moves into it.
    async fn open_repo(&self, ctx: &AgentContext, url: &str) -> Result<Result<git::Repo, String>, ClientError> {
        if !ctx.capabilities.iter().any(|c| c == "git") {
            return Ok(Err(format!(
                "capability missing: git (job `{}` works in the repository {url}; grant its AgentSpec the `git` \
                 capability, with a git-token or git-ssh-key secret, then comment on the job to retry)",
                ctx.job.id
            )));
        }
        let work = std::env::var_os("GEORGE_WORK_DIR")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| ".".into());
        let _ = std::fs::remove_dir_all(work.join("repo"));
        let repo = match git::Repo::prepare(&ctx.job, url, &work, &git::GitSettings::from_env()).await {
            Ok(r) => r,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if let Err(e) = std::env::set_current_dir(&repo.dir) {
            return Ok(Err(format!("cannot enter the clone at {}: {e}", repo.dir.display())));
        }
        let how = if repo.continued {
            "continuing the pushed branch".to_string()
        } else {
            format!("a new branch from `{}`", repo.base)
        };
        self.job_evidence("git", format!("working on `{}` of {url}: {how}", repo.branch));
        Ok(Ok(repo))
    }

    /// A step is done: with a repository, its work is committed and pushed
    /// first, so the record never runs ahead of the branch.
    async fn step_done(
        &self,
        repo: Option<&git::Repo>,
        attempt: u32,
        step: &str,
        note: Option<String>,
    ) -> Result<Option<Outcome>, ClientError> {
        if let Some(repo) = repo {
            match repo.checkpoint(&self.job, attempt, step).await {
                Ok(sha) => self.evidence(step, "commit", format!("{sha} pushed to {}", repo.branch)),
                Err(e) => return self.block(Some(step), e.to_string()).await.map(Some),
            }
        }
        self.step_status(step, StepStatus::Completed, note);
        Ok(None)
    }

    /// The end of a coding job: what it leaves behind, and the pull request if asked for.
    async fn hand_back(
        &self,
        ctx: &AgentContext,
        repo: &git::Repo,
        checks: Vec<serde_json::Value>,
    ) -> Result<Option<Outcome>, ClientError> {
        let mut summary = repo.summary().await;
        summary["checks"] = checks.into();
        let wanted = ctx.job.params.get("open_pull_request");
        if wanted.is_some_and(|v| v == &serde_json::Value::Bool(true) || v == "true") {
            let settings = git::GitSettings::from_env();
            let title = ctx
                .job
                .params
                .get("title")
                .or_else(|| ctx.job.params.get("summary"))
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("{} ({})", ctx.job.id, ctx.job.template));
            let body = format!(
                "Work of George job `{}` (template `{}`).\n\n```\n{}\n```",
                ctx.job.id,
                ctx.job.template,
                summary["diff_stat"].as_str().unwrap_or("")
            );
            let url = repo_url_of(&summary);
            let opened = match forge::Forge::from_env(&url, settings.secrets_dir.as_ref()) {
                Ok(f) => f.open(&forge::PullRequest { title, body, head: &repo.branch, base: &repo.base }).await,
                Err(e) => Err(e),
            };
            match opened {
                Ok(link) => summary["pull_request"] = link.into(),
                Err(e) => {
                    let reason = format!(
                        "cannot open a pull request: {}; the branch `{}` is pushed. Fix the forge settings \
                         (GEORGE_FORGE_URL, the forge-token secret) and comment on the job to retry",
                        repo.redact(&e.to_string()),
                        repo.branch
                    );
                    return self.block(None, reason).await.map(Some);
                }
            }
        }
        self.job_evidence("git.result", summary.to_string());
        Ok(None)
    }

    async fn verdict(&self, status: JobStatus, reason: Option<String>) -> Result<(), ClientError> {
        // A human reads the conversation: say why the job cannot go on.
        if let (JobStatus::Blocked | JobStatus::Failed, Some(why)) = (status, reason.as_deref()) {
            self.reports.push(AgentReport::Comment(CommentRequest { body: format!("{status}: {why}") }));
        }
        self.reports.push(AgentReport::Verdict(JobReport { status, reason }));
        self.flush().await
    }

    async fn work(&self, ctx: &AgentContext) -> Result<Outcome, ClientError> {
        let specs: Vec<StepSpec> = ctx.job.steps.iter().map(|s| s.spec.clone()).collect();
        let order = match topological_order(&specs) {
            Ok(order) => order,
            Err(cycle) => {
                let reason = format!("steps form a cycle: {}", cycle.join(" → "));
                self.verdict(JobStatus::Failed, Some(reason.clone())).await?;
                return Ok(Outcome::Failed(reason));
            }
        };
        if !ctx.comments.is_empty() {
            tracing::info!(comments = ctx.comments.len(), "conversation so far read");
        }
        let repo = match git::repo_url(&ctx.job) {
            None => None,
            Some(url) => match self.open_repo(ctx, &url).await? {
                Ok(r) => Some(r),
                Err(reason) => return self.block(None, reason).await,
            },
        };
        // Steps in one repository share its working tree and commit one by one.
        let parallelism = if repo.is_some() { 1 } else { ctx.job.parallelism.max(1) as usize };
        let fail_fast = ctx.job.fail_fast;
        let mut graph = graph::StepGraph::new(&ctx.job.steps, order);
        // Cancels every running step: the agent stops, or a step failed fast.
        let siblings = self.stop.child_token();
        let mut running = futures_util::stream::FuturesUnordered::new();
        let mut checks = Vec::new();
        let mut ending: Option<StepEnd> = None;
        let mut started = 0usize;
        loop {
            while running.len() < parallelism && !siblings.is_cancelled() && (ending.is_none() || !fail_fast) {
                let Some(i) = graph.start_next() else { break };
                // What the steps before this one did is stored before it starts.
                if started > 0 {
                    self.flush().await?;
                }
                started += 1;
                let (repo, siblings) = (repo.as_ref(), &siblings);
                running.push(async move { (i, self.run_step(ctx, i, repo, siblings).await) });
            }
            let Some((i, end)) = futures_util::StreamExt::next(&mut running).await else { break };
            match end? {
                StepEnd::Done(check) => {
                    graph.done(i);
                    checks.extend(check);
                }
                StepEnd::Cancelled => graph.stopped(i),
                failed @ StepEnd::Failed(_) if !fail_fast => {
                    graph.stopped(i);
                    ending.get_or_insert(failed);
                }
                other => {
                    graph.stopped(i);
                    ending.get_or_insert(other);
                    siblings.cancel();
                }
            }
        }
        match ending {
            _ if self.stop.is_cancelled() => return Ok(self.stopped()),
            Some(StepEnd::Failed(reason)) => {
                self.verdict(JobStatus::Failed, Some(reason.clone())).await?;
                return Ok(Outcome::Failed(reason));
            }
            Some(StepEnd::Blocked(reason)) => {
                self.verdict(JobStatus::Blocked, Some(reason.clone())).await?;
                return Ok(Outcome::Blocked(reason));
            }
            Some(StepEnd::Ended(outcome)) => return Ok(outcome),
            Some(StepEnd::Done(_) | StepEnd::Cancelled) | None => {}
        }
        if !graph.all_done() {
            return Ok(self.stopped());
        }
        if let Some(repo) = &repo {
            if let Some(o) = self.hand_back(ctx, repo, checks).await? {
                return Ok(o);
            }
        }
        self.verdict(JobStatus::Completed, None).await?;
        tracing::info!(job = %self.job, "job completed");
        Ok(Outcome::Completed)
    }

    /// One step, start to end: `done_when` first, then its LLM or its
    /// command with retries. A failure's reason names the step, its tries and
    /// the end of its standard error; the verdict is the caller's.
    async fn run_step(
        &self,
        ctx: &AgentContext,
        i: usize,
        repo: Option<&git::Repo>,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, ClientError> {
        let spec = &ctx.job.steps[i].spec;
        let timeout = Duration::from_secs(spec.timeout_secs.unwrap_or(3600));
        if let Some(check) = &spec.done_when {
            let r = run_command(check, timeout, cancel, MAX_EVIDENCE_BYTES).await;
            if r == CommandResult::Stopped {
                return Ok(StepEnd::Cancelled);
            }
            if r.succeeded() {
                tracing::info!(step = %spec.id, "done_when already holds; not redoing the step");
                self.evidence(&spec.id, "done_when", format!("`{check}` exited 0 before the step ran; already done"));
                let note = Some("done_when already held".to_string());
                return Ok(StepEnd::after(self.step_done(repo, ctx.attempt, &spec.id, note).await?, None));
            }
        }
        let Some(command) = &spec.run else {
            return self.llm_step(ctx, i, repo, cancel).await;
        };
        let tries = spec.retries + 1;
        let mut last = String::new();
        let mut tail = String::new();
        for n in 1..=tries {
            // Each try is a run of the step (`runs` counts them).
            self.step_status(&spec.id, StepStatus::InProgress, None);
            tracing::info!(step = %spec.id, try_ = n, of = tries, command = %command, "running step");
            let r = run_command(command, timeout, cancel, MAX_EVIDENCE_BYTES).await;
            match &r {
                CommandResult::Stopped => return Ok(self.cancelled(&spec.id)),
                CommandResult::Exited { code, output, truncated, .. } => {
                    let mut text = format!(
                        "$ {command}\n[try {n}/{tries}, exit code {code}{}]\n",
                        if *truncated { ", output truncated to its end" } else { "" }
                    );
                    text.push_str(output);
                    self.evidence(&spec.id, "output", text);
                    last = format!("exit code {code}");
                }
                CommandResult::TimedOut { output, .. } => {
                    self.evidence(
                        &spec.id,
                        "output",
                        format!("$ {command}\n[try {n}/{tries}, timed out after {}s]\n{output}", timeout.as_secs()),
                    );
                    last = format!("timed out after {}s", timeout.as_secs());
                }
                CommandResult::SpawnFailed(e) => last = format!("could not start the shell: {e}"),
            }
            tail = r.error_tail(STDERR_LINES);
            if r.succeeded() {
                match &spec.done_when {
                    Some(check) if !run_command(check, timeout, cancel, 4096).await.succeeded() => {
                        if cancel.is_cancelled() {
                            return Ok(self.cancelled(&spec.id));
                        }
                        last = format!("`run` succeeded but done_when `{check}` does not hold");
                    }
                    _ => {
                        let check = serde_json::json!({"step": spec.id, "command": command, "result": last});
                        return Ok(StepEnd::after(
                            self.step_done(repo, ctx.attempt, &spec.id, None).await?,
                            Some(check),
                        ));
                    }
                }
            }
            let wait = (n < tries).then(|| spec.retry_wait(n, jitter()));
            tracing::warn!(step = %spec.id, try_ = n, of = tries, result = %last, stderr = %tail,
                retry_in_ms = wait.map(|w| w.as_millis() as u64), "step try failed");
            self.reports.push(AgentReport::TryFailed {
                step: spec.id.clone(),
                number: n,
                of: tries,
                result: last.clone(),
                stderr: tail.clone(),
                retry_in_ms: wait.map(|w| w.as_millis() as u64),
            });
            if let Some(wait) = wait {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => return Ok(self.cancelled(&spec.id)),
                }
            }
        }
        let mut reason =
            format!("step `{}` failed after {tries} {}: {last}", spec.id, if tries == 1 { "try" } else { "tries" });
        if !tail.is_empty() {
            reason.push_str(&format!("; stderr ends:\n{tail}"));
        }
        self.step_status(&spec.id, StepStatus::Failed, Some(last));
        Ok(StepEnd::Failed(reason))
    }

    /// A step without `run`: worked by an LLM, or the job blocks.
    async fn llm_step(
        &self,
        ctx: &AgentContext,
        i: usize,
        repo: Option<&git::Repo>,
        cancel: &CancellationToken,
    ) -> Result<StepEnd, ClientError> {
        let view = &ctx.job.steps[i];
        let spec = &view.spec;
        let Some(api) = ctx.llm_api.as_deref() else {
            let reason =
                format!("{LLM_MISSING} (step `{}` has no `run` command; its description needs an LLM)", spec.id);
            self.step_status(&spec.id, StepStatus::Blocked, Some(LLM_MISSING.into()));
            return Ok(StepEnd::Blocked(reason));
        };
        self.step_status(&spec.id, StepStatus::InProgress, None);
        // The LLM step calls the engine itself: what is queued goes first.
        self.flush().await?;
        Ok(match llm_step::work(&self.client, ctx, view, api, cancel, repo).await? {
            llm_step::LlmOutcome::Done(summary) => {
                self.evidence(&spec.id, "summary", summary);
                StepEnd::after(self.step_done(repo, ctx.attempt, &spec.id, None).await?, None)
            }
            llm_step::LlmOutcome::Failed(reason) => {
                self.step_status(&spec.id, StepStatus::Failed, Some(reason.clone()));
                StepEnd::Failed(format!("step `{}` failed: {reason}", spec.id))
            }
            llm_step::LlmOutcome::Blocked(reason) => {
                self.step_status(&spec.id, StepStatus::Blocked, Some(reason.clone()));
                StepEnd::Blocked(reason)
            }
            // The engine blocked the job already; nothing more to report.
            llm_step::LlmOutcome::BudgetRefused(reason) => StepEnd::Ended(Outcome::Blocked(reason)),
            llm_step::LlmOutcome::Stopped => self.cancelled(&spec.id),
        })
    }

    /// A step stopped before it ended goes back to pending, saying why; the
    /// next attempt runs it again.
    fn cancelled(&self, step: &str) -> StepEnd {
        let why = if self.stop.is_cancelled() {
            "abandoned: the agent was stopped"
        } else {
            "cancelled: a step beside it failed (failFast)"
        };
        self.step_status(step, StepStatus::Pending, Some(why.into()));
        StepEnd::Cancelled
    }

    fn stopped(&self) -> Outcome {
        if self.superseded.is_cancelled() {
            Outcome::Superseded
        } else {
            Outcome::Abandoned
        }
    }
}

/// How a step ended, for the job's verdict.
enum StepEnd {
    /// Done; with a repository, the check it leaves in the hand-back.
    Done(Option<serde_json::Value>),
    /// Failed: the job's reason.
    Failed(String),
    /// The job must wait for a person: why.
    Blocked(String),
    /// The job's verdict is given already.
    Ended(Outcome),
    /// Stopped before it ended (reported back to pending).
    Cancelled,
}

impl StepEnd {
    /// After `step_done`: done, or the verdict it gave (a repository's push failed).
    fn after(verdict: Option<Outcome>, check: Option<serde_json::Value>) -> Self {
        verdict.map_or(StepEnd::Done(check), StepEnd::Ended)
    }
}

/// How many lines of a failed command's standard error a reason carries.
const STDERR_LINES: usize = 10;

/// A random number in `0.0..1.0`, for the retry jitter (0.5, the middle,
/// if the system's random source fails).
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    match getrandom::fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

fn repo_url_of(summary: &serde_json::Value) -> String {
    summary["repository"].as_str().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine that never answers: the agent works on for its patience,
    /// then stops its work (cleanly, not as superseded).
    #[tokio::test(start_paused = true)]
    async fn an_unreachable_engine_stops_the_work_after_the_patience() {
        let client = Client::new("http://127.0.0.1:1", "token").unwrap();
        let (stop, superseded) = (CancellationToken::new(), CancellationToken::new());
        let every = Duration::from_millis(100);
        let patience = Duration::from_secs(600);
        let started = tokio::time::Instant::now();
        heartbeat_loop(&client, "j", every, patience, &stop, &superseded).await;
        let waited = started.elapsed();
        assert!(stop.is_cancelled() && !superseded.is_cancelled());
        assert!(waited >= patience && waited < patience + every * 2, "stopped after {waited:?}");
    }
}
