//! The command line.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

const ORCHESTRATE_EXAMPLES: &str =
    "Examples:\n  george orchestrate --poller jira --jira-label agent\n  george orchestrate --poller file --interval 30s";

/// George: a reconciling orchestrator for AI agents.
#[derive(Debug, Parser)]
#[command(name = "george", version, about, propagate_version = true)]
pub struct Cli {
    /// Engine API address (for commands that talk to a running engine);
    /// else the context's, else http://127.0.0.1:8080.
    #[arg(long, global = true, env = "GEORGE_SERVER")]
    pub server: Option<String>,
    /// Operator token; else --token-file, the context's token file, or <GEORGE_DATA_DIR or .george>/operator-token.
    #[arg(long, global = true, env = "GEORGE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the operator token.
    #[arg(long, global = true, env = "GEORGE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The context (a named engine, `george config get-contexts`) to use
    /// instead of the current one.
    #[arg(id = "engine_context", long = "engine", global = true, env = "GEORGE_CONTEXT", value_name = "CONTEXT")]
    pub context: Option<String>,
    /// Output format: tables, `wide` tables (every cell whole), `name` (one `kind/name` a line), JSON or YAML.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Tables without their header row.
    #[arg(long, global = true)]
    pub no_headers: bool,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// `george triggers …`.
#[derive(Debug, Subcommand)]
pub enum TriggersCommand {
    /// Fire a trigger once now, by hand (as its schedule or an event would).
    #[command(
        after_help = "Examples:\n  george triggers fire nightly-report\n  george triggers fire nightly-report -o json"
    )]
    Fire {
        /// The trigger's name.
        name: String,
    },
    /// A trigger with its recent history: fires, failures, suspensions.
    #[command(
        after_help = "Examples:\n  george triggers get nightly-report\n  george triggers get nightly-report -o json"
    )]
    Get {
        /// The trigger's name.
        name: String,
    },
    /// Suspend a trigger: its schedule and webhook events stop firing it
    /// (times that pass while suspended are not made up); `fire` still works.
    #[command(after_help = "Examples:\n  george triggers suspend nightly-report --reason \"migrating the warehouse\"")]
    Suspend {
        /// The trigger's name.
        name: String,
        /// Why (recorded in its history and the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a suspended trigger: its schedule goes on from now.
    #[command(after_help = "Examples:\n  george triggers resume nightly-report")]
    Resume {
        /// The trigger's name.
        name: String,
    },
}

/// What `jobs ls --sort-by` orders by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobSort {
    /// The job id.
    Id,
    /// The status, in lifecycle order.
    Status,
    /// The priority class, P0 first.
    Priority,
    /// The template.
    Template,
    /// Creation time, newest first.
    Created,
    /// Last change, newest first.
    Updated,
}

