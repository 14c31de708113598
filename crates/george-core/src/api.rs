//! The engine API's wire types, shared by the server, the CLI and the agent.

use crate::plan::Origin;
use crate::template::StepSpec;
use crate::{AgentState, DesiredState, JobStatus, Priority, Role, StepStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The id of an agent instance: `<job id>-<attempt number>`.
pub fn agent_id(job_id: &str, attempt: u32) -> String {
    format!("{job_id}-{attempt}")
}

/// Splits an agent id into job id and attempt number.
pub fn parse_agent_id(id: &str) -> Option<(&str, u32)> {
    let (job, n) = id.rsplit_once('-')?;
    Some((job, n.parse().ok()?))
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobView {
    /// Job id.
    pub id: String,
    /// Template name.
    pub template: String,
    /// AgentSpec name.
    pub agent: String,
    /// Observed status.
    pub status: JobStatus,
    /// Why it has that status (blocked/failed reasons, "preempted", ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Desired state.
    pub desired: DesiredState,
    /// Priority class.
    pub priority: Priority,
    /// Chapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chapter: Option<String>,
    /// Parameters.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    /// Labels (`GET /api/v1/jobs?selector=` picks jobs by them).
    #[serde(default)]
    pub labels: crate::labels::Labels,
    /// Where it came from.
    pub origin: Origin,
    /// The current (latest) attempt number; 0 before the first.
    pub attempt: u32,
    /// Attempts that failed so far.
    pub failures: u32,
    /// Failed attempts allowed before the job fails; `None` = the engine default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// How many steps may run at once.
    #[serde(default = "crate::plan::default_parallelism")]
    pub parallelism: u32,
    /// Whether a failing step cancels the steps running beside it.
    #[serde(default = "crate::plan::yes")]
    pub fail_fast: bool,
    /// When the next attempt may start (after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Steps with their status.
    #[serde(default)]
    pub steps: Vec<StepView>,
    /// Its attempts with their timing (`GET /api/v1/jobs/{id}` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptTiming>,
}

/// One attempt of a job: when it ran and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AttemptTiming {
    /// Attempt number.
    pub attempt: u32,
    /// Lifecycle state.
    pub state: AgentState,
    /// Started (spawn requested).
    pub started_at: DateTime<Utc>,
    /// Ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// `ended_at - started_at`, in milliseconds, once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

impl From<crate::record::Attempt> for AttemptTiming {
    fn from(a: crate::record::Attempt) -> Self {
        AttemptTiming {
            attempt: a.attempt,
            state: a.state,
            started_at: a.started_at,
            duration_ms: a.ended_at.map(|e| (e - a.started_at).num_milliseconds()),
            ended_at: a.ended_at,
            outcome: a.outcome,
        }
    }
}

/// A step as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StepView {
    /// The step's definition.
    #[serde(flatten)]
    pub spec: StepSpec,
    /// Status.
    pub status: StepStatus,
    /// Why (failure or block reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Tries of this step so far.
    pub runs: u32,
    /// When its current run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When its current run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// `ended_at - started_at`, in milliseconds, once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// One agent instance (an attempt at a job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AgentView {
    /// `<job>-<attempt>`.
    pub id: String,
    /// Job id.
    pub job_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// AgentSpec name.
    pub agent_spec: String,
    /// Runtime kind (`process`, `docker`, `kubernetes`).
    pub runtime: String,
    /// Runtime handle (pid, container id, ...), once spawned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<Value>,
    /// Lifecycle state.
    pub state: AgentState,
    /// Spawn requested.
    pub started_at: DateTime<Utc>,
    /// Last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Process exit code, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// How it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// A message in a job's conversation history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CommentView {
    /// Id, increasing.
    pub id: i64,
    /// Job id.
    pub job_id: String,
    /// Who wrote it (`operator:<name>`, `agent:<agent id>`, `george`).
    pub author: String,
    /// Text.
    pub body: String,
    /// Written.
    pub created_at: DateTime<Utc>,
}

/// A piece of evidence an agent recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EvidenceView {
    /// Id, increasing.
    pub id: i64,
    /// Job id.
    pub job_id: String,
    /// Step it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    /// Attempt that recorded it.
    pub attempt: u32,
    /// Kind, e.g. `output`, `done_when`, `exit_code`.
    pub kind: String,
    /// Content (capped).
    pub content: String,
    /// Whether the content was cut to the cap.
    pub truncated: bool,
    /// Recorded.
    pub created_at: DateTime<Utc>,
}

