//! Acceptance: the LLM proxy and token budgets, against a scripted
//! OpenAI/Anthropic-compatible provider.
//! - the ledger matches the scripted usage exactly, streaming and not, both API styles;
//! - the provider key never reaches an agent or a log;
//! - 20 concurrent agents against a nearly exhausted budget never overrun it
//!   by more than one call's cap, and refused agents' jobs end blocked;
//! - crossing 75/90/95 % raises the three alerts once each, notifies, and
//!   holds BACKGROUND work (orange), then all but approved P0/P1 work (red);
//! - rate limits pace calls per agent instance and per chapter, `george
//!   throttle` lowers a chapter's rate, and `george budget` reports usage.

use crate::common;

use common::inbox::Inbox;
use common::llm::{Reply, ScriptedLlm};
use common::*;
use george_core::JobStatus;
use serde_json::json;
use std::time::Duration;

const PROVIDER_KEY: &str = "sk-provider-key-7f3a9c-never-for-agents";
const HOLD: &str = "    - id: hold\n      description: stay alive until released\n      run: while [ ! -f \"$GEORGE_OUTPUT_DIR/release\" ]; do sleep 0.05; done\n";

fn config(llm: &ScriptedLlm, extra: &str) -> String {
    format!(
        "{FAST_CONFIG}llm:\n  default: {{provider: scripted-openai, model: gpt-test}}\n  providers:\n    - {{name: scripted-openai, api: openai, baseUrl: '{url}', apiKeyEnv: TEST_PROVIDER_KEY}}\n    - {{name: scripted-anthropic, api: anthropic, baseUrl: '{url}', apiKeyEnv: TEST_PROVIDER_KEY}}\n{extra}",
        url = llm.url
    )
}

/// An engine on `dir`'s manifests, calling `llm` with the provider key.
fn start(dir: &std::path::Path, llm: &ScriptedLlm, extra: &str) -> Engine {
    let manifests = dir.join("manifests");
    Engine::start_full(
        dir,
        &config(llm, extra),
        &["--manifests", manifests.to_str().unwrap()],
        &[("TEST_PROVIDER_KEY", PROVIDER_KEY)],
    )
}

async fn token_of(engine: &Engine, job: &str) -> (i32, String) {
    let j = engine.wait_job(job, "its agent to run", Duration::from_secs(30), |j| j.steps[0].runs == 1).await;
    let a = engine.client.agent(&george_core::api::agent_id(job, j.attempt)).await.unwrap();
    let pid = a.handle.unwrap()["pid"].as_i64().unwrap() as i32;
    let token = wait_for(Duration::from_secs(10), "the agent's token", || agent_token_in_memory(pid));
    // The reference agent holds its token in memory only: no process has it in its environment.
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let env = std::fs::read(p.path().join("environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&env).contains(&token),
            "the token is in {}'s environment",
            p.path().display()
        );
    }
    (pid, token)
}

async fn call(engine: &Engine, token: &str, path: &str, body: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new().post(format!("{}{path}", engine.url)).bearer_auth(token).json(&body).send().await.unwrap()
}

