//! The PostgreSQL store: one database that several engine processes share.
//!
//! - **Connections.** One writer connection and a few reader connections
//!   ([`READERS`]) of the synchronous `postgres` client, each behind a mutex
//!   and used inside `spawn_blocking`, as the SQLite store uses its two; a
//!   read takes whichever reader is free. Writes go through the one writer:
//!   their commits are serialized by the event-log lock anyway. A connection the
//!   server closed (a restart, a terminated backend) is reopened on next use,
//!   and an operation that lost its connection before committing runs again
//!   on the new one. A write whose connection broke *while committing* is not
//!   run again: it may have happened.
//! - **Writes lock what they check.** Every write is one READ COMMITTED
//!   transaction. A check-then-write reads the job row (and the attempt row)
//!   `SELECT ... FOR UPDATE` first: `start_attempt`, `set_desired`,
//!   `override_status`, the fence of every agent write, and the jobs a
//!   snapshot touches. A guarded `UPDATE ... WHERE status = $from` locks and
//!   re-checks its row by itself (`change_status`, `end_attempt`). Inserts
//!   that may race use `ON CONFLICT` (`create_job` is `DO NOTHING`), and a
//!   source's row is locked while a revision of it is applied or rejected.
//!   Deadlocks and serialization failures (SQLSTATE 40P01, 40001) are
//!   retried a few times.
//! - **The event log is in commit order.** Readers page with `seq > since`,
//!   so no event may commit after an event with a larger `seq` is visible,
//!   or a reader would skip it for good. A transaction therefore inserts its
//!   events last, right before it commits, after taking
//!   `pg_advisory_xact_lock(EVENT_LOG_LOCK)`: across all processes,
//!   event-writing transactions take their sequence numbers and commit one at
//!   a time, in `seq` order (the lock is released after the commit is
//!   visible). As the lock is always taken after every row lock of the
//!   transaction, it never closes a lock cycle. The price: the commits of
//!   event-writing transactions are serialized.
//! - **Reads** run in `REPEATABLE READ READ ONLY` transactions, so a read of
//!   several queries sees one snapshot.
//! - **Events** reach the subscribers of every process on the database, in
//!   `seq` order (see `feed`: `NOTIFY` at commit, one listener per store).
//! - **Migrations** are numbered SQL files under `migrations/postgres/`,
//!   applied in one transaction that holds `pg_advisory_xact_lock(MIGRATION_LOCK)`
//!   (two engines starting together take turns) and recorded in
//!   `schema_migrations`. A database newer than this binary is refused.

mod feed;
mod jobs;
mod lease;
mod rows;
mod sources;
mod tls;

use george_core::EventKind;
pub use lease::Fence;
pub use tls::PostgresTls;
use tls::Server;

use crate::delegate::impl_store;
use crate::error::PostgresError;
use crate::{
    AgentView, ApplyReport, AttemptEnd, Catalog, CommentView, Created, EventView, EvidenceView, JobFilter, JobState,
    JobView, NewAttempt, Override, Result, Snapshot, SourceView, StatusChange, StoreError, StoredManifest,
};
use chrono::{DateTime, Utc};
use george_core::api::StepReport;
use george_core::api::{UsageRecord, UsageTotal};
use george_core::manifest::Kind;
use george_core::plan::NewJob;
use george_core::{AgentState, Clock, DesiredState, JobStatus, SystemClock};
use parking_lot::Mutex;
use postgres::error::SqlState;
use postgres::{Client, IsolationLevel, Transaction};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_leases.sql")),
    (3, include_str!("../../migrations/postgres/0003_attempts_by_start.sql")),
];

/// Advisory lock held while migrating ("george" in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x6765_6f72_6765_0001;
/// Advisory lock held from a transaction's first event insert to its commit.
const EVENT_LOG_LOCK: i64 = 0x6765_6f72_6765_0002;
/// How long a transaction may wait for its client before the server ends it.
const IDLE_IN_TRANSACTION_MS: u64 = 5_000;
/// Reader connections per store.
const READERS: usize = 4;
/// How often an operation runs before a lost race or connection is returned.
const MAX_TRIES: u32 = 5;

