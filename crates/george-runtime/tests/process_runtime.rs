//! The process runtime against real processes.

use george_runtime::{
    sandbox, AgentStatus, AgentToken, ProcessRuntime, ProcessRuntimeConfig, Resources, Runtime, SecretFile,
    SpawnRequest,
};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

/// The launcher agents are started through (George's binary offers the same
/// as `george sandbox-exec`); `GEORGE_TEST_LAUNCHER` names a copy where the
/// build's own is out of reach (the unprivileged run).
fn launcher() -> Vec<String> {
    vec![std::env::var("GEORGE_TEST_LAUNCHER").unwrap_or_else(|_| env!("CARGO_BIN_EXE_george-launch").to_string())]
}

/// A runtime without the sandbox: these tests are about processes, and
/// their scripts write marker files where the test puts them. The sandbox
/// has its own tests (the attacks below).
fn runtime(dir: &Path) -> ProcessRuntime {
    let mut cfg = ProcessRuntimeConfig::under(dir, vec![], launcher());
    cfg.sandbox.enabled = false;
    ProcessRuntime::new(cfg)
}

/// The default runtime (sandbox on) with its data directory in `tmp/data`;
/// `tmp` is made searchable, as per-attempt uids need (an engine running as
/// root checks its data directory is).
fn sandboxed(tmp: &Path) -> (ProcessRuntime, std::path::PathBuf) {
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o711)).unwrap();
    let data = tmp.join("data");
    std::fs::create_dir_all(&data).unwrap();
    (ProcessRuntime::new(ProcessRuntimeConfig::under(&data, vec![], launcher())), data.canonicalize().unwrap())
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
        context: None,
        agent_token: None,
        network: Default::default(),
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

/// What a hostile agent (job `a`) tries against a running neighbour (job
/// `b`): every attack must be refused, every legitimate use of its own
/// directories must work (so the test cannot pass by A doing nothing).
const ATTACKS: &str = r#"
out="$GEORGE_OUTPUT_DIR"
attack() { name=$1; shift; if "$@" >>"$out/attacks.log" 2>&1; then echo "$name ALLOWED"; else echo "$name refused"; fi >>"$out/results"; }
own() { name=$1; shift; if "$@" >>"$out/own.log" 2>&1; then echo "$name works"; else echo "$name BROKEN"; fi >>"$out/results"; }
attack read-token cat "$B_DIR/agent/token"
attack list-agent-dir ls "$B_DIR/agent"
attack read-secret cat "$B_DIR/secrets/api-key"
attack read-environ cat "/proc/$B_PID/environ"
attack read-maps cat "/proc/$B_PID/maps"
attack readlink-fd readlink "/proc/$B_PID/fd/1"
attack write-through-fd sh -c 'echo INJECTED > "/proc/$B_PID/fd/1"'
attack through-cwd ls "/proc/$B_PID/cwd/"
attack signal kill -0 "$B_PID"
attack list-work ls "$B_DIR/work"
attack write-work touch "$B_DIR/work/pwned"
attack write-output touch "$B_OUT/pwned"
attack write-pid-file sh -c 'echo "{}" > "$B_DIR/pid"'
attack write-data touch "$DATA/pwned"
attack read-db cat "$DATA/george.db"
attack read-log cat "$B_LOG"
attack list-data ls "$DATA"
own own-token cat "$GEORGE_AGENT_TOKEN_FILE"
own own-secret cat "$GEORGE_SECRETS_DIR/api-key"
own own-work sh -c 'echo x > "$GEORGE_WORK_DIR/mine" && cat "$GEORGE_WORK_DIR/mine"'
own own-tmp sh -c 'echo x > "$TMPDIR/t" && cat "$TMPDIR/t"'
own own-home sh -c 'echo x > "$HOME/.rc"'
own system cat /etc/passwd
own devnull sh -c 'echo x > /dev/null'
"#;

