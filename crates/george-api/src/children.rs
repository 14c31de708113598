//! Sub-agents (see `george_engine::children`): an agent with the `spawn`
//! capability creates child jobs of its own job; operators and the job's
//! agent list them with their results.

use crate::body::Body;
use crate::{ApiError, ApiState, Caller};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use george_core::api::{ChildRequest, ChildView};
use george_engine::children::{self, ChildError};

fn child_error(e: ChildError) -> ApiError {
    match e {
        ChildError::Forbidden(m) => ApiError::Forbidden(m),
        ChildError::Limit(m) => ApiError::Conflict(m),
        ChildError::Unfit(message) => ApiError::Unfit { message, field: "template".into(), details: vec![] },
        ChildError::Invalid { message, field } => ApiError::Invalid { message, field: Some(field), details: vec![] },
        ChildError::Store(e) => e.into(),
    }
}

/// `POST /api/v1/jobs/{id}/children`: the job's current agent creates a
/// child job (`201`), or finds the one its key named before (`200`).
pub async fn create(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<ChildRequest>,
) -> Result<(StatusCode, Json<ChildView>), ApiError> {
    let attempt = caller.agent_of(&id)?;
    let parent = crate::agent_api::current_job(&st, &id, attempt).await?;
    let (child, created) = st.engine.spawn_child(&parent, &req).await.map_err(child_error)?;
    st.engine.nudge(&child.id);
    let view = children::view(st.store.as_ref(), &child).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(view)))
}

/// `GET /api/v1/jobs/{id}/children`: the job's children, oldest first, with
/// their status and, once ended, their summaries.
pub async fn list(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<ChildView>>, ApiError> {
    caller.may_read(&id)?;
    if st.store.get_job(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("job `{id}` not found")));
    }
    let mut out = Vec::new();
    for child in children::children(st.store.as_ref(), &id).await? {
        out.push(children::view(st.store.as_ref(), &child).await?);
    }
    Ok(Json(out))
}
