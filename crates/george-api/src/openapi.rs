//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 description of the whole
//! API, generated from the wire types themselves (their JSON Schemas come
//! from `schemars`, which reads the same serde attributes that shape the
//! JSON) and from the operation table below, which mirrors the router in
//! `lib.rs`. Tests keep it true: every route in the router has an
//! operation here and every real response validates against it.
//!
//! Each operation says who may call it in `x-george-auth`: `none`,
//! `viewer`, `operator`, `admin` (operator-token roles), `agent` (the job's
//! own agent token), `viewer-or-agent`, or `signature` (webhooks).

use crate::triggers::SummonRequest;
use axum::Json;
use george_core::api::*;
use george_engine::registry::{RegistryEntry, TriggerDetail, TriggerEntry};
use george_engine::triggers::Fired;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// Serves the document.
pub async fn document_handler() -> Json<Value> {
    Json(document().clone())
}

/// The document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

const REF_PREFIX: &str = "/components/schemas/";

struct Builder {
    /// Response bodies: what the server serializes.
    out: SchemaGenerator,
    /// Request bodies: what the server accepts.
    input: SchemaGenerator,
    paths: Map<String, Value>,
}

/// One operation being described.
struct Op<'a> {
    b: &'a mut Builder,
    method: &'static str,
    path: String,
    op: Map<String, Value>,
    params: Vec<Value>,
    responses: Map<String, Value>,
}

impl Builder {
    fn op(&mut self, method: &'static str, path: impl Into<String>, auth: &str, summary: &str) -> Op<'_> {
        let path = path.into();
        let mut op = Map::new();
        op.insert("summary".into(), json!(summary));
        op.insert("x-george-auth".into(), json!(auth));
        op.insert("operationId".into(), json!(operation_id(method, &path)));
        if auth != "none" && auth != "signature" {
            op.insert("security".into(), json!([{"bearer": []}]));
        }
        let params = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        Op { b: self, method, path, op, params, responses: Map::new() }
    }
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for seg in path.split('/').filter(|s| !s.is_empty() && *s != "api" && *s != "v1") {
        let seg = seg.trim_start_matches('{').trim_end_matches('}');
        id.push('_');
        id.push_str(&seg.replace(['.', '-'], "_"));
    }
    id
}

impl Op<'_> {
    fn query(mut self, name: &str, ty: &str, description: &str) -> Self {
        self.params.push(json!({"name": name, "in": "query", "required": false, "description": description,
                                "schema": {"type": ty}}));
        self
    }

    /// A query parameter with its whole schema (the constraints the server enforces).
    fn query_schema(mut self, name: &str, schema: Value, description: &str) -> Self {
        self.params.push(json!({"name": name, "in": "query", "required": false, "description": description,
                                "schema": schema}));
        self
    }

