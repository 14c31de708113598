//! `george serve` and `george up`.

use crate::cli::{ServeArgs, UpArgs};
use crate::config::{Config, FolderSection, GitSection, WorkFileSection};
use crate::serve::{Server, DEFAULT_DATA_DIR};
use anyhow::Context as _;
use george_core::JobStatus;
use george_store::JobFilter;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

/// `george serve`: the engine with its API, until SIGINT/SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    cfg.apply_env(|k| std::env::var(k).ok())?;
    if let Some(l) = args.listen {
        cfg.engine.listen = Some(l);
    }
    if let Some(d) = args.data.data_dir {
        cfg.engine.data_dir = Some(d);
    }
    // Flags replace what they name and keep the rest of a configured source.
    if let Some(path) = args.manifests {
        let interval = cfg.sources.folder.take().and_then(|f| f.interval);
        cfg.sources.folder = Some(FolderSection { path, interval });
    }
    if let Some(url) = args.git_url {
        let prev = cfg.sources.git.take();
        cfg.sources.git = Some(GitSection {
            url,
            branch: args.git_branch.or(prev.as_ref().and_then(|g| g.branch.clone())),
            path: args.git_path.or(prev.as_ref().and_then(|g| g.path.clone())),
            interval: prev.and_then(|g| g.interval),
        });
    } else if let Some(g) = cfg.sources.git.as_mut() {
        if let Some(b) = args.git_branch {
            g.branch = Some(b);
        }
        if let Some(p) = args.git_path {
            g.path = Some(p);
        }
    }
    if let Some(path) = args.work_file {
        let prev = cfg.sources.work_file.take();
        let template = args
            .work_file_template
            .or(prev.as_ref().map(|w| w.template.clone()))
            .context("--work-file needs --work-file-template: the TaskTemplate each work item becomes")?;
        cfg.sources.work_file = Some(WorkFileSection { path, template, interval: prev.and_then(|w| w.interval) });
    }
    args.runtime.apply(&mut cfg);
    if let Some(d) = args.reconcile_interval {
        cfg.engine.reconcile_interval = Some(george_core::duration::HumanDuration(d.into()));
    }
    let server = Server::start(cfg).await?;
    if let Some(f) = &server.token_file {
        tracing::info!(token_file = %f.display(), "operator token (for the CLI and API) is in the token file");
    }
    server.run_until_signal().await
}

fn settled(s: JobStatus) -> bool {
    s.is_final() || matches!(s, JobStatus::Blocked | JobStatus::Paused)
}

fn mark(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Completed => "✓",
        JobStatus::Failed | JobStatus::Aborted => "✗",
        JobStatus::Blocked | JobStatus::Paused => "‖",
        JobStatus::InProgress => "▶",
        JobStatus::Pending => "·",
    }
}

