//! A Jira REST API v3 client: exactly the calls George needs, with typed
//! errors. Reads are retried on `429` (after `Retry-After`) and on `5xx` or
//! transport errors, with backoff, for a bounded time; writes are not
//! retried here (the write-back retries them from its durable cursor).

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// How George authenticates.
#[derive(Clone)]
pub enum Credentials {
    /// Jira Cloud: account email and API token (HTTP Basic).
    Basic {
        /// Account email.
        email: String,
        /// API token.
        token: String,
    },
    /// Jira Data Center: a personal access token (Bearer).
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { email, .. } => write!(f, "Basic({email}, ***)"),
            Credentials::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

/// A failed Jira call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JiraError {
    /// 401: the credentials are wrong.
    #[error("Jira rejected the credentials (401): check jira.email and the API token (or the personal access token)")]
    Unauthorized,
    /// 403.
    #[error("Jira refused {what} (403): the account lacks permission")]
    Forbidden {
        /// The call.
        what: String,
    },
    /// 404.
    #[error("{what}: not found (404)")]
    NotFound {
        /// The call.
        what: String,
    },
    /// 400 and other 4xx with Jira's messages.
    #[error("{what}: Jira answered {status}: {messages}")]
    Rejected {
        /// The call.
        what: String,
        /// HTTP status.
        status: u16,
        /// `errorMessages` and `errors`, joined.
        messages: String,
    },
    /// 429.
    #[error("{what}: rate limited by Jira (429); retry after {retry_after:?}")]
    RateLimited {
        /// The call.
        what: String,
        /// From `Retry-After`.
        retry_after: Duration,
    },
    /// 5xx.
    #[error("{what}: Jira is unavailable ({status})")]
    Unavailable {
        /// The call.
        what: String,
        /// HTTP status.
        status: u16,
    },
    /// The network.
    #[error("{what}: cannot reach Jira: {message}")]
    Transport {
        /// The call.
        what: String,
        /// Why.
        message: String,
    },
    /// An answer George cannot read.
    #[error("{what}: unexpected answer from Jira: {message}")]
    Decode {
        /// The call.
        what: String,
        /// Why.
        message: String,
    },
}

impl JiraError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, JiraError::RateLimited { .. } | JiraError::Unavailable { .. } | JiraError::Transport { .. })
    }

    /// How long to wait before trying again, when Jira said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            JiraError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// One page of a search.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchPage {
    /// The issues, each `{id, key, fields}`.
    #[serde(default)]
    pub issues: Vec<Value>,
    /// The next page's token; absent on the last page.
    #[serde(default)]
    pub next_page_token: Option<String>,
    /// Whether this is the last page.
    #[serde(default)]
    pub is_last: Option<bool>,
}

/// A workflow transition available on an issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Its id.
    pub id: String,
    /// Its name (e.g. `Start Progress`).
    pub name: String,
    /// The status it leads to (e.g. `In Progress`).
    pub to: String,
    /// That status's category: `new` (to do), `indeterminate` (in progress) or `done`.
    pub to_category: String,
}

/// A comment.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    /// Its id.
    pub id: String,
    /// The author's account id.
    pub author_id: String,
    /// The author's display name.
    pub author_name: String,
    /// Plain text of the body.
    pub text: String,
}

/// The client.
#[derive(Debug, Clone)]
pub struct JiraClient {
    base: String,
    credentials: Credentials,
    http: reqwest::Client,
    /// How long reads keep retrying transient failures.
    pub read_patience: Duration,
}

