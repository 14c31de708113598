//! GitHub Issues as a source of jobs (recac's `github` poller, and the
//! intake OpenHands' resolver and Copilot's coding agent made common): the
//! open issues of one repository with a label become jobs of a template.
//!
//! - **Claimed once.** Before an issue becomes a job, the engine writes a
//!   claim comment (`<!-- george:claim ENGINE:NONCE -->`) and reads the
//!   issue's comments again: GitHub numbers comments in the order it takes
//!   them, so the first claim is the winner for every engine that reads
//!   them, and only its engine creates the job. An engine that finds a claim
//!   already there does not claim. An engine restarted with its store finds
//!   its job and claims nothing again.
//! - **Pull requests that close the issue.** A job whose template declares
//!   `repo_url` works in the repository (cloned from `web_url`); if it also
//!   declares `open_pull_request`, it is set, and the agent opens its branch
//!   as a pull request whose body says `Closes #<n>` (the job's environment
//!   names the forge: `GEORGE_FORGE_URL`, `GEORGE_FORGE_REPO`,
//!   `GEORGE_FORGE_ISSUE`).
//! - **Reported back.** When a job of an issue ends (completed, failed or
//!   aborted), the issue gets one comment saying so, with its branch, commit
//!   and pull request when it made one; a setting per job
//!   (`github.reported:<job>`) keeps it to one, across restarts. A job that
//!   is blocked says why (the question a person answers on the issue). The
//!   report-back follows the event log from a cursor, so a poll costs the
//!   events since the last one.
//! - **People's comments** on an issue whose job is unfinished reach the
//!   job's conversation (`github:<login>`), once each (`github.seen:<job>`
//!   holds the last comment id read); a comment unblocks a blocked job.
//! - **Rate limits** (`403`/`429` with `Retry-After`, or a primary limit
//!   with `x-ratelimit-remaining: 0`) and outages fail the poll with the
//!   reason; the next poll tries again and nothing is lost.

mod client;

pub use client::{GitHubClient, GitHubError, Issue};

use async_trait::async_trait;
use george_core::JobStatus;
use george_sources::{Source, SourceError, SyncOutcome, WorkItem};
use george_store::{ApplyReport, Created, Store};
use serde_json::json;
use std::time::Duration;

/// The source's name in the store.
pub const SOURCE: &str = "github";
/// Settings keys of the jobs whose end an issue has heard: `github.reported:<job>`.
const REPORTED: &str = george_store::job_settings::GITHUB_REPORTED;
/// The last event the report-back has read.
const CURSOR: &str = "github.report.cursor";
/// Settings keys of the last comment read into a job: `github.seen:<job>`.
const SEEN: &str = george_store::job_settings::GITHUB_SEEN;
/// The marker a claim comment begins with.
const CLAIM: &str = "<!-- george:claim ";

/// What the source needs.
#[derive(Debug, Clone)]
pub struct GitHubSettings {
    /// The API's base URL (`https://api.github.com`).
    pub api_url: String,
    /// Where the repository is cloned from: `<web_url>/<owner>/<repo>.git` (`https://github.com`).
    pub web_url: String,
    /// Repository owner.
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// The token.
    pub token: String,
    /// The label that marks an issue as work.
    pub label: String,
    /// The template issues become.
    pub template: String,
    /// Poll interval.
    pub interval: Duration,
    /// This engine's id, written in its claims.
    pub engine_id: String,
}

/// The GitHub Issues source.
#[derive(Debug)]
pub struct GitHubSource {
    settings: GitHubSettings,
    client: GitHubClient,
    login: tokio::sync::OnceCell<String>,
    /// Job → its issue, for the jobs the report-back met.
    issues: parking_lot::Mutex<std::collections::HashMap<String, Option<u64>>>,
}

impl GitHubSource {
    /// A source with `settings`.
    pub fn new(settings: GitHubSettings) -> Result<Self, GitHubError> {
        let client = GitHubClient::new(&settings.api_url, &settings.owner, &settings.repo, &settings.token)?;
        Ok(Self { settings, client, login: Default::default(), issues: Default::default() })
    }

    /// The job id of issue `number`: `<repo>-<number>`.
    pub fn job_id(&self, number: u64) -> String {
        george_sources::job_id_for(&format!("{}-{number}", self.settings.repo))
    }

    fn reference(&self, number: u64) -> String {
        format!("{}/{}#{number}", self.settings.owner, self.settings.repo)
    }

