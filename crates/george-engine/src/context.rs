//! Everything the reconciler's steps share, in one place.

use crate::catalog::CatalogCache;
use crate::decide::RetryPolicy;
use crate::metrics::Metrics;
use crate::workqueue::WorkQueue;
use george_core::manifest::HealthCheck;
use george_core::Clock;
use george_runtime::{Resources, Runtime};
use george_store::Store;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Identifies this engine (labels on agents it runs).
    pub engine_id: String,
    /// The API address agents report to.
    pub api_url: String,
    /// Safety-net resync of every active job (seed default 30s).
    pub reconcile_interval: Duration,
    /// Jobs reconciled concurrently.
    pub workers: usize,
    /// Default health checks (an AgentSpec may override them).
    pub health: HealthCheck,
    /// Default resource limits (an AgentSpec may override them).
    pub default_resources: Resources,
    /// Retries of failed attempts.
    pub retry: RetryPolicy,
    /// How long a stopped agent gets between SIGTERM and SIGKILL.
    pub termination_grace: Duration,
    /// How long an agent that reported its verdict may take to exit.
    pub exit_grace: Duration,
    /// Per-job output directories shared by its attempts.
    pub output_dir: Option<PathBuf>,
    /// Where secrets live: `<dir>/<name>` or `<dir>/<name>/<key>`.
    pub secrets_dir: Option<PathBuf>,
    /// Agents running at once, in all (Policy manifests may lower it).
    pub max_concurrent: Option<u32>,
    /// When new low-priority submissions are refused.
    pub backpressure: Backpressure,
    /// How often cron triggers are looked at.
    pub trigger_tick: Duration,
    /// The key webhook events are signed with (HMAC-SHA256).
    pub webhook_secret: Option<WebhookSecret>,
    /// The signing key of Jira webhooks (`POST /api/v1/webhooks/jira`).
    pub jira_webhook_secret: Option<WebhookSecret>,
    /// The signing key of GitHub webhooks (`POST /api/v1/webhooks/github`).
    pub github_webhook_secret: Option<WebhookSecret>,
    /// Slack slash commands (`POST /api/v1/slack/commands`), if enabled.
    pub slack: Option<SlackSettings>,
    /// LLM providers and organisation budgets.
    pub llm: crate::llm::LlmSettings,
    /// Slack-compatible incoming-webhook URLs that receive budget alerts.
    pub notify: Vec<String>,
    /// How long agents keep working while the engine is unreachable
    /// (`GEORGE_ENGINE_PATIENCE_MS`); at least 10 minutes by default.
    pub engine_patience: Duration,
    /// How long a wake's delivery id is remembered: a replay within it
    /// creates nothing (default 7 days).
    pub delivery_memory: Duration,
    /// How long finished jobs are kept, and how the deleting is paced.
    pub retention: crate::retention::RetentionSettings,
    /// Warm pools, engine-wide.
    pub pool: crate::pool::PoolSettings,
}

/// A webhook signing key; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(pub Vec<u8>);

/// Slack: the app's signing secret and who its users are in George.
#[derive(Debug, Clone)]
pub struct SlackSettings {
    /// The app's signing secret (`X-Slack-Signature`).
    pub signing_secret: WebhookSecret,
    /// Slack user id → George subject and role.
    pub users: std::collections::BTreeMap<String, SlackUser>,
    /// The role of a Slack user not in `users` (`None`: refused).
    pub default_role: Option<george_core::Role>,
    /// The bot token George answers mentions with (`chat.postMessage`).
    pub bot_token: Option<WebhookSecret>,
    /// Slack's Web API base (`https://slack.com/api`).
    pub api_url: String,
    /// How long a slash command may take before it is acknowledged and
    /// answered later through its `response_url` (zero: always later).
    pub ack_within: std::time::Duration,
    /// The prefix a slash command's `response_url` must have.
    pub response_urls: String,
}

/// A Slack user as George knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackUser {
    /// Their subject in the audit log.
    pub subject: String,
    /// What they may do.
    pub role: george_core::Role,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// Refusing low-priority work when the queue is deep (seed 003 §2).
