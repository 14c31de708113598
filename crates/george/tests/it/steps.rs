//! Acceptance: a job's steps run as a graph (independent steps at the same
//! time, a failure cancels its siblings, a replacement agent re-runs only
//! what was unfinished), step retries back off and say why each try failed,
//! and a job can be retried, resubmitted and deleted — with real engines,
//! real agents and real shell steps.

use crate::common;

use common::*;
use george_core::api::{EventView, SubmitJob};
use george_core::{EventKind, JobStatus, StepStatus};
use std::time::Duration;

const GRAPH: &str = "    - id: compile
      description: compile
      run: sleep 1
    - id: lint
      description: lint
      run: sleep 1
    - id: test
      description: test
      run: 'true'
      dependsOn: [compile, lint]
";

const FAIL_FAST: &str = "    - id: bad
      description: fails after a moment
      run: |
        sleep 0.3; echo 'error: the compiler says no' >&2; exit 3
    - id: slow
      description: would take long
      run: sleep 37
";

const FLAKY: &str = "    - id: flaky
      description: fails every time, saying which try it was
      run: |
        echo x >> \"$GEORGE_OUTPUT_DIR/tries\"; echo \"boom on try $(wc -l < \"$GEORGE_OUTPUT_DIR/tries\")\" >&2; exit 3
      retries: 2
      retryDelay: 200ms
";

const RESUME: &str = "    - id: one
      description: quick
      run: echo one
    - id: two
      description: waits for the test's word
      run: |
        until [ -f \"$GEORGE_OUTPUT_DIR/go\" ]; do sleep 0.05; done
      dependsOn: [one]
";

const FIXABLE: &str = "    - id: check
      description: passes once fixed
      run: |
        test -f \"$GEORGE_OUTPUT_DIR/../fixed\" || { echo 'not fixed yet' >&2; exit 4; }
";

fn setup(dir: &std::path::Path) -> Engine {
    let m = dir.join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    for (name, steps) in [("graph", GRAPH), ("failfast", FAIL_FAST), ("flaky", FLAKY), ("resume", RESUME)] {
        write(&m, &format!("templates/{name}.yaml"), &template(name, steps));
    }
    let fixable = template("fixable", FIXABLE)
        .replace("maxAttempts: 4", "maxAttempts: 1\n  variables:\n    - name: note\n      default: first");
    write(&m, "templates/fixable.yaml", &fixable);
    Engine::start(dir, "", &["--manifests", m.to_str().unwrap()])
}

async fn submit(engine: &Engine, id: &str, template: &str) {
    let job = SubmitJob::named(id, template);
    let submitted = async || engine.client.submit(&job).await.ok();
    eventually(Duration::from_secs(20), "the templates to be applied", submitted).await;
}

async fn events(engine: &Engine, id: &str, kind: EventKind) -> Vec<EventView> {
    let all = engine.client.events(0, 5000).await.unwrap();
    all.into_iter().filter(|e| e.job_id.as_deref() == Some(id) && e.kind == kind).collect()
}

#[test]
fn independent_steps_run_at_the_same_time_and_their_dependent_after_both() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    engine.rt().block_on(async {
        submit(&engine, "g", "graph").await;
        let j = engine.wait_status("g", JobStatus::Completed, Duration::from_secs(60)).await;
        let [compile, lint, test] = [&j.steps[0], &j.steps[1], &j.steps[2]];
        let span = |s: &george_core::api::StepView| (s.started_at.unwrap(), s.ended_at.unwrap());
        let ((c0, c1), (l0, l1), (t0, _)) = (span(compile), span(lint), span(test));
        assert!(c0 < l1 && l0 < c1, "compile {c0}..{c1} and lint {l0}..{l1} did not overlap");
        assert!(t0 >= c1 && t0 >= l1, "test started at {t0}, before both it depends on ended");
        assert!(j.steps.iter().all(|s| s.runs == 1 && s.duration_ms.is_some()), "{:?}", j.steps);
        assert!(compile.duration_ms.unwrap() >= 1000, "{compile:?}");
    });
}

#[test]
fn a_failing_step_cancels_its_siblings_and_the_reason_carries_its_stderr() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    engine.rt().block_on(async {
        submit(&engine, "f", "failfast").await;
        let j = engine.wait_status("f", JobStatus::Failed, Duration::from_secs(60)).await;
        let reason = j.reason.clone().unwrap_or_default();
        assert!(reason.contains("step `bad` failed after 1 try: exit code 3"), "{reason}");
        assert!(reason.contains("error: the compiler says no"), "the stderr tail: {reason}");
        let (bad, slow) = (&j.steps[0], &j.steps[1]);
        assert_eq!((bad.status, bad.runs), (StepStatus::Failed, 1));
        assert_eq!(slow.status, StepStatus::Pending, "the sibling was cancelled, not left running: {slow:?}");
        assert!(slow.reason.as_deref().unwrap_or_default().contains("failFast"), "{slow:?}");
        // (37: no other test's process sleeps that long; the tests run side by side.)
        assert!(!process_running("sleep 37"), "the cancelled step's process is gone");
        let out = engine.cli(&["jobs", "get", "f"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("DURATION"), "{}", String::from_utf8_lossy(&out.stdout));
    });
}

