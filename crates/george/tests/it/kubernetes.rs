//! The Kubernetes runtime and the Kubernetes Lease elector (issue 7),
//! against the Kubernetes API test server in the test support
//! (`common::kube_api`), always through kube-rs's real client. No cluster
//! runs here: what the server does not model (scheduling, nodes, real
//! images, RBAC) is not verified. The test kubelet runs each pod's container
//! as a local process, so the agents are the real `george agent run`.
//!
//! - The rendered Job, field by field (a snapshot of what was sent), its
//!   Secret, idempotent spawn, exit codes, retry as a new Job, background
//!   deletion, terminate, and the pod's logs.
//! - An engine running jobs as Kubernetes Jobs end to end: secrets reach the
//!   agent only through the Secret (by `secretKeyRef` and a volume); a killed
//!   pod is retried as a new Job with a new attempt.
//! - Two replicas on PostgreSQL electing a leader with a Kubernetes Lease:
//!   after `kill -9` of the leader the other leads, adopts the running Job,
//!   deletes a stale one and replaces one that vanished; a paused leader is
//!   fenced; a lease renewed with a clock an hour behind is still respected
//!   (expiry is judged by local monotonic time).

use crate::common;

use george_testkit::postgres_server;

use common::kube_api::{ImageBehaviour, KubeServer};
use common::service::Service;
use common::*;
use george_core::quantity::{Cpu, Memory};
use george_core::JobStatus;
use george_runtime::kubernetes::spec::JobSettings;
use george_runtime::{
    AgentLogs, AgentStatus, AgentToken, KubernetesRuntime, KubernetesRuntimeConfig, PullPolicy, Resources, Runtime,
    SecretFile, SpawnRequest,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use postgres_server::TestDatabase;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NS: &str = "agents";
const KUBE_TOKEN: &str = "kube-test-token-7d1e";
/// The image whose `george` is the binary under test.
const IMAGE: &str = "george/agent:test";
/// An image whose container runs until the test finishes it.
const HOLD: &str = "george/hold:test";

/// A cluster with the agent image and the hold image, and a kubeconfig for it.
fn cluster(dir: &Path) -> (KubeServer, PathBuf) {
    let server = KubeServer::start(KUBE_TOKEN);
    let programs = BTreeMap::from([
        ("george".to_string(), PathBuf::from(george_bin())),
        ("sh".to_string(), PathBuf::from("/bin/sh")),
    ]);
    server.set_image(IMAGE, ImageBehaviour::Exec(programs));
    server.set_image(HOLD, ImageBehaviour::Hold);
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig, NS);
    (server, kubeconfig)
}

fn settings() -> JobSettings {
    JobSettings {
        namespace: NS.into(),
        instance: "george".into(),
        name_prefix: "george".into(),
        default_image: Some(HOLD.into()),
        default_command: vec!["george".into(), "agent".into(), "run".into()],
        pull_policy: PullPolicy::IfNotPresent,
        service_account: Some("george-agent".into()),
        ttl_after_finished: Duration::from_secs(600),
        termination_grace: Duration::from_secs(7),
        engine_id: "e1".into(),
    }
}

fn request(job: &str, attempt: u32) -> SpawnRequest {
    SpawnRequest {
        job_id: job.into(),
        attempt,
        agent_spec: "coder".into(),
        command: vec![],
        image: None,
        env: BTreeMap::from([
            ("GEORGE_API_URL".into(), "http://george.george.svc:8080".into()),
            ("GEORGE_ATTEMPT".into(), attempt.to_string()),
            ("GEORGE_JOB_ID".into(), job.into()),
        ]),
        resources: Resources { memory: Some(Memory(256 << 20)), cpu: Some(Cpu(500)) },
        labels: BTreeMap::from([
            ("george.io/job".into(), job.into()),
            ("george.io/attempt".into(), attempt.to_string()),
            ("george.io/template".into(), "inventory".into()),
            ("george.io/engine".into(), "e1".into()),
        ]),
        output_dir: None,
        secrets: vec![SecretFile { name: "git-token".into(), content: b"git-secret-value-42".to_vec() }],
        max_active: Some(Duration::from_secs(600)),
        context: None,
        agent_token: Some(AgentToken("agt-secret-token-0001".into())),
        network: Default::default(),
    }
}

