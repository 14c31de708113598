//! Cron triggers with a controllable clock, through a real engine, store and
//! runtime: the right minute, no double fire after a restart, missed runs.

use chrono::{DateTime, Utc};
use george_core::ManualClock;
use george_engine::EngineConfig;
use george_store::{JobFilter, Store};
use george_testkit::eventually;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{self, Running};

/// A template and a nightly cron trigger of it.
const NIGHTLY: &str = "apiVersion: george/v1
kind: TaskTemplate
metadata: {name: scan}
spec:
  variables:
    - {name: fire_time, type: string, required: false}
  steps:
    - {id: s, description: 'scan at {{fire_time}}', run: 'true'}
---
apiVersion: george/v1
kind: Trigger
metadata: {name: nightly}
spec:
  type: cron
  schedule: 30 2 * * *
  timezone: Europe/Berlin
  template: scan
";

fn manifests() -> String {
    support::manifests(&[support::WORKER, NIGHTLY])
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

async fn start(dir: &std::path::Path, store: Arc<dyn Store>, clock: &ManualClock) -> Running {
    start_with(dir, store, clock, support::config()).await
}

async fn start_with(
    dir: &std::path::Path,
    store: Arc<dyn Store>,
    clock: &ManualClock,
    mut cfg: EngineConfig,
) -> Running {
    cfg.trigger_tick = Duration::from_millis(10);
    cfg.reconcile_interval = Duration::from_secs(3600);
    support::start(cfg, store, support::processes(dir), clock)
}

/// Returns once two more cron ticks have completed (so one saw the clock as it is now).
async fn ticked(engine: &Running) {
    let start = engine.handle.metrics().cron_ticks.get();
    eventually(Duration::from_secs(10), "the cron tick", async || {
        (engine.handle.metrics().cron_ticks.get() >= start + 2).then_some(())
    })
    .await;
}
async fn job_ids(store: &dyn Store) -> Vec<String> {
    store
        .list_jobs(&JobFilter { source: Some("trigger:nightly".into()), ..Default::default() })
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect()
}

/// Waits until the engine has looked at the schedule at (or after) `t`.
async fn looked_at(store: &dyn Store, t: DateTime<Utc>) {
    eventually(Duration::from_secs(10), "the cron tick", async || {
        store.trigger_mark("nightly").await.unwrap().is_some_and(|m| m >= t).then_some(())
    })
    .await;
}

/// The trigger's jobs once the engine has looked at the clock as it is now.
async fn jobs_now(engine: &Running, store: &dyn Store) -> Vec<String> {
    ticked(engine).await;
    job_ids(store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_fires_at_the_right_minute_once_across_dst_and_restarts() {
    let dir = support::tempdir();
    let store = support::store_with(dir.path(), &manifests(), None).await;

    // 02:30 does not exist in Berlin on 29 March 2026; the trigger fires at 03:00 CEST = 01:00 UTC.
    let clock = ManualClock::new(utc("2026-03-29T00:55:00Z"));
    let engine = start(dir.path(), store.clone(), &clock).await;
    let first_look = utc("2026-03-29T00:55:00Z");
    looked_at(store.as_ref(), first_look).await;
    clock.advance(Duration::from_secs(4 * 60 + 59)); // 00:59:59
    let ids = jobs_now(&engine, store.as_ref()).await;
    assert!(ids.is_empty(), "fired early: {ids:?}");
    clock.advance(Duration::from_secs(6)); // 01:00:05
    let ids = jobs_now(&engine, store.as_ref()).await;
    assert_eq!(ids, ["nightly-202603290100"]);
    looked_at(store.as_ref(), utc("2026-03-29T01:00:00Z")).await;
    let job = store.get_job("nightly-202603290100").await.unwrap().unwrap();
    assert_eq!(job.steps[0].spec.description, "scan at 2026-03-29T01:00:00+00:00", "the fire time is a parameter");
    engine.stop().await;

    // Restart a minute later: no second fire for the same night.
    clock.advance(Duration::from_secs(60));
    let engine = start(dir.path(), store.clone(), &clock).await;
    assert_eq!(jobs_now(&engine, store.as_ref()).await.len(), 1, "a restart does not fire again");
    // The next night, 02:30 CEST = 00:30 UTC.
    clock.advance(Duration::from_secs(23 * 3600 + 29 * 60));
    let ids = jobs_now(&engine, store.as_ref()).await;
    assert_eq!(ids, ["nightly-202603290100", "nightly-202603300030"]);
    engine.stop().await;

    // Down for three nights: `runOnce` runs the latest missed night once.
    clock.advance(Duration::from_secs(3 * 24 * 3600 + 600));
    let engine = start(dir.path(), store.clone(), &clock).await;
    let ids = jobs_now(&engine, store.as_ref()).await;
    assert_eq!(
        ids,
        ["nightly-202603290100", "nightly-202603300030", "nightly-202604020030"],
        "one run for three missed nights"
    );
    let events = store.events_since(0, 10_000, None).await.unwrap();
    let skipped = events.iter().find(|e| e.kind == "trigger.skipped").expect("the skipped nights are recorded");
    assert_eq!(skipped.data["missed"], 2);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_red_budget_suspends_scheduled_jobs() {
    let dir = support::tempdir();
    let store = support::store_with(dir.path(), &manifests(), None).await;
    // 960 of the organisation's 1000 monthly tokens are spent: red.
    let t0 = utc("2026-06-10T00:20:00Z");
    support::spent(store.as_ref(), t0, 960).await;
    let clock = ManualClock::new(t0);
    let mut cfg = EngineConfig::new("http://127.0.0.1:9");
    cfg.llm.org_monthly = Some(1000);
    let engine = start_with(dir.path(), store.clone(), &clock, cfg).await;
    looked_at(store.as_ref(), t0).await;
    // 02:30 Berlin (CEST) is 00:30 UTC: the run is due but suspended.
    clock.advance(Duration::from_secs(11 * 60));
    looked_at(store.as_ref(), utc("2026-06-10T00:30:00Z")).await;
    assert!(jobs_now(&engine, store.as_ref()).await.is_empty(), "a scheduled job ran during a red alert");
    let events = store.events_since(0, 10_000, None).await.unwrap();
    let suspended: Vec<_> = events.iter().filter(|e| e.kind == "trigger.suspended").collect();
    assert_eq!(suspended.len(), 1, "{events:?}");
    assert_eq!(suspended[0].data["trigger"], "nightly");
    assert_eq!(suspended[0].data["reason"], "budget red");
    engine.stop().await;
}

/// An operator's suspension (like a CronJob's `suspend`): the cron times
/// that pass are not fired (nor made up on resume), webhook events do not
/// fire the trigger, firing it by hand still does; the suspension outlives a
/// restart; the trigger's history says who did what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_suspends_a_trigger_and_resuming_goes_on_from_now() {
    let dir = support::tempdir();
    let docs = [support::WORKER, NIGHTLY, support::TEMPLATE, support::HOOK];
    let store = support::store_with(dir.path(), &support::manifests(&docs), None).await;
    let t0 = utc("2026-06-10T00:20:00Z");
    let clock = ManualClock::new(t0);
    let engine = start(dir.path(), store.clone(), &clock).await;
    looked_at(store.as_ref(), t0).await;
    let triggers = engine.handle.triggers();
    let unknown = triggers.suspend("nightli", "ops", None).await.unwrap_err().to_string();
    assert!(unknown.contains("unknown Trigger `nightli`") && unknown.contains("nightly"), "{unknown}");
    let s = triggers.suspend("nightly", "ops", Some("warehouse move")).await.unwrap();
    assert_eq!((s.by.as_str(), s.reason.as_deref(), s.at), ("ops", Some("warehouse move"), t0));
    triggers.suspend("hook", "ops", None).await.unwrap();
    let listed = triggers.list().await.unwrap();
    let nightly = listed.iter().find(|t| t.name == "nightly").unwrap();
    assert!(nightly.suspended.is_some() && nightly.next_fire.is_none(), "{nightly:?}");

    // 00:30 UTC passes: nothing fires. A webhook event fires nothing either.
    clock.advance(Duration::from_secs(11 * 60));
    looked_at(store.as_ref(), utc("2026-06-10T00:30:00Z")).await;
    assert!(jobs_now(&engine, store.as_ref()).await.is_empty(), "a suspended trigger fired on schedule");
    let fired = triggers.event(None, None, "delivery-1", &serde_json::json!({})).await.unwrap();
    assert!(fired.is_empty(), "a suspended webhook trigger fired: {fired:?}");
    // By hand it fires.
    let manual = triggers.fire_now("nightly", "ops").await.unwrap();

    // A restart keeps it suspended; the next night passes too.
    engine.stop().await;
    let engine = start(dir.path(), store.clone(), &clock).await;
    let triggers = engine.handle.triggers();
    clock.advance(Duration::from_secs(24 * 3600));
    looked_at(store.as_ref(), utc("2026-06-11T00:30:00Z")).await;
    assert_eq!(jobs_now(&engine, store.as_ref()).await, [manual.job.as_str()], "only the manual fire ran");
    assert!(triggers.get("nightly").await.unwrap().unwrap().entry.suspended.is_some());

    // Resumed: the schedule goes on from now; the nights missed stay missed.
    assert!(triggers.resume("nightly", "lead").await.unwrap());
    assert!(!triggers.resume("nightly", "lead").await.unwrap(), "resuming twice changes nothing");
    clock.advance(Duration::from_secs(24 * 3600));
    looked_at(store.as_ref(), utc("2026-06-12T00:30:00Z")).await;
    assert_eq!(jobs_now(&engine, store.as_ref()).await, [manual.job.clone(), "nightly-202606120030".to_string()]);
    let detail = triggers.get("nightly").await.unwrap().unwrap();
    assert!(detail.entry.suspended.is_none() && detail.entry.next_fire.is_some(), "{detail:?}");
    let history: Vec<(&str, &str)> = detail.history.iter().map(|e| (e.kind.as_str(), e.actor.as_str())).collect();
    assert_eq!(
        history,
        [
            ("trigger.fired", "trigger:cron"),
            ("trigger.resumed", "lead"),
            ("trigger.fired", "ops"),
            ("trigger.suspended", "ops"),
        ],
        "newest first"
    );
    assert_eq!(detail.history[3].data["reason"], "warehouse move");
    engine.stop().await;
}