#[tokio::test]
async fn a_hostile_agent_cannot_reach_a_running_neighbour() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, data) = sandboxed(tmp.path());
    // What the engine keeps in its data directory (the store, here a stand-in).
    std::fs::write(data.join("george.db"), "ENGINE-DATABASE").unwrap();

    // B: a running agent with a token file (kept, as the worst case of an
    // agent that never removed it), a secret and a private variable.
    let mut b = req("b", 1, "echo up > \"$GEORGE_OUTPUT_DIR/up\"; exec sleep 60");
    b.agent_token = Some(AgentToken("gat_B-TOKEN-0123456789".into()));
    b.secrets = vec![SecretFile { name: "api-key".into(), content: b"B-SECRET-VALUE".to_vec() }];
    b.env.insert("B_PRIVATE".into(), "b-env-secret".into());
    b.output_dir = Some(data.join("outputs/b"));
    let hb = start(&rt, b).await;
    wait_for_file(&data.join("outputs/b/up")).await;
    let b_pid = hb["pid"].as_i64().unwrap().to_string();

    // A: the same capabilities, hostile.
    let mut a = req("a", 1, ATTACKS);
    a.agent_token = Some(AgentToken("gat_A-TOKEN-9876543210".into()));
    a.secrets = vec![SecretFile { name: "api-key".into(), content: b"A-SECRET".to_vec() }];
    a.output_dir = Some(data.join("outputs/a"));
    let b_dir = data.join("agents/b/1");
    for (k, v) in [
        ("B_PID", b_pid.clone()),
        ("B_DIR", b_dir.display().to_string()),
        ("B_OUT", data.join("outputs/b").display().to_string()),
        ("B_LOG", rt.logs().path("b", 1).display().to_string()),
        ("DATA", data.display().to_string()),
    ] {
        a.env.insert(k.into(), v);
    }
    let ha = start(&rt, a).await;
    let status = wait_exit(&rt, "a", 1, &ha).await;
    assert_eq!(status, AgentStatus::Exited { code: Some(0), signal: None });

    // While both ran, no process had either token in its environment.
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let env = std::fs::read(p.path().join("environ")).unwrap_or_default();
        let env = String::from_utf8_lossy(&env);
        assert!(
            !env.contains("B-TOKEN") && !env.contains("A-TOKEN"),
            "a token in {}'s environment",
            p.path().display()
        );
    }

    let results = std::fs::read_to_string(data.join("outputs/a/results")).unwrap();
    let lines: Vec<&str> = results.lines().collect();
    assert_eq!(lines.len(), 24, "every probe ran: {results}");
    for line in &lines {
        assert!(
            line.ends_with(" refused") || line.ends_with(" works"),
            "sandbox breach or broken agent: {line}\n{results}"
        );
    }
    let seen = format!(
        "{}{}{}",
        std::fs::read_to_string(data.join("outputs/a/attacks.log")).unwrap_or_default(),
        std::fs::read_to_string(data.join("outputs/a/own.log")).unwrap_or_default(),
        std::fs::read_to_string(rt.logs().path("a", 1)).unwrap_or_default(),
    );
    let b_log = std::fs::read_to_string(rt.logs().path("b", 1)).unwrap_or_default();
    assert!(!b_log.contains("INJECTED"), "a wrote into b's output: {b_log}");
    for leaked in ["B-TOKEN", "B-SECRET-VALUE", "b-env-secret", "ENGINE-DATABASE"] {
        assert!(!seen.contains(leaked), "{leaked} reached agent a:\n{seen}");
    }
    assert!(seen.contains("A-TOKEN") && seen.contains("A-SECRET"), "a reads its own token and secret:\n{seen}");
    assert!(
        !data.join("pwned").exists() && !b_dir.join("work/pwned").exists() && !data.join("outputs/b/pwned").exists()
    );
    assert_eq!(rt.status("b", 1, &hb).await.unwrap(), AgentStatus::Running, "b is unharmed");

    if sandbox::engine_is_root() {
        // Root hands each attempt its own unprivileged uid.
        let uid_b = std::fs::metadata(format!("/proc/{b_pid}")).unwrap().uid();
        let uid_a = ha["uid"].as_u64().unwrap() as u32;
        assert!(uid_b >= 2_000_000_000 && uid_a >= 2_000_000_000 && uid_a != uid_b, "{uid_a} {uid_b}");
    }
    rt.terminate("b", 1, &hb, Duration::from_millis(200)).await.unwrap();
    rt.cleanup("b", 1).await.unwrap();
    rt.cleanup("a", 1).await.unwrap();
}

