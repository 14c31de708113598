//! The local-process runtime: each attempt is a process in its own process
//! group (terminate sends SIGTERM to the agent, then SIGKILL to the group), started in its own working directory with output captured to its
//! log file. A pid file per attempt lets a restarted engine find (and adopt
//! or remove) agents it started before; the recorded start time guards
//! against a reused pid.
//!
//! Ownership before action: the process starts as a gate, `/bin/sh` reading
//! one line from a pipe only the engine holds, and becomes the agent (`exec`,
//! same pid) only when [`Runtime::release`] writes `go`. The pid file is
//! written before `spawn` returns and the engine releases the agent only
//! after recording its handle in the store. If the engine dies at any point
//! before that, the pipe closes, the gate reads end-of-file and exits without
//! running anything: no kill point leaves a working agent the engine cannot
//! find.
//!
//! Isolation: every attempt runs in its own sandbox ([`crate::sandbox`]):
//! Landlock confines what it can read and write and refuses access to other
//! agents' processes; when the engine is root, each attempt also runs under
//! its own unprivileged uid. The agent token is a file in the attempt's
//! `agent/` directory (named by `GEORGE_AGENT_TOKEN_FILE`), never an
//! environment variable.
//!
//! Limits: `memory` is applied as `RLIMIT_AS` (address space) on the agent
//! and everything it starts. `cpu` cannot be expressed with rlimits (it is a
//! share, not a total) and is not enforced by this runtime; the container
//! runtimes enforce it.

use crate::launch::{LaunchSpec, Sandboxing};
use crate::sandbox::{self, Grants, Isolation, SandboxConfig};
use crate::{
    procfs, AgentLogs, AgentStatus, OwnedAgent, Runtime, RuntimeError, RuntimeEvent, SpawnRequest, WarmAgent, WarmSpec,
};
use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Configuration of the process runtime.
#[derive(Debug, Clone)]
pub struct ProcessRuntimeConfig {
    /// Holds one directory per attempt (`<job>/<attempt>/`, with `work/` and `pid`).
    pub dir: PathBuf,
    /// Log files.
    pub logs: AgentLogs,
    /// The agent to run when an AgentSpec names no command.
    pub default_command: Vec<String>,
    /// Keep an attempt's working directory after it finishes (for debugging).
    pub keep_workdirs: bool,
    /// Engine environment variables passed on to agents (everything else is
    /// withheld, so the engine's own secrets never reach an agent).
    pub passthrough_env: Vec<String>,
    /// How agents are isolated from each other and from the engine.
    pub sandbox: SandboxConfig,
    /// What starts an agent: George's binary and its launcher subcommand
    /// (`[george, sandbox-exec]`, see `launch`); the spec, `--` and the
    /// agent's command follow.
    pub launcher: Vec<String>,
}

impl ProcessRuntimeConfig {
    /// Defaults under a data directory.
    pub fn under(data_dir: &Path, default_command: Vec<String>, launcher: Vec<String>) -> Self {
        Self {
            dir: data_dir.join("agents"),
            logs: AgentLogs::new(data_dir.join("logs")),
            default_command,
            keep_workdirs: false,
            passthrough_env: ["PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "RUST_BACKTRACE"]
                .map(String::from)
                .to_vec(),
            sandbox: SandboxConfig::hiding(data_dir),
            launcher,
        }
    }
}

/// What the pid file and the runtime handle hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ProcessHandle {
    pid: i32,
    /// Clock ticks since boot when the process started.
    start_time: u64,
    /// The attempt's own uid (an engine running as root gives each attempt one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
}

#[derive(Debug, Clone)]
struct PidFile {
    job_id: String,
    attempt: u32,
    handle: ProcessHandle,
}

/// Where the exit of an agent is recorded and announced.
struct ExitSink(Arc<Mutex<HashMap<(String, u32), Tracked>>>, broadcast::Sender<RuntimeEvent>);

/// Runs agents as local processes.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: ProcessRuntimeConfig,
    /// Agents this engine process started or adopted, with their exit once
    /// known (shared with the tasks that wait for exits, which hold nothing
    /// else: dropping the runtime closes every gate).
    tracked: Arc<Mutex<HashMap<(String, u32), Tracked>>>,
    /// The write ends of the gates of agents spawned and not yet released,
    /// with what releases each (`go`, or a warm agent's binding).
    gates: Mutex<HashMap<(String, u32), Gate>>,
    /// Warm agents started and not yet claimed.
    warm: Mutex<HashMap<String, WarmProcess>>,
    /// Names the next warm agent.
    warm_serial: std::sync::atomic::AtomicU64,
    events: broadcast::Sender<RuntimeEvent>,
    /// What the sandbox gives on this machine.
    isolation: Isolation,
    /// Where the next per-attempt uid is looked for (a rotating cursor, so
    /// an ended attempt's uid is reused as late as possible).
    next_uid: Mutex<u32>,
    /// Per-attempt uids claimed machine-wide.
    uid_claims: sandbox::UidClaims,
    /// Each program agents run, as agents under their own uid reach it (itself, or a link).
    reachable_programs: Mutex<HashMap<PathBuf, PathBuf>>,
    /// The tasks that wait for agents' exits.
    watchers: crate::watchers::Watchers,
    /// Ended attempts' directories kept for later ones.
    spares: crate::spare::Spares,
}

pub use crate::launch::GATE_CLOSED;

#[derive(Debug, Clone, Copy)]
struct Tracked {
    handle: ProcessHandle,
    exit: Option<AgentStatus>,
    /// Started by this engine process, so a waiter task will record its exit
    /// status; otherwise adopted and watched through `/proc`.
    child: bool,
}

