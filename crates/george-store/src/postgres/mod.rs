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
//! - **A setting read inside a write** (an attempt's hold, see
//!   `NewAttempt::held_by`) is taken after the setting's advisory lock, in
//!   shared mode (`SETTING_LOCK_CLASS`); every setting write takes it
//!   exclusively. A hold committing meanwhile is waited for and then seen
//!   (each statement of a `READ COMMITTED` transaction sees what committed
//!   before it); an attempt that committed first is seen by whatever the
//!   hold's writer lists after its commit.
//! - **Reads** run in `REPEATABLE READ READ ONLY` transactions, so a read of
//!   several queries sees one snapshot.
//! - **Events** reach the subscribers of every process on the database, in
//!   `seq` order (see `feed`: `NOTIFY` at commit, one listener per store).
//! - **Migrations** are numbered SQL files under `migrations/postgres/`,
//!   applied in one transaction that holds `pg_advisory_xact_lock(MIGRATION_LOCK)`
//!   (two engines starting together take turns) and recorded in
//!   `schema_migrations`. A database newer than this binary is refused.

mod dialect;
mod feed;
mod lease;
mod tls;

pub use lease::Fence;
pub use tls::PostgresTls;
use tls::Server;

use crate::delegate::impl_store;
use crate::dialect::{args, event_args, Db, Writer, INSERT_EVENT};
use crate::error::PostgresError;
use crate::{Event, Result, StoreError};
use dialect::{Pg, Statements};
use george_core::{Clock, SystemClock};
use parking_lot::Mutex;
use postgres::error::SqlState;
use postgres::{Client, IsolationLevel, Transaction};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_leases.sql")),
    (3, include_str!("../../migrations/postgres/0003_attempts_by_start.sql")),
    (4, include_str!("../../migrations/postgres/0004_retention.sql")),
    (5, include_str!("../../migrations/postgres/0005_step_graph.sql")),
    (6, include_str!("../../migrations/postgres/0006_labels.sql")),
];

/// Advisory lock held while migrating ("george" in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x6765_6f72_6765_0001;
/// Advisory lock held from a transaction's first event insert to its commit.
const EVENT_LOG_LOCK: i64 = 0x6765_6f72_6765_0002;
/// The advisory lock class of settings (`"geos"` in ASCII): a setting's
/// lock is `(SETTING_LOCK_CLASS, hashtext(key))`, apart from the single-key
/// locks above. A setting's writer holds it exclusively; an attempt's
/// transaction holds its hold's in shared mode while it looks.
pub const SETTING_LOCK_CLASS: i32 = 0x6765_6f73;
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
        F: Fn(&mut Writer<Pg<'_, '_>>) -> Result<T> + Send + 'static,
    {
        let (value, _) = self.transact(f).await?;
        Ok(value)
    }

    /// Runs `f` in a write transaction (again after a lost race or connection),
    /// broadcasts the events it committed, and returns what it returned with them.
    async fn transact<T, F>(&self, f: F) -> Result<(T, Vec<Event>)>
    where
        T: Send + 'static,
        F: Fn(&mut Writer<Pg<'_, '_>>) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let fence = inner.fence.lock().clone();
            let (value, events) = inner.writer.run(|conn| run_write(conn, inner.clock.as_ref(), fence.as_ref(), &f))?;
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
        F: Fn(&mut Pg<'_, '_>) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner.reader().run(|conn| {
                let mut tx = conn
                    .client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?;
                let value = f(&mut Pg { tx: &mut tx, statements: &mut conn.statements })?;
                tx.commit()?;
                Ok(value)
            })
        })
        .await
        .map_err(|e| StoreError::Backend(Box::new(e)))?
    }

    fn events(&self) -> &broadcast::Sender<Event> {
        &self.inner.feed.tx
    }
}

/// One write transaction: `f`, then the events it produced, then the commit.
fn run_write<T>(
    conn: &mut Conn,
    clock: &dyn Clock,
    fence: Option<&Fence>,
    f: &impl Fn(&mut Writer<Pg<'_, '_>>) -> Result<T>,
) -> Result<(T, Vec<Event>)> {
    let Conn { client, statements } = conn;
    let mut tx = client.transaction()?;
    if let Some(fence) = fence {
        lease::check(&mut tx, fence)?;
    }
    // Stored with microseconds: what a write returns (and broadcasts) equals what a read gives.
    let now = chrono::SubsecRound::trunc_subsecs(clock.now(), 6);
    let mut w = Writer::new(Pg { tx: &mut tx, statements }, now);
    let value = f(&mut w)?;
    let mut events = w.events;
    append_events(&mut tx, statements, &mut events)?;
    // An error response means the commit failed; no response, that it may have happened.
    tx.commit().map_err(|e| match unanswered(&e) {
        true => StoreError::Backend(Box::new(CommitOutcomeUnknown(PostgresError(e)))),
        false => StoreError::from(e),
    })?;
    Ok((value, events))
}

/// Inserts a transaction's events under the event-log lock (see the module
/// doc), filling in their sequence numbers.
fn append_events(tx: &mut Transaction<'_>, statements: &mut Statements, events: &mut [Event]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut db = Pg { tx, statements };
    db.exec("SELECT pg_advisory_xact_lock($1)", args![EVENT_LOG_LOCK])?;
    for e in events.iter_mut() {
        e.seq = db.one(&format!("{INSERT_EVENT} RETURNING seq"), &event_args(e)?, |r| r.i64("seq"))?;
    }
    // Delivered at commit to every process's event listener (see `feed`).
    let last = events.last().map(|e| e.seq.to_string()).unwrap_or_default();
    db.exec("SELECT pg_notify($1, $2)", args![feed::CHANNEL, &last])?;
    Ok(())
}

impl Inner {
    /// A free reader, else the next in turn.
    fn reader(&self) -> &Session {
        crate::readers::pick(&self.readers, &self.next_reader, Session::is_free)
    }
}

/// One connection to the server, opened on first use and reopened when the
/// server closed it.
struct Session {
    role: &'static str,
    server: Server,
    client: Mutex<Option<Conn>>,
}

/// A connection and the statements prepared on it.
struct Conn {
    client: Client,
    statements: Statements,
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
    fn run<T>(&self, mut op: impl FnMut(&mut Conn) -> Result<T>) -> Result<T> {
        let mut slot = self.client.lock();
        let mut tries = 1;
        loop {
            let conn = self.open(&mut slot)?;
            let err = match op(conn) {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let lost = conn.client.is_closed() || is_connection_loss(&err);
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

    fn open<'s>(&self, slot: &'s mut Option<Conn>) -> Result<&'s mut Conn> {
        if slot.as_ref().is_some_and(|c| c.client.is_closed()) {
            tracing::warn!(role = self.role, "the connection to PostgreSQL was closed; reconnecting");
            *slot = None;
        }
        if slot.is_none() {
            *slot = Some(Conn { client: self.server.connect()?, statements: Statements::default() });
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

impl_store!(PostgresStore);
