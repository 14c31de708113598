//! The job's Git repository (seed 002 §4.1 "Initialization", §6.2
//! idempotency): a job with a `repo_url` parameter is worked in a clone of
//! that repository, on its own branch, and every completed step is committed
//! and pushed, so a replacement agent resumes from the pushed branch.
//!
//! - The branch is `<prefix><key>` (prefix `GEORGE_GIT_BRANCH_PREFIX`,
//!   default `george/`; key: the job's `branch`, `parent` or `ticket`
//!   parameter, else the job id). If it exists on the remote it is
//!   continued, never recreated.
//! - Credentials come from the `git` capability's secret files
//!   (`git-token` for https, `git-ssh-key` for ssh) through `GIT_ASKPASS`
//!   or `GIT_SSH_COMMAND`: they are never part of a URL, `.git/config`, a
//!   command line, a log line or a reason.
//! - The agent never force-pushes and never pushes to the remote's default
//!   branch or a protected one (`GEORGE_GIT_PROTECTED`, default
//!   `main,master`). Whatever a person must fix — a repository that cannot
//!   be cloned, a branch with someone else's commits — blocks the job with a
//!   reason that says what to do.

use george_core::api::JobView;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Settings from the agent's environment (an AgentSpec's `env` sets them).
#[derive(Debug, Clone)]
pub struct GitSettings {
    /// Branch prefix.
    pub branch_prefix: String,
    /// Commit author and committer.
    pub author_name: String,
    /// See `author_name`.
    pub author_email: String,
    /// User name sent with an https token.
    pub username: String,
    /// Branches never pushed to (besides the remote's default branch).
    pub protected: Vec<String>,
    /// Where the capability's secret files are.
    pub secrets_dir: Option<PathBuf>,
}

impl GitSettings {
    /// From the process environment.
    pub fn from_env() -> Self {
        let var = |k: &str, default: &str| std::env::var(k).ok().filter(|v| !v.is_empty()).unwrap_or(default.into());
        GitSettings {
            // Set but empty: no prefix at all.
            branch_prefix: std::env::var("GEORGE_GIT_BRANCH_PREFIX").unwrap_or_else(|_| "george/".into()),
            author_name: var("GEORGE_GIT_AUTHOR_NAME", "George Agent"),
            author_email: var("GEORGE_GIT_AUTHOR_EMAIL", "george-agent@localhost"),
            username: var("GEORGE_GIT_USERNAME", "x-access-token"),
            protected: var("GEORGE_GIT_PROTECTED", "main,master")
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            secrets_dir: std::env::var_os("GEORGE_SECRETS_DIR").map(PathBuf::from),
        }
    }
}

/// The job's clone.
#[derive(Debug)]
pub struct Repo {
    /// The working tree.
    pub dir: PathBuf,
    /// The branch the agent works on.
    pub branch: String,
    /// The branch it started from.
    pub base: String,
    /// Whether the branch already existed on the remote.
    pub continued: bool,
    url: String,
    env: Vec<(String, String)>,
    secret: Option<String>,
}

/// The job's repository URL, if it has one.
pub fn repo_url(job: &JobView) -> Option<String> {
    job.params.get("repo_url").and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(String::from)
}

fn param<'a>(job: &'a JobView, name: &str) -> Option<&'a str> {
    job.params.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// Whether `url` carries credentials (`scheme://user:secret@host/…`).
fn has_credentials(url: &str) -> bool {
    url.split_once("://").is_some_and(|(_, rest)| rest.split('/').next().is_some_and(|host| host.contains('@')))
}

fn is_ssh(url: &str) -> bool {
    url.starts_with("ssh://") || (!url.contains("://") && url.contains('@') && url.contains(':'))
}

/// A branch name git accepts and a person can read.
fn valid_branch(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.contains("..")
        && !name.contains("//")
        && !name.ends_with(".lock")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
}

