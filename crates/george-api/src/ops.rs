//! Health, metrics, the event log, sources and sync.

use crate::body::QueryParams;
use crate::{ApiError, ApiState, Caller};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use george_core::api::{views, EventView, SourceView, SyncResult};
use george_core::Role;
use george_engine::metrics::{HttpLabel, PriorityLabel, RouteLabel, StatusLabel};
use serde::Deserialize;

/// How long `POST /api/v1/sync` waits for the sources.
const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: `200 ready` (or `200 standby`) once writes are taken;
/// `503 starting: <what>` with `Retry-After` until then.
pub async fn readyz(State(st): State<ApiState>) -> axum::response::Response {
    let phase = st.engine.readiness();
    let text = format!("{}\n", phase.describe());
    if phase.accepts_writes() {
        (axum::http::StatusCode::OK, text).into_response()
    } else {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], text).into_response()
    }
}

/// How long a write waits for a starting engine before `503 not_ready`.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Holds every write (any method but GET and HEAD) until the engine is
/// ready, for up to [`READY_WAIT`], then refuses it with `503 not_ready`, so
/// nothing submitted while it starts is judged against state it has not
/// loaded yet (a job naming a template the first source apply is about to
/// store).
pub async fn gate_writes(
    State(st): State<ApiState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let reads = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    if !reads && !st.engine.accepting_writes(READY_WAIT).await {
        return ApiError::NotReady {
            message: format!("george is {}; try again shortly", st.engine.readiness().describe()),
            retry_after: george_engine::readiness::RETRY_AFTER,
        }
        .into_response();
    }
    next.run(req).await
}

/// Counts each request by route (`george_api_requests`): what an agent or a
/// client costs the engine in round trips.
pub async fn count_request(
    State(st): State<ApiState>,
    path: axum::extract::MatchedPath,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let label = RouteLabel { method: req.method().as_str().to_string(), route: path.as_str().to_string() };
    let metrics = st.engine.metrics();
    metrics.api_requests.get_or_create(&label).inc();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let http = HttpLabel { method: label.method, route: label.route, status: resp.status().as_u16().to_string() };
    metrics.http_duration.get_or_create(&http).observe(started.elapsed().as_secs_f64());
    resp
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; the API lives under /api/v1".into())
}

pub async fn metrics(State(st): State<ApiState>, caller: Caller) -> Result<impl IntoResponse, ApiError> {
    caller.viewer()?;
    encode_metrics(&st).await
}

/// `GET /metrics` on `engine.metricsListen`: no token.
pub async fn open_metrics(State(st): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    encode_metrics(&st).await
}

async fn encode_metrics(st: &ApiState) -> Result<impl IntoResponse, ApiError> {
    let m = st.engine.metrics();
    m.jobs.clear();
    for (status, n) in st.store.count_by_status().await? {
        m.jobs.get_or_create(&StatusLabel { status: status.to_string() }).set(n as i64);
    }
    m.queue_depth.set(st.engine.queue_depth() as i64);
    st.engine.refresh_budget_metrics();
    m.scheduler_queued.clear();
    for (priority, n) in st.engine.scheduler_depth() {
        m.scheduler_queued.get_or_create(&PriorityLabel { priority: priority.to_string() }).set(n as i64);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &m.registry)
        .map_err(|e| ApiError::Internal(format!("cannot encode metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text))
}

/// `GET /api/v1/events` options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Events after this sequence number.
    #[serde(default)]
    since: i64,
    /// At most this many (default 500, at most 5000).
    #[serde(default)]
    limit: Option<u32>,
    /// Only events of this job.
    #[serde(default)]
    job: Option<String>,
    /// Instead of `since`: the newest this many (1 to 5000), oldest first.
    #[serde(default)]
    last: Option<u32>,
}

/// The newest `last` of a query, checked (1 to 5000).
pub(crate) fn tail_size(last: Option<u32>) -> Result<Option<usize>, ApiError> {
    match last {
        None => Ok(None),
        Some(n @ 1..=5000) => Ok(Some(n as usize)),
        Some(n) => Err(ApiError::Invalid {
            message: format!("last: expected 1 to 5000 events, got {n}"),
            field: Some("last".into()),
            details: vec![],
        }),
    }
}

pub async fn events(
    State(st): State<ApiState>,
    caller: Caller,
    QueryParams(q): QueryParams<EventsQuery>,
) -> Result<Json<Vec<EventView>>, ApiError> {
    caller.viewer()?;
    if let Some(last) = tail_size(q.last)? {
        // The newest `last`: whole-log events are numbered densely enough to start near the end;
        // one job's are read from its beginning (a job has few).
        let latest = st.store.latest_seq().await?;
        let since = if q.job.is_none() { (latest - last as i64).max(0) } else { 0 };
        let mut events = Vec::new();
        let mut from = since;
        loop {
            let page = st.store.events_since(from, 5000, q.job.as_deref()).await?;
            let Some(end) = page.last().map(|e| e.seq) else { break };
            from = end;
            events.extend(page);
            if events.len() > last {
                events.drain(..events.len() - last);
            }
        }
        return Ok(Json(views(events)));
    }
    if q.job.is_none() {
        crate::watch::check_not_compacted(&st, q.since).await?;
    }
    let limit = q.limit.unwrap_or(500).min(5000);
    Ok(Json(views(st.store.events_since(q.since, limit, q.job.as_deref()).await?)))
}

pub async fn sources(State(st): State<ApiState>, caller: Caller) -> Result<Json<Vec<SourceView>>, ApiError> {
    caller.viewer()?;
    Ok(Json(st.store.sources().await?))
}

pub async fn sync(State(st): State<ApiState>, caller: Caller) -> Result<Json<SyncResult>, ApiError> {
    caller.require(Role::Operator)?;
    // A standby replica runs no sources: send the caller elsewhere at once.
    if !st.engine.is_running(std::time::Duration::from_secs(2)).await {
        return Err(ApiError::NotLeading {
            message: "this replica does not run the engine (a standby), so it syncs no sources; try again: another replica leads".into(),
            retry_after: std::time::Duration::from_secs(1),
        });
    }
    let standby = || {
        let secs = SYNC_TIMEOUT.as_secs();
        ApiError::Unavailable(format!(
            "no sync within {secs}s: this replica may be a standby (only the leader syncs sources); retry on the leader"
        ))
    };
    let synced = tokio::time::timeout(SYNC_TIMEOUT, st.engine.triggers().sync_now()).await.map_err(|_| standby())?;
    let outcomes = synced.map_err(|e| ApiError::Internal(e.to_string()))?;
    let failed = outcomes
        .into_iter()
        .filter(|o| !o.errors.is_empty())
        .map(|o| george_core::api::SourceFailure { source: o.source, errors: o.errors })
        .collect();
    Ok(Json(SyncResult { sources: st.store.sources().await?, failed }))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GcQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/v1/gc`: a retention pass now (or, `dryRun`, what it would delete).
pub async fn gc(
    State(st): State<ApiState>,
    caller: Caller,
    crate::body::QueryParams(q): crate::body::QueryParams<GcQuery>,
) -> Result<Json<george_core::api::GcReport>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(st.engine.control().gc(q.dry_run).await?))
}
