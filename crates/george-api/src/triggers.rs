//! Trigger endpoints: webhook events (`POST /api/v1/events`, authenticated
//! by an HMAC-SHA256 signature of the body, not a bearer token) and manual
//! summons (`POST /api/v1/summon`, operators).

use crate::body::{Body, OptionalBody};
use crate::{ApiError, ApiState, Caller};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use george_core::api::ActionRequest;
use george_core::Role;
use george_engine::registry::{TriggerDetail, TriggerEntry};
use george_engine::triggers::{Fired, TriggerError};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The signature header: `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE_HEADER: &str = "x-george-signature";

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Checks the body's signature; GitHub's `X-Hub-Signature-256` and Jira's
/// `X-Hub-Signature` (both `sha256=<hex>`) are accepted too.
fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let given = header(headers, SIGNATURE_HEADER)
        .or_else(|| header(headers, "x-hub-signature-256"))
        .or_else(|| header(headers, "x-hub-signature"))
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|hexsig| hex::decode(hexsig).ok())
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "missing or malformed `X-George-Signature: sha256=<hex HMAC-SHA256 of the body>`".into(),
            )
        })?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| ApiError::Internal("bad webhook key".into()))?;
    mac.update(body);
    // Constant-time comparison.
    mac.verify_slice(&given).map_err(|_| ApiError::Unauthorized("the webhook signature does not match the body".into()))
}

fn trigger_error(e: TriggerError) -> ApiError {
    match e {
        TriggerError::NotFound(m) => ApiError::NotFound(m),
        // Parameters that do not fit the trigger's template as the catalog holds it now.
        TriggerError::Invalid(m) => ApiError::Unfit { message: m, field: "params".into(), details: vec![] },
        TriggerError::Store(e) => e.into(),
        e @ TriggerError::NotLeading => {
            ApiError::NotLeading { message: e.to_string(), retry_after: std::time::Duration::from_secs(1) }
        }
    }
}

/// `POST /api/v1/webhooks/jira`: a Jira webhook (issue created or updated,
/// comment created) makes the sources sync now instead of at the next poll.
pub async fn jira_webhook(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let secret = st.engine.triggers().jira_webhook_secret().ok_or_else(|| {
        ApiError::Unauthorized("Jira webhooks are not enabled on this engine (configure jira.webhookSecret)".into())
    })?;
    verify(secret, &headers, &body)?;
    let payload: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    let Some(event) = payload.get("webhookEvent").and_then(Value::as_str) else {
        return Err(ApiError::Invalid {
            message: "not a Jira webhook: `webhookEvent` is missing".into(),
            field: Some("webhookEvent".into()),
            details: vec![],
        });
    };
    Ok(sync_for(&st, "Jira", event.to_string()))
}

/// GitHub events that can make or change work: the rest are acknowledged and ignored.
const GITHUB_EVENTS: [&str; 2] = ["issues", "issue_comment"];

/// `POST /api/v1/webhooks/github`: a GitHub webhook (`issues`,
/// `issue_comment`), signed in `X-Hub-Signature-256`, makes the sources
/// sync now instead of at the next poll. `ping` is answered; other events
/// are acknowledged and ignored. A replayed delivery only asks for a sync,
/// which claims nothing twice.
pub async fn github_webhook(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let secret = st.engine.triggers().github_webhook_secret().ok_or_else(|| {
        ApiError::Unauthorized("GitHub webhooks are not enabled on this engine (configure github.webhookSecret)".into())
    })?;
    verify(secret, &headers, &body)?;
    serde_json::from_slice::<Value>(&body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    let event = header(&headers, "x-github-event").ok_or_else(|| ApiError::Invalid {
        message: "not a GitHub webhook: the `X-GitHub-Event` header is missing".into(),
        field: Some("X-GitHub-Event".into()),
        details: vec![],
    })?;
    if event == "ping" {
        return Ok((StatusCode::OK, Json(json!({"accepted": true, "event": "ping"}))));
    }
    if !GITHUB_EVENTS.contains(&event) {
        return Ok((StatusCode::ACCEPTED, Json(json!({"accepted": false, "event": event}))));
    }
    Ok(sync_for(&st, "GitHub", event.to_string()))
}

/// Asks the sources to sync now, for a verified webhook of `what`.
fn sync_for(st: &ApiState, what: &str, event: String) -> (StatusCode, Json<Value>) {
    if let Err(e) = st.engine.triggers().sync_soon() {
        tracing::warn!(error = %e, webhook = what, "cannot sync after a webhook");
    }
    tracing::info!(event = %event, webhook = what, "webhook: syncing now");
    (StatusCode::ACCEPTED, Json(json!({"accepted": true, "event": event})))
}

pub async fn webhook(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let secret = st.engine.triggers().webhook_secret().ok_or_else(|| {
        ApiError::Unauthorized("webhooks are not enabled on this engine (configure webhooks.secret)".into())
    })?;
    verify(secret, &headers, &body)?;
    let payload: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    if !payload.is_object() {
        return Err(ApiError::invalid("an event must be a JSON object"));
    }
    // Only the body is signed, so everything that decides what happens comes
    // from it: headers could be changed by anyone replaying a signed body. A
    // replayed body names the same delivery, hence the same job: a no-op.
    let source = payload.get("source").and_then(Value::as_str);
    let event = payload.get("event").and_then(Value::as_str);
    let delivery = match payload.get("delivery").and_then(Value::as_str) {
        Some(d) => d.to_string(),
        None => hex::encode(&Sha256::digest(&body)[..8]),
    };
    let fired: Vec<Fired> =
        st.engine.triggers().event(source, event, &delivery, &payload).await.map_err(trigger_error)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"fired": fired}))))
}

/// `POST /api/v1/summon`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SummonRequest {
    pub(crate) agent: String,
    #[serde(default)]
    pub(crate) template: Option<String>,
    #[serde(default)]
    pub(crate) context: BTreeMap<String, Value>,
    #[serde(default)]
    pub(crate) priority: Option<george_core::Priority>,
    /// Labels of the job (set by George itself, e.g. the Slack thread of a summon; not part of the API).
    #[serde(skip)]
    pub(crate) labels: george_core::labels::Labels,
}

/// `POST /api/v1/triggers/{name}/fire`: the trigger fires once now.
pub async fn fire_now(
    State(st): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Fired>), ApiError> {
    caller.require(Role::Operator)?;
    let fired = st.engine.triggers().fire_now(&name, &caller.actor()).await.map_err(trigger_error)?;
    Ok((StatusCode::CREATED, Json(fired)))
}

/// `GET /api/v1/triggers/{name}`: the trigger with its recent history.
pub async fn get(
    State(st): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<TriggerDetail>, ApiError> {
    caller.viewer()?;
    st.engine
        .triggers()
        .get(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("unknown Trigger `{name}`")))
        .map(Json)
}

/// `POST /api/v1/triggers/{name}/suspend`: it fires only by hand until resumed.
pub async fn suspend(
    State(st): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    OptionalBody(req): OptionalBody<ActionRequest>,
) -> Result<Json<TriggerEntry>, ApiError> {
    caller.require(Role::Operator)?;
    // An empty reason is no reason.
    let reason = req.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
    if let Some(reason) = reason {
        crate::jobs::check_text("reason", reason)?;
    }
    st.engine.triggers().suspend(&name, &caller.actor(), reason).await.map_err(trigger_error)?;
    entry(&st, &name).await
}

/// `POST /api/v1/triggers/{name}/resume`: its schedule and events fire it again.
pub async fn resume(
    State(st): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<TriggerEntry>, ApiError> {
    caller.require(Role::Operator)?;
    st.engine.triggers().resume(&name, &caller.actor()).await.map_err(trigger_error)?;
    entry(&st, &name).await
}

async fn entry(st: &ApiState, name: &str) -> Result<Json<TriggerEntry>, ApiError> {
    let detail = st.engine.triggers().get(name).await?;
    detail.map(|d| Json(d.entry)).ok_or_else(|| ApiError::NotFound(format!("unknown Trigger `{name}`")))
}

pub async fn summon(
    State(st): State<ApiState>,
    caller: Caller,
    Body(req): Body<SummonRequest>,
) -> Result<(StatusCode, Json<Fired>), ApiError> {
    caller.require(Role::Operator)?;
    let extras = george_engine::triggers::JobExtras { priority: req.priority, labels: req.labels };
    let fired = st
        .engine
        .triggers()
        .summon_with(&req.agent, req.template.as_deref(), &req.context, &extras, &caller.actor())
        .await
        .map_err(trigger_error)?;
    // A dismissed AgentSpec is back: its held jobs start again.
    let key = george_engine::registry::dismissal_key(&req.agent);
    if st.store.setting(&key).await?.is_some() {
        st.store.set_setting(&key, None).await?;
        let held = george_store::JobFilter { status: vec![george_core::JobStatus::Pending], ..Default::default() };
        for job in st.store.list_jobs(&held).await?.into_iter().filter(|j| j.agent == req.agent) {
            st.engine.nudge(&job.id);
        }
    }
    Ok((StatusCode::CREATED, Json(fired)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked() {
        let body = br#"{"event":"x"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let mut h = HeaderMap::new();
        h.insert(SIGNATURE_HEADER, good.parse().unwrap());
        assert!(verify(b"k", &h, body).is_ok());
        assert!(verify(b"other", &h, body).is_err());
        assert!(verify(b"k", &h, br#"{"event":"y"}"#).is_err());
        assert!(verify(b"k", &HeaderMap::new(), body).is_err());
    }
}
