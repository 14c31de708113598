//! Acceptance: webhook triggers and summons through the real engine.
//! - 10 webhook events in one window start exactly one agent, which sees the
//!   latest payload;
//! - a bad signature gets 401 and creates nothing;
//! - `george summon` wakes an agent by hand.

use crate::common;

use common::*;
use george_core::{JobStatus, Priority};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

const SECRET: &str = "webhook-signing-key-0123456789";

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The engine of these tests.
fn setup(tmp: &std::path::Path) -> Engine {
    let secrets = tmp.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("webhook"), SECRET).unwrap();
    let m = tmp.join("manifests");
    write(&m, "agents/ranger.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: ranger}\nspec:\n  capabilities: [shell]\n  triggers:\n    - {type: summon, template: triage, priority: P1}\n");
    write(
        &m,
        "templates/triage.yaml",
        "apiVersion: george/v1
kind: TaskTemplate
metadata: {name: triage}
spec:
  variables:
    - {name: summary, type: fuzzy, default: none}
    - {name: payload, type: fuzzy, required: false}
  steps:
    - id: note
      description: triage {{summary}}
      run: echo {{summary}} >> \"$GEORGE_OUTPUT_DIR/seen\"
",
    );
    write(
        &m,
        "triggers/jira-bugs.yaml",
        "apiVersion: george/v1
kind: Trigger
metadata: {name: jira-bugs}
spec:
  type: webhook
  source: jira_webhook
  events: [issue.created, issue.updated]
  conditions: {project: PAYMENTS, issue_type: Bug}
  template: triage
  agent: ranger
  debounce: 1500ms
  debounceKey: key
",
    );
    write(
        &m,
        "triggers/deploys.yaml",
        "apiVersion: george/v1\nkind: Trigger\nmetadata: {name: deploys}\nspec:\n  type: webhook\n  source: ci\n  events: [deploy]\n  template: triage\n  agent: ranger\n",
    );
    let cfg = format!("secrets:\n  dir: {}\nwebhooks:\n  secret: webhook\n", secrets.display());
    Engine::start(tmp, &cfg, &["--manifests", m.to_str().unwrap()])
}

async fn post(engine: &Engine, body: &serde_json::Value, signature: Option<String>) -> reqwest::Response {
    let bytes = serde_json::to_vec(body).unwrap();
    let mut req = reqwest::Client::new()
        .post(format!("{}/api/v1/events", engine.url))
        .body(bytes.clone())
        .header("content-type", "application/json");
    if let Some(s) = signature {
        req = req.header("x-george-signature", s);
    }
    req.send().await.unwrap()
}

#[test]
fn ten_webhook_events_in_one_window_start_one_agent() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    engine.rt().block_on(async {
        engine.wait_applied().await;
        let before = engine.client.events(0, 100_000).await.unwrap().len();

        // A bad or missing signature: 401, nothing created, nothing recorded.
        let ev = serde_json::json!({"source": "jira_webhook", "event": "issue.created", "project": "PAYMENTS", "issue_type": "Bug", "key": "PAY-9"});
        assert_eq!(post(&engine, &ev, None).await.status(), 401);
        assert_eq!(post(&engine, &ev, Some(sign(b"something else"))).await.status(), 401);
        assert_eq!(post(&engine, &ev, Some("sha256=zz".into())).await.status(), 401);
        assert!(engine.client.jobs(&Default::default()).await.unwrap().is_empty());
        assert_eq!(engine.client.events(0, 100_000).await.unwrap().len(), before);

        // Ten updates of one ticket in quick succession.
        let mut jobs = Vec::new();
        let mut last = serde_json::Value::Null;
        for i in 1..=10 {
            let ev = serde_json::json!({"source": "jira_webhook", "event": "issue.updated", "project": "PAYMENTS",
                                        "issue_type": "Bug", "key": "PAY-1", "summary": format!("update-{i}")});
            let bytes = serde_json::to_vec(&ev).unwrap();
            let r = post(&engine, &ev, Some(sign(&bytes))).await;
            assert_eq!(r.status(), 202);
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(v["fired"].as_array().unwrap().len(), 1);
            jobs.push(v["fired"][0]["job"].as_str().unwrap().to_string());
            last = ev;
            assert_eq!(v["fired"][0]["debounced"], i > 1);
        }
        assert!(jobs.iter().all(|j| *j == jobs[0]), "all ten coalesced into one job: {jobs:?}");
        // While its window is open, the job says why it waits and until when.
        let waiting = engine.job(&jobs[0]).await;
        if waiting.status == JobStatus::Pending && waiting.attempt == 0 {
            let reason = waiting.reason.unwrap_or_default();
            assert!(reason.starts_with("debounced: starts at "), "{reason}");
        }
        // An event that does not meet the conditions triggers nothing.
        let story = serde_json::json!({"source": "jira_webhook", "event": "issue.created", "project": "PAYMENTS", "issue_type": "Story", "key": "PAY-2"});
        let r = post(&engine, &story, Some(sign(&serde_json::to_vec(&story).unwrap()))).await;
        assert_eq!(r.json::<serde_json::Value>().await.unwrap()["fired"], serde_json::json!([]));

        let job = engine.wait_status(&jobs[0], JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!(job.attempt, 1, "one agent");

        // The last delivery replayed, signature and all, after its window
        // closed and its job ran: nothing new.
        let bytes = serde_json::to_vec(&last).unwrap();
        let r = post(&engine, &last, Some(sign(&bytes))).await;
        assert_eq!(r.status(), 202);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!((v["fired"][0]["job"].as_str(), v["fired"][0]["replayed"].as_bool()), (Some(jobs[0].as_str()), Some(true)));
        assert_eq!(job.priority, Priority::P2);
        let seen = std::fs::read_to_string(engine.dir.join(format!("data/outputs/{}/seen", jobs[0]))).unwrap();
        assert_eq!(seen, "update-10\n", "the woken agent saw the latest payload");
        let all = engine.client.jobs(&Default::default()).await.unwrap();
        assert_eq!(all.len(), 1, "the replay created nothing");

        // Delivery ids that the job id's cleaning folds together stay two
        // deliveries (two jobs); each replayed is still one.
        let mut made = Vec::new();
        for delivery in ["pay.1", "pay-1", "pay.1", "pay-1"] {
            let ev = serde_json::json!({"source": "ci", "event": "deploy", "delivery": delivery, "summary": delivery});
            let r = post(&engine, &ev, Some(sign(&serde_json::to_vec(&ev).unwrap()))).await;
            assert_eq!(r.status(), 202);
            let v: serde_json::Value = r.json().await.unwrap();
            made.push(v["fired"][0]["job"].as_str().unwrap().to_string());
        }
        assert_ne!(made[0], made[1], "pay.1 and pay-1 are distinct deliveries: {made:?}");
        assert_eq!((&made[2], &made[3]), (&made[0], &made[1]), "replays answer with the job they made");
        assert_eq!(engine.client.jobs(&Default::default()).await.unwrap().len(), 3);
        for j in &made[..2] {
            engine.wait_status(j, JobStatus::Completed, Duration::from_secs(30)).await;
        }
        let events = engine.client.events(0, 100_000).await.unwrap();
        assert_eq!(events.iter().filter(|e| e.kind == "trigger.debounced").count(), 9);
        assert_eq!(events.iter().filter(|e| e.kind == "attempt.started").count(), 3);
        assert_eq!(events.iter().filter(|e| e.kind == "trigger.replayed").count(), 3);
    });
}

