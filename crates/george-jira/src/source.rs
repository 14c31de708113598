//! The Jira source: every poll searches Jira (all pages), and each ticket
//! that is not yet a job here is claimed, then dispatched as a job. Search
//! results are eventually consistent, so the claim is the gate, not the
//! search:
//!
//! - **The claim is Jira's own transition check.** George moves the ticket
//!   to the in-progress status; Jira accepts a transition only from a status
//!   where it is available, so of two engines racing for a ticket only one
//!   succeeds, and the other is refused (`400`). The winner then records
//!   `george.claim` (engine and job) on the ticket, and remembers the
//!   outcome in its own store, so a restart never claims twice.
//! - A ticket claimed by another engine, or already in progress without a
//!   claim, is left alone (and the reason recorded once as an event).
//! - A ticket blocked by an unresolved "is blocked by" link is not claimed
//!   until its blockers are done.
//! - The comments people add to a claimed ticket reach its job's
//!   conversation (which also unblocks a blocked job).

use crate::client::{JiraClient, JiraError};
use crate::ticket::{Ticket, FIELDS};
use crate::{job_id, JiraSettings, OnClosed, CLAIM_PROPERTY};
use async_trait::async_trait;
use george_core::plan::{JobRequest, Origin};
use george_core::{DesiredState, JobStatus};
use george_sources::{Source, SourceError, SyncOutcome};
use george_store::{ApplyReport, Created, Store, StoreError};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Source name in the store and job origins.
pub const SOURCE: &str = "jira";

/// The Jira source.
#[derive(Debug)]
pub struct JiraSource {
    settings: Arc<JiraSettings>,
    client: JiraClient,
    myself: OnceCell<String>,
}

/// What became of a claim attempt.
#[derive(Debug, PartialEq, Eq)]
enum Claim {
    /// George holds it: dispatch.
    Won,
    /// Someone else does, or it cannot be claimed now: the reason.
    Skip(String),
}

fn claim_key(key: &str) -> String {
    format!("jira.claim:{key}")
}

impl JiraSource {
    /// A source for `settings`.
    pub fn new(settings: Arc<JiraSettings>) -> Self {
        let client = JiraClient::new(&settings.url, settings.credentials.clone());
        Self { settings, client, myself: OnceCell::new() }
    }

    /// The settings.
    pub fn settings(&self) -> &Arc<JiraSettings> {
        &self.settings
    }

    /// The client (shared with the write-back).
    pub fn client(&self) -> &JiraClient {
        &self.client
    }

    async fn myself(&self) -> Result<&str, JiraError> {
        self.myself.get_or_try_init(|| self.client.myself()).await.map(String::as_str)
    }

    /// Records `reason` for `key` as an event, once per distinct reason.
    async fn note(&self, store: &dyn Store, key: &str, reason: &str) -> Result<(), StoreError> {
        let setting = format!("jira.note:{key}");
        if store.setting(&setting).await?.as_ref().and_then(Value::as_str) == Some(reason) {
            return Ok(());
        }
        store.set_setting(&setting, Some(json!(reason))).await?;
        tracing::info!(ticket = key, reason, "Jira ticket not dispatched");
        store
            .record_event(
                None,
                george_core::EventKind::JiraTicketWaiting,
                "source:jira",
                json!({"ticket": key, "reason": reason}),
            )
            .await?;
        Ok(())
    }