impl ProcessRuntime {
    /// A process runtime.
    pub fn new(cfg: ProcessRuntimeConfig) -> Self {
        let (events, _) = broadcast::channel(1024);
        let isolation = Isolation::probe(&cfg.sandbox);
        let spares = crate::spare::Spares::new(cfg.dir.join(".spare"), FIRST_ATTEMPT, &AGENT_OWNED, PID_TMP);
        Self {
            inner: Arc::new(Inner {
                spares,
                cfg,
                tracked: Arc::new(Mutex::new(HashMap::new())),
                gates: Mutex::new(HashMap::new()),
                warm: Mutex::new(HashMap::new()),
                warm_serial: Default::default(),
                events,
                isolation,
                next_uid: Mutex::new(0),
                uid_claims: sandbox::UidClaims::machine(),
                reachable_programs: Mutex::new(HashMap::new()),
                watchers: Default::default(),
            }),
        }
    }

    /// What isolation agents get.
    pub fn isolation(&self) -> &Isolation {
        &self.inner.isolation
    }

    /// A uid for a new attempt, claimed machine-wide for its directory `owner`.
    fn allocate_uid(&self, req: &SpawnRequest, owner: &Path) -> Result<u32, RuntimeError> {
        self.claim_uid(owner).map_err(|(message, e)| Self::spawn_error(req, message, e))
    }

    /// A uid claimed machine-wide for the directory `owner`, or why not.
    fn claim_uid(&self, owner: &Path) -> Result<u32, (String, Option<std::io::Error>)> {
        let sb = &self.inner.cfg.sandbox;
        let mut next = self.inner.next_uid.lock();
        let claimed = self
            .inner
            .uid_claims
            .claim(sb.uid_base, sb.uid_count, *next, owner)
            .map_err(|e| (format!("cannot claim an agent uid: {e}"), Some(e)))?;
        match claimed {
            Some(uid) => {
                *next = (uid - sb.uid_base + 1) % sb.uid_count.max(1);
                Ok(uid)
            }
            None => {
                let e = sandbox::SandboxError::NoUid { base: sb.uid_base, end: sb.uid_base + sb.uid_count };
                Err((e.to_string(), None))
            }
        }
    }

    fn staged_dir(&self) -> PathBuf {
        self.inner.cfg.dir.join(".staged")
    }

    /// The directories of a warm agent's future attempt ([`Staged`]).
    fn stage(&self, warm: &str, outputs: Option<&Path>) -> Result<Staged, RuntimeError> {
        let sandboxed = self.inner.cfg.sandbox.enabled;
        let root_mode = sandboxed && sandbox::engine_is_root();
        own_dir(&self.staged_dir(), 0o700, None)?;
        let root = self.staged_dir().join(warm);
        let dir = root.join(FIRST_ATTEMPT.to_string());
        // A spare, or made as a job's directory is (`create_dir_all`), to become one.
        let spare = self.place_spare(FIRST_ATTEMPT, &dir);
        if !spare {
            std::fs::DirBuilder::new().create(&root).map_err(io(format!("create {}", root.display())))?;
        }
        let log_root = self.staged_logs().join(warm);
        let log = log_root.join(format!("{FIRST_ATTEMPT}.log"));
        // Inside the staged job directory (it goes with it), moved out by the claim.
        let output = outputs.map(|_| root.join(STAGED_OUTPUT));
        let staged = Staged { root, dir, uid: None, log_root, log, output };
        let uid = match own_attempt_dir(&staged.dir, root_mode) {
            Ok(()) if root_mode => match self.claim_uid(&staged.dir) {
                Ok(uid) => Some(uid),
                Err((message, _)) => {
                    self.unstage(staged);
                    return Err(RuntimeError::Unavailable(message));
                }
            },
            Ok(()) => None,
            Err(e) => {
                self.unstage(staged);
                return Err(e);
            }
        };
        let staged = Staged { uid, ..staged };
        let made = own_agent_dirs(&staged.dir, uid, sandboxed)
            .and_then(|()| own_dir(&staged.dir.join("agent"), 0o700, uid))
            .and_then(|()| {
                // Empty until its claim fills them: no file is created then.
                let placeholder = |path: &Path, mode: u32| {
                    use std::os::unix::fs::OpenOptionsExt;
                    std::fs::OpenOptions::new().create_new(true).write(true).mode(mode).open(path)
                };
                // The token's, the agent's already: its claim only fills it.
                let token = staged.dir.join("agent").join(crate::AGENT_TOKEN_FILE);
                placeholder(&token, 0o600)
                    .and_then(|_| uid.map_or(Ok(()), |u| std::os::unix::fs::lchown(&token, Some(u), Some(u))))
                    // A spare holds one, the engine's already.
                    .and_then(|_| if spare { Ok(()) } else { placeholder(&staged.dir.join(PID_TMP), 0o644).map(drop) })
                    .and_then(|_| crate::logs::private_dir(&staged.log_root))
                    .and_then(|()| crate::logs::private_log(&staged.log))
                    .map(drop)
                    .map_err(io(format!("stage {}", staged.dir.display())))
            })
            .and_then(|()| match &staged.output {
                // Made as a job's output directory is, the agent's.
                Some(out) => std::fs::create_dir_all(out)
                    .and_then(|()| uid.map_or(Ok(()), |u| sandbox::chown_tree(out, u)))
                    .map_err(io(format!("stage {}", out.display()))),
                None => Ok(()),
            });
        if let Err(e) = made {
            self.unstage(staged);
            return Err(e);
        }
        Ok(staged)
    }

    /// Moves a spare job directory ([`crate::spare`]) into place as attempt
    /// `attempt`'s directory `dir`; false when there is none (or it could
    /// not be placed, and is gone).
    fn place_spare(&self, attempt: u32, dir: &Path) -> bool {
        let Some(spare) = self.inner.spares.take() else { return false };
        let placed =
            place(&spare, &spare.join(FIRST_ATTEMPT.to_string()), attempt, dir, |p| std::fs::create_dir_all(p));
        if !placed {
            let _ = std::fs::remove_dir_all(&spare);
        }
        placed
    }

    /// Where warm agents' log files wait for their claims.
    fn staged_logs(&self) -> PathBuf {
        self.inner.cfg.logs.dir().join(".staged")
    }

    /// Gives back what [`Self::stage`] made.
    fn unstage(&self, staged: Staged) {
        if let Some(uid) = staged.uid {
            self.inner.uid_claims.release(uid, &staged.dir);
        }
        let _ = std::fs::remove_dir_all(&staged.root);
        let _ = std::fs::remove_dir_all(&staged.log_root);
    }

