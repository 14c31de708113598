//! Acceptance: pause, resume, abort and inject through both the API and the
//! CLI do what they say; requests without a valid token get 401; an agent's
//! token cannot touch another job.

use crate::common;

use common::*;
use george_core::api::{JobReport, SubmitJob};
use george_core::{AgentState, DesiredState, JobStatus};
use std::time::Duration;

const THINKING_STEP: &str = "    - id: think
      description: Decide what the ticket really asks for.
";

fn setup(dir: &std::path::Path) -> Engine {
    let m = dir.join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    write(&m, "templates/long.yaml", &template("long", RELEASE_STEPS));
    write(&m, "templates/think.yaml", &template("think", THINKING_STEP));
    Engine::start(dir, "", &["--manifests", m.to_str().unwrap()])
}

fn submit(id: &str, template: &str) -> SubmitJob {
    SubmitJob::named(id, template)
}

async fn wait_catalog(engine: &Engine) {
    let submitted = async || engine.client.submit(&submit("probe", "long")).await.ok();
    eventually(Duration::from_secs(20), "the templates to be applied", submitted).await;
    engine.client.act("probe", "abort", None).await.unwrap();
}

#[test]
fn pause_resume_abort_through_the_api() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    engine.rt().block_on(async {
        wait_catalog(&engine).await;
        let c = &engine.client;
        c.submit(&submit("p", "long")).await.unwrap();
        engine
            .wait_job("p", "its agent to be active", Duration::from_secs(20), |j| {
                j.status == JobStatus::InProgress && j.steps[0].runs == 1
            })
            .await;

        let v = c.act("p", "pause", Some("maintenance window".into())).await.unwrap();
        assert_eq!(v.desired, DesiredState::Paused);
        engine.wait_status("p", JobStatus::Paused, Duration::from_secs(20)).await;
        let a1 = c.agent("p-1").await.unwrap();
        assert_eq!(a1.state, AgentState::Terminated, "the agent was stopped");
        assert!(a1.outcome.unwrap().starts_with("job paused"));
        let events = c.events(0, 10_000).await.unwrap();
        assert!(events.iter().any(|e| e.kind == "job.desired"
            && e.actor == "operator:test"
            && e.data["reason"] == "maintenance window"));

        c.act("p", "resume", None).await.unwrap();
        let j = engine
            .wait_job("p", "a second attempt", Duration::from_secs(20), |j| {
                j.attempt == 2 && j.status == JobStatus::InProgress
            })
            .await;
        assert_eq!(j.failures, 0, "pausing is not a failure");
        std::fs::write(engine.dir.join("data/outputs/p/release"), "").unwrap();
        engine.wait_status("p", JobStatus::Completed, Duration::from_secs(20)).await;

        c.submit(&submit("a", "long")).await.unwrap();
        engine.wait_status("a", JobStatus::InProgress, Duration::from_secs(20)).await;
        c.act("a", "abort", None).await.unwrap();
        let j = engine.wait_status("a", JobStatus::Aborted, Duration::from_secs(20)).await;
        assert_eq!(j.attempt, 1);
        let err = c.act("a", "resume", None).await.unwrap_err();
        assert_eq!(err.status(), Some(409), "{err}");
    });
}

