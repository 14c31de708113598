//! Acceptance: the registry and the control plane (seed 003 §3 and §6).

use crate::common;

use common::*;
use george_core::{AgentState, JobStatus};
use std::time::Duration;

fn setup(tmp: &std::path::Path) -> Engine {
    let m = tmp.join("manifests");
    write(&m, "agents/ranger.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: ranger, chapter: payments}\nspec:\n  type: Ranger\n  capabilities: [shell, monitoring]\n");
    write(&m, "agents/scribe.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: scribe, chapter: docs}\nspec:\n  type: Scribe\n  capabilities: [shell]\n");
    write(&m, "agents/broken.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: broken}\nspec:\n  command: [/bin/sh, -c, 'exit 3']\n  capabilities: [shell, flaky]\n");
    write(&m, "templates/watch.yaml", &template("watch", "    - id: w\n      description: watch until released\n      run: while [ ! -f \"$GEORGE_OUTPUT_DIR/release\" ]; do sleep 0.05; done\n").replace("[shell]", "[shell, monitoring]"));
    write(
        &m,
        "templates/flaky.yaml",
        &template("flaky", "    - id: f\n      description: f\n      run: \"true\"\n")
            .replace("[shell]", "[shell, flaky]")
            .replace("maxAttempts: 4", "maxAttempts: 6"),
    );
    write(&m, "triggers/nightly.yaml", "apiVersion: george/v1\nkind: Trigger\nmetadata: {name: nightly}\nspec:\n  type: cron\n  schedule: 0 2 * * *\n  timezone: Europe/Paris\n  template: watch\n");
    Engine::start(tmp, "", &["--manifests", m.to_str().unwrap()])
}

fn submit(id: &str, template: &str) -> george_core::api::SubmitJob {
    george_core::api::SubmitJob::named(id, template)
}

async fn wait_ready(e: &Engine) {
    e.wait_registry(3).await
}

#[test]
fn the_registry_shows_states_filters_and_degraded_agents() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    engine.rt().block_on(async {
        wait_ready(&engine).await;
        let c = &engine.client;
        c.submit(&submit("patrol", "watch")).await.unwrap();
        engine.wait_job("patrol", "its agent to be active", Duration::from_secs(20), |j| j.steps[0].runs == 1).await;
        let reg = c.get_json("/api/v1/registry").await.unwrap();
        let state = |name: &str| reg.as_array().unwrap().iter().find(|e| e["name"] == name).unwrap()["state"].clone();
        assert_eq!(state("ranger"), "active");
        assert_eq!(state("scribe"), "dormant");
        for (q, expected) in [
            ("type=Ranger", vec!["ranger"]),
            ("chapter=docs", vec!["scribe"]),
            ("capability=shell", vec!["broken", "ranger", "scribe"]),
            ("status=active", vec!["ranger"]),
        ] {
            let v = c.get_json(&format!("/api/v1/registry?{q}")).await.unwrap();
            let names: Vec<&str> = v.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
            assert_eq!(names, expected, "{q}");
        }
        let triggers = c.get_json("/api/v1/triggers").await.unwrap();
        let nightly = &triggers.as_array().unwrap()[0];
        assert_eq!(nightly["name"], "nightly");
        let next = chrono::DateTime::parse_from_rfc3339(nightly["next_fire"].as_str().unwrap()).unwrap();
        assert_eq!(next.with_timezone(&chrono_tz::Europe::Paris).format("%H:%M").to_string(), "02:00");

        // An agent that always fails: after more than three failures in a row it is degraded.
        c.submit(&submit("doomed", "flaky")).await.unwrap();
        let j = engine.wait_status("doomed", JobStatus::Failed, Duration::from_secs(30)).await;
        assert_eq!(j.failures, 6);
        let reg = c.get_json("/api/v1/registry?capability=flaky").await.unwrap();
        assert_eq!(reg[0]["degraded"], true);
        assert_eq!(reg[0]["consecutive_failures"], 6);
        let events = c.events(0, 100_000).await.unwrap();
        let alerts: Vec<_> = events.iter().filter(|e| e.kind == "agent.degraded").collect();
        assert_eq!(alerts.len(), 1, "one alert when it crosses the line");
        assert_eq!(alerts[0].data["consecutive_failures"], 4);
        std::fs::write(engine.dir.join("data/outputs/patrol/release"), "").unwrap();
    });
}

