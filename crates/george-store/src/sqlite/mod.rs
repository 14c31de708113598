//! The embedded store: one SQLite file in WAL mode. Writes go through one
//! connection in `BEGIN IMMEDIATE` transactions, so a transaction takes the
//! write lock up front and two writers can never deadlock upgrading a read
//! lock; reads use a second connection and never block writes.

mod jobs;
mod rows;
mod sources;

use crate::delegate::impl_store;
use crate::{
    AgentView, ApplyReport, AttemptEnd, Catalog, CommentView, Created, EventView, EvidenceView, JobFilter, JobState,
    JobView, NewAttempt, Override, Result, Snapshot, SourceView, StatusChange, StoreError, StoredManifest,
};
use chrono::{DateTime, Utc};
use george_core::api::StepReport;
use george_core::api::{UsageRecord, UsageTotal};
use george_core::manifest::Kind;
use george_core::plan::NewJob;
use george_core::EventKind;
use george_core::{AgentState, Clock, DesiredState, JobStatus, SystemClock};
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::broadcast;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/0001_init.sql")),
    (2, include_str!("../../migrations/0002_triggers.sql")),
    (3, include_str!("../../migrations/0003_ledger.sql")),
    (4, include_str!("../../migrations/0004_settings.sql")),
    (5, include_str!("../../migrations/0005_attempts_by_start.sql")),
];

/// The SQLite implementation of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<EventView>,
    path: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.path).finish()
    }
}

/// A write transaction with the time it runs at and the events it produced.
pub(crate) struct Writer<'a> {
    pub tx: &'a Transaction<'a>,
    pub now: DateTime<Utc>,
    pub(crate) events: Vec<EventView>,
}

