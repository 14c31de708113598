//! Runtimes run agents. The [`Runtime`] trait is what the reconciler drives:
//! spawn, status, terminate (graceful, then forced), list what it owns (so a
//! restarted engine adopts or removes orphans) and clean up. Every runtime
//! keeps an attempt's output in an [`AgentLogs`] file that outlives the agent.
//!
//! [`ProcessRuntime`] runs agents as local processes (the embedded default);
//! [`DockerRuntime`] runs them as containers on a Docker Engine;
//! [`KubernetesRuntime`] runs each attempt as a Kubernetes Job.

mod docker;
mod engine_only;
pub mod kubernetes;
pub mod launch;
mod logs;
mod process;
mod procfs;
pub mod sandbox;
mod spare;
mod watchers;

pub use docker::{DockerRuntime, DockerRuntimeConfig, PullPolicy};
pub use kubernetes::{KubernetesRuntime, KubernetesRuntimeConfig};
pub use logs::AgentLogs;
pub use process::{ProcessRuntime, ProcessRuntimeConfig, GATE_CLOSED};
pub use sandbox::{Isolation, SandboxConfig};

use async_trait::async_trait;
use george_core::quantity::{Cpu, Memory};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::broadcast;

/// An error from a runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The agent could not be started.
    #[error("cannot spawn agent {agent}: {message}")]
    Spawn {
        /// `<job>-<attempt>`.
        agent: String,
        /// What went wrong and what to do.
        message: String,
        /// The cause.
        #[source]
        source: Option<std::io::Error>,
    },
    /// The agent cannot run until someone changes something (a missing image
    /// with pull policy `Never`, a missing secret): retrying will not help.
    #[error("agent {agent} cannot run: {message}")]
    Unrunnable {
        /// `<job>-<attempt>`.
        agent: String,
        /// What is missing and what to do.
        message: String,
    },
    /// The runtime's backend (e.g. the Docker Engine) cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// The runtime handle is not one this runtime understands.
    #[error("invalid runtime handle for {agent}: {message}")]
    Handle {
        /// `<job>-<attempt>`.
        agent: String,
        /// Why.
        message: String,
    },
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What to run for one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct SpawnRequest {
    /// Job id.
    pub job_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// AgentSpec name.
    pub agent_spec: String,
    /// Command line; empty means the runtime's default agent.
    pub command: Vec<String>,
    /// Container image (container runtimes).
    pub image: Option<String>,
    /// Environment (no secrets: the agent token travels in `agent_token`).
    pub env: BTreeMap<String, String>,
    /// The attempt's agent token, delivered as a file only the agent can read
    /// ([`AGENT_TOKEN_FILE_ENV`] names it), never through the environment.
    pub agent_token: Option<AgentToken>,
    /// Limits.
    pub resources: Resources,
    /// Labels identifying the agent (template, chapter, ...).
    pub labels: BTreeMap<String, String>,
    /// The job's output directory on the engine's host, shared by its attempts.
    pub output_dir: Option<std::path::PathBuf>,
    /// Secrets the agent is entitled to, delivered as read-only files.
    pub secrets: Vec<SecretFile>,
    /// What the agent may reach over the network (the AgentSpec's `network`).
    pub network: george_core::manifest::NetworkPolicy,
    /// The AgentSpec's `maxActiveDuration` (the engine enforces it; a
    /// runtime may also hand it to its backend, as Kubernetes'
    /// `activeDeadlineSeconds`).
    pub max_active: Option<Duration>,
    /// The agent's context (an `AgentContext` as JSON), when the engine
    /// delivers it with the agent's release: George's own agent, run by the
    /// launcher, then starts its first step without asking for it
    /// (`attach`). Another program ignores it and asks as usual.
    pub context: Option<String>,
}

/// What a warm agent is started with: everything about an agent that is
/// fixed when it starts. The rest — the job, its environment, the attempt
/// token, the secrets — comes with its binding when a job claims it.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmSpec {
    /// AgentSpec name.
    pub agent_spec: String,
    /// Command line; empty means the runtime's default agent.
    pub command: Vec<String>,
    /// Container image (container runtimes).
    pub image: Option<String>,
    /// Limits.
    pub resources: Resources,
    /// What the agent may reach over the network.
    pub network: george_core::manifest::NetworkPolicy,
    /// Where the jobs' output directories are (a job's is `<outputs>/<job
    /// id>`, see [`SpawnRequest::output_dir`]), so that a runtime can make
    /// one ahead.
    pub outputs: Option<std::path::PathBuf>,
}

impl WarmSpec {
    /// The warm agent a request could be served by.
    pub fn of(req: &SpawnRequest) -> Self {
        Self {
            agent_spec: req.agent_spec.clone(),
            command: req.command.clone(),
            image: req.image.clone(),
            resources: req.resources,
            network: req.network,
            outputs: req.output_dir.as_deref().and_then(std::path::Path::parent).map(std::path::Path::to_path_buf),
        }
    }
}