#[tokio::test]
async fn nothing_an_agent_starts_outlives_its_attempt_under_root() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, data) = sandboxed(tmp.path());
    // A step that leaves its process group and session, as a daemon would.
    let mut r = req("d", 1, "setsid sh -c 'echo $$ > \"$GEORGE_OUTPUT_DIR/daemon.tmp\"; mv \"$GEORGE_OUTPUT_DIR/daemon.tmp\" \"$GEORGE_OUTPUT_DIR/daemon\"; exec sleep 300' &");
    r.output_dir = Some(data.join("outputs/d"));
    let h = start(&rt, r).await;
    wait_for_file(&data.join("outputs/d/daemon")).await;
    wait_exit(&rt, "d", 1, &h).await;
    let daemon: i32 = std::fs::read_to_string(data.join("outputs/d/daemon")).unwrap().trim().parse().unwrap();
    let gone = || {
        !Path::new(&format!("/proc/{daemon}")).exists()
            || std::fs::read_to_string(format!("/proc/{daemon}/stat")).unwrap_or_default().contains(") Z")
    };
    assert!(!gone(), "the daemon outlived its agent (as daemons do)");
    rt.cleanup("d", 1).await.unwrap();
    if !sandbox::engine_is_root() {
        // Without root there is no uid of its own to sweep; end it here.
        let _ = std::process::Command::new("kill").arg("-9").arg(daemon.to_string()).status();
        return;
    }
    // Its uid was the attempt's: cleanup killed every process of it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !gone() {
        assert!(tokio::time::Instant::now() < deadline, "the daemon {daemon} outlived its attempt");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn network_policies_limit_what_an_agent_can_connect_to() {
    use george_core::manifest::NetworkPolicy;
    let tmp = tempfile::tempdir().unwrap();
    let (rt, data) = sandboxed(tmp.path());
    let engine = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (ep, op) = (engine.local_addr().unwrap().port(), other.local_addr().unwrap().port());
    let script = r#"for p in $ENGINE_PORT $OTHER_PORT; do if bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" 2>/dev/null; then echo "$p open"; else echo "$p refused"; fi; done > "$GEORGE_OUTPUT_DIR/net""#;
    for (job, policy, expected) in [
        ("full", NetworkPolicy::Full, format!("{ep} open\n{op} open\n")),
        ("engine-only", NetworkPolicy::EngineOnly, format!("{ep} open\n{op} refused\n")),
        ("none", NetworkPolicy::None, format!("{ep} refused\n{op} refused\n")),
    ] {
        let mut r = req(job, 1, script);
        r.network = policy;
        r.output_dir = Some(data.join("outputs").join(job));
        r.env.insert("GEORGE_API_URL".into(), format!("http://127.0.0.1:{ep}"));
        r.env.insert("ENGINE_PORT".into(), ep.to_string());
        r.env.insert("OTHER_PORT".into(), op.to_string());
        let h = start(&rt, r).await;
        assert_eq!(wait_exit(&rt, job, 1, &h).await, AgentStatus::Exited { code: Some(0), signal: None });
        let seen = std::fs::read_to_string(data.join("outputs").join(job).join("net")).unwrap();
        assert_eq!(seen, expected, "network: {job}");
        rt.cleanup(job, 1).await.unwrap();
    }
}

/// The runtime conformance suite, on the default (sandboxed) runtime.
mod conformance {
    use george_runtime::{ProcessRuntime, ProcessRuntimeConfig, Runtime, SpawnRequest};
    use george_testkit::runtime_conformance::{self, Behaviour, RuntimeBackend};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    struct Processes {
        data: std::path::PathBuf,
        _tmp: tempfile::TempDir,
    }

    #[async_trait::async_trait]
    impl RuntimeBackend for Processes {
        async fn runtime(&self) -> Arc<dyn Runtime> {
            Arc::new(ProcessRuntime::new(ProcessRuntimeConfig::under(&self.data, vec![], super::launcher())))
        }

        fn request(&self, job: &str, attempt: u32, b: Behaviour) -> SpawnRequest {
            runtime_conformance::request(job, attempt, b)
        }
    }

    async fn processes() -> Processes {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        Processes { data, _tmp: tmp }
    }

