//! `george`: the single binary. It only wires the crates together: the
//! engine (`serve`, `up`), the reference agent (`agent run`) and the CLI
//! that talks to a running engine.

mod bench;
mod bench_docker;
mod bench_history;
mod bench_proxy;
mod chaos;
mod cli;
mod commands;
mod config;
mod contexts;
mod engine_config;
mod github_setup;
mod jira_setup;
mod k8s;
mod orchestrate;
mod output;
mod recac_flags;
mod serve;
mod telemetry;
mod up;
mod validate;

use clap::Parser;
use cli::{Cli, Command};

fn main() {
    // The agent launcher (see `george_runtime::launch`) starts before
    // anything else: it must be quick, and it is no command a user types.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == george_runtime::launch::SUBCOMMAND) {
        george_runtime::launch::main(&args[2..], &OwnAgent::default());
    }
    if args.get(1).is_some_and(|a| a == "orchestrate") {
        // As recac's orchestrator: a `.env` in the working directory sets the
        // variables the environment does not (before they are read as flags').
        if let Err(e) = dotenvy::dotenv() {
            if !e.not_found() {
                eprintln!("error: .env: {e}");
                std::process::exit(2);
            }
        }
    }
    let cli = Cli::parse();
    if !prints_for_a_pipe(&cli.command) {
        std::process::exit(run(cli));
    }
    // A reader that closes the pipe early (`| head`) has what it wanted: the
    // command ends quietly with success, as `ls` would. (The Rust runtime
    // ignores SIGPIPE, so the write fails and `println!` panics; that panic,
    // and only that one, is the end of the command.)
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !broken_pipe(info.payload()) {
            default_hook(info)
        }
    }));
    let code = match std::panic::catch_unwind(|| run(cli)) {
        Ok(code) => code,
        Err(payload) if broken_pipe(payload.as_ref()) => 0,
        Err(payload) => std::panic::resume_unwind(payload),
    };
    std::process::exit(code);
}

/// Whether a command only prints what it is asked for (a listing, a
/// completion script, manifests), so that a reader closing the pipe early
/// simply ends it.
fn prints_for_a_pipe(command: &Command) -> bool {
    !matches!(
        command,
        Command::Serve(_) | Command::Up(_) | Command::Orchestrate(_) | Command::Agent { .. } | Command::Bench(_)
    )
}

/// Whether a panic is a write's to a closed pipe (`println!`'s: "failed
/// printing to stdout: Broken pipe (os error 32)").
fn broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    text.contains("Broken pipe (os error 32)") || text.contains("kind: BrokenPipe")
}

/// Whether `command` is this binary's own `agent run`, which the launcher
/// may then run in its own process instead of exec'ing the binary again.
/// Judged by the file itself (device and inode), not its path: an agent
/// under its own uid is given a link to the binary when the binary's own
/// path is not reachable by that uid (a checkout in a private home), and the
/// link is the same file.
fn own_agent(command: &[String]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let file = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    // The running binary, whatever path it was started by.
    let me = file(std::path::Path::new("/proc/self/exe"));
    // A bare name is looked up on the PATH, as exec would (a container's `george`).
    let resolve = |program: &str| -> Option<(u64, u64)> {
        if program.contains('/') {
            return file(std::path::Path::new(program));
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).find_map(|dir| file(&dir.join(program)))
    };
    match command {
        [program, agent, run] if agent == "agent" && run == "run" => me.is_some() && resolve(program) == me,
        _ => false,
    }
}

/// The launcher's program in its own process: George's own agent, whose
/// start-up a warm launcher does ahead (its async runtime, what its log
/// filter and its HTTP client initialise once per process).
#[derive(Default)]
struct OwnAgent {
    runtime: std::cell::RefCell<Option<tokio::runtime::Runtime>>,
}

impl george_runtime::launch::InProcess for OwnAgent {
    fn run(&self, command: &[String], context: Option<String>) -> Option<i32> {
        own_agent(command).then(|| run_on(agent_cli(command, context), self.runtime.take()))
    }

