//! A Jira Cloud test server, following Atlassian's published REST API v3
//! documentation for the calls George makes. It is a product asset: keep it
//! faithful. What it covers, and how:
//!
//! - **Authentication**: HTTP Basic `email:api_token` (Cloud) or `Bearer`
//!   (a Data Center personal access token). Anything else: `401` with
//!   `{"errorMessages": ["You are not authenticated. Authentication required to perform this operation."]}`.
//! - **`GET /rest/api/3/myself`**: `{accountId, displayName, emailAddress}`.
//! - **`POST /rest/api/3/search/jql`** (the enhanced search): body `{jql,
//!   fields, maxResults, nextPageToken}`; answers `{issues: [{id, key, self,
//!   fields}], nextPageToken, isLast}` with only the requested fields, pages
//!   of `maxResults` (default 50, at most 100), an opaque page token tied to
//!   the query. JQL: `AND`/`OR` of `field = value`, `!=`, `in (…)`, `not in
//!   (…)` and `summary ~ "text"`, then `ORDER BY` (`priority`, `created`,
//!   `key`, `ASC`/`DESC`), on `project`, `key`, `labels`, `status`,
//!   `statusCategory` (`"To Do"`/`new`, `"In Progress"`/`indeterminate`,
//!   `Done`/`done`), `issuetype` and `priority`; field names and keywords are
//!   case-insensitive. A malformed query or an unknown field is `400` with
//!   Jira's `Error in the JQL Query: …` / `Field '…' does not exist …`
//!   messages. Search is **eventually consistent**, as Jira warns: with
//!   `set_search_lag(n)`, a search sees a ticket's status as it was `n`
//!   changes ago.
//! - **Issues**: `GET /rest/api/3/issue/{key}?fields=…`; `fields.description`
//!   is ADF (or whatever a test stored, to test bad input), `issuelinks`
//!   carry `type {name, inward, outward}` and `inwardIssue`/`outwardIssue`
//!   with their status and status category.
//! - **Workflow**: statuses To Do (new), In Progress, In Review, Blocked
//!   (indeterminate) and Done (done). `GET …/transitions` lists the
//!   transitions available **from the current status** (`{id, name, to:
//!   {name, statusCategory}}`); `POST …/transitions` `{transition: {id}}` is
//!   `204`, or `400 "Transition id 'X' is not valid for this issue."` when it
//!   is not available now — checked and applied atomically, so of two racing
//!   callers one is refused.
//! - **Comments**: `GET …/comment?startAt&maxResults&orderBy` pages of
//!   `{comments, startAt, maxResults, total}`; `POST …/comment` `{body}`
//!   must be valid ADF (`type: doc`, `version: 1`, known block and inline
//!   nodes, non-empty text nodes, at most 32 767 characters), else `400`;
//!   `201` with `{id, author, body, created}`.
//! - **Issue properties**: `PUT …/properties/{key}` (`201` new, `200`
//!   replaced), `GET` (`{key, value}` or `404`).
//! - **Assignee**: `PUT …/assignee` `{accountId}` → `204`.
//! - **Attachments**: `POST /rest/api/3/issue/{key}/attachments`, a
//!   `multipart/form-data` body whose parts are named `file`, with the header
//!   `X-Atlassian-Token: no-check` (else `403` "XSRF check failed"); `200`
//!   with the list of attachments made (`{id, filename, size, mimeType}`);
//!   a file over the site's limit (1 MiB here) is `413`.
//! - **Sub-tasks**: `POST /rest/api/3/issue` `{fields: {project: {key},
//!   parent: {key}, issuetype: {name: "Subtask"}, summary, description}}`
//!   creates a sub-task of an existing issue of the same project (`201`
//!   `{id, key, self}`); a missing summary, an unknown parent or issue type,
//!   or invalid ADF is `400` with `errors` naming the field.
//! - **Errors**: unknown issue `404` `{"errorMessages": ["Issue does not exist or you do not have permission to see it."]}`.
//! - **Rate limiting and outages**: `fail_next(n, status, retry_after)`
//!   answers the next `n` requests with `429` (and `Retry-After`) or a `5xx`,
//!   without acting on them.

#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// The statuses of the workflow: name, category key, transition id leading to it.
const STATUSES: &[(&str, &str, &str)] = &[
    ("To Do", "new", "11"),
    ("In Progress", "indeterminate", "21"),
    ("In Review", "indeterminate", "41"),
    ("Blocked", "indeterminate", "51"),
    ("Done", "done", "31"),
];

fn category_of(status: &str) -> &'static str {
    STATUSES.iter().find(|s| s.0.eq_ignore_ascii_case(status)).map_or("new", |s| s.1)
}

fn category_name(key: &str) -> &'static str {
    match key {
        "new" => "To Do",
        "indeterminate" => "In Progress",
        _ => "Done",
    }
}

