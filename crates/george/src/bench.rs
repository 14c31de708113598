//! `george bench`: submits N trivial jobs (one `run: "true"` step) through the
//! real engine, API and process runtime, and reports submit→agent-start
//! latency, end-to-end throughput and the engine's peak memory.

use crate::cli::{BenchArgs, Format};
use crate::config::{Config, FolderSection};
use crate::serve::Server;
use anyhow::Context as _;
use futures_util::StreamExt;
use george_client::Client;
use george_core::api::SubmitJob;
use george_core::{EventKind, JobStatus};
use george_store::Store;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bench's AgentSpec and one-step template.
pub const MANIFESTS: &str = "apiVersion: george/v1
kind: AgentSpec
metadata: {name: bench-agent}
spec:
  capabilities: [shell]
---
apiVersion: george/v1
kind: TaskTemplate
metadata: {name: noop}
spec:
  requiredCapabilities: [shell]
  steps:
    - id: noop
      description: do nothing
      run: \"true\"
---
apiVersion: george/v1
kind: TaskTemplate
metadata: {name: hold}
spec:
  requiredCapabilities: [shell]
  steps:
    - id: hold
      description: stay alive until released
      run: 'while [ ! -f \"$GEORGE_OUTPUT_DIR/release\" ]; do sleep 0.05; done'
";

/// The bench's manifests, its AgentSpec keeping `pool` warm agents (up to four times as many after cold starts).
pub fn manifests(pool: u32) -> String {
    if pool == 0 {
        return MANIFESTS.to_string();
    }
    // A burst may grow the pool to four times its size (cold starts make it grow).
    let pool = format!("capabilities: [shell]\n  pool: {{min: {pool}, max: {}}}\n---", pool * 4);
    MANIFESTS.replacen("capabilities: [shell]\n---", &pool, 1)
}

/// The figures.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    store: &'static str,
    sandbox: bool,
    /// Warm agents kept (`spec.pool.min`), and how many jobs started on one.
    pool: u32,
    warm_starts: u64,
    jobs: usize,
    preloaded: usize,
    backlog: bool,
    completed: usize,
    submit_to_start_p50_ms: f64,
    submit_to_start_p99_ms: f64,
    submit_to_start_max_ms: f64,
    /// From the submit to the agent starting the job's first step (its own clock).
    submit_to_first_step_p50_ms: f64,
    submit_to_first_step_p99_ms: f64,
    /// Where the time to the first step goes (p50 of each part, ms): the
    /// submit until the job is stored, until its attempt is recorded, until
    /// its agent's handle is stored (spawned or claimed), until the agent
    /// starts the step.
    path_p50_ms: PathParts,
    /// The baseline, in the same run: a raw fork/exec of `/bin/sh -c true`, to its exit.
    raw_spawn_p50_ms: f64,
    raw_spawn_p99_ms: f64,
    throughput_jobs_per_s: f64,
    wall_seconds: f64,
    engine_peak_rss_mib: f64,
    /// CPU time of the engine's process (the bench's submitter included; not
    /// the agents, which are processes of their own) per job.
    cpu_ms_per_job: f64,
    /// Growth of the data directory (store, logs, outputs) per job.
    disk_kib_per_job: f64,
}

/// The parts of the path from a submit to the job's first step, p50 of each, in milliseconds.
#[derive(Debug, Default, Serialize)]
pub struct PathParts {
    submit_to_stored: f64,
    stored_to_attempt: f64,
    attempt_to_agent: f64,
    agent_to_first_step: f64,
}

/// When each part of one job's path ended.
#[derive(Default)]
struct Marks {
    stored: Option<chrono::DateTime<chrono::Utc>>,
    attempt: Option<chrono::DateTime<chrono::Utc>>,
    agent: Option<chrono::DateTime<chrono::Utc>>,
}

