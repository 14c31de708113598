//! Jobs, steps, attempts, comments and evidence.

use super::rows::{self, ts, AGENT_COLUMNS, JOB_COLUMNS};
use super::Writer;
use crate::rules::{self, agent_actor, spec_digest};
use crate::{AttemptEnd, Created, JobFilter, JobState, NewAttempt, Override, Result, StatusChange, StoreError};
use george_core::api::{AgentView, CommentView, EvidenceView, JobView, StepReport, StepView};
use george_core::plan::NewJob;
use george_core::template::StepSpec;
use george_core::{AgentState, DesiredState, EventKind, JobStatus, StepStatus};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::{json, Value};

pub fn create(w: &mut Writer<'_>, job: &NewJob, actor: &str) -> Result<Created> {
    let exists: bool = w.tx.query_row("SELECT EXISTS(SELECT 1 FROM jobs WHERE id = ?1)", [&job.id], |r| r.get(0))?;
    if exists {
        return Ok(Created::Existed);
    }
    let now = ts(w.now);
    w.tx.execute(
        "INSERT INTO jobs (id, template, agent, params, priority, chapter, desired, status, env, max_attempts, \
         origin_source, origin_ref, origin_rev, spec_digest, next_attempt_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10, ?11, ?12, ?13, ?15, ?14, ?14)",
        params![
            job.id,
            job.template,
            job.agent,
            serde_json::to_string(&job.params)?,
            job.priority.as_str(),
            job.chapter,
            job.desired.as_str(),
            serde_json::to_string(&job.env)?,
            job.max_attempts,
            job.origin.source,
            job.origin.reference,
            job.origin.revision,
            spec_digest(job),
            now,
            job.not_before.map(ts),
        ],
    )?;
    insert_steps(w.tx, &job.id, &job.steps, &now)?;
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
    let now = ts(w.now);
    let n = w.tx.execute(
        "UPDATE jobs SET params = ?2, env = ?3, priority = ?4, next_attempt_at = ?5, spec_digest = ?6, updated_at = ?7 \
         WHERE id = ?1 AND status = 'pending' AND attempt = 0",
        params![
            job.id,
            serde_json::to_string(&job.params)?,
            serde_json::to_string(&job.env)?,
            job.priority.as_str(),
            job.not_before.map(ts),
            spec_digest(job),
            now,
        ],
    )?;
    if n == 0 {
        return Ok(false);
    }
    w.tx.execute("DELETE FROM steps WHERE job_id = ?1", [&job.id])?;
    insert_steps(w.tx, &job.id, &job.steps, &now)?;
    w.event(Some(&job.id), None, EventKind::JobUpdated, actor, json!({"not_before": job.not_before}))?;
    Ok(true)
}

pub fn insert_steps(tx: &Transaction<'_>, job_id: &str, steps: &[StepSpec], now: &str) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO steps (job_id, idx, id, spec, status, updated_at) VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
    )?;
    for (i, s) in steps.iter().enumerate() {
        stmt.execute(params![job_id, i as i64, s.id, serde_json::to_string(s)?, now])?;
    }
    Ok(())
}

pub fn get(c: &Connection, id: &str, with_steps: bool) -> Result<Option<JobView>> {
    let mut stmt = c.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?;
    let Some(mut job) = stmt.query_row([id], rows::job).optional()? else {
        return Ok(None);
    };
    if with_steps {
        job.steps = steps(c, id)?;
    }
    Ok(Some(job))
}

pub fn env(c: &Connection, id: &str) -> Result<std::collections::BTreeMap<String, String>> {
    let text: Option<String> = c.query_row("SELECT env FROM jobs WHERE id = ?1", [id], |r| r.get(0)).optional()?;
    let text = text.ok_or_else(|| StoreError::NotFound { what: "job", id: id.into() })?;
    Ok(serde_json::from_str(&text)?)
}

