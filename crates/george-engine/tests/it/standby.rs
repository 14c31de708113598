//! An engine that is built but does not run, as on a standby replica: calls
//! that need the running engine's loaded accounts (webhook wakes, LLM
//! metering) are sent elsewhere at once instead of waiting until the replica
//! leads, which may be never.

use george_core::ManualClock;
use george_engine::triggers::TriggerError;
use serde_json::json;
use std::time::Duration;

use crate::support;

fn manifests() -> String {
    support::manifests(&[support::WORKER, support::TEMPLATE, support::HOOK])
}

#[tokio::test(start_paused = true)]
async fn a_standby_sends_wakes_and_llm_calls_elsewhere_and_a_leader_serves_them() {
    let dir = support::tempdir();
    let clock = ManualClock::new(chrono::Utc::now());
    let store = support::store_with(dir.path(), &manifests(), Some(&clock)).await;
    let (engine, handle) = support::engine(support::config(), store.clone(), support::processes(dir.path()), &clock);

    // Not running: refused after a bounded wait (the paused clock skips it).
    let refused = handle.triggers().event(None, None, "d1", &json!({})).await.unwrap_err();
    assert!(matches!(refused, TriggerError::NotLeading), "{refused}");
    assert!(!handle.is_running(Duration::from_secs(2)).await);
    assert!(store.list_jobs(&Default::default()).await.unwrap().is_empty(), "nothing was created");

    // Once it runs (this replica leads), both are served.
    let running = support::run(engine, handle.clone());
    assert!(handle.is_running(Duration::from_secs(30)).await);
    let fired = handle.triggers().event(None, None, "d2", &json!({})).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert!(store.get_job(&fired[0].job).await.unwrap().is_some());
    running.stop().await;
}
