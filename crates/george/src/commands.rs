//! Running a parsed command line. Errors are printed with what to do next;
//! the return value is the process exit code.

use crate::cli::{AgentCommand, AgentsCommand, Cli, Command, Format, JobsCommand, TokensCommand};
use crate::output::{ago, first_line, print, print_list, render, table};
use crate::serve::{DEFAULT_DATA_DIR, TOKEN_FILE};
use anyhow::{bail, Context as _};
use george_client::{Client, ClientError, JobQuery};
use george_core::api::{AgentView, JobView, SubmitJob};
use std::collections::BTreeMap;

/// Runs the command; returns the exit code.
pub async fn dispatch(cli: Cli) -> i32 {
    let format = crate::output::configure(cli.output, cli.no_headers);
    let result = match cli.command {
        Command::Validate { ref path } => return crate::validate::run(path, format),
        Command::Agent { command: AgentCommand::Run { context } } => return run_agent(context).await,
        Command::Serve(args) => crate::up::serve(*args).await,
        Command::Up(args) => return crate::up::up(args).await,
        Command::Orchestrate(args) => crate::orchestrate::run(*args).await,
        Command::Bench(args) => crate::bench::run(args, format).await,
        Command::K8s(crate::cli::K8sCommand::Manifests(ref args)) => {
            return match crate::k8s::render(args) {
                Ok(text) => {
                    print!("{text}");
                    0
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            };
        }
        Command::Config(ref command) => config(&cli, command, format),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "george", &mut script);
            // A reader that stops early (`| head`) is no error.
            return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("error: cannot write the completion script: {e}");
                    1
                }
                _ => 0,
            };
        }
        ref other => match client(&cli) {
            Ok(c) => remote(&c, other, format).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", explain(&e));
            1
        }
    }
}

/// The reference agent; `context`, when its launcher received it with the
/// agent's release (JSON of an `AgentContext`).
async fn run_agent(context: Option<String>) -> i32 {
    let env = match george_agent::AgentEnv::from_env() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let context = context.and_then(|c| match serde_json::from_str(&c) {
        Ok(context) => Some(context),
        Err(e) => {
            // Not fatal: the agent asks the engine instead.
            tracing::warn!(error = %e, "the context delivered with the release is unreadable");
            None
        }
    });
    match george_agent::run_with(env, context).await {
        Ok(outcome) => {
            tracing::info!(?outcome, "agent done");
            outcome.exit_code()
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Prints a JSON value as an indented outline.
fn print_tree(v: &serde_json::Value, depth: usize) {
    let pad = "  ".repeat(depth);
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match x {
                    serde_json::Value::Object(o) if o.is_empty() => println!("{pad}{k}: none"),
                    serde_json::Value::Array(a) if a.is_empty() => println!("{pad}{k}: none"),
                    serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                        println!("{pad}{k}:");
                        print_tree(x, depth + 1);
                    }
                    other => println!(
                        "{pad}{k}: {}",
                        other.as_str().map(str::to_string).unwrap_or_else(|| other.to_string())
                    ),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for x in items {
                match x {
                    serde_json::Value::Object(m) if m.contains_key("name") => {
                        let name = m["name"].as_str().unwrap_or("");
                        let rest: Vec<String> = ["state", "instances", "kind", "seq"]
                            .iter()
                            .filter_map(|k| {
                                m.get(*k).map(|v| {
                                    format!("{k}={}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                                })
                            })
                            .collect();
                        println!("{pad}- {name} {}", rest.join(" "));
                    }
                    other => println!("{pad}- {other}"),
                }
            }
        }
        other => println!("{pad}{other}"),
    }
}

/// Adds a hint to errors a user can fix.
fn explain(e: &anyhow::Error) -> String {
    let mut msg = format!("{e:#}");
    if let Some(ce) = e.downcast_ref::<ClientError>() {
        match ce {
            ClientError::Unreachable { .. } => {
                msg.push_str("\nhint: is the engine running (`george serve` or `george up`)? Point --server or GEORGE_SERVER at it.")
            }
            ClientError::Api { status: 401, .. } => {
                msg.push_str("\nhint: pass an operator token with --token or GEORGE_TOKEN (a local engine keeps one in .george/operator-token).")
            }
            ClientError::Api { status: 403, .. } => {
                msg.push_str("\nhint: `george whoami` shows your token's role; an admin can mint one with more (`george tokens mint NAME --role operator`).")
            }
            ClientError::Api { status: 404, code, .. } if code == "not_found" => {
                msg.push_str("\nhint: `george jobs ls` lists the jobs, `george agents ls --all` the agents.")
            }
            ClientError::Api { details, .. } if !details.is_empty() => {
                for d in details {
                    msg.push_str(&format!("\n  - {d}"));
                }
            }
            _ => {}
        }
    }
    msg
}

/// The engine a command talks to, and its token: `--server` and `--token`
/// (or `--token-file`) when given; else the context's (`--engine`, else
/// the current one; a context is not used with another `--server` unless
/// named); else `http://127.0.0.1:8080` and the local data directory's token.
fn client(cli: &Cli) -> anyhow::Result<Client> {
    let cfg = crate::contexts::ClientConfig::load(&crate::contexts::path())?;
    let context = match (&cli.server, &cli.context) {
        (Some(_), None) => None,
        (_, named) => cfg.chosen(named.as_deref())?,
    };
    let server = cli.server.clone().or_else(|| context.map(|c| c.server.clone())).unwrap_or(DEFAULT_SERVER.into());
    let token_file = cli.token_file.clone().or_else(|| context.and_then(|c| c.token_file.clone()));
    let token = match (&cli.token, token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(path)) => read_token(&path).with_context(|| format!("the token file {}", path.display()))?,
        (None, None) => {
            let dir = std::env::var("GEORGE_DATA_DIR").unwrap_or_else(|_| DEFAULT_DATA_DIR.into());
            let path = std::path::Path::new(&dir).join(TOKEN_FILE);
            read_token(&path).with_context(|| {
                format!(
                    "no operator token: pass --token or --token-file, use a context (`george config set-context`), \
                     or run where {} exists",
                    path.display()
                )
            })?
        }
    };
    Ok(Client::new(&server, &token)?)
}

/// The engine's address when nothing names one.
const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)?.trim().to_string();
    anyhow::ensure!(!token.is_empty(), "it is empty");
    Ok(token)
}

/// `george config …`: the client's contexts.
fn config(cli: &Cli, command: &crate::cli::ConfigCommand, format: Format) -> anyhow::Result<()> {
    use crate::cli::ConfigCommand as C;
    use crate::contexts::{check_name, ClientConfig, Context};
    let path = crate::contexts::path();
    let mut cfg = ClientConfig::load(&path)?;
    match command {
        C::SetContext { name, use_it } => {
            check_name(name)?;
            let server = cli.server.clone().unwrap_or(DEFAULT_SERVER.into());
            url_of(&server)?;
            let token_file = match &cli.token_file {
                Some(f) => Some(std::path::absolute(f).with_context(|| format!("the token file {}", f.display()))?),
                None => None,
            };
            cfg.set(Context { name: name.clone(), server: server.clone(), token_file });
            if *use_it || cfg.current_context.is_none() {
                cfg.current_context = Some(name.clone());
            }
            cfg.save(&path)?;
            let current = if cfg.current_context.as_deref() == Some(name.as_str()) { " (current)" } else { "" };
            said(format, &cfg.get(name), &format!("context {name} set: {server}{current}"));
        }
        C::UseContext { name } => {
            cfg.chosen(Some(name))?;
            cfg.current_context = Some(name.clone());
            cfg.save(&path)?;
            said(format, &cfg.current_context, &format!("now using context {name}"));
        }
        C::DeleteContext { name } => {
            cfg.chosen(Some(name))?;
            cfg.contexts.retain(|c| &c.name != name);
            if cfg.current_context.as_deref() == Some(name.as_str()) {
                cfg.current_context = None;
            }
            cfg.save(&path)?;
            said(format, &cfg.contexts, &format!("context {name} deleted"));
        }
        C::CurrentContext => match &cfg.current_context {
            Some(name) => said(format, name, name),
            None => anyhow::bail!("no current context in {}; set one with `george config use-context`", path.display()),
        },
        C::GetContexts => render(format, &cfg.contexts, |contexts| {
            if contexts.is_empty() {
                println!("No contexts. Add one with `george config set-context NAME --server URL --token-file FILE`.");
                return;
            }
            let mut t = table(&["CURRENT", "NAME", "SERVER", "TOKEN FILE"]);
            for c in contexts {
                let current = if cfg.current_context.as_deref() == Some(c.name.as_str()) { "*" } else { "" };
                let token = c.token_file.as_ref().map(|f| f.display().to_string()).unwrap_or_else(|| "-".into());
                t.add_row(vec![current.to_string(), c.name.clone(), c.server.clone(), token]);
            }
            println!("{t}");
        }),
    }
    Ok(())
}

/// A server address must be an http(s) URL.
fn url_of(server: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        server.starts_with("http://") || server.starts_with("https://"),
        "--server {server:?}: expected an http:// or https:// URL such as http://127.0.0.1:8080"
    );
    Ok(())
}

