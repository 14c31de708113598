//! Engine configuration: a `george-config.yaml` in the seed's shape, then
//! `GEORGE_*` environment variables, then command-line flags, each
//! overriding the one before. Every problem names the file, line and field
//! (or the variable) and what was expected.

use anyhow::{bail, Context as _};
use george_core::duration::HumanDuration;
use george_core::manifest::HealthCheck;
use george_core::quantity::{Cpu, Memory};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// The engine.
    #[serde(default)]
    pub engine: EngineSection,
    /// The API.
    #[serde(default)]
    pub api: ApiSection,
    /// Sources of desired state.
    #[serde(default)]
    pub sources: SourcesSection,
    /// Where agents run.
    #[serde(default)]
    pub container_backend: BackendSection,
    /// Agent defaults.
    #[serde(default)]
    pub agents: AgentsSection,
    /// Where agents' secrets live.
    #[serde(default)]
    pub secrets: SecretsSection,
    /// Webhook events (`POST /api/v1/events`).
    #[serde(default)]
    pub webhooks: WebhooksSection,
    /// LLM providers and token budgets.
    #[serde(default)]
    pub llm: LlmSection,
    /// Jira: the work source and status board.
    #[serde(default)]
    pub jira: Option<JiraSection>,
    /// Slack: slash commands (`/george status`, ...) from a Slack app.
    #[serde(default)]
    pub slack: Option<SlackSection>,
    /// GitHub Issues: labelled issues of one repository become jobs.
    #[serde(default)]
    pub github: Option<GitHubSection>,
    /// Where George keeps its state.
    #[serde(default)]
    pub store: StoreSection,
}

/// `store:` the embedded SQLite file (default) or a PostgreSQL server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoreSection {
    /// `sqlite` (default: `<dataDir>/george.db`) or `postgres`.
    #[serde(rename = "type")]
    pub store_type: Option<StoreType>,
    /// The PostgreSQL URL (`postgres://user:password@host/db`, or a `host=... dbname=...`
    /// string); prefer `urlEnv` or `urlFile`, since it holds a password.
    pub url: Option<String>,
    /// An environment variable holding the URL.
    pub url_env: Option<String>,
    /// A file holding the URL.
    pub url_file: Option<PathBuf>,
    /// TLS to the server.
    #[serde(default)]
    pub tls: StoreTlsSection,
}

/// `store.tls`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoreTlsSection {
    /// PEM file of the CA that signed the server's certificate: TLS is then
    /// required, and the certificate and host name are verified.
    pub ca_file: Option<PathBuf>,
}

/// `store.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreType {
    /// The embedded SQLite file.
    #[default]
    Sqlite,
    /// A PostgreSQL server.
    #[serde(alias = "postgresql")]
    Postgres,
}

/// `containerBackend.type`: where agents run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendType {
    /// Local processes (default).
    #[default]
    Process,
    /// Docker containers (`local` is recac's name for it).
    #[serde(alias = "local")]
    Docker,
    /// Kubernetes Jobs.
    #[serde(alias = "k8s")]
    Kubernetes,
}

impl std::str::FromStr for BackendType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "process" => Ok(BackendType::Process),
            "docker" | "local" => Ok(BackendType::Docker),
            "kubernetes" | "k8s" => Ok(BackendType::Kubernetes),
            other => Err(format!("unknown backend `{other}`; expected `process`, `docker` or `kubernetes`")),
        }
    }
}

/// `engine.leaderElection.backend`: where the lease lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseBackend {
    /// A row in the PostgreSQL store (default).
    #[default]
    Postgres,
    /// A `coordination.k8s.io/v1` Lease.
    Kubernetes,
}

/// The store the configuration asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// The SQLite file in the data directory.
    Sqlite,
    /// A PostgreSQL server at this URL, reached with these TLS settings.
    Postgres(String, george_store::PostgresTls),
}

