//! The `jira` configuration turned into the Jira source's settings, with
//! every problem named by its key (`jira.url`, `jira.tokenEnv`, …).

use crate::config::{Config, JiraSection};
use anyhow::{bail, Context as _};
use george_jira::{Credentials, JiraSettings, Mapping, StatusMap};
use std::sync::Arc;
use std::time::Duration;

fn read_secret(cfg: &Config, key: &str, name: &str) -> anyhow::Result<String> {
    let dir =
        cfg.secrets.dir.as_ref().with_context(|| format!("{key} names a secret, but no secrets.dir is configured"))?;
    let text =
        std::fs::read_to_string(dir.join(name)).with_context(|| format!("{key}: cannot read secret `{name}`"))?;
    Ok(text.trim().to_string())
}

fn credentials(cfg: &Config, j: &JiraSection) -> anyhow::Result<Credentials> {
    if let Some(c) = &j.credentials {
        let email = read_secret(cfg, "jira.credentials.secretRef", &format!("{}/email", c.secret_ref)).ok();
        let token = read_secret(cfg, "jira.credentials.secretRef", &format!("{}/token", c.secret_ref))?;
        if token.is_empty() {
            bail!("jira.credentials.secretRef: the secret `{}/token` is empty", c.secret_ref);
        }
        return Ok(match email.or(j.email.clone()) {
            Some(email) => Credentials::Basic { email, token },
            None => Credentials::Bearer(token),
        });
    }
    let token = match (&j.token_env, &j.token_file, &j.token_secret) {
        (None, None, None) if j.token.is_some() => j.token.clone().unwrap_or_default(),
        (Some(var), None, None) => {
            std::env::var(var).with_context(|| format!("jira.tokenEnv: environment variable {var} is not set"))?
        }
        (None, Some(f), None) => {
            std::fs::read_to_string(f).with_context(|| format!("jira.tokenFile: cannot read {}", f.display()))?
        }
        (None, None, Some(name)) => read_secret(cfg, "jira.tokenSecret", name)?,
        (None, None, None) => bail!(
            "jira: no credentials; set jira.tokenEnv, jira.tokenFile or jira.tokenSecret (with jira.email for Jira \
             Cloud), jira.credentials.secretRef, or GEORGE_JIRA_TOKEN"
        ),
        _ => bail!("jira: set only one of tokenEnv, tokenFile, tokenSecret"),
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        bail!("jira: the API token is empty");
    }
    Ok(match &j.email {
        Some(email) => Credentials::Basic { email: email.clone(), token },
        None => Credentials::Bearer(token),
    })
}

/// The Jira settings, if Jira is configured.
pub fn settings(cfg: &Config, engine_id: &str) -> anyhow::Result<Option<Arc<JiraSettings>>> {
    let Some(j) = &cfg.jira else { return Ok(None) };
    let url = j.url.clone().context("jira.url: required (e.g. https://acme.atlassian.net)")?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("jira.url: expected an http:// or https:// URL, got {url:?}");
    }
    let template = j.template.clone().context("jira.template: required: the TaskTemplate tickets become")?;
    let d = StatusMap::default();
    let statuses = StatusMap {
        in_progress: j.statuses.in_progress.clone().unwrap_or(d.in_progress),
        blocked: j.statuses.blocked.clone(),
        completed: j.statuses.completed.clone().unwrap_or(d.completed),
        failed: j.statuses.failed.clone(),
    };
    let page_size = j.page_size.unwrap_or(50);
    if !(1..=100).contains(&page_size) {
        bail!("jira.pageSize: expected 1 to 100, got {page_size}");
    }
    Ok(Some(Arc::new(JiraSettings {
        url,
        project: j.project.clone(),
        credentials: credentials(cfg, j)?,
        label: j.label.clone().unwrap_or_else(|| "george".into()),
        query: j.query.clone(),
        interval: j.interval.map(|d| d.get()).unwrap_or(Duration::from_secs(60)).max(Duration::from_millis(100)),
        page_size,
        mapping: Mapping {
            rules: j.rules.clone(),
            template,
            fields: j.fields.clone(),
            priorities: j.priorities.clone(),
        },
        statuses,
        assignee: j.assignee.clone(),
        on_closed: j.on_closed,
        board: j.board,
        subtasks: j.subtasks.then(|| j.subtask_type.clone().unwrap_or_else(|| "Subtask".into())),
        engine_id: engine_id.to_string(),
    })))
}

/// The Jira webhook signing key, if configured.
pub fn webhook_secret(cfg: &Config) -> anyhow::Result<Option<george_engine::WebhookSecret>> {
    let Some(j) = &cfg.jira else { return Ok(None) };
    let keys = ("jira.webhookSecret", "jira.webhookSecretFile");
    crate::engine_config::signing_key(cfg, keys, j.webhook_secret.as_deref(), j.webhook_secret_file.as_deref())
}
