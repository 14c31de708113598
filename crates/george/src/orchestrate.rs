//! `george orchestrate`: the recac orchestrator's command line (seed 004),
//! flags and `RECAC_*` variables included, mapped onto George's
//! configuration, so a recac setup runs unchanged:
//!
//! Every flag, its variable and what it sets in George is listed once, in
//! [`crate::recac_flags`] (the source of the docs' table).
//!
//! Jira's site and account come from `JIRA_URL`, `JIRA_USERNAME` (or
//! `JIRA_EMAIL`; recac reads the username first), `JIRA_API_TOKEN` (or `JIRA_TOKEN`) and optionally
//! `JIRA_PROJECT`. Without `--manifests`, George brings the manifests a recac
//! setup implies: an AgentSpec `recac-agent` and a TaskTemplate `recac-task`
//! (one LLM step on the ticket, in its repository when it names one).

use crate::config::{BackendType, Config, FolderSection, JiraSection, ProviderSection, WorkFileSection};
use anyhow::{bail, Context as _};
use clap::Args;
use george_core::duration::HumanDuration;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The built-in manifests.
pub const RECAC_MANIFESTS: &str = "apiVersion: george/v1
kind: AgentSpec
metadata: {name: recac-agent}
spec:
  capabilities: [shell, files, git]