/// A started, unassigned agent of a pool: no job, no secrets, no token.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmAgent {
    /// The runtime's name for it (unique within the runtime).
    pub id: String,
    /// What it was started with.
    pub spec: WarmSpec,
}

/// The variable naming the agent token's file. The reference agent reads the
/// file, removes it and keeps the token in memory only, so its steps never
/// see it.
pub const AGENT_TOKEN_FILE_ENV: &str = "GEORGE_AGENT_TOKEN_FILE";
/// A container agent's private in-memory directory (a tmpfs, an
/// `emptyDir` of medium `Memory`): its token and secrets.
pub const CONTAINER_RUN_DIR: &str = "/run/george";
/// Where container agents find the directory holding their token file.
pub const CONTAINER_AGENT_DIR: &str = "/run/george/agent";
/// The token file's name within its directory.
pub const AGENT_TOKEN_FILE: &str = "token";

/// An attempt's agent token. It never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentToken(pub String);

impl std::fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentToken(..)")
    }
}

/// Writes the agent token into `dir` (created 0700) as [`AGENT_TOKEN_FILE`]
/// (0400), replacing any earlier file, and returns the file's path.
pub fn write_token_file(dir: &std::path::Path, token: &AgentToken) -> std::io::Result<std::path::PathBuf> {
    let file = SecretFile { name: AGENT_TOKEN_FILE.into(), content: token.0.clone().into_bytes() };
    write_secret_files(dir, std::slice::from_ref(&file))?;
    Ok(dir.join(AGENT_TOKEN_FILE))
}

/// Where agents find their secret files (`GEORGE_SECRETS_DIR` points there).
pub const CONTAINER_SECRETS_DIR: &str = "/run/george/secrets";
/// Where container agents find the job's output directory.
pub const CONTAINER_OUTPUT_DIR: &str = "/george/output";

/// One secret file for an agent. Its content never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// File name within the secrets directory (a plain name, no `/`).
    pub name: String,
    /// The secret.
    pub content: Vec<u8>,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretFile({}, {} bytes)", self.name, self.content.len())
    }
}

/// The engine API's host and TCP port, from the `GEORGE_API_URL` an agent is given.
pub fn engine_address(req: &SpawnRequest) -> Option<(String, u16)> {
    address_of(req.env.get(API_URL)?)
}

/// The variable of an agent's environment naming the engine's API.
pub const API_URL: &str = "GEORGE_API_URL";

/// The host and port of a URL (`http://host:port/…`; a scheme's default port).
pub fn address_of(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.ends_with(']') => Some((host.to_string(), port.parse().ok()?)),
        _ => Some((authority.to_string(), if scheme == "https" { 443 } else { 80 })),
    }
}

/// Writes `secrets` into `dir` (created with mode 0700, files 0400).
pub fn write_secret_files(dir: &std::path::Path, secrets: &[SecretFile]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    for s in secrets {
        let path = dir.join(&s.name);
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o400).open(&path)?;
        std::io::Write::write_all(&mut f, &s.content)?;
    }
    Ok(())
}

/// Resource limits for an agent.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Resources {
    /// Memory limit.
    pub memory: Option<Memory>,
    /// CPU limit.
    pub cpu: Option<Cpu>,
}

/// What a runtime knows about an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    /// Still running.
    Running,
    /// Gone. The exit code or signal is known only for agents this engine
    /// process started (an adopted process's exit status cannot be read).
    Exited {
        /// Exit code.
        code: Option<i32>,
        /// Terminating signal.
        signal: Option<i32>,
    },
}

impl AgentStatus {
    /// A human-readable description of how the agent ended.
    pub fn describe(&self) -> String {
        match self {
            AgentStatus::Running => "running".into(),
            AgentStatus::Exited { code: Some(c), .. } => format!("exited with code {c}"),
            AgentStatus::Exited { signal: Some(s), .. } => format!("killed by signal {s}"),
            AgentStatus::Exited { .. } => "exited (status unknown)".into(),
        }
    }
}

/// An agent found running (or left behind) by a runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedAgent {
    /// Job id.
    pub job_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// Runtime handle.
    pub handle: Value,
    /// Its status.
    pub status: AgentStatus,
}

/// An agent changed state (it exited): a reason to reconcile its job now.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeEvent {
    /// Job id.
    pub job_id: String,
    /// Attempt number.
    pub attempt: u32,
    /// New status.
    pub status: AgentStatus,
}

