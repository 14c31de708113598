//! Acceptance: agents and engines dying at the worst moment.
//! - kill -9 of an agent mid-step: a new attempt completes the job and the
//!   old attempt's reports are refused;
//! - kill -9 of the engine mid-run: after a restart every job reaches the same
//!   end state, none is lost, and no job ever has two live agents;
//! - an agent that stops heartbeating is replaced;
//! - an engine down for twice the health deadline adopts its still-running
//!   agents, which complete on attempt 1 (downtime is the engine's fault);
//! - no write is answered with a 4xx before the first source apply.
//!
//! The chaos runs are in their own test binary (`tests/chaos.rs`).

use crate::common;

use common::*;
use george_core::api::StepReport;
use george_core::{JobStatus, StepStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[test]
fn killing_an_agent_mid_step_gets_a_new_attempt_and_fences_the_old_one() {
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    // The first attempt starts a long step; any later attempt finds the marker and goes on.
    let steps = "    - id: slow
      description: slow the first time
      run: if [ ! -f \"$GEORGE_OUTPUT_DIR/first\" ]; then touch \"$GEORGE_OUTPUT_DIR/first\"; sleep 61.25; fi
    - id: finish
      description: finish
      depends_on: [slow]
      run: echo done > \"$GEORGE_OUTPUT_DIR/finished\"
";
    write(&m, "templates/t.yaml", &template("two-step", steps));
    write(&m, "jobs/j.yaml", &job("victim", "two-step"));
    let engine = Engine::start(tmp.path(), "", &["--manifests", m.to_str().unwrap()]);
    let rt = engine.rt();
    rt.block_on(async {
        engine
            .wait_job("victim", "the slow step to run", Duration::from_secs(30), |j| {
                j.steps[0].status == StepStatus::InProgress
            })
            .await;
        let agent = engine.client.agent("victim-1").await.unwrap();
        let pid = agent.handle.as_ref().unwrap()["pid"].as_i64().unwrap() as i32;
        let old_token = agent_token_in_memory(pid).expect("the agent has a token");
        assert!(old_token.starts_with("gat_"));
        assert!(process_running("sleep 61.25"));

        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();

        let job = engine.wait_status("victim", JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!(job.attempt, 2, "exactly one replacement");
        assert_eq!(job.failures, 1);
        let first = engine.client.agent("victim-1").await.unwrap();
        assert!(first.outcome.as_deref().unwrap_or("").contains("signal 9"), "{first:?}");
        assert!(std::fs::read_to_string(engine.dir.join("data/outputs/victim/finished")).is_ok());
        // The step the dead agent started was killed with its process group.
        until(Duration::from_secs(10), "the dead agent's step to stop", async || !process_running("sleep 61.25")).await;

        // The old attempt speaks up: refused.
        let old = george_client::Client::new(&engine.url, &old_token).unwrap();
        let err = old.heartbeat("victim").await.unwrap_err();
        assert!(err.is_superseded(), "{err}");
        assert_eq!(err.status(), Some(409));
        let err = old
            .report_step("victim", "finish", &StepReport { status: StepStatus::Failed, reason: Some("late".into()) })
            .await
            .unwrap_err();
        assert!(err.is_superseded(), "{err}");
        let err = old.context("victim").await.unwrap_err();
        assert!(err.is_superseded(), "{err}");
        assert_eq!(engine.job("victim").await.status, JobStatus::Completed, "the stale report changed nothing");
    });
}

#[test]
fn killing_the_engine_mid_run_converges_without_duplicates() {
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    let steps = "    - id: a
      description: first half
      run: sleep 0.4; echo a >> \"$GEORGE_OUTPUT_DIR/log\"
      done_when: grep -q a \"$GEORGE_OUTPUT_DIR/log\"
    - id: b
      description: second half
      depends_on: [a]
      run: sleep 0.4; echo b >> \"$GEORGE_OUTPUT_DIR/log\"
      done_when: grep -q b \"$GEORGE_OUTPUT_DIR/log\"
";
    write(&m, "templates/t.yaml", &template("halves", steps));
    let names: Vec<String> = (0..6).map(|i| format!("job-{i}")).collect();
    for n in &names {
        write(&m, &format!("jobs/{n}.yaml"), &job(n, "halves"));
    }
    let mut engine = Engine::start(tmp.path(), "", &["--manifests", m.to_str().unwrap()]);

    // Watch the processes the whole time: never two live agents for one job.
    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(Mutex::new(0usize));
    let sampler = {
        let (stop, worst, dir) = (stop.clone(), worst.clone(), tmp.path().to_path_buf());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let most = agents_by_job(&dir).values().map(Vec::len).max().unwrap_or(0);
                let mut w = worst.lock().unwrap();
                *w = (*w).max(most);
                drop(w);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let rt = engine.rt();
    rt.block_on(async {
        for n in &names[..3] {
            engine.wait_status(n, JobStatus::InProgress, Duration::from_secs(30)).await;
        }
    });
    engine.kill9();
    // Agents keep running without their engine (they retry their calls).
    assert!(!agent_pids(tmp.path()).is_empty(), "agents survive the engine");
    engine.restart();
    rt.block_on(async {
        for n in &names {
            let j = engine.wait_status(n, JobStatus::Completed, Duration::from_secs(60)).await;
            let log = std::fs::read_to_string(engine.dir.join(format!("data/outputs/{n}/log"))).unwrap();
            assert_eq!(log, "a\nb\n", "job {n} did each half exactly once (attempt {})", j.attempt);
        }
        let jobs = engine.client.jobs(&Default::default()).await.unwrap();
        assert_eq!(jobs.len(), names.len(), "no job lost");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !engine.client.agents(false).await.unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "agents still live after every job completed");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(*worst.lock().unwrap(), 1, "some job had two live agents at once");
    assert!(engine.log().contains("adopted"), "the restarted engine adopted running agents:\n{}", engine.log());
}

#[test]
fn an_agent_that_stops_heartbeating_is_replaced_then_the_job_fails() {
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    // An agent that never calls home.
    write(&m, "agents/mute.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: mute}\nspec:\n  command: [sleep, \"300\"]\n  capabilities: [shell]\n");
    let t = template("quiet", "    - id: s\n      description: s\n      run: \"true\"\n")
        .replace("maxAttempts: 4", "maxAttempts: 2");
    write(&m, "templates/t.yaml", &t);
    write(&m, "jobs/j.yaml", &job("silent", "quiet"));
    let engine = Engine::start(tmp.path(), "", &["--manifests", m.to_str().unwrap()]);
    engine.rt().block_on(async {
        let j = engine.wait_status("silent", JobStatus::Failed, Duration::from_secs(30)).await;
        assert_eq!(j.attempt, 2, "replaced once, then gave up");
        let reason = j.reason.unwrap();
        assert!(
            reason.contains("gave up after 2 failed attempts") && reason.contains("unhealthy: no heartbeat"),
            "{reason}"
        );
        let a1 = engine.client.agent("silent-1").await.unwrap();
        assert!(a1.outcome.unwrap().starts_with("unhealthy: no heartbeat"));
    });
}

#[test]
fn an_engine_down_for_twice_the_health_deadline_adopts_its_running_agents() {
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    write(&m, "templates/t.yaml", &template("held", RELEASE_STEPS));
    write(&m, "jobs/j.yaml", &job("patient", "held"));
    let mut engine = Engine::start(tmp.path(), "", &["--manifests", m.to_str().unwrap()]);
    // FAST_CONFIG: heartbeats every 200ms, unhealthy after 3 missed + 300ms.
    let deadline = Duration::from_millis(200 * 3 + 300);
    let rt = engine.rt();
    rt.block_on(async {
        engine
            .wait_job("patient", "the wait step to run", Duration::from_secs(30), |j| {
                j.steps[0].status == StepStatus::InProgress
            })
            .await;
    });
    engine.kill9();
    // The outage itself: the agent keeps working and cannot report.
    std::thread::sleep(deadline * 2);
    let restarted = chrono::Utc::now();
    engine.restart();
    rt.block_on(async {
        // The adopted agent's heartbeats reach the new engine: it was judged
        // on them, not on the silence while the engine was down.
        let deadline_at = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let a = engine.client.agent("patient-1").await.unwrap();
            assert!(a.state.is_live(), "the healthy agent was ended after the restart: {a:?}\n{}", engine.log());
            if a.last_heartbeat.is_some_and(|t| t > restarted) {
                break;
            }
            assert!(std::time::Instant::now() < deadline_at, "no heartbeat after the restart");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::write(engine.dir.join("data/outputs/patient/release"), "").unwrap();
        let job = engine.wait_status("patient", JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!((job.attempt, job.failures), (1, 0), "completed by the adopted agent");
        let a = engine.client.agent("patient-1").await.unwrap();
        assert!(!a.outcome.as_deref().unwrap_or("").contains("unhealthy"), "{a:?}");
    });
}

#[test]
fn no_write_is_answered_4xx_before_the_first_source_apply() {
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    write(&m, "templates/t.yaml", &template("quick", "    - id: s\n      description: s\n      run: \"true\"\n"));
    std::fs::write(tmp.path().join("george-config.yaml"), FAST_CONFIG).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(george_bin())
        .args(["serve", "--config"])
        .arg(tmp.path().join("george-config.yaml"))
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--manifests"])
        .arg(&m)
        .env("GEORGE_API_TOKENS", format!("test:{TOKEN}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // From the moment the process starts, submit with a plain HTTP client
    // (no retries) and read /readyz, until the job is accepted.
    let (statuses, ready) = rt.block_on(async {
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let body = serde_json::json!({"template": "quick", "id": "early"});
        let mut statuses = Vec::new();
        let mut ready = Vec::new();
        let until = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            assert!(std::time::Instant::now() < until, "never accepted: {statuses:?}");
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
                ready.push(r.status().as_u16());
            }
            let Ok(r) = http.post(format!("{base}/api/v1/jobs")).bearer_auth(TOKEN).json(&body).send().await else {
                continue; // not listening yet
            };
            let status = r.status().as_u16();
            if status == 503 {
                assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
                let text = r.text().await.unwrap();
                assert!(text.contains("not_ready"), "{text}");
            }
            statuses.push(status);
            if (200..300).contains(&status) {
                // Accepted: ready now, and from now on.
                let r = http.get(format!("{base}/readyz")).send().await.unwrap();
                ready.push(r.status().as_u16());
                return (statuses, ready);
            }
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(statuses.iter().all(|s| *s == 503 || (200..300).contains(s)), "a 4xx before the first apply: {statuses:?}");
    assert!(ready.contains(&200), "/readyz never said ready: {ready:?}");
    // /readyz never goes back once ready.
    let first_ok = ready.iter().position(|s| *s == 200).unwrap();
    assert!(ready[first_ok..].iter().all(|s| *s == 200), "{ready:?}");
}

/// An engine that fails (a fault point at its start) takes `george serve`
/// and `george up` down with it, saying why: never an API that no engine
/// acts on, never a quickstart waiting for jobs no engine runs.
#[test]
fn serve_and_up_stop_with_the_reason_when_their_engine_fails() {
    let tmp = common::tempdir().unwrap();
    let commands: [(&str, &[&str]); 2] = [
        ("serve", &["serve", "--listen", "127.0.0.1:0"]),
        ("up", &["up", "examples/quickstart", "--once", "--listen", "127.0.0.1:0"]),
    ];
    for (name, args) in commands {
        let log = tmp.path().join(format!("{name}.log"));
        let mut child = std::process::Command::new(george_bin())
            .args(args)
            .arg("--data-dir")
            .arg(tmp.path().join(name))
            .env("GEORGE_FAILPOINTS", "engine.start@1")
            .env_remove("GEORGE_SERVER")
            .current_dir(repo_root())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let status = wait_for(Duration::from_secs(60), &format!("george {name} to exit"), || child.try_wait().unwrap());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!status.success(), "george {name} exited with success:\n{text}");
        assert!(text.contains("the engine failed") && text.contains("engine.start"), "george {name}:\n{text}");
    }
}
