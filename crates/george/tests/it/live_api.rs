//! Acceptance (issue 8): the live API and the operator's controls.
//! - every endpoint's real responses validate against the generated OpenAPI
//!   3.1 document, and every documented operation is exercised;
//! - a viewer token gets 403 on every mutating endpoint and changes nothing;
//!   the audit log names the token's subject for every change;
//! - a watch WebSocket cut mid-stream resumes from the last sequence number
//!   with no event missed or repeated, also after its reader stalled;
//! - manual override retries a blocked job with its step skipped; the CLI
//!   follows it live with `george jobs watch`.

use crate::common;

use common::openapi::Conformance;
use common::*;
use futures_util::StreamExt;
use george_core::api::EventView;
use george_core::JobStatus;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const VIEWER: &str = "viewer-token-0123456789abcdef";
const OPERATOR: &str = "operator-token-0123456789abcdef";
const WEBHOOK_SECRET: &str = "webhook-signing-key-0123456789";

fn setup(tmp: &std::path::Path) -> Engine {
    let m = tmp.join("manifests");
    write(
        &m,
        "chapters/core.yaml",
        "apiVersion: george/v1\nkind: Chapter\nmetadata: {name: core}\nspec:\n  tokenBudget: 100000\n",
    );
    write(&m, "agents/worker.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: worker, chapter: core}\nspec:\n  capabilities: [shell]\n  triggers:\n    - {type: summon, template: quick, priority: P1}\n");
    write(&m, "templates/long.yaml", &template("long", RELEASE_STEPS));
    write(
        &m,
        "templates/quick.yaml",
        &template("quick", "    - id: say\n      description: say hi\n      run: echo hi from $GEORGE_JOB_ID\n"),
    );
    write(
        &m,
        "templates/plan.yaml",
        &template(
            "plan",
            "    - id: think\n      description: Decide what the ticket really asks for.\n    - id: write\n      description: write\n      depends_on: [think]\n      run: echo planned > \"$GEORGE_OUTPUT_DIR/plan\"\n",
        ),
    );
    write(&m, "triggers/nightly.yaml", "apiVersion: george/v1\nkind: Trigger\nmetadata: {name: nightly}\nspec:\n  type: cron\n  schedule: 0 2 * * *\n  template: quick\n  agent: worker\n");
    let secrets = tmp.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("webhook"), WEBHOOK_SECRET).unwrap();
    let cfg = format!("secrets:\n  dir: {}\nwebhooks:\n  secret: webhook\n", secrets.display());
    let tokens = format!("test:{TOKEN},vera:viewer:{VIEWER},otto:operator:{OPERATOR}");
    Engine::start_with_env(tmp, &cfg, &["--manifests", m.to_str().unwrap()], &[("GEORGE_API_TOKENS", &tokens)])
}

async fn wait_catalog(engine: &Engine) {
    engine.wait_applied().await
}

fn submit(id: &str, template: &str) -> Value {
    json!({"template": template, "id": id})
}