impl PathParts {
    fn of(
        submitted: &HashMap<String, chrono::DateTime<chrono::Utc>>,
        marks: &HashMap<String, Marks>,
        first_steps: &HashMap<&str, chrono::DateTime<chrono::Utc>>,
    ) -> Self {
        let ms = |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| {
            (b - a).num_microseconds().unwrap_or(0) as f64 / 1000.0
        };
        let mut parts: [Vec<f64>; 4] = Default::default();
        for (job, m) in marks {
            let (Some(submit), Some(stored), Some(attempt), Some(agent), Some(step)) =
                (submitted.get(job), m.stored, m.attempt, m.agent, first_steps.get(job.as_str()))
            else {
                continue;
            };
            for (i, v) in
                [ms(*submit, stored), ms(stored, attempt), ms(attempt, agent), ms(agent, *step)].into_iter().enumerate()
            {
                parts[i].push(v);
            }
        }
        let p50 = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            percentile(v, 0.5)
        };
        let [a, b, c, d] = &mut parts;
        Self {
            submit_to_stored: p50(a),
            stored_to_attempt: p50(b),
            attempt_to_agent: p50(c),
            agent_to_first_step: p50(d),
        }
    }
}

/// User plus system CPU time of this process so far, in milliseconds.
fn cpu_ms() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let Ok(u) = getrusage(UsageWho::RUSAGE_SELF) else { return 0.0 };
    let ms = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e3 + t.tv_usec() as f64 / 1e3;
    ms(u.user_time()) + ms(u.system_time())
}

/// The nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Starts an engine in a fresh temporary directory with the bench's
/// manifests applied (after `tune` adjusts its configuration), and a client.
pub async fn start(tune: impl FnOnce(&mut Config)) -> anyhow::Result<(Server, Client, std::path::PathBuf)> {
    start_on(tune, 0, |_| async { Ok(()) }).await
}