/// What `spawn(request("etc-inventory", 1))` must send, exactly.
fn expected_job() -> Value {
    let labels = json!({
        "app": "george-agent", "george.io/attempt": "1", "george.io/engine": "e1",
        "george.io/instance": "george", "george.io/job": "etc-inventory", "george.io/template": "inventory",
    });
    let annotations = json!({
        "george.io/agent-spec": "coder", "george.io/attempt": "1", "george.io/engine": "e1",
        "george.io/job-id": "etc-inventory",
    });
    let name = "george-etc-inventory-1";
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "labels": labels, "annotations": annotations},
        "spec": {
            "activeDeadlineSeconds": 600,
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "automountServiceAccountToken": false,
                    "securityContext": {"fsGroup": 65534},
                    "enableServiceLinks": false,
                    "restartPolicy": "Never",
                    "serviceAccountName": "george-agent",
                    "terminationGracePeriodSeconds": 7,
                    "containers": [{
                        "name": "agent",
                        "image": HOLD,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["george"],
                        "args": ["agent", "run"],
                        "workingDir": "/work",
                        "env": [
                            {"name": "GEORGE_API_URL", "value": "http://george.george.svc:8080"},
                            {"name": "GEORGE_ATTEMPT", "value": "1"},
                            {"name": "GEORGE_JOB_ID", "value": "etc-inventory"},
                            {"name": "GEORGE_WORK_DIR", "value": "/work"},
                            {"name": "GEORGE_OUTPUT_DIR", "value": "/george/output"},
                            {"name": "HOME", "value": "/tmp"},
                            {"name": "GEORGE_AGENT_TOKEN_FILE", "value": "/run/george/agent/token"},
                            {"name": "GEORGE_SECRETS_DIR", "value": "/run/george/secrets"},
                        ],
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": 65534,
                            "runAsGroup": 65534,
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]},
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"},
                                      "requests": {"cpu": "500m", "memory": "256Mi"}},
                        "volumeMounts": [
                            {"name": "work", "mountPath": "/work"},
                            {"name": "output", "mountPath": "/george/output"},
                            {"name": "tmp", "mountPath": "/tmp"},
                            {"name": "agent-token", "mountPath": "/run/george/agent", "readOnly": true},
                            {"name": "secrets", "mountPath": "/run/george/secrets", "readOnly": true},
                        ],
                    }],
                    "volumes": [
                        {"name": "work", "emptyDir": {}},
                        {"name": "output", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "agent-token", "secret": {"secretName": name, "defaultMode": 256,
                            "items": [{"key": "agent-token", "path": "token"}]}},
                        {"name": "secrets", "secret": {"secretName": name, "defaultMode": 256,
                            "items": [{"key": "file.git-token", "path": "git-token"}]}},
                    ],
                },
            },
        },
    })
}

fn pod_phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

/// The Jobs the runtime created (POSTs), by name, in order.
fn created_jobs(server: &KubeServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == format!("/apis/batch/v1/namespaces/{NS}/jobs"))
        .map(|r| r.body["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_renders_runs_retries_and_removes_jobs_as_specified() {
    let tmp = common::tempdir().unwrap();
    let (server, kubeconfig) = cluster(tmp.path());
    let client = george_runtime::kubernetes::client(Some(&kubeconfig)).await.unwrap();
    let cfg = KubernetesRuntimeConfig {
        job: settings(),
        logs: AgentLogs::new(tmp.path().join("logs")),
        max_log_bytes: 1 << 20,
    };
    let rt = KubernetesRuntime::connect(client, cfg).await.unwrap();
    let mut events = rt.subscribe();

    // The rendered Job, exactly as sent.
    let handle = rt.spawn(request("etc-inventory", 1)).await.unwrap();
    let sent: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/jobs"))
        .map(|r| r.body)
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0], expected_job(), "the Job sent:\n{:#}", sent[0]);
    assert_eq!(handle["job"], "george-etc-inventory-1");

    // Secrets are only in the attempt's Secret, which the Job owns.
    let job = server.get("jobs", NS, "george-etc-inventory-1").unwrap();
    let secret = server.get("secrets", NS, "george-etc-inventory-1").unwrap();
    for text in [job.to_string(), server.list("pods", NS).iter().map(Value::to_string).collect()] {
        assert!(!text.contains("agt-secret-token-0001") && !text.contains("git-secret-value-42"), "{text}");
    }
    assert_eq!(decode_base64(secret["data"]["agent-token"].as_str().unwrap()), "agt-secret-token-0001");
    assert_eq!(decode_base64(secret["data"]["file.git-token"].as_str().unwrap()), "git-secret-value-42");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], job["metadata"]["uid"]);

    // Spawning the same attempt again finds its Job: no twin.
    assert_eq!(rt.spawn(request("etc-inventory", 1)).await.unwrap(), handle);
    assert_eq!(created_jobs(&server), ["george-etc-inventory-1"]);

    // Running, then the container exits 3: an event, and the status says so.
    let pod = eventually(Duration::from_secs(10), "the pod to run", async || {
        server.pods_of_job(NS, "george-etc-inventory-1").into_iter().find(|p| pod_phase(p) == "Running")
    })
    .await;
    assert_eq!(rt.status("etc-inventory", 1, &handle).await.unwrap(), AgentStatus::Running);
    server.finish_pod(NS, pod["metadata"]["name"].as_str().unwrap(), 3);
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.expect("an exit event").unwrap();
    let exited = AgentStatus::Exited { code: Some(3), signal: None };
    assert_eq!((event.job_id.as_str(), event.attempt, event.status), ("etc-inventory", 1, exited));
    assert_eq!(rt.status("etc-inventory", 1, &handle).await.unwrap(), exited);

    // The retry is a new attempt: a new Job. Both are listed for adoption.
    let second = rt.spawn(request("etc-inventory", 2)).await.unwrap();
    assert_eq!(created_jobs(&server), ["george-etc-inventory-1", "george-etc-inventory-2"]);
    let owned: Vec<(String, u32)> = rt.list_owned().await.unwrap().into_iter().map(|o| (o.job_id, o.attempt)).collect();
    assert_eq!(owned, [("etc-inventory".to_string(), 1), ("etc-inventory".to_string(), 2)]);

    // Cleanup deletes with background propagation: the pod and the Secret go too.
    rt.cleanup("etc-inventory", 1).await.unwrap();
    let delete = server
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE" && r.path.ends_with("/jobs/george-etc-inventory-1"))
        .expect("the Job was deleted");
    assert_eq!(delete.body["propagationPolicy"], "Background", "{:?}", delete.body);
    eventually(Duration::from_secs(10), "the pod and Secret to be collected", async || {
        (server.pods_of_job(NS, "george-etc-inventory-1").is_empty()
            && server.get("secrets", NS, "george-etc-inventory-1").is_none())
        .then_some(())
    })
    .await;

    // Terminate stops the running attempt and removes its Job.
    eventually(Duration::from_secs(10), "the second pod to run", async || {
        server.pods_of_job(NS, "george-etc-inventory-2").into_iter().find(|p| pod_phase(p) == "Running")
    })
    .await;
    let ended = rt.terminate("etc-inventory", 2, &second, Duration::from_secs(1)).await.unwrap();
    assert!(matches!(ended, AgentStatus::Exited { .. }), "{ended:?}");
    assert!(server.get("jobs", NS, "george-etc-inventory-2").is_none());
    assert_eq!(rt.status("etc-inventory", 2, &second).await.unwrap(), AgentStatus::Exited { code: None, signal: None });

    // Logs come from the pod, with the kubelet's timestamps.
    let mut talk = request("talker", 1);
    talk.image = Some(IMAGE.into());
    talk.command = vec!["sh".into(), "-c".into(), "echo hello from the pod; echo second line".into()];
    talk.secrets.clear();
    talk.agent_token = None;
    let h = rt.spawn(talk).await.unwrap();
    assert!(server.get("secrets", NS, "george-talker-1").is_none(), "no Secret without secrets");
    eventually(Duration::from_secs(10), "the talker to exit", async || {
        matches!(rt.status("talker", 1, &h).await.unwrap(), AgentStatus::Exited { code: Some(0), .. }).then_some(())
    })
    .await;
    rt.cleanup("talker", 1).await.unwrap();
    let log = std::fs::read_to_string(tmp.path().join("logs/talker/1.log")).unwrap();
    let lines: Vec<&str> = log.lines().map(|l| l.split_once(' ').map(|x| x.1).unwrap_or(l)).collect();
    assert_eq!(lines, ["hello from the pod", "second line"], "{log}");

    // An image the cluster cannot pull: the pod waits, and the attempt's log says why.
    let mut missing = request("missing", 1);
    missing.image = Some("george/no-such-image:1".into());
    let h = rt.spawn(missing).await.unwrap();
    let path = tmp.path().join("logs/missing/1.log");
    let note = eventually(Duration::from_secs(20), "a note that the container cannot start", async || {
        std::fs::read_to_string(&path).ok().filter(|l| l.contains("[george: the container cannot start: "))
    })
    .await;
    assert!(note.contains("ImagePullBackOff") || note.contains("ErrImagePull"), "{note}");
    assert!(note.lines().count() <= 2, "one note per reason (ErrImagePull, then ImagePullBackOff): {note}");
    assert_eq!(rt.status("missing", 1, &h).await.unwrap(), AgentStatus::Running, "still waiting, as Kubernetes says");
    let ended = rt.terminate("missing", 1, &h, Duration::from_secs(1)).await.unwrap();
    assert!(matches!(ended, AgentStatus::Exited { .. }), "{ended:?}");
}

