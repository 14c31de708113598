//! How an agent process starts without the engine forking itself.
//!
//! The engine spawns the launcher — George's own binary, `george
//! sandbox-exec <spec> -- <program> <args>…` — with no code of its own
//! between fork and exec, so
//! the standard library uses `posix_spawn` (a `vfork`-style clone: the
//! engine's page tables are not copied, and its memory does not turn
//! copy-on-write while the child starts). The launcher, a fresh process,
//! then does what used to run in the forked child:
//!
//! 1. its memory limit (`RLIMIT_AS`);
//! 2. its Landlock ruleset, built here from the spec (walking the readable
//!    roots and opening the granted paths is the child's work now, not the
//!    engine's);
//! 3. the attempt's uid and gid, no supplementary groups;
//! 4. `landlock_restrict_self` (or `no_new_privs` without Landlock);
//! 5. the gate: it waits for the engine's `go` on stdin (sent once the
//!    handle is stored; `go <context>` when the engine delivers the agent's
//!    context with it) and exits with [`GATE_CLOSED`] otherwise;
//! 6. exec of the agent's program, stdin from `/dev/null` — or, when the
//!    program is George's own agent, the agent in this very process (the
//!    caller's `in_process`), which saves a second exec of the binary. The
//!    command line stays `… -- george agent run`, so `ps` shows the agent.
//!    That agent gets the context delivered with the gate or the binding,
//!    and starts its first step without a round trip to the engine.
//!
//! A *warm* launcher (`george sandbox-exec --warm [<WarmLaunch JSON>]`, a
//! pooled agent) starts with no environment or files of any job, and waits
//! on stdin for its [`Binding`] instead of `go`: the spec, the command, the
//! environment, the working directory, the log file and (container
//! runtimes) the attempt's token and secret files. It then does steps 1–4
//! and 6 for that binding; while it waits, a program run in process does
//! the start-up that needs nothing of a job ([`InProcess::prepare`]).
//! End-of-file before a binding (its engine died, or
//! dropped the channel) ends it with [`GATE_CLOSED`], as a closed gate does.
//!
//! Anything that fails before the exec is written to stderr (the attempt's
//! log) and ends the launcher with [`CONFINE_FAILED`]: nothing of the agent
//! ever runs unconfined.

use crate::sandbox::{self, Grants};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// The exit code of an agent whose gate closed before it was released.
pub const GATE_CLOSED: i32 = 97;
/// The exit code of a launcher that could not confine itself.
pub const CONFINE_FAILED: i32 = 96;
/// The launcher's subcommand in George's binary.
pub const SUBCOMMAND: &str = "sandbox-exec";
/// The launcher's argument that makes it a warm (pooled) agent.
pub const WARM: &str = "--warm";

/// What a warm launcher becomes: one attempt's agent. It travels as one
/// line of JSON on the launcher's stdin, which only the engine holds.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// What to apply before the program runs.
    pub spec: LaunchSpec,
    /// The agent's command line.
    pub command: Vec<String>,
    /// Its environment (added to the launcher's own, which holds nothing of any job).
    pub env: Vec<(String, String)>,
    /// Its working directory; empty: the launcher's own.
    #[serde(default, skip_serializing_if = "is_empty_path")]
    pub cwd: PathBuf,
    /// The file its output goes to (appended), when not the launcher's own stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
    /// Files to write before confinement (the token and secrets of a
    /// container's agent), each in a directory created private (0700). A
    /// relative path is under the launcher's [`WarmLaunch::root`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<BoundFile>,
    /// Variables whose value is a path under the launcher's
    /// [`WarmLaunch::root`] (given relative to it): the engine names the
    /// file, the launcher knows where its root is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub root_env: Vec<(String, PathBuf)>,
    /// The agent's context ([`crate::SpawnRequest::context`]), for an agent
    /// run in the launcher's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

fn is_empty_path(p: &std::path::Path) -> bool {
    p.as_os_str().is_empty()
}

/// What a warm launcher started with [`WarmLaunch::ready`] prints once prepared.
pub const READY: &[u8] = b"ready\n";

