//! The LLM proxy: `POST /llm/v1/chat/completions` (OpenAI-compatible) and
//! `POST /llm/v1/messages` (Anthropic-compatible). Agents authenticate with
//! their attempt token (`Authorization: Bearer` or `x-api-key`); George picks
//! the provider and model for the agent, clamps the output cap, reserves the
//! call's worst case against every budget, forwards it with the provider key
//! it holds, and charges the provider's own usage figures to the ledger —
//! streamed responses included.

use crate::{ApiError, ApiState};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use george_engine::llm::{Route, RouteError};
use george_engine::meter::{Metered, ReserveError};
use george_governor::{parse_usage, ProviderApi, StreamUsage};
use serde_json::Value;
use tracing::{Instrument, Span};

pub async fn chat_completions(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    proxy(st, headers, body, ProviderApi::OpenAi).await
}

pub async fn messages(State(st): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    proxy(st, headers, body, ProviderApi::Anthropic).await
}

/// The agent behind the request's token (`Authorization: Bearer` or `x-api-key`).
async fn agent(st: &ApiState, headers: &HeaderMap) -> Result<(String, u32), ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("the LLM proxy needs the agent's token (Authorization: Bearer or x-api-key)".into())
        })?;
    if !token.starts_with(george_engine::tokens::AGENT_TOKEN_PREFIX) {
        return Err(ApiError::Forbidden("the LLM proxy is for agents: use an agent token".into()));
    }
    st.store
        .agent_for_token(&george_engine::tokens::hash(token))
        .await?
        .ok_or_else(|| ApiError::Unauthorized("invalid token".into()))
}

/// Tokens reserved for each image (or other media part sent by reference)
/// that the byte count cannot see: more than any public provider bills for
/// one image (OpenAI's largest image costs under 3,800 tokens with the
/// model multipliers, Anthropic's about 1,600).
pub const MEDIA_PART_TOKENS: u64 = 4_000;
/// Tokens reserved per call for the framing a provider adds (a few per
/// message, and the bytes already count every message at 4 times its tokens).
pub const CALL_OVERHEAD_TOKENS: u64 = 16;
/// Tokens reserved when the call offers tools, for the system prompt a
/// provider adds to explain them (Anthropic documents about 350).
pub const TOOLS_OVERHEAD_TOKENS: u64 = 500;
/// The most completions one call may ask for (`n`).
pub const MAX_COMPLETIONS: u64 = 128;

/// The fields a provider may read as the output cap; every one present is
/// clamped, so no provider can find a higher one.
const CAP_FIELDS: [&str; 3] = ["max_tokens", "max_completion_tokens", "max_output_tokens"];

/// The input's worst case, for the reservation: every byte of the request
/// counted as a token (no tokenizer yields more tokens than bytes), plus
/// [`MEDIA_PART_TOKENS`] per media part, [`CALL_OVERHEAD_TOKENS`], and
/// [`TOOLS_OVERHEAD_TOKENS`] when the call offers tools. A file given by reference (whose size the proxy
/// cannot see) is refused.
fn estimate_input(body: &Value, body_bytes: usize) -> Result<u64, ApiError> {
    fn media(v: &Value, n: &mut u64) -> Result<(), ApiError> {
        match v {
            Value::Object(o) => {
                let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
                let by_reference = ["file_id", "file_url"].iter().any(|k| o.contains_key(*k))
                    || o.get("file").is_some_and(|f| f.get("file_id").is_some() || f.get("file_url").is_some())
                    || o.get("source")
                        .and_then(|s| s.get("type"))
                        .and_then(Value::as_str)
                        .is_some_and(|t| !matches!(t, "base64" | "text" | "content"));
                if matches!(ty, "file" | "input_file" | "document") && by_reference {
                    return Err(ApiError::invalid(format!(
                        "a `{ty}` part given by reference cannot be metered by the proxy; send its content inline"
                    )));
                }
                if matches!(ty, "image_url" | "image" | "input_image" | "input_audio" | "audio") {
                    *n += 1;
                }
                o.values().try_for_each(|v| media(v, n))
            }
            Value::Array(a) => a.iter().try_for_each(|v| media(v, n)),
            _ => Ok(()),
        }
    }
    let mut parts = 0;
    media(body, &mut parts)?;
    let tools = if body.get("tools").is_some() || body.get("functions").is_some() { TOOLS_OVERHEAD_TOKENS } else { 0 };
    Ok((body_bytes as u64)
        .saturating_add(parts.saturating_mul(MEDIA_PART_TOKENS))
        .saturating_add(CALL_OVERHEAD_TOKENS)
        .saturating_add(tools))
}