/// `containerBackend` on the test cluster.
fn backend(kubeconfig: &Path) -> String {
    format!(
        "containerBackend:\n  type: kubernetes\n  kubernetes:\n    kubeconfig: {}\n    namespace: {NS}\n    image: {IMAGE}\n    ttlAfterFinished: 10m\n",
        kubeconfig.display()
    )
}

/// Under `root`: an output directory for steps to write to, a secrets
/// directory holding `git-token` = `secret`, and manifests with the
/// AgentSpec `coder` (capabilities shell and git, entitled to the token,
/// and `extra_spec`). Returns the three directories.
fn coder_with_git(root: &Path, secret: &str, extra_spec: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (out, secrets, m) = (root.join("out"), root.join("secrets"), root.join("manifests"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("git-token"), secret).unwrap();
    let agent =
        "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: coder}\nspec:\n  capabilities: [shell, git]\n  \
                 secrets:\n    git: [{name: git-token}]\n";
    write(&m, "agents/coder.yaml", &format!("{agent}{extra_spec}"));
    (out, secrets, m)
}

/// A step that waits for `flag` (a path shared with the test), after printing `marker`.
fn wait_step(marker: &str, flag: &Path) -> String {
    format!(
        "    - id: wait\n      description: wait for the flag\n      run: echo {marker}; while [ ! -f {} ]; do sleep 0.05; done\n",
        flag.display()
    )
}

#[test]
fn an_engine_runs_jobs_as_kubernetes_jobs_and_retries_a_killed_pod_as_a_new_job() {
    let tmp = common::tempdir().unwrap();
    let (server, kubeconfig) = cluster(tmp.path());
    let secret = "tok-9c1d-only-for-git";
    let (out, secrets, m) =
        coder_with_git(tmp.path(), secret, "  resources: {memory: 128Mi, cpu: 250m, maxActiveDuration: 10m}\n");
    let look = format!(
        "    - id: look\n      description: read the secret\n      run: cat \"$GEORGE_SECRETS_DIR/git-token\" > {0}/seen; env > {0}/env; echo looked at it\n",
        out.display()
    );
    write(&m, "templates/with-git.yaml", &template("with-git", &look).replace("[shell]", "[shell, git]"));
    let flag = tmp.path().join("release");
    write(&m, "templates/hold.yaml", &template("hold", &wait_step("holding-on", &flag)));
    write(&m, "jobs/a.yaml", &job("entitled", "with-git"));
    write(&m, "jobs/b.yaml", &job("held", "hold"));
    let args = ["--manifests", m.to_str().unwrap(), "--secrets-dir", secrets.to_str().unwrap()];
    let engine = Engine::start(tmp.path(), &backend(&kubeconfig), &args);
    engine.rt().block_on(async {
        engine.wait_status("entitled", JobStatus::Completed, Duration::from_secs(60)).await;
        assert_eq!(std::fs::read_to_string(out.join("seen")).unwrap(), secret, "the agent read the mounted secret");
        let env = std::fs::read_to_string(out.join("env")).unwrap();
        assert!(!env.contains(secret), "the secret is not in the agent's environment");
        // The agent got its token from the mounted Secret (it completed the job
        // through the API) and keeps it from its steps.
        assert!(!env.contains("GEORGE_AGENT_TOKEN") && !env.contains("agt-") && !env.contains("gat_"), "{env}");
        eventually(Duration::from_secs(20), "the pod's log to reach the engine", async || {
            agent_log(&engine, "entitled-1").await?.contains("looked at it").then_some(())
        })
        .await;

        // Kill the held job's pod: the retry is attempt 2, a new Job.
        let held = engine
            .wait_job("held", "its agent to run", Duration::from_secs(30), |j| j.status == JobStatus::InProgress)
            .await;
        assert_eq!(held.attempt, 1);
        let pod = eventually(Duration::from_secs(20), "the held pod to print", async || {
            let logs = agent_log(&engine, "held-1").await?;
            logs.contains("holding-on").then_some(())?;
            server.pods_of_job(NS, "george-held-1").into_iter().find(|p| pod_phase(p) == "Running")
        })
        .await;
        server.kill_pod_process(NS, pod["metadata"]["name"].as_str().unwrap());
        engine.wait_job("held", "attempt 2", Duration::from_secs(30), |j| j.attempt == 2).await;
        std::fs::write(&flag, "").unwrap();
        let done = engine.wait_status("held", JobStatus::Completed, Duration::from_secs(60)).await;
        assert_eq!(done.attempt, 2);
        let events = engine.client.events(0, 10_000).await.unwrap();
        let ended = events
            .iter()
            .find(|e| e.kind == "attempt.ended" && e.job_id.as_deref() == Some("held") && e.attempt == Some(1))
            .expect("attempt 1 ended");
        assert!(ended.data.to_string().contains("137"), "the kill is reported: {}", ended.data);
        let text = serde_json::to_string(&events).unwrap();
        assert!(!text.contains(secret) && !engine.log().contains(secret), "the secret is in no event or log");
    });
    let mut created = created_jobs(&server);
    created.sort();
    assert_eq!(created, ["george-entitled-1", "george-held-1", "george-held-2"], "one Job per attempt");
    for r in server.requests().iter().filter(|r| r.method == "POST") {
        assert!(!r.body.to_string().contains(secret) || r.path.ends_with("/secrets"), "{} {}", r.method, r.path);
    }
    // Finished attempts are removed with background propagation.
    for name in ["george-entitled-1", "george-held-1", "george-held-2"] {
        wait_for(Duration::from_secs(20), "the finished Job to be deleted", || {
            server.get("jobs", NS, name).is_none().then_some(())
        });
    }
    let deletes: Vec<_> =
        server.requests().into_iter().filter(|r| r.method == "DELETE" && r.path.contains("/jobs/")).collect();
    assert!(deletes.iter().all(|d| d.body["propagationPolicy"] == "Background"), "{deletes:?}");
}

/// Unclaimed warm agent pods: running, labelled with their pool, no attempt's annotation.
fn warm_pods(server: &KubeServer) -> Vec<Value> {
    server
        .list("pods", NS)
        .into_iter()
        .filter(|p| {
            p["metadata"]["labels"]["george.io/pool"].is_string()
                && p["metadata"]["annotations"]["george.io/job-id"].is_null()
                && pod_phase(p) == "Running"
                && p["metadata"]["deletionTimestamp"].is_null()
        })
        .collect()
}

/// Waits until the engine's pool holds a warm agent it can hand out.
async fn pool_warm(engine: &Engine) {
    until(Duration::from_secs(30), "a warm agent in the engine's pool", async || {
        let registry = engine.client.get_json("/api/v1/registry").await;
        registry.is_ok_and(|v| v[0]["pool"]["warm"].as_u64() >= Some(1))
    })
    .await
}

/// The local process of a pod's container (the test kubelet's), by its `HOSTNAME`.
fn pod_process(pod: &str) -> Option<(i32, String, String)> {
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
        let environ =
            String::from_utf8_lossy(&std::fs::read(p.path().join("environ")).unwrap_or_default()).replace('\0', "\n");
        if environ.lines().any(|l| l == format!("HOSTNAME={pod}")) {
            let cmdline = String::from_utf8_lossy(&std::fs::read(p.path().join("cmdline")).unwrap_or_default())
                .replace('\0', " ");
            return Some((pid, environ, cmdline));
        }
    }
    None
}

