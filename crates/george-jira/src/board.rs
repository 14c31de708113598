//! Jira as the board (`jira.board`, or `board: true` on a rule): a job's
//! steps as sub-tasks of its ticket, moved as each step moves, and its end
//! as one comment with a table of its steps. The sub-tasks are created when
//! the job first starts, in the order of its steps, each once: the ticket's
//! property `george.steps` maps step ids to sub-task keys and is written
//! right after each one is created, so a restarted engine (whose write-back
//! replays from its cursor) creates none twice.

use crate::adf::Block;
use crate::writeback::{Failure, WriteBack};
use george_core::record::{Event, Job};
use george_core::EventKind;
use serde_json::{json, Value};

/// The label a job on the board carries (set by the source when it dispatches).
pub const LABEL: &str = "george.dev/jira-board";
/// The ticket property mapping step ids to sub-task keys.
pub const PROPERTY: &str = "george.steps";
/// The ticket property listing the evidence already attached.
pub const ATTACHED: &str = "george.attachments";
/// The most of one step's output attached (its end is kept).
pub const MAX_ATTACHMENT: usize = 64 << 10;

impl WriteBack {
    /// The job, if it is on the board.
    async fn on_board(&self, job: &str) -> Result<Option<Job>, Failure> {
        Ok(self.store.get_job(job).await?.filter(|j| j.labels.get(LABEL).is_some_and(|v| v == "true")))
    }

    /// The job started: every step's sub-task, each once.
    pub(crate) async fn board_steps(&mut self, ticket: &str, job: &str) -> Result<(), Failure> {
        let Some(j) = self.on_board(job).await? else { return Ok(()) };
        let issue_type = self.settings.subtasks.clone().unwrap_or_else(|| "Subtask".into());
        let mut map = self.client.property(ticket, PROPERTY).await?.unwrap_or_else(|| json!({}));
        for step in &j.steps {
            let id = &step.spec.id;
            if map.get(id).and_then(Value::as_str).is_some() {
                continue;
            }
            let summary = format!("{id}: {}", step.spec.description.lines().next().unwrap_or(id));
            let description = format!("Step {id} of George job {job} (template {}).", j.template);
            let key =
                self.create_recorded(ticket, (PROPERTY, &mut map, id), &issue_type, &summary, description).await?;
            tracing::info!(ticket, subtask = %key, job, step = %id, "step mirrored as a sub-task");
        }
        Ok(())
    }

    /// A step's status changed: its sub-task follows.
    pub(crate) async fn board_step(&mut self, ticket: &str, job: &str, step: &str, to: &str) -> Result<(), Failure> {
        if self.on_board(job).await?.is_none() {
            return Ok(());
        }
        let map = self.client.property(ticket, PROPERTY).await?.unwrap_or_default();
        let Some(key) = map.get(step).and_then(Value::as_str).map(str::to_string) else { return Ok(()) };
        self.move_subtask_to(&key, to).await?;
        Ok(())
    }

    /// The job was retried (event `retried`): the sub-tasks of the steps
    /// it runs again go back to a to-do status (the first the workflow
    /// offers in Jira's `new` category). Which steps run again is read from
    /// the log as it was at the retry — every step from scratch, else those
    /// whose last status then was not completed or skipped — not from the
    /// job now, whose steps may have moved on since; their later moves come
    /// after this one in the log.
    pub(crate) async fn board_retried(&mut self, ticket: &str, job: &str, retried: &Event) -> Result<(), Failure> {
        if self.on_board(job).await?.is_none() {
            return Ok(());
        }
        let mut last: std::collections::BTreeMap<String, String> = Default::default();
        for e in self.store.events_since(0, 100_000, Some(job)).await? {
            if e.seq >= retried.seq {
                break;
            }
            if let (EventKind::StepStatus, Some(step), Some(to)) =
                (e.kind, e.data["step"].as_str(), e.data["to"].as_str())
            {
                last.insert(step.to_string(), to.to_string());
            }
        }
        let from_scratch = retried.data["from_scratch"].as_bool().unwrap_or(false);
        let map = self.client.property(ticket, PROPERTY).await?.unwrap_or_default();
        for (step, to) in &last {
            if !from_scratch && matches!(to.as_str(), "completed" | "skipped") {
                continue;
            }
            let Some(key) = map.get(step).and_then(Value::as_str) else { continue };
            let transitions = self.client.transitions(key).await?;
            match transitions.iter().find(|t| t.to_category == "new") {
                Some(t) => self.client.transition(key, &t.id).await?,
                None => tracing::info!(subtask = key, "no transition to a to-do status from where it is; it stays"),
            }
        }
        Ok(())
    }

    /// The job ended: each step's last output as a text file on the ticket
    /// (its last [`MAX_ATTACHMENT`] bytes), each once. Evidence holds what
    /// the agent recorded, with the secrets it knew of redacted.
    pub(crate) async fn board_attach(&mut self, ticket: &str, job: &str) -> Result<(), Failure> {
        let Some(j) = self.on_board(job).await? else { return Ok(()) };
        let mut done = self.client.property(ticket, ATTACHED).await?.unwrap_or_else(|| json!([]));
        let evidence = self.store.evidence(job).await?;
        for step in &j.steps {
            let Some(ev) =
                evidence.iter().rev().find(|e| e.kind == "output" && e.step_id.as_deref() == Some(&step.spec.id))
            else {
                continue;
            };
            let id = json!(ev.id);
            if done.as_array().is_some_and(|a| a.contains(&id)) {
                continue;
            }
            let text = &ev.content;
            let mut start = text.len().saturating_sub(MAX_ATTACHMENT);
            while !text.is_char_boundary(start) {
                start += 1;
            }
            let content =
                if start > 0 { format!("[… earlier output cut]\n{}", &text[start..]) } else { text.clone() };
            let name = format!("{job}-{}-attempt-{}.log", step.spec.id, ev.attempt);
            self.client.add_attachment(ticket, &name, content).await?;
            if let Some(a) = done.as_array_mut() {
                a.push(id);
            }
            self.client.set_property(ticket, ATTACHED, &done).await?;
        }
        Ok(())
    }

    /// The table of a board job's steps for its final comment (none off the board).
    pub(crate) async fn board_table(&self, job: &str) -> Result<Option<Block>, Failure> {
        let Some(j) = self.on_board(job).await? else { return Ok(None) };
        let rows = j
            .steps
            .iter()
            .map(|s| {
                let took = match (s.started_at, s.ended_at) {
                    (Some(a), Some(b)) => format!("{:.1} s", (b - a).num_milliseconds().max(0) as f64 / 1000.0),
                    _ => String::new(),
                };
                vec![
                    s.spec.id.clone(),
                    s.status.to_string(),
                    took,
                    s.runs.to_string(),
                    s.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let header = ["Step", "Status", "Duration", "Runs", "Outcome"].map(str::to_string).to_vec();
        Ok(Some(Block::Table { header, rows }))
    }
}