    george_testkit::runtime_conformance_tests!(processes());
}

/// The launcher runs nothing it was not cleared to run: a spec it cannot
/// read, or a gate closed without `go`, ends it with its own exit code and
/// the program never starts; `go` runs the program with the spec's limit.
#[test]
fn the_launcher_runs_nothing_before_the_gate_opens() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("ran");
    let script = format!("touch {}; ulimit -v", marker.display());
    let spec = serde_json::json!({"memory": 512u64 << 20}).to_string();
    let launch = |spec: &str, gate: &[u8]| {
        let mut child = Command::new(&launcher()[0])
            .args([spec, "--", "/bin/sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A launcher that refuses its spec never reads the gate.
        let _ = child.stdin.take().unwrap().write_all(gate);
        child.wait_with_output().unwrap()
    };

    let bad = launch("{\"memory\": \"lots\"}", b"go\n");
    assert_eq!(bad.status.code(), Some(george_runtime::launch::CONFINE_FAILED));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad launch spec"), "{bad:?}");
    for closed in [&b""[..], b"no\n"] {
        let out = launch(&spec, closed);
        assert_eq!(out.status.code(), Some(george_runtime::GATE_CLOSED), "{out:?}");
        assert!(!marker.exists(), "the program ran behind a closed gate");
    }
    let out = launch(&spec, b"go\n");
    assert!(out.status.success(), "{out:?}");
    assert!(marker.exists());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), (512 << 10).to_string(), "the memory limit (KiB)");
}

/// The extended attributes of `path` an agent could have set on it.
fn owner_xattrs(path: &Path) -> Vec<String> {
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap();
    names[..n]
        .split(|b| *b == 0)
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .filter(|n| n.starts_with("user.") || n.starts_with("system.posix_acl"))
        .collect()
}

/// A default ACL (`setfacl -d -m u:4242:rwx`): what the owner of a
/// directory can leave on it so that files made in it later are shared.
fn default_acl_granting(uid: u32) -> Vec<u8> {
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in
        [(0x01u16, 7u16, u32::MAX), (0x02, 7, uid), (0x04, 7, u32::MAX), (0x10, 7, u32::MAX), (0x20, 0, u32::MAX)]
    {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(id.to_le_bytes());
    }
    acl
}

