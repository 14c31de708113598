//! The narrow layer between the store's transitions and a database: a
//! statement with its arguments goes in ([`Db`]), rows come out ([`Get`]).
//! Every transition is written once, over this layer, in SQL both SQLite
//! and PostgreSQL understand (`$1` placeholders, `CAST(.. AS ..)`,
//! `ON CONFLICT`, `RETURNING`); each backend implements it for its driver
//! (`sqlite::dialect`, `postgres::dialect`) and says how it locks rows and
//! when it appends events.

use crate::{Result, StoreError};
use chrono::{DateTime, Utc};
use george_core::record::Event;
use george_core::EventKind;
use serde_json::Value;

/// One argument of a statement, in the few types the schema uses. Each
/// backend stores it as its column wants (a time as text or `TIMESTAMPTZ`,
/// JSON as text or `JSONB`).
#[derive(Debug, Clone)]
pub(crate) enum Arg<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Flag(bool),
    Time(DateTime<Utc>),
    /// Serialized JSON.
    Json(String),
}

impl<'a> Arg<'a> {
    /// A value as JSON.
    pub fn json(value: &impl serde::Serialize) -> Result<Arg<'a>> {
        Ok(Arg::Json(serde_json::to_string(value)?))
    }

    /// A count or size (stored as a signed 64-bit integer); refused when it does not fit.
    pub fn count(n: u64, what: &str) -> Result<Arg<'a>> {
        i64::try_from(n).map(Arg::Int).map_err(|_| StoreError::Invalid(format!("{what} {n} is too large to store")))
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v)
    }
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<u32> for Arg<'_> {
    fn from(v: u32) -> Self {
        Arg::Int(v.into())
    }
}

impl From<i32> for Arg<'_> {
    fn from(v: i32) -> Self {
        Arg::Int(v.into())
    }
}

impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Flag(v)
    }
}

impl From<DateTime<Utc>> for Arg<'_> {
    fn from(v: DateTime<Utc>) -> Self {
        Arg::Time(v)
    }
}

impl<'a, T: Into<Arg<'a>>> From<Option<T>> for Arg<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Arg::Null, Into::into)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        v.as_deref().map_or(Arg::Null, Arg::Text)
    }
}

/// The arguments of a statement: `args![a, b, c]`.
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        &[$($crate::dialect::Arg::from($arg)),*]
    };
}
pub(crate) use args;

/// One row of a result, read by column name. A value of another type than
/// asked for is an error, never a panic.
pub(crate) trait Get {
    fn text(&self, column: &str) -> Result<Option<String>>;
    fn int(&self, column: &str) -> Result<Option<i64>>;
    fn flag(&self, column: &str) -> Result<Option<bool>>;
    fn time(&self, column: &str) -> Result<Option<DateTime<Utc>>>;
    /// A JSON column as its text.
    fn json_text(&self, column: &str) -> Result<Option<String>>;
}

/// A column that held NULL where a value was expected, or a value out of range.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ColumnError {
    #[error("column `{0}` is NULL")]
    Null(String),
    #[error("column `{column}` does not hold {expected}")]
    Type { column: String, expected: &'static str },
    #[error("column `{column}`: {cause}")]
    Driver { column: String, cause: String },
    #[error("column `{column}` holds {value}, which is out of range")]
    OutOfRange { column: String, value: i64 },
}

fn present<T>(column: &str, v: Option<T>) -> Result<T> {
    v.ok_or_else(|| StoreError::Backend(Box::new(ColumnError::Null(column.into()))))
}

fn to_u32(column: &str, v: i64) -> Result<u32> {
    u32::try_from(v)
        .map_err(|_| StoreError::Backend(Box::new(ColumnError::OutOfRange { column: column.into(), value: v })))
}

impl dyn Get + '_ {
    pub fn string(&self, column: &str) -> Result<String> {
        present(column, self.text(column)?)
    }

    pub fn i64(&self, column: &str) -> Result<i64> {
        present(column, self.int(column)?)
    }

    pub fn u32(&self, column: &str) -> Result<u32> {
        to_u32(column, self.i64(column)?)
    }

    pub fn opt_u32(&self, column: &str) -> Result<Option<u32>> {
        self.int(column)?.map(|v| to_u32(column, v)).transpose()
    }

    pub fn u64(&self, column: &str) -> Result<u64> {
        let v = self.i64(column)?;
        u64::try_from(v)
            .map_err(|_| StoreError::Backend(Box::new(ColumnError::OutOfRange { column: column.into(), value: v })))
    }

    pub fn bool(&self, column: &str) -> Result<bool> {
        present(column, self.flag(column)?)
    }

    pub fn ts(&self, column: &str) -> Result<DateTime<Utc>> {
        present(column, self.time(column)?)
    }

    /// A text column holding one of George's string enums (status, kind, ...).
    pub fn parsed<T: std::str::FromStr>(&self, column: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.string(column)?;
        text.parse().map_err(|e: T::Err| StoreError::Backend(format!("column `{column}`: {e}").into()))
    }

    /// A JSON column as a typed value.
    pub fn json<T: serde::de::DeserializeOwned>(&self, column: &str) -> Result<T> {
        Ok(serde_json::from_str(&present(column, self.json_text(column)?)?)?)
    }
}

