//! The process runtime against real processes.

use george_runtime::{AgentStatus, ProcessRuntime, ProcessRuntimeConfig, Resources, Runtime, SpawnRequest};
use std::collections::BTreeMap;
use std::time::Duration;

fn runtime(dir: &std::path::Path) -> ProcessRuntime {
    ProcessRuntime::new(ProcessRuntimeConfig::under(dir, vec![]))
}

fn req(job: &str, attempt: u32, script: &str) -> SpawnRequest {
    SpawnRequest {
        job_id: job.into(),
        attempt,
        agent_spec: "worker".into(),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        image: None,
        env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
        resources: Resources::default(),
        labels: BTreeMap::new(),
        output_dir: None,
        secrets: vec![],
        max_active: None,
    }
}

/// Spawns and releases at once, as the engine does once it has recorded the handle.
async fn start(rt: &ProcessRuntime, r: SpawnRequest) -> serde_json::Value {
    let (job, attempt) = (r.job_id.clone(), r.attempt);
    let h = rt.spawn(r).await.unwrap();
    rt.release(&job, attempt, &h).await.unwrap();
    h
}

async fn wait_exit(rt: &ProcessRuntime, job: &str, attempt: u32, h: &serde_json::Value) -> AgentStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = rt.status(job, attempt, h).await.unwrap();
        if s != AgentStatus::Running || tokio::time::Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_for_file(path: &std::path::Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(tokio::time::Instant::now() < deadline, "{} never appeared", path.display());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn runs_a_process_with_env_workdir_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let mut events = rt.subscribe();
    std::env::set_var("GEORGE_API_TOKENS", "engine-secret");
    let h = start(
        &rt,
        req("j", 1, "echo \"$GREETING from $(pwd)\"; echo \"secret=[$GEORGE_API_TOKENS]\"; echo oops >&2; exit 3"),
    )
    .await;
    let ev = events.recv().await.unwrap();
    assert_eq!((ev.job_id.as_str(), ev.attempt), ("j", 1));
    assert_eq!(ev.status, AgentStatus::Exited { code: Some(3), signal: None });
    assert_eq!(rt.status("j", 1, &h).await.unwrap(), ev.status);
    let log = std::fs::read_to_string(rt.logs().path("j", 1)).unwrap();
    assert!(log.contains("hello from") && log.contains("/agents/j/1/work"), "{log}");
    assert!(log.contains("secret=[]"), "the engine's environment must not leak: {log}");
    assert!(log.contains("oops"), "stderr is captured: {log}");
}

#[tokio::test]
async fn terminate_is_graceful_then_forced_and_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    // Graceful: the process exits on SIGTERM.
    let ready = dir.path().join("ready");
    let script = format!("trap 'echo bye; exit 0' TERM; touch {}; sleep 30 & wait", ready.display());
    let h = start(&rt, req("g", 1, &script)).await;
    wait_for_file(&ready).await; // the trap is installed
    let s = rt.terminate("g", 1, &h, Duration::from_secs(5)).await.unwrap();
    assert_eq!(s, AgentStatus::Exited { code: Some(0), signal: None });

    // Forced: SIGTERM is ignored, so SIGKILL follows after the grace period; the
    // grandchild in the same group dies too.
    let pidfile = dir.path().join("grandchild.pid");
    let script = format!("trap '' TERM; sleep 60 & echo $! > {}; wait", pidfile.display());
    let h = start(&rt, req("f", 1, &script)).await;
    wait_for_file(&pidfile).await;
    let grandchild: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let s = rt.terminate("f", 1, &h, Duration::from_millis(200)).await.unwrap();
    assert_eq!(s, AgentStatus::Exited { code: None, signal: Some(9) });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{grandchild}")).exists()
        && !std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default().contains(") Z")
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z"), "grandchild still running: {stat}");
}