/// A ticket as a test creates it.
#[derive(Debug, Clone)]
pub struct NewIssue {
    pub key: String,
    pub summary: String,
    /// ADF, a string, `null`… whatever the test wants Jira to hold.
    pub description: Value,
    pub issue_type: String,
    pub labels: Vec<String>,
    pub priority: String,
    pub status: String,
    /// Keys of the tickets this one "is blocked by".
    pub blocked_by: Vec<String>,
}

impl NewIssue {
    pub fn new(key: &str, summary: &str) -> Self {
        NewIssue {
            key: key.into(),
            summary: summary.into(),
            description: adf_text(&format!("Please do: {summary}")),
            issue_type: "Task".into(),
            labels: vec!["george".into()],
            priority: "Medium".into(),
            status: "To Do".into(),
            blocked_by: vec![],
        }
    }
}

/// A one-paragraph ADF document.
pub fn adf_text(text: &str) -> Value {
    json!({"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}]})
}

#[derive(Debug, Clone)]
struct Comment {
    id: u64,
    author_id: String,
    author_name: String,
    body: Value,
    created: String,
}

#[derive(Debug, Clone)]
struct Issue {
    id: u64,
    key: String,
    project: String,
    summary: String,
    description: Value,
    issue_type: String,
    labels: Vec<String>,
    priority: String,
    /// Status history, newest last (the search may lag behind it).
    statuses: Vec<String>,
    created: u64,
    blocked_by: Vec<String>,
    comments: Vec<Comment>,
    properties: BTreeMap<String, Value>,
    assignee: Option<String>,
    parent: Option<String>,
    attachments: Vec<(u64, String, Vec<u8>)>,
}

impl Issue {
    fn status(&self) -> &str {
        self.statuses.last().map(String::as_str).unwrap_or("To Do")
    }
}

struct Fault {
    status: u16,
    retry_after: Option<u64>,
}

struct JiraState {
    base: String,
    email: String,
    token: String,
    account_id: String,
    issues: BTreeMap<String, Issue>,
    next_id: u64,
    next_comment: u64,
    faults: VecDeque<Fault>,
    search_lag: usize,
    requests: Vec<String>,
    transitions: Vec<(String, String)>,
}

type Shared = Arc<Mutex<JiraState>>;

/// The running server.
pub struct JiraServer {
    pub url: String,
    state: Shared,
}

fn jira_error(status: StatusCode, messages: &[&str]) -> Response {
    (status, Json(json!({"errorMessages": messages, "errors": {}}))).into_response()
}

impl JiraServer {
    /// A site whose bot account authenticates with `email` and `token`.
    pub fn start(email: &str, token: &str) -> Self {
        let state = Arc::new(Mutex::new(JiraState {
            base: String::new(),
            email: email.into(),
            token: token.into(),
            account_id: "5b10ac8d82e05b22cc7d4ef5".into(),
            issues: BTreeMap::new(),
            next_id: 10000,
            next_comment: 10000,
            faults: VecDeque::new(),
            search_lag: 0,
            requests: Vec::new(),
            transitions: Vec::new(),
        }));
        let app = Router::new()
            .route("/rest/api/3/myself", get(myself))
            .route("/rest/api/3/search/jql", post(search))
            .route("/rest/api/3/issue", post(create_subtask))
            .route("/rest/api/3/issue/{key}", get(issue))
            .route("/rest/api/3/issue/{key}/transitions", get(transitions).post(transition))
            .route("/rest/api/3/issue/{key}/comment", get(comments).post(add_comment))
            .route("/rest/api/3/issue/{key}/properties/{prop}", get(property).put(set_property))
            .route("/rest/api/3/issue/{key}/assignee", put(assign))
            .route("/rest/api/3/issue/{key}/attachments", post(attach))
            .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
            .with_state(state.clone());
        let addr = super::inbox::serve_in_background(app);
        let url = format!("http://{addr}");
        state.lock().unwrap().base = url.clone();
        JiraServer { url, state }
    }

    /// George's account id on this site.
    pub fn bot_account(&self) -> String {
        self.state.lock().unwrap().account_id.clone()
    }

    pub fn add_issue(&self, new: NewIssue) {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let issue = Issue {
            id: s.next_id,
            project: new.key.split('-').next().unwrap_or("").to_string(),
            key: new.key.clone(),
            summary: new.summary,
            description: new.description,
            issue_type: new.issue_type,
            labels: new.labels,
            priority: new.priority,
            statuses: vec![new.status],
            created: s.next_id,
            blocked_by: new.blocked_by,
            comments: vec![],
            properties: BTreeMap::new(),
            assignee: None,
            parent: None,
            attachments: vec![],
        };
        s.issues.insert(new.key, issue);
    }

    /// The sub-tasks of `key`: `(key, summary, status)`, in the order they were created.
    pub fn subtasks(&self, key: &str) -> Vec<(String, String, String)> {
        let s = self.state.lock().unwrap();
        let mut subs: Vec<&Issue> = s.issues.values().filter(|i| i.parent.as_deref() == Some(key)).collect();
        subs.sort_by_key(|i| i.id);
        subs.iter().map(|i| (i.key.clone(), i.summary.clone(), i.status().to_string())).collect()
    }

    /// The attachments of `key`: `(filename, content)`, oldest first.
    pub fn attachments(&self, key: &str) -> Vec<(String, Vec<u8>)> {
        self.state.lock().unwrap().issues[key].attachments.iter().map(|(_, f, b)| (f.clone(), b.clone())).collect()
    }

    /// A person moves a ticket.
    pub fn set_status(&self, key: &str, status: &str) {
        self.state.lock().unwrap().issues.get_mut(key).unwrap().statuses.push(status.into());
    }

    pub fn status(&self, key: &str) -> String {
        self.state.lock().unwrap().issues[key].status().to_string()
    }

    /// Every status the ticket has had, oldest first.
    pub fn history(&self, key: &str) -> Vec<String> {
        self.state.lock().unwrap().issues[key].statuses.clone()
    }

    /// A person comments.
    pub fn comment_as(&self, key: &str, account: &str, name: &str, text: &str) {
        let mut s = self.state.lock().unwrap();
        s.next_comment += 1;
        let id = s.next_comment;
        s.issues.get_mut(key).unwrap().comments.push(Comment {
            id,
            author_id: account.into(),
            author_name: name.into(),
            body: adf_text(text),
            created: now(),
        });
    }

    /// The comments: `(author account id, body ADF)`.
    pub fn comments(&self, key: &str) -> Vec<(String, Value)> {
        self.state.lock().unwrap().issues[key].comments.iter().map(|c| (c.author_id.clone(), c.body.clone())).collect()
    }

    pub fn property(&self, key: &str, prop: &str) -> Option<Value> {
        self.state.lock().unwrap().issues[key].properties.get(prop).cloned()
    }

    pub fn assignee(&self, key: &str) -> Option<String> {
        self.state.lock().unwrap().issues[key].assignee.clone()
    }

    /// The next `n` requests get `status` (with `Retry-After` if given), and nothing happens.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        let mut s = self.state.lock().unwrap();
        for _ in 0..n {
            s.faults.push_back(Fault { status, retry_after });
        }
    }

    /// Faults not yet served.
    pub fn pending_faults(&self) -> usize {
        self.state.lock().unwrap().faults.len()
    }

    /// Searches see statuses as they were `n` changes ago.
    pub fn set_search_lag(&self, n: usize) {
        self.state.lock().unwrap().search_lag = n;
    }

    /// Every successful transition: `(key, new status)`.
    pub fn transitions(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().transitions.clone()
    }

    /// Requests served (`METHOD path`).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Authentication, then injected faults, for every request.
async fn gate(State(s): State<Shared>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let line = format!("{} {}", req.method(), req.uri().path());
    {
        let mut st = s.lock().unwrap();
        let basic = format!("{}:{}", st.email, st.token);
        let ok = match auth.split_once(' ') {
            Some(("Basic", b)) => super::decode_base64(b) == basic,
            Some(("Bearer", t)) => t == st.token,
            _ => false,
        };
        if !ok {
            return jira_error(
                StatusCode::UNAUTHORIZED,
                &["You are not authenticated. Authentication required to perform this operation."],
            );
        }
        if let Some(f) = st.faults.pop_front() {
            st.requests.push(format!("{line} -> {}", f.status));
            let mut resp = if f.status == 429 {
                jira_error(StatusCode::TOO_MANY_REQUESTS, &["Rate limit exceeded."])
            } else {
                (StatusCode::from_u16(f.status).unwrap(), "<html><body>Service Unavailable</body></html>")
                    .into_response()
            };
            if let Some(secs) = f.retry_after {
                resp.headers_mut().insert("Retry-After", secs.to_string().parse().unwrap());
            }
            return resp;
        }
        st.requests.push(line);
    }
    next.run(req).await
}

async fn myself(State(s): State<Shared>) -> Response {
    let s = s.lock().unwrap();
    Json(json!({"accountId": s.account_id, "displayName": "George Bot", "emailAddress": s.email, "active": true}))
        .into_response()
}

fn not_found() -> Response {
    jira_error(StatusCode::NOT_FOUND, &["Issue does not exist or you do not have permission to see it."])
}

fn status_json(name: &str) -> Value {
    let cat = category_of(name);
    json!({"name": name, "statusCategory": {"key": cat, "name": category_name(cat)}})
}

/// The issue's fields as the search or GET returns them, seeing statuses `lag` changes back.
fn fields_of(s: &JiraState, i: &Issue, wanted: &[String], lag: usize) -> Value {
    let status = i.statuses.get(i.statuses.len().saturating_sub(1 + lag)).cloned().unwrap_or_else(|| i.status().into());
    let links: Vec<Value> = i
        .blocked_by
        .iter()
        .filter_map(|k| s.issues.get(k))
        .map(|b| {
            json!({"id": format!("{}{}", i.id, b.id), "type": {"name": "Blocks", "inward": "is blocked by", "outward": "blocks"},
                   "inwardIssue": {"id": b.id.to_string(), "key": b.key, "fields": {"summary": b.summary, "status": status_json(b.status())}}})
        })
        .collect();
    let all = json!({
        "summary": i.summary,
        "description": i.description,
        "issuetype": {"name": i.issue_type},
        "labels": i.labels,
        "priority": {"name": i.priority},
        "status": status_json(&status),
        "issuelinks": links,
        "created": format!("2026-01-01T00:00:{:02}.000+0000", i.created % 60),
        "project": {"key": i.project},
        "assignee": i.assignee.as_ref().map(|a| json!({"accountId": a})),
    });
    let mut out = serde_json::Map::new();
    for f in wanted {
        if f == "*all" || f == "*navigable" {
            return all;
        }
        if let Some(v) = all.get(f) {
            out.insert(f.clone(), v.clone());
        }
    }
    Value::Object(out)
}

async fn issue(State(s): State<Shared>, Path(key): Path<String>, Query(q): Query<HashMap<String, String>>) -> Response {
    let s = s.lock().unwrap();
    let Some(i) = s.issues.get(&key) else { return not_found() };
    let wanted: Vec<String> =
        q.get("fields").map_or(vec!["*all".to_string()], |f| f.split(',').map(|x| x.trim().to_string()).collect());
    Json(json!({"id": i.id.to_string(), "key": i.key, "self": format!("{}/rest/api/3/issue/{}", s.base, i.id),
                "fields": fields_of(&s, i, &wanted, 0)}))
    .into_response()
}

fn available(current: &str) -> Vec<Value> {
    STATUSES
        .iter()
        .filter(|(name, _, _)| !name.eq_ignore_ascii_case(current))
        .map(|(name, cat, id)| {
            let verb = match *name {
                "To Do" => "Stop Progress",
                "In Progress" => "Start Progress",
                "In Review" => "Submit for Review",
                "Blocked" => "Block",
                _ => "Resolve",
            };
            json!({"id": id, "name": verb, "hasScreen": false, "isGlobal": false, "isInitial": false,
                   "to": {"name": name, "statusCategory": {"key": cat, "name": category_name(cat)}}})
        })
        .collect()
}

async fn transitions(State(s): State<Shared>, Path(key): Path<String>) -> Response {
    let s = s.lock().unwrap();
    let Some(i) = s.issues.get(&key) else { return not_found() };
    Json(json!({"expand": "transitions", "transitions": available(i.status())})).into_response()
}

async fn transition(State(s): State<Shared>, Path(key): Path<String>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return jira_error(StatusCode::BAD_REQUEST, &["Unexpected character in the request body."]);
    };
    let mut s = s.lock().unwrap();
    let Some(i) = s.issues.get_mut(&key) else { return not_found() };
    let id = body.pointer("/transition/id").and_then(Value::as_str).unwrap_or("");
    let Some(target) = available(i.status()).into_iter().find(|t| t["id"] == id) else {
        let msg = format!("Transition id '{id}' is not valid for this issue.");
        return jira_error(StatusCode::BAD_REQUEST, &[msg.as_str()]);
    };
    let to = target["to"]["name"].as_str().unwrap().to_string();
    i.statuses.push(to.clone());
    s.transitions.push((key, to));
    StatusCode::NO_CONTENT.into_response()
}

fn comment_json(c: &Comment) -> Value {
    json!({"id": c.id.to_string(), "author": {"accountId": c.author_id, "displayName": c.author_name},
           "body": c.body, "created": c.created, "updated": c.created, "jsdPublic": true})
}

async fn comments(
    State(s): State<Shared>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = s.lock().unwrap();
    let Some(i) = s.issues.get(&key) else { return not_found() };
    let start: usize = q.get("startAt").and_then(|v| v.parse().ok()).unwrap_or(0);
    let max: usize = q.get("maxResults").and_then(|v| v.parse().ok()).unwrap_or(50).min(100);
    let page: Vec<Value> = i.comments.iter().skip(start).take(max).map(comment_json).collect();
    Json(json!({"startAt": start, "maxResults": max, "total": i.comments.len(), "comments": page})).into_response()
}

/// Why `node` is not valid ADF, if it is not.
fn adf_problem(node: &Value, depth: usize, chars: &mut usize) -> Option<String> {
    adf_node_problem(node, "doc", depth, chars)
}

/// What is wrong with `node` inside a `parent` node, if anything. Tables
/// (`table` → `tableRow` → `tableHeader`/`tableCell` → blocks) nest as ADF's
/// schema says.
fn adf_node_problem(node: &Value, parent: &str, depth: usize, chars: &mut usize) -> Option<String> {
    const BLOCKS: &[&str] = &[
        "paragraph",
        "heading",
        "codeBlock",
        "blockquote",
        "bulletList",
        "orderedList",
        "listItem",
        "rule",
        "panel",
        "table",
        "tableRow",
        "tableHeader",
        "tableCell",
    ];
    const INLINE: &[&str] = &["text", "hardBreak", "mention", "emoji", "inlineCard"];
    if depth > 32 {
        return Some("nested too deeply".into());
    }
    let kind = node.get("type").and_then(Value::as_str).unwrap_or("");
    let cells = ["tableHeader", "tableCell"];
    let misplaced = match kind {
        "tableRow" => parent != "table",
        k if cells.contains(&k) => parent != "tableRow",
        _ => parent == "table" || parent == "tableRow",
    };
    if misplaced {
        return Some(format!("`{kind}` cannot be inside `{parent}`"));
    }
    if kind == "text" {
        let text = node.get("text").and_then(Value::as_str).unwrap_or("");
        if text.is_empty() {
            return Some("a text node must have non-empty text".into());
        }
        *chars += text.chars().count();
        return None;
    }
    if !BLOCKS.contains(&kind) && !INLINE.contains(&kind) {
        return Some(format!("unknown node type `{kind}`"));
    }
    let content = node.get("content").and_then(Value::as_array);
    if matches!(kind, "table" | "tableRow") && content.is_none_or(|c| c.is_empty()) {
        return Some(format!("`{kind}` needs content"));
    }
    for c in content.into_iter().flatten() {
        if let Some(p) = adf_node_problem(c, kind, depth + 1, chars) {
            return Some(p);
        }
    }
    None
}

async fn add_comment(State(s): State<Shared>, Path(key): Path<String>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return jira_error(StatusCode::BAD_REQUEST, &["Unexpected character in the request body."]);
    };
    let doc = &body["body"];
    let mut chars = 0;
    let problem = if doc["type"] != "doc" || doc["version"] != 1 || !doc["content"].is_array() {
        Some("the body must be an ADF document (type doc, version 1, content)".to_string())
    } else {
        doc["content"].as_array().unwrap().iter().find_map(|n| adf_problem(n, 0, &mut chars))
    };
    if let Some(p) = problem.or_else(|| (chars > 32_767).then(|| "the comment is over 32767 characters".to_string())) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"errorMessages": [], "errors": {"comment": format!("Comment body is not valid: {p}")}})),
        )
            .into_response();
    }
    let mut s = s.lock().unwrap();
    let author = s.account_id.clone();
    s.next_comment += 1;
    let id = s.next_comment;
    let Some(i) = s.issues.get_mut(&key) else { return not_found() };
    let c = Comment { id, author_id: author, author_name: "George Bot".into(), body: doc.clone(), created: now() };
    let out = comment_json(&c);
    i.comments.push(c);
    (StatusCode::CREATED, Json(out)).into_response()
}