/// What a warm launcher is started with (its one argument after `--warm`):
/// nothing of any job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmLaunch {
    /// The engine's hidden paths, when the sandbox is on: the launcher opens
    /// what every attempt may read while it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<Vec<PathBuf>>,
    /// The directory relative bound files go under (a container's private
    /// in-memory `/run/george`), where the launcher finds it mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// The network policy of the pool's agents, when the sandbox is on and
    /// enforced: the launcher begins their Landlock ruleset while it waits
    /// (what every attempt may read), and adds the attempt's grants when
    /// bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<george_core::manifest::NetworkPolicy>,
    /// Whether it says when it is prepared and waits for its binding: one
    /// line, `ready`, on its standard output (the process runtime's
    /// launchers; a container's output is its agent's log).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ready: bool,
}

impl WarmLaunch {
    /// A container's warm launcher: bound files go under its private
    /// in-memory `/run/george`.
    pub fn in_container() -> Self {
        Self { hidden: None, root: Some(crate::CONTAINER_RUN_DIR.into()), network: None, ready: false }
    }

    /// The container's command line: `george sandbox-exec --warm <this>`.
    pub fn command(&self) -> Vec<String> {
        vec!["george".into(), SUBCOMMAND.into(), WARM.into(), serde_json::to_string(self).unwrap_or_default()]
    }

    /// Where a bound path is: under [`WarmLaunch::root`] when relative.
    fn place(&self, path: &std::path::Path) -> PathBuf {
        match &self.root {
            Some(root) if path.is_relative() => root.join(path),
            _ => path.to_path_buf(),
        }
    }
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binding")
            .field("command", &self.command)
            .field("cwd", &self.cwd)
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

/// A file a binding carries (its content never appears in `Debug` output).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundFile {
    /// Where it goes.
    pub path: PathBuf,
    /// What it holds.
    pub content: Vec<u8>,
}

/// What the launcher applies before it runs the agent (the agent's command
/// follows it on the command line, after `--`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchSpec {
    /// The address-space limit, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// The attempt's uid (and gid), when the engine is root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The sandbox, when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandboxing>,
}

/// The Landlock side of a launch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sandboxing {
    /// The kernel's Landlock ABI as the engine probed it (0: none).
    pub abi: i32,
    /// Paths no agent may reach (the engine's data directory).
    pub hidden: Vec<PathBuf>,
    /// This attempt's grants.
    pub grants: Grants,
}

/// Why a launch failed before the agent's program ran.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The spec could not be read.
    #[error("bad launch spec: {0}")]
    Spec(#[from] serde_json::Error),
    /// No program to run.
    #[error("usage: sandbox-exec <spec JSON> -- <program> [args…] | sandbox-exec --warm")]
    NoProgram,
    /// The sandbox could not be built.
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Names the system call that failed (`std::io` and `nix` errors alike).
fn sys<E: Into<std::io::Error>>(what: &'static str) -> impl FnOnce(E) -> LaunchError {
    move |e| LaunchError::Sys { what, source: e.into() }
}

/// A container agent's token and secret files as its binding carries them
/// (relative to the warm launcher's root: `agent/token`, `secrets/<name>`),
/// and the variables that name them (`GEORGE_AGENT_TOKEN_FILE`,
/// `GEORGE_SECRETS_DIR`; none when there is no such file).
pub fn credentials(req: &crate::SpawnRequest) -> (Vec<BoundFile>, Vec<(String, PathBuf)>) {
    let (mut files, mut env) = (Vec::new(), Vec::new());
    if !req.secrets.is_empty() {
        env.push(("GEORGE_SECRETS_DIR".to_string(), PathBuf::from("secrets")));
        for s in &req.secrets {
            files.push(BoundFile { path: PathBuf::from("secrets").join(&s.name), content: s.content.clone() });
        }
    }
    if let Some(token) = &req.agent_token {
        let path = PathBuf::from("agent").join(crate::AGENT_TOKEN_FILE);
        env.push((crate::AGENT_TOKEN_FILE_ENV.to_string(), path.clone()));
        files.push(BoundFile { path, content: token.0.clone().into_bytes() });
    }
    (files, env)
}

/// A program the launcher may run in its own process instead of exec'ing it.
pub trait InProcess {
    /// Runs `command` in this process, when it can, with the context its
    /// release carried: returns its exit code, or `None` to have it exec'd.
    fn run(&self, command: &[String], context: Option<String>) -> Option<i32>;

    /// A warm launcher's, before its binding: the start-up work of the
    /// program that needs nothing of any job (process-wide initialisation),
    /// done while the launcher waits rather than after its release. It is
    /// given nothing, and keeps nothing a job could tell from another.
    fn prepare(&self) {}
}

/// Any function is a program run in process with nothing to prepare.
impl<F: Fn(&[String], Option<String>) -> Option<i32>> InProcess for F {
    fn run(&self, command: &[String], context: Option<String>) -> Option<i32> {
        self(command, context)
    }
}

/// The gate's message: `go`, or `go <context>`.
pub fn gate_message(context: Option<&str>) -> Vec<u8> {
    match context {
        Some(c) => format!("go {c}\n").into_bytes(),
        None => b"go\n".to_vec(),
    }
}

/// What a gate's line says: released (with the context it carries, if
/// any), or not (`None`).
fn released(line: &str) -> Option<Option<String>> {
    match line.trim_end().split_once(' ') {
        None if line.trim_end() == "go" => Some(None),
        Some(("go", context)) if !context.is_empty() => Some(Some(context.to_string())),
        _ => None,
    }
}

/// The launcher's whole life: `args` are `<spec JSON> -- <program> [args…]`.
/// Never returns; exits with the agent's program (exec, or `in_process`) or
/// with an error code.
pub fn main(args: &[String], in_process: &dyn InProcess) -> ! {
    let code = match run(args, in_process) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("george: the agent could not be started: {e}");
            CONFINE_FAILED
        }
    };
    std::process::exit(code)
}

