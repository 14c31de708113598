//! A Slack test server, written from Slack's documentation, for what George
//! sends and receives:
//! - **Web API** `POST /api/chat.postMessage` (JSON, `Authorization: Bearer
//!   xoxb-…`): `{channel, text, blocks?, thread_ts?}` → `200 {ok: true,
//!   channel, ts, message}`; a wrong token is `200 {ok: false, error:
//!   "invalid_auth"}`, a missing channel or text `200 {ok: false, error:
//!   "no_text"}` (Slack answers errors with `200` and `ok: false`); an
//!   injected rate limit is `429 {ok: false, error: "ratelimited"}` with
//!   `Retry-After` (seconds).
//! - **Response URLs** `POST /commands/{team}/{id}/{secret}` (what a slash
//!   command's `response_url` points to): a JSON message (`text`, `blocks`,
//!   `response_type`) → `200 ok` (plain text); one with no text `400
//!   no_text`.
//! - **Signed requests** ([`SlackServer::signed`]): what Slack sends to an
//!   app — slash commands and Events API deliveries — with
//!   `X-Slack-Request-Timestamp` and `X-Slack-Signature: v0=<hex HMAC-SHA256
//!   of "v0:<timestamp>:<body>">`, and on a redelivery `X-Slack-Retry-Num`
//!   and `X-Slack-Retry-Reason`.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{extract::State, Json, Router};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Workspace {
    token: String,
    messages: Vec<Value>,
    responses: Vec<Value>,
    rate_limited: Vec<u64>,
    next_ts: u64,
}

/// The running server.
pub struct SlackServer {
    /// The Web API base (as `https://slack.com/api`).
    pub api_url: String,
    state: Arc<Mutex<Workspace>>,
}

impl SlackServer {
    /// A workspace whose bot token is `token`.
    pub fn start(token: &str) -> Self {
        let state =
            Arc::new(Mutex::new(Workspace { token: token.into(), next_ts: 1_700_000_000, ..Default::default() }));
        let app = Router::new()
            .route("/api/chat.postMessage", post(post_message))
            .route("/commands/{team}/{id}/{secret}", post(response_url))
            .with_state(state.clone());
        let addr = super::inbox::serve_in_background(app);
        SlackServer { api_url: format!("http://{addr}/api"), state }
    }

    /// Where this server takes a slash command's delayed answers (a prefix of every `response_url`).
    pub fn response_urls(&self) -> String {
        format!("{}/commands/", self.api_url.trim_end_matches("/api"))
    }

    /// A slash command's `response_url` on this server.
    pub fn response_url(&self, id: u32) -> String {
        format!("{}T0001/{id}/aBcDeF{id}", self.response_urls())
    }

    /// The answers sent to response URLs, oldest first.
    pub fn responses(&self) -> Vec<Value> {
        self.state.lock().unwrap().responses.clone()
    }

    /// The messages posted, oldest first (`channel`, `thread_ts`, `text`, `blocks`).
    pub fn messages(&self) -> Vec<Value> {
        self.state.lock().unwrap().messages.clone()
    }

    /// The next `n` calls are rate-limited, with `Retry-After: retry_after`.
    pub fn rate_limit_next(&self, n: usize, retry_after: u64) {
        self.state.lock().unwrap().rate_limited.extend(std::iter::repeat_n(retry_after, n));
    }

    /// Headers and body of a request Slack sends to an app, signed with
    /// `secret` at `ts` (unix seconds); `retry` marks a redelivery.
    pub fn signed(secret: &str, ts: i64, body: &str, retry: Option<u32>) -> Vec<(&'static str, String)> {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(format!("v0:{ts}:{body}").as_bytes());
        let mut h = vec![
            ("X-Slack-Request-Timestamp", ts.to_string()),
            ("X-Slack-Signature", format!("v0={}", hex::encode(mac.finalize().into_bytes()))),
        ];
        if let Some(n) = retry {
            h.push(("X-Slack-Retry-Num", n.to_string()));
            h.push(("X-Slack-Retry-Reason", "http_timeout".to_string()));
        }
        h
    }

    /// An Events API delivery of an `app_mention` by `user` in `channel`
    /// (`ts`, in the thread `thread_ts` if given).
    pub fn mention(event_id: &str, user: &str, channel: &str, ts: &str, thread_ts: Option<&str>, text: &str) -> String {
        let mut event =
            json!({"type": "app_mention", "user": user, "channel": channel, "ts": ts, "text": text, "event_ts": ts});
        if let Some(t) = thread_ts {
            event["thread_ts"] = json!(t);
        }
        envelope(event_id, event)
    }

    /// An Events API delivery of a `message` by `user` in a thread (`thread_ts`) of `channel`.
    pub fn thread_message(event_id: &str, user: &str, channel: &str, ts: &str, thread_ts: &str, text: &str) -> String {
        let event = json!({"type": "message", "channel_type": "channel", "user": user, "channel": channel, "ts": ts,
                           "thread_ts": thread_ts, "text": text, "event_ts": ts, "client_msg_id": format!("m-{ts}")});
        envelope(event_id, event)
    }
}

/// An `event_callback` delivery of `event`.
fn envelope(event_id: &str, event: Value) -> String {
    json!({"token": "unused", "team_id": "T0001", "api_app_id": "A0001", "type": "event_callback",
           "event_id": event_id, "event_time": 1_700_000_000, "event": event})
    .to_string()
}

async fn response_url(State(s): State<Arc<Mutex<Workspace>>>, Json(body): Json<Value>) -> Response {
    if body["text"].as_str().is_none_or(str::is_empty) && body.get("blocks").is_none() {
        return (StatusCode::BAD_REQUEST, "no_text").into_response();
    }
    s.lock().unwrap().responses.push(body);
    "ok".into_response()
}

async fn post_message(State(s): State<Arc<Mutex<Workspace>>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut st = s.lock().unwrap();
    if !st.rate_limited.is_empty() {
        let wait = st.rate_limited.remove(0);
        let mut resp =
            (StatusCode::TOO_MANY_REQUESTS, Json(json!({"ok": false, "error": "ratelimited"}))).into_response();
        resp.headers_mut().insert("retry-after", wait.to_string().parse().unwrap());
        return resp;
    }
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if auth.strip_prefix("Bearer ") != Some(st.token.as_str()) {
        return Json(json!({"ok": false, "error": "invalid_auth"})).into_response();
    }
    let (Some(channel), Some(_)) = (body["channel"].as_str(), body["text"].as_str().filter(|t| !t.is_empty())) else {
        return Json(json!({"ok": false, "error": "no_text"})).into_response();
    };
    st.next_ts += 1;
    let ts = format!("{}.000100", st.next_ts);
    let channel = channel.to_string();
    st.messages.push(body.clone());
    Json(json!({"ok": true, "channel": channel, "ts": ts, "message": body})).into_response()
}
