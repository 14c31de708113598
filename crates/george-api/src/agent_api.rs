//! The endpoints an agent uses for its own job. Each one checks that the
//! token belongs to this job, and the store refuses (409 `superseded`) any
//! write from an attempt that is no longer the job's current, live one.

use crate::body::Body;
use crate::jobs::check_text;
use crate::{ApiError, ApiState, Caller, MAX_TEXT_BYTES};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use george_core::api::{
    AgentContext, AgentReport, CommentRequest, CommentView, EvidenceReport, EvidenceView, JobReport, ReportBatch,
    StepReport, MAX_REPORTS,
};
use george_store::Report;

pub async fn context(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AgentContext>, ApiError> {
    let attempt = caller.agent_of(&id)?;
    Ok(Json(context_of(&st, &id, attempt).await?))
}

/// The agent's first call: everything it needs, and its first heartbeat
/// (the attempt becomes active) — one round trip instead of two.
pub async fn attach(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AgentContext>, ApiError> {
    let attempt = caller.agent_of(&id)?;
    let ctx = context_of(&st, &id, attempt).await?;
    st.store.heartbeat(&id, attempt).await?;
    Ok(Json(ctx))
}

/// Job `id`, if `attempt` is its current attempt and that attempt's agent
/// is live and recorded; else the refusal its agent gets.
pub(crate) async fn current_job(st: &ApiState, id: &str, attempt: u32) -> Result<george_core::record::Job, ApiError> {
    let job = st.store.get_job(id).await?.ok_or_else(|| ApiError::NotFound(format!("job `{id}` not found")))?;
    if job.attempt != attempt {
        return Err(ApiError::Superseded(format!(
            "attempt {attempt} of job `{id}` is superseded (the current attempt is {}); this agent must stop",
            job.attempt
        )));
    }
    // Only the current attempt's live agent, whose handle the engine has
    // recorded (it owns that exact process, container or Job), may act.
    match st.store.get_agent(id, attempt).await? {
        Some(a) if a.state.is_live() && a.handle.is_some() => {}
        Some(a) if a.state.is_live() => {
            return Err(ApiError::NotReady {
                message: format!("the engine has not yet recorded the agent of attempt {attempt} of job `{id}`"),
                retry_after: std::time::Duration::from_secs(1),
            })
        }
        _ => {
            return Err(ApiError::Superseded(format!(
                "attempt {attempt} of job `{id}` has ended; this agent must stop"
            )))
        }
    }
    Ok(job)
}

async fn context_of(st: &ApiState, id: &str, attempt: u32) -> Result<AgentContext, ApiError> {
    let job = current_job(st, id, attempt).await?;
    Ok(st.engine.agent_context(job, attempt).await?)
}

pub async fn heartbeat(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let attempt = caller.agent_of(&id)?;
    st.store.heartbeat(&id, attempt).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn step(
    State(st): State<ApiState>,
    caller: Caller,
    Path((id, step)): Path<(String, String)>,
    Body(report): Body<StepReport>,
) -> Result<StatusCode, ApiError> {
    let attempt = caller.agent_of(&id)?;
    if let Some(reason) = &report.reason {
        check_text("reason", reason)?;
    }
    st.store.report_step(&id, attempt, &step, &report).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cap(s: &str, max: usize) -> (&str, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

pub async fn evidence(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(ev): Body<EvidenceReport>,
) -> Result<(StatusCode, Json<EvidenceView>), ApiError> {
    let attempt = caller.agent_of(&id)?;
    check_evidence_kind(&ev.kind, "kind")?;
    let (content, truncated) = cap(&ev.content, MAX_TEXT_BYTES);
    let view = st.store.add_evidence(&id, attempt, ev.step_id.as_deref(), &ev.kind, content, truncated).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

fn check_evidence_kind(kind: &str, field: &str) -> Result<(), ApiError> {
    if kind.trim().is_empty() || kind.len() > 64 {
        return Err(ApiError::Invalid {
            message: format!("{field} must be 1-64 characters"),
            field: Some(field.into()),
            details: vec![],
        });
    }
    Ok(())
}

fn check_reason(field: &str, reason: Option<&str>) -> Result<(), ApiError> {
    match reason {
        Some(r) if r.len() > MAX_TEXT_BYTES => Err(ApiError::Invalid {
            message: format!("{field} is over {MAX_TEXT_BYTES} bytes"),
            field: Some(field.into()),
            details: vec![],
        }),
        _ => Ok(()),
    }
}

/// An agent's batch of reports (step statuses, evidence, comments, the
/// verdict last): one round trip and one transaction, all or nothing.
pub async fn reports(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(mut batch): Body<ReportBatch>,
) -> Result<StatusCode, ApiError> {
    let attempt = caller.agent_of(&id)?;
    if batch.reports.len() > MAX_REPORTS {
        return Err(ApiError::Invalid {
            message: format!("at most {MAX_REPORTS} reports in one batch, not {}", batch.reports.len()),
            field: Some("reports".into()),
            details: vec![],
        });
    }
    let mut out = Vec::with_capacity(batch.reports.len());
    for (i, r) in std::mem::take(&mut batch.reports).into_iter().enumerate() {
        out.push(match r {
            AgentReport::Step { step, status, reason, at } => {
                check_reason(&format!("reports[{i}].reason"), reason.as_deref())?;
                Report::Step { step, report: StepReport { status, reason }, at }
            }
            AgentReport::Evidence(ev) => {
                check_evidence_kind(&ev.kind, &format!("reports[{i}].kind"))?;
                let (content, truncated) = cap(&ev.content, MAX_TEXT_BYTES);
                Report::Evidence { step: ev.step_id, kind: ev.kind, content: content.to_string(), truncated }
            }
            AgentReport::TryFailed { step, number, of, result, stderr, retry_in_ms } => {
                let (stderr, _) = cap(&stderr, 4096);
                let (result, _) = cap(&result, 1024);
                Report::TryFailed {
                    step,
                    number,
                    of,
                    result: result.to_string(),
                    stderr: stderr.to_string(),
                    retry_in_ms,
                }
            }
            AgentReport::Comment(c) => {
                check_text(&format!("reports[{i}].body"), &c.body)?;
                Report::Comment { body: c.body }
            }
            AgentReport::Verdict(v) => {
                check_reason(&format!("reports[{i}].reason"), v.reason.as_deref())?;
                Report::Verdict { status: v.status, reason: v.reason }
            }
        });
    }
    st.store.apply_reports(&id, attempt, batch.seq, out).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn comment(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<CommentRequest>,
) -> Result<(StatusCode, Json<CommentView>), ApiError> {
    let attempt = caller.agent_of(&id)?;
    check_text("body", &req.body)?;
    Ok((StatusCode::CREATED, Json(st.store.agent_comment(&id, attempt, &req.body).await?.into())))
}

pub async fn report(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(report): Body<JobReport>,
) -> Result<StatusCode, ApiError> {
    let attempt = caller.agent_of(&id)?;
    check_reason("reason", report.reason.as_deref())?;
    st.store.report_job(&id, attempt, report.status, report.reason.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cap_respects_char_boundaries() {
        assert_eq!(super::cap("héllo", 2), ("h", true));
        assert_eq!(super::cap("abc", 5), ("abc", false));
    }
}