/// `jobs ls --watch`: each job that is created or changes status, and
/// matches the filters, printed again (a line, a JSON object a line, or
/// `job/ID`), until the stream ends or the command is interrupted.
async fn watch_jobs(
    c: &Client,
    mut stream: george_client::Watch,
    status: Option<&str>,
    chapter: Option<&str>,
    selector: Option<&george_core::labels::Selector>,
    format: Format,
) -> anyhow::Result<()> {
    let wanted: Vec<&str> = status.map(|s| s.split(',').filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    while let Some(e) = stream.next().await? {
        let changed = e.kind == george_core::EventKind::JobStatus || e.kind == george_core::EventKind::JobCreated;
        let Some(id) = e.job_id.as_deref().filter(|_| changed) else { continue };
        let Ok(job) = c.job(id).await else { continue };
        if (!wanted.is_empty() && !wanted.contains(&job.status.as_str()))
            || chapter.is_some_and(|ch| job.chapter.as_deref() != Some(ch))
            || selector.is_some_and(|s| !s.matches(&job.labels))
        {
            continue;
        }
        follow_line(format, &job, &format!("job/{}", job.id), || {
            format!(
                "{:<28} {:<12} {}",
                job.id,
                job.status.as_str(),
                first_line(job.reason.as_deref().unwrap_or_default())
            )
        })?;
    }
    Ok(())
}

/// One item a `--watch` prints as it changes: a JSON line (`-o json`), a
/// YAML document, `kind/name` (`-o name`), or the `line` of a table format;
/// flushed at once, for a reader at the other end of a pipe.
fn follow_line<T: serde::Serialize>(
    format: Format,
    item: &T,
    name: &str,
    line: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    use std::io::Write;
    match format {
        Format::Json => println!("{}", serde_json::to_string(item)?),
        Format::Yaml => render(format, &vec![item], |_| {}),
        Format::Table | Format::Wide | Format::Name if crate::output::names() => println!("{name}"),
        Format::Table | Format::Wide | Format::Name => println!("{}", line()),
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// `--label key=value` flags as labels (each checked as the engine would).
fn parse_labels(flags: &[String]) -> anyhow::Result<george_core::labels::Labels> {
    let mut labels = george_core::labels::Labels::new();
    for flag in flags {
        let (k, v) = flag.split_once('=').ok_or_else(|| anyhow::anyhow!("--label {flag}: expected key=value"))?;
        george_core::labels::check_key(k)
            .and_then(|()| george_core::labels::check_value(k, v))
            .map_err(|e| anyhow::anyhow!("--label {flag}: {e}"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(labels)
}

/// Orders jobs for `jobs ls --sort-by` (stable: ties keep the engine's order).
fn sort_jobs(jobs: &mut [JobView], by: crate::cli::JobSort) {
    use crate::cli::JobSort;
    match by {
        JobSort::Id => jobs.sort_by(|a, b| a.id.cmp(&b.id)),
        JobSort::Status => jobs.sort_by_key(|j| j.status),
        JobSort::Priority => jobs.sort_by_key(|j| j.priority),
        JobSort::Template => jobs.sort_by(|a, b| a.template.cmp(&b.template)),
        JobSort::Created => jobs.sort_by_key(|j| std::cmp::Reverse(j.created_at)),
        JobSort::Updated => jobs.sort_by_key(|j| std::cmp::Reverse(j.updated_at)),
    }
}

/// kubectl-style: one line saying what happened, or the object in JSON or YAML.
fn said<T: serde::Serialize>(format: Format, value: &T, line: &str) {
    match format {
        Format::Table | Format::Wide | Format::Name => println!("{line}"),
        _ => render(format, value, |_| {}),
    }
}

/// `850ms`, `12.3s`, `4m05s`, `2h03m`.
fn human_duration(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

fn parse_params(items: &[String]) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
    let mut out = BTreeMap::new();
    for item in items {
        let Some((k, v)) = item.split_once('=') else {
            bail!("--param `{item}`: expected name=value");
        };
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        out.insert(k.trim().to_string(), value);
    }
    Ok(out)
}

fn jobs_table(jobs: &[JobView]) -> comfy_table::Table {
    let wide = crate::output::wide();
    let mut header = vec!["JOB", "STATUS", "PRIORITY", "TEMPLATE", "ATTEMPT", "UPDATED", "REASON"];
    if wide {
        header.push("LABELS");
    }
    let mut t = table(&header);
    for j in jobs {
        let labels = wide.then(|| j.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","));
        t.add_row(
            [
                j.id.clone(),
                if j.desired.as_str() != "active" && !j.status.is_final() {
                    format!("{} → {}", j.status, j.desired)
                } else {
                    j.status.to_string()
                },
                j.priority.to_string(),
                j.template.clone(),
                j.attempt.to_string(),
                ago(j.updated_at),
                first_line(j.reason.as_deref().unwrap_or_default()),
            ]
            .into_iter()
            .chain(labels),
        );
    }
    t
}

fn budget_table(r: &george_core::api::BudgetReport) -> comfy_table::Table {
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut t = table(&[
        "CHAPTER", "AGENT", "CALLS", "INPUT", "OUTPUT", "TOTAL", "BUDGET", "LEFT", "BURN/DAY", "RUNS OUT", "ALERT",
    ]);
    let standing = |s: &george_core::api::BudgetStanding| {
        vec![
            s.total.to_string(),
            opt(s.budget),
            opt(s.budget_remaining),
            s.burn_rate_daily.to_string(),
            s.projected_exhaustion.map_or_else(|| "-".into(), |d| d.to_string()),
            s.alert.clone(),
        ]
    };
    let mut org = vec![format!("(org, {})", r.period), String::new(), String::new(), String::new(), String::new()];
    org.extend(standing(&r.org));
    t.add_row(org);
    if let Some(pool) = r.reserve_pool {
        let left = opt(r.reserve_pool_remaining);
        t.add_row(vec![
            "(reserve pool)".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            pool.to_string(),
            left,
        ]);
    }
    for c in &r.chapters {
        let name = if c.chapter.is_empty() { "-".to_string() } else { c.chapter.clone() };
        let mut row = vec![name.clone(), "*".into(), String::new(), String::new(), String::new()];
        row.extend(standing(&c.standing));
        t.add_row(row);
        for (agent, u) in &c.breakdown {
            t.add_row(vec![
                name.clone(),
                agent.clone(),
                u.invocations.to_string(),
                u.input_tokens.to_string(),
                u.output_tokens.to_string(),
                u.total.to_string(),
            ]);
        }
    }
    t
}

fn events_table(events: &[george_core::api::EventView]) -> comfy_table::Table {
    let mut t = table(&["SEQ", "TIME", "JOB", "KIND", "ACTOR", "DATA"]);
    for e in events {
        t.add_row(vec![
            e.seq.to_string(),
            e.ts.format("%H:%M:%S%.3f").to_string(),
            e.job_id.clone().unwrap_or_default(),
            e.kind.clone(),
            e.actor.clone(),
            e.data.to_string(),
        ]);
    }
    t
}

fn registry_table(v: &serde_json::Value) -> comfy_table::Table {
    let mut t = table(&["AGENT", "TYPE", "CHAPTER", "STATE", "INSTANCES", "FAILURES", "WARM POOL", "CAPABILITIES"]);
    for e in v.as_array().into_iter().flatten() {
        let state = if e["degraded"] == true {
            format!("{} (degraded)", e["state"].as_str().unwrap_or(""))
        } else {
            e["state"].as_str().unwrap_or("").to_string()
        };
        t.add_row(vec![
            e["name"].as_str().unwrap_or("").to_string(),
            e["agent_type"].as_str().unwrap_or("").to_string(),
            e["chapter"].as_str().unwrap_or("").to_string(),
            state,
            e["instances"].to_string(),
            e["consecutive_failures"].to_string(),
            pool_cell(&e["pool"]),
            e["capabilities"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
        ]);
    }
    t
}

/// A pool in one cell: `3/4 warm (+1 starting), 120 claimed, 2 cold, claim 0.4ms`.
fn pool_cell(p: &serde_json::Value) -> String {
    if p.is_null() {
        return String::new();
    }
    let n = |k: &str| p[k].as_u64().unwrap_or(0);
    let mut s = format!("{}/{} warm", n("warm"), n("target"));
    if n("starting") > 0 {
        s += &format!(" (+{} starting)", n("starting"));
    }
    s += &format!(", {} claimed, {} cold", n("claimed"), n("cold"));
    if let Some(us) = p["last_claim_us"].as_u64() {
        s += &format!(", claim {:.1}ms", us as f64 / 1000.0);
    }
    s
}

fn triggers_table(v: &serde_json::Value) -> comfy_table::Table {
    let mut t = table(&["TRIGGER", "TYPE", "TEMPLATE", "AGENT", "SCHEDULE", "NEXT FIRE", "SUSPENDED"]);
    for e in v.as_array().into_iter().flatten() {
        let sched = match (e["schedule"].as_str(), e["timezone"].as_str()) {
            (Some(s), Some(tz)) => format!("{s} ({tz})"),
            (Some(s), None) => s.to_string(),
            _ => String::new(),
        };
        t.add_row(vec![
            e["name"].as_str().unwrap_or("").to_string(),
            e["type"].as_str().unwrap_or("").to_string(),
            e["template"].as_str().unwrap_or("").to_string(),
            e["agent"].as_str().unwrap_or("").to_string(),
            sched,
            e["next_fire"].as_str().unwrap_or("").to_string(),
            e.get("suspended").map(|s| format!("by {}", s["by"].as_str().unwrap_or("?"))).unwrap_or_default(),
        ]);
    }
    t
}

fn gc_table(r: &george_core::api::GcReport) -> comfy_table::Table {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    let mut t = table(&["", ""]);
    t.add_row(vec![format!("jobs {verb}"), r.jobs.len().to_string()]);
    t.add_row(vec!["their files".to_string(), format!("{:.1} KiB", r.bytes as f64 / 1024.0)]);
    if !r.dry_run {
        t.add_row(vec!["events compacted".to_string(), r.events.to_string()]);
    }
    t.add_row(vec!["event floor".to_string(), r.floor.to_string()]);
    if let Some(cursor) = &r.held_by {
        t.add_row(vec!["held back by".to_string(), cursor.clone()]);
    }
    if !r.jobs.is_empty() {
        t.add_row(vec!["ids".to_string(), r.jobs.join("\n")]);
    }
    t
}

fn sources_table(sources: &Vec<george_core::api::SourceView>) -> comfy_table::Table {
    let mut t = table(&["SOURCE", "APPLIED", "CHECKED", "REJECTED", "ERRORS"]);
    for s in sources {
        t.add_row(vec![
            s.name.clone(),
            s.applied_revision.clone().unwrap_or_else(|| "-".into()),
            ago(s.checked_at),
            s.rejected_revision.clone().unwrap_or_default(),
            s.errors.join("\n"),
        ]);
    }
    t
}

fn audit_table(v: &serde_json::Value) -> comfy_table::Table {
    let mut t = table(&["SEQ", "TIME", "WHO", "WHAT"]);
    for e in v.as_array().into_iter().flatten() {
        t.add_row(vec![
            e["seq"].to_string(),
            e["ts"].as_str().unwrap_or("").to_string(),
            e["actor"].as_str().unwrap_or("").to_string(),
            format!(
                "{} {} → {}",
                e["data"]["method"].as_str().unwrap_or(""),
                e["data"]["path"].as_str().unwrap_or(""),
                e["data"]["status"]
            ),
        ]);
    }
    t
}

/// `george audit-security`: how agents are isolated on the engine's machine.
async fn audit_security(c: &Client, format: Format) -> anyhow::Result<()> {
    let v = c.get_json("/api/v1/diagnose").await?;
    let iso = &v["isolation"];
    match format {
        Format::Json | Format::Yaml => render(format, iso, |_| {}),
        Format::Table | Format::Wide | Format::Name if iso.is_null() => {
            println!("this runtime isolates agents in containers (Docker or Kubernetes); see docs/security.md")
        }
        Format::Table | Format::Wide | Format::Name => {
            let yes = |k: &str| if iso[k].as_bool() == Some(true) { "yes" } else { "NO" };
            println!("sandbox            {}", if iso["enabled"] == true { "on" } else { "OFF" });
            println!("landlock ABI       {}", iso["landlock_abi"]);
            println!("filesystem rules   {}", yes("filesystem"));
            println!("process memory     {}", yes("process_memory"));
            println!("signals scoped     {}", yes("signals"));
            match iso["uid_range"].as_array() {
                Some(r) if iso["per_attempt_uid"] == true => {
                    println!("per-attempt uid    yes ({}..={})", r[0], r[1])
                }
                _ => println!("per-attempt uid    NO (the engine is not root)"),
            }
            for w in iso["warnings"].as_array().into_iter().flatten() {
                println!("warning: {}", w.as_str().unwrap_or_default());
            }
        }
    }
    Ok(())
}

fn agents_table(agents: &[AgentView]) -> comfy_table::Table {
    let mut t = table(&["AGENT", "JOB", "STATE", "SPEC", "RUNTIME", "STARTED", "HEARTBEAT", "OUTCOME"]);
    for a in agents {
        t.add_row(vec![
            a.id.clone(),
            a.job_id.clone(),
            a.state.to_string(),
            a.agent_spec.clone(),
            a.runtime.clone(),
            ago(a.started_at),
            a.last_heartbeat.map(ago).unwrap_or_else(|| "-".into()),
            a.outcome.clone().unwrap_or_default(),
        ]);
    }
    t
}

async fn remote(c: &Client, cmd: &Command, format: Format) -> anyhow::Result<()> {
    match cmd {
        Command::Jobs(j) => jobs(c, j, format).await,
        Command::Agents(AgentsCommand::Ls { all, watch }) => {
            // Watching: the stream opens before the list is read, so no change falls between them.
            let stream = if *watch { Some(c.watch(None, None).await?) } else { None };
            let agents = c.agents(*all).await?;
            print_list(format, &agents, "agents", |a| format!("agent/{}", a.id), agents_table);
            if let Some(mut stream) = stream {
                while let Some(e) = stream.next().await? {
                    let attempt_event = e.kind.starts_with("attempt.");
                    let (Some(job), Some(n)) = (e.job_id.as_deref().filter(|_| attempt_event), e.attempt) else {
                        continue;
                    };
                    let Ok(agent) = c.agent(&george_core::api::agent_id(job, n)).await else { continue };
                    follow_line(format, &agent, &format!("agent/{}", agent.id), || {
                        format!("{:<32} {:<10} {}", agent.id, agent.state, agent.outcome.as_deref().unwrap_or_default())
                    })?;
                }
            }
            Ok(())
        }
        Command::Agents(AgentsCommand::Get { id }) => {
            let a = c.agent(id).await?;
            print(format, &a, |a| agents_table(std::slice::from_ref(a)));
            Ok(())
        }
        Command::Events { since, limit, watch } => {
            let events = match since {
                Some(since) => c.events(*since, *limit).await?,
                None => c.latest_events((*limit).clamp(1, 5000)).await?,
            };
            print_list(format, &events, "events", |e| format!("event/{}", e.seq), events_table);
            if *watch {
                // From the last one listed (or now, when none was): nothing is missed or printed twice.
                let from = events.last().map(|e| e.seq).or(*since);
                let mut stream = c.watch(None, from).await?;
                while let Some(e) = stream.next().await? {
                    follow_line(format, &e, &format!("event/{}", e.seq), || {
                        let job = e.job_id.as_deref().unwrap_or("-");
                        format!(
                            "{:<8} {} {:<24} {:<22} {:<20} {}",
                            e.seq,
                            e.ts.format("%H:%M:%S%.3f"),
                            job,
                            e.kind,
                            e.actor,
                            e.data
                        )
                    })?;
                }
            }
            Ok(())
        }
        Command::Registry { agent_type, chapter, capability, status, .. } => {
            let mut q = Vec::new();
            for (k, v) in [("type", agent_type), ("chapter", chapter), ("capability", capability), ("status", status)] {
                if let Some(v) = v {
                    q.push((k.to_string(), v.clone()));
                }
            }
            let v = c.get_json_query("/api/v1/registry", &q).await?;
            print(format, &v, registry_table);
            Ok(())
        }
        Command::Triggers { command: None } => {
            let v = c.get_json("/api/v1/triggers").await?;
            print(format, &v, triggers_table);
            Ok(())
        }
        Command::Triggers { command: Some(crate::cli::TriggersCommand::Fire { name }) } => {
            let path = format!("/api/v1/triggers/{name}/fire");
            let fired: serde_json::Value = c.post_json(&path, &serde_json::json!({})).await?;
            let job = fired["job"].as_str().unwrap_or("?");
            let line = if fired["debounced"] == true {
                format!("trigger/{name} fired: folded into job/{job}")
            } else {
                format!("trigger/{name} fired: job/{job} created")
            };
            said(format, &fired, &line);
            Ok(())
        }
        Command::Triggers { command: Some(crate::cli::TriggersCommand::Get { name }) } => {
            let v = c.get_json(&format!("/api/v1/triggers/{name}")).await?;
            render(format, &v, |v| {
                println!("{}", triggers_table(&serde_json::json!([v])));
                if let Some(s) = v.get("suspended") {
                    let why = s["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default();
                    let (by, at) = (s["by"].as_str().unwrap_or("?"), s["at"].as_str().unwrap_or("?"));
                    println!("Suspended by {by} at {at}{why}.");
                }
                let history: Vec<george_core::api::EventView> =
                    serde_json::from_value(v["history"].clone()).unwrap_or_default();
                if history.is_empty() {
                    println!("No history yet.");
                } else {
                    println!("{}", events_table(&history));
                }
            });
            Ok(())
        }
        Command::Triggers { command: Some(crate::cli::TriggersCommand::Suspend { name, reason }) } => {
            let path = format!("/api/v1/triggers/{name}/suspend");
            let v: serde_json::Value = c.post_json(&path, &serde_json::json!({"reason": reason})).await?;
            said(format, &v, &format!("trigger/{name} suspended"));
            Ok(())
        }
        Command::Triggers { command: Some(crate::cli::TriggersCommand::Resume { name }) } => {
            let path = format!("/api/v1/triggers/{name}/resume");
            let v: serde_json::Value = c.post_json(&path, &serde_json::json!({})).await?;
            said(format, &v, &format!("trigger/{name} resumed"));
            Ok(())
        }
        Command::AuditSecurity => audit_security(c, format).await,
        Command::Status | Command::Diagnose => {
            let path = if matches!(cmd, Command::Status) { "/api/v1/status" } else { "/api/v1/diagnose" };
            let v = c.get_json(path).await?;
            match format {
                Format::Json | Format::Yaml => render(format, &v, |_| {}),
                Format::Table | Format::Wide | Format::Name => print_tree(&v, 0),
            }
            Ok(())
        }
        Command::Dismiss { agent, reason } => {
            let v = c
                .post_json(&format!("/api/v1/registry/{agent}/dismiss"), &serde_json::json!({"reason": reason}))
                .await?;
            match format {
                Format::Json | Format::Yaml => render(format, &v, |_| {}),
                Format::Table | Format::Wide | Format::Name => println!(
                    "dismissed {agent}: {} instance(s) stopping; their jobs are paused",
                    v["dismissed"].as_array().map_or(0, Vec::len)
                ),
            }
            Ok(())
        }
        Command::Budget { period } => {
            let r = c.budget(period).await?;
            print(format, &r, budget_table);
            Ok(())
        }
        Command::Throttle { chapter, per_hour, clear } => {
            let req = george_core::api::ThrottleRequest { tokens_per_hour: *per_hour, clear: *clear };
            let v = c.throttle(chapter, &req).await?;
            match format {
                Format::Json | Format::Yaml => render(format, &v, |_| {}),
                Format::Table | Format::Wide | Format::Name => match v.tokens_per_hour {
                    Some(t) => println!("chapter {chapter} is throttled to {t} tokens per hour"),
                    None => println!("chapter {chapter} is no longer throttled"),
                },
            }
            Ok(())
        }
        Command::Halt { id, reason } => {
            let v = c.post_json(&format!("/api/v1/agents/{id}/halt"), &serde_json::json!({"reason": reason})).await?;
            match format {
                Format::Json | Format::Yaml => render(format, &v, |_| {}),
                Format::Table | Format::Wide | Format::Name => {
                    println!("halted {id}; job {} is paused", v["job"].as_str().unwrap_or("?"))
                }
            }
            Ok(())
        }
        Command::Summon { agent, template, context, priority } => {
            let body = serde_json::json!({
                "agent": agent,
                "template": template,
                "context": parse_params(context)?,
                "priority": priority,
            });
            let fired = c.summon(&body).await?;
            match format {
                Format::Json | Format::Yaml => render(format, &fired, |_| {}),
                Format::Table | Format::Wide | Format::Name => {
                    println!("summoned {agent}: job {}", fired["job"].as_str().unwrap_or("?"))
                }
            }
            Ok(())
        }
        Command::Gc { dry_run } => {
            let report = c.gc(*dry_run).await?;
            print(format, &report, gc_table);
            Ok(())
        }
        Command::Sources => {
            print(format, &c.sources().await?, sources_table);
            Ok(())
        }
        Command::Sync => {
            let synced = c.sync().await?;
            print(format, &synced.sources, sources_table);
            // A source that could not be applied fails the command (a script or CI job sees it).
            match synced.failed.as_slice() {
                [] => Ok(()),
                failed => {
                    let why: Vec<String> =
                        failed.iter().map(|f| format!("source {}: {}", f.source, f.errors.join("; "))).collect();
                    anyhow::bail!("{} source(s) failed to sync:\n  {}", failed.len(), why.join("\n  "))
                }
            }
        }
        Command::Whoami => {
            let me = c.whoami().await?;
            render(format, &me, |me| match me.role {
                Some(role) => println!("{} ({role})", me.subject),
                None => println!("{} (agent)", me.subject),
            });
            Ok(())
        }
        Command::Tokens(t) => tokens(c, t, format).await,
        Command::Audit { since, limit } => {
            let q = match since {
                Some(since) => [("since".to_string(), since.to_string()), ("limit".to_string(), limit.to_string())],
                None => [
                    ("last".to_string(), (*limit).clamp(1, 5000).to_string()),
                    ("limit".to_string(), limit.to_string()),
                ],
            };
            let v = c.get_json_query("/api/v1/audit", &q).await?;
            print(format, &v, audit_table);
            Ok(())
        }
        _ => unreachable!("local commands are handled by dispatch"),
    }
}

async fn tokens(c: &Client, cmd: &TokensCommand, format: Format) -> anyhow::Result<()> {
    match cmd {
        TokensCommand::Ls => {
            let v = c.get_json("/api/v1/tokens").await?;
            print(format, &v, |v| {
                let mut t = table(&["SUBJECT", "ROLE", "ORIGIN", "CREATED"]);
                for e in v.as_array().into_iter().flatten() {
                    t.add_row(vec![
                        e["subject"].as_str().unwrap_or("").to_string(),
                        e["role"].as_str().unwrap_or("").to_string(),
                        e["origin"].as_str().unwrap_or("").to_string(),
                        e["created_at"].as_str().unwrap_or("").to_string(),
                    ]);
                }
                t
            });
        }
        TokensCommand::Mint { subject, role } => {
            let v = c.post_json("/api/v1/tokens", &serde_json::json!({"subject": subject, "role": role})).await?;
            render(format, &v, |v| {
                println!("{}", v["token"].as_str().unwrap_or(""));
                eprintln!("token for {subject} ({role}); it is shown only this once");
            });
        }
        TokensCommand::Revoke { subject } => {
            c.delete(&format!("/api/v1/tokens/{subject}")).await?;
            if format == Format::Table {
                println!("revoked the token of {subject}");
            }
        }
    }
    Ok(())
}

/// Follows one job's events until it ends; exits non-zero unless it completed.
async fn watch(c: &Client, id: &str, since: Option<i64>, format: Format) -> anyhow::Result<()> {
    let job = c.job(id).await?;
    let mut stream = c.watch(Some(id), Some(since.unwrap_or(0))).await?;
    if format == Format::Table {
        println!("{id}: {} (template {}, attempt {})", job.status, job.template, job.attempt);
    }
    let mut status = job.status;
    // Events of a job that already ended are replayed, then the stream is closed.
    let mut ended = status.is_final();
    loop {
        let next = if ended {
            match tokio::time::timeout(std::time::Duration::from_millis(300), stream.next()).await {
                Ok(n) => n?,
                Err(_) => None,
            }
        } else {
            stream.next().await?
        };
        let Some(e) = next else { break };
        match format {
            Format::Json => println!("{}", serde_json::to_string(&e)?),
            Format::Yaml => render(format, &vec![&e], |_| {}),
            Format::Table | Format::Wide | Format::Name => {
                println!("{}  {:<14} {:<28} {}", e.ts.format("%H:%M:%S"), e.kind, e.actor, summary(&e.data))
            }
        }
        if e.kind == george_core::EventKind::JobStatus {
            if let Some(to) = e.data["to"].as_str().and_then(|s| s.parse::<george_core::JobStatus>().ok()) {
                status = to;
                ended = to.is_final();
            }
        }
    }
    stream.close().await;
    if format == Format::Table {
        println!("{id}: {status}");
    }
    if status != george_core::JobStatus::Completed {
        bail!("job `{id}` ended {status}; `george jobs get {id}` shows why");
    }
    Ok(())
}

/// A one-line summary of an event's data.
fn summary(data: &serde_json::Value) -> String {
    match data.as_object() {
        Some(m) => m
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}={}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
            .collect::<Vec<_>>()
            .join(" "),
        None => data.to_string(),
    }
}

async fn jobs(c: &Client, cmd: &JobsCommand, format: Format) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::Ls { status, selector, chapter, sort_by, watch } => {
            // A selector the engine would refuse is refused here, before anything is read.
            let picked = selector
                .as_deref()
                .map(george_core::labels::Selector::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("-l/--selector: {e}"))?;
            // Watching: the stream opens before the list is read, so no change falls between them.
            let stream = if *watch { Some(c.watch(None, None).await?) } else { None };
            let query =
                JobQuery { status: status.clone(), chapter: chapter.clone(), source: None, selector: selector.clone() };
            let mut jobs = c.jobs(&query).await?;
            if let Some(by) = sort_by {
                sort_jobs(&mut jobs, *by);
            }
            print_list(format, &jobs, "jobs", |j| format!("job/{}", j.id), jobs_table);
            if let Some(stream) = stream {
                watch_jobs(c, stream, status.as_deref(), chapter.as_deref(), picked.as_ref(), format).await?;
            }
        }
        JobsCommand::Delete { id } => {
            let report = c.delete_job(id).await?;
            print(format, &report, gc_table);
        }
        JobsCommand::Tree { id } => {
            let job = c.job(id).await?;
            let tree = family_tree(c, &job.id, job.status.to_string()).await?;
            match format {
                Format::Json | Format::Yaml => render(format, &tree, |_| {}),
                _ => print!("{}", tree_lines(&tree, "", true, true)),
            }
        }
        JobsCommand::Get { id } => {
            let job = c.job(id).await?;
            let comments = c.comments(id).await?;
            let evidence = c.evidence(id).await?;
            match format {
                Format::Json | Format::Yaml => {
                    // The object `jobs ls` lists, with its conversation and evidence beside its fields.
                    let mut v = serde_json::to_value(&job)?;
                    v["comments"] = serde_json::to_value(&comments)?;
                    v["evidence"] = serde_json::to_value(&evidence)?;
                    render(format, &v, |_| {});
                }
                Format::Table | Format::Wide | Format::Name => {
                    println!("{}", jobs_table(std::slice::from_ref(&job)));
                    let origin =
                        [Some(job.origin.source.clone()), job.origin.reference.clone(), job.origin.revision.clone()];
                    println!("origin: {}", origin.into_iter().flatten().collect::<Vec<_>>().join(" "));
                    let mut t =
                        table(&["STEP", "STATUS", "RUNS", "STARTED", "DURATION", "DEPENDS ON", "RUN", "REASON"]);
                    for s in &job.steps {
                        let running = s.started_at.filter(|_| s.ended_at.is_none()).map(|t| chrono::Utc::now() - t);
                        let took = s.duration_ms.map(chrono::Duration::milliseconds).or(running);
                        t.add_row(vec![
                            s.spec.id.clone(),
                            s.status.to_string(),
                            s.runs.to_string(),
                            s.started_at.map(|t| t.format("%H:%M:%S").to_string()).unwrap_or_default(),
                            took.map(human_duration).unwrap_or_default(),
                            s.spec.depends_on.join(", "),
                            s.spec.run.as_deref().map(first_line).unwrap_or_else(|| "(needs an LLM)".into()),
                            first_line(s.reason.as_deref().unwrap_or_default()),
                        ]);
                    }
                    println!("{t}");
                    if !job.attempts.is_empty() {
                        let mut t = table(&["ATTEMPT", "STATE", "STARTED", "DURATION", "OUTCOME"]);
                        for a in &job.attempts {
                            let took = a
                                .duration_ms
                                .map(chrono::Duration::milliseconds)
                                .unwrap_or_else(|| chrono::Utc::now() - a.started_at);
                            t.add_row(vec![
                                a.attempt.to_string(),
                                a.state.to_string(),
                                a.started_at.format("%H:%M:%S").to_string(),
                                human_duration(took),
                                a.outcome.clone().unwrap_or_default(),
                            ]);
                        }
                        println!("{t}");
                    }
                    for cm in &comments {
                        println!("[{}] {}: {}", cm.created_at.format("%H:%M:%S"), cm.author, cm.body);
                    }
                    if !evidence.is_empty() {
                        println!("evidence: {} item(s); `-o json` shows them in full", evidence.len());
                    }
                }
            }
        }
        JobsCommand::Retry { id, from_scratch, reason } => {
            let req = george_core::api::RetryRequest { from_scratch: *from_scratch, reason: reason.clone() };
            let job = c.retry(id, &req).await?;
            let how = if *from_scratch { " from scratch" } else { "" };
            said(format, &job, &format!("job/{} retried{how}", job.id));
        }
        JobsCommand::Resubmit { id, params, new_id, priority } => {
            let req = george_core::api::ResubmitRequest {
                id: new_id.clone(),
                params: parse_params(params)?,
                priority: priority
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--priority: {e}"))?,
            };
            let job = c.resubmit(id, &req).await?;
            said(format, &job, &format!("job/{} created (resubmit of {id})", job.id));
        }
        JobsCommand::Submit { template, params, labels, id, priority, parallelism, wait } => {
            let req = SubmitJob {
                template: template.clone(),
                params: parse_params(params)?,
                id: id.clone(),
                priority: priority
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--priority: {e}"))?,
                chapter: None,
                agent: None,
                env: BTreeMap::new(),
                parallelism: *parallelism,
                fail_fast: None,
                labels: parse_labels(labels)?,
            };
            let job = c.submit(&req).await?;
            if *wait {
                // Follow it from its creation on, whatever happened meanwhile.
                return watch(c, &job.id, Some(0), format).await;
            }
            print(format, &job, |j| jobs_table(std::slice::from_ref(j)));
        }
        JobsCommand::Pause(a) | JobsCommand::Resume(a) | JobsCommand::Abort(a) | JobsCommand::Approve(a) => {
            let action = match cmd {
                JobsCommand::Pause(_) => "pause",
                JobsCommand::Resume(_) => "resume",
                JobsCommand::Approve(_) => "approve",
                _ => "abort",
            };
            let job = c.act(&a.id, action, a.reason.clone()).await?;
            print(format, &job, |j| jobs_table(std::slice::from_ref(j)));
        }
        JobsCommand::Watch { id, since } => watch(c, id, *since, format).await?,
        JobsCommand::Override { id, status, step, reason } => {
            let req = george_core::api::OverrideRequest {
                status: status.clone(),
                step: step.clone(),
                reason: reason.clone(),
            };
            let job = c.override_status(id, &req).await?;
            print(format, &job, |j| jobs_table(std::slice::from_ref(j)));
        }
        JobsCommand::Inject { id, message } => {
            let comment = c.inject(id, message).await?;
            match format {
                Format::Json | Format::Yaml => render(format, &comment, |_| {}),
                Format::Table | Format::Wide | Format::Name => println!("message {} added to job {id}", comment.id),
            }
        }
        JobsCommand::Logs { id, attempt, follow } => {
            let n = match attempt {
                Some(n) => *n,
                None => c.job(id).await?.attempt,
            };
            if n == 0 {
                bail!("job `{id}` has not started an agent yet");
            }
            c.logs(&george_core::api::agent_id(id, n), *follow, std::io::stdout()).await?;
        }
    }
    Ok(())
}

/// A job and its descendants, as `george jobs tree` shows them.
#[derive(serde::Serialize)]
struct FamilyNode {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    children: Vec<FamilyNode>,
}

/// `id` and its descendants (each level one `GET …/children`; a family is at most a few levels deep).
async fn family_tree(c: &Client, id: &str, status: String) -> anyhow::Result<FamilyNode> {
    let mut node = FamilyNode { id: id.to_string(), key: None, status, reason: None, children: Vec::new() };
    for kid in c.children(id).await? {
        let mut child = Box::pin(family_tree(c, &kid.id, kid.status.to_string())).await?;
        child.key = Some(kid.key);
        child.reason = kid.reason;
        node.children.push(child);
    }
    Ok(node)
}

/// The tree drawn with `├──` and `└──`.
fn tree_lines(node: &FamilyNode, prefix: &str, last: bool, root: bool) -> String {
    let reason = node.reason.as_deref().map(|r| format!(" — {}", first_line(r))).unwrap_or_default();
    let key = node.key.as_deref().map(|k| format!(" [{k}]")).unwrap_or_default();
    let (branch, next) = match (root, last) {
        (true, _) => ("", String::new()),
        (false, true) => ("└── ", format!("{prefix}    ")),
        (false, false) => ("├── ", format!("{prefix}│   ")),
    };
    let mut out = format!("{prefix}{branch}{}{key}  {}{reason}\n", node.id, node.status);
    for (i, child) in node.children.iter().enumerate() {
        out.push_str(&tree_lines(child, &next, i + 1 == node.children.len(), false));
    }
    out
}
