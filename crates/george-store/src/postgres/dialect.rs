//! [`Db`] over a PostgreSQL transaction: each statement is prepared once
//! per connection and kept ([`Statements`]), so running it again is one
//! round trip; arguments are encoded as the server's inferred parameter
//! types ask (an integer as `INT4` or `INT8`, JSON as `JSON` or `JSONB`);
//! `SELECT .. FOR UPDATE` locks rows; events are inserted at commit.

use crate::dialect::{Arg, ColumnError, Db, Get};
use crate::{Result, StoreError};
use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Utc};
use george_core::record::Event;
use postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use postgres::{Statement, Transaction};
use std::collections::HashMap;
use std::error::Error;

/// Statements a connection has prepared, by their text.
#[derive(Default)]
pub(crate) struct Statements(HashMap<String, Statement>);

/// More distinct statements than the store writes: only lists with many
/// filters are built at run time; past this the cache starts over.
const MAX_STATEMENTS: usize = 512;

/// A transaction and its connection's prepared statements.
pub(crate) struct Pg<'a, 't> {
    pub tx: &'a mut Transaction<'t>,
    pub statements: &'a mut Statements,
}

impl Pg<'_, '_> {
    fn prepare(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.0.get(sql) {
            return Ok(s.clone());
        }
        let statement = self.tx.prepare(sql)?;
        if self.statements.0.len() >= MAX_STATEMENTS {
            self.statements.0.clear();
        }
        self.statements.0.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

fn params<'a>(args: &'a [Arg<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

impl Db for Pg<'_, '_> {
    const LOCK: &'static str = " FOR UPDATE";

    fn lock_setting(&mut self, key: &str, shared: bool) -> Result<()> {
        let sql = if shared {
            "SELECT pg_advisory_xact_lock_shared($1::int4, hashtext($2))"
        } else {
            "SELECT pg_advisory_xact_lock($1::int4, hashtext($2))"
        };
        let statement = self.prepare(sql)?;
        self.tx.execute(&statement, &[&super::SETTING_LOCK_CLASS, &key])?;
        Ok(())
    }

    fn label(key_param: &str) -> String {
        format!("(labels ->> {key_param}::text)")
    }

    fn exec(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let statement = self.prepare(sql)?;
        Ok(self.tx.execute(&statement, &params(args))?)
    }

    fn each(&mut self, sql: &str, args: &[Arg<'_>], row: &mut dyn FnMut(&dyn Get) -> Result<()>) -> Result<()> {
        let statement = self.prepare(sql)?;
        for r in self.tx.query(&statement, &params(args))? {
            row(&r)?;
        }
        Ok(())
    }

    fn log_event(&mut self, _: &mut Event) -> Result<()> {
        // Inserted, with its `seq`, right before the commit (see `append_events`).
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a {value} argument cannot be sent as PostgreSQL type {ty}")]
struct ArgType {
    value: &'static str,
    ty: Type,
}

impl ToSql for Arg<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Int(v) => match *ty {
                Type::INT8 => v.to_sql_checked(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql_checked(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql_checked(ty, out),
                _ => Err(Box::new(ArgType { value: "integer", ty: ty.clone() })),
            },
            Arg::Text(s) => s.to_sql_checked(ty, out),
            Arg::Flag(b) => b.to_sql_checked(ty, out),
            Arg::Time(t) => t.to_sql_checked(ty, out),
            Arg::Json(text) => match *ty {
                Type::JSONB => {
                    out.put_u8(1); // the JSONB binary format's version
                    out.put_slice(text.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSON => {
                    out.put_slice(text.as_bytes());
                    Ok(IsNull::No)
                }
                _ => Err(Box::new(ArgType { value: "JSON", ty: ty.clone() })),
            },
        }
    }

    /// Any type: `to_sql` checks the pair of argument and type.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Any integer column as `i64`.
struct AnyInt(i64);

impl<'r> FromSql<'r> for AnyInt {
    fn from_sql(ty: &Type, raw: &'r [u8]) -> std::result::Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(AnyInt(match *ty {
            Type::INT2 => i16::from_sql(ty, raw)?.into(),
            Type::INT4 => i32::from_sql(ty, raw)?.into(),
            _ => i64::from_sql(ty, raw)?,
        }))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT2 | Type::INT4 | Type::INT8)
    }
}

/// A JSON or JSONB column as its text.
struct JsonText(String);

impl<'r> FromSql<'r> for JsonText {
    fn from_sql(ty: &Type, raw: &'r [u8]) -> std::result::Result<Self, Box<dyn Error + Sync + Send>> {
        let raw = match (*ty == Type::JSONB, raw.split_first()) {
            (true, Some((1, rest))) => rest,
            (true, _) => return Err("unsupported JSONB encoding version".into()),
            (false, _) => raw,
        };
        Ok(JsonText(std::str::from_utf8(raw)?.to_string()))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }
}

fn column<'r, T: FromSql<'r>>(row: &'r postgres::Row, column: &str) -> Result<Option<T>> {
    row.try_get::<_, Option<T>>(column)
        .map_err(|e| StoreError::Backend(Box::new(ColumnError::Driver { column: column.into(), cause: e.to_string() })))
}

impl Get for postgres::Row {
    fn text(&self, c: &str) -> Result<Option<String>> {
        column(self, c)
    }

    fn int(&self, c: &str) -> Result<Option<i64>> {
        Ok(column::<AnyInt>(self, c)?.map(|i| i.0))
    }

    fn flag(&self, c: &str) -> Result<Option<bool>> {
        column(self, c)
    }

    fn time(&self, c: &str) -> Result<Option<DateTime<Utc>>> {
        column(self, c)
    }

    fn json_text(&self, c: &str) -> Result<Option<String>> {
        Ok(column::<JsonText>(self, c)?.map(|j| j.0))
    }
}