/// The PostgreSQL implementation of [`Store`].
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Session,
    readers: Vec<Session>,
    /// Leases only, so a renewal never waits behind a long write.
    lease: Session,
    /// The leader's term, checked by every write while set.
    fence: Mutex<Option<Fence>>,
    /// The reader tried first next (round robin when all are busy).
    next_reader: std::sync::atomic::AtomicUsize,
    clock: Arc<dyn Clock>,
    feed: Arc<feed::Feed>,
    database: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").field("database", &self.inner.database).finish()
    }
}

/// A write transaction with the time it runs at and the events it produced.
pub(crate) struct Writer<'a> {
    pub tx: Transaction<'a>,
    pub now: DateTime<Utc>,
    events: Vec<EventView>,
}

impl Writer<'_> {
    /// Adds an event to the audit log. It is inserted just before the
    /// transaction commits (see the module doc); its `seq` is known then.
    pub fn event(
        &mut self,
        job: Option<&str>,
        attempt: Option<u32>,
        kind: EventKind,
        actor: &str,
        data: Value,
    ) -> Result<()> {
        self.events.push(EventView {
            seq: 0,
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

/// The connection broke while a transaction committed, so whether it did is unknown.
#[derive(Debug, thiserror::Error)]
#[error("the connection to PostgreSQL broke while committing ({0}); the write may or may not have happened")]
struct CommitOutcomeUnknown(PostgresError);

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL or a
    /// `key=value` connection string; TLS as its `sslmode` says, unverified)
    /// with the system clock, and migrates it to the current schema. Blocks
    /// while it does, on a thread of its own, so it may be called from async code.
    pub fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, &PostgresTls::default(), Arc::new(SystemClock))
    }

    /// Connects with TLS settings `tls` (see [`PostgresTls`]).
    pub fn connect_tls(url: &str, tls: &PostgresTls) -> Result<Self> {
        Self::connect_with(url, tls, Arc::new(SystemClock))
    }

    /// Connects with a given clock (tests use a manual one).
    pub fn connect_with_clock(url: &str, clock: Arc<dyn Clock>) -> Result<Self> {
        Self::connect_with(url, &PostgresTls::default(), clock)
    }

    fn connect_with(url: &str, tls: &PostgresTls, clock: Arc<dyn Clock>) -> Result<Self> {
        let server = Server::new(parse_config(url)?, tls)?;
        let config = server.config.clone();
        let latest = off_runtime(|| -> Result<i64> {
            let mut client = server.connect()?;
            migrate(&mut client)?;
            Ok(client.query_one("SELECT COALESCE(MAX(seq), 0) AS seq FROM events", &[])?.try_get("seq")?)
        })?;
        let database = describe(&config);
        tracing::info!(database = %database, "connected to the PostgreSQL store");
        let feed = feed::Feed::start(server.clone(), latest);
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Session::new("writer", server.clone()),
                readers: (0..READERS).map(|_| Session::new("reader", server.clone())).collect(),
                next_reader: Default::default(),
                lease: Session::new("lease", server.clone()),
                fence: Mutex::new(None),
                clock,
                feed,
                database,
            }),
        })
    }

    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut Writer<'_>) -> Result<T> + Send + 'static,
    {
        let (value, _) = self.transact(f).await?;
        Ok(value)
    }

    /// Runs `f` in a write transaction (again after a lost race or connection),
    /// broadcasts the events it committed, and returns what it returned with them.
    async fn transact<T, F>(&self, f: F) -> Result<(T, Vec<EventView>)>
    where
        T: Send + 'static,
        F: Fn(&mut Writer<'_>) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let fence = inner.fence.lock().clone();
            let (value, events) =
                inner.writer.run(|client| run_write(client, inner.clock.as_ref(), fence.as_ref(), &f))?;
            // Right after the commit, before the listener hears of it: usually no extra read.
            inner.feed.local(events.clone());
            Ok((value, events))
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.reader().run(|client| {
                let mut tx = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?;
                let value = f(&mut tx)?;
                tx.commit()?;
                Ok(value)
            })
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }
}

