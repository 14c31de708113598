//! Attempt traces (OpenTelemetry, W3C Trace Context): one trace per attempt,
//! from its spawn through the agent's calls to the API and the LLM proxy's
//! calls to the provider.
//!
//! An attempt's trace id and root span id are derived from the attempt (its
//! job, the job's creation time, its number), so every part of the engine —
//! and an engine restarted in the middle of the attempt — finds the same
//! trace without keeping anything. The agent gets the root as `TRACEPARENT`;
//! the provider gets the proxy call's span as `traceparent`. A `traceparent`
//! an agent sends is followed only within its own attempt's trace.
//!
//! Spans go to the [`TARGET`] tracing target; the binary's OpenTelemetry
//! layer exports them when an OTLP endpoint is configured. Without one,
//! [`enabled`] is false and nothing is computed or read for them.

use chrono::{DateTime, Utc};
use opentelemetry::trace::{
    SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::KeyValue;
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::time::SystemTime;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The tracing target of the spans that make up attempt traces.
pub const TARGET: &str = "george::trace";

/// The environment variable that carries an agent's trace context (the
/// OpenTelemetry convention for environment carriers).
pub const ENV: &str = "TRACEPARENT";

/// The HTTP header that carries a trace context (W3C Trace Context).
pub const HEADER: &str = "traceparent";

/// Whether attempt traces are exported (an OpenTelemetry layer listens).
pub fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// The trace of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptTrace {
    /// The trace's id.
    pub trace_id: TraceId,
    /// The id of its root span, `attempt`.
    pub root: SpanId,
}

impl AttemptTrace {
    /// The trace of attempt `attempt` of the job `job` created at `created`.
    pub fn of(job: &str, created: DateTime<Utc>, attempt: u32) -> Self {
        let digest = Sha256::new()
            .chain_update(b"george attempt trace\0")
            .chain_update(job.as_bytes())
            .chain_update([0])
            .chain_update(created.timestamp_micros().to_be_bytes())
            .chain_update(attempt.to_be_bytes())
            .finalize();
        let trace = u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"));
        let span = u64::from_be_bytes(digest[16..24].try_into().expect("8 bytes"));
        // All-zero ids are invalid; a digest that gives one is as good as 1.
        AttemptTrace { trace_id: TraceId::from(trace.max(1)), root: SpanId::from(span.max(1)) }
    }

    /// The root as a `traceparent` value, for the agent.
    pub fn traceparent(&self) -> String {
        format_traceparent(&self.root_context())
    }

    fn root_context(&self) -> SpanContext {
        SpanContext::new(self.trace_id, self.root, TraceFlags::SAMPLED, true, TraceState::default())
    }

    /// The parent of a span of this attempt: the span `traceparent` names
    /// when it belongs to this attempt's trace, else the root.
    pub fn parent(&self, traceparent: Option<&str>) -> opentelemetry::Context {
        let named = traceparent.and_then(parse_traceparent).filter(|sc| sc.trace_id() == self.trace_id);
        opentelemetry::Context::new().with_remote_span_context(named.unwrap_or_else(|| self.root_context()))
    }

    /// Makes `span` (not yet entered) a span of this attempt's trace.
    pub fn adopt(&self, span: &tracing::Span, traceparent: Option<&str>) {
        // A disabled span (tracing off) has no parent to set.
        let _ = span.set_parent(self.parent(traceparent));
    }

    /// Exports the root span, `attempt`, when the attempt has ended: the
    /// agent's life from `started` (its spawn recorded; the `spawn` span is
    /// the engine's work leading up to it) to `ended`, an error unless it
    /// exited with 0.
    pub fn finish(&self, attempt: &RootSpan<'_>, started: DateTime<Utc>, ended: DateTime<Utc>) {
        if !enabled() {
            return;
        }
        let tracer = opentelemetry::global::tracer("george");
        let mut attributes = vec![
            KeyValue::new("george.job", attempt.job.to_string()),
            KeyValue::new("george.attempt", i64::from(attempt.attempt)),
            KeyValue::new("george.agent_spec", attempt.agent_spec.to_string()),
            KeyValue::new("george.runtime", attempt.runtime.to_string()),
            KeyValue::new("george.outcome", attempt.outcome.to_string()),
        ];
        if let Some(code) = attempt.exit_code {
            attributes.push(KeyValue::new("process.exit.code", i64::from(code)));
        }
        let builder = SpanBuilder::from_name("attempt")
            .with_kind(SpanKind::Internal)
            .with_start_time(SystemTime::from(started))
            .with_attributes(attributes);
        let mut span = {
            let _ids = AttemptIds::assign(*self);
            tracer.build_with_context(builder, &opentelemetry::Context::new())
        };
        if attempt.exit_code != Some(0) {
            opentelemetry::trace::Span::set_status(&mut span, Status::error(attempt.outcome.to_string()));
        }
        opentelemetry::trace::Span::end_with_timestamp(&mut span, SystemTime::from(ended));
    }
}