impl StoreSection {
    /// Which store, with the URL resolved; errors name the field.
    pub fn resolve(&self) -> anyhow::Result<StoreChoice> {
        match self.store_type.unwrap_or_default() {
            StoreType::Sqlite => {
                if self.url.is_some() || self.url_env.is_some() || self.url_file.is_some() {
                    bail!("store: a URL is set but store.type is sqlite; set store.type: postgres");
                }
                if self.tls.ca_file.is_some() {
                    bail!("store.tls: set but store.type is sqlite; it applies to postgres only");
                }
                Ok(StoreChoice::Sqlite)
            }
            StoreType::Postgres => {
                let url = match (&self.url, &self.url_env, &self.url_file) {
                    (Some(u), None, None) => u.clone(),
                    (None, Some(var), None) => std::env::var(var)
                        .with_context(|| format!("store.urlEnv: environment variable {var} is not set"))?,
                    (None, None, Some(f)) => std::fs::read_to_string(f)
                        .with_context(|| format!("store.urlFile: cannot read {}", f.display()))?
                        .trim()
                        .to_string(),
                    _ => bail!("store: set exactly one of url, urlEnv, urlFile for store.type postgres"),
                };
                if url.trim().is_empty() {
                    bail!("store.url: empty; expected a postgres:// URL or a `host=... dbname=...` string");
                }
                if let Some(ca) = &self.tls.ca_file {
                    if !ca.is_file() {
                        bail!("store.tls.caFile: {} is not a readable file", ca.display());
                    }
                }
                Ok(StoreChoice::Postgres(url, george_store::PostgresTls { ca_file: self.tls.ca_file.clone() }))
            }
        }
    }
}

/// `jira:` (seed 000's shape, extended).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JiraSection {
    /// Site URL, e.g. `https://acme.atlassian.net`.
    pub url: Option<String>,
    /// Project key.
    pub project: Option<String>,
    /// Cloud: the bot account's email (HTTP Basic with the API token).
    pub email: Option<String>,
    /// The API token (or a Data Center personal access token when no email is set) from an
    /// environment variable of the engine ...
    pub token_env: Option<String>,
    /// ... or a file ...
    pub token_file: Option<PathBuf>,
    /// ... or a secret in secrets.dir.
    pub token_secret: Option<String>,
    /// Seed 000's `credentials: {secretRef: NAME}`: the secret `NAME` in secrets.dir with
    /// keys `email` and `token` (`NAME/email`, `NAME/token`).
    #[serde(default)]
    pub credentials: Option<JiraCredentials>,
    /// The label that marks work for George (default `george`).
    pub label: Option<String>,
    /// A full JQL query that replaces the label query.
    pub query: Option<String>,
    /// Poll interval (default 60s).
    pub interval: Option<HumanDuration>,
    /// Results per search page (default 50).
    pub page_size: Option<u32>,
    /// The template tickets become when no rule matches.
    pub template: Option<String>,
    /// Rules: `{issueType?, label?, template}`, first match wins.
    #[serde(default)]
    pub rules: Vec<george_jira::Rule>,
    /// Custom field id → template parameter.
    #[serde(default)]
    pub fields: std::collections::BTreeMap<String, String>,
    /// Jira priority name → priority class.
    #[serde(default)]
    pub priorities: std::collections::BTreeMap<String, george_core::Priority>,
    /// Statuses George moves tickets to.
    #[serde(default)]
    pub statuses: JiraStatuses,
    /// Assign claimed tickets to this account id (`self`: George's account).
    pub assignee: Option<String>,
    /// The token itself: only from a recac config file (`george orchestrate`), never from George's.
    #[serde(skip)]
    pub token: Option<String>,
    /// What happens to a job whose ticket a person closes: `abort` (default) or `pause`.
    #[serde(default)]
    pub on_closed: george_jira::OnClosed,
    /// Every Jira job on the board: its steps as sub-tasks of its ticket, its end as a table of steps.
    #[serde(default)]
    pub board: bool,
    /// Mirror each child job (sub-agent) of a Jira job as a sub-task of its ticket.
    #[serde(default)]
    pub subtasks: bool,
    /// The sub-task issue type (default `Subtask`, Jira Cloud's).
    pub subtask_type: Option<String>,
    /// Jira webhooks (`POST /api/v1/webhooks/jira`): the signing secret's name in secrets.dir ...
    pub webhook_secret: Option<String>,
    /// ... or a file holding it.
    pub webhook_secret_file: Option<PathBuf>,
}

/// `slack`: a Slack app's slash commands.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlackSection {
    /// The app's signing secret: its name in secrets.dir ...
    pub signing_secret: Option<String>,
    /// ... or a file holding it.
    pub signing_secret_file: Option<PathBuf>,
    /// Slack user id → `{subject, role}`.
    #[serde(default)]
    pub users: std::collections::BTreeMap<String, SlackUserSection>,
    /// The role of a Slack user not listed: `none` (the default: refused) or a role.
    pub default_role: Option<String>,
    /// The environment variable holding the bot token (`xoxb-…`), for answering mentions ...
    pub bot_token_env: Option<String>,
    /// ... or a file holding it.
    pub bot_token_file: Option<PathBuf>,
    /// Slack's Web API base (default `https://slack.com/api`).
    pub api_url: Option<String>,
    /// How long a slash command may take before George acknowledges it and
    /// answers later through its `response_url` (default 2s; Slack waits 3s).
    pub ack_within: Option<HumanDuration>,
    /// Where a slash command's `response_url` may point (default `https://hooks.slack.com/`).
    pub response_urls: Option<String>,
}

