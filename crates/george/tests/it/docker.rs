//! Acceptance for the Docker runtime, against the real Docker Engine on this
//! machine. Nothing can be pulled here, so the agent image is built from the
//! george binary under test (scripts/docker-image.sh, FROM scratch).

use crate::common;

use bollard::query_parameters::{InspectContainerOptions, ListContainersOptionsBuilder};
use bollard::Docker;
use common::*;
use george_core::JobStatus;
use std::collections::HashMap;
use std::time::Duration;

fn image() -> &'static str {
    test_image()
}

/// A unique engine id, so parallel tests never see each other's containers.
fn engine_id(tmp: &std::path::Path) -> String {
    let base = tmp.file_name().unwrap().to_string_lossy().to_lowercase();
    format!("t{}", base.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>())
}

/// Removes every container of an engine when the test ends, however it ends.
struct Containers(String);

impl Drop for Containers {
    fn drop(&mut self) {
        let out = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=george.io/engine={}", self.0)])
            .output()
            .unwrap();
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = std::process::Command::new("docker").args(["rm", "-f", id]).output();
        }
    }
}

fn docker() -> Docker {
    Docker::connect_with_defaults().unwrap()
}

/// The engine's containers: (name, job label, running).
async fn containers(engine: &str) -> Vec<(String, String, bool)> {
    let filters = HashMap::from([("label", vec![format!("george.io/engine={engine}")])]);
    let list = docker()
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build()))
        .await
        .unwrap();
    list.into_iter()
        .map(|c| {
            let labels = c.labels.unwrap_or_default();
            (
                c.names.unwrap_or_default().first().cloned().unwrap_or_default().trim_start_matches('/').to_string(),
                labels.get("george.io/job").cloned().unwrap_or_default(),
                c.state.map(|s| s.to_string()) == Some("running".into()),
            )
        })
        .collect()
}

fn docker_args<'a>(image: &'a str, manifests: &'a str) -> Vec<&'a str> {
    vec!["--mode", "docker", "--image", image, "--image-pull-policy", "Never", "--manifests", manifests]
}

#[test]
fn the_quickstart_runs_in_containers_with_labels_and_limits() {
    let tmp = common::tempdir().unwrap();
    let id = engine_id(tmp.path());
    let _cleanup = Containers(id.clone());
    let quickstart = repo_root().join("examples/quickstart");
    let cfg = FAST_CONFIG.replace("agents:\n", "agents:\n  defaultResources:\n    memory: 300Mi\n    cpu: 500m\n")
        + "containerBackend:\n  docker:\n    keepContainers: true\n";
    let engine = Engine::start_full(
        tmp.path(),
        &cfg,
        &docker_args(image(), quickstart.to_str().unwrap()),
        &[("GEORGE_ENGINE_ID", &id)],
    );
    engine.rt().block_on(async {
        for job in ["weekly-report", "incident-digest", "etc-inventory"] {
            engine.wait_status(job, JobStatus::Completed, Duration::from_secs(60)).await;
        }
        let report = std::fs::read_to_string(engine.dir.join("data/outputs/weekly-report/reports/weekly.txt")).unwrap();
        assert_eq!(report.lines().count(), 12, "the agent in the container did the work");

        // Each job ran in its own container; check them through the Engine API.
        let list = containers(&id).await;
        assert_eq!(list.len(), 3, "{list:?}\n{}", engine.log());
        let d = docker();
        for (name, job, _) in &list {
            assert_eq!(name, &format!("george-{id}-{job}-1"), "deterministic name");
            let c = d.inspect_container(name, None::<InspectContainerOptions>).await.unwrap();
            let config = c.config.unwrap();
            let labels = config.labels.unwrap();
            assert_eq!(labels["george.io/job"], *job);
            assert_eq!(labels["george.io/attempt"], "1");
            assert_eq!(labels["george.io/engine"], id);
            assert!(labels.contains_key("george.io/template"));
            assert_eq!(config.tty, Some(false));
            assert_eq!(config.image.as_deref(), Some(image()));
            let env = config.env.unwrap();
            for var in [
                "GEORGE_JOB_ID=",
                "GEORGE_API_URL=http://127.0.0.1:",
                "GEORGE_AGENT_TOKEN_FILE=/run/george/agent/token",
                "GEORGE_OUTPUT_DIR=/george/output",
            ] {
                assert!(env.iter().any(|e| e.starts_with(var)), "{var} missing in {env:?}");
            }
            // The token is a mounted file, not in anything `docker inspect` shows.
            let inspected =
                serde_json::to_string(&d.inspect_container(name, None::<InspectContainerOptions>).await.unwrap())
                    .unwrap();
            assert!(!inspected.contains("gat_"), "a token in docker inspect: {inspected}");
            assert_eq!(config.user.as_deref(), Some("65534:65534"), "an unprivileged user");
            let host = c.host_config.unwrap();
            assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
            assert_eq!(host.security_opt, Some(vec!["no-new-privileges:true".to_string()]));
            assert_eq!(host.readonly_rootfs, Some(true));
            // The AgentSpec's limit wins over agents.defaultResources; cpu comes from the default.
            let expected_memory = if job == "etc-inventory" { 256 << 20 } else { 512 << 20 };
            assert_eq!(host.memory, Some(expected_memory), "{job}");
            assert_eq!(host.nano_cpus, Some(500_000_000), "{job}");
            assert_eq!(host.network_mode.as_deref(), Some("host"));
            let mounts = c.mounts.unwrap_or_default();
            assert!(
                mounts.iter().all(|m| !m.source.as_deref().unwrap_or("").contains("docker.sock")),
                "no Docker socket inside the agent: {mounts:?}"
            );
            assert_eq!(c.state.unwrap().exit_code, Some(0));
        }
        // The logs came out of the containers and are kept.
        let log = std::fs::read_to_string(engine.dir.join("data/logs/weekly-report/1.log")).unwrap();
        assert!(log.contains("agent starting") && log.contains("job completed"), "{log}");
        assert!(log.lines().all(|l| l.len() > 30 && l.as_bytes()[4] == b'-'), "lines carry timestamps: {log}");
    });
}

