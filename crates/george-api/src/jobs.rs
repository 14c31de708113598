//! Operator endpoints for jobs and agents.

use crate::body::{Body, OptionalBody, QueryParams};
use crate::{ApiError, ApiState, Caller, MAX_TEXT_BYTES};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use george_core::api::{
    views, ActionRequest, AgentView, CommentView, EvidenceView, InjectRequest, JobView, OverrideRequest,
    ResubmitRequest, RetryRequest, SubmitJob,
};
use george_core::labels::Selector;
use george_core::plan::{JobRequest, Origin};
use george_core::Role;
use george_core::{DesiredState, EventKind, JobStatus, StepStatus};
use george_store::{Created, JobFilter, Override};
use serde::Deserialize;

/// `GET /api/v1/jobs` filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Comma-separated statuses.
    #[serde(default)]
    status: Option<String>,
    /// Chapter.
    #[serde(default)]
    chapter: Option<String>,
    /// Source.
    #[serde(default)]
    source: Option<String>,
    /// At most this many (default 500, at most 5000).
    #[serde(default)]
    limit: Option<u32>,
    /// Where the previous page ended (its `X-Next-After` header).
    #[serde(default)]
    after: Option<String>,
    /// `oldest` (default) or `newest` first.
    #[serde(default)]
    order: Option<String>,
    /// Only jobs whose labels meet this selector (`george_core::labels`).
    #[serde(default)]
    selector: Option<String>,
}

/// Jobs per page unless the caller asks for another size, and the most it may ask for.
const PAGE: u32 = 500;
const MAX_PAGE: u32 = 5000;

/// The cursor after `job`: a position in the list, `<creation time in µs
/// since the epoch>-<the job id in hex>`. Any string of that form
/// ([`CURSOR_PATTERN`]) is a position, whether a page ended there or not.
fn cursor(job: &george_store::Job) -> String {
    format!("{}-{}", job.created_at.timestamp_micros(), hex::encode(&job.id))
}

/// What a cursor looks like (the OpenAPI document states it).
pub const CURSOR_PATTERN: &str = "^[0-9]{1,16}-([0-9a-f]{2}){0,255}$";

fn parse_cursor(text: &str) -> Option<(chrono::DateTime<chrono::Utc>, String)> {
    let (micros, id) = text.split_once('-')?;
    if micros.is_empty() || micros.len() > 16 || !micros.bytes().all(|b| b.is_ascii_digit()) || id.len() > 510 {
        return None;
    }
    let at = chrono::DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, String::from_utf8_lossy(&hex::decode(id).ok()?).into_owned()))
}