#[test]
fn the_ledger_matches_provider_usage_and_the_key_stays_in_george() {
    let llm = ScriptedLlm::start();
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(
        &m,
        "agents/oa.yaml",
        "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: oa}\nspec:\n  capabilities: [shell]\n",
    );
    write(&m, "agents/an.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: an}\nspec:\n  capabilities: [shell]\n  llm: {provider: scripted-anthropic, model: claude-test}\n  resources:\n    tokenBudget: {perInvocation: 300}\n");
    write(&m, "templates/hold.yaml", &template("hold", HOLD));
    write(
        &m,
        "jobs/j-oa.yaml",
        "apiVersion: george/v1\nkind: Job\nmetadata: {name: j-oa}\nspec:\n  template: hold\n  agent: oa\n",
    );
    write(
        &m,
        "jobs/j-an.yaml",
        "apiVersion: george/v1\nkind: Job\nmetadata: {name: j-an}\nspec:\n  template: hold\n  agent: an\n",
    );
    let engine = start(tmp.path(), &llm, "");
    engine.rt().block_on(async {
        let (pid_oa, oa) = token_of(&engine, "j-oa").await;
        let (pid_an, an) = token_of(&engine, "j-an").await;
        let msgs = json!([{"role": "user", "content": "What next?"}]);

        llm.push(Reply::text("plain", 11, 7));
        let r = call(
            &engine,
            &oa,
            "/llm/v1/chat/completions",
            json!({"model": "agent-picked", "messages": msgs, "max_tokens": 5000}),
        )
        .await;
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "plain");

        llm.push(Reply::tool("shell", json!({"command": "ls"}), 13, 5));
        let r = call(&engine, &oa, "/llm/v1/chat/completions", json!({"messages": msgs, "stream": true})).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(
            text.contains("\"tool_calls\"") && text.ends_with("data: [DONE]\n\n"),
            "the stream passes through: {text}"
        );

        llm.push(Reply::text("hello", 21, 9));
        let r =
            call(&engine, &an, "/llm/v1/messages", json!({"model": "x", "max_tokens": 5000, "messages": msgs})).await;
        assert_eq!(r.status(), 200);
        llm.push(Reply::tool("read_file", json!({"path": "a"}), 17, 4));
        let r = reqwest::Client::new()
            .post(format!("{}/llm/v1/messages", engine.url))
            .header("x-api-key", &an) // the Anthropic SDK's header works too
            .json(&json!({"max_tokens": 100, "messages": msgs, "stream": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("event: message_stop"));

        // The wrong API style (not what the agent's provider speaks: 409), an operator token, no token.
        assert_eq!(call(&engine, &an, "/llm/v1/chat/completions", json!({"messages": msgs})).await.status(), 409);
        assert_eq!(call(&engine, TOKEN, "/llm/v1/chat/completions", json!({"messages": msgs})).await.status(), 403);
        let r = reqwest::Client::new()
            .post(format!("{}/llm/v1/messages", engine.url))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        // The ledger holds the provider's figures exactly.
        let client = engine.client.clone();
        let ledger = |job: &str| {
            let (job, client) = (job.to_string(), client.clone());
            async move {
                let v = client.get_json(&format!("/api/v1/ledger?job={job}")).await.unwrap();
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        (
                            r["input_tokens"].as_u64().unwrap(),
                            r["output_tokens"].as_u64().unwrap(),
                            r["streamed"].as_bool().unwrap(),
                            r["model"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            ledger("j-oa").await,
            [(11, 7, false, "gpt-test".to_string()), (13, 5, true, "gpt-test".to_string())]
        );
        assert_eq!(
            ledger("j-an").await,
            [(21, 9, false, "claude-test".to_string()), (17, 4, true, "claude-test".to_string())]
        );
        // ... and so do the metrics, by chapter, AgentSpec, model and kind.
        let metrics = engine.metrics().await;
        for series in [
            "george_llm_tokens_total{chapter=\"\",agent_spec=\"oa\",model=\"gpt-test\",kind=\"input\"} 24",
            "george_llm_tokens_total{chapter=\"\",agent_spec=\"oa\",model=\"gpt-test\",kind=\"output\"} 12",
            "george_llm_tokens_total{chapter=\"\",agent_spec=\"an\",model=\"claude-test\",kind=\"input\"} 38",
            "george_llm_tokens_total{chapter=\"\",agent_spec=\"an\",model=\"claude-test\",kind=\"output\"} 13",
        ] {
            assert!(metrics.contains(series), "{series} in:\n{metrics}");
        }

        // What the provider received: George's key, the configured model, the clamped cap.
        let got = llm.received();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].authorization.as_deref(), Some(format!("Bearer {PROVIDER_KEY}").as_str()));
        assert_eq!(got[0].body["model"], "gpt-test", "the agent does not pick the model");
        assert_eq!(got[0].body["max_tokens"], 4096, "clamped to the default cap");
        assert_eq!(got[1].body["stream_options"]["include_usage"], true);
        assert_eq!(got[2].api_key.as_deref(), Some(PROVIDER_KEY));
        assert_eq!(
            (got[2].body["model"].as_str(), got[2].body["max_tokens"].as_u64()),
            (Some("claude-test"), Some(300))
        );
        assert_eq!(got[3].body["max_tokens"], 100, "a smaller request is kept");

        // A provider that reports no usage: the call is charged its worst case, never nothing.
        llm.push(Reply::Unmetered { text: "shh".into() });
        let r = call(&engine, &oa, "/llm/v1/chat/completions", json!({"messages": msgs, "max_tokens": 50})).await;
        assert_eq!(r.status(), 200);
        // The worst case the proxy reserved: every request byte a token, plus 16 of framing.
        let estimate = json!({"messages": msgs, "max_tokens": 50}).to_string().len() as u64 + 16;
        assert_eq!(ledger("j-oa").await[2], (estimate, 50, false, "gpt-test".to_string()));

        // The key is nowhere an agent or a log could show it.
        for pid in [pid_oa, pid_an] {
            let env = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap()).to_string();
            assert!(!env.contains(PROVIDER_KEY), "agent env");
        }
        for job in ["j-oa", "j-an"] {
            let log = std::fs::read_to_string(engine.dir.join(format!("data/logs/{job}/1.log"))).unwrap();
            assert!(!log.contains(PROVIDER_KEY), "agent log");
        }
        assert!(!engine.log().contains(PROVIDER_KEY), "George's log");
        let events = serde_json::to_string(&engine.client.events(0, 100_000).await.unwrap()).unwrap();
        assert!(!events.contains(PROVIDER_KEY));
        for job in ["j-oa", "j-an"] {
            std::fs::write(engine.dir.join(format!("data/outputs/{job}/release")), "").unwrap();
        }
    });
}

#[test]
fn concurrent_agents_never_overrun_a_budget_by_more_than_one_cap() {
    let llm = ScriptedLlm::start();
    llm.fallback(Reply::text("done", 30, 50)); // 80 tokens per call
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(
        &m,
        "chapters/tight.yaml",
        "apiVersion: george/v1\nkind: Chapter\nmetadata: {name: tight}\nspec:\n  tokenBudget: 1000\n",
    );
    write(&m, "agents/w.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: w, chapter: tight}\nspec:\n  capabilities: [shell]\n  resources:\n    tokenBudget: {perInvocation: 100}\n");
    write(&m, "templates/hold.yaml", &template("hold", HOLD));
    let names: Vec<String> = (0..20).map(|i| format!("a{i:02}")).collect();
    for n in &names {
        write(&m, &format!("jobs/{n}.yaml"), &job(n, "hold"));
    }
    let engine = start(tmp.path(), &llm, "");
    engine.rt().block_on(async {
        let mut tokens = Vec::new();
        for n in &names {
            tokens.push((n.clone(), token_of(&engine, n).await.1));
        }
        // Two calls each, all at once.
        let calls = tokens.iter().flat_map(|(n, t)| [(n.clone(), t.clone()), (n.clone(), t.clone())]).map(|(n, t)| {
            let url = engine.url.clone();
            async move {
                let r = reqwest::Client::new()
                    .post(format!("{url}/llm/v1/chat/completions"))
                    .bearer_auth(&t)
                    .json(&json!({"messages": [{"role": "user", "content": "go"}], "max_tokens": 1000}))
                    .send()
                    .await
                    .unwrap();
                (n, r.status().as_u16(), r.headers().get("retry-after").is_some(), r.text().await.unwrap())
            }
        });
        let results = futures_util::future::join_all(calls).await;
        let ok = results.iter().filter(|r| r.1 == 200).count();
        let refused: Vec<_> = results.iter().filter(|r| r.1 == 429).collect();
        assert_eq!(ok + refused.len(), 40, "{results:?}");
        // Each call reserves its worst case (~180 tokens), so at least 5 fit.
        assert!(ok >= 5 && !refused.is_empty(), "ok {ok}, refused {}", refused.len());
        assert!(refused.iter().all(|r| r.2 && r.3.contains("budget_exhausted") && r.3.contains("chapter tight")));

        let ledger = engine.client.get_json("/api/v1/ledger").await.unwrap();
        let total: u64 = ledger
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["input_tokens"].as_u64().unwrap() + r["output_tokens"].as_u64().unwrap())
            .sum();
        assert_eq!(total, ok as u64 * 80, "every forwarded call is in the ledger");
        assert!(total <= 1000 + 100, "recorded {total} tokens: more than one call's cap over the 1000 budget");

        // Every refused agent's job is blocked with the reason.
        for (n, ..) in &refused {
            let j = engine.wait_status(n, JobStatus::Blocked, Duration::from_secs(20)).await;
            assert!(j.reason.unwrap().starts_with("budget exhausted: token budget exhausted: chapter tight"));
        }
        let events = engine.client.events(0, 100_000).await.unwrap();
        assert_eq!(events.iter().filter(|e| e.kind == "budget.refused").count(), refused.len());
    });
}

