//! Write-back: the progress of jobs that came from Jira, told on their
//! tickets. The write-back follows the store's event log from a cursor kept
//! in the store, so it is its own durable outbox: an event is done only
//! when Jira has taken what it implies, and a Jira outage (`429`, `5xx`,
//! network, wrong credentials) only delays it — the same event is tried
//! again, in order, after `Retry-After` or a backoff. What Jira can never
//! take (a ticket deleted, a transition the workflow lacks) is recorded as a
//! `jira.writeback.failed` event and passed over.
//!
//! | job status | ticket |
//! |---|---|
//! | `in_progress` | moved to the in-progress status; comment: working on it (attempt N) |
//! | `blocked` | moved to the blocked status if configured; comment with the reason |
//! | `completed` | moved to the completed status; comment with the summaries, branch and commit |
//! | `failed` | moved to the failed status if configured; comment with the error and an output excerpt |
//! | `aborted` | comment |

use crate::adf::{doc, Block};
use crate::client::{JiraClient, JiraError};
use crate::source::SOURCE;
use crate::JiraSettings;
use george_core::record::Event;
use george_core::EventKind;
use george_store::{Store, StoreError};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CURSOR: &str = "jira.writeback.cursor";

/// The write-back worker.
#[derive(Debug)]
pub struct WriteBack {
    pub(crate) settings: Arc<JiraSettings>,
    pub(crate) client: JiraClient,
    pub(crate) store: Arc<dyn Store>,
    /// Job id → its ticket key (`None`: not from Jira).
    tickets: HashMap<String, Option<String>>,
    /// Child job id → its sub-task key (`None`: none).
    pub(crate) subtasks: HashMap<String, Option<String>>,
}

/// Why an event could not be written back.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Try again later.
    Later(JiraError),
    /// Never: record and move on.
    Never(String),
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<JiraError> for Failure {
    fn from(e: JiraError) -> Self {
        match e {
            e if e.is_transient() || matches!(e, JiraError::Unauthorized) => Failure::Later(e),
            e => Failure::Never(e.to_string()),
        }
    }
}

impl WriteBack {
    /// A worker for `settings`, reading `store`'s event log.
    pub fn new(settings: Arc<JiraSettings>, client: JiraClient, store: Arc<dyn Store>) -> Self {
        Self { settings, client, store, tickets: HashMap::new(), subtasks: HashMap::new() }
    }

