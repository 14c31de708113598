//! Issue 21 (in part): sub-agents. An agent with the `spawn` capability
//! creates child jobs through the agent API (the reference agent's
//! `spawn_subagent` and `wait_for` tools), with real processes and the
//! scripted LLM provider:
//! - a parent spawns three children that run side by side, is killed -9,
//!   finds the same three children in its next attempt (none twice), waits
//!   without an agent (through a kill -9 of the engine), and completes with
//!   their results;
//! - limits (children per job, depth) and a missing capability refuse with
//!   errors that say which; pausing, resuming and aborting a parent does the
//!   same to its unfinished children;
//! - `GET /api/v1/jobs/{id}/children`, `george jobs tree` and the
//!   dashboard's job page (Chromium; `target/dashboard/family.png`) show the family.

use crate::common;

use common::llm::{Reply, ScriptedLlm};
use common::*;
use george_core::api::{ChildRequest, SubmitJob};
use george_core::JobStatus;
use serde_json::json;
use std::time::Duration;

/// A child's one step: waits for `go` in its output directory, then says so.
const PART: &str = "apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {name: part}\nspec:\n  requiredCapabilities: [shell]\n  variables:\n    - {name: key, type: string}\n  steps:\n    - id: work\n      description: work on a part\n      run: while [ ! -f \"$GEORGE_OUTPUT_DIR/go\" ]; do sleep 0.05; done; echo part {{key}} done\n";

fn setup(tmp: &std::path::Path, llm: &ScriptedLlm, limits: &str) -> Engine {
    let m = tmp.join("manifests");
    write(&m, "agents/lead.yaml", &format!("apiVersion: george/v1\nkind: AgentSpec\nmetadata: {{name: lead}}\nspec:\n  capabilities: [spawn, shell]\n  subagents: {limits}\n"));
    write(&m, "agents/worker.yaml", AGENT);
    write(&m, "templates/part.yaml", PART);
    write(&m, "templates/plan.yaml", "apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {name: plan}\nspec:\n  steps:\n    - id: split\n      description: Split the work into parts, have sub-agents do them, and report.\n");
    write(&m, "templates/slow.yaml", &template("slow", "    - {id: wait, description: wait, run: sleep 600.5}\n"));
    let cfg = format!(
        "{FAST_CONFIG}llm:\n  default: {{provider: scripted, model: m}}\n  providers:\n    - {{name: scripted, api: openai, baseUrl: '{}'}}\n",
        llm.url
    );
    Engine::start_full(tmp, &cfg, &["--manifests", m.to_str().unwrap()], &[])
}

fn spawn_reply(key: &str) -> Reply {
    Reply::tool("spawn_subagent", json!({"key": key, "template": "part", "params": {"key": key}}), 10, 2)
}

/// The pid of the live agent of `job`'s `attempt`.
async fn agent_pid(e: &Engine, job: &str, attempt: u32) -> i32 {
    let agent = e.client.agent(&format!("{job}-{attempt}")).await.unwrap();
    agent.handle.as_ref().unwrap()["pid"].as_i64().unwrap() as i32
}

fn lead_job(id: &str, template: &str) -> SubmitJob {
    SubmitJob { agent: Some("lead".into()), ..SubmitJob::named(id, template) }
}

