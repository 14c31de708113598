//! Shared set-up of the engine-level tests: a store loaded with manifests,
//! and ledger rows standing for earlier LLM usage.

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use george_core::api::UsageRecord;
use george_core::ManualClock;
use george_store::{SqliteStore, Store};
use std::path::Path;
use std::sync::Arc;

/// A SQLite store in `dir` holding `manifests` (one multi-document YAML
/// text), stamping rows by `clock` when one is given.
pub async fn store_with(dir: &Path, manifests: &str, clock: Option<&ManualClock>) -> Arc<dyn Store> {
    let m = dir.join("m");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("all.yaml"), manifests).unwrap();
    let (set, problems) = george_sources::load_folder(&m, "").unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let db = dir.join("g.db");
    let store: Arc<dyn Store> = match clock {
        Some(c) => Arc::new(SqliteStore::open_with_clock(db, Arc::new(c.clone())).unwrap()),
        None => Arc::new(SqliteStore::open(db).unwrap()),
    };
    store.apply_snapshot(george_sources::snapshot_of(&set.unwrap(), "folder", "r1")).await.unwrap();
    store
}

/// Records `tokens` of earlier usage (no chapter) at `ts`.
pub async fn spent(store: &dyn Store, ts: DateTime<Utc>, tokens: u64) {
    let usage = UsageRecord {
        ts,
        job_id: "earlier".into(),
        attempt: 1,
        agent_spec: "worker".into(),
        chapter: String::new(),
        provider: "p".into(),
        model: "m".into(),
        input_tokens: tokens - tokens / 10,
        output_tokens: tokens / 10,
        streamed: false,
    };
    store.record_usage(&usage).await.unwrap();
}