#[tokio::test]
async fn a_new_runtime_lists_and_adopts_running_agents() {
    let dir = tempfile::tempdir().unwrap();
    let first = runtime(dir.path());
    let h = start(&first, req("a", 2, "sleep 30")).await;
    let done = start(&first, req("b", 1, "true")).await;
    wait_exit(&first, "b", 1, &done).await;

    // A restarted engine (a fresh runtime over the same directory).
    let second = runtime(dir.path());
    let owned = second.list_owned().await.unwrap();
    let summary: Vec<_> = owned.iter().map(|o| (o.job_id.as_str(), o.attempt, o.status)).collect();
    assert_eq!(summary, [("a", 2, AgentStatus::Running), ("b", 1, AgentStatus::Exited { code: None, signal: None })]);
    let mut events = second.subscribe();
    second.adopt(&owned[0]).await.unwrap();
    assert_eq!(second.status("a", 2, &h).await.unwrap(), AgentStatus::Running);
    // Spawning the same attempt again returns the live process, not a twin.
    assert_eq!(second.spawn(req("a", 2, "sleep 30")).await.unwrap(), h);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h["pid"].as_i64().unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap().unwrap();
    assert_eq!((ev.job_id.as_str(), ev.status), ("a", AgentStatus::Exited { code: None, signal: None }));

    second.cleanup("a", 2).await.unwrap();
    second.cleanup("b", 1).await.unwrap();
    assert!(second.list_owned().await.unwrap().is_empty());
    assert!(second.logs().path("a", 2).exists(), "logs outlive the attempt");
}

#[tokio::test]
async fn secrets_are_private_files_and_outputs_are_shared() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let mut r = req(
        "s",
        1,
        "cat \"$GEORGE_SECRETS_DIR/token\" > \"$GEORGE_OUTPUT_DIR/copy\"; stat -c %a \"$GEORGE_SECRETS_DIR/token\"",
    );
    r.secrets = vec![george_runtime::SecretFile { name: "token".into(), content: b"s3cret".to_vec() }];
    r.output_dir = Some(dir.path().join("out/s"));
    assert_eq!(format!("{:?}", r.secrets[0]), "SecretFile(token, 6 bytes)", "Debug never shows a secret");
    let h = start(&rt, r).await;
    wait_exit(&rt, "s", 1, &h).await;
    assert_eq!(std::fs::read_to_string(dir.path().join("out/s/copy")).unwrap(), "s3cret");
    assert_eq!(std::fs::read_to_string(rt.logs().path("s", 1)).unwrap().trim(), "400");
    rt.cleanup("s", 1).await.unwrap();
    assert!(!dir.path().join("agents/s/1/secrets/token").exists(), "cleanup removes the secret files");
}

#[tokio::test]
async fn memory_limit_applies_and_bad_commands_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let mut r = req("m", 1, "ulimit -v");
    r.resources.memory = Some("64Mi".parse().unwrap());
    let h = start(&rt, r).await;
    wait_exit(&rt, "m", 1, &h).await;
    let log = std::fs::read_to_string(rt.logs().path("m", 1)).unwrap();
    assert_eq!(log.trim(), (64 * 1024).to_string(), "ulimit -v reports KiB");

    let mut r = req("x", 1, "");
    r.command = vec!["/no/such/agent".into()];
    let err = rt.spawn(r).await.unwrap_err().to_string();
    assert!(err.contains("`/no/such/agent` not found") && err.contains("spec.command"), "{err}");
}

#[tokio::test]
async fn an_agent_does_nothing_until_released_and_ends_when_its_engine_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let acted = dir.path().join("acted");
    let script = format!("touch {}; sleep 30", acted.display());

    // Spawned, not released: it runs (at its gate) but has not acted.
    let rt = runtime(dir.path());
    let h = rt.spawn(req("held", 1, &script)).await.unwrap();
    assert_eq!(rt.status("held", 1, &h).await.unwrap(), AgentStatus::Running);
    let owned = rt.list_owned().await.unwrap();
    assert_eq!(owned.len(), 1, "the pid file is written before spawn returns: {owned:?}");
    // The engine that spawned it dies (its runtime, holding the gate, is gone).
    drop(rt);
    let again = runtime(dir.path());
    let status = wait_exit(&again, "held", 1, &h).await;
    assert_eq!(status, AgentStatus::Exited { code: None, signal: None }, "adopted processes' codes are unknown");
    assert!(!acted.exists(), "an agent whose engine died before releasing it must not act");

    // Released: it acts.
    let h = start(&again, req("go", 1, &script)).await;
    wait_for_file(&acted).await;
    again.terminate("go", 1, &h, Duration::from_millis(100)).await.unwrap();
}
