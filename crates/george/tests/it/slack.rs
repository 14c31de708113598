//! Issue 22: chat-ops from Slack, through the real engine and the Slack
//! test server (`george-testkit/src/servers/slack.rs`):
//! - signed slash commands, mapped to roles and audited; a stale or forged
//!   one refused; a slow answer sent to the command's `response_url`;
//! - a mention answered in its thread, once, through Slack's rate limits;
//! - a summon from a thread makes the thread the job's conversation: the
//!   agent's question is asked there, an operator's reply there reaches the
//!   blocked agent (once, though Slack sends it twice and again), and the
//!   result is posted there.

use crate::common;

use common::llm::{Reply, ScriptedLlm};
use common::slack::SlackServer;
use common::*;
use george_core::JobStatus;
use serde_json::{json, Value};
use std::time::Duration;

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const BOT_TOKEN: &str = "xoxb-test-bot-token";

/// The engine of these tests (in `.0`, its directory), its Slack app
/// answering through `slack`, its manifests applied; `extra` is more
/// configuration (e.g. `llm`).
fn setup(slack: &SlackServer, extra: &str) -> (tempfile::TempDir, Engine) {
    let dir = common::tempdir().unwrap();
    let tmp = dir.path();
    let secrets = tmp.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("slack"), SLACK_SECRET).unwrap();
    let m = tmp.join("manifests");
    write(&m, "agents/ranger.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: ranger}\nspec:\n  capabilities: [shell]\n  triggers:\n    - {type: summon, template: triage, priority: P1}\n");
    write(&m, "agents/helper.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: helper}\nspec:\n  capabilities: [shell]\n  triggers:\n    - {type: summon, template: ask}\n");
    write(&m, "templates/triage.yaml", "apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {name: triage}\nspec:\n  variables:\n    - {name: summary, type: fuzzy, default: none}\n  steps:\n    - id: note\n      description: triage {{summary}}\n      run: echo {{summary}} >> \"$GEORGE_OUTPUT_DIR/seen\"\n");
    write(&m, "templates/ask.yaml", "apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {name: ask}\nspec:\n  variables:\n    - {name: summary, type: string, default: none}\n  steps:\n    - id: deploy\n      description: Deploy to the region the requester names.\n");
    let cfg = format!(
        "secrets:\n  dir: {}\nslack:\n  signingSecret: slack\n  users:\n    U0ANN: {{subject: ann, role: operator}}\n    U0VIC: {{subject: vic, role: viewer}}\n  botTokenEnv: SLACK_BOT_TOKEN\n  apiUrl: '{}'\n  responseUrls: '{}'\n{extra}",
        secrets.display(),
        slack.api_url,
        slack.response_urls(),
    );
    let engine =
        Engine::start_with_env(tmp, &cfg, &["--manifests", m.to_str().unwrap()], &[("SLACK_BOT_TOKEN", BOT_TOKEN)]);
    engine.rt().block_on(engine.wait_applied());
    (dir, engine)
}