const SLOW_FIRST_TIME: &str = "    - id: slow
      description: slow the first time
      run: if [ ! -f \"$GEORGE_OUTPUT_DIR/first\" ]; then touch \"$GEORGE_OUTPUT_DIR/first\"; sleep 120; fi
    - id: finish
      description: finish
      depends_on: [slow]
      run: echo done > \"$GEORGE_OUTPUT_DIR/finished\"
";

#[test]
fn docker_kill_mid_step_gets_a_new_container_that_completes_the_job() {
    let tmp = common::tempdir().unwrap();
    let id = engine_id(tmp.path());
    let _cleanup = Containers(id.clone());
    let m = tmp.path().join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    write(&m, "templates/t.yaml", &template("slow", SLOW_FIRST_TIME));
    write(&m, "jobs/j.yaml", &job("victim", "slow"));
    let engine = Engine::start_with_env(
        tmp.path(),
        "",
        &docker_args(image(), m.to_str().unwrap()),
        &[("GEORGE_ENGINE_ID", &id)],
    );
    engine.rt().block_on(async {
        engine.wait_job("victim", "the slow step", Duration::from_secs(60), |j| j.steps[0].runs == 1).await;
        let name = format!("george-{id}-victim-1");
        let out = std::process::Command::new("docker").args(["kill", &name]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let j = engine.wait_status("victim", JobStatus::Completed, Duration::from_secs(60)).await;
        assert_eq!(j.attempt, 2);
        let first = engine.client.agent("victim-1").await.unwrap();
        assert!(
            first.outcome.as_deref().unwrap_or("").contains("137")
                || first.outcome.as_deref().unwrap_or("").contains("signal 9"),
            "{first:?}"
        );
        let second = engine.client.agent("victim-2").await.unwrap();
        assert_eq!(second.handle.unwrap()["container"], format!("george-{id}-victim-2"), "a new container");
        let gone = async || containers(&id).await.is_empty();
        until(Duration::from_secs(20), "the containers of finished attempts to be removed", gone).await;
    });
}

#[test]
fn engine_restart_adopts_containers_and_leaks_none() {
    let tmp = common::tempdir().unwrap();
    let id = engine_id(tmp.path());
    let _cleanup = Containers(id.clone());
    let m = tmp.path().join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    let steps = "    - id: a\n      description: a\n      run: sleep 1; echo a >> \"$GEORGE_OUTPUT_DIR/log\"\n      done_when: grep -q a \"$GEORGE_OUTPUT_DIR/log\"\n    - id: b\n      description: b\n      depends_on: [a]\n      run: sleep 1; echo b >> \"$GEORGE_OUTPUT_DIR/log\"\n      done_when: grep -q b \"$GEORGE_OUTPUT_DIR/log\"\n";
    write(&m, "templates/t.yaml", &template("halves", steps));
    let names: Vec<String> = (0..4).map(|i| format!("c-{i}")).collect();
    for n in &names {
        write(&m, &format!("jobs/{n}.yaml"), &job(n, "halves"));
    }
    let mut engine = Engine::start_with_env(
        tmp.path(),
        "",
        &docker_args(image(), m.to_str().unwrap()),
        &[("GEORGE_ENGINE_ID", &id)],
    );
    let rt = engine.rt();
    rt.block_on(async {
        for n in &names {
            engine.wait_job(n, "its container to run", Duration::from_secs(60), |j| j.steps[0].runs == 1).await;
        }
    });
    engine.kill9();
    engine.restart();
    rt.block_on(async {
        let mut worst = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let running = containers(&id).await;
            let mut per_job: HashMap<String, usize> = HashMap::new();
            for (_, job, live) in &running {
                if *live {
                    *per_job.entry(job.clone()).or_default() += 1;
                }
            }
            worst = worst.max(per_job.values().copied().max().unwrap_or(0));
            let jobs = engine.client.jobs(&Default::default()).await.unwrap();
            if jobs.iter().all(|j| j.status == JobStatus::Completed) && running.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "jobs {:?}, containers {running:?}\n{}",
                jobs.iter().map(|j| (&j.id, j.status)).collect::<Vec<_>>(),
                engine.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(worst, 1, "a job had two live containers");
        for n in &names {
            let log = std::fs::read_to_string(engine.dir.join(format!("data/outputs/{n}/log"))).unwrap();
            assert_eq!(log, "a\nb\n", "{n} ran each step once");
        }
        assert!(engine.log().contains("adopted running agent container"), "{}", engine.log());
        // Re-attaching to the logs wrote no line twice.
        let log = std::fs::read_to_string(engine.dir.join("data/logs/c-0/1.log")).unwrap();
        let mut lines: Vec<&str> = log.lines().collect();
        let total = lines.len();
        lines.sort();
        lines.dedup();
        assert_eq!(lines.len(), total, "duplicate log lines after re-attach:\n{log}");
    });
}

#[test]
fn secrets_reach_only_entitled_agents_and_only_as_files() {
    let tmp = common::tempdir().unwrap();
    let id = engine_id(tmp.path());
    let _cleanup = Containers(id.clone());
    let secret = "tok-7f3a9c-only-for-git";
    let secrets = tmp.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("git-token"), secret).unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "agents/coder.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: coder}\nspec:\n  capabilities: [shell, git]\n  secrets:\n    git: [{name: git-token}]\n");
    let copy = "    - id: look\n      description: look for the secret\n      run: cat /run/george/secrets/git-token > \"$GEORGE_OUTPUT_DIR/seen\" 2>&1 || echo absent > \"$GEORGE_OUTPUT_DIR/seen\"; env > \"$GEORGE_OUTPUT_DIR/env\"\n";
    write(&m, "templates/with-git.yaml", &template("with-git", copy).replace("[shell]", "[shell, git]"));
    write(&m, "templates/shell-only.yaml", &template("shell-only", copy));
    write(&m, "jobs/a.yaml", &job("entitled", "with-git"));
    write(&m, "jobs/b.yaml", &job("unentitled", "shell-only"));
    let cfg = "containerBackend:\n  docker:\n    keepContainers: true\n";
    let mut args = docker_args(image(), m.to_str().unwrap());
    let secrets_arg = secrets.to_str().unwrap().to_string();
    args.extend(["--secrets-dir", &secrets_arg]);
    let engine = Engine::start_with_env(tmp.path(), cfg, &args, &[("GEORGE_ENGINE_ID", &id)]);
    engine.rt().block_on(async {
        engine.wait_status("entitled", JobStatus::Completed, Duration::from_secs(60)).await;
        engine.wait_status("unentitled", JobStatus::Completed, Duration::from_secs(60)).await;
        let out =
            |job: &str, f: &str| std::fs::read_to_string(engine.dir.join(format!("data/outputs/{job}/{f}"))).unwrap();
        assert_eq!(out("entitled", "seen"), secret, "the entitled agent reads the secret file");
        assert_eq!(out("unentitled", "seen"), "absent\n", "the other agent has no such file");
        for job in ["entitled", "unentitled"] {
            assert!(!out(job, "env").contains(secret), "the secret is not in the agent's environment");
            let c = docker()
                .inspect_container(&format!("george-{id}-{job}-1"), None::<InspectContainerOptions>)
                .await
                .unwrap();
            let config = c.config.unwrap();
            let shown = format!("{:?} {:?}", config.env, config.labels);
            assert!(!shown.contains(secret), "the secret is not in docker inspect env or labels");
            let mounts = c.mounts.unwrap_or_default();
            let secret_mount = mounts.iter().find(|m| m.destination.as_deref() == Some("/run/george/secrets"));
            match job {
                "entitled" => assert_eq!(secret_mount.and_then(|m| m.rw), Some(false), "mounted read-only"),
                _ => assert!(secret_mount.is_none()),
            }
            let log = std::fs::read_to_string(engine.dir.join(format!("data/logs/{job}/1.log"))).unwrap();
            assert!(!log.contains(secret), "not in the agent's log");
        }
        assert!(!engine.log().contains(secret), "not in George's log");
        let events = serde_json::to_string(&engine.client.events(0, 10_000).await.unwrap()).unwrap();
        assert!(!events.contains(secret), "not in events");
    });
}