pub async fn list(
    State(st): State<ApiState>,
    caller: Caller,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<(axum::http::HeaderMap, Json<Vec<JobView>>), ApiError> {
    caller.viewer()?;
    let mut status = Vec::new();
    for s in q.status.iter().flat_map(|s| s.split(',')).filter(|s| !s.is_empty()) {
        status.push(s.parse::<JobStatus>().map_err(|e| ApiError::Invalid {
            message: e.to_string(),
            field: Some("status".into()),
            details: vec![],
        })?);
    }
    let after = match q.after.as_deref() {
        None => None,
        Some(text) => Some(parse_cursor(text).ok_or_else(|| ApiError::Invalid {
            message: format!(
                "after: expected the X-Next-After value of the previous page (`<µs>-<hex>`), got {text:?}"
            ),
            field: Some("after".into()),
            details: vec![],
        })?),
    };
    let newest_first = match q.order.as_deref() {
        None | Some("oldest") => false,
        Some("newest") => true,
        Some(other) => {
            return Err(ApiError::Invalid {
                message: format!("order: expected `oldest` or `newest`, got {other:?}"),
                field: Some("order".into()),
                details: vec![],
            })
        }
    };
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let selector = match q.selector.as_deref() {
        None => Selector::default(),
        Some(text) => Selector::parse(text).map_err(|message| ApiError::Invalid {
            message,
            field: Some("selector".into()),
            details: vec![],
        })?,
    };
    let filter =
        JobFilter { status, chapter: q.chapter, source: q.source, selector, limit: Some(limit), after, newest_first };
    let jobs = st.store.list_jobs(&filter).await?;
    let mut headers = axum::http::HeaderMap::new();
    if let Some(last) = jobs.last().filter(|_| jobs.len() == limit as usize) {
        if let Ok(v) = axum::http::HeaderValue::from_str(&cursor(last)) {
            headers.insert("x-next-after", v);
        }
    }
    Ok((headers, Json(views(jobs))))
}

/// Why a job cannot be planned, as the API answers it: a template or
/// AgentSpec that does not exist is not found (404); parameters that do not
/// fit the template, or no AgentSpec able to run it, do not fit the catalog
/// as it is now (409); the rest (the environment, `parallelism`) is invalid
/// (400).
fn plan_error(template: &str, errs: &[george_core::template::ParamError]) -> ApiError {
    let first = &errs[0];
    let details = errs.iter().map(|e| e.to_string()).collect();
    match first.field.as_str() {
        field @ ("template" | "agent") if first.message.starts_with("unknown ") => ApiError::UnknownReference {
            message: format!("{first}; see GET /api/v1/registry and the manifests"),
            field: field.to_string(),
        },
        field if field == "agent" || field.starts_with("params") => ApiError::Unfit {
            message: format!("the job does not fit template `{template}`: {first}"),
            field: field.to_string(),
            details,
        },
        field if field.starts_with("env") => {
            ApiError::Invalid { message: format!("invalid job env: {first}"), field: Some(field.to_string()), details }
        }
        field => ApiError::Invalid {
            message: format!("the job does not fit template `{template}`: {first}"),
            field: Some(field.to_string()),
            details,
        },
    }
}

fn random_suffix() -> String {
    let mut b = [0u8; 3];
    getrandom::fill(&mut b).expect("the operating system's random source is unavailable");
    hex::encode(b)
}

pub async fn submit(
    State(st): State<ApiState>,
    caller: Caller,
    Body(req): Body<SubmitJob>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    create(&st, &caller, req, Origin { source: "api".into(), reference: None, revision: None }).await
}

/// `POST /api/v1/jobs/{id}/retry`: a failed, aborted or blocked job gets a
/// new attempt, keeping its completed steps unless `from_scratch`.
pub async fn retry(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalBody(req): OptionalBody<RetryRequest>,
) -> Result<Json<JobView>, ApiError> {
    caller.require(Role::Operator)?;
    if let Some(reason) = &req.reason {
        check_text("reason", reason)?;
    }
    let view = st.store.retry_job(&id, &caller.actor(), req.from_scratch, req.reason.as_deref()).await?;
    st.engine.nudge(&id);
    Ok(Json(view.into()))
}

/// `POST /api/v1/jobs/{id}/resubmit`: a new job like this one.
pub async fn resubmit(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalBody(req): OptionalBody<ResubmitRequest>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    caller.require(Role::Operator)?;
    let old = st.store.get_job(&id).await?.ok_or_else(|| ApiError::NotFound(format!("job `{id}` not found")))?;
    let mut params = old.params;
    params.extend(req.params);
    let again = SubmitJob {
        template: old.template,
        params,
        id: req.id,
        priority: Some(req.priority.unwrap_or(old.priority)),
        chapter: old.chapter,
        agent: Some(old.agent),
        env: st.store.job_env(&id).await?,
        parallelism: Some(old.parallelism),
        fail_fast: Some(old.fail_fast),
        labels: old.labels,
    };
    let origin = Origin { source: "api".into(), reference: Some(format!("resubmit of {id}")), revision: None };
    create(&st, &caller, again, origin).await
}

async fn create(
    st: &ApiState,
    caller: &Caller,
    req: SubmitJob,
    origin: Origin,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    caller.require(Role::Operator)?;
    let priority = req.priority.unwrap_or_default();
    if let Some(retry_after) = st.engine.control().backpressure(priority) {
        let message = format!(
            "the queue is full: {priority} jobs are refused until it drains; retry in {}s (higher priorities are still accepted)",
            retry_after.as_secs()
        );
        st.store
            .record_event(
                req.id.as_deref(),
                EventKind::JobRejected,
                &caller.actor(),
                serde_json::json!({"reason": "backpressure", "priority": priority, "template": req.template}),
            )
            .await?;
        return Err(ApiError::TooManyRequests { message, retry_after });
    }
    let id = match &req.id {
        Some(id) if !george_core::manifest::is_valid_name(id) => {
            return Err(ApiError::Invalid {
                message: format!("invalid job id `{id}`; use 1-63 lowercase letters, digits, `-`, `_` or `.`"),
                field: Some("id".into()),
                details: vec![],
            })
        }
        Some(id) => id.clone(),
        None => {
            let base: String = req.template.chars().take(50).collect();
            format!("{base}-{}", random_suffix())
        }
    };
    let catalog = st.catalog.get(st.store.as_ref()).await?;
    let request = JobRequest {
        id: &id,
        template: &req.template,
        params: &req.params,
        agent: req.agent.as_deref(),
        chapter: req.chapter.as_deref(),
        priority,
        desired: DesiredState::Active,
        env: &req.env,
        parallelism: req.parallelism,
        fail_fast: req.fail_fast,
        labels: &req.labels,
    };
    let job = catalog.plan(&request, origin).map_err(|errs| plan_error(&req.template, &errs))?;
    match st.store.create_job(job, &caller.actor()).await? {
        Created::New => {}
        Created::Existed => return Err(ApiError::Conflict(format!("job `{id}` already exists"))),
    }
    let view = st.store.get_job(&id).await?.ok_or_else(|| ApiError::NotFound(format!("job `{id}` not found")))?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

pub async fn get(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    caller.may_read(&id)?;
    let job = st.store.get_job(&id).await?.ok_or_else(|| ApiError::NotFound(format!("job `{id}` not found")))?;
    let mut view = JobView::from(job);
    view.attempts = views(st.store.job_attempts(&id).await?);
    Ok(Json(view))
}

async fn set_desired(
    st: &ApiState,
    caller: &Caller,
    id: &str,
    desired: DesiredState,
    reason: Option<String>,
) -> Result<Json<JobView>, ApiError> {
    caller.require(Role::Operator)?;
    let view = st.store.set_desired(id, desired, &caller.actor(), reason.as_deref()).await?;
    st.engine.nudge(id);
    Ok(Json(view.into()))
}

pub async fn pause(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalBody(req): OptionalBody<ActionRequest>,
) -> Result<Json<JobView>, ApiError> {
    set_desired(&st, &caller, &id, DesiredState::Paused, req.reason).await
}

pub async fn resume(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalBody(req): OptionalBody<ActionRequest>,
) -> Result<Json<JobView>, ApiError> {
    set_desired(&st, &caller, &id, DesiredState::Active, req.reason).await
}

pub async fn abort(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalBody(req): OptionalBody<ActionRequest>,
) -> Result<Json<JobView>, ApiError> {
    set_desired(&st, &caller, &id, DesiredState::Aborted, req.reason).await
}

/// Approves a job held by a red budget alert (seed 003: at red, each P0/P1
/// job needs a human's go-ahead before it starts).
pub async fn approve(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalBody(req): OptionalBody<ActionRequest>,
) -> Result<Json<JobView>, ApiError> {
    caller.require(Role::Operator)?;
    let view = st.store.get_job(&id).await?.ok_or_else(|| ApiError::NotFound(format!("job `{id}` not found")))?;
    let approval = serde_json::json!({"by": caller.actor(), "reason": req.reason});
    st.store.set_setting(&george_engine::alerts::approval_key(&id), Some(approval.clone())).await?;
    st.store.record_event(Some(&id), EventKind::JobApproved, &caller.actor(), approval).await?;
    st.engine.nudge(&id);
    Ok(Json(view.into()))
}

/// Sets a job's or a step's status by hand (audited with the reason).
pub async fn override_status(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<OverrideRequest>,
) -> Result<Json<JobView>, ApiError> {
    caller.require(Role::Operator)?;
    check_text("reason", &req.reason)?;
    let invalid = |message: String| ApiError::Invalid { message, field: Some("status".into()), details: vec![] };
    let target = match req.step {
        None => match req.status.parse::<JobStatus>() {
            Ok(s @ (JobStatus::Pending | JobStatus::Completed | JobStatus::Failed)) => Override::Job(s),
            _ => {
                return Err(invalid(format!(
                    "a job's status can be set to pending, completed or failed, not `{}`",
                    req.status
                )))
            }
        },
        Some(step) => match req.status.parse::<StepStatus>() {
            Ok(s @ (StepStatus::Pending | StepStatus::Completed | StepStatus::Skipped | StepStatus::Failed)) => {
                Override::Step { step, status: s }
            }
            _ => {
                return Err(invalid(format!(
                    "a step's status can be set to pending, completed, skipped or failed, not `{}`",
                    req.status
                )))
            }
        },
    };
    let view = st.store.override_status(&id, &target, &caller.actor(), req.reason.trim()).await?;
    st.engine.nudge(&id);
    Ok(Json(view.into()))
}

/// Checks a piece of text from a request.
pub fn check_text(field: &str, text: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::Invalid {
            message: format!("{field} must not be empty"),
            field: Some(field.into()),
            details: vec![],
        });
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::Invalid {
            message: format!("{field} is {} bytes; the limit is {MAX_TEXT_BYTES}", text.len()),
            field: Some(field.into()),
            details: vec![],
        });
    }
    Ok(())
}