    fn prepare(&self) {
        prefault_stack();
        telemetry::prepare();
        george_agent::prepare();
        *self.runtime.borrow_mut() = agent_runtime().ok();
    }
}

/// How deep into the main thread's stack the agent's start goes (its
/// command's futures are large).
const AGENT_STACK: usize = 512 << 10;

/// Touches [`AGENT_STACK`] of this thread's stack while the launcher waits,
/// so that the agent's start, after its binding, does not fault it in page
/// by page (80 µs of a warm agent's 0.7 ms to its first step).
#[inline(never)]
fn prefault_stack() {
    let mut below = [0u8; AGENT_STACK];
    for page in below.iter_mut().step_by(4096) {
        *page = std::hint::black_box(1);
    }
    std::hint::black_box(&below);
}

/// The agent's async runtime: one thread keeps its footprint (and its
/// address space under a memory limit) small.
fn agent_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// The command line of an agent the launcher runs in its own process, with
/// the context its release carried. `george agent run`, the agent of every
/// AgentSpec without a command of its own, is built without the parser:
/// parsing builds the whole command tree, half a millisecond of every
/// agent's start.
fn agent_cli(command: &[String], context: Option<String>) -> Cli {
    if command.get(1..).is_some_and(|rest| rest == ["agent", "run"]) {
        return Cli {
            server: None,
            token: None,
            token_file: None,
            context: None,
            output: cli::Format::Table,
            no_headers: false,
            log_json: false,
            command: Command::Agent { command: cli::AgentCommand::Run { context } },
        };
    }
    let mut cli = Cli::parse_from(command);
    if let Command::Agent { command: cli::AgentCommand::Run { context: bound } } = &mut cli.command {
        *bound = context;
    }
    cli
}

/// Runs one command of the CLI to its end; its exit code.
fn run(cli: Cli) -> i32 {
    run_on(cli, None)
}

/// [`run`], on `runtime` when one was built ahead.
fn run_on(cli: Cli, runtime: Option<tokio::runtime::Runtime>) -> i32 {
    let default_log = match &cli.command {
        // recac's `-v`: debug logging.
        Command::Orchestrate(o) if o.verbose => {
            "info,george=debug,george_engine=debug,george_sources=debug,george_jira=debug,george_runtime=debug"
        }
        Command::Serve(_) | Command::Orchestrate(_) => "info",
        Command::Agent { .. } => "info",
        _ => "warn",
    };
    let traces = match telemetry::init(default_log, cli.log_json, telemetry::settings(&cli.command).as_ref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 1;
        }
    };
    let runtime = match (runtime, &cli.command) {
        (Some(ready), Command::Agent { .. }) => Ok(ready),
        (_, Command::Agent { .. }) => agent_runtime(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let code = runtime.block_on(commands::dispatch(cli));
    // The process exits now: do not wait for blocking work still running
    // (a connection attempt to an unreachable database must not hold up a
    // replica that stops because it lost its lease).
    runtime.shutdown_background();
    if let Some(t) = traces {
        t.shutdown();
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_command_line_is_what_the_parser_would_make() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let fast = agent_cli(&argv(&["/usr/bin/george", "agent", "run"]), None);
        let parsed = Cli::try_parse_from(argv(&["/usr/bin/george", "agent", "run"])).unwrap();
        // What the agent uses of it (its API address and token come from its own environment).
        assert_eq!(format!("{:?}", fast.command), format!("{:?}", parsed.command));
        assert_eq!((fast.output, fast.no_headers, fast.log_json), (parsed.output, parsed.no_headers, parsed.log_json));
        // Anything else is parsed.
        let other = agent_cli(&argv(&["george", "agent", "run", "--log-json"]), Some("{}".into()));
        assert!(other.log_json);
        // The context a release carried reaches the agent either way.
        let bound = |cli: Cli| match cli.command {
            Command::Agent { command: cli::AgentCommand::Run { context } } => context,
            _ => None,
        };
        assert_eq!(bound(other), Some("{}".to_string()));
        assert_eq!(bound(agent_cli(&argv(&["/usr/bin/george", "agent", "run"]), Some("{}".into()))), Some("{}".into()));
    }
}
