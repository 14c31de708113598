//! Who is calling: an operator (a configured token) or an agent (a token
//! minted for one attempt of one job).

use crate::{ApiError, ApiState};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use george_engine::tokens;
use std::collections::HashMap;

/// Operator tokens by hash, with the operator's name.
#[derive(Debug, Default)]
pub struct OperatorTokens {
    by_hash: HashMap<String, String>,
}

impl OperatorTokens {
    /// From `(name, token)` pairs.
    pub fn new(tokens: impl IntoIterator<Item = (String, String)>) -> Self {
        Self { by_hash: tokens.into_iter().map(|(name, t)| (tokens::hash(&t), name)).collect() }
    }

    /// Whether any token is configured.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    fn name(&self, token: &str) -> Option<&str> {
        self.by_hash.get(&tokens::hash(token)).map(String::as_str)
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A human or a script with an operator token.
    Operator {
        /// The token's name.
        name: String,
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
            Caller::Operator { name } => format!("operator:{name}"),
            Caller::Agent { job, attempt } => format!("agent:{}", george_core::api::agent_id(job, *attempt)),
        }
    }

    /// Refuses anyone but an operator.
    pub fn operator(&self) -> Result<&str, ApiError> {
        match self {
            Caller::Operator { name } => Ok(name),
            Caller::Agent { .. } => {
                Err(ApiError::Forbidden("this endpoint needs an operator token, not an agent token".into()))
            }
        }
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

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing `Authorization: Bearer <token>` header".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into()))?;
        if token.starts_with(tokens::AGENT_TOKEN_PREFIX) {
            if let Some((job, attempt)) = state.store.agent_for_token(&tokens::hash(token)).await? {
                return Ok(Caller::Agent { job, attempt });
            }
        } else if let Some(name) = state.operators.name(token) {
            return Ok(Caller::Operator { name: name.to_string() });
        }
        Err(ApiError::Unauthorized("invalid token".into()))
    }
}