/// An audit-log record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventView {
    /// Sequence number, strictly increasing.
    pub seq: i64,
    /// When.
    pub ts: DateTime<Utc>,
    /// Job it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Attempt it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// What happened, e.g. `job.status`.
    pub kind: String,
    /// Who did it.
    pub actor: String,
    /// Details.
    #[serde(default)]
    pub data: Value,
}

impl From<crate::record::Job> for JobView {
    fn from(j: crate::record::Job) -> Self {
        JobView {
            id: j.id,
            template: j.template,
            agent: j.agent,
            status: j.status,
            reason: j.reason,
            desired: j.desired,
            priority: j.priority,
            chapter: j.chapter,
            params: j.params,
            labels: j.labels,
            origin: j.origin,
            attempt: j.attempt,
            failures: j.failures,
            max_attempts: j.max_attempts,
            parallelism: j.parallelism,
            fail_fast: j.fail_fast,
            next_attempt_at: j.next_attempt_at,
            created_at: j.created_at,
            updated_at: j.updated_at,
            steps: j.steps.into_iter().map(StepView::from).collect(),
            attempts: Vec::new(),
        }
    }
}

impl From<crate::record::Step> for StepView {
    fn from(s: crate::record::Step) -> Self {
        let duration_ms = s.started_at.zip(s.ended_at).map(|(a, b)| (b - a).num_milliseconds());
        StepView {
            spec: s.spec,
            status: s.status,
            reason: s.reason,
            runs: s.runs,
            started_at: s.started_at,
            ended_at: s.ended_at,
            duration_ms,
            updated_at: s.updated_at,
        }
    }
}

impl From<crate::record::Attempt> for AgentView {
    fn from(a: crate::record::Attempt) -> Self {
        AgentView {
            id: a.id(),
            job_id: a.job_id,
            attempt: a.attempt,
            agent_spec: a.agent_spec,
            runtime: a.runtime,
            handle: a.handle,
            state: a.state,
            started_at: a.started_at,
            last_heartbeat: a.last_heartbeat,
            ended_at: a.ended_at,
            exit_code: a.exit_code,
            outcome: a.outcome,
        }
    }
}

impl From<crate::record::Event> for EventView {
    fn from(e: crate::record::Event) -> Self {
        EventView {
            seq: e.seq,
            ts: e.ts,
            job_id: e.job_id,
            attempt: e.attempt,
            kind: e.kind.as_str().to_string(),
            actor: e.actor,
            data: e.data,
        }
    }
}

impl From<crate::record::Comment> for CommentView {
    fn from(c: crate::record::Comment) -> Self {
        CommentView { id: c.id, job_id: c.job_id, author: c.author, body: c.body, created_at: c.created_at }
    }
}

impl From<crate::record::Evidence> for EvidenceView {
    fn from(e: crate::record::Evidence) -> Self {
        EvidenceView {
            id: e.id,
            job_id: e.job_id,
            step_id: e.step_id,
            attempt: e.attempt,
            kind: e.kind,
            content: e.content,
            truncated: e.truncated,
            created_at: e.created_at,
        }
    }
}

/// Converts a list of records to their views.
pub fn views<R, V: From<R>>(records: Vec<R>) -> Vec<V> {
    records.into_iter().map(V::from).collect()
}

