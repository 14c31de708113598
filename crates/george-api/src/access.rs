//! Access control as a resource: who am I, the operator tokens (minted and
//! revoked by admins), and the audit log — one `audit` event, naming the
//! token's subject, for every mutating call an operator makes that succeeds.

use crate::auth::{MintedToken, MINTED_TOKEN_PREFIX};
use crate::body::{Body, QueryParams};
use crate::{ApiError, ApiState, Caller};
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use george_core::api::{EventView, TokenRequest, TokenView, WhoAmI};
use george_core::{EventKind, Role};
use serde::Deserialize;

pub async fn whoami(caller: Caller) -> Json<WhoAmI> {
    Json(match &caller {
        Caller::Operator { name, role } => WhoAmI { subject: name.clone(), role: Some(*role) },
        Caller::Agent { job, attempt } => WhoAmI { subject: george_core::api::agent_id(job, *attempt), role: None },
    })
}

pub async fn list_tokens(State(st): State<ApiState>, caller: Caller) -> Result<Json<Vec<TokenView>>, ApiError> {
    caller.require(Role::Admin)?;
    let mut out: Vec<TokenView> = st
        .operators
        .subjects()
        .into_iter()
        .map(|(subject, role)| TokenView { subject, role, origin: "config".into(), created_at: None, token: None })
        .collect();
    for (key, value) in st.store.settings(MINTED_TOKEN_PREFIX).await? {
        let Ok(t) = serde_json::from_value::<MintedToken>(value) else { continue };
        out.push(TokenView {
            subject: key.trim_start_matches(MINTED_TOKEN_PREFIX).to_string(),
            role: t.role,
            origin: "api".into(),
            created_at: Some(t.created_at),
            token: None,
        });
    }
    Ok(Json(out))
}

pub async fn mint_token(
    State(st): State<ApiState>,
    caller: Caller,
    Body(req): Body<TokenRequest>,
) -> Result<(StatusCode, Json<TokenView>), ApiError> {
    caller.require(Role::Admin)?;
    if !george_core::manifest::is_valid_name(&req.subject) {
        return Err(ApiError::Invalid {
            message: format!("invalid subject `{}`; use 1-63 lowercase letters, digits, `-`, `_` or `.`", req.subject),
            field: Some("subject".into()),
            details: vec![],
        });
    }
    let key = format!("{MINTED_TOKEN_PREFIX}{}", req.subject);
    let taken = st.operators.subjects().iter().any(|(s, _)| *s == req.subject);
    if taken || st.store.setting(&key).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "subject `{}` already has a token; revoke it first (DELETE /api/v1/tokens/{})",
            req.subject, req.subject
        )));
    }
    let mut secret = [0u8; 24];
    getrandom::fill(&mut secret).map_err(|e| ApiError::Internal(format!("no randomness: {e}")))?;
    let token = format!("gop_{}", hex::encode(secret));
    let now = st.engine.now();
    let record = MintedToken {
        hash: george_engine::tokens::hash(&token),
        role: req.role,
        created_at: now,
        created_by: caller.actor(),
    };
    let value = serde_json::to_value(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
    st.store.set_setting(&key, Some(value)).await?;
    st.store
        .record_event(
            None,
            EventKind::TokenMinted,
            &caller.actor(),
            serde_json::json!({"subject": req.subject, "role": req.role}),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenView {
            subject: req.subject,
            role: req.role,
            origin: "api".into(),
            created_at: Some(now),
            token: Some(token),
        }),
    ))
}

pub async fn revoke_token(
    State(st): State<ApiState>,
    caller: Caller,
    Path(subject): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let key = format!("{MINTED_TOKEN_PREFIX}{subject}");
    if st.store.setting(&key).await?.is_none() {
        let hint = if st.operators.subjects().iter().any(|(s, _)| *s == subject) {
            "; it comes from the configuration: remove it there"
        } else {
            ""
        };
        return Err(ApiError::NotFound(format!("no minted token for subject `{subject}`{hint}")));
    }
    st.store.set_setting(&key, None).await?;
    st.store
        .record_event(None, EventKind::TokenRevoked, &caller.actor(), serde_json::json!({"subject": subject}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/audit` options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Records after this event sequence number.
    #[serde(default)]
    since: i64,
    /// At most this many (default 500, at most 5000).
    #[serde(default)]
    limit: Option<u32>,
    /// Instead of `since`: the newest this many (1 to 5000), oldest first.
    #[serde(default)]
    last: Option<u32>,
}

/// The audit log: who did what, oldest first.
pub async fn audit(
    State(st): State<ApiState>,
    caller: Caller,
    QueryParams(q): QueryParams<AuditQuery>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    caller.viewer()?;
    let tail = crate::ops::tail_size(q.last)?;
    let limit = q.limit.unwrap_or(500).min(5000) as usize;
    let mut out = Vec::new();
    let mut since = if tail.is_some() { 0 } else { q.since };
    loop {
        let page = st.store.events_since(since, 5000, None).await?;
        let Some(last) = page.last() else { break };
        since = last.seq;
        out.extend(page.into_iter().filter(|e| e.kind == EventKind::Audit).map(EventView::from));
        match tail {
            // The newest `n`: read on, keeping the last ones.
            Some(n) if out.len() > n => {
                out.drain(..out.len() - n);
            }
            Some(_) => {}
            None if out.len() >= limit => {
                out.truncate(limit);
                break;
            }
            None => {}
        }
    }
    Ok(Json(out))
}

/// Records an `audit` event for every successful mutating call by an operator.
pub async fn record(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !mutating {
        return next.run(req).await;
    }
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let (mut parts, body) = req.into_parts();
    let caller = <Caller as axum::extract::FromRequestParts<ApiState>>::from_request_parts(&mut parts, &st).await.ok();
    let response = next.run(Request::from_parts(parts, body)).await;
    if let Some(caller @ Caller::Operator { .. }) = caller {
        if response.status().is_success() {
            let data = serde_json::json!({"method": method, "path": path, "status": response.status().as_u16()});
            if let Err(e) = st.store.record_event(None, EventKind::Audit, &caller.actor(), data).await {
                tracing::error!(error = %e, %method, %path, "cannot record the audit event");
            }
        }
    }
    response
}