/// A Slack user in George.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlackUserSection {
    /// Their subject in the audit log.
    pub subject: String,
    /// `viewer`, `operator` or `admin`.
    pub role: george_core::Role,
}

/// `github`: the GitHub Issues source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitHubSection {
    /// The API's base URL (default `https://api.github.com`).
    pub api_url: Option<String>,
    /// Where repositories are cloned from (default `https://github.com`).
    pub web_url: Option<String>,
    /// Repository owner.
    pub owner: Option<String>,
    /// Repository name.
    pub repo: Option<String>,
    /// The environment variable holding the token.
    pub token_env: Option<String>,
    /// A file holding the token.
    pub token_file: Option<PathBuf>,
    /// The token itself: only from `george orchestrate --github-token`, never from a file.
    #[serde(skip)]
    pub token: Option<String>,
    /// The label that marks an issue as work (default `george`).
    pub label: Option<String>,
    /// The template issues become.
    pub template: Option<String>,
    /// How often the repository is polled (default 60s).
    pub interval: Option<HumanDuration>,
    /// GitHub webhooks (`POST /api/v1/webhooks/github`): the signing secret's name in secrets.dir ...
    pub webhook_secret: Option<String>,
    /// ... or a file holding it.
    pub webhook_secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JiraCredentials {
    /// The secret's name in secrets.dir.
    pub secret_ref: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JiraStatuses {
    /// Claimed and worked on (default `In Progress`).
    pub in_progress: Option<String>,
    /// Blocked (default: none, the status stays).
    pub blocked: Option<String>,
    /// Completed (default `Done`).
    pub completed: Option<String>,
    /// Failed (default: none, the status stays).
    pub failed: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EngineSection {
    pub id: Option<String>,
    pub listen: Option<SocketAddr>,
    /// Where `/metrics` is also served, without a token (for Prometheus).
    pub metrics_listen: Option<SocketAddr>,
    /// OpenTelemetry traces of attempts (off unless an endpoint is set).
    pub tracing: Option<TracingSection>,
    pub advertise_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub reconcile_interval: Option<HumanDuration>,
    pub workers: Option<usize>,
    pub max_attempts: Option<u32>,
    pub retry_backoff: Option<HumanDuration>,
    pub max_retry_backoff: Option<HumanDuration>,
    pub termination_grace: Option<HumanDuration>,
    /// Agents running at once, in all (default 32).
    pub max_concurrent: Option<u32>,
    /// How often cron triggers are looked at (default 1s).
    pub trigger_tick: Option<HumanDuration>,
    /// Refusing low-priority work when the queue is deep.
    #[serde(default)]
    pub backpressure: BackpressureSection,
    /// Replicas on one PostgreSQL database: how the leader's lease is held.
    #[serde(default)]
    pub leader_election: LeaderElectionSection,
    /// How long finished jobs are kept.
    #[serde(default)]
    pub retention: RetentionSection,
}

/// `engine.leaderElection` (PostgreSQL store only).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LeaderElectionSection {
    /// How long a lease lasts without renewal (default 15s).
    pub lease_duration: Option<HumanDuration>,
    /// How long a leader keeps leading while renewals fail (default 10s).
    pub renew_deadline: Option<HumanDuration>,
    /// How often the leader renews and standbys try (default 2s).
    pub retry_period: Option<HumanDuration>,
    /// Where the lease lives: `postgres` (default; a row in the store) or
    /// `kubernetes` (a `coordination.k8s.io/v1` Lease).
    #[serde(default)]
    pub backend: LeaseBackend,
    /// The Kubernetes Lease (backend `kubernetes`).
    #[serde(default)]
    pub kubernetes: LeaseSection,
}

/// `engine.leaderElection.kubernetes`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LeaseSection {
    /// The Lease's name (default `george-engine`).
    pub name: Option<String>,
    /// Its namespace (default: the kubeconfig's or the pod's namespace).
    pub namespace: Option<String>,
    /// A kubeconfig file (default: `KUBECONFIG` or `~/.kube/config`, else the in-cluster service account).
    pub kubeconfig: Option<PathBuf>,
}