/// The state of one source of desired state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SourceView {
    /// Source name, e.g. `git`.
    pub name: String,
    /// Revision applied last (commit SHA or content hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_revision: Option<String>,
    /// When it was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<DateTime<Utc>>,
    /// The revision seen last, if it was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_revision: Option<String>,
    /// Why it was rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// When it was last checked.
    pub checked_at: DateTime<Utc>,
}

/// How the block reason of a job waiting for its children begins; their
/// keys follow, comma-separated. George unblocks it when they have ended.
pub const WAITING_FOR_CHILDREN: &str = "waiting for children: ";

/// `POST /api/v1/jobs/{id}/children` (the job's own agent): a child job.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChildRequest {
    /// The child's key among its siblings: asking again with the same key
    /// (a later attempt) finds the same child. 1–40 lowercase letters, digits, `-`, `_` or `.`.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9._-]{0,39}$"))]
    pub key: String,
    /// Template name.
    #[schemars(length(min = 1))]
    pub template: String,
    /// Parameters.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    /// A task in words, for an LLM template: its `task` parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// AgentSpec override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Priority class: the parent's, or a less urgent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Tokens of the parent's family budget the child gets (when the parent
    /// has one): default, an equal share of what is left for the children
    /// it may still create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tokens: Option<u64>,
}

/// A child job as its parent (and `GET /api/v1/jobs/{id}/children`) sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChildView {
    /// Its job id.
    pub id: String,
    /// Its key among its siblings.
    pub key: String,
    /// Template name.
    pub template: String,
    /// Status.
    pub status: JobStatus,
    /// Why it has that status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its `summary` evidence (or the end of its output), once it has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Its family token budget, carved from its parent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Tokens it and its own children have used (LLM calls in the ledger).
    pub tokens_used: u64,
}

/// `POST /api/v1/jobs`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// Template name.
    #[schemars(length(min = 1))]
    pub template: String,
    /// Parameters.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    /// Job id: 1–63 lowercase letters, digits, `-`, `_` or `.`; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9._-]{0,62}$"))]
    pub id: Option<String>,
    /// Priority class (default P2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Chapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chapter: Option<String>,
    /// AgentSpec override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Extra environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "env_schema")]
    pub env: BTreeMap<String, String>,
    /// How many steps may run at once, instead of the template's (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub parallelism: Option<u32>,
    /// Whether a failing step cancels the steps running beside it, instead of the template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_fast: Option<bool>,
    /// Labels (`crate::labels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "labels_schema")]
    pub labels: crate::labels::Labels,
}

/// What labels may be (`crate::labels::check`).
fn labels_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "labels, as Kubernetes has them: at most 64; a key is an optional DNS-subdomain prefix and `/`, then a name of 1-63 letters, digits, `-`, `_` or `.` starting and ending with a letter or digit; a value is empty or such a name",
        "maxProperties": crate::labels::MAX_LABELS,
        "propertyNames": {"maxLength": crate::labels::MAX_KEY, "pattern": crate::labels::KEY_PATTERN},
        "additionalProperties": {"type": "string", "maxLength": crate::labels::MAX_NAME, "pattern": "^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"},
    })
}

/// What a job's `env` may hold (`crate::plan::check_env`; in all at most
/// 128 KiB of names and values).
fn env_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "variables for the agent: at most 256; a name is 1-256 characters without `=` or NUL, a value at most 32768 characters without NUL; 128 KiB in all",
        "maxProperties": crate::plan::MAX_ENV_VARS,
        "propertyNames": {"minLength": 1, "maxLength": crate::plan::MAX_ENV_NAME, "pattern": "^[^=\\u0000]*$"},
        "additionalProperties": {"type": "string", "maxLength": crate::plan::MAX_ENV_VALUE, "pattern": "^[^\\u0000]*$"},
    })
}

impl SubmitJob {
    /// A submission of `template` as job `id`, everything else left to the defaults.
    pub fn named(id: &str, template: &str) -> Self {
        Self { template: template.into(), id: Some(id.into()), ..Default::default() }
    }
}

