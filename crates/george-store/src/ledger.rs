//! The event log, durable settings and the token ledger.

use crate::dialect::{args, Arg, Db, Writer};
use crate::views::{self, EVENT_COLUMNS};
use crate::Result;
use chrono::{DateTime, Utc};
use george_core::api::{UsageRecord, UsageTotal};
use george_core::record::Event;
use serde_json::Value;

pub fn events_since(c: &mut impl Db, since: i64, limit: u32, job: Option<&str>) -> Result<Vec<Event>> {
    // Two statements, not `($3 IS NULL OR job_id = $3)`: each gets a plan that walks
    // an index from `since` instead of scanning the whole log.
    match job {
        None => c.all(
            &format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"),
            args![since, limit],
            views::event,
        ),
        Some(job) => c.all(
            &format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 AND job_id = $3 ORDER BY seq LIMIT $2"),
            args![since, limit, job],
            views::event,
        ),
    }
}

pub fn latest_seq(c: &mut impl Db) -> Result<i64> {
    c.one("SELECT COALESCE(MAX(seq), 0) AS seq FROM events", args![], |r| r.i64("seq"))
}

pub fn setting(c: &mut impl Db, key: &str) -> Result<Option<Value>> {
    c.opt("SELECT value FROM settings WHERE key = $1", args![key], |r| r.json("value"))
}

pub fn set_setting(w: &mut Writer<impl Db>, key: &str, value: Option<&Value>) -> Result<()> {
    w.db.lock_setting(key, false)?;
    match value {
        Some(v) => w.db.exec(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            &[Arg::Text(key), Arg::json(v)?, Arg::Time(w.now)],
        )?,
        None => w.db.exec("DELETE FROM settings WHERE key = $1", args![key])?,
    };
    Ok(())
}

pub fn settings(c: &mut impl Db, prefix: &str) -> Result<Vec<(String, Value)>> {
    c.all(
        "SELECT key, value FROM settings WHERE substr(key, 1, length(CAST($1 AS TEXT))) = $1 ORDER BY key",
        args![prefix],
        |r| Ok((r.string("key")?, r.json("value")?)),
    )
}

pub fn record_usage(w: &mut Writer<impl Db>, r: &UsageRecord) -> Result<()> {
    w.db.exec(
        "INSERT INTO llm_usage (ts, job_id, attempt, agent_spec, chapter, provider, model, input_tokens, \
         output_tokens, streamed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            Arg::Time(r.ts),
            Arg::Text(&r.job_id),
            Arg::from(r.attempt),
            Arg::Text(&r.agent_spec),
            Arg::Text(&r.chapter),
            Arg::Text(&r.provider),
            Arg::Text(&r.model),
            Arg::count(r.input_tokens, "input_tokens")?,
            Arg::count(r.output_tokens, "output_tokens")?,
            Arg::Flag(r.streamed),
        ],
    )?;
    Ok(())
}

pub fn usage_records(c: &mut impl Db, since: DateTime<Utc>, job: Option<&str>) -> Result<Vec<UsageRecord>> {
    c.all(
        "SELECT ts, job_id, attempt, agent_spec, chapter, provider, model, input_tokens, output_tokens, streamed \
         FROM llm_usage WHERE ts >= $1 AND (CAST($2 AS TEXT) IS NULL OR job_id = $2) ORDER BY id",
        args![since, job],
        views::usage_record,
    )
}

pub fn usage_totals(c: &mut impl Db, since: DateTime<Utc>) -> Result<Vec<UsageTotal>> {
    c.all(
        "SELECT chapter, agent_spec, COUNT(*) AS invocations, CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
         CAST(SUM(output_tokens) AS BIGINT) AS output_tokens FROM llm_usage \
         WHERE ts >= $1 GROUP BY chapter, agent_spec ORDER BY chapter, agent_spec",
        args![since],
        views::usage_total,
    )
}