/// Runs agents somewhere.
#[async_trait]
pub trait Runtime: Send + Sync + std::fmt::Debug + 'static {
    /// `process`, `docker` or `kubernetes`.
    fn kind(&self) -> &'static str;
    /// Creates an attempt's agent, held back, and returns its handle.
    /// Spawning the same attempt twice never yields two agents.
    ///
    /// Ownership before action: the agent does nothing until
    /// [`Runtime::release`] is called, which the engine does only after it
    /// has durably recorded the handle. A runtime whose backend can hold an
    /// agent back (a gated process, a created but unstarted container) does
    /// so; one that cannot (Kubernetes) labels the agent so that
    /// [`Runtime::list_owned`] finds it whatever moment the engine dies at.
    async fn spawn(&self, req: SpawnRequest) -> Result<Value, RuntimeError>;
    /// Lets a spawned agent start working. Called once its handle is in the
    /// store. An agent never released does nothing and ends on its own when
    /// the engine that spawned it dies (process runtime), or stays created
    /// and unstarted until cleaned up (Docker).
    async fn release(&self, _job_id: &str, _attempt: u32, _handle: &Value) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// The agent's status.
    async fn status(&self, job_id: &str, attempt: u32, handle: &Value) -> Result<AgentStatus, RuntimeError>;
    /// Asks the agent to stop, waits up to `grace`, then kills it. Returns how it ended.
    async fn terminate(
        &self,
        job_id: &str,
        attempt: u32,
        handle: &Value,
        grace: Duration,
    ) -> Result<AgentStatus, RuntimeError>;
    /// Every agent this runtime (this engine) has started and not cleaned up.
    async fn list_owned(&self) -> Result<Vec<OwnedAgent>, RuntimeError>;
    /// Keep watching an agent found by [`Runtime::list_owned`].
    async fn adopt(&self, agent: &OwnedAgent) -> Result<(), RuntimeError>;
    /// Removes what is left of a finished attempt (its logs stay).
    async fn cleanup(&self, job_id: &str, attempt: u32) -> Result<(), RuntimeError>;
    /// Where the attempt's logs are kept.
    fn logs(&self) -> &AgentLogs;
    /// The attempt's output as its backend keeps it, for a process that has
    /// no log file of it (a standby replica): `None` when the backend keeps
    /// none (process and Docker runtimes: the file of the engine that ran it
    /// is the only copy).
    async fn backend_logs(&self, _job_id: &str, _attempt: u32) -> Result<Option<Vec<u8>>, RuntimeError> {
        Ok(None)
    }
    /// Exit notifications.
    fn subscribe(&self) -> broadcast::Receiver<RuntimeEvent>;
    /// Stops this runtime's background work (exit watchers, log copies)
    /// and waits for it to end; the agents keep running.
    async fn shutdown(&self) {}
    /// How this runtime isolates agents on this machine, when it sandboxes
    /// them itself (the process runtime); `None` for runtimes whose backend
    /// does (containers).
    fn isolation(&self) -> Option<Isolation> {
        None
    }
    /// Whether this runtime keeps warm pools ([`Runtime::warm`]).
    fn pools(&self) -> bool {
        false
    }
    /// Whether a cold agent's release can carry its context
    /// ([`SpawnRequest::context`]; a warm agent's binding always can).
    fn releases_with_context(&self) -> bool {
        false
    }
    /// Starts one warm agent for `spec`: started and waiting for its
    /// binding, holding no job, no secret and no token. An agent never bound
    /// ends on its own when the engine that started it dies.
    async fn warm(&self, spec: &WarmSpec) -> Result<WarmAgent, RuntimeError> {
        Err(RuntimeError::Unavailable(format!("the {} runtime keeps no warm pools ({})", self.kind(), spec.agent_spec)))
    }
    /// Whether a warm agent is still alive and unclaimed (a cheap, local look).
    fn warm_alive(&self, _warm: &WarmAgent) -> bool {
        false
    }
    /// Whether a warm agent has done all it prepares while it waits (a claim
    /// of one that has not waits for it). Runtimes that cannot tell say yes.
    fn warm_ready(&self, _warm: &WarmAgent) -> bool {
        true
    }
    /// The handle [`Runtime::claim`] of `warm` will return, when this
    /// runtime knows it before the claim: the engine then records it with
    /// the attempt, in one transaction. `None`: it is recorded after the claim.
    fn warm_handle(&self, _warm: &WarmAgent) -> Option<serde_json::Value> {
        None
    }
    /// Makes `warm` the agent of `req`'s attempt, as [`Runtime::spawn`]
    /// does a new one: the attempt's files are written and its handle
    /// returned, and the agent stays held until [`Runtime::release`]
    /// delivers its binding (the job, its environment, token and secrets)
    /// through a channel only that agent reads. A warm agent serves one
    /// attempt. Fails when the warm agent is gone; the engine then starts one.
    async fn claim(&self, req: SpawnRequest, warm: WarmAgent) -> Result<serde_json::Value, RuntimeError> {
        let _ = warm;
        self.spawn(req).await
    }
    /// Destroys a warm agent that will not be claimed.
    async fn discard(&self, _warm: &WarmAgent) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// Destroys the unclaimed warm agents an earlier engine process left
    /// (claimed ones belong to their attempts and [`Runtime::list_owned`]
    /// lists them). Returns how many there were.
    async fn clear_pools(&self) -> Result<usize, RuntimeError> {
        Ok(0)
    }
}