    async fn claim(&self, store: &dyn Store, t: &Ticket) -> Result<Claim, SourceError> {
        let s = &self.settings;
        let local = store.setting(&claim_key(&t.key)).await?;
        match local.as_ref().and_then(Value::as_str) {
            Some("won") => return Ok(Claim::Won),
            Some("lost") => return Ok(Claim::Skip("claimed by another engine".into())),
            // Moved by this engine, which stopped before recording and assigning it.
            Some("claimed") => return self.complete_claim(store, t).await,
            _ => {}
        }
        let read = |e: JiraError| SourceError::Read(e.to_string());
        let recorded = self.client.property(&t.key, CLAIM_PROPERTY).await.map_err(read)?;
        if let Some(c) = &recorded {
            let engine = c["engine"].as_str().unwrap_or("");
            if engine != s.engine_id {
                store.set_setting(&claim_key(&t.key), Some(json!("lost"))).await?;
                return Ok(Claim::Skip(format!("claimed by engine `{engine}`")));
            }
            // Ours: the claim landed before a crash (its assignment may not have).
            return self.complete_claim(store, t).await;
        }
        if t.status.eq_ignore_ascii_case(&s.statuses.in_progress) {
            return Ok(Claim::Skip(format!(
                "`{}` is {} but George has no claim on it; move it back for George to take it",
                t.key, t.status
            )));
        }
        let transitions = self.client.transitions(&t.key).await.map_err(read)?;
        let Some(tr) = transitions.iter().find(|x| x.to.eq_ignore_ascii_case(&s.statuses.in_progress)) else {
            return Ok(Claim::Skip(format!(
                "no transition from `{}` to `{}` (available: {}); check jira.statuses.inProgress",
                t.status,
                s.statuses.in_progress,
                transitions.iter().map(|x| format!("{} → {}", x.name, x.to)).collect::<Vec<_>>().join(", ")
            )));
        };
        store.set_setting(&claim_key(&t.key), Some(json!("pending"))).await?;
        match self.client.transition(&t.key, &tr.id).await {
            Ok(()) => {}
            // Jira refuses a transition that is not available from the current status: someone else moved it first.
            Err(JiraError::Rejected { status, messages, .. })
                if status == 409 || messages.contains("is not valid for this issue") =>
            {
                store.set_setting(&claim_key(&t.key), Some(json!("lost"))).await?;
                return Ok(Claim::Skip("another claimer moved it first".into()));
            }
            Err(JiraError::Rejected { messages, .. }) => {
                store.set_setting(&claim_key(&t.key), None).await?;
                return Ok(Claim::Skip(format!(
                    "Jira refused the transition to `{}`: {messages}",
                    s.statuses.in_progress
                )));
            }
            Err(e) => return Err(read(e)),
        }
        store.set_setting(&claim_key(&t.key), Some(json!("claimed"))).await?;
        self.complete_claim(store, t).await
    }

    /// A claim's write-backs once the ticket is moved: its record on the
    /// ticket and its assignee; then it is won. Done again after a restart
    /// that interrupted them (each is idempotent).
    async fn complete_claim(&self, store: &dyn Store, t: &Ticket) -> Result<Claim, SourceError> {
        let s = &self.settings;
        let record = json!({"engine": s.engine_id, "job": job_id(&t.key), "at": chrono::Utc::now().to_rfc3339()});
        if let Err(e) = self.client.set_property(&t.key, CLAIM_PROPERTY, &record).await {
            // The transition is the claim; the property is its record for people and other engines.
            tracing::warn!(ticket = %t.key, error = %e, "cannot record the claim on the ticket");
        }
        if let Some(who) = &s.assignee {
            let account = if who == "self" { self.myself().await.map(str::to_string) } else { Ok(who.clone()) };
            if let Err(e) = match account {
                Ok(a) => self.client.assign(&t.key, &a).await,
                Err(e) => Err(e),
            } {
                tracing::warn!(ticket = %t.key, error = %e, "cannot assign the ticket");
            }
        }
        store.set_setting(&claim_key(&t.key), Some(json!("won"))).await?;
        Ok(Claim::Won)
    }

    /// Plans the job of a claimed ticket and creates it.
    async fn dispatch(&self, store: &dyn Store, t: &Ticket, report: &mut ApplyReport) -> Result<(), SourceError> {
        let catalog = store.catalog().await?;
        let template_name = self.settings.mapping.template_for(t).to_string();
        let Some(template) = catalog.templates.get(&template_name) else {
            self.note(store, &t.key, &format!("template `{template_name}` is not defined")).await?;
            return Ok(());
        };
        let params: BTreeMap<String, Value> = self
            .settings
            .mapping
            .params_for(t)
            .into_iter()
            .filter(|(k, v)| template.spec.variables.iter().any(|d| &d.name == k) && v != &Value::String(String::new()))
            .collect();
        let id = job_id(&t.key);
        let env = BTreeMap::new();
        let mut labels = george_core::labels::Labels::new();
        if self.settings.board || self.settings.mapping.board_for(t) {
            labels.insert(crate::board::LABEL.into(), "true".into());
        }
        let req = JobRequest {
            id: &id,
            template: &template_name,
            params: &params,
            agent: None,
            chapter: None,
            priority: self.settings.mapping.priority_for(t),
            desired: DesiredState::Active,
            env: &env,
            parallelism: None,
            fail_fast: None,
            labels: &labels,
        };
        let origin = Origin { source: SOURCE.into(), reference: Some(t.key.clone()), revision: None };
        match catalog.plan(&req, origin) {
            Ok(job) => {
                if store.create_job(job, "source:jira").await? == Created::New {
                    tracing::info!(ticket = %t.key, job = %id, "Jira ticket dispatched");
                    report.created.push(id);
                }
            }
            Err(errs) => {
                let why = errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ");
                self.note(store, &t.key, &format!("cannot become a job: {why}")).await?;
            }
        }
        Ok(())
    }

