//! The Docker runtime: one container per attempt on a Docker Engine, through
//! its HTTP API on the unix socket (`DOCKER_HOST` honoured).
//!
//! - The container name is derived from the engine id, job and attempt, so a
//!   retried create finds the existing container instead of making a twin.
//! - Containers carry `george.io/{job,attempt,template,engine}` labels; a
//!   restarted engine lists its containers by the engine label and adopts
//!   or removes them.
//! - Secrets are files in a host directory bind-mounted read-only at
//!   `/run/george/secrets`; they are never in the container's environment or
//!   labels. The job's output directory is mounted at `/george/output`.
//! - Output is copied from the container's log stream into the attempt's log
//!   file (with Docker's timestamps, line by line, capped); re-attaching after
//!   an engine restart skips lines already written.
//! - The agent token is a file in a host directory mounted at
//!   `/run/george/agent` (the agent reads and removes it); it is never in
//!   the container's environment, so `docker inspect` does not show it.
//! - Hardening: containers run as an unprivileged user (`65534:65534` by
//!   default), with `no-new-privileges`, every capability dropped and a
//!   read-only root filesystem; `/work`, `/tmp` and the home directory are
//!   private tmpfs mounts.
//! - Terminate is `docker stop` with the grace period (SIGTERM, then SIGKILL).
//! - Ownership before action: `spawn` only creates the container (labelled,
//!   so a restarted engine finds it); `release` starts it, which the engine
//!   does only after recording the handle.

use crate::logs::TimestampedLog;
use crate::{
    write_secret_files, AgentLogs, AgentStatus, OwnedAgent, Runtime, RuntimeError, RuntimeEvent, SpawnRequest,
    WarmAgent, WarmSpec, AGENT_TOKEN_FILE, AGENT_TOKEN_FILE_ENV, CONTAINER_AGENT_DIR, CONTAINER_OUTPUT_DIR,
    CONTAINER_SECRETS_DIR,
};
use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use george_core::manifest::NetworkPolicy;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// When to pull the agent's image (recac's `--image-pull-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull before every start.
    Always,
    /// Pull only when the image is not present.
    #[default]
    IfNotPresent,
    /// Never pull; the image must be present.
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Always" => Ok(PullPolicy::Always),
            "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
            "Never" => Ok(PullPolicy::Never),
            _ => Err(format!("unknown image pull policy `{s}`; expected Always, IfNotPresent or Never")),
        }
    }
}

/// Settings of the Docker runtime.
#[derive(Debug, Clone)]
pub struct DockerRuntimeConfig {
    /// Labels every container with this engine id (and finds its own by it).
    pub engine_id: String,
    /// Where attempt logs are kept.
    pub logs: AgentLogs,
    /// Docker network mode for agents: `host` (default; the agent reaches
    /// the engine on 127.0.0.1) or a network name.
    pub network: String,
    /// Image for AgentSpecs that name none.
    pub default_image: Option<String>,
    /// Command for AgentSpecs that name none.
    pub default_command: Vec<String>,
    /// When to pull images.
    pub pull_policy: PullPolicy,
    /// Keep containers of finished attempts for debugging; they are left for
    /// `docker rm` (the engine never removes them, even after a restart).
    pub keep_containers: bool,
    /// Host directory where secret files are staged for mounting.
    pub staging_dir: PathBuf,
    /// Most bytes of output kept per attempt.
    pub max_log_bytes: u64,
    /// The user agents run as (`uid:gid`; `None`: the image's user).
    pub user: Option<String>,
    /// Run agents with a read-only root filesystem (and tmpfs `/work`, `/tmp`).
    pub read_only_root: bool,
    /// The engine's API (what agents are given as `GEORGE_API_URL`): the
    /// engine-only relay is opened with it for warm containers and for agents
    /// adopted after a restart.
    pub api_url: Option<String>,
}

impl DockerRuntimeConfig {
    /// Defaults under a data directory.
    pub fn under(data_dir: &std::path::Path, engine_id: &str) -> Self {
        Self {
            engine_id: engine_id.to_string(),
            logs: AgentLogs::new(data_dir.join("logs")),
            network: "host".into(),
            default_image: None,
            default_command: vec!["george".into(), "agent".into(), "run".into()],
            pull_policy: PullPolicy::IfNotPresent,
            keep_containers: false,
            staging_dir: data_dir.join("docker-secrets"),
            max_log_bytes: 16 << 20,
            user: Some("65534:65534".into()),
            read_only_root: true,
            api_url: None,
        }
    }
}

/// Runs agents as Docker containers.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    docker: Docker,
    cfg: DockerRuntimeConfig,
    events: broadcast::Sender<RuntimeEvent>,
    /// Containers whose logs and exit this engine process follows.
    watched: Mutex<HashSet<String>>,
    /// The internal network and relay of `network: engine-only` agents, once one ran.
    engine_only: tokio::sync::Mutex<Option<crate::engine_only::EngineOnlyNet>>,
    /// The tasks that copy containers' logs and wait for their exits.
    watchers: crate::watchers::Watchers,
    /// Warm containers started and not yet claimed, by name.
    warm: Mutex<HashMap<String, WarmContainer>>,
    /// Names the next warm container.
    warm_serial: std::sync::atomic::AtomicU64,
    /// Claimed warm containers and their bindings, delivered at release.
    bindings: Mutex<HashMap<(String, u32), Bound>>,
    /// Images found present recently (a warm start does not inspect them again).
    images_seen: Mutex<HashMap<String, std::time::Instant>>,
}