/// What the root span of an attempt says.
#[derive(Debug, Clone, Copy)]
pub struct RootSpan<'a> {
    /// The job.
    pub job: &'a str,
    /// The attempt.
    pub attempt: u32,
    /// Its AgentSpec.
    pub agent_spec: &'a str,
    /// Its runtime.
    pub runtime: &'a str,
    /// How it ended.
    pub outcome: &'a str,
    /// Its exit code, when known.
    pub exit_code: Option<i32>,
}

/// The `traceparent` naming `span` (already given its parent), if traces are exported.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| format_traceparent(&sc))
}

fn format_traceparent(sc: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
}

/// A W3C `traceparent` (`version-traceid-parentid-flags`, lowercase hex,
/// ids not all zero; version `ff` is invalid and later versions may append
/// fields).
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok().filter(|t| *t != TraceId::INVALID)?;
    let span_id = SpanId::from_hex(span).ok().filter(|s| *s != SpanId::INVALID)?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & TraceFlags::SAMPLED.to_u8());
    Some(SpanContext::new(trace_id, span_id, flags, true, TraceState::default()))
}

thread_local! {
    static ASSIGNED: Cell<Option<AttemptTrace>> = const { Cell::new(None) };
}

/// The ids of new spans: random, except for an attempt's root span, whose
/// ids are the attempt's (assigned on this thread while it is built). The
/// tracer provider that exports attempt traces must use it.
#[derive(Debug, Default)]
pub struct AttemptIds {
    random: opentelemetry_sdk::trace::RandomIdGenerator,
}

impl AttemptIds {
    fn assign(trace: AttemptTrace) -> Assigned {
        ASSIGNED.with(|a| a.set(Some(trace)));
        Assigned
    }
}

/// While alive, this thread's next span gets the assigned attempt's ids.
struct Assigned;

impl Drop for Assigned {
    fn drop(&mut self) {
        ASSIGNED.with(|a| a.set(None));
    }
}

impl opentelemetry_sdk::trace::IdGenerator for AttemptIds {
    fn new_trace_id(&self) -> TraceId {
        ASSIGNED.with(Cell::get).map_or_else(|| self.random.new_trace_id(), |t| t.trace_id)
    }

    fn new_span_id(&self) -> SpanId {
        ASSIGNED.with(Cell::get).map_or_else(|| self.random.new_span_id(), |t| t.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_has_one_trace_that_other_attempts_do_not_share() {
        let created = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let a = AttemptTrace::of("job", created, 1);
        assert_eq!(a, AttemptTrace::of("job", created, 1));
        assert_ne!(a.trace_id, AttemptTrace::of("job", created, 2).trace_id);
        assert_ne!(a.trace_id, AttemptTrace::of("job", created + chrono::Duration::microseconds(1), 1).trace_id);
        assert_ne!(a.trace_id, AttemptTrace::of("jo", created, 1).trace_id);
        let tp = a.traceparent();
        assert_eq!(tp, format!("00-{}-{}-01", a.trace_id, a.root));
        let sc = parse_traceparent(&tp).unwrap();
        assert_eq!((sc.trace_id(), sc.span_id()), (a.trace_id, a.root));
    }

    #[test]
    fn a_traceparent_outside_the_attempts_trace_is_not_followed() {
        let a = AttemptTrace::of("job", Utc::now(), 1);
        let other = AttemptTrace::of("other", Utc::now(), 1);
        let own_child = format!("00-{}-00f067aa0ba902b7-01", a.trace_id);
        let parent_of = |tp: Option<&str>| a.parent(tp).span().span_context().span_id();
        assert_eq!(parent_of(Some(&own_child)), SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert_eq!(parent_of(Some(&other.traceparent())), a.root);
        assert_eq!(parent_of(None), a.root);
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        // A later version may add fields.
        assert!(parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra").is_some());
    }
}