/// How many completions the call asks for: `n`, an integer in 1..=128.
fn completions(body: &Value) -> Result<u64, ApiError> {
    match body.get("n") {
        None | Some(Value::Null) => Ok(1),
        // An integer, also written as one (`2.0`: JSON Schema's integers include it).
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64).map(|f| f as u64))
            .filter(|n| (1..=MAX_COMPLETIONS).contains(n))
            .ok_or_else(|| ApiError::invalid(format!("n: expected an integer from 1 to {MAX_COMPLETIONS}, got {v}"))),
    }
}

/// A call being forwarded: the engine's metering guard, and what the
/// stream said about usage so far. Dropped unsettled (the agent hung up
/// mid-stream), it hands the figures seen to the guard, which settles in
/// the engine.
struct Call {
    metered: Metered,
    follower: Option<StreamUsage>,
    /// The call's span, open until the stream ends.
    span: Span,
}

/// The tokens a call is charged, on its span.
fn record_usage(span: &Span, usage: Option<george_governor::Usage>) {
    if let Some(u) = usage {
        span.record("gen_ai.usage.input_tokens", u.input);
        span.record("gen_ai.usage.output_tokens", u.output);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.metered.saw(self.follower.as_ref().and_then(StreamUsage::usage));
    }
}

/// The longest a call waits inline for a rate limit (a minute's window);
/// beyond that the agent is told to come back (429 `rate_limited`).
const MAX_INLINE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Holds the call until its rate limits admit it (seed 003: "queue delay").
async fn pace(st: &ApiState, route: &Route, needed: u64) -> Result<(), ApiError> {
    let mut waited = std::time::Duration::ZERO;
    while let Some(p) = st.engine.meter().pace(route, needed).await? {
        let wait = p.wait.to_std().unwrap_or_default();
        if waited + wait > MAX_INLINE_WAIT {
            return Err(ApiError::RateLimited { message: p.to_string(), retry_after: wait });
        }
        tokio::time::sleep(wait).await;
        waited += wait;
    }
    Ok(())
}

