//! A forge for tests, following GitHub's REST API for pull requests
//! (docs.github.com "REST API endpoints for pull requests"):
//! - `POST /repos/{owner}/{repo}/pulls` `{title, head, base, body}` →
//!   `201` with `number`, `html_url`, `state: open`, `head.ref`, `base.ref`;
//!   `422 Validation Failed` with "A pull request already exists for
//!   owner:branch." when one is open for the head;
//! - `GET /repos/{owner}/{repo}/pulls?head=owner:branch&state=open` → the
//!   open ones for that head;
//! - a missing or wrong `Authorization: Bearer` token → `401 Bad credentials`.

#![allow(dead_code)]

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The pull requests of a forge (shared with the GitHub test server, which serves them too).
#[derive(Default)]
pub struct Pulls {
    token: String,
    base: String,
    first_number: usize,
    open: Vec<Value>,
}

/// Pull requests served to the holder of `token`, numbered from `first_number`.
pub(crate) fn pulls(token: &str, first_number: usize) -> Arc<Mutex<Pulls>> {
    Arc::new(Mutex::new(Pulls { token: token.into(), first_number, ..Default::default() }))
}

/// The routes serving `state`; `set_base` names where they are served once bound.
pub(crate) fn routes<S>(state: Arc<Mutex<Pulls>>) -> Router<S> {
    Router::new().route("/repos/{owner}/{repo}/pulls", get(list).post(create)).with_state(state)
}

/// Tells `state` the URL it is served at (for `html_url`).
pub(crate) fn set_base(state: &Mutex<Pulls>, base: &str) {
    state.lock().unwrap().base = base.to_string();
}

/// Every pull request opened on `state`.
pub(crate) fn opened(state: &Mutex<Pulls>) -> Vec<Value> {
    state.lock().unwrap().open.clone()
}

/// The running forge.
pub struct Forge {
    pub api: String,
    state: Arc<Mutex<Pulls>>,
}

impl Forge {
    pub fn start(token: &str) -> Self {
        let state = pulls(token, 1);
        let addr = super::inbox::serve_in_background(routes(state.clone()));
        let api = format!("http://{addr}");
        set_base(&state, &api);
        Self { api, state }
    }

    /// Every pull request opened.
    pub fn pulls(&self) -> Vec<Value> {
        opened(&self.state)
    }
}

type Answer = (StatusCode, Json<Value>);

fn authorised(s: &Pulls, headers: &HeaderMap) -> Result<(), Answer> {
    let want = format!("Bearer {}", s.token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(want.as_str()) {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})),
        ))
    }
}

async fn create(
    State(s): State<Arc<Mutex<Pulls>>>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Answer {
    let mut s = s.lock().unwrap();
    if let Err(e) = authorised(&s, &headers) {
        return e;
    }
    let (Some(head), Some(base), Some(title)) = (body["head"].as_str(), body["base"].as_str(), body["title"].as_str())
    else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "missing_field"}]}),
            ),
        );
    };
    if s.open.iter().any(|p| p["head"]["ref"] == head && p["repo"] == format!("{owner}/{repo}")) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom",
                "message": format!("A pull request already exists for {owner}:{head}.")}]})),
        );
    }
    let number = s.first_number + s.open.len();
    let pr = json!({
        "number": number, "state": "open", "title": title, "body": body["body"],
        "html_url": format!("{}/{owner}/{repo}/pull/{number}", s.base),
        "head": {"ref": head, "label": format!("{owner}:{head}")}, "base": {"ref": base},
        "repo": format!("{owner}/{repo}"),
    });
    s.open.push(pr.clone());
    (StatusCode::CREATED, Json(pr))
}

async fn list(
    State(s): State<Arc<Mutex<Pulls>>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Answer {
    let s = s.lock().unwrap();
    if let Err(e) = authorised(&s, &headers) {
        return e;
    }
    let found: Vec<Value> = s
        .open
        .iter()
        .filter(|p| p["repo"] == format!("{owner}/{repo}"))
        .filter(|p| q.get("head").is_none_or(|h| p["head"]["label"] == h.as_str()))
        .cloned()
        .collect();
    (StatusCode::OK, Json(Value::Array(found)))
}