    /// Moves `staged` into place as attempt `attempt`'s directory `dir`, and
    /// its log file to `log`: its uid (`Some(None)` without one), or `None`
    /// when it could not (and it is gone). A job's first attempt takes the
    /// staged job directories whole (one rename each, no directory made).
    /// The job's output directory, `output`, is the staged one when it had none.
    fn adopt_staged(
        &self,
        staged: Staged,
        attempt: u32,
        dir: &Path,
        log: &Path,
        output: Option<&Path>,
    ) -> Option<Option<u32>> {
        // First, out of the job directory to be (when it cannot, as on
        // another file system, it stays there and goes below).
        if let (Some(out), Some(o)) = (&staged.output, output) {
            if !o.exists() {
                let _ = std::fs::rename(out, o);
            }
        }
        if !place(&staged.root, &staged.dir, attempt, dir, |p| std::fs::create_dir_all(p)) {
            self.unstage(staged);
            return None;
        }
        if let Some(out) = staged.output.as_ref().and_then(|o| o.strip_prefix(&staged.root).ok()) {
            // Not taken: it went with the staged job directory.
            let _ = std::fs::remove_dir_all(dir.parent().unwrap_or(dir).join(out));
        }
        if !place(&staged.log_root, &staged.log, attempt, log, crate::logs::private_dir) {
            let _ = std::fs::remove_dir_all(&staged.log_root);
        }
        match staged.uid {
            None => Some(None),
            Some(uid) if self.inner.uid_claims.reassign(uid, &staged.dir, dir).unwrap_or(false) => Some(Some(uid)),
            Some(_) => {
                // The claim is no longer its own: nothing of it is used.
                let _ = std::fs::remove_dir_all(dir);
                None
            }
        }
    }