/// One write transaction: `f`, then the events it produced, then the commit.
fn run_write<T>(
    client: &mut Client,
    clock: &dyn Clock,
    fence: Option<&Fence>,
    f: &impl Fn(&mut Writer<'_>) -> Result<T>,
) -> Result<(T, Vec<EventView>)> {
    let mut tx = client.transaction()?;
    if let Some(fence) = fence {
        lease::check(&mut tx, fence)?;
    }
    // Stored with microseconds: what a write returns (and broadcasts) equals what a read gives.
    let now = chrono::SubsecRound::trunc_subsecs(clock.now(), 6);
    let mut w = Writer { tx, now, events: Vec::new() };
    let value = f(&mut w)?;
    let Writer { mut tx, mut events, .. } = w;
    append_events(&mut tx, &mut events)?;
    // An error response means the commit failed; no response, that it may have happened.
    tx.commit().map_err(|e| match unanswered(&e) {
        true => StoreError::Backend(Box::new(CommitOutcomeUnknown(PostgresError(e)))),
        false => StoreError::from(e),
    })?;
    Ok((value, events))
}

/// Inserts a transaction's events under the event-log lock (see the module
/// doc), filling in their sequence numbers.
fn append_events(tx: &mut Transaction<'_>, events: &mut [EventView]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENT_LOG_LOCK])?;
    let insert = tx.prepare(
        "INSERT INTO events (ts, job_id, attempt, kind, actor, data) VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
    )?;
    for e in events.iter_mut() {
        let row = tx.query_one(&insert, &[&e.ts, &e.job_id, &e.attempt.map(i64::from), &e.kind, &e.actor, &e.data])?;
        e.seq = row.try_get("seq")?;
    }
    // Delivered at commit to every process's event listener (see `feed`).
    let last = events.last().map(|e| e.seq.to_string()).unwrap_or_default();
    tx.execute("SELECT pg_notify($1, $2)", &[&feed::CHANNEL, &last])?;
    Ok(())
}

impl Inner {
    /// A free reader, else the next in turn.
    fn reader(&self) -> &Session {
        let start = self.next_reader.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let n = self.readers.len();
        (0..n).map(|i| &self.readers[(start + i) % n]).find(|s| s.is_free()).unwrap_or(&self.readers[start % n])
    }
}

/// One connection to the server, opened on first use and reopened when the
/// server closed it.
struct Session {
    role: &'static str,
    server: Server,
    client: Mutex<Option<Client>>,
}

impl Session {
    fn new(role: &'static str, server: Server) -> Self {
        Self { role, server, client: Mutex::new(None) }
    }

    /// Whether no operation is running on it now (a hint: it may change at once).
    fn is_free(&self) -> bool {
        self.client.try_lock().is_some()
    }

    /// Runs `op` on the connection. Runs it again, up to [`MAX_TRIES`] times,
    /// when it lost a deadlock or serialization race or lost the connection
    /// before committing. Blocks: call it from `spawn_blocking`.
    fn run<T>(&self, mut op: impl FnMut(&mut Client) -> Result<T>) -> Result<T> {
        let mut slot = self.client.lock();
        let mut tries = 1;
        loop {
            let client = self.open(&mut slot)?;
            let err = match op(client) {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let lost = client.is_closed() || is_connection_loss(&err);
            if lost {
                // The client may not have noticed yet: reconnect next time.
                *slot = None;
            }
            match retry_reason(&err, lost) {
                Some(why) if tries < MAX_TRIES => {
                    tracing::warn!(role = self.role, tries, why, error = %err, "running a store operation again");
                    std::thread::sleep(Duration::from_millis(20) * tries);
                    tries += 1;
                }
                _ => return Err(err),
            }
        }
    }

    fn open<'s>(&self, slot: &'s mut Option<Client>) -> Result<&'s mut Client> {
        if slot.as_ref().is_some_and(Client::is_closed) {
            tracing::warn!(role = self.role, "the connection to PostgreSQL was closed; reconnecting");
            *slot = None;
        }
        if slot.is_none() {
            *slot = Some(self.server.connect()?);
        }
        slot.as_mut().ok_or_else(|| StoreError::Backend("no connection to PostgreSQL".into()))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A client owns a runtime, which must not be dropped on an async worker thread.
        if let Some(client) = self.client.get_mut().take() {
            let _ = std::thread::Builder::new().name("george-pg-close".into()).spawn(move || drop(client));
        }
    }
}

