//! Who is calling and what they may do: an operator (a token from the
//! configuration or one minted through `POST /api/v1/tokens`, each with a
//! subject and a [`Role`]) or an agent (a token minted for one attempt of one
//! job).
//!
//! Browsers cannot set headers on a WebSocket, so a WebSocket upgrade may
//! carry the token as the subprotocol `george.bearer.<base64url(token)>`
//! beside `george.v1` (the convention Kubernetes uses for its API server).

use crate::{ApiError, ApiState};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use george_core::Role;
use george_engine::tokens;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The subprotocol that names the watch stream's framing.
pub const WATCH_PROTOCOL: &str = "george.v1";
/// The prefix of the subprotocol that carries a bearer token.
pub const BEARER_PROTOCOL_PREFIX: &str = "george.bearer.";
/// Settings key prefix of the tokens minted through the API.
pub const MINTED_TOKEN_PREFIX: &str = "api.token.";

/// Operator tokens from the configuration, by hash, with subject and role.
#[derive(Debug, Default)]
pub struct OperatorTokens {
    by_hash: HashMap<String, (String, Role)>,
}

impl OperatorTokens {
    /// From `(subject, role, token)` triples.
    pub fn new(tokens: impl IntoIterator<Item = (String, Role, String)>) -> Self {
        Self { by_hash: tokens.into_iter().map(|(name, role, t)| (tokens::hash(&t), (name, role))).collect() }
    }

    /// Whether any token is configured.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The configured subjects and roles.
    pub fn subjects(&self) -> Vec<(String, Role)> {
        let mut v: Vec<_> = self.by_hash.values().cloned().collect();
        v.sort();
        v
    }

    fn lookup(&self, token: &str) -> Option<&(String, Role)> {
        self.by_hash.get(&tokens::hash(token))
    }
}

/// A token minted through the API, as kept in the store's settings (the hash only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MintedToken {
    /// SHA-256 (hex) of the token.
    pub hash: String,
    /// Role.
    pub role: Role,
    /// Minted.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// By whom.
    pub created_by: String,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A human or a script with an operator token.
    Operator {
        /// The token's subject.
        name: String,
        /// What it may do.
        role: Role,
    },
    /// An agent.
    Agent {
        /// Its job.
        job: String,
        /// Its attempt.
        attempt: u32,
    },
}

impl Caller {
    /// The actor recorded in the audit log.
    pub fn actor(&self) -> String {
        match self {
            Caller::Operator { name, .. } => format!("operator:{name}"),
            Caller::Agent { job, attempt } => format!("agent:{}", george_core::api::agent_id(job, *attempt)),
        }
    }

    /// Refuses anyone but an operator whose role includes `needed`.
    pub fn require(&self, needed: Role) -> Result<&str, ApiError> {
        match self {
            Caller::Operator { name, role } if *role >= needed => Ok(name),
            Caller::Operator { name, role } => Err(ApiError::Forbidden(format!(
                "the token of `{name}` has role {role}; this needs {needed} (ask an admin for a token with that role)"
            ))),
            Caller::Agent { .. } => {
                Err(ApiError::Forbidden("this endpoint needs an operator token, not an agent token".into()))
            }
        }
    }

    /// Refuses anyone but an operator (any role may read).
    pub fn viewer(&self) -> Result<&str, ApiError> {
        self.require(Role::Viewer)
    }

    /// Refuses anyone but the agent of job `id` (returns its attempt).
    pub fn agent_of(&self, id: &str) -> Result<u32, ApiError> {
        match self {
            Caller::Agent { job, attempt } if job == id => Ok(*attempt),
            Caller::Agent { job, .. } => {
                Err(ApiError::Forbidden(format!("this agent token belongs to job `{job}`, not `{id}`")))
            }
            Caller::Operator { .. } => Err(ApiError::Forbidden("this endpoint is for the job's agent".into())),
        }
    }

    /// Allows an operator, or the agent of job `id`.
    pub fn may_read(&self, id: &str) -> Result<(), ApiError> {
        match self {
            Caller::Operator { .. } => Ok(()),
            _ => self.agent_of(id).map(|_| ()),
        }
    }
}

/// The bearer token of a request: the `Authorization` header, or on a
/// WebSocket upgrade the `george.bearer.` subprotocol.
fn bearer(parts: &Parts) -> Result<String, ApiError> {
    if let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        return header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into()));
    }
    let protocols = parts.headers.get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL);
    for p in protocols.iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim) {
        if let Some(encoded) = p.strip_prefix(BEARER_PROTOCOL_PREFIX) {
            return base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::Unauthorized(format!(
                        "the `{BEARER_PROTOCOL_PREFIX}` subprotocol must carry the token in unpadded base64url"
                    ))
                });
        }
    }
    Err(ApiError::Unauthorized(
        "missing `Authorization: Bearer <token>` header (WebSockets may use the `george.bearer.<base64url token>` subprotocol)"
            .into(),
    ))
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let token = bearer(parts)?;
        let caller = if token.starts_with(tokens::AGENT_TOKEN_PREFIX) {
            state
                .store
                .agent_for_token(&tokens::hash(&token))
                .await?
                .map(|(job, attempt)| Caller::Agent { job, attempt })
        } else if let Some((name, role)) = state.operators.lookup(&token) {
            Some(Caller::Operator { name: name.clone(), role: *role })
        } else {
            minted(state, &tokens::hash(&token)).await?
        };
        let caller = caller.ok_or_else(|| ApiError::Unauthorized("invalid token".into()))?;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

/// The operator behind a minted token's hash.
async fn minted(state: &ApiState, hash: &str) -> Result<Option<Caller>, ApiError> {
    for (key, value) in state.store.settings(MINTED_TOKEN_PREFIX).await? {
        let Ok(t) = serde_json::from_value::<MintedToken>(value) else { continue };
        if t.hash == hash {
            let name = key.trim_start_matches(MINTED_TOKEN_PREFIX).to_string();
            return Ok(Some(Caller::Operator { name, role: t.role }));
        }
    }
    Ok(None)
}
