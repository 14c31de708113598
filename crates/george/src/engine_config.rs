//! The engine's settings from the configuration: one conversion,
//! `EngineConfig::try_from(&Config)`, whose errors name the field. What
//! only exists once George runs (the API's bound address, the data
//! directory's canonical path) is set by `Server::start`.

use crate::config::Config;
use anyhow::{bail, Context as _};
use george_engine::{EngineConfig, RetryPolicy};
use george_runtime::Resources;
use std::time::Duration;

impl TryFrom<&Config> for EngineConfig {
    type Error = anyhow::Error;

    fn try_from(cfg: &Config) -> anyhow::Result<EngineConfig> {
        let mut ecfg = EngineConfig::new(String::new());
        ecfg.engine_id = cfg.engine.id.clone().unwrap_or_else(|| "george".into());
        ecfg.secrets_dir = cfg.secrets.dir.clone();
        if let Some(d) = cfg.engine.reconcile_interval {
            ecfg.reconcile_interval = d.get();
        }
        if let Some(w) = cfg.engine.workers {
            ecfg.workers = w.max(1);
        }
        if let Some(h) = cfg.agents.health_check {
            ecfg.health = h;
        }
        if let Some(d) = cfg.webhooks.remember_deliveries {
            ecfg.delivery_memory = d.get();
        }
        let retention = &cfg.engine.retention;
        if let Some(d) = retention.finished {
            ecfg.retention.finished = d.get();
        }
        if let Some(d) = retention.interval {
            ecfg.retention.interval = d.get().max(std::time::Duration::from_secs(1));
        }
        if let Some(n) = retention.batch {
            if n == 0 {
                bail!("engine.retention.batch: expected at least 1, got 0");
            }
            ecfg.retention.batch = n;
        }
        if let Some(p) = cfg.agents.engine_patience {
            ecfg.engine_patience = p.get();
        }
        let pool = &cfg.agents.pool;
        if let Some(n) = pool.max_warm {
            ecfg.pool.max_warm = n;
        }
        if let Some(n) = pool.refill_per_second {
            if n == 0 {
                bail!("agents.pool.refillPerSecond: expected at least 1, got 0");
            }
            ecfg.pool.refill_per_second = n;
        }
        if let Some(n) = pool.refill_parallelism {
            if n == 0 {
                bail!("agents.pool.refillParallelism: expected at least 1, got 0");
            }
            ecfg.pool.refill_parallelism = n;
        }
        ecfg.default_resources =
            Resources { memory: cfg.agents.default_resources.memory, cpu: cfg.agents.default_resources.cpu };
        let defaults = RetryPolicy::default();
        ecfg.retry = RetryPolicy {
            initial_backoff: cfg.engine.retry_backoff.map(|d| d.get()).unwrap_or(defaults.initial_backoff),
            max_backoff: cfg.engine.max_retry_backoff.map(|d| d.get()).unwrap_or(defaults.max_backoff),
            max_attempts: cfg.engine.max_attempts.unwrap_or(defaults.max_attempts),
        };
        if let Some(g) = cfg.engine.termination_grace {
            ecfg.termination_grace = g.get();
        }
        if let Some(t) = cfg.engine.trigger_tick {
            ecfg.trigger_tick = t.get().max(std::time::Duration::from_millis(10));
        }
        ecfg.webhook_secret = webhook_secret(cfg)?;
        ecfg.jira_webhook_secret = crate::jira_setup::webhook_secret(cfg)?;
        ecfg.github_webhook_secret = crate::github_setup::webhook_secret(cfg)?;
        ecfg.slack = slack_settings(cfg)?;
        ecfg.llm = llm_settings(cfg)?;
        for (i, url) in cfg.llm.budgets.notify.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("llm.budgets.notify[{i}]: expected an http:// or https:// URL, got {url:?}");
            }
        }
        ecfg.notify = cfg.llm.budgets.notify.clone();
        if let Some(n) = cfg.engine.max_concurrent {
            ecfg.max_concurrent = Some(n);
        }
        let bp = &cfg.engine.backpressure;
        if let Some(t) = bp.threshold {
            ecfg.backpressure.threshold = t;
        }
        if let Some(r) = &bp.refuse {
            ecfg.backpressure.refuse = r.clone();
        }
        if let Some(d) = bp.retry_after {
            ecfg.backpressure.retry_after = d.get();
        }
        Ok(ecfg)
    }
}