#[test]
fn a_missing_image_blocks_the_job_once_with_a_clear_reason() {
    let tmp = common::tempdir().unwrap();
    let id = engine_id(tmp.path());
    let _cleanup = Containers(id.clone());
    let m = tmp.path().join("manifests");
    write(&m, "agents/ghost.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: ghost}\nspec:\n  image: george/no-such-image:1\n  capabilities: [shell]\n");
    write(&m, "templates/t.yaml", &template("t", "    - id: s\n      description: s\n      run: \"true\"\n"));
    write(&m, "jobs/j.yaml", &job("ghostly", "t"));
    let engine = Engine::start_with_env(
        tmp.path(),
        "",
        &docker_args(image(), m.to_str().unwrap()),
        &[("GEORGE_ENGINE_ID", &id)],
    );
    engine.rt().block_on(async {
        let j = engine.wait_status("ghostly", JobStatus::Blocked, Duration::from_secs(60)).await;
        assert_eq!(j.reason.as_deref(), Some("image george/no-such-image:1 not found and pull policy Never"));
        // No hot retry loop: after two more resyncs (1s each) there is still one attempt.
        let text = |body: String| {
            body.lines()
                .filter(|l| l.starts_with("george_reconcile_total"))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
                .sum::<f64>()
        };
        let metrics = || async { text(engine.metrics().await) };
        let start = metrics().await;
        until(Duration::from_secs(20), "two resyncs", async || metrics().await >= start + 2.0).await;
        let j = engine.job("ghostly").await;
        assert_eq!((j.status, j.attempt, j.failures), (JobStatus::Blocked, 1, 0));
        assert!(containers(&id).await.is_empty());
    });
}

