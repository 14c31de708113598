//! A GitHub REST API test server, for one repository, written from GitHub's
//! documentation (REST API 2022-11-28):
//! - **Authentication**: `Authorization: Bearer <token>` (or `token <token>`);
//!   anything else is `401 {"message": "Bad credentials"}`.
//! - `GET /user`: the token's account (`login`).
//! - `GET /repos/{owner}/{repo}/issues?state=&labels=&per_page=&page=`: open
//!   issues (and pull requests, which carry a `pull_request` key, as GitHub
//!   lists them) having every label named, oldest first, `per_page` at most
//!   100 (default 30); a `Link` header with `rel="next"` while pages remain.
//!   Another repository is `404 Not Found`.
//! - `GET /repos/{owner}/{repo}/issues/{n}/comments?per_page=&page=`: the
//!   issue's comments, oldest first, paged the same way; `POST` with
//!   `{"body"}` adds one (`201`, the comment with its increasing `id`).
//! - `POST /repos/{owner}/{repo}/pulls` and `GET …/pulls?head=&state=`:
//!   pull requests, as the forge test server serves them (`forge.rs`),
//!   numbered after the issues.
//! - **Webhook deliveries** ([`GitHubServer::delivery`]): the `issues`
//!   event's payload for an issue, as GitHub posts it (`X-GitHub-Event`,
//!   `X-GitHub-Delivery`, `X-Hub-Signature-256` over the body).
//! - **Rate limits**: an injected fault answers `403` (a secondary rate
//!   limit, with `Retry-After`) or `429`, with GitHub's message.
//!
//! It records every request line, for tests that count polls.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

/// An issue (or, with `pull_request`, a pull request) to serve.
#[derive(Debug, Clone)]
pub struct NewIssue {
    /// Its number.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Body.
    pub body: Option<String>,
    /// Labels.
    pub labels: Vec<String>,
    /// Whether it is a pull request.
    pub pull_request: bool,
}

impl NewIssue {
    /// An open issue `number` titled `title`, labelled `labels`.
    pub fn new(number: u64, title: &str, labels: &[&str]) -> Self {
        NewIssue {
            number,
            title: title.into(),
            body: Some(format!("Body of #{number}")),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            pull_request: false,
        }
    }
}

#[derive(Debug, Clone)]
struct Comment {
    id: u64,
    login: String,
    body: String,
}

#[derive(Default)]
struct Repo {
    issues: Vec<NewIssue>,
    comments: BTreeMap<u64, Vec<Comment>>,
    next_comment: u64,
    faults: VecDeque<(u16, Option<u64>)>,
    requests: Vec<String>,
}

struct Site {
    pulls: Arc<Mutex<super::forge::Pulls>>,
    owner: String,
    repo: String,
    token: String,
    login: String,
    url: Mutex<String>,
    state: Mutex<Repo>,
}

/// The running server.
pub struct GitHubServer {
    /// Its API base URL (as `https://api.github.com`).
    pub url: String,
    site: Arc<Site>,
}

impl GitHubServer {
    /// Serves `owner/repo` to the holder of `token`, George's account being `login`.
    pub fn start(owner: &str, repo: &str, token: &str, login: &str) -> Self {
        let site = Arc::new(Site {
            pulls: super::forge::pulls(token, 1000),
            owner: owner.into(),
            repo: repo.into(),
            token: token.into(),
            login: login.into(),
            url: Mutex::new(String::new()),
            state: Mutex::new(Repo { next_comment: 1000, ..Default::default() }),
        });
        let app = Router::new()
            .route("/user", get(user))
            .route("/repos/{owner}/{repo}/issues", get(issues))
            .route("/repos/{owner}/{repo}/issues/{number}/comments", get(comments).post(add_comment))
            .with_state(site.clone())
            .merge(super::forge::routes(site.pulls.clone()));
        let addr = super::inbox::serve_in_background(app);
        let url = format!("http://{addr}");
        *site.url.lock().unwrap() = url.clone();
        super::forge::set_base(&site.pulls, &url);
        GitHubServer { url, site }
    }

    /// Adds an issue.
    pub fn add_issue(&self, issue: NewIssue) {
        self.site.state.lock().unwrap().issues.push(issue);
    }

