//! `GET /api/v1/agents/{id}/logs`: an agent's output from its log file. While
//! the agent runs the response streams (`follow`, the default) and ends when
//! the agent does; logs of finished agents are kept and returned whole. A
//! process with no file of the attempt (a standby replica: the leader copies
//! the logs) returns what the runtime's backend keeps, if anything (a
//! Kubernetes pod's log), once, without following.

use crate::body::QueryParams;
use crate::jobs::find_agent;
use crate::{ApiError, ApiState, Caller};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Keep streaming while the agent runs (default true).
    #[serde(default)]
    follow: Option<bool>,
}

struct Tail {
    file: Option<tokio::fs::File>,
    path: std::path::PathBuf,
    st: ApiState,
    job: String,
    attempt: u32,
    follow: bool,
    finished: bool,
}

pub async fn logs(
    State(st): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<LogsQuery>,
) -> Result<Response, ApiError> {
    caller.viewer()?;
    let agent = find_agent(&st, &id).await?;
    let path = st.logs.path(&agent.job_id, agent.attempt);
    if tokio::fs::metadata(&path).await.is_err() {
        if let Ok(Some(text)) = st.runtime.backend_logs(&agent.job_id, agent.attempt).await {
            return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
        }
    }
    let tail = Tail {
        file: None,
        path,
        st,
        job: agent.job_id,
        attempt: agent.attempt,
        follow: q.follow.unwrap_or(true),
        finished: false,
    };
    let stream = futures_util::stream::unfold(tail, |mut t| async move {
        loop {
            if t.finished {
                return None;
            }
            if t.file.is_none() {
                t.file = tokio::fs::File::open(&t.path).await.ok();
            }
            let mut buf = vec![0u8; 64 << 10];
            let n = match t.file.as_mut() {
                Some(f) => f.read(&mut buf).await.unwrap_or(0),
                None => 0,
            };
            if n > 0 {
                buf.truncate(n);
                return Some((Ok::<_, std::io::Error>(Bytes::from(buf)), t));
            }
            let live =
                t.follow && matches!(t.st.store.get_agent(&t.job, t.attempt).await, Ok(Some(a)) if a.state.is_live());
            if !live {
                // One last read: the agent may have written just before it ended.
                t.finished = true;
                if let Some(f) = t.file.as_mut() {
                    let pos = f.stream_position().await.unwrap_or(0);
                    let mut rest = Vec::new();
                    let _ = f.read_to_end(&mut rest).await;
                    if !rest.is_empty() {
                        tracing::trace!(pos, extra = rest.len(), "final log bytes");
                        return Some((Ok(Bytes::from(rest)), t));
                    }
                }
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(stream)).into_response())
}
