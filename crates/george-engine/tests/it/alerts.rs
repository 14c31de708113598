//! Budget alerts with a controllable clock, through a real engine, store and
//! process runtime: orange shortens active durations; a Policy per-day limit
//! sets the organisation's colour for the day.

use chrono::{DateTime, Utc};
use george_core::record::Attempt;
use george_core::{AgentState, ManualClock};
use george_store::Store;
use george_testkit::eventually;
use serde_json::json;
use std::time::Duration;

use crate::support;

/// An agent that runs until stopped, for at most 10 minutes.
const LONG: &str = "apiVersion: george/v1
kind: AgentSpec
metadata: {name: worker}
spec:
  command: [/bin/sh, -c, 'exec sleep 600']
  capabilities: [shell]
  healthCheck: {interval: 1h, timeout: 2h}
  resources: {maxActiveDuration: 10m}
";

fn manifests() -> String {
    support::manifests(&[LONG, support::TEMPLATE, support::HOOK])
}

async fn agent_of(store: &dyn Store, job: &str, cond: impl Fn(&Attempt) -> bool, what: &str) -> Attempt {
    eventually(Duration::from_secs(20), &format!("job {job}: {what}"), async || {
        store.list_agents(false, 100).await.unwrap().into_iter().find(|a| a.job_id == job && cond(a))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orange_budget_halves_active_durations() {
    let dir = support::tempdir();
    let t0: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z").unwrap().to_utc();
    let clock = ManualClock::new(t0);
    let store = support::store_with(dir.path(), &manifests(), Some(&clock)).await;
    // 910 of the organisation's 1000 monthly tokens are spent: orange.
    support::spent(store.as_ref(), t0, 910).await;
    let mut cfg = support::config();
    cfg.llm.org_monthly = Some(1000);
    cfg.reconcile_interval = Duration::from_secs(3600);
    let running = support::start(cfg, store.clone(), support::processes(dir.path()), &clock);
    let handle = &running.handle;

    let fired = handle.triggers().event(None, None, "d1", &json!({})).await.unwrap();
    let job = fired[0].job.clone();
    // Started: its handle is recorded (and with it the start the limit counts from).
    agent_of(store.as_ref(), &job, |a| a.state.is_live() && a.handle.is_some(), "its agent never started").await;
    // Past half of maxActiveDuration (10m): stopped, though the full limit is not reached.
    clock.advance(Duration::from_secs(5 * 60 + 1));
    handle.nudge(&job);
    let ended =
        agent_of(store.as_ref(), &job, |a| a.state == AgentState::Terminated, "its agent was not stopped").await;
    let outcome = ended.outcome.unwrap_or_default();
    assert!(outcome.starts_with("timeout: ran longer than maxActiveDuration 5m"), "{outcome}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_per_day_limit_puts_the_organisation_in_emergency_mode() {
    let dir = support::tempdir();
    let t0: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-06-01T12:00:00Z").unwrap().to_utc();
    let clock = ManualClock::new(t0);
    let policy =
        "---\napiVersion: george/v1\nkind: Policy\nmetadata: {name: limits}\nspec:\n  rateLimits: {perDay: 1000}\n";
    let store = support::store_with(
        dir.path(),
        &format!("{}{policy}", manifests().replace("exec sleep 600", "exit 0")),
        Some(&clock),
    )
    .await;
    support::spent(store.as_ref(), t0 - chrono::Duration::days(1), 5000).await; // yesterday's does not count
    support::spent(store.as_ref(), t0, 950).await;
    let running = support::start(support::config(), store.clone(), support::processes(dir.path()), &clock);
    let handle = &running.handle;
    // A wake waits for the governor to load, so after it the colour is the loaded one.
    handle.triggers().event(None, None, "d1", &json!({})).await.unwrap();
    assert_eq!(handle.control().alert_color(None), george_engine::alerts::Color::Red, "95 % of the day's limit");
    clock.advance(Duration::from_secs(12 * 3600)); // the next day
    assert_eq!(handle.control().alert_color(None), george_engine::alerts::Color::Green, "a new day, a new limit");
    running.stop().await;
}
