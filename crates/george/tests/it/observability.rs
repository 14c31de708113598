//! Issue 18 (in part): metrics an operator alerts on. Jobs' durations and
//! outcomes, retries, attempts' lives, the API's answer times by route and
//! status, the build; and `/metrics` without a token on an address of its
//! own (`engine.metricsListen`) for a Prometheus that scrapes without
//! credentials — and nothing else there. The Prometheus alert rules and the
//! Grafana dashboard in `deploy/` are valid (`promtool`), their alerts fire
//! as meant, and they name only series the engine serves.

use crate::common;

use common::llm::{Reply, ScriptedLlm};
use common::*;
use george_core::JobStatus;
use std::time::Duration;

#[test]
fn metrics_count_jobs_retries_and_answers_and_are_open_only_on_their_own_address() {
    let tmp = tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let m = root.join("manifests");
    write(
        &m,
        "agents/a.yaml",
        "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: a}\nspec:\n  capabilities: [shell]\n",
    );
    // Its first attempt's agent dies (the step kills it); the second completes.
    let flaky = "    - id: s\n      description: crashes once\n      run: 'printf %s \"${TRACEPARENT:-}\" > \"$GEORGE_OUTPUT_DIR/traceparent\"; test -f \"$GEORGE_OUTPUT_DIR/tried\" || { touch \"$GEORGE_OUTPUT_DIR/tried\"; kill -9 $PPID; sleep 5; }'\n";
    write(&m, "templates/flaky.yaml", &template("flaky", flaky));
    write(&m, "jobs/j.yaml", &job("flaky-1", "flaky"));
    let engine = Engine::start_with_env(
        &root,
        "",
        &["--manifests", m.to_str().unwrap()],
        &[("GEORGE_METRICS_LISTEN", "127.0.0.1:0")],
    );
    let open = engine
        .log()
        .lines()
        .find(|l| l.contains("metrics served without a token"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("listen=")).map(str::to_string))
        .unwrap_or_else(|| panic!("the metrics address is logged: {}", engine.log()));
    engine.rt().block_on(async {
        let done = engine.wait_status("flaky-1", JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!(done.attempt, 2, "{done:?}");
        // No collector configured: no trace context for the agent either.
        assert_eq!(std::fs::read_to_string(root.join("data/outputs/flaky-1/traceparent")).unwrap(), "");
        let http = reqwest::Client::new();
        // The API's /metrics wants a token; the metrics address does not, and serves nothing else.
        assert_eq!(http.get(format!("{}/metrics", engine.url)).send().await.unwrap().status(), 401);
        let jobs = http.get(format!("http://{open}/api/v1/jobs")).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(jobs.status(), 404);
        // The job completes on its agent's report; its attempt ends (and is
        // counted) once the agent has exited: wait for both.
        let attempts_counted = |text: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with("george_attempt_duration_seconds_count{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        let text = eventually(Duration::from_secs(10), "the figures, both attempts ended", async || {
            let r = http.get(format!("http://{open}/metrics")).send().await.ok()?;
            let text = r.text().await.ok()?;
            (text.contains("george_jobs_finished_total{") && attempts_counted(&text) >= 2).then_some(text)
        })
        .await;
        let authed = http.get(format!("{}/metrics", engine.url)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(authed.status(), 200);
        let version = env!("CARGO_PKG_VERSION");
        for series in [
            format!("george_build_info{{version=\"{version}\"}} 1"),
            "george_jobs_finished_total{template=\"flaky\",chapter=\"\",outcome=\"completed\"} 1".to_string(),
            "george_job_retries_total{template=\"flaky\"} 1".to_string(),
            "george_job_duration_seconds_count{template=\"flaky\",outcome=\"completed\"} 1".to_string(),
            "george_step_duration_seconds_count{template=\"flaky\",outcome=\"completed\"} 1".to_string(),
            // The agents' report batches, by route and status (their context came with their release: no attach).
            "george_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/jobs/{id}/reports\",status=\""
                .to_string(),
        ] {
            assert!(text.contains(&series), "{series} in:\n{text}");
        }
        let applied: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix("george_source_last_applied_timestamp_seconds{source=\"folder\"} "))
            .unwrap_or_else(|| panic!("the folder's last applied revision is stamped:\n{text}"))
            .parse()
            .unwrap();
        let now = chrono::Utc::now().timestamp();
        assert!((now - 300..=now).contains(&applied), "applied at {applied}, now {now}");
        assert_eq!(attempts_counted(&text), 2, "both attempts' lives are counted:\n{text}");
        deploy_files_name_only_served_series(&text, &root);
    });
}