#[test]
fn a_parent_spawns_three_children_survives_kill_9_waits_and_completes_with_their_results() {
    let llm = ScriptedLlm::start();
    let tmp = common::tempdir().unwrap();
    let mut e = setup(tmp.path(), &llm, "{maxChildren: 3}");
    // Attempt 1: three children, then a long command, during which it is killed.
    for key in ["a", "b", "c"] {
        llm.push(spawn_reply(key));
    }
    llm.push(Reply::tool("run_command", json!({"command": "sleep 600.25"}), 10, 2));
    // Attempt 2 (the conversation so far restored): asks for `a` again, then waits.
    llm.push(spawn_reply("a"));
    llm.push(Reply::tool("wait_for", json!({"keys": ["a", "b", "c"]}), 10, 2));
    // Attempt 3, resumed with the children's results.
    llm.push(Reply::tool("complete_step", json!({"summary": "three parts done"}), 10, 2));
    e.rt().block_on(async {
        e.wait_registry(2).await;
        e.client.submit(&lead_job("boss", "plan")).await.unwrap();
        // The three children run side by side (each waits for its `go`).
        let running = eventually(Duration::from_secs(30), "three children running at once", async || {
            let kids = e.client.children("boss").await.ok()?;
            (kids.len() == 3 && kids.iter().all(|k| k.status == JobStatus::InProgress)).then_some(kids)
        })
        .await;
        let ids: Vec<&str> = running.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, ["boss.a", "boss.b", "boss.c"]);
        let child = e.job("boss.a").await;
        assert_eq!(child.origin.source, "parent");
        assert_eq!(child.origin.reference.as_deref(), Some("boss"));
        assert_eq!(child.labels["george.dev/parent"], "boss");
        // kill -9 of the parent's agent while it works.
        until(Duration::from_secs(20), "the parent's long command", async || process_running("sleep 600.25")).await;
        let pid = agent_pid(&e, "boss", 1).await;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        // The next attempt waits, with no agent running and no slot held.
        let waiting = e.wait_status("boss", JobStatus::Blocked, Duration::from_secs(30)).await;
        assert_eq!(waiting.reason.as_deref(), Some("waiting for children: a, b, c"));
        assert_eq!(waiting.attempt, 2);
        until(Duration::from_secs(20), "the waiting parent's agent to exit", async || {
            e.client.agents(false).await.unwrap().iter().all(|a| a.job_id != "boss")
        })
        .await;
        assert_eq!(e.client.children("boss").await.unwrap().len(), 3, "the second attempt made none twice");
    });
    // kill -9 of the engine while the parent waits: the next engine goes on waiting.
    e.kill9();
    e.restart();
    e.rt().block_on(async {
        for key in ["a", "b", "c"] {
            std::fs::write(e.dir.join(format!("data/outputs/boss.{key}/go")), "").unwrap();
        }
        let done = e.wait_status("boss", JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!(done.attempt, 3);
        let kids = e.client.children("boss").await.unwrap();
        assert!(kids.iter().all(|k| k.status == JobStatus::Completed), "{kids:?}");
        assert_eq!(kids[1].summary.as_deref(), Some("part b done"));
        // The resumed conversation carried the children's results to the model.
        let last = llm.received().last().unwrap().body["messages"].to_string();
        assert!(last.contains("The children this job waited for have ended") && last.contains("part c done"), "{last}");
        let comments = e.client.comments("boss").await.unwrap();
        assert_eq!(comments.iter().filter(|c| c.author == "george:children").count(), 1, "{comments:?}");
        // The family, as the CLI draws it.
        let out = e.cli(&["jobs", "tree", "boss"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.starts_with("boss  completed\n"), "{text}");
        assert!(text.contains("├── boss.a [a]  completed\n") && text.contains("└── boss.c [c]  completed\n"), "{text}");
        let json: serde_json::Value =
            serde_json::from_slice(&e.cli(&["jobs", "tree", "boss", "-o", "json"]).stdout).unwrap();
        assert_eq!(json["children"].as_array().unwrap().len(), 3, "{json}");
        // And as the dashboard shows it, on the parent's page and a child's.
        let b = common::browser::Browser::start(1280, 900).await;
        b.sign_in(&e.url, TOKEN).await;
        b.goto(&format!("{}/#/jobs/boss", e.url)).await;
        let family = "const li = [...document.querySelectorAll('#family-tree > li[data-child-id]')];
                      return li.length === 3 && li.every((x) => x.dataset.status === 'completed')
                        && li.map((x) => x.dataset.childId).join(',');";
        let shown = b.wait_js("the family on the parent's page", Duration::from_secs(30), family).await;
        assert_eq!(shown, "boss.a,boss.b,boss.c");
        let summary = "const e = document.querySelector('#family-tree li[data-child-id=\"boss.b\"] .child-summary');
                       return !!e && e.textContent;";
        assert_eq!(b.wait_js("a child's result", Duration::from_secs(30), summary).await, "part b done");
        b.screenshot(&crate::dashboard::artifacts().join("family.png")).await;
        b.click("#family-tree li[data-child-id=\"boss.a\"] a").await;
        let parent = "const a = document.querySelector('#job-parent'); return !!a && a.getAttribute('href');";
        assert_eq!(b.wait_js("the child's parent", Duration::from_secs(30), parent).await, "#/jobs/boss");
        b.quit().await;
    });
}

#[test]
fn limits_and_a_missing_capability_refuse_clearly_and_an_abort_cascades() {
    let llm = ScriptedLlm::start();
    // Every LLM call runs a long command: agents stay alive for the test to act as them.
    llm.fallback(Reply::tool("run_command", json!({"command": "sleep 600.75"}), 10, 2));
    let tmp = common::tempdir().unwrap();
    let e = setup(tmp.path(), &llm, "{maxChildren: 2, maxDepth: 1}");
    e.rt().block_on(async {
        e.wait_registry(2).await;
        e.client.submit(&lead_job("boss", "plan")).await.unwrap();
        e.client.submit(&SubmitJob { agent: Some("worker".into()), ..SubmitJob::named("solo", "slow") }).await.unwrap();
        until(Duration::from_secs(30), "both agents working", async || {
            process_running("sleep 600.75") && process_running("sleep 600.5")
        })
        .await;
        // Act as the agents, with the tokens they hold.
        let as_agent = async |job: &str| george_client::Client::new(&e.url, &agent_token(&e, job)).unwrap();
        let boss = as_agent("boss").await;
        let part = |key: &str| ChildRequest {
            key: key.into(),
            template: "part".into(),
            params: [("key".to_string(), json!(key))].into(),
            ..Default::default()
        };
        let refused = |r: Result<george_core::api::ChildView, george_client::ClientError>| {
            let e = r.unwrap_err();
            (e.status().unwrap(), e.to_string())
        };
        let (status, why) = refused(boss.spawn_child("boss", &part("Bad Key")).await);
        assert_eq!(status, 400, "{why}");
        assert!(why.contains("invalid child key `Bad Key`"), "{why}");
        let (status, why) =
            refused(boss.spawn_child("boss", &ChildRequest { template: "nope".into(), ..part("x") }).await);
        assert_eq!(status, 409, "{why}");
        assert!(why.contains("child `x` of template `nope`"), "{why}");
        assert_eq!(boss.spawn_child("boss", &part("a")).await.unwrap().id, "boss.a");
        // A child that is itself a `lead` working an LLM step.
        let lead =
            ChildRequest { key: "d".into(), agent: Some("lead".into()), template: "plan".into(), ..Default::default() };
        assert_eq!(boss.spawn_child("boss", &lead).await.unwrap().id, "boss.d");
        assert_eq!(boss.spawn_child("boss", &part("a")).await.unwrap().id, "boss.a", "the same key, the same child");
        let (status, why) = refused(boss.spawn_child("boss", &part("c")).await);
        assert_eq!(status, 409, "{why}");
        assert!(
            why.contains("job `boss` has 2 children, the most AgentSpec `lead` allows (subagents.maxChildren)"),
            "{why}"
        );
        // The child asks for a grandchild: one generation deeper than `lead` allows.
        until(Duration::from_secs(30), "the child lead working", async || {
            e.client.agents(false).await.unwrap().iter().any(|a| a.job_id == "boss.d")
                && process_running("sleep 600.75")
        })
        .await;
        let (status, why) = refused(as_agent("boss.d").await.spawn_child("boss.d", &part("x")).await);
        assert_eq!(status, 409, "{why}");
        assert!(
            why.contains(
                "a child of `boss.d` would be 2 generations deep; AgentSpec `lead` allows 1 (subagents.maxDepth)"
            ),
            "{why}"
        );
        // Another token may not act for this job; an agent without `spawn` may not spawn.
        let solo = as_agent("solo").await;
        let (status, why) = refused(solo.spawn_child("boss", &part("z")).await);
        assert_eq!(status, 403, "{why}");
        let (status, why) = refused(solo.spawn_child("solo", &part("z")).await);
        assert_eq!(status, 403, "{why}");
        assert!(why.contains("AgentSpec `worker` does not have the `spawn` capability"), "{why}");
        assert_eq!(e.client.children("solo").await.unwrap().len(), 0);
        // Aborting the parent aborts its unfinished children and stops their agents.
        until(Duration::from_secs(30), "the children running", async || {
            e.client.children("boss").await.unwrap().iter().all(|k| k.status == JobStatus::InProgress)
        })
        .await;
        // Pausing the parent pauses them; resuming it resumes them.
        e.client.act("boss", "pause", None).await.unwrap();
        for child in ["boss.a", "boss.d"] {
            let j = e.wait_status(child, JobStatus::Paused, Duration::from_secs(30)).await;
            assert!(j.reason.as_deref().unwrap_or("").ends_with("parent `boss` paused"), "{child}: {:?}", j.reason);
        }
        e.client.act("boss", "resume", None).await.unwrap();
        for child in ["boss.a", "boss.d"] {
            e.wait_status(child, JobStatus::InProgress, Duration::from_secs(30)).await;
        }
        e.client.act("boss", "abort", Some("not needed".into())).await.unwrap();
        for child in ["boss.a", "boss.d"] {
            let j = e.wait_status(child, JobStatus::Aborted, Duration::from_secs(30)).await;
            assert_eq!(j.reason.as_deref(), Some("aborted by job:boss: parent `boss` aborted"), "{child}");
        }
        e.wait_status("boss", JobStatus::Aborted, Duration::from_secs(30)).await;
        e.client.act("solo", "abort", None).await.unwrap();
    });
}

/// The tokens of `job` in the ledger.
async fn ledger_tokens(e: &Engine, job: &str) -> u64 {
    let rows = e.client.get_json(&format!("/api/v1/ledger?job={job}&since=2000-01-01T00:00:00Z")).await.unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r["input_tokens"].as_u64().unwrap() + r["output_tokens"].as_u64().unwrap())
        .sum()
}

