//! The `github` configuration turned into the GitHub Issues source's
//! settings, with every problem named by its key.

use crate::config::Config;
use anyhow::{bail, Context as _};
use std::time::Duration;

/// The GitHub webhooks' signing key (`github.webhookSecret` or
/// `github.webhookSecretFile`), if set.
pub fn webhook_secret(cfg: &Config) -> anyhow::Result<Option<george_engine::WebhookSecret>> {
    let Some(g) = &cfg.github else { return Ok(None) };
    let keys = ("github.webhookSecret", "github.webhookSecretFile");
    crate::engine_config::signing_key(cfg, keys, g.webhook_secret.as_deref(), g.webhook_secret_file.as_deref())
}

/// The GitHub Issues source's settings, if `github` is configured; every
/// problem named by its key.
pub fn settings(cfg: &Config, engine_id: &str) -> anyhow::Result<Option<george_github::GitHubSettings>> {
    let Some(g) = &cfg.github else { return Ok(None) };
    let owner = g.owner.clone().context("github.owner: required (the repository's owner)")?;
    let repo = g.repo.clone().context("github.repo: required (the repository's name)")?;
    let template = g.template.clone().context("github.template: required (the TaskTemplate issues become)")?;
    let token = match (&g.token, &g.token_env, &g.token_file) {
        (Some(t), _, _) => t.clone(),
        (None, Some(var), None) => {
            std::env::var(var).with_context(|| format!("github.tokenEnv: environment variable {var} is not set"))?
        }
        (None, None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("github.tokenFile: cannot read {}", f.display()))?
        }
        (None, None, None) => bail!("github: no token; set github.tokenEnv or github.tokenFile"),
        (None, Some(_), Some(_)) => bail!("github: set only one of tokenEnv and tokenFile"),
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!("github: the token is empty");
    }
    let api_url = g.api_url.clone().unwrap_or_else(|| "https://api.github.com".into());
    if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
        bail!("github.apiUrl: expected an http:// or https:// URL, got {api_url:?}");
    }
    Ok(Some(george_github::GitHubSettings {
        api_url,
        web_url: g.web_url.clone().unwrap_or_else(|| "https://github.com".into()),
        owner,
        repo,
        token,
        label: g.label.clone().unwrap_or_else(|| "george".into()),
        template,
        interval: g.interval.map(|d| d.get()).unwrap_or(Duration::from_secs(60)).max(Duration::from_millis(100)),
        engine_id: engine_id.to_string(),
    }))
}