    /// Runs until `stop`.
    async fn follow(mut self, stop: CancellationToken) {
        let mut events = self.store.subscribe();
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.pass(&stop).await {
                Ok(true) => continue,
                Ok(false) => {
                    backoff = Duration::from_secs(1);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = events.recv() => {}
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
                Err(wait) => {
                    let wait = wait.unwrap_or(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Writes back the events after the cursor. `Ok(true)`: there may be
    /// more; `Ok(false)`: caught up; `Err`: wait (this long, if Jira said).
    async fn pass(&mut self, stop: &CancellationToken) -> Result<bool, Option<Duration>> {
        let store_err = |e: StoreError| {
            tracing::warn!(error = %e, "Jira write-back cannot read the store");
            None
        };
        let cursor = self.store.setting(CURSOR).await.map_err(store_err)?.and_then(|v| v.as_i64()).unwrap_or(0);
        let batch = self.store.events_since(cursor, 200, None).await.map_err(store_err)?;
        if batch.is_empty() {
            return Ok(false);
        }
        for e in &batch {
            if stop.is_cancelled() {
                return Ok(false);
            }
            match self.apply(e).await {
                Ok(()) => {}
                Err(Failure::Later(err)) => {
                    tracing::warn!(seq = e.seq, error = %err, "Jira write-back delayed");
                    return Err(err.retry_after());
                }
                Err(Failure::Store(err)) => return Err(store_err(err)),
                Err(Failure::Never(why)) => {
                    tracing::warn!(seq = e.seq, error = %why, "Jira write-back gave up on an event");
                    let data = json!({"event": e.seq, "reason": why});
                    self.store
                        .record_event(e.job_id.as_deref(), EventKind::JiraWritebackFailed, "jira", data)
                        .await
                        .map_err(store_err)?;
                }
            }
            self.store.set_setting(CURSOR, Some(json!(e.seq))).await.map_err(store_err)?;
        }
        Ok(true)
    }

    pub(crate) async fn ticket_of(&mut self, job: &str) -> Result<Option<String>, StoreError> {
        if let Some(t) = self.tickets.get(job) {
            return Ok(t.clone());
        }
        let t = self.store.get_job(job).await?.filter(|j| j.origin.source == SOURCE).and_then(|j| j.origin.reference);
        self.tickets.insert(job.to_string(), t.clone());
        Ok(t)
    }

    async fn apply(&mut self, e: &Event) -> Result<(), Failure> {
        let subtasks = self.settings.subtasks.clone();
        if let (EventKind::JobCreated, Some(issue_type)) = (e.kind, &subtasks) {
            if e.data["source"] == "parent" {
                return self.mirror_child(e, issue_type).await;
            }
        }
        if e.kind == EventKind::StepStatus {
            let (Some(job), Some(step)) = (e.job_id.as_deref(), e.data["step"].as_str()) else { return Ok(()) };
            let Some(key) = self.ticket_of(job).await? else { return Ok(()) };
            return self.board_step(&key, job, step, e.data["to"].as_str().unwrap_or("")).await;
        }
        if e.kind == EventKind::JobRetried {
            let Some(job) = e.job_id.as_deref() else { return Ok(()) };
            let Some(key) = self.ticket_of(job).await? else { return Ok(()) };
            return self.board_retried(&key, job, e).await;
        }
        if e.kind != EventKind::JobStatus {
            return Ok(());
        }
        let Some(job) = e.job_id.as_deref() else { return Ok(()) };
        let to = e.data["to"].as_str().unwrap_or("");
        let Some(key) = self.ticket_of(job).await? else {
            if subtasks.is_some() {
                self.move_subtask(job, to).await?;
            }
            return Ok(());
        };
        let reason = e.data["reason"].as_str().unwrap_or("").to_string();
        let statuses = self.settings.statuses.clone();
        // A move Jira can never make is reported, but the comment still goes out.
        let mut refused = None;
        let mut move_to = async |status: &str| -> Result<(), Failure> {
            match self.move_to(&key, status).await {
                Err(Failure::Never(why)) => {
                    refused = Some(why);
                    Ok(())
                }
                other => other,
            }
        };
        // A ticket a person closed is never reopened or moved again: only
        // the job's end is said on it (the source stops the job).
        let closed = matches!(to, "in_progress" | "blocked" | "failed" | "paused")
            && self.client.status_and_category(&key).await?.1 == "done";
        let outcome = match to {
            "paused" if closed => {
                self.comment(&key, &[Block::Paragraph(format!("George paused job {job}: {reason}"))]).await
            }
            _ if closed => Ok(()),
            "in_progress" => {
                move_to(&statuses.in_progress).await?;
                self.board_steps(&key, job).await?;
                let attempt = e.attempt.map(|a| format!(", attempt {a}")).unwrap_or_default();
                self.comment(&key, &[Block::Paragraph(format!("George is working on this (job {job}{attempt})."))])
                    .await
            }
            "blocked" => {
                if let Some(s) = &statuses.blocked {
                    move_to(s).await?;
                }
                self.comment(
                    &key,
                    &[
                        Block::Paragraph(format!("George is blocked (job {job}): {reason}")),
                        Block::Paragraph("Reply on this ticket to answer; the job resumes with your reply.".into()),
                    ],
                )
                .await
            }
            "completed" => {
                move_to(&statuses.completed).await?;
                self.board_attach(&key, job).await?;
                let mut blocks = self.completion(job).await?;
                blocks.extend(self.board_table(job).await?);
                self.comment(&key, &blocks).await
            }
            "failed" => {
                if let Some(s) = &statuses.failed {
                    move_to(s).await?;
                }
                self.board_attach(&key, job).await?;
                let mut blocks = vec![Block::Paragraph(format!("George could not finish job {job}: {reason}"))];
                if let Some(tail) = self.output_tail(job).await? {
                    blocks.push(Block::Paragraph("The end of the last output:".into()));
                    blocks.push(Block::Code(tail));
                }
                blocks.extend(self.board_table(job).await?);
                self.comment(&key, &blocks).await
            }
            "aborted" => self.comment(&key, &[Block::Paragraph(format!("George stopped job {job}: {reason}"))]).await,
            _ => Ok(()),
        };
        outcome?;
        match refused {
            Some(why) => Err(Failure::Never(why)),
            None => Ok(()),
        }
    }

    async fn comment(&self, key: &str, blocks: &[Block]) -> Result<(), Failure> {
        self.client.add_comment(key, &doc(blocks)).await?;
        Ok(())
    }

    /// Moves the ticket to `status` unless it is there already.
    pub(crate) async fn move_to(&self, key: &str, status: &str) -> Result<(), Failure> {
        let transitions = self.client.transitions(key).await?;
        if let Some(t) = transitions.iter().find(|t| t.to.eq_ignore_ascii_case(status)) {
            return match self.client.transition(key, &t.id).await {
                Ok(()) => Ok(()),
                // Moved meanwhile (e.g. by a person): look again next time rather than fail.
                Err(JiraError::Rejected { status: 400 | 409, .. })
                    if self.status_of(key).await?.eq_ignore_ascii_case(status) =>
                {
                    Ok(())
                }
                Err(e) => Err(e.into()),
            };
        }
        let current = self.status_of(key).await?;
        if current.eq_ignore_ascii_case(status) {
            return Ok(());
        }
        Err(Failure::Never(format!(
            "{key}: no transition from `{current}` to `{status}` (available: {}); check jira.statuses",
            transitions.iter().map(|t| t.to.clone()).collect::<Vec<_>>().join(", ")
        )))
    }

    async fn status_of(&self, key: &str) -> Result<String, Failure> {
        Ok(self.client.status(key).await?)
    }

    /// The completion comment: summaries, and the branch when the job worked in a repository.
    async fn completion(&self, job: &str) -> Result<Vec<Block>, StoreError> {
        use george_core::api::HandedBack;
        let mut blocks = vec![Block::Paragraph(format!("George finished job {job}."))];
        for ev in self.store.evidence(job).await? {
            match ev.kind.as_str() {
                "summary" => blocks.push(Block::Paragraph(ev.content.clone())),
                HandedBack::KIND => {
                    let h = HandedBack::parse(&ev.content);
                    let mut text = format!("Branch {} at commit {}", h.branch(), h.commit());
                    if let Some(pr) = &h.pull_request {
                        text.push_str(&format!("\nPull request: {pr}"));
                    }
                    blocks.push(Block::Paragraph(text));
                    if let Some(stat) = h.diff_stat {
                        blocks.push(Block::Code(stat));
                    }
                }
                _ => {}
            }
        }
        Ok(blocks)
    }

    /// The last lines of the job's latest step output.
    async fn output_tail(&self, job: &str) -> Result<Option<String>, StoreError> {
        let ev = self.store.evidence(job).await?;
        Ok(ev.iter().rev().find(|e| e.kind == "output").map(|e| {
            let lines: Vec<&str> = e.content.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        }))
    }
}

#[async_trait::async_trait]
impl george_sources::WriteBack for WriteBack {
    async fn run(self: Box<Self>, stop: CancellationToken) {
        (*self).follow(stop).await
    }
}
