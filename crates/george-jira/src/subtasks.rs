//! Sub-agents on the board (`jira.subtasks`): each child job in the family
//! of a job from Jira is mirrored as a sub-task of that job's ticket (Jira
//! has one level of sub-tasks, so grandchildren too), created once — the
//! ticket's property `george.subtasks` maps child jobs to their sub-tasks,
//! written right after each one is created — and moved as the child's
//! status changes.

use crate::adf::{doc, Block};
use crate::writeback::{Failure, WriteBack};
use george_core::record::Event;
use serde_json::{json, Value};

/// The ticket property mapping child jobs to their sub-tasks.
pub const PROPERTY: &str = "george.subtasks";
/// A child job's origin source (`george_engine::children::SOURCE`).
const CHILD: &str = "parent";

impl WriteBack {
    /// A sub-task of `ticket` (summary cut to Jira's 255), recorded as
    /// `entry` in the ticket's `property` map `map` right after it is created,
    /// so a restart creates it no second time. Its key.
    pub(crate) async fn create_recorded(
        &self,
        ticket: &str,
        (property, map, entry): (&str, &mut Value, &str),
        issue_type: &str,
        summary: &str,
        description: String,
    ) -> Result<String, Failure> {
        let summary: String = summary.chars().take(250).collect();
        let description = doc(&[Block::Paragraph(description)]);
        let key = self.client.create_subtask(ticket, issue_type, &summary, &description).await?;
        map[entry] = json!(key);
        self.client.set_property(ticket, property, map).await?;
        Ok(key)
    }

    /// Moves sub-task `key` as what it mirrors (a child job, a step) became `to`:
    /// in progress, blocked (if configured), the completed status when it
    /// completes, is skipped or aborted, the failed one (else completed) when it fails.
    pub(crate) async fn move_subtask_to(&self, key: &str, to: &str) -> Result<(), Failure> {
        let statuses = &self.settings.statuses;
        let target = match to {
            "in_progress" => Some(statuses.in_progress.clone()),
            "blocked" => statuses.blocked.clone(),
            "completed" | "skipped" | "aborted" => Some(statuses.completed.clone()),
            "failed" => statuses.failed.clone().or(Some(statuses.completed.clone())),
            _ => None,
        };
        match target {
            Some(status) => self.move_to(key, &status).await,
            None => Ok(()),
        }
    }

    /// The ticket at the top of `job`'s family, if it came from Jira.
    async fn family_ticket(&mut self, job: &str) -> Result<Option<String>, Failure> {
        let mut id = job.to_string();
        for _ in 0..16 {
            if let Some(t) = self.ticket_of(&id).await? {
                return Ok(Some(t));
            }
            let Some(j) = self.store.get_job(&id).await? else { return Ok(None) };
            match (j.origin.source.as_str(), j.origin.reference) {
                (CHILD, Some(parent)) => id = parent,
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    /// A child job was created: its sub-task, once.
    pub(crate) async fn mirror_child(&mut self, e: &Event, issue_type: &str) -> Result<(), Failure> {
        let (Some(job), Some(parent)) = (e.job_id.as_deref(), e.data["reference"].as_str()) else { return Ok(()) };
        let Some(ticket) = self.family_ticket(parent).await? else { return Ok(()) };
        let mut map = self.client.property(&ticket, PROPERTY).await?.unwrap_or_else(|| json!({}));
        if let Some(key) = map.get(job).and_then(Value::as_str) {
            self.subtasks.insert(job.to_string(), Some(key.to_string()));
            return Ok(());
        }
        let child = self.store.get_job(job).await?;
        let template = child.as_ref().map(|c| c.template.clone()).unwrap_or_default();
        let task = child.as_ref().and_then(|c| c.params.get("task")).and_then(Value::as_str).map(str::to_string);
        let key_name = e.data["revision"].as_str().unwrap_or(job);
        let summary = format!("{key_name}: {}", task.as_deref().unwrap_or(&template));
        let description = format!("George sub-agent: job {job} (template {template}), started by job {parent}.");
        let key = self.create_recorded(&ticket, (PROPERTY, &mut map, job), issue_type, &summary, description).await?;
        tracing::info!(ticket = %ticket, subtask = %key, job, "child job mirrored as a sub-task");
        self.subtasks.insert(job.to_string(), Some(key));
        Ok(())
    }

    /// The sub-task of child job `job`, if it has one.
    async fn subtask_of(&mut self, job: &str) -> Result<Option<String>, Failure> {
        if let Some(k) = self.subtasks.get(job) {
            return Ok(k.clone());
        }
        let key = match self.family_ticket(job).await? {
            Some(ticket) => self
                .client
                .property(&ticket, PROPERTY)
                .await?
                .and_then(|m| m.get(job).and_then(Value::as_str).map(str::to_string)),
            None => None,
        };
        self.subtasks.insert(job.to_string(), key.clone());
        Ok(key)
    }

    /// A child job's status changed: its sub-task follows (`false`: it has none).
    pub(crate) async fn move_subtask(&mut self, job: &str, to: &str) -> Result<bool, Failure> {
        if self.store.get_job(job).await?.is_none_or(|j| j.origin.source != CHILD) {
            return Ok(false);
        }
        let Some(key) = self.subtask_of(job).await? else { return Ok(false) };
        self.move_subtask_to(&key, to).await?;
        Ok(true)
    }
}
