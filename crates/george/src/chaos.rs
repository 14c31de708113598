//! `george bench --mode chaos` (and `chaos-docker`): a real engine process
//! on SQLite runs multi-step jobs whose steps record their attempt, while a
//! seeded plan kills and freezes agents and the engine, including kills from
//! inside the spawn window (the engine's kill points, see
//! `george_engine::failpoint`) and one outage longer than the health
//! deadline. Afterwards it checks every promise and prints the figures:
//!
//! - no job lost: every accepted job exists and completes;
//! - no doubles: no two attempts' steps overlap in time (each step appends
//!   `<attempt> <nanoseconds>` ticks to the job's output directory), and no
//!   sample ever saw two live agents (process groups or containers) for one job;
//! - no orphans: no agent process or container is left once the engine stops;
//! - no healthy agent ended as unhealthy (only agents this harness froze may be);
//! - the engine's `maxConcurrent` is never exceeded.
//!
//! The process runtime's chaos test in CI runs a short plan of this
//! (`crates/george/tests/chaos.rs`); a long run's figures are in
//! docs/BENCHMARKS.md.

use crate::cli::Format;
use anyhow::Context as _;
use george_client::Client;
use george_core::api::{AgentView, JobView, SubmitJob};
use george_core::JobStatus;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "chaos-operator-token-0123456789";
/// Agents at once (the engine's `maxConcurrent`).
const MAX_CONCURRENT: usize = 6;
/// Heartbeat interval 500ms × 4 + 1s timeout.
const HEALTH_GRACE: Duration = Duration::from_secs(3);

/// What to do, and how much of it.
#[derive(Debug, Clone)]
pub struct ChaosPlan {
    /// Jobs to run.
    pub jobs: usize,
    /// The seed of every random choice.
    pub seed: u64,
    /// `process` or `docker`.
    pub runtime: String,
    /// The agent image (docker).
    pub image: Option<String>,
    /// Engine kills at a random moment.
    pub engine_kills: u32,
    /// Engine kills at a kill point (mostly inside the spawn window).
    pub window_kills: u32,
    /// Agent kills (kill -9 of the agent process, `docker kill`).
    pub agent_kills: u32,
    /// Agents frozen with SIGSTOP (process runtime), some past the health deadline.
    pub agent_stops: u32,
    /// Engine freezes with SIGSTOP.
    pub engine_stops: u32,
    /// Where to work (a fresh temporary directory if not given).
    pub dir: Option<PathBuf>,
    /// Give up after this long.
    pub deadline: Duration,
    /// Warm agents kept for the AgentSpec (`spec.pool.min`; max is twice that).
    pub pool: u32,
}

impl ChaosPlan {
    /// A plan scaled to `jobs`: about one agent kill per two jobs and one
    /// engine kill per fifteen, two thirds of those in the spawn window.
    pub fn scaled(jobs: usize, seed: u64, runtime: &str) -> Self {
        let engine = (jobs / 8).max(3) as u32;
        Self {
            jobs,
            seed,
            runtime: runtime.into(),
            image: None,
            engine_kills: engine / 3,
            window_kills: engine - engine / 3,
            agent_kills: (jobs / 2).max(4) as u32,
            agent_stops: if runtime == "process" { (jobs / 12).max(2) as u32 } else { 0 },
            engine_stops: (jobs / 20).max(1) as u32,
            dir: None,
            deadline: Duration::from_secs(600),
            pool: 0,
        }
    }
}

/// The figures, and every promise checked.
#[derive(Debug, Default, Serialize, Clone)]
pub struct ChaosReport {
    /// The seed (a failing run is repeated with it).
    pub seed: u64,
    /// The runtime.
    pub runtime: String,
    /// Jobs accepted by the API.
    pub jobs: usize,
    /// Jobs that completed.
    pub completed: usize,
    /// Accepted jobs missing or not completed at the end.
    pub lost: usize,
    /// Engine SIGKILLs in all: at random moments (also the one that re-arms
    /// it, and the long outage) and at its kill points.
    pub engine_kills: u32,
    /// Engine kills at a kill point, by point.
    pub kill_points: BTreeMap<String, u32>,
    /// Engine kills inside the spawn window (`spawn.window`, or
    /// `claim.window` for an attempt that claimed a warm agent).
    pub spawn_window_kills: u32,
    /// The most warm (unclaimed) agents seen at once.
    pub max_warm_agents: usize,
    /// Agent kills.
    pub agent_kills: u32,
    /// Agents frozen.
    pub agent_stops: u32,
    /// Engine freezes.
    pub engine_stops: u32,
    /// Outages longer than twice the health deadline.
    pub long_outages: u32,
    /// Pairs of attempts of one job whose steps overlapped in time.
    pub overlaps: usize,
    /// Samples that saw two live agents of one job.
    pub double_agents: usize,
    /// Agent processes or containers left after the engine stopped.
    pub orphans: usize,
    /// Agents ended as unhealthy that this harness did not freeze.
    pub healthy_ended_unhealthy: usize,
    /// The most agents seen alive at once.
    pub max_live_agents: usize,
    /// The engine's limit.
    pub max_concurrent: usize,
    /// Attempts started in all.
    pub attempts: usize,
    /// From an engine's start to `/readyz` answering 200, median and worst.
    pub restart_to_ready_p50_ms: f64,
    /// Worst.
    pub restart_to_ready_max_ms: f64,
    /// Wall time.
    pub wall_seconds: f64,
    /// What went wrong, one line each.
    pub violations: Vec<String>,
}

