//! Every error the API returns, and its HTTP status, in one place. The body
//! is always `{"error": {"code", "message", "field"?, "details"?}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use george_core::api::{ErrorBody, ErrorDetail};
use george_store::StoreError;

/// An API error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or unknown token.
    #[error("{0}")]
    Unauthorized(String),
    /// The token may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request names something (a template, an AgentSpec) that does not exist.
    #[error("{message}")]
    UnknownReference {
        /// What is missing.
        message: String,
        /// The field that names it.
        field: String,
    },
    /// A well-formed request that does not fit what the catalog holds now
    /// (the template's parameters, an AgentSpec able to run it).
    #[error("{message}")]
    Unfit {
        /// What does not fit.
        message: String,
        /// The field at fault.
        field: String,
        /// Every problem.
        details: Vec<String>,
    },
    /// The endpoint does not take this method (the answer's `Allow` names those it takes).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The endpoint is a WebSocket and the request is no upgrade to one.
    #[error("{0}")]
    UpgradeRequired(String),
    /// The request body or parameters are invalid.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// The field at fault.
        field: Option<String>,
        /// Every problem.
        details: Vec<String>,
    },
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// What the caller resumes from was compacted away: it must resync.
    #[error("{0}")]
    Resync(String),
    /// The caller's attempt is no longer current.
    #[error("{0}")]
    Superseded(String),
    /// Too much work is queued; try again later.
    #[error("{message}")]
    TooManyRequests {
        /// Why.
        message: String,
        /// When to try again.
        retry_after: std::time::Duration,
    },
    /// A token budget refuses the call.
    #[error("{message}")]
    BudgetExhausted {
        /// Which budget and why.
        message: String,
        /// When the budget's period ends.
        retry_after: std::time::Duration,
    },
    /// A rate limit holds the call back longer than the proxy waits inline.
    #[error("{message}")]
    RateLimited {
        /// Which limit.
        message: String,
        /// When the call would fit.
        retry_after: std::time::Duration,
    },
    /// A dependency (an LLM provider) is not configured.
    #[error("{0}")]
    Unavailable(String),
    /// This replica cannot serve the call now (it does not lead); another can.
    #[error("{message}")]
    NotLeading {
        /// Why.
        message: String,
        /// When to try again.
        retry_after: std::time::Duration,
    },
    /// The engine is still starting (adopting agents, applying its sources
    /// once): the same call succeeds shortly.
    #[error("{message}")]
    NotReady {
        /// What it waits for.
        message: String,
        /// When to try again.
        retry_after: std::time::Duration,
    },
    /// An upstream (an LLM provider) failed.
    #[error("{0}")]
    BadGateway(String),
    /// The body is too large.
    #[error("{0}")]
    TooLarge(String),
    /// The body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Something failed inside George.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// An invalid request with one message.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Invalid { message: message.into(), field: None, details: vec![] }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) | ApiError::UnknownReference { .. } => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::UpgradeRequired(_) => (StatusCode::UPGRADE_REQUIRED, "upgrade_required"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unfit { .. } => (StatusCode::CONFLICT, "unfit"),
            ApiError::Resync(_) => (StatusCode::GONE, "resync"),
            ApiError::Superseded(_) => (StatusCode::CONFLICT, "superseded"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "backpressure"),
            ApiError::BudgetExhausted { .. } => (StatusCode::TOO_MANY_REQUESTS, "budget_exhausted"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::NotLeading { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not_leading"),
            ApiError::NotReady { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "bad_gateway"),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::Superseded { .. } => ApiError::Superseded(format!("{e}; this agent must stop")),
            StoreError::Invalid(m) => ApiError::invalid(m),
            StoreError::Fenced(m) => ApiError::Unavailable(format!("{m}; retry: another replica leads now")),
            StoreError::Backend(_) => {
                tracing::error!(error = %e, "store failure");
                ApiError::Internal("the store failed; see the engine log".into())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let (field, details) = match &self {
            ApiError::Invalid { field, details, .. } => (field.clone(), details.clone()),
            ApiError::UnknownReference { field, .. } => (Some(field.clone()), vec![]),
            ApiError::Unfit { field, details, .. } => (Some(field.clone()), details.clone()),
            _ => (None, vec![]),
        };
        let body = ErrorBody { error: ErrorDetail { code: code.into(), message: self.to_string(), field, details } };
        let mut resp = (status, Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after, .. }
        | ApiError::BudgetExhausted { retry_after, .. }
        | ApiError::RateLimited { retry_after, .. }
        | ApiError::NotLeading { retry_after, .. }
        | ApiError::NotReady { retry_after, .. } = &self
        {
            let secs = retry_after.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if matches!(self, ApiError::NotLeading { .. }) {
            // Behind a Service, a new connection may reach another replica; this one would not.
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if matches!(self, ApiError::UpgradeRequired(_)) {
            resp.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"george\""));
        }
        resp
    }
}
