//! Mapping between PostgreSQL rows and the API's views. Every read is
//! checked: a value that does not fit its Rust type is an error, never a
//! panic.

use crate::{Result, StoreError};
use george_core::api::{AgentView, CommentView, EventView, EvidenceView, JobView, UsageRecord, UsageTotal};
use george_core::plan::Origin;
use postgres::types::Json;
use postgres::{Row, Transaction};

/// A number in the database that does not fit the type George reads it as.
#[derive(Debug, thiserror::Error)]
#[error("column `{column}` holds {value}, which is out of range")]
pub struct OutOfRange {
    column: String,
    value: i128,
}

fn out_of_range(column: &str, value: impl Into<i128>) -> StoreError {
    StoreError::Backend(Box::new(OutOfRange { column: column.to_string(), value: value.into() }))
}

/// A count or size as stored (BIGINT); refused when it does not fit.
pub fn bigint(n: u64, what: &str) -> Result<i64> {
    i64::try_from(n).map_err(|_| StoreError::Invalid(format!("{what} {n} is too large to store")))
}

pub fn get_u32(row: &Row, column: &str) -> Result<u32> {
    let v: i64 = row.try_get(column)?;
    u32::try_from(v).map_err(|_| out_of_range(column, v))
}

pub fn get_opt_u32(row: &Row, column: &str) -> Result<Option<u32>> {
    let v: Option<i64> = row.try_get(column)?;
    v.map(|v| u32::try_from(v).map_err(|_| out_of_range(column, v))).transpose()
}

pub fn get_u64(row: &Row, column: &str) -> Result<u64> {
    let v: i64 = row.try_get(column)?;
    u64::try_from(v).map_err(|_| out_of_range(column, v))
}

/// A text column holding one of George's string enums (status, kind, ...).
pub fn get_parsed<T: std::str::FromStr>(row: &Row, column: &str) -> Result<T>
where
    T::Err: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    row.try_get::<_, &str>(column)?.parse().map_err(|e: T::Err| StoreError::Backend(e.into()))
}

/// A JSONB column as a typed value.
pub fn get_json<T: serde::de::DeserializeOwned>(row: &Row, column: &str) -> Result<T> {
    Ok(row.try_get::<_, Json<T>>(column)?.0)
}

pub const JOB_COLUMNS: &str = "id, template, agent, params, priority, chapter, desired, status, reason, \
    max_attempts, origin_source, origin_ref, origin_rev, attempt, failures, next_attempt_at, created_at, updated_at";

pub fn job(row: &Row) -> Result<JobView> {
    Ok(JobView {
        id: row.try_get("id")?,
        template: row.try_get("template")?,
        agent: row.try_get("agent")?,
        status: get_parsed(row, "status")?,
        reason: row.try_get("reason")?,
        desired: get_parsed(row, "desired")?,
        priority: get_parsed(row, "priority")?,
        chapter: row.try_get("chapter")?,
        params: get_json(row, "params")?,
        origin: Origin {
            source: row.try_get("origin_source")?,
            reference: row.try_get("origin_ref")?,
            revision: row.try_get("origin_rev")?,
        },
        attempt: get_u32(row, "attempt")?,
        failures: get_u32(row, "failures")?,
        max_attempts: get_opt_u32(row, "max_attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        steps: Vec::new(),
    })
}

pub const AGENT_COLUMNS: &str =
    "job_id, number, agent_spec, runtime, handle, state, started_at, last_heartbeat, ended_at, exit_code, outcome";

pub fn agent(row: &Row) -> Result<AgentView> {
    let job_id: String = row.try_get("job_id")?;
    let number = get_u32(row, "number")?;
    Ok(AgentView {
        id: george_core::api::agent_id(&job_id, number),
        job_id,
        attempt: number,
        agent_spec: row.try_get("agent_spec")?,
        runtime: row.try_get("runtime")?,
        handle: row.try_get("handle")?,
        state: get_parsed(row, "state")?,
        started_at: row.try_get("started_at")?,
        last_heartbeat: row.try_get("last_heartbeat")?,
        ended_at: row.try_get("ended_at")?,
        exit_code: row.try_get("exit_code")?,
        outcome: row.try_get("outcome")?,
    })
}

pub fn comment(row: &Row) -> Result<CommentView> {
    Ok(CommentView {
        id: row.try_get("id")?,
        job_id: row.try_get("job_id")?,
        author: row.try_get("author")?,
        body: row.try_get("body")?,
        created_at: row.try_get("created_at")?,
    })
}

pub fn evidence(row: &Row) -> Result<EvidenceView> {
    Ok(EvidenceView {
        id: row.try_get("id")?,
        job_id: row.try_get("job_id")?,
        step_id: row.try_get("step_id")?,
        attempt: get_u32(row, "attempt")?,
        kind: row.try_get("kind")?,
        content: row.try_get("content")?,
        truncated: row.try_get("truncated")?,
        created_at: row.try_get("created_at")?,
    })
}

pub fn usage_record(row: &Row) -> Result<UsageRecord> {
    Ok(UsageRecord {
        ts: row.try_get("ts")?,
        job_id: row.try_get("job_id")?,
        attempt: get_u32(row, "attempt")?,
        agent_spec: row.try_get("agent_spec")?,
        chapter: row.try_get("chapter")?,
        provider: row.try_get("provider")?,
        model: row.try_get("model")?,
        input_tokens: get_u64(row, "input_tokens")?,
        output_tokens: get_u64(row, "output_tokens")?,
        streamed: row.try_get("streamed")?,
    })
}

pub fn usage_total(row: &Row) -> Result<UsageTotal> {
    Ok(UsageTotal {
        chapter: row.try_get("chapter")?,
        agent_spec: row.try_get("agent_spec")?,
        invocations: get_u64(row, "invocations")?,
        input_tokens: get_u64(row, "input_tokens")?,
        output_tokens: get_u64(row, "output_tokens")?,
    })
}

fn event(row: &Row) -> Result<EventView> {
    Ok(EventView {
        seq: row.try_get("seq")?,
        ts: row.try_get("ts")?,
        job_id: row.try_get("job_id")?,
        attempt: get_opt_u32(row, "attempt")?,
        kind: row.try_get("kind")?,
        actor: row.try_get("actor")?,
        data: row.try_get("data")?,
    })
}

pub fn events_since(c: &mut Transaction<'_>, since: i64, limit: u32, job: Option<&str>) -> Result<Vec<EventView>> {
    // Two statements, not `($3 IS NULL OR job_id = $3)`: each gets a plan that walks
    // an index from `since` instead of scanning the whole log.
    let limit = i64::from(limit);
    let rows = match job {
        None => c.query(
            "SELECT seq, ts, job_id, attempt, kind, actor, data FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&since, &limit],
        )?,
        Some(job) => c.query(
            "SELECT seq, ts, job_id, attempt, kind, actor, data FROM events \
             WHERE seq > $1 AND job_id = $3 ORDER BY seq LIMIT $2",
            &[&since, &limit, &job],
        )?,
    };
    rows.iter().map(event).collect()
}