/// LLM providers (with their keys, read once at start) and budgets.
fn llm_settings(cfg: &Config) -> anyhow::Result<george_engine::llm::LlmSettings> {
    let mut s = george_engine::llm::LlmSettings {
        default_provider: cfg.llm.default.provider.clone(),
        default_model: cfg.llm.default.model.clone(),
        org_monthly: cfg.llm.budgets.org_monthly,
        org_daily: cfg.llm.budgets.org_daily,
        default_cap: cfg.llm.budgets.default_cap.unwrap_or(4096),
        ..Default::default()
    };
    for (i, p) in cfg.llm.providers.iter().enumerate() {
        let at = format!("llm.providers[{i}] ({})", p.name);
        let key = match (&p.api_key_env, &p.api_key_file, &p.api_key_secret) {
            (None, None, None) => None,
            (Some(var), None, None) => Some(
                std::env::var(var).with_context(|| format!("{at}.apiKeyEnv: environment variable {var} is not set"))?,
            ),
            (None, Some(f), None) => Some(
                std::fs::read_to_string(f).with_context(|| format!("{at}.apiKeyFile: cannot read {}", f.display()))?,
            ),
            (None, None, Some(name)) => {
                let dir = cfg.secrets.dir.as_ref().with_context(|| format!("{at}.apiKeySecret needs secrets.dir"))?;
                Some(
                    std::fs::read_to_string(dir.join(name))
                        .with_context(|| format!("{at}.apiKeySecret: cannot read secret `{name}`"))?,
                )
            }
            _ => bail!("{at}: set at most one of apiKeyEnv, apiKeyFile, apiKeySecret"),
        };
        let provider = george_governor::Provider {
            name: p.name.clone(),
            api: p.api,
            base_url: p.base_url.clone(),
            key: key.map(|k| george_governor::ProviderKey(k.trim().to_string())),
        };
        if s.providers.insert(p.name.clone(), provider).is_some() {
            bail!("{at}: duplicate provider name");
        }
    }
    if let Some(name) = &s.default_provider {
        if !s.providers.contains_key(name) {
            bail!("llm.default.provider `{name}` is not one of llm.providers");
        }
    }
    Ok(s)
}

/// Slack's settings (`slack`), the signing secret read once at start.
fn slack_settings(cfg: &Config) -> anyhow::Result<Option<george_engine::SlackSettings>> {
    let Some(s) = &cfg.slack else { return Ok(None) };
    let keys = ("slack.signingSecret", "slack.signingSecretFile");
    let signing_secret = signing_key(cfg, keys, s.signing_secret.as_deref(), s.signing_secret_file.as_deref())?
        .context("slack: set signingSecret or signingSecretFile (the Slack app's signing secret)")?;
    let default_role =
        match s.default_role.as_deref() {
            None | Some("none") => None,
            Some(r) => Some(r.parse::<george_core::Role>().map_err(|_| {
                anyhow::anyhow!("slack.defaultRole: expected none, viewer, operator or admin, got `{r}`")
            })?),
        };
    let users = s
        .users
        .iter()
        .map(|(id, u)| (id.clone(), george_engine::SlackUser { subject: u.subject.clone(), role: u.role }))
        .collect();
    let bot_token = match (&s.bot_token_env, &s.bot_token_file) {
        (Some(_), Some(_)) => bail!("slack: set either botTokenEnv or botTokenFile, not both"),
        (Some(var), None) => Some(
            std::env::var(var).with_context(|| format!("slack.botTokenEnv: environment variable {var} is not set"))?,
        ),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f).with_context(|| format!("slack.botTokenFile: cannot read {}", f.display()))?,
        ),
        (None, None) => None,
    }
    .map(|t| george_engine::WebhookSecret(t.trim().as_bytes().to_vec()));
    let api_url = s.api_url.clone().unwrap_or_else(|| "https://slack.com/api".into());
    if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
        bail!("slack.apiUrl: expected an http:// or https:// URL, got {api_url:?}");
    }
    let response_urls = s.response_urls.clone().unwrap_or_else(|| "https://hooks.slack.com/".into());
    if !(response_urls.starts_with("http://") || response_urls.starts_with("https://")) {
        bail!("slack.responseUrls: expected an http:// or https:// URL prefix, got {response_urls:?}");
    }
    let ack_within = s.ack_within.map_or(Duration::from_secs(2), |d| d.get());
    if ack_within > Duration::from_millis(2500) {
        bail!("slack.ackWithin: at most 2500ms (Slack gives up after 3s), got {ack_within:?}");
    }
    Ok(Some(george_engine::SlackSettings {
        signing_secret,
        users,
        default_role,
        bot_token,
        api_url,
        ack_within,
        response_urls,
    }))
}