#[derive(Debug, Clone, PartialEq)]
pub struct Backpressure {
    /// Queued jobs at which refusing starts.
    pub threshold: usize,
    /// Priority classes that are refused.
    pub refuse: Vec<george_core::Priority>,
    /// What `Retry-After` says.
    pub retry_after: Duration,
}

impl Default for Backpressure {
    fn default() -> Self {
        Self {
            threshold: 1000,
            refuse: vec![george_core::Priority::P3, george_core::Priority::Background],
            retry_after: Duration::from_secs(30),
        }
    }
}

impl EngineConfig {
    /// Defaults for an engine whose API is at `api_url`.
    pub fn new(api_url: impl Into<String>) -> Self {
        Self {
            engine_id: "george".into(),
            api_url: api_url.into(),
            reconcile_interval: Duration::from_secs(30),
            workers: 4,
            health: HealthCheck::default(),
            default_resources: Resources::default(),
            retry: RetryPolicy::default(),
            termination_grace: Duration::from_secs(10),
            exit_grace: Duration::from_secs(10),
            output_dir: None,
            secrets_dir: None,
            max_concurrent: Some(32),
            backpressure: Backpressure::default(),
            trigger_tick: Duration::from_secs(1),
            webhook_secret: None,
            jira_webhook_secret: None,
            github_webhook_secret: None,
            slack: None,
            llm: crate::llm::LlmSettings { default_cap: 4096, ..Default::default() },
            notify: Vec::new(),
            engine_patience: Duration::from_secs(15 * 60),
            delivery_memory: Duration::from_secs(7 * 24 * 3600),
            retention: Default::default(),
            pool: Default::default(),
        }
    }
}

/// Shared state of a running engine.
#[derive(Debug)]
pub(crate) struct Context {
    /// Settings.
    pub cfg: EngineConfig,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The runtime.
    pub runtime: Arc<dyn Runtime>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Jobs to reconcile.
    pub queue: WorkQueue,
    /// Templates and agent specs.
    pub catalog: CatalogCache,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Attempts being stopped right now.
    pub stopping: Mutex<HashSet<(String, u32)>>,
    /// Background tasks (terminations), awaited on shutdown.
    pub tasks: TaskTracker,
    /// Who may start now: the scheduler's state, owned by admission alone.
    pub admission: crate::admission::Admission,
    /// The manifests changed: reload limits and shares before the next pass.
    pub limits_dirty: std::sync::atomic::AtomicBool,
    /// One trigger wake at a time (debounce windows and remembered
    /// deliveries are read, then written); it holds when remembered
    /// deliveries were last swept.
    pub trigger_lock: tokio::sync::Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    /// Token budgets.
    pub governor: george_governor::Governor,
    /// Whether the governor holds the budgets and the ledger's usage yet.
    pub governor_loaded: tokio::sync::watch::Sender<bool>,
    /// HTTP client for LLM providers.
    pub http: reqwest::Client,
    /// Since when heartbeats could have been heard.
    pub availability: crate::availability::Availability,
    /// Whether writes are taken yet.
    pub readiness: crate::readiness::Readiness,
    /// Warm agents, by AgentSpec.
    pub pools: crate::pool::Pools,
    /// Family token budgets (a job's, its sub-agents' included).
    pub family: crate::family_budget::FamilyBudgets,
}

impl Context {
    /// Returns once the governor has loaded the budgets and the ledger's
    /// usage at start-up, so no call or wake is judged against empty accounts.
    pub async fn governor_ready(&self) {
        let mut rx = self.governor_loaded.subscribe();
        let _ = rx.wait_for(|loaded| *loaded).await;
    }

    /// Like [`Context::governor_ready`], giving up after `within`: `false`
    /// means this engine does not run (a standby replica) or is still starting.
    pub async fn governor_ready_within(&self, within: std::time::Duration) -> bool {
        tokio::time::timeout(within, self.governor_ready()).await.is_ok()
    }
}

impl Context {
    /// Whether this engine is stopping that attempt now.
    pub fn is_stopping(&self, job: &str, attempt: u32) -> bool {
        self.stopping.lock().contains(&(job.to_string(), attempt))
    }
}
