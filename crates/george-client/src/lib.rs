//! A typed client for the engine's API, used by the CLI and by the reference
//! agent. Errors keep the API's code and message so callers can act on them
//! (an agent stops at `superseded`; the CLI prints the message).

mod watch;

pub use watch::Watch;

use futures_util::StreamExt;
use george_core::api::{
    ActionRequest, AgentContext, AgentView, ChildRequest, ChildView, CommentRequest, CommentView, ErrorBody, EventView,
    EvidenceReport, EvidenceView, InjectRequest, JobReport, JobView, ReportBatch, SourceView, StepReport, SubmitJob,
    SyncResult,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// How often a call answered `503 not_leading` or `503 not_ready` is sent in all.
pub const NOT_LEADING_TRIES: u32 = 30;

/// An error talking to the engine.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The engine answered with an error.
    #[error("{message} ({status} {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Error code (`not_found`, `invalid`, `superseded`, ...).
        code: String,
        /// Explanation.
        message: String,
        /// Every problem, when there are several.
        details: Vec<String>,
        /// The `Retry-After` header, in seconds, when the engine sent one.
        retry_after: Option<u64>,
    },
    /// The engine could not be reached.
    #[error("cannot reach the engine at {url}: {message}")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        message: String,
    },
    /// The answer was not what was expected.
    #[error("unexpected answer from the engine: {0}")]
    Decode(String),
    /// What the engine sent could not be written where the caller asked.
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
}

impl ClientError {
    /// The attempt this client speaks for is no longer current: stop.
    pub fn is_superseded(&self) -> bool {
        matches!(self, ClientError::Api { code, .. } if code == "superseded")
    }

    /// The HTTP status, when the engine answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Result of client calls.
pub type Result<T> = std::result::Result<T, ClientError>;

/// A client for one engine, with one token.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    traceparent: Option<reqwest::header::HeaderValue>,
}

/// `GET /api/v1/jobs` filters.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    /// Comma-separated statuses.
    pub status: Option<String>,
    /// Chapter.
    pub chapter: Option<String>,
    /// Source.
    pub source: Option<String>,
    /// Label selector (`george_core::labels::Selector`).
    pub selector: Option<String>,
}