/// The webhook signing key, read once at start.
fn webhook_secret(cfg: &Config) -> anyhow::Result<Option<george_engine::WebhookSecret>> {
    let w = &cfg.webhooks;
    signing_key(cfg, ("webhooks.secret", "webhooks.secretFile"), w.secret.as_deref(), w.secret_file.as_deref())
}

/// A signing key named by `keys` (the config keys of a secret's name in
/// `secrets.dir` and of a file), read once at start; at least 16 bytes.
pub(crate) fn signing_key(
    cfg: &Config,
    keys: (&str, &str),
    secret: Option<&str>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<george_engine::WebhookSecret>> {
    let (secret_key, file_key) = keys;
    let (path, key) = match (secret, file) {
        (Some(_), Some(_)) => bail!("set either {secret_key} or {file_key}, not both"),
        (Some(name), None) => {
            let dir = cfg
                .secrets
                .dir
                .as_ref()
                .with_context(|| format!("{secret_key} names a secret, but no secrets.dir is configured"))?;
            (dir.join(name), secret_key)
        }
        (None, Some(path)) => (path.to_path_buf(), file_key),
        (None, None) => return Ok(None),
    };
    let bytes =
        std::fs::read(&path).with_context(|| format!("{key}: cannot read the signing key {}", path.display()))?;
    let bytes: Vec<u8> = String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec();
    if bytes.len() < 16 {
        bail!("{key}: the signing key in {} is {} bytes; use at least 16", path.display(), bytes.len());
    }
    Ok(Some(george_engine::WebhookSecret(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_settings_name_the_field_that_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("slack"), "8f742231b10e8888abcd99yyyzzz85a5").unwrap();
        let settings = |slack: &str| {
            let text = format!("secrets:\n  dir: {}\nslack:\n  signingSecret: slack\n{slack}", dir.path().display());
            let cfg: Config = george_core::yaml::from_yaml(&text).unwrap_or_else(|e| panic!("{e}"));
            slack_settings(&cfg).map_err(|e| format!("{e:#}"))
        };
        let s = settings("").unwrap().unwrap();
        assert_eq!((s.ack_within, s.response_urls.as_str()), (Duration::from_secs(2), "https://hooks.slack.com/"));
        assert!(s.bot_token.is_none() && s.default_role.is_none());
        assert_eq!(settings("  ackWithin: 0s\n").unwrap().unwrap().ack_within, Duration::ZERO);
        for (slack, expected) in [
            ("  ackWithin: 3s\n", "slack.ackWithin: at most 2500ms"),
            ("  responseUrls: ftp://hooks\n", "slack.responseUrls: expected an http:// or https:// URL prefix"),
            ("  apiUrl: slack.com\n", "slack.apiUrl: expected an http:// or https:// URL"),
            ("  defaultRole: boss\n", "slack.defaultRole: expected none, viewer, operator or admin, got `boss`"),
            (
                "  botTokenEnv: GEORGE_TEST_UNSET_TOKEN\n",
                "slack.botTokenEnv: environment variable GEORGE_TEST_UNSET_TOKEN is not set",
            ),
            ("  botTokenEnv: X\n  botTokenFile: /x\n", "slack: set either botTokenEnv or botTokenFile, not both"),
        ] {
            let err = settings(slack).unwrap_err();
            assert!(err.contains(expected), "{slack:?}: {err}");
        }
        let text = format!("secrets:\n  dir: {}\nslack:\n  users: {{}}\n", dir.path().display());
        let cfg: Config = george_core::yaml::from_yaml(&text).unwrap();
        let err = format!("{:#}", slack_settings(&cfg).unwrap_err());
        assert!(err.contains("set signingSecret or signingSecretFile"), "{err}");
        let unknown = george_core::yaml::from_yaml::<Config>("slack:\n  ackwithin: 1s\n").unwrap_err().to_string();
        assert!(unknown.contains("unknown field `ackwithin`"), "{unknown}");
    }
}
