//! Debouncing with a controllable clock: wakes coalesce into one job that
//! sees the latest payload, and `maxDelay` caps how long a stream of wakes
//! can postpone it.

use chrono::{DateTime, Utc};
use george_core::ManualClock;
use serde_json::json;
use std::time::Duration;

use crate::support;

/// The template and a debounced webhook trigger of it.
const DEBOUNCED: &str = "apiVersion: george/v1
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

fn manifests() -> String {
    support::manifests(&[support::WORKER, DEBOUNCED])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wakes_coalesce_and_max_delay_caps_the_postponement() {
    let dir = support::tempdir();
    let t0: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z").unwrap().to_utc();
    // One clock for the engine and the store (the store stamps the first wake's job).
    let clock = ManualClock::new(t0);
    let store = support::store_with(dir.path(), &manifests(), Some(&clock)).await;
    let cfg = support::config();
    let running = support::start(cfg, store.clone(), support::processes(dir.path()), &clock);
    let handle = &running.handle;

    // A wake every 50s (inside the 60s window), same key.
    let mut job = String::new();
    for n in 0..3 {
        let fired =
            handle.triggers().event(None, None, &format!("d{n}"), &json!({"key": "PAY-1", "n": n})).await.unwrap();
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
    let fired = handle.triggers().event(None, None, "d3", &json!({"key": "PAY-1", "n": 3})).await.unwrap();
    assert!(!fired[0].debounced);
    assert_ne!(fired[0].job, job);
    // Another key never coalesces with PAY-1.
    let other = handle.triggers().event(None, None, "d10", &json!({"key": "PAY-2", "n": 1})).await.unwrap();
    assert_ne!(other[0].job, fired[0].job);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yellow_budget_doubles_debounce_windows() {
    let dir = support::tempdir();
    let t0: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z").unwrap().to_utc();
    let clock = ManualClock::new(t0);
    let store = support::store_with(dir.path(), &manifests(), Some(&clock)).await;
    // 800 of the organisation's 1000 monthly tokens are spent: yellow.
    support::spent(store.as_ref(), t0, 800).await;
    let mut cfg = support::config();
    cfg.llm.org_monthly = Some(1000);
    let running = support::start(cfg, store.clone(), support::processes(dir.path()), &clock);
    let handle = &running.handle;

    // Once the engine has loaded the ledger:
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handle.meter().governor().percent_used(&george_governor::Level::Org, t0) != Some(80.0) {
        assert!(tokio::time::Instant::now() < deadline, "the engine never loaded the ledger");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let fired = handle.triggers().event(None, None, "y0", &json!({"key": "PAY-1", "n": 0})).await.unwrap();
    let j = store.get_job(&fired[0].job).await.unwrap().unwrap();
    assert_eq!(j.next_attempt_at, Some(t0 + chrono::Duration::seconds(120)), "the 60s window is doubled");
    clock.advance(Duration::from_secs(100)); // inside the doubled window: coalesced
    let again = handle.triggers().event(None, None, "y1", &json!({"key": "PAY-1", "n": 1})).await.unwrap();
    assert_eq!((again[0].job.as_str(), again[0].debounced), (fired[0].job.as_str(), true));
    running.stop().await;
}
