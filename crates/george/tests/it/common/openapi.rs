//! Test support: calls the engine over HTTP and checks every response
//! against the engine's own OpenAPI document (`/api/v1/openapi.json`):
//! the status must be documented for the operation (or fall under
//! `default`), the content type must match, and a JSON body must validate
//! against the documented JSON Schema (draft 2020-12, as OpenAPI 3.1 uses).

use serde_json::{json, Value};
use std::collections::BTreeSet;

/// One response as received.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

/// A checker bound to one engine.
pub struct Conformance {
    pub base: String,
    pub doc: Value,
    http: reqwest::Client,
    /// `method path-template` of every operation exercised.
    pub seen: BTreeSet<String>,
    /// Responses checked.
    pub checked: usize,
}

impl Conformance {
    pub async fn new(base: &str) -> Conformance {
        let http = reqwest::Client::new();
        let doc: Value = http.get(format!("{base}/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        Conformance { base: base.to_string(), doc, http, seen: BTreeSet::new(), checked: 0 }
    }

    /// Every operation in the document, as `method path-template`.
    pub fn operations(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert(format!("{method} {path}"));
            }
        }
        out
    }

    /// Who may call an operation (`x-george-auth`).
    pub fn auth(&self, op: &str) -> String {
        let (method, path) = op.split_once(' ').unwrap();
        self.doc["paths"][path][method]["x-george-auth"].as_str().unwrap().to_string()
    }

    /// Calls `method path` (`template` is its documented path) and checks the answer.
    pub async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.call_with(method, template, path, token, body, &[]).await
    }

    /// Like [`Conformance::call`], with extra headers (and a raw body when `raw` is set).
    pub async fn call_with(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> Answer {
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = self.http.request(m, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(serde_json::to_vec(&b).unwrap());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_string();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        self.check(method, template, status, &content_type, &text, &body);
        Answer { status, body, text }
    }

    /// Records a response obtained another way (a WebSocket upgrade).
    pub fn record(&mut self, method: &str, template: &str, status: u16) {
        self.check(method, template, status, "", "", &Value::Null);
    }

    fn check(&mut self, method: &str, template: &str, status: u16, content_type: &str, text: &str, body: &Value) {
        let op = &self.doc["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not in the OpenAPI document");
        let responses = &op["responses"];
        let documented = &responses[status.to_string()];
        let response = if documented.is_object() { documented } else { &responses["default"] };
        assert!(
            response.is_object(),
            "{method} {template} answered {status}, which the document does not describe: {text}"
        );
        if status >= 400 {
            // Errors fall under `default`, but for a WebSocket's 426 (its own answer to a plain request).
            assert!(
                !documented.is_object() || (status == 426 && op["x-websocket"].is_object()),
                "{method} {template}: errors fall under `default`, not {status}"
            );
        }
        self.seen.insert(format!("{method} {template}"));
        self.checked += 1;
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            assert!(text.is_empty(), "{method} {template} {status}: documented without a body, got {text:?}");
            return;
        };
        assert!(
            content.contains_key(content_type),
            "{method} {template} {status}: content type {content_type:?} is not among {:?}",
            content.keys().collect::<Vec<_>>()
        );
        if content_type != "application/json" {
            return;
        }
        let mut schema = content[content_type]["schema"].clone();
        // The schema's `$ref`s point into the document's components.
        schema.as_object_mut().unwrap().insert("components".into(), self.doc["components"].clone());
        schema.as_object_mut().unwrap().insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
        let validator = jsonschema::draft202012::new(&schema)
            .unwrap_or_else(|e| panic!("{method} {template} {status}: the documented schema does not compile: {e}"));
        let errors: Vec<String> =
            validator.iter_errors(body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {status}: the response does not match the document:\n{}\nbody: {}",
            errors.join("\n"),
            serde_json::to_string_pretty(body).unwrap()
        );
    }
}