    /// Whether a person closed the ticket of `job` (a done-category status
    /// while the job is unfinished): then the job is aborted or paused
    /// (`jira.onClosed`), and its agent stopped; the write-back never reopens
    /// the ticket and says why on it once.
    async fn closed_by_a_person(
        &self,
        store: &dyn Store,
        job: &george_store::Job,
        key: &str,
    ) -> Result<bool, SourceError> {
        let (status, category) = match self.client.status_and_category(key).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(ticket = %key, error = %e, "cannot read the ticket's status");
                return Ok(false);
            }
        };
        if category != "done" {
            return Ok(false);
        }
        let target = match self.settings.on_closed {
            OnClosed::Abort => DesiredState::Aborted,
            OnClosed::Pause => DesiredState::Paused,
        };
        if job.desired == target {
            return Ok(true);
        }
        let reason = format!("the ticket {key} was closed in Jira (status `{status}`); George will not reopen it");
        tracing::info!(ticket = %key, job = %job.id, status = %status, "ticket closed by a person: job {}", target.as_str());
        match store.set_desired(&job.id, target, "source:jira", Some(&reason)).await {
            Ok(_) | Err(StoreError::Conflict(_)) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// People's new comments on claimed tickets reach their jobs' conversations;
    /// a ticket a person closed stops its job.
    async fn pull_comments(&self, store: &dyn Store) -> Result<(), SourceError> {
        let me = self.myself().await.map_err(|e| SourceError::Read(e.to_string()))?.to_string();
        let filter = george_store::JobFilter {
            status: vec![JobStatus::Pending, JobStatus::InProgress, JobStatus::Blocked, JobStatus::Paused],
            source: Some(SOURCE.into()),
            ..Default::default()
        };
        for job in store.list_jobs(&filter).await? {
            let Some(key) = job.origin.reference.clone() else { continue };
            if self.closed_by_a_person(store, &job, &key).await? {
                continue;
            }
            let seen_key = format!("jira.seen:{key}");
            let seen: u64 = store.setting(&seen_key).await?.and_then(|v| v.as_u64()).unwrap_or(0);
            let comments = match self.client.comments(&key).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(ticket = %key, error = %e, "cannot read the ticket's comments");
                    continue;
                }
            };
            let mut newest = seen;
            for c in comments {
                let id: u64 = c.id.parse().unwrap_or(0);
                if id <= seen {
                    continue;
                }
                newest = newest.max(id);
                if c.author_id == me || c.text.trim().is_empty() {
                    continue;
                }
                let body: String = c.text.chars().take(60_000).collect();
                match store.add_comment(&job.id, &format!("jira:{}", c.author_name), &body).await {
                    Ok(_) | Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if newest > seen {
                store.set_setting(&seen_key, Some(json!(newest))).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Source for JiraSource {
    fn name(&self) -> &str {
        SOURCE
    }

    fn interval(&self) -> Duration {
        self.settings.interval
    }

    async fn sync(&self, store: &dyn Store) -> Result<SyncOutcome, SourceError> {
        let mut outcome = SyncOutcome { source: SOURCE.into(), ..Default::default() };
        let jql = self.settings.jql();
        let mut fields: Vec<String> = FIELDS.iter().map(|f| f.to_string()).collect();
        fields.extend(self.settings.mapping.fields.keys().cloned());
        let issues = match self.client.search_all(&jql, &fields, self.settings.page_size).await {
            Ok(i) => i,
            Err(e) => {
                let message = match &e {
                    JiraError::Rejected { status: 400, messages, .. } => {
                        format!("the JQL `{jql}` is invalid: {messages}")
                    }
                    other => other.to_string(),
                };
                tracing::warn!(error = %message, "Jira search failed");
                store.reject_revision(SOURCE, "search", vec![message.clone()]).await?;
                outcome.errors = vec![message];
                return Ok(outcome);
            }
        };
        let mut report = ApplyReport::default();
        let mut errors = Vec::new();
        for issue in &issues {
            let t = match Ticket::from_issue(issue) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!("search result: {e}"));
                    continue;
                }
            };
            if store.get_job(&job_id(&t.key)).await?.is_some() {
                continue;
            }
            if !t.open_blockers.is_empty() {
                let by: Vec<String> = t.open_blockers.iter().map(|(k, s)| format!("{k} ({s})")).collect();
                self.note(store, &t.key, &format!("blocked by {}", by.join(", "))).await?;
                continue;
            }
            match self.claim(store, &t).await {
                Ok(Claim::Won) => self.dispatch(store, &t, &mut report).await?,
                Ok(Claim::Skip(why)) => self.note(store, &t.key, &why).await?,
                Err(SourceError::Read(e)) => errors.push(format!("{}: {e}", t.key)),
                Err(e) => return Err(e),
            }
        }
        if let Err(e) = self.pull_comments(store).await {
            match e {
                SourceError::Read(m) => errors.push(m),
                other => return Err(other),
            }
        }
        let revision = format!("{} tickets", issues.len());
        george_sources::finish_poll(store, outcome, revision, errors, report).await
    }
}
