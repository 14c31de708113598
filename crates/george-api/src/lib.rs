//! The engine's HTTP API (REST v1 and the watch WebSockets) and the
//! dashboard: what the CLI, the browser and the agents use. Every endpoint
//! but `/healthz` and the dashboard's static files needs a bearer token: an
//! operator token (with a role: viewer, operator or admin) or an agent token
//! minted for one attempt of one job (which can touch only that job, and
//! only while its attempt is current).

mod access;
mod agent_api;
mod auth;
mod body;
mod budget;
mod children;
mod control;
mod dashboard;
pub mod edge;
mod error;
mod jobs;
mod llm;
mod logs;
pub mod openapi;
mod ops;
mod slack;
mod slack_events;
mod slack_thread;
mod slack_web;
mod traces;
mod triggers;
mod watch;

pub use auth::{Caller, OperatorTokens, BEARER_PROTOCOL_PREFIX, WATCH_PROTOCOL};
pub use error::ApiError;
pub use slack_thread::SlackWriteBack;
pub use slack_web::SlackWeb;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use george_engine::EngineHandle;
use george_runtime::AgentLogs;
use george_store::Store;
use std::sync::Arc;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Largest comment, injected message or evidence item kept in full.
pub const MAX_TEXT_BYTES: usize = 64 << 10;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The engine.
    pub engine: EngineHandle,
    /// The catalog submissions are planned with (kept between requests).
    pub catalog: Arc<george_engine::FollowedCatalog>,
    /// Operator tokens.
    pub operators: Arc<OperatorTokens>,
    /// Agent logs.
    pub logs: AgentLogs,
    /// The runtime (for logs its backend keeps, when this process has no file of them).
    pub runtime: Arc<dyn george_runtime::Runtime>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/ui/app.js", get(dashboard::script))
        .route("/ui/app.css", get(dashboard::style))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/api/v1/openapi.json", get(openapi::document_handler))
        .route("/api/v1/whoami", get(access::whoami))
        .route("/api/v1/tokens", get(access::list_tokens).post(access::mint_token))
        .route("/api/v1/tokens/{subject}", delete(access::revoke_token))
        .route("/api/v1/audit", get(access::audit))
        .route("/api/v1/watch", get(watch::all))
        .route("/api/v1/jobs/{id}/watch", get(watch::job))
        .route("/api/v1/jobs/{id}/override", post(jobs::override_status))
        .route("/api/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/api/v1/jobs/{id}/resubmit", post(jobs::resubmit))
        .route("/api/v1/jobs/{id}/children", get(children::list).post(children::create))
        .route("/metrics", get(ops::metrics))
        .route("/api/v1/jobs", get(jobs::list).post(jobs::submit))
        .route("/api/v1/jobs/{id}", get(jobs::get).delete(jobs::delete))
        .route("/api/v1/gc", post(ops::gc))
        .route("/api/v1/jobs/{id}/pause", post(jobs::pause))
        .route("/api/v1/jobs/{id}/resume", post(jobs::resume))
        .route("/api/v1/jobs/{id}/abort", post(jobs::abort))
        .route("/api/v1/jobs/{id}/approve", post(jobs::approve))
        .route("/api/v1/jobs/{id}/inject", post(jobs::inject))
        .route("/api/v1/jobs/{id}/comments", get(jobs::comments).post(agent_api::comment))
        .route("/api/v1/jobs/{id}/evidence", get(jobs::evidence).post(agent_api::evidence))
        .route("/api/v1/jobs/{id}/context", get(agent_api::context))
        .route("/api/v1/jobs/{id}/heartbeat", post(agent_api::heartbeat))
        .route("/api/v1/jobs/{id}/steps/{step}", post(agent_api::step))
        .route("/api/v1/jobs/{id}/report", post(agent_api::report))
        .route("/api/v1/jobs/{id}/reports", post(agent_api::reports))
        .route("/api/v1/jobs/{id}/attach", post(agent_api::attach))
        .route("/api/v1/agents", get(jobs::agents))
        .route("/api/v1/agents/{id}", get(jobs::agent))
        .route("/api/v1/agents/{id}/logs", get(logs::logs))
        .route("/api/v1/events", get(ops::events).post(triggers::webhook))
        .route("/api/v1/registry", get(control::registry))
        .route("/api/v1/registry/{agent}/dismiss", post(control::dismiss))
        .route("/api/v1/agents/{id}/halt", post(control::halt))
        .route("/api/v1/triggers", get(control::triggers))
        .route("/api/v1/status", get(control::status))
        .route("/api/v1/diagnose", get(control::diagnose))
        .route("/api/v1/summon", post(triggers::summon))
        .route("/api/v1/triggers/{name}", get(triggers::get))
        .route("/api/v1/triggers/{name}/fire", post(triggers::fire_now))
        .route("/api/v1/triggers/{name}/suspend", post(triggers::suspend))
        .route("/api/v1/triggers/{name}/resume", post(triggers::resume))
        .route("/api/v1/webhooks/jira", post(triggers::jira_webhook))
        .route("/api/v1/webhooks/github", post(triggers::github_webhook))
        .route("/api/v1/slack/commands", post(slack::command))
        .route("/api/v1/slack/events", post(slack_events::event))
        .route("/llm/v1/chat/completions", post(llm::chat_completions))
        .route("/llm/v1/messages", post(llm::messages))
        .route("/api/v1/sources", get(ops::sources))
        .route("/api/v1/sync", post(ops::sync))
        .route("/api/v1/ledger", get(budget::ledger))
        .route("/api/v1/budget", get(budget::report))
        .route("/api/v1/chapters/{chapter}/throttle", post(budget::throttle))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), traces::agent_calls))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), ops::count_request))
        .fallback(ops::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), access::record))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ops::gate_writes))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(edge::harden))
        .with_state(state)
}

/// Serves `GET /metrics` alone, without a token, on `listener` until
/// `shutdown` completes (`engine.metricsListen`: for a Prometheus that
/// scrapes without credentials; put it where only Prometheus reaches).
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", axum::routing::get(ops::open_metrics))
        .fallback(ops::not_found)
        .layer(axum::middleware::from_fn(edge::harden))
        .with_state(state);
    edge::serve(listener, app, shutdown, edge::EdgeConfig::default()).await
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    edge::serve(listener, router(state), shutdown, edge::EdgeConfig::default()).await
}
