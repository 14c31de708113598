//! A job summoned from a Slack thread has that thread as its conversation.
//! The job carries the thread in two labels, set when it is created (so no
//! crash can separate a job from its thread): `george.dev/slack-channel`
//! and `george.dev/slack-thread` (the `ts` of the thread's first message).
//! - What the thread needs to hear reaches it ([`SlackWriteBack`], a loop
//!   on the event log from a cursor of its own, `slack.report.cursor`): why
//!   the job is blocked (the agent's question, from `ask_human`), and how it
//!   ended, with its summary.
//! - What people write in the thread reaches the agent as comments (which
//!   unblock a blocked job), from Slack users mapped to operators, each
//!   message once ([`crate::slack_events`]).
//!
//! The write-back also forgets the Slack deliveries and messages it no
//! longer needs to recognise (`slack.event:*`, `slack.message:*`, older
//! than [`MEMORY`]; Slack redelivers for minutes, not hours).

use crate::slack_web::{SlackError, SlackWeb};
use chrono::{DateTime, Utc};
use george_core::api::HandedBack;
use george_core::labels::{Labels, Requirement, Selector};
use george_core::{EventKind, JobStatus};
use george_store::{Job, JobFilter, Store, StoreError};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The label naming a job's Slack channel.
pub const CHANNEL_LABEL: &str = "george.dev/slack-channel";
/// The label naming a job's Slack thread (its first message's `ts`).
pub const THREAD_LABEL: &str = "george.dev/slack-thread";
/// The write-back's place in the event log.
const CURSOR: &str = "slack.report.cursor";
/// Settings recognising a Slack delivery (by `event_id`) already handled.
pub(crate) const SEEN_EVENT: &str = "slack.event:";
/// Settings recognising a message (by channel and `ts`) already taken as a reply.
pub(crate) const SEEN_MESSAGE: &str = "slack.message:";
/// How long a delivery or a message is remembered.
pub const MEMORY: Duration = Duration::from_secs(24 * 3600);

/// The labels binding a job to `thread` of `channel`, if Slack's ids are label values (they are).
pub(crate) fn labels(channel: &str, thread: &str) -> Option<Labels> {
    let ok = |k: &str, v: &str| george_core::labels::check_value(k, v).is_ok();
    (ok(CHANNEL_LABEL, channel) && ok(THREAD_LABEL, thread))
        .then(|| [(CHANNEL_LABEL.to_string(), channel.to_string()), (THREAD_LABEL.to_string(), thread.to_string())])
        .map(Labels::from)
}

/// The channel and thread of a job summoned from Slack.
pub(crate) fn thread_of(job: &Job) -> Option<(String, String)> {
    Some((job.labels.get(CHANNEL_LABEL)?.clone(), job.labels.get(THREAD_LABEL)?.clone()))
}

/// The unfinished job whose conversation is `thread` of `channel`, if any.
pub(crate) async fn job_of(store: &dyn Store, channel: &str, thread: &str) -> Result<Option<Job>, StoreError> {
    let filter = JobFilter {
        status: vec![JobStatus::Pending, JobStatus::InProgress, JobStatus::Blocked, JobStatus::Paused],
        selector: Selector(vec![
            Requirement::Equals(CHANNEL_LABEL.into(), channel.into()),
            Requirement::Equals(THREAD_LABEL.into(), thread.into()),
        ]),
        limit: Some(1),
        ..Default::default()
    };
    Ok(store.list_jobs(&filter).await?.into_iter().next())
}

/// Remembers `key` (a delivery or a message) now: whether it was new. One
/// check at a time, so that two copies of a delivery arriving together
/// (a replay racing the original) are not both new.
pub(crate) async fn first_time(store: &dyn Store, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _held = ONE_AT_A_TIME.lock().await;
    if store.setting(key).await?.is_some() {
        return Ok(false);
    }
    store.set_setting(key, Some(json!(now.to_rfc3339()))).await?;
    Ok(true)
}