    /// `program` as an agent under its own uid can run it: itself when
    /// reachable, else a link (or copy) in the runtime's `.bin` directory.
    fn reachable_program(&self, program: &str) -> Result<String, RuntimeError> {
        let path = Path::new(program);
        if !path.is_absolute() {
            return Ok(program.to_string());
        }
        let mut links = self.inner.reachable_programs.lock();
        if let Some(l) = links.get(path) {
            return Ok(l.display().to_string());
        }
        if sandbox::unreachable_by_others(path).is_none() {
            links.insert(path.to_path_buf(), path.to_path_buf());
            return Ok(program.to_string());
        }
        let bin = self.inner.cfg.dir.join(".bin");
        std::fs::create_dir_all(&bin).map_err(io(format!("create {}", bin.display())))?;
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "agent".into());
        let link = bin.join(name);
        let _ = std::fs::remove_file(&link);
        if std::fs::hard_link(path, &link).is_err() {
            std::fs::copy(path, &link).map_err(io(format!("copy {} to {}", path.display(), link.display())))?;
        }
        tracing::info!(program, reachable = %link.display(), "agent program linked where per-attempt users can run it");
        links.insert(path.to_path_buf(), link.clone());
        Ok(link.display().to_string())
    }

    fn attempt_dir(&self, job_id: &str, attempt: u32) -> PathBuf {
        self.inner.cfg.dir.join(job_id).join(attempt.to_string())
    }

    fn tracked(&self) -> parking_lot::MutexGuard<'_, HashMap<(String, u32), Tracked>> {
        self.inner.tracked.lock()
    }

    fn record_exit(exits: &ExitSink, job_id: &str, attempt: u32, status: AgentStatus) {
        if let Some(t) = exits.0.lock().get_mut(&(job_id.to_string(), attempt)) {
            if t.exit.is_some() {
                return;
            }
            t.exit = Some(status);
        }
        let _ = exits.1.send(RuntimeEvent { job_id: job_id.into(), attempt, status });
    }

    fn exit_sink(&self) -> ExitSink {
        ExitSink(self.inner.tracked.clone(), self.inner.events.clone())
    }

    fn current_status(&self, job_id: &str, attempt: u32, handle: ProcessHandle) -> AgentStatus {
        if let Some(t) = self.tracked().get(&(job_id.to_string(), attempt)) {
            if let Some(exit) = t.exit {
                return exit;
            }
            if t.handle == handle && t.child {
                // Our child: until its waiter has recorded the exit status it
                // counts as running, even if /proc already shows it gone.
                return AgentStatus::Running;
            }
        }
        alive(handle)
    }

    fn read_pid_file(path: &Path) -> Option<PidFile> {
        let text = std::fs::read_to_string(path).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        Some(PidFile {
            job_id: v.get("job_id")?.as_str()?.to_string(),
            attempt: u32::try_from(v.get("attempt")?.as_u64()?).ok()?,
            handle: serde_json::from_value(v.get("handle")?.clone()).ok()?,
        })
    }

    /// Whether `program` names an executable file, as `exec` will look it up
    /// (a path, or a name on the `PATH` agents get). The gate execs it only
    /// after the release, so a missing one is reported here, at spawn.
    fn runnable(&self, program: &str) -> bool {
        use std::os::unix::fs::PermissionsExt;
        let executable =
            |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if program.contains('/') {
            return executable(Path::new(program));
        }
        let passes_path = self.inner.cfg.passthrough_env.iter().any(|n| n == "PATH");
        let path = if passes_path { std::env::var_os("PATH") } else { None };
        let path = path.unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        std::env::split_paths(&path).any(|d| executable(&d.join(program)))
    }

    fn spawn_error(req: &SpawnRequest, message: String, source: Option<std::io::Error>) -> RuntimeError {
        RuntimeError::Spawn { agent: george_core::api::agent_id(&req.job_id, req.attempt), message, source }
    }
    /// The handle of the attempt's agent when it has a live one already (a
    /// spawn retried): spawning is idempotent.
    fn existing(&self, req: &SpawnRequest) -> Option<Value> {
        let existing = Self::read_pid_file(&self.attempt_dir(&req.job_id, req.attempt).join("pid"))?;
        (alive(existing.handle) == AgentStatus::Running)
            .then(|| serde_json::to_value(existing.handle).unwrap_or_default())
    }

    /// Everything of an attempt's agent but its process: its directories,
    /// uid, token and secret files, log file, environment and launch spec.
    fn prepare(&self, req: &SpawnRequest, staged: Option<Staged>) -> Result<Prepared, RuntimeError> {
        let dir = self.attempt_dir(&req.job_id, req.attempt);
        let command = if req.command.is_empty() { &self.inner.cfg.default_command } else { &req.command };
        let Some((program, args)) = command.split_first() else {
            return Err(Self::spawn_error(req, "no command to run; set spec.command in the AgentSpec".into(), None));
        };
        if !self.runnable(program) {
            let hint = format!("command `{program}` not found; check spec.command of AgentSpec `{}`", req.agent_spec);
            let e = std::io::Error::new(std::io::ErrorKind::NotFound, "no such executable");
            return Err(Self::spawn_error(req, hint, Some(e)));
        }
        let sandboxed = self.inner.cfg.sandbox.enabled;
        let root_mode = sandboxed && sandbox::engine_is_root();
        // The attempt's directory holds the pid file (the engine's, never the
        // agent's); under it, what the agent owns.
        let log_path = self.inner.cfg.logs.path(&req.job_id, req.attempt);
        let new_output = req.output_dir.as_deref().filter(|o| !o.exists());
        let adopted = staged.and_then(|s| self.adopt_staged(s, req.attempt, &dir, &log_path, new_output));
        // The staged output directory, the agent's already, is the job's now.
        let output_made = new_output.is_some_and(|o| adopted.is_some() && o.exists());
        if adopted.is_none() {
            self.place_spare(req.attempt, &dir);
            own_attempt_dir(&dir, root_mode)?;
        }
        let uid = match adopted {
            Some(uid) if uid.is_some() == root_mode => uid,
            _ if root_mode => Some(self.allocate_uid(req, &dir)?),
            _ => None,
        };
        let program = if uid.is_some() { self.reachable_program(program)? } else { program.clone() };
        if adopted.is_none() {
            own_agent_dirs(&dir, uid, sandboxed)?;
        }
        let work = dir.join("work");
        if let Some(u) = uid {
            sandbox::check_reachable(&dir).map_err(|e| RuntimeError::Unrunnable {
                agent: george_core::api::agent_id(&req.job_id, req.attempt),
                message: format!("{e} (the agent would run as uid {u})"),
            })?;
        }
        let mut grants = Grants {
            write: vec![work.clone()],
            network: req.network,
            engine_port: crate::engine_address(req).map(|(_, port)| port),
            ..Default::default()
        };
        if !sandboxed && !req.network.is_full() {
            return Err(RuntimeError::Unrunnable {
                agent: george_core::api::agent_id(&req.job_id, req.attempt),
                message: "AgentSpec `network` needs the agent sandbox (agents.sandbox.enabled is false)".into(),
            });
        }
        if Path::new(&program).is_absolute() {
            grants.read.push(PathBuf::from(&program));
        }
        if let Some(parent) = log_path.parent() {
            crate::logs::private_dir(parent).map_err(io(format!("create {}", parent.display())))?;
        }
        let log = crate::logs::private_log(&log_path).map_err(io(format!("open {}", log_path.display())))?;

        let mut env: Vec<(String, String)> = Vec::new();
        for name in &self.inner.cfg.passthrough_env {
            if let Ok(v) = std::env::var(name) {
                env.push((name.clone(), v));
            }
        }
        env.extend(req.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let path = |p: &Path| p.display().to_string();
        env.push(("GEORGE_WORK_DIR".into(), path(&work)));
        if sandboxed {
            // The host's home and temporary directory are not the agent's.
            for (name, sub) in [("HOME", "home"), ("TMPDIR", "tmp")] {
                let d = dir.join(sub);
                env.push((name.into(), path(&d)));
                grants.write.push(d);
            }
        }
        if let Some(out) = &req.output_dir {
            if !output_made {
                std::fs::create_dir_all(out).map_err(io(format!("create {}", out.display())))?;
                if let Some(u) = uid {
                    sandbox::chown_tree(out, u).map_err(io(format!("chown {}", out.display())))?;
                }
            }
            env.push(("GEORGE_OUTPUT_DIR".into(), path(out)));
            grants.write.push(out.clone());
        }
        if !req.secrets.is_empty() {
            let secrets = dir.join("secrets");
            crate::write_secret_files(&secrets, &req.secrets).map_err(io("write the agent's secret files"))?;
            if let Some(u) = uid {
                sandbox::chown_tree(&secrets, u).map_err(io(format!("chown {}", secrets.display())))?;
            }
            env.push(("GEORGE_SECRETS_DIR".into(), path(&secrets)));
            grants.read.push(secrets);
        }
        if let Some(token) = &req.agent_token {
            let agent_dir = dir.join("agent");
            let filled = fill_token_file(&agent_dir, token);
            // A staged one is the agent's, with its directory, already.
            let staged_file = filled.is_some() && adopted == Some(uid);
            let file = filled
                .unwrap_or_else(|| crate::write_token_file(&agent_dir, token))
                .map_err(io("write the agent's token file"))?;
            if let Some(u) = uid.filter(|_| !staged_file) {
                sandbox::chown_tree(&agent_dir, u).map_err(io(format!("chown {}", agent_dir.display())))?;
            }
            env.push((crate::AGENT_TOKEN_FILE_ENV.into(), path(&file)));
            grants.take.push(agent_dir);
        }
        // Later entries win, as with `Command::env`.
        let mut seen = std::collections::HashSet::new();
        env.reverse();
        env.retain(|(k, _)| seen.insert(k.clone()));
        env.reverse();
        let abi = self.inner.isolation.landlock_abi;
        let sandboxing = if sandboxed {
            sandbox::check_enforceable(&grants, abi).map_err(|e| RuntimeError::Unrunnable {
                agent: george_core::api::agent_id(&req.job_id, req.attempt),
                message: e.to_string(),
            })?;
            Some(Sandboxing { abi, hidden: self.inner.cfg.sandbox.hidden.clone(), grants })
        } else {
            None
        };
        let launch = LaunchSpec { memory: req.resources.memory.map(|m| m.0), uid, sandbox: sandboxing };
        let mut command = vec![program];
        command.extend(args.iter().cloned());
        Ok(Prepared { dir, work, uid, env, launch, command, log, log_path })
    }

    /// Records the attempt's agent where a restarted engine finds it.
    fn write_pid_file(dir: &Path, req: &SpawnRequest, handle: ProcessHandle) -> Result<(), RuntimeError> {
        let record = serde_json::json!({"job_id": req.job_id, "attempt": req.attempt, "handle": handle});
        let (tmp, pid_path) = (dir.join(PID_TMP), dir.join("pid"));
        std::fs::write(&tmp, record.to_string())
            .and_then(|_| std::fs::rename(&tmp, &pid_path))
            .map_err(io(format!("write {}", pid_path.display())))
    }

    /// Waits for a child's exit and reports it for the attempt it serves
    /// (a warm agent that ends unclaimed is only marked gone).
    fn watch_child(&self, mut child: tokio::process::Child, assignment: Arc<Mutex<Assignment>>) {
        let exits = self.exit_sink();
        self.inner.watchers.spawn(async move {
            let status = match child.wait().await {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    AgentStatus::Exited { code: s.code(), signal: s.signal() }
                }
                Err(_) => AgentStatus::Exited { code: None, signal: None },
            };
            let served = std::mem::replace(&mut *assignment.lock(), Assignment::Exited);
            if let Assignment::Claimed(job_id, attempt) = served {
                tracing::debug!(job = %job_id, attempt, status = %status.describe(), "agent process exited");
                ProcessRuntime::record_exit(&exits, &job_id, attempt, status);
            }
        });
    }

    fn pool_dir(&self) -> PathBuf {
        self.inner.cfg.dir.join(".pool")
    }

    /// Where a warm agent's handle is kept until its claim (a restarted engine clears what is left).
    fn pool_record(&self, warm: &str) -> PathBuf {
        self.pool_dir().join(format!("{warm}.pid"))
    }
}