    /// Whether this engine holds the claim on `issue` (claiming it when nobody does).
    async fn claim(&self, number: u64) -> Result<bool, GitHubError> {
        let ours = format!("{}:", self.settings.engine_id);
        let first_claim = |comments: &[client::Comment]| {
            comments.iter().find_map(|c| {
                c.body.strip_prefix(CLAIM).map(|rest| rest.split(" -->").next().unwrap_or("").to_string())
            })
        };
        if let Some(owner) = first_claim(&self.client.comments(number).await?) {
            return Ok(owner.starts_with(&ours));
        }
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| GitHubError::Decode(format!("no randomness: {e}")))?;
        let mine = format!("{ours}{}", hex::encode(nonce));
        let body = format!("{CLAIM}{mine} -->\nGeorge is taking this issue (engine `{}`).", self.settings.engine_id);
        self.client.add_comment(number, &body).await?;
        Ok(first_claim(&self.client.comments(number).await?).as_deref() == Some(mine.as_str()))
    }

    /// The issue's job, planned from the configured template.
    async fn dispatch(
        &self,
        store: &dyn Store,
        issue: &Issue,
        report: &mut ApplyReport,
    ) -> Result<Option<String>, SourceError> {
        let item = WorkItem {
            id: self.reference(issue.number),
            job_id: self.job_id(issue.number),
            summary: issue.title.clone(),
            description: issue.body.clone().unwrap_or_default(),
            repo_url: format!(
                "{}/{}/{}.git",
                self.settings.web_url.trim_end_matches('/'),
                self.settings.owner,
                self.settings.repo
            ),
            env_vars: [
                ("GEORGE_FORGE_URL", self.settings.api_url.clone()),
                ("GEORGE_FORGE_REPO", format!("{}/{}", self.settings.owner, self.settings.repo)),
                ("GEORGE_FORGE_ISSUE", issue.number.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        };
        let catalog = store.catalog().await?;
        let extra = [("open_pull_request".to_string(), json!(true))].into();
        match george_sources::plan_item_with(&catalog, &self.settings.template, &item, extra, SOURCE, &item.id) {
            Ok(job) => {
                if store.create_job(job, "source:github").await? == Created::New {
                    tracing::info!(issue = %item.id, job = %item.job_id, "GitHub issue dispatched");
                    report.created.push(item.job_id);
                }
                Ok(None)
            }
            Err(errors) => Ok(Some(errors.join("; "))),
        }
    }

    /// People's new comments on the issues of unfinished jobs, into their conversations.
    async fn pull_comments(&self, store: &dyn Store) -> Result<(), SourceError> {
        let read = |e: GitHubError| SourceError::Read(e.to_string());
        let me = self.login.get_or_try_init(|| self.client.login()).await.map_err(read)?;
        let filter = george_store::JobFilter {
            status: vec![JobStatus::Pending, JobStatus::InProgress, JobStatus::Blocked, JobStatus::Paused],
            source: Some(SOURCE.into()),
            ..Default::default()
        };
        for job in store.list_jobs(&filter).await? {
            let Some(number) = issue_number(&job) else { continue };
            let key = format!("{SEEN}{}", job.id);
            let seen = store.setting(&key).await?.and_then(|v| v.as_u64()).unwrap_or(0);
            let comments = self.client.comments(number).await.map_err(read)?;
            let newest = comments.iter().map(|c| c.id).max().unwrap_or(0);
            for c in comments.iter().filter(|c| c.id > seen && &c.author != me && !c.body.starts_with(CLAIM)) {
                let body: String = c.body.chars().take(60_000).collect();
                if body.trim().is_empty() {
                    continue;
                }
                match store.add_comment(&job.id, &format!("github:{}", c.author), &body).await {
                    Ok(_) | Err(george_store::StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if newest > seen {
                store.set_setting(&key, Some(json!(newest))).await?;
            }
        }
        Ok(())
    }

    /// The issue of `job`, if it is a job of this source (remembered).
    async fn issue_of(&self, store: &dyn Store, job: &str) -> Result<Option<u64>, SourceError> {
        if let Some(n) = self.issues.lock().get(job) {
            return Ok(*n);
        }
        let n = store.get_job(job).await?.filter(|j| j.origin.source == SOURCE).as_ref().and_then(issue_number);
        let mut known = self.issues.lock();
        if known.len() >= 10_000 {
            known.clear();
        }
        known.insert(job.to_string(), n);
        Ok(n)
    }

    /// Reads the event log from its cursor (`github.report.cursor`): a job
    /// of an issue that ends gets one comment saying how (a setting per job
    /// keeps it to one); one that is blocked says why, once each time. The
    /// cost is the events since the last pass, not the history.
    async fn report_back(&self, store: &dyn Store) -> Result<(), ReportError> {
        loop {
            let cursor = store.setting(CURSOR).await?.and_then(|v| v.as_i64()).unwrap_or(0);
            let batch = store.events_since(cursor, 200, None).await?;
            let Some(last) = batch.last().map(|e| e.seq) else { return Ok(()) };
            for e in batch.iter().filter(|e| e.kind == george_core::EventKind::JobStatus) {
                let Some(job) = e.job_id.as_deref() else { continue };
                let Some(number) = self.issue_of(store, job).await? else { continue };
                let reason = e.data["reason"].as_str().unwrap_or_default();
                let body = match e.data["to"].as_str().unwrap_or_default() {
                    "blocked" => format!("George is blocked (job `{job}`): {reason}\n\nAnswer here to go on."),
                    "completed" => format!("George finished job `{job}`.{}", handed_back(store, job).await?),
                    "failed" => format!("George could not finish job `{job}`: {reason}"),
                    "aborted" => format!("George stopped job `{job}`: {reason}"),
                    _ => continue,
                };
                let ended = e.data["to"] != "blocked";
                let key = format!("{REPORTED}{job}");
                if ended && store.setting(&key).await?.is_some() {
                    continue;
                }
                self.client.add_comment(number, &body).await?;
                if ended {
                    store.set_setting(&key, Some(e.data["to"].clone())).await?;
                }
                store.set_setting(CURSOR, Some(json!(e.seq))).await?;
            }
            store.set_setting(CURSOR, Some(json!(last))).await?;
            if batch.len() < 200 {
                return Ok(());
            }
        }
    }
}

/// Why a report-back pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// GitHub failed.
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] george_store::StoreError),
    /// Reading the source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// The GitHub write-back: comments on the issues as their jobs block and
/// end, soon after (it wakes on every store event, and every 5 s).
pub struct GitHubWriteBack {
    source: std::sync::Arc<GitHubSource>,
    store: std::sync::Arc<dyn Store>,
}

impl GitHubWriteBack {
    /// The write-back of `source`'s jobs in `store`.
    pub fn new(source: std::sync::Arc<GitHubSource>, store: std::sync::Arc<dyn Store>) -> Self {
        Self { source, store }
    }
}

#[async_trait]
impl george_sources::WriteBackPass for GitHubWriteBack {
    type Error = ReportError;

    async fn pass(&mut self) -> Result<(), ReportError> {
        self.source.report_back(self.store.as_ref()).await
    }

    fn retry_after(&self, e: &ReportError) -> Option<Duration> {
        match e {
            ReportError::GitHub(GitHubError::RateLimited { retry_after, .. }) => *retry_after,
            _ => None,
        }
    }
}

#[async_trait]
impl george_sources::WriteBack for GitHubWriteBack {
    async fn run(mut self: Box<Self>, stop: tokio_util::sync::CancellationToken) {
        let store = self.store.clone();
        george_sources::follow_events(store.as_ref(), stop, "github", self.as_mut()).await
    }
}

/// The issue number of a job of this source (its reference is `owner/repo#<n>`).
fn issue_number(job: &george_store::Job) -> Option<u64> {
    job.origin.reference.as_deref()?.rsplit('#').next()?.parse().ok()
}

/// What a coding job handed back, as lines for a comment.
async fn handed_back(store: &dyn Store, job: &str) -> Result<String, SourceError> {
    use george_core::api::HandedBack;
    let mut text = String::new();
    for ev in store.evidence(job).await?.iter().filter(|e| e.kind == HandedBack::KIND) {
        let h = HandedBack::parse(&ev.content);
        text.push_str(&format!("\n\nBranch `{}` at commit {}.", h.branch(), h.commit()));
        if let Some(pr) = &h.pull_request {
            text.push_str(&format!("\nPull request: {pr}"));
        }
    }
    Ok(text)
}

#[async_trait]
impl Source for GitHubSource {
    fn name(&self) -> &str {
        SOURCE
    }

    fn interval(&self) -> Duration {
        self.settings.interval
    }

    async fn sync(&self, store: &dyn Store) -> Result<SyncOutcome, SourceError> {
        let mut outcome = SyncOutcome { source: SOURCE.into(), ..Default::default() };
        let issues = match self.client.issues(&self.settings.label).await {
            Ok(i) => i,
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(error = %message, "GitHub poll failed");
                store.reject_revision(SOURCE, "poll", vec![message.clone()]).await?;
                outcome.errors = vec![message];
                return Ok(outcome);
            }
        };
        let mut report = ApplyReport::default();
        let mut errors = Vec::new();
        for issue in issues.iter().filter(|i| !i.pull_request) {
            if store.get_job(&self.job_id(issue.number)).await?.is_some() {
                continue;
            }
            match self.claim(issue.number).await {
                Ok(true) => {
                    if let Some(why) = self.dispatch(store, issue, &mut report).await? {
                        let reason = format!("{}: cannot become a job: {why}", self.reference(issue.number));
                        let data = json!({"source": SOURCE, "issue": self.reference(issue.number), "reason": reason});
                        store.record_event(None, george_core::EventKind::JobRejected, "source:github", data).await?;
                        outcome.refused.push(reason);
                    }
                }
                Ok(false) => tracing::debug!(issue = issue.number, "claimed by another engine"),
                Err(e) => errors.push(format!("{}: {e}", self.reference(issue.number))),
            }
        }
        match self.pull_comments(store).await {
            Ok(()) => {}
            Err(SourceError::Read(m)) => errors.push(m),
            Err(other) => return Err(other),
        }
        let revision = format!("{} issues", issues.len());
        george_sources::finish_poll(store, outcome, revision, errors, report).await
    }
}