async fn proxy(st: ApiState, headers: HeaderMap, body: Bytes, style: ProviderApi) -> Result<Response, ApiError> {
    let (job, attempt) = agent(&st, &headers).await?;
    // Only the leader meters calls; a standby (reached through a Service) sends the agent elsewhere.
    if !st.engine.is_running(std::time::Duration::from_secs(2)).await {
        return Err(ApiError::NotLeading {
            message: "this replica does not run the engine (a standby), so it cannot meter LLM calls; try again: another replica leads".into(),
            retry_after: std::time::Duration::from_secs(1),
        });
    }
    let meter = st.engine.meter();
    let route = meter.route(&job, attempt).await.map_err(|e| match e {
        RouteError::Superseded { .. } => ApiError::Superseded(e.to_string()),
        RouteError::NotConfigured(m) => ApiError::Unavailable(m),
        RouteError::Store(e) => e.into(),
    })?;
    let span = tracing::info_span!(
        target: george_engine::trace::TARGET,
        "llm.call",
        otel.kind = "client",
        george.job = %job,
        george.attempt = attempt,
        gen_ai.system = %route.provider.name,
        gen_ai.request.model = %route.model,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    let traceparent = headers.get(george_engine::trace::HEADER).and_then(|v| v.to_str().ok());
    route.trace.adopt(&span, traceparent);
    call(st, route, body, style, span.clone()).instrument(span).await
}

/// Forwards a routed call to the provider, in its span.
async fn call(st: ApiState, route: Route, body: Bytes, style: ProviderApi, span: Span) -> Result<Response, ApiError> {
    let meter = st.engine.meter();
    if route.provider.api != style {
        let path =
            if route.provider.api == ProviderApi::OpenAi { "/llm/v1/chat/completions" } else { "/llm/v1/messages" };
        // Well-formed, but not what the agent's provider (the configuration now) speaks.
        return Err(ApiError::Conflict(format!(
            "this agent's provider `{}` speaks the {:?} API; call {path}",
            route.provider.name, route.provider.api
        )));
    }
    let mut req: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    let Some(obj) = req.as_object_mut() else { return Err(ApiError::invalid("the request must be a JSON object")) };
    let streaming = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    // The agent's own limit is the smallest it gave; whatever it gave, every
    // cap field present (and `max_tokens`, which every provider reads) ends
    // up at the clamped value.
    let requested = CAP_FIELDS.iter().filter_map(|k| obj.get(*k).and_then(Value::as_u64)).min();
    let cap = meter.cap(&route.charge.agent_spec, requested);
    obj.insert("model".into(), Value::String(route.model.clone()));
    let present: Vec<&str> = CAP_FIELDS.iter().copied().filter(|k| obj.contains_key(*k)).collect();
    if present.is_empty() {
        obj.insert("max_tokens".into(), cap.into());
    }
    for k in present {
        obj.insert(k.into(), cap.into());
    }
    if streaming && style == ProviderApi::OpenAi {
        // Ask for the usage chunk, so streamed calls are metered exactly.
        let opts = obj.entry("stream_options").or_insert_with(|| serde_json::json!({}));
        if let Some(o) = opts.as_object_mut() {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    let estimate = estimate_input(&req, body.len())?;
    // OpenAI's `n` asks for several completions, each up to the cap.
    let worst_output = cap.saturating_mul(completions(&req)?);
    pace(&st, &route, estimate.saturating_add(worst_output)).await?;
    let mut metered = match meter.reserve(route, estimate, worst_output).await {
        Ok(m) => m,
        Err(ReserveError::Refused(refusal)) => {
            let now = st.engine.now();
            let retry_after = (refusal.period.end(now) - now).to_std().unwrap_or_default();
            return Err(ApiError::BudgetExhausted { message: format!("{refusal}; the job is blocked"), retry_after });
        }
        Err(ReserveError::FamilyRefused(message)) => {
            // A family budget does not renew: try again only after someone raised it.
            let retry_after = std::time::Duration::from_secs(3600);
            return Err(ApiError::BudgetExhausted { message: format!("{message}; the job is blocked"), retry_after });
        }
        Err(ReserveError::Store(e)) => return Err(e.into()),
    };
    let provider = metered.route().provider.clone();
    let payload = serde_json::to_vec(&req).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut request = provider.request(meter.http(), payload, streaming);
    if let Some(tp) = george_engine::trace::traceparent_of(&span) {
        request = request.header(george_engine::trace::HEADER, tp);
    }
    let sent = request.send().await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            metered.settle(None, streaming).await;
            return Err(ApiError::BadGateway(format!("the LLM provider `{}` cannot be reached: {e}", provider.name)));
        }
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    span.record("http.response.status_code", status.as_u16());
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    if !streaming || !status.is_success() {
        let bytes = resp.bytes().await.unwrap_or_default();
        let usage = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| parse_usage(style, &v));
        // A failed call costs what the provider says, if anything; a successful one is always charged.
        let usage = if status.is_success() { Some(metered.usage_or_worst_case(usage)) } else { usage };
        record_usage(&span, usage);
        metered.settle(usage, false).await;
        return Ok((status, [(header::CONTENT_TYPE, content_type)], Body::from(bytes)).into_response());
    }
    let call = Call { metered, follower: Some(StreamUsage::new(style)), span };
    let upstream = resp.bytes_stream();
    let stream = futures_util::stream::unfold((upstream, call), |(mut upstream, mut call)| async move {
        match upstream.next().await {
            Some(Ok(chunk)) => {
                if let Some(f) = call.follower.as_mut() {
                    f.feed(&chunk);
                }
                Some((Ok::<_, std::io::Error>(chunk), (upstream, call)))
            }
            Some(Err(e)) => Some((Err(std::io::Error::other(e)), (upstream, call))),
            None => {
                let usage = call.follower.take().and_then(|f| f.usage());
                let usage = Some(call.metered.usage_or_worst_case(usage));
                record_usage(&call.span, usage);
                call.metered.settle(usage, true).await;
                None
            }
        }
    });
    Ok((status, [(header::CONTENT_TYPE, content_type)], Body::from_stream(stream)).into_response())
}