/// An attempt's agent, ready to start (cold) or to bind (warm).
struct Prepared {
    dir: PathBuf,
    work: PathBuf,
    uid: Option<u32>,
    env: Vec<(String, String)>,
    launch: LaunchSpec,
    /// Program and arguments.
    command: Vec<String>,
    log: std::fs::File,
    log_path: PathBuf,
}

/// A held agent's stdin and what releases it (`go`, or a warm agent's binding).
type Gate = (tokio::process::ChildStdin, Vec<u8>);

/// Whom an agent process serves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Assignment {
    /// A warm agent, waiting for a claim.
    Waiting,
    /// An attempt's agent.
    Claimed(String, u32),
    /// Ended.
    Exited,
}

/// A warm agent process: its binding pipe and whom it serves.
#[derive(Debug)]
struct WarmProcess {
    stdin: tokio::process::ChildStdin,
    /// Set once the launcher says it is prepared.
    ready: Arc<std::sync::atomic::AtomicBool>,
    handle: ProcessHandle,
    assignment: Arc<Mutex<Assignment>>,
    /// Its attempt's directories, made while it waits.
    staged: Option<Staged>,
}

/// An attempt directory made ahead of its attempt (`<dir>/.staged/<warm
/// agent>/1`): `work` (and, sandboxed, `home` and `tmp`) with their modes,
/// `agent/` with an empty token file, an empty `pid.tmp`, and the uid they
/// belong to, claimed for it; and an empty log file
/// (`<logs>/.staged/<warm agent>/1.log`). A claim renames them into place and
/// fills the files, so no inode an attempt needs is allocated on the way to
/// its first step (on a busy file system, ext4's inode allocation is what
/// costs most there: about half a millisecond each on this project's CI
/// machine, against 30 µs for a rename).
#[derive(Debug)]
struct Staged {
    /// The job's directory to be (`.staged/<warm agent>`)…
    root: PathBuf,
    /// The job's output directory to be (`output` inside `root`).
    output: Option<PathBuf>,
    /// …and the attempt's inside it.
    dir: PathBuf,
    uid: Option<u32>,
    /// The log's job directory to be, and the log file inside it.
    log_root: PathBuf,
    log: PathBuf,
}

/// The pid record's temporary name (written, then renamed to `pid`).
const PID_TMP: &str = "pid.tmp";

/// The staged job output directory's name inside the staged job directory.
const STAGED_OUTPUT: &str = "output";

/// The attempt a warm agent's directories are staged for (the usual one);
/// another attempt's claim moves them one level down instead.
const FIRST_ATTEMPT: u32 = 1;

/// Moves a staged `item` (inside the staged job directory `root`) to
/// `target`, attempt `attempt`'s: for the first attempt of a job with no
/// directory yet, `root` becomes the job's directory; otherwise the job's
/// directory is made (`make_dir`) and `item` alone moves, `root` going.
/// Whether it moved (`target` was free).
fn place(
    root: &Path,
    item: &Path,
    attempt: u32,
    target: &Path,
    make_dir: impl Fn(&Path) -> std::io::Result<()>,
) -> bool {
    let Some(job_dir) = target.parent() else { return false };
    if target.exists() {
        return false;
    }
    if attempt == FIRST_ATTEMPT && !job_dir.exists() && std::fs::rename(root, job_dir).is_ok() {
        return true;
    }
    let moved = make_dir(job_dir).is_ok() && std::fs::rename(item, target).is_ok();
    let _ = std::fs::remove_dir_all(root);
    moved
}

/// Writes the token into the empty token file a staged attempt directory
/// holds (then `0o400`); `None` when there is none to fill.
fn fill_token_file(agent_dir: &Path, token: &crate::AgentToken) -> Option<std::io::Result<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let path = agent_dir.join(crate::AGENT_TOKEN_FILE);
    // Staged: there, a plain file, empty.
    std::fs::symlink_metadata(&path).ok().filter(|m| m.is_file() && m.len() == 0)?;
    let filled = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, token.0.as_bytes()))
        .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)));
    Some(filled.map(|()| path))
}

