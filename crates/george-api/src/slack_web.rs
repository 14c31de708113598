//! What George sends to Slack: `chat.postMessage` (with the bot token) and
//! a slash command's delayed answer to its `response_url`, each as one
//! Block Kit section, retried after Slack's `Retry-After` when rate-limited.

use serde_json::{json, Value};
use std::time::Duration;

/// How many times one message is sent before George gives up on it.
const TRIES: u32 = 5;

/// Slack's limit on a section's text is 3000 characters.
const MAX_TEXT: usize = 2900;

/// Why a message did not reach Slack.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// Slack could not be reached or answered nonsense.
    #[error("cannot reach Slack: {0}")]
    Transport(String),
    /// Slack refused the message (`ok: false`).
    #[error("Slack refused the message: {0}")]
    Refused(String),
    /// Rate-limited on every try.
    #[error("still rate-limited by Slack after {TRIES} tries")]
    RateLimited,
}

/// A message's text and its one Block Kit section.
pub(crate) fn blocks(text: &str) -> Value {
    let text: String = text.chars().take(MAX_TEXT).collect();
    json!({"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]})
}

/// The Web API as the bot: `chat.postMessage`.
#[derive(Clone)]
pub struct SlackWeb {
    http: reqwest::Client,
    api_url: String,
    token: String,
}

impl SlackWeb {
    /// Posting to `api_url` (`https://slack.com/api`) with the bot `token`.
    pub fn new(http: reqwest::Client, api_url: &str, token: &str) -> Self {
        Self { http, api_url: api_url.trim_end_matches('/').to_string(), token: token.to_string() }
    }

    /// The bot of `slack`, if it has a token.
    pub fn of(http: &reqwest::Client, slack: &george_engine::SlackSettings) -> Option<Self> {
        let token = slack.bot_token.as_ref()?;
        Some(Self::new(http.clone(), &slack.api_url, &String::from_utf8_lossy(&token.0)))
    }

    /// Posts `text` in `channel`, in the thread `thread` if given: the new message's `ts`.
    pub async fn post(&self, channel: &str, thread: Option<&str>, text: &str) -> Result<String, SlackError> {
        let mut body = blocks(text);
        body["channel"] = json!(channel);
        if let Some(t) = thread {
            body["thread_ts"] = json!(t);
        }
        let url = format!("{}/chat.postMessage", self.api_url);
        let v = send(|| self.http.post(&url).bearer_auth(&self.token).json(&body)).await?;
        match v["ok"].as_bool() {
            Some(true) => Ok(v["ts"].as_str().unwrap_or_default().to_string()),
            _ => Err(SlackError::Refused(v["error"].as_str().unwrap_or("no reason given").to_string())),
        }
    }
}

/// A slash command's answer sent later to its `response_url`.
pub(crate) async fn respond(http: &reqwest::Client, url: &str, answer: &Value) -> Result<(), SlackError> {
    send(|| http.post(url).json(answer)).await.map(drop)
}

/// Sends the request `build` makes, again after `Retry-After` while Slack rate-limits it.
async fn send(build: impl Fn() -> reqwest::RequestBuilder) -> Result<Value, SlackError> {
    let transport = |e: reqwest::Error| SlackError::Transport(e.to_string());
    for _ in 0..TRIES {
        let resp = build().timeout(Duration::from_secs(10)).send().await.map_err(transport)?;
        if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1)
                .min(60);
            tracing::info!(wait_secs = wait, "Slack rate limit; sending later");
            tokio::time::sleep(Duration::from_secs(wait)).await;
            continue;
        }
        // A response URL answers `ok` as plain text; the Web API answers JSON.
        let status = resp.status();
        let text = resp.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(SlackError::Refused(format!("HTTP {status}: {}", text.chars().take(200).collect::<String>())));
        }
        return Ok(serde_json::from_str(&text).unwrap_or_else(|_| json!({"ok": true})));
    }
    Err(SlackError::RateLimited)
}
