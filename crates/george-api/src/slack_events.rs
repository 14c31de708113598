//! Slack's Events API (`POST /api/v1/slack/events`): the URL-verification
//! handshake, and a mention of George (`@george !guild status`) run as the
//! slash command would run it, answered in the message's thread with
//! `chat.postMessage`. Requests are signed as slash commands are (see
//! [`crate::slack`]). Slack expects `200` within 3 s and otherwise delivers
//! again (`X-Slack-Retry-Num`): George acknowledges at once, answers in the
//! background (tracked: the engine's stop waits for it), and runs each
//! `event_id` once, so a retried delivery does nothing twice. A `429` from
//! Slack is retried after its `Retry-After`.

use crate::slack::{caller_of, command_words, run, verify};
use crate::{ApiError, ApiState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use std::time::Duration;

/// How many times one answer is sent before George gives up on it.
const TRIES: u32 = 5;

/// `POST /api/v1/slack/events`.
pub async fn event(State(st): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    let slack = st.engine.triggers().slack().cloned().ok_or_else(|| {
        ApiError::Unauthorized("Slack is not enabled on this engine (configure slack.signingSecret)".into())
    })?;
    verify(&slack.signing_secret.0, &headers, &body, st.engine.now().timestamp())?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    match v["type"].as_str() {
        Some("url_verification") => return Ok(Json(json!({"challenge": v["challenge"]}))),
        Some("event_callback") => {}
        _ => return Ok(Json(json!({"ok": true}))),
    }
    let e = &v["event"];
    if e["type"] != "app_mention" || e.get("bot_id").is_some() {
        return Ok(Json(json!({"ok": true})));
    }
    // Each event once, whatever Slack redelivers.
    let id = v["event_id"].as_str().unwrap_or_default();
    let seen = format!("slack.event:{id}");
    if id.is_empty() || st.store.setting(&seen).await?.is_some() {
        return Ok(Json(json!({"ok": true, "duplicate": true})));
    }
    st.store.set_setting(&seen, Some(json!(st.engine.now().to_rfc3339()))).await?;
    let (user, channel) =
        (e["user"].as_str().unwrap_or_default().to_string(), e["channel"].as_str().unwrap_or_default().to_string());
    let thread = e["thread_ts"].as_str().or_else(|| e["ts"].as_str()).unwrap_or_default().to_string();
    let text = e["text"].as_str().unwrap_or_default().to_string();
    let Some(token) = slack.bot_token.as_ref().map(|t| String::from_utf8_lossy(&t.0).to_string()) else {
        tracing::warn!("a Slack mention, but no slack.botTokenEnv to answer with");
        return Ok(Json(json!({"ok": true})));
    };
    let answer = match caller_of(&slack, &user) {
        Err(refused) => refused,
        Ok(caller) => {
            let words = command_words(&text);
            let (verb, args) = words.split_first().map_or(("help", &[][..]), |(v, a)| (*v, a));
            tracing::info!(user = %user, verb, "Slack mention");
            match run(&st, caller, verb, args).await {
                Ok((t, _)) => t,
                Err(e) => format!(":warning: {e}"),
            }
        }
    };
    let (http, url) = (st.engine.http().clone(), format!("{}/chat.postMessage", slack.api_url.trim_end_matches('/')));
    st.engine.spawn_tracked(async move {
        if let Err(e) = post_message(&http, &url, &token, &channel, &thread, &answer).await {
            tracing::warn!(error = %e, channel = %channel, "cannot answer in Slack");
        }
    });
    Ok(Json(json!({"ok": true})))
}

/// `chat.postMessage` in `thread` of `channel`, as a Block Kit section,
/// retried after Slack's `Retry-After` when rate-limited.
async fn post_message(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    channel: &str,
    thread: &str,
    text: &str,
) -> Result<(), String> {
    let text: String = text.chars().take(2900).collect();
    let body = json!({
        "channel": channel,
        "thread_ts": thread,
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    });
    for _ in 0..TRIES {
        let resp = http
            .post(url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1)
                .min(60);
            tracing::info!(wait_secs = wait, "Slack rate limit; answering later");
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        return match v["ok"].as_bool() {
            Some(true) => Ok(()),
            _ => Err(format!("Slack refused the message: {}", v["error"].as_str().unwrap_or("no reason given"))),
        };
    }
    Err(format!("still rate-limited after {TRIES} tries"))
}
