//! Debouncing with a controllable clock: wakes coalesce into one job that
//! sees the latest payload, and `maxDelay` caps how long a stream of wakes
//! can postpone it.

use chrono::{DateTime, Utc};
use george_core::ManualClock;
use george_engine::{Engine, EngineConfig};
use george_runtime::{ProcessRuntime, ProcessRuntimeConfig};
use george_store::{SqliteStore, Store};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const MANIFESTS: &str = "apiVersion: george/v1
kind: AgentSpec
metadata: {name: worker}
spec:
  command: [/bin/sh, -c, 'exit 0']
  capabilities: [shell]
---
apiVersion: george/v1
kind: TaskTemplate
metadata: {name: t}
spec:
  variables:
    - {name: n, type: integer, default: 0}
  steps:
    - {id: s, description: 'update {{n}}', run: 'true'}
---
apiVersion: george/v1
kind: Trigger
metadata: {name: hook}
spec:
  type: webhook
  template: t
  debounce: 60s
  debounceKey: key
  maxDelay: 150s
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakes_coalesce_and_max_delay_caps_the_postponement() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("all.yaml"), MANIFESTS).unwrap();
    let (set, problems) = george_sources::load_folder(&m, "").unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let t0: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z").unwrap().to_utc();
    // One clock for the engine and the store (the store stamps the first wake's job).
    let clock = ManualClock::new(t0);
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open_with_clock(dir.path().join("g.db"), Arc::new(clock.clone())).unwrap());
    store.apply_snapshot(george_sources::snapshot_of(&set.unwrap(), "folder", "r1")).await.unwrap();
    let cfg = EngineConfig::new("http://127.0.0.1:9");
    let runtime = Arc::new(ProcessRuntime::new(ProcessRuntimeConfig::under(dir.path(), vec![])));
    let (engine, handle) = Engine::new(cfg, store.clone(), runtime, Arc::new(clock.clone()), vec![]);
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { engine.run(s).await.unwrap() });

    // A wake every 50s (inside the 60s window), same key.
    let mut job = String::new();
    for n in 0..3 {
        let fired = handle.trigger_event(None, None, &format!("d{n}"), &json!({"key": "PAY-1", "n": n})).await.unwrap();
        assert_eq!(fired.len(), 1);
        if n == 0 {
            job = fired[0].job.clone();
        } else {
            assert_eq!((fired[0].job.as_str(), fired[0].debounced), (job.as_str(), true), "wake {n} coalesced");
        }
        let j = store.get_job(&job).await.unwrap().unwrap();
        assert_eq!(j.steps[0].spec.description, format!("update {n}"), "the job has the latest payload");
        let expected = [60, 110, 150][n as usize]; // 60s after the last wake, but never past 150s after the first
        assert_eq!(j.next_attempt_at, Some(t0 + chrono::Duration::seconds(expected)), "wake {n}");
        clock.advance(Duration::from_secs(50));
    }
    // At t0+150s the capped job is due: this wake no longer postpones it; it opens a new window.
    let fired = handle.trigger_event(None, None, "d3", &json!({"key": "PAY-1", "n": 3})).await.unwrap();
    assert!(!fired[0].debounced);
    assert_ne!(fired[0].job, job);
    // Another key never coalesces with PAY-1.
    let other = handle.trigger_event(None, None, "d10", &json!({"key": "PAY-2", "n": 1})).await.unwrap();
    assert_ne!(other[0].job, fired[0].job);
    stop.cancel();
    task.await.unwrap();
}