/// `george up`: the quickstart. Returns the exit code.
pub async fn up(args: UpArgs) -> i32 {
    match run_up(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

async fn run_up(args: UpArgs) -> anyhow::Result<i32> {
    if !args.path.is_dir() {
        anyhow::bail!(
            "{} is not a folder of manifests; run from the repository root or pass a path (`george up PATH`)",
            args.path.display()
        );
    }
    if crate::validate::run(&args.path, crate::cli::Format::Table) != 0 {
        return Ok(1);
    }
    let mut cfg = Config::default();
    cfg.apply_env(|k| std::env::var(k).ok())?;
    cfg.engine.listen = Some(args.listen);
    cfg.engine.data_dir =
        Some(args.data.data_dir.clone().or(cfg.engine.data_dir.clone()).unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
    args.runtime.clone().apply(&mut cfg);
    cfg.sources = Default::default();
    cfg.sources.folder = Some(FolderSection {
        path: args.path.clone(),
        interval: Some(george_core::duration::HumanDuration::from_secs(2)),
    });
    let mut server = Server::start(cfg).await?;
    println!("george is up: engine API at {} (data in {})", server.api_url, server.data_dir.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // An engine that fails ends the quickstart, with its reason.
    let mut lost = server.take_lost();
    // Judge nothing before the folder's current revision is applied (and the
    // agents of a previous run adopted): jobs added since then count.
    tokio::select! {
        _ = server.engine.ready() => {}
        _ = tokio::signal::ctrl_c() => return interrupted(server, args.keep_agents).await,
        _ = term.recv() => return interrupted(server, args.keep_agents).await,
        why = crate::serve::stopped_on_its_own(&mut lost) => return failed(server, why).await,
    }

    let mut shown: BTreeMap<String, (JobStatus, usize)> = BTreeMap::new();
    let mut announced_settled = false;
    let mut tick = tokio::time::interval(Duration::from_millis(150));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            why = crate::serve::stopped_on_its_own(&mut lost) => return failed(server, why).await,
        }
        let sources = server.store.sources().await?;
        let Some(folder) = sources.iter().find(|s| s.name == "folder") else { continue };
        if folder.applied_revision.is_none() {
            if !folder.errors.is_empty() {
                eprintln!("the manifests were rejected:");
                folder.errors.iter().for_each(|e| eprintln!("  {e}"));
                if args.once {
                    server.stop().await?;
                    return Ok(1);
                }
            }
            continue;
        }
        let jobs = server.store.list_jobs(&JobFilter::default()).await?;
        for j in &jobs {
            let full = server.store.get_job(&j.id).await?.unwrap_or_else(|| j.clone());
            let done = full.steps.iter().filter(|s| s.status.is_done()).count();
            let now = (full.status, done);
            if shown.get(&j.id) != Some(&now) {
                let reason = full.reason.as_deref().map(|r| format!("  ({r})")).unwrap_or_default();
                println!(
                    "  {} {:<28} {:<12} {}/{} steps{}",
                    mark(full.status),
                    full.id,
                    full.status.as_str(),
                    done,
                    full.steps.len(),
                    reason
                );
                shown.insert(j.id.clone(), now);
            }
        }
        let live = server.store.live_attempts().await?;
        let all_settled = jobs.iter().all(|j| settled(j.status)) && live.is_empty();
        if all_settled && !announced_settled {
            announced_settled = true;
            let completed = jobs.iter().filter(|j| j.status == JobStatus::Completed).count();
            println!("{completed}/{} jobs completed", jobs.len());
            if args.once {
                server.stop().await?;
                return Ok(if completed == jobs.len() { 0 } else { 1 });
            }
            println!(
                "still serving: try `{}`; Ctrl-C to stop",
                client_command(&server.api_url, server.token_file.as_deref())
            );
            let _ = std::io::stdout().flush();
        } else if !all_settled {
            announced_settled = false;
        }
    }
    interrupted(server, args.keep_agents).await
}

/// The engine failed: the API stops too (agents keep running, for the
/// next start to adopt), and the quickstart ends with the reason.
async fn failed(server: Server, why: String) -> anyhow::Result<i32> {
    server.stop_or_leave().await;
    anyhow::bail!("{why}")
}

/// Ctrl-C (or SIGTERM): stop the engine and, unless `keep_agents`, every
/// agent (gracefully), say what is left unfinished, and exit 130.
async fn interrupted(server: Server, keep_agents: bool) -> anyhow::Result<i32> {
    let store = server.store.clone();
    let grace = server.engine.config().termination_grace;
    if keep_agents {
        let live = store.live_attempts().await?.len();
        server.stop().await?;
        println!("stopped; {live} agents left running for the next start to adopt (--keep-agents)");
    } else {
        let stopped = server.stop_with_agents(grace).await?;
        if !stopped.is_empty() {
            println!("stopped {} agents: {}", stopped.len(), stopped.join(", "));
        }
    }
    let jobs = store.list_jobs(&JobFilter::default()).await?;
    let unfinished: Vec<_> = jobs.iter().filter(|j| !j.status.is_final()).collect();
    if unfinished.is_empty() {
        println!("interrupted; every job had finished");
    } else {
        println!("interrupted; {} of {} jobs unfinished (they go on at the next start):", unfinished.len(), jobs.len());
        for j in unfinished {
            let reason = j.reason.as_deref().map(|r| format!("  ({r})")).unwrap_or_default();
            println!("  {} {:<28} {}{}", mark(j.status), j.id, j.status.as_str(), reason);
        }
    }
    let _ = std::io::stdout().flush();
    Ok(130)
}

/// The command line that reaches this engine from anywhere: its address and
/// its token file, absolute (a copy-and-paste works from any directory).
fn client_command(api_url: &str, token_file: Option<&std::path::Path>) -> String {
    let token = token_file
        .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.to_path_buf()))
        .map(|f| format!(" --token-file {}", f.display()))
        .unwrap_or_default();
    format!("george --server {api_url}{token} jobs ls")
}