/// Whether the server never answered: the connection closed or its socket failed.
fn unanswered(e: &postgres::Error) -> bool {
    e.is_closed() || std::error::Error::source(e).is_some_and(|cause| cause.is::<std::io::Error>())
}

/// Whether `err` says the connection is gone, even before the client has
/// noticed: no answer, or the server shutting down or terminating it.
fn is_connection_loss(err: &StoreError) -> bool {
    let StoreError::Backend(source) = err else { return false };
    let Some(PostgresError(e)) = source.downcast_ref::<PostgresError>() else { return false };
    let gone = [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW];
    unanswered(e) || e.code().is_some_and(|c| gone.contains(c) || c.code().starts_with("08"))
}

/// Why an operation that failed with `err` may run again, if it may.
fn retry_reason(err: &StoreError, connection_lost: bool) -> Option<&'static str> {
    let StoreError::Backend(source) = err else { return None };
    if source.is::<CommitOutcomeUnknown>() {
        return None;
    }
    if connection_lost {
        return Some("the connection was lost");
    }
    let code = source.downcast_ref::<PostgresError>()?.0.code()?;
    if *code == SqlState::T_R_DEADLOCK_DETECTED {
        Some("deadlock")
    } else if *code == SqlState::T_R_SERIALIZATION_FAILURE {
        Some("serialization failure")
    } else {
        None
    }
}

fn parse_config(url: &str) -> Result<postgres::Config> {
    let mut config: postgres::Config =
        url.parse().map_err(|e| StoreError::Invalid(format!("invalid PostgreSQL connection URL: {e}")))?;
    if config.get_application_name().is_none() {
        config.application_name("george");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    // A transaction of ours never waits for its client: one that idles is a
    // paused or stuck process. Ending it releases its row locks, so a paused
    // leader's open write (which holds its lease row `FOR SHARE`) cannot stop
    // a standby from taking over, and the paused write never commits.
    let options = config.get_options().map(str::to_string).unwrap_or_default();
    config.options(format!("{options} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}").trim());
    Ok(config)
}

/// Where the store is, without credentials: `host:port/dbname`.
fn describe(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or_default())
}

/// Runs `f` on a thread of its own: the synchronous client blocks on a
/// runtime of its own, which an async worker thread must not do.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
}

fn migrate(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations \
         (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )?;
    let version: i64 =
        tx.query_one("SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations", &[])?.try_get("version")?;
    let latest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if version > latest {
        return Err(StoreError::Invalid(format!(
            "the database schema is version {version} but this george only knows up to {latest}; upgrade george"
        )));
    }
    for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > version) {
        tx.batch_execute(sql)?;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[v])?;
        tracing::info!(version = v, "applied a store migration");
    }
    tx.commit()?;
    Ok(())
}