impl LeaderElectionSection {
    /// The timings, checked.
    pub fn timings(&self) -> anyhow::Result<george_leader::Timings> {
        let d = george_leader::Timings::default();
        let t = george_leader::Timings {
            lease: self.lease_duration.map(|x| x.get()).unwrap_or(d.lease),
            renew_deadline: self.renew_deadline.map(|x| x.get()).unwrap_or(d.renew_deadline),
            retry: self.retry_period.map(|x| x.get()).unwrap_or(d.retry),
        };
        t.check()?;
        Ok(t)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetentionSection {
    /// How long a finished job keeps its record, logs, outputs and events
    /// (default 14d; a TaskTemplate's `retention` overrides it).
    pub finished: Option<HumanDuration>,
    /// How often finished jobs past it are deleted (default 10m).
    pub interval: Option<HumanDuration>,
    /// Jobs deleted per store transaction (default 500).
    pub batch: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackpressureSection {
    /// Queued jobs at which refusing starts (default 1000).
    pub threshold: Option<usize>,
    /// Priority classes refused (default P3 and BACKGROUND).
    pub refuse: Option<Vec<george_core::Priority>>,
    /// What `Retry-After` says (default 30s).
    pub retry_after: Option<HumanDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiSection {
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenEntry {
    /// The subject the audit log names.
    pub name: String,
    /// `viewer`, `operator` or `admin` (the default, for compatibility).
    #[serde(default)]
    pub role: Option<george_core::Role>,
    /// The token itself (prefer `tokenFile` or `tokenEnv`).
    pub token: Option<String>,
    /// A file holding the token.
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    pub token_env: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourcesSection {
    pub folder: Option<FolderSection>,
    pub git: Option<GitSection>,
    pub work_file: Option<WorkFileSection>,
    /// A directory of work files, one item each (recac's `file-dir` poller).
    pub work_dir: Option<WorkFileSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FolderSection {
    pub path: PathBuf,
    pub interval: Option<HumanDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GitSection {
    pub url: String,
    pub branch: Option<String>,
    pub path: Option<String>,
    pub interval: Option<HumanDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkFileSection {
    pub path: PathBuf,
    pub template: String,
    pub interval: Option<HumanDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendSection {
    #[serde(rename = "type", default)]
    pub backend_type: BackendType,
    #[serde(default)]
    pub process: ProcessSection,
    /// The Docker runtime.
    #[serde(default)]
    pub docker: DockerSection,
    /// The Kubernetes runtime.
    #[serde(default)]
    pub kubernetes: KubernetesSection,
}

impl BackendSection {
    /// The agents' image (`--image`, `GEORGE_AGENT_IMAGE`), for both container runtimes.
    pub fn set_image(&mut self, image: String) {
        self.kubernetes.image = Some(image.clone());
        self.docker.image = Some(image);
    }

    /// The image pull policy (`--image-pull-policy`), for both container runtimes.
    pub fn set_pull_policy(&mut self, policy: String) {
        self.kubernetes.image_pull_policy = Some(policy.clone());
        self.docker.pull_policy = Some(policy);
    }
}

/// `containerBackend.kubernetes`: agents as Kubernetes Jobs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesSection {
    /// Namespace of the agent Jobs (default: the kubeconfig's or the pod's namespace).
    pub namespace: Option<String>,
    /// A kubeconfig file (default: `KUBECONFIG` or `~/.kube/config`, else the in-cluster service account).
    pub kubeconfig: Option<PathBuf>,
    /// Image for AgentSpecs that name none.
    pub image: Option<String>,
    /// `Always`, `IfNotPresent` (default) or `Never`.
    pub image_pull_policy: Option<String>,
    /// Service account of agent pods (default: the namespace's default).
    pub service_account: Option<String>,
    /// How long the cluster keeps a finished Job (default 1h).
    pub ttl_after_finished: Option<HumanDuration>,
    /// Distinguishes George installations sharing a namespace: label `george.io/instance`
    /// and the prefix of Job names (default `george`).
    pub instance: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DockerSection {
    /// `host` (default) or a Docker network name.
    pub network: Option<String>,
    /// Image for AgentSpecs that name none.
    pub image: Option<String>,
    /// `Always`, `IfNotPresent` (default) or `Never`.
    pub pull_policy: Option<String>,
    /// Keep containers of finished attempts for debugging (removed by hand).
    pub keep_containers: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LlmSection {
    /// Provider and model for agents whose spec names none.
    #[serde(default)]
    pub default: LlmDefault,
    /// The providers.
    #[serde(default)]
    pub providers: Vec<ProviderSection>,
    /// Organisation budgets.
    #[serde(default)]
    pub budgets: BudgetsSection,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LlmDefault {
    pub provider: Option<String>,
    pub model: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProviderSection {
    /// Name agents' specs refer to.
    pub name: String,
    /// Wire format: `openai` (OpenAI, OpenRouter, vLLM, Ollama, ...) or `anthropic`.
    pub api: george_governor::ProviderApi,
    /// Base URL, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The key: from an environment variable of the engine...
    pub api_key_env: Option<String>,
    /// ... or a file ...
    pub api_key_file: Option<PathBuf>,
    /// ... or a secret in secrets.dir. None: no key (local servers).
    pub api_key_secret: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BudgetsSection {
    /// Tokens per month for the whole organisation.
    pub org_monthly: Option<u64>,
    /// Tokens per day for the whole organisation.
    pub org_daily: Option<u64>,
    /// Output tokens per call when nothing stricter applies (default 4096).
    pub default_cap: Option<u64>,
    /// Slack-compatible incoming-webhook URLs that receive budget alerts.
    #[serde(default)]
    pub notify: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhooksSection {
    /// The name of the signing key in the secrets directory.
    pub secret: Option<String>,
    /// Or a file holding the signing key.
    pub secret_file: Option<PathBuf>,
    /// How long delivery ids are remembered, so a replay creates nothing
    /// (default 7d).
    pub remember_deliveries: Option<george_core::duration::HumanDuration>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretsSection {
    /// A directory with one file per secret (`<name>`), or a folder per
    /// secret with one file per key (`<name>/<key>`).
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProcessSection {
    pub keep_workdirs: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentsSection {
    #[serde(default)]
    pub default_resources: ResourcesSection,
    pub health_check: Option<HealthCheck>,
    /// How long an agent keeps working and retrying its reports while the
    /// engine cannot be reached, before it stops (default 15m).
    pub engine_patience: Option<george_core::duration::HumanDuration>,
    /// The process runtime's sandbox.
    #[serde(default)]
    pub sandbox: SandboxSection,
    /// Warm pools, engine-wide (each AgentSpec sizes its own with `spec.pool`).
    #[serde(default)]
    pub pool: PoolSection,
}

/// `agents.pool`: caps on every warm pool together.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PoolSection {
    /// Warm agents in all pools together, at most (default 64; 0 turns pools off).
    pub max_warm: Option<u32>,
    /// Warm agents started per second, at most (default 100).
    pub refill_per_second: Option<u32>,
    /// Warm agents started at once, at most (default 4).
    pub refill_parallelism: Option<usize>,
}

/// `agents.sandbox`: on by default; `enabled: false` turns it off (warned
/// about in the log and in `george status`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SandboxSection {
    pub enabled: Option<bool>,
    /// First uid of the per-attempt users (engine running as root).
    pub uid_base: Option<u32>,
    /// How many per-attempt uids there are.
    pub uid_count: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourcesSection {
    pub memory: Option<Memory>,
    pub cpu: Option<Cpu>,
}

/// `engine.tracing`: where attempt traces are exported (OTLP over HTTP, protobuf).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TracingSection {
    /// The collector's OTLP/HTTP base URL (traces go to `<url>/v1/traces`),
    /// like `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// The full URL of traces, like `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (wins over `otlpEndpoint`).
    pub otlp_traces_endpoint: Option<String>,
    /// The `service.name` of the spans (default `george`).
    pub service_name: Option<String>,
}

impl TracingSection {
    /// Where spans are posted, if anywhere.
    pub fn traces_url(&self) -> Option<String> {
        let full = self.otlp_traces_endpoint.as_deref().map(str::trim).filter(|u| !u.is_empty());
        let base = self.otlp_endpoint.as_deref().map(str::trim).filter(|u| !u.is_empty());
        full.map(str::to_string).or_else(|| base.map(|b| format!("{}/v1/traces", b.trim_end_matches('/'))))
    }
}

impl Config {
    /// Reads a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        george_core::yaml::from_yaml(&text).map_err(|e| {
            let at = match (e.line, e.column) {
                (Some(l), Some(c)) => format!(":{l}:{c}"),
                _ => String::new(),
            };
            anyhow::anyhow!("{}{at}: {}: {}", path.display(), e.field, e.message)
        })
    }

    /// Applies `GEORGE_*` environment variables (through `get`).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        fn parse<T: std::str::FromStr>(name: &str, v: &str, expected: &str) -> anyhow::Result<T> {
            v.trim().parse().map_err(|_| anyhow::anyhow!("environment variable {name}=`{v}`: expected {expected}"))
        }
        if let Some(v) = get("GEORGE_DATABASE_URL") {
            let tls = self.store.tls.clone();
            self.store =
                StoreSection { store_type: Some(StoreType::Postgres), url: Some(v), tls, ..Default::default() };
        }
        if let Some(v) = get("GEORGE_DATABASE_CA_FILE") {
            self.store.tls.ca_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("GEORGE_ENGINE_ID") {
            self.engine.id = Some(v);
        }
        if let Some(v) = get("GEORGE_LISTEN") {
            self.engine.listen = Some(parse("GEORGE_LISTEN", &v, "an address like 127.0.0.1:8080")?);
        }
        if let Some(v) = get("GEORGE_METRICS_LISTEN") {
            self.engine.metrics_listen = Some(parse("GEORGE_METRICS_LISTEN", &v, "an address like 127.0.0.1:9464")?);
        }
        // OpenTelemetry's own variables, as every SDK reads them.
        for (name, full) in [("OTEL_EXPORTER_OTLP_ENDPOINT", false), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", true)] {
            if let Some(v) = get(name).filter(|v| !v.trim().is_empty()) {
                if !v.trim().starts_with("http://") && !v.trim().starts_with("https://") {
                    anyhow::bail!("environment variable {name}=`{v}`: expected an http:// or https:// URL");
                }
                let t = self.engine.tracing.get_or_insert_with(Default::default);
                if full {
                    t.otlp_traces_endpoint = Some(v);
                } else {
                    t.otlp_endpoint = Some(v);
                }
            }
        }
        if let Some(v) = get("OTEL_SERVICE_NAME").filter(|v| !v.trim().is_empty()) {
            self.engine.tracing.get_or_insert_with(Default::default).service_name = Some(v);
        }
        if let Some(v) = get("GEORGE_ADVERTISE_URL") {
            self.engine.advertise_url = Some(v);
        }
        if let Some(v) = get("GEORGE_DATA_DIR") {
            self.engine.data_dir = Some(v.into());
        }
        if let Some(v) = get("GEORGE_RECONCILE_INTERVAL") {
            self.engine.reconcile_interval = Some(parse("GEORGE_RECONCILE_INTERVAL", &v, "a duration like 30s")?);
        }
        if let Some(v) = get("GEORGE_MAX_ATTEMPTS") {
            self.engine.max_attempts = Some(parse("GEORGE_MAX_ATTEMPTS", &v, "a whole number")?);
        }
        if let Some(v) = get("GEORGE_API_TOKENS") {
            self.api.tokens = parse_token_list(&v)?;
        }
        if let Some(v) = get("GEORGE_MANIFESTS") {
            let interval = self.sources.folder.take().and_then(|f| f.interval);
            self.sources.folder = Some(FolderSection { path: v.into(), interval });
        }
        if let Some(url) = get("GEORGE_GIT_URL") {
            let prev = self.sources.git.take();
            self.sources.git = Some(GitSection {
                url,
                branch: get("GEORGE_GIT_BRANCH").or(prev.as_ref().and_then(|g| g.branch.clone())),
                path: get("GEORGE_GIT_PATH").or(prev.as_ref().and_then(|g| g.path.clone())),
                interval: prev.and_then(|g| g.interval),
            });
        }
        if let Some(path) = get("GEORGE_WORK_FILE") {
            let template = get("GEORGE_WORK_FILE_TEMPLATE")
                .or(self.sources.work_file.as_ref().map(|w| w.template.clone()))
                .ok_or_else(|| anyhow::anyhow!("GEORGE_WORK_FILE is set but GEORGE_WORK_FILE_TEMPLATE is not: say which TaskTemplate each work item becomes"))?;
            let interval = self.sources.work_file.take().and_then(|w| w.interval);
            self.sources.work_file = Some(WorkFileSection { path: path.into(), template, interval });
        }
        if let Some(v) = get("GEORGE_CONTAINER_BACKEND") {
            self.container_backend.backend_type =
                v.trim().parse().map_err(|e| anyhow::anyhow!("environment variable GEORGE_CONTAINER_BACKEND: {e}"))?;
        }
        if let Some(v) = get("GEORGE_WEBHOOK_SECRET_FILE") {
            self.webhooks.secret_file = Some(v.into());
        }
        if let Some(v) = get("GEORGE_AGENT_PROVIDER") {
            self.llm.default.provider = Some(v);
        }
        if let Some(v) = get("GEORGE_AGENT_MODEL") {
            self.llm.default.model = Some(v);
        }
        for (var, set) in [
            ("GEORGE_JIRA_URL", (|j: &mut JiraSection, v| j.url = Some(v)) as fn(&mut JiraSection, String)),
            ("GEORGE_JIRA_PROJECT", |j, v| j.project = Some(v)),
            ("GEORGE_JIRA_EMAIL", |j, v| j.email = Some(v)),
            ("GEORGE_JIRA_LABEL", |j, v| j.label = Some(v)),
            ("GEORGE_JIRA_QUERY", |j, v| j.query = Some(v)),
            ("GEORGE_JIRA_TEMPLATE", |j, v| j.template = Some(v)),
        ] {
            if let Some(v) = get(var) {
                set(self.jira.get_or_insert_with(Default::default), v);
            }
        }
        if let Some(v) = get("GEORGE_JIRA_INTERVAL") {
            let every = parse("GEORGE_JIRA_INTERVAL", &v, "a duration like 30s")?;
            self.jira.get_or_insert_with(Default::default).interval = Some(every);
        }
        if get("GEORGE_JIRA_TOKEN").is_some() {
            // Seed 000: the token itself in the engine's environment.
            self.jira.get_or_insert_with(Default::default).token_env = Some("GEORGE_JIRA_TOKEN".into());
        }
        if let Some(v) = get("GEORGE_AGENT_IMAGE") {
            self.container_backend.set_image(v);
        }
        if let Some(v) = get("GEORGE_IMAGE_PULL_POLICY") {
            self.container_backend.set_pull_policy(v);
        }
        Ok(())
    }
}

/// `name:token,name2:role:token2` or bare tokens (named `operator`, `operator2`, ...);
/// the role (`viewer`, `operator`, `admin`) defaults to admin.
pub fn parse_token_list(v: &str) -> anyhow::Result<Vec<TokenEntry>> {
    let mut out = Vec::new();
    for (i, item) in v.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
        let (name, rest) = match item.split_once(':') {
            Some((n, t)) => (n.to_string(), t),
            None => (if i == 0 { "operator".to_string() } else { format!("operator{}", i + 1) }, item),
        };
        let (role, token) = match rest.split_once(':') {
            Some((r, t)) => {
                let role =
                    r.parse::<george_core::Role>().map_err(|e| anyhow::anyhow!("GEORGE_API_TOKENS: `{name}`: {e}"))?;
                (Some(role), t.to_string())
            }
            None => (None, rest.to_string()),
        };
        if token.len() < 16 {
            bail!("GEORGE_API_TOKENS: the token for `{name}` is {} characters; use at least 16", token.len());
        }
        out.push(TokenEntry { name, role, token: Some(token), token_file: None, token_env: None });
    }
    Ok(out)
}

impl TokenEntry {
    /// The token's value.
    pub fn resolve(&self) -> anyhow::Result<String> {
        let value = match (&self.token, &self.token_file, &self.token_env) {
            (Some(t), None, None) => t.clone(),
            (None, Some(f), None) => std::fs::read_to_string(f)
                .with_context(|| format!("api.tokens[{}].tokenFile: cannot read {}", self.name, f.display()))?
                .trim()
                .to_string(),
            (None, None, Some(var)) => std::env::var(var).with_context(|| {
                format!("api.tokens[{}].tokenEnv: environment variable {var} is not set", self.name)
            })?,
            _ => bail!("api.tokens[{}]: set exactly one of token, tokenFile, tokenEnv", self.name),
        };
        if value.len() < 16 {
            bail!("api.tokens[{}]: the token is {} characters; use at least 16", self.name, value.len());
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration reference's full `george-config.yaml` (docs/configuration.md) is a
    /// configuration George reads: every key it shows exists, with the type it shows.
    #[test]
    fn the_documented_configuration_file_parses() {
        let readme = include_str!("../../../docs/configuration.md");
        let section = readme.split("### `george-config.yaml`").nth(1).expect("the section");
        let yaml = section.split("```yaml\n").nth(1).and_then(|b| b.split("\n```").next()).expect("its yaml block");
        let cfg: Config = george_core::yaml::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.agents.pool.max_warm, Some(64));
        assert_eq!(cfg.agents.pool.refill_parallelism, Some(4));
    }

    #[test]
    fn seed_shaped_config_parses_and_errors_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("george-config.yaml");
        std::fs::write(
            &p,
            "engine:\n  reconcileInterval: 30s\ncontainerBackend:\n  type: process\n  docker:\n    network: george-network\nagents:\n  defaultResources:\n    memory: 512Mi\n    cpu: 500m\n  healthCheck:\n    interval: 10s\n    timeout: 5s\n    unhealthyThreshold: 3\n",
        )
        .unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.engine.reconcile_interval.unwrap().get().as_secs(), 30);
        assert_eq!(c.agents.default_resources.memory.unwrap().0, 512 << 20);

        std::fs::write(&p, "engine:\n  reconcileInterval: soon\n").unwrap();
        let err = Config::load(&p).unwrap_err().to_string();
        assert!(err.contains("george-config.yaml:2:") && err.contains("engine.reconcileInterval"), "{err}");
        std::fs::write(&p, "engine:\n  reconcile_interval: 3s\n").unwrap();
        let err = Config::load(&p).unwrap_err().to_string();
        assert!(err.contains("unknown field `reconcile_interval`"), "{err}");
    }

    #[test]
    fn backends_are_typed_and_an_unknown_one_is_named_with_the_choices() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("george-config.yaml");
        let load = |text: &str| {
            std::fs::write(&p, text).unwrap();
            Config::load(&p)
        };
        let c = load("containerBackend: {type: local}\nstore: {type: postgresql, url: x}\nengine:\n  leaderElection: {backend: kubernetes}\n").unwrap();
        assert_eq!(c.container_backend.backend_type, BackendType::Docker, "recac's name for Docker");
        assert_eq!(c.store.store_type, Some(StoreType::Postgres));
        assert_eq!(c.engine.leader_election.backend, LeaseBackend::Kubernetes);
        assert_eq!(Config::default().container_backend.backend_type, BackendType::Process);
        for (text, field) in [
            ("containerBackend: {type: vm}\n", "containerBackend.type"),
            ("store: {type: mysql}\n", "store.type"),
            ("engine:\n  leaderElection: {backend: etcd}\n", "engine.leaderElection.backend"),
        ] {
            let err = load(text).unwrap_err().to_string();
            assert!(err.contains(field) && err.contains("unknown variant") && err.contains("expected"), "{err}");
        }
        let err = Config::default().apply_env(|k| (k == "GEORGE_CONTAINER_BACKEND").then(|| "vm".into())).unwrap_err();
        assert!(err.to_string().contains("GEORGE_CONTAINER_BACKEND: unknown backend `vm`; expected"), "{err}");
    }

    #[test]
    fn env_overrides_and_bad_env_is_named() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "GEORGE_LISTEN" => Some("0.0.0.0:9000".into()),
            "GEORGE_API_TOKENS" => Some("ops:0123456789abcdef0123".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.engine.listen.unwrap().port(), 9000);
        assert_eq!(c.api.tokens[0].name, "ops");
        let err = Config::default().apply_env(|k| (k == "GEORGE_RECONCILE_INTERVAL").then(|| "x".into())).unwrap_err();
        assert!(err.to_string().contains("GEORGE_RECONCILE_INTERVAL=`x`"), "{err}");
        let err = parse_token_list("short").unwrap_err();
        assert!(err.to_string().contains("at least 16"), "{err}");
    }

    #[test]
    fn traces_go_where_opentelemetrys_variables_say() {
        let traces = |vars: &[(&str, &str)]| {
            let mut c = Config::default();
            c.apply_env(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).map(|()| c)
        };
        assert!(traces(&[]).unwrap().engine.tracing.is_none(), "off by default");
        let c = traces(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).unwrap();
        assert_eq!(c.engine.tracing.unwrap().traces_url().as_deref(), Some("http://collector:4318/v1/traces"));
        let c = traces(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example/in"),
        ])
        .unwrap();
        assert_eq!(c.engine.tracing.unwrap().traces_url().as_deref(), Some("https://traces.example/in"));
        let err = traces(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]).unwrap_err().to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_ENDPOINT=`collector:4317`: expected an http"), "{err}");
    }

    #[test]
    fn the_store_section_resolves_tls_and_names_bad_fields() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "GEORGE_DATABASE_URL" => Some("postgres://db/george".into()),
            "GEORGE_DATABASE_CA_FILE" => Some(ca.display().to_string()),
            _ => None,
        })
        .unwrap();
        let tls = george_store::PostgresTls { ca_file: Some(ca.clone()) };
        assert_eq!(c.store.resolve().unwrap(), StoreChoice::Postgres("postgres://db/george".into(), tls));
        c.store.tls.ca_file = Some(dir.path().join("missing.crt"));
        let err = c.store.resolve().unwrap_err().to_string();
        assert!(err.contains("store.tls.caFile") && err.contains("missing.crt"), "{err}");
        let sqlite = StoreSection { tls: StoreTlsSection { ca_file: Some(ca) }, ..Default::default() };
        assert!(sqlite.resolve().unwrap_err().to_string().contains("store.tls"));
    }
}