/// Why a write-back pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// Slack failed.
    #[error(transparent)]
    Slack(#[from] SlackError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes what happens to jobs summoned from Slack into their threads.
pub struct SlackWriteBack {
    store: Arc<dyn Store>,
    web: SlackWeb,
    clock: Arc<dyn george_core::Clock>,
    /// Job → its thread, for the jobs seen (bounded).
    threads: HashMap<String, Option<(String, String)>>,
    swept: Option<DateTime<Utc>>,
}

impl SlackWriteBack {
    /// Posting with `web` about the jobs in `store`.
    pub fn new(store: Arc<dyn Store>, web: SlackWeb, clock: Arc<dyn george_core::Clock>) -> Self {
        Self { store, web, clock, threads: HashMap::new(), swept: None }
    }

    async fn thread(&mut self, job: &str) -> Result<Option<(String, String)>, StoreError> {
        if let Some(t) = self.threads.get(job) {
            return Ok(t.clone());
        }
        let t = self.store.get_job(job).await?.as_ref().and_then(thread_of);
        if self.threads.len() >= 10_000 {
            self.threads.clear();
        }
        self.threads.insert(job.to_string(), t.clone());
        Ok(t)
    }

    /// Follows the event log from the cursor; the cost is the events since the last pass.
    async fn post_news(&mut self) -> Result<(), PassError> {
        let store = self.store.clone();
        loop {
            let cursor = store.setting(CURSOR).await?.and_then(|v| v.as_i64()).unwrap_or(0);
            let batch = store.events_since(cursor, 200, None).await?;
            let Some(last) = batch.last().map(|e| e.seq) else { return Ok(()) };
            for e in &batch {
                let Some(job) = e.job_id.as_deref() else { continue };
                if e.kind != EventKind::JobStatus {
                    continue;
                }
                let Some((channel, thread)) = self.thread(job).await? else { continue };
                if let Some(text) = self.say(e, job).await? {
                    match self.web.post(&channel, Some(&thread), &text).await {
                        Ok(_) => {}
                        // Slack will never take it (the channel is gone, the bot was removed): say so, go on.
                        Err(SlackError::Refused(why)) => {
                            tracing::warn!(job, channel = %channel, why = %why, "Slack refused a message to a job's thread");
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                store.set_setting(CURSOR, Some(json!(e.seq))).await?;
            }
            store.set_setting(CURSOR, Some(json!(last))).await?;
            if batch.len() < 200 {
                return Ok(());
            }
        }
    }

    /// What the thread is told of the status change `e` of `job`, if anything.
    async fn say(&self, e: &george_store::Event, job: &str) -> Result<Option<String>, StoreError> {
        let reason = e.data["reason"].as_str().unwrap_or_default();
        Ok(Some(match e.data["to"].as_str().unwrap_or_default() {
            "blocked" => format!(
                ":raised_hand: George is blocked (job `{job}`): {reason}\nReply in this thread to answer; the job goes on with your reply."
            ),
            "completed" => {
                let mut text = format!(":white_check_mark: George finished job `{job}`.");
                for ev in self.store.evidence(job).await?.iter().filter(|e| e.kind == "summary" || e.kind == HandedBack::KIND) {
                    text.push('\n');
                    text.push_str(&result_line(&ev.kind, &ev.content));
                }
                text
            }
            "failed" => format!(":x: George could not finish job `{job}`: {reason}"),
            "aborted" => format!(":octagonal_sign: George stopped job `{job}`: {reason}"),
            _ => return Ok(None),
        }))
    }

    /// Forgets deliveries and messages older than [`MEMORY`], at most once an hour.
    async fn sweep(&mut self) -> Result<(), StoreError> {
        let now = self.clock.now();
        if self.swept.is_some_and(|at| now - at < chrono::Duration::hours(1)) {
            return Ok(());
        }
        self.swept = Some(now);
        let memory = chrono::Duration::from_std(MEMORY).unwrap_or_default();
        for prefix in [SEEN_EVENT, SEEN_MESSAGE] {
            for (key, at) in self.store.settings(prefix).await? {
                let at = at.as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
                if at.is_none_or(|at| now - at.with_timezone(&Utc) >= memory) {
                    self.store.set_setting(&key, None).await?;
                }
            }
        }
        Ok(())
    }
}

/// One line of a job's result: its summary, or the branch it handed back.
fn result_line(kind: &str, content: &str) -> String {
    if kind != HandedBack::KIND {
        return content.to_string();
    }
    let h = HandedBack::parse(content);
    let mut text = format!("Branch `{}` at commit `{}`.", h.branch(), h.commit());
    if let Some(pr) = &h.pull_request {
        text.push_str(&format!(" Pull request: {pr}"));
    }
    text
}

#[async_trait::async_trait]
impl george_sources::WriteBackPass for SlackWriteBack {
    type Error = PassError;

    async fn pass(&mut self) -> Result<(), PassError> {
        if let Err(e) = self.sweep().await {
            tracing::warn!(error = %e, "cannot forget old Slack deliveries");
        }
        self.post_news().await
    }
}

#[async_trait::async_trait]
impl george_sources::WriteBack for SlackWriteBack {
    async fn run(mut self: Box<Self>, stop: CancellationToken) {
        let store = self.store.clone();
        george_sources::follow_events(store.as_ref(), stop, "slack", self.as_mut()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use george_core::{Clock, ManualClock};

    #[tokio::test]
    async fn deliveries_are_recognised_for_a_day_then_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(Utc::now());
        let store: Arc<dyn Store> = Arc::new(george_store::SqliteStore::open(dir.path().join("s.db")).unwrap());
        let web = SlackWeb::new(reqwest::Client::new(), "http://127.0.0.1:9", "xoxb-unused");
        let mut wb = SlackWriteBack::new(store.clone(), web, Arc::new(clock.clone()));
        let old = format!("{SEEN_EVENT}Ev1");
        assert!(first_time(store.as_ref(), &old, clock.now()).await.unwrap());
        assert!(!first_time(store.as_ref(), &old, clock.now()).await.unwrap(), "a redelivery");
        wb.sweep().await.unwrap();
        assert!(store.setting(&old).await.unwrap().is_some(), "fresh: kept");
        clock.advance(MEMORY + Duration::from_secs(60));
        let new = format!("{SEEN_MESSAGE}C0001:1700000000.000100");
        assert!(first_time(store.as_ref(), &new, clock.now()).await.unwrap());
        wb.sweep().await.unwrap();
        assert!(store.setting(&old).await.unwrap().is_none(), "a day old: forgotten");
        assert!(store.setting(&new).await.unwrap().is_some());
        // A day later, that one too.
        clock.advance(MEMORY);
        wb.sweep().await.unwrap();
        assert!(store.setting(&new).await.unwrap().is_none());
    }

    #[test]
    fn slack_ids_are_label_values() {
        let l = labels("C0001", "1700000300.000100").unwrap();
        assert_eq!(l[CHANNEL_LABEL], "C0001");
        assert!(labels("C0001", "not a ts").is_none());
    }
}
