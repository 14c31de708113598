//! Slack's Events API (`POST /api/v1/slack/events`): the URL-verification
//! handshake; a mention of George (`@george !guild status`) run as the slash
//! command would run it and answered in the message's thread with
//! `chat.postMessage`; and the messages of a thread that is a job's
//! conversation ([`crate::slack_thread`]), which reach the job's agent.
//!
//! In a thread that is an unfinished job's conversation, a message is a
//! reply to the agent unless it mentions George with `!guild` (then it is a
//! command). Slack sends a mention twice, as `app_mention` and as
//! `message`: a reply is taken once by its channel and `ts`.
//!
//! Requests are signed as slash commands are (see [`crate::slack`]). Slack
//! expects `200` within 3 s and otherwise delivers again
//! (`X-Slack-Retry-Num`): George acknowledges at once, answers in the
//! background (tracked: the engine's stop waits for it), and handles each
//! `event_id` once, so a retried delivery does nothing twice.

use crate::slack::{caller_of, command_words, run, verify};
use crate::slack_thread::{first_time, job_of, SEEN_EVENT, SEEN_MESSAGE};
use crate::slack_web::SlackWeb;
use crate::{ApiError, ApiState};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use george_core::Role;
use serde_json::{json, Value};

/// One message George got from Slack.
struct Message {
    user: String,
    channel: String,
    ts: String,
    /// The thread it is in, if it is in one.
    thread_ts: Option<String>,
    text: String,
}

/// `POST /api/v1/slack/events`.
pub async fn event(State(st): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    let slack = st.engine.triggers().slack().cloned().ok_or_else(|| {
        ApiError::Unauthorized("Slack is not enabled on this engine (configure slack.signingSecret)".into())
    })?;
    verify(&slack.signing_secret.0, &headers, &body, st.engine.now().timestamp())?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    let ok = || Ok(Json(json!({"ok": true})));
    match v["type"].as_str() {
        Some("url_verification") => return Ok(Json(json!({"challenge": v["challenge"]}))),
        Some("event_callback") => {}
        _ => return ok(),
    }
    let e = &v["event"];
    let kind = e["type"].as_str().unwrap_or_default();
    // Bots (George among them) and edits, joins and the like are not people talking.
    if !matches!(kind, "app_mention" | "message") || e.get("bot_id").is_some() || e.get("subtype").is_some() {
        return ok();
    }
    // Each delivery once, whatever Slack redelivers (a delivery acted on is remembered below).
    let id = v["event_id"].as_str().unwrap_or_default();
    let seen = format!("{SEEN_EVENT}{id}");
    if id.is_empty() || st.store.setting(&seen).await?.is_some() {
        return Ok(Json(json!({"ok": true, "duplicate": true})));
    }
    let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
    let m = Message {
        user: s("user"),
        channel: s("channel"),
        ts: s("ts"),
        thread_ts: e["thread_ts"].as_str().map(str::to_string),
        text: s("text"),
    };
    // What it is, read before anything is written: most messages in a channel are none of George's.
    let job = match &m.thread_ts {
        Some(thread) => job_of(st.store.as_ref(), &m.channel, thread).await?,
        None => None,
    };
    let reply_to = job.filter(|_| !m.text.contains("!guild")).map(|j| j.id);
    if reply_to.is_none() && kind != "app_mention" {
        return ok();
    }
    if !first_time(st.store.as_ref(), &seen, st.engine.now()).await? {
        return Ok(Json(json!({"ok": true, "duplicate": true})));
    }
    let web = SlackWeb::of(st.engine.http(), &slack);
    let answer = match &reply_to {
        Some(job) => reply(&st, &slack, job, &m).await?,
        None => Some(command(&st, &slack, &m).await),
    };
    let Some(answer) = answer else { return ok() };
    let Some(web) = web else {
        tracing::warn!("a Slack mention, but no slack.botTokenEnv to answer with");
        return ok();
    };
    let thread = m.thread_ts.clone().unwrap_or(m.ts.clone());
    st.engine.spawn_tracked(async move {
        if let Err(e) = web.post(&m.channel, Some(&thread), &answer).await {
            tracing::warn!(error = %e, channel = %m.channel, "cannot answer in Slack");
        }
    });
    ok()
}

/// A mention run as a command: its answer.
async fn command(st: &ApiState, slack: &george_engine::SlackSettings, m: &Message) -> String {
    let caller = match caller_of(slack, &m.user) {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let words = command_words(&m.text);
    let (verb, args) = words.split_first().map_or(("help", &[][..]), |(v, a)| (*v, a));
    tracing::info!(user = %m.user, verb, "Slack mention");
    // A summon here makes a job whose conversation is this thread.
    let thread = m.thread_ts.as_deref().unwrap_or(&m.ts);
    match run(st, caller, verb, args, Some((&m.channel, thread))).await {
        Ok((t, _)) => t,
        Err(e) => format!(":warning: {e}"),
    }
}

/// A message in the thread of `job`: a comment from its author, if they are
/// an operator (else the refusal, to answer with). Once per message.
async fn reply(
    st: &ApiState,
    slack: &george_engine::SlackSettings,
    job: &str,
    m: &Message,
) -> Result<Option<String>, ApiError> {
    if !first_time(st.store.as_ref(), &format!("{SEEN_MESSAGE}{}:{}", m.channel, m.ts), st.engine.now()).await? {
        return Ok(None);
    }
    let caller = match caller_of(slack, &m.user) {
        Ok(c) => c,
        Err(refused) => return Ok(Some(refused)),
    };
    if let Err(e) = caller.require(Role::Operator) {
        return Ok(Some(format!(":warning: {e}: only operators answer George's agents")));
    }
    let body = without_mentions(&m.text);
    if body.is_empty() {
        return Ok(None);
    }
    let body = truncate(&body, crate::MAX_TEXT_BYTES);
    tracing::info!(user = %m.user, job, "a Slack reply reaches the job's agent");
    match st.store.add_comment(job, &caller.actor(), body).await {
        Ok(_) => Ok(None),
        // The job ended or was deleted meanwhile: nobody to tell.
        Err(george_store::StoreError::NotFound { .. } | george_store::StoreError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `text` without its mentions (`<@U…>`).
fn without_mentions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("<@") {
        out.push_str(&rest[..at]);
        match rest[at..].find('>') {
            Some(end) => rest = &rest[at + end + 1..],
            None => {
                rest = &rest[at..];
                break;
            }
        }
    }
    out.push_str(rest);
    out.trim().to_string()
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_left_out_of_replies() {
        assert_eq!(without_mentions("<@U0BOT> eu-west-1, please"), "eu-west-1, please");
        assert_eq!(without_mentions("ask <@U0ANN> and <@U0VIC|vic>\nthen go"), "ask  and \nthen go");
        assert_eq!(without_mentions("a <@ broken"), "a <@ broken");
        assert_eq!(truncate("héllo", 2), "h");
    }
}