impl JiraClient {
    /// A client for the Jira site at `base` (e.g. `https://acme.atlassian.net`).
    pub fn new(base: &str, credentials: Credentials) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client can be built");
        Self { base: base.trim_end_matches('/').to_string(), credentials, http, read_patience: Duration::from_secs(30) }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base)).header("Accept", "application/json");
        match &self.credentials {
            Credentials::Basic { email, token } => rb.basic_auth(email, Some(token)),
            Credentials::Bearer(t) => rb.bearer_auth(t),
        }
    }

    async fn send(&self, what: &str, rb: RequestBuilder) -> Result<Option<Value>, JiraError> {
        let resp = rb.send().await.map_err(|e| JiraError::Transport { what: what.into(), message: e.to_string() })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes =
            resp.bytes().await.map_err(|e| JiraError::Transport { what: what.into(), message: e.to_string() })?;
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return Ok(body);
        }
        let messages = || {
            let v = body.clone().unwrap_or(Value::Null);
            let mut m: Vec<String> = v["errorMessages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect();
            if let Some(errs) = v["errors"].as_object() {
                m.extend(errs.iter().map(|(k, e)| format!("{k}: {}", e.as_str().unwrap_or(&e.to_string()))));
            }
            if m.is_empty() {
                m.push(String::from_utf8_lossy(&bytes).chars().take(300).collect());
            }
            m.join("; ")
        };
        let what = what.to_string();
        Err(match status {
            StatusCode::UNAUTHORIZED => JiraError::Unauthorized,
            StatusCode::FORBIDDEN => JiraError::Forbidden { what },
            StatusCode::NOT_FOUND => JiraError::NotFound { what },
            StatusCode::TOO_MANY_REQUESTS => {
                JiraError::RateLimited { what, retry_after: retry_after.unwrap_or(Duration::from_secs(5)) }
            }
            s if s.is_server_error() => JiraError::Unavailable { what, status: s.as_u16() },
            s => JiraError::Rejected { what, status: s.as_u16(), messages: messages() },
        })
    }

    /// A read, retried on transient failures for up to `read_patience`.
    async fn read(&self, what: &str, make: impl Fn() -> RequestBuilder) -> Result<Option<Value>, JiraError> {
        let deadline = tokio::time::Instant::now() + self.read_patience;
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.send(what, make()).await {
                Err(e) if e.is_transient() => {
                    let wait = e.retry_after().unwrap_or(backoff).min(Duration::from_secs(60));
                    if tokio::time::Instant::now() + wait > deadline {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "Jira read failed; retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                other => return other,
            }
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(what: &str, v: Option<Value>) -> Result<T, JiraError> {
        serde_json::from_value(v.unwrap_or(Value::Null))
            .map_err(|e| JiraError::Decode { what: what.into(), message: e.to_string() })
    }

    /// `GET /rest/api/3/myself`: the account George acts as (its `accountId`).
    pub async fn myself(&self) -> Result<String, JiraError> {
        let v = self.read("GET myself", || self.request(Method::GET, "/rest/api/3/myself")).await?;
        v.and_then(|v| v["accountId"].as_str().map(str::to_string))
            .ok_or_else(|| JiraError::Decode { what: "GET myself".into(), message: "no accountId".into() })
    }

    /// `POST /rest/api/3/search/jql`: one page.
    pub async fn search(
        &self,
        jql: &str,
        fields: &[String],
        page_token: Option<&str>,
        max_results: u32,
    ) -> Result<SearchPage, JiraError> {
        let mut body = json!({"jql": jql, "fields": fields, "maxResults": max_results});
        if let Some(t) = page_token {
            body["nextPageToken"] = t.into();
        }
        let what = "search (POST /rest/api/3/search/jql)";
        let v = self.read(what, || self.request(Method::POST, "/rest/api/3/search/jql").json(&body)).await?;
        Self::decode(what, v)
    }

    /// Every issue the JQL finds, following `nextPageToken` through all pages.
    pub async fn search_all(&self, jql: &str, fields: &[String], page_size: u32) -> Result<Vec<Value>, JiraError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..10_000 {
            let page = self.search(jql, fields, token.as_deref(), page_size).await?;
            out.extend(page.issues);
            match page.next_page_token {
                Some(t) if page.is_last != Some(true) && !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    /// `GET /rest/api/3/issue/{key}/transitions`.
    pub async fn transitions(&self, key: &str) -> Result<Vec<Transition>, JiraError> {
        let what = format!("transitions of {key}");
        let path = format!("/rest/api/3/issue/{key}/transitions");
        let v = self.read(&what, || self.request(Method::GET, &path)).await?.unwrap_or(Value::Null);
        Ok(v["transitions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| Transition {
                id: t["id"].as_str().unwrap_or_default().to_string(),
                name: t["name"].as_str().unwrap_or_default().to_string(),
                to: t["to"]["name"].as_str().unwrap_or_default().to_string(),
                to_category: t["to"]["statusCategory"]["key"].as_str().unwrap_or_default().to_string(),
            })
            .collect())
    }

    /// `POST /rest/api/3/issue/{key}/transitions`. Jira checks the transition
    /// against the issue's current status, so of two racing callers only one
    /// succeeds.
    pub async fn transition(&self, key: &str, id: &str) -> Result<(), JiraError> {
        let what = format!("transition {key} by {id}");
        let path = format!("/rest/api/3/issue/{key}/transitions");
        self.send(&what, self.request(Method::POST, &path).json(&json!({"transition": {"id": id}}))).await.map(|_| ())
    }

    /// `GET /rest/api/3/issue/{key}/comment`, all pages, oldest first.
    pub async fn comments(&self, key: &str) -> Result<Vec<Comment>, JiraError> {
        let what = format!("comments of {key}");
        let mut out = Vec::new();
        let mut start = 0u64;
        loop {
            let path = format!("/rest/api/3/issue/{key}/comment?startAt={start}&maxResults=100&orderBy=created");
            let v = self.read(&what, || self.request(Method::GET, &path)).await?.unwrap_or(Value::Null);
            let page = v["comments"].as_array().cloned().unwrap_or_default();
            let n = page.len() as u64;
            out.extend(page.iter().map(|c| Comment {
                id: c["id"].as_str().unwrap_or_default().to_string(),
                author_id: c["author"]["accountId"].as_str().unwrap_or_default().to_string(),
                author_name: c["author"]["displayName"].as_str().unwrap_or("someone").to_string(),
                text: crate::adf::to_text(&c["body"]),
            }));
            start += n;
            let total = v["total"].as_u64().unwrap_or(start);
            if n == 0 || start >= total {
                return Ok(out);
            }
        }
    }

    /// `POST /rest/api/3/issue/{key}/comment` with an ADF body; the new comment's id.
    pub async fn add_comment(&self, key: &str, body: &Value) -> Result<String, JiraError> {
        let what = format!("comment on {key}");
        let path = format!("/rest/api/3/issue/{key}/comment");
        let v = self.send(&what, self.request(Method::POST, &path).json(&json!({"body": body}))).await?;
        Ok(v.and_then(|v| v["id"].as_str().map(str::to_string)).unwrap_or_default())
    }

    /// `GET /rest/api/3/issue/{key}/properties/{property}`: its value, if set.
    pub async fn property(&self, key: &str, property: &str) -> Result<Option<Value>, JiraError> {
        let what = format!("property {property} of {key}");
        let path = format!("/rest/api/3/issue/{key}/properties/{property}");
        match self.read(&what, || self.request(Method::GET, &path)).await {
            Ok(v) => Ok(v.map(|v| v["value"].clone())),
            Err(JiraError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT /rest/api/3/issue/{key}/properties/{property}`.
    pub async fn set_property(&self, key: &str, property: &str, value: &Value) -> Result<(), JiraError> {
        let what = format!("set property {property} of {key}");
        let path = format!("/rest/api/3/issue/{key}/properties/{property}");
        self.send(&what, self.request(Method::PUT, &path).json(value)).await.map(|_| ())
    }

    /// `POST /rest/api/3/issue`: a sub-task of `parent` (its project's),
    /// of the issue type `issue_type`; its key.
    pub async fn create_subtask(
        &self,
        parent: &str,
        issue_type: &str,
        summary: &str,
        description: &Value,
    ) -> Result<String, JiraError> {
        let project = parent.rsplit_once('-').map_or(parent, |(p, _)| p);
        let body = serde_json::json!({"fields": {
            "project": {"key": project},
            "parent": {"key": parent},
            "issuetype": {"name": issue_type},
            "summary": summary,
            "description": description,
        }});
        let what = format!("create a sub-task of {parent}");
        let v = self.send(&what, self.request(Method::POST, "/rest/api/3/issue").json(&body)).await?;
        v.and_then(|v| v["key"].as_str().map(str::to_string))
            .ok_or_else(|| JiraError::Decode { what, message: "no key in the answer".into() })
    }

    /// `POST /rest/api/3/issue/{key}/attachments` (multipart, with the
    /// `X-Atlassian-Token: no-check` Jira asks for): a text file; its id.
    pub async fn add_attachment(&self, key: &str, filename: &str, content: String) -> Result<String, JiraError> {
        let what = format!("attach {filename} to {key}");
        let part = reqwest::multipart::Part::text(content)
            .file_name(filename.to_string())
            .mime_str("text/plain")
            .map_err(|e| JiraError::Decode { what: what.clone(), message: e.to_string() })?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let path = format!("/rest/api/3/issue/{key}/attachments");
        let rb = self.request(Method::POST, &path).header("X-Atlassian-Token", "no-check").multipart(form);
        let v = self.send(&what, rb).await?;
        v.and_then(|v| v.get(0).and_then(|a| a["id"].as_str().map(str::to_string)))
            .ok_or_else(|| JiraError::Decode { what, message: "no attachment id in the answer".into() })
    }

    /// `GET /rest/api/3/issue/{key}?fields=status`: the status name.
    pub async fn status(&self, key: &str) -> Result<String, JiraError> {
        Ok(self.status_and_category(key).await?.0)
    }

    /// `GET /rest/api/3/issue/{key}?fields=status`: the status name and its
    /// category's key (`new`, `indeterminate` or `done`).
    pub async fn status_and_category(&self, key: &str) -> Result<(String, String), JiraError> {
        let what = format!("status of {key}");
        let path = format!("/rest/api/3/issue/{key}?fields=status");
        let v = self.read(&what, || self.request(Method::GET, &path)).await?.unwrap_or(Value::Null);
        let name = v.pointer("/fields/status/name").and_then(Value::as_str);
        let category = v.pointer("/fields/status/statusCategory/key").and_then(Value::as_str);
        match (name, category) {
            (Some(n), Some(c)) => Ok((n.to_string(), c.to_string())),
            _ => Err(JiraError::Decode { what, message: "no fields.status.name and statusCategory.key".into() }),
        }
    }

    /// `PUT /rest/api/3/issue/{key}/assignee`.
    pub async fn assign(&self, key: &str, account_id: &str) -> Result<(), JiraError> {
        let what = format!("assign {key}");
        let path = format!("/rest/api/3/issue/{key}/assignee");
        self.send(&what, self.request(Method::PUT, &path).json(&json!({"accountId": account_id}))).await.map(|_| ())
    }
}