async fn create_subtask(State(s): State<Shared>, body: Bytes) -> Response {
    let field_error = |field: &str, message: &str| {
        (StatusCode::BAD_REQUEST, Json(json!({"errorMessages": [], "errors": {field: message}}))).into_response()
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return jira_error(StatusCode::BAD_REQUEST, &["Unexpected character in the request body."]);
    };
    let f = &body["fields"];
    let Some(summary) = f["summary"].as_str().filter(|t| !t.trim().is_empty()) else {
        return field_error("summary", "You must specify a summary of the issue.");
    };
    if f["issuetype"]["name"] != "Subtask" {
        return field_error("issuetype", "Specify an issue type");
    }
    let description = f.get("description").cloned().unwrap_or(Value::Null);
    if !description.is_null() {
        let mut chars = 0;
        let problem =
            if description["type"] != "doc" || description["version"] != 1 || !description["content"].is_array() {
                Some("the description must be an ADF document".to_string())
            } else {
                description["content"].as_array().unwrap().iter().find_map(|n| adf_problem(n, 0, &mut chars))
            };
        if let Some(p) = problem {
            return field_error("description", &format!("Operation value must be an Atlassian Document: {p}"));
        }
    }
    let mut st = s.lock().unwrap();
    let project = f["project"]["key"].as_str().unwrap_or_default().to_string();
    let parent = f["parent"]["key"].as_str().unwrap_or_default().to_string();
    match st.issues.get(&parent) {
        Some(p) if p.project == project && p.parent.is_none() => {}
        _ => return field_error("parent", "Could not find issue by id or key."),
    }
    st.next_id += 1;
    let id = st.next_id;
    let number = st.issues.keys().filter_map(|k| k.rsplit('-').next()?.parse::<u64>().ok()).max().unwrap_or(0) + 1;
    let key = format!("{project}-{number}");
    let issue = Issue {
        id,
        key: key.clone(),
        project,
        summary: summary.to_string(),
        description,
        issue_type: "Subtask".into(),
        labels: vec![],
        priority: "Medium".into(),
        statuses: vec!["To Do".into()],
        created: id,
        blocked_by: vec![],
        comments: vec![],
        properties: BTreeMap::new(),
        assignee: None,
        parent: Some(parent),
        attachments: vec![],
    };
    st.issues.insert(key.clone(), issue);
    let base = st.base.clone();
    (
        StatusCode::CREATED,
        Json(json!({"id": id.to_string(), "key": key, "self": format!("{base}/rest/api/3/issue/{id}")})),
    )
        .into_response()
}

