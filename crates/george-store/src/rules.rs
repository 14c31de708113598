//! The rules every store enforces, whatever its database: the digest that
//! tells a job's definition changed, which desired states and hand-set
//! statuses a job accepts, when an attempt may start, which writes an
//! attempt may still make, what an agent may report, and how the stored
//! manifests make the catalog. The SQLite and PostgreSQL stores read and
//! write the rows; these functions decide.

use crate::{Catalog, Result, Snapshot, StoreError, StoredManifest};
use george_core::manifest::{Kind, Trigger};
use george_core::plan::NewJob;
use george_core::record::Job;
use george_core::{AgentState, DesiredState, JobStatus};
use serde_json::json;
use sha2::{Digest, Sha256};

/// A digest of what defines a job's work; it changes when a source changes
/// the job's template, agent, parameters, environment or steps.
pub(crate) fn spec_digest(job: &NewJob) -> String {
    let mut canonical = json!([job.template, job.agent, job.params, job.env, job.steps, job.max_attempts]);
    // Only a non-default step graph is part of the digest, so the digest of
    // a job stored before the graph settings existed does not change.
    if (job.parallelism, job.fail_fast) != (george_core::plan::DEFAULT_PARALLELISM, true) {
        canonical = json!([canonical, job.parallelism, job.fail_fast]);
    }
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Refuses a snapshot with a job that claims another source.
pub(crate) fn check_snapshot(s: &Snapshot) -> Result<()> {
    match s.jobs.iter().find(|j| j.origin.source != s.source) {
        Some(job) => Err(StoreError::Invalid(format!(
            "job `{}` claims source `{}` in a snapshot of `{}`",
            job.id, job.origin.source, s.source
        ))),
        None => Ok(()),
    }
}

/// The reason to record when setting `desired` changes `job`, or `None`
/// when the job already is where the caller wants it.
pub(crate) fn desired_change(
    job: &Job,
    desired: DesiredState,
    actor: &str,
    reason: Option<&str>,
) -> Result<Option<String>> {
    let idempotent_abort = desired == DesiredState::Aborted && job.status == JobStatus::Aborted;
    if job.desired == desired && (!job.status.is_final() || idempotent_abort) {
        return Ok(None);
    }
    let verb = match desired {
        DesiredState::Active => "resumed",
        DesiredState::Paused => "paused",
        DesiredState::Aborted => "aborted",
    };
    if job.status.is_final() {
        return Err(StoreError::Conflict(format!("job `{}` is already {}; it cannot be {verb}", job.id, job.status)));
    }
    Ok(Some(match reason {
        Some(r) => format!("{verb} by {actor}: {r}"),
        None => format!("{verb} by {actor}"),
    }))
}

/// The reason recorded with a status set by hand.
pub(crate) fn override_reason(actor: &str, reason: &str) -> String {
    format!("set by {actor}: {reason}")
}

/// Refuses a job status set by hand that the job cannot take: a final job
/// only goes back to pending (a retry), and only a blocked or final one does.
pub(crate) fn check_job_override(job: &Job, to: JobStatus) -> Result<()> {
    let id = &job.id;
    match to {
        JobStatus::Completed | JobStatus::Failed if job.status.is_final() => Err(StoreError::Conflict(format!(
            "job `{id}` is already {}; only `pending` (a retry) can follow",
            job.status
        ))),
        JobStatus::Completed | JobStatus::Failed => Ok(()),
        JobStatus::Pending if job.status.is_final() || job.status == JobStatus::Blocked => Ok(()),
        JobStatus::Pending => Err(StoreError::Conflict(format!(
            "job `{id}` is {}; only a blocked or ended job can be set back to pending",
            job.status
        ))),
        other => {
            Err(StoreError::Invalid(format!("a job can be set to pending, completed or failed by hand, not {other}")))
        }
    }
}

/// Refuses a retry of a job that has not failed, been aborted or blocked.
pub(crate) fn check_retry(job: &Job) -> Result<()> {
    match job.status {
        JobStatus::Failed | JobStatus::Aborted | JobStatus::Blocked => Ok(()),
        other => Err(StoreError::Conflict(format!(
            "job `{}` is {other}; only a failed, aborted or blocked job can be retried",
            job.id
        ))),
    }
}

/// Refuses a step status set by hand on a job that has ended.
pub(crate) fn check_step_override(job: &Job) -> Result<()> {
    if job.status.is_final() {
        return Err(StoreError::Conflict(format!(
            "job `{}` is {}; set it back to pending before changing its steps",
            job.id, job.status
        )));
    }
    Ok(())
}

/// Refuses to start attempt `after + 1` unless `after` is still the job's
/// current attempt and the job is pending and meant to run.
pub(crate) fn check_attempt_start(job: &Job, after: u32) -> Result<()> {
    let id = &job.id;
    if job.attempt != after {
        return Err(StoreError::Conflict(format!(
            "job `{id}` is at attempt {}, not {after}; another attempt started",
            job.attempt
        )));
    }
    if job.status != JobStatus::Pending || job.desired != DesiredState::Active {
        return Err(StoreError::Conflict(format!(
            "job `{id}` is {} (desired {}); an attempt starts only from pending/active",
            job.status, job.desired
        )));
    }
    Ok(())
}

/// Refuses a write from `attempt` unless it is the job's `current` attempt
/// and still live; `state` is the attempt's state, `None` if there is no
/// such attempt.
pub(crate) fn check_fence(id: &str, attempt: u32, current: u32, state: Option<&str>) -> Result<()> {
    let superseded = |why: String| StoreError::Superseded { job: id.into(), attempt, why };
    if attempt != current {
        return Err(superseded(format!("the job's current attempt is {current}")));
    }
    match state {
        None => Err(superseded("no such attempt".into())),
        Some(s) if s == AgentState::Terminated.as_str() => Err(superseded("the attempt has ended".into())),
        Some(_) => Ok(()),
    }
}

/// Refuses a step report on a job that is not in progress.
pub(crate) fn check_step_report(id: &str, status: JobStatus) -> Result<()> {
    if status != JobStatus::InProgress {
        return Err(StoreError::Conflict(format!("job `{id}` is {status}; step reports are closed")));
    }
    Ok(())
}

/// Refuses an agent's verdict that is not completed, blocked or failed, or
/// that is blocked or failed without a reason.
pub(crate) fn check_verdict(status: JobStatus, reason: Option<&str>) -> Result<()> {
    if !matches!(status, JobStatus::Completed | JobStatus::Blocked | JobStatus::Failed) {
        return Err(StoreError::Invalid(format!("an agent reports completed, blocked or failed, not {status}")));
    }
    if status != JobStatus::Completed && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(StoreError::Invalid(format!("a {status} report needs a reason")));
    }
    Ok(())
}