pub async fn inject(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<InjectRequest>,
) -> Result<(StatusCode, Json<CommentView>), ApiError> {
    caller.require(Role::Operator)?;
    check_text("message", &req.message)?;
    let c = st.store.add_comment(&id, &caller.actor(), &req.message).await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}

pub async fn comments(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<CommentView>>, ApiError> {
    caller.may_read(&id)?;
    if st.store.get_job(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("job `{id}` not found")));
    }
    Ok(Json(views(st.store.comments(&id).await?)))
}

pub async fn evidence(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<EvidenceView>>, ApiError> {
    caller.may_read(&id)?;
    if st.store.get_job(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("job `{id}` not found")));
    }
    Ok(Json(views(st.store.evidence(&id).await?)))
}

/// `GET /api/v1/agents` options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsQuery {
    /// Include ended agents.
    #[serde(default)]
    all: bool,
    /// At most this many.
    #[serde(default)]
    limit: Option<u32>,
}

pub async fn agents(
    State(st): State<ApiState>,
    caller: Caller,
    QueryParams(q): QueryParams<AgentsQuery>,
) -> Result<Json<Vec<AgentView>>, ApiError> {
    caller.viewer()?;
    Ok(Json(views(st.store.list_agents(!q.all, q.limit.unwrap_or(500)).await?)))
}

/// Finds an agent by `<job>-<attempt>`.
pub async fn find_agent(st: &ApiState, id: &str) -> Result<george_store::Attempt, ApiError> {
    let not_found = || ApiError::NotFound(format!("agent `{id}` not found; agent ids are `<job>-<attempt>`"));
    let (job, attempt) = george_core::api::parse_agent_id(id).ok_or_else(not_found)?;
    st.store.get_agent(job, attempt).await?.ok_or_else(not_found)
}

pub async fn agent(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    caller.viewer()?;
    Ok(Json(find_agent(&st, &id).await?.into()))
}

/// `DELETE /api/v1/jobs/{id}`: a finished job, with its records, files and events.
pub async fn delete(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<george_core::api::GcReport>, ApiError> {
    caller.require(Role::Admin)?;
    use george_engine::retention::DeleteError;
    match st.engine.control().delete_job(&id, &caller.actor()).await {
        Ok(report) => Ok(Json(report)),
        Err(DeleteError::NotFound(_)) => Err(ApiError::NotFound(format!("job `{id}` not found"))),
        Err(e @ DeleteError::Refused { .. }) => Err(ApiError::Conflict(e.to_string())),
        Err(DeleteError::Store(e)) => Err(e.into()),
    }
}