/// An attempt's directory: `0o711` when its agent runs under a uid of its
/// own (to reach what is its own inside), else `0o700`; the engine's.
fn own_attempt_dir(dir: &Path, own_uid: bool) -> Result<(), RuntimeError> {
    own_dir(dir, if own_uid { 0o711 } else { 0o700 }, None)
}

/// The directories of an attempt's directory its agent owns (`agent` holds its token file).
const AGENT_OWNED: [&str; 4] = ["work", "home", "tmp", "agent"];

/// What the agent owns in its attempt's directory (`0o700`, under `uid`):
/// `work`, and sandboxed its own `home` and `tmp`.
fn own_agent_dirs(dir: &Path, uid: Option<u32>, sandboxed: bool) -> Result<(), RuntimeError> {
    let subdirs: &[&str] = if sandboxed { &["work", "home", "tmp"] } else { &["work"] };
    subdirs.iter().try_for_each(|sub| own_dir(&dir.join(sub), 0o700, uid))
}

/// Creates `dir` with `mode`, owned by `uid` when given.
fn own_dir(dir: &Path, mode: u32, uid: Option<u32>) -> Result<(), RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("chmod {}", dir.display())))?;
    if let Some(uid) = uid {
        sandbox::chown_tree(dir, uid).map_err(io(format!("chown {}", dir.display())))?;
    }
    Ok(())
}

fn alive(h: ProcessHandle) -> AgentStatus {
    match procfs::start_time(h.pid) {
        Some(st) if st == h.start_time => AgentStatus::Running,
        _ => AgentStatus::Exited { code: None, signal: None },
    }
}