/// The most one attachment may hold on this site.
const MAX_ATTACHMENT: usize = 1 << 20;

async fn attach(
    State(s): State<Shared>,
    Path(key): Path<String>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get("x-atlassian-token").and_then(|v| v.to_str().ok()) != Some("no-check") {
        return jira_error(StatusCode::FORBIDDEN, &["XSRF check failed"]);
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(boundary) = content_type
        .strip_prefix("multipart/form-data")
        .and_then(|rest| rest.split(';').find_map(|p| p.trim().strip_prefix("boundary=")))
        .map(|b| b.trim_matches('"').to_string())
    else {
        return jira_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &["The request is not multipart/form-data."]);
    };
    let Some(files) = multipart_files(&body, &boundary) else {
        return jira_error(StatusCode::BAD_REQUEST, &["The multipart body is malformed."]);
    };
    if files.is_empty() {
        return jira_error(StatusCode::BAD_REQUEST, &["No part named `file`."]);
    }
    if files.iter().any(|(_, b)| b.len() > MAX_ATTACHMENT) {
        return jira_error(StatusCode::PAYLOAD_TOO_LARGE, &["The file is larger than the attachment size limit."]);
    }
    let mut st = s.lock().unwrap();
    let mut made = Vec::new();
    for (name, bytes) in files {
        st.next_id += 1;
        let id = st.next_id;
        let Some(i) = st.issues.get_mut(&key) else { return not_found() };
        made.push(json!({"id": id.to_string(), "filename": name, "size": bytes.len(), "mimeType": "text/plain"}));
        i.attachments.push((id, name, bytes));
    }
    Json(Value::Array(made)).into_response()
}

