//! A scripted LLM provider for tests: OpenAI chat completions and Anthropic
//! messages, JSON and server-sent-event streaming, tool calls, and exact
//! usage figures, following the providers' public API documentation. It
//! records every request it receives.

#![allow(dead_code)]

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// One scripted reply.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A text answer.
    Text { text: String, input: u64, output: u64 },
    /// A request to call a tool.
    Tool { name: String, args: Value, input: u64, output: u64 },
    /// A text answer without usage figures (an OpenAI-compatible server that does not report them).
    Unmetered { text: String },
    /// A text answer billed as a real provider bills it, from the request it
    /// got: input is the messages' text at 4 bytes a token, 4 tokens of
    /// framing per message plus 3, and 1,105 tokens per image (the most
    /// OpenAI bills for one at high detail); output is the whole allowance —
    /// the highest cap field it finds (any of them: a provider may read
    /// either), times `n`.
    Billed { text: String },
}

impl Reply {
    pub fn text(text: &str, input: u64, output: u64) -> Self {
        Reply::Text { text: text.into(), input, output }
    }
    pub fn tool(name: &str, args: Value, input: u64, output: u64) -> Self {
        Reply::Tool { name: name.into(), args, input, output }
    }
    fn usage(&self) -> (u64, u64) {
        match self {
            Reply::Text { input, output, .. } | Reply::Tool { input, output, .. } => (*input, *output),
            Reply::Unmetered { .. } | Reply::Billed { .. } => (0, 0),
        }
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    pub api_key: Option<String>,
    /// The W3C trace context the call carried.
    pub traceparent: Option<String>,
    pub body: Value,
}

#[derive(Default)]
pub struct Script {
    pub replies: VecDeque<Reply>,
    pub fallback: Option<Reply>,
    pub received: Vec<Received>,
}

/// The running server.
pub struct ScriptedLlm {
    pub url: String,
    pub script: Arc<Mutex<Script>>,
}

impl ScriptedLlm {
    pub fn start() -> Self {
        let script = Arc::new(Mutex::new(Script::default()));
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .with_state(script.clone());
        let addr = super::inbox::serve_in_background(app);
        Self { url: format!("http://{addr}/v1"), script }
    }

    pub fn push(&self, r: Reply) {
        self.script.lock().unwrap().replies.push_back(r);
    }

    pub fn fallback(&self, r: Reply) {
        self.script.lock().unwrap().fallback = Some(r);
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }
}

fn next(s: &Arc<Mutex<Script>>, path: &str, headers: &HeaderMap, body: &Value) -> Reply {
    let mut s = s.lock().unwrap();
    s.received.push(Received {
        path: path.into(),
        authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string),
        api_key: headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::to_string),
        traceparent: headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string),
        body: body.clone(),
    });
    let reply = s.replies.pop_front().or_else(|| s.fallback.clone()).unwrap_or_else(|| Reply::text("ok", 1, 1));
    match reply {
        Reply::Billed { text } => {
            let (input, output) = billed(body);
            Reply::Text { text, input, output }
        }
        other => other,
    }
}

/// What a real provider would bill for `body` (see [`Reply::Billed`]).
pub fn billed(body: &Value) -> (u64, u64) {
    let messages = body["messages"].as_array().map_or(0, Vec::len) as u64;
    let text = body["messages"].to_string().len() as u64 + body.get("system").map_or(0, |s| s.to_string().len() as u64);
    let images = body.to_string().matches("\"image_url\"").count() as u64;
    let input = text.div_ceil(4) + 4 * messages + 3 + 1_105 * images;
    let cap = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .filter_map(|k| body.get(*k).and_then(Value::as_u64))
        .max()
        .unwrap_or(4096);
    (input, cap * body.get("n").and_then(Value::as_u64).unwrap_or(1))
}