#[test]
fn pause_resume_abort_inject_through_the_cli() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    let rt = engine.rt();
    rt.block_on(wait_catalog(&engine));

    let out = engine.cli(&["jobs", "submit", "long", "--id", "c1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    rt.block_on(engine.wait_status("c1", JobStatus::InProgress, Duration::from_secs(20)));
    let out = engine.cli(&["jobs", "pause", "c1", "--reason", "testing"]);
    assert!(out.status.success(), "{}", stderr(&out));
    rt.block_on(engine.wait_status("c1", JobStatus::Paused, Duration::from_secs(20)));
    let out = engine.cli(&["-o", "json", "jobs", "resume", "c1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["desired"], "active");
    rt.block_on(
        engine.wait_job("c1", "attempt 2", Duration::from_secs(20), |j| {
            j.attempt == 2 && j.status == JobStatus::InProgress
        }),
    );
    let out = engine.cli(&["jobs", "abort", "c1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    rt.block_on(engine.wait_status("c1", JobStatus::Aborted, Duration::from_secs(20)));

    // A step without `run` needs an LLM: the job blocks instead of pretending.
    let out = engine.cli(&["jobs", "submit", "think", "--id", "t1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let j = rt.block_on(engine.wait_status("t1", JobStatus::Blocked, Duration::from_secs(20)));
    assert!(j.reason.as_deref().unwrap().starts_with("capability missing: llm"), "{:?}", j.reason);
    assert_eq!(j.steps[0].status, george_core::StepStatus::Blocked);
    // Injecting a message unblocks it: a new agent reads the conversation (and, still without an LLM, blocks again).
    let out = engine.cli(&["jobs", "inject", "t1", "The ticket means the login page."]);
    assert!(out.status.success(), "{}", stderr(&out));
    let j = rt.block_on(engine.wait_job("t1", "a second attempt that blocks again", Duration::from_secs(20), |j| {
        j.attempt == 2 && j.status == JobStatus::Blocked
    }));
    assert_eq!(j.failures, 0);
    let out = engine.cli(&["-o", "json", "jobs", "get", "t1"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The same object `jobs ls` lists, with the conversation beside its fields.
    let listed: serde_json::Value = serde_json::from_slice(&engine.cli(&["-o", "json", "jobs", "ls"]).stdout).unwrap();
    let item = listed.as_array().unwrap().iter().find(|j| j["id"] == "t1").unwrap();
    for (field, value) in item.as_object().unwrap() {
        if field != "steps" && field != "attempts" {
            assert_eq!(&v[field], value, "{field}: `jobs get` and `jobs ls` agree");
        }
    }
    let said: Vec<(String, String)> = v["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["author"].as_str().unwrap().to_string(), c["body"].as_str().unwrap().chars().take(40).collect()))
        .collect();
    assert_eq!(
        said,
        [
            ("agent:t1-1".to_string(), "blocked: capability missing: llm (step `".to_string()),
            ("operator:test".to_string(), "The ticket means the login page.".to_string()),
            ("agent:t1-2".to_string(), "blocked: capability missing: llm (step `".to_string()),
        ],
        "the conversation: the agent says why it stopped, the operator answers, the next agent reads it"
    );

    // The table views work too.
    let out = engine.cli(&["jobs", "ls"]);
    assert!(stdout(&out).contains("t1") && stdout(&out).contains("blocked"), "{}", stdout(&out));
    let out = engine.cli(&["jobs", "logs", "t1", "--attempt", "1"]);
    assert!(stdout(&out).contains("agent starting"), "{}", stdout(&out));
}

#[test]
fn tokens_are_required_and_agents_are_confined_to_their_job() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    engine.rt().block_on(async {
        wait_catalog(&engine).await;
        let http = reqwest::Client::new();
        for path in ["/api/v1/jobs", "/api/v1/agents", "/api/v1/events", "/metrics"] {
            let r = http.get(format!("{}{path}", engine.url)).send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} without a token");
            assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"george\"");
            let r =
                http.get(format!("{}{path}", engine.url)).bearer_auth("wrong-token-wrong-token").send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} with a bad token");
        }
        let r = http.post(format!("{}/api/v1/jobs/x/pause", engine.url)).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(http.get(format!("{}/healthz", engine.url)).send().await.unwrap().status(), 200);

        let c = &engine.client;
        c.submit(&submit("mine", "long")).await.unwrap();
        c.submit(&submit("theirs", "long")).await.unwrap();
        engine
            .wait_job("mine", "its agent to run the first step", Duration::from_secs(20), |j| j.steps[0].runs == 1)
            .await;
        let agent = c.agent("mine-1").await.unwrap();
        let pid = agent.handle.expect("a running agent has a handle")["pid"].as_i64().unwrap() as i32;
        let token = agent_token_in_memory(pid).unwrap();
        let as_agent = george_client::Client::new(&engine.url, &token).unwrap();

        // Its own job: fine.
        assert_eq!(as_agent.job("mine").await.unwrap().id, "mine");
        as_agent.heartbeat("mine").await.unwrap();
        // Another job: refused, and nothing changes.
        for err in [
            as_agent.job("theirs").await.map(|_| ()).unwrap_err(),
            as_agent.heartbeat("theirs").await.unwrap_err(),
            as_agent.report("theirs", &JobReport { status: JobStatus::Completed, reason: None }).await.unwrap_err(),
            as_agent.comment("theirs", "hi").await.map(|_| ()).unwrap_err(),
        ] {
            assert_eq!(err.status(), Some(403), "{err}");
        }
        // Operator endpoints: refused even for its own job.
        for err in [
            as_agent.act("mine", "abort", None).await.map(|_| ()).unwrap_err(),
            as_agent.jobs(&Default::default()).await.map(|_| ()).unwrap_err(),
            as_agent.inject("mine", "x").await.map(|_| ()).unwrap_err(),
        ] {
            assert_eq!(err.status(), Some(403), "{err}");
        }
        assert_ne!(c.job("theirs").await.unwrap().status, JobStatus::Completed);
        assert_eq!(c.job("mine").await.unwrap().desired, DesiredState::Active);

        // Metrics are there for operators.
        let text = engine.metrics().await;
        assert!(
            text.contains("george_agent_spawns_total") && text.contains("george_jobs{status=\"in_progress\"}"),
            "{text}"
        );
    });
}

/// A one-step job costs George's own agent one round trip: its context
/// comes with its release (the launcher's gate), so it never calls
/// `attach`; one batch carries the step, its output and the verdict (and is
/// its first heartbeat). Counted by the engine's own per-route request
/// metric.
#[test]
fn a_trivial_job_costs_its_agent_one_round_trip() {
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    write(
        &m,
        "templates/quick.yaml",
        &template("quick", "    - id: say\n      description: say hi\n      run: echo hi\n"),
    );
    let engine = Engine::start(tmp.path(), "", &["--manifests", m.to_str().unwrap()]);
    engine.rt().block_on(async {
        let submitted = async || engine.client.submit(&submit("q", "quick")).await.ok();
        eventually(Duration::from_secs(20), "the template to be applied", submitted).await;
        let j = engine.wait_status("q", JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!((j.steps[0].status.to_string().as_str(), j.steps[0].runs), ("completed", 1));
        let output = engine.client.evidence("q").await.unwrap();
        assert!(output.iter().any(|e| e.kind == "output" && e.content.contains("hi")), "{output:?}");

        let text = engine.metrics().await;
        let count = |method: &str, route: &str| -> u64 {
            let key = format!("george_api_requests_total{{method=\"{method}\",route=\"{route}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(&key)).map_or(0, |n| n.trim().parse().unwrap())
        };
        assert_eq!(count("POST", "/api/v1/jobs/{id}/reports"), 1, "{text}");
        for (method, route) in [
            ("POST", "/api/v1/jobs/{id}/attach"),
            ("POST", "/api/v1/jobs/{id}/heartbeat"),
            ("GET", "/api/v1/jobs/{id}/context"),
            ("POST", "/api/v1/jobs/{id}/steps/{step}"),
            ("POST", "/api/v1/jobs/{id}/evidence"),
            ("POST", "/api/v1/jobs/{id}/report"),
        ] {
            assert_eq!(count(method, route), 0, "{method} {route} is batched: {text}");
        }
    });
}

#[test]
fn serving_on_a_public_address_without_a_token_is_refused() {
    let tmp = common::tempdir().unwrap();
    let out = std::process::Command::new(george_bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path())
        .env_remove("GEORGE_API_TOKENS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("refusing to listen on 0.0.0.0:0 without an operator token"), "{}", stderr(&out));
}

/// A `Write` into a shared buffer.
#[derive(Clone, Default)]
struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[test]
fn logs_stream_while_the_agent_runs_and_stay_afterwards() {
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    let steps = "    - id: chatter
      description: talk until released
      run: |
        i=0
        until [ -f \"$GEORGE_OUTPUT_DIR/release\" ]; do i=$((i+1)); echo \"tick $i\"; sleep 0.05; done
        echo released
";
    write(&m, "templates/chatter.yaml", &template("chatter", steps));
    write(&m, "jobs/talker.yaml", &job("talker", "chatter"));
    let engine = Engine::start(tmp.path(), "", &["--manifests", m.to_str().unwrap()]);
    engine.rt().block_on(async {
        engine.wait_status("talker", JobStatus::InProgress, Duration::from_secs(20)).await;
        let buf = SharedBuf::default();
        let stream = {
            let (client, buf) = (engine.client.clone(), buf.clone());
            tokio::spawn(async move { client.logs("talker-1", true, buf).await })
        };
        // Output arrives while the agent is still running.
        until(Duration::from_secs(20), "live output", async || buf.text().contains("tick 3")).await;
        assert!(!stream.is_finished(), "the stream stays open while the agent runs");
        std::fs::write(engine.dir.join("data/outputs/talker/release"), "").unwrap();
        // The stream ends by itself once the agent is gone.
        tokio::time::timeout(Duration::from_secs(30), stream).await.expect("stream ended").unwrap().unwrap();
        let text = buf.text();
        assert!(text.contains("released") && text.contains("job completed"), "{text}");
        // Kept after the agent is gone.
        let again = SharedBuf::default();
        engine.client.logs("talker-1", false, again.clone()).await.unwrap();
        assert!(again.text().contains("released"));
        assert_eq!(engine.job("talker").await.status, JobStatus::Completed);
    });
}
