//! The store conformance suite against the SQLite store.

use george_store::{SqliteStore, Store};
use std::sync::Arc;

george_store::store_conformance_tests!(
    async {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("george.db")).unwrap();
        (Arc::new(store) as Arc<dyn Store>, Box::new(dir) as Box<dyn std::any::Any + Send>)
    },
    second: |guard| {
        let dir = guard.downcast_ref::<tempfile::TempDir>().expect("the guard is the store's directory");
        Arc::new(SqliteStore::open(dir.path().join("george.db")).unwrap())
    }
);

#[tokio::test]
async fn reopening_keeps_data_and_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("george.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.create_job(george_store::conformance::job("keep", "api"), "t").await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.get_job("keep").await.unwrap().is_some());
}

/// How SQLite runs `sql`: the detail of each step of its plan.
fn plan(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A database of version 4 is upgraded in place, and the queries whose cost
/// grew with history then use their indexes: the newest attempts (read
/// when every attempt ends) without a scan and sort of every attempt ever
/// made, the active jobs without reading the finished ones, and the
/// finished ones by age.
#[tokio::test]
async fn a_version_4_database_is_upgraded_and_the_hot_queries_use_their_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("george.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP INDEX attempts_by_start; DROP INDEX jobs_by_status_age; DROP INDEX jobs_by_created; DROP INDEX attempts_by_spec; \
         CREATE INDEX jobs_by_status ON jobs(status); \
         DROP TRIGGER event_floor_only_rises; DROP TABLE event_floor; DROP TRIGGER events_append_only_delete; \
         CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events \
         BEGIN SELECT RAISE(ABORT, 'events are append-only'); END; \
         ALTER TABLE jobs DROP COLUMN parallelism; ALTER TABLE jobs DROP COLUMN fail_fast; \
         ALTER TABLE steps DROP COLUMN started_at; ALTER TABLE steps DROP COLUMN ended_at; \
         ALTER TABLE attempts DROP COLUMN reports_seq; ALTER TABLE jobs DROP COLUMN labels; PRAGMA user_version = 4;",
    )
    .unwrap();
    drop(conn);
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, 8);
    let agents =
        plan(&conn, "SELECT job_id, number FROM attempts ORDER BY started_at DESC, job_id, number DESC LIMIT 200");
    assert_eq!(agents, ["SCAN attempts USING COVERING INDEX attempts_by_start"], "no sort of every attempt");
    let active = plan(&conn, "SELECT id FROM jobs WHERE status IN ('pending', 'in_progress', 'blocked', 'paused')");
    assert_eq!(active, ["SEARCH jobs USING COVERING INDEX jobs_by_status_age (status=?)"]);
    let finished = plan(
        &conn,
        "SELECT id FROM jobs WHERE status = 'completed' AND updated_at < '2026' ORDER BY updated_at, id LIMIT 10",
    );
    assert_eq!(finished, ["SEARCH jobs USING COVERING INDEX jobs_by_status_age (status=? AND updated_at<?)"]);
    let page = plan(&conn, "SELECT id FROM jobs ORDER BY created_at DESC, id DESC LIMIT 500");
    assert_eq!(page, ["SCAN jobs USING COVERING INDEX jobs_by_created"], "a page of the job list sorts nothing");
}

#[tokio::test]
async fn a_newer_schema_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("george.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(err.contains("upgrade george"), "{err}");
}

#[tokio::test]
async fn the_event_log_is_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("george.db");
    let store = SqliteStore::open(&path).unwrap();
    store.create_job(george_store::conformance::job("j", "api"), "t").await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert!(conn.execute("DELETE FROM events", []).is_err());
    assert!(conn.execute("UPDATE events SET kind = 'x'", []).is_err());
    // Below the compaction floor events may go; at or above it, still not.
    store.create_job(george_store::conformance::job("k", "api"), "t").await.unwrap();
    let first = store.events_since(0, 1, None).await.unwrap()[0].seq;
    store.raise_event_floor(first + 1).await.unwrap();
    assert!(conn.execute("DELETE FROM events WHERE seq > ?1", [first]).is_err());
    assert!(conn.execute("UPDATE event_floor SET seq = 0", []).is_err(), "the floor never goes down");
    assert_eq!(conn.execute("DELETE FROM events WHERE seq = ?1", [first]).unwrap(), 1);
}