    /// A person comments.
    pub fn comment_as(&self, number: u64, login: &str, body: &str) {
        let mut st = self.site.state.lock().unwrap();
        st.next_comment += 1;
        let id = st.next_comment;
        st.comments.entry(number).or_default().push(Comment { id, login: login.into(), body: body.into() });
    }

    /// The comments on issue `number`: `(author, body)`, oldest first.
    pub fn comments(&self, number: u64) -> Vec<(String, String)> {
        let st = self.site.state.lock().unwrap();
        st.comments.get(&number).into_iter().flatten().map(|c| (c.login.clone(), c.body.clone())).collect()
    }

    /// Every pull request opened (as GitHub returns them: `number`, `html_url`, `head.ref`, `base.ref`, `body`).
    pub fn pulls(&self) -> Vec<Value> {
        super::forge::opened(&self.site.pulls)
    }

    /// The webhook delivery GitHub sends when `action` happens to issue
    /// `number` — event `issues` (`opened`, `labeled`, ...) or
    /// `issue_comment` (`created`: its newest comment) — signed with
    /// `secret`: its headers (`X-GitHub-Event`, `X-GitHub-Delivery`,
    /// `X-Hub-Signature-256`) and body (the event's payload).
    pub fn delivery(
        &self,
        number: u64,
        event: &str,
        action: &str,
        secret: &str,
    ) -> (Vec<(&'static str, String)>, String) {
        use hmac::{Hmac, Mac};
        let st = self.site.state.lock().unwrap();
        let issue = st.issues.iter().find(|i| i.number == number).expect("a known issue");
        let mut body = json!({
            "action": action,
            "issue": {
                "number": issue.number,
                "title": issue.title,
                "body": issue.body,
                "state": "open",
                "labels": issue.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
            },
            "label": issue.labels.last().map(|l| json!({"name": l})),
            "repository": {"name": self.site.repo, "full_name": format!("{}/{}", self.site.owner, self.site.repo)},
            "sender": {"login": "octocat"},
        });
        if event == "issue_comment" {
            let c = st.comments.get(&number).and_then(|c| c.last()).expect("a comment to deliver");
            body["comment"] = json!({"id": c.id, "body": c.body, "user": {"login": c.login}});
            body["sender"] = json!({"login": c.login});
            body.as_object_mut().expect("an object").remove("label");
        }
        let body = body.to_string();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).expect("randomness");
        let headers = vec![
            ("X-GitHub-Event", event.to_string()),
            ("X-GitHub-Delivery", hex::encode(id)),
            ("X-Hub-Signature-256", signature),
        ];
        (headers, body)
    }

    /// The next `n` requests fail with `status` (`403` or `429`), with `Retry-After` when given.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        let mut st = self.site.state.lock().unwrap();
        st.faults.extend(std::iter::repeat_n((status, retry_after), n));
    }

    /// Every request so far, as `METHOD path?query` (with ` -> status` when a fault answered).
    pub fn requests(&self) -> Vec<String> {
        self.site.state.lock().unwrap().requests.clone()
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({"message": text, "documentation_url": "https://docs.github.com/rest"}))).into_response()
}

/// Authenticates, records the request and answers an injected fault if one
/// is due: the answer to send instead of serving, if any.
fn admit(site: &Site, headers: &HeaderMap, line: String) -> Option<Response> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let token = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("token ")).unwrap_or("");
    let mut st = site.state.lock().unwrap();
    if token != site.token {
        st.requests.push(format!("{line} -> 401"));
        return Some(message(StatusCode::UNAUTHORIZED, "Bad credentials"));
    }
    if let Some((status, retry_after)) = st.faults.pop_front() {
        st.requests.push(format!("{line} -> {status}"));
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
        let mut resp =
            message(code, "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.");
        if let Some(s) = retry_after {
            resp.headers_mut().insert("retry-after", s.to_string().parse().unwrap());
        }
        return Some(resp);
    }
    st.requests.push(line);
    None
}

/// `404` for any repository but the one served.
fn same_repo(site: &Site, owner: &str, repo: &str) -> Option<Response> {
    let ours = owner.eq_ignore_ascii_case(&site.owner) && repo.eq_ignore_ascii_case(&site.repo);
    (!ours).then(|| message(StatusCode::NOT_FOUND, "Not Found"))
}

