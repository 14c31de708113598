//! What the store keeps and the engine works with: jobs, their steps, their
//! attempts and the event log, as domain records. The API shows them as
//! views (`api::JobView`, …), converted at its edge, so the wire format can
//! change without the engine, and the engine's types are not bound to JSON.

use crate::plan::Origin;
use crate::template::StepSpec;
use crate::{AgentState, DesiredState, EventKind, JobStatus, Priority, StepStatus};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeMap;

/// A job: what is wanted and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Job id.
    pub id: String,
    /// Template name.
    pub template: String,
    /// AgentSpec name.
    pub agent: String,
    /// Observed status.
    pub status: JobStatus,
    /// Why it has that status.
    pub reason: Option<String>,
    /// Desired state.
    pub desired: DesiredState,
    /// Priority class.
    pub priority: Priority,
    /// Chapter.
    pub chapter: Option<String>,
    /// Parameters.
    pub params: BTreeMap<String, Value>,
    /// Labels.
    pub labels: crate::labels::Labels,
    /// Where it came from.
    pub origin: Origin,
    /// The current (latest) attempt number; 0 before the first.
    pub attempt: u32,
    /// Attempts that failed so far.
    pub failures: u32,
    /// Failed attempts allowed before the job fails; `None` = the engine default.
    pub max_attempts: Option<u32>,
    /// How many steps may run at once.
    pub parallelism: u32,
    /// Whether a failing step cancels the steps running beside it.
    pub fail_fast: bool,
    /// When the next attempt may start (after a failure).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Steps with their status (empty when not read).
    pub steps: Vec<Step>,
}

/// A step of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The step's definition.
    pub spec: StepSpec,
    /// Status.
    pub status: StepStatus,
    /// Why (failure or block reason).
    pub reason: Option<String>,
    /// Tries of this step so far.
    pub runs: u32,
    /// When its current run started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its current run ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// One attempt at a job: one agent instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// Job id.
    pub job_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// AgentSpec name.
    pub agent_spec: String,
    /// Runtime kind (`process`, `docker`, `kubernetes`).
    pub runtime: String,
    /// Runtime handle (pid, container id, ...), once spawned.
    pub handle: Option<Value>,
    /// Lifecycle state.
    pub state: AgentState,
    /// Spawn requested.
    pub started_at: DateTime<Utc>,
    /// Last heartbeat.
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Gone.
    pub ended_at: Option<DateTime<Utc>>,
    /// Process exit code, when known.
    pub exit_code: Option<i32>,
    /// How it ended.
    pub outcome: Option<String>,
}

impl Attempt {
    /// The agent's id, `<job>-<attempt>`.
    pub fn id(&self) -> String {
        crate::api::agent_id(&self.job_id, self.attempt)
    }
}

/// A record of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Sequence number, strictly increasing.
    pub seq: i64,
    /// When.
    pub ts: DateTime<Utc>,
    /// Job it concerns.
    pub job_id: Option<String>,
    /// Attempt it concerns.
    pub attempt: Option<u32>,
    /// What happened.
    pub kind: EventKind,
    /// Who did it.
    pub actor: String,
    /// Details.
    pub data: Value,
}

/// A message in a job's conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
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
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// Id, increasing.
    pub id: i64,
    /// Job id.
    pub job_id: String,
    /// Step it belongs to.
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