/// The `file` parts of a multipart body: `(filename, content)`; `None` if malformed.
fn multipart_files(body: &[u8], boundary: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let delimiter = format!("--{boundary}");
    let text = body;
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
    };
    let mut out = Vec::new();
    let mut at = find(text, delimiter.as_bytes(), 0)? + delimiter.len();
    loop {
        if text.get(at..at + 2)? == b"--" {
            return Some(out);
        }
        let head_start = at + 2; // \r\n
        let head_end = find(text, b"\r\n\r\n", head_start)?;
        let head = String::from_utf8_lossy(&text[head_start..head_end]).to_string();
        let next = find(text, format!("\r\n{delimiter}").as_bytes(), head_end + 4)?;
        let content = text[head_end + 4..next].to_vec();
        let disposition = head.lines().find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?;
        let field = |name: &str| {
            disposition
                .split(';')
                .find_map(|p| p.trim().strip_prefix(&format!("{name}=")).map(|v| v.trim_matches('"').to_string()))
        };
        if field("name").as_deref() == Some("file") {
            out.push((field("filename").unwrap_or_else(|| "file".into()), content));
        }
        at = next + 2 + delimiter.len();
    }
}

async fn property(State(s): State<Shared>, Path((key, prop)): Path<(String, String)>) -> Response {
    let s = s.lock().unwrap();
    let Some(i) = s.issues.get(&key) else { return not_found() };
    match i.properties.get(&prop) {
        Some(v) => Json(json!({"key": prop, "value": v})).into_response(),
        None => jira_error(StatusCode::NOT_FOUND, &[&format!("The property with key '{prop}' does not exist.")]),
    }
}