#[test]
fn retries_back_off_and_every_failed_try_is_an_event_with_its_stderr() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    engine.rt().block_on(async {
        submit(&engine, "r", "flaky").await;
        let j = engine.wait_job("r", "it to fail", Duration::from_secs(60), |j| j.status == JobStatus::Failed).await;
        assert_eq!(j.steps[0].runs, 3, "runs counts the tries");
        let reason = j.reason.clone().unwrap_or_default();
        assert!(reason.contains("step `flaky` failed after 3 tries: exit code 3"), "{reason}");
        assert!(reason.contains("boom on try 3"), "{reason}");
        let tries = events(&engine, "r", EventKind::StepTryFailed).await;
        let tries: Vec<_> = tries.iter().filter(|e| e.attempt == Some(1)).collect();
        assert_eq!(tries.len(), 3, "{tries:?}");
        for (n, e) in tries.iter().enumerate() {
            assert_eq!(e.data["try"], n as u64 + 1);
            assert_eq!(e.data["of"], 3);
            assert_eq!(e.data["result"], "exit code 3");
            assert_eq!(e.data["stderr"], format!("boom on try {}", n + 1));
        }
        // 200 ms, then 400 ms, each with jitter into its upper half; none after the last.
        let waits: Vec<_> = tries.iter().map(|e| e.data["retry_in_ms"].as_u64()).collect();
        assert!(matches!(waits[0], Some(100..=200)) && matches!(waits[1], Some(200..=400)), "{waits:?}");
        assert_eq!(waits[2], None);
        // Each next try started no sooner than its wait (the tries' in_progress reports).
        let starts: Vec<_> = events(&engine, "r", EventKind::StepStatus)
            .await
            .into_iter()
            .filter(|e| e.attempt == Some(1) && e.data["to"] == "in_progress")
            .map(|e| e.data["at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap())
            .collect();
        assert_eq!(starts.len(), 3, "{starts:?}");
        for k in 0..2 {
            let gap = (starts[k + 1] - starts[k]).num_milliseconds();
            assert!(gap >= waits[k].unwrap() as i64, "try {} started {gap} ms after try {}", k + 2, k + 1);
        }
        let log = agent_log(&engine, "r-1").await.unwrap_or_default();
        assert!(log.contains("step try failed"), "the log says each try failed: {log}");
    });
}

#[test]
fn a_new_attempt_after_kill_9_reruns_only_the_unfinished_steps() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    engine.rt().block_on(async {
        submit(&engine, "k", "resume").await;
        engine
            .wait_job("k", "step two to run", Duration::from_secs(30), |j| {
                j.steps[0].status == StepStatus::Completed && j.steps[1].status == StepStatus::InProgress
            })
            .await;
        let agent = engine.client.agent("k-1").await.unwrap();
        let pid = agent.handle.as_ref().and_then(|h| h["pid"].as_i64()).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        engine
            .wait_job("k", "a second attempt at step two", Duration::from_secs(60), |j| {
                j.attempt == 2 && j.steps[1].status == StepStatus::InProgress
            })
            .await;
        std::fs::write(engine.dir.join("data/outputs/k/go"), "").unwrap();
        let j = engine
            .wait_job("k", "completed, its last agent gone", Duration::from_secs(30), |j| {
                j.status == JobStatus::Completed && j.attempts.iter().all(|a| a.ended_at.is_some())
            })
            .await;
        assert_eq!((j.steps[0].runs, j.steps[1].runs), (1, 2), "one ran once; two once per attempt");
        // Each attempt's timing is part of the job.
        let attempts: Vec<_> = j.attempts.iter().map(|a| (a.attempt, a.duration_ms.is_some())).collect();
        assert_eq!(attempts, [(1, true), (2, true)], "{:?}", j.attempts);
        assert!(j.attempts[0].outcome.as_deref().unwrap_or_default().contains("signal 9"), "{:?}", j.attempts);
        let out = engine.cli(&["jobs", "get", "k"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("ATTEMPT"), "{}", String::from_utf8_lossy(&out.stdout));
    });
}

#[test]
fn retry_resubmit_and_delete_through_the_cli_with_their_refusals() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    let rt = engine.rt();
    rt.block_on(submit(&engine, "x", "fixable"));
    let j = rt.block_on(engine.wait_status("x", JobStatus::Failed, Duration::from_secs(60)));
    assert!(j.reason.unwrap_or_default().contains("not fixed yet"));

    // Not retriable: a job that has not failed.
    rt.block_on(submit(&engine, "done", "graph"));
    rt.block_on(engine.wait_status("done", JobStatus::Completed, Duration::from_secs(60)));
    let out = engine.cli(&["jobs", "retry", "done"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("only a failed, aborted or blocked job can be retried"), "{}", stderr(&out));

    std::fs::write(engine.dir.join("data/outputs/fixed"), "").unwrap();
    let out = engine.cli(&["jobs", "retry", "x", "--reason", "fixed the check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "job/x retried");
    let j = rt.block_on(engine.wait_status("x", JobStatus::Completed, Duration::from_secs(60)));
    assert_eq!((j.attempt, j.failures), (2, 0));

    let out = engine.cli(&["-o", "json", "jobs", "resubmit", "x", "--as", "x2", "-p", "note=again"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["id"].as_str(), v["template"].as_str()), (Some("x2"), Some("fixable")));
    assert_eq!(v["params"]["note"], "again");
    assert_eq!(v["origin"]["reference"], "resubmit of x");
    rt.block_on(engine.wait_status("x2", JobStatus::Completed, Duration::from_secs(60)));
    let out = engine.cli(&["jobs", "resubmit", "x", "--as", "x2"]);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    let out = engine.cli(&["jobs", "delete", "x2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let gone = rt.block_on(engine.client.job("x2")).unwrap_err();
    assert_eq!(gone.status(), Some(404));
    let audit = rt.block_on(events(&engine, "x", EventKind::JobRetried));
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "operator:test");
}
