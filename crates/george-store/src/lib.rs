//! The store: George's single source of truth. The [`Store`] trait is what
//! every other component reads and writes through; [`SqliteStore`] is the
//! embedded implementation and [`PostgresStore`] the one several engine
//! processes share. Every transition is written together with an
//! event in the append-only log, and every write an agent makes is fenced:
//! it lands only if the agent's attempt is still the job's current, live one.
//!
//! The [`conformance`] module holds the test suite every implementation must pass.

pub mod conformance;
mod delegate;
mod dialect;
mod error;
pub mod job_settings;
mod jobs;
mod ledger;
mod postgres;
mod readers;
mod recent;
mod retention;
mod rules;
mod snapshot;
mod sources;
mod sqlite;
mod views;

pub use crate::postgres::{Fence, PostgresStore, PostgresTls, SETTING_LOCK_CLASS as POSTGRES_SETTING_LOCK_CLASS};
pub use error::StoreError;
pub use recent::recent_events;
pub use snapshot::{ApplyReport, Snapshot, StoredManifest};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use george_core::api::{SourceView, StepReport, UsageRecord, UsageTotal};
use george_core::manifest::Kind;
use george_core::plan::{Catalog, NewJob};
pub use george_core::record::{Attempt, Comment, Event, Evidence, Job, Step};
use george_core::{AgentState, DesiredState, JobStatus, StepStatus};
use serde_json::Value;
use tokio::sync::broadcast;

/// Result type of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs with one of these statuses.
    pub status: Vec<JobStatus>,
    /// Only jobs of this chapter.
    pub chapter: Option<String>,
    /// Only jobs from this source.
    pub source: Option<String>,
    /// Only jobs whose labels meet this selector.
    pub selector: george_core::labels::Selector,
    /// At most this many.
    pub limit: Option<u32>,
    /// Only jobs after this one in the listing's order (created, then id):
    /// where the previous page ended.
    pub after: Option<(DateTime<Utc>, String)>,
    /// The newest first (else the oldest first).
    pub newest_first: bool,
}

/// Which finished jobs a retention pass looks at: one template's (which
/// keeps its jobs for a time of its own), or every job but those templates'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionScope {
    /// The jobs of this template.
    Template(String),
    /// The jobs of every template but these.
    Except(Vec<String>),
}

/// Whether `create_job` made a new job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A new job.
    New,
    /// A job with that id already existed; nothing changed.
    Existed,
}

/// What the reconciler needs to know about one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobState {
    /// The job (without steps).
    pub job: Job,
    /// The current attempt, if any attempt was ever made.
    pub current: Option<Attempt>,
    /// Newest comment id on the job that is not from an agent.
    pub latest_comment: Option<i64>,
    /// Newest comment id when the job became blocked.
    pub blocked_at_comment: Option<i64>,
}

/// A status change the reconciler makes, guarded by what it last saw.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    /// The status the reconciler saw; the write is refused if it changed since.
    pub from: JobStatus,
    /// The new status.
    pub to: JobStatus,
    /// Why.
    pub reason: Option<String>,
    /// When the next attempt may start (pending after a failure).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Count one more failed attempt.
    pub count_failure: bool,
}

/// A status set by hand (`POST /api/v1/jobs/{id}/override`).
#[derive(Debug, Clone, PartialEq)]
pub enum Override {
    /// The job's status: `pending` (retry: failures reset, failed and blocked
    /// steps back to pending, desired active), `completed` or `failed`.
    Job(JobStatus),
    /// One step's status (the job must not have ended).
    Step {
        /// Step id.
        step: String,
        /// New status.
        status: StepStatus,
    },
}

/// A new attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAttempt {
    /// The attempt number the reconciler saw as current; the new one is this + 1.
    pub after: u32,
    /// AgentSpec name.
    pub agent_spec: String,
    /// Runtime kind.
    pub runtime: String,
    /// SHA-256 (hex) of the attempt's agent token.
    pub token_hash: String,
    /// A setting whose presence holds the attempt back ([`StoreError::Conflict`]).
    /// Checked in the attempt's transaction: a hold stored before it commits
    /// is never passed by, and one stored after it finds the attempt live.
    pub held_by: Option<String>,
    /// The agent's handle, when known before its spawn (a warm agent's):
    /// recorded with the attempt, as [`Store::attempt_spawned`] would.
    pub handle: Option<Value>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptEnd {
    /// Exit code, when known.
    pub exit_code: Option<i32>,
    /// Description, e.g. `exited (code 0)`, `killed by signal 9`, `unhealthy: no heartbeat for 35s`.
    pub outcome: String,
}