impl ChaosReport {
    /// Whether every promise held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// SplitMix64: small, seeded, good enough to pick victims.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to.saturating_sub(from).max(1)))
    }
}

/// One step's script: six ticks of `<attempt> <ns>` a tenth of a second apart.
const TICKS: &str = "i=0; while [ $i -lt 6 ]; do echo \"$GEORGE_ATTEMPT $(date +%s%N)\" >> \"$GEORGE_OUTPUT_DIR/ticks\"; sleep 0.1; i=$((i+1)); done";

fn manifests(pool: u32) -> String {
    let step = |id: &str, after: Option<&str>| {
        let deps = after.map(|a| format!("\n      depends_on: [{a}]")).unwrap_or_default();
        format!("    - id: {id}\n      description: tick\n      run: '{TICKS}'{deps}\n")
    };
    format!(
        "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {{name: chaos-agent}}\nspec:\n  capabilities: [shell]\n{}---\n\
         apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {{name: chaos}}\nspec:\n  requiredCapabilities: [shell]\n  steps:\n{}{}{}",
        if pool > 0 { format!("  pool: {{min: {pool}, max: {}}}\n", pool * 2) } else { String::new() },
        step("one", None),
        step("two", Some("one")),
        step("three", Some("two"))
    )
}

fn config(dir: &Path, plan: &ChaosPlan) -> String {
    let backend = match plan.runtime.as_str() {
        "docker" => format!(
            "containerBackend:\n  type: docker\n  docker:\n    image: {}\n    pullPolicy: Never\n",
            plan.image.as_deref().unwrap_or("george/engine:latest")
        ),
        _ => String::new(),
    };
    format!(
        "engine:\n  id: chaos\n  reconcileInterval: 1s\n  retryBackoff: 100ms\n  maxRetryBackoff: 500ms\n  maxAttempts: 10000\n  \
         terminationGrace: 1s\n  maxConcurrent: {MAX_CONCURRENT}\n\
         agents:\n  healthCheck:\n    interval: 500ms\n    timeout: 1s\n    unhealthyThreshold: 4\n\
         sources:\n  folder:\n    path: {}\n    interval: 1s\n{backend}",
        dir.join("manifests").display()
    )
}

/// The engine process under test.
struct EngineProc {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    starts: u32,
    armed: Option<&'static str>,
}