/// `george config`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Add or change a context: the engine at --server (default
    /// http://127.0.0.1:8080) with the token in --token-file.
    #[command(
        after_help = "Examples:\n  george config set-context local --server http://127.0.0.1:8080 --token-file .george/operator-token --use\n  george config set-context prod --server https://george.example.com --token-file ~/.george-prod-token"
    )]
    SetContext {
        /// Its name.
        name: String,
        /// Make it the current context too.
        #[arg(long = "use")]
        use_it: bool,
    },
    /// Make a context the current one.
    #[command(after_help = "Examples:\n  george config use-context prod")]
    UseContext {
        /// Its name.
        name: String,
    },
    /// List the contexts (`*` marks the current one).
    #[command(after_help = "Examples:\n  george config get-contexts")]
    GetContexts,
    /// Print the current context's name.
    #[command(after_help = "Examples:\n  george config current-context")]
    CurrentContext,
    /// Remove a context.
    #[command(after_help = "Examples:\n  george config delete-context old")]
    DeleteContext {
        /// Its name.
        name: String,
    },
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Readable tables, as wide as the terminal.
    Table,
    /// Tables with every cell whole.
    Wide,
    /// One `kind/name` a line (lists of jobs, agents, events).
    Name,
    /// JSON, for scripts.
    Json,
    /// YAML.
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the engine and its API.
    #[command(
        after_help = "Examples:\n  george serve --manifests manifests/ --listen 127.0.0.1:8080\n  george serve --config george-config.yaml"
    )]
    Serve(Box<ServeArgs>),
    /// Quickstart: run the engine on a folder of manifests and show progress.
    #[command(
        after_help = "Examples:\n  george up examples/quickstart --once\n  george up my-jobs --listen 127.0.0.1:9090 --data-dir /var/lib/george"
    )]
    Up(UpArgs),
    /// The recac orchestrator's command line: poll Jira or a work file and run agents.
    #[command(
        after_help = ORCHESTRATE_EXAMPLES,
        after_long_help = format!("{ORCHESTRATE_EXAMPLES}\n\n{}", crate::recac_flags::help())
    )]
    Orchestrate(Box<crate::orchestrate::OrchestrateArgs>),
    /// Check a folder of manifests.
    #[command(
        after_help = "Examples:\n  george validate examples/quickstart\n  george validate manifests/jobs/nightly.yaml -o json"
    )]
    Validate {
        /// The folder (or a single file).
        path: PathBuf,
    },
    /// Jobs.
    #[command(
        subcommand,
        after_help = "Examples:\n  george jobs ls --status failed\n  george jobs submit write-report -p title=Weekly --wait"
    )]
    Jobs(JobsCommand),
    /// Agent instances.
    #[command(subcommand, after_help = "Examples:\n  george agents ls\n  george agents ls --all -o wide")]
    Agents(AgentsCommand),
    /// The audit log.
    #[command(
        after_help = "Examples:\n  george events                 # the newest 100\n  george events --limit 20      # the newest 20\n  george events --since 1200    # every event after 1200, oldest first\n  george events -w -o json      # the newest 100, then each new one, as JSON lines"
    )]
    Events {
        /// Events after this sequence number, oldest first; without it, the newest ones.
        #[arg(long)]
        since: Option<i64>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// After the list, print each new event as it happens, until interrupted.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Sync every source now and show their state.
    #[command(after_help = "Examples:\n  george sync")]
    Sync,
    /// Delete finished jobs past their retention now, with their records,
    /// logs, outputs and events (the engine also does this on its own).
    #[command(after_help = "Examples:\n  george gc --dry-run\n  george gc")]
    Gc {
        /// Only show what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// The agent registry: AgentSpecs with their state and health
    /// (`george registry find --capability X` reads as in the seed).
    #[command(after_help = "Examples:\n  george registry\n  george registry find --capability git")]
    Registry {
        /// Optional `find`, for readability.
        #[arg(value_parser = ["find"], hide = true)]
        verb: Option<String>,
        /// Only this role (`spec.type`).
        #[arg(long = "type")]
        agent_type: Option<String>,
        /// Only this chapter.
        #[arg(long)]
        chapter: Option<String>,
        /// Only agents with this capability.
        #[arg(long)]
        capability: Option<String>,
        /// Only this lifecycle state (dormant, awakening, active, cooling).
        #[arg(long)]
        status: Option<String>,
    },
    /// Triggers and their next fire times.
    #[command(
        after_help = "Examples:\n  george triggers\n  george triggers get nightly-report\n  george triggers suspend nightly-report"
    )]
    Triggers {
        /// `fire`, `get`, `suspend` or `resume` one trigger.
        #[command(subcommand)]
        command: Option<TriggersCommand>,
    },
    /// All agent states and the queue depths.
    #[command(after_help = "Examples:\n  george status\n  george status -o json")]
    Status,
    /// Health of the engine: store latency, queues, errors.
    #[command(after_help = "Examples:\n  george diagnose")]
    Diagnose,
    /// How the running engine isolates agents: Landlock ABI, per-attempt
    /// uids, what is missing.
    #[command(after_help = "Examples:\n  george audit-security")]
    AuditSecurity,
    /// Stop every instance of an AgentSpec gracefully (their jobs are paused).
    #[command(after_help = "Examples:\n  george dismiss coder --reason 'maintenance window'")]
    Dismiss {
        /// AgentSpec name.
        agent: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Emergency stop of one agent instance (`<job>-<attempt>`): killed at once, its job paused.
    #[command(after_help = "Examples:\n  george halt nightly-3 --reason 'runaway costs'")]
    Halt {
        /// Agent id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Token consumption per chapter and AgentSpec against the budgets (MANA_REPORT_V1).
    #[command(after_help = "Examples:\n  george budget\n  george budget --period day -o json")]
    Budget {
        /// `month` (default) or `day`.
        #[arg(long, default_value = "month")]
        period: String,
    },
    /// Reduce a chapter's hourly token rate (default: halve it), or clear its throttle.
    #[command(
        after_help = "Examples:\n  george throttle platform\n  george throttle platform --per-hour 50000\n  george throttle platform --clear"
    )]
    Throttle {
        /// Chapter name.
        chapter: String,
        /// The new rate, in tokens per hour.
        #[arg(long, conflicts_with = "clear")]
        per_hour: Option<u64>,
        /// Remove the throttle.
        #[arg(long)]
        clear: bool,
    },
    /// Wake an agent by hand (a summon trigger; `spawn` is the same).
    #[command(
        alias = "spawn",
        after_help = "Examples:\n  george summon coder --context summary='look at the failing build'\n  george summon coder --template triage --priority P1"
    )]
    Summon {
        /// AgentSpec name.
        agent: String,
        /// Template to run (default: the agent's summon trigger's).
        #[arg(long)]
        template: Option<String>,
        /// Context, `key=value` (value parsed as JSON when it can be).
        #[arg(long = "context", short = 'c')]
        context: Vec<String>,
        /// Priority class (default P1).
        #[arg(long)]
        priority: Option<String>,
    },
    /// Show the sources and their last applied revision.
    #[command(after_help = "Examples:\n  george sources")]
    Sources,
    /// Who the token belongs to, and its role.
    #[command(after_help = "Examples:\n  george whoami")]
    Whoami,
    /// Operator tokens (admins): list, mint, revoke.
    #[command(subcommand, after_help = "Examples:\n  george tokens ls\n  george tokens mint ci --role operator")]
    Tokens(TokensCommand),
    /// The audit log: every change an operator made, naming the token's subject.
    #[command(after_help = "Examples:\n  george audit\n  george audit --limit 20 -o json")]
    Audit {
        /// Records after this event sequence number, oldest first; without it, the newest ones.
        #[arg(long)]
        since: Option<i64>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Contexts: named engines the CLI talks to (kept in ~/.config/george/config.yaml).
    #[command(
        subcommand,
        after_help = "Examples:\n  george config set-context local --server http://127.0.0.1:8080 --token-file .george/operator-token --use\n  george config get-contexts"
    )]
    Config(ConfigCommand),
    /// Print a shell completion script (`source <(george completions bash)`).
    #[command(
        after_help = "Examples:\n  source <(george completions bash)\n  george completions zsh > ~/.zfunc/_george"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The reference agent.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// Measure submit→start latency and throughput on this machine.
    #[command(
        after_help = "Examples:\n  george bench --jobs 1000 --concurrency 16\n  george bench --mode docker --image george/engine:latest --pool 4"
    )]
    Bench(BenchArgs),
    /// Kubernetes: render the manifests that deploy George.
    #[command(subcommand)]
    K8s(K8sCommand),
}

