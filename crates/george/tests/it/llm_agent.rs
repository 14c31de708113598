//! Acceptance: the reference agent's LLM mode, through the proxy, against
//! the scripted provider.
//! - an LLM step completes using tool calls; the ledger matches the script;
//! - a step needing a capability the agent lacks ends blocked, with no tool
//!   run outside its grants;
//! - `ask_human` blocks, and an injected reply resumes the same conversation
//!   in a new attempt.

use crate::common;

use common::llm::{Reply, ScriptedLlm};
use common::*;
use george_core::JobStatus;
use serde_json::json;
use std::time::Duration;

const STEP: &str = "    - id: count\n      description: Write three lines to notes.txt, count them and write the count to count.txt in the output folder.\n";

fn setup(tmp: &std::path::Path, llm: &ScriptedLlm) -> Engine {
    let m = tmp.join("manifests");
    write(
        &m,
        "agents/clerk.yaml",
        "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: clerk}\nspec:\n  capabilities: [shell, files]\n",
    );
    write(&m, "agents/claude.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: claude}\nspec:\n  capabilities: [shell, files]\n  llm: {provider: scripted-anthropic, model: claude-test}\n");
    // A context window far smaller than the tool definitions: only the task and the latest turn go.
    write(&m, "agents/terse.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: terse}\nspec:\n  capabilities: [shell, files]\n  resources: {contextWindow: 100}\n");
    write(
        &m,
        "agents/reader.yaml",
        "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: reader}\nspec:\n  capabilities: [files]\n  safety: {canEscalateToHuman: false}\n",
    );
    write(&m, "templates/count.yaml", &template("count", STEP).replace("  requiredCapabilities: [shell]\n", ""));
    write(
        &m,
        "templates/ask.yaml",
        &template("ask", "    - id: deploy\n      description: Deploy the service where the operator says.\n")
            .replace("  requiredCapabilities: [shell]\n", ""),
    );
    let cfg = format!(
        "{FAST_CONFIG}llm:\n  default: {{provider: scripted-openai, model: gpt-test}}\n  providers:\n    - {{name: scripted-openai, api: openai, baseUrl: '{url}'}}\n    - {{name: scripted-anthropic, api: anthropic, baseUrl: '{url}'}}\n",
        url = llm.url
    );
    Engine::start_full(tmp, &cfg, &["--manifests", m.to_str().unwrap()], &[])
}

fn submit(id: &str, template: &str, agent: &str) -> george_core::api::SubmitJob {
    george_core::api::SubmitJob { agent: Some(agent.into()), ..george_core::api::SubmitJob::named(id, template) }
}

async fn ready(e: &Engine) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while e.client.get_json("/api/v1/registry").await.map(|v| v.as_array().map_or(0, Vec::len)).unwrap_or(0) < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "manifests never applied: {:?} {:?}\n{}",
            e.client.sources().await,
            e.client.get_json("/api/v1/registry").await,
            e.log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn script_counting(llm: &ScriptedLlm, base: u64) {
    llm.push(Reply::tool("write_file", json!({"path": "notes.txt", "content": "a\nb\nc\n"}), base, 5));
    llm.push(Reply::tool(
        "run_command",
        json!({"command": "wc -l < notes.txt | tr -d ' ' > \"$GEORGE_OUTPUT_DIR/count.txt\""}),
        base + 2,
        6,
    ));
    llm.push(Reply::tool("complete_step", json!({"summary": "notes.txt has 3 lines"}), base + 4, 3));
}

#[test]
fn an_llm_step_completes_through_tool_calls_in_both_api_styles() {
    let llm = ScriptedLlm::start();
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path(), &llm);
    engine.rt().block_on(async {
        ready(&engine).await;
        for (id, agent, base) in
            [("count-oa", "clerk", 100), ("count-an", "claude", 200), ("count-terse", "terse", 300)]
        {
            script_counting(&llm, base);
            engine.client.submit(&submit(id, "count", agent)).await.unwrap();
            let j = engine.wait_status(id, JobStatus::Completed, Duration::from_secs(30)).await;
            assert_eq!(j.attempt, 1);
            let count = std::fs::read_to_string(engine.dir.join(format!("data/outputs/{id}/count.txt"))).unwrap();
            assert_eq!(count.trim(), "3", "{id}: the tools really ran");
            let ev = engine.client.evidence(id).await.unwrap();
            let calls: Vec<String> = ev
                .iter()
                .filter(|e| e.kind == "tool_call")
                .map(|e| {
                    serde_json::from_str::<serde_json::Value>(&e.content).unwrap()["tool"].as_str().unwrap().to_string()
                })
                .collect();
            assert_eq!(calls, ["write_file", "run_command", "complete_step"], "{id}");
            assert!(ev.iter().any(|e| e.kind == "summary" && e.content == "notes.txt has 3 lines"));
            let ledger = engine.client.get_json(&format!("/api/v1/ledger?job={id}")).await.unwrap();
            let got: Vec<(u64, u64)> = ledger
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["input_tokens"].as_u64().unwrap(), r["output_tokens"].as_u64().unwrap()))
                .collect();
            assert_eq!(
                got,
                [(base, 5), (base + 2, 6), (base + 4, 3)],
                "{id}: the ledger is the provider's usage, exactly"
            );
        }
        let received = llm.received();
        assert_eq!(received.iter().filter(|r| r.path == "/v1/chat/completions").count(), 6);
        assert_eq!(received.iter().filter(|r| r.path == "/v1/messages").count(), 3);
        // The third OpenAI call carries the tool results of the first two.
        let third = &received[2].body["messages"];
        assert_eq!(third.as_array().unwrap().iter().filter(|m| m["role"] == "tool").count(), 2);
        // The terse agent's third call left the first turn out to fit its context window.
        let terse = received[8].body["messages"].as_array().unwrap().clone();
        assert_eq!(terse.iter().filter(|m| m["role"] == "tool").count(), 1, "{terse:?}");
        assert!(terse.iter().any(|m| m["role"] == "user"
            && m["content"].as_str().unwrap_or("").contains("left out to fit the context window")));
    });
}