#[test]
fn an_unreachable_docker_socket_is_one_clear_error() {
    let tmp = common::tempdir().unwrap();
    let out = std::process::Command::new(george_bin())
        .args(["serve", "--mode", "docker", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("cannot reach the Docker Engine at unix:///nonexistent/docker.sock"), "{err}");
    assert_eq!(err.matches("error").count(), 1, "one error, not a cascade: {err}");
}

#[test]
fn docker_compose_up_runs_the_quickstart() {
    let tmp = common::tempdir().unwrap();
    let id = engine_id(tmp.path());
    let _cleanup = Containers(id.clone());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let project = format!("george{id}");
    let compose = |args: &[&str]| {
        std::process::Command::new("docker-compose")
            .arg("-f")
            .arg(repo_root().join("docker-compose.yml"))
            .args(["-p", &project])
            .args(args)
            .env("GEORGE_IMAGE", image())
            .env("GEORGE_PORT", port.to_string())
            .env("GEORGE_DATA", &data)
            .env("GEORGE_ENGINE_ID", &id)
            .output()
            .unwrap()
    };
    struct Down<'a>(&'a dyn Fn(&[&str]) -> std::process::Output);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            (self.0)(&["down", "--timeout", "5"]);
        }
    }
    let up = compose(&["up", "-d"]);
    assert!(up.status.success(), "docker-compose up failed: {}", stderr(&up));
    let _down = Down(&compose);
    let token = wait_for(Duration::from_secs(60), "the engine's token file", || {
        std::fs::read_to_string(data.join("operator-token"))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    });
    let client = george_client::Client::new(&format!("http://127.0.0.1:{port}"), &token).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(jobs) = client.jobs(&Default::default()).await {
                if jobs.len() == 3 && jobs.iter().all(|j| j.status == JobStatus::Completed) {
                    break;
                }
            }
            if std::time::Instant::now() > deadline {
                let logs = compose(&["logs"]);
                panic!("the compose engine did not finish the quickstart:\n{}{}", stdout(&logs), stderr(&logs));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let agents = client.agents(true).await.unwrap();
        assert!(agents.iter().all(|a| a.runtime == "docker"), "{agents:?}");
    });
    assert!(
        std::fs::read_to_string(data.join("outputs/weekly-report/reports/weekly.txt")).unwrap().lines().count() == 12
    );
}