#[test]
fn dismiss_halt_status_and_diagnose() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    let rt = engine.rt();
    rt.block_on(async {
        wait_ready(&engine).await;
        let c = &engine.client;
        c.submit(&submit("w1", "watch")).await.unwrap();
        c.submit(&submit("w2", "watch")).await.unwrap();
        for id in ["w1", "w2"] {
            engine.wait_job(id, "its agent", Duration::from_secs(20), |j| j.steps[0].runs == 1).await;
        }
    });
    // Manual shutdown of every ranger: graceful, acknowledged, jobs paused.
    let out = engine.cli(&["-o", "json", "dismiss", "ranger", "--reason", "maintenance"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["acknowledged"].as_bool(), v["dismissed"].as_array().unwrap().len()), (Some(true), 2));
    rt.block_on(async {
        for id in ["w1", "w2"] {
            let j = engine.wait_status(id, JobStatus::Paused, Duration::from_secs(20)).await;
            assert!(j.reason.unwrap().contains("dismissed: maintenance"));
        }
        // Its queued jobs are held too, until it is summoned again.
        engine.client.submit(&submit("w3", "watch")).await.unwrap();
        let held = engine
            .wait_job("w3", "to say it is held", Duration::from_secs(20), |j| {
                j.reason.as_deref().is_some_and(|r| r.contains("dismissed"))
            })
            .await;
        assert_eq!((held.status, held.attempt), (JobStatus::Pending, 0));
        assert_eq!(held.reason.as_deref(), Some("held: AgentSpec `ranger` is dismissed; summon it to resume"));
    });
    let out = engine.cli(&["summon", "ranger", "--template", "watch"]);
    assert!(out.status.success(), "{}", stderr(&out));
    rt.block_on(async {
        engine.wait_job("w3", "to run once summoned", Duration::from_secs(20), |j| j.steps[0].runs == 1).await;
        // Emergency: one instance killed at once.
        engine.client.act("w1", "resume", None).await.unwrap();
        engine
            .wait_job("w1", "attempt 2 running", Duration::from_secs(20), |j| j.attempt == 2 && j.steps[0].runs == 2)
            .await;
    });
    let out = engine.cli(&["halt", "w1-2", "--reason", "budget exhausted"]);
    assert!(out.status.success(), "{}", stderr(&out));
    rt.block_on(async {
        let j = engine
            .wait_job("w1", "paused, no step left in progress", Duration::from_secs(20), |j| {
                j.status == JobStatus::Paused && j.steps[0].status != george_core::StepStatus::InProgress
            })
            .await;
        assert_eq!(j.steps[0].status, george_core::StepStatus::Pending);
        assert!(j.steps[0].reason.as_deref().unwrap_or_default().starts_with("interrupted: attempt 2 ended"), "{j:?}");
        let a = engine.client.agent("w1-2").await.unwrap();
        assert_eq!(a.state, AgentState::Terminated);
        let outcome = a.outcome.unwrap();
        assert!(
            outcome.starts_with("halted: budget exhausted") && outcome.contains("signal 9"),
            "killed at once: {outcome}"
        );
        let events = engine.client.events(0, 100_000).await.unwrap();
        assert!(events.iter().any(|e| e.kind == "agent.halted" && e.data["level"] == "alert"));
        assert!(events.iter().any(|e| e.kind == "agent.dismissed"));
    });
    let out = engine.cli(&["-o", "json", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["jobs"]["paused"], 2);
    assert!(v["agents"].as_array().unwrap().iter().any(|a| a["name"] == "ranger"));
    let out = engine.cli(&["-o", "json", "diagnose"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["store"]["ok"], true);
    assert!(v["read_ms"].is_null() && v["store"]["read_ms"].as_f64().is_some());
    let out = engine.cli(&["status"]);
    assert!(stdout(&out).contains("agents:") && stdout(&out).contains("ranger"), "{}", stdout(&out));
}