impl EngineProc {
    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("engine-{}.log", self.starts))
    }

    /// Starts the engine (armed at a kill point, if given); returns the time to ready.
    async fn start(&mut self, armed: Option<(&'static str, u32)>) -> anyhow::Result<Duration> {
        self.starts += 1;
        self.armed = armed.map(|a| a.0);
        let log = std::fs::File::create(self.log_path())?;
        let exe = std::env::current_exe().context("cannot find the george executable")?;
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .arg("--config")
            .arg(self.dir.join("george-config.yaml"))
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .env("GEORGE_API_TOKENS", format!("chaos:{TOKEN}"))
            .env("GEORGE_LOG", "info")
            .env_remove(george_engine::failpoint::ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if let Some((points, pass)) = armed {
            // `a|b`: armed at both; it dies at whichever it passes `pass` times first.
            let spec: Vec<String> = points.split('|').map(|p| format!("{p}@{pass}")).collect();
            cmd.env(george_engine::failpoint::ENV, spec.join(","));
        }
        let started = Instant::now();
        self.child = Some(cmd.spawn().context("cannot start the engine")?);
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        loop {
            if let Ok(r) = http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(started.elapsed());
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                // An armed engine may die at its kill point before it is ready.
                if self.armed.is_some() {
                    return Ok(started.elapsed());
                }
                anyhow::bail!("the engine exited during start-up ({status}); see {}", self.log_path().display());
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "the engine was not ready within 60s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn pid(&self) -> Option<nix::unistd::Pid> {
        self.child.as_ref().map(|c| nix::unistd::Pid::from_raw(c.id() as i32))
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The engine died on its own: which kill point, if any.
    fn died(&mut self) -> Option<Option<String>> {
        let c = self.child.as_mut()?;
        c.try_wait().ok().flatten()?;
        self.child = None;
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let point = log.lines().find_map(|l| {
            l.strip_prefix("george: kill point ").and_then(|r| r.split_whitespace().next()).map(str::to_string)
        });
        Some(point)
    }

    fn stop(&mut self) {
        if let (Some(pid), Some(mut c)) = (self.pid(), self.child.take()) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

impl Drop for EngineProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A live agent as sampled: its job, attempt and what identifies it.
#[derive(Debug, Clone)]
struct LiveAgent {
    job: String,
    attempt: u32,
    /// Process group (process runtime) or container name (docker).
    group: String,
    /// The agent's pid (process runtime).
    pid: Option<i32>,
}

/// Agents of this run alive now: processes whose working directory is in
/// the run's data directory and whose environment names a job, by group.
/// A scan of `/proc` takes a while on a loaded machine, so a process is
/// counted only if it is still alive once the scan is over: two agents count
/// as alive at once only if they were, at the end of the scan.
fn live_processes(data: &Path) -> Vec<LiveAgent> {
    let mut found = scan_processes(data);
    found.retain(|(pid, _)| !dead(*pid));
    found.into_iter().map(|(_, a)| a).collect()
}

/// Whether the process is gone or a zombie.
fn dead(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).is_none_or(|s| s == "Z" || s == "X")
}

/// Warm agents of this run alive now (processes in the pools' directory).
fn warm_processes(data: &Path) -> Vec<i32> {
    let pools = data.join("agents/.pool");
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .flatten()
        .filter_map(|p| p.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == pools) && !dead(*pid))
        .collect()
}

/// The job and attempt whose working directory `cwd` is
/// (`<data>/agents/<job>/<attempt>/work…`): how an agent bound in a warm
/// launcher, whose `/proc` environment stays the launcher's, is told.
fn attempt_of(data: &Path, cwd: &Path) -> Option<(String, u32)> {
    let rest = cwd.strip_prefix(data.join("agents")).ok()?;
    let mut parts = rest.components().map(|c| c.as_os_str().to_string_lossy().to_string());
    let (job, attempt, work) = (parts.next()?, parts.next()?, parts.next()?);
    (work == "work").then_some(())?;
    Some((job, attempt.parse().ok()?))
}

fn scan_processes(data: &Path) -> Vec<(i32, LiveAgent)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Some(cwd) = std::fs::read_link(p.path().join("cwd")).ok().filter(|cwd| cwd.starts_with(data)) else {
            continue;
        };
        let env = std::fs::read(p.path().join("environ")).unwrap_or_default();
        let var = |name: &str| {
            env.split(|b| *b == 0).find_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                kv.strip_prefix(&format!("{name}=")).map(str::to_string)
            })
        };
        let named = match (var("GEORGE_JOB_ID"), var("GEORGE_ATTEMPT").and_then(|a| a.parse().ok())) {
            (Some(job), Some(attempt)) => Some((job, attempt)),
            _ => attempt_of(data, &cwd),
        };
        let Some((job, attempt)) = named else { continue };
        let stat = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid pgrp ...: the fields after the last ')'.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        if matches!(fields.first(), Some(&"Z" | &"X")) {
            continue;
        }
        let Some(pgrp) = fields.get(2).and_then(|g| g.parse::<i32>().ok()) else { continue };
        out.push((pid, LiveAgent { job, attempt, group: pgrp.to_string(), pid: (pgrp == pid).then_some(pid) }));
    }
    out
}

/// Claimed warm containers by id, from the engine's claim records (written
/// before a claimed container is bound, so none can act unseen): `(job, attempt)`.
fn claims(data: &Path) -> HashMap<String, (String, u32)> {
    let Ok(entries) = std::fs::read_dir(data.join("docker-secrets/claims")) else { return HashMap::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            let attempt = u32::try_from(v["attempt"].as_u64()?).ok()?;
            Some((v["id"].as_str()?.to_string(), (v["job_id"].as_str()?.to_string(), attempt)))
        })
        .collect()
}