#[test]
fn the_docker_bench_reports_overhead_against_raw_docker_run() {
    let out = std::process::Command::new(george_bin())
        .args(["-o", "json", "bench", "--mode", "docker", "--jobs", "2", "--image", image()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in ["raw_docker_run_mean_ms", "george_job_mean_ms", "overhead_ratio_mean", "overhead_ratio_p50"] {
        assert!(v[field].as_f64().is_some_and(|x| x > 0.0), "{field} in {v}");
    }
    assert_eq!(v["jobs"], 2);
    // With a warm pool: every job of the one-at-a-time run claims a warm container, and the burst reports its claims.
    let out = std::process::Command::new(george_bin())
        .args(["-o", "json", "bench", "--mode", "docker", "--jobs", "2", "--pool", "2", "--image", image()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["pool"].as_u64(), v["warm_starts"].as_u64()), (Some(2), Some(2)), "{v}");
    assert!(v["submit_to_first_step_p50_ms"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    assert!(v["burst"]["warm_claims"].as_u64().is_some_and(|n| n >= 2), "{v}");
}

#[test]
fn george_up_runs_the_quickstart_in_docker() {
    let tmp = common::tempdir().unwrap();
    let id = engine_id(tmp.path());
    let _cleanup = Containers(id.clone());
    let out = std::process::Command::new(george_bin())
        .args([
            "up",
            "examples/quickstart",
            "--once",
            "--listen",
            "127.0.0.1:0",
            "--mode",
            "docker",
            "--image",
            image(),
        ])
        .args(["--image-pull-policy", "Never", "--data-dir"])
        .arg(tmp.path().join(".george"))
        .env("GEORGE_ENGINE_ID", &id)
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("3/3 jobs completed"), "{}", stdout(&out));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = george_store::SqliteStore::open(tmp.path().join(".george/george.db")).unwrap();
        let agents = george_store::Store::list_agents(&store, false, 100).await.unwrap();
        assert_eq!(agents.len(), 3);
        assert!(agents.iter().all(|a| a.runtime == "docker"), "{agents:?}");
        assert!(containers(&id).await.is_empty(), "containers removed after the jobs settled");
    });
}

#[test]
fn spawning_the_same_attempt_twice_never_makes_a_twin() {
    use george_runtime::{AgentStatus, DockerRuntime, DockerRuntimeConfig, PullPolicy, Runtime, SpawnRequest};
    use george_testkit::runtime_conformance::Behaviour;
    let tmp = common::tempdir().unwrap();
    let id = engine_id(tmp.path());
    let _cleanup = Containers(id.clone());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut cfg = DockerRuntimeConfig::under(tmp.path(), &id);
        cfg.pull_policy = PullPolicy::Never;
        let docker_rt = DockerRuntime::connect(cfg).await.unwrap();
        let req = SpawnRequest {
            command: vec!["/bin/sh".into(), "-c".into(), "echo hello from $GEORGE_JOB_ID; sleep 30".into()],
            image: Some(image().into()),
            env: [("GEORGE_JOB_ID".to_string(), "twin".to_string())].into(),
            ..george_testkit::runtime_conformance::request("twin", 1, Behaviour::Run)
        };
        let first = docker_rt.spawn(req.clone()).await.unwrap();
        let second = docker_rt.spawn(req).await.unwrap();
        assert_eq!(first, second, "the retried spawn found the same container");
        let owned = docker_rt.list_owned().await.unwrap();
        assert_eq!(owned.len(), 1, "a held container is found by its labels");
        assert!(matches!(owned[0].status, AgentStatus::Exited { .. }), "held until released: {:?}", owned[0]);
        assert!(!std::fs::read_to_string(docker_rt.logs().path("twin", 1)).unwrap_or_default().contains("hello"));
        docker_rt.release("twin", 1, &first).await.unwrap();
        let owned = docker_rt.list_owned().await.unwrap();
        assert_eq!(owned[0].status, AgentStatus::Running);
        // Output is copied into the attempt's log file while it runs.
        let log = docker_rt.logs().path("twin", 1);
        let logged = async || std::fs::read_to_string(&log).unwrap_or_default().contains("hello from twin");
        until(Duration::from_secs(20), "log output", logged).await;
        let end = docker_rt.terminate("twin", 1, &first, Duration::from_secs(1)).await.unwrap();
        assert!(matches!(end, AgentStatus::Exited { .. }), "{end:?}");
        docker_rt.cleanup("twin", 1).await.unwrap();
        assert!(docker_rt.list_owned().await.unwrap().is_empty());
    });
}