#[derive(Debug, Subcommand)]
pub enum K8sCommand {
    /// Print the Deployment (replicas with leader election on PostgreSQL), RBAC, Service and
    /// ConfigMap as YAML (`george k8s manifests | kubectl apply -f -`).
    #[command(after_help = "Examples:\n  george k8s manifests --replicas 3 > george.yaml")]
    Manifests(crate::k8s::ManifestsArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct DataDirArg {
    /// Data directory (store, logs, agent workspaces).
    #[arg(long, env = "GEORGE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (george-config.yaml).
    #[arg(long, short = 'c', env = "GEORGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// API address.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    #[command(flatten)]
    pub data: DataDirArg,
    /// A folder of manifests to apply.
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// A Git repository (URL or path) of manifests.
    #[arg(long)]
    pub git_url: Option<String>,
    /// Branch of the Git repository.
    #[arg(long)]
    pub git_branch: Option<String>,
    /// Folder within the Git repository.
    #[arg(long)]
    pub git_path: Option<String>,
    /// A recac-style work_items.json.
    #[arg(long)]
    pub work_file: Option<PathBuf>,
    /// The TaskTemplate each work item becomes.
    #[arg(long)]
    pub work_file_template: Option<String>,
    /// Resync interval.
    #[arg(long)]
    pub reconcile_interval: Option<humantime::Duration>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Where and how agents run.
#[derive(Debug, Args, Clone, Default)]
pub struct RuntimeArgs {
    /// Where agents run: `process` (local processes, the default) or `docker`
    /// (`local` is accepted as recac's name for Docker).
    #[arg(long)]
    pub mode: Option<crate::config::BackendType>,
    /// Default agent image (container runtimes).
    #[arg(long)]
    pub image: Option<String>,
    /// `Always`, `IfNotPresent` or `Never`.
    #[arg(long)]
    pub image_pull_policy: Option<String>,
    /// Directory of secrets for agents (`<name>` or `<name>/<key>` files).
    #[arg(long)]
    pub secrets_dir: Option<PathBuf>,
    /// LLM provider for agents whose spec names none (recac's flag).
    #[arg(long)]
    pub agent_provider: Option<String>,
    /// LLM model for agents whose spec names none (recac's flag).
    #[arg(long)]
    pub agent_model: Option<String>,
}

impl RuntimeArgs {
    /// Applies the flags that were given to `cfg`.
    pub fn apply(self, cfg: &mut crate::config::Config) {
        if let Some(m) = self.mode {
            cfg.container_backend.backend_type = m;
        }
        if let Some(i) = self.image {
            cfg.container_backend.set_image(i);
        }
        if let Some(p) = self.image_pull_policy {
            cfg.container_backend.set_pull_policy(p);
        }
        if let Some(d) = self.secrets_dir {
            cfg.secrets.dir = Some(d);
        }
        if let Some(p) = self.agent_provider {
            cfg.llm.default.provider = Some(p);
        }
        if let Some(m) = self.agent_model {
            cfg.llm.default.model = Some(m);
        }
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The folder of manifests.
    #[arg(default_value = "examples/quickstart")]
    pub path: PathBuf,
    /// Exit once every job has settled (exit code 1 unless all completed).
    #[arg(long)]
    pub once: bool,
    /// On Ctrl-C, leave the agents running for the next start to adopt
    /// (by default they are stopped gracefully).
    #[arg(long)]
    pub keep_agents: bool,
    /// API address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub data: DataDirArg,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs.
    #[command(
        alias = "list",
        after_help = "Examples:\n  george jobs ls --status failed,blocked\n  george jobs ls -l team=ops,tier!=db\n  george jobs ls --sort-by updated -o wide\n  george jobs ls -o name | xargs -n1 basename\n  george jobs ls --status in_progress,blocked --watch"
    )]
    Ls {
        /// Only these statuses (comma-separated).
        #[arg(long)]
        status: Option<String>,
        /// Only jobs whose labels meet this selector: `key=value`, `key!=value`, `key`, `!key`, comma-separated.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Only this chapter.
        #[arg(long)]
        chapter: Option<String>,
        /// Order by this field (default: creation, oldest first); `updated` and `created` put the newest first.
        #[arg(long, value_enum)]
        sort_by: Option<JobSort>,
        /// After the list, print each job (matching the filters) again as it changes, until interrupted.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Show a job with its steps, comments and evidence.
    #[command(after_help = "Examples:\n  george jobs get nightly-report\n  george jobs get nightly-report -o json")]
    Get {
        /// Job id.
        id: String,
    },
    /// Show a job's family: its child jobs (sub-agents), theirs, and their statuses.
    #[command(after_help = "Examples:\n  george jobs tree release-notes\n  george jobs tree release-notes -o json")]
    Tree {
        /// Job id.
        id: String,
    },
    /// Submit a job.
    #[command(
        after_help = "Examples:\n  george jobs submit write-report -p title=Weekly -p lines=3\n  george jobs submit inventory --id inv-1 --priority P1 --wait\n  george jobs submit inventory --label team=ops --label tier=batch"
    )]
    Submit {
        /// Template name.
        template: String,
        /// Parameters, `name=value` (value parsed as JSON when it can be).
        #[arg(short = 'p', long = "param")]
        params: Vec<String>,
        /// Labels, `key=value` (repeat for more).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Job id (generated if absent).
        #[arg(long)]
        id: Option<String>,
        /// Priority class.
        #[arg(long)]
        priority: Option<String>,
        /// How many steps may run at once (instead of the template's).
        #[arg(long)]
        parallelism: Option<u32>,
        /// Follow the job live until it ends (as `jobs watch`); exit 0 only if it completed.
        #[arg(long)]
        wait: bool,
    },
    /// Give a failed, aborted or blocked job a new attempt (its completed steps stay done).
    #[command(
        after_help = "Examples:\n  george jobs retry nightly-3\n  george jobs retry nightly-3 --from-scratch --reason 'fixed the key'"
    )]
    Retry {
        /// Job id.
        id: String,
        /// Run every step again, completed ones too.
        #[arg(long)]
        from_scratch: bool,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Submit a new job with this job's template, parameters and settings.
    #[command(after_help = "Examples:\n  george jobs resubmit nightly-3 -p date=2026-12-01 --as nightly-4")]
    Resubmit {
        /// The job to copy.
        id: String,
        /// Parameters to change, `name=value`.
        #[arg(short = 'p', long = "param")]
        params: Vec<String>,
        /// The new job's id (generated if absent).
        #[arg(long = "as")]
        new_id: Option<String>,
        /// Priority class (else the old job's).
        #[arg(long)]
        priority: Option<String>,
    },
    /// Pause a job (its agent is stopped gracefully).
    #[command(after_help = "Examples:\n  george jobs pause nightly-3 --reason 'waiting for the freeze to end'")]
    Pause(ActionArgs),
    /// Resume a paused job.
    #[command(after_help = "Examples:\n  george jobs resume nightly-3")]
    Resume(ActionArgs),
    /// Abort a job.
    #[command(after_help = "Examples:\n  george jobs abort nightly-3 --reason 'not needed any more'")]
    Abort(ActionArgs),
    /// Approve a P0/P1 job held while the token budget is red.
    #[command(after_help = "Examples:\n  george jobs approve incident-7")]
    Approve(ActionArgs),
    /// Delete a finished job now, with its records, logs, outputs and events.
    #[command(after_help = "Examples:\n  george jobs delete nightly-1")]
    Delete {
        /// Job id.
        id: String,
    },
    /// Send a message to a job's agent (unblocks a blocked job).
    #[command(after_help = "Examples:\n  george jobs inject nightly-3 'The ticket means the login page.'")]
    Inject {
        /// Job id.
        id: String,
        /// The message.
        message: String,
    },
    /// Follow a job live: its events as they happen, until it ends.
    #[command(
        after_help = "Examples:\n  george jobs watch nightly-3\n  george jobs watch nightly-3 -o json | jq .kind"
    )]
    Watch {
        /// Job id.
        id: String,
        /// Start after this event sequence number (default: the job's whole history).
        #[arg(long)]
        since: Option<i64>,
    },
    /// Set a job's or a step's status by hand (audited): retry a failed or
    /// blocked job (`pending`), or mark it or one of its steps done.
    #[command(
        after_help = "Examples:\n  george jobs override nightly-3 --status completed --reason 'done by hand'\n  george jobs override nightly-3 --step deploy --status skipped --reason 'not for staging'"
    )]
    Override {
        /// Job id.
        id: String,
        /// New status: for a job pending, completed or failed; for a step also skipped.
        #[arg(long)]
        status: String,
        /// The step to change (default: the whole job).
        #[arg(long)]
        step: Option<String>,
        /// Why (required; kept in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Show an agent's log (the job's latest attempt unless --attempt).
    #[command(
        after_help = "Examples:\n  george jobs logs nightly-3\n  george jobs logs nightly-3 --attempt 1\n  george jobs logs nightly-3 -f | grep ERROR"
    )]
    Logs {
        /// Job id.
        id: String,
        /// Attempt number.
        #[arg(long)]
        attempt: Option<u32>,
        /// Keep following while the agent runs.
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// List the operator tokens' subjects and roles (never their values).
    #[command(alias = "list", after_help = "Examples:\n  george tokens ls")]
    Ls,
    /// Mint a token for a subject; it is shown once.
    #[command(after_help = "Examples:\n  george tokens mint ci --role operator")]
    Mint {
        /// Who will use it (named in the audit log).
        subject: String,
        /// viewer, operator or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    /// Revoke a minted token.
    #[command(after_help = "Examples:\n  george tokens revoke ci")]
    Revoke {
        /// Its subject.
        subject: String,
    },
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Job id.
    pub id: String,
    /// Why (kept in the audit log).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// List agents (running ones unless --all).
    #[command(
        alias = "list",
        after_help = "Examples:\n  george agents ls\n  george agents ls --all\n  george agents ls --watch"
    )]
    Ls {
        /// Include ended agents.
        #[arg(long)]
        all: bool,
        /// After the list, print each agent again as it starts, changes state or ends, until interrupted.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Show one agent (`<job>-<attempt>`).
    #[command(after_help = "Examples:\n  george agents get nightly-3-1")]
    Get {
        /// Agent id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Run the agent for the job in GEORGE_JOB_ID (the engine starts this).
    #[command(
        after_help = "Examples:\n  george agent run   # as the engine starts it: GEORGE_JOB_ID, GEORGE_API_URL and GEORGE_AGENT_TOKEN_FILE set"
    )]
    Run {
        /// The context the launcher received with the agent's release (never
        /// from the command line): the agent then starts without asking.
        #[arg(skip)]
        context: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Jobs to submit (default 500; 100 000 queued jobs with `--mode scheduler`).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Submissions in flight at once. 1 offers load at the rate one client
    /// can submit (about the engine's capacity); more builds a queue, which
    /// measures throughput under a burst but adds queueing time to latency.
    /// In `--mode docker --pool N`, above 1: warm containers started at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Reconcile workers.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// `process` (end to end with local agents), `docker` (jobs in
    /// containers against raw `docker run`s of the same image),
    /// `scheduler` (scheduling decisions per second with a deep queue),
    /// `proxy`, or `chaos` / `chaos-docker` (kills and freezes of agents and
    /// the engine while jobs run; every promise checked).
    #[arg(long, default_value = "process")]
    pub mode: String,
    /// The agent image (for `--mode docker`).
    #[arg(long)]
    pub image: Option<String>,
    /// Run the engine on this PostgreSQL database instead of SQLite (`--mode process`).
    #[arg(long)]
    pub database_url: Option<String>,
    /// The seed of `--mode chaos` (default: from the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Engine kills for `--mode chaos` (two thirds at kill points, most in the spawn window).
    #[arg(long)]
    pub engine_kills: Option<u32>,
    /// Agent kills for `--mode chaos`.
    #[arg(long)]
    pub agent_kills: Option<u32>,
    /// Where `--mode chaos` works (kept afterwards; default a temporary directory).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Run the agents without their sandbox (`--mode process`), to measure what it costs.
    #[arg(long)]
    pub no_sandbox: bool,
    /// Start the engine on a store already holding this many finished jobs
    /// (`--mode process`; written through the store before the engine starts;
    /// with `--database-url`, the database must hold no bench history yet).
    #[arg(long, default_value_t = 0)]
    pub preload: usize,
    /// Put every job in the store, as the API would, before the engine
    /// starts (`--mode process`): the engine starts on the whole backlog
    /// pending, and latency counts from its start.
    #[arg(long)]
    pub backlog: bool,
    /// Keep this many warm agents for the bench's AgentSpec (`spec.pool.min`;
    /// `--mode process`, `docker` and `chaos`): jobs claim pooled agents
    /// instead of starting new ones.
    #[arg(long, default_value_t = 0)]
    pub pool: u32,
    /// Submit each job when the one before it has completed (`--mode
    /// process`): latencies without queueing.
    #[arg(long)]
    pub one_at_a_time: bool,
}
