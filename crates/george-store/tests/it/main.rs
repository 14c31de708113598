//! The store's integration tests, in one binary: the conformance suite
//! against SQLite and against a real PostgreSQL server, and what matters
//! when several engines share one database.

mod postgres;
mod sqlite_conformance;