/// Issue 19 on Kubernetes: a warm agent is a Job whose pod holds nothing of
/// any job (its spec, its process's environment, no Secret in the
/// namespace); a claim binds it through the engine's attach session to its
/// pod's stdin — the job's secrets and token never become an API object; a
/// pooled pod serves one attempt; kill -9 of the engine mid-claim leaves
/// the claimed pod to end unbound and the job runs once after the restart.
#[test]
fn warm_agent_jobs_are_bound_through_attach_with_only_their_own_secrets() {
    let tmp = common::tempdir().unwrap();
    let (server, kubeconfig) = cluster(tmp.path());
    let secret = "tok-5e2a-pooled-git";
    let (out, secrets, m) = coder_with_git(tmp.path(), secret, "  pool: {min: 1, max: 1}\n");
    let look = format!(
        "    - id: look\n      description: read the secret\n      run: 'cat \"$GEORGE_SECRETS_DIR/git-token\" > {0}/seen-$GEORGE_JOB_ID; env > {0}/env-$GEORGE_JOB_ID'\n",
        out.display()
    );
    let plain = format!(
        "    - id: plain\n      description: needs no key\n      run: 'env > {0}/env-$GEORGE_JOB_ID; test -z \"$GEORGE_SECRETS_DIR\"'\n",
        out.display()
    );
    write(&m, "templates/with-git.yaml", &template("with-git", &look).replace("[shell]", "[shell, git]"));
    write(&m, "templates/plain.yaml", &template("plain", &plain));
    let args = ["--manifests", m.to_str().unwrap(), "--secrets-dir", secrets.to_str().unwrap()];
    let mut engine =
        Engine::start_with_env(tmp.path(), &backend(&kubeconfig), &args, &[("GEORGE_FAILPOINTS", "claim.window@1")]);
    let warm_pod = |what: &str| wait_for(Duration::from_secs(30), what, || warm_pods(&server).into_iter().next());

    // Warm: the pod's spec and process hold nothing of any job.
    let first = warm_pod("a warm pod");
    let first_name = first["metadata"]["name"].as_str().unwrap().to_string();
    let container = &first["spec"]["containers"][0];
    assert_eq!((&container["stdin"], &container["stdinOnce"]), (&json!(true), &json!(true)), "{container}");
    let spec_text = first.to_string();
    for leak in [secret, "agt-", "gat_", "GEORGE_API_URL", "GEORGE_AGENT_TOKEN_FILE", "secretName", "secretKeyRef"] {
        assert!(!spec_text.contains(leak), "the warm pod's spec holds {leak}: {spec_text}");
    }
    assert!(server.list("secrets", NS).is_empty(), "no Secret exists for a warm agent");
    // The test server lists a pod before its process has started.
    let (_, environ, cmdline) =
        wait_for(Duration::from_secs(30), "the warm pod's process", || pod_process(&first_name));
    assert!(cmdline.contains("sandbox-exec --warm"), "{cmdline}");
    assert!(
        !environ.contains(secret) && !environ.contains("GEORGE_API_URL") && !environ.contains("TOKEN"),
        "{environ}"
    );

    // kill -9 mid-claim: the claimed pod is never bound and ends on its own.
    engine.rt().block_on(async {
        engine.wait_registry(1).await;
        pool_warm(&engine).await;
        engine.client.submit(&george_core::api::SubmitJob::named("entitled", "with-git")).await.unwrap();
    });
    let status = engine.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the engine killed itself at claim.window: {status}\n{}", engine.log());
    let ended = wait_for(Duration::from_secs(30), "the claimed, unbound pod to end", || {
        server.get("pods", NS, &first_name).filter(|p| pod_phase(p) == "Failed")
    });
    assert_eq!(ended["metadata"]["annotations"]["george.io/job-id"], "entitled", "it was claimed: {ended}");
    let code = &ended["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"];
    assert_eq!(
        code,
        &json!(george_runtime::launch::GATE_CLOSED),
        "its stdin closed with the engine's session: {ended}"
    );
    assert!(!out.join("seen-entitled").exists(), "the unbound pod did not run the job");

    engine.forget_env("GEORGE_FAILPOINTS");
    engine.restart();
    engine.rt().block_on(async {
        let done = engine.wait_status("entitled", JobStatus::Completed, Duration::from_secs(60)).await;
        assert_eq!(done.attempt, 2, "attempt 1 never ran; attempt 2 did: {done:?}");
    });
    assert_eq!(std::fs::read_to_string(out.join("seen-entitled")).unwrap(), secret);
    wait_for(Duration::from_secs(30), "the stale claimed Job to be removed", || {
        server.get("jobs", NS, ended["metadata"]["labels"]["job-name"].as_str().unwrap()).is_none().then_some(())
    });

    // Bound jobs run in warm pods, each in its own, with only their own secrets.
    let (mut served, mut served_jobs) = (Vec::new(), Vec::new());
    for (id, template) in [("plain-1", "plain"), ("entitled-2", "with-git")] {
        let pod = warm_pod("a warm pod");
        let pod_name = pod["metadata"]["name"].as_str().unwrap().to_string();
        assert!(!served.contains(&pod_name), "a warm pod is never given a second job");
        engine.rt().block_on(async {
            pool_warm(&engine).await;
            engine.client.submit(&george_core::api::SubmitJob::named(id, template)).await.unwrap();
            engine.wait_status(id, JobStatus::Completed, Duration::from_secs(60)).await;
        });
        let env = std::fs::read_to_string(out.join(format!("env-{id}"))).unwrap();
        assert!(env.lines().any(|l| l == format!("HOSTNAME={pod_name}")), "{id} ran in the warm pod {pod_name}: {env}");
        assert!(!env.contains(secret) && !env.contains("agt-") && !env.contains("gat_"), "{env}");
        served.push(pod_name);
        served_jobs.push(pod["metadata"]["labels"]["job-name"].as_str().unwrap().to_string());
    }
    assert_eq!(std::fs::read_to_string(out.join("seen-entitled-2")).unwrap(), secret);
    assert!(!std::fs::read_to_string(out.join("env-plain-1")).unwrap().contains("GEORGE_SECRETS_DIR"));
    // Served, then removed: a warm Job is never given a second attempt.
    for job in &served_jobs {
        wait_for(Duration::from_secs(30), "the served warm Job to be removed", || {
            server.get("jobs", NS, job).is_none().then_some(())
        });
    }
    engine.stop();

    // The secret and the tokens went over the attach sessions only: no
    // Secret was made for a warm agent, no request carried them.
    let cold: Vec<String> = created_jobs(&server).into_iter().filter(|n| !n.contains("-pool-")).collect();
    for r in server.requests().iter().filter(|r| r.method == "POST" && r.path.ends_with("/secrets")) {
        let name = r.body["metadata"]["name"].as_str().unwrap_or("").to_string();
        assert!(cold.contains(&name), "a Secret {name} was made for no cold Job ({cold:?})");
    }
    for r in server.requests() {
        if r.path.ends_with("/secrets") {
            continue;
        }
        let text = format!("{} {}", r.query, r.body);
        assert!(!text.contains(secret) && !text.contains("agt-"), "{} {} carried a secret", r.method, r.path);
    }
}