/// Confines this process, waits at the gate and runs the program. Returns
/// the exit code of a closed gate or of an agent run in this process, or an
/// error.
fn run(args: &[String], in_process: &dyn InProcess) -> Result<i32, LaunchError> {
    match args {
        [warm] if warm == WARM => return run_warm(WarmLaunch::default(), in_process),
        [warm, launch] if warm == WARM => return run_warm(serde_json::from_str(launch)?, in_process),
        _ => {}
    }
    let (spec, command) = match args {
        [spec, dashes, command @ ..] if dashes == "--" && !command.is_empty() => (spec, command),
        _ => return Err(LaunchError::NoProgram),
    };
    let spec: LaunchSpec = serde_json::from_str(spec)?;
    confine(&spec, None, None)?;
    // The gate: the engine says `go` once it has stored this process's handle.
    match read_line()?.as_deref().and_then(released) {
        Some(context) => start(command, context, in_process),
        None => Ok(GATE_CLOSED),
    }
}

/// A warm launcher: waits for its binding, takes on its environment, files
/// and confinement, and runs its program. Given the engine's hidden paths,
/// it opens what every attempt may read before the binding arrives.
fn run_warm(launch: WarmLaunch, in_process: &dyn InProcess) -> Result<i32, LaunchError> {
    let idle = IdleWhileWarm::enter();
    // Only at the idle policy: a launcher that cannot wait there (a container
    // with no capability) would compete with what starts the next agents
    // (the Docker Engine filling the pool: 16.5-16.9 warm containers/s with
    // it, 20.1-23.7 without, against 23-27 bare) for a first step 4 ms faster.
    if idle.0 {
        prefault_program();
    }
    let readable = launch.hidden.as_deref().map(sandbox::Readable::open);
    in_process.prepare();
    // Best effort: without it, the whole ruleset is built once bound.
    let begun = readable.as_ref().zip(launch.network).and_then(|(r, network)| r.begin(network).ok());
    // The begun ruleset holds the paths: their descriptors close now, not in the agent's start.
    let readable = readable.map(|mut r| {
        if begun.is_some() {
            r.close();
        }
        r
    });
    if launch.ready {
        use std::io::Write;
        // Best effort: an engine not listening leaves it unready, never stopped.
        let mut out = std::io::stdout();
        let _ = out.write_all(READY).and_then(|()| out.flush());
    }
    let Some(line) = read_line()?.filter(|l| !l.trim().is_empty()) else { return Ok(GATE_CLOSED) };
    idle.leave()?;
    let binding: Binding = serde_json::from_str(&line)?;
    if let Some(log) = &binding.log {
        let file = std::fs::OpenOptions::new().append(true).open(log).map_err(sys("open the agent's log"))?;
        nix::unistd::dup2_stdout(&file).map_err(sys("dup2 the log"))?;
        nix::unistd::dup2_stderr(&file).map_err(sys("dup2 the log"))?;
    }
    for f in &binding.files {
        write_private(&launch.place(&f.path), &f.content).map_err(sys("write the agent's files"))?;
    }
    // One thread so far: changing the environment races with nothing. What
    // the launcher started with stays (nothing on the process runtime, the
    // image's own on a container runtime); the binding's is added.
    for (name, value) in &binding.env {
        std::env::set_var(name, value);
    }
    for (name, path) in &binding.root_env {
        std::env::set_var(name, launch.place(path));
    }
    if !is_empty_path(&binding.cwd) {
        std::env::set_current_dir(&binding.cwd).map_err(sys("enter the agent's working directory"))?;
    }
    let readable = readable.filter(|r| binding.spec.sandbox.as_ref().is_some_and(|s| r.hides(&s.hidden)));
    let begun = begun
        .filter(|b| readable.is_some() && binding.spec.sandbox.as_ref().is_some_and(|s| b.serves(s.grants.network)));
    confine(&binding.spec, readable, begun)?;
    start(&binding.command, binding.context, in_process)
}