async fn set_property(State(s): State<Shared>, Path((key, prop)): Path<(String, String)>, body: Bytes) -> Response {
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return jira_error(StatusCode::BAD_REQUEST, &["The property value must be valid JSON."]);
    };
    let mut s = s.lock().unwrap();
    let Some(i) = s.issues.get_mut(&key) else { return not_found() };
    if i.properties.insert(prop, value).is_some() {
        StatusCode::OK.into_response()
    } else {
        StatusCode::CREATED.into_response()
    }
}

async fn assign(State(s): State<Shared>, Path(key): Path<String>, Json(body): Json<Value>) -> Response {
    let mut s = s.lock().unwrap();
    let Some(i) = s.issues.get_mut(&key) else { return not_found() };
    i.assignee = body["accountId"].as_str().map(str::to_string);
    StatusCode::NO_CONTENT.into_response()
}

// ---- JQL ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Op(String),
    LParen,
    RParen,
    Comma,
}

fn lex(q: &str) -> Result<Vec<(Tok, usize)>, String> {
    let c: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let start = i;
        match c[i] {
            ' ' | '\t' | '\n' => i += 1,
            '(' => {
                out.push((Tok::LParen, start));
                i += 1
            }
            ')' => {
                out.push((Tok::RParen, start));
                i += 1
            }
            ',' => {
                out.push((Tok::Comma, start));
                i += 1
            }
            '"' | '\'' => {
                let quote = c[i];
                i += 1;
                let mut s = String::new();
                while i < c.len() && c[i] != quote {
                    if c[i] == '\\' && i + 1 < c.len() {
                        i += 1;
                    }
                    s.push(c[i]);
                    i += 1;
                }
                if i >= c.len() {
                    return Err(format!("Error in the JQL Query: The quoted string '{s}' has not been completed. (line 1, character {})", start + 1));
                }
                i += 1;
                out.push((Tok::Str(s), start));
            }
            '=' | '!' | '~' => {
                let mut op = c[i].to_string();
                i += 1;
                if i < c.len() && (c[i] == '=' || c[i] == '~') {
                    op.push(c[i]);
                    i += 1;
                }
                if op == "!" {
                    return Err(format!("Error in the JQL Query: Expecting operator but got '!'. (line 1, character {})", start + 1));
                }
                out.push((Tok::Op(op), start));
            }
            ch if ch.is_alphanumeric() || ch == '_' || ch == '-' || ch == '.' => {
                let mut s = String::new();
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_' || c[i] == '-' || c[i] == '.') {
                    s.push(c[i]);
                    i += 1;
                }
                out.push((Tok::Word(s), start));
            }
            other => {
                return Err(format!(
                    "Error in the JQL Query: The character '{other}' is a reserved JQL character. You must enclose it in a string or use the escape '\\u{:04x}' instead. (line 1, character {})",
                    other as u32,
                    start + 1
                ))
            }
        }
    }
    Ok(out)
}