/// A claimed warm container and its binding (one line of JSON).
type Bound = (WarmContainer, Vec<u8>);

/// A warm container: the write end of its stdin (attached before it
/// started; when this engine process dies the connection closes, Docker
/// closes the container's stdin and the waiting launcher ends) and whether
/// it has exited.
struct WarmContainer {
    /// The container's id.
    id: String,
    input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    _output:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<bollard::container::LogOutput, DockerError>> + Send>>,
    exited: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for WarmContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmContainer").field("exited", &self.exited).finish_non_exhaustive()
    }
}

/// What a claimed warm container is (`<staging>/claims/<container>.json`):
/// how a restarted engine tells whose it is, and where the job's output
/// goes back when it ends.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ClaimRecord {
    job_id: String,
    attempt: u32,
    /// The warm name (its staging directory's).
    warm: String,
    /// The container's id.
    id: String,
}

fn status_code(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

impl DockerRuntime {
    /// The name of this engine's engine-only network.
    fn engine_only_network(&self) -> String {
        sanitize(&format!("george-{}-engine-only", self.inner.cfg.engine_id))
    }

    /// The internal network `network: engine-only` agents join, and the
    /// engine's API as they reach it (the relay on its gateway), opened at
    /// first use. `agent` names who asks (for errors); `api_url` is the
    /// engine's API as the request gives it, else as configured. The relay keeps its port across restarts of the engine (in
    /// `<staging>/<network>.relay`): agents adopted after one still reach it.
    async fn engine_only(&self, agent: &str, api_url: Option<&str>) -> Result<(String, String), RuntimeError> {
        let mut slot = self.inner.engine_only.lock().await;
        if let Some(net) = slot.as_ref() {
            return Ok((net.network.clone(), net.url.clone()));
        }
        let api_url = api_url.or(self.inner.cfg.api_url.as_deref());
        let (host, port) = api_url.and_then(crate::address_of).ok_or_else(|| RuntimeError::Unrunnable {
            agent: agent.to_string(),
            message: format!(
                "network: engine-only needs the engine's address; GEORGE_API_URL is `{}`",
                api_url.unwrap_or_default()
            ),
        })?;
        let name = self.engine_only_network();
        let remembered = self.inner.cfg.staging_dir.join(format!("{name}.relay"));
        let before = std::fs::read_to_string(&remembered).ok().and_then(|p| p.trim().parse().ok());
        let net = crate::engine_only::open(&self.inner.docker, &name, format!("{host}:{port}"), before)
            .await
            .map_err(|e| RuntimeError::Spawn { agent: agent.to_string(), message: e.to_string(), source: None })?;
        let kept = std::fs::create_dir_all(&self.inner.cfg.staging_dir)
            .and_then(|()| std::fs::write(&remembered, net.port.to_string()));
        if let Err(e) = kept {
            tracing::warn!(file = %remembered.display(), error = %e, "cannot remember the relay's port");
        }
        let out = (net.network.clone(), net.url.clone());
        *slot = Some(net);
        Ok(out)
    }

    /// Connects to the Docker Engine (`DOCKER_HOST` or the default socket)
    /// and checks that it answers.
    pub async fn connect(cfg: DockerRuntimeConfig) -> Result<Self, RuntimeError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            RuntimeError::Unavailable(format!(
                "cannot reach the Docker Engine at {}: {e}; is dockerd running, and may this user use its socket? (set DOCKER_HOST to point elsewhere)",
                docker_host()
            ))
        };
        let docker = Docker::connect_with_defaults().map_err(|e| unreachable(&e))?;
        tokio::time::timeout(Duration::from_secs(10), docker.ping())
            .await
            .map_err(|_| unreachable(&"no answer within 10s"))?
            .map_err(|e| unreachable(&e))?;
        let (events, _) = broadcast::channel(1024);
        let inner = Inner {
            docker,
            cfg,
            events,
            watched: Mutex::new(HashSet::new()),
            engine_only: tokio::sync::Mutex::new(None),
            watchers: Default::default(),
            warm: Mutex::new(HashMap::new()),
            warm_serial: Default::default(),
            bindings: Mutex::new(HashMap::new()),
            images_seen: Mutex::new(HashMap::new()),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The container name of an attempt: deterministic, so a retried create cannot make a twin.
    pub fn container_name(&self, job_id: &str, attempt: u32) -> String {
        sanitize(&format!("george-{}-{job_id}-{attempt}", self.inner.cfg.engine_id))
    }

    /// What every warm container's name starts with (until its claim renames it).
    fn pool_prefix(&self) -> String {
        sanitize(&format!("george-{}-pool-", self.inner.cfg.engine_id))
    }

    fn claim_record(&self, container: &str) -> PathBuf {
        self.inner.cfg.staging_dir.join("claims").join(format!("{container}.json"))
    }

    fn read_claim(&self, container: &str) -> Option<ClaimRecord> {
        serde_json::from_slice(&std::fs::read(self.claim_record(container)).ok()?).ok()
    }

    /// Every claim record, by container id.
    fn claims(&self) -> HashMap<String, ClaimRecord> {
        let dir = self.inner.cfg.staging_dir.join("claims");
        let Ok(entries) = std::fs::read_dir(dir) else { return HashMap::new() };
        entries
            .flatten()
            .filter_map(|e| serde_json::from_slice::<ClaimRecord>(&std::fs::read(e.path()).ok()?).ok())
            .map(|c| (c.id.clone(), c))
            .collect()
    }

    fn pool_staging(&self, warm: &str) -> PathBuf {
        self.inner.cfg.staging_dir.join("pool").join(warm)
    }

    /// Every agent container's hardening and limits: no new privileges, no
    /// capabilities, a read-only root with private tmpfs `/work` and `/tmp`
    /// (and `/run/george`, where a warm agent's binding puts its token and
    /// secrets).
    fn host_config(
        &self,
        resources: &crate::Resources,
        network_mode: String,
        binds: Vec<String>,
        warm: bool,
    ) -> HostConfig {
        let mut tmpfs = HashMap::new();
        if self.inner.cfg.read_only_root {
            tmpfs.insert("/work".to_string(), "rw,exec,mode=1777".to_string());
            tmpfs.insert("/tmp".to_string(), "rw,exec,mode=1777".to_string());
        }
        if warm {
            tmpfs.insert("/run/george".to_string(), "rw,noexec,nosuid,mode=1777".to_string());
        }
        let memory = resources.memory.map(|m| m.0 as i64);
        HostConfig {
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            cap_drop: Some(vec!["ALL".into()]),
            readonly_rootfs: Some(self.inner.cfg.read_only_root),
            tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
            memory,
            memory_swap: memory,
            nano_cpus: resources.cpu.map(|c| c.0 as i64 * 1_000_000),
            network_mode: Some(network_mode),
            binds: Some(binds),
            ..Default::default()
        }
    }

    fn agent_id(job_id: &str, attempt: u32) -> String {
        george_core::api::agent_id(job_id, attempt)
    }

    fn api_error(&self, job_id: &str, attempt: u32, what: &str, e: DockerError) -> RuntimeError {
        RuntimeError::Spawn { agent: Self::agent_id(job_id, attempt), message: format!("{what}: {e}"), source: None }
    }

    async fn ensure_image(&self, image: &str, job_id: &str, attempt: u32) -> Result<(), RuntimeError> {
        let d = &self.inner.docker;
        let present = match d.inspect_image(image).await {
            Ok(_) => true,
            Err(e) if status_code(&e) == Some(404) => false,
            Err(e) => return Err(self.api_error(job_id, attempt, &format!("inspect image {image}"), e)),
        };
        let policy = self.inner.cfg.pull_policy;
        let unrunnable = |message: String| RuntimeError::Unrunnable { agent: Self::agent_id(job_id, attempt), message };
        match (policy, present) {
            (PullPolicy::Never, false) => Err(unrunnable(format!("image {image} not found and pull policy Never"))),
            (PullPolicy::Never, true) | (PullPolicy::IfNotPresent, true) => Ok(()),
            (_, _) => {
                let opts = CreateImageOptionsBuilder::new().from_image(image).build();
                let mut pull = d.create_image(Some(opts), None, None);
                let mut failure = None;
                while let Some(step) = pull.next().await {
                    if let Err(e) = step {
                        failure = Some(e.to_string());
                        break;
                    }
                }
                match (failure, present) {
                    (None, _) => Ok(()),
                    (Some(e), true) => Err(self.api_error(job_id, attempt, &format!("pull {image} (pull policy Always)"), DockerError::DockerResponseServerError { status_code: 500, message: e })),
                    (Some(e), false) => Err(unrunnable(format!(
                        "image {image} not found locally and it could not be pulled ({e}); load it with `docker load`/`docker build`, or fix spec.image"
                    ))),
                }
            }
        }
    }

    /// [`Self::ensure_image`], skipped for an image found present in the
    /// last 30 s, unless every start must pull it (`Always`) and `even_always` is false.
    async fn ensure_image_seen(
        &self,
        image: &str,
        job_id: &str,
        attempt: u32,
        even_always: bool,
    ) -> Result<(), RuntimeError> {
        let may_skip = even_always || self.inner.cfg.pull_policy != PullPolicy::Always;
        let seen = self.inner.images_seen.lock().get(image).is_some_and(|t| t.elapsed() < Duration::from_secs(30));
        if may_skip && seen {
            return Ok(());
        }
        self.ensure_image(image, job_id, attempt).await?;
        self.inner.images_seen.lock().insert(image.to_string(), std::time::Instant::now());
        Ok(())
    }

    async fn handle_of(&self, name: &str) -> Result<Option<Value>, DockerError> {
        match self
            .inner
            .docker
            .inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
        {
            Ok(info) => Ok(Some(json!({"container": name, "id": info.id.unwrap_or_default()}))),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn inspect_status(&self, name: &str) -> Result<AgentStatus, DockerError> {
        match self
            .inner
            .docker
            .inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
        {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                if state.running.unwrap_or(false) {
                    Ok(AgentStatus::Running)
                } else {
                    let code = state.exit_code.map(|c| c as i32);
                    // 137 = 128 + SIGKILL: a `docker kill` or the OOM killer.
                    let signal = code.filter(|c| *c > 128).map(|c| c - 128);
                    Ok(AgentStatus::Exited { code, signal })
                }
            }
            Err(e) if status_code(&e) == Some(404) => Ok(AgentStatus::Exited { code: None, signal: None }),
            Err(e) => Err(e),
        }
    }

    /// The container a handle names: its id (stable when a claimed warm
    /// container is renamed), else its name.
    fn container_of(job_id: &str, attempt: u32, handle: &Value) -> Result<String, RuntimeError> {
        let id = handle.get("id").and_then(Value::as_str).filter(|id| !id.is_empty());
        let name = handle.get("container").and_then(Value::as_str);
        id.or(name).map(str::to_string).ok_or_else(|| RuntimeError::Handle {
            agent: Self::agent_id(job_id, attempt),
            message: "expected {container, id}".into(),
        })
    }

    /// Follows the container's output into the log file and reports its
    /// exit (`name`: its name or id, as the handle has it).
    fn watch(&self, name: &str, job_id: &str, attempt: u32) {
        if !self.inner.watched.lock().insert(name.to_string()) {
            return;
        }
        let inner = self.inner.clone();
        let name2 = name.to_string();
        let (name, job, path) = (name.to_string(), job_id.to_string(), self.inner.cfg.logs.path(job_id, attempt));
        self.inner.watchers.spawn(async move {
            if let Err(e) = copy_logs(&inner, &name, &path).await {
                tracing::warn!(container = %name, error = %e, "cannot copy container logs");
            }
        });
        let inner = self.inner.clone();
        self.inner.watchers.spawn(async move {
            let opts = WaitContainerOptionsBuilder::new().condition("not-running").build();
            let mut wait = inner.docker.wait_container(&name2, Some(opts));
            let code = match wait.next().await {
                Some(Ok(r)) => Some(r.status_code as i32),
                Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Some(code as i32),
                _ => None,
            };
            inner.watched.lock().remove(&name2);
            let signal = code.filter(|c| *c > 128).map(|c| c - 128);
            let status = AgentStatus::Exited { code, signal };
            tracing::debug!(container = %name2, status = %status.describe(), "agent container exited");
            let _ = inner.events.send(RuntimeEvent { job_id: job, attempt, status });
        });
    }
}

async fn copy_logs(inner: &Inner, name: &str, path: &std::path::Path) -> std::io::Result<()> {
    let mut log = TimestampedLog::open(path, inner.cfg.max_log_bytes)?;
    let mut opts = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).timestamps(true);
    if let Some(t) = log.last() {
        opts = opts.since(t.timestamp() as i32);
    }
    let mut stream = inner.docker.logs(name, Some(opts.build()));
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        log.push(&chunk.into_bytes())?;
    }
    log.finish()
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn spawn(&self, req: SpawnRequest) -> Result<Value, RuntimeError> {
        let (job, attempt) = (req.job_id.as_str(), req.attempt);
        let name = self.container_name(job, attempt);
        // Idempotent: the attempt's container may exist already (a retried
        // spawn); a running one is watched, a created one waits for release.
        if let Some(h) =
            self.handle_of(&name).await.map_err(|e| self.api_error(job, attempt, "inspect container", e))?
        {
            if matches!(self.inspect_status(&name).await, Ok(AgentStatus::Running)) {
                self.watch(&Self::container_of(job, attempt, &h)?, job, attempt);
            }
            return Ok(h);
        }
        let Some(image) = req.image.clone().or_else(|| self.inner.cfg.default_image.clone()) else {
            return Err(RuntimeError::Unrunnable {
                agent: Self::agent_id(job, attempt),
                message: format!(
                    "AgentSpec `{}` has no spec.image and no default agent image is configured (containerBackend.docker.image or --image)",
                    req.agent_spec
                ),
            });
        };
        self.ensure_image_seen(&image, job, attempt, false).await?;

        let (network_mode, api_url) = match req.network {
            NetworkPolicy::Full => (self.inner.cfg.network.clone(), None),
            NetworkPolicy::None => ("none".to_string(), None),
            NetworkPolicy::EngineOnly => {
                let api_url = req.env.get(crate::API_URL).map(String::as_str);
                let (net, url) = self.engine_only(&Self::agent_id(job, attempt), api_url).await?;
                (net, Some(url))
            }
        };
        let mut env: Vec<String> = req
            .env
            .iter()
            .map(|(k, v)| match (k.as_str(), &api_url) {
                ("GEORGE_API_URL", Some(url)) => format!("{k}={url}"),
                _ => format!("{k}={v}"),
            })
            .collect();
        env.push("GEORGE_WORK_DIR=/work".into());
        env.push("HOME=/tmp".into());
        let mut binds = Vec::new();
        let owner = self.inner.cfg.user.as_deref().and_then(numeric_uid);
        let give = |path: &std::path::Path| -> Result<(), RuntimeError> {
            match owner {
                Some(uid) => give_to(path, uid),
                None => Ok(()),
            }
        };
        if let Some(out) = &req.output_dir {
            std::fs::create_dir_all(out)
                .map_err(|source| RuntimeError::Io { what: format!("create {}", out.display()), source })?;
            give(out)?;
            binds.push(format!("{}:{CONTAINER_OUTPUT_DIR}", out.display()));
            env.push(format!("GEORGE_OUTPUT_DIR={CONTAINER_OUTPUT_DIR}"));
        }
        if !req.secrets.is_empty() {
            let dir = self.inner.cfg.staging_dir.join(&name);
            write_secret_files(&dir, &req.secrets)
                .map_err(|source| RuntimeError::Io { what: "stage the agent's secret files".into(), source })?;
            give(&dir)?;
            binds.push(format!("{}:{CONTAINER_SECRETS_DIR}:ro", dir.display()));
            env.push(format!("GEORGE_SECRETS_DIR={CONTAINER_SECRETS_DIR}"));
        }
        if let Some(token) = &req.agent_token {
            let dir = self.inner.cfg.staging_dir.join(format!("{name}.agent"));
            crate::write_token_file(&dir, token)
                .map_err(|source| RuntimeError::Io { what: "stage the agent's token file".into(), source })?;
            give(&dir)?;
            // Writable, so the agent can remove the file once it has read it.
            binds.push(format!("{}:{CONTAINER_AGENT_DIR}", dir.display()));
            env.push(format!("{AGENT_TOKEN_FILE_ENV}={CONTAINER_AGENT_DIR}/{AGENT_TOKEN_FILE}"));
        }
        let mut labels: HashMap<String, String> = req.labels.clone().into_iter().collect();
        labels.insert("app".into(), "george-agent".into());
        labels.insert("george.io/engine".into(), self.inner.cfg.engine_id.clone());
        let command = if req.command.is_empty() { self.inner.cfg.default_command.clone() } else { req.command.clone() };
        let (entrypoint, args) = command.split_first().map(|(e, a)| (vec![e.clone()], a.to_vec())).unwrap_or_default();
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            // The command replaces the image's entrypoint, whatever it is.
            entrypoint: Some(entrypoint),
            cmd: Some(args),
            env: Some(env),
            labels: Some(labels),
            tty: Some(false),
            open_stdin: Some(false),
            working_dir: Some("/work".into()),
            user: self.inner.cfg.user.clone(),
            host_config: Some(self.host_config(&req.resources, network_mode, binds, false)),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = match self.inner.docker.create_container(Some(opts), body).await {
            Ok(created) => Some(created.id),
            // Someone (a previous try) created it meanwhile: use that one, never a twin.
            Err(e) if status_code(&e) == Some(409) => None,
            Err(e) => {
                // The image may be gone since it was seen: the next try looks again.
                self.inner.images_seen.lock().remove(&image);
                return Err(self.api_error(job, attempt, &format!("create container {name} from {image}"), e));
            }
        };
        tracing::info!(job, attempt, container = %name, image = %image, "agent container created (held until released)");
        if let Some(id) = created {
            return Ok(json!({"container": name, "id": id}));
        }
        self.handle_of(&name).await.map_err(|e| self.api_error(job, attempt, "inspect container", e))?.ok_or_else(
            || RuntimeError::Spawn {
                agent: Self::agent_id(job, attempt),
                message: format!("container {name} vanished after create"),
                source: None,
            },
        )
    }

    async fn release(&self, job_id: &str, attempt: u32, handle: &Value) -> Result<(), RuntimeError> {
        let name = Self::container_of(job_id, attempt, handle)?;
        let bound = self.inner.bindings.lock().remove(&(job_id.to_string(), attempt));
        if let Some((mut warm, binding)) = bound {
            use tokio::io::AsyncWriteExt;
            // The binding, then end of input: the launcher reads one line.
            let deliver = async {
                warm.input.write_all(&binding).await?;
                warm.input.flush().await?;
                warm.input.shutdown().await
            };
            deliver.await.map_err(|source| RuntimeError::Io { what: format!("bind warm agent {name}"), source })?;
            self.watch(&name, job_id, attempt);
            tracing::info!(job = job_id, attempt, container = %name, "warm agent container bound");
            // For people and tools that read names: `george-<engine>-<job>-<attempt>`, as a new one is called.
            let (inner, attempt_name) = (self.inner.clone(), self.container_name(job_id, attempt));
            self.inner.watchers.spawn(async move {
                let opts = bollard::query_parameters::RenameContainerOptionsBuilder::new().name(&attempt_name).build();
                if let Err(e) = inner.docker.rename_container(&name, opts).await {
                    tracing::debug!(container = %name, error = %e, "claimed warm container not renamed");
                }
            });
            return Ok(());
        }
        match self.inner.docker.start_container(&name, None::<bollard::query_parameters::StartContainerOptions>).await {
            Ok(()) => {}
            Err(e) if status_code(&e) == Some(304) => {}
            Err(e) => return Err(self.api_error(job_id, attempt, &format!("start container {name}"), e)),
        }
        self.watch(&name, job_id, attempt);
        tracing::info!(job = job_id, attempt, container = %name, "agent container started");
        Ok(())
    }

    async fn status(&self, job_id: &str, attempt: u32, handle: &Value) -> Result<AgentStatus, RuntimeError> {
        let name = Self::container_of(job_id, attempt, handle)?;
        self.inspect_status(&name).await.map_err(|e| RuntimeError::Unavailable(format!("inspect {name}: {e}")))
    }

    async fn terminate(
        &self,
        job_id: &str,
        attempt: u32,
        handle: &Value,
        grace: Duration,
    ) -> Result<AgentStatus, RuntimeError> {
        let name = Self::container_of(job_id, attempt, handle)?;
        let t = grace.as_secs().max(1) as i32;
        match self.inner.docker.stop_container(&name, Some(StopContainerOptionsBuilder::new().t(t).build())).await {
            Ok(()) => {}
            Err(e) if matches!(status_code(&e), Some(304 | 404)) => {}
            Err(e) => return Err(RuntimeError::Unavailable(format!("stop {name}: {e}"))),
        }
        self.inspect_status(&name).await.map_err(|e| RuntimeError::Unavailable(format!("inspect {name}: {e}")))
    }

    async fn list_owned(&self) -> Result<Vec<OwnedAgent>, RuntimeError> {
        let list = self.containers_labelled(&[]).await?;
        let claims = self.claims();
        let mut out = Vec::new();
        for c in list {
            let labels = c.labels.unwrap_or_default();
            let name =
                c.names.and_then(|n| n.into_iter().next()).unwrap_or_default().trim_start_matches('/').to_string();
            let (job, attempt) = match (
                labels.get("george.io/job"),
                labels.get("george.io/attempt").and_then(|a| a.parse::<u32>().ok()),
            ) {
                (Some(job), Some(attempt)) => (job.clone(), attempt),
                // A claimed warm container: its claim record says whose it is.
                _ => {
                    match c.id.as_ref().and_then(|id| claims.get(id)).filter(|_| labels.contains_key("george.io/pool"))
                    {
                        Some(claim) => (claim.job_id.clone(), claim.attempt),
                        None => continue,
                    }
                }
            };
            let status = self
                .inspect_status(&name)
                .await
                .map_err(|e| RuntimeError::Unavailable(format!("inspect {name}: {e}")))?;
            out.push(OwnedAgent {
                job_id: job,
                attempt,
                handle: json!({"container": name, "id": c.id.unwrap_or_default()}),
                status,
            });
        }
        out.sort_by(|a, b| (&a.job_id, a.attempt).cmp(&(&b.job_id, b.attempt)));
        Ok(out)
    }

    async fn adopt(&self, agent: &OwnedAgent) -> Result<(), RuntimeError> {
        let name = Self::container_of(&agent.job_id, agent.attempt, &agent.handle)?;
        // An agent on the engine-only network reports through the relay: it
        // opens again (on its earlier port) before the agent misses it.
        let network = self.engine_only_network();
        let inspected = self
            .inner
            .docker
            .inspect_container(&name, None::<bollard::query_parameters::InspectContainerOptions>)
            .await;
        let mode = inspected.ok().and_then(|c| c.host_config).and_then(|h| h.network_mode);
        if mode.as_deref() == Some(network.as_str()) {
            self.engine_only(&Self::agent_id(&agent.job_id, agent.attempt), None).await?;
        }
        self.watch(&name, &agent.job_id, agent.attempt);
        tracing::info!(job = %agent.job_id, attempt = agent.attempt, container = %name, "adopted running agent container");
        Ok(())
    }

    async fn cleanup(&self, job_id: &str, attempt: u32) -> Result<(), RuntimeError> {
        let name = self.container_name(job_id, attempt);
        let _ = std::fs::remove_dir_all(self.inner.cfg.staging_dir.join(&name));
        let _ = std::fs::remove_dir_all(self.inner.cfg.staging_dir.join(format!("{name}.agent")));
        self.inner.bindings.lock().remove(&(job_id.to_string(), attempt));
        let claim = self.read_claim(&name);
        if let Some(claim) = &claim {
            // Its output directory is the job's now; what is left of its staging goes.
            let _ = std::fs::remove_dir_all(self.pool_staging(&claim.warm));
        }
        if self.inner.cfg.keep_containers {
            return Ok(());
        }
        // A claimed warm container by its id (renamed or not yet), else by the attempt's name.
        let target = claim.as_ref().map_or(name.clone(), |c| c.id.clone());
        let opts = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        let removed = self.inner.docker.remove_container(&target, Some(opts)).await;
        if claim.is_some() && removed.is_ok() {
            let _ = std::fs::remove_file(self.claim_record(&name));
        }
        match removed {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(RuntimeError::Unavailable(format!("remove {name}: {e}"))),
        }
    }

    fn logs(&self) -> &AgentLogs {
        &self.inner.cfg.logs
    }

    fn subscribe(&self) -> broadcast::Receiver<RuntimeEvent> {
        self.inner.events.subscribe()
    }

    async fn shutdown(&self) {
        self.inner.watchers.shutdown().await
    }

    fn pools(&self) -> bool {
        true
    }

    async fn warm(&self, spec: &WarmSpec) -> Result<WarmAgent, RuntimeError> {
        let serial = self.inner.warm_serial.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = sanitize(&format!("{}{}-{}-{serial}", self.pool_prefix(), spec.agent_spec, std::process::id()));
        let image = spec.image.clone().or_else(|| self.inner.cfg.default_image.clone()).ok_or_else(|| {
            RuntimeError::Unavailable(format!("AgentSpec `{}` has no image for a warm agent", spec.agent_spec))
        })?;
        self.ensure_image_seen(&image, &name, 0, true).await?;
        let network_mode = match spec.network {
            NetworkPolicy::Full => self.inner.cfg.network.clone(),
            NetworkPolicy::None => "none".to_string(),
            // On the internal network from the start; its binding points it at the relay.
            NetworkPolicy::EngineOnly => self.engine_only(&name, None).await?.0,
        };
        // Its own output directory, handed to the job it serves at the end.
        let output = self.pool_staging(&name).join("output");
        std::fs::create_dir_all(&output)
            .map_err(|source| RuntimeError::Io { what: format!("create {}", output.display()), source })?;
        if let Some(uid) = self.inner.cfg.user.as_deref().and_then(numeric_uid) {
            give_to(&output, uid)?;
        }
        let labels = HashMap::from([
            ("app".to_string(), "george-agent".to_string()),
            ("george.io/engine".to_string(), self.inner.cfg.engine_id.clone()),
            ("george.io/pool".to_string(), spec.agent_spec.clone()),
        ]);
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            entrypoint: Some(crate::launch::WarmLaunch::in_container().command()),
            cmd: Some(vec![]),
            labels: Some(labels),
            tty: Some(false),
            open_stdin: Some(true),
            stdin_once: Some(true),
            attach_stdin: Some(true),
            working_dir: Some("/work".into()),
            user: self.inner.cfg.user.clone(),
            host_config: Some(self.host_config(
                &spec.resources,
                network_mode,
                vec![format!("{}:{CONTAINER_OUTPUT_DIR}", output.display())],
                true,
            )),
            ..Default::default()
        };
        let d = &self.inner.docker;
        let fail = |what: &str, e: DockerError| RuntimeError::Unavailable(format!("{what} warm container {name}: {e}"));
        let created = d
            .create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body)
            .await
            .map_err(|e| fail("create", e))?;
        let opts = bollard::query_parameters::AttachContainerOptionsBuilder::new().stdin(true).stream(true).build();
        let attached = match d.attach_container(&name, Some(opts)).await {
            Ok(a) => a,
            Err(e) => {
                let _ = self.remove_warm(&name).await;
                return Err(fail("attach to", e));
            }
        };
        if let Err(e) = d.start_container(&name, None::<bollard::query_parameters::StartContainerOptions>).await {
            let _ = self.remove_warm(&name).await;
            return Err(fail("start", e));
        }
        let exited = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (inner, watched, flag) = (self.inner.clone(), name.clone(), exited.clone());
        self.inner.watchers.spawn(async move {
            let opts = WaitContainerOptionsBuilder::new().condition("not-running").build();
            let _ = inner.docker.wait_container(&watched, Some(opts)).next().await;
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let warm = WarmContainer { id: created.id, input: attached.input, _output: attached.output, exited };
        self.inner.warm.lock().insert(name.clone(), warm);
        tracing::debug!(agent_spec = %spec.agent_spec, container = %name, "warm agent container started");
        Ok(WarmAgent { id: name, spec: spec.clone() })
    }

    fn warm_handle(&self, warm: &WarmAgent) -> Option<Value> {
        let id = self.inner.warm.lock().get(&warm.id)?.id.clone();
        Some(json!({"container": warm.id, "id": id}))
    }

    fn warm_alive(&self, warm: &WarmAgent) -> bool {
        self.inner.warm.lock().get(&warm.id).is_some_and(|w| !w.exited.load(std::sync::atomic::Ordering::Relaxed))
    }

    async fn claim(&self, req: SpawnRequest, warm: WarmAgent) -> Result<Value, RuntimeError> {
        // (A claim retried for an attempt whose container exists fails at the
        // rename; the engine then spawns, which finds that container.)
        let (job, attempt) = (req.job_id.as_str(), req.attempt);
        let name = self.container_name(job, attempt);
        let gone = || RuntimeError::Spawn {
            agent: Self::agent_id(job, attempt),
            message: format!("warm agent {} is gone", warm.id),
            source: None,
        };
        // On the engine-only network, the engine is the relay on its gateway.
        let relay = match warm.spec.network {
            NetworkPolicy::EngineOnly => {
                let api_url = req.env.get(crate::API_URL).map(String::as_str);
                Some(self.engine_only(&Self::agent_id(job, attempt), api_url).await?.1)
            }
            _ => None,
        };
        let Some(w) = self.inner.warm.lock().remove(&warm.id) else { return Err(gone()) };
        if w.exited.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = self.remove_warm(&warm.id).await;
            return Err(gone());
        }
        // The warm container's output directory becomes the job's: the bind
        // mount follows the directory when it is renamed (what an earlier
        // attempt left moves into it first).
        if let Some(out) = &req.output_dir {
            let staged = self.pool_staging(&warm.id).join("output");
            adopt_output(&staged, out).map_err(|source| RuntimeError::Io {
                what: format!("make {} the output of {name}", staged.display()),
                source,
            })?;
        }
        // The claim record: from here the container is the attempt's agent to
        // a restarted engine (`list_owned`). It is renamed to the attempt's
        // name once bound, off the job's path.
        let record = ClaimRecord { job_id: job.to_string(), attempt, warm: warm.id.clone(), id: w.id.clone() };
        let path = self.claim_record(&name);
        let write = std::fs::create_dir_all(path.parent().unwrap_or(&path))
            .and_then(|_| std::fs::write(&path, serde_json::to_vec(&record).unwrap_or_default()));
        write.map_err(|source| RuntimeError::Io { what: format!("write {}", path.display()), source })?;
        let mut env: Vec<(String, String)> = req
            .env
            .iter()
            .map(|(k, v)| match (k.as_str(), &relay) {
                (crate::API_URL, Some(url)) => (k.clone(), url.clone()),
                _ => (k.clone(), v.clone()),
            })
            .collect();
        env.push(("GEORGE_WORK_DIR".into(), "/work".into()));
        env.push(("HOME".into(), "/tmp".into()));
        if req.output_dir.is_some() {
            env.push(("GEORGE_OUTPUT_DIR".into(), CONTAINER_OUTPUT_DIR.into()));
        }
        let (files, root_env) = crate::launch::credentials(&req);
        let command = if req.command.is_empty() { self.inner.cfg.default_command.clone() } else { req.command.clone() };
        let binding = crate::launch::Binding {
            spec: Default::default(),
            command,
            env,
            cwd: "/work".into(),
            log: None,
            files,
            root_env,
            context: req.context.clone(),
        };
        let mut line = serde_json::to_vec(&binding).unwrap_or_default();
        line.push(b'\n');
        let handle = json!({"container": warm.id, "id": w.id});
        self.inner.bindings.lock().insert((job.to_string(), attempt), (w, line));
        tracing::info!(job, attempt, container = %name, warm = %warm.id, "warm agent container claimed (held until its binding)");
        Ok(handle)
    }

    async fn discard(&self, warm: &WarmAgent) -> Result<(), RuntimeError> {
        self.inner.warm.lock().remove(&warm.id);
        self.remove_warm(&warm.id).await
    }

    async fn clear_pools(&self) -> Result<usize, RuntimeError> {
        let list = self.containers_labelled(&["george.io/pool"]).await?;
        let claimed = self.claims();
        let prefix = self.pool_prefix();
        let mut cleared = 0;
        for c in list {
            let name =
                c.names.and_then(|n| n.into_iter().next()).unwrap_or_default().trim_start_matches('/').to_string();
            // Unclaimed (claimed ones are renamed for their attempt) and not this process's own.
            let is_claimed = c.id.as_ref().is_some_and(|id| claimed.contains_key(id));
            if name.starts_with(&prefix) && !is_claimed && !self.inner.warm.lock().contains_key(&name) {
                self.remove_warm(&name).await?;
                cleared += 1;
            }
        }
        Ok(cleared)
    }
}