/// Why the job's repository cannot be worked on. Each message says what a
/// person must do; it becomes the reason the job is blocked (or, for an LLM
/// step's git tool, what the model reads).
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The URL holds a token or password.
    #[error(
        "repo_url contains credentials; give the URL without them and put the token in the `git` capability's \
         secret (git-token)"
    )]
    CredentialsInUrl,
    /// The branch the job names cannot be a git branch.
    #[error("`{0}` is not a usable branch name; set the job's `branch` parameter")]
    BadBranch(String),
    /// The credential helper could not be written.
    #[error("cannot set up git credentials: {0}")]
    Credentials(#[source] std::io::Error),
    /// The clone failed.
    #[error(
        "cannot clone {url}: {reason}. Check that the repository exists and that the AgentSpec's `git` capability \
         secret (git-token or git-ssh-key) grants access, then comment on the job to retry"
    )]
    Clone {
        /// The repository.
        url: String,
        /// What git said.
        reason: Box<GitError>,
    },
    /// The branch is the default or a protected one.
    #[error(
        "refusing to work on `{0}`: it is the repository's default or a protected branch; set the job's `branch` \
         parameter to another name"
    )]
    Protected(String),
    /// The branch could not be checked out.
    #[error("cannot check out `{branch}` from `{start}`: {reason}; check the job's `base_branch`")]
    Checkout {
        /// The job's branch.
        branch: String,
        /// What it was to start from.
        start: String,
        /// What git said.
        reason: Box<GitError>,
    },
    /// git could not be started.
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    /// git failed; its error output, with secrets removed.
    #[error("{0}")]
    Failed(String),
    /// The remote branch has commits this agent did not make.
    #[error(
        "push rejected: `{0}` on the remote has commits this agent did not make. A person must merge or rebase them \
         into the branch (or delete the branch), then comment on the job to resume"
    )]
    PushRejected(String),
    /// The push failed otherwise.
    #[error(
        "cannot push `{branch}` to {url}: {reason}. Check that the `git` capability's credentials may write to the \
         repository, then comment on the job to retry"
    )]
    Push {
        /// The job's branch.
        branch: String,
        /// The repository.
        url: String,
        /// What git said.
        reason: Box<GitError>,
    },
}

impl Repo {
    /// Clones the job's repository into `work/repo` and checks out its branch.
    /// An error is the reason the job is blocked.
    pub async fn prepare(job: &JobView, url: &str, work: &Path, s: &GitSettings) -> Result<Repo, GitError> {
        if has_credentials(url) {
            return Err(GitError::CredentialsInUrl);
        }
        let key = param(job, "branch").or(param(job, "parent")).or(param(job, "ticket")).unwrap_or(&job.id);
        let branch = format!("{}{key}", s.branch_prefix);
        if !valid_branch(&branch) {
            return Err(GitError::BadBranch(branch));
        }
        let mut env = vec![
            ("GIT_TERMINAL_PROMPT".to_string(), "0".to_string()),
            ("GIT_CONFIG_NOSYSTEM".to_string(), "1".to_string()),
        ];
        if let Some(trust) = trust_config() {
            env.push(("GIT_CONFIG_GLOBAL".to_string(), trust.display().to_string()));
        }
        let mut secret = None;
        let secret_file = |name: &str| s.secrets_dir.as_ref().map(|d| d.join(name)).filter(|p| p.is_file());
        if is_ssh(url) {
            if let Some(key) = secret_file("git-ssh-key") {
                env.push((
                    "GIT_SSH_COMMAND".into(),
                    format!("ssh -i '{}' -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new", key.display()),
                ));
            }
        } else if url.starts_with("http://") || url.starts_with("https://") {
            if let Some(token) = secret_file("git-token") {
                secret = std::fs::read_to_string(&token).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
                let askpass = work.join(".george-askpass");
                let script = "#!/bin/sh\ncase \"$1\" in\n  Username*) printf '%s\\n' \"$GEORGE_GIT_USERNAME\" ;;\n  *) tr -d '\\n' < \"$GEORGE_GIT_TOKEN_FILE\"; echo ;;\nesac\n";
                write_executable(&askpass, script).map_err(GitError::Credentials)?;
                env.push(("GIT_ASKPASS".into(), askpass.display().to_string()));
                env.push(("GEORGE_GIT_TOKEN_FILE".into(), token.display().to_string()));
                env.push(("GEORGE_GIT_USERNAME".into(), s.username.clone()));
            }
        }
        let dir = work.join("repo");
        let mut repo =
            Repo { dir: dir.clone(), branch, base: String::new(), continued: false, url: url.to_string(), env, secret };
        let local = !url.contains("://") && !is_ssh(url);
        let mut clone = vec!["clone", "--no-checkout", "--quiet"];
        if !local {
            clone.extend(["--depth", "50", "--no-single-branch"]);
        }
        let target = dir.display().to_string();
        clone.extend(["--", url, target.as_str()]);
        repo.git_in(work, &clone).await.map_err(|e| GitError::Clone { url: url.to_string(), reason: Box::new(e) })?;
        repo.base = match param(job, "base_branch") {
            Some(b) => b.to_string(),
            None => repo
                .git(&["symbolic-ref", "--short", "refs/remotes/origin/HEAD"])
                .await
                .ok()
                .and_then(|r| r.trim().strip_prefix("origin/").map(str::to_string))
                .unwrap_or_else(|| "main".into()),
        };
        if repo.branch == repo.base || s.protected.contains(&repo.branch) {
            return Err(GitError::Protected(repo.branch));
        }
        repo.git(&["config", "user.name", &s.author_name]).await?;
        repo.git(&["config", "user.email", &s.author_email]).await?;
        let remote_branch = format!("refs/remotes/origin/{}", repo.branch);
        repo.continued = repo.git(&["rev-parse", "--verify", "--quiet", &remote_branch]).await.is_ok();
        let start = if repo.continued { remote_branch } else { format!("refs/remotes/origin/{}", repo.base) };
        repo.git(&["checkout", "--quiet", "-B", &repo.branch, &start]).await.map_err(|e| GitError::Checkout {
            branch: repo.branch.clone(),
            start: start.clone(),
            reason: Box::new(e),
        })?;
        tracing::info!(branch = %repo.branch, base = %repo.base, continued = repo.continued, "repository ready");
        Ok(repo)
    }