impl Client {
    /// A client for the engine at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, token: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        Ok(Self { http, base: base.trim_end_matches('/').to_string(), token: token.to_string(), traceparent: None })
    }

    /// Sends `traceparent` (W3C Trace Context) with every call, so an
    /// agent's calls join its attempt's trace. An invalid value is not sent.
    pub fn with_traceparent(mut self, traceparent: Option<&str>) -> Self {
        self.traceparent = traceparent.and_then(|t| reqwest::header::HeaderValue::from_str(t).ok());
        self
    }

    /// The engine's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        match &self.traceparent {
            Some(tp) => rb.header("traceparent", tp.clone()),
            None => rb,
        }
    }

    /// Sends `rb`. A call answered `503 not_leading` (a standby replica
    /// behind a load balancer; it did nothing) or `503 not_ready` (an engine
    /// still starting; it did nothing) is sent again after its `Retry-After`,
    /// up to [`NOT_LEADING_TRIES`] times, on a new connection, which may
    /// reach the leader.
    async fn send(&self, mut rb: RequestBuilder) -> Result<reqwest::Response> {
        let mut tries = 1;
        loop {
            let again = rb.try_clone().filter(|_| tries < NOT_LEADING_TRIES);
            match (self.send_once(rb).await, again) {
                (Err(ClientError::Api { status: 503, code, retry_after, .. }), Some(next))
                    if code == "not_leading" || code == "not_ready" =>
                {
                    let wait = std::time::Duration::from_secs(retry_after.unwrap_or(1).clamp(1, 5));
                    tokio::time::sleep(wait).await;
                    tries += 1;
                    rb = next;
                }
                (other, _) => return other,
            }
        }
    }

    async fn send_once(&self, rb: RequestBuilder) -> Result<reqwest::Response> {
        let resp =
            rb.send().await.map_err(|e| ClientError::Unreachable { url: self.base.clone(), message: e.to_string() })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let text = resp.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => ClientError::Api {
                status: status.as_u16(),
                code: body.error.code,
                message: body.error.message,
                details: body.error.details,
                retry_after,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "_"),
                message: text.trim().to_string(),
                details: vec![],
                retry_after,
            },
        })
    }

    async fn json<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T> {
        let resp = self.send(rb).await?;
        resp.json().await.map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(self.req(Method::GET, path)).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.json(self.req(Method::POST, path).json(body)).await
    }

    async fn post_empty<B: Serialize>(&self, path: &str, body: &B) -> Result<()> {
        let resp = self.send(self.req(Method::POST, path).json(body)).await?;
        debug_assert!(resp.status() == StatusCode::NO_CONTENT || resp.status().is_success());
        Ok(())
    }

    // ---- operators ----

    /// Who the token belongs to.
    pub async fn whoami(&self) -> Result<george_core::api::WhoAmI> {
        self.get("/api/v1/whoami").await
    }

    /// Sets a job's or a step's status by hand.
    pub async fn override_status(&self, id: &str, req: &george_core::api::OverrideRequest) -> Result<JobView> {
        self.post(&format!("/api/v1/jobs/{id}/override"), req).await
    }

    /// Lists jobs: every page, oldest first.
    pub async fn jobs(&self, q: &JobQuery) -> Result<Vec<JobView>> {
        let mut params = Vec::new();
        if let Some(s) = &q.status {
            params.push(("status", s.clone()));
        }
        if let Some(c) = &q.chapter {
            params.push(("chapter", c.clone()));
        }
        if let Some(s) = &q.source {
            params.push(("source", s.clone()));
        }
        if let Some(s) = &q.selector {
            params.push(("selector", s.clone()));
        }
        let mut jobs = Vec::new();
        loop {
            let resp = self.send(self.req(Method::GET, "/api/v1/jobs").query(&params)).await?;
            let next = resp.headers().get("x-next-after").and_then(|v| v.to_str().ok()).map(str::to_string);
            let page: Vec<JobView> = resp.json().await.map_err(|e| ClientError::Decode(e.to_string()))?;
            jobs.extend(page);
            let Some(after) = next else { return Ok(jobs) };
            params.retain(|(k, _)| *k != "after");
            params.push(("after", after));
        }
    }

    /// One job.
    pub async fn job(&self, id: &str) -> Result<JobView> {
        self.get(&format!("/api/v1/jobs/{id}")).await
    }

    /// Submits a job.
    pub async fn submit(&self, req: &SubmitJob) -> Result<JobView> {
        self.post("/api/v1/jobs", req).await
    }

    /// A new attempt for a failed, aborted or blocked job.
    pub async fn retry(&self, id: &str, req: &george_core::api::RetryRequest) -> Result<JobView> {
        self.post(&format!("/api/v1/jobs/{id}/retry"), req).await
    }

    /// A new job like `id`.
    pub async fn resubmit(&self, id: &str, req: &george_core::api::ResubmitRequest) -> Result<JobView> {
        self.post(&format!("/api/v1/jobs/{id}/resubmit"), req).await
    }

    /// Pauses, resumes, aborts or approves a job (`action` is `pause`, `resume`, `abort` or `approve`).
    pub async fn act(&self, id: &str, action: &str, reason: Option<String>) -> Result<JobView> {
        self.post(&format!("/api/v1/jobs/{id}/{action}"), &ActionRequest { reason }).await
    }

    /// The token report of the current `period` (`day` or `month`).
    pub async fn budget(&self, period: &str) -> Result<george_core::api::BudgetReport> {
        self.json(self.req(Method::GET, "/api/v1/budget").query(&[("period", period)])).await
    }

    /// Sets or clears a chapter's throttle.
    pub async fn throttle(
        &self,
        chapter: &str,
        req: &george_core::api::ThrottleRequest,
    ) -> Result<george_core::api::ThrottleView> {
        self.post(&format!("/api/v1/chapters/{chapter}/throttle"), req).await
    }

    /// Sends a message to a job's agent.
    pub async fn inject(&self, id: &str, message: &str) -> Result<CommentView> {
        self.post(&format!("/api/v1/jobs/{id}/inject"), &InjectRequest { message: message.into() }).await
    }

    /// A job's conversation.
    pub async fn comments(&self, id: &str) -> Result<Vec<CommentView>> {
        self.get(&format!("/api/v1/jobs/{id}/comments")).await
    }

    /// A job's evidence.
    pub async fn evidence(&self, id: &str) -> Result<Vec<EvidenceView>> {
        self.get(&format!("/api/v1/jobs/{id}/evidence")).await
    }

    /// Agents (live only unless `all`).
    pub async fn agents(&self, all: bool) -> Result<Vec<AgentView>> {
        self.get(&format!("/api/v1/agents?all={all}")).await
    }

    /// One agent.
    pub async fn agent(&self, id: &str) -> Result<AgentView> {
        self.get(&format!("/api/v1/agents/{id}")).await
    }

    /// Streams an agent's log into `out` (following it while the agent runs when `follow`).
    pub async fn logs(&self, id: &str, follow: bool, mut out: impl std::io::Write) -> Result<()> {
        let resp = self.send(self.req(Method::GET, &format!("/api/v1/agents/{id}/logs?follow={follow}"))).await?;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ClientError::Decode(e.to_string()))?;
            match out.write_all(&chunk).and_then(|_| out.flush()) {
                Ok(()) => {}
                // The reader has what it wanted (`| head`): done.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(ClientError::Output(e)),
            }
        }
        Ok(())
    }

    /// Events after `since`.
    pub async fn events(&self, since: i64, limit: u32) -> Result<Vec<EventView>> {
        self.get(&format!("/api/v1/events?since={since}&limit={limit}")).await
    }

    /// The newest `last` events (1 to 5000), oldest first.
    pub async fn latest_events(&self, last: u32) -> Result<Vec<EventView>> {
        self.get(&format!("/api/v1/events?last={last}")).await
    }

    /// Syncs every source now.
    pub async fn sync(&self) -> Result<SyncResult> {
        self.post("/api/v1/sync", &serde_json::json!({})).await
    }

    /// A retention pass now, or (`dry_run`) what it would delete.
    pub async fn gc(&self, dry_run: bool) -> Result<george_core::api::GcReport> {
        let rb = self.req(Method::POST, "/api/v1/gc").query(&[("dryRun", dry_run)]);
        self.json(rb).await
    }

    /// Deletes a finished job with its records, files and events.
    pub async fn delete_job(&self, id: &str) -> Result<george_core::api::GcReport> {
        self.json(self.req(Method::DELETE, &format!("/api/v1/jobs/{id}"))).await
    }

    /// A call through the LLM proxy (`chat/completions` or `messages`); a
    /// budget refusal is an `Api` error with status 429.
    pub async fn llm(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        self.post(&format!("/llm/v1/{path}"), body).await
    }

    /// Any GET endpoint, as JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        self.get(path).await
    }

    /// Any GET endpoint with query parameters (encoded), as JSON.
    pub async fn get_json_query(&self, path: &str, query: &[(String, String)]) -> Result<serde_json::Value> {
        self.json(self.req(Method::GET, path).query(query)).await
    }

    /// Any POST endpoint, as JSON.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value> {
        self.post(path, body).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.req(Method::DELETE, path)).await.map(|_| ())
    }

    /// Summons an agent (`{agent, template?, context?, priority?}`).
    pub async fn summon(&self, body: &serde_json::Value) -> Result<serde_json::Value> {
        self.post("/api/v1/summon", body).await
    }

    /// Sources.
    pub async fn sources(&self) -> Result<Vec<SourceView>> {
        self.get("/api/v1/sources").await
    }

    // ---- agents ----

    /// The agent's job, attempt and conversation.
    pub async fn context(&self, job: &str) -> Result<AgentContext> {
        self.get(&format!("/api/v1/jobs/{job}/context")).await
    }

    /// The agent's first call: its context, and its first heartbeat.
    pub async fn attach(&self, job: &str) -> Result<AgentContext> {
        self.post(&format!("/api/v1/jobs/{job}/attach"), &serde_json::json!({})).await
    }

    /// A batch of reports, applied in order, all or nothing (also a heartbeat).
    pub async fn reports(&self, job: &str, batch: &ReportBatch) -> Result<()> {
        self.post_empty(&format!("/api/v1/jobs/{job}/reports"), batch).await
    }

    /// A heartbeat.
    pub async fn heartbeat(&self, job: &str) -> Result<()> {
        self.post_empty(&format!("/api/v1/jobs/{job}/heartbeat"), &serde_json::json!({})).await
    }

    /// A step's status.
    pub async fn report_step(&self, job: &str, step: &str, report: &StepReport) -> Result<()> {
        self.post_empty(&format!("/api/v1/jobs/{job}/steps/{step}"), report).await
    }

    /// Records evidence.
    pub async fn add_evidence(&self, job: &str, ev: &EvidenceReport) -> Result<EvidenceView> {
        self.post(&format!("/api/v1/jobs/{job}/evidence"), ev).await
    }

    /// Creates a child job of `job` (its agent, capability `spawn`), or finds the one its key named.
    pub async fn spawn_child(&self, job: &str, req: &ChildRequest) -> Result<ChildView> {
        self.post(&format!("/api/v1/jobs/{job}/children"), req).await
    }

    /// The children of `job`, with their results.
    pub async fn children(&self, job: &str) -> Result<Vec<ChildView>> {
        self.get(&format!("/api/v1/jobs/{job}/children")).await
    }

    /// Writes a comment.
    pub async fn comment(&self, job: &str, body: &str) -> Result<CommentView> {
        self.post(&format!("/api/v1/jobs/{job}/comments"), &CommentRequest { body: body.into() }).await
    }

    /// The verdict on the whole job.
    pub async fn report(&self, job: &str, report: &JobReport) -> Result<()> {
        self.post_empty(&format!("/api/v1/jobs/{job}/report"), report).await
    }
}
