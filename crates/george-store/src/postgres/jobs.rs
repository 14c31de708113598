//! Jobs, steps, attempts, comments and evidence. A write that checks a job
//! before changing it reads the job row `FOR UPDATE` (`lock_job`, `fence`),
//! so another engine's write to the same job waits until it commits.

use super::rows::{self, AGENT_COLUMNS, JOB_COLUMNS};
use super::Writer;
use crate::rules::{self, agent_actor, spec_digest};
use crate::{AttemptEnd, Created, JobFilter, JobState, NewAttempt, Override, Result, StatusChange, StoreError};
use chrono::{DateTime, Utc};
use george_core::api::{AgentView, CommentView, EvidenceView, JobView, StepReport, StepView};
use george_core::plan::NewJob;
use george_core::template::StepSpec;
use george_core::{AgentState, DesiredState, EventKind, JobStatus, StepStatus};
use postgres::types::Json;
use postgres::Transaction;
use serde_json::{json, Value};

pub fn create(w: &mut Writer<'_>, job: &NewJob, actor: &str) -> Result<Created> {
    let inserted = w.tx.execute(
        "INSERT INTO jobs (id, template, agent, params, priority, chapter, desired, status, env, max_attempts, \
         origin_source, origin_ref, origin_rev, spec_digest, next_attempt_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10, $11, $12, $13, $15, $14, $14) \
         ON CONFLICT (id) DO NOTHING",
        &[
            &job.id,
            &job.template,
            &job.agent,
            &Json(&job.params),
            &job.priority.as_str(),
            &job.chapter,
            &job.desired.as_str(),
            &Json(&job.env),
            &job.max_attempts.map(i64::from),
            &job.origin.source,
            &job.origin.reference,
            &job.origin.revision,
            &spec_digest(job),
            &w.now,
            &job.not_before,
        ],
    )?;
    if inserted == 0 {
        return Ok(Created::Existed);
    }
    insert_steps(&mut w.tx, &job.id, &job.steps, w.now)?;
    w.event(
        Some(&job.id),
        None,
        EventKind::JobCreated,
        actor,
        json!({"template": job.template, "agent": job.agent, "priority": job.priority, "desired": job.desired,
               "source": job.origin.source, "reference": job.origin.reference, "revision": job.origin.revision}),
    )?;
    Ok(Created::New)
}

pub fn update_pending(w: &mut Writer<'_>, job: &NewJob, actor: &str) -> Result<bool> {
    let n = w.tx.execute(
        "UPDATE jobs SET params = $2, env = $3, priority = $4, next_attempt_at = $5, spec_digest = $6, updated_at = $7 \
         WHERE id = $1 AND status = 'pending' AND attempt = 0",
        &[
            &job.id,
            &Json(&job.params),
            &Json(&job.env),
            &job.priority.as_str(),
            &job.not_before,
            &spec_digest(job),
            &w.now,
        ],
    )?;
    if n == 0 {
        return Ok(false);
    }
    w.tx.execute("DELETE FROM steps WHERE job_id = $1", &[&job.id])?;
    insert_steps(&mut w.tx, &job.id, &job.steps, w.now)?;
    w.event(Some(&job.id), None, EventKind::JobUpdated, actor, json!({"not_before": job.not_before}))?;
    Ok(true)
}

pub fn insert_steps(tx: &mut Transaction<'_>, job_id: &str, steps: &[StepSpec], now: DateTime<Utc>) -> Result<()> {
    let insert = tx.prepare(
        "INSERT INTO steps (job_id, idx, id, spec, status, updated_at) VALUES ($1, $2, $3, $4, 'pending', $5)",
    )?;
    for (idx, s) in (0_i64..).zip(steps) {
        tx.execute(&insert, &[&job_id, &idx, &s.id, &Json(s), &now])?;
    }
    Ok(())
}

pub fn get(c: &mut Transaction<'_>, id: &str, with_steps: bool) -> Result<Option<JobView>> {
    let Some(row) = c.query_opt(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1").as_str(), &[&id])? else {
        return Ok(None);
    };
    let mut job = rows::job(&row)?;
    if with_steps {
        job.steps = steps(c, id)?;
    }
    Ok(Some(job))
}

pub fn env(c: &mut Transaction<'_>, id: &str) -> Result<std::collections::BTreeMap<String, String>> {
    let row = c.query_opt("SELECT env FROM jobs WHERE id = $1", &[&id])?;
    let row = row.ok_or_else(|| StoreError::NotFound { what: "job", id: id.into() })?;
    rows::get_json(&row, "env")
}