    /// Runs git in the working tree; the output, or the error with secrets removed.
    pub async fn git(&self, args: &[&str]) -> Result<String, GitError> {
        self.git_in(&self.dir, args).await
    }

    async fn git_in(&self, dir: &Path, args: &[&str]) -> Result<String, GitError> {
        let out = tokio::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(GitError::Spawn)?;
        let text = |b: &[u8]| self.redact(String::from_utf8_lossy(b).trim());
        if out.status.success() {
            Ok(text(&out.stdout))
        } else {
            let err = text(&out.stderr);
            Err(GitError::Failed(if err.is_empty() {
                format!("git {} failed", args.first().unwrap_or(&""))
            } else {
                err
            }))
        }
    }

    /// `text` without the token.
    pub fn redact(&self, text: &str) -> String {
        match &self.secret {
            Some(s) => text.replace(s.as_str(), "***"),
            None => text.to_string(),
        }
    }

    /// Commits everything (an empty commit if nothing changed) with `message`.
    pub async fn commit(&self, message: &str) -> Result<String, GitError> {
        self.git(&["add", "--all"]).await?;
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]).await?;
        self.git(&["rev-parse", "HEAD"]).await
    }

    /// Pushes the branch (never forced). An error says what a person must do.
    pub async fn push(&self) -> Result<(), GitError> {
        let refspec = format!("HEAD:refs/heads/{}", self.branch);
        match self.git(&["push", "--quiet", "--porcelain", "origin", &refspec]).await {
            Ok(_) => Ok(()),
            Err(GitError::Failed(e))
                if e.contains("rejected") || e.contains("non-fast-forward") || e.contains("fetch first") =>
            {
                Err(GitError::PushRejected(self.branch.clone()))
            }
            Err(e) => Err(GitError::Push { branch: self.branch.clone(), url: self.url.clone(), reason: Box::new(e) }),
        }
    }

    /// The checkpoint after a completed step: commit and push.
    pub async fn checkpoint(&self, job: &str, attempt: u32, step: &str) -> Result<String, GitError> {
        let sha = self.commit(&format!("george: step {step} done\n\nJob {job}, attempt {attempt}.")).await?;
        self.push().await?;
        Ok(sha)
    }

    /// What the job leaves behind: branch, last commit, base and diff stat.
    pub async fn summary(&self) -> Value {
        let commit = self.git(&["rev-parse", "HEAD"]).await.unwrap_or_default();
        let base = format!("refs/remotes/origin/{}", self.base);
        let stat = match self.git(&["diff", "--stat", &format!("{base}...HEAD")]).await {
            Ok(s) => s,
            Err(_) => self.git(&["diff", "--stat", &base, "HEAD"]).await.unwrap_or_default(),
        };
        json!({
            "repository": self.url,
            "branch": self.branch,
            "base": self.base,
            "commit": commit,
            "continued": self.continued,
            "diff_stat": stat,
        })
    }
}

fn write_executable(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// A global git configuration (in the agent's temporary directory) that
/// trusts repositories owned by other users, including the user's own global
/// configuration if there is one. A sandboxed agent runs under its own uid,
/// so a local repository it clones belongs to someone else, and git refuses
/// it for "dubious ownership"; the setting is only read from global (not
/// command-line) configuration in the process git starts to serve a local
/// clone. The agent's sandbox, not git's ownership check, is what confines
/// what a repository can make it do.
fn trust_config() -> Option<std::path::PathBuf> {
    let path = std::env::temp_dir().join("george-git-trust.config");
    let mut text = String::from("[safe]\n\tdirectory = *\n");
    if let Some(home) = std::env::var_os("HOME") {
        let own = Path::new(&home).join(".gitconfig");
        if own.is_file() {
            text.push_str(&format!("[include]\n\tpath = {}\n", own.display()));
        }
    }
    std::fs::write(&path, text).ok()?;
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_branch_names_are_checked() {
        assert!(has_credentials("https://bot:tok@example.com/a/b.git"));
        assert!(!has_credentials("https://example.com/a/b.git"));
        assert!(!has_credentials("git@example.com:a/b.git"));
        assert!(is_ssh("git@example.com:a/b.git") && is_ssh("ssh://git@example.com/a/b"));
        assert!(!is_ssh("/srv/git/a.git") && !is_ssh("https://example.com/a"));
        assert!(valid_branch("george/PROJ-12") && valid_branch("george/job_1.x"));
        for bad in ["", "-x", "a..b", "a/", "a b", "a.lock", "george//x", "a~1"] {
            assert!(!valid_branch(bad), "{bad}");
        }
    }
}