#[derive(Debug)]
struct Clause {
    field: String,
    op: String,
    values: Vec<String>,
}

/// `OR` of `AND` groups, and the ordering.
struct Query1 {
    any: Vec<Vec<Clause>>,
    order: Vec<(String, bool)>,
}

const FIELDS: &[&str] =
    &["project", "key", "labels", "status", "statuscategory", "issuetype", "type", "priority", "summary"];

fn parse_jql(q: &str) -> Result<Query1, String> {
    let toks = lex(q)?;
    let mut i = 0;
    let expect = |what: &str, got: Option<&(Tok, usize)>| -> String {
        match got {
            Some((t, at)) => format!(
                "Error in the JQL Query: Expecting {what} but got '{}'. (line 1, character {})",
                tok_text(t),
                at + 1
            ),
            None => format!("Error in the JQL Query: Expecting {what} before the end of the query."),
        }
    };
    let word = |t: Option<&(Tok, usize)>| match t {
        Some((Tok::Word(w), _)) => Some(w.to_ascii_lowercase()),
        _ => None,
    };
    let mut any = vec![vec![]];
    let mut order = vec![];
    if toks.is_empty() {
        return Ok(Query1 { any: vec![vec![]], order });
    }
    loop {
        if word(toks.get(i)).as_deref() == Some("order") {
            break;
        }
        let field = match toks.get(i) {
            Some((Tok::Word(w), _)) | Some((Tok::Str(w), _)) => w.to_ascii_lowercase(),
            other => return Err(expect("a field name", other)),
        };
        if !FIELDS.contains(&field.as_str()) {
            return Err(format!("Field '{field}' does not exist or you do not have permission to view it."));
        }
        i += 1;
        let op = match toks.get(i) {
            Some((Tok::Op(o), _)) => o.clone(),
            Some((Tok::Word(w), _)) if w.eq_ignore_ascii_case("in") => "in".into(),
            Some((Tok::Word(w), _)) if w.eq_ignore_ascii_case("not") => {
                if word(toks.get(i + 1)).as_deref() != Some("in") {
                    return Err(expect("'in'", toks.get(i + 1)));
                }
                i += 1;
                "not in".into()
            }
            other => return Err(expect("operator", other)),
        };
        i += 1;
        let mut values = vec![];
        if op == "in" || op == "not in" {
            if toks.get(i).map(|t| &t.0) != Some(&Tok::LParen) {
                return Err(expect("'('", toks.get(i)));
            }
            i += 1;
            loop {
                match toks.get(i) {
                    Some((Tok::Word(w), _)) | Some((Tok::Str(w), _)) => values.push(w.clone()),
                    other => return Err(expect("a value", other)),
                }
                i += 1;
                match toks.get(i) {
                    Some((Tok::Comma, _)) => i += 1,
                    Some((Tok::RParen, _)) => {
                        i += 1;
                        break;
                    }
                    other => return Err(expect("',' or ')'", other)),
                }
            }
        } else {
            match toks.get(i) {
                Some((Tok::Word(w), _)) | Some((Tok::Str(w), _)) => values.push(w.clone()),
                other => return Err(expect("a value", other)),
            }
            i += 1;
        }
        any.last_mut().unwrap().push(Clause { field, op, values });
        match word(toks.get(i)).as_deref() {
            None if i >= toks.len() => break,
            Some("and") => i += 1,
            Some("or") => {
                any.push(vec![]);
                i += 1
            }
            Some("order") => break,
            _ => return Err(expect("either 'OR' or 'AND'", toks.get(i))),
        }
    }
    if word(toks.get(i)).as_deref() == Some("order") {
        if word(toks.get(i + 1)).as_deref() != Some("by") {
            return Err(expect("'by'", toks.get(i + 1)));
        }
        i += 2;
        loop {
            let Some(f) = word(toks.get(i)) else { return Err(expect("a field name", toks.get(i))) };
            i += 1;
            let mut asc = true;
            match word(toks.get(i)).as_deref() {
                Some("asc") => i += 1,
                Some("desc") => {
                    asc = false;
                    i += 1
                }
                _ => {}
            }
            order.push((f, asc));
            match toks.get(i) {
                Some((Tok::Comma, _)) => i += 1,
                None => break,
                other => return Err(expect("',' or the end of the query", other)),
            }
        }
    }
    Ok(Query1 { any, order })
}

