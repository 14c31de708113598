//! Mapping between SQLite rows and the API's views.

use crate::{Result, StoreError};
use chrono::{DateTime, Utc};
use george_core::api::{AgentView, CommentView, EventView, EvidenceView, JobView};
use george_core::plan::Origin;
use rusqlite::{Connection, Row};
use serde_json::Value;

/// Timestamps are stored as fixed-width RFC 3339 text in UTC, so they sort.
pub fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(s: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

pub fn get_ts(row: &Row<'_>, idx: &str) -> rusqlite::Result<DateTime<Utc>> {
    parse_ts(&row.get::<_, String>(idx)?)
}

pub fn get_opt_ts(row: &Row<'_>, idx: &str) -> rusqlite::Result<Option<DateTime<Utc>>> {
    row.get::<_, Option<String>>(idx)?.as_deref().map(parse_ts).transpose()
}

pub fn get_parsed<T: std::str::FromStr>(row: &Row<'_>, idx: &str) -> rusqlite::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    row.get::<_, String>(idx)?
        .parse()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

pub fn get_json<T: serde::de::DeserializeOwned>(row: &Row<'_>, idx: &str) -> rusqlite::Result<T> {
    serde_json::from_str(&row.get::<_, String>(idx)?)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

pub const JOB_COLUMNS: &str = "id, template, agent, params, priority, chapter, desired, status, reason, \
    max_attempts, origin_source, origin_ref, origin_rev, attempt, failures, next_attempt_at, created_at, updated_at";

pub fn job(row: &Row<'_>) -> rusqlite::Result<JobView> {
    Ok(JobView {
        id: row.get("id")?,
        template: row.get("template")?,
        agent: row.get("agent")?,
        status: get_parsed(row, "status")?,
        reason: row.get("reason")?,
        desired: get_parsed(row, "desired")?,
        priority: get_parsed(row, "priority")?,
        chapter: row.get("chapter")?,
        params: get_json(row, "params")?,
        origin: Origin {
            source: row.get("origin_source")?,
            reference: row.get("origin_ref")?,
            revision: row.get("origin_rev")?,
        },
        attempt: row.get("attempt")?,
        failures: row.get("failures")?,
        max_attempts: row.get("max_attempts")?,
        next_attempt_at: get_opt_ts(row, "next_attempt_at")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
        steps: Vec::new(),
    })
}

pub const AGENT_COLUMNS: &str =
    "job_id, number, agent_spec, runtime, handle, state, started_at, last_heartbeat, ended_at, exit_code, outcome";

pub fn agent(row: &Row<'_>) -> rusqlite::Result<AgentView> {
    let job_id: String = row.get("job_id")?;
    let number: u32 = row.get("number")?;
    Ok(AgentView {
        id: george_core::api::agent_id(&job_id, number),
        job_id,
        attempt: number,
        agent_spec: row.get("agent_spec")?,
        runtime: row.get("runtime")?,
        handle: row.get::<_, Option<String>>("handle")?.map(|h| serde_json::from_str(&h).unwrap_or(Value::String(h))),
        state: get_parsed(row, "state")?,
        started_at: get_ts(row, "started_at")?,
        last_heartbeat: get_opt_ts(row, "last_heartbeat")?,
        ended_at: get_opt_ts(row, "ended_at")?,
        exit_code: row.get("exit_code")?,
        outcome: row.get("outcome")?,
    })
}

pub fn comment(row: &Row<'_>) -> rusqlite::Result<CommentView> {
    Ok(CommentView {
        id: row.get("id")?,
        job_id: row.get("job_id")?,
        author: row.get("author")?,
        body: row.get("body")?,
        created_at: get_ts(row, "created_at")?,
    })
}

pub fn evidence(row: &Row<'_>) -> rusqlite::Result<EvidenceView> {
    Ok(EvidenceView {
        id: row.get("id")?,
        job_id: row.get("job_id")?,
        step_id: row.get("step_id")?,
        attempt: row.get("attempt")?,
        kind: row.get("kind")?,
        content: row.get("content")?,
        truncated: row.get("truncated")?,
        created_at: get_ts(row, "created_at")?,
    })
}

pub fn events_since(c: &Connection, since: i64, limit: u32, job: Option<&str>) -> Result<Vec<EventView>> {
    let mut stmt = c.prepare_cached(
        "SELECT seq, ts, job_id, attempt, kind, actor, data FROM events \
         WHERE seq > ?1 AND (?3 IS NULL OR job_id = ?3) ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![since, limit, job], |row| {
        Ok(EventView {
            seq: row.get("seq")?,
            ts: get_ts(row, "ts")?,
            job_id: row.get("job_id")?,
            attempt: row.get("attempt")?,
            kind: row.get("kind")?,
            actor: row.get("actor")?,
            data: get_json(row, "data")?,
        })
    })?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(StoreError::from)
}
