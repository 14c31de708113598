//! Acceptance: the scheduler with real agents.
//! - a P0 submitted while capacity is full preempts a P3 job, runs first,
//!   and the P3 job later completes from where it stopped;
//! - deep queues refuse low-priority submissions with 429 and Retry-After;
//! - scheduling decisions are events with their reason.

use crate::common;

use common::*;
use george_core::api::SubmitJob;
use george_core::{JobStatus, Priority, StepStatus};
use std::time::Duration;

const LOW: &str = "    - id: s1
      description: first
      run: echo s1 >> \"$GEORGE_OUTPUT_DIR/log\"
    - id: s2
      description: wait for the release flag
      depends_on: [s1]
      run: echo s2-start >> \"$GEORGE_OUTPUT_DIR/log\"; while [ ! -f \"$GEORGE_OUTPUT_DIR/release\" ]; do sleep 0.05; done
    - id: s3
      description: last
      depends_on: [s2]
      run: echo s3 >> \"$GEORGE_OUTPUT_DIR/log\"
";
const QUICK: &str = "    - id: only\n      description: quick\n      run: echo done >> \"$GEORGE_OUTPUT_DIR/log\"\n";

fn submit(id: &str, template: &str, priority: Priority) -> SubmitJob {
    SubmitJob { priority: Some(priority), ..SubmitJob::named(id, template) }
}

fn engine(tmp: &std::path::Path, extra: &str) -> Engine {
    let m = tmp.join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    write(&m, "templates/low.yaml", &template("low", LOW));
    write(&m, "templates/quick.yaml", &template("quick", QUICK));
    let cfg = FAST_CONFIG.replace("engine:\n", &format!("engine:\n  maxConcurrent: 1\n{extra}"));
    Engine::start_full(tmp, &cfg, &["--manifests", m.to_str().unwrap()], &[])
}

#[test]
fn a_p0_preempts_a_p3_which_later_resumes_where_it_stopped() {
    let tmp = common::tempdir().unwrap();
    let engine = engine(tmp.path(), "");
    engine.rt().block_on(async {
        engine.wait_applied().await;
        let c = &engine.client;
        c.submit(&submit("background-work", "low", Priority::P3)).await.unwrap();
        engine
            .wait_job("background-work", "step s2 to run", Duration::from_secs(20), |j| {
                j.steps[1].status == StepStatus::InProgress
            })
            .await;
        // Capacity (1 agent) is full: a P2 waits, a P0 preempts.
        c.submit(&submit("normal", "quick", Priority::P2)).await.unwrap();
        c.submit(&submit("urgent", "quick", Priority::P0)).await.unwrap();
        let urgent = engine.wait_status("urgent", JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!(urgent.attempt, 1);

        let events = c.events(0, 10_000).await.unwrap();
        let preempted = events.iter().find(|e| e.kind == "job.preempted").expect("a preemption event");
        assert_eq!(
            (preempted.job_id.as_deref(), preempted.data["by"].as_str()),
            (Some("background-work"), Some("urgent"))
        );
        let queued = events
            .iter()
            .find(|e| e.kind == "job.queued" && e.job_id.as_deref() == Some("normal"))
            .expect("normal was queued");
        assert_eq!(queued.data["reason"], "global limit (1 agents)");
        // While it waited, the job itself said why (its reason; `jobs ls` shows it).
        assert!(
            events.iter().any(|e| e.kind == "job.status"
                && e.job_id.as_deref() == Some("normal")
                && e.data["reason"] == "queued (P2): waiting for a slot: global limit (1 agents)"),
            "normal's reason said why it waited"
        );
        let bg = c.job("background-work").await.unwrap();
        // Preempted, it waits for a slot again and says so (or already runs again).
        let why = bg.reason.as_deref().unwrap_or("");
        assert!(
            why.starts_with("preempted by job urgent")
                || (why.starts_with("queued (P3") && why.ends_with("): waiting for a slot: global limit (1 agents)"))
                || bg.attempt >= 2,
            "{bg:?}"
        );

        // Let the low-priority job finish: it resumes at s2 without redoing s1.
        std::fs::write(engine.dir.join("data/outputs/background-work/release"), "").unwrap();
        let bg = engine.wait_status("background-work", JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!((bg.attempt, bg.failures), (2, 0), "preemption is not a failure");
        let log = std::fs::read_to_string(engine.dir.join("data/outputs/background-work/log")).unwrap();
        assert_eq!(log, "s1\ns2-start\ns2-start\ns3\n", "s1 ran once; the interrupted s2 ran again");
        engine.wait_status("normal", JobStatus::Completed, Duration::from_secs(30)).await;

        // The P0 ran before the P2 that was waiting longer.
        let events = c.events(0, 10_000).await.unwrap();
        let order: Vec<&str> =
            events.iter().filter(|e| e.kind == "attempt.started").filter_map(|e| e.job_id.as_deref()).collect();
        let pos = |id: &str| order.iter().position(|x| *x == id).unwrap();
        assert!(pos("urgent") < pos("normal"), "{order:?}");
    });
}

#[test]
fn a_deep_queue_refuses_low_priority_work_with_retry_after() {
    let tmp = common::tempdir().unwrap();
    let engine = engine(tmp.path(), "  backpressure:\n    threshold: 2\n    retryAfter: 7s\n");
    engine.rt().block_on(async {
        engine.wait_applied().await;
        let c = &engine.client;
        c.submit(&submit("running", "low", Priority::P2)).await.unwrap();
        engine.wait_status("running", JobStatus::InProgress, Duration::from_secs(20)).await;
        c.submit(&submit("q1", "quick", Priority::P2)).await.unwrap();
        c.submit(&submit("q2", "quick", Priority::P3)).await.unwrap();
        // The reconciler puts them in the scheduler's queue just after they are submitted.
        until(Duration::from_secs(20), "q1 and q2 to be queued", async || {
            c.events(0, 10_000).await.unwrap().iter().filter(|e| e.kind == "job.queued").count() >= 2
        })
        .await;
        // Two queued: P3 and BACKGROUND are refused, higher classes still accepted.
        let http = reqwest::Client::new();
        for (id, priority, expected) in [("late-bg", "BACKGROUND", 429), ("late-p3", "P3", 429), ("late-p1", "P1", 201)]
        {
            let r = http
                .post(format!("{}/api/v1/jobs", engine.url))
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({"template": "quick", "id": id, "priority": priority}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), expected, "{id}");
            if expected == 429 {
                assert_eq!(r.headers()["retry-after"], "7");
                let v: serde_json::Value = r.json().await.unwrap();
                assert_eq!(v["error"]["code"], "backpressure");
                assert_eq!(c.job(id).await.unwrap_err().status(), Some(404), "nothing was created");
            }
        }
        let events = c.events(0, 10_000).await.unwrap();
        assert_eq!(events.iter().filter(|e| e.kind == "job.rejected").count(), 2);
        std::fs::write(engine.dir.join("data/outputs/running/release"), "").unwrap();
        for id in ["running", "q1", "q2", "late-p1"] {
            engine.wait_status(id, JobStatus::Completed, Duration::from_secs(30)).await;
        }
        let metrics = engine.metrics().await;
        assert!(metrics.contains("george_scheduler_queue_wait_seconds_count{priority=\"P2\"}"), "{metrics}");
    });
}
