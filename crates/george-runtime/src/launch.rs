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
//!    handle is stored) and exits with [`GATE_CLOSED`] otherwise;
//! 6. exec of the agent's program, stdin from `/dev/null` — or, when the
//!    program is George's own agent, the agent in this very process (the
//!    caller's `in_process`), which saves a second exec of the binary. The
//!    command line stays `… -- george agent run`, so `ps` shows the agent.
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
    #[error("usage: sandbox-exec <spec JSON> -- <program> [args…]")]
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

/// Runs a command in this process instead of exec'ing it, when it can:
/// returns its exit code, or `None` to have it exec'd.
pub type InProcess<'a> = &'a dyn Fn(&[String]) -> Option<i32>;

/// The launcher's whole life: `args` are `<spec JSON> -- <program> [args…]`.
/// Never returns; exits with the agent's program (exec, or `in_process`) or
/// with an error code.
pub fn main(args: &[String], in_process: InProcess<'_>) -> ! {
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
fn run(args: &[String], in_process: InProcess<'_>) -> Result<i32, LaunchError> {
    let (spec, command) = match args {
        [spec, dashes, command @ ..] if dashes == "--" && !command.is_empty() => (spec, command),
        _ => return Err(LaunchError::NoProgram),
    };
    let spec: LaunchSpec = serde_json::from_str(spec)?;
    let (program, args) = command.split_first().ok_or(LaunchError::NoProgram)?;
    if let Some(bytes) = spec.memory {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, bytes, bytes)
            .map_err(sys("setrlimit"))?;
    }
    // Built while still privileged: the granted paths are opened as the engine's user.
    let ruleset = match &spec.sandbox {
        Some(s) if s.abi > 0 => Some(sandbox::ruleset(&s.hidden, &s.grants)?),
        _ => None,
    };
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
    // The gate: the engine says `go` once it has stored this process's handle.
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(sys("read the gate"))?;
    if line.trim_end() != "go" {
        return Ok(GATE_CLOSED);
    }
    let null = std::fs::File::open("/dev/null").map_err(sys("open /dev/null"))?;
    // The gate's pipe is no longer needed: the agent reads nothing.
    nix::unistd::dup2_stdin(&null).map_err(sys("dup2 /dev/null"))?;
    if let Some(code) = in_process(command) {
        return Ok(code);
    }
    let err = std::process::Command::new(program).args(args).exec();
    Err(LaunchError::Sys { what: "exec the agent's program", source: err })
}