/// Two replicas `a` and `b` on one database, electing with a Kubernetes
/// Lease, running agents as Kubernetes Jobs; agents reach them through a
/// Service (a forwarder to whichever replica answers).
struct Replicas {
    engines: Vec<Engine>,
    service: Service,
}

const LEASE_ELECTION: &str = "  leaderElection:\n    backend: kubernetes\n    leaseDuration: 3s\n    renewDeadline: 2s\n    retryPeriod: 300ms\n";

fn replicas(tmp: &Path, db: &TestDatabase, kubeconfig: &Path, manifests: &Path) -> Replicas {
    let service = Service::start("127.0.0.1:0", vec![]);
    let election = format!(
        "{LEASE_ELECTION}    kubernetes:\n      namespace: {NS}\n      kubeconfig: {}\n  advertiseUrl: http://{}\n",
        kubeconfig.display(),
        service.addr
    );
    let config =
        format!("{}{}", FAST_CONFIG.replacen("engine:\n", &format!("engine:\n{election}"), 1), backend(kubeconfig));
    let engines = ["a", "b"]
        .iter()
        .map(|id| {
            let env = [("GEORGE_DATABASE_URL", db.url.as_str()), ("GEORGE_ENGINE_ID", id)];
            let e = Engine::start_full(&tmp.join(id), &config, &["--manifests", manifests.to_str().unwrap()], &env);
            service.add(listen_addr(&e));
            e
        })
        .collect();
    Replicas { engines, service }
}