/// A parent with a family budget and five children calling the LLM at
/// once, each until its share refuses: no child spends past its share, the
/// family never past the parent's budget, and an alert names the family; a
/// child that asks for more than is left is refused, and what ended
/// children did not spend comes back.
#[test]
fn five_concurrent_children_never_take_their_family_past_the_parents_budget() {
    let llm = ScriptedLlm::start();
    // The parent's first call: a long command, while the test acts as its agent.
    llm.push(Reply::tool("run_command", json!({"command": "sleep 600.33"}), 10, 2));
    // Every other call: a comment, billed 500 tokens; children call until refused.
    llm.fallback(Reply::tool("comment", json!({"text": "still working"}), 200, 300));
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "agents/lead.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: lead}\nspec:\n  capabilities: [spawn, shell]\n  subagents: {maxChildren: 6}\n  resources: {tokenBudget: {perJob: 60000, perInvocation: 500}}\n");
    write(&m, "agents/helper.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: helper}\nspec:\n  capabilities: []\n  resources: {tokenBudget: {perInvocation: 500}}\n");
    write(&m, "templates/plan.yaml", "apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {name: plan}\nspec:\n  steps:\n    - id: split\n      description: Split the work.\n");
    write(&m, "templates/chat.yaml", "apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {name: chat}\nspec:\n  steps:\n    - id: talk\n      description: Keep the people informed.\n");
    let cfg = format!(
        "{FAST_CONFIG}llm:\n  default: {{provider: scripted, model: m}}\n  providers:\n    - {{name: scripted, api: openai, baseUrl: '{}'}}\n",
        llm.url
    );
    let e = Engine::start_full(tmp.path(), &cfg, &["--manifests", m.to_str().unwrap()], &[]);
    e.rt().block_on(async {
        e.wait_registry(2).await;
        e.client.submit(&lead_job("boss", "plan")).await.unwrap();
        until(Duration::from_secs(30), "the parent's long command", async || process_running("sleep 600.33")).await;
        let token = agent_token(&e, "boss");
        let boss = george_client::Client::new(&e.url, &token).unwrap();
        let child = |key: &str, tokens: u64| ChildRequest {
            key: key.into(),
            template: "chat".into(),
            agent: Some("helper".into()),
            tokens: Some(tokens),
            ..Default::default()
        };
        // Five children at once, 10,000 tokens each.
        let made = futures_util::future::join_all((1..=5).map(|n| {
            let (boss, req) = (boss.clone(), child(&format!("c{n}"), 10_000));
            async move { boss.spawn_child("boss", &req).await }
        }))
        .await;
        assert!(made.iter().all(|r| r.as_ref().is_ok_and(|c| c.tokens == Some(10_000))), "{made:?}");
        // Less than 10,000 is left: a sixth child asking for 20,000 is refused.
        let err = boss.spawn_child("boss", &child("c6", 20_000)).await.unwrap_err();
        assert_eq!(err.status(), Some(409), "{err}");
        assert!(
            err.to_string().contains("job `boss` has") && err.to_string().contains("the child needs 20000"),
            "{err}"
        );
        // Each child calls until its share refuses.
        let blocked = eventually(Duration::from_secs(60), "every child stopped by its budget", async || {
            let kids = e.client.children("boss").await.ok()?;
            (kids.len() == 5 && kids.iter().all(|k| k.status == JobStatus::Blocked)).then_some(kids)
        })
        .await;
        let mut family = ledger_tokens(&e, "boss").await;
        for k in &blocked {
            assert!(
                k.reason
                    .as_deref()
                    .unwrap_or("")
                    .starts_with(&format!("budget exhausted: token budget exhausted: job `{}` has", k.id)),
                "{k:?}"
            );
            let spent = ledger_tokens(&e, &k.id).await;
            assert!(spent > 0 && spent <= 10_000, "{}: {spent}", k.id);
            assert_eq!(k.tokens_used, spent, "{}", k.id);
            family += spent;
        }
        assert!(family <= 60_000, "the family spent {family}");
        // Five shares of 10,000 held of 60,000: past 75 %, an alert names the family.
        let alerts: Vec<_> =
            e.client.events(0, 100_000).await.unwrap().into_iter().filter(|x| x.kind == "budget.alert").collect();
        assert!(
            alerts
                .iter()
                .any(|a| a.data["family"] == "boss" && a.data["color"] == "yellow" && a.data["level"] == "family boss"),
            "{alerts:?}"
        );
        // Ended children give back what they did not spend: now 20,000 fits.
        for k in &blocked {
            e.client.act(&k.id, "abort", None).await.unwrap();
            e.wait_status(&k.id, JobStatus::Aborted, Duration::from_secs(30)).await;
        }
        let sixth = boss.spawn_child("boss", &child("c6", 20_000)).await.unwrap();
        assert_eq!(sixth.tokens, Some(20_000));
        // Each return is on record on the parent: share, spent, returned.
        let returns: Vec<_> =
            e.client.events(0, 100_000).await.unwrap().into_iter().filter(|x| x.kind == "budget.returned").collect();
        assert_eq!(returns.len(), 5, "{returns:?}");
        for r in &returns {
            assert_eq!(r.job_id.as_deref(), Some("boss"));
            let (share, spent, back) = (&r.data["share"], r.data["spent"].as_u64().unwrap(), &r.data["returned"]);
            assert_eq!((share, back.as_u64().unwrap()), (&json!(10_000), 10_000 - spent), "{r:?}");
            assert_eq!(spent, ledger_tokens(&e, r.data["child"].as_str().unwrap()).await);
        }
        e.client.act("boss", "abort", None).await.unwrap();
    });
}
