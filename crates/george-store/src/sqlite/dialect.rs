//! [`Db`] over a rusqlite connection: `$N` placeholders become `?N`,
//! times are fixed-width RFC 3339 text (so they sort), JSON is text, and
//! nothing needs a row lock (one connection writes).

use crate::dialect::{event_args, Arg, ColumnError, Db, Get, INSERT_EVENT};
use crate::{Result, StoreError};
use chrono::{DateTime, Utc};
use george_core::record::Event;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::Connection;

/// A connection (or a transaction, through its `Deref`).
pub(crate) struct Lite<'c>(pub &'c Connection);

/// Timestamps are stored as fixed-width RFC 3339 text in UTC, so they sort.
pub fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The statement with SQLite's numbered placeholders (`?N` for `$N`).
fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Null => ToSqlOutput::Owned(SqlValue::Null),
            Arg::Int(v) => ToSqlOutput::Owned(SqlValue::Integer(*v)),
            Arg::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Arg::Flag(b) => ToSqlOutput::Owned(SqlValue::Integer(i64::from(*b))),
            Arg::Time(t) => ToSqlOutput::Owned(SqlValue::Text(ts(*t))),
            Arg::Json(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

impl Db for Lite<'_> {
    const LOCK: &'static str = "";

    fn label(key_param: &str) -> String {
        // `$."key"`: a quoted member name, whatever the key holds.
        format!("json_extract(labels, '$.' || json_quote({key_param}))")
    }

    fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let mut stmt = self.0.prepare_cached(&placeholders(sql))?;
        Ok(stmt.execute(rusqlite::params_from_iter(args))? as u64)
    }

    fn each(&mut self, sql: &str, args: &[Arg<'_>], row: &mut dyn FnMut(&dyn Get) -> Result<()>) -> Result<()> {
        let mut stmt = self.0.prepare_cached(&placeholders(sql))?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        while let Some(r) = rows.next()? {
            row(&LiteRow(r))?;
        }
        Ok(())
    }

    fn log_event(&mut self, e: &mut Event) -> Result<()> {
        self.exec(INSERT_EVENT, &event_args(e)?)?;
        e.seq = self.0.last_insert_rowid();
        Ok(())
    }
}

struct LiteRow<'r, 's>(&'r rusqlite::Row<'s>);

fn mismatch(column: &str, expected: &'static str) -> StoreError {
    StoreError::Backend(Box::new(ColumnError::Type { column: column.into(), expected }))
}

impl LiteRow<'_, '_> {
    fn text_ref(&self, column: &str) -> Result<Option<&str>> {
        match self.0.get_ref(column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(t) => Ok(Some(std::str::from_utf8(t).map_err(|_| mismatch(column, "UTF-8 text"))?)),
            _ => Err(mismatch(column, "text")),
        }
    }
}

impl Get for LiteRow<'_, '_> {
    fn text(&self, column: &str) -> Result<Option<String>> {
        Ok(self.text_ref(column)?.map(str::to_string))
    }

    fn int(&self, column: &str) -> Result<Option<i64>> {
        match self.0.get_ref(column)? {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(i) => Ok(Some(i)),
            _ => Err(mismatch(column, "an integer")),
        }
    }

    fn flag(&self, column: &str) -> Result<Option<bool>> {
        Ok(self.int(column)?.map(|i| i != 0))
    }

    fn time(&self, column: &str) -> Result<Option<DateTime<Utc>>> {
        self.text_ref(column)?
            .map(|t| {
                DateTime::parse_from_rfc3339(t).map(|t| t.to_utc()).map_err(|_| mismatch(column, "an RFC 3339 time"))
            })
            .transpose()
    }

    fn json_text(&self, column: &str) -> Result<Option<String>> {
        self.text(column)
    }
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn dollar_placeholders_become_numbered_question_marks() {
        assert_eq!(placeholders("SELECT $1, $12 WHERE a = '$' AND b = $3"), "SELECT ?1, ?12 WHERE a = '$' AND b = ?3");
    }
}