#[tokio::test]
async fn an_ended_attempts_directories_serve_the_next_one_empty_and_clean() {
    if !sandbox::engine_is_root() {
        // Without root no agent has a uid of its own, and nothing is kept.
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (rt, data) = sandboxed(tmp.path());
    let agents = data.join("agents");
    // A: leaves files, a directory it cannot be asked to empty, a link out,
    // and (set for it here, as its owner could) an attribute and a default ACL.
    let leave = "mkdir -p \"$GEORGE_WORK_DIR/deep/er\" && echo A-WORK > \"$GEORGE_WORK_DIR/deep/er/note\" && \
                 chmod 000 \"$GEORGE_WORK_DIR/deep\" && echo A-HOME > \"$HOME/.profile\" && \
                 ln -s /etc/passwd \"$TMPDIR/link\" && echo left > \"$GEORGE_OUTPUT_DIR/left\" && exec sleep 60";
    let mut a = req("a", 1, leave);
    a.agent_token = Some(AgentToken("gat_A-TOKEN-0123456789".into()));
    a.output_dir = Some(data.join("outputs/a"));
    let ha = start(&rt, a).await;
    wait_for_file(&data.join("outputs/a/left")).await;
    let work = agents.join("a/1/work");
    rustix::fs::lsetxattr(&work, "user.from-a", b"A-XATTR", rustix::fs::XattrFlags::empty()).unwrap();
    rustix::fs::lsetxattr(
        &work,
        "system.posix_acl_default",
        &default_acl_granting(4242),
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    assert_eq!(owner_xattrs(&work).len(), 2, "the attributes are set: {:?}", owner_xattrs(&work));
    let a_inode = std::fs::metadata(&work).unwrap().ino();
    rt.terminate("a", 1, &ha, Duration::from_secs(1)).await.unwrap();
    rt.cleanup("a", 1).await.unwrap();
    assert!(!agents.join("a").exists(), "the ended job's directory is no longer in place");
    assert_eq!(std::fs::read_dir(agents.join(".spare")).unwrap().count(), 1, "it is kept as a spare");

    // B: gets A's directories, empty, clean and its own.
    let mut b = req("b", 1, "ls -A \"$GEORGE_WORK_DIR\" \"$HOME\" \"$TMPDIR\" > \"$GEORGE_OUTPUT_DIR/seen\"");
    b.agent_token = Some(AgentToken("gat_B-TOKEN-0123456789".into()));
    b.output_dir = Some(data.join("outputs/b"));
    let hb = rt.spawn(b).await.unwrap();
    let b_uid = hb["uid"].as_u64().expect("a uid of its own") as u32;
    let work = agents.join("b/1/work");
    let meta = std::fs::symlink_metadata(&work).unwrap();
    assert_eq!(meta.ino(), a_inode, "B's work directory is A's, kept");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (b_uid, 0o700), "it is B's, private");
    for sub in ["work", "home", "tmp", "agent"] {
        let d = agents.join("b/1").join(sub);
        assert_eq!(owner_xattrs(&d), Vec::<String>::new(), "{sub} carries nothing of A's");
        assert_eq!(std::fs::metadata(&d).unwrap().uid(), b_uid, "{sub} is B's");
    }
    let token = std::fs::read_to_string(agents.join("b/1/agent").join(george_runtime::AGENT_TOKEN_FILE)).unwrap();
    assert_eq!(token, "gat_B-TOKEN-0123456789");
    rt.release("b", 1, &hb).await.unwrap();
    assert_eq!(wait_exit(&rt, "b", 1, &hb).await, AgentStatus::Exited { code: Some(0), signal: None });
    let seen = std::fs::read_to_string(data.join("outputs/b/seen")).unwrap();
    assert!(
        !seen.contains("note") && !seen.contains("deep") && !seen.contains("profile") && !seen.contains("link"),
        "{seen}"
    );

    // C: grows its temporary directory past what is kept; it is deleted instead.
    rt.cleanup("b", 1).await.unwrap();
    assert_eq!(std::fs::read_dir(agents.join(".spare")).unwrap().count(), 1, "B's is kept too");
    let grow = "i=0; while [ $i -lt 1200 ]; do : > \"$TMPDIR/a-file-name-long-enough-to-grow-the-directory-quickly-$i\"; i=$((i+1)); done";
    let hc = start(&rt, req("c", 1, grow)).await;
    assert_eq!(wait_exit(&rt, "c", 1, &hc).await, AgentStatus::Exited { code: Some(0), signal: None });
    rt.cleanup("c", 1).await.unwrap();
    assert!(!agents.join("c").exists());
    assert_eq!(
        std::fs::read_dir(agents.join(".spare")).unwrap().count(),
        0,
        "C took B's spare, and its own was not kept"
    );

    // D's is kept; an engine started after this one does not trust it.
    let hd = start(&rt, req("d", 1, "true")).await;
    wait_exit(&rt, "d", 1, &hd).await;
    rt.cleanup("d", 1).await.unwrap();
    assert_eq!(std::fs::read_dir(agents.join(".spare")).unwrap().count(), 1);
    let (restarted, _) = sandboxed(tmp.path());
    restarted.clear_pools().await.unwrap();
    assert_eq!(std::fs::read_dir(agents.join(".spare")).unwrap().count(), 0, "a restarted engine removes the spares");

    // The first engine's list still names D's spare, gone: a spawn makes its directories anew.
    // A second attempt's directory is kept too, as a first one.
    let he = start(&rt, req("e", 2, "echo ran > \"$GEORGE_WORK_DIR/ran\"; cat \"$GEORGE_WORK_DIR/ran\"")).await;
    assert_eq!(wait_exit(&rt, "e", 2, &he).await, AgentStatus::Exited { code: Some(0), signal: None });
    rt.cleanup("e", 2).await.unwrap();
    let spares: Vec<_> = std::fs::read_dir(agents.join(".spare")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(spares.len(), 1);
    assert!(spares[0].join("1/work").is_dir() && !spares[0].join("2").exists(), "{spares:?}");
    assert_eq!(std::fs::read_dir(spares[0].join("1/work")).unwrap().count(), 0);
}
