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

/// A database of the previous version is upgraded in place, and the newest
/// attempts are then read through an index, not by scanning and sorting
/// every attempt ever made (a cost per job that grew with history).
#[tokio::test]
async fn a_version_4_database_gets_the_attempts_index_and_the_agent_list_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("george.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("DROP INDEX attempts_by_start; PRAGMA user_version = 4;").unwrap();
    drop(conn);
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, 5);
    let plan: Vec<String> = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT job_id, number, agent_spec, runtime, handle, state, started_at, last_heartbeat, \
             ended_at, exit_code, outcome FROM attempts ORDER BY started_at DESC, job_id, number DESC LIMIT 200",
        )
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(plan, ["SCAN attempts USING INDEX attempts_by_start"], "no sort of every attempt");
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
}