/// Whether an agent's verdict moves a job that is `current`: `false` for a
/// retried report; refused unless the job is in progress.
pub(crate) fn verdict_applies(id: &str, current: JobStatus, status: JobStatus) -> Result<bool> {
    if current == status {
        return Ok(false);
    }
    if current != JobStatus::InProgress {
        return Err(StoreError::Conflict(format!("job `{id}` is {current}; it cannot become {status}")));
    }
    Ok(true)
}

/// The actor recorded for what an attempt's agent does.
pub(crate) fn agent_actor(id: &str, attempt: u32) -> String {
    format!("agent:{}", george_core::api::agent_id(id, attempt))
}

/// The templates, AgentSpecs and triggers among the stored manifests.
pub(crate) fn catalog(manifests: Vec<StoredManifest>) -> Result<Catalog> {
    let mut cat = Catalog::default();
    for m in manifests {
        match m.kind {
            Kind::AgentSpec => {
                cat.agents.insert(m.name, serde_json::from_value(m.body)?);
            }
            Kind::TaskTemplate => {
                cat.templates.insert(m.name, serde_json::from_value(m.body)?);
            }
            Kind::Trigger => {
                let t: Trigger = serde_json::from_value(m.body)?;
                cat.triggers.insert(m.name, t.spec);
            }
            _ => {}
        }
    }
    cat.add_agent_triggers();
    Ok(cat)
}