/// The address a replica listens on (its log's `listen=`).
fn listen_addr(e: &Engine) -> std::net::SocketAddr {
    let log = e.log();
    let line = log.lines().find(|l| l.contains("george is up")).expect("the start line");
    line.split_whitespace().find_map(|w| w.strip_prefix("listen=")).expect("listen=").parse().unwrap()
}

/// The test cluster's Jobs, through kube-rs.
async fn jobs_api(kubeconfig: &Path) -> kube::Api<k8s_openapi::api::batch::v1::Job> {
    kube::Api::namespaced(george_runtime::kubernetes::client(Some(kubeconfig)).await.unwrap(), NS)
}

/// The Lease's holder, if held.
fn holder(server: &KubeServer) -> Option<String> {
    let lease = server.get("leases", NS, "george-engine")?;
    lease["spec"]["holderIdentity"].as_str().filter(|h| !h.is_empty()).map(str::to_string)
}

fn which(holder: &str) -> usize {
    if holder.starts_with("a-") {
        0
    } else {
        assert!(holder.starts_with("b-"), "{holder}");
        1
    }
}

/// A cluster and manifests of `jobs` that print `marker` and wait for the
/// returned flag file: (server, kubeconfig, manifests, flag).
fn held_jobs(dir: &Path, marker: &str, jobs: &[&str]) -> (KubeServer, PathBuf, PathBuf, PathBuf) {
    let (server, kubeconfig) = cluster(dir);
    let m = dir.join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    let flag = dir.join("release");
    write(&m, "templates/hold.yaml", &template("hold", &wait_step(marker, &flag)));
    for id in jobs {
        write(&m, &format!("jobs/{id}.yaml"), &job(id, "hold"));
    }
    (server, kubeconfig, m, flag)
}

