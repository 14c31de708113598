//! Issue 24: the OpenAPI document is an exact contract.
//!
//! - Schemathesis, a property-based API fuzzer, runs all its phases
//!   (examples, coverage, fuzzing, stateful with the document's links)
//!   against a real engine with each kind of token — an agent's (from a
//!   running attempt), a viewer's and an operator's — and must find nothing:
//!   no 5xx, no schema-valid request refused, no schema-violating one
//!   accepted, every answer as documented. Its settings (what an HTTP
//!   fuzzer cannot do with WebSocket and streaming endpoints) are in
//!   `tests/contract/schemathesis.toml`.
//! - A client generated from the document (openapi-python-client) submits,
//!   lists, watches and aborts a job (`tests/contract/generated_client.py`).
//!
//! The tools come from PyPI, pinned, in a virtual environment that
//! `scripts/contract-tools.sh` makes (`.ci/run` calls it). Never skipped: a
//! missing tool fails the test, saying how to install it.

use crate::common;

use common::llm::{Reply, ScriptedLlm};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const VIEWER: &str = "contract-viewer-token-0123456789";

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The contract tools' virtual environment.
fn tools() -> PathBuf {
    let dir = match std::env::var_os("GEORGE_CONTRACT_TOOLS") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target"))
            .join("contract-tools"),
    };
    assert!(
        dir.join("bin/st").exists() && dir.join("bin/openapi-python-client").exists(),
        "the API contract tools are not installed in {}: run scripts/contract-tools.sh (Python 3 with venv, PyPI)",
        dir.display()
    );
    dir
}

/// What each test runs against: the tools, a scratch directory, a scripted
/// LLM provider and an engine holding an attempt open, with that attempt's
/// agent token.
struct Setup {
    tools: PathBuf,
    root: PathBuf,
    engine: Engine,
    agent: String,
    _llm: ScriptedLlm,
    _tmp: tempfile::TempDir,
}

fn setup() -> Setup {
    let tools = tools();
    let tmp = tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let llm = ScriptedLlm::start();
    llm.fallback(Reply::text("ok", 10, 2));
    let (engine, agent) = engine(&root, &llm);
    Setup { tools, root, engine, agent, _llm: llm, _tmp: tmp }
}

/// An engine whose one job holds an attempt open, its agent having left
/// its token in the job's output directory; and the token.
fn engine(root: &Path, llm: &ScriptedLlm) -> (Engine, String) {
    let m = root.join("manifests");
    write(
        &m,
        "agents/coder.yaml",
        "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: coder}\nspec:\n  capabilities: [shell]\n",
    );
    // Not the reference agent: a shell that keeps its token where the test reads it, and waits.
    write(
        &m,
        "agents/holder.yaml",
        "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: holder}\nspec:\n  capabilities: [hold]\n  \
         command: [/bin/sh, -c, 'cat \"$GEORGE_AGENT_TOKEN_FILE\" > \"$GEORGE_OUTPUT_DIR/token\"; exec sleep 600']\n",
    );
    write(
        &m,
        "templates/hello.yaml",
        &template("hello", "    - id: hi\n      description: says hi\n      run: echo hi\n"),
    );
    write(
        &m,
        "templates/hold.yaml",
        &template("hold", "    - id: wait\n      description: waits\n      run: sleep 600\n")
            .replace("[shell]", "[hold]"),
    );
    write(&m, "jobs/held.yaml", &job("held", "hold"));
    // The holder sends no heartbeat: its attempt (and token) must outlive the runs.
    let config = format!(
        "agents:\n  healthCheck: {{interval: 10s, timeout: 10m, unhealthyThreshold: 3}}\n\
         llm:\n  default: {{provider: scripted, model: m}}\n  providers:\n    - {{name: scripted, api: openai, baseUrl: '{}'}}\n",
        llm.url
    );
    let tokens = format!("test:{TOKEN},wall:viewer:{VIEWER}");
    let args = ["--manifests", m.to_str().unwrap()];
    let engine = Engine::start_full(root, &config, &args, &[("GEORGE_API_TOKENS", &tokens)]);
    let token_file = root.join("data/outputs/held/token");
    let agent = wait_for(Duration::from_secs(30), "the held job's agent to leave its token", || {
        std::fs::read_to_string(&token_file).ok().filter(|t| !t.trim().is_empty())
    });
    (engine, agent.trim().to_string())
}

#[test]
fn schemathesis_finds_no_difference_between_the_document_and_the_server() {
    let Setup { tools, root, engine, agent, .. } = &setup();
    let config = repo().join("tests/contract/schemathesis.toml");
    // The agent's run first: an operator's run may abort the job whose token it is.
    for (who, token, seed) in [("agent", agent.as_str(), "1"), ("viewer", VIEWER, "2"), ("operator", TOKEN, "3")] {
        let started = std::time::Instant::now();
        let out = Command::new(tools.join("bin/st"))
            .arg("--no-color")
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(format!("{}/api/v1/openapi.json", engine.url))
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            .args(["--max-examples", "10", "--seed", seed, "--request-timeout", "10"])
            .current_dir(root)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let cases =
            text.lines().map(str::trim).find(|l| l.contains(" generated,") && l.contains("passed")).unwrap_or("");
        let links = text.lines().find(|l| l.contains("API Links:")).unwrap_or("").trim();
        eprintln!("schemathesis as {who}: {cases}; {links} ({:.1?})", started.elapsed());
        assert!(
            out.status.success(),
            "Schemathesis with the {who} token found differences:\n{text}\n{}\n--- engine log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            engine.log()
        );
        assert!(text.contains("Stateful") && text.contains("Fuzzing") && text.contains("Coverage"), "{text}");
    }
}

#[test]
fn a_client_generated_from_the_document_submits_lists_watches_and_aborts_a_job() {
    let Setup { tools, root, engine, .. } = &setup();
    let document = engine.rt().block_on(async {
        reqwest::get(format!("{}/api/v1/openapi.json", engine.url)).await.unwrap().bytes().await.unwrap()
    });
    std::fs::write(root.join("openapi.json"), &document).unwrap();
    std::fs::write(
        root.join("generator.yaml"),
        "post_hooks: []\nproject_name_override: george-client\npackage_name_override: george_client\n",
    )
    .unwrap();
    let generated = Command::new(tools.join("bin/openapi-python-client"))
        .args(["generate", "--path", "openapi.json", "--config", "generator.yaml", "--output-path", "client"])
        .current_dir(root)
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&generated.stdout), String::from_utf8_lossy(&generated.stderr));
    assert!(generated.status.success() && root.join("client/george_client").is_dir(), "generation failed:\n{log}");
    let run = Command::new(tools.join("bin/python"))
        .arg(repo().join("tests/contract/generated_client.py"))
        .args([&engine.url, TOKEN, "hold"])
        .env("PYTHONPATH", root.join("client"))
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the generated client failed:\n{out}\n--- engine log ---\n{}", engine.log());
    for step in ["submitted generated-client-1", "listed", "watched its agent start", "aborted: aborted"] {
        assert!(out.contains(step), "{step}: {out}");
    }
}