/// A warm launcher waits at the lowest priority (`SCHED_IDLE`): what it
/// does before its binding (faulting its program in, opening the paths
/// every attempt may read) takes only CPU that admitted work leaves idle,
/// so a refill never slows a running job. It goes back to the normal
/// policy when its binding arrives, before anything of the job runs. Only
/// a launcher that can go back (one with `CAP_SYS_NICE`, as the engine's
/// root launcher) goes down: one that could not would run its job idle.
struct IdleWhileWarm(bool);

impl IdleWhileWarm {
    #[allow(unsafe_code)]
    fn set(policy: nix::libc::c_int) -> bool {
        let param = nix::libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler on this thread (pid 0) with a valid
        // parameter; the launcher has one thread here.
        unsafe { nix::libc::sched_setscheduler(0, policy, &param) == 0 }
    }

    fn enter() -> Self {
        // Down and back up once first: only a launcher that can come back goes down.
        let can = Self::set(nix::libc::SCHED_IDLE) && Self::set(nix::libc::SCHED_OTHER);
        Self(can && Self::set(nix::libc::SCHED_IDLE))
    }

    fn leave(self) -> Result<(), LaunchError> {
        if self.0 && !Self::set(nix::libc::SCHED_OTHER) {
            return Err(LaunchError::Sys {
                what: "leave the idle scheduling policy",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// The engine's side of [`IdleWhileWarm`]: puts a bound warm launcher
/// (process `pid`, the engine's child) back to the normal policy as its
/// binding is written, so that it reads the binding at once rather than
/// when the CPU has nothing else to do (then it has: the job in flight).
/// Best effort: an engine without `CAP_SYS_NICE` cannot, and the launcher
/// leaves the idle policy itself once it runs.
#[allow(unsafe_code)]
pub fn wake_from_idle(pid: i32) {
    let param = nix::libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler on a process of the engine's own, with a
    // valid parameter; it changes only that process's scheduling policy.
    unsafe {
        nix::libc::sched_setscheduler(pid, nix::libc::SCHED_OTHER, &param);
    }
}

/// Faults in every page of this program's own mappings while the agent is
/// warm, so that running the agent after its binding touches memory, not
/// the disk (or a container's overlay filesystem): the work of starting is
/// done before the job arrives. Best effort: a kernel without
/// `MADV_POPULATE_READ` (before 5.14) leaves the pages to be faulted later.
#[allow(unsafe_code)]
fn prefault_program() {
    const MADV_POPULATE_READ: nix::libc::c_int = 22;
    let (Ok(exe), Ok(maps)) = (std::fs::read_link("/proc/self/exe"), std::fs::read_to_string("/proc/self/maps")) else {
        return;
    };
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        if fields.nth(3).map(std::path::Path::new) != Some(exe.as_path()) || !perms.starts_with('r') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else { continue };
        // SAFETY: advice on a mapping of this process's own executable, which
        // stays mapped for the life of the process; MADV_POPULATE_READ only
        // faults its pages in and changes no memory.
        unsafe {
            nix::libc::madvise(start as *mut nix::libc::c_void, end - start, MADV_POPULATE_READ);
        }
    }
}

/// Writes a bound file (0400) in a private directory (0700).
fn write_private(path: &std::path::Path, content: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o400).open(path)?;
    std::io::Write::write_all(&mut file, content)
}

/// One line from stdin; `None` at end of file.
fn read_line() -> Result<Option<String>, LaunchError> {
    let mut line = String::new();
    let n = std::io::stdin().lock().read_line(&mut line).map_err(sys("read the gate"))?;
    Ok((n > 0).then_some(line))
}

/// Steps 1–4: the memory limit, the ruleset (`begun` while warm, or from
/// `readable` when opened already), the uid, the restriction.
fn confine(
    spec: &LaunchSpec,
    readable: Option<sandbox::Readable>,
    begun: Option<sandbox::Begun>,
) -> Result<(), LaunchError> {
    if let Some(bytes) = spec.memory {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, bytes, bytes)
            .map_err(sys("setrlimit"))?;
    }
    // Built while still privileged: the granted paths are opened as the engine's user.
    let ruleset = match (&spec.sandbox, begun, &readable) {
        (Some(s), Some(b), _) if s.abi > 0 => Some(sandbox::finish(b, &s.grants)?),
        (Some(s), _, Some(r)) if s.abi > 0 => Some(sandbox::ruleset_with(r, &s.grants)?),
        (Some(s), _, None) if s.abi > 0 => Some(sandbox::ruleset(&s.hidden, &s.grants)?),
        _ => None,
    };
    // The opened paths go before the agent runs.
    drop(readable);
    if let Some(uid) = spec.uid {
        let id = (nix::unistd::Uid::from_raw(uid), nix::unistd::Gid::from_raw(uid));
        nix::unistd::setgroups(&[]).map_err(sys("setgroups"))?;
        nix::unistd::setresgid(id.1, id.1, id.1).map_err(sys("setresgid"))?;
        nix::unistd::setresuid(id.0, id.0, id.0).map_err(sys("setresuid"))?;
    }
    match ruleset {
        Some(rs) => {
            rs.restrict_self().map_err(|e| sandbox::SandboxError::Landlock(e.to_string()))?;
        }
        None if spec.sandbox.is_some() => {
            nix::sys::prctl::set_no_new_privs().map_err(sys("no_new_privs"))?;
        }
        None => {}
    }
    Ok(())
}

/// Step 6: the program, stdin from `/dev/null`, in this process or exec'd.
fn start(command: &[String], context: Option<String>, in_process: &dyn InProcess) -> Result<i32, LaunchError> {
    let (program, args) = command.split_first().ok_or(LaunchError::NoProgram)?;
    let null = std::fs::File::open("/dev/null").map_err(sys("open /dev/null"))?;
    // The gate's pipe is no longer needed: the agent reads nothing.
    nix::unistd::dup2_stdin(&null).map_err(sys("dup2 /dev/null"))?;
    if let Some(code) = in_process.run(command, context) {
        return Ok(code);
    }
    let err = std::process::Command::new(program).args(args).exec();
    Err(LaunchError::Sys { what: "exec the agent's program", source: err })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_releases_with_or_without_the_agents_context() {
        assert_eq!(released("go\n"), Some(None));
        let context = r#"{"job":{"id":"j","note":"a b"}}"#;
        let line = String::from_utf8(gate_message(Some(context))).unwrap();
        assert_eq!(released(&line), Some(Some(context.to_string())));
        assert_eq!(String::from_utf8(gate_message(None)).unwrap(), "go\n");
        assert_eq!(released("go \n"), Some(None), "trailing blanks are no context");
        for closed in ["", "\n", "stop\n", "gone\n", "goo {}\n"] {
            assert_eq!(released(closed), None, "{closed:?}");
        }
    }
}
