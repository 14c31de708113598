//! Jira as George's main work source and status board (seeds 000, 002,
//! 004): tickets found by JQL are claimed, then become jobs; job progress is
//! written back to the ticket as transitions and comments; people's replies
//! on the ticket reach the agent's conversation.
//!
//! - [`client`]: the REST API v3 calls, with typed errors and read retries;
//! - [`adf`]: Atlassian Document Format in and out;
//! - [`ticket`]: a ticket and how it maps to a job;
//! - [`source`]: search, claim, dispatch, and the comments of people;
//! - [`writeback`]: job events to Jira, from a durable cursor over the event log.

pub mod adf;
pub mod board;
pub mod client;
pub mod source;
mod subtasks;
pub mod ticket;
pub mod writeback;

pub use client::{Credentials, JiraClient, JiraError};
pub use source::JiraSource;
pub use ticket::{Mapping, Rule, Ticket};
pub use writeback::WriteBack;

use std::time::Duration;

/// The issue property that records George's claim on a ticket.
pub const CLAIM_PROPERTY: &str = "george.claim";

/// The Jira statuses George moves tickets to (by name, as in the workflow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMap {
    /// When George claims a ticket and while an agent works on it.
    pub in_progress: String,
    /// When a job is blocked (none: the ticket keeps its status; a comment says why).
    pub blocked: Option<String>,
    /// When a job completes (`Done`, or a review status).
    pub completed: String,
    /// When a job fails (none: the ticket keeps its status; a comment says why).
    pub failed: Option<String>,
}

impl Default for StatusMap {
    fn default() -> Self {
        Self { in_progress: "In Progress".into(), blocked: None, completed: "Done".into(), failed: None }
    }
}

/// Everything the Jira source and the write-back need.
#[derive(Debug, Clone)]
pub struct JiraSettings {
    /// Site URL, e.g. `https://acme.atlassian.net`.
    pub url: String,
    /// Project key.
    pub project: Option<String>,
    /// Credentials.
    pub credentials: Credentials,
    /// The label that marks work for George (default `george`).
    pub label: String,
    /// A full JQL that replaces the label query.
    pub query: Option<String>,
    /// Poll interval.
    pub interval: Duration,
    /// Results per search page.
    pub page_size: u32,
    /// Ticket → job.
    pub mapping: Mapping,
    /// Write-back statuses.
    pub statuses: StatusMap,
    /// Assign claimed tickets to this account (`self`: George's own account).
    pub assignee: Option<String>,
    /// This engine's id, recorded in claims.
    pub engine_id: String,
    /// What happens to a job whose ticket a person closes.
    pub on_closed: OnClosed,
    /// Child jobs mirrored as sub-tasks of this issue type (`None`: not mirrored).
    pub subtasks: Option<String>,
    /// Every job on the board: its steps as sub-tasks, its end as a table
    /// (else only the jobs of rules with `board: true`).
    pub board: bool,
}

/// What George does when a person closes (moves to a done-category status)
/// the ticket of a job it is working on. Either way it never reopens the
/// ticket, and says why on it once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnClosed {
    /// The job is aborted and its agent stopped.
    #[default]
    Abort,
    /// The job is paused (its agent stopped); resume it by hand.
    Pause,
}

impl JiraSettings {
    /// The JQL George polls with.
    pub fn jql(&self) -> String {
        if let Some(q) = &self.query {
            return q.clone();
        }
        let label = self.label.replace('"', "\\\"");
        let project = self.project.as_ref().map(|p| format!("project = {p} AND ")).unwrap_or_default();
        format!("{project}labels = \"{label}\" AND statusCategory != Done ORDER BY priority DESC, created ASC")
    }
}

/// The job id of a ticket (`PROJ-12` → `proj-12`).
pub fn job_id(key: &str) -> String {
    george_sources::job_id_for(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_query_follows_the_brief() {
        let s = JiraSettings {
            url: "https://x".into(),
            project: Some("PROJ".into()),
            credentials: Credentials::Bearer("t".into()),
            label: "george".into(),
            query: None,
            interval: Duration::from_secs(60),
            page_size: 50,
            mapping: Mapping::default(),
            statuses: StatusMap::default(),
            assignee: None,
            engine_id: "e1".into(),
            on_closed: OnClosed::Abort,
            subtasks: None,
            board: false,
        };
        assert_eq!(
            s.jql(),
            "project = PROJ AND labels = \"george\" AND statusCategory != Done ORDER BY priority DESC, created ASC"
        );
        assert_eq!(JiraSettings { query: Some("key = X-1".into()), ..s }.jql(), "key = X-1");
        assert_eq!(job_id("PROJ-12"), "proj-12");
    }
}