fn parse_handle(job_id: &str, attempt: u32, handle: &Value) -> Result<ProcessHandle, RuntimeError> {
    serde_json::from_value(handle.clone()).map_err(|e| RuntimeError::Handle {
        agent: george_core::api::agent_id(job_id, attempt),
        message: format!("expected {{pid, start_time}}: {e}"),
    })
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn kind(&self) -> &'static str {
        "process"
    }

    async fn spawn(&self, req: SpawnRequest) -> Result<Value, RuntimeError> {
        if let Some(existing) = self.existing(&req) {
            return Ok(existing);
        }
        let p = self.prepare(&req, None)?;
        let Some((launcher, launcher_args)) = self.inner.cfg.launcher.split_first() else {
            return Err(Self::spawn_error(&req, "no launcher configured for the process runtime".into(), None));
        };
        let log2 = p.log.try_clone().map_err(io("dup log file"))?;
        // No code runs in the engine between fork and exec (no `pre_exec`):
        // the standard library spawns with posix_spawn, and the launcher
        // confines the agent's process itself.
        let mut cmd = tokio::process::Command::new(launcher);
        cmd.args(launcher_args)
            .env_clear()
            .envs(p.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&p.work)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(p.log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(false);
        let spec = serde_json::to_string(&p.launch)
            .map_err(|e| Self::spawn_error(&req, format!("cannot write the launch spec: {e}"), None))?;
        let (program, args) = p.command.split_first().expect("prepare returns a program");
        cmd.arg(spec).arg("--").arg(program).args(args);

        let mut child = cmd.spawn().map_err(|e| {
            Self::spawn_error(&req, format!("cannot start `{program}` through the launcher `{launcher}`: {e}"), Some(e))
        })?;
        let pid = child
            .id()
            .map(|p| p as i32)
            .ok_or_else(|| Self::spawn_error(&req, "process exited at once".into(), None))?;
        let handle = ProcessHandle { pid, start_time: procfs::start_time(pid).unwrap_or(0), uid: p.uid };
        let key = (req.job_id.clone(), req.attempt);
        self.tracked().insert(key.clone(), Tracked { handle, exit: None, child: true });
        if let Some(gate) = child.stdin.take() {
            let message = crate::launch::gate_message(req.context.as_deref());
            self.inner.gates.lock().insert(key, (gate, message));
        }
        Self::write_pid_file(&p.dir, &req, handle)?;
        let assignment = Arc::new(Mutex::new(Assignment::Claimed(req.job_id.clone(), req.attempt)));
        self.watch_child(child, assignment);
        tracing::info!(job = %req.job_id, attempt = req.attempt, pid, "agent process started (held at its gate)");
        Ok(serde_json::to_value(handle).unwrap_or_default())
    }

    async fn release(&self, job_id: &str, attempt: u32, handle: &Value) -> Result<(), RuntimeError> {
        let h = parse_handle(job_id, attempt, handle)?;
        let gate = self.inner.gates.lock().remove(&(job_id.to_string(), attempt));
        let Some((mut gate, message)) = gate else {
            // Released already, or spawned by an engine process that is gone
            // (its gate closed and the agent ended without acting).
            return Ok(());
        };
        // A warm agent waits at the idle policy: it reads its binding now, not
        // when the CPU is idle (a cold one is at the normal policy already).
        crate::launch::wake_from_idle(h.pid);
        use tokio::io::AsyncWriteExt;
        gate.write_all(&message)
            .await
            .map_err(io(format!("release agent {}", george_core::api::agent_id(job_id, attempt))))?;
        Ok(())
    }

    async fn status(&self, job_id: &str, attempt: u32, handle: &Value) -> Result<AgentStatus, RuntimeError> {
        let h = parse_handle(job_id, attempt, handle)?;
        Ok(self.current_status(job_id, attempt, h))
    }

    async fn terminate(
        &self,
        job_id: &str,
        attempt: u32,
        handle: &Value,
        grace: Duration,
    ) -> Result<AgentStatus, RuntimeError> {
        let h = parse_handle(job_id, attempt, handle)?;
        let group = Pid::from_raw(h.pid);
        if self.current_status(job_id, attempt, h) == AgentStatus::Running {
            // SIGTERM goes to the agent alone, so it can abandon its current
            // step cleanly (a step killed under it would look like a failure);
            // SIGKILL below goes to the whole group.
            let _ = nix::sys::signal::kill(group, Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && self.current_status(job_id, attempt, h) == AgentStatus::Running {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if self.current_status(job_id, attempt, h) == AgentStatus::Running {
                tracing::warn!(job = %job_id, attempt, pid = h.pid, "agent ignored SIGTERM; killing");
                let _ = killpg(group, Signal::SIGKILL);
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline && self.current_status(job_id, attempt, h) == AgentStatus::Running {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        // Whatever the agent left behind in its group (a step's child) goes too.
        let _ = killpg(group, Signal::SIGKILL);
        Ok(self.current_status(job_id, attempt, h))
    }

    async fn list_owned(&self) -> Result<Vec<OwnedAgent>, RuntimeError> {
        let mut out = Vec::new();
        let Ok(jobs) = std::fs::read_dir(&self.inner.cfg.dir) else { return Ok(out) };
        for job in jobs.flatten() {
            let Ok(attempts) = std::fs::read_dir(job.path()) else { continue };
            for attempt in attempts.flatten() {
                let Some(pf) = Self::read_pid_file(&attempt.path().join("pid")) else { continue };
                let status = self.current_status(&pf.job_id, pf.attempt, pf.handle);
                out.push(OwnedAgent {
                    job_id: pf.job_id,
                    attempt: pf.attempt,
                    handle: serde_json::to_value(pf.handle).unwrap_or_default(),
                    status,
                });
            }
        }
        out.sort_by(|a, b| (&a.job_id, a.attempt).cmp(&(&b.job_id, b.attempt)));
        Ok(out)
    }

    async fn adopt(&self, agent: &OwnedAgent) -> Result<(), RuntimeError> {
        let h = parse_handle(&agent.job_id, agent.attempt, &agent.handle)?;
        let key = (agent.job_id.clone(), agent.attempt);
        if self.tracked().insert(key, Tracked { handle: h, exit: None, child: false }).is_some() {
            return Ok(());
        }
        // Not our child: we cannot wait() for it, so watch /proc instead.
        let exits = self.exit_sink();
        let (job_id, attempt) = (agent.job_id.clone(), agent.attempt);
        self.inner.watchers.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                if alive(h) != AgentStatus::Running {
                    ProcessRuntime::record_exit(
                        &exits,
                        &job_id,
                        attempt,
                        AgentStatus::Exited { code: None, signal: None },
                    );
                    return;
                }
            }
        });
        tracing::info!(job = %agent.job_id, attempt = agent.attempt, pid = h.pid, "adopted running agent process");
        Ok(())
    }

    async fn cleanup(&self, job_id: &str, attempt: u32) -> Result<(), RuntimeError> {
        let dir = self.attempt_dir(job_id, attempt);
        // Whether nothing of the agent can reach its directories any more.
        let mut none_left = false;
        if let Some(pf) = Self::read_pid_file(&dir.join("pid")) {
            // An agent that died on its own may have left step processes in its
            // group. The group id cannot have been reused while they live.
            let _ = killpg(Pid::from_raw(pf.handle.pid), Signal::SIGKILL);
            // Under its own uid, nothing it started may outlive it, whatever
            // group or session it moved to.
            if let Some(uid) = pf.handle.uid {
                // It waits for the kills to take effect: not on an async worker.
                none_left = tokio::task::spawn_blocking(move || sandbox::kill_all_of(uid)).await.unwrap_or(false);
                self.inner.uid_claims.release(uid, &dir);
            }
        }
        // Secrets never outlive the attempt, even when its workdir is kept.
        let _ = std::fs::remove_dir_all(dir.join("secrets"));
        let job_dir = self.inner.cfg.dir.join(job_id);
        let keep = self.inner.cfg.keep_workdirs;
        if keep || !none_left || !self.inner.spares.keep(&job_dir, &dir) {
            let _ = std::fs::remove_file(dir.join("pid"));
            let _ = std::fs::remove_dir_all(dir.join("agent"));
            if !keep {
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::remove_dir(&job_dir); // only if empty
            }
        }
        self.tracked().remove(&(job_id.to_string(), attempt));
        self.inner.gates.lock().remove(&(job_id.to_string(), attempt));
        Ok(())
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

    fn isolation(&self) -> Option<Isolation> {
        Some(self.inner.isolation.clone())
    }

    fn releases_with_context(&self) -> bool {
        true
    }

    fn pools(&self) -> bool {
        true
    }

    async fn warm(&self, spec: &WarmSpec) -> Result<WarmAgent, RuntimeError> {
        let serial = self.inner.warm_serial.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-{}-{serial}", spec.agent_spec, std::process::id());
        let pool = self.pool_dir();
        own_dir(&pool, 0o700, None)?;
        let Some((launcher, launcher_args)) = self.inner.cfg.launcher.split_first() else {
            return Err(RuntimeError::Unavailable("no launcher configured for the process runtime".into()));
        };
        // Best effort: without them, its claim makes the directories as a cold start does.
        let staged = match self.stage(&id, spec.outputs.as_deref()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(warm = %id, error = %e, "a warm agent's directories are not made ahead");
                None
            }
        };
        // Nothing of any job: an empty environment, the pool's directory,
        // no output until its binding names the attempt's log.
        // With the sandbox on, the engine's hidden paths: the launcher opens
        // what every attempt may read while it waits.
        let sandboxed = self.inner.cfg.sandbox.enabled;
        let launch = crate::launch::WarmLaunch {
            hidden: sandboxed.then(|| self.inner.cfg.sandbox.hidden.clone()),
            root: None,
            network: (sandboxed && self.inner.isolation.landlock_abi > 0).then_some(spec.network),
            ready: true,
        };
        let child = tokio::process::Command::new(launcher)
            .args(launcher_args)
            .arg(crate::launch::WARM)
            .arg(serde_json::to_string(&launch).unwrap_or_default())
            .env_clear()
            .current_dir(&pool)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(io(format!("start a warm agent through the launcher `{launcher}`")));
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                if let Some(s) = staged {
                    self.unstage(s);
                }
                return Err(e);
            }
        };
        let pid = child
            .id()
            .map(|p| p as i32)
            .ok_or_else(|| RuntimeError::Unavailable("warm agent exited at once".into()))?;
        let handle = ProcessHandle { pid, start_time: procfs::start_time(pid).unwrap_or(0), uid: None };
        let record = self.pool_record(&id);
        std::fs::write(&record, serde_json::to_string(&handle).unwrap_or_default())
            .map_err(io(format!("write {}", record.display())))?;
        let stdin = child.stdin.take().ok_or_else(|| RuntimeError::Unavailable("warm agent has no stdin".into()))?;
        // Its one line once prepared; its binding then points its output at the attempt's log.
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(out) = child.stdout.take() {
            let said = ready.clone();
            self.inner.watchers.spawn(async move {
                let mut line = Vec::new();
                let mut out = tokio::io::BufReader::new(out);
                if tokio::io::AsyncBufReadExt::read_until(&mut out, b'\n', &mut line).await.is_ok()
                    && line == crate::launch::READY
                {
                    said.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        let assignment = Arc::new(Mutex::new(Assignment::Waiting));
        self.watch_child(child, assignment.clone());
        self.inner.warm.lock().insert(id.clone(), WarmProcess { stdin, ready, handle, assignment, staged });
        tracing::debug!(agent_spec = %spec.agent_spec, warm = %id, pid, "warm agent started");
        Ok(WarmAgent { id, spec: spec.clone() })
    }

    fn warm_alive(&self, warm: &WarmAgent) -> bool {
        self.inner.warm.lock().get(&warm.id).is_some_and(|w| *w.assignment.lock() == Assignment::Waiting)
    }

    fn warm_ready(&self, warm: &WarmAgent) -> bool {
        let pool = self.inner.warm.lock();
        pool.get(&warm.id).is_some_and(|w| w.ready.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn warm_handle(&self, warm: &WarmAgent) -> Option<Value> {
        // Its process, and the uid its staged directories were made for
        // (without them, its claim allocates one).
        let pool = self.inner.warm.lock();
        let w = pool.get(&warm.id)?;
        let handle = ProcessHandle { uid: w.staged.as_ref()?.uid, ..w.handle };
        serde_json::to_value(handle).ok()
    }

    async fn claim(&self, req: SpawnRequest, warm: WarmAgent) -> Result<Value, RuntimeError> {
        if let Some(existing) = self.existing(&req) {
            return Ok(existing);
        }
        let gone = || Self::spawn_error(&req, format!("warm agent {} is gone", warm.id), None);
        let Some(w) = self.inner.warm.lock().remove(&warm.id) else { return Err(gone()) };
        let _ = std::fs::remove_file(self.pool_record(&warm.id));
        let p = match self.prepare(&req, w.staged) {
            Ok(p) => p,
            Err(e) => {
                // Never given to another job: it goes.
                let _ = killpg(Pid::from_raw(w.handle.pid), Signal::SIGKILL);
                return Err(e);
            }
        };
        let binding = crate::launch::Binding {
            spec: p.launch,
            command: p.command,
            env: p.env,
            cwd: p.work,
            log: Some(p.log_path),
            files: Vec::new(),
            root_env: Vec::new(),
            context: req.context.clone(),
        };
        let mut message = serde_json::to_vec(&binding)
            .map_err(|e| Self::spawn_error(&req, format!("cannot write the binding: {e}"), None))?;
        message.push(b'\n');
        let handle = ProcessHandle { uid: p.uid, ..w.handle };
        let key = (req.job_id.clone(), req.attempt);
        {
            let mut assignment = w.assignment.lock();
            if *assignment != Assignment::Waiting {
                return Err(gone());
            }
            *assignment = Assignment::Claimed(req.job_id.clone(), req.attempt);
            self.tracked().insert(key.clone(), Tracked { handle, exit: None, child: true });
        }
        self.inner.gates.lock().insert(key, (w.stdin, message));
        Self::write_pid_file(&p.dir, &req, handle)?;
        tracing::info!(job = %req.job_id, attempt = req.attempt, pid = handle.pid, warm = %warm.id, "warm agent claimed (held until its binding)");
        Ok(serde_json::to_value(handle).unwrap_or_default())
    }

    async fn discard(&self, warm: &WarmAgent) -> Result<(), RuntimeError> {
        let _ = std::fs::remove_file(self.pool_record(&warm.id));
        let removed = self.inner.warm.lock().remove(&warm.id);
        if let Some(w) = removed {
            // Its pipe closes as `w` drops: a waiting launcher ends by itself.
            let _ = killpg(Pid::from_raw(w.handle.pid), Signal::SIGKILL);
            if let Some(s) = w.staged {
                self.unstage(s);
            }
        }
        Ok(())
    }

    async fn clear_pools(&self) -> Result<usize, RuntimeError> {
        // An earlier engine's spares: kept by an engine whose cleanup this one cannot vouch for.
        self.inner.spares.clear_others();
        let Ok(entries) = std::fs::read_dir(self.pool_dir()) else { return Ok(0) };
        let mine: Vec<i32> = self.inner.warm.lock().values().map(|w| w.handle.pid).collect();
        let mut cleared = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let record = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<ProcessHandle>(&b).ok());
            let Some(h) = record else { continue };
            if mine.contains(&h.pid) {
                continue;
            }
            if alive(h) == AgentStatus::Running {
                let _ = killpg(Pid::from_raw(h.pid), Signal::SIGKILL);
            }
            let _ = std::fs::remove_file(&path);
            cleared += 1;
        }
        // What was staged for warm agents of an engine before this one (their
        // uid claims go stale with it): everything staged but this engine's own.
        let (roots, logs): (Vec<PathBuf>, Vec<PathBuf>) = self
            .inner
            .warm
            .lock()
            .values()
            .filter_map(|w| w.staged.as_ref().map(|s| (s.root.clone(), s.log_root.clone())))
            .unzip();
        for (dir, keep) in [(self.staged_dir(), roots), (self.staged_logs(), logs)] {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if !keep.contains(&entry.path()) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(cleared)
    }
}