/// The term recorded in the store's lease row (for fencing), once it is `epoch`.
fn wait_epoch(db: &TestDatabase, epoch: i64) {
    let recorded = || {
        db.with_client(|c| {
            c.query_opt("SELECT epoch FROM leases WHERE name = 'george-engine'", &[]).map(|r| r.map(|r| r.get(0)))
        })
    };
    wait_for(Duration::from_secs(10), &format!("term {epoch} in the store"), || {
        (recorded() == Some(epoch)).then_some(())
    });
}

#[test]
fn a_new_leader_adopts_running_jobs_deletes_stale_ones_and_replaces_vanished_ones() {
    let db = TestDatabase::create();
    let tmp = common::tempdir().unwrap();
    let (server, kubeconfig, m, flag) = held_jobs(tmp.path(), "before-the-handover", &["kept", "lost"]);
    let mut r = replicas(tmp.path(), &db, &kubeconfig, &m);
    let first = wait_for(Duration::from_secs(20), "a leader", || holder(&server));
    let l = which(&first);
    let rt = r.engines[0].rt();
    rt.block_on(async {
        for id in ["kept", "lost"] {
            eventually(Duration::from_secs(30), "the agent to print", async || {
                agent_log(&r.engines[l], &format!("{id}-1")).await?.contains("before-the-handover").then_some(())
            })
            .await;
        }
    });
    wait_epoch(&db, 1);
    // The standby has no copy of the logs, but serves the pod's.
    rt.block_on(async {
        // Straight to the standby, not through the Service.
        let direct = george_client::Client::new(&format!("http://{}", listen_addr(&r.engines[1 - l])), TOKEN).unwrap();
        let mut log = Vec::new();
        direct.logs("kept-1", false, &mut log).await.unwrap();
        let log = String::from_utf8_lossy(&log);
        assert!(log.contains("before-the-handover"), "the standby served the pod's log: {log}");
        assert!(!r.engines[1 - l].dir.join("data/logs/kept").exists(), "the standby keeps no copy");
    });

    // A Job of a superseded attempt, left behind by some earlier leader.
    let stale = "george-kept-0";
    rt.block_on(async {
        let labels = json!({"app": "george-agent", "george.io/instance": "george", "george.io/job": "kept", "george.io/attempt": "0"});
        let job = json!({
            "metadata": {"name": stale, "namespace": NS, "labels": labels,
                         "annotations": {"george.io/job-id": "kept", "george.io/attempt": "0"}},
            "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": labels}, "spec": {
                "restartPolicy": "Never", "containers": [{"name": "agent", "image": HOLD}]}}},
        });
        jobs_api(&kubeconfig).await.create(&Default::default(), &serde_json::from_value(job).unwrap()).await.unwrap();
    });

    r.engines[l].kill9();
    let killed = Instant::now();
    // While nobody leads, someone deletes the other job's Job.
    rt.block_on(async {
        jobs_api(&kubeconfig).await.delete("george-lost-1", &kube::api::DeleteParams::background()).await.unwrap();
    });
    let next =
        wait_for(Duration::from_secs(15), "the other replica to lead", || holder(&server).filter(|h| *h != first));
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(15), "took over in {took:?}");
    let n = which(&next);
    assert_ne!(n, l);
    let lease = server.get("leases", NS, "george-engine").unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");

    wait_for(Duration::from_secs(20), "the stale Job to be deleted", || {
        server.get("jobs", NS, stale).is_none().then_some(())
    });
    std::fs::write(&flag, "").unwrap();
    rt.block_on(async {
        let e = &r.engines[n];
        let kept = e.wait_status("kept", JobStatus::Completed, Duration::from_secs(60)).await;
        assert_eq!(kept.attempt, 1, "the running Job was adopted, not replaced");
        let lost = e.wait_status("lost", JobStatus::Completed, Duration::from_secs(60)).await;
        assert_eq!(lost.attempt, 2, "the vanished Job was replaced by a new attempt");
        let logs = agent_log(e, "kept-1").await.unwrap();
        assert!(logs.contains("before-the-handover"), "the new leader copied the adopted pod's log: {logs}");
        let events = e.client.events(0, 10_000).await.unwrap();
        let created = events.iter().filter(|e| e.kind == "job.created").count();
        assert_eq!(created, 2, "no job was created twice");
    });
    wait_epoch(&db, 2);
    let created = created_jobs(&server);
    assert_eq!(created.iter().filter(|n| *n == "george-kept-1").count(), 1, "{created:?}");
    assert!(!created.iter().any(|n| n == "george-kept-2"), "{created:?}");
    assert!(created.iter().any(|n| n == "george-lost-2"), "{created:?}");
    drop(r.service);
}

