//! Token accounting for operators: the ledger of LLM calls, the budget
//! report (seed 003 `MANA_REPORT_V1`) and chapter throttles.

use crate::body::{Body, QueryParams};
use crate::{ApiError, ApiState, Caller};
use axum::extract::{Path, State};
use axum::Json;
use george_core::api::{BudgetReport, ThrottleRequest, ThrottleView, UsageRecord};
use george_core::Role;
use george_engine::report::ThrottleError;
use george_governor::Period;
use serde::Deserialize;

/// `GET /api/v1/ledger` options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    /// Only this job's calls.
    #[serde(default)]
    job: Option<String>,
    /// Calls since (RFC 3339; default: the start of the month).
    #[serde(default)]
    since: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn ledger(
    State(st): State<ApiState>,
    caller: Caller,
    QueryParams(q): QueryParams<LedgerQuery>,
) -> Result<Json<Vec<UsageRecord>>, ApiError> {
    caller.viewer()?;
    let since = q.since.unwrap_or_else(|| Period::Month.start(st.engine.now()));
    Ok(Json(st.store.usage_records(since, q.job.as_deref()).await?))
}

/// `GET /api/v1/budget` options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// `day` or `month` (default).
    #[serde(default)]
    period: Option<Period>,
}

pub async fn report(
    State(st): State<ApiState>,
    caller: Caller,
    QueryParams(q): QueryParams<ReportQuery>,
) -> Result<Json<BudgetReport>, ApiError> {
    caller.viewer()?;
    Ok(Json(st.engine.control().budget_report(q.period.unwrap_or(Period::Month)).await?))
}

pub async fn throttle(
    State(st): State<ApiState>,
    caller: Caller,
    Path(chapter): Path<String>,
    Body(req): Body<ThrottleRequest>,
) -> Result<Json<ThrottleView>, ApiError> {
    caller.require(Role::Admin)?;
    st.engine.control().throttle(&chapter, &req, &caller.actor()).await.map(Json).map_err(|e| match e {
        ThrottleError::UnknownChapter(_) => ApiError::NotFound(e.to_string()),
        ThrottleError::Invalid(m) => {
            ApiError::Invalid { message: m, field: Some("tokens_per_hour".into()), details: vec![] }
        }
        ThrottleError::Store(e) => e.into(),
    })
}
