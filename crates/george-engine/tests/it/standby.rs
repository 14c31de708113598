//! An engine that is built but does not run, as on a standby replica: calls
//! that need the running engine's loaded accounts (webhook wakes, LLM
//! metering) are sent elsewhere at once instead of waiting until the replica
//! leads, which may be never.

use george_core::ManualClock;
use george_engine::triggers::TriggerError;
use george_engine::{Engine, EngineConfig};
use george_runtime::{ProcessRuntime, ProcessRuntimeConfig};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::support;

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
  steps:
    - {id: s, description: step, run: 'true'}
---
apiVersion: george/v1
kind: Trigger
metadata: {name: hook}
spec:
  type: webhook
  template: t
";

#[tokio::test(start_paused = true)]
async fn a_standby_sends_wakes_and_llm_calls_elsewhere_and_a_leader_serves_them() {
    let dir =
        tempfile::Builder::new().permissions(std::os::unix::fs::PermissionsExt::from_mode(0o711)).tempdir().unwrap();
    let clock = ManualClock::new(chrono::Utc::now());
    let store = support::store_with(dir.path(), MANIFESTS, Some(&clock)).await;
    let runtime = Arc::new(ProcessRuntime::new(ProcessRuntimeConfig::under(dir.path(), vec![])));
    let (engine, handle) =
        Engine::new(EngineConfig::new("http://127.0.0.1:9"), store.clone(), runtime, Arc::new(clock.clone()), vec![]);

    // Not running: refused after a bounded wait (the paused clock skips it).
    let refused = handle.triggers().event(None, None, "d1", &json!({})).await.unwrap_err();
    assert!(matches!(refused, TriggerError::NotLeading), "{refused}");
    assert!(!handle.is_running(Duration::from_secs(2)).await);
    assert!(store.list_jobs(&Default::default()).await.unwrap().is_empty(), "nothing was created");

    // Once it runs (this replica leads), both are served.
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { engine.run(s).await.unwrap() });
    assert!(handle.is_running(Duration::from_secs(30)).await);
    let fired = handle.triggers().event(None, None, "d2", &json!({})).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert!(store.get_job(&fired[0].job).await.unwrap().is_some());
    stop.cancel();
    task.await.unwrap();
}