    /// An event sequence number (`i64` on the server).
    fn sequence(self, name: &str, description: &str) -> Self {
        self.query_schema(name, json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX}), description)
    }

    /// A query parameter that takes one of `values`.
    fn one_of(self, name: &str, values: &[&str], description: &str) -> Self {
        self.query_schema(name, json!({"type": "string", "enum": values}), description)
    }

    /// A `limit` query parameter: a count (`u32` on the server).
    fn limit(mut self, description: &str) -> Self {
        self.params.push(json!({"name": "limit", "in": "query", "required": false, "description": description,
                                "schema": {"type": "integer", "minimum": 0, "maximum": u32::MAX}}));
        self
    }

    /// A `since` query parameter of a watch: a sequence number, 0 or more (an `i64`).
    fn since(mut self, description: &str) -> Self {
        self.params.push(json!({"name": "since", "in": "query", "required": false, "description": description,
                                "schema": {"type": "integer", "minimum": 0, "maximum": i64::MAX}}));
        self
    }

    fn body<T: JsonSchema>(mut self, required: bool) -> Self {
        let schema = self.b.input.subschema_for::<T>();
        self.op.insert(
            "requestBody".into(),
            json!({"required": required, "content": {"application/json": {"schema": schema}}}),
        );
        self
    }

    /// A request body with its whole schema, where the type's own cannot say
    /// what the server enforces (one field's values depending on another's).
    fn body_schema(mut self, required: bool, schema: Value) -> Self {
        self.op.insert(
            "requestBody".into(),
            json!({"required": required, "content": {"application/json": {"schema": schema}}}),
        );
        self
    }

    /// A WebSocket endpoint: `101` when the request is an upgrade, `426`
    /// (the JSON error, `Upgrade: websocket`) when it is not.
    fn websocket(mut self, description: &str) -> Self {
        self.op.insert("x-websocket".into(), json!({"subprotocol": "george.v1"}));
        self.responses.insert("101".into(), json!({"description": description}));
        self.responses.insert(
            "426".into(),
            json!({"description": "not a WebSocket upgrade: connect with `Connection: upgrade`, `Upgrade: websocket` \
                                   and the `george.v1` subprotocol",
                   "content": {"application/json": {"schema": {"$ref": format!("#{REF_PREFIX}ErrorBody")}}}}),
        );
        self
    }

    fn json<T: JsonSchema>(self, status: u16, description: &str) -> Self {
        let schema = self.b.out.subschema_for::<T>().to_value();
        self.json_value(status, description, schema)
    }

    fn json_value(mut self, status: u16, description: &str, schema: Value) -> Self {
        self.responses.insert(
            status.to_string(),
            json!({"description": description, "content": {"application/json": {"schema": schema}}}),
        );
        self
    }

    fn content(mut self, status: u16, content_type: &str, description: &str) -> Self {
        self.responses.insert(
            status.to_string(),
            json!({"description": description, "content": {content_type: {"schema": {"type": "string"}}}}),
        );
        self
    }

    fn empty(mut self, status: u16, description: &str) -> Self {
        self.responses.insert(status.to_string(), json!({"description": description}));
        self
    }

    fn done(mut self) {
        self.responses.insert(
            "default".into(),
            json!({"description": "an error: a stable code, a message saying what to do, the field at fault",
                   "content": {"application/json": {"schema": {"$ref": format!("#{REF_PREFIX}ErrorBody")}}}}),
        );
        if !self.params.is_empty() {
            self.op.insert("parameters".into(), Value::Array(self.params));
        }
        self.op.insert("responses".into(), Value::Object(self.responses));
        let item = self.b.paths.entry(self.path).or_insert_with(|| json!({}));
        item[self.method] = Value::Object(self.op);
    }
}

fn generator(settings: SchemaSettings) -> SchemaGenerator {
    settings
        .with(|s| {
            s.definitions_path = REF_PREFIX.into();
            s.meta_schema = None;
        })
        .into_generator()
}

fn build() -> Value {
    let mut b = Builder {
        out: generator(SchemaSettings::draft2020_12().for_serialize()),
        input: generator(SchemaSettings::draft2020_12().for_deserialize()),
        paths: Map::new(),
    };
    describe(&mut b);
    link(&mut b.paths);
    let _ = b.out.subschema_for::<ErrorBody>();
    let mut schemas = b.out.take_definitions(true);
    for (name, schema) in b.input.take_definitions(true) {
        match schemas.get(&name) {
            // The same type in both directions: keep the (stricter) request form under its own name.
            Some(existing) if *existing != schema => {
                schemas.insert(format!("{name}Input"), schema);
            }
            _ => {
                schemas.insert(name, schema);
            }
        }
    }
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "George API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The engine's REST API: jobs, agents, the event log, triggers, budgets and the LLM proxy. \
                            Every endpoint but /healthz needs `Authorization: Bearer <token>`; `x-george-auth` \
                            names who may call each operation. Errors share one body (`ErrorBody`).",
        },
        "paths": b.paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    });
    bound_integers(&mut doc);
    doc
}