fn sse(events: Vec<(Option<&str>, Value)>, done: bool) -> Response {
    let mut text = String::new();
    for (event, data) in events {
        if let Some(e) = event {
            text.push_str(&format!("event: {e}\n"));
        }
        text.push_str(&format!("data: {data}\n\n"));
    }
    if done {
        text.push_str("data: [DONE]\n\n");
    }
    // Split into small chunks, as a real stream arrives.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = text.into_bytes().chunks(23).map(|c| Ok(c.to_vec())).collect();
    ([("content-type", "text/event-stream")], Body::from_stream(futures_util::stream::iter(chunks))).into_response()
}

async fn openai(State(s): State<Arc<Mutex<Script>>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let reply = next(&s, "/v1/chat/completions", &headers, &body);
    if let Reply::Unmetered { text } = &reply {
        return Json(json!({"id": "c1", "object": "chat.completion", "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}))
        .into_response();
    }
    let (input, output) = reply.usage();
    let usage = json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output});
    let model = body["model"].clone();
    let (message, finish) = match &reply {
        Reply::Text { text, .. } | Reply::Unmetered { text } | Reply::Billed { text } => {
            (json!({"role": "assistant", "content": text}), "stop")
        }
        Reply::Tool { name, args, .. } => (
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                   "function": {"name": name, "arguments": args.to_string()}}]}),
            "tool_calls",
        ),
    };
    if body["stream"] == true {
        let delta = match &reply {
            Reply::Text { text, .. } | Reply::Unmetered { text } | Reply::Billed { text } => {
                json!({"role": "assistant", "content": text})
            }
            Reply::Tool { name, args, .. } => {
                json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                   "function": {"name": name, "arguments": args.to_string()}}]})
            }
        };
        let mut events = vec![
            (
                None,
                json!({"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": null}], "usage": null}),
            ),
            (
                None,
                json!({"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}], "usage": null}),
            ),
        ];
        if body["stream_options"]["include_usage"] == true {
            events.push((
                None,
                json!({"id": "c1", "object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage}),
            ));
        }
        return sse(events, true);
    }
    Json(json!({"id": "c1", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}))
    .into_response()
}

async fn anthropic(State(s): State<Arc<Mutex<Script>>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let reply = next(&s, "/v1/messages", &headers, &body);
    let (input, output) = reply.usage();
    let model = body["model"].clone();
    let (block, stop) = match &reply {
        Reply::Text { text, .. } | Reply::Unmetered { text } | Reply::Billed { text } => {
            (json!({"type": "text", "text": text}), "end_turn")
        }
        Reply::Tool { name, args, .. } => {
            (json!({"type": "tool_use", "id": "toolu_1", "name": name, "input": args}), "tool_use")
        }
    };
    if body["stream"] == true {
        let (start, delta) = match &reply {
            Reply::Text { text, .. } | Reply::Unmetered { text } | Reply::Billed { text } => {
                (json!({"type": "text", "text": ""}), json!({"type": "text_delta", "text": text}))
            }
            Reply::Tool { name, args, .. } => (
                json!({"type": "tool_use", "id": "toolu_1", "name": name, "input": {}}),
                json!({"type": "input_json_delta", "partial_json": args.to_string()}),
            ),
        };
        return sse(
            vec![
                (
                    Some("message_start"),
                    json!({"type": "message_start", "message": {"id": "m1", "type": "message", "role": "assistant",
                    "model": model, "content": [], "stop_reason": null, "usage": {"input_tokens": input, "output_tokens": 1}}}),
                ),
                (
                    Some("content_block_start"),
                    json!({"type": "content_block_start", "index": 0, "content_block": start}),
                ),
                (Some("content_block_delta"), json!({"type": "content_block_delta", "index": 0, "delta": delta})),
                (Some("content_block_stop"), json!({"type": "content_block_stop", "index": 0})),
                (
                    Some("message_delta"),
                    json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": output}}),
                ),
                (Some("message_stop"), json!({"type": "message_stop"})),
            ],
            false,
        );
    }
    Json(json!({"id": "m1", "type": "message", "role": "assistant", "model": model, "content": [block],
                "stop_reason": stop, "usage": {"input_tokens": input, "output_tokens": output}}))
    .into_response()
}