/// The repository's `deploy/` directory.
fn deploy() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").canonicalize().unwrap()
}

/// `promtool ARGS` in `dir`: succeeds, or the test fails with its output.
fn promtool(dir: &std::path::Path, args: &[&str]) {
    let out =
        std::process::Command::new("promtool").args(args).current_dir(dir).output().unwrap_or_else(|e| {
            panic!("promtool (Debian's package `prometheus`, installed by .ci/run) cannot run: {e}")
        });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
}

/// The alert rules check and pass their unit tests; the dashboard's
/// queries parse (as recording rules); and every `george_…` series either
/// names is one `metrics` (an engine's `/metrics` text) has.
fn deploy_files_name_only_served_series(metrics: &str, scratch: &std::path::Path) {
    let prometheus = deploy().join("prometheus");
    promtool(&prometheus, &["check", "rules", "george-alerts.yaml"]);
    promtool(&prometheus, &["test", "rules", "george-alerts.test.yaml"]);
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(deploy().join("grafana/george.json")).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let rules: Vec<serde_json::Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("george:dashboard_{i}"), "expr": e}))
        .collect();
    let file = scratch.join("dashboard-queries.yaml");
    std::fs::write(&file, serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string()).unwrap();
    promtool(scratch, &["check", "rules", "dashboard-queries.yaml"]);
    // What the engine registers (a family without samples yet is not in the text).
    let source = std::fs::read_to_string(deploy().join("../crates/george-engine/src/metrics.rs")).unwrap();
    let registered: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const ")?.split('"').nth(1))
        .filter(|n| n.starts_with("george_"))
        .collect();
    let served: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next())
        .chain(registered)
        .collect();
    assert!(served.contains("george_pool_warm") && served.contains("george_jobs_finished"), "{served:?}");
    let alerts = std::fs::read_to_string(prometheus.join("george-alerts.yaml")).unwrap();
    let named = exprs.iter().map(String::as_str).chain([alerts.as_str()]).flat_map(|text| {
        text.match_indices("george_").map(move |(i, _)| {
            let rest = &text[i..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            rest[..end].to_string()
        })
    });
    for name in named.collect::<std::collections::BTreeSet<_>>() {
        let base =
            ["_bucket", "_count", "_sum", "_total"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(served.contains(base), "{name} is not a series the engine serves ({served:?})");
    }
}

/// Issue 18's trace acceptance: with an OTLP endpoint set (OpenTelemetry's
/// own `OTEL_EXPORTER_OTLP_ENDPOINT`), an attempt is one connected trace —
/// its root `attempt`, the `spawn`, the agent's calls to the API (the agent
/// continues the `TRACEPARENT` it is given) and the proxy's `llm.call` —
/// and the provider receives the `traceparent` of that call's span. The
/// budget gauges show what the call left of the budgets it was charged to.
#[test]
fn an_attempt_is_one_connected_trace_from_spawn_through_its_llm_calls() {
    let collector = otlp::Collector::start();
    let llm = ScriptedLlm::start();
    llm.push(Reply::tool("complete_step", serde_json::json!({"summary": "said hello"}), 40, 7));
    let tmp = tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(
        &m,
        "agents/a.yaml",
        "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: a}\nspec:\n  capabilities: [shell, files]\n  resources: {tokenBudget: {perDay: 50000}}\n",
    );
    let steps = "    - id: note\n      description: note the trace\n      run: 'printf %s \"$TRACEPARENT\" > \"$GEORGE_OUTPUT_DIR/traceparent\"'\n    - id: greet\n      description: Say hello.\n";
    write(&m, "templates/greet.yaml", &template("greet", steps));
    write(&m, "jobs/j.yaml", &job("greet-1", "greet"));
    let cfg = format!(
        "{FAST_CONFIG}llm:\n  budgets: {{orgMonthly: 100000}}\n  default: {{provider: scripted, model: gpt-test}}\n  providers:\n    - {{name: scripted, api: openai, baseUrl: '{}'}}\n",
        llm.url
    );
    let engine = Engine::start_full(
        tmp.path(),
        &cfg,
        &["--manifests", m.to_str().unwrap()],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url), ("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    engine.rt().block_on(async {
        engine.wait_status("greet-1", JobStatus::Completed, Duration::from_secs(30)).await;
        let spans = eventually(Duration::from_secs(30), "the attempt's root span", async || {
            let spans = collector.spans();
            spans
                .iter()
                .any(|s| s.name == "attempt" && s.attributes.get("george.job").map(String::as_str) == Some("greet-1"))
                .then_some(spans)
        })
        .await;
        let root = spans.iter().find(|s| s.name == "attempt").unwrap();
        assert_eq!((root.service.as_str(), root.parent_span_id.as_str()), ("george", ""), "{root:?}");
        assert_eq!(root.attributes["george.attempt"], "1");
        assert!(!root.error, "a completed attempt is no error: {root:?}");
        // Spans are exported as they end: wait for the proxy's call too.
        let trace = eventually(Duration::from_secs(30), "the spans of the attempt's trace", async || {
            let trace: Vec<_> = collector.spans().into_iter().filter(|s| s.trace_id == root.trace_id).collect();
            (trace.iter().any(|s| s.name == "llm.call") && trace.iter().any(|s| s.name == "spawn")).then_some(trace)
        })
        .await;
        let names: Vec<&str> = trace.iter().map(|s| s.name.as_str()).collect();
        // Connected: every span but the root hangs off a span of this trace.
        let ids: std::collections::BTreeSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
        for s in &trace {
            assert!(
                s.span_id == root.span_id || ids.contains(s.parent_span_id.as_str()),
                "{s:?} is cut off from {names:?}"
            );
            // The root is the agent's life, from its recorded spawn; the engine's `spawn` work leads up to it.
            let starts_in = s.name == "spawn" || root.start_ns <= s.start_ns;
            assert!(starts_in && s.end_ns <= root.end_ns, "{s:?} lies outside the attempt {root:?}");
        }
        assert_eq!(trace.iter().filter(|s| s.name == "attempt").count(), 1, "{names:?}");
        let calls: Vec<&str> =
            trace.iter().filter_map(|s| s.attributes.get("http.route").map(String::as_str)).collect();
        // George's own agent had its context with its release: it never asked for it.
        assert!(!calls.contains(&"/api/v1/jobs/{id}/attach"), "no attach: {calls:?}");
        assert!(calls.iter().any(|c| c.starts_with("/api/v1/jobs/{id}/report")), "its reports are: {calls:?}");
        let call = trace.iter().find(|s| s.name == "llm.call").unwrap();
        assert_eq!(call.parent_span_id, root.span_id, "{call:?}");
        for (key, value) in [
            ("gen_ai.request.model", "gpt-test"),
            ("gen_ai.usage.input_tokens", "40"),
            ("gen_ai.usage.output_tokens", "7"),
            ("http.response.status_code", "200"),
        ] {
            assert_eq!(call.attributes.get(key).map(String::as_str), Some(value), "{key} of {call:?}");
        }
        // The agent (and what it runs) continues the trace from the root.
        let given = std::fs::read_to_string(tmp.path().join("data/outputs/greet-1/traceparent")).unwrap();
        assert_eq!(given, format!("00-{}-{}-01", root.trace_id, root.span_id));
        // The provider continues the trace from the proxy's span.
        let sent: Vec<Option<String>> = llm.received().into_iter().map(|r| r.traceparent).collect();
        assert_eq!(sent, vec![Some(format!("00-{}-{}-01", root.trace_id, call.span_id))]);
        // What the call cost is off the budgets it was charged to.
        let text = engine.metrics().await;
        for series in [
            "george_budget_limit_tokens{level=\"org\",name=\"\",period=\"month\"} 100000",
            "george_budget_remaining_tokens{level=\"org\",name=\"\",period=\"month\"} 99953",
            "george_budget_limit_tokens{level=\"agent_spec\",name=\"a\",period=\"day\"} 50000",
            "george_budget_remaining_tokens{level=\"agent_spec\",name=\"a\",period=\"day\"} 49953",
        ] {
            assert!(text.contains(series), "{series} in:\n{text}");
        }
    });
}