async fn ws_status(base: &str, path: &str, token: &str) -> u16 {
    let url = format!("{}{path}", base.replacen("http", "ws", 1));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut s, resp)) => {
            let _ = s.close(None).await;
            resp.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("websocket {path}: {e}"),
    }
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn every_endpoint_answers_as_the_openapi_document_says() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    engine.rt().block_on(async {
        wait_catalog(&engine).await;
        let mut c = Conformance::new(&engine.url).await;
        let admin = Some(TOKEN);
        let op = Some(OPERATOR);
        let viewer = Some(VIEWER);

        assert_eq!(c.call("get", "/healthz", "/healthz", None, None).await.status, 200);
        assert_eq!(c.call("get", "/readyz", "/readyz", None, None).await.status, 200);
        assert_eq!(c.call("get", "/metrics", "/metrics", viewer, None).await.status, 200);
        assert_eq!(c.call("get", "/api/v1/openapi.json", "/api/v1/openapi.json", None, None).await.status, 200);
        let me = c.call("get", "/api/v1/whoami", "/api/v1/whoami", viewer, None).await;
        assert_eq!(me.body, json!({"subject": "vera", "role": "viewer"}));
        assert_eq!(
            c.call("get", "/api/v1/whoami", "/api/v1/whoami", Some("wrong-token-xxxxxxxx"), None).await.status,
            401
        );

        // Tokens: mint, use, list, revoke.
        let minted = c
            .call(
                "post",
                "/api/v1/tokens",
                "/api/v1/tokens",
                admin,
                Some(json!({"subject": "ci-bot", "role": "operator"})),
            )
            .await;
        assert_eq!(minted.status, 201, "{}", minted.text);
        let bot = minted.body["token"].as_str().unwrap().to_string();
        let me = c.call("get", "/api/v1/whoami", "/api/v1/whoami", Some(&bot), None).await;
        assert_eq!(me.body, json!({"subject": "ci-bot", "role": "operator"}));
        let list = c.call("get", "/api/v1/tokens", "/api/v1/tokens", admin, None).await;
        assert!(list.text.contains("ci-bot") && !list.text.contains(&bot), "{}", list.text);
        assert_eq!(
            c.call("delete", "/api/v1/tokens/{subject}", "/api/v1/tokens/ci-bot", admin, None).await.status,
            204
        );
        assert_eq!(c.call("get", "/api/v1/whoami", "/api/v1/whoami", Some(&bot), None).await.status, 401);
        assert_eq!(
            c.call("delete", "/api/v1/tokens/{subject}", "/api/v1/tokens/ci-bot", admin, None).await.status,
            404
        );

        // Jobs.
        for (id, t) in [("l", "long"), ("q", "quick"), ("t", "plan")] {
            let r = c.call("post", "/api/v1/jobs", "/api/v1/jobs", op, Some(submit(id, t))).await;
            assert_eq!(r.status, 201, "{}", r.text);
        }
        assert_eq!(c.call("post", "/api/v1/jobs", "/api/v1/jobs", op, Some(json!({"template": 7}))).await.status, 400);
        engine.wait_status("q", JobStatus::Completed, Duration::from_secs(30)).await;
        engine.wait_status("t", JobStatus::Blocked, Duration::from_secs(30)).await;

        // The agent's side, with the running agent's own token.
        engine
            .wait_job("l", "its agent to run", Duration::from_secs(20), |j| {
                j.steps[0].status.to_string() == "in_progress"
            })
            .await;
        let agent = agent_token(&engine, "l");
        let a = Some(agent.as_str());
        let ctx = c.call("get", "/api/v1/jobs/{id}/context", "/api/v1/jobs/l/context", a, None).await;
        assert_eq!(ctx.status, 200, "{}", ctx.text);
        let attached = c.call("post", "/api/v1/jobs/{id}/attach", "/api/v1/jobs/l/attach", a, None).await;
        assert_eq!((attached.status, &attached.body["attempt"]), (200, &json!(1)), "{}", attached.text);
        let batch = json!({"reports": [
            {"type": "step", "step": "wait", "status": "in_progress"},
            {"type": "evidence", "step_id": "wait", "kind": "note", "content": "batched"},
        ]});
        let r = c.call("post", "/api/v1/jobs/{id}/reports", "/api/v1/jobs/l/reports", a, Some(batch)).await;
        assert_eq!(r.status, 204, "{}", r.text);
        // A numbered batch sent twice (its answer lost) is applied once.
        let numbered = json!({"seq": 1_000_000, "reports": [
            {"type": "evidence", "step_id": "wait", "kind": "note", "content": "sent twice"},
        ]});
        for _ in 0..2 {
            let r =
                c.call("post", "/api/v1/jobs/{id}/reports", "/api/v1/jobs/l/reports", a, Some(numbered.clone())).await;
            assert_eq!(r.status, 204, "{}", r.text);
        }
        let twice = engine.client.evidence("l").await.unwrap();
        assert_eq!(twice.iter().filter(|e| e.content == "sent twice").count(), 1, "applied once");
        // A bad item refuses the batch, naming the item; nothing of it is stored.
        let bad = json!({"reports": [
            {"type": "comment", "body": "not stored"},
            {"type": "evidence", "kind": "", "content": "x"},
        ]});
        let r = c.call("post", "/api/v1/jobs/{id}/reports", "/api/v1/jobs/l/reports", a, Some(bad)).await;
        assert_eq!((r.status, r.body["error"]["field"].as_str()), (400, Some("reports[1].kind")), "{}", r.text);
        assert!(!engine.client.comments("l").await.unwrap().iter().any(|c| c.body == "not stored"));
        assert_eq!(c.call("get", "/api/v1/jobs/{id}", "/api/v1/jobs/l", a, None).await.status, 200);
        assert_eq!(c.call("get", "/api/v1/whoami", "/api/v1/whoami", a, None).await.body["subject"], "l-1");
        assert_eq!(
            c.call("post", "/api/v1/jobs/{id}/heartbeat", "/api/v1/jobs/l/heartbeat", a, None).await.status,
            204
        );
        // Its AgentSpec has no `spawn` capability: no children.
        let child = json!({"key": "k", "template": "quick"});
        let r = c.call("post", "/api/v1/jobs/{id}/children", "/api/v1/jobs/l/children", a, Some(child)).await;
        assert_eq!(r.status, 403, "{}", r.text);
        let r = c.call("get", "/api/v1/jobs/{id}/children", "/api/v1/jobs/l/children", a, None).await;
        assert_eq!((r.status, r.body.clone()), (200, json!([])), "{}", r.text);
        let r = c
            .call(
                "post",
                "/api/v1/jobs/{id}/comments",
                "/api/v1/jobs/l/comments",
                a,
                Some(json!({"body": "working on it"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = c
            .call(
                "post",
                "/api/v1/jobs/{id}/evidence",
                "/api/v1/jobs/l/evidence",
                a,
                Some(json!({"step_id": "wait", "kind": "note", "content": "still waiting"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = c
            .call(
                "post",
                "/api/v1/jobs/{id}/steps/{step}",
                "/api/v1/jobs/l/steps/wait",
                a,
                Some(json!({"status": "in_progress"})),
            )
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        c.record(
            "get",
            "/api/v1/jobs/{id}/watch",
            ws_status(&engine.url, "/api/v1/jobs/l/watch?since=0", &agent).await,
        );
        let r = c
            .call(
                "post",
                "/llm/v1/chat/completions",
                "/llm/v1/chat/completions",
                a,
                Some(json!({"model": "m", "messages": []})),
            )
            .await;
        assert!(r.status >= 400, "no provider is configured: {}", r.text);
        let r = c
            .call("post", "/llm/v1/messages", "/llm/v1/messages", op, Some(json!({"model": "m", "messages": []})))
            .await;
        assert_eq!(r.status, 403, "{}", r.text);
        let r = c
            .call("post", "/api/v1/jobs/{id}/report", "/api/v1/jobs/l/report", a, Some(json!({"status": "completed"})))
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        engine.wait_status("l", JobStatus::Completed, Duration::from_secs(20)).await;

        // Reading.
        assert_eq!(
            c.call("get", "/api/v1/jobs", "/api/v1/jobs?status=completed,blocked&limit=10", viewer, None).await.status,
            200
        );
        assert_eq!(c.call("get", "/api/v1/jobs", "/api/v1/jobs?status=done", viewer, None).await.status, 400);
        assert_eq!(c.call("get", "/api/v1/jobs/{id}", "/api/v1/jobs/q", viewer, None).await.status, 200);
        assert_eq!(c.call("get", "/api/v1/jobs/{id}", "/api/v1/jobs/nope", viewer, None).await.status, 404);
        assert_eq!(
            c.call("get", "/api/v1/jobs/{id}/comments", "/api/v1/jobs/l/comments", viewer, None).await.status,
            200
        );
        assert_eq!(
            c.call("get", "/api/v1/jobs/{id}/evidence", "/api/v1/jobs/q/evidence", viewer, None).await.status,
            200
        );
        assert_eq!(c.call("get", "/api/v1/events", "/api/v1/events?since=0&limit=50", viewer, None).await.status, 200);
        assert_eq!(c.call("get", "/api/v1/agents", "/api/v1/agents?all=true", viewer, None).await.status, 200);
        assert_eq!(c.call("get", "/api/v1/agents/{id}", "/api/v1/agents/q-1", viewer, None).await.status, 200);
        let log = c.call("get", "/api/v1/agents/{id}/logs", "/api/v1/agents/q-1/logs?follow=false", viewer, None).await;
        assert!(log.text.contains("hi from q"), "{}", log.text);
        assert_eq!(
            c.call("get", "/api/v1/registry", "/api/v1/registry?capability=shell", viewer, None).await.status,
            200
        );
        let triggers = c.call("get", "/api/v1/triggers", "/api/v1/triggers", viewer, None).await;
        assert!(triggers.body[0]["next_fire"].is_string(), "{}", triggers.text);
        assert_eq!(c.call("get", "/api/v1/status", "/api/v1/status", viewer, None).await.status, 200);
        assert_eq!(c.call("get", "/api/v1/diagnose", "/api/v1/diagnose", viewer, None).await.status, 200);
        assert_eq!(c.call("get", "/api/v1/sources", "/api/v1/sources", viewer, None).await.status, 200);
        assert_eq!(c.call("get", "/api/v1/ledger", "/api/v1/ledger", viewer, None).await.status, 200);
        assert_eq!(c.call("get", "/api/v1/budget", "/api/v1/budget?period=day", viewer, None).await.status, 200);
        assert_eq!(c.call("get", "/api/v1/audit", "/api/v1/audit?limit=5", viewer, None).await.status, 200);
        c.record("get", "/api/v1/watch", ws_status(&engine.url, "/api/v1/watch?since=0", VIEWER).await);
        // Not an upgrade: the documented JSON error, not the framework's plain text.
        for (template, path) in
            [("/api/v1/watch", "/api/v1/watch?since=0"), ("/api/v1/jobs/{id}/watch", "/api/v1/jobs/q/watch")]
        {
            let r = c.call("get", template, path, viewer, None).await;
            assert_eq!((r.status, r.body["error"]["code"].as_str()), (426, Some("upgrade_required")), "{}", r.text);
            assert!(r.body["error"]["message"].as_str().unwrap_or_default().contains("WebSocket"), "{}", r.text);
        }
        // A method an endpoint does not take: the JSON error, and `Allow`.
        let r =
            reqwest::Client::new().put(format!("{}/api/v1/jobs", engine.url)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()["allow"], "GET,HEAD,POST");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("PUT is not allowed here"), "{body}");
        // A negative count is outside the documented range, and refused with a JSON error.
        let r = c.call("get", "/api/v1/agents", "/api/v1/agents?limit=-1", viewer, None).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (400, Some("invalid")), "{}", r.text);
        let doc: Value =
            reqwest::get(format!("{}/api/v1/openapi.json", engine.url)).await.unwrap().json().await.unwrap();
        let limit = &doc["paths"]["/api/v1/agents"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap()["schema"];
        assert_eq!((limit["minimum"].as_u64(), limit["maximum"].as_u64()), (Some(0), Some(u64::from(u32::MAX))));
        // What the server takes is what the document says: enums, sequence ranges, patterns.
        let param = |path: &str, name: &str| {
            doc["paths"][path]["get"]["parameters"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()
                ["schema"]
                .clone()
        };
        assert_eq!(param("/api/v1/budget", "period")["enum"], json!(["month", "day"]));
        assert_eq!(param("/api/v1/jobs", "order")["enum"], json!(["oldest", "newest"]));
        assert_eq!(param("/api/v1/events", "since")["maximum"].as_i64(), Some(i64::MAX));
        assert_eq!(param("/api/v1/ledger", "since")["format"], "date-time");
        let r = c.call("get", "/api/v1/budget", "/api/v1/budget?period=", viewer, None).await;
        assert_eq!(r.status, 400, "outside the enum: {}", r.text);
        let r = c.call("get", "/api/v1/jobs", "/api/v1/jobs?status=completed,,failed", viewer, None).await;
        assert_eq!(r.status, 200, "the documented status pattern allows empty items: {}", r.text);
        // A body is a JSON object: an array (which serde would take for a struct) is refused.
        let r = c.call("post", "/api/v1/jobs/{id}/inject", "/api/v1/jobs/t/inject", op, Some(json!(["go on"]))).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (400, Some("invalid")), "{}", r.text);

        // Steering.
        let r = c
            .call("post", "/api/v1/jobs/{id}/inject", "/api/v1/jobs/t/inject", op, Some(json!({"message": "go on"})))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let body = json!({"status": "skipped", "step": "think", "reason": "decided by hand"});
        let r = c.call("post", "/api/v1/jobs/{id}/override", "/api/v1/jobs/t/override", op, Some(body)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let body = json!({"status": "paused", "reason": "not a thing"});
        assert_eq!(
            c.call("post", "/api/v1/jobs/{id}/override", "/api/v1/jobs/t/override", op, Some(body)).await.status,
            400
        );
        // Retry: refused for a job still running (l2 is not failed); a new job by resubmit.
        let r = c.call("post", "/api/v1/jobs/{id}/retry", "/api/v1/jobs/l/retry", op, Some(json!({}))).await;
        assert_eq!(r.status, 409, "{}", r.text);
        let r = c
            .call("post", "/api/v1/jobs/{id}/resubmit", "/api/v1/jobs/q/resubmit", op, Some(json!({"id": "q-again"})))
            .await;
        assert_eq!((r.status, r.body["template"].as_str()), (201, Some("quick")), "{}", r.text);
        let r = c.call("post", "/api/v1/jobs/{id}/resubmit", "/api/v1/jobs/nope/resubmit", op, None).await;
        assert_eq!(r.status, 404, "{}", r.text);
        c.call("post", "/api/v1/jobs", "/api/v1/jobs", op, Some(submit("l2", "long"))).await;
        for action in ["pause", "resume", "approve"] {
            let path = format!("/api/v1/jobs/l2/{action}");
            let template = format!("/api/v1/jobs/{{id}}/{action}");
            let r = c.call("post", &template, &path, op, Some(json!({"reason": "checking"}))).await;
            assert_eq!(r.status, 200, "{action}: {}", r.text);
        }
        // The agent of the attempt after the resume, live and not being stopped.
        let attempt = eventually(Duration::from_secs(20), "l2's new agent to be active", async || {
            let j = engine.client.job("l2").await.ok()?;
            let a = engine.client.agent(&format!("l2-{}", j.attempt)).await.ok()?;
            (j.status == JobStatus::InProgress && a.state == george_core::AgentState::Active).then_some(j.attempt)
        })
        .await;
        agent_token(&engine, "l2");
        let halt = format!("/api/v1/agents/l2-{attempt}/halt");
        let r = c.call("post", "/api/v1/agents/{id}/halt", &halt, op, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(c.call("post", "/api/v1/jobs/{id}/abort", "/api/v1/jobs/l2/abort", op, None).await.status, 200);
        let r = c.call("post", "/api/v1/registry/{agent}/dismiss", "/api/v1/registry/worker/dismiss", op, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = c.call("post", "/api/v1/summon", "/api/v1/summon", op, Some(json!({"agent": "worker"}))).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = c.call("post", "/api/v1/triggers/{name}/fire", "/api/v1/triggers/nightly/fire", op, None).await;
        assert_eq!(r.status, 201, "{}", r.text);
        let body = Some(json!({"reason": "maintenance"}));
        let r = c.call("post", "/api/v1/triggers/{name}/suspend", "/api/v1/triggers/nightly/suspend", op, body).await;
        assert!(r.status == 200 && r.body["suspended"]["reason"] == "maintenance", "{}", r.text);
        let r = c.call("get", "/api/v1/triggers/{name}", "/api/v1/triggers/nightly", viewer, None).await;
        assert!(r.status == 200 && r.body["history"][0]["kind"] == "trigger.suspended", "{}", r.text);
        let r = c.call("post", "/api/v1/triggers/{name}/resume", "/api/v1/triggers/nightly/resume", op, None).await;
        assert!(r.status == 200 && r.body.get("suspended").is_none(), "{}", r.text);
        let r = c.call("post", "/api/v1/sync", "/api/v1/sync", op, None).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let r = c
            .call(
                "post",
                "/api/v1/chapters/{chapter}/throttle",
                "/api/v1/chapters/core/throttle",
                admin,
                Some(json!({"tokens_per_hour": 500})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);

        // Retention by hand: a dry run deletes nothing; a job that has not
        // ended is refused; a finished one goes with its events, after which
        // resuming the whole log from before them is answered `resync`.
        let r = c.call("post", "/api/v1/gc", "/api/v1/gc?dryRun=true", admin, None).await;
        assert_eq!((r.status, &r.body["dryRun"]), (200, &json!(true)), "{}", r.text);
        c.call("post", "/api/v1/jobs", "/api/v1/jobs", op, Some(submit("l3", "long"))).await;
        assert_eq!(c.call("delete", "/api/v1/jobs/{id}", "/api/v1/jobs/l3", admin, None).await.status, 409);
        eventually(Duration::from_secs(20), "q's agent to be gone", async || {
            let a = engine.client.agent("q-1").await.ok()?;
            (!a.state.is_live()).then_some(())
        })
        .await;
        let r = c.call("delete", "/api/v1/jobs/{id}", "/api/v1/jobs/q", admin, None).await;
        assert_eq!((r.status, &r.body["jobs"]), (200, &json!(["q"])), "{}", r.text);
        assert_eq!(c.call("get", "/api/v1/jobs/{id}", "/api/v1/jobs/q", viewer, None).await.status, 404);
        assert_eq!(ws_status(&engine.url, "/api/v1/watch?since=1", VIEWER).await, 410);
        let err = engine.client.get_json_query("/api/v1/events", &[("since".into(), "1".into())]).await.unwrap_err();
        assert!(err.to_string().contains("resync"), "{err}");

        // Webhooks: signed, and Jira's (not configured here).
        let event = serde_json::to_vec(&json!({"source": "ops", "event": "ping"})).unwrap();
        let sig = sign(&event);
        let r = c
            .call_with(
                "post",
                "/api/v1/events",
                "/api/v1/events",
                None,
                Some(serde_json::from_slice(&event).unwrap()),
                &[("x-george-signature", sig)],
            )
            .await;
        assert_eq!(r.status, 202, "{}", r.text);
        let r = c.call("post", "/api/v1/webhooks/jira", "/api/v1/webhooks/jira", None, Some(json!({}))).await;
        assert!(r.status >= 400, "{}", r.text);
        let r = c.call("post", "/api/v1/slack/events", "/api/v1/slack/events", None, Some(json!({}))).await;
        assert_eq!(r.status, 401, "no Slack signing secret here: {}", r.text);
        let r = c.call("post", "/api/v1/slack/commands", "/api/v1/slack/commands", None, Some(json!({}))).await;
        assert_eq!(r.status, 401, "no Slack signing secret here: {}", r.text);
        let r = c.call("post", "/api/v1/webhooks/github", "/api/v1/webhooks/github", None, Some(json!({}))).await;
        assert_eq!(r.status, 401, "no GitHub webhook key here: {}", r.text);

        let missing: Vec<_> = c.operations().difference(&c.seen).cloned().collect();
        assert!(missing.is_empty(), "operations never exercised: {missing:?}");
        assert!(c.checked >= 55, "{} responses checked", c.checked);
    });
}

/// A body each mutating operation accepts, so a refusal can only be the role's.
fn valid_body(op: &str) -> Option<Value> {
    Some(match op {
        "post /api/v1/jobs" => submit("viewer-job", "quick"),
        "post /api/v1/jobs/{id}/override" => json!({"status": "completed", "reason": "x"}),
        "post /api/v1/jobs/{id}/inject" => json!({"message": "hello"}),
        "post /api/v1/jobs/{id}/comments" => json!({"body": "hello"}),
        "post /api/v1/jobs/{id}/children" => json!({"key": "k", "template": "quick"}),
        "post /api/v1/jobs/{id}/evidence" => json!({"kind": "note", "content": "x"}),
        "post /api/v1/jobs/{id}/steps/{step}" => json!({"status": "in_progress"}),
        "post /api/v1/jobs/{id}/report" => json!({"status": "completed"}),
        "post /api/v1/jobs/{id}/reports" => json!({"reports": []}),
        "post /api/v1/jobs/{id}/retry" => json!({"from_scratch": false}),
        "post /api/v1/jobs/{id}/resubmit" => json!({"id": "viewer-copy"}),
        "post /api/v1/summon" => json!({"agent": "worker"}),
        "post /api/v1/tokens" => json!({"subject": "sneaky", "role": "admin"}),
        "post /api/v1/chapters/{chapter}/throttle" => json!({"tokens_per_hour": 1}),
        "post /llm/v1/chat/completions" | "post /llm/v1/messages" => json!({"model": "m", "messages": []}),
        _ => return None,
    })
}

fn concrete(template: &str) -> String {
    template
        .replace("{id}", "held")
        .replace("{step}", "wait")
        .replace("{subject}", "test")
        .replace("{agent}", "worker")
        .replace("{chapter}", "core")
        .replace("{name}", "nightly")
}

#[test]
fn a_viewer_is_refused_every_change_and_the_audit_log_names_who_did_what() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    engine.rt().block_on(async {
        wait_catalog(&engine).await;
        let mut c = Conformance::new(&engine.url).await;
        let r = c.call("post", "/api/v1/jobs", "/api/v1/jobs", Some(OPERATOR), Some(submit("held", "long"))).await;
        assert_eq!(r.status, 201);
        engine
            .wait_job("held", "a running agent", Duration::from_secs(20), |j| j.status == JobStatus::InProgress)
            .await;

        let jobs_before = engine.client.jobs(&Default::default()).await.unwrap();
        let seq_before = engine.client.events(0, 5000).await.unwrap().last().unwrap().seq;
        let mutating: Vec<String> =
            c.operations().into_iter().filter(|op| !op.starts_with("get ") && c.auth(op) != "signature").collect();
        assert!(mutating.len() >= 20, "{mutating:?}");
        for op in &mutating {
            let (method, template) = op.split_once(' ').unwrap();
            let r = c.call(method, template, &concrete(template), Some(VIEWER), valid_body(op)).await;
            assert_eq!(r.status, 403, "{op} with a viewer token: {}", r.text);
            assert!(r.body["error"]["message"].is_string());
            if c.auth(op) == "admin" {
                let r = c.call(method, template, &concrete(template), Some(OPERATOR), valid_body(op)).await;
                assert_eq!(r.status, 403, "{op} with an operator token: {}", r.text);
            }
        }
        // Reading the token list is an admin's matter too.
        assert_eq!(c.call("get", "/api/v1/tokens", "/api/v1/tokens", Some(OPERATOR), None).await.status, 403);
        let jobs_after = engine.client.jobs(&Default::default()).await.unwrap();
        let ids = |v: &Vec<george_core::api::JobView>| {
            v.iter().map(|j| (j.id.clone(), j.desired, j.status)).collect::<Vec<_>>()
        };
        assert_eq!(ids(&jobs_before), ids(&jobs_after), "a refused call changed nothing");
        let new_events = engine.client.events(seq_before, 5000).await.unwrap();
        assert!(
            new_events.iter().all(|e| !e.actor.starts_with("operator:vera")),
            "nothing was recorded for vera: {new_events:?}"
        );

        // Every change an operator makes is in the audit log, under the token's subject.
        let changes = [
            ("post", "/api/v1/jobs/held/inject", OPERATOR, Some(json!({"message": "hi"}))),
            ("post", "/api/v1/jobs/held/pause", OPERATOR, None),
            ("post", "/api/v1/jobs/held/resume", OPERATOR, None),
            ("post", "/api/v1/jobs/held/override", OPERATOR, Some(json!({"status": "failed", "reason": "test"}))),
            ("post", "/api/v1/jobs/held/override", OPERATOR, Some(json!({"status": "pending", "reason": "retry"}))),
            ("post", "/api/v1/jobs/held/abort", OPERATOR, None),
            ("post", "/api/v1/chapters/core/throttle", TOKEN, Some(json!({"tokens_per_hour": 10}))),
            ("post", "/api/v1/tokens", TOKEN, Some(json!({"subject": "temp", "role": "viewer"}))),
            ("delete", "/api/v1/tokens/temp", TOKEN, None),
        ];
        let audit_before = engine.client.events(0, 5000).await.unwrap().last().unwrap().seq;
        let template = |p: &str| -> String {
            let parts: Vec<&str> = p.split('/').collect();
            match parts.as_slice() {
                ["", "api", "v1", "jobs", _, action] => format!("/api/v1/jobs/{{id}}/{action}"),
                ["", "api", "v1", "chapters", _, "throttle"] => "/api/v1/chapters/{chapter}/throttle".into(),
                ["", "api", "v1", "tokens", _] => "/api/v1/tokens/{subject}".into(),
                _ => p.to_string(),
            }
        };
        for (method, path, token, body) in &changes {
            let r = c.call(method, &template(path), path, Some(token), body.clone()).await;
            assert!(r.status < 300, "{method} {path}: {}", r.text);
        }
        let audit =
            c.call("get", "/api/v1/audit", &format!("/api/v1/audit?since={audit_before}"), Some(VIEWER), None).await;
        let got: Vec<(String, String, String)> = audit
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["actor"].as_str().unwrap().to_string(),
                    e["data"]["method"].as_str().unwrap().to_lowercase(),
                    e["data"]["path"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let want: Vec<(String, String, String)> = changes
            .iter()
            .map(|(m, p, t, _)| {
                let who = if *t == TOKEN { "operator:test" } else { "operator:otto" };
                (who.to_string(), m.to_string(), p.to_string())
            })
            .collect();
        assert_eq!(got, want);
        // The domain events name the subject too.
        let events = engine.client.events(audit_before, 5000).await.unwrap();
        let override_event = events.iter().find(|e| e.kind == "job.status" && e.data["override"] == true).unwrap();
        assert_eq!(override_event.actor, "operator:otto");
        assert_eq!(override_event.data["reason"], "set by operator:otto: test");
    });
}

async fn read_events(stream: &mut george_client::Watch, n: usize) -> Vec<EventView> {
    let mut out = Vec::new();
    while out.len() < n {
        let e = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("an event within 20s")
            .unwrap()
            .expect("the stream stays open");
        out.push(e);
    }
    out
}

#[test]
fn a_watch_resumes_without_gaps_or_repeats() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    engine.rt().block_on(async {
        wait_catalog(&engine).await;
        let c = &engine.client;
        let viewer = george_client::Client::new(&engine.url, VIEWER).unwrap();
        let inject = |i: usize| {
            let c = c.clone();
            async move {
                c.inject("w", &format!("message {i}")).await.unwrap();
            }
        };
        c.submit(&serde_json::from_value(submit("w", "long")).unwrap()).await.unwrap();
        for i in 0..20 {
            inject(i).await;
        }

        // Read part of the log, then cut the connection mid-stream.
        let mut first = viewer.watch(None, Some(0)).await.unwrap();
        let mut got = read_events(&mut first, 15).await;
        drop(first);
        for i in 20..40 {
            inject(i).await;
        }
        // Resume from the last sequence number seen.
        let last = got.last().unwrap().seq;
        let mut second = viewer.watch(None, Some(last)).await.unwrap();
        let end = c.events(0, 5000).await.unwrap().last().unwrap().seq;
        while got.last().unwrap().seq < end {
            got.extend(read_events(&mut second, 1).await);
        }

        // Readers that stall while thousands of events happen (more than the
        // engine's broadcast buffer) slow nothing down and still miss nothing.
        let mut stalled = viewer.watch(None, None).await.unwrap();
        let mut job_stream = viewer.watch(Some("w"), Some(0)).await.unwrap();
        let before = std::time::Instant::now();
        futures_util::stream::iter(40..2600).for_each_concurrent(16, inject).await;
        let burst = before.elapsed();
        let mut all = Vec::new();
        let mut since = 0;
        loop {
            let page = c.events(since, 5000).await.unwrap();
            let Some(l) = page.last() else { break };
            since = l.seq;
            all.extend(page);
        }
        let want: Vec<i64> = all.iter().map(|e| e.seq).collect();
        got.extend(read_events(&mut second, all.len() - got.len()).await);
        let seqs: Vec<i64> = got.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, want, "resumed stream: every event once, in order");
        assert_eq!(got, all, "the streamed events are the stored ones");

        let mut from_stalled: Vec<EventView> = Vec::new();
        while from_stalled.last().map(|e| e.seq) != Some(since) {
            from_stalled.extend(read_events(&mut stalled, 1).await);
        }
        let stalled_seqs: Vec<i64> = from_stalled.iter().map(|e| e.seq).collect();
        let expected: Vec<i64> = want.iter().copied().filter(|s| *s >= stalled_seqs[0]).collect();
        assert_eq!(stalled_seqs, expected, "the stalled reader got every event once, in order");
        assert!(stalled_seqs.len() > 4096, "more events than the broadcast buffer: {}", stalled_seqs.len());

        // The job's own stream: only its events, all of them.
        let job_events: Vec<i64> = all.iter().filter(|e| e.job_id.as_deref() == Some("w")).map(|e| e.seq).collect();
        let got_job: Vec<i64> = read_events(&mut job_stream, job_events.len()).await.iter().map(|e| e.seq).collect();
        assert_eq!(got_job, job_events);
        eprintln!("burst of 2560 injects took {burst:?} with a stalled watcher");
    });
}

#[test]
fn override_retries_a_blocked_job_and_the_cli_follows_it() {
    let tmp = common::tempdir().unwrap();
    let engine = setup(tmp.path());
    engine.rt().block_on(async {
        wait_catalog(&engine).await;
        let c = &engine.client;
        c.submit(&serde_json::from_value(submit("p", "plan")).unwrap()).await.unwrap();
        let blocked = engine.wait_status("p", JobStatus::Blocked, Duration::from_secs(30)).await;
        assert!(blocked.reason.unwrap().contains("capability missing: llm"));
    });
    // `george jobs watch` follows the job live while an operator steps in.
    let mut watch = std::process::Command::new(george_bin())
        .args(["--server", &engine.url, "--token", VIEWER, "jobs", "watch", "p"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = engine.cli(&[
        "--token",
        OPERATOR,
        "jobs",
        "override",
        "p",
        "--step",
        "think",
        "--status",
        "skipped",
        "--reason",
        "a human decided",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = engine.cli(&[
        "--token",
        OPERATOR,
        "-o",
        "yaml",
        "jobs",
        "override",
        "p",
        "--status",
        "pending",
        "--reason",
        "retry without the LLM step",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let yaml = stdout(&out);
    assert!(yaml.contains("status: pending") && yaml.contains("id: p"), "{yaml}");
    let done = engine.rt().block_on(engine.wait_status("p", JobStatus::Completed, Duration::from_secs(30)));
    assert_eq!(done.steps.iter().map(|s| s.status.to_string()).collect::<Vec<_>>(), ["skipped", "completed"]);
    assert!(tmp.path().join("data/outputs/p/plan").exists(), "the remaining step ran");
    let status = wait_for(Duration::from_secs(20), "jobs watch to end", || watch.try_wait().unwrap());
    let mut text = String::new();
    std::io::Read::read_to_string(watch.stdout.as_mut().unwrap(), &mut text).unwrap();
    assert!(status.success(), "jobs watch exits 0 when the job completes:\n{text}");
    assert!(text.contains("operator:otto") && text.contains("a human decided"), "{text}");
    assert!(text.lines().last().unwrap().ends_with("p: completed"), "{text}");

    // A viewer cannot override; the CLI says what to do.
    let out = engine.cli(&["--token", VIEWER, "jobs", "override", "p", "--status", "failed", "--reason", "x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("has role viewer"), "{}", stderr(&out));
    // Submitting with --wait shows the job's progress until it ends.
    let out = engine.cli(&["--token", OPERATOR, "jobs", "submit", "quick", "--id", "s1", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("attempt.started") && text.trim_end().ends_with("s1: completed"), "{text}");
    // Shell completions.
    let out = engine.cli(&["completions", "bash"]);
    assert!(out.status.success() && stdout(&out).contains("george"), "{}", stderr(&out));
}
