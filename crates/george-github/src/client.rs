//! The few GitHub REST calls the source makes (API version 2022-11-28):
//! issues by label and comments, each list followed through its `Link`
//! header's `rel="next"`.

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, LINK, USER_AGENT};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use std::time::Duration;

/// Items per page asked for (GitHub's largest).
const PER_PAGE: &str = "100";
/// The most pages one list follows.
const MAX_PAGES: usize = 100;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// A rate limit: try again after `retry_after` (when GitHub said).
    #[error("GitHub rate limit ({status}): {message}{}", retry_after.map(|d| format!("; retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// 403 or 429.
        status: u16,
        /// GitHub's message.
        message: String,
        /// `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Any other refusal.
    #[error("GitHub refused {what} ({status}): {message}")]
    Refused {
        /// The call.
        what: String,
        /// The status.
        status: u16,
        /// GitHub's message.
        message: String,
    },
    /// The network or the client.
    #[error("cannot reach GitHub: {0}")]
    Http(#[from] reqwest::Error),
    /// An answer that is not what the documentation says.
    #[error("unexpected answer from GitHub: {0}")]
    Decode(String),
}

/// An issue (or a pull request, which GitHub lists with issues).
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// Its number.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Body.
    pub body: Option<String>,
    /// Whether it is a pull request.
    pub pull_request: bool,
}

/// A comment.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    /// Its id (increasing).
    pub id: u64,
    /// Its author's login.
    pub author: String,
    /// Text.
    pub body: String,
}

/// A client for one repository.
#[derive(Debug, Clone)]
pub struct GitHubClient {
    http: reqwest::Client,
    base: String,
    repo_path: String,
}

impl GitHubClient {
    /// A client for `owner/repo` at `api_url` with `token`.
    pub fn new(api_url: &str, owner: &str, repo: &str, token: &str) -> Result<Self, GitHubError> {
        let mut headers = HeaderMap::new();
        let auth = format!("Bearer {token}")
            .parse()
            .map_err(|_| GitHubError::Decode("the token is no header value".into()))?;
        headers.insert(AUTHORIZATION, auth);
        headers.insert(ACCEPT, "application/vnd.github+json".parse().expect("valid"));
        headers.insert("x-github-api-version", "2022-11-28".parse().expect("valid"));
        headers.insert(USER_AGENT, concat!("george/", env!("CARGO_PKG_VERSION")).parse().expect("valid"));
        let http = reqwest::Client::builder().default_headers(headers).timeout(Duration::from_secs(30)).build()?;
        Ok(Self { http, base: api_url.trim_end_matches('/').to_string(), repo_path: format!("/repos/{owner}/{repo}") })
    }

    async fn send(&self, what: &str, rb: RequestBuilder) -> Result<reqwest::Response, GitHubError> {
        let resp = rb.send().await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let retry_after = header("retry-after").and_then(|s| s.trim().parse::<u64>().ok()).map(Duration::from_secs);
        let exhausted = header("x-ratelimit-remaining").as_deref() == Some("0");
        if status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::FORBIDDEN && (retry_after.is_some() || exhausted))
        {
            return Err(GitHubError::RateLimited { status: status.as_u16(), message, retry_after });
        }
        Err(GitHubError::Refused { what: what.to_string(), status: status.as_u16(), message })
    }

    /// Every item of a list, page after page.
    async fn list(&self, what: &str, path: &str, query: &[(&str, &str)]) -> Result<Vec<Value>, GitHubError> {
        let mut items = Vec::new();
        let mut next = Some(
            self.http
                .request(Method::GET, format!("{}{path}", self.base))
                .query(query)
                .query(&[("per_page", PER_PAGE)]),
        );
        for _ in 0..MAX_PAGES {
            let Some(rb) = next.take() else { break };
            let resp = self.send(what, rb).await?;
            let link = resp.headers().get(LINK).and_then(|v| v.to_str().ok()).and_then(next_link);
            match resp.json::<Value>().await? {
                Value::Array(page) => items.extend(page),
                other => return Err(GitHubError::Decode(format!("{what}: expected a list, got {other}"))),
            }
            next = link.map(|url| self.http.get(url));
        }
        Ok(items)
    }

    /// The open issues (and pull requests) with `label`, oldest first.
    pub async fn issues(&self, label: &str) -> Result<Vec<Issue>, GitHubError> {
        let query = [("state", "open"), ("labels", label), ("sort", "created"), ("direction", "asc")];
        let items = self.list("the issue list", &format!("{}/issues", self.repo_path), &query).await?;
        items
            .into_iter()
            .map(|v| {
                let number = v["number"]
                    .as_u64()
                    .ok_or_else(|| GitHubError::Decode(format!("an issue without a number: {v}")))?;
                Ok(Issue {
                    number,
                    title: v["title"].as_str().unwrap_or_default().to_string(),
                    body: v["body"].as_str().map(str::to_string),
                    pull_request: v.get("pull_request").is_some_and(|p| !p.is_null()),
                })
            })
            .collect()
    }

    /// The comments of issue `number`, oldest first.
    pub async fn comments(&self, number: u64) -> Result<Vec<Comment>, GitHubError> {
        let path = format!("{}/issues/{number}/comments", self.repo_path);
        let items = self.list(&format!("the comments of #{number}"), &path, &[]).await?;
        Ok(items
            .into_iter()
            .filter_map(|v| {
                Some(Comment {
                    id: v["id"].as_u64()?,
                    author: v["user"]["login"].as_str().unwrap_or_default().to_string(),
                    body: v["body"].as_str().unwrap_or_default().to_string(),
                })
            })
            .collect())
    }

    /// The login of the token's account (`GET /user`).
    pub async fn login(&self) -> Result<String, GitHubError> {
        let rb = self.http.get(format!("{}/user", self.base));
        let v: Value = self.send("the token's account", rb).await?.json().await?;
        v["login"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| GitHubError::Decode(format!("a user without a login: {v}")))
    }

    /// Adds a comment to issue `number`.
    pub async fn add_comment(&self, number: u64, body: &str) -> Result<(), GitHubError> {
        let url = format!("{}{}/issues/{number}/comments", self.base, self.repo_path);
        let rb = self.http.post(url).json(&serde_json::json!({"body": body}));
        self.send(&format!("a comment on #{number}"), rb).await.map(|_| ())
    }
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_string())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_next_page_is_the_link_marked_next() {
        let h = r#"<https://api.github.com/repositories/1/issues?page=2>; rel="next", <https://api.github.com/repositories/1/issues?page=5>; rel="last""#;
        assert_eq!(super::next_link(h).as_deref(), Some("https://api.github.com/repositories/1/issues?page=2"));
        assert_eq!(super::next_link(r#"<https://x/?page=1>; rel="prev""#), None);
    }
}