/// `POST /api/v1/jobs/{id}/retry`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Run every step again, completed ones too.
    #[serde(default)]
    pub from_scratch: bool,
    /// Why (kept in the audit log and the job's reason; not blank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"\S"))]
    pub reason: Option<String>,
}

/// `POST /api/v1/jobs/{id}/resubmit`: a new job with the same template,
/// parameters, agent, chapter, environment and step settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResubmitRequest {
    /// The new job's id (1–63 lowercase letters, digits, `-`, `_` or `.`); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9._-]{0,62}$"))]
    pub id: Option<String>,
    /// Parameters that replace the old job's of the same name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Value>,
    /// Priority class, instead of the old job's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
}

/// `POST /api/v1/jobs/{id}/pause|resume|abort`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    /// Why (kept in the audit log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /api/v1/jobs/{id}/inject`: a message for the job's agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectRequest {
    /// The message (not blank).
    #[schemars(regex(pattern = r"\S"))]
    pub message: String,
}

/// What an agent reports about a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepReport {
    /// New status.
    pub status: StepStatus,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Evidence an agent records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvidenceReport {
    /// The step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    /// Kind.
    pub kind: String,
    /// Content; the engine caps it.
    pub content: String,
}

/// A comment an agent writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentRequest {
    /// Text.
    pub body: String,
}

/// An agent's report on its whole job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobReport {
    /// `completed`, `blocked` or `failed`.
    pub status: JobStatus,
    /// Why (required for blocked and failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One item of an agent's batch of reports (`POST /api/v1/jobs/{id}/reports`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentReport {
    /// A step's status.
    Step {
        /// The step's id.
        step: String,
        /// New status.
        status: StepStatus,
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// When it happened, by the agent's clock (reports are batched);
        /// kept between the attempt's start and the engine's now.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<DateTime<Utc>>,
    },
    /// Evidence.
    Evidence(EvidenceReport),
    /// A try of a step's command failed.
    TryFailed {
        /// The step's id.
        step: String,
        /// Which try (1 for the first).
        number: u32,
        /// Of how many.
        of: u32,
        /// How it ended, e.g. `exit code 3`.
        result: String,
        /// The last lines of its standard error.
        #[serde(default)]
        stderr: String,
        /// When the next try starts, in milliseconds; absent after the last.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_in_ms: Option<u64>,
    },
    /// A comment in the conversation.
    Comment(CommentRequest),
    /// The verdict on the whole job; only as the last item.
    Verdict(JobReport),
}

/// An agent's reports, applied in order and all together or not at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportBatch {
    /// The batch's number within the attempt, increasing (1, 2, …): a batch
    /// whose number was applied already is a repeat and changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The reports, oldest first (at most 256).
    pub reports: Vec<AgentReport>,
}

/// The most reports one batch may carry.
pub const MAX_REPORTS: usize = 256;

/// What an agent gets when it starts: its job, its attempt and the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AgentContext {
    /// The job with its steps.
    pub job: JobView,
    /// This agent's attempt number.
    pub attempt: u32,
    /// Conversation history, oldest first.
    pub comments: Vec<CommentView>,
    /// How often to heartbeat, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// The agent's capabilities (its AgentSpec's): what its tools may do.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The wire format of the agent's LLM through the proxy (`openai` or
    /// `anthropic`); absent when no LLM is configured for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_api: Option<String>,
    /// Whether the agent may ask a human (AgentSpec `safety.canEscalateToHuman`, default true).
    #[serde(default = "yes")]
    pub may_ask_human: bool,
    /// About how many tokens of context the agent may send per LLM call: its
    /// AgentSpec's `resources.contextWindow`, halved during a budget alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
}

fn yes() -> bool {
    true
}