/// Where an answer names a resource that other operations take, and how:
/// (operation, status, the value's runtime expression, the path prefix of
/// the operations it leads to, their path parameter).
const LINKS: &[(&str, &str, &str, &str, &str, &str)] = &[
    ("post", "/api/v1/jobs", "201", "$response.body#/id", "/api/v1/jobs/{id}", "id"),
    ("get", "/api/v1/jobs", "200", "$response.body#/0/id", "/api/v1/jobs/{id}", "id"),
    ("post", "/api/v1/jobs/{id}/resubmit", "201", "$response.body#/id", "/api/v1/jobs/{id}", "id"),
    ("post", "/api/v1/summon", "201", "$response.body#/job", "/api/v1/jobs/{id}", "id"),
    ("get", "/api/v1/agents", "200", "$response.body#/0/id", "/api/v1/agents/{id}", "id"),
    ("get", "/api/v1/registry", "200", "$response.body#/0/name", "/api/v1/registry/{agent}", "agent"),
    ("post", "/api/v1/tokens", "201", "$response.body#/subject", "/api/v1/tokens/{subject}", "subject"),
    ("get", "/api/v1/tokens", "200", "$response.body#/0/subject", "/api/v1/tokens/{subject}", "subject"),
    ("get", "/api/v1/budget", "200", "$response.body#/chapters/0/chapter", "/api/v1/chapters/{chapter}", "chapter"),
    ("get", "/api/v1/triggers", "200", "$response.body#/0/name", "/api/v1/triggers/{name}", "name"),
];

/// Declares [`LINKS`] as OpenAPI links, so that a client (and a stateful
/// fuzzer) can follow a created or listed resource to what acts on it: to
/// every operation under the resource's path that needs no other path
/// parameter (a step of a job is not named by the job).
fn link(paths: &mut Map<String, Value>) {
    for (method, path, status, value, prefix, param) in LINKS {
        let mut links = Map::new();
        for (target, item) in paths.iter() {
            if !(target == prefix || target.starts_with(&format!("{prefix}/"))) || target.matches('{').count() > 1 {
                continue;
            }
            for op in item.as_object().into_iter().flat_map(|m| m.values()) {
                let Some(id) = op.get("operationId").and_then(Value::as_str) else { continue };
                links.insert(id.to_string(), json!({"operationId": id, "parameters": {*param: value}}));
            }
        }
        if let Some(response) =
            paths.get_mut(*path).and_then(|p| p.get_mut(*method)).and_then(|o| o["responses"].get_mut(*status))
        {
            response["links"] = Value::Object(links);
        }
    }
}