fn steps(c: &mut Transaction<'_>, id: &str) -> Result<Vec<StepView>> {
    let rows =
        c.query("SELECT spec, status, reason, runs, updated_at FROM steps WHERE job_id = $1 ORDER BY idx", &[&id])?;
    rows.iter()
        .map(|row| {
            Ok(StepView {
                spec: rows::get_json(row, "spec")?,
                status: rows::get_parsed(row, "status")?,
                reason: row.try_get("reason")?,
                runs: rows::get_u32(row, "runs")?,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .collect()
}

pub fn list(c: &mut Transaction<'_>, filter: &JobFilter) -> Result<Vec<JobView>> {
    let statuses: Vec<&str> = filter.status.iter().map(|s| s.as_str()).collect();
    let rows = c.query(
        format!(
            "SELECT {JOB_COLUMNS} FROM jobs \
             WHERE (cardinality($1::text[]) = 0 OR status = ANY($1)) \
             AND ($2::text IS NULL OR chapter = $2) AND ($3::text IS NULL OR origin_source = $3) \
             ORDER BY created_at, id LIMIT $4"
        )
        .as_str(),
        &[&statuses, &filter.chapter, &filter.source, &filter.limit.map(i64::from)],
    )?;
    rows.iter().map(rows::job).collect()
}

/// The job, its row locked until the transaction ends.
fn lock_job(tx: &mut Transaction<'_>, id: &str) -> Result<JobView> {
    let row = tx.query_opt(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 FOR UPDATE").as_str(), &[&id])?;
    let row = row.ok_or_else(|| StoreError::NotFound { what: "job", id: id.into() })?;
    rows::job(&row)
}

pub fn set_desired(
    w: &mut Writer<'_>,
    id: &str,
    desired: DesiredState,
    actor: &str,
    reason: Option<&str>,
) -> Result<JobView> {
    let job = lock_job(&mut w.tx, id)?;
    let Some(why) = rules::desired_change(&job, desired, actor, reason)? else {
        return get_tx(&mut w.tx, id);
    };
    w.tx.execute(
        "UPDATE jobs SET desired = $2, reason = $4, updated_at = $3 WHERE id = $1",
        &[&id, &desired.as_str(), &w.now, &why],
    )?;
    w.event(
        Some(id),
        None,
        EventKind::JobDesired,
        actor,
        json!({"from": job.desired, "to": desired, "reason": reason}),
    )?;
    get_tx(&mut w.tx, id)
}

pub fn override_status(w: &mut Writer<'_>, id: &str, target: &Override, actor: &str, reason: &str) -> Result<JobView> {
    let job = lock_job(&mut w.tx, id)?;
    let why = rules::override_reason(actor, reason);
    match target {
        Override::Job(to) => {
            rules::check_job_override(&job, *to)?;
            let retry = *to == JobStatus::Pending;
            w.tx.execute(
                "UPDATE jobs SET status = $2, reason = $3, updated_at = $4, \
                 desired = CASE WHEN $5 THEN 'active' ELSE desired END, \
                 failures = CASE WHEN $5 THEN 0 ELSE failures END, \
                 next_attempt_at = CASE WHEN $5 THEN NULL ELSE next_attempt_at END \
                 WHERE id = $1",
                &[&id, &to.as_str(), &why, &w.now, &retry],
            )?;
            if retry {
                w.tx.execute(
                    "UPDATE steps SET status = 'pending', reason = NULL, updated_at = $2 \
                     WHERE job_id = $1 AND status IN ('failed', 'blocked', 'in_progress')",
                    &[&id, &w.now],
                )?;
            }
            w.event(
                Some(id),
                None,
                EventKind::JobStatus,
                actor,
                json!({"from": job.status, "to": to, "reason": why, "override": true}),
            )?;
        }
        Override::Step { step, status } => {
            rules::check_step_override(&job)?;
            let n = w.tx.execute(
                "UPDATE steps SET status = $3, reason = $4, updated_at = $5 WHERE job_id = $1 AND id = $2",
                &[&id, step, &status.as_str(), &why, &w.now],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound { what: "step", id: format!("{id}/{step}") });
            }
            w.event(
                Some(id),
                None,
                EventKind::StepStatus,
                actor,
                json!({"step": step, "to": status, "reason": why, "override": true}),
            )?;
        }
    }
    get_tx(&mut w.tx, id)
}

fn get_tx(tx: &mut Transaction<'_>, id: &str) -> Result<JobView> {
    get(tx, id, true)?.ok_or_else(|| StoreError::NotFound { what: "job", id: id.into() })
}

pub fn add_comment(w: &mut Writer<'_>, id: &str, author: &str, body: &str) -> Result<CommentView> {
    lock_job(&mut w.tx, id)?;
    let row = w.tx.query_one(
        "INSERT INTO comments (job_id, author, body, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        &[&id, &author, &body, &w.now],
    )?;
    let cid: i64 = row.try_get("id")?;
    w.tx.execute("UPDATE jobs SET updated_at = $2 WHERE id = $1", &[&id, &w.now])?;
    w.event(Some(id), None, EventKind::CommentAdded, author, json!({"comment": cid, "length": body.len()}))?;
    Ok(CommentView { id: cid, job_id: id.into(), author: author.into(), body: body.into(), created_at: w.now })
}

pub fn comments(c: &mut Transaction<'_>, id: &str) -> Result<Vec<CommentView>> {
    let rows =
        c.query("SELECT id, job_id, author, body, created_at FROM comments WHERE job_id = $1 ORDER BY id", &[&id])?;
    rows.iter().map(rows::comment).collect()
}

pub fn evidence(c: &mut Transaction<'_>, id: &str) -> Result<Vec<EvidenceView>> {
    let rows = c.query(
        "SELECT id, job_id, step_id, attempt, kind, content, truncated, created_at FROM evidence \
         WHERE job_id = $1 ORDER BY id",
        &[&id],
    )?;
    rows.iter().map(rows::evidence).collect()
}

pub fn active_ids(c: &mut Transaction<'_>) -> Result<Vec<String>> {
    let rows = c.query(
        "SELECT id FROM jobs WHERE status NOT IN ('completed', 'failed', 'aborted') \
         UNION SELECT job_id FROM attempts WHERE state <> 'terminated' ORDER BY 1",
        &[],
    )?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

pub fn state(c: &mut Transaction<'_>, id: &str) -> Result<Option<JobState>> {
    let Some(job) = get(c, id, false)? else { return Ok(None) };
    let current = if job.attempt > 0 { agent(c, id, job.attempt)? } else { None };
    // Only someone other than an agent can answer a blocked job.
    let latest_comment: Option<i64> = c
        .query_one("SELECT MAX(id) AS latest FROM comments WHERE job_id = $1 AND author NOT LIKE 'agent:%'", &[&id])?
        .try_get("latest")?;
    let blocked_at_comment: Option<i64> =
        match c.query_opt("SELECT blocked_at_comment FROM jobs WHERE id = $1", &[&id])? {
            Some(row) => row.try_get("blocked_at_comment")?,
            None => None,
        };
    Ok(Some(JobState { job, current, latest_comment, blocked_at_comment }))
}

/// The guarded `UPDATE` locks the row and re-checks `status` against its
/// newest version, so no separate `FOR UPDATE` is needed.
pub fn change_status(w: &mut Writer<'_>, id: &str, change: &StatusChange, actor: &str) -> Result<bool> {
    let changed = w.tx.execute(
        "UPDATE jobs SET status = $3, reason = $4, next_attempt_at = $5, failures = failures + $6, updated_at = $7, \
         blocked_at_comment = CASE WHEN $3 = 'blocked' THEN (SELECT MAX(id) FROM comments WHERE job_id = $1) \
                                   ELSE blocked_at_comment END \
         WHERE id = $1 AND status = $2",
        &[
            &id,
            &change.from.as_str(),
            &change.to.as_str(),
            &change.reason,
            &change.next_attempt_at,
            &i64::from(change.count_failure),
            &w.now,
        ],
    )?;
    if changed == 0 {
        return Ok(false);
    }
    w.event(
        Some(id),
        None,
        EventKind::JobStatus,
        actor,
        json!({"from": change.from, "to": change.to, "reason": change.reason,
               "next_attempt_at": change.next_attempt_at, "failure": change.count_failure}),
    )?;
    Ok(true)
}

pub fn start_attempt(w: &mut Writer<'_>, id: &str, a: &NewAttempt) -> Result<u32> {
    let job = lock_job(&mut w.tx, id)?;
    rules::check_attempt_start(&job, a.after)?;
    let live: bool = w
        .tx
        .query_one("SELECT EXISTS(SELECT 1 FROM attempts WHERE job_id = $1 AND state <> 'terminated') AS live", &[&id])?
        .try_get("live")?;
    if live {
        return Err(StoreError::Conflict(format!("job `{id}` still has a live attempt")));
    }
    let number = a.after + 1;
    w.tx.execute(
        "INSERT INTO attempts (job_id, number, agent_spec, runtime, token_hash, state, started_at) \
         VALUES ($1, $2, $3, $4, $5, 'awakening', $6)",
        &[&id, &i64::from(number), &a.agent_spec, &a.runtime, &a.token_hash, &w.now],
    )?;
    w.tx.execute(
        "UPDATE jobs SET attempt = $2, status = 'in_progress', reason = NULL, next_attempt_at = NULL, updated_at = $3 \
         WHERE id = $1",
        &[&id, &i64::from(number), &w.now],
    )?;
    // A step the previous agent was in the middle of is not done.
    w.tx.execute(
        "UPDATE steps SET status = 'pending', updated_at = $2 WHERE job_id = $1 AND status = 'in_progress'",
        &[&id, &w.now],
    )?;
    w.event(
        Some(id),
        Some(number),
        EventKind::AttemptStarted,
        "reconciler",
        json!({"agent_spec": a.agent_spec, "runtime": a.runtime}),
    )?;
    w.event(
        Some(id),
        Some(number),
        EventKind::JobStatus,
        "reconciler",
        json!({"from": "pending", "to": "in_progress"}),
    )?;
    Ok(number)
}

pub fn attempt_spawned(w: &mut Writer<'_>, id: &str, attempt: u32, handle: &Value) -> Result<()> {
    let n = w.tx.execute(
        // The agent starts now (it was held until its handle is stored): its
        // health and active time count from here, not from the attempt's record.
        "UPDATE attempts SET handle = $3, started_at = CASE WHEN handle IS NULL THEN $4 ELSE started_at END \
         WHERE job_id = $1 AND number = $2",
        &[&id, &i64::from(attempt), handle, &w.now],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound { what: "attempt", id: george_core::api::agent_id(id, attempt) });
    }
    w.event(Some(id), Some(attempt), EventKind::AttemptSpawned, "reconciler", json!({"handle": handle}))
}

pub fn set_attempt_state(
    w: &mut Writer<'_>,
    id: &str,
    attempt: u32,
    state: AgentState,
    actor: &str,
    reason: Option<&str>,
) -> Result<()> {
    let n = w.tx.execute(
        "UPDATE attempts SET state = $3, outcome = COALESCE($4, outcome) \
         WHERE job_id = $1 AND number = $2 AND state <> 'terminated' AND state <> $3",
        &[&id, &i64::from(attempt), &state.as_str(), &reason],
    )?;
    if n > 0 {
        w.event(Some(id), Some(attempt), EventKind::AttemptState, actor, json!({"to": state, "reason": reason}))?;
    }
    Ok(())
}

pub fn end_attempt(w: &mut Writer<'_>, id: &str, attempt: u32, end: &AttemptEnd) -> Result<()> {
    let n = w.tx.execute(
        "UPDATE attempts SET state = 'terminated', ended_at = $3, exit_code = $4, outcome = $5 \
         WHERE job_id = $1 AND number = $2 AND state <> 'terminated'",
        &[&id, &i64::from(attempt), &w.now, &end.exit_code, &end.outcome],
    )?;
    if n > 0 {
        w.event(
            Some(id),
            Some(attempt),
            EventKind::AttemptEnded,
            "reconciler",
            json!({"exit_code": end.exit_code, "outcome": end.outcome}),
        )?;
    }
    Ok(())
}

pub fn agents(c: &mut Transaction<'_>, live_only: bool, limit: u32) -> Result<Vec<AgentView>> {
    let filter = if live_only { "WHERE state <> 'terminated'" } else { "" };
    let rows = c.query(
        format!("SELECT {AGENT_COLUMNS} FROM attempts {filter} ORDER BY started_at DESC, job_id, number DESC LIMIT $1")
            .as_str(),
        &[&i64::from(limit)],
    )?;
    rows.iter().map(rows::agent).collect()
}

pub fn agent(c: &mut Transaction<'_>, id: &str, attempt: u32) -> Result<Option<AgentView>> {
    let row = c.query_opt(
        format!("SELECT {AGENT_COLUMNS} FROM attempts WHERE job_id = $1 AND number = $2").as_str(),
        &[&id, &i64::from(attempt)],
    )?;
    row.as_ref().map(rows::agent).transpose()
}

pub fn agent_for_token(c: &mut Transaction<'_>, token_hash: &str) -> Result<Option<(String, u32)>> {
    let row = c.query_opt("SELECT job_id, number FROM attempts WHERE token_hash = $1", &[&token_hash])?;
    row.map(|r| Ok((r.try_get("job_id")?, rows::get_u32(&r, "number")?))).transpose()
}

/// Refuses a write from an attempt that is not the job's current, live one.
/// Returns the job's status. The job and attempt rows stay locked until the
/// transaction ends, so the attempt cannot be superseded or ended meanwhile.
pub fn fence(tx: &mut Transaction<'_>, id: &str, attempt: u32) -> Result<JobStatus> {
    let row = tx.query_opt("SELECT attempt, status FROM jobs WHERE id = $1 FOR UPDATE", &[&id])?;
    let row = row.ok_or_else(|| StoreError::NotFound { what: "job", id: id.into() })?;
    let current = rows::get_u32(&row, "attempt")?;
    let state: Option<String> = if attempt == current {
        tx.query_opt(
            "SELECT state FROM attempts WHERE job_id = $1 AND number = $2 FOR UPDATE",
            &[&id, &i64::from(attempt)],
        )?
        .map(|r| r.try_get("state"))
        .transpose()?
    } else {
        None
    };
    rules::check_fence(id, attempt, current, state.as_deref())?;
    rows::get_parsed(&row, "status")
}

pub fn heartbeat(w: &mut Writer<'_>, id: &str, attempt: u32) -> Result<()> {
    fence(&mut w.tx, id, attempt)?;
    w.tx.execute(
        "UPDATE attempts SET last_heartbeat = $3, state = CASE WHEN state = 'awakening' THEN 'active' ELSE state END \
         WHERE job_id = $1 AND number = $2",
        &[&id, &i64::from(attempt), &w.now],
    )?;
    Ok(())
}

pub fn report_step(w: &mut Writer<'_>, id: &str, attempt: u32, step: &str, report: &StepReport) -> Result<()> {
    let status = fence(&mut w.tx, id, attempt)?;
    rules::check_step_report(id, status)?;
    let runs_inc = i64::from(report.status == StepStatus::InProgress);
    let n = w.tx.execute(
        "UPDATE steps SET status = $3, reason = $4, runs = runs + $5, updated_at = $6 WHERE job_id = $1 AND id = $2",
        &[&id, &step, &report.status.as_str(), &report.reason, &runs_inc, &w.now],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound { what: "step", id: format!("{id}/{step}") });
    }
    w.event(
        Some(id),
        Some(attempt),
        EventKind::StepStatus,
        &agent_actor(id, attempt),
        json!({"step": step, "to": report.status, "reason": report.reason}),
    )
}

pub fn add_evidence(
    w: &mut Writer<'_>,
    id: &str,
    attempt: u32,
    step: Option<&str>,
    kind: &str,
    content: &str,
    truncated: bool,
) -> Result<EvidenceView> {
    fence(&mut w.tx, id, attempt)?;
    if let Some(step) = step {
        let known: bool =
            w.tx.query_one("SELECT EXISTS(SELECT 1 FROM steps WHERE job_id = $1 AND id = $2) AS known", &[&id, &step])?
                .try_get("known")?;
        if !known {
            return Err(StoreError::NotFound { what: "step", id: format!("{id}/{step}") });
        }
    }
    let row = w.tx.query_one(
        "INSERT INTO evidence (job_id, step_id, attempt, kind, content, truncated, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        &[&id, &step, &i64::from(attempt), &kind, &content, &truncated, &w.now],
    )?;
    let eid: i64 = row.try_get("id")?;
    w.event(
        Some(id),
        Some(attempt),
        EventKind::EvidenceAdded,
        &agent_actor(id, attempt),
        json!({"evidence": eid, "step": step, "kind": kind, "truncated": truncated}),
    )?;
    Ok(EvidenceView {
        id: eid,
        job_id: id.into(),
        step_id: step.map(str::to_string),
        attempt,
        kind: kind.into(),
        content: content.into(),
        truncated,
        created_at: w.now,
    })
}

pub fn report_job(w: &mut Writer<'_>, id: &str, attempt: u32, status: JobStatus, reason: Option<&str>) -> Result<()> {
    rules::check_verdict(status, reason)?;
    let current = fence(&mut w.tx, id, attempt)?;
    if !rules::verdict_applies(id, current, status)? {
        return Ok(()); // a retried report
    }
    let actor = agent_actor(id, attempt);
    change_status(
        w,
        id,
        &StatusChange {
            from: JobStatus::InProgress,
            to: status,
            reason: reason.map(str::to_string),
            next_attempt_at: None,
            count_failure: false,
        },
        &actor,
    )?;
    set_attempt_state(w, id, attempt, AgentState::Cooling, &actor, None)
}

pub fn count_by_status(c: &mut Transaction<'_>) -> Result<Vec<(JobStatus, u64)>> {
    let rows = c.query("SELECT status, COUNT(*) AS jobs FROM jobs GROUP BY status ORDER BY status", &[])?;
    rows.iter().map(|r| Ok((rows::get_parsed(r, "status")?, rows::get_u64(r, "jobs")?))).collect()
}