#[test]
fn a_paused_leader_is_fenced_and_a_lease_renewed_with_a_skewed_clock_is_respected() {
    let db = TestDatabase::create();
    let tmp = common::tempdir().unwrap();
    let (server, kubeconfig, m, flag) = held_jobs(tmp.path(), "running", &["j0"]);

    // Someone else holds the Lease and renews it every 300 ms, with a clock
    // an hour behind: its renewTime always looks long expired.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ghost = {
        let (stop, kubeconfig) = (stop.clone(), kubeconfig.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let c = george_runtime::kubernetes::client(Some(&kubeconfig)).await.unwrap();
                let leases = kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(c, NS);
                let mut renewals = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let renew = chrono::Utc::now() - chrono::Duration::hours(1);
                    let mut lease: k8s_openapi::api::coordination::v1::Lease = serde_json::from_value(json!({
                        "metadata": {"name": "george-engine", "namespace": NS},
                        "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 3, "leaseTransitions": 4,
                                 "renewTime": renew.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
                    }))
                    .unwrap();
                    match leases.get_opt("george-engine").await.unwrap() {
                        None => drop(leases.create(&Default::default(), &lease).await.unwrap()),
                        Some(current) => {
                            assert_eq!(
                                current.spec.unwrap().holder_identity.as_deref(),
                                Some("ghost"),
                                "taken while renewed"
                            );
                            lease.metadata.resource_version = current.metadata.resource_version;
                            leases.replace("george-engine", &Default::default(), &lease).await.unwrap();
                        }
                    }
                    renewals += 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                renewals
            })
        })
    };
    wait_for(Duration::from_secs(10), "the ghost's lease", || holder(&server).filter(|h| h == "ghost"));
    let mut r = replicas(tmp.path(), &db, &kubeconfig, &m);
    // Three lease durations of renewals: nobody else may lead meanwhile.
    let window = Instant::now() + Duration::from_secs(9);
    while Instant::now() < window {
        assert_eq!(holder(&server).as_deref(), Some("ghost"), "the ghost's lease was taken while renewed");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let renewals = ghost.join().expect("the ghost kept its lease");
    assert!(renewals >= 30, "{renewals} renewals");
    for e in &r.engines {
        assert!(!e.log().contains("leading: this replica holds the lease"), "{}", e.log());
    }
    // The ghost stops renewing: one replica leads after a lease duration.
    let first = wait_for(Duration::from_secs(15), "a leader", || holder(&server).filter(|h| h != "ghost"));
    let l = which(&first);
    let lease = server.get("leases", NS, "george-engine").unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 5, "{lease}");
    wait_epoch(&db, 6);
    let rt = r.engines[0].rt();
    rt.block_on(async {
        r.engines[l]
            .wait_job("j0", "its agent to run", Duration::from_secs(30), |j| j.status == JobStatus::InProgress)
            .await;
    });

    // Pause the leader past its lease: the other takes over; the paused one is fenced.
    let pid = Pid::from_raw(r.engines[l].child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let next = wait_for(Duration::from_secs(15), "another leader", || holder(&server).filter(|h| *h != first));
    kill(pid, Signal::SIGCONT).unwrap();
    let status =
        wait_for(Duration::from_secs(20), "the deposed leader to stop", || r.engines[l].child.try_wait().unwrap());
    assert!(!status.success());
    let log = r.engines[l].log();
    assert!(log.contains("no longer leading"), "{log}");
    assert_eq!(holder(&server).as_deref(), Some(next.as_str()), "the new leader kept the Lease");
    wait_epoch(&db, 7);
    std::fs::write(&flag, "").unwrap();
    let n = which(&next);
    rt.block_on(async {
        r.engines[n].wait_status("j0", JobStatus::Completed, Duration::from_secs(60)).await;
        assert_one_live_attempt_at_a_time(&r.engines[n].client.events(0, 10_000).await.unwrap());
    });
    drop(r.service);
}

/// The runtime conformance suite against the Kubernetes API test server.
mod conformance {
    use super::{cluster, request, settings, IMAGE};
    use crate::common::kube_api::KubeServer;
    use george_runtime::{AgentLogs, KubernetesRuntime, KubernetesRuntimeConfig, Runtime, SpawnRequest};
    use george_testkit::runtime_conformance::{Behaviour, RuntimeBackend};
    use std::sync::Arc;

    struct Cluster {
        _server: KubeServer,
        kubeconfig: std::path::PathBuf,
        dir: tempfile::TempDir,
    }

    #[async_trait::async_trait]
    impl RuntimeBackend for Cluster {
        async fn runtime(&self) -> Arc<dyn Runtime> {
            let client = george_runtime::kubernetes::client(Some(&self.kubeconfig)).await.unwrap();
            let cfg = KubernetesRuntimeConfig {
                job: settings(),
                logs: AgentLogs::new(self.dir.path().join("logs")),
                max_log_bytes: 1 << 20,
            };
            Arc::new(KubernetesRuntime::connect(client, cfg).await.unwrap())
        }

        fn request(&self, job: &str, attempt: u32, b: Behaviour) -> SpawnRequest {
            SpawnRequest {
                command: vec!["/bin/sh".into(), "-c".into(), b.script()],
                image: Some(IMAGE.into()),
                secrets: vec![],
                agent_token: None,
                max_active: None,
                context: None,
                ..request(job, attempt)
            }
        }
    }

    async fn cluster_backend() -> Cluster {
        let dir = crate::common::tempdir().unwrap();
        let (server, kubeconfig) = cluster(dir.path());
        Cluster { _server: server, kubeconfig, dir }
    }

    george_testkit::runtime_conformance_tests!(cluster_backend());
}