/// A request as Slack sends one to George's `path`, signed with `secret`
/// over `v0:<timestamp>:<body>` at `ts`; `retry` marks a redelivery.
async fn signed(e: &Engine, path: &str, body: String, ts: i64, secret: &str, retry: Option<u32>) -> (u16, Value) {
    let kind = if body.starts_with('{') { "application/json" } else { "application/x-www-form-urlencoded" };
    let mut rb =
        reqwest::Client::new().post(format!("{}{path}", e.url)).header("content-type", kind).body(body.clone());
    for (k, v) in SlackServer::signed(secret, ts, &body, retry) {
        rb = rb.header(k, v);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

/// A `/george` slash command as Slack sends it: form-encoded, `age`
/// seconds old, its `response_url` on `slack`.
async fn slash(e: &Engine, slack: &SlackServer, user: &str, text: &str, age: i64, secret: &str) -> (u16, Value) {
    let body = format!(
        "token=unused&team_id=T0001&channel_id=C0001&user_id={user}&command=%2Fgeorge&text={}&response_url={}",
        text.replace(' ', "+"),
        slack.response_url(1).replace(':', "%3A").replace('/', "%2F"),
    );
    signed(e, "/api/v1/slack/commands", body, chrono::Utc::now().timestamp() - age, secret, None).await
}

#[test]
fn slack_commands_are_signed_mapped_to_roles_and_audited() {
    let slack = SlackServer::start(BOT_TOKEN);
    let (_dir, engine) = setup(&slack, "");
    let rt = engine.rt();
    rt.block_on(async {
        let jobs = async || engine.client.jobs(&Default::default()).await.unwrap().len();
        // Bad and stale signatures: refused, nothing done.
        assert_eq!(
            slash(&engine, &slack, "U0ANN", "summon ranger forged", 0, "not-the-signing-secret-at-all").await.0,
            401
        );
        assert_eq!(slash(&engine, &slack, "U0ANN", "summon ranger replayed", 600, SLACK_SECRET).await.0, 401);
        assert_eq!(jobs().await, 0);
        // A viewer may look, not summon; a stranger may do nothing.
        let (status, v) = slash(&engine, &slack, "U0VIC", "status", 0, SLACK_SECRET).await;
        assert_eq!(status, 200);
        assert_eq!(v["response_type"], "ephemeral");
        assert!(v["blocks"][0]["text"]["text"].as_str().unwrap().contains("AgentSpecs"), "{v}");
        let (status, v) = slash(&engine, &slack, "U0VIC", "summon ranger please", 0, SLACK_SECRET).await;
        assert_eq!(status, 200);
        assert!(v["text"].as_str().unwrap().contains("has role viewer; this needs operator"), "{v}");
        let (_, v) = slash(&engine, &slack, "U0XYZ", "status", 0, SLACK_SECRET).await;
        assert!(v["text"].as_str().unwrap().contains("George does not know you"), "{v}");
        assert_eq!(jobs().await, 0);
        // An operator summons: the channel sees it, the job runs with the query, the audit names them.
        let (status, v) =
            slash(&engine, &slack, "U0ANN", "summon ranger review my RFC on caching", 0, SLACK_SECRET).await;
        assert_eq!((status, v["response_type"].as_str()), (200, Some("in_channel")), "{v}");
        let text = v["text"].as_str().unwrap();
        let id = text.split('`').nth(1).expect("the job id in the answer").to_string();
        engine.wait_status(&id, JobStatus::Completed, Duration::from_secs(30)).await;
        let seen = std::fs::read_to_string(engine.dir.join(format!("data/outputs/{id}/seen"))).unwrap();
        assert_eq!(seen, "review my RFC on caching\n");
        let created =
            engine.client.events(0, 10_000).await.unwrap().into_iter().find(|e| e.kind == "job.created").unwrap();
        assert_eq!(created.actor, "operator:slack:ann");
        let (_, v) = slash(&engine, &slack, "U0ANN", "bogus", 0, SLACK_SECRET).await;
        assert!(v["text"].as_str().unwrap().contains("/george summon AGENT"), "help: {v}");
    });
}

/// A delivery of the Events API, signed as Slack signs it.
async fn deliver(e: &Engine, body: &str, ts: i64, retry: Option<u32>) -> (u16, Value) {
    signed(e, "/api/v1/slack/events", body.to_string(), ts, SLACK_SECRET, retry).await
}

#[test]
fn a_mention_in_slack_is_answered_in_its_thread_once_through_rate_limits() {
    let slack = SlackServer::start(BOT_TOKEN);
    let (_dir, engine) = setup(&slack, "");
    let rt = engine.rt();
    rt.block_on(async {
        let now = chrono::Utc::now().timestamp();
        // The URL-verification handshake.
        let hello = r#"{"token":"unused","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        let (status, v) = deliver(&engine, hello, now, None).await;
        assert_eq!((status, v["challenge"].as_str()), (200, Some("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")));
        assert_eq!(deliver(&engine, hello, now - 400, None).await.0, 401, "stale");
        // A mention; Slack's first answer to George is a rate limit.
        slack.rate_limit_next(1, 1);
        let mention = SlackServer::mention("Ev0001", "U0ANN", "C0001", "1700000100.000200", None, "<@U0BOT> !guild summon ranger check the pager");
        assert_eq!(deliver(&engine, &mention, now, None).await.0, 200);
        // Slack redelivers it (no answer in time, it thinks): nothing runs twice.
        let (status, v) = deliver(&engine, &mention, now, Some(1)).await;
        assert_eq!((status, v["duplicate"].as_bool()), (200, Some(true)));
        let answered = eventually(Duration::from_secs(20), "the answer in the thread", async || {
            let m = slack.messages();
            (!m.is_empty()).then_some(m)
        })
        .await;
        assert_eq!(answered.len(), 1, "{answered:?}");
        assert_eq!((answered[0]["channel"].as_str(), answered[0]["thread_ts"].as_str()), (Some("C0001"), Some("1700000100.000200")));
        let text = answered[0]["text"].as_str().unwrap();
        let id = text.split('`').nth(1).expect("the job in the answer").to_string();
        engine.wait_status(&id, JobStatus::Completed, Duration::from_secs(30)).await;
        let seen = std::fs::read_to_string(engine.dir.join(format!("data/outputs/{id}/seen"))).unwrap();
        assert_eq!(seen, "check the pager\n");
        assert_eq!(engine.client.jobs(&Default::default()).await.unwrap().len(), 1, "one job for one mention");
        // A viewer's mention is answered with the refusal, in its thread.
        let viewer = SlackServer::mention("Ev0002", "U0VIC", "C0001", "1700000200.000300", Some("1700000100.000200"), "<@U0BOT> summon ranger x");
        assert_eq!(deliver(&engine, &viewer, now, None).await.0, 200);
        let refused = eventually(Duration::from_secs(20), "the refusal", async || slack.messages().get(1).cloned()).await;
        assert!(refused["text"].as_str().unwrap().contains("has role viewer"), "{refused}");
        assert_eq!(refused["thread_ts"], "1700000100.000200");
        assert_eq!(engine.client.jobs(&Default::default()).await.unwrap().len(), 1);
        // A replay racing its original: one of the two is a duplicate, and one summon runs.
        let raced = SlackServer::mention("Ev0003", "U0ANN", "C0001", "1700000300.000300", None, "<@U0BOT> summon ranger raced");
        let (a, b) = tokio::join!(deliver(&engine, &raced, now, None), deliver(&engine, &raced, now, None));
        assert_eq!((a.0, b.0), (200, 200));
        assert_eq!(u8::from(a.1["duplicate"] == true) + u8::from(b.1["duplicate"] == true), 1, "{a:?} {b:?}");
        eventually(Duration::from_secs(20), "the raced summon's answer", async || slack.messages().get(2).cloned()).await;
        assert_eq!(engine.client.jobs(&Default::default()).await.unwrap().len(), 2, "one job for the raced mention");
    });
}

/// A job summoned from a Slack thread talks with people there: its agent's
/// question is posted in the thread; a viewer's reply is refused; an
/// operator's reply (which Slack sends as `app_mention` and as `message`,
/// and redelivers) reaches the blocked agent once; the job completes and
/// its result is posted in the thread. A slash command answered later goes
/// to its `response_url`.
#[test]
fn a_summon_from_a_thread_has_that_thread_as_its_conversation() {
    let slack = SlackServer::start(BOT_TOKEN);
    let llm = ScriptedLlm::start();
    let extra = format!(
        "  ackWithin: 0s\nllm:\n  default: {{provider: scripted, model: m}}\n  providers:\n    - {{name: scripted, api: openai, baseUrl: '{}'}}\n",
        llm.url
    );
    let (_dir, engine) = setup(&slack, &extra);
    let rt = engine.rt();
    rt.block_on(async {
        let now = chrono::Utc::now().timestamp();
        let in_thread = |thread: &'static str, needle: &'static str| {
            let slack = &slack;
            async move || {
                slack
                    .messages()
                    .into_iter()
                    .find(|m| m["thread_ts"] == thread && m["text"].as_str().is_some_and(|t| t.contains(needle)))
            }
        };
        // With `ackWithin: 0s` every slash command is acknowledged at once and answered at its response_url.
        let (status, v) = slash(&engine, &slack, "U0ANN", "status", 0, SLACK_SECRET).await;
        assert_eq!(status, 200);
        assert!(v["text"].as_str().unwrap().contains("On it"), "{v}");
        let later = eventually(Duration::from_secs(20), "the answer at the response_url", async || {
            slack.responses().into_iter().next()
        })
        .await;
        assert!(later["blocks"][0]["text"]["text"].as_str().unwrap().contains("AgentSpecs"), "{later}");
        assert_eq!(later["response_type"], "ephemeral");

        // A summon in a new thread: the thread is the job's conversation.
        llm.push(Reply::tool("ask_human", json!({"question": "Which region?"}), 10, 2));
        let summon = SlackServer::mention(
            "Ev0100",
            "U0ANN",
            "C0001",
            "1700000300.000100",
            None,
            "<@U0BOT> summon helper deploy the service",
        );
        assert_eq!(deliver(&engine, &summon, now, None).await.0, 200);
        let summoned =
            eventually(Duration::from_secs(20), "the summon's answer", in_thread("1700000300.000100", "Summoned"))
                .await;
        let text = summoned["text"].as_str().unwrap();
        let id = text.split('`').nth(1).expect("the job in the answer").to_string();
        assert!(text.contains("reply here"), "{text}");
        let job = engine.wait_status(&id, JobStatus::Blocked, Duration::from_secs(30)).await;
        assert_eq!(job.reason.as_deref(), Some("waiting for human: Which region?"));
        let asked = eventually(
            Duration::from_secs(20),
            "the question in the thread",
            in_thread("1700000300.000100", "Which region?"),
        )
        .await;
        let asked = asked["text"].as_str().unwrap();
        assert!(
            asked.contains(&format!("George is blocked (job `{id}`)")) && asked.contains("Reply in this thread"),
            "{asked}"
        );

        // The thread is taken: another summon there is refused.
        let again = SlackServer::mention(
            "Ev0101",
            "U0ANN",
            "C0001",
            "1700000300.000200",
            Some("1700000300.000100"),
            "<@U0BOT> !guild summon helper again",
        );
        assert_eq!(deliver(&engine, &again, now, None).await.0, 200);
        let taken = eventually(
            Duration::from_secs(20),
            "the refusal to summon",
            in_thread("1700000300.000100", "is the conversation of job"),
        )
        .await;
        assert!(taken["text"].as_str().unwrap().contains(&id), "{taken}");

        // A viewer's reply does not reach the agent.
        let viewer = SlackServer::thread_message(
            "Ev0102",
            "U0VIC",
            "C0001",
            "1700000300.000300",
            "1700000300.000100",
            "us-east-1",
        );
        assert_eq!(deliver(&engine, &viewer, now, None).await.0, 200);
        eventually(Duration::from_secs(20), "the viewer's refusal", in_thread("1700000300.000100", "only operators"))
            .await;
        assert_eq!(engine.client.job(&id).await.unwrap().status, JobStatus::Blocked);

        // An operator's reply, as Slack sends it: a mention and a message of one `ts`, then a redelivery.
        llm.push(Reply::tool("complete_step", json!({"summary": "deployed to eu-west-1"}), 10, 2));
        let text = "<@U0BOT> eu-west-1, please";
        let mention =
            SlackServer::mention("Ev0103", "U0ANN", "C0001", "1700000300.000400", Some("1700000300.000100"), text);
        let message =
            SlackServer::thread_message("Ev0104", "U0ANN", "C0001", "1700000300.000400", "1700000300.000100", text);
        assert_eq!(deliver(&engine, &mention, now, None).await.0, 200);
        assert_eq!(deliver(&engine, &message, now, None).await.0, 200);
        assert_eq!(deliver(&engine, &mention, now, Some(1)).await.1["duplicate"], true);
        engine.wait_status(&id, JobStatus::Completed, Duration::from_secs(30)).await;
        let second = &llm.received()[1].body["messages"];
        assert!(second.to_string().contains("eu-west-1, please"), "{second}");
        let conv = engine.client.comments(&id).await.unwrap();
        let people: Vec<_> = conv.iter().filter(|c| c.author.starts_with("operator:")).collect();
        assert_eq!(people.len(), 1, "the operator's reply, once: {conv:?}");
        assert_eq!((people[0].author.as_str(), people[0].body.as_str()), ("operator:slack:ann", "eu-west-1, please"));

        // The result, in the thread; the question was asked once.
        let done = eventually(
            Duration::from_secs(20),
            "the result in the thread",
            in_thread("1700000300.000100", "George finished job"),
        )
        .await;
        assert!(done["text"].as_str().unwrap().contains("deployed to eu-west-1"), "{done}");
        let questions =
            slack.messages().iter().filter(|m| m["text"].as_str().is_some_and(|t| t.contains("Which region?"))).count();
        assert_eq!(questions, 1, "{:?}", slack.messages());
        // Nothing George said was taken for a person's reply, and nothing came back as help.
        assert!(!slack
            .messages()
            .iter()
            .any(|m| m["text"].as_str().is_some_and(|t| t.contains("/george summon AGENT"))));
    });
}
