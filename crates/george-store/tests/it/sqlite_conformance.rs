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
