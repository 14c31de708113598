//! An agent's calls to the API as spans of its attempt's trace
//! (`george_engine::trace`): `METHOD route` server spans, children of the span the agent's
//! `traceparent` names within its own trace, else of the attempt's root.
//! The LLM proxy makes its own span (`llm.call`, in [`crate::llm`]).

use crate::{ApiState, Caller};
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use george_engine::trace::{self, AttemptTrace};
use tracing::Instrument;

pub async fn agent_calls(State(st): State<ApiState>, route: MatchedPath, req: Request, next: Next) -> Response {
    if !trace::enabled() || route.as_str().starts_with("/llm/") {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    // Cached in the request for the handler: the token is looked up once.
    let caller = Caller::from_request_parts(&mut parts, &st).await.ok();
    let Some(Caller::Agent { job, attempt }) = caller else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let Ok(Some(record)) = st.store.get_job(&job).await else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let method = parts.method.as_str().to_string();
    let span = tracing::info_span!(
        target: trace::TARGET,
        "agent.call",
        otel.name = format!("{method} {}", route.as_str()),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route.as_str(),
        george.job = %job,
        george.attempt = attempt,
        http.response.status_code = tracing::field::Empty,
    );
    let traceparent = parts.headers.get(trace::HEADER).and_then(|v| v.to_str().ok());
    AttemptTrace::of(&job, record.created_at, attempt).adopt(&span, traceparent);
    let response = next.run(Request::from_parts(parts, body)).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}