---
apiVersion: george/v1
kind: TaskTemplate
metadata: {name: recac-task}
spec:
  variables:
    - {name: ticket, type: string, required: false}
    - {name: id, type: string, required: false}
    - {name: summary, type: string, default: \"\"}
    - {name: description, type: string, default: \"\"}
    - {name: repo_url, type: string, required: false}
  steps:
    - id: work
      description: \"Do what this ticket asks: {{summary}}. Its description follows.\\n{{description}}\"
";

/// `george orchestrate` (recac's flags and variables).
#[derive(Debug, Args)]
pub struct OrchestrateArgs {
    /// `local` (Docker, the default), `k8s` (Kubernetes) or `process` (local processes).
    #[arg(long, env = "RECAC_ORCHESTRATOR_MODE")]
    pub mode: Option<String>,
    /// `jira` (the default), `file` (or `filesystem`), `file-dir` or `github`.
    #[arg(long, env = "RECAC_POLLER")]
    pub poller: Option<String>,
    /// Polling interval (default 1m).
    #[arg(long, env = "RECAC_ORCHESTRATOR_INTERVAL")]
    pub interval: Option<humantime::Duration>,
    /// LLM provider for agents.
    #[arg(long, env = "RECAC_AGENT_PROVIDER")]
    pub agent_provider: Option<String>,
    /// LLM model for agents.
    #[arg(long, env = "RECAC_AGENT_MODEL")]
    pub agent_model: Option<String>,
    /// The agents' image (Docker, Kubernetes).
    #[arg(long, env = "RECAC_ORCHESTRATOR_IMAGE")]
    pub image: Option<String>,
    /// Kubernetes namespace for agent Jobs (default `default`).
    #[arg(long, env = "RECAC_ORCHESTRATOR_NAMESPACE")]
    pub namespace: Option<String>,
    /// `Always`, `IfNotPresent` or `Never`.
    #[arg(long, env = "RECAC_IMAGE_PULL_POLICY")]
    pub image_pull_policy: Option<String>,
    /// Poll Jira for issues with this label (default `recac-agent`).
    #[arg(long, env = "RECAC_ORCHESTRATOR_JIRA_LABEL")]
    pub jira_label: Option<String>,
    /// A JQL query (overrides the label).
    #[arg(long, env = "RECAC_ORCHESTRATOR_JIRA_QUERY")]
    pub jira_query: Option<String>,
    /// The JSON work items file (`--poller file`; default `work_items.json`).
    #[arg(long, env = "RECAC_WORK_FILE")]
    pub work_file: Option<PathBuf>,
    /// The directory of work files, one item each (`--poller file-dir`); dispatched files move to `processed/`.
    #[arg(long, env = "RECAC_WATCH_DIR")]
    pub watch_dir: Option<PathBuf>,
    /// recac: debug logging (George: the same as `GEORGE_LOG=debug`).
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// recac: turns an agent's LLM loop may take (recac's `RECAC_MAX_ITERATIONS`):
    /// the built-in `recac-agent` gets it as `GEORGE_LLM_MAX_TURNS`.
    #[arg(long, env = "RECAC_MAX_ITERATIONS")]
    pub max_iterations: Option<u32>,
    /// recac: how often its manager agent reviews (`RECAC_MANAGER_FREQUENCY`);
    /// George has no manager agent, so it is accepted and not used.
    #[arg(long, env = "RECAC_MANAGER_FREQUENCY")]
    pub manager_frequency: Option<String>,
    /// recac: iterations per task (`RECAC_TASK_MAX_ITERATIONS`); George's
    /// steps are bounded by `GEORGE_LLM_MAX_TURNS` each, so it is accepted and not used.
    #[arg(long, env = "RECAC_TASK_MAX_ITERATIONS")]
    pub task_max_iterations: Option<String>,
    /// GitHub token (`--poller github`; also GITHUB_TOKEN).
    #[arg(long, env = "RECAC_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
    /// GitHub repository owner (`--poller github`).
    #[arg(long, env = "RECAC_GITHUB_OWNER")]
    pub github_owner: Option<String>,
    /// GitHub repository (`--poller github`).
    #[arg(long, env = "RECAC_GITHUB_REPO")]
    pub github_repo: Option<String>,
    /// GitHub label to poll for (`--poller github`; default: the Jira label).
    #[arg(long, env = "RECAC_GITHUB_LABEL")]
    pub github_label: Option<String>,
    /// A configuration file to start from: George's, or recac's (its
    /// `orchestrator.*` and `jira.*` keys, below the flags and variables).
    #[arg(long, short = 'c', env = "GEORGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// George: manifests to use instead of the built-in recac-agent and recac-task.
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// George: the TaskTemplate tickets and work items become.
    #[arg(long, default_value = "recac-task")]
    pub template: String,
    /// George: API address.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// George: data directory.
    #[arg(long, env = "GEORGE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Well-known providers, for `--agent-provider` without configuration.
fn preset(name: &str) -> Option<ProviderSection> {
    let (api, base, env) = match name {
        "openai" => (george_governor::ProviderApi::OpenAi, "https://api.openai.com/v1", "OPENAI_API_KEY"),
        "openrouter" => (george_governor::ProviderApi::OpenAi, "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
        "anthropic" => (george_governor::ProviderApi::Anthropic, "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),
        _ => return None,
    };
    Some(ProviderSection {
        name: name.into(),
        api,
        base_url: base.into(),
        api_key_env: Some(env.into()),
        api_key_file: None,
        api_key_secret: None,
    })
}

/// recac's own configuration file (viper: `--config`, keys `orchestrator.*`
/// and `jira.*`; recac's other keys are its agent's and are not read here).
#[derive(Debug, Default, serde::Deserialize)]
struct RecacFile {
    #[serde(default)]
    orchestrator: RecacOrchestrator,
    #[serde(default)]
    jira: RecacJira,
}

#[derive(Debug, Default, serde::Deserialize)]
struct RecacOrchestrator {
    mode: Option<String>,
    poller: Option<String>,
    interval: Option<String>,
    jira_label: Option<String>,
    jira_query: Option<String>,
    image: Option<String>,
    namespace: Option<String>,
    agent_provider: Option<String>,
    agent_model: Option<String>,
    image_pull_policy: Option<String>,
    work_file: Option<PathBuf>,
    watch_dir: Option<PathBuf>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct RecacJira {
    url: Option<String>,
    username: Option<String>,
    api_token: Option<String>,
}

/// A configuration file: George's, or else recac's. The error names the
/// file and, when it is no recac file either, George's key that is wrong.
fn load_config(path: &std::path::Path) -> anyhow::Result<(Config, RecacFile)> {
    match Config::load(path) {
        Ok(c) => Ok((c, RecacFile::default())),
        Err(george) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let Ok(value) = george_core::yaml::from_yaml::<serde_json::Value>(&text) else { return Err(george) };
            let is_recac = value.get("orchestrator").is_some()
                || ["username", "api_token"].iter().any(|k| value.pointer(&format!("/jira/{k}")).is_some());
            if !is_recac {
                return Err(anyhow::anyhow!(
                    "{george:#} (and it is no recac config file: no `orchestrator` or `jira.username`)"
                ));
            }
            let recac: RecacFile = george_core::yaml::from_yaml(&text)
                .map_err(|e| anyhow::anyhow!("{} (a recac config file): {}: {}", path.display(), e.field, e.message))?;
            Ok((Config::default(), recac))
        }
    }
}

/// recac's defaults, where neither a flag, a variable nor a config file says.
const DEFAULT_PROVIDER: &str = "openrouter";
const DEFAULT_MODEL: &str = "mistralai/devstral-2512:free";

impl OrchestrateArgs {
    /// The configuration these flags (and `get` for the environment) describe.
    pub fn to_config(&self, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config> {
        let (mut cfg, recac) = match &self.config {
            Some(p) => load_config(p)?,
            None => (Config::default(), RecacFile::default()),
        };
        cfg.apply_env(&get)?;
        let file = recac.orchestrator;
        // Flags and variables, then recac's file, then recac's defaults.
        let mode = self.mode.clone().or(file.mode).unwrap_or_else(|| "local".into());
        let poller = self.poller.clone().or(file.poller).unwrap_or_else(|| "jira".into());
        let every = match (&self.interval, &file.interval) {
            (Some(d), _) => (*d).into(),
            (None, Some(text)) => humantime::parse_duration(text)
                .map_err(|e| anyhow::anyhow!("orchestrator.interval: `{text}`: {e} (a duration like 30s or 1m)"))?,
            (None, None) => std::time::Duration::from_secs(60),
        };
        let namespace = self.namespace.clone().or(file.namespace).unwrap_or_else(|| "default".into());
        let jira_label = self.jira_label.clone().or(file.jira_label).unwrap_or_else(|| "recac-agent".into());
        let jira_query = self.jira_query.clone().or(file.jira_query);
        let work_file = self.work_file.clone().or(file.work_file).unwrap_or_else(|| "work_items.json".into());
        let watch_dir = self.watch_dir.clone().or(file.watch_dir);
        let image = self.image.clone().or(file.image);
        let pull_policy = self.image_pull_policy.clone().or(file.image_pull_policy);
        // recac's provider and model, unless George's own configuration names
        // them — and only with its key: without one no agent could call it.
        let recac_default = cfg.llm.default.provider.is_none() && get("OPENROUTER_API_KEY").is_some();
        let provider = self
            .agent_provider
            .clone()
            .or(file.agent_provider)
            .or_else(|| recac_default.then(|| DEFAULT_PROVIDER.to_string()));
        let model = self
            .agent_model
            .clone()
            .or(file.agent_model)
            .or_else(|| (recac_default && cfg.llm.default.model.is_none()).then(|| DEFAULT_MODEL.to_string()));
        if let Some(l) = self.listen {
            cfg.engine.listen = Some(l);
        }
        if let Some(d) = &self.data_dir {
            cfg.engine.data_dir = Some(d.clone());
        }
        match mode.as_str() {
            "local" | "docker" => cfg.container_backend.backend_type = BackendType::Docker,
            "process" => cfg.container_backend.backend_type = BackendType::Process,
            "k8s" | "kubernetes" => {
                cfg.container_backend.backend_type = BackendType::Kubernetes;
                let k = &mut cfg.container_backend.kubernetes;
                // recac's default namespace does not override one the config file names.
                if k.namespace.is_none() || namespace != "default" {
                    k.namespace = Some(namespace.clone());
                }
                // recac pulls its agents' image Always unless told otherwise.
                if pull_policy.is_none() && k.image_pull_policy.is_none() {
                    k.image_pull_policy = Some("Always".into());
                }
            }
            other => bail!("--mode: expected local, k8s or process, got `{other}`"),
        }
        if let Some(i) = image {
            cfg.container_backend.set_image(i);
        }
        if let Some(p) = pull_policy {
            cfg.container_backend.set_pull_policy(p);
        }
        if let Some(p) = &provider {
            if !cfg.llm.providers.iter().any(|x| &x.name == p) {
                let preset = preset(p).with_context(|| {
                    format!("--agent-provider `{p}`: not configured under llm.providers, and not openai, anthropic or openrouter")
                })?;
                cfg.llm.providers.push(preset);
            }
            cfg.llm.default.provider = Some(p.clone());
        }
        if let Some(m) = model {
            cfg.llm.default.model = Some(m);
        }
        let interval = Some(HumanDuration(every));
        match poller.as_str() {
            "jira" => {
                let j = cfg.jira.get_or_insert_with(JiraSection::default);
                // As recac's factory reads them: its config (or RECAC_JIRA_*), then JIRA_*.
                let rj = recac.jira;
                if let Some(u) = get("RECAC_JIRA_URL").or(rj.url).or_else(|| get("JIRA_URL")) {
                    j.url = Some(u);
                }
                // recac reads JIRA_USERNAME first.
                let user = get("RECAC_JIRA_USERNAME").or(rj.username);
                if let Some(e) = user.or_else(|| get("JIRA_USERNAME")).or_else(|| get("JIRA_EMAIL")) {
                    j.email = Some(e);
                }
                let no_source = j.token_env.is_none()
                    && j.token_file.is_none()
                    && j.token_secret.is_none()
                    && j.credentials.is_none();
                if no_source {
                    j.token_env = ["RECAC_JIRA_API_TOKEN", "JIRA_API_TOKEN", "JIRA_TOKEN", "GEORGE_JIRA_TOKEN"]
                        .iter()
                        .find(|v| get(v).is_some())
                        .map(|v| v.to_string());
                    if j.token_env.is_none() || get("RECAC_JIRA_API_TOKEN").is_none() {
                        // A token in recac's config file comes before JIRA_API_TOKEN, as in recac.
                        if let Some(t) = rj.api_token {
                            j.token_env = None;
                            j.token = Some(t);
                        }
                    }
                }
                if let Some(p) = get("JIRA_PROJECT") {
                    j.project = Some(p);
                }
                j.label = Some(jira_label);
                if jira_query.is_some() {
                    j.query = jira_query;
                }
                j.interval = interval;
                j.template = Some(self.template.clone());
                if j.url.is_none() {
                    bail!("--poller jira needs the Jira site: set JIRA_URL (and JIRA_EMAIL, JIRA_API_TOKEN)");
                }
            }
            "file" | "filesystem" => {
                cfg.sources.work_file =
                    Some(WorkFileSection { path: work_file, template: self.template.clone(), interval });
            }
            "file-dir" => {
                let dir = watch_dir
                    .context("--poller file-dir needs the directory to watch: --watch-dir DIR (or RECAC_WATCH_DIR)")?;
                cfg.sources.work_dir = Some(WorkFileSection { path: dir, template: self.template.clone(), interval });
            }
            "github" => {
                // recac: the token from --github-token, RECAC_GITHUB_TOKEN or GITHUB_TOKEN; the label falls back to --jira-label.
                let g = cfg.github.get_or_insert_with(Default::default);
                let token = self.github_token.clone().or_else(|| get("GITHUB_TOKEN"));
                if let Some(t) = token {
                    g.token = Some(t);
                    g.token_env = None;
                    g.token_file = None;
                }
                g.owner = self.github_owner.clone().or(g.owner.take());
                g.repo = self.github_repo.clone().or(g.repo.take());
                g.label = Some(self.github_label.clone().unwrap_or(jira_label));
                g.template = Some(self.template.clone());
                g.interval = interval;
                let has_token = g.token.is_some() || g.token_env.is_some() || g.token_file.is_some();
                if !has_token || g.owner.is_none() || g.repo.is_none() {
                    bail!("--poller github needs --github-token (or RECAC_GITHUB_TOKEN, GITHUB_TOKEN), --github-owner and --github-repo");
                }
            }
            other => bail!("--poller: expected jira, file (or filesystem), file-dir or github, got `{other}`"),
        }
        if let Some(m) = &self.manifests {
            cfg.sources.folder = Some(FolderSection { path: m.clone(), interval: None });
        }
        Ok(cfg)
    }
}

/// Runs the orchestrator until SIGINT or SIGTERM.
pub async fn run(args: OrchestrateArgs) -> anyhow::Result<()> {
    let mut cfg = args.to_config(|k| std::env::var(k).ok())?;
    if cfg.sources.folder.is_none() {
        // The manifests a recac setup implies.
        let dir =
            cfg.engine.data_dir.clone().unwrap_or_else(|| crate::serve::DEFAULT_DATA_DIR.into()).join("orchestrate");
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut manifests = RECAC_MANIFESTS.to_string();
        if let Some(n) = args.max_iterations {
            manifests = manifests.replacen(
                "  capabilities: [shell, files, git]\n",
                &format!("  capabilities: [shell, files, git]\n  env: {{GEORGE_LLM_MAX_TURNS: \"{n}\"}}\n"),
                1,
            );
        }
        std::fs::write(dir.join("recac.yaml"), manifests)
            .with_context(|| format!("cannot write {}", dir.join("recac.yaml").display()))?;
        cfg.sources.folder = Some(FolderSection { path: dir, interval: None });
    }
    for (var, given) in
        [("RECAC_MANAGER_FREQUENCY", &args.manager_frequency), ("RECAC_TASK_MAX_ITERATIONS", &args.task_max_iterations)]
    {
        if given.is_some() {
            tracing::info!(variable = var, "recac's agent setting: George's agents do not use it");
        }
    }
    let server = crate::serve::Server::start(cfg).await?;
    server.run_until_signal().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: OrchestrateArgs,
    }

    fn parse(argv: &[&str]) -> OrchestrateArgs {
        let mut all = vec!["orchestrate"];
        all.extend(argv);
        Cli::try_parse_from(all).unwrap().args
    }

    /// recac's own config file (`--config ~/.recac.yaml`): read below the flags
    /// and variables, above recac's defaults; George's config files still load.
    #[test]
    fn a_recac_config_file_is_read_below_flags_and_variables() {
        let dir = tempfile::tempdir().unwrap();
        let recac = dir.path().join(".recac.yaml");
        std::fs::write(
            &recac,
            "provider: gemini\nmax_iterations: 20\norchestrator:\n  mode: k8s\n  interval: 45s\n  jira_label: from-file\n  namespace: agents\n  image: ghcr.io/acme/agent:1\njira:\n  url: https://file.atlassian.net\n  username: file-user\n  api_token: file-token\n",
        )
        .unwrap();
        let path = recac.to_str().unwrap();
        let key = |k: &str| (k == "OPENROUTER_API_KEY").then(|| "sk-or-test".to_string());
        let cfg = parse(&["--config", path, "--jira-label", "from-flag"]).to_config(key).unwrap();
        assert_eq!(cfg.container_backend.backend_type, BackendType::Kubernetes);
        let k = &cfg.container_backend.kubernetes;
        assert_eq!((k.namespace.as_deref(), k.image.as_deref()), (Some("agents"), Some("ghcr.io/acme/agent:1")));
        assert_eq!(k.image_pull_policy.as_deref(), Some("Always"), "recac's default pull policy");
        assert_eq!(
            (cfg.llm.default.provider.as_deref(), cfg.llm.default.model.as_deref()),
            (Some("openrouter"), Some("mistralai/devstral-2512:free")),
            "recac's defaults"
        );
        let keyless = parse(&["--config", path]).to_config(|_| None).unwrap();
        assert_eq!(keyless.llm.default.provider, None, "no default provider without its key");
        let j = cfg.jira.unwrap();
        assert_eq!(j.label.as_deref(), Some("from-flag"), "a flag wins over the file");
        assert_eq!(j.interval.unwrap().get().as_secs(), 45);
        assert_eq!((j.url.as_deref(), j.email.as_deref()), (Some("https://file.atlassian.net"), Some("file-user")));
        assert_eq!((j.token.as_deref(), j.token_env.as_deref()), (Some("file-token"), None));
        // recac's variables win over its file.
        let env = |k: &str| match k {
            "RECAC_JIRA_URL" => Some("https://env.atlassian.net".to_string()),
            "RECAC_JIRA_API_TOKEN" => Some("env-token".to_string()),
            "RECAC_ORCHESTRATOR_MODE" => Some("process".to_string()),
            _ => None,
        };
        let mut args = parse(&["--config", path]);
        args.mode = env("RECAC_ORCHESTRATOR_MODE"); // as clap reads it from the environment
        let cfg = args.to_config(env).unwrap();
        assert_eq!(cfg.container_backend.backend_type, BackendType::Process);
        let j = cfg.jira.unwrap();
        assert_eq!(j.url.as_deref(), Some("https://env.atlassian.net"));
        assert_eq!((j.token.as_deref(), j.token_env.as_deref()), (None, Some("RECAC_JIRA_API_TOKEN")));
        // George's own file is George's; a file that is neither is refused naming George's key.
        let george = dir.path().join("george.yaml");
        std::fs::write(&george, "engine:\n  workers: 2\njira:\n  url: https://g.atlassian.net\n").unwrap();
        let cfg = parse(&["--config", george.to_str().unwrap()]).to_config(|_| None).unwrap();
        assert_eq!(cfg.engine.workers, Some(2));
        let other = dir.path().join("other.yaml");
        std::fs::write(&other, "engine:\n  wrokers: 2\n").unwrap();
        let err = parse(&["--config", other.to_str().unwrap()]).to_config(|_| None).unwrap_err().to_string();
        assert!(err.contains("wrokers") && err.contains("no recac config file"), "{err}");
    }

    #[test]
    fn recac_flags_map_onto_george() {
        let env = |k: &str| match k {
            "JIRA_URL" => Some("https://acme.atlassian.net".to_string()),
            "JIRA_USERNAME" => Some("bot@acme.com".to_string()),
            "JIRA_API_TOKEN" => Some("t".to_string()),
            _ => None,
        };
        let cfg =
            parse(&["--mode", "process", "--interval", "30s", "--agent-provider", "openrouter", "--agent-model", "m"])
                .to_config(env)
                .unwrap();
        let j = cfg.jira.unwrap();
        assert_eq!(
            (j.label.as_deref(), j.email.as_deref(), j.token_env.as_deref()),
            (Some("recac-agent"), Some("bot@acme.com"), Some("JIRA_API_TOKEN"))
        );
        assert_eq!(j.interval.unwrap().get().as_secs(), 30);
        assert_eq!(j.template.as_deref(), Some("recac-task"));
        assert_eq!(cfg.container_backend.backend_type, BackendType::Process);
        assert_eq!(cfg.llm.providers[0].base_url, "https://openrouter.ai/api/v1");
        assert_eq!(cfg.llm.default.model.as_deref(), Some("m"));

        let cfg =
            parse(&["--poller", "file", "--work-file", "w.json", "--image", "img", "--image-pull-policy", "Never"])
                .to_config(|_| None)
                .unwrap();
        assert_eq!(cfg.sources.work_file.unwrap().path, PathBuf::from("w.json"));
        assert_eq!(cfg.container_backend.backend_type, BackendType::Docker, "recac's default mode is local Docker");
        assert_eq!(cfg.container_backend.docker.pull_policy.as_deref(), Some("Never"));

        let err = |argv: &[&str]| parse(argv).to_config(|_| None).unwrap_err().to_string();
        let k8s = parse(&["--poller", "file", "--mode", "k8s", "--namespace", "agents", "--image", "img"])
            .to_config(|_| None)
            .unwrap();
        assert_eq!(k8s.container_backend.backend_type, BackendType::Kubernetes);
        assert_eq!(k8s.container_backend.kubernetes.namespace.as_deref(), Some("agents"));
        assert_eq!(k8s.container_backend.kubernetes.image.as_deref(), Some("img"));
        assert!(err(&["--poller", "rss"]).contains("expected jira, file (or filesystem), file-dir or github"));
        let fs = parse(&["--poller", "filesystem", "--work-file", "w.json"]).to_config(|_| None).unwrap();
        assert_eq!(fs.sources.work_file.unwrap().path, PathBuf::from("w.json"), "recac's alias of file");
        let dir = parse(&["-v", "--poller", "file-dir", "--watch-dir", "inbox"]).to_config(|_| None).unwrap();
        assert_eq!(dir.sources.work_dir.unwrap().path, PathBuf::from("inbox"));
        assert!(err(&["--poller", "file-dir"]).contains("--watch-dir DIR (or RECAC_WATCH_DIR)"));
        let gh = ["--poller", "github", "--github-token", "t", "--github-owner", "o", "--github-repo", "r"];
        let g = parse(&gh).to_config(|_| None).unwrap().github.unwrap();
        assert_eq!((g.owner.as_deref(), g.repo.as_deref(), g.token.as_deref()), (Some("o"), Some("r"), Some("t")));
        assert_eq!(g.label.as_deref(), Some("recac-agent"), "recac: the Jira label when no GitHub label is given");
        assert!(err(&["--poller", "github", "--github-owner", "o"]).contains("--poller github needs --github-token"));
        assert!(err(&[]).contains("set JIRA_URL"));
        assert!(err(&["--poller", "file", "--agent-provider", "acme"]).contains("not configured under llm.providers"));

        // Both set: recac's choice, the username.
        let both = |k: &str| match k {
            "JIRA_EMAIL" => Some("someone@acme.com".to_string()),
            "JIRA_USERNAME" | "JIRA_URL" => env(k),
            _ => None,
        };
        let cfg = parse(&[]).to_config(both).unwrap();
        assert_eq!(cfg.jira.unwrap().email.as_deref(), Some("bot@acme.com"));
    }
}