#[test]
fn budget_alerts_fire_once_each_and_hold_work() {
    let llm = ScriptedLlm::start();
    let inbox = Inbox::start();
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(
        &m,
        "agents/w.yaml",
        "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: w}\nspec:\n  capabilities: [shell]\n  resources: {contextWindow: 8000}\n",
    );
    write(&m, "templates/hold.yaml", &template("hold", HOLD));
    write(&m, "templates/quick.yaml", &template("quick", "    - {id: s, description: quick, run: 'true'}\n"));
    write(&m, "jobs/spender.yaml", &job("spender", "hold"));
    let extra = format!("  budgets: {{orgMonthly: 10000, notify: ['{}']}}\n", inbox.url);
    let engine = start(tmp.path(), &llm, &extra);
    engine.rt().block_on(async {
        let (_, token) = token_of(&engine, "spender").await;
        let spend = |input: u64, output: u64| {
            llm.push(Reply::text("ok", input, output));
            let (engine, token) = (&engine, token.clone());
            async move {
                let body = json!({"messages": [{"role": "user", "content": "go"}], "max_tokens": 10});
                assert_eq!(call(engine, &token, "/llm/v1/chat/completions", body).await.status(), 200);
            }
        };
        let alerts = || async {
            let events = engine.client.events(0, 100_000).await.unwrap();
            events
                .iter()
                .filter(|e| e.kind == "budget.alert")
                .map(|e| (e.data["level"].as_str().unwrap().to_string(), e.data["color"].as_str().unwrap().to_string()))
                .collect::<Vec<_>>()
        };
        let submit = |id: &str, priority: &str| {
            let req = george_core::api::SubmitJob {
                template: "quick".into(),
                id: Some(id.into()),
                priority: Some(priority.parse().unwrap()),
                agent: Some("w".into()),
                ..Default::default()
            };
            let client = engine.client.clone();
            async move { client.submit(&req).await.unwrap() }
        };
        let org = |c: &str| ("org".to_string(), c.to_string());

        let window = || async {
            let r = reqwest::Client::new()
                .get(format!("{}/api/v1/jobs/spender/context", engine.url))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            r.json::<serde_json::Value>().await.unwrap()["context_window"].as_u64()
        };
        assert_eq!(window().await, Some(8000));
        spend(7000, 500).await; // 75 %
        assert_eq!(alerts().await, [org("yellow")]);
        assert_eq!(window().await, Some(4000), "yellow: less context is loaded");
        spend(1400, 100).await; // 90 %
        assert_eq!(alerts().await, [org("yellow"), org("orange")]);

        // Orange: BACKGROUND work waits; P2 work runs.
        submit("bg", "BACKGROUND").await;
        submit("p2-early", "P2").await;
        engine.wait_status("p2-early", JobStatus::Completed, Duration::from_secs(30)).await;
        let bg = engine.wait_job("bg", "the orange hold", Duration::from_secs(30), |j| j.reason.is_some()).await;
        assert_eq!(
            (bg.status, bg.reason.as_deref()),
            (JobStatus::Pending, Some("budget orange: BACKGROUND work is disabled"))
        );
        assert_eq!(bg.attempt, 0, "no agent was started");

        spend(450, 50).await; // 95 %
        spend(5, 5).await; // still red: no new alert
        assert_eq!(alerts().await, [org("yellow"), org("orange"), org("red")], "each alert once");

        // Red: only P0/P1 work, and only once approved.
        submit("p2-late", "P2").await;
        submit("p1", "P1").await;
        let p2 = engine.wait_job("p2-late", "the red hold", Duration::from_secs(30), |j| j.reason.is_some()).await;
        assert_eq!(p2.reason.as_deref(), Some("budget red: only P0/P1 work proceeds"));
        let p1 = engine.wait_job("p1", "the approval hold", Duration::from_secs(30), |j| j.reason.is_some()).await;
        assert_eq!(p1.reason.as_deref(), Some("awaiting approval (budget red): approve with `george jobs approve p1`"));
        assert_eq!((p1.status, p1.attempt), (JobStatus::Pending, 0));
        let out = engine.cli(&["jobs", "approve", "p1", "--reason", "incident fix"]);
        assert!(out.status.success(), "{}", stderr(&out));
        engine.wait_status("p1", JobStatus::Completed, Duration::from_secs(30)).await;
        let p2 = engine.job("p2-late").await;
        assert_eq!((p2.status, p2.attempt), (JobStatus::Pending, 0), "P2 work still waits");
        let approved = engine.client.events(0, 100_000).await.unwrap();
        let approved = approved.iter().find(|e| e.kind == "job.approved").expect("the approval is an event");
        assert_eq!(approved.job_id.as_deref(), Some("p1"));

        // Work of no chapter drew on the org's reserve pool (all of the org budget here).
        let report = engine.client.budget("month").await.unwrap();
        assert_eq!((report.org.total, report.org.alert.as_str()), (9510, "red"));
        assert_eq!((report.reserve_pool, report.reserve_pool_remaining), (Some(10000), Some(490)));

        // One notification per alert, Slack-compatible.
        let texts = wait_for(Duration::from_secs(20), "three notifications", || {
            let got = inbox.messages();
            (got.len() >= 3).then_some(got)
        });
        assert_eq!(texts.len(), 3, "{texts:?}");
        for (msg, color) in texts.iter().zip(["yellow", "orange", "red"]) {
            let text = msg["text"].as_str().unwrap();
            assert!(text.contains(&format!("({color})")) && text.contains("org"), "{text}");
        }
        std::fs::write(engine.dir.join("data/outputs/spender/release"), "").unwrap();
    });
}