async fn live_containers(docker: &bollard::Docker, data: &Path) -> anyhow::Result<Vec<LiveAgent>> {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let filters = HashMap::from([("label", vec!["george.io/engine=chaos".to_string()])]);
    let list = docker.list_containers(Some(ListContainersOptionsBuilder::new().filters(&filters).build())).await?;
    let claimed = claims(data);
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let labels = c.labels.unwrap_or_default();
            let name = c.names?.into_iter().next()?.trim_start_matches('/').to_string();
            let (job, attempt) = match (labels.get("george.io/job"), labels.get("george.io/attempt")) {
                (Some(job), Some(attempt)) => (job.clone(), attempt.parse().ok()?),
                // A claimed warm container.
                _ => claimed.get(c.id.as_deref()?)?.clone(),
            };
            Some(LiveAgent { job, attempt, group: name, pid: None })
        })
        .collect())
}

/// Warm (unclaimed) containers of this run.
async fn warm_containers(docker: &bollard::Docker, data: &Path) -> anyhow::Result<Vec<String>> {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let filters = HashMap::from([("label", vec!["george.io/engine=chaos".to_string(), "george.io/pool".to_string()])]);
    let list = docker.list_containers(Some(ListContainersOptionsBuilder::new().filters(&filters).build())).await?;
    let claimed = claims(data);
    Ok(list
        .into_iter()
        .filter(|c| c.id.as_ref().is_none_or(|id| !claimed.contains_key(id)))
        .filter_map(|c| c.names?.into_iter().next())
        .collect())
}

/// What the sampler has seen.
#[derive(Default)]
struct Seen {
    double_agents: usize,
    max_live: usize,
    notes: Vec<String>,
}

impl Seen {
    fn sample(&mut self, live: &[LiveAgent]) {
        let mut by_job: HashMap<&str, BTreeSet<(&str, u32)>> = HashMap::new();
        let mut groups = HashSet::new();
        for a in live {
            by_job.entry(&a.job).or_default().insert((&a.group, a.attempt));
            groups.insert(&a.group);
        }
        if groups.len() > MAX_CONCURRENT && self.notes.len() < 20 {
            let mut who: Vec<_> = live.iter().map(|a| format!("{}-{}", a.job, a.attempt)).collect();
            who.sort();
            who.dedup();
            self.notes.push(format!(
                "{} agents alive at {}: {}",
                groups.len(),
                chrono::Utc::now().format("%H:%M:%S%.3f"),
                who.join(" ")
            ));
        }
        self.max_live = self.max_live.max(groups.len());
        for (job, agents) in by_job {
            let distinct: BTreeSet<_> = agents.iter().map(|(g, _)| *g).collect();
            if distinct.len() > 1 {
                self.double_agents += 1;
                if self.notes.len() < 20 {
                    self.notes.push(format!("job {job}: two live agents at once: {agents:?}"));
                }
            }
        }
    }
}

/// Pairs of attempts whose ticks interleave, per job, from the ticks files.
fn overlaps(outputs: &Path, notes: &mut Vec<String>) -> usize {
    let mut n = 0;
    let Ok(jobs) = std::fs::read_dir(outputs) else { return 0 };
    for job in jobs.flatten() {
        let text = std::fs::read_to_string(job.path().join("ticks")).unwrap_or_default();
        let mut spans: BTreeMap<u32, (u128, u128)> = BTreeMap::new();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            let (Some(Ok(attempt)), Some(Ok(t))) = (w.next().map(str::parse::<u32>), w.next().map(str::parse::<u128>))
            else {
                continue;
            };
            let s = spans.entry(attempt).or_insert((t, t));
            s.0 = s.0.min(t);
            s.1 = s.1.max(t);
        }
        let spans: Vec<_> = spans.into_iter().collect();
        for w in spans.windows(2) {
            let ((a, (_, a_end)), (b, (b_start, _))) = (w[0], w[1]);
            if a_end >= b_start {
                n += 1;
                notes.push(format!(
                    "job {}: attempt {a}'s steps ran {:.3}s into attempt {b}'s",
                    job.file_name().to_string_lossy(),
                    (a_end - b_start) as f64 / 1e9
                ));
            }
        }
    }
    n
}

/// What the engine is made to suffer, in the plan's shuffled order.
#[derive(Debug, Clone, Copy)]
enum EngineAction {
    Kill,
    KillAt(&'static str),
    Freeze,
    LongOutage,
}

/// One chaos run in progress: the engine, the agents, and what was seen.
struct Run<'p> {
    plan: &'p ChaosPlan,
    dir: PathBuf,
    data: PathBuf,
    docker: Option<bollard::Docker>,
    engine: EngineProc,
    client: Client,
    report: ChaosReport,
    rng: Rng,
    ready_times: Vec<f64>,
    began: Instant,
    engine_plan: Vec<EngineAction>,
    agent_kills_left: u32,
    agent_stops_left: u32,
    frozen_by_us: HashSet<(String, u32)>,
    thawing: Vec<(Instant, i32)>,
    accepted: Vec<String>,
    seen: Seen,
}