/// `network: engine-only` agents sit on an internal network and still reach
/// the engine (through the relay), warm ones as cold ones, and after kill -9
/// of the engine (the relay opens again where they were told it is);
/// `network: none` agents get no network.
#[test]
fn network_policies_isolate_containers() {
    let tmp = common::tempdir().unwrap();
    let id = engine_id(tmp.path());
    // Dropped last: the network goes once its containers have.
    let _network = EngineOnlyNetwork(id.clone());
    let _cleanup = Containers(id.clone());
    let m = tmp.path().join("manifests");
    write(&m, "agents/fenced.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: fenced}\nspec:\n  capabilities: [shell]\n  network: engine-only\n");
    write(&m, "agents/cut.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: cut}\nspec:\n  capabilities: [net-none]\n  network: none\n");
    write(&m, "agents/pooled.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: pooled}\nspec:\n  capabilities: [pooled]\n  network: engine-only\n  pool: {min: 1}\n");
    let hold = "    - {id: s, description: s, run: 'cat /etc/hostname > \"$GEORGE_OUTPUT_DIR/host\"; while [ ! -f \"$GEORGE_OUTPUT_DIR/release\" ]; do sleep 0.05; done'}\n";
    write(&m, "templates/hold.yaml", &template("hold", hold).replace("[shell]", "[pooled]"));
    write(
        &m,
        "templates/t.yaml",
        &template("t", "    - {id: s, description: s, run: 'echo inside > \"$GEORGE_OUTPUT_DIR/ran\"'}\n"),
    );
    write(
        &m,
        "templates/offline.yaml",
        &template("offline", "    - {id: s, description: s, run: 'true'}\n").replace("[shell]", "[net-none]"),
    );
    write(&m, "jobs/a.yaml", &job("fenced-job", "t"));
    write(&m, "jobs/b.yaml", &job("cut-job", "offline"));
    let cfg = format!("{FAST_CONFIG}containerBackend:\n  docker:\n    keepContainers: true\n");
    let mut engine =
        Engine::start_full(tmp.path(), &cfg, &docker_args(image(), m.to_str().unwrap()), &[("GEORGE_ENGINE_ID", &id)]);
    let warm_id = engine.rt().block_on(async {
        // Through the relay on the internal network's gateway, the agent did its work and reported it.
        engine.wait_status("fenced-job", JobStatus::Completed, Duration::from_secs(60)).await;
        let d = docker();
        let c =
            d.inspect_container(&format!("george-{id}-fenced-job-1"), None::<InspectContainerOptions>).await.unwrap();
        let net = format!("george-{id}-engine-only");
        assert_eq!(c.host_config.unwrap().network_mode.as_deref(), Some(net.as_str()));
        let env = c.config.unwrap().env.unwrap();
        let api = env.iter().find_map(|e| e.strip_prefix("GEORGE_API_URL=")).unwrap().to_string();
        let n = d.inspect_network(&net, None::<bollard::query_parameters::InspectNetworkOptions>).await.unwrap();
        assert_eq!(n.internal, Some(true), "no route out of the host");
        let gateway = n.ipam.unwrap().config.unwrap()[0].gateway.clone().unwrap();
        assert!(api.starts_with(&format!("http://{gateway}:")), "{api}");

        // No network at all: the agent cannot even report, so its container is all there is to see.
        let name = format!("george-{id}-cut-job-1");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let c = loop {
            if let Ok(c) = d.inspect_container(&name, None::<InspectContainerOptions>).await {
                break c;
            }
            assert!(std::time::Instant::now() < deadline, "no container for cut-job");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(c.host_config.unwrap().network_mode.as_deref(), Some("none"));

        // A warm engine-only agent: on the internal network before its claim, with nothing of a job.
        let (warm, warm_id) = eventually(Duration::from_secs(60), "a warm engine-only container", async || {
            warm_containers(&id).await.into_iter().find(|(name, _)| name.contains("pooled"))
        })
        .await;
        let c = d.inspect_container(&warm, None::<InspectContainerOptions>).await.unwrap();
        assert_eq!(c.host_config.unwrap().network_mode.as_deref(), Some(net.as_str()));
        let env = format!("{:?}", c.config.unwrap().env);
        assert!(!env.contains("GEORGE_"), "a warm container's environment: {env}");
        engine.client.submit(&george_core::api::SubmitJob::named("warm-job", "hold")).await.unwrap();
        engine.wait_job("warm-job", "its step to run", Duration::from_secs(60), |j| j.steps[0].runs == 1).await;
        warm_id
    });
    let out = engine.dir.join("data/outputs/warm-job");
    let host = std::fs::read_to_string(out.join("host")).unwrap();
    assert!(warm_id.starts_with(host.trim()), "warm-job ran in {host}, not the warm container {warm_id}");
    // kill -9 of the engine while the warm-started agent works: the restarted
    // engine adopts it, and the agent reports through the relay to the end.
    engine.kill9();
    engine.restart();
    engine.rt().block_on(async {
        engine.wait_applied().await;
        std::fs::write(out.join("release"), "").unwrap();
        let j = engine.wait_status("warm-job", JobStatus::Completed, Duration::from_secs(60)).await;
        assert_eq!(j.attempt, 1, "the adopted agent finished its attempt:\n{}", engine.log());
        assert!(engine.log().contains("adopted running agent container"), "{}", engine.log());
    });
    // The restarted engine found its network: no twin of the same name (the Docker Engine makes one if asked).
    let net = format!("george-{id}-engine-only");
    let ls = std::process::Command::new("docker")
        .args(["network", "ls", "-q", "--filter", &format!("name=^{net}$")])
        .output()
        .unwrap();
    assert_eq!(stdout(&ls).lines().count(), 1, "networks named {net}: {}", stdout(&ls));
}

/// Removes an engine's engine-only network (every one of that name) when
/// the test ends, however it ends; its containers must be gone first.
struct EngineOnlyNetwork(String);

impl Drop for EngineOnlyNetwork {
    fn drop(&mut self) {
        let net = format!("george-{}-engine-only", self.0);
        let ls = std::process::Command::new("docker")
            .args(["network", "ls", "-q", "--filter", &format!("name=^{net}$")])
            .output()
            .unwrap();
        for id in String::from_utf8_lossy(&ls.stdout).split_whitespace() {
            let _ = std::process::Command::new("docker").args(["network", "rm", id]).output();
        }
    }
}

/// The runtime conformance suite against the real Docker Engine.
mod conformance {
    use super::{engine_id, image, Containers};
    use george_runtime::{DockerRuntime, DockerRuntimeConfig, PullPolicy, Runtime, SpawnRequest};
    use george_testkit::runtime_conformance::{self, Behaviour, RuntimeBackend};
    use std::sync::Arc;

    struct Docker {
        engine: String,
        dir: tempfile::TempDir,
        _containers: Containers,
    }

    #[async_trait::async_trait]
    impl RuntimeBackend for Docker {
        async fn runtime(&self) -> Arc<dyn Runtime> {
            let mut cfg = DockerRuntimeConfig::under(self.dir.path(), &self.engine);
            cfg.pull_policy = PullPolicy::Never;
            Arc::new(DockerRuntime::connect(cfg).await.unwrap())
        }

        fn request(&self, job: &str, attempt: u32, b: Behaviour) -> SpawnRequest {
            let mut req = SpawnRequest { image: Some(image().into()), ..runtime_conformance::request(job, attempt, b) };
            req.labels.insert("george.io/engine".into(), self.engine.clone());
            req
        }
    }

    async fn docker() -> Docker {
        let dir = crate::common::tempdir().unwrap();
        let engine = engine_id(dir.path());
        image();
        Docker { _containers: Containers(engine.clone()), engine, dir }
    }

    george_testkit::runtime_conformance_tests!(docker());
}

/// Warm containers of an engine's pools: (name, id), running ones only.
async fn warm_containers(engine: &str) -> Vec<(String, String)> {
    let filters = HashMap::from([("label", vec![format!("george.io/engine={engine}"), "george.io/pool".to_string()])]);
    let list =
        docker().list_containers(Some(ListContainersOptionsBuilder::new().filters(&filters).build())).await.unwrap();
    list.into_iter()
        .filter_map(|c| {
            let name = c.names?.first()?.trim_start_matches('/').to_string();
            name.contains("-pool-").then_some((name, c.id?))
        })
        .collect()
}

/// Warm pools on the real Docker Engine: a warm container holds no secret,
/// no token and no job (its environment, its mounts and its `/run/george`
/// are looked at); a claimed one runs the job it was bound to with that
/// job's secrets only; each serves one job and is removed; kill -9 of the
/// engine while containers are warm leaks none.
#[test]
fn warm_containers_hold_nothing_until_claimed_and_serve_one_job_each() {
    let tmp = common::tempdir().unwrap();
    let id = engine_id(tmp.path());
    let _cleanup = Containers(id.clone());
    let secret = "tok-51c0de-pooled-git";
    let secrets = tmp.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("git-token"), secret).unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "agents/coder.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: coder}\nspec:\n  capabilities: [shell, git]\n  secrets:\n    git: [{name: git-token}]\n  pool: {min: 2}\n");
    let copy = "    - id: look\n      description: look for the secret\n      run: cat \"$GEORGE_SECRETS_DIR/git-token\" > \"$GEORGE_OUTPUT_DIR/seen\" 2>&1 || echo absent > \"$GEORGE_OUTPUT_DIR/seen\"; env > \"$GEORGE_OUTPUT_DIR/env\"; grep -o 'containers/[0-9a-f]*' /proc/self/mountinfo | head -1 | cut -d/ -f2 > \"$GEORGE_OUTPUT_DIR/host\"; tr '\\0' ' ' < /proc/$PPID/cmdline > \"$GEORGE_OUTPUT_DIR/agent\"\n";
    write(&m, "templates/with-git.yaml", &template("with-git", copy).replace("[shell]", "[shell, git]"));
    write(&m, "templates/shell-only.yaml", &template("shell-only", copy));
    let mut args = docker_args(image(), m.to_str().unwrap());
    let secrets_arg = secrets.to_str().unwrap().to_string();
    args.extend(["--secrets-dir", &secrets_arg]);
    let mut engine = Engine::start_with_env(tmp.path(), "", &args, &[("GEORGE_ENGINE_ID", &id)]);
    let full = async |n: usize| {
        eventually(Duration::from_secs(60), "the pool to be full", async || {
            let w = warm_containers(&id).await;
            (w.len() == n).then_some(w)
        })
        .await
    };
    let warm = engine.rt().block_on(async {
        let warm = full(2).await;
        for (name, _) in &warm {
            let c = docker().inspect_container(name, None::<InspectContainerOptions>).await.unwrap();
            let env = format!("{:?}", c.config.unwrap().env);
            assert!(!env.contains("GEORGE_") && !env.contains(secret), "a warm container's environment: {env}");
            let mounts: Vec<String> = c.mounts.unwrap_or_default().into_iter().filter_map(|m| m.destination).collect();
            assert_eq!(mounts, vec!["/george/output".to_string()], "a warm container mounts only its own output");
            let ls =
                std::process::Command::new("docker").args(["exec", name, "ls", "-A", "/run/george"]).output().unwrap();
            assert!(ls.status.success() && ls.stdout.is_empty(), "{name}: /run/george holds {:?}", stdout(&ls));
        }
        for (job, template) in [("entitled", "with-git"), ("unentitled", "shell-only")] {
            engine.client.submit(&george_core::api::SubmitJob::named(job, template)).await.unwrap();
        }
        let out =
            |job: &str, f: &str| std::fs::read_to_string(engine.dir.join(format!("data/outputs/{job}/{f}"))).unwrap();
        let mut hosts = std::collections::BTreeSet::new();
        for job in ["entitled", "unentitled"] {
            let j = engine.wait_status(job, JobStatus::Completed, Duration::from_secs(60)).await;
            assert_eq!(j.attempt, 1);
            let host = out(job, "host").trim().to_string();
            assert!(
                warm.iter().any(|(_, cid)| cid.starts_with(&host)),
                "{job} ran in {host}, not a warm container of {warm:?}"
            );
            hosts.insert(host);
            assert!(!out(job, "env").contains(secret), "the secret is not in the agent's environment");
            // The reference agent runs in the warm launcher's own process: no exec on the job's path.
            assert!(out(job, "agent").contains("sandbox-exec --warm"), "{job}'s agent: {}", out(job, "agent"));
        }
        assert_eq!(hosts.len(), 2, "one warm container per job");
        assert_eq!(out("entitled", "seen"), secret, "the entitled agent reads the secret file");
        assert_eq!(out("unentitled", "seen"), "absent\n", "the other agent has no secrets");
        // Each served one job and is gone; the pool refilled with new ones.
        let refilled =
            eventually(Duration::from_secs(60), "the claimed containers to go and the pool to refill", async || {
                let all = containers(&id).await;
                let w = warm_containers(&id).await;
                let claimed_left = all.iter().any(|(name, _, _)| !name.contains("-pool-"));
                (!claimed_left && w.len() == 2 && w.iter().all(|(_, c)| !hosts.iter().any(|h| c.starts_with(h))))
                    .then_some(w)
            })
            .await;
        assert!(!engine.log().contains(secret), "not in George's log");
        let events = serde_json::to_string(&engine.client.events(0, 10_000).await.unwrap()).unwrap();
        assert!(!events.contains(secret), "not in events");
        refilled
    });
    // kill -9 while containers are warm: the restarted engine removes them and starts its own.
    engine.kill9();
    engine.restart();
    engine.rt().block_on(async {
        eventually(Duration::from_secs(60), "a new full pool, the old one gone", async || {
            let w = warm_containers(&id).await;
            (w.len() == 2 && w.iter().all(|c| !warm.contains(c))).then_some(())
        })
        .await;
        let old: Vec<String> = warm.iter().map(|(n, _)| n.clone()).collect();
        let all: Vec<String> = containers(&id).await.into_iter().map(|c| c.0).collect();
        assert!(old.iter().all(|o| !all.contains(o)), "warm containers of the killed engine left: {all:?}");
    });
}