/// [`start`], with `prepare` writing to the engine's store before the engine starts.
pub async fn start_on<F, Fut>(
    tune: impl FnOnce(&mut Config),
    pool: u32,
    prepare: F,
) -> anyhow::Result<(Server, Client, std::path::PathBuf)>
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let dir = tempfile_dir()?;
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    std::fs::write(manifests.join("bench.yaml"), self::manifests(pool))?;
    let mut cfg = Config::default();
    cfg.engine.listen = Some("127.0.0.1:0".parse()?);
    cfg.engine.data_dir = Some(dir.join("data"));
    cfg.sources.folder = Some(FolderSection { path: manifests, interval: None });
    tune(&mut cfg);
    {
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir)?;
        let (store, _) = crate::serve::open_store(cfg.store.resolve()?, &data_dir).await?;
        prepare(store).await?;
    }
    let server = Server::start(cfg).await?;
    let client = Client::new(&server.api_url, &server.token)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.store.catalog().await?.templates.contains_key("noop") {
        anyhow::ensure!(Instant::now() < deadline, "the bench manifests were not applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((server, client, dir))
}

/// A submission of the bench's one-step job.
pub fn noop_job(id: &str) -> SubmitJob {
    SubmitJob::named(id, "noop")
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs, format: Format) -> anyhow::Result<()> {
    match args.mode.as_str() {
        "process" => {}
        "docker" => return crate::bench_docker::run(args, format).await,
        "scheduler" => return scheduler(args, format),
        "proxy" => return crate::bench_proxy::run(args, format).await,
        "chaos" | "chaos-docker" => return crate::chaos::run(args, format).await,
        other => anyhow::bail!(
            "--mode: unknown mode `{other}`; expected process, docker, scheduler, proxy, chaos or chaos-docker"
        ),
    }
    let jobs = args.jobs.unwrap_or(500);
    let database = args.database_url.clone();
    let (preload, backlog, concurrency) = (args.preload, args.backlog, args.concurrency.max(1));
    let raw = raw_spawns(jobs.clamp(20, 200)).await?;
    let (server, client, dir) = start_on(
        |cfg| {
            cfg.engine.workers = Some(args.workers);
            cfg.agents.sandbox.enabled = Some(!args.no_sandbox);
            if let Some(url) = database {
                cfg.store.store_type = Some(crate::config::StoreType::Postgres);
                cfg.store.url = Some(url);
            }
        },
        args.pool,
        |store| async move {
            if preload > 0 {
                let t = Instant::now();
                crate::bench_history::preload(store.clone(), preload, 8).await.context("preloading finished jobs")?;
                tracing::info!(jobs = preload, seconds = t.elapsed().as_secs_f64(), "preloaded finished jobs");
            }
            if backlog {
                crate::bench_history::backlog(store.as_ref(), jobs, "bench", 8).await.context("writing the backlog")?;
            }
            Ok(())
        },
    )
    .await?;
    if args.pool > 0 {
        wait_warm(&server, args.pool).await?;
    }
    let data_dir = dir.join("data");
    let disk_before = george_engine::retention::disk_bytes(&data_dir);
    let cpu_before = cpu_ms();
    let since_before = server.store.latest_seq().await?;
    // Settled jobs are counted from the store's broadcast, not by asking the
    // store: a count reads every job, a cost that would grow with the history.
    let mut committed = server.store.subscribe();
    let first_submit = chrono::Utc::now();
    let submitted: HashMap<String, chrono::DateTime<chrono::Utc>> = if backlog {
        // Already in the store: each job waited from the engine's start.
        (0..jobs).map(|i| (format!("bench-{i:06}"), first_submit)).collect()
    } else if args.one_at_a_time {
        submit_one_at_a_time(&server, &client, jobs, args.pool).await?
    } else {
        submit(&client, jobs, concurrency).await?
    };
    let mut settled = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(1800);
    while settled.len() < jobs {
        anyhow::ensure!(Instant::now() < deadline, "the bench jobs did not finish within 30 minutes");
        match tokio::time::timeout(Duration::from_millis(500), committed.recv()).await {
            Ok(Ok(e)) => {
                let done = e.kind == EventKind::JobStatus && (e.data["to"] == "completed" || e.data["to"] == "failed");
                if let Some(job) = e.job_id.filter(|j| done && submitted.contains_key(j)) {
                    settled.insert(job);
                }
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => anyhow::bail!("the store's broadcast ended"),
            // Quiet for a while, or some events were missed: count instead (rare).
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) | Err(_) => {
                let counts = server.store.count_by_status().await?;
                let finished = |s: &JobStatus| matches!(s, JobStatus::Completed | JobStatus::Failed);
                let done: u64 = counts.iter().filter(|(s, _)| finished(s)).map(|(_, n)| n).sum();
                if done as usize >= jobs + preload {
                    break;
                }
            }
        }
    }
    let cpu = cpu_ms() - cpu_before;
    let disk = george_engine::retention::disk_bytes(&data_dir).saturating_sub(disk_before);
    let mut latencies = Vec::with_capacity(jobs);
    let mut first_steps: HashMap<&str, chrono::DateTime<chrono::Utc>> = HashMap::new();
    let mut marks: HashMap<String, Marks> = HashMap::new();
    let mut last_finish = first_submit;
    let mut completed = 0;
    let mut since = since_before;
    loop {
        let batch = server.store.events_since(since, 5000, None).await?;
        let Some(last) = batch.last() else { break };
        since = last.seq;
        for ev in &batch {
            let Some(job) = ev.job_id.as_deref() else { continue };
            if submitted.contains_key(job) {
                let m = marks.entry(job.to_string()).or_default();
                match ev.kind {
                    EventKind::JobCreated => m.stored = m.stored.or(Some(ev.ts)),
                    EventKind::AttemptStarted => m.attempt = m.attempt.or(Some(ev.ts)),
                    EventKind::AttemptSpawned => m.agent = m.agent.or(Some(ev.ts)),
                    _ => {}
                }
            }
            match ev.kind {
                // Agent start = the attempt's process was spawned.
                EventKind::AttemptSpawned => {
                    if let Some(t) = submitted.get(job) {
                        latencies.push((ev.ts - *t).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                    }
                }
                EventKind::StepStatus if ev.data["to"] == "in_progress" => {
                    let at = ev.data["at"].as_str().and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok());
                    if let (Some((job, _)), Some(at)) = (submitted.get_key_value(job), at) {
                        let first = first_steps.entry(job.as_str()).or_insert(at);
                        *first = (*first).min(at);
                    }
                }
                EventKind::JobStatus if ev.data["to"] == "completed" || ev.data["to"] == "failed" => {
                    last_finish = last_finish.max(ev.ts);
                    completed += usize::from(ev.data["to"] == "completed" && submitted.contains_key(job));
                }
                _ => {}
            }
        }
    }
    let wall = (last_finish - first_submit).num_microseconds().unwrap_or(0) as f64 / 1e6;
    latencies.sort_by(|a, b| a.total_cmp(b));
    let mut to_first_step: Vec<f64> = first_steps
        .iter()
        .map(|(job, at)| (*at - submitted[*job]).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        .collect();
    to_first_step.sort_by(|a, b| a.total_cmp(b));
    let warm_starts = server.engine.pools().iter().map(|p| p.claimed).sum();
    let report = BenchReport {
        store: if args.database_url.is_some() { "postgres" } else { "sqlite" },
        sandbox: !args.no_sandbox,
        pool: args.pool,
        warm_starts,
        jobs,
        preloaded: preload,
        backlog,
        completed,
        submit_to_start_p50_ms: percentile(&latencies, 0.50),
        submit_to_start_p99_ms: percentile(&latencies, 0.99),
        submit_to_start_max_ms: latencies.last().copied().unwrap_or(0.0),
        submit_to_first_step_p50_ms: percentile(&to_first_step, 0.50),
        submit_to_first_step_p99_ms: percentile(&to_first_step, 0.99),
        path_p50_ms: PathParts::of(&submitted, &marks, &first_steps),
        raw_spawn_p50_ms: percentile(&raw, 0.50),
        raw_spawn_p99_ms: percentile(&raw, 0.99),
        throughput_jobs_per_s: if wall > 0.0 { completed as f64 / wall } else { 0.0 },
        wall_seconds: wall,
        engine_peak_rss_mib: peak_rss_mib(),
        cpu_ms_per_job: cpu / jobs.max(1) as f64,
        disk_kib_per_job: disk as f64 / 1024.0 / jobs.max(1) as f64,
    };
    server.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    match format {
        Format::Json | Format::Yaml => crate::output::render(format, &report, |_| {}),
        Format::Table | Format::Wide | Format::Name => {
            println!("store                     {}", report.store);
            println!("agent sandbox             {}", if report.sandbox { "on" } else { "off" });
            println!("warm pool                 {} ({} jobs started warm)", report.pool, report.warm_starts);
            println!("jobs                      {} ({} completed)", report.jobs, report.completed);
            println!("history                   {} finished jobs preloaded", report.preloaded);
            println!("backlog                   {}", if report.backlog { "all pending at start" } else { "no" });
            println!("submit→start p50          {:.1} ms", report.submit_to_start_p50_ms);
            println!("submit→start p99          {:.1} ms", report.submit_to_start_p99_ms);
            println!("submit→start max          {:.1} ms", report.submit_to_start_max_ms);
            println!(
                "submit→first step        p50 {:.2} ms, p99 {:.2} ms",
                report.submit_to_first_step_p50_ms, report.submit_to_first_step_p99_ms
            );
            let p = &report.path_p50_ms;
            println!(
                "  its parts, p50          stored {:.2} · attempt {:.2} · agent {:.2} · first step {:.2} ms",
                p.submit_to_stored, p.stored_to_attempt, p.attempt_to_agent, p.agent_to_first_step
            );
            println!(
                "raw fork/exec (baseline)  p50 {:.2} ms, p99 {:.2} ms (sh -c true, to its exit)",
                report.raw_spawn_p50_ms, report.raw_spawn_p99_ms
            );
            println!(
                "throughput (end to end)   {:.1} jobs/s over {:.2} s",
                report.throughput_jobs_per_s, report.wall_seconds
            );
            println!("engine peak RSS           {:.1} MiB", report.engine_peak_rss_mib);
            println!("engine CPU per job        {:.2} ms", report.cpu_ms_per_job);
            println!("disk per job              {:.1} KiB", report.disk_kib_per_job);
        }
    }
    Ok(())
}

/// Submits `jobs` bench jobs one at a time, each when the one before it has
/// completed (and, with a pool, once the pool is full again): latency without queueing.
async fn submit_one_at_a_time(
    server: &Server,
    client: &Client,
    jobs: usize,
    pool: u32,
) -> anyhow::Result<HashMap<String, chrono::DateTime<chrono::Utc>>> {
    let mut events = server.store.subscribe();
    let mut out = HashMap::new();
    for i in 0..jobs {
        if pool > 0 {
            wait_warm(server, pool).await?;
        }
        let id = format!("bench-{i:06}");
        out.insert(id.clone(), chrono::Utc::now());
        client.submit(&noop_job(&id)).await.context("submitting a bench job")?;
        loop {
            let e = tokio::time::timeout(Duration::from_secs(60), events.recv())
                .await
                .context("a bench job took over 60s")??;
            let done = e.kind == EventKind::JobStatus && (e.data["to"] == "completed" || e.data["to"] == "failed");
            if done && e.job_id.as_deref() == Some(id.as_str()) {
                break;
            }
        }
    }
    Ok(out)
}

/// The baseline: `n` raw fork/execs of `/bin/sh -c true`, each to its exit, in milliseconds, sorted.
async fn raw_spawns(n: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        tokio::process::Command::new("/bin/sh").args(["-c", "true"]).status().await?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    out.sort_by(|a, b| a.total_cmp(b));
    Ok(out)
}

/// Waits until the bench AgentSpec's pool holds `n` warm agents.
pub async fn wait_warm(server: &Server, n: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !server.engine.pools().iter().any(|p| p.warm >= n) {
        anyhow::ensure!(Instant::now() < deadline, "the warm pool did not fill to {n} within 2 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Submits `jobs` bench jobs through the API, `concurrency` at a time;
/// returns when each was submitted.
async fn submit(
    client: &Client,
    jobs: usize,
    concurrency: usize,
) -> anyhow::Result<HashMap<String, chrono::DateTime<chrono::Utc>>> {
    futures_util::stream::iter(0..jobs)
        .map(|i| {
            let client = client.clone();
            async move {
                let id = format!("bench-{i:06}");
                let req = noop_job(&id);
                let t = chrono::Utc::now();
                client.submit(&req).await.map(|_| (id, t))
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .context("submitting bench jobs")
}

/// A fresh temporary directory.
pub fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = std::env::temp_dir().join(format!("george-bench-{}", hex::encode(b)));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Scheduler decisions per second with a deep queue.
#[derive(Debug, Serialize)]
pub struct SchedulerReport {
    queued_jobs: usize,
    chapters: usize,
    decisions: usize,
    decisions_per_s: f64,
    enqueue_per_s: f64,
}

/// `george bench --mode scheduler`: `--jobs` queued jobs (default 100 000)
/// across 50 chapters with mixed priorities and weights; then admit one job,
/// finish the oldest running one, and repeat. A decision is one admission.
fn scheduler(args: BenchArgs, format: Format) -> anyhow::Result<()> {
    use george_engine::scheduler::{Admission, Limits, QueuedJob, Scheduler, Shares};
    let n = args.jobs.unwrap_or(100_000).max(1);
    let chapters = 50;
    let shares = Shares {
        weight: (0..chapters).map(|c| (format!("ch{c}"), 1 + (c % 4) as u32)).collect(),
        min_share: (0..chapters).filter(|c| c % 10 == 0).map(|c| (format!("ch{c}"), 1)).collect(),
    };
    let mut s = Scheduler::new(Limits { global: Some(200), ..Default::default() }, shares);
    let priorities = george_core::Priority::ALL;
    let t = Instant::now();
    for i in 0..n {
        s.enqueue(QueuedJob {
            id: format!("j{i}"),
            priority: priorities[(i * 7) % priorities.len()],
            chapter: format!("ch{}", i % chapters),
            agent_spec: "a".into(),
            due: 0,
        });
    }
    let enqueue_per_s = n as f64 / t.elapsed().as_secs_f64();
    let mut running = std::collections::VecDeque::new();
    let t = Instant::now();
    let mut decisions = 0;
    while let Admission::Start(job) = s.admit() {
        decisions += 1;
        running.push_back(job.id);
        if running.len() >= 200 {
            let done = running.pop_front().expect("non-empty");
            s.finished(&done);
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    anyhow::ensure!(decisions == n, "the scheduler admitted {decisions} of {n} jobs");
    let report = SchedulerReport {
        queued_jobs: n,
        chapters,
        decisions,
        decisions_per_s: decisions as f64 / elapsed,
        enqueue_per_s,
    };
    match format {
        Format::Json | Format::Yaml => crate::output::render(format, &report, |_| {}),
        Format::Table | Format::Wide | Format::Name => {
            println!("queued jobs               {} across {} chapters", report.queued_jobs, report.chapters);
            println!("enqueue                   {:.0} jobs/s", report.enqueue_per_s);
            println!("decisions                 {:.0} /s ({} admissions)", report.decisions_per_s, report.decisions);
        }
    }
    Ok(())
}
