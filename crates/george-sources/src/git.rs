//! A Git repository of manifests: a URL or local path, a branch and a
//! subdirectory, polled on an interval (and synced at once on request). The
//! engine keeps its own clone under the data directory and applies one
//! commit at a time, atomically; the commit SHA is the revision recorded on
//! every job. Git itself does the transport (the `git` command), so every
//! URL scheme and credential helper Git supports works.

use crate::{apply_folder, Source, SourceError, SyncOutcome};
use async_trait::async_trait;
use george_store::Store;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::Mutex;

/// Where the manifests live.
#[derive(Debug, Clone, PartialEq)]
pub struct GitSourceConfig {
    /// Repository URL or local path.
    pub url: String,
    /// Branch to follow.
    pub branch: String,
    /// Folder within the repository holding the manifests (`""` = the root).
    pub path: String,
    /// Poll interval.
    pub interval: Duration,
    /// Where the engine keeps its clone.
    pub checkout_dir: PathBuf,
}

/// The Git source.
#[derive(Debug)]
pub struct GitSource {
    cfg: GitSourceConfig,
    /// One sync at a time: the clone is shared state.
    lock: Mutex<()>,
}

impl GitSource {
    /// A Git source.
    pub fn new(cfg: GitSourceConfig) -> Self {
        Self { cfg, lock: Mutex::new(()) }
    }

    async fn git(&self, args: &[&str]) -> Result<String, SourceError> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.cfg.checkout_dir)
            .args(["-c", "advice.detachedHead=false", "-c", "core.quotepath=off"])
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| SourceError::Read(format!("cannot run git (is it installed?): {e}")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(SourceError::Read(format!(
                "git {} failed: {}",
                args.first().copied().unwrap_or_default(),
                redact(stderr.trim())
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    async fn fetch(&self) -> Result<String, SourceError> {
        let dir = &self.cfg.checkout_dir;
        if !dir.join(".git").exists() {
            std::fs::create_dir_all(dir).map_err(|e| SourceError::Read(format!("create {}: {e}", dir.display())))?;
            self.git(&["init", "-q"]).await?;
        }
        let refspec = format!("+refs/heads/{}:refs/remotes/origin/{}", self.cfg.branch, self.cfg.branch);
        let local = Path::new(&self.cfg.url).exists();
        let mut args = vec!["fetch", "-q", "--no-tags"];
        if !local {
            args.push("--depth=1");
        }
        args.extend([self.cfg.url.as_str(), refspec.as_str()]);
        self.git(&args).await?;
        self.git(&["rev-parse", &format!("refs/remotes/origin/{}", self.cfg.branch)]).await
    }
}

/// Removes credentials from URLs in git's messages (`https://user:token@host`).
fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_inclusive(char::is_whitespace) {
        match (word.find("://"), word.find('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                out.push_str(&word[..scheme + 3]);
                out.push_str("***");
                out.push_str(&word[at..]);
            }
            _ => out.push_str(word),
        }
    }
    out
}

#[async_trait]
impl Source for GitSource {
    fn name(&self) -> &str {
        "git"
    }

    fn interval(&self) -> Duration {
        self.cfg.interval
    }

    async fn sync(&self, store: &dyn Store) -> Result<SyncOutcome, SourceError> {
        let _guard = self.lock.lock().await;
        let sha = self.fetch().await?;
        let known = store.sources().await?.into_iter().find(|s| s.name == "git");
        let seen = known.as_ref().is_some_and(|s| {
            s.applied_revision.as_deref() == Some(&sha) || s.rejected_revision.as_deref() == Some(&sha)
        });
        if seen {
            store.source_checked("git").await?;
            let errors = known.map(|s| if s.rejected_revision.as_deref() == Some(&sha) { s.errors } else { vec![] });
            return Ok(SyncOutcome {
                source: "git".into(),
                revision: Some(sha),
                errors: errors.unwrap_or_default(),
                ..Default::default()
            });
        }
        self.git(&["checkout", "-q", "--force", "--detach", &sha]).await?;
        self.git(&["clean", "-q", "-ffdx"]).await?;
        let root = self.cfg.checkout_dir.join(&self.cfg.path);
        if !root.is_dir() {
            let errors = vec![format!("folder `{}` does not exist in commit {sha}", self.cfg.path)];
            store.reject_revision("git", &sha, errors.clone()).await?;
            return Ok(SyncOutcome { source: "git".into(), revision: Some(sha), errors, ..Default::default() });
        }
        let prefix =
            if self.cfg.path.is_empty() { String::new() } else { format!("{}/", self.cfg.path.trim_end_matches('/')) };
        apply_folder(store, "git", &sha, &root, &prefix).await
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redact("fatal: unable to access 'https://bot:s3cret@example.com/x.git/': 403"),
            "fatal: unable to access 'https://***@example.com/x.git/': 403"
        );
        assert_eq!(redact("no url here"), "no url here");
    }
}