fn tok_text(t: &Tok) -> String {
    match t {
        Tok::Word(w) | Tok::Str(w) | Tok::Op(w) => w.clone(),
        Tok::LParen => "(".into(),
        Tok::RParen => ")".into(),
        Tok::Comma => ",".into(),
    }
}

fn priority_rank(p: &str) -> u8 {
    match p.to_ascii_lowercase().as_str() {
        "highest" => 5,
        "high" => 4,
        "medium" => 3,
        "low" => 2,
        _ => 1,
    }
}

fn matches(c: &Clause, i: &Issue, status: &str) -> bool {
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let hit = |v: &str| match c.field.as_str() {
        "project" => eq(&i.project, v),
        "key" => eq(&i.key, v),
        "labels" => i.labels.iter().any(|l| l == v),
        "status" => eq(status, v),
        "statuscategory" => {
            let cat = category_of(status);
            eq(cat, v) || eq(category_name(cat), v)
        }
        "issuetype" | "type" => eq(&i.issue_type, v),
        "priority" => eq(&i.priority, v),
        "summary" => i.summary.to_lowercase().contains(&v.to_lowercase()),
        _ => false,
    };
    match c.op.as_str() {
        "=" | "in" | "~" => c.values.iter().any(|v| hit(v)),
        "!=" | "not in" | "!~" => !c.values.iter().any(|v| hit(v)),
        _ => false,
    }
}

async fn search(State(s): State<Shared>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return jira_error(StatusCode::BAD_REQUEST, &["Unexpected character in the request body."]);
    };
    let jql = body["jql"].as_str().unwrap_or("");
    let q = match parse_jql(jql) {
        Ok(q) => q,
        Err(m) => return jira_error(StatusCode::BAD_REQUEST, &[m.as_str()]),
    };
    if q.any.iter().all(|g| g.is_empty()) {
        return jira_error(
            StatusCode::BAD_REQUEST,
            &["Unbounded JQL queries are not allowed here. Please add a search restriction to your query."],
        );
    }
    let max = body["maxResults"].as_u64().unwrap_or(50).clamp(1, 100) as usize;
    let wanted: Vec<String> = body["fields"]
        .as_array()
        .map_or(vec!["*navigable".into()], |a| a.iter().filter_map(|f| f.as_str().map(String::from)).collect());
    let s = s.lock().unwrap();
    let lag = s.search_lag;
    let mut found: Vec<&Issue> = s
        .issues
        .values()
        .filter(|i| {
            let seen =
                i.statuses.get(i.statuses.len().saturating_sub(1 + lag)).map(String::as_str).unwrap_or(i.status());
            q.any.iter().any(|g| g.iter().all(|c| matches(c, i, seen)))
        })
        .collect();
    found.sort_by(|a, b| {
        for (f, asc) in &q.order {
            let o = match f.as_str() {
                "priority" => priority_rank(&a.priority).cmp(&priority_rank(&b.priority)),
                "created" => a.created.cmp(&b.created),
                "key" => a.key.cmp(&b.key),
                _ => std::cmp::Ordering::Equal,
            };
            let o = if *asc { o } else { o.reverse() };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        a.created.cmp(&b.created)
    });
    // The page token names the query and the offset (opaque to clients).
    let fingerprint = jql.len() + jql.bytes().map(|b| b as usize).sum::<usize>();
    let start = match body["nextPageToken"].as_str() {
        None => 0,
        Some(t) => match t
            .split_once(':')
            .and_then(|(fp, off)| Some((fp.parse::<usize>().ok()?, off.parse::<usize>().ok()?)))
        {
            Some((fp, off)) if fp == fingerprint => off,
            _ => return jira_error(StatusCode::BAD_REQUEST, &["The provided next page token is invalid or expired."]),
        },
    };
    let page: Vec<Value> = found
        .iter()
        .skip(start)
        .take(max)
        .map(|i| {
            json!({"id": i.id.to_string(), "key": i.key, "self": format!("{}/rest/api/3/issue/{}", s.base, i.id),
                   "fields": fields_of(&s, i, &wanted, lag)})
        })
        .collect();
    let end = start + page.len();
    let mut out = json!({"issues": page, "isLast": end >= found.len()});
    if end < found.len() {
        out["nextPageToken"] = format!("{fingerprint}:{end}").into();
    }
    Json(out).into_response()
}