impl Writer<'_> {
    /// Appends an event to the audit log.
    pub fn event(
        &mut self,
        job: Option<&str>,
        attempt: Option<u32>,
        kind: EventKind,
        actor: &str,
        data: Value,
    ) -> Result<()> {
        self.tx.execute(
            "INSERT INTO events (ts, job_id, attempt, kind, actor, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![rows::ts(self.now), job, attempt, kind.as_str(), actor, data.to_string()],
        )?;
        self.events.push(EventView {
            seq: self.tx.last_insert_rowid(),
            ts: self.now,
            job_id: job.map(str::to_string),
            attempt,
            kind: kind.to_string(),
            actor: actor.to_string(),
            data,
        });
        Ok(())
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` with the system clock.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_clock(path, Arc::new(SystemClock))
    }

    /// Opens the store with a given clock (tests use a manual one).
    pub fn open_with_clock(path: impl AsRef<Path>, clock: Arc<dyn Clock>) -> Result<Self> {
        let path = path.as_ref();
        let writer = Connection::open(path)?;
        configure(&writer)?;
        migrate(&writer)?;
        let reader = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
        )?;
        configure(&reader)?;
        let (events, _) = broadcast::channel(4096);
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
                clock,
                events,
                path: path.display().to_string(),
            }),
        })
    }

    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer<'_>) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        let (value, events) = tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Stored with microseconds: what a write returns (and broadcasts) equals what a read gives.
            let now = chrono::SubsecRound::trunc_subsecs(inner.clock.now(), 6);
            let mut w = Writer { tx: &tx, now, events: Vec::new() };
            let value = f(&mut w)?;
            let events = std::mem::take(&mut w.events);
            tx.commit()?;
            Ok::<_, StoreError>((value, events))
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))??;
        for e in events {
            // No receiver is fine: nobody is watching.
            let _ = self.inner.events.send(e);
        }
        Ok(value)
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.reader.lock();
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if !conn.is_readonly(rusqlite::MAIN_DB)? {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // In WAL mode NORMAL loses no committed transaction when a process is
        // killed; only an OS crash can lose the last few.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    Ok(())
}

fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (v, sql) in MIGRATIONS {
        if *v > version {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", v)?;
            tx.commit()?;
        }
    }
    let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if version > latest {
        return Err(StoreError::Invalid(format!(
            "the database schema is version {version} but this george only knows up to {latest}; upgrade george"
        )));
    }
    Ok(())
}

impl_store!(SqliteStore {

    async fn agent_comment(&self, id: &str, attempt: u32, body: &str) -> Result<CommentView> {
        let (id, body) = (id.to_string(), body.to_string());
        self.write(move |w| {
            jobs::fence(w.tx, &id, attempt)?;
            jobs::add_comment(w, &id, &crate::rules::agent_actor(&id, attempt), &body)
        })
        .await
    }

    async fn report_job(&self, id: &str, attempt: u32, status: JobStatus, reason: Option<&str>) -> Result<()> {
        let (id, reason) = (id.to_string(), reason.map(str::to_string));
        self.write(move |w| jobs::report_job(w, &id, attempt, status, reason.as_deref())).await
    }

    async fn list_agents(&self, live_only: bool, limit: u32) -> Result<Vec<AgentView>> {
        self.read(move |c| jobs::agents(c, live_only, limit)).await
    }

    async fn get_agent(&self, id: &str, attempt: u32) -> Result<Option<AgentView>> {
        let id = id.to_string();
        self.read(move |c| jobs::agent(c, &id, attempt)).await
    }

    async fn events_since(&self, since: i64, limit: u32, job: Option<&str>) -> Result<Vec<EventView>> {
        let job = job.map(str::to_string);
        self.read(move |c| rows::events_since(c, since, limit, job.as_deref())).await
    }

    async fn setting(&self, key: &str) -> Result<Option<Value>> {
        let key = key.to_string();
        self.read(move |c| {
            use rusqlite::OptionalExtension;
            let v: Option<String> =
                c.query_row("SELECT value FROM settings WHERE key = ?1", [&key], |r| r.get(0)).optional()?;
            Ok(v.map(|v| serde_json::from_str(&v)).transpose()?)
        })
        .await
    }

    async fn set_setting(&self, key: &str, value: Option<Value>) -> Result<()> {
        let key = key.to_string();
        self.write(move |w| {
            match value {
                Some(v) => w.tx.execute(
                    "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    rusqlite::params![key, v.to_string(), rows::ts(w.now)],
                )?,
                None => w.tx.execute("DELETE FROM settings WHERE key = ?1", [&key])?,
            };
            Ok(())
        })
        .await
    }

    async fn settings(&self, prefix: &str) -> Result<Vec<(String, Value)>> {
        let prefix = prefix.to_string();
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT key, value FROM settings WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key")?;
            let rows = stmt.query_map([&prefix], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (k, v) = row?;
                out.push((k, serde_json::from_str(&v)?));
            }
            Ok(out)
        })
        .await
    }

    async fn record_usage(&self, record: &UsageRecord) -> Result<()> {
        let r = record.clone();
        self.write(move |w| {
            w.tx.execute(
                "INSERT INTO llm_usage (ts, job_id, attempt, agent_spec, chapter, provider, model, input_tokens, \
                 output_tokens, streamed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                rusqlite::params![
                    rows::ts(r.ts),
                    r.job_id,
                    r.attempt,
                    r.agent_spec,
                    r.chapter,
                    r.provider,
                    r.model,
                    r.input_tokens as i64,
                    r.output_tokens as i64,
                    r.streamed
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn usage_records(&self, since: DateTime<Utc>, job: Option<&str>) -> Result<Vec<UsageRecord>> {
        let job = job.map(str::to_string);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT ts, job_id, attempt, agent_spec, chapter, provider, model, input_tokens, output_tokens, streamed \
                 FROM llm_usage WHERE ts >= ?1 AND (?2 IS NULL OR job_id = ?2) ORDER BY id",
            )?;
            let rows = stmt.query_map(rusqlite::params![rows::ts(since), job], |r| {
                Ok(UsageRecord {
                    ts: rows::get_ts(r, "ts")?,
                    job_id: r.get("job_id")?,
                    attempt: r.get("attempt")?,
                    agent_spec: r.get("agent_spec")?,
                    chapter: r.get("chapter")?,
                    provider: r.get("provider")?,
                    model: r.get("model")?,
                    input_tokens: r.get::<_, i64>("input_tokens")? as u64,
                    output_tokens: r.get::<_, i64>("output_tokens")? as u64,
                    streamed: r.get("streamed")?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn usage_totals(&self, since: DateTime<Utc>) -> Result<Vec<UsageTotal>> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT chapter, agent_spec, COUNT(*), SUM(input_tokens), SUM(output_tokens) FROM llm_usage \
                 WHERE ts >= ?1 GROUP BY chapter, agent_spec ORDER BY chapter, agent_spec",
            )?;
            let rows = stmt.query_map([rows::ts(since)], |r| {
                Ok(UsageTotal {
                    chapter: r.get(0)?,
                    agent_spec: r.get(1)?,
                    invocations: r.get::<_, i64>(2)? as u64,
                    input_tokens: r.get::<_, i64>(3)? as u64,
                    output_tokens: r.get::<_, i64>(4)? as u64,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn latest_seq(&self) -> Result<i64> {
        self.read(|c| Ok(c.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?)).await
    }

    fn subscribe(&self) -> broadcast::Receiver<EventView> {
        self.inner.events.subscribe()
    }

    async fn record_event(&self, job: Option<&str>, kind: EventKind, actor: &str, data: Value) -> Result<EventView> {
        let (job, actor) = (job.map(str::to_string), actor.to_string());
        self.write(move |w| {
            w.event(job.as_deref(), None, kind, &actor, data)?;
            Ok(w.events.last().cloned().expect("an event was just appended"))
        })
        .await
    }

    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>> {
        self.read(jobs::count_by_status).await
    }
});