/// Runs the plan and checks every promise.
pub async fn run_plan(plan: &ChaosPlan) -> anyhow::Result<ChaosReport> {
    let tmp;
    let dir = match &plan.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.canonicalize()?
        }
        None => {
            tmp =
                tempfile::Builder::new().permissions(std::os::unix::fs::PermissionsExt::from_mode(0o711)).tempdir()?;
            tmp.path().canonicalize()?
        }
    };
    let mut run = Run::prepare(plan, dir).await?;
    run.cause_chaos().await?;
    run.verdict().await?;
    Ok(run.finish())
}

impl<'p> Run<'p> {
    /// Writes the manifests and the config, and starts the engine.
    async fn prepare(plan: &'p ChaosPlan, dir: PathBuf) -> anyhow::Result<Run<'p>> {
        std::fs::create_dir_all(dir.join("manifests"))?;
        std::fs::write(dir.join("manifests/chaos.yaml"), manifests(plan.pool))?;
        std::fs::write(dir.join("george-config.yaml"), config(&dir, plan))?;
        let docker = match plan.runtime.as_str() {
            "process" => None,
            "docker" => Some(bollard::Docker::connect_with_local_defaults()?),
            other => anyhow::bail!("chaos runtime: expected process or docker, got `{other}`"),
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut engine = EngineProc { dir: dir.clone(), port, child: None, starts: 0, armed: None };
        let report = ChaosReport {
            seed: plan.seed,
            runtime: plan.runtime.clone(),
            max_concurrent: MAX_CONCURRENT,
            ..Default::default()
        };
        let mut rng = Rng(plan.seed);
        let ready_times = vec![engine.start(None).await?.as_secs_f64() * 1000.0];
        let client = Client::new(&format!("http://127.0.0.1:{port}"), TOKEN)?;
        let engine_plan = engine_plan(plan, &mut rng);
        Ok(Run {
            plan,
            data: dir.join("data"),
            dir,
            docker,
            engine,
            client,
            report,
            rng,
            ready_times,
            began: Instant::now(),
            engine_plan,
            agent_kills_left: plan.agent_kills,
            agent_stops_left: plan.agent_stops,
            frozen_by_us: HashSet::new(),
            thawing: Vec::new(),
            accepted: Vec::new(),
            seen: Seen::default(),
        })
    }

    async fn live(&self) -> Vec<LiveAgent> {
        match &self.docker {
            None => live_processes(&self.data),
            Some(d) => live_containers(d, &self.data).await.unwrap_or_default(),
        }
    }

    /// How many warm agents there are now.
    async fn warm(&self) -> usize {
        match &self.docker {
            None => warm_processes(&self.data).len(),
            Some(d) => warm_containers(d, &self.data).await.map(|c| c.len()).unwrap_or(0),
        }
    }

    async fn restart(&mut self, armed: Option<(&'static str, u32)>) -> anyhow::Result<()> {
        self.ready_times.push(self.engine.start(armed).await?.as_secs_f64() * 1000.0);
        Ok(())
    }

    /// Submits jobs, kills and freezes agents and the engine, until every
    /// job is final or the deadline passes.
    async fn cause_chaos(&mut self) -> anyhow::Result<()> {
        let mut next_engine_action = Instant::now() + self.rng.millis(1500, 3000);
        let mut next_agent_action = Instant::now() + self.rng.millis(200, 600);
        let mut next_check = Instant::now();
        loop {
            let live = self.live().await;
            self.seen.sample(&live);
            if self.plan.pool > 0 {
                let warm = self.warm().await;
                self.report.max_warm_agents = self.report.max_warm_agents.max(warm);
            }
            self.thaw_due();
            self.count_armed_death().await?;
            if Instant::now() >= next_check {
                next_check = Instant::now() + Duration::from_millis(300);
                if self.submit_wave().await {
                    break;
                }
            }
            if self.began.elapsed() > self.plan.deadline {
                self.report.violations.push(format!("not every job finished within {:?}", self.plan.deadline));
                break;
            }
            if Instant::now() >= next_agent_action && !live.is_empty() {
                next_agent_action = Instant::now() + self.rng.millis(250, 700);
                self.hit_an_agent(&live).await;
            }
            // Never while an armed engine has yet to reach its kill point
            // (another kill would disarm it unseen).
            if Instant::now() >= next_engine_action && self.engine.child.is_some() && self.engine.armed.is_none() {
                next_engine_action = Instant::now() + self.rng.millis(2000, 4000);
                if let Some(action) = self.engine_plan.pop() {
                    self.hit_the_engine(action).await?;
                }
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        for (_, pid) in self.thawing.drain(..) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGCONT);
        }
        // An armed engine that never reached its point is disarmed by a restart.
        if self.engine.armed.is_some() {
            self.engine.kill9();
            self.restart(None).await?;
        }
        Ok(())
    }

    /// Thaws the frozen agents that are due.
    fn thaw_due(&mut self) {
        self.thawing.retain(|(at, pid)| {
            if Instant::now() >= *at {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGCONT);
                false
            } else {
                true
            }
        });
    }

    /// An armed engine dies at its kill point: count it, start another.
    async fn count_armed_death(&mut self) -> anyhow::Result<()> {
        let Some(point) = self.engine.died() else { return Ok(()) };
        match point {
            Some(p) => {
                self.report.engine_kills += 1;
                *self.report.kill_points.entry(p.clone()).or_default() += 1;
                if p == "spawn.window" || p == "claim.window" {
                    self.report.spawn_window_kills += 1;
                }
            }
            None => self
                .report
                .violations
                .push(format!("the engine died unasked; see {}", self.engine.log_path().display())),
        }
        self.restart(None).await
    }

    /// Keeps a wave of unfinished jobs submitted. Returns whether every job
    /// was submitted and is final.
    async fn submit_wave(&mut self) -> bool {
        let wave = MAX_CONCURRENT * 2;
        let Ok(jobs) = self.client.jobs(&Default::default()).await else { return false };
        let unfinished = jobs.iter().filter(|j| !j.status.is_final()).count();
        let all_final = self.accepted.len() == self.plan.jobs && unfinished == 0;
        let mut room = wave.saturating_sub(unfinished);
        // The last wave waits for the engine plan, so that every planned
        // kill (an armed engine needs spawns) meets work; an armed engine
        // gets the work at once.
        let holdback =
            if self.engine_plan.is_empty() || self.engine.armed.is_some() { 0 } else { wave.min(self.plan.jobs / 2) };
        while room > 0 && self.accepted.len() + holdback < self.plan.jobs {
            let id = format!("chaos-{:04}", self.accepted.len());
            let req = SubmitJob::named(&id, "chaos");
            match self.client.submit(&req).await {
                Ok(_) => {}
                // Accepted by an engine that died before it answered.
                Err(e) if e.status() == Some(409) => {}
                Err(_) => break,
            }
            self.accepted.push(id);
            room -= 1;
        }
        all_final
    }

    /// Kills or freezes one live agent.
    async fn hit_an_agent(&mut self, live: &[LiveAgent]) {
        let targets: Vec<&LiveAgent> = live.iter().filter(|a| self.docker.is_some() || a.pid.is_some()).collect();
        if targets.is_empty() {
            return;
        }
        let victim = targets[self.rng.below(targets.len() as u64) as usize];
        let freeze = self.agent_stops_left > 0 && (self.agent_kills_left == 0 || self.rng.below(4) == 0);
        if freeze {
            if let Some(pid) = victim.pid {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGSTOP);
                self.frozen_by_us.insert((victim.job.clone(), victim.attempt));
                // Some thaw in time, some are past the deadline.
                let thaw = Instant::now() + self.rng.millis(300, HEALTH_GRACE.as_millis() as u64 * 2);
                self.thawing.push((thaw, pid));
                self.agent_stops_left -= 1;
                self.report.agent_stops += 1;
            }
        } else if self.agent_kills_left > 0 {
            match (&self.docker, victim.pid) {
                (None, Some(pid)) => {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
                (Some(d), _) => {
                    let _ =
                        d.kill_container(&victim.group, None::<bollard::query_parameters::KillContainerOptions>).await;
                }
                _ => {}
            }
            self.agent_kills_left -= 1;
            self.report.agent_kills += 1;
        }
    }

    /// Carries out one engine action.
    async fn hit_the_engine(&mut self, action: EngineAction) -> anyhow::Result<()> {
        match action {
            EngineAction::Kill => {
                self.engine.kill9();
                self.report.engine_kills += 1;
                tokio::time::sleep(self.rng.millis(0, 500)).await;
                self.restart(None).await?;
            }
            EngineAction::KillAt(point) => {
                // Restart armed: the engine kills itself at the point's next passes.
                self.engine.kill9();
                self.report.engine_kills += 1;
                let pass = 1 + self.rng.below(3) as u32;
                self.restart(Some((point, pass))).await?;
            }
            EngineAction::Freeze => {
                if let Some(pid) = self.engine.pid() {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP);
                    tokio::time::sleep(self.rng.millis(500, HEALTH_GRACE.as_millis() as u64 * 2)).await;
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
                    self.report.engine_stops += 1;
                }
            }
            EngineAction::LongOutage => {
                self.engine.kill9();
                self.report.engine_kills += 1;
                tokio::time::sleep(HEALTH_GRACE * 2 + Duration::from_secs(1)).await;
                self.restart(None).await?;
                self.report.long_outages += 1;
            }
        }
        Ok(())
    }

    /// The verdict, from the store through the API: every job completed,
    /// no healthy agent ended as unhealthy, no agent left once the engine stops.
    async fn verdict(&mut self) -> anyhow::Result<()> {
        let jobs: Vec<JobView> = self.client.jobs(&Default::default()).await?;
        let by_id: HashMap<&str, &JobView> = jobs.iter().map(|j| (j.id.as_str(), j)).collect();
        let report = &mut self.report;
        report.jobs = self.accepted.len();
        for id in &self.accepted {
            match by_id.get(id.as_str()) {
                Some(j) if j.status == JobStatus::Completed => report.completed += 1,
                Some(j) => {
                    report.lost += 1;
                    report.violations.push(format!("job {id} ended {} ({:?})", j.status, j.reason));
                }
                None => {
                    report.lost += 1;
                    report.violations.push(format!("job {id} was accepted and is gone"));
                }
            }
        }
        let agents: Vec<AgentView> = serde_json::from_value(
            self.client
                .get_json_query("/api/v1/agents", &[("all".into(), "true".into()), ("limit".into(), "1000000".into())])
                .await?,
        )?;
        report.attempts = agents.len();
        for a in &agents {
            let unhealthy = a.outcome.as_deref().is_some_and(|o| o.starts_with("unhealthy"));
            if unhealthy && !self.frozen_by_us.contains(&(a.job_id.clone(), a.attempt)) {
                report.healthy_ended_unhealthy += 1;
                report.violations.push(format!("agent {} was healthy and ended {:?}", a.id, a.outcome));
            }
        }
        self.count_orphans().await;
        Ok(())
    }

    /// Stops the engine; with every job final, no agent may be left.
    async fn count_orphans(&mut self) {
        self.engine.stop();
        let mut left = Vec::new();
        for _ in 0..100 {
            left = self.live().await;
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut warm = Vec::new();
        for _ in 0..100 {
            warm = warm_processes(&self.data);
            if warm.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut warm_left = 0;
        if let Some(d) = &self.docker {
            // The engine stopped (gracefully): it removes its warm containers.
            let containers = warm_containers(d, &self.data).await.unwrap_or_default();
            if !containers.is_empty() {
                self.report.violations.push(format!("warm containers left after the engine stopped: {containers:?}"));
                warm_left = containers.len();
            }
        }
        if !warm.is_empty() {
            self.report.violations.push(format!("warm agents left after the engine stopped: pids {warm:?}"));
            for pid in &warm {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        self.report.orphans = left.iter().map(|a| &a.group).collect::<HashSet<_>>().len() + warm.len() + warm_left;
        if self.report.orphans > 0 {
            self.report.violations.push(format!("agents left after the engine stopped: {left:?}"));
            for a in &left {
                if let Ok(g) = a.group.parse::<i32>() {
                    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(g), nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        if let Some(d) = &self.docker {
            // Every container of the run goes, whatever happened (exited ones too).
            use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
            let filters = HashMap::from([("label", vec!["george.io/engine=chaos".to_string()])]);
            let opts = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
            for c in d.list_containers(Some(opts)).await.unwrap_or_default() {
                if let Some(id) = c.id {
                    let _ =
                        d.remove_container(&id, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await;
                }
            }
        }
    }

    /// The report: overlaps, doubles, the limit, restart times; the
    /// evidence is kept when a promise broke.
    fn finish(mut self) -> ChaosReport {
        let mut notes = Vec::new();
        let report = &mut self.report;
        report.overlaps = overlaps(&self.data.join("outputs"), &mut notes);
        report.violations.extend(notes);
        report.double_agents = self.seen.double_agents;
        report.violations.extend(std::mem::take(&mut self.seen.notes));
        report.max_live_agents = self.seen.max_live;
        if self.seen.max_live > MAX_CONCURRENT {
            report
                .violations
                .push(format!("{} agents alive at once; the limit is {MAX_CONCURRENT}", self.seen.max_live));
        }
        self.ready_times.sort_by(|a, b| a.total_cmp(b));
        report.restart_to_ready_p50_ms = crate::bench::percentile(&self.ready_times, 0.5);
        report.restart_to_ready_max_ms = self.ready_times.last().copied().unwrap_or_default();
        report.wall_seconds = self.began.elapsed().as_secs_f64();
        if self.plan.dir.is_none() && !report.passed() {
            // Keep the evidence.
            let keep = std::env::temp_dir().join(format!("george-chaos-{}", self.plan.seed));
            let _ = std::fs::remove_dir_all(&keep);
            if Command::new("cp").arg("-a").arg(&self.dir).arg(&keep).status().is_ok_and(|s| s.success()) {
                report.violations.push(format!("logs kept in {}", keep.display()));
            }
        }
        self.report
    }
}

/// The engine actions of a plan, shuffled by its seed.
fn engine_plan(plan: &ChaosPlan, rng: &mut Rng) -> Vec<EngineAction> {
    let mut actions = Vec::new();
    actions.extend((0..plan.engine_kills).map(|_| EngineAction::Kill));
    for i in 0..plan.window_kills {
        // Mostly the spawn window itself; the points on either side of it too. With a pool an
        // attempt passes the claim window or the spawn window: both are armed, so every
        // start counts towards the kill.
        let point = match i % 5 {
            3 => "attempt.recorded",
            4 => "spawn.recorded",
            _ if plan.pool > 0 => "spawn.window|claim.window",
            _ => "spawn.window",
        };
        actions.push(EngineAction::KillAt(point));
    }
    actions.extend((0..plan.engine_stops).map(|_| EngineAction::Freeze));
    actions.push(EngineAction::LongOutage);
    for i in (1..actions.len()).rev() {
        actions.swap(i, rng.below(i as u64 + 1) as usize);
    }
    actions
}

/// `george bench --mode chaos|chaos-docker`.
pub async fn run(args: crate::cli::BenchArgs, format: Format) -> anyhow::Result<()> {
    let runtime = if args.mode == "chaos-docker" { "docker" } else { "process" };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7)
    });
    let mut plan = ChaosPlan::scaled(args.jobs.unwrap_or(40), seed, runtime);
    plan.image = args.image.clone();
    if runtime == "docker" && plan.image.is_none() {
        anyhow::bail!("--mode chaos-docker needs --image (e.g. one built by scripts/docker-image.sh)");
    }
    if let Some(n) = args.engine_kills {
        plan.engine_kills = n / 3;
        plan.window_kills = n - n / 3;
    }
    if let Some(n) = args.agent_kills {
        plan.agent_kills = n;
    }
    plan.dir = args.dir.clone();
    plan.pool = args.pool;
    eprintln!("chaos: seed {seed}, {} jobs on the {runtime} runtime", plan.jobs);
    let report = run_plan(&plan).await?;
    match format {
        Format::Json | Format::Yaml => crate::output::render(format, &report, |_| {}),
        Format::Table | Format::Wide | Format::Name => {
            println!("chaos run, seed {} on the {} runtime ({:.0}s)", report.seed, report.runtime, report.wall_seconds);
            println!(
                "  jobs            {} accepted, {} completed, {} lost",
                report.jobs, report.completed, report.lost
            );
            println!(
                "  engine kills    {} ({} in the spawn window; kill points {:?}), {} freezes, {} long outages",
                report.engine_kills,
                report.spawn_window_kills,
                report.kill_points,
                report.engine_stops,
                report.long_outages
            );
            println!(
                "  agent kills     {}, {} freezes; {} attempts in all",
                report.agent_kills, report.agent_stops, report.attempts
            );
            println!(
                "  doubles         {} overlapping attempts, {} samples with two live agents",
                report.overlaps, report.double_agents
            );
            println!("  orphans         {}", report.orphans);
            println!("  healthy agents ended as unhealthy: {}", report.healthy_ended_unhealthy);
            println!("  most agents at once: {} (limit {})", report.max_live_agents, report.max_concurrent);
            println!(
                "  restart to ready: p50 {:.0} ms, max {:.0} ms",
                report.restart_to_ready_p50_ms, report.restart_to_ready_max_ms
            );
            for v in &report.violations {
                println!("  VIOLATION: {v}");
            }
        }
    }
    anyhow::ensure!(report.passed(), "chaos run with seed {seed} broke {} promises", report.violations.len());
    Ok(())
}