/// A connection or transaction of one backend.
pub(crate) trait Db {
    /// What makes a `SELECT` lock the rows it reads until the transaction
    /// ends (`FOR UPDATE`), where other writers could interleave; empty
    /// where writes are serialized anyway.
    const LOCK: &'static str;

    /// The SQL of the value of the label whose key is the parameter
    /// `key_param` in the `labels` column (NULL without it).
    fn label(key_param: &str) -> String;

    /// Runs a statement; returns how many rows it changed.
    fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64>;

    /// Runs a query and hands each row to `row`.
    fn each(&mut self, sql: &str, args: &[Arg<'_>], row: &mut dyn FnMut(&dyn Get) -> Result<()>) -> Result<()>;

    /// Records an event of the transaction: SQLite inserts it now and fills
    /// in its `seq`; PostgreSQL inserts a transaction's events at its commit.
    fn log_event(&mut self, event: &mut Event) -> Result<()>;

    /// Holds the setting `key` until the transaction ends, shared (to read
    /// it: a write of it in flight is waited for, then seen) or exclusive (to
    /// write it: a reader in flight commits first). Nothing where writes are
    /// serialized anyway.
    fn lock_setting(&mut self, _key: &str, _shared: bool) -> Result<()> {
        Ok(())
    }

    /// Every row, mapped.
    fn all<T>(&mut self, sql: &str, args: &[Arg<'_>], map: impl Fn(&dyn Get) -> Result<T>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.each(sql, args, &mut |r| {
            out.push(map(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row, mapped, if there is one.
    fn opt<T>(&mut self, sql: &str, args: &[Arg<'_>], map: impl Fn(&dyn Get) -> Result<T>) -> Result<Option<T>> {
        let mut out = None;
        self.each(sql, args, &mut |r| {
            if out.is_none() {
                out = Some(map(r)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row, mapped; a query that returns none is an error.
    fn one<T>(&mut self, sql: &str, args: &[Arg<'_>], map: impl Fn(&dyn Get) -> Result<T>) -> Result<T> {
        self.opt(sql, args, map)?.ok_or_else(|| StoreError::Backend(format!("no row from `{sql}`").into()))
    }
}

/// The statement that appends an event, with [`event_args`].
pub(crate) const INSERT_EVENT: &str =
    "INSERT INTO events (ts, job_id, attempt, kind, actor, data) VALUES ($1, $2, $3, $4, $5, $6)";

/// The arguments of [`INSERT_EVENT`] for `e`.
pub(crate) fn event_args(e: &Event) -> Result<[Arg<'_>; 6]> {
    Ok([
        Arg::Time(e.ts),
        Arg::from(&e.job_id),
        Arg::from(e.attempt),
        Arg::Text(e.kind.as_str()),
        Arg::Text(&e.actor),
        Arg::json(&e.data)?,
    ])
}

/// A write transaction: the database, the time it runs at, and the events
/// it produced (broadcast after the commit).
pub(crate) struct Writer<D> {
    pub db: D,
    pub now: DateTime<Utc>,
    pub events: Vec<Event>,
}

impl<D: Db> Writer<D> {
    pub fn new(db: D, now: DateTime<Utc>) -> Self {
        Self { db, now, events: Vec::new() }
    }

    /// Appends an event to the audit log.
    pub fn event(
        &mut self,
        job: Option<&str>,
        attempt: Option<u32>,
        kind: EventKind,
        actor: &str,
        data: Value,
    ) -> Result<()> {
        let mut event = Event {
            seq: 0,
            ts: self.now,
            job_id: job.map(str::to_string),
            attempt,
            kind,
            actor: actor.to_string(),
            data,
        };
        self.db.log_event(&mut event)?;
        self.events.push(event);
        Ok(())
    }
}