impl_store!(PostgresStore {

    async fn agent_comment(&self, id: &str, attempt: u32, body: &str) -> Result<CommentView> {
        let (id, body) = (id.to_string(), body.to_string());
        self.write(move |w| {
            jobs::fence(&mut w.tx, &id, attempt)?;
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
            let row = c.query_opt("SELECT value FROM settings WHERE key = $1", &[&key])?;
            Ok(row.map(|r| r.try_get("value")).transpose()?)
        })
        .await
    }

    async fn set_setting(&self, key: &str, value: Option<Value>) -> Result<()> {
        let key = key.to_string();
        self.write(move |w| {
            match &value {
                Some(v) => w.tx.execute(
                    "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
                    &[&key, v, &w.now],
                )?,
                None => w.tx.execute("DELETE FROM settings WHERE key = $1", &[&key])?,
            };
            Ok(())
        })
        .await
    }

    async fn settings(&self, prefix: &str) -> Result<Vec<(String, Value)>> {
        let prefix = prefix.to_string();
        self.read(move |c| {
            let rows =
                c.query("SELECT key, value FROM settings WHERE starts_with(key, $1) ORDER BY key", &[&prefix])?;
            rows.iter().map(|r| Ok((r.try_get("key")?, r.try_get("value")?))).collect()
        })
        .await
    }

    async fn record_usage(&self, record: &UsageRecord) -> Result<()> {
        let r = record.clone();
        self.write(move |w| {
            w.tx.execute(
                "INSERT INTO llm_usage (ts, job_id, attempt, agent_spec, chapter, provider, model, input_tokens, \
                 output_tokens, streamed) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &r.ts,
                    &r.job_id,
                    &i64::from(r.attempt),
                    &r.agent_spec,
                    &r.chapter,
                    &r.provider,
                    &r.model,
                    &rows::bigint(r.input_tokens, "input_tokens")?,
                    &rows::bigint(r.output_tokens, "output_tokens")?,
                    &r.streamed,
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn usage_records(&self, since: DateTime<Utc>, job: Option<&str>) -> Result<Vec<UsageRecord>> {
        let job = job.map(str::to_string);
        self.read(move |c| {
            let rows = c.query(
                "SELECT ts, job_id, attempt, agent_spec, chapter, provider, model, input_tokens, output_tokens, streamed \
                 FROM llm_usage WHERE ts >= $1 AND ($2::text IS NULL OR job_id = $2) ORDER BY id",
                &[&since, &job],
            )?;
            rows.iter().map(rows::usage_record).collect()
        })
        .await
    }

    async fn usage_totals(&self, since: DateTime<Utc>) -> Result<Vec<UsageTotal>> {
        self.read(move |c| {
            let rows = c.query(
                "SELECT chapter, agent_spec, COUNT(*) AS invocations, SUM(input_tokens)::BIGINT AS input_tokens, \
                 SUM(output_tokens)::BIGINT AS output_tokens FROM llm_usage \
                 WHERE ts >= $1 GROUP BY chapter, agent_spec ORDER BY chapter, agent_spec",
                &[&since],
            )?;
            rows.iter().map(rows::usage_total).collect()
        })
        .await
    }

    async fn latest_seq(&self) -> Result<i64> {
        self.read(|c| Ok(c.query_one("SELECT COALESCE(MAX(seq), 0) AS seq FROM events", &[])?.try_get("seq")?)).await
    }

    fn subscribe(&self) -> broadcast::Receiver<EventView> {
        self.inner.feed.tx.subscribe()
    }

    async fn record_event(&self, job: Option<&str>, kind: EventKind, actor: &str, data: Value) -> Result<EventView> {
        let (job, actor) = (job.map(str::to_string), actor.to_string());
        let (_, events) = self.transact(move |w| w.event(job.as_deref(), None, kind, &actor, data.clone())).await?;
        events.last().cloned().ok_or_else(|| StoreError::Backend("the recorded event was not committed".into()))
    }

    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>> {
        self.read(jobs::count_by_status).await
    }
});
