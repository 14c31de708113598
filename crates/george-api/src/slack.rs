//! Chat-ops from Slack: the `/george` slash command (seed 003's `!guild`
//! commands). Slack signs each request with the app's signing secret
//! (`X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<timestamp>:<body>">`,
//! `X-Slack-Request-Timestamp`); a request more than five minutes from now
//! is refused, so a captured one cannot be replayed later. The Slack user is
//! mapped to a George subject and role (`slack.users`, else
//! `slack.defaultRole`), and each command runs the API operation the CLI
//! runs, with that role, audited as `operator:slack:<subject>`. Answers are
//! Block Kit. Slack wants one within 3 s: a command still running after
//! `slack.ackWithin` is acknowledged, and its answer goes to the command's
//! `response_url` when it comes.

use crate::body::{Body, OptionalBody};
use crate::{budget, control, triggers, ApiError, ApiState, Caller};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use george_core::api::{ActionRequest, ThrottleRequest};
use george_core::Role;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::BTreeMap;

/// How far a request's timestamp may be from now (Slack's advice: five minutes).
const WINDOW_SECS: i64 = 300;

const HELP: &str = "`/george status` · `/george budget` · `/george diagnose` · `/george summon AGENT [what you need]` \
                    (or `spawn`) · `/george dismiss AGENT` · `/george throttle CHAPTER [TOKENS_PER_HOUR]`";

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Checks Slack's signature and the request's age.
pub(crate) fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), ApiError> {
    let unauthorized = |m: &str| ApiError::Unauthorized(m.to_string());
    let ts = header(headers, "x-slack-request-timestamp")
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| unauthorized("missing or malformed X-Slack-Request-Timestamp"))?;
    if (now - ts).abs() > WINDOW_SECS {
        return Err(unauthorized(
            "the request is more than five minutes old (or from the future): refused as a replay",
        ));
    }
    let given = header(headers, "x-slack-signature")
        .and_then(|s| s.strip_prefix("v0="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| unauthorized("missing or malformed X-Slack-Signature: v0=<hex>"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| ApiError::Internal("bad Slack key".into()))?;
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| unauthorized("the Slack signature does not match the request"))
}

/// A Block Kit answer: one section of mrkdwn, for everyone in the channel or
/// only the caller.
fn answer(text: &str, in_channel: bool) -> Value {
    let mut v = crate::slack_web::blocks(text);
    v["response_type"] = json!(if in_channel { "in_channel" } else { "ephemeral" });
    v
}

/// The answer to a command's outcome.
fn answer_of(done: Result<(String, bool), ApiError>) -> Value {
    match done {
        Ok((text, in_channel)) => answer(&text, in_channel),
        Err(e) => answer(&format!(":warning: {e}"), false),
    }
}

/// The George caller a Slack user is, or the message that refuses them.
pub(crate) fn caller_of(slack: &george_engine::SlackSettings, user: &str) -> Result<Caller, String> {
    match (slack.users.get(user), slack.default_role) {
        (Some(u), _) => Ok(Caller::Operator { name: format!("slack:{}", u.subject), role: u.role }),
        (None, Some(role)) => Ok(Caller::Operator { name: format!("slack:{user}"), role }),
        (None, None) => {
            Err(format!("George does not know you: ask an admin to add your Slack user `{user}` to `slack.users`."))
        }
    }
}

/// The command words of a message: mentions (`<@U…>`) left out, after `!guild` when it is there.
pub(crate) fn command_words(text: &str) -> Vec<&str> {
    text.split_whitespace()
        .filter(|w| !(w.starts_with("<@") && w.ends_with('>')))
        .skip_while(|w| *w == "!guild")
        .collect()
}

