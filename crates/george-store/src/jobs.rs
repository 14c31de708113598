//! Jobs, steps, attempts, comments and evidence: each transition written
//! once (fence → rule check → update → event) over [`Db`]. A write that
//! checks a job before changing it reads the job row with [`Db::LOCK`]
//! (`lock_job`, `fence`), so where engines share a database another
//! engine's write to the same job waits until this one commits.

use crate::dialect::{args, Arg, Db, Writer};
use crate::rules::{self, agent_actor, spec_digest};
use crate::views::{self, AGENT_COLUMNS, JOB_COLUMNS};
use crate::{AttemptEnd, Created, JobFilter, JobState, NewAttempt, Override, Report, Result, StatusChange, StoreError};
use george_core::api::StepReport;
use george_core::labels::Requirement;
use george_core::plan::NewJob;
use george_core::record::{Attempt, Comment, Evidence, Job, Step};
use george_core::template::StepSpec;
use george_core::{AgentState, DesiredState, EventKind, JobStatus, StepStatus};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A debounced wake says when it starts (the window may still fold more wakes into it).
fn debounced(job: &NewJob) -> Option<String> {
    job.not_before.map(|t| format!("debounced: starts at {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
}

pub fn create(w: &mut Writer<impl Db>, job: &NewJob, actor: &str) -> Result<Created> {
    let debounced = debounced(job);
    let inserted = w.db.exec(
        "INSERT INTO jobs (id, template, agent, params, priority, chapter, desired, status, env, max_attempts, \
         origin_source, origin_ref, origin_rev, spec_digest, next_attempt_at, created_at, updated_at, parallelism, \
         fail_fast, reason, labels) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10, $11, $12, $13, $15, $14, $14, $16, $17, $18, $19) \
         ON CONFLICT (id) DO NOTHING",
        &[
            Arg::from(&job.id),
            Arg::from(&job.template),
            Arg::from(&job.agent),
            Arg::json(&job.params)?,
            Arg::from(job.priority.as_str()),
            Arg::from(&job.chapter),
            Arg::from(job.desired.as_str()),
            Arg::json(&job.env)?,
            Arg::from(job.max_attempts),
            Arg::from(job.origin.source.as_str()),
            Arg::from(&job.origin.reference),
            Arg::from(&job.origin.revision),
            Arg::Text(&spec_digest(job)),
            Arg::from(w.now),
            Arg::from(job.not_before),
            Arg::from(job.parallelism),
            Arg::Flag(job.fail_fast),
            Arg::from(&debounced),
            Arg::json(&job.labels)?,
        ],
    )?;
    if inserted == 0 {
        return Ok(Created::Existed);
    }
    insert_steps(w, &job.id, &job.steps)?;
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

pub fn update_pending(w: &mut Writer<impl Db>, job: &NewJob, actor: &str) -> Result<bool> {
    let n = w.db.exec(
        "UPDATE jobs SET params = $2, env = $3, priority = $4, next_attempt_at = $5, spec_digest = $6, updated_at = $7, \
         parallelism = $8, fail_fast = $9, reason = COALESCE($10, reason), labels = $11 \
         WHERE id = $1 AND status = 'pending' AND attempt = 0",
        &[
            Arg::from(&job.id),
            Arg::json(&job.params)?,
            Arg::json(&job.env)?,
            Arg::from(job.priority.as_str()),
            Arg::from(job.not_before),
            Arg::Text(&spec_digest(job)),
            Arg::from(w.now),
            Arg::from(job.parallelism),
            Arg::Flag(job.fail_fast),
            Arg::from(&debounced(job)),
            Arg::json(&job.labels)?,
        ],
    )?;
    if n == 0 {
        return Ok(false);
    }
    replace_steps(w, &job.id, &job.steps)?;
    w.event(Some(&job.id), None, EventKind::JobUpdated, actor, json!({"not_before": job.not_before}))?;
    Ok(true)
}

/// Replaces the definition of a job that never started.
pub fn replace_definition(w: &mut Writer<impl Db>, job: &NewJob, digest: &str) -> Result<()> {
    w.db.exec(
        "UPDATE jobs SET template = $2, agent = $3, params = $4, env = $5, max_attempts = $6, \
         chapter = $7, spec_digest = $8, parallelism = $9, fail_fast = $10, labels = $11 WHERE id = $1",
        &[
            Arg::from(&job.id),
            Arg::from(&job.template),
            Arg::from(&job.agent),
            Arg::json(&job.params)?,
            Arg::json(&job.env)?,
            Arg::from(job.max_attempts),
            Arg::from(&job.chapter),
            Arg::Text(digest),
            Arg::from(job.parallelism),
            Arg::Flag(job.fail_fast),
            Arg::json(&job.labels)?,
        ],
    )?;
    replace_steps(w, &job.id, &job.steps)
}

fn replace_steps(w: &mut Writer<impl Db>, job_id: &str, steps: &[StepSpec]) -> Result<()> {
    w.db.exec("DELETE FROM steps WHERE job_id = $1", args![job_id])?;
    insert_steps(w, job_id, steps)
}

fn insert_steps(w: &mut Writer<impl Db>, job_id: &str, steps: &[StepSpec]) -> Result<()> {
    for (idx, s) in (0_i64..).zip(steps) {
        w.db.exec(
            "INSERT INTO steps (job_id, idx, id, spec, status, updated_at) VALUES ($1, $2, $3, $4, 'pending', $5)",
            &[Arg::Text(job_id), Arg::Int(idx), Arg::from(&s.id), Arg::json(s)?, Arg::from(w.now)],
        )?;
    }
    Ok(())
}

pub fn get(c: &mut impl Db, id: &str, with_steps: bool) -> Result<Option<Job>> {
    let Some(mut job) = c.opt(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"), args![id], views::job)? else {
        return Ok(None);
    };
    if with_steps {
        job.steps = steps(c, id)?;
    }
    Ok(Some(job))
}

pub fn env(c: &mut impl Db, id: &str) -> Result<BTreeMap<String, String>> {
    let env = c.opt("SELECT env FROM jobs WHERE id = $1", args![id], |r| r.json("env"))?;
    env.ok_or_else(|| StoreError::NotFound { what: "job", id: id.into() })
}

fn steps(c: &mut impl Db, id: &str) -> Result<Vec<Step>> {
    c.all(
        "SELECT spec, status, reason, runs, started_at, ended_at, updated_at FROM steps WHERE job_id = $1 ORDER BY idx",
        args![id],
        views::step,
    )
}

pub fn list<D: Db>(c: &mut D, filter: &JobFilter) -> Result<Vec<Job>> {
    let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1");
    let mut args: Vec<Arg<'_>> = Vec::new();
    let next = |args: &mut Vec<Arg<'_>>| format!("${}", args.len());
    if !filter.status.is_empty() {
        let mut marks = Vec::new();
        for s in &filter.status {
            args.push(Arg::Text(s.as_str()));
            marks.push(next(&mut args));
        }
        sql.push_str(&format!(" AND status IN ({})", marks.join(", ")));
    }
    if let Some(chapter) = &filter.chapter {
        args.push(Arg::Text(chapter));
        sql.push_str(&format!(" AND chapter = {}", next(&mut args)));
    }
    if let Some(source) = &filter.source {
        args.push(Arg::Text(source));
        sql.push_str(&format!(" AND origin_source = {}", next(&mut args)));
    }
    // Label requirements: `key=value` is false without the label, `key!=value` true.
    let mut keys = Vec::with_capacity(filter.selector.0.len());
    for req in &filter.selector.0 {
        args.push(Arg::Text(req.key()));
        let value_of = D::label(&next(&mut args));
        keys.push(value_of);
    }
    for (req, value_of) in filter.selector.0.iter().zip(keys) {
        match req {
            Requirement::Equals(_, v) => {
                args.push(Arg::Text(v));
                sql.push_str(&format!(" AND {value_of} = {}", next(&mut args)));
            }
            Requirement::NotEquals(_, v) => {
                args.push(Arg::Text(v));
                sql.push_str(&format!(" AND ({value_of} IS NULL OR {value_of} <> {})", next(&mut args)));
            }
            Requirement::Exists(_) => sql.push_str(&format!(" AND {value_of} IS NOT NULL")),
            Requirement::Missing(_) => sql.push_str(&format!(" AND {value_of} IS NULL")),
        }
    }
    if let Some((created, id)) = &filter.after {
        args.push(Arg::Time(*created));
        let t = next(&mut args);
        args.push(Arg::Text(id));
        let i = next(&mut args);
        let past = if filter.newest_first { "<" } else { ">" };
        sql.push_str(&format!(" AND (created_at {past} {t} OR (created_at = {t} AND id {past} {i}))"));
    }
    sql.push_str(if filter.newest_first { " ORDER BY created_at DESC, id DESC" } else { " ORDER BY created_at, id" });
    if let Some(limit) = filter.limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    c.all(&sql, &args, views::job)
}

/// The job, its row locked until the transaction ends.
fn lock_job<D: Db>(c: &mut D, id: &str) -> Result<Job> {
    let job = c.opt(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1{}", D::LOCK), args![id], views::job)?;
    job.ok_or_else(|| StoreError::NotFound { what: "job", id: id.into() })
}

pub fn set_desired(
    w: &mut Writer<impl Db>,
    id: &str,
    desired: DesiredState,
    actor: &str,
    reason: Option<&str>,
) -> Result<Job> {
    let job = lock_job(&mut w.db, id)?;
    let Some(why) = rules::desired_change(&job, desired, actor, reason)? else {
        return get_tx(&mut w.db, id);
    };
    w.db.exec(
        "UPDATE jobs SET desired = $2, reason = $4, updated_at = $3 WHERE id = $1",
        args![id, desired.as_str(), w.now, &why],
    )?;
    w.event(
        Some(id),
        None,
        EventKind::JobDesired,
        actor,
        json!({"from": job.desired, "to": desired, "reason": reason}),
    )?;
    get_tx(&mut w.db, id)
}

pub fn override_status(w: &mut Writer<impl Db>, id: &str, target: &Override, actor: &str, reason: &str) -> Result<Job> {
    let job = lock_job(&mut w.db, id)?;
    let why = rules::override_reason(actor, reason);
    match target {
        Override::Job(to) => {
            rules::check_job_override(&job, *to)?;
            let retry = *to == JobStatus::Pending;
            w.db.exec(
                "UPDATE jobs SET status = $2, reason = $3, updated_at = $4, \
                 desired = CASE WHEN $5 THEN 'active' ELSE desired END, \
                 failures = CASE WHEN $5 THEN 0 ELSE failures END, \
                 next_attempt_at = CASE WHEN $5 THEN NULL ELSE next_attempt_at END \
                 WHERE id = $1",
                args![id, to.as_str(), &why, w.now, retry],
            )?;
            if retry {
                w.db.exec(
                    "UPDATE steps SET status = 'pending', reason = NULL, updated_at = $2 \
                     WHERE job_id = $1 AND status IN ('failed', 'blocked', 'in_progress')",
                    args![id, w.now],
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
            let n = w.db.exec(
                "UPDATE steps SET status = $3, reason = $4, updated_at = $5 WHERE job_id = $1 AND id = $2",
                args![id, step, status.as_str(), &why, w.now],
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
    get_tx(&mut w.db, id)
}

/// A failed, aborted or blocked job back to pending, active, with its
/// failures forgiven: the reconciler starts a new attempt. Its completed
/// steps stay done unless `from_scratch`.
pub fn retry(w: &mut Writer<impl Db>, id: &str, actor: &str, from_scratch: bool, reason: Option<&str>) -> Result<Job> {
    let job = lock_job(&mut w.db, id)?;
    rules::check_retry(&job)?;
    let why = match reason {
        Some(r) => format!("retried by {actor}: {r}"),
        None => format!("retried by {actor}"),
    };
    w.db.exec(
        "UPDATE jobs SET status = 'pending', desired = 'active', reason = $2, failures = 0, next_attempt_at = NULL, \
         updated_at = $3 WHERE id = $1",
        args![id, &why, w.now],
    )?;
    let which = if from_scratch { "" } else { " AND status NOT IN ('completed', 'skipped')" };
    w.db.exec(
        &format!(
            "UPDATE steps SET status = 'pending', reason = NULL, started_at = NULL, ended_at = NULL, \
             runs = CASE WHEN $3 THEN 0 ELSE runs END, updated_at = $2 WHERE job_id = $1{which}"
        ),
        args![id, w.now, from_scratch],
    )?;
    w.event(
        Some(id),
        None,
        EventKind::JobRetried,
        actor,
        json!({"from": job.status, "from_scratch": from_scratch, "reason": reason}),
    )?;
    w.event(Some(id), None, EventKind::JobStatus, actor, json!({"from": job.status, "to": "pending", "reason": why}))?;
    get_tx(&mut w.db, id)
}

fn get_tx(c: &mut impl Db, id: &str) -> Result<Job> {
    get(c, id, true)?.ok_or_else(|| StoreError::NotFound { what: "job", id: id.into() })
}

pub fn add_comment(w: &mut Writer<impl Db>, id: &str, author: &str, body: &str) -> Result<Comment> {
    lock_job(&mut w.db, id)?;
    let cid = w.db.one(
        "INSERT INTO comments (job_id, author, body, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        args![id, author, body, w.now],
        |r| r.i64("id"),
    )?;
    w.db.exec("UPDATE jobs SET updated_at = $2 WHERE id = $1", args![id, w.now])?;
    w.event(Some(id), None, EventKind::CommentAdded, author, json!({"comment": cid, "length": body.len()}))?;
    Ok(Comment { id: cid, job_id: id.into(), author: author.into(), body: body.into(), created_at: w.now })
}

pub fn agent_comment(w: &mut Writer<impl Db>, id: &str, attempt: u32, body: &str) -> Result<Comment> {
    fence(&mut w.db, id, attempt)?;
    add_comment(w, id, &agent_actor(id, attempt), body)
}

pub fn comments(c: &mut impl Db, id: &str) -> Result<Vec<Comment>> {
    c.all(
        "SELECT id, job_id, author, body, created_at FROM comments WHERE job_id = $1 ORDER BY id",
        args![id],
        views::comment,
    )
}

pub fn evidence(c: &mut impl Db, id: &str) -> Result<Vec<Evidence>> {
    c.all(
        "SELECT id, job_id, step_id, attempt, kind, content, truncated, created_at FROM evidence \
         WHERE job_id = $1 ORDER BY id",
        args![id],
        views::evidence,
    )
}

pub fn active_ids(c: &mut impl Db) -> Result<Vec<String>> {
    c.all(
        // The unfinished statuses named, not `NOT IN` the final ones: a search
        // of the index by status, where `NOT IN` reads every finished job.
        "SELECT id FROM jobs WHERE status IN ('pending', 'in_progress', 'blocked', 'paused') \
         UNION SELECT job_id FROM attempts WHERE state <> 'terminated' ORDER BY 1",
        args![],
        |r| r.string("id"),
    )
}

pub fn state(c: &mut impl Db, id: &str) -> Result<Option<JobState>> {
    // One read of the job with its comment marks (only someone other than an
    // agent can answer a blocked job), then its current attempt.
    let row = c.opt(
        &format!(
            "SELECT {JOB_COLUMNS}, blocked_at_comment, \
             (SELECT MAX(id) FROM comments WHERE job_id = jobs.id AND author NOT LIKE 'agent:%') AS latest_comment \
             FROM jobs WHERE id = $1"
        ),
        args![id],
        |r| Ok((views::job(r)?, r.int("latest_comment")?, r.int("blocked_at_comment")?)),
    )?;
    let Some((job, latest_comment, blocked_at_comment)) = row else { return Ok(None) };
    let current = if job.attempt > 0 { agent(c, id, job.attempt)? } else { None };
    Ok(Some(JobState { job, current, latest_comment, blocked_at_comment }))
}

/// The guarded `UPDATE` locks the row and re-checks `status` against its
/// newest version, so no separate lock is needed.
pub fn change_status(w: &mut Writer<impl Db>, id: &str, change: &StatusChange, actor: &str) -> Result<bool> {
    let changed = w.db.exec(
        "UPDATE jobs SET status = $3, reason = $4, next_attempt_at = $5, failures = failures + $6, updated_at = $7, \
         blocked_at_comment = CASE WHEN $3 = 'blocked' THEN (SELECT MAX(id) FROM comments WHERE job_id = $1) \
                                   ELSE blocked_at_comment END \
         WHERE id = $1 AND status = $2",
        args![
            id,
            change.from.as_str(),
            change.to.as_str(),
            &change.reason,
            change.next_attempt_at,
            i64::from(change.count_failure),
            w.now,
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

pub fn start_attempt(w: &mut Writer<impl Db>, id: &str, a: &NewAttempt) -> Result<Job> {
    let job = lock_job(&mut w.db, id)?;
    rules::check_attempt_start(&job, a.after)?;
    let live = w.db.one(
        "SELECT EXISTS(SELECT 1 FROM attempts WHERE job_id = $1 AND state <> 'terminated') AS live",
        args![id],
        |r| r.bool("live"),
    )?;
    if live {
        return Err(StoreError::Conflict(format!("job `{id}` still has a live attempt")));
    }
    if let Some(key) = &a.held_by {
        // A hold another engine is committing is waited for, then seen.
        w.db.lock_setting(key, true)?;
        let held =
            w.db.one("SELECT EXISTS(SELECT 1 FROM settings WHERE key = $1) AS held", args![key], |r| r.bool("held"))?;
        if held {
            return Err(StoreError::Conflict(format!("job `{id}` is held by `{key}`")));
        }
    }
    let number = a.after + 1;
    w.db.exec(
        "INSERT INTO attempts (job_id, number, agent_spec, runtime, token_hash, state, started_at) \
         VALUES ($1, $2, $3, $4, $5, 'awakening', $6)",
        args![id, number, &a.agent_spec, &a.runtime, &a.token_hash, w.now],
    )?;
    w.db.exec(
        "UPDATE jobs SET attempt = $2, status = 'in_progress', reason = NULL, next_attempt_at = NULL, updated_at = $3 \
         WHERE id = $1",
        args![id, number, w.now],
    )?;
    // A step the previous agent was in the middle of is not done.
    w.db.exec(
        "UPDATE steps SET status = 'pending', started_at = NULL, ended_at = NULL, updated_at = $2 \
         WHERE job_id = $1 AND status = 'in_progress'",
        args![id, w.now],
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
    if let Some(handle) = &a.handle {
        attempt_spawned(w, id, number, handle)?;
    }
    // As a read after the commit would find it (the new attempt's agent is told of it).
    get_tx(&mut w.db, id)
}

pub fn attempt_spawned(w: &mut Writer<impl Db>, id: &str, attempt: u32, handle: &Value) -> Result<()> {
    let n = w.db.exec(
        // The agent starts now (it was held until its handle is stored): its
        // health and active time count from here, not from the attempt's record.
        "UPDATE attempts SET handle = $3, started_at = CASE WHEN handle IS NULL THEN $4 ELSE started_at END \
         WHERE job_id = $1 AND number = $2",
        &[Arg::Text(id), Arg::from(attempt), Arg::json(handle)?, Arg::from(w.now)],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound { what: "attempt", id: george_core::api::agent_id(id, attempt) });
    }
    w.event(Some(id), Some(attempt), EventKind::AttemptSpawned, "reconciler", json!({"handle": handle}))
}

pub fn set_attempt_state(
    w: &mut Writer<impl Db>,
    id: &str,
    attempt: u32,
    state: AgentState,
    actor: &str,
    reason: Option<&str>,
) -> Result<()> {
    let n = w.db.exec(
        "UPDATE attempts SET state = $3, outcome = COALESCE($4, outcome) \
         WHERE job_id = $1 AND number = $2 AND state <> 'terminated' AND state <> $3",
        args![id, attempt, state.as_str(), reason],
    )?;
    if n > 0 {
        w.event(Some(id), Some(attempt), EventKind::AttemptState, actor, json!({"to": state, "reason": reason}))?;
    }
    Ok(())
}

pub fn end_attempt(w: &mut Writer<impl Db>, id: &str, attempt: u32, end: &AttemptEnd) -> Result<()> {
    let n = w.db.exec(
        "UPDATE attempts SET state = 'terminated', ended_at = $3, exit_code = $4, outcome = $5 \
         WHERE job_id = $1 AND number = $2 AND state <> 'terminated'",
        args![id, attempt, w.now, end.exit_code, &end.outcome],
    )?;
    if n > 0 {
        // No step stays in progress without its agent (halted, killed, gone):
        // it goes back to pending, with why, and the next attempt runs it.
        let current = w.db.opt("SELECT attempt FROM jobs WHERE id = $1", args![id], |r| r.u32("attempt"))?;
        if current == Some(attempt) {
            let why = format!("interrupted: attempt {attempt} ended ({})", end.outcome);
            w.db.exec(
                "UPDATE steps SET status = 'pending', reason = $2, started_at = NULL, ended_at = NULL, updated_at = $3 \
                 WHERE job_id = $1 AND status = 'in_progress'",
                args![id, &why, w.now],
            )?;
        }
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

pub fn agents(c: &mut impl Db, live_only: bool, limit: u32) -> Result<Vec<Attempt>> {
    let filter = if live_only { "WHERE state <> 'terminated'" } else { "" };
    c.all(
        &format!(
            "SELECT {AGENT_COLUMNS} FROM attempts {filter} ORDER BY started_at DESC, job_id, number DESC LIMIT $1"
        ),
        args![limit],
        views::agent,
    )
}

pub fn attempts_of(c: &mut impl Db, id: &str) -> Result<Vec<Attempt>> {
    c.all(&format!("SELECT {AGENT_COLUMNS} FROM attempts WHERE job_id = $1 ORDER BY number"), args![id], views::agent)
}

pub fn ended_agents(c: &mut impl Db, agent_spec: &str, limit: u32) -> Result<Vec<Attempt>> {
    c.all(
        &format!(
            "SELECT {AGENT_COLUMNS} FROM attempts WHERE agent_spec = $1 AND state = 'terminated' \
             ORDER BY started_at DESC, job_id, number DESC LIMIT $2"
        ),
        args![agent_spec, limit],
        views::agent,
    )
}

pub fn agent(c: &mut impl Db, id: &str, attempt: u32) -> Result<Option<Attempt>> {
    c.opt(
        &format!("SELECT {AGENT_COLUMNS} FROM attempts WHERE job_id = $1 AND number = $2"),
        args![id, attempt],
        views::agent,
    )
}

pub fn agent_for_token(c: &mut impl Db, token_hash: &str) -> Result<Option<(String, u32)>> {
    c.opt("SELECT job_id, number FROM attempts WHERE token_hash = $1", args![token_hash], |r| {
        Ok((r.string("job_id")?, r.u32("number")?))
    })
}

/// Refuses a write from an attempt that is not the job's current, live one.
/// Returns the job's status. The job and attempt rows stay locked until the
/// transaction ends, so the attempt cannot be superseded or ended meanwhile.
pub fn fence<D: Db>(c: &mut D, id: &str, attempt: u32) -> Result<JobStatus> {
    Ok(fence_attempt(c, id, attempt)?.status)
}

/// What a fence read: the job's status and when the attempt began.
pub(crate) struct Fenced {
    status: JobStatus,
    began: chrono::DateTime<chrono::Utc>,
}

fn fence_attempt<D: Db>(c: &mut D, id: &str, attempt: u32) -> Result<Fenced> {
    let job = c.opt(&format!("SELECT attempt, status FROM jobs WHERE id = $1{}", D::LOCK), args![id], |r| {
        Ok((r.u32("attempt")?, r.parsed::<JobStatus>("status")?))
    })?;
    let (current, status) = job.ok_or_else(|| StoreError::NotFound { what: "job", id: id.into() })?;
    let row = if attempt == current {
        c.opt(
            &format!("SELECT state, started_at FROM attempts WHERE job_id = $1 AND number = $2{}", D::LOCK),
            args![id, attempt],
            |r| Ok((r.string("state")?, r.ts("started_at")?)),
        )?
    } else {
        None
    };
    rules::check_fence(id, attempt, current, row.as_ref().map(|(state, _)| state.as_str()))?;
    let began = row.map_or(chrono::DateTime::UNIX_EPOCH, |(_, began)| began);
    Ok(Fenced { status, began })
}

pub fn heartbeat(w: &mut Writer<impl Db>, id: &str, attempt: u32) -> Result<()> {
    beat(w, id, attempt).map(|_| ())
}

/// A fenced heartbeat; returns what the fence read.
fn beat(w: &mut Writer<impl Db>, id: &str, attempt: u32) -> Result<Fenced> {
    let fenced = fence_attempt(&mut w.db, id, attempt)?;
    w.db.exec(
        "UPDATE attempts SET last_heartbeat = $3, state = CASE WHEN state = 'awakening' THEN 'active' ELSE state END \
         WHERE job_id = $1 AND number = $2",
        args![id, attempt, w.now],
    )?;
    Ok(fenced)
}

pub fn report_step(w: &mut Writer<impl Db>, id: &str, attempt: u32, step: &str, report: &StepReport) -> Result<()> {
    let fenced = fence_attempt(&mut w.db, id, attempt)?;
    write_step(w, id, attempt, &fenced, step, report, None)
}

/// A fenced step report that says when it happened (`at`, the agent's
/// clock): kept between the attempt's start and now, so an agent can
/// misplace only its own step, and only within its attempt.
fn write_step(
    w: &mut Writer<impl Db>,
    id: &str,
    attempt: u32,
    fenced: &Fenced,
    step: &str,
    report: &StepReport,
    at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<()> {
    rules::check_step_report(id, fenced.status)?;
    let at = at.map_or(w.now, |at| at.clamp(fenced.began, w.now));
    // Each `in_progress` is one more try; the first of a run starts its clock,
    // and a final status stops it.
    let starting = report.status == StepStatus::InProgress;
    let n = w.db.exec(
        "UPDATE steps SET status = $3, reason = $4, runs = runs + $5, updated_at = $6, \
         started_at = CASE WHEN $5 = 1 AND status <> 'in_progress' THEN $6 \
                           WHEN $5 = 1 OR $7 = 1 THEN started_at ELSE NULL END, \
         ended_at = CASE WHEN $7 = 1 THEN $6 ELSE NULL END \
         WHERE job_id = $1 AND id = $2",
        args![
            id,
            step,
            report.status.as_str(),
            &report.reason,
            i64::from(starting),
            at,
            i64::from(report.status.has_ended())
        ],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound { what: "step", id: format!("{id}/{step}") });
    }
    w.event(
        Some(id),
        Some(attempt),
        EventKind::StepStatus,
        &agent_actor(id, attempt),
        json!({"step": step, "to": report.status, "reason": report.reason, "at": at}),
    )
}

/// A fenced failed try of a step: an event (the step's status is reported apart).
fn try_failed(w: &mut Writer<impl Db>, id: &str, attempt: u32, fenced: &Fenced, step: &str, data: Value) -> Result<()> {
    rules::check_step_report(id, fenced.status)?;
    check_step_exists(w, id, step)?;
    w.event(Some(id), Some(attempt), EventKind::StepTryFailed, &agent_actor(id, attempt), data)
}

fn check_step_exists(w: &mut Writer<impl Db>, id: &str, step: &str) -> Result<()> {
    let known =
        w.db.one("SELECT EXISTS(SELECT 1 FROM steps WHERE job_id = $1 AND id = $2) AS known", args![id, step], |r| {
            r.bool("known")
        })?;
    if !known {
        return Err(StoreError::NotFound { what: "step", id: format!("{id}/{step}") });
    }
    Ok(())
}

/// What an agent hands in as evidence.
pub struct NewEvidence<'a> {
    pub step: Option<&'a str>,
    pub kind: &'a str,
    pub content: &'a str,
    pub truncated: bool,
}

pub fn add_evidence(w: &mut Writer<impl Db>, id: &str, attempt: u32, e: &NewEvidence<'_>) -> Result<Evidence> {
    fence(&mut w.db, id, attempt)?;
    write_evidence(w, id, attempt, e)
}

/// Evidence from a fenced attempt.
fn write_evidence(w: &mut Writer<impl Db>, id: &str, attempt: u32, e: &NewEvidence<'_>) -> Result<Evidence> {
    if let Some(step) = e.step {
        check_step_exists(w, id, step)?;
    }
    let eid = w.db.one(
        "INSERT INTO evidence (job_id, step_id, attempt, kind, content, truncated, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        args![id, e.step, attempt, e.kind, e.content, e.truncated, w.now],
        |r| r.i64("id"),
    )?;
    w.event(
        Some(id),
        Some(attempt),
        EventKind::EvidenceAdded,
        &agent_actor(id, attempt),
        json!({"evidence": eid, "step": e.step, "kind": e.kind, "truncated": e.truncated}),
    )?;
    Ok(Evidence {
        id: eid,
        job_id: id.into(),
        step_id: e.step.map(str::to_string),
        attempt,
        kind: e.kind.into(),
        content: e.content.into(),
        truncated: e.truncated,
        created_at: w.now,
    })
}

pub fn report_job(
    w: &mut Writer<impl Db>,
    id: &str,
    attempt: u32,
    status: JobStatus,
    reason: Option<&str>,
) -> Result<()> {
    rules::check_verdict(status, reason)?;
    let current = fence(&mut w.db, id, attempt)?;
    write_verdict(w, id, attempt, current, status, reason)
}

/// The (checked) verdict of a fenced attempt whose job is `current`.
fn write_verdict(
    w: &mut Writer<impl Db>,
    id: &str,
    attempt: u32,
    current: JobStatus,
    status: JobStatus,
    reason: Option<&str>,
) -> Result<()> {
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

/// Applies an agent's batch of reports in one transaction, in order, all or
/// nothing; the batch is also a heartbeat. A verdict may only come last. A
/// batch numbered `seq` at or below the last one applied is a repeat (its
/// answer was lost and the agent sent it again): nothing more is applied.
pub fn apply_reports(
    w: &mut Writer<impl Db>,
    id: &str,
    attempt: u32,
    seq: Option<u64>,
    reports: &[Report],
) -> Result<()> {
    // Fenced once: the batch holds the job's and the attempt's rows until it
    // commits, and only its last item (the verdict) changes the job's status.
    let fenced = beat(w, id, attempt)?;
    if let Some(seq) = seq {
        let seq = i64::try_from(seq).map_err(|_| StoreError::Invalid("seq: too large".into()))?;
        let fresh = w.db.exec(
            "UPDATE attempts SET reports_seq = $3 WHERE job_id = $1 AND number = $2 AND reports_seq < $3",
            args![id, attempt, seq],
        )?;
        if fresh == 0 {
            return Ok(());
        }
    }
    for (i, report) in reports.iter().enumerate() {
        let applied = match report {
            Report::Step { step, report, at } => write_step(w, id, attempt, &fenced, step, report, *at),
            Report::Evidence { step, kind, content, truncated } => {
                let e = NewEvidence { step: step.as_deref(), kind, content, truncated: *truncated };
                write_evidence(w, id, attempt, &e).map(|_| ())
            }
            Report::TryFailed { step, number, of, result, stderr, retry_in_ms } => {
                let data = json!({"step": step, "try": number, "of": of, "result": result, "stderr": stderr,
                                  "retry_in_ms": retry_in_ms});
                try_failed(w, id, attempt, &fenced, step, data)
            }
            Report::Comment { body } => add_comment(w, id, &agent_actor(id, attempt), body).map(|_| ()),
            Report::Verdict { status, reason } if i + 1 == reports.len() => {
                rules::check_verdict(*status, reason.as_deref())
                    .and_then(|()| write_verdict(w, id, attempt, fenced.status, *status, reason.as_deref()))
            }
            Report::Verdict { .. } => Err(StoreError::Invalid("a verdict may only be the last report".into())),
        };
        applied.map_err(|e| e.in_report(i))?;
    }
    Ok(())
}

pub fn count_by_status(c: &mut impl Db) -> Result<Vec<(JobStatus, u64)>> {
    c.all("SELECT status, COUNT(*) AS jobs FROM jobs GROUP BY status ORDER BY status", args![], |r| {
        Ok((r.parsed("status")?, r.u64("jobs")?))
    })
}
