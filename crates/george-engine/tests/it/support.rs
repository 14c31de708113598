//! Shared set-up of the engine-level tests: a store loaded with manifests,
//! ledger rows standing for earlier LLM usage, and an engine running on it.

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use george_core::api::UsageRecord;
use george_core::ManualClock;
use george_engine::{Engine, EngineConfig, EngineHandle};
use george_runtime::{ProcessRuntime, ProcessRuntimeConfig, Runtime};
use george_store::{SqliteStore, Store};
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// An AgentSpec `worker` whose agents exit at once.
pub const WORKER: &str = "apiVersion: george/v1
kind: AgentSpec
metadata: {name: worker}
spec:
  command: [/bin/sh, -c, 'exit 0']
  capabilities: [shell]
";

/// A template `t` of one step.
pub const TEMPLATE: &str = "apiVersion: george/v1
kind: TaskTemplate
metadata: {name: t}
spec:
  steps:
    - {id: s, description: step, run: 'true'}
";

/// A webhook trigger `hook` of template `t`.
pub const HOOK: &str = "apiVersion: george/v1
kind: Trigger
metadata: {name: hook}
spec:
  type: webhook
  template: t
";

/// Manifests as one multi-document YAML text.
pub fn manifests(docs: &[&str]) -> String {
    docs.join("---\n")
}

/// A temporary directory agents under their own uids may pass through.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().permissions(std::os::unix::fs::PermissionsExt::from_mode(0o711)).tempdir().unwrap()
}

/// Engine settings for tests: no agent calls home (nothing listens at the API URL).
pub fn config() -> EngineConfig {
    EngineConfig::new("http://127.0.0.1:9")
}

/// The process runtime with its data under `dir`.
pub fn processes(dir: &Path) -> Arc<dyn Runtime> {
    Arc::new(ProcessRuntime::new(ProcessRuntimeConfig::under(dir, vec![], george_testkit::launcher())))
}

/// An engine running on a task of its own.
pub struct Running {
    /// The engine's handle.
    pub handle: EngineHandle,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the engine and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// Builds an engine; `run` starts it.
pub fn engine(
    cfg: EngineConfig,
    store: Arc<dyn Store>,
    runtime: Arc<dyn Runtime>,
    clock: &ManualClock,
) -> (Engine, EngineHandle) {
    Engine::new(cfg, store, runtime, Arc::new(clock.clone()), vec![])
}

/// Runs a built engine until [`Running::stop`].
pub fn run(engine: Engine, handle: EngineHandle) -> Running {
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { engine.run(s).await.unwrap() });
    Running { handle, stop, task }
}

/// Builds and runs an engine.
pub fn start(cfg: EngineConfig, store: Arc<dyn Store>, runtime: Arc<dyn Runtime>, clock: &ManualClock) -> Running {
    let (engine, handle) = engine(cfg, store, runtime, clock);
    run(engine, handle)
}

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