#[test]
fn rate_limits_pace_calls_and_the_budget_report_adds_up() {
    let llm = ScriptedLlm::start();
    let inbox = Inbox::start();
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "policy.yaml", "apiVersion: george/v1\nkind: Policy\nmetadata: {name: rates}\nspec:\n  rateLimits: {perMinute: 200, perHour: 100000}\n");
    write(
        &m,
        "chapters/payments.yaml",
        // Chapter alerts go to the chapter's own alert channel (no global notify list here).
        &format!("apiVersion: george/v1\nkind: Chapter\nmetadata: {{name: payments}}\nspec:\n  tokenBudget: 10000\n  alertChannel: '{}'\n", inbox.url),
    );
    for (name, extra) in [("qm", ""), ("rg", "  resources:\n    tokenBudget: {perMinute: 1000}\n")] {
        write(
            &m,
            &format!("agents/{name}.yaml"),
            &format!("apiVersion: george/v1\nkind: AgentSpec\nmetadata: {{name: {name}, chapter: payments}}\nspec:\n  capabilities: [shell]\n{extra}"),
        );
        write(&m, &format!("jobs/j-{name}.yaml"), &format!("apiVersion: george/v1\nkind: Job\nmetadata: {{name: j-{name}}}\nspec:\n  template: hold\n  agent: {name}\n"));
    }
    write(&m, "templates/hold.yaml", &template("hold", HOLD));
    let mut engine = start(tmp.path(), &llm, "");
    let rg = engine.rt().block_on(async {
        let (_, qm) = token_of(&engine, "j-qm").await;
        let (_, rg) = token_of(&engine, "j-rg").await;
        let body = json!({"messages": [{"role": "user", "content": "go"}], "max_tokens": 10});
        let events = |kind: &'static str| {
            let client = engine.client.clone();
            async move {
                let all = client.events(0, 100_000).await.unwrap();
                all.into_iter().filter(|e| e.kind == kind).collect::<Vec<_>>()
            }
        };

        llm.push(Reply::text("ok", 160, 30));
        assert_eq!(call(&engine, &qm, "/llm/v1/chat/completions", body.clone()).await.status(), 200);
        // qm's instance has 10 of its 200 tokens a minute left: the next call waits in the proxy.
        let url = engine.url.clone();
        let (qm2, body2) = (qm.clone(), body.clone());
        let paced = tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/llm/v1/chat/completions"))
                .bearer_auth(qm2)
                .json(&body2)
                .send()
                .await
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let e = loop {
            if let Some(e) = events("llm.paced").await.into_iter().next() {
                break e;
            }
            assert!(std::time::Instant::now() < deadline, "the second call was not paced");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(e.job_id.as_deref(), Some("j-qm"));
        assert_eq!(
            (e.data["scope"].as_str(), e.data["limit"].as_u64(), e.data["used"].as_u64()),
            (Some("agent instance j-qm#1"), Some(200), Some(190))
        );
        let wait = e.data["wait_ms"].as_i64().unwrap();
        assert!(wait > 30_000 && wait <= 60_000, "waits for the minute's window: {wait} ms");
        assert_eq!(llm.received().len(), 1, "the paced call was not forwarded");
        assert!(!paced.is_finished());

        // Another instance of the chapter is not held back by qm's minute.
        llm.push(Reply::text("ok", 90, 10));
        assert_eq!(call(&engine, &rg, "/llm/v1/chat/completions", body.clone()).await.status(), 200);

        // Throttle the chapter below its last hour's 290 tokens: rg's calls are now refused for
        // longer than the proxy waits inline, with a rate alert.
        let out = engine.cli(&["throttle", "payments", "--per-hour", "300"]);
        assert_eq!(stdout(&out).trim(), "chapter payments is throttled to 300 tokens per hour", "{}", stderr(&out));
        let r = call(&engine, &rg, "/llm/v1/chat/completions", body.clone()).await;
        assert_eq!(r.status(), 429);
        let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry > 3000 && retry <= 3600, "until the hour's window slides: {retry}s");
        let text = r.text().await.unwrap();
        assert!(text.contains("rate_limited") && text.contains("chapter payments used 290 of 300"), "{text}");
        assert_eq!(engine.job("j-rg").await.status, JobStatus::InProgress, "a rate limit never blocks the job");
        let alerts = events("rate.alert").await;
        assert_eq!(alerts.len(), 1);
        assert_eq!(call(&engine, &rg, "/llm/v1/chat/completions", body.clone()).await.status(), 429);
        assert_eq!(events("rate.alert").await.len(), 1, "one alert per chapter and hour");
        let note =
            wait_for(Duration::from_secs(20), "the rate alert notification", || inbox.messages().into_iter().next());
        assert!(note["text"].as_str().unwrap().contains("chapter payments is over its hourly rate"), "{note}");

        // The report.
        let r = engine.client.budget("month").await.unwrap();
        assert_eq!(r.protocol, "MANA_REPORT_V1");
        assert_eq!(r.chapters.len(), 1, "{r:?}");
        let p = &r.chapters[0];
        assert_eq!(p.chapter, "payments");
        let qm_use = p.breakdown["qm"];
        assert_eq!((qm_use.invocations, qm_use.input_tokens, qm_use.output_tokens, qm_use.total), (1, 160, 30, 190));
        assert_eq!(p.breakdown["rg"].total, 100);
        assert_eq!((p.standing.total, p.standing.budget, p.standing.budget_remaining), (290, Some(10000), Some(9710)));
        let days = ((r.generated_at - r.since).num_seconds() as f64 / 86_400.0).max(1.0);
        assert_eq!(p.standing.burn_rate_daily, (290.0 / days).round() as u64);
        assert!(p.standing.projected_exhaustion.is_some());
        assert_eq!((p.used_last_hour, p.rate_per_hour, p.throttle_per_hour), (290, Some(300), Some(300)));
        assert_eq!((r.org.total, r.org.budget, p.standing.alert.as_str()), (290, None, "green"));
        assert_eq!((r.reserve_pool, r.reserve_pool_remaining), (None, None), "no org budget, no pool");
        let out = engine.cli(&["budget"]);
        let table = stdout(&out);
        assert!(table.contains("payments") && table.contains("qm") && table.contains("9710"), "{table}");

        // Halve, refuse an unknown chapter, clear.
        let out = engine.cli(&["throttle", "payments"]);
        assert_eq!(stdout(&out).trim(), "chapter payments is throttled to 150 tokens per hour");
        let out = engine.cli(&["throttle", "nowhere", "--per-hour", "5"]);
        assert!(!out.status.success() && stderr(&out).contains("chapter `nowhere` not found"), "{}", stderr(&out));
        let out = engine.cli(&["throttle", "payments", "--clear"]);
        assert_eq!(stdout(&out).trim(), "chapter payments is no longer throttled");
        llm.push(Reply::text("ok", 5, 5));
        assert_eq!(call(&engine, &rg, "/llm/v1/chat/completions", body.clone()).await.status(), 200);
        paced.abort();
        // Throttled again (300 < the hour's 300 + the next call) before a restart...
        assert!(engine.cli(&["throttle", "payments", "--per-hour", "300"]).status.success());
        rg
    });
    // ... the rate windows are rebuilt from the ledger: the throttle still holds.
    engine.stop();
    engine.restart();
    engine.rt().block_on(async {
        let body = json!({"messages": [{"role": "user", "content": "go"}], "max_tokens": 10});
        let r = call(&engine, &rg, "/llm/v1/chat/completions", body).await;
        assert_eq!(r.status(), 429);
        assert!(r.text().await.unwrap().contains("chapter payments used 300 of 300"));
        for job in ["j-qm", "j-rg"] {
            std::fs::write(engine.dir.join(format!("data/outputs/{job}/release")), "").unwrap();
        }
    });
}