/// One of an agent's reports, as the store applies it (evidence already capped).
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A step's status.
    Step {
        /// Step id.
        step: String,
        /// Its new status and why.
        report: StepReport,
        /// When, by the agent's clock.
        at: Option<DateTime<Utc>>,
    },
    /// Evidence.
    Evidence {
        /// The step it belongs to.
        step: Option<String>,
        /// Kind.
        kind: String,
        /// Content.
        content: String,
        /// Whether the content was cut.
        truncated: bool,
    },
    /// A try of a step's command failed.
    TryFailed {
        /// Step id.
        step: String,
        /// Which try, of how many.
        number: u32,
        /// Of how many.
        of: u32,
        /// How it ended.
        result: String,
        /// The end of its standard error (the caller caps it).
        stderr: String,
        /// When the next try starts.
        retry_in_ms: Option<u64>,
    },
    /// A comment in the conversation.
    Comment {
        /// Text.
        body: String,
    },
    /// The verdict on the whole job (only last).
    Verdict {
        /// Completed, blocked or failed.
        status: JobStatus,
        /// Why.
        reason: Option<String>,
    },
}

/// The store's interface. All methods are atomic: they fully happen or not at all.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    // ---- desired state from sources ----

    /// Applies one revision of a source atomically (see [`Snapshot`]).
    async fn apply_snapshot(&self, snapshot: Snapshot) -> Result<ApplyReport>;
    /// Records that a source revision was rejected; the last good state stays.
    async fn reject_revision(&self, source: &str, revision: &str, errors: Vec<String>) -> Result<()>;
    /// Records that a source was checked and had nothing new.
    async fn source_checked(&self, source: &str) -> Result<()>;
    /// Every source's state.
    async fn sources(&self) -> Result<Vec<SourceView>>;
    /// Stored manifests (all kinds, or one).
    async fn manifests(&self, kind: Option<Kind>) -> Result<Vec<StoredManifest>>;
    /// Templates and agent specs currently stored.
    async fn catalog(&self) -> Result<Catalog>;

    // ---- jobs ----

    /// Creates a job unless one with its id exists.
    async fn create_job(&self, job: NewJob, actor: &str) -> Result<Created>;
    /// One job with its steps.
    async fn get_job(&self, id: &str) -> Result<Option<Job>>;
    /// Replaces the definition (params, steps, env, priority, not-before) of a
    /// job that is pending and has never started; returns whether it did.
    async fn update_pending_job(&self, job: NewJob, actor: &str) -> Result<bool>;
    /// How far a cron trigger's schedule has been looked at.
    async fn trigger_mark(&self, name: &str) -> Result<Option<DateTime<Utc>>>;
    /// Records how far a cron trigger's schedule has been looked at.
    async fn set_trigger_mark(&self, name: &str, watermark: DateTime<Utc>) -> Result<()>;
    /// A job's own environment for its agent.
    async fn job_env(&self, id: &str) -> Result<std::collections::BTreeMap<String, String>>;
    /// Jobs (without steps), oldest first.
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>>;
    /// Sets a job's desired state (pause/resume/abort).
    async fn set_desired(&self, id: &str, desired: DesiredState, actor: &str, reason: Option<&str>) -> Result<Job>;
    /// Sets a job's or a step's status by hand, recording who and why.
    async fn override_status(&self, id: &str, target: &Override, actor: &str, reason: &str) -> Result<Job>;
    /// A failed, aborted or blocked job back to pending for a new attempt,
    /// keeping its completed steps unless `from_scratch`.
    async fn retry_job(&self, id: &str, actor: &str, from_scratch: bool, reason: Option<&str>) -> Result<Job>;
    /// Adds a comment (operator inject or agent message).
    async fn add_comment(&self, id: &str, author: &str, body: &str) -> Result<Comment>;
    /// A job's conversation, oldest first.
    async fn comments(&self, id: &str) -> Result<Vec<Comment>>;
    /// A job's evidence, oldest first.
    async fn evidence(&self, id: &str) -> Result<Vec<Evidence>>;

    // ---- reconciler ----

    /// Ids of jobs that may need action: not final, or with a live attempt.
    async fn active_job_ids(&self) -> Result<Vec<String>>;
    /// A job's state for reconciling.
    async fn job_state(&self, id: &str) -> Result<Option<JobState>>;
    /// Changes a job's status if it is still `change.from`. Returns whether it changed.
    async fn change_status(&self, id: &str, change: StatusChange, actor: &str) -> Result<bool>;
    /// Starts attempt `after + 1` if the job's current attempt is still `after`
    /// and the job is pending; the job becomes `in_progress`. Returns the job
    /// as the attempt left it, steps included (its `attempt` is the new number).
    async fn start_attempt(&self, id: &str, attempt: NewAttempt) -> Result<Job>;
    /// Records the runtime handle of a spawned attempt.
    async fn attempt_spawned(&self, id: &str, attempt: u32, handle: Value) -> Result<()>;
    /// Moves a live attempt to another live state (e.g. `cooling`), recording why.
    async fn set_attempt_state(
        &self,
        id: &str,
        attempt: u32,
        state: AgentState,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<()>;
    /// Records that an attempt is gone. Idempotent.
    async fn end_attempt(&self, id: &str, attempt: u32, end: AttemptEnd) -> Result<()>;
    /// Every attempt that may still be running.
    async fn live_attempts(&self) -> Result<Vec<Attempt>>;

    // ---- agents (fenced: refused with `Superseded` unless current and live) ----

    /// The job and attempt an agent token belongs to.
    async fn agent_for_token(&self, token_hash: &str) -> Result<Option<(String, u32)>>;
    /// A heartbeat; moves the attempt from awakening to active.
    async fn heartbeat(&self, id: &str, attempt: u32) -> Result<()>;
    /// A step status report.
    async fn report_step(&self, id: &str, attempt: u32, step: &str, report: &StepReport) -> Result<()>;
    /// Records evidence (the caller caps its size).
    async fn add_evidence(
        &self,
        id: &str,
        attempt: u32,
        step: Option<&str>,
        kind: &str,
        content: &str,
        truncated: bool,
    ) -> Result<Evidence>;
    /// A comment from the agent.
    async fn agent_comment(&self, id: &str, attempt: u32, body: &str) -> Result<Comment>;
    /// The agent's verdict on the whole job: completed, blocked or failed.
    async fn report_job(&self, id: &str, attempt: u32, status: JobStatus, reason: Option<&str>) -> Result<()>;
    /// An agent's batch of reports, in order, in one transaction: all or
    /// nothing, and a heartbeat too. A verdict may only come last.
    /// `seq`, when given, is the batch's number within the attempt: one at
    /// or below the last applied is a repeat and is not applied again.
    async fn apply_reports(&self, id: &str, attempt: u32, seq: Option<u64>, reports: Vec<Report>) -> Result<()>;

    // ---- agents and events ----

    /// A job's attempts, oldest first.
    async fn job_attempts(&self, id: &str) -> Result<Vec<Attempt>>;
    /// Agent instances, newest first; only live ones when `live_only`.
    async fn list_agents(&self, live_only: bool, limit: u32) -> Result<Vec<Attempt>>;
    /// The newest ended instances of AgentSpec `agent_spec`, newest first, at most `limit`.
    async fn ended_agents(&self, agent_spec: &str, limit: u32) -> Result<Vec<Attempt>>;
    /// One agent instance.
    async fn get_agent(&self, id: &str, attempt: u32) -> Result<Option<Attempt>>;
    /// Events with `seq > since` (only job `job`'s when given), oldest first, at most `limit`.
    async fn events_since(&self, since: i64, limit: u32, job: Option<&str>) -> Result<Vec<Event>>;
    /// A durable setting (`None` if unset).
    async fn setting(&self, key: &str) -> Result<Option<Value>>;
    /// Sets a durable setting, or removes it (`None`).
    async fn set_setting(&self, key: &str, value: Option<Value>) -> Result<()>;
    /// Settings whose keys start with `prefix`.
    async fn settings(&self, prefix: &str) -> Result<Vec<(String, Value)>>;
    /// Adds an LLM call to the token ledger.
    async fn record_usage(&self, record: &UsageRecord) -> Result<()>;
    /// Ledger rows since `since` (of one job when given), oldest first.
    async fn usage_records(&self, since: DateTime<Utc>, job: Option<&str>) -> Result<Vec<UsageRecord>>;
    /// Ledger totals per chapter and AgentSpec since `since`.
    async fn usage_totals(&self, since: DateTime<Utc>) -> Result<Vec<UsageTotal>>;
    /// The sequence number of the newest event (0 when there is none).
    async fn latest_seq(&self) -> Result<i64>;
    /// Every event as it is committed.
    fn subscribe(&self) -> broadcast::Receiver<Event>;
    /// Appends an event that records a decision rather than a state change
    /// (e.g. the scheduler queueing or preempting a job).
    async fn record_event(
        &self,
        job: Option<&str>,
        kind: george_core::EventKind,
        actor: &str,
        data: Value,
    ) -> Result<Event>;
    /// Job counts by status.
    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>>;

    // ---- retention ----

    /// The event floor: events with a lower `seq` may have been compacted away.
    async fn event_floor(&self) -> Result<i64>;
    /// Raises the event floor to `floor` (it never goes down); returns the floor now.
    async fn raise_event_floor(&self, floor: i64) -> Result<i64>;
    /// Finished jobs of `scope` last changed before `before`, with no live
    /// attempt and every event below `floor`: oldest first, at most `limit`.
    async fn expired_jobs(
        &self,
        before: DateTime<Utc>,
        scope: &RetentionScope,
        floor: i64,
        limit: u32,
    ) -> Result<Vec<String>>;
    /// Deletes finished jobs with their steps, attempts, comments, evidence
    /// and events, and records one `jobs.deleted` event. A job that is not
    /// finished (any more), has a live attempt or has an event at or above
    /// the floor is left alone. Returns the ids deleted. The token ledger keeps
    /// its rows.
    async fn delete_jobs(&self, ids: &[String], actor: &str) -> Result<Vec<String>>;
    /// Deletes at most `limit` events that name no job, are below the floor
    /// and older than `before`; returns how many.
    async fn compact_events(&self, before: DateTime<Utc>, limit: u32) -> Result<u64>;
}
