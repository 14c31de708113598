//! Pull (merge) requests for a finished coding job, through a forge's REST
//! API: GitHub's (`POST /repos/{owner}/{repo}/pulls`) or GitLab's
//! (`POST /projects/{id}/merge_requests`). Opening one is idempotent: if the
//! branch already has an open request, that one is returned.
//!
//! Settings come from the agent's environment: `GEORGE_FORGE_URL` (the API
//! base, e.g. `https://api.github.com`), `GEORGE_FORGE_KIND` (`github`,
//! default, or `gitlab`), `GEORGE_FORGE_REPO` (`owner/name`; default: the
//! path of the repository URL), `GEORGE_FORGE_ISSUE` (an issue number the
//! request closes: its body ends `Closes #<n>`, which both forges link and
//! close on merge), and the token in the `git` capability's `forge-token`
//! secret file.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// Which API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgeKind {
    /// GitHub (and compatible servers such as Gitea's GitHub-style API).
    GitHub,
    /// GitLab.
    GitLab,
}

/// Where to open the request.
#[derive(Debug, Clone)]
pub struct Forge {
    kind: ForgeKind,
    api: String,
    repo: String,
    token: Option<String>,
    closes: Option<u64>,
}

/// What to ask for.
#[derive(Debug, Clone)]
pub struct PullRequest<'a> {
    /// Title.
    pub title: String,
    /// Description.
    pub body: String,
    /// Source branch.
    pub head: &'a str,
    /// Target branch.
    pub base: &'a str,
}

/// `owner/name` from a repository URL (`https://host/owner/name.git`, `git@host:owner/name.git`).
pub fn repo_path(url: &str) -> Option<String> {
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/')?.1,
        None => url.split_once(':')?.1,
    };
    let path = rest.trim_end_matches('/').trim_end_matches(".git");
    (path.contains('/') && !path.is_empty()).then(|| path.to_string())
}

/// Why a pull request could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// A setting is missing or wrong; says which.
    #[error("{0}")]
    Settings(String),
    /// The forge could not be reached.
    #[error("{url}: {source}")]
    Unreachable {
        /// What was called.
        url: String,
        /// Why it failed.
        #[source]
        source: reqwest::Error,
    },
    /// The forge answered, but not with a pull request.
    #[error("{url} answered {status}: {message}")]
    Refused {
        /// What was called.
        url: String,
        /// Its status.
        status: StatusCode,
        /// What it said.
        message: String,
    },
}

impl Forge {
    /// The forge configured for a repository at `url`; an error says which setting is missing.
    pub fn from_env(url: &str, secrets_dir: Option<&PathBuf>) -> Result<Forge, ForgeError> {
        let missing = |what: &str| ForgeError::Settings(what.to_string());
        let api = std::env::var("GEORGE_FORGE_URL").ok().filter(|v| !v.is_empty()).ok_or_else(|| {
            missing("opening a pull request needs GEORGE_FORGE_URL (the forge's API base) in the AgentSpec's env")
        })?;
        let kind = match std::env::var("GEORGE_FORGE_KIND").unwrap_or_default().as_str() {
            "" | "github" => ForgeKind::GitHub,
            "gitlab" => ForgeKind::GitLab,
            other => {
                return Err(ForgeError::Settings(format!(
                    "GEORGE_FORGE_KIND: expected github or gitlab, got `{other}`"
                )))
            }
        };
        let repo =
            std::env::var("GEORGE_FORGE_REPO").ok().filter(|v| !v.is_empty()).or_else(|| repo_path(url)).ok_or_else(
                || missing("cannot tell the repository's owner/name from its URL; set GEORGE_FORGE_REPO"),
            )?;
        let token = secrets_dir
            .map(|d| d.join("forge-token"))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let closes = match std::env::var("GEORGE_FORGE_ISSUE").ok().filter(|v| !v.is_empty()) {
            None => None,
            Some(n) => Some(n.parse::<u64>().map_err(|_| {
                ForgeError::Settings(format!("GEORGE_FORGE_ISSUE: expected an issue number, got `{n}`"))
            })?),
        };
        Ok(Forge { kind, api: api.trim_end_matches('/').to_string(), repo, token, closes })
    }

    fn request(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let rb = rb.timeout(Duration::from_secs(30)).header("User-Agent", "george-agent");
        match (&self.token, self.kind) {
            (Some(t), ForgeKind::GitHub) => rb
                .bearer_auth(t)
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28"),
            (Some(t), ForgeKind::GitLab) => rb.header("PRIVATE-TOKEN", t),
            (None, _) => rb,
        }
    }

    /// Opens the request, or finds the open one for the branch; its web URL.
    pub async fn open(&self, pr: &PullRequest<'_>) -> Result<String, ForgeError> {
        let http = reqwest::Client::new();
        let text = match self.closes {
            Some(n) => format!("{}\n\nCloses #{n}", pr.body),
            None => pr.body.clone(),
        };
        let (url, body, link) = match self.kind {
            ForgeKind::GitHub => (
                format!("{}/repos/{}/pulls", self.api, self.repo),
                json!({"title": pr.title, "body": text, "head": pr.head, "base": pr.base}),
                "html_url",
            ),
            ForgeKind::GitLab => (
                format!("{}/projects/{}/merge_requests", self.api, self.repo.replace('/', "%2F")),
                json!({"title": pr.title, "description": text, "source_branch": pr.head, "target_branch": pr.base}),
                "web_url",
            ),
        };
        let unreachable = |source| ForgeError::Unreachable { url: url.clone(), source };
        let resp = self.request(http.post(&url).json(&body)).send().await.map_err(unreachable)?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return v[link].as_str().map(str::to_string).ok_or_else(|| ForgeError::Refused {
                url: url.clone(),
                status,
                message: format!("the answer has no `{link}`"),
            });
        }
        // Already open (GitHub 422, GitLab 409): find it.
        if status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::CONFLICT {
            let owner = self.repo.split('/').next().unwrap_or_default();
            let list = match self.kind {
                ForgeKind::GitHub => {
                    http.get(&url).query(&[("head", format!("{owner}:{}", pr.head)), ("state", "open".into())])
                }
                ForgeKind::GitLab => http.get(&url).query(&[("source_branch", pr.head), ("state", "opened")]),
            };
            let found: Value =
                self.request(list).send().await.map_err(unreachable)?.json().await.unwrap_or(Value::Null);
            if let Some(existing) = found.get(0).and_then(|p| p[link].as_str()) {
                return Ok(existing.to_string());
            }
        }
        let message = v["message"].as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
        Err(ForgeError::Refused { url, status, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_paths_come_from_urls() {
        assert_eq!(repo_path("https://github.com/acme/shop.git").as_deref(), Some("acme/shop"));
        assert_eq!(repo_path("git@gitlab.com:group/sub/app.git").as_deref(), Some("group/sub/app"));
        assert_eq!(repo_path("http://127.0.0.1:9/git/acme/shop").as_deref(), Some("git/acme/shop"));
        assert_eq!(repo_path("/srv/shop.git"), None);
    }
}