#[test]
fn hostile_requests_cannot_raise_their_cap_nor_overrun_a_budget() {
    let llm = ScriptedLlm::start();
    llm.fallback(Reply::Billed { text: "done".into() });
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(
        &m,
        "chapters/tight.yaml",
        "apiVersion: george/v1\nkind: Chapter\nmetadata: {name: tight}\nspec:\n  tokenBudget: 6000\n",
    );
    write(&m, "agents/w.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: w, chapter: tight}\nspec:\n  capabilities: [shell]\n  resources:\n    tokenBudget: {perInvocation: 100}\n");
    write(&m, "templates/hold.yaml", &template("hold", HOLD));
    write(&m, "jobs/h.yaml", &job("h", "hold"));
    let engine = start(tmp.path(), &llm, "");
    engine.rt().block_on(async {
        let (_, token) = token_of(&engine, "h").await;
        let msgs = json!([{"role": "user", "content": "go"}]);
        let path = "/llm/v1/chat/completions";

        // Two cap fields: every one the provider might read is clamped.
        for body in [
            json!({"messages": msgs, "max_tokens": 1_000_000, "max_completion_tokens": 50}),
            json!({"messages": msgs, "max_completion_tokens": 1_000_000, "max_tokens": 50}),
            json!({"messages": msgs, "max_tokens": "1000000"}),
            json!({"messages": msgs, "max_tokens": -1, "max_output_tokens": 1e12}),
            json!({"messages": msgs, "max_completion_tokens": 18446744073709551615u64}),
        ] {
            let r = call(&engine, &token, path, body.clone()).await;
            assert_eq!(r.status(), 200, "{body}: {}", r.text().await.unwrap());
            let sent = llm.received().last().unwrap().body.clone();
            for k in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
                if let Some(v) = sent.get(k) {
                    assert!(v.as_u64().is_some_and(|v| v <= 100), "{body} reached the provider with {k} = {v}");
                }
            }
        }
        // `n` is an integer in 1..=128, or the call is refused before it costs anything.
        let before = llm.received().len();
        for n in [json!(0), json!(129), json!(-1), json!(2.5), json!("3"), json!(u64::MAX)] {
            let r = call(&engine, &token, path, json!({"messages": msgs, "max_tokens": 10, "n": n})).await;
            assert_eq!(r.status(), 400, "n = {n}");
            assert!(r.text().await.unwrap().contains("n: expected an integer from 1 to 128"));
        }
        // A file the proxy cannot measure is refused.
        let file = json!([{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-abc123"}}]}]);
        let r = call(&engine, &token, path, json!({"messages": file})).await;
        assert_eq!(r.status(), 400);
        assert_eq!(llm.received().len(), before, "no refused call reached the provider");

        // 40 concurrent hostile calls (both caps, n = 3, images by URL) against what is left.
        let image = json!([{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "high"}}]}]);
        let calls = (0..40).map(|i| {
            let (url, token) = (engine.url.clone(), token.clone());
            let body = if i % 2 == 0 {
                json!({"messages": image, "max_tokens": 1_000_000, "max_completion_tokens": 1_000_000, "n": 3})
            } else {
                json!({"messages": msgs, "max_completion_tokens": 1_000_000})
            };
            async move {
                let r = reqwest::Client::new()
                    .post(format!("{url}/llm/v1/chat/completions"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            }
        });
        let statuses = futures_util::future::join_all(calls).await;
        assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
        assert!(statuses.contains(&429), "the budget ran out: {statuses:?}");

        let ledger = engine.client.get_json("/api/v1/ledger").await.unwrap();
        let total: u64 = ledger
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["input_tokens"].as_u64().unwrap() + r["output_tokens"].as_u64().unwrap())
            .sum();
        let billed: u64 = llm
            .received()
            .iter()
            .map(|r| {
                let (i, o) = common::llm::billed(&r.body);
                i + o
            })
            .sum();
        assert_eq!(total, billed, "the ledger holds what the provider billed");
        assert!(total <= 6000, "the documented bound is no overrun: {total} tokens against a budget of 6000");
    });
}