impl DockerRuntime {
    /// Every container of this engine (running or not), also carrying `labels`.
    async fn containers_labelled(
        &self,
        labels: &[&str],
    ) -> Result<Vec<bollard::models::ContainerSummary>, RuntimeError> {
        let mut wanted = vec![format!("george.io/engine={}", self.inner.cfg.engine_id)];
        wanted.extend(labels.iter().map(|l| l.to_string()));
        let filters = HashMap::from([("label", wanted)]);
        let opts = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        self.inner
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| RuntimeError::Unavailable(format!("list containers: {e}")))
    }

    /// Removes a warm container and its staging directory.
    async fn remove_warm(&self, name: &str) -> Result<(), RuntimeError> {
        let _ = std::fs::remove_dir_all(self.pool_staging(name));
        let opts = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        match self.inner.docker.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_code(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(RuntimeError::Unavailable(format!("remove {name}: {e}"))),
        }
    }
}

/// A container name from anything: characters Docker refuses become `-`.
fn sanitize(raw: &str) -> String {
    raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '-' }).collect()
}

/// Makes `staged` (a warm container's mounted output directory) the job's
/// output directory `out`: whatever `out` holds moves into `staged`, then
/// `staged` is renamed to `out`. On failure what moved goes back.
fn adopt_output(staged: &std::path::Path, out: &std::path::Path) -> std::io::Result<()> {
    let mut moved = Vec::new();
    if out.is_dir() {
        for e in std::fs::read_dir(out)? {
            let e = e?;
            let to = staged.join(e.file_name());
            std::fs::rename(e.path(), &to)?;
            moved.push((to, e.path()));
        }
        std::fs::remove_dir(out)?;
    }
    let renamed = out.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|_| std::fs::rename(staged, out));
    if let Err(e) = renamed {
        let _ = std::fs::create_dir_all(out);
        for (from, back) in moved {
            let _ = std::fs::rename(from, back);
        }
        return Err(e);
    }
    Ok(())
}

/// The uid of a `uid[:gid]` user, when numeric.
fn numeric_uid(user: &str) -> Option<u32> {
    user.split(':').next()?.parse().ok()
}

/// Gives a staged host directory (and what it holds) to the container's
/// user, so an unprivileged agent can read what is mounted for it. An engine
/// that may not change owners (it is not root) leaves them as they are.
fn give_to(path: &std::path::Path, uid: u32) -> Result<(), RuntimeError> {
    match crate::sandbox::chown_tree(path, uid) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => {
            tracing::debug!(path = %path.display(), "cannot give the directory to the agent's user (engine not root)");
            Ok(())
        }
        Err(source) => Err(RuntimeError::Io { what: format!("chown {}", path.display()), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policies_parse() {
        assert_eq!("Never".parse::<PullPolicy>().unwrap(), PullPolicy::Never);
        assert!("sometimes".parse::<PullPolicy>().unwrap_err().contains("Always, IfNotPresent or Never"));
    }
}