fn steps(c: &Connection, id: &str) -> Result<Vec<StepView>> {
    let mut stmt =
        c.prepare_cached("SELECT spec, status, reason, runs, updated_at FROM steps WHERE job_id = ?1 ORDER BY idx")?;
    let rows = stmt.query_map([id], |row| {
        Ok(StepView {
            spec: rows::get_json(row, "spec")?,
            status: rows::get_parsed(row, "status")?,
            reason: row.get("reason")?,
            runs: row.get("runs")?,
            updated_at: rows::get_ts(row, "updated_at")?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn list(c: &Connection, filter: &JobFilter) -> Result<Vec<JobView>> {
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1=1");
    let mut args: Vec<String> = Vec::new();
    if !filter.status.is_empty() {
        let marks: Vec<String> = filter
            .status
            .iter()
            .map(|s| {
                args.push(s.as_str().to_string());
                format!("?{}", args.len())
            })
            .collect();
        sql.push_str(&format!(" AND status IN ({})", marks.join(",")));
    }
    if let Some(ch) = &filter.chapter {
        args.push(ch.clone());
        sql.push_str(&format!(" AND chapter = ?{}", args.len()));
    }
    if let Some(src) = &filter.source {
        args.push(src.clone());
        sql.push_str(&format!(" AND origin_source = ?{}", args.len()));
    }
    sql.push_str(" ORDER BY created_at, id");
    if let Some(limit) = filter.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), rows::job)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn require_job(tx: &Transaction<'_>, id: &str) -> Result<JobView> {
    let mut stmt = tx.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?;
    stmt.query_row([id], rows::job).optional()?.ok_or_else(|| StoreError::NotFound { what: "job", id: id.into() })
}

pub fn set_desired(
    w: &mut Writer<'_>,
    id: &str,
    desired: DesiredState,
    actor: &str,
    reason: Option<&str>,
) -> Result<JobView> {
    let job = require_job(w.tx, id)?;
    let Some(why) = rules::desired_change(&job, desired, actor, reason)? else {
        return get_tx(w.tx, id);
    };
    w.tx.execute(
        "UPDATE jobs SET desired = ?2, reason = ?4, updated_at = ?3 WHERE id = ?1",
        params![id, desired.as_str(), ts(w.now), why],
    )?;
    w.event(
        Some(id),
        None,
        EventKind::JobDesired,
        actor,
        json!({"from": job.desired, "to": desired, "reason": reason}),
    )?;
    get_tx(w.tx, id)
}

pub fn override_status(w: &mut Writer<'_>, id: &str, target: &Override, actor: &str, reason: &str) -> Result<JobView> {
    let job = require_job(w.tx, id)?;
    let why = rules::override_reason(actor, reason);
    match target {
        Override::Job(to) => {
            rules::check_job_override(&job, *to)?;
            let retry = *to == JobStatus::Pending;
            w.tx.execute(
                "UPDATE jobs SET status = ?2, reason = ?3, updated_at = ?4, \
                 desired = CASE WHEN ?5 THEN 'active' ELSE desired END, \
                 failures = CASE WHEN ?5 THEN 0 ELSE failures END, \
                 next_attempt_at = CASE WHEN ?5 THEN NULL ELSE next_attempt_at END \
                 WHERE id = ?1",
                params![id, to.as_str(), why, ts(w.now), retry],
            )?;
            if retry {
                w.tx.execute(
                    "UPDATE steps SET status = 'pending', reason = NULL, updated_at = ?2 \
                     WHERE job_id = ?1 AND status IN ('failed', 'blocked', 'in_progress')",
                    params![id, ts(w.now)],
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
                "UPDATE steps SET status = ?3, reason = ?4, updated_at = ?5 WHERE job_id = ?1 AND id = ?2",
                params![id, step, status.as_str(), why, ts(w.now)],
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
    get_tx(w.tx, id)
}

fn get_tx(tx: &Transaction<'_>, id: &str) -> Result<JobView> {
    get(tx, id, true)?.ok_or_else(|| StoreError::NotFound { what: "job", id: id.into() })
}

pub fn add_comment(w: &mut Writer<'_>, id: &str, author: &str, body: &str) -> Result<CommentView> {
    require_job(w.tx, id)?;
    w.tx.execute(
        "INSERT INTO comments (job_id, author, body, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![id, author, body, ts(w.now)],
    )?;
    let cid = w.tx.last_insert_rowid();
    w.tx.execute("UPDATE jobs SET updated_at = ?2 WHERE id = ?1", params![id, ts(w.now)])?;
    w.event(Some(id), None, EventKind::CommentAdded, author, json!({"comment": cid, "length": body.len()}))?;
    Ok(CommentView { id: cid, job_id: id.into(), author: author.into(), body: body.into(), created_at: w.now })
}

pub fn comments(c: &Connection, id: &str) -> Result<Vec<CommentView>> {
    let mut stmt =
        c.prepare_cached("SELECT id, job_id, author, body, created_at FROM comments WHERE job_id = ?1 ORDER BY id")?;
    let rows = stmt.query_map([id], rows::comment)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn evidence(c: &Connection, id: &str) -> Result<Vec<EvidenceView>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, job_id, step_id, attempt, kind, content, truncated, created_at FROM evidence \
         WHERE job_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([id], rows::evidence)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn active_ids(c: &Connection) -> Result<Vec<String>> {
    let mut stmt = c.prepare_cached(
        "SELECT id FROM jobs WHERE status NOT IN ('completed', 'failed', 'aborted') \
         UNION SELECT job_id FROM attempts WHERE state <> 'terminated'",
    )?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn state(c: &Connection, id: &str) -> Result<Option<JobState>> {
    let Some(job) = get(c, id, false)? else { return Ok(None) };
    let current = if job.attempt > 0 { agent(c, id, job.attempt)? } else { None };
    // Only someone other than an agent can answer a blocked job.
    let latest_comment: Option<i64> =
        c.query_row("SELECT MAX(id) FROM comments WHERE job_id = ?1 AND author NOT LIKE 'agent:%'", [id], |r| {
            r.get(0)
        })?;
    let blocked_at_comment: Option<i64> =
        c.query_row("SELECT blocked_at_comment FROM jobs WHERE id = ?1", [id], |r| r.get(0))?;
    Ok(Some(JobState { job, current, latest_comment, blocked_at_comment }))
}

pub fn change_status(w: &mut Writer<'_>, id: &str, change: &StatusChange, actor: &str) -> Result<bool> {
    let changed = w.tx.execute(
        "UPDATE jobs SET status = ?3, reason = ?4, next_attempt_at = ?5, failures = failures + ?6, updated_at = ?7, \
         blocked_at_comment = CASE WHEN ?3 = 'blocked' THEN (SELECT MAX(id) FROM comments WHERE job_id = ?1) \
                                   ELSE blocked_at_comment END \
         WHERE id = ?1 AND status = ?2",
        params![
            id,
            change.from.as_str(),
            change.to.as_str(),
            change.reason,
            change.next_attempt_at.map(ts),
            change.count_failure as i64,
            ts(w.now),
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
    let job = require_job(w.tx, id)?;
    rules::check_attempt_start(&job, a.after)?;
    let live: bool = w.tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM attempts WHERE job_id = ?1 AND state <> 'terminated')",
        [id],
        |r| r.get(0),
    )?;
    if live {
        return Err(StoreError::Conflict(format!("job `{id}` still has a live attempt")));
    }
    let number = a.after + 1;
    let now = ts(w.now);
    w.tx.execute(
        "INSERT INTO attempts (job_id, number, agent_spec, runtime, token_hash, state, started_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'awakening', ?6)",
        params![id, number, a.agent_spec, a.runtime, a.token_hash, now],
    )?;
    w.tx.execute(
        "UPDATE jobs SET attempt = ?2, status = 'in_progress', reason = NULL, next_attempt_at = NULL, updated_at = ?3 \
         WHERE id = ?1",
        params![id, number, now],
    )?;
    // A step the previous agent was in the middle of is not done.
    w.tx.execute(
        "UPDATE steps SET status = 'pending', updated_at = ?2 WHERE job_id = ?1 AND status = 'in_progress'",
        params![id, now],
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
        "UPDATE attempts SET handle = ?3, started_at = CASE WHEN handle IS NULL THEN ?4 ELSE started_at END \
         WHERE job_id = ?1 AND number = ?2",
        params![id, attempt, handle.to_string(), ts(w.now)],
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
        "UPDATE attempts SET state = ?3, outcome = COALESCE(?4, outcome) \
         WHERE job_id = ?1 AND number = ?2 AND state <> 'terminated' AND state <> ?3",
        params![id, attempt, state.as_str(), reason],
    )?;
    if n > 0 {
        w.event(Some(id), Some(attempt), EventKind::AttemptState, actor, json!({"to": state, "reason": reason}))?;
    }
    Ok(())
}

pub fn end_attempt(w: &mut Writer<'_>, id: &str, attempt: u32, end: &AttemptEnd) -> Result<()> {
    let n = w.tx.execute(
        "UPDATE attempts SET state = 'terminated', ended_at = ?3, exit_code = ?4, outcome = ?5 \
         WHERE job_id = ?1 AND number = ?2 AND state <> 'terminated'",
        params![id, attempt, ts(w.now), end.exit_code, end.outcome],
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

pub fn agents(c: &Connection, live_only: bool, limit: u32) -> Result<Vec<AgentView>> {
    let filter = if live_only { "WHERE state <> 'terminated'" } else { "" };
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {AGENT_COLUMNS} FROM attempts {filter} ORDER BY started_at DESC, job_id, number DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit], rows::agent)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn agent(c: &Connection, id: &str, attempt: u32) -> Result<Option<AgentView>> {
    let mut stmt =
        c.prepare_cached(&format!("SELECT {AGENT_COLUMNS} FROM attempts WHERE job_id = ?1 AND number = ?2"))?;
    Ok(stmt.query_row(params![id, attempt], rows::agent).optional()?)
}

pub fn agent_for_token(c: &Connection, token_hash: &str) -> Result<Option<(String, u32)>> {
    let mut stmt = c.prepare_cached("SELECT job_id, number FROM attempts WHERE token_hash = ?1")?;
    Ok(stmt.query_row([token_hash], |r| Ok((r.get(0)?, r.get(1)?))).optional()?)
}

/// Refuses a write from an attempt that is not the job's current, live one.
/// Returns the job's status.
pub fn fence(tx: &Transaction<'_>, id: &str, attempt: u32) -> Result<JobStatus> {
    let row: Option<(u32, String)> = tx
        .query_row("SELECT attempt, status FROM jobs WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((current, status)) = row else {
        return Err(StoreError::NotFound { what: "job", id: id.into() });
    };
    let state: Option<String> = if attempt == current {
        tx.query_row("SELECT state FROM attempts WHERE job_id = ?1 AND number = ?2", params![id, attempt], |r| r.get(0))
            .optional()?
    } else {
        None
    };
    rules::check_fence(id, attempt, current, state.as_deref())?;
    status.parse().map_err(|e| StoreError::Backend(Box::new(e)))
}

pub fn heartbeat(w: &mut Writer<'_>, id: &str, attempt: u32) -> Result<()> {
    fence(w.tx, id, attempt)?;
    w.tx.execute(
        "UPDATE attempts SET last_heartbeat = ?3, state = CASE WHEN state = 'awakening' THEN 'active' ELSE state END \
         WHERE job_id = ?1 AND number = ?2",
        params![id, attempt, ts(w.now)],
    )?;
    Ok(())
}

pub fn report_step(w: &mut Writer<'_>, id: &str, attempt: u32, step: &str, report: &StepReport) -> Result<()> {
    let status = fence(w.tx, id, attempt)?;
    rules::check_step_report(id, status)?;
    let runs_inc = (report.status == StepStatus::InProgress) as i64;
    let n = w.tx.execute(
        "UPDATE steps SET status = ?3, reason = ?4, runs = runs + ?5, updated_at = ?6 WHERE job_id = ?1 AND id = ?2",
        params![id, step, report.status.as_str(), report.reason, runs_inc, ts(w.now)],
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
    fence(w.tx, id, attempt)?;
    if let Some(step) = step {
        let known: bool = w.tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM steps WHERE job_id = ?1 AND id = ?2)",
            params![id, step],
            |r| r.get(0),
        )?;
        if !known {
            return Err(StoreError::NotFound { what: "step", id: format!("{id}/{step}") });
        }
    }
    w.tx.execute(
        "INSERT INTO evidence (job_id, step_id, attempt, kind, content, truncated, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![id, step, attempt, kind, content, truncated, ts(w.now)],
    )?;
    let eid = w.tx.last_insert_rowid();
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
    let current = fence(w.tx, id, attempt)?;
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

pub fn count_by_status(c: &Connection) -> Result<Vec<(JobStatus, u64)>> {
    let mut stmt = c.prepare_cached("SELECT status, COUNT(*) FROM jobs GROUP BY status")?;
    let rows = stmt.query_map([], |r| Ok((rows::get_parsed(r, "status")?, r.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