fn query_line(path: &str, q: &BTreeMap<String, String>) -> String {
    let qs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if qs.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", qs.join("&"))
    }
}

/// One page of `items` as GitHub pages lists, with its `Link` header.
fn page(site: &Site, path: &str, q: &BTreeMap<String, String>, items: Vec<Value>) -> Response {
    let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(30).clamp(1, 100);
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
    let total_pages = items.len().div_ceil(per_page).max(1);
    let shown: Vec<Value> = items.into_iter().skip((page - 1) * per_page).take(per_page).collect();
    let mut resp = Json(Value::Array(shown)).into_response();
    if page < total_pages {
        let mut next = q.clone();
        next.insert("page".into(), (page + 1).to_string());
        let base = site.url.lock().unwrap().clone();
        let link = format!("<{base}{}>; rel=\"next\"", query_line(path, &next));
        resp.headers_mut().insert(header::LINK, link.parse().unwrap());
    }
    resp
}

async fn user(State(site): State<Arc<Site>>, headers: HeaderMap) -> Response {
    if let Some(r) = admit(&site, &headers, "GET /user".into()) {
        return r;
    }
    Json(json!({"login": site.login, "id": 1, "type": "Bot"})).into_response()
}

async fn issues(
    State(site): State<Arc<Site>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/repos/{owner}/{repo}/issues");
    if let Some(r) =
        admit(&site, &headers, format!("GET {}", query_line(&path, &q))).or_else(|| same_repo(&site, &owner, &repo))
    {
        return r;
    }
    let wanted: Vec<&str> =
        q.get("labels").map(|l| l.split(',').filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    let state = q.get("state").map(String::as_str).unwrap_or("open");
    let base = site.url.lock().unwrap().clone();
    let items: Vec<Value> = {
        let st = site.state.lock().unwrap();
        st.issues
            .iter()
            .filter(|_| state == "open" || state == "all")
            .filter(|i| wanted.iter().all(|w| i.labels.iter().any(|l| l == w)))
            .map(|i| {
                let mut v = json!({
                    "number": i.number,
                    "title": i.title,
                    "body": i.body,
                    "state": "open",
                    "html_url": format!("{base}/{}/{}/issues/{}", site.owner, site.repo, i.number),
                    "labels": i.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
                    "user": {"login": "octocat"},
                });
                if i.pull_request {
                    v["pull_request"] =
                        json!({"url": format!("{base}/repos/{}/{}/pulls/{}", site.owner, site.repo, i.number)});
                }
                v
            })
            .collect()
    };
    page(&site, &path, &q, items)
}

async fn comments(
    State(site): State<Arc<Site>>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/repos/{owner}/{repo}/issues/{number}/comments");
    if let Some(r) =
        admit(&site, &headers, format!("GET {}", query_line(&path, &q))).or_else(|| same_repo(&site, &owner, &repo))
    {
        return r;
    }
    let items: Vec<Value> = {
        let st = site.state.lock().unwrap();
        if !st.issues.iter().any(|i| i.number == number) {
            return message(StatusCode::NOT_FOUND, "Not Found");
        }
        st.comments
            .get(&number)
            .into_iter()
            .flatten()
            .map(|c| json!({"id": c.id, "body": c.body, "user": {"login": c.login}}))
            .collect()
    };
    page(&site, &path, &q, items)
}

async fn add_comment(
    State(site): State<Arc<Site>>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("/repos/{owner}/{repo}/issues/{number}/comments");
    if let Some(r) = admit(&site, &headers, format!("POST {path}")).or_else(|| same_repo(&site, &owner, &repo)) {
        return r;
    }
    let Some(text) = body.get("body").and_then(Value::as_str) else {
        return message(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed: body is missing");
    };
    let mut st = site.state.lock().unwrap();
    if !st.issues.iter().any(|i| i.number == number) {
        return message(StatusCode::NOT_FOUND, "Not Found");
    }
    st.next_comment += 1;
    let c = Comment { id: st.next_comment, login: site.login.clone(), body: text.to_string() };
    st.comments.entry(number).or_default().push(c.clone());
    (StatusCode::CREATED, Json(json!({"id": c.id, "body": c.body, "user": {"login": c.login}}))).into_response()
}