#[test]
fn a_missing_capability_blocks_without_working_around_it() {
    let llm = ScriptedLlm::start();
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path(), &llm);
    let marker = tmp.path().join("must-not-exist");
    engine.rt().block_on(async {
        ready(&engine).await;
        // The model tries a shell command; the reader has only `files`.
        llm.push(Reply::tool("run_command", json!({"command": format!("touch {}", marker.display())}), 10, 2));
        engine.client.submit(&submit("no-shell", "count", "reader")).await.unwrap();
        let j = engine.wait_status("no-shell", JobStatus::Blocked, Duration::from_secs(30)).await;
        assert_eq!(j.reason.as_deref(), Some("capability missing: shell"));
        assert!(!marker.exists(), "the command was not run");
        let offered: Vec<String> = llm.received()[0].body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap().to_string())
            .collect();
        assert!(
            offered.contains(&"read_file".to_string()) && !offered.contains(&"run_command".to_string()),
            "{offered:?}"
        );
        assert!(!offered.contains(&"ask_human".to_string()), "safety.canEscalateToHuman is false: {offered:?}");
        let ev = engine.client.evidence("no-shell").await.unwrap();
        let call: serde_json::Value =
            serde_json::from_str(&ev.iter().find(|e| e.kind == "tool_call").unwrap().content).unwrap();
        assert_eq!(call["granted"], false);

        // The model can also say so itself.
        llm.push(Reply::tool(
            "report_missing_capability",
            json!({"capability": "http", "why": "the spec is online"}),
            10,
            2,
        ));
        engine.client.submit(&submit("no-http", "count", "reader")).await.unwrap();
        let j = engine.wait_status("no-http", JobStatus::Blocked, Duration::from_secs(30)).await;
        assert_eq!(j.reason.as_deref(), Some("capability missing: http"));

        // An agent that may not escalate cannot ask a human, even if the model tries.
        llm.push(Reply::tool("ask_human", json!({"question": "which cluster?"}), 10, 2));
        engine.client.submit(&submit("no-escalation", "count", "reader")).await.unwrap();
        let j = engine.wait_status("no-escalation", JobStatus::Blocked, Duration::from_secs(30)).await;
        assert_eq!(j.reason.as_deref(), Some("capability missing: ask_human"));
        let comments = engine.client.comments("no-escalation").await.unwrap();
        assert!(comments.iter().all(|c| !c.body.contains("which cluster")), "{comments:?}");
    });
}

#[test]
fn ask_human_blocks_and_a_reply_resumes_the_same_conversation() {
    let llm = ScriptedLlm::start();
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path(), &llm);
    engine.rt().block_on(async {
        ready(&engine).await;
        llm.push(Reply::tool("ask_human", json!({"question": "Which region?"}), 20, 4));
        engine.client.submit(&submit("deploy", "ask", "clerk")).await.unwrap();
        let j = engine.wait_status("deploy", JobStatus::Blocked, Duration::from_secs(30)).await;
        assert_eq!(j.reason.as_deref(), Some("waiting for human: Which region?"));
        let comments = engine.client.comments("deploy").await.unwrap();
        assert!(comments.iter().any(|c| c.body == "Question: Which region?"));

        llm.push(Reply::tool("complete_step", json!({"summary": "deployed to eu-west-1"}), 30, 3));
        engine.client.inject("deploy", "eu-west-1, please").await.unwrap();
        let j = engine.wait_status("deploy", JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!((j.attempt, j.failures), (2, 0));
        // The second attempt continued the conversation: the question and the reply are both in it.
        let second = &llm.received()[1].body["messages"];
        let text = second.to_string();
        assert!(
            text.contains("ask_human") && text.contains("Which region?") && text.contains("eu-west-1, please"),
            "{text}"
        );
        assert_eq!(second[1]["role"], "user", "the original task comes first");
    });
}
