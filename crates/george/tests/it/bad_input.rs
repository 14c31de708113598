//! Acceptance: bad input — malformed YAML, wrong types, unknown fields,
//! cycles, oversize payloads, invalid JSON bodies — gets a clear error,
//! leaves stored state untouched, and nothing panics.

use crate::common;

use common::*;
use george_core::api::SubmitJob;
use std::process::Command;
use std::time::Duration;

fn validate(dir: &std::path::Path, json: bool) -> std::process::Output {
    let mut c = Command::new(george_bin());
    if json {
        c.args(["-o", "json"]);
    }
    c.arg("validate").arg(dir).output().unwrap()
}

#[test]
fn validate_names_file_line_field_and_expectation() {
    let tmp = common::tempdir().unwrap();
    let m = tmp.path();
    write(m, "agents/w.yaml", AGENT);
    write(m, "templates/t.yaml", &template("t", "    - id: a\n      description: a {{who}}\n      run: echo {{who}}\n      depends_on: [b]\n    - id: b\n      description: b\n      depends_on: [a]\n"));
    write(
        m,
        "jobs/typo.yaml",
        "apiVersion: george/v1\nkind: Job\nmetadata: {name: typo}\nspec:\n  template: t\n  parms: {}\n",
    );
    write(
        m,
        "jobs/type.yaml",
        "apiVersion: george/v1\nkind: Job\nmetadata: {name: typed}\nspec:\n  template: t\n  desiredState: sleeping\n",
    );
    write(m, "jobs/yaml.yaml", "apiVersion: george/v1\nkind: Job\nmetadata: {name: [oops\n");
    write(m, "agents/dup.yaml", AGENT);
    let out = validate(m, false);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for expected in [
        "jobs/typo.yaml:6:3: spec.parms: unknown field `parms`, expected one of",
        "jobs/type.yaml:6:17: spec.desiredState: unknown variant `sleeping`",
        "jobs/yaml.yaml:3:",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }

    // Fix the per-file errors: now the cross-manifest ones show.
    std::fs::remove_file(m.join("jobs/typo.yaml")).unwrap();
    std::fs::remove_file(m.join("jobs/type.yaml")).unwrap();
    std::fs::remove_file(m.join("jobs/yaml.yaml")).unwrap();
    write(
        m,
        "jobs/j.yaml",
        "apiVersion: george/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  template: t\n  params: {who: me}\n",
    );
    let out = validate(m, true);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors: Vec<String> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}: {}: {}",
                e["file"].as_str().unwrap(),
                e["line"],
                e["field"].as_str().unwrap(),
                e["message"].as_str().unwrap()
            )
        })
        .collect();
    let all = errors.join("\n");
    assert!(
        all.contains(
            "agents/w.yaml:3: metadata.name: duplicate AgentSpec `worker`; first defined in agents/dup.yaml:1"
        ),
        "{all}"
    );
    assert!(all.contains("templates/t.yaml:9: spec.steps[0].description: unknown variable `{{who}}`"), "{all}");
    assert!(all.contains("spec.steps[0].depends_on: dependency cycle: a → b → a"), "{all}");
    assert!(all.contains("jobs/j.yaml:6: spec.params.who: unknown variable `who`"), "{all}");

    let out = validate(&repo_root().join("examples/quickstart"), false);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn bad_api_requests_are_explained_and_change_nothing() {
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "agents/w.yaml", AGENT);
    let t = "apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {name: t}\nspec:\n  variables:\n    - {name: n, type: integer}\n    - {name: mode, type: enum, values: [fast, slow]}\n  steps:\n    - id: s\n      description: s\n      run: \"true\"\n";
    write(&m, "templates/t.yaml", t);
    let engine = Engine::start(tmp.path(), "", &["--manifests", m.to_str().unwrap()]);
    engine.rt().block_on(async {
        let c = &engine.client;
        let good = SubmitJob {
            params: [("n".into(), 1.into()), ("mode".into(), "fast".into())].into(),
            ..SubmitJob::named("ok", "t")
        };
        until(Duration::from_secs(20), "the template to arrive", async || c.submit(&good).await.is_ok()).await;
        engine.wait_status("ok", george_core::JobStatus::Completed, Duration::from_secs(20)).await;
        // And its agent has exited (its attempt's end is an event too).
        until(Duration::from_secs(20), "the agent to exit", async || c.agents(false).await.unwrap().is_empty()).await;
        let before_jobs = c.jobs(&Default::default()).await.unwrap();
        let before_events = c.events(0, 100_000).await.unwrap().len();

        // No connection reuse: the server closes a connection after refusing an oversize body.
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let post = |path: &str, body: Vec<u8>, ctype: Option<&str>| {
            let mut r = http.post(format!("{}{path}", engine.url)).bearer_auth(TOKEN).body(body);
            if let Some(ct) = ctype {
                r = r.header("content-type", ct);
            }
            r.send()
        };
        let json = Some("application/json");
        // (path, body, content type, expected status, expected text in the error)
        type Case<'a> = (&'a str, Vec<u8>, Option<&'a str>, u16, &'a str);
        let cases: Vec<Case> = vec![
            ("/api/v1/jobs", b"{not json".to_vec(), json, 400, "invalid JSON body"),
            ("/api/v1/jobs", br#"{"template": "t", "colour": 1}"#.to_vec(), json, 400, "unknown field `colour`"),
            ("/api/v1/jobs", br#"{"template": 7}"#.to_vec(), json, 400, "template: invalid type"),
            (
                "/api/v1/jobs",
                br#"{"template": "t", "params": {"n": "one", "mode": "fast"}}"#.to_vec(),
                json,
                409,
                "params.n: expected an integer",
            ),
            (
                "/api/v1/jobs",
                br#"{"template": "t", "params": {"n": 1, "mode": "warp"}}"#.to_vec(),
                json,
                409,
                "expected one of [fast, slow]",
            ),
            ("/api/v1/jobs", br#"{"template": "nope"}"#.to_vec(), json, 404, "unknown TaskTemplate `nope`"),
            (
                "/api/v1/jobs",
                br#"{"template": "t", "params": {"n": 1, "mode": "fast"}, "parallelism": 0}"#.to_vec(),
                json,
                400,
                "parallelism: expected 1 or more steps at once, got 0",
            ),
            (
                "/api/v1/jobs",
                br#"{"template": "t", "id": "Bad Id!", "params": {"n": 1, "mode": "fast"}}"#.to_vec(),
                json,
                400,
                "invalid job id",
            ),
            (
                "/api/v1/jobs",
                br#"{"template": "t", "id": "ok", "params": {"n": 1, "mode": "fast"}}"#.to_vec(),
                json,
                409,
                "already exists",
            ),
            ("/api/v1/jobs", br#"{"template": "t"}"#.to_vec(), None, 415, "Content-Type: application/json"),
            ("/api/v1/jobs", vec![b' '; 2 << 20], json, 413, "byte limit"),
            ("/api/v1/events", vec![b' '; 2 << 20], json, 413, "byte limit"),
            ("/llm/v1/chat/completions", vec![b' '; 2 << 20], json, 413, "byte limit"),
            ("/api/v1/webhooks/jira", vec![b' '; 2 << 20], json, 413, "byte limit"),
            (
                "/api/v1/jobs",
                br#"{"template": "t", "params": {"n": 1, "mode": "fast"}, "env": {"A=B": "x"}}"#.to_vec(),
                json,
                400,
                "env.A=B: a variable name must not contain `=` or NUL",
            ),
            (
                "/api/v1/jobs",
                br#"{"template": "t", "params": {"n": 1, "mode": "fast"}, "env": {"": "x"}}"#.to_vec(),
                json,
                400,
                "env: a variable has an empty name",
            ),
            (
                "/api/v1/jobs",
                br#"{"template": "t", "params": {"n": 1, "mode": "fast"}, "env": {"K": "a\u0000b"}}"#.to_vec(),
                json,
                400,
                "env.K: the value must not contain NUL",
            ),
            (
                "/api/v1/jobs",
                format!(
                    r#"{{"template": "t", "params": {{"n": 1, "mode": "fast"}}, "env": {{"BIG": "{}"}}}}"#,
                    "x".repeat(40_000)
                )
                .into_bytes(),
                json,
                400,
                "env.BIG: the value is 40000 characters; at most 32768",
            ),
            ("/api/v1/jobs/ok/inject", br#"{"message": ""}"#.to_vec(), json, 400, "message must not be empty"),
            (
                "/api/v1/jobs/ok/inject",
                format!(r#"{{"message": "{}"}}"#, "x".repeat(70_000)).into_bytes(),
                json,
                400,
                "the limit is 65536",
            ),
            ("/api/v1/jobs/ok/pause", br#"{"reason": 5}"#.to_vec(), json, 400, "invalid JSON body"),
            ("/api/v1/jobs/missing/pause", vec![], None, 404, "job `missing` not found"),
            ("/api/v1/jobs/ok/resume", vec![], None, 409, "already completed"),
            ("/api/v1/jobs/ok/report", br#"{"status": "completed"}"#.to_vec(), json, 403, "for the job's agent"),
        ];
        for (path, body, ctype, status, needle) in cases {
            let r = post(path, body, ctype).await.unwrap();
            let code = r.status().as_u16();
            assert_eq!(
                r.headers().get("x-content-type-options").map(|v| v.as_bytes()),
                Some(&b"nosniff"[..]),
                "{path}"
            );
            assert_eq!(r.headers().get("cache-control").map(|v| v.as_bytes()), Some(&b"no-store"[..]), "{path}");
            let text = r.text().await.unwrap();
            assert_eq!(code, status, "{path}: {text}");
            let v: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not a JSON error: {text}"));
            let msg = format!("{} {}", v["error"]["message"], v["error"]["details"]);
            assert!(msg.contains(needle), "{path}: expected `{needle}` in {msg}");
        }
        for path in [
            "/api/v1/jobs?status=done",
            "/api/v1/agents/nonsense",
            "/api/v1/nowhere",
            "/api/v1/jobs?bogus=1",
            "/api/v1/watch",
            "/api/v1/jobs/ok/watch",
            "/api/v1/jobs?limit=-5",
        ] {
            let r = http.get(format!("{}{path}", engine.url)).bearer_auth(TOKEN).send().await.unwrap();
            assert!(r.status().is_client_error(), "{path}: {}", r.status());
            let v: serde_json::Value = r.json().await.unwrap_or_else(|e| panic!("{path}: not a JSON error: {e}"));
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}: {v}");
        }
        assert_eq!(c.jobs(&Default::default()).await.unwrap(), before_jobs, "bad requests changed jobs");
        assert_eq!(c.events(0, 100_000).await.unwrap().len(), before_events, "bad requests wrote events");
        assert!(
            http.get(format!("{}/healthz", engine.url)).send().await.unwrap().status().is_success(),
            "the engine survived"
        );
    });
}

#[test]
fn a_bad_config_file_is_located() {
    let tmp = common::tempdir().unwrap();
    let cfg = tmp.path().join("george-config.yaml");
    let serve = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        let out =
            Command::new(george_bin()).args(["serve", "--config"]).arg(&cfg).arg("--data-dir").arg(tmp.path()).output();
        let out = out.unwrap();
        assert!(!out.status.success());
        stderr(&out)
    };
    let err = serve("engine:\n  reconcileInterval: 30s\nagents:\n  healthCheck:\n    interval: often\n");
    assert!(err.contains("george-config.yaml:5:15: agents.healthCheck.interval: invalid duration `often`"), "{err}");

    // The sandbox's uid range is checked at start, naming the field.
    let err = serve("agents:\n  sandbox:\n    uidBase: 5\n");
    assert!(err.contains("agents.sandbox.uidBase: expected 1000 or more"), "{err}");

    // An AgentSpec's network policy is one of three words.
    let m = tmp.path().join("manifests");
    write(&m, "agents/w.yaml", &AGENT.replace("spec:\n", "spec:\n  network: offline\n"));
    let out = validate(&m, false);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("agents/w.yaml") && err.contains("network") && err.contains("engine-only"), "{err}");
}

/// 1,100 idle connections (more than the common default of 1,024 file
/// descriptors) do not keep `/healthz` from answering at once.
#[test]
fn idle_connections_do_not_starve_the_api() {
    let tmp = common::tempdir().unwrap();
    let engine = Engine::start(tmp.path(), "", &[]);
    let addr = format!("127.0.0.1:{}", engine.port);
    let idle: Vec<std::net::TcpStream> = (0..1100)
        .map(|i| std::net::TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    engine.rt().block_on(async {
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let r = http.get(format!("{}/healthz", engine.url)).timeout(Duration::from_secs(10)).send().await.unwrap();
            assert!(r.status().is_success());
            best = best.min(t.elapsed());
        }
        assert!(best < Duration::from_millis(100), "with 1,100 idle connections /healthz took {best:?}");
    });
    drop(idle);

    // The data directory is the engine's; the store too.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let data = tmp.path().join("data");
    let expected = if nix::unistd::geteuid().is_root() { 0o711 } else { 0o700 };
    assert_eq!(mode(&data), expected, "the data directory");
    assert_eq!(mode(&data.join("george.db")), 0o600, "the store");

    // And the operator sees the isolation agents actually get.
    let out = engine.cli(&["audit-security"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains("sandbox            on") && text.contains("landlock ABI"), "{text}");
    let abi: i32 = text.lines().find_map(|l| l.strip_prefix("landlock ABI")).unwrap().trim().parse().unwrap();
    assert_eq!(abi > 0, text.contains("filesystem rules   yes"), "{text}");
}
