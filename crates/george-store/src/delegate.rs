//! The [`Store`](crate::Store) implementation every backend shares: each
//! method hands its arguments to a transition of `jobs`, `sources` or
//! `ledger` inside the backend's `self.write` (a write transaction, run
//! again by a backend that retries), `self.transact` (the same, returning
//! the committed events) or `self.read`. A backend brings those three and
//! `self.events()`, the sender its committed events are broadcast on.

/// Implements [`Store`](crate::Store) for `$store`.
macro_rules! impl_store {
    ($store:ty) => {
        const _: () = {
            use $crate::delegate::prelude::*;

            #[async_trait::async_trait]
            impl $crate::Store for $store {
                async fn apply_snapshot(&self, snapshot: Snapshot) -> Result<ApplyReport> {
                    self.write(move |w| crate::sources::apply_snapshot(w, &snapshot)).await
                }

                async fn reject_revision(&self, source: &str, revision: &str, errors: Vec<String>) -> Result<()> {
                    let (source, revision) = (source.to_string(), revision.to_string());
                    self.write(move |w| crate::sources::reject_revision(w, &source, &revision, &errors)).await
                }

                async fn source_checked(&self, source: &str) -> Result<()> {
                    let source = source.to_string();
                    self.write(move |w| crate::sources::checked(w, &source)).await
                }

                async fn sources(&self) -> Result<Vec<SourceView>> {
                    self.read(|c| crate::sources::list(c)).await
                }

                async fn manifests(&self, kind: Option<Kind>) -> Result<Vec<StoredManifest>> {
                    self.read(move |c| crate::sources::manifests(c, kind)).await
                }

                async fn catalog(&self) -> Result<Catalog> {
                    self.read(|c| crate::sources::catalog(c)).await
                }

                async fn create_job(&self, job: NewJob, actor: &str) -> Result<Created> {
                    let actor = actor.to_string();
                    self.write(move |w| crate::jobs::create(w, &job, &actor)).await
                }

                async fn get_job(&self, id: &str) -> Result<Option<Job>> {
                    let id = id.to_string();
                    self.read(move |c| crate::jobs::get(c, &id, true)).await
                }

                async fn update_pending_job(&self, job: NewJob, actor: &str) -> Result<bool> {
                    let actor = actor.to_string();
                    self.write(move |w| crate::jobs::update_pending(w, &job, &actor)).await
                }

                async fn trigger_mark(&self, name: &str) -> Result<Option<DateTime<Utc>>> {
                    let name = name.to_string();
                    self.read(move |c| crate::sources::trigger_mark(c, &name)).await
                }

                async fn set_trigger_mark(&self, name: &str, watermark: DateTime<Utc>) -> Result<()> {
                    let name = name.to_string();
                    self.write(move |w| crate::sources::set_trigger_mark(w, &name, watermark)).await
                }

                async fn job_env(&self, id: &str) -> Result<std::collections::BTreeMap<String, String>> {
                    let id = id.to_string();
                    self.read(move |c| crate::jobs::env(c, &id)).await
                }

                async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
                    let filter = filter.clone();
                    self.read(move |c| crate::jobs::list(c, &filter)).await
                }

                async fn set_desired(
                    &self,
                    id: &str,
                    desired: DesiredState,
                    actor: &str,
                    reason: Option<&str>,
                ) -> Result<Job> {
                    let (id, actor, reason) = (id.to_string(), actor.to_string(), reason.map(str::to_string));
                    self.write(move |w| crate::jobs::set_desired(w, &id, desired, &actor, reason.as_deref())).await
                }

                async fn override_status(&self, id: &str, target: &Override, actor: &str, reason: &str) -> Result<Job> {
                    let (id, target, actor, reason) =
                        (id.to_string(), target.clone(), actor.to_string(), reason.to_string());
                    self.write(move |w| crate::jobs::override_status(w, &id, &target, &actor, &reason)).await
                }

                async fn retry_job(
                    &self,
                    id: &str,
                    actor: &str,
                    from_scratch: bool,
                    reason: Option<&str>,
                ) -> Result<Job> {
                    let (id, actor, reason) = (id.to_string(), actor.to_string(), reason.map(str::to_string));
                    self.write(move |w| crate::jobs::retry(w, &id, &actor, from_scratch, reason.as_deref())).await
                }

                async fn add_comment(&self, id: &str, author: &str, body: &str) -> Result<Comment> {
                    let (id, author, body) = (id.to_string(), author.to_string(), body.to_string());
                    self.write(move |w| crate::jobs::add_comment(w, &id, &author, &body)).await
                }

                async fn comments(&self, id: &str) -> Result<Vec<Comment>> {
                    let id = id.to_string();
                    self.read(move |c| crate::jobs::comments(c, &id)).await
                }

                async fn evidence(&self, id: &str) -> Result<Vec<Evidence>> {
                    let id = id.to_string();
                    self.read(move |c| crate::jobs::evidence(c, &id)).await
                }

                async fn active_job_ids(&self) -> Result<Vec<String>> {
                    self.read(|c| crate::jobs::active_ids(c)).await
                }

                async fn job_state(&self, id: &str) -> Result<Option<JobState>> {
                    let id = id.to_string();
                    self.read(move |c| crate::jobs::state(c, &id)).await
                }

                async fn change_status(&self, id: &str, change: StatusChange, actor: &str) -> Result<bool> {
                    let (id, actor) = (id.to_string(), actor.to_string());
                    self.write(move |w| crate::jobs::change_status(w, &id, &change, &actor)).await
                }

                async fn start_attempt(&self, id: &str, attempt: NewAttempt) -> Result<Job> {
                    let id = id.to_string();
                    self.write(move |w| crate::jobs::start_attempt(w, &id, &attempt)).await
                }

                async fn attempt_spawned(&self, id: &str, attempt: u32, handle: Value) -> Result<()> {
                    let id = id.to_string();
                    self.write(move |w| crate::jobs::attempt_spawned(w, &id, attempt, &handle)).await
                }

                async fn set_attempt_state(
                    &self,
                    id: &str,
                    attempt: u32,
                    state: AgentState,
                    actor: &str,
                    reason: Option<&str>,
                ) -> Result<()> {
                    let (id, actor, reason) = (id.to_string(), actor.to_string(), reason.map(str::to_string));
                    self.write(move |w| {
                        crate::jobs::set_attempt_state(w, &id, attempt, state, &actor, reason.as_deref())
                    })
                    .await
                }

                async fn end_attempt(&self, id: &str, attempt: u32, end: AttemptEnd) -> Result<()> {
                    let id = id.to_string();
                    self.write(move |w| crate::jobs::end_attempt(w, &id, attempt, &end)).await
                }

                async fn live_attempts(&self) -> Result<Vec<Attempt>> {
                    self.read(|c| crate::jobs::agents(c, true, u32::MAX)).await
                }

                async fn agent_for_token(&self, token_hash: &str) -> Result<Option<(String, u32)>> {
                    let token_hash = token_hash.to_string();
                    self.read(move |c| crate::jobs::agent_for_token(c, &token_hash)).await
                }

                async fn heartbeat(&self, id: &str, attempt: u32) -> Result<()> {
                    let id = id.to_string();
                    self.write(move |w| crate::jobs::heartbeat(w, &id, attempt)).await
                }

                async fn report_step(&self, id: &str, attempt: u32, step: &str, report: &StepReport) -> Result<()> {
                    let (id, step, report) = (id.to_string(), step.to_string(), report.clone());
                    self.write(move |w| crate::jobs::report_step(w, &id, attempt, &step, &report)).await
                }

                async fn add_evidence(
                    &self,
                    id: &str,
                    attempt: u32,
                    step: Option<&str>,
                    kind: &str,
                    content: &str,
                    truncated: bool,
                ) -> Result<Evidence> {
                    let (id, step, kind, content) =
                        (id.to_string(), step.map(str::to_string), kind.to_string(), content.to_string());
                    self.write(move |w| {
                        let evidence = crate::jobs::NewEvidence {
                            step: step.as_deref(),
                            kind: &kind,
                            content: &content,
                            truncated,
                        };
                        crate::jobs::add_evidence(w, &id, attempt, &evidence)
                    })
                    .await
                }

                async fn agent_comment(&self, id: &str, attempt: u32, body: &str) -> Result<Comment> {
                    let (id, body) = (id.to_string(), body.to_string());
                    self.write(move |w| crate::jobs::agent_comment(w, &id, attempt, &body)).await
                }

                async fn report_job(
                    &self,
                    id: &str,
                    attempt: u32,
                    status: JobStatus,
                    reason: Option<&str>,
                ) -> Result<()> {
                    let (id, reason) = (id.to_string(), reason.map(str::to_string));
                    self.write(move |w| crate::jobs::report_job(w, &id, attempt, status, reason.as_deref())).await
                }

                async fn job_attempts(&self, id: &str) -> Result<Vec<Attempt>> {
                    let id = id.to_string();
                    self.read(move |c| crate::jobs::attempts_of(c, &id)).await
                }

                async fn apply_reports(
                    &self,
                    id: &str,
                    attempt: u32,
                    seq: Option<u64>,
                    reports: Vec<Report>,
                ) -> Result<()> {
                    let id = id.to_string();
                    self.write(move |w| crate::jobs::apply_reports(w, &id, attempt, seq, &reports)).await
                }

                async fn list_agents(&self, live_only: bool, limit: u32) -> Result<Vec<Attempt>> {
                    self.read(move |c| crate::jobs::agents(c, live_only, limit)).await
                }

                async fn ended_agents(&self, agent_spec: &str, limit: u32) -> Result<Vec<Attempt>> {
                    let agent_spec = agent_spec.to_string();
                    self.read(move |c| crate::jobs::ended_agents(c, &agent_spec, limit)).await
                }

                async fn get_agent(&self, id: &str, attempt: u32) -> Result<Option<Attempt>> {
                    let id = id.to_string();
                    self.read(move |c| crate::jobs::agent(c, &id, attempt)).await
                }

                async fn events_since(&self, since: i64, limit: u32, job: Option<&str>) -> Result<Vec<Event>> {
                    let job = job.map(str::to_string);
                    self.read(move |c| crate::ledger::events_since(c, since, limit, job.as_deref())).await
                }

                async fn setting(&self, key: &str) -> Result<Option<Value>> {
                    let key = key.to_string();
                    self.read(move |c| crate::ledger::setting(c, &key)).await
                }

                async fn set_setting(&self, key: &str, value: Option<Value>) -> Result<()> {
                    let key = key.to_string();
                    self.write(move |w| crate::ledger::set_setting(w, &key, value.as_ref())).await
                }

                async fn settings(&self, prefix: &str) -> Result<Vec<(String, Value)>> {
                    let prefix = prefix.to_string();
                    self.read(move |c| crate::ledger::settings(c, &prefix)).await
                }

                async fn record_usage(&self, record: &UsageRecord) -> Result<()> {
                    let record = record.clone();
                    self.write(move |w| crate::ledger::record_usage(w, &record)).await
                }

                async fn usage_records(&self, since: DateTime<Utc>, job: Option<&str>) -> Result<Vec<UsageRecord>> {
                    let job = job.map(str::to_string);
                    self.read(move |c| crate::ledger::usage_records(c, since, job.as_deref())).await
                }

                async fn usage_totals(&self, since: DateTime<Utc>) -> Result<Vec<UsageTotal>> {
                    self.read(move |c| crate::ledger::usage_totals(c, since)).await
                }

                async fn latest_seq(&self) -> Result<i64> {
                    self.read(|c| crate::ledger::latest_seq(c)).await
                }

                fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
                    self.events().subscribe()
                }

                async fn record_event(
                    &self,
                    job: Option<&str>,
                    kind: EventKind,
                    actor: &str,
                    data: Value,
                ) -> Result<Event> {
                    let (job, actor) = (job.map(str::to_string), actor.to_string());
                    let (_, events) =
                        self.transact(move |w| w.event(job.as_deref(), None, kind, &actor, data.clone())).await?;
                    events
                        .last()
                        .cloned()
                        .ok_or_else(|| StoreError::Backend("the recorded event was not committed".into()))
                }

                async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>> {
                    self.read(|c| crate::jobs::count_by_status(c)).await
                }

                async fn event_floor(&self) -> Result<i64> {
                    self.read(|c| crate::retention::event_floor(c)).await
                }

                async fn raise_event_floor(&self, floor: i64) -> Result<i64> {
                    self.write(move |w| crate::retention::raise_event_floor(w, floor)).await
                }

                async fn expired_jobs(
                    &self,
                    before: DateTime<Utc>,
                    scope: &RetentionScope,
                    floor: i64,
                    limit: u32,
                ) -> Result<Vec<String>> {
                    let scope = scope.clone();
                    self.read(move |c| crate::retention::expired_jobs(c, before, &scope, floor, limit)).await
                }

                async fn delete_jobs(&self, ids: &[String], actor: &str) -> Result<Vec<String>> {
                    let (ids, actor) = (ids.to_vec(), actor.to_string());
                    self.write(move |w| crate::retention::delete_jobs(w, &ids, &actor)).await
                }

                async fn compact_events(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
                    self.write(move |w| crate::retention::compact_events(w, before, limit)).await
                }
            }
        };
    };
}

pub(crate) use impl_store;

/// What the methods [`impl_store!`] writes name.
pub(crate) mod prelude {
    pub(crate) use crate::{
        ApplyReport, Attempt, AttemptEnd, Catalog, Comment, Created, Event, Evidence, Job, JobFilter, JobState,
        NewAttempt, Override, Report, Result, RetentionScope, Snapshot, SourceView, StatusChange, StoreError,
        StoredManifest,
    };
    pub(crate) use chrono::{DateTime, Utc};
    pub(crate) use george_core::api::{StepReport, UsageRecord, UsageTotal};
    pub(crate) use george_core::manifest::Kind;
    pub(crate) use george_core::plan::NewJob;
    pub(crate) use george_core::{AgentState, DesiredState, EventKind, JobStatus};
    pub(crate) use serde_json::Value;
}