/// One LLM call in the token ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UsageRecord {
    /// When the call ended.
    pub ts: DateTime<Utc>,
    /// Job.
    pub job_id: String,
    /// Attempt.
    pub attempt: u32,
    /// AgentSpec.
    pub agent_spec: String,
    /// Chapter (`""` when none).
    pub chapter: String,
    /// Provider name.
    pub provider: String,
    /// Model.
    pub model: String,
    /// Input tokens (the provider's figure).
    pub input_tokens: u64,
    /// Output tokens (the provider's figure).
    pub output_tokens: u64,
    /// Whether the call streamed.
    pub streamed: bool,
}

/// Ledger totals of one chapter and AgentSpec since a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UsageTotal {
    /// Chapter.
    pub chapter: String,
    /// AgentSpec.
    pub agent_spec: String,
    /// Calls.
    pub invocations: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
}

/// `GET /api/v1/budget`: token consumption per chapter and AgentSpec over
/// the current day or month (seed 003 `MANA_REPORT_V1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BudgetReport {
    /// Always `MANA_REPORT_V1`.
    pub protocol: String,
    /// The period: `2026-11` (month) or `2026-11-21` (day).
    pub period: String,
    /// When the period started.
    pub since: DateTime<Utc>,
    /// When the report was made.
    pub generated_at: DateTime<Utc>,
    /// The whole organisation.
    pub org: BudgetStanding,
    /// The org's reserve pool this month: the monthly budget not allocated to
    /// chapters, which chapters past their allocation (and work of no chapter) draw on.
    pub reserve_pool: Option<u64>,
    /// What is left of the reserve pool.
    pub reserve_pool_remaining: Option<u64>,
    /// Each chapter with usage or a budget (`""`: work of no chapter).
    pub chapters: Vec<ChapterReport>,
}

/// Usage against a budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BudgetStanding {
    /// Tokens used this period.
    pub total: u64,
    /// The budget for the period, if there is one.
    pub budget: Option<u64>,
    /// What is left of it.
    pub budget_remaining: Option<u64>,
    /// Tokens per day at this period's pace.
    pub burn_rate_daily: u64,
    /// The day the budget runs out at that pace (before the period ends, or not).
    pub projected_exhaustion: Option<chrono::NaiveDate>,
    /// Alert level: `green`, `yellow`, `orange` or `red`.
    pub alert: String,
}

/// One chapter's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChapterReport {
    /// Always `MANA_REPORT_V1`.
    pub protocol: String,
    /// The period, as in [`BudgetReport`].
    pub period: String,
    /// The chapter.
    pub chapter: String,
    /// Usage per AgentSpec.
    pub breakdown: BTreeMap<String, AgentUsage>,
    /// Totals against the chapter's budget.
    #[serde(flatten)]
    pub standing: BudgetStanding,
    /// Tokens used in the last hour.
    pub used_last_hour: u64,
    /// The hourly rate limit in force (Policy `rateLimits.perHour`, or a throttle).
    pub rate_per_hour: Option<u64>,
    /// The throttle set by `george throttle`, if any.
    pub throttle_per_hour: Option<u64>,
}

/// One AgentSpec's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AgentUsage {
    /// LLM calls.
    pub invocations: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input + output.
    pub total: u64,
}

/// `POST /api/v1/chapters/{chapter}/throttle`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ThrottleRequest {
    /// The new hourly rate; absent: half the rate in force (or of the last hour's usage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_hour: Option<u64>,
    /// Remove the throttle instead.
    #[serde(default)]
    pub clear: bool,
}

/// A chapter's throttle after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ThrottleView {
    /// The chapter.
    pub chapter: String,
    /// Tokens per hour it may use now (`None`: no throttle).
    pub tokens_per_hour: Option<u64>,
}

/// What a retention pass deleted, or would delete (`POST /api/v1/gc`,
/// `DELETE /api/v1/jobs/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    /// Nothing was deleted; this is what would be.
    pub dry_run: bool,
    /// The finished jobs.
    pub jobs: Vec<String>,
    /// Bytes of their log and output files.
    pub bytes: u64,
    /// Job-less events compacted (not counted in a dry run).
    pub events: u64,
    /// The event floor: events below it may be gone, and a watch asked to
    /// resume below it is told to resync.
    pub floor: i64,
    /// The consumer cursor that holds the floor back, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