/// States the range of every integer of a fixed width (`format: uint32`,
/// `int64`, …, as schemars writes them): the server refuses what does not
/// fit, so the document says so.
fn bound_integers(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let range: Option<(i128, i128)> = match map.get("format").and_then(Value::as_str) {
                Some("uint8") => Some((0, u8::MAX.into())),
                Some("uint16") => Some((0, u16::MAX.into())),
                Some("uint32") => Some((0, u32::MAX.into())),
                Some("uint64" | "uint") => Some((0, u64::MAX.into())),
                Some("int8") => Some((i8::MIN.into(), i8::MAX.into())),
                Some("int16") => Some((i16::MIN.into(), i16::MAX.into())),
                Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                Some("int64" | "int") => Some((i64::MIN.into(), i64::MAX.into())),
                _ => None,
            };
            if let Some((min, max)) = range {
                let number = |n: i128| u64::try_from(n).map(Value::from).unwrap_or_else(|_| Value::from(n as i64));
                let tighter_min = map.get("minimum").and_then(Value::as_f64).is_some_and(|m| m >= min as f64);
                if !tighter_min {
                    map.insert("minimum".into(), number(min));
                }
                let tighter_max = map.get("maximum").and_then(Value::as_f64).is_some_and(|m| m <= max as f64);
                if !tighter_max {
                    map.insert("maximum".into(), number(max));
                }
            }
            map.values_mut().for_each(bound_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

fn describe(b: &mut Builder) {
    describe_service(b);
    describe_jobs(b);
    describe_agents(b);
    describe_events_and_control(b);
    describe_budgets_and_llm(b);
}

/// Health, metrics, this document, tokens, the audit log and the watch streams.
fn describe_service(b: &mut Builder) {
    b.op("get", "/healthz", "none", "Liveness").content(200, "text/plain", "ok").done();
    b.op("get", "/readyz", "none", "Readiness: writes are taken once agents are adopted and every source applied once")
        .content(200, "text/plain", "`ready`, or `standby` on a replica that does not lead")
        .content(503, "text/plain", "`starting: <what it waits for>`, with Retry-After")
        .done();
    b.op("get", "/metrics", "viewer", "Prometheus metrics")
        .content(200, "application/openmetrics-text", "metrics in the OpenMetrics text format")
        .done();
    b.op("get", "/api/v1/openapi.json", "none", "This document")
        .json_value(200, "the OpenAPI 3.1 document", json!({"type": "object"}))
        .done();
    b.op("get", "/api/v1/whoami", "viewer-or-agent", "Who the token belongs to")
        .json::<WhoAmI>(200, "the caller")
        .done();
    b.op("get", "/api/v1/tokens", "admin", "Operator tokens (subjects and roles, never values)")
        .json::<Vec<TokenView>>(200, "tokens")
        .done();
    b.op("post", "/api/v1/tokens", "admin", "Mint an operator token (its value is returned once)")
        .body::<TokenRequest>(true)
        .json::<TokenView>(201, "the new token")
        .done();
    b.op("delete", "/api/v1/tokens/{subject}", "admin", "Revoke a minted token").empty(204, "revoked").done();
    b.op("get", "/api/v1/audit", "viewer", "The audit log: every successful change by an operator")
        .sequence("since", "records after this event sequence number")
        .limit("at most this many (default 500, at most 5000)")
        .query_schema(
            "last",
            json!({"type": "integer", "minimum": 1, "maximum": 5000}),
            "instead of `since`: the newest this many",
        )
        .json::<Vec<EventView>>(200, "audit events, oldest first")
        .done();
    b.op("get", "/api/v1/watch", "viewer", "WebSocket: every event after `since`, one JSON EventView per text frame")
        .since("resume after this sequence number (default: only new events)")
        .websocket("switching to the WebSocket protocol (subprotocol george.v1)")
        .done();
    b.op("get", "/api/v1/jobs/{id}/watch", "viewer-or-agent", "WebSocket: one job's events after `since`")
        .since("resume after this sequence number (default: only new events)")
        .websocket("switching to the WebSocket protocol (subprotocol george.v1)")
        .done();
}

/// Every job status, as a regular expression's alternatives.
const JOB_STATUSES: &str = "pending|in_progress|blocked|paused|completed|failed|aborted";

/// Jobs.
fn describe_jobs(b: &mut Builder) {
    b.op("get", "/api/v1/jobs", "viewer", "List jobs, a page at a time")
        .query_schema(
            "status",
            json!({"type": "string", "pattern": format!("^(({JOB_STATUSES})?,)*({JOB_STATUSES})?$")}),
            "comma-separated statuses",
        )
        .query("chapter", "string", "only this chapter")
        .query("source", "string", "only this source")
        .limit("jobs per page (default 500, at most 5000)")
        .query_schema(
            "after",
            json!({"type": "string", "pattern": crate::jobs::CURSOR_PATTERN}),
            "the previous page's `X-Next-After` header: where it ended (`<µs since the epoch>-<job id in hex>`)",
        )
        .one_of("order", &["oldest", "newest"], "`oldest` (default) or `newest` first")
        .query_schema(
            "selector",
            json!({"type": "string", "pattern": george_core::labels::SELECTOR_PATTERN}),
            "only jobs whose labels meet every requirement: `key=value`, `key!=value` (also true without the label), `key`, `!key`, separated by commas",
        )
        .json::<Vec<JobView>>(200, "a page of jobs (without steps); a full page has an `X-Next-After` header")
        .done();
    b.op("post", "/api/v1/jobs", "operator", "Submit a job")
        .body::<SubmitJob>(true)
        .json::<JobView>(201, "the new job")
        .done();
    b.op("get", "/api/v1/jobs/{id}", "viewer-or-agent", "A job with its steps").json::<JobView>(200, "the job").done();
    b.op("delete", "/api/v1/jobs/{id}", "admin", "Delete a finished job with its records, files and events")
        .json::<GcReport>(200, "what was deleted")
        .done();
    for (action, summary) in [
        ("pause", "Pause a job (its agent is stopped gracefully)"),
        ("resume", "Resume a paused job"),
        ("abort", "Abort a job"),
        ("approve", "Approve a P0/P1 job held while the token budget is red"),
    ] {
        b.op("post", format!("/api/v1/jobs/{{id}}/{action}"), "operator", summary)
            .body::<ActionRequest>(false)
            .json::<JobView>(200, "the job")
            .done();
    }
    let reason = json!({"type": "string", "pattern": "\\S", "description": "why (kept in the audit log)"});
    b.op("post", "/api/v1/jobs/{id}/override", "operator", "Set a job's or a step's status by hand (audited)")
        .body_schema(
            true,
            json!({"oneOf": [
                {"type": "object", "title": "the job's status", "additionalProperties": false,
                 "required": ["status", "reason"],
                 "properties": {"status": {"enum": ["pending", "completed", "failed"]}, "reason": reason,
                                "step": {"type": "null"}}},
                {"type": "object", "title": "a step's status", "additionalProperties": false,
                 "required": ["step", "status", "reason"],
                 "properties": {"step": {"type": "string", "minLength": 1},
                                "status": {"enum": ["pending", "completed", "skipped", "failed"]}, "reason": reason}},
            ]}),
        )
        .json::<JobView>(200, "the job")
        .done();
    b.op("post", "/api/v1/jobs/{id}/retry", "operator", "A failed, aborted or blocked job gets a new attempt")
        .body::<RetryRequest>(false)
        .json::<JobView>(200, "the job, pending")
        .done();
    b.op("post", "/api/v1/jobs/{id}/resubmit", "operator", "A new job with this one's template and parameters")
        .body::<ResubmitRequest>(false)
        .json::<JobView>(201, "the new job")
        .done();
    b.op("post", "/api/v1/jobs/{id}/inject", "operator", "Send a message to the job's agent")
        .body::<InjectRequest>(true)
        .json::<CommentView>(201, "the message")
        .done();
    b.op("get", "/api/v1/jobs/{id}/comments", "viewer-or-agent", "The job's conversation, oldest first")
        .json::<Vec<CommentView>>(200, "comments")
        .done();
    b.op("post", "/api/v1/jobs/{id}/comments", "agent", "The agent writes in the conversation")
        .body::<CommentRequest>(true)
        .json::<CommentView>(201, "the comment")
        .done();
    b.op(
        "get",
        "/api/v1/jobs/{id}/children",
        "viewer-or-agent",
        "The job's child jobs, oldest first, with their results",
    )
    .json::<Vec<ChildView>>(200, "children")
    .done();
    b.op(
        "post",
        "/api/v1/jobs/{id}/children",
        "agent",
        "The agent (capability `spawn`) creates a child job, or finds the one its key named",
    )
    .body::<ChildRequest>(true)
    .json::<ChildView>(201, "the child, created")
    .json::<ChildView>(200, "the child its key named before")
    .done();
    b.op("get", "/api/v1/jobs/{id}/evidence", "viewer-or-agent", "The job's evidence, oldest first")
        .json::<Vec<EvidenceView>>(200, "evidence")
        .done();
    b.op("post", "/api/v1/jobs/{id}/evidence", "agent", "The agent records evidence")
        .body::<EvidenceReport>(true)
        .json::<EvidenceView>(201, "the evidence")
        .done();
    b.op("get", "/api/v1/jobs/{id}/context", "agent", "What the agent needs to work")
        .json::<AgentContext>(200, "the context")
        .done();
    b.op("post", "/api/v1/jobs/{id}/attach", "agent", "The agent's first call: its context, and its first heartbeat")
        .json::<AgentContext>(200, "the context")
        .done();
    b.op("post", "/api/v1/jobs/{id}/heartbeat", "agent", "The agent is alive").empty(204, "noted").done();
    b.op(
        "post",
        "/api/v1/jobs/{id}/reports",
        "agent",
        "A batch of reports, in order, all or nothing; also a heartbeat",
    )
    .body::<ReportBatch>(true)
    .empty(204, "applied")
    .done();
    b.op("post", "/api/v1/jobs/{id}/steps/{step}", "agent", "The agent reports a step's status")
        .body::<StepReport>(true)
        .empty(204, "noted")
        .done();
    b.op("post", "/api/v1/jobs/{id}/report", "agent", "The agent's verdict on the job")
        .body::<JobReport>(true)
        .empty(204, "noted")
        .done();
}

/// Agent instances.
fn describe_agents(b: &mut Builder) {
    b.op("get", "/api/v1/agents", "viewer", "Agent instances (live ones unless `all`)")
        .query("all", "boolean", "include ended agents")
        .limit("at most this many (default 500)")
        .json::<Vec<AgentView>>(200, "agents")
        .done();
    b.op("get", "/api/v1/agents/{id}", "viewer", "One agent instance (`<job>-<attempt>`)")
        .json::<AgentView>(200, "the agent")
        .done();
    b.op("get", "/api/v1/agents/{id}/logs", "viewer", "An agent's output; streams while it runs when `follow`")
        .query("follow", "boolean", "keep streaming while the agent runs (default true)")
        .content(200, "text/plain", "the log")
        .done();
    b.op("post", "/api/v1/agents/{id}/halt", "operator", "Emergency stop of one instance (its job is paused)")
        .body::<ActionRequest>(false)
        .json_value(
            200,
            "halted",
            object(
                json!({"agent": {"type": "string"}, "job": {"type": "string"}, "halted": {"type": "boolean"}}),
                &["agent", "job", "halted"],
            ),
        )
        .done();
}

/// The event log, webhooks, the registry, status and triggers.
fn describe_events_and_control(b: &mut Builder) {
    let entry = b.out.subschema_for::<RegistryEntry>().to_value();
    let event = b.out.subschema_for::<EventView>().to_value();
    let counts = json!({"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}});
    b.op("get", "/api/v1/events", "viewer", "The event log")
        .sequence("since", "events after this sequence number")
        .limit("at most this many (default 500, at most 5000)")
        .query("job", "string", "only this job's events")
        .query_schema(
            "last",
            json!({"type": "integer", "minimum": 1, "maximum": 5000}),
            "instead of `since`: the newest this many",
        )
        .json::<Vec<EventView>>(200, "events, oldest first")
        .done();
    let fired = b.out.subschema_for::<Fired>().to_value();
    b.op("post", "/api/v1/events", "signature", "Webhook: an external event for the webhook triggers (HMAC-signed)")
        .json_value(
            202,
            "what the triggers did",
            object(json!({"fired": {"type": "array", "items": fired}}), &["fired"]),
        )
        .done();
    let accepted = object(json!({"accepted": {"type": "boolean"}, "event": {"type": "string"}}), &["accepted"]);
    b.op("post", "/api/v1/webhooks/jira", "signature", "Jira webhook: wakes the Jira source (X-Hub-Signature)")
        .json_value(202, "accepted", accepted.clone())
        .done();
    b.op(
        "post",
        "/api/v1/slack/commands",
        "signature",
        "Slack slash command `/george` (form-encoded, X-Slack-Signature over v0:timestamp:body, 5 minutes)",
    )
    .json_value(
        200,
        "a Block Kit answer",
        object(
            json!({"response_type": {"type": "string"}, "text": {"type": "string"}, "blocks": {"type": "array"}}),
            &["response_type", "text", "blocks"],
        ),
    )
    .done();
    b.op(
        "post",
        "/api/v1/slack/events",
        "signature",
        "Slack Events API: the URL handshake, and mentions of George answered in their thread",
    )
    .json_value(200, "acknowledged (`{challenge}` for the handshake)", json!({"type": "object"}))
    .done();
    b.op(
        "post",
        "/api/v1/webhooks/github",
        "signature",
        "GitHub webhook: `issues` and `issue_comment` wake the GitHub source (X-Hub-Signature-256, X-GitHub-Event)",
    )
    .json_value(200, "a ping, answered", accepted.clone())
    .json_value(202, "accepted (`accepted: false`: an event George does not act on)", accepted)
    .done();

    b.op("get", "/api/v1/registry", "viewer", "AgentSpecs with their lifecycle state and health")
        .query("type", "string", "only this role")
        .query("chapter", "string", "only this chapter")
        .query("capability", "string", "only agents with this capability")
        .one_of("status", &["dormant", "awakening", "active", "cooling", "terminated"], "only this lifecycle state")
        .json::<Vec<RegistryEntry>>(200, "registry entries")
        .done();
    let dismissed = object(
        json!({
            "agent_spec": {"type": "string"},
            "dismissed": {"type": "array", "items": object(json!({"agent": {"type": "string"}, "job": {"type": "string"}}), &["agent", "job"])},
            "acknowledged": {"type": "boolean"},
        }),
        &["agent_spec", "dismissed", "acknowledged"],
    );
    b.op("post", "/api/v1/registry/{agent}/dismiss", "operator", "Stop every instance of an AgentSpec gracefully")
        .body::<ActionRequest>(false)
        .json_value(200, "dismissed", dismissed)
        .done();
    b.op("get", "/api/v1/triggers", "viewer", "Triggers with their next cron fire times")
        .json::<Vec<TriggerEntry>>(200, "triggers")
        .done();
    let status = object(
        json!({"agents": {"type": "array", "items": entry}, "queue": counts, "jobs": counts}),
        &["agents", "queue", "jobs"],
    );
    b.op("get", "/api/v1/status", "viewer", "Agent states, queue depth by priority, jobs by status")
        .json_value(200, "the status", status)
        .done();
    let diagnose = object(
        json!({
            "store": object(json!({"ok": {"type": "boolean"}, "read_ms": {"type": "number"}, "error": {"type": ["string", "null"]}}), &["ok", "read_ms"]),
            "reconcile_queue": {"type": "integer"},
            "scheduler_queue": {"type": "integer"},
            "live_agents": {"type": "integer"},
            "spawns": {"type": "integer"},
            "spawn_failures": {"type": "integer"},
            "failed_jobs": {"type": "integer"},
            "recent_problems": {"type": "array", "items": event},
        }),
        &["store", "reconcile_queue", "scheduler_queue", "live_agents", "failed_jobs", "recent_problems"],
    );
    b.op("get", "/api/v1/diagnose", "viewer", "Engine health: store latency, queues, recent problems")
        .json_value(200, "the diagnosis", diagnose)
        .done();
    b.op(
        "get",
        "/api/v1/triggers/{name}",
        "viewer",
        "A trigger with its recent history (fires, failures, suspensions)",
    )
    .json::<TriggerDetail>(200, "the trigger")
    .done();
    b.op("post", "/api/v1/triggers/{name}/fire", "operator", "Fire a trigger once now, by hand")
        .json::<Fired>(201, "the job it created (or the wake it was folded into)")
        .done();
    b.op(
        "post",
        "/api/v1/triggers/{name}/suspend",
        "operator",
        "Suspend a trigger: its schedule and events stop firing it",
    )
    .body::<ActionRequest>(false)
    .json::<TriggerEntry>(200, "the trigger, suspended")
    .done();
    b.op("post", "/api/v1/triggers/{name}/resume", "operator", "Resume a suspended trigger")
        .json::<TriggerEntry>(200, "the trigger, resumed")
        .done();
    b.op("post", "/api/v1/summon", "operator", "Wake an agent by hand")
        .body::<SummonRequest>(true)
        .json::<Fired>(201, "the job it created")
        .done();
}

/// Sources, the ledger, budgets, throttles and the LLM proxy.
fn describe_budgets_and_llm(b: &mut Builder) {
    b.op("get", "/api/v1/sources", "viewer", "Sources and their last applied revision")
        .json::<Vec<SourceView>>(200, "sources")
        .done();
    b.op("post", "/api/v1/sync", "operator", "Sync every source now").json::<SyncResult>(200, "the sources").done();
    b.op("post", "/api/v1/gc", "admin", "Delete finished jobs past their retention now")
        .query("dryRun", "boolean", "only report what would be deleted")
        .json::<GcReport>(200, "what was (or would be) deleted")
        .done();
    b.op("get", "/api/v1/ledger", "viewer", "The ledger of LLM calls")
        .query("job", "string", "only this job's calls")
        .query_schema(
            "since",
            json!({"type": "string", "format": "date-time"}),
            "calls since (RFC 3339; default the start of the month)",
        )
        .json::<Vec<UsageRecord>>(200, "usage records")
        .done();
    b.op("get", "/api/v1/budget", "viewer", "Token use against the budgets (MANA_REPORT_V1)")
        .one_of("period", &["month", "day"], "`month` (default) or `day`")
        .json::<BudgetReport>(200, "the report")
        .done();
    b.op("post", "/api/v1/chapters/{chapter}/throttle", "admin", "Throttle a chapter's token rate, or clear it")
        .body::<ThrottleRequest>(true)
        .json::<ThrottleView>(200, "the throttle")
        .done();

    for (path, summary) in [
        ("/llm/v1/chat/completions", "LLM proxy, OpenAI Chat Completions shape (metered, budgeted)"),
        ("/llm/v1/messages", "LLM proxy, Anthropic Messages shape (metered, budgeted)"),
    ] {
        b.op("post", path, "agent", summary)
            .body_schema(
                true,
                json!({"type": "object",
                "description": "the provider's request shape; the proxy sets `model` and caps the output tokens. \
                                Media given by reference (`file_id`, `file_url`) are refused: they cannot be metered.",
                "properties": {
                    "n": {"type": ["integer", "null"], "minimum": 1, "maximum": crate::llm::MAX_COMPLETIONS},
                }}),
            )
            .json_value(
                200,
                "the provider's response (or an SSE stream when `stream` is set)",
                json!({"type": "object"}),
            )
            .done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router serves (but the dashboard's files) is described, and nothing else.
    #[test]
    fn every_route_is_described() {
        let source = include_str!("lib.rs");
        let mut routes = std::collections::BTreeSet::new();
        for line in source.lines().map(str::trim).filter(|l| l.starts_with(".route(\"")) {
            let path = line.split('"').nth(1).unwrap();
            if path == "/" || path.starts_with("/ui/") {
                continue;
            }
            for method in ["get", "post", "delete", "put", "patch"] {
                if line.contains(&format!("{method}(")) {
                    routes.insert(format!("{method} {path}"));
                }
            }
        }
        let doc = document();
        let mut described = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                described.insert(format!("{method} {path}"));
            }
        }
        assert!(routes.len() > 40, "the router was read: {routes:?}");
        assert_eq!(routes, described);
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref to {name}");
        }
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