#[test]
fn summon_wakes_an_agent_by_hand() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    let rt = engine.rt();
    rt.block_on(engine.wait_applied());
    let out = engine.cli(&["-o", "json", "summon", "ranger", "-c", "summary=check-the-queue"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v["job"].as_str().unwrap().to_string();
    rt.block_on(async {
        let j = engine.wait_status(&id, JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!(j.priority, Priority::P1, "summons are P1 (seed: human summons)");
        assert_eq!(j.origin.source, "trigger:ranger-t0");
        let seen = std::fs::read_to_string(engine.dir.join(format!("data/outputs/{id}/seen"))).unwrap();
        assert_eq!(seen, "check-the-queue\n");
    });
    let out = engine.cli(&["summon", "nobody"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown AgentSpec `nobody`"), "{}", stderr(&out));
    // A trigger fired by hand, twice: two wakes, two jobs, the operator named as who fired it.
    let mut fired = Vec::new();
    for _ in 0..2 {
        let out = engine.cli(&["-o", "json", "triggers", "fire", "deploys"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!((v["trigger"].as_str(), v["debounced"].as_bool()), (Some("deploys"), Some(false)), "{v}");
        fired.push(v["job"].as_str().unwrap().to_string());
    }
    assert_ne!(fired[0], fired[1], "each fire is a new wake");
    rt.block_on(async {
        for id in &fired {
            let j = engine.wait_status(id, JobStatus::Completed, Duration::from_secs(30)).await;
            assert_eq!(j.origin.source, "trigger:deploys");
        }
        let events = engine.client.events(0, 100_000).await.unwrap();
        let by = events
            .iter()
            .filter(|e| e.kind == "trigger.fired" && e.data["trigger"] == "deploys")
            .map(|e| e.actor.as_str());
        assert_eq!(by.collect::<Vec<_>>(), ["operator:test", "operator:test"]);
    });
    let out = engine.cli(&["triggers", "fire", "nope"]);
    assert!(!out.status.success() && stderr(&out).contains("unknown Trigger `nope`"), "{}", stderr(&out));
    let out = engine.cli(&["triggers", "fire", "deploys", "--token", "not-a-token-at-all-0000"]);
    assert!(!out.status.success(), "a bad token fires nothing");
}

#[test]
fn the_cli_suspends_and_resumes_a_trigger_and_shows_its_history() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    engine.rt().block_on(engine.wait_applied());
    let run = |args: &[&str]| {
        let out = engine.cli(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run(&["triggers", "suspend", "deploys", "--reason", "freeze"]), "trigger/deploys suspended\n");
    let table = run(&["triggers"]);
    let row = table.lines().find(|l| l.contains("deploys")).unwrap();
    assert!(row.contains("by operator:test"), "{table}");
    let fired = run(&["-o", "json", "triggers", "fire", "deploys"]);
    let job = serde_json::from_str::<serde_json::Value>(&fired).unwrap()["job"].as_str().unwrap().to_string();
    assert_eq!(run(&["triggers", "resume", "deploys"]), "trigger/deploys resumed\n");
    let v: serde_json::Value = serde_json::from_str(&run(&["-o", "json", "triggers", "get", "deploys"])).unwrap();
    assert!(v.get("suspended").is_none(), "{v}");
    let history: Vec<(&str, &str)> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        history,
        [
            ("trigger.resumed", "operator:test"),
            ("trigger.fired", "operator:test"),
            ("trigger.suspended", "operator:test")
        ]
    );
    assert_eq!(v["history"][1]["job_id"].as_str(), Some(job.as_str()), "{v}");
    let text = run(&["triggers", "get", "deploys"]);
    assert!(text.contains("trigger.suspended") && text.contains("deploys"), "{text}");
    for args in [["triggers", "suspend", "nope"], ["triggers", "get", "nope"]] {
        let out = engine.cli(&args);
        assert!(!out.status.success() && stderr(&out).contains("unknown Trigger `nope`"), "{}", stderr(&out));
    }
}