/// `POST /api/v1/sync` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SyncResult {
    /// Each source's state after the sync.
    pub sources: Vec<SourceView>,
    /// The sources this sync could not apply (unreadable, unreachable or
    /// refused revision), with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<SourceFailure>,
}

/// A source a sync could not apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SourceFailure {
    /// Its name.
    pub source: String,
    /// Why.
    pub errors: Vec<String>,
}

/// `GET /api/v1/whoami`: the caller behind a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WhoAmI {
    /// The token's subject (`operator:<subject>` in the audit log), or the agent id.
    pub subject: String,
    /// The operator role; `None` for an agent token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

/// `POST /api/v1/jobs/{id}/override`: set a job's or a step's status by hand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    /// The new status: for a job `pending` (retry from scratch), `completed` or
    /// `failed`; for a step `pending`, `completed`, `skipped` or `failed`.
    pub status: String,
    /// The step to change; the whole job when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Why (required, not blank; kept in the audit log).
    #[schemars(regex(pattern = r"\S"))]
    pub reason: String,
}

/// `POST /api/v1/tokens`: mint an operator token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Who will use it (named in the audit log): 1–63 lowercase letters, digits, `-`, `_` or `.`.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9._-]{0,62}$"))]
    pub subject: String,
    /// What it may do.
    pub role: Role,
}

/// An operator token as the API shows it (never its value, except once on creation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TokenView {
    /// Subject.
    pub subject: String,
    /// Role.
    pub role: Role,
    /// `config` (from the engine's configuration) or `api` (minted through the API).
    pub origin: String,
    /// When it was minted (API tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// The token itself: only in the response that minted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error: a stable code, a message saying what to do, and the field at fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `not_found`, `invalid`, `conflict`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The offending field, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every problem, when there are several.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// What a coding job handed back: its `git.result` evidence, as the
/// write-backs (Jira, GitHub, Slack) read it. A missing field reads as `?`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HandedBack {
    /// The branch pushed.
    #[serde(default)]
    pub branch: Option<String>,
    /// Its commit.
    #[serde(default)]
    pub commit: Option<String>,
    /// The pull request opened for it, if one was.
    #[serde(default)]
    pub pull_request: Option<String>,
    /// `git diff --stat` of the work.
    #[serde(default)]
    pub diff_stat: Option<String>,
}

impl HandedBack {
    /// The evidence kind it is kept as.
    pub const KIND: &'static str = "git.result";

    /// Reads a `git.result` evidence's content (anything unreadable reads as nothing known).
    pub fn parse(content: &str) -> Self {
        serde_json::from_str(content).unwrap_or_default()
    }

    /// The branch, or `?`.
    pub fn branch(&self) -> &str {
        self.branch.as_deref().unwrap_or("?")
    }

    /// The commit, or `?`.
    pub fn commit(&self) -> &str {
        self.commit.as_deref().unwrap_or("?")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_handed_back_reads_with_question_marks_for_the_unknown() {
        let h = HandedBack::parse(r#"{"branch":"george/x","commit":"abc","pull_request":"https://f/pr/1"}"#);
        assert_eq!((h.branch(), h.commit(), h.pull_request.as_deref()), ("george/x", "abc", Some("https://f/pr/1")));
        let garbled = HandedBack::parse("not json");
        assert_eq!((garbled.branch(), garbled.commit(), garbled.pull_request.as_deref()), ("?", "?", None));
    }

    #[test]
    fn agent_ids_round_trip_even_with_dashes() {
        assert_eq!(agent_id("build-docs", 3), "build-docs-3");
        assert_eq!(parse_agent_id("build-docs-3"), Some(("build-docs", 3)));
        assert_eq!(parse_agent_id("nodash"), None);
        assert_eq!(parse_agent_id("a-b"), None);
    }
}