/// `POST /api/v1/slack/commands`: a signed slash command. Its answer is
/// the reply when it comes within `slack.ackWithin`; otherwise the reply
/// says George is on it, and the answer goes to the command's `response_url`
/// (which must be under `slack.responseUrls`) when it comes.
pub async fn command(State(st): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Json<Value>, ApiError> {
    let slack = st.engine.triggers().slack().cloned().ok_or_else(|| {
        ApiError::Unauthorized("Slack commands are not enabled on this engine (configure slack.signingSecret)".into())
    })?;
    verify(&slack.signing_secret.0, &headers, &body, st.engine.now().timestamp())?;
    let form: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let user = form.get("user_id").cloned().unwrap_or_default();
    let caller = match caller_of(&slack, &user) {
        Ok(c) => c,
        Err(refused) => return Ok(Json(answer(&refused, false))),
    };
    let text = form.get("text").cloned().unwrap_or_default();
    let words: Vec<String> = command_words(&text).into_iter().map(str::to_string).collect();
    tracing::info!(user = %user, verb = words.first().map_or("help", String::as_str), "Slack command");
    let later = form.get("response_url").filter(|u| u.starts_with(&slack.response_urls)).cloned();
    let answers_later = later.is_some();
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let (task, http) = (st.clone(), st.engine.http().clone());
    // Tracked: the engine's stop waits for a command under way and its answer.
    st.engine.spawn_tracked(async move {
        let (verb, args) = words.split_first().map_or(("help", &[][..]), |(v, a)| (v.as_str(), a));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let answer = answer_of(run(&task, caller, verb, &args, None).await);
        let Err(answer) = tx.send(answer) else { return };
        match later {
            Some(url) => {
                if let Err(e) = crate::slack_web::respond(&http, &url, &answer).await {
                    tracing::warn!(error = %e, "cannot send a slash command's answer to its response_url");
                }
            }
            None => tracing::warn!("a slow slash command's answer has no response_url to go to"),
        }
    });
    if !answers_later {
        // Nowhere to answer later: the answer is the reply, however long it takes.
        return Ok(Json(rx.await.unwrap_or_else(|_| answer(":warning: the command did not finish", false))));
    }
    if !slack.ack_within.is_zero() {
        if let Ok(Ok(answer)) = tokio::time::timeout(slack.ack_within, &mut rx).await {
            return Ok(Json(answer));
        }
    }
    // Too slow: what is sent from now on goes to the response_url; what came just now is the reply.
    rx.close();
    Ok(Json(
        rx.try_recv().unwrap_or_else(|_| answer(":hourglass_flowing_sand: On it; the answer follows here.", false)),
    ))
}

/// Runs one command as `caller`: its answer, and whether the channel sees it.
/// A summon from a Slack thread (`thread`: its channel and `ts`) makes a
/// job whose conversation is that thread.
pub(crate) async fn run(
    st: &ApiState,
    caller: Caller,
    verb: &str,
    args: &[&str],
    thread: Option<(&str, &str)>,
) -> Result<(String, bool), ApiError> {
    let state = || State(st.clone());
    match verb {
        "status" => {
            let Json(v) = control::status(state(), caller).await?;
            let jobs = v["jobs"].as_object().map(|m| m.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>());
            let agents = v["agents"].as_array().map_or(0, Vec::len);
            Ok((format!("*George*: {agents} AgentSpecs · jobs: {}", jobs.unwrap_or_default().join(", ")), false))
        }
        "budget" => {
            caller.viewer()?;
            let r = st.engine.control().budget_report(george_governor::Period::Month).await?;
            let v = serde_json::to_value(&r).unwrap_or_default();
            let mut lines = vec![format!("*Token budget this month* (since {})", v["since"].as_str().unwrap_or("?"))];
            for level in v["levels"].as_array().into_iter().flatten() {
                lines.push(format!("• {}: {} used", level["level"], level["used"]));
            }
            Ok((lines.join("\n"), false))
        }
        "diagnose" => {
            let Json(v) = control::diagnose(state(), caller).await?;
            Ok((format!("*Diagnosis*\n```{}```", serde_json::to_string_pretty(&v).unwrap_or_default()), false))
        }
        "summon" | "spawn" => {
            let Some((agent, query)) = args.split_first() else {
                return Err(ApiError::invalid("name the AgentSpec: `/george summon AGENT what you need`"));
            };
            // What the person asked for is the summon's `summary`, as `george summon -c summary=…` gives it.
            let mut context = BTreeMap::new();
            if !query.is_empty() {
                context.insert("summary".to_string(), json!(query.join(" ")));
            }
            let labels = thread.and_then(|(channel, ts)| crate::slack_thread::labels(channel, ts)).unwrap_or_default();
            if let Some((channel, ts)) = thread {
                if let Some(job) = crate::slack_thread::job_of(st.store.as_ref(), channel, ts).await? {
                    return Err(ApiError::Conflict(format!(
                        "this thread is the conversation of job `{}` until it ends: summon in a new thread",
                        job.id
                    )));
                }
            }
            let followed = !labels.is_empty();
            let req =
                triggers::SummonRequest { agent: agent.to_string(), template: None, context, priority: None, labels };
            let (_, Json(fired)) = triggers::summon(state(), caller, Body(req)).await?;
            let v = serde_json::to_value(&fired).unwrap_or_default();
            let mut text = format!("Summoned *{agent}*: job `{}`", v["job"].as_str().unwrap_or("?"));
            if followed {
                text.push_str(". It answers in this thread; reply here when it asks.");
            }
            Ok((text, true))
        }
        "dismiss" => {
            let Some(agent) = args.first() else { return Err(ApiError::invalid("name the AgentSpec to dismiss")) };
            let reason = Some(format!("from Slack by {}", caller.actor()));
            let Json(v) =
                control::dismiss(state(), caller, Path(agent.to_string()), OptionalBody(ActionRequest { reason }))
                    .await?;
            let n = v["dismissed"].as_array().map_or(0, Vec::len);
            Ok((format!("Dismissed *{agent}*: {n} running agents stopped; its jobs wait until it is summoned."), true))
        }
        "throttle" => {
            let Some(chapter) = args.first() else { return Err(ApiError::invalid("name the chapter to throttle")) };
            let tokens_per_hour = match args.get(1) {
                Some(n) => Some(
                    n.parse::<u64>()
                        .map_err(|_| ApiError::invalid(format!("`{n}` is not a number of tokens per hour")))?,
                ),
                None => None,
            };
            let req = ThrottleRequest { tokens_per_hour, clear: false };
            let Json(v) = budget::throttle(state(), caller, Path(chapter.to_string()), Body(req)).await?;
            let v = serde_json::to_value(&v).unwrap_or_default();
            Ok((format!("Throttled chapter *{chapter}* to {} tokens an hour.", v["tokens_per_hour"]), true))
        }
        _ => {
            // Anyone George knows may read the help.
            caller.require(Role::Viewer)?;
            Ok((HELP.to_string(), false))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(secret: &[u8], ts: i64, body: &[u8]) -> HeaderMap {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("v0:{ts}:").as_bytes());
        mac.update(body);
        let mut h = HeaderMap::new();
        h.insert("x-slack-request-timestamp", ts.to_string().parse().unwrap());
        h.insert("x-slack-signature", format!("v0={}", hex::encode(mac.finalize().into_bytes())).parse().unwrap());
        h
    }

    #[test]
    fn signatures_and_their_age_are_checked() {
        let (key, body, now) = (b"8f742231b10e8888abcd99yyyzzz85a5", b"command=%2Fgeorge&text=status", 1_700_000_000);
        assert!(verify(key, &signed(key, now, body), body, now).is_ok());
        assert!(verify(key, &signed(key, now - 299, body), body, now).is_ok());
        assert!(verify(key, &signed(key, now - 301, body), body, now).is_err(), "stale");
        assert!(verify(key, &signed(key, now + 301, body), body, now).is_err(), "from the future");
        assert!(verify(b"another-secret-0123456789", &signed(key, now, body), body, now).is_err());
        assert!(verify(key, &signed(key, now, body), b"command=%2Fgeorge&text=dismiss", now).is_err());
        assert!(verify(key, &HeaderMap::new(), body, now).is_err());
    }
}
