//! `george bench --mode docker`: the cost George adds to running a trivial
//! job in a container, compared with a raw `docker run` of the same image.
//!
//! - raw: create and start a container running `sh -c true` and wait for it
//!   to exit, through the Docker Engine API (what `docker run` does, without
//!   the CLI's own start-up); it is removed after the clock stops;
//! - george: submit a one-step `run: "true"` job and wait until it is
//!   completed: the engine creates and starts the agent's container, the
//!   reference agent fetches its job, runs the step and reports, and the
//!   engine sees the container exit.
//!
//! Jobs run one at a time, so the figures are per-job latencies.
//!
//! With `--pool N` the bench's AgentSpec keeps `N` warm containers: each job
//! claims one (no create, no start on its path) and the pool refills behind
//! it. The run then also submits a burst of jobs at once and reports how
//! many claims per second the pool sustained while refilling. The pool's
//! first fill is measured against the Docker Engine's own rate: as many
//! containers of the image created and started (left running, as a warm one
//! is), as many at once as the refill starts, before the engine starts.

use crate::bench::{noop_job, percentile};
use crate::cli::{BenchArgs, Format};
use anyhow::Context as _;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use george_core::EventKind;
use serde::Serialize;
use std::time::{Duration, Instant};

/// The figures.
#[derive(Debug, Serialize)]
pub struct DockerBenchReport {
    jobs: usize,
    /// Warm containers kept (`spec.pool.min`; 0: none).
    pool: u32,
    /// Jobs of the one-at-a-time run that started on a warm container.
    warm_starts: u64,
    raw_docker_run_mean_ms: f64,
    raw_docker_run_p50_ms: f64,
    george_job_mean_ms: f64,
    george_job_p50_ms: f64,
    overhead_ratio_mean: f64,
    overhead_ratio_p50: f64,
    /// From the submit to the agent starting the job's first step, p50.
    submit_to_first_step_p50_ms: f64,
    /// Warm containers started per second while the pool first fills (with a pool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pool_fill_per_s: Option<f64>,
    /// Its baseline: containers the Docker Engine creates and starts per
    /// second, as many and as many at once (with a pool).
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_start_per_s: Option<f64>,
    /// The burst (with a pool): jobs submitted at once, and how fast they went.
    #[serde(skip_serializing_if = "Option::is_none")]
    burst: Option<Burst>,
}

/// A burst of jobs submitted at once onto a warm pool.
#[derive(Debug, Serialize)]
pub struct Burst {
    jobs: usize,
    wall_seconds: f64,
    jobs_per_s: f64,
    /// Jobs that started on a warm container, per second of the burst.
    warm_claims: u64,
    claims_per_s: f64,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

async fn raw_run(docker: &bollard::Docker, image: &str, name: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let body = ContainerCreateBody {
        image: Some(image.into()),
        entrypoint: Some(vec!["/bin/sh".into()]),
        cmd: Some(vec!["-c".into(), "true".into()]),
        host_config: Some(HostConfig { network_mode: Some("host".into()), ..Default::default() }),
        ..Default::default()
    };
    docker.create_container(Some(CreateContainerOptionsBuilder::new().name(name).build()), body).await?;
    docker.start_container(name, None::<bollard::query_parameters::StartContainerOptions>).await?;
    let mut wait =
        docker.wait_container(name, Some(WaitContainerOptionsBuilder::new().condition("not-running").build()));
    let _ = wait.next().await;
    // Like the George figure (which ends when the engine sees the container
    // exit), the clock stops before the container is removed.
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    docker.remove_container(name, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await?;
    Ok(ms)
}

/// The Docker Engine's own rate: `n` containers of `image` created and
/// started, `at_once` at a time, per second; removed after the clock stops.
async fn raw_starts(docker: &bollard::Docker, image: &str, n: usize, at_once: usize) -> anyhow::Result<f64> {
    let names: Vec<String> = (0..n).map(|i| format!("george-bench-start-{}-{i}", std::process::id())).collect();
    let start = |name: &str| {
        let body = ContainerCreateBody {
            image: Some(image.into()),
            entrypoint: Some(vec!["/usr/bin/sleep".into()]),
            cmd: Some(vec!["3600".into()]),
            host_config: Some(HostConfig { network_mode: Some("host".into()), ..Default::default() }),
            ..Default::default()
        };
        let name = name.to_string();
        async move {
            docker.create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body).await?;
            docker.start_container(&name, None::<bollard::query_parameters::StartContainerOptions>).await
        }
    };
    let t = Instant::now();
    let started: Vec<_> =
        futures_util::stream::iter(names.iter()).map(|n| start(n)).buffer_unordered(at_once.max(1)).collect().await;
    let per_s = n as f64 / t.elapsed().as_secs_f64();
    for name in &names {
        let _ = docker.remove_container(name, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await;
    }
    started.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(per_s)
}

/// Runs the Docker benchmark.
pub async fn run(args: BenchArgs, format: Format) -> anyhow::Result<()> {
    let image =
        args.image.clone().context("--mode docker needs --image (e.g. one built by scripts/docker-image.sh)")?;
    let n = args.jobs.unwrap_or(30).clamp(1, 500);
    let docker = bollard::Docker::connect_with_defaults()?;
    docker
        .inspect_image(&image)
        .await
        .with_context(|| format!("image {image} is not present; build it with scripts/docker-image.sh"))?;

    // Raw docker runs (one warm-up).
    let mut raw = Vec::with_capacity(n);
    for i in 0..=n {
        let ms = raw_run(&docker, &image, &format!("george-bench-raw-{}-{i}", std::process::id())).await?;
        if i > 0 {
            raw.push(ms);
        }
    }

    // With a pool, `--concurrency` above 1 is how many warm containers start at once (default 4).
    let refill_parallelism = if args.concurrency > 1 { args.concurrency } else { 4 };
    let raw_start_per_s = match args.pool {
        0 => None,
        n => Some(raw_starts(&docker, &image, n as usize, refill_parallelism).await.with_context(|| {
            format!("--pool: the baseline starts containers of {image} running /usr/bin/sleep (as scripts/docker-image.sh builds it)")
        })?),
    };

    let (server, client, dir) = crate::bench::start_on(
        |cfg| {
            cfg.engine.id = Some(format!("bench{}", std::process::id()));
            cfg.container_backend.backend_type = crate::config::BackendType::Docker;
            cfg.container_backend.docker.image = Some(image.clone());
            cfg.container_backend.docker.pull_policy = Some("Never".into());
            cfg.agents.pool.refill_parallelism = Some(refill_parallelism);
        },
        args.pool,
        |_| async { Ok(()) },
    )
    .await?;
    // The pool's first fill: how many warm containers a second the refill starts.
    let fill = Instant::now();
    if args.pool > 0 {
        crate::bench::wait_warm(&server, args.pool).await?;
    }
    let fill_per_s = (args.pool > 0).then(|| f64::from(args.pool) / fill.elapsed().as_secs_f64());
    let mut events = server.store.subscribe();
    let mut george = Vec::with_capacity(n);
    let mut first_steps = Vec::with_capacity(n);
    let mut claimed_after_warmup = 0;
    for i in 0..=n {
        let id = format!("dbench-{i:04}");
        if args.pool > 0 {
            // One at a time onto a full pool: each job finds a warm container.
            crate::bench::wait_warm(&server, args.pool).await?;
        }
        let submitted = chrono::Utc::now();
        let t = Instant::now();
        client.submit(&noop_job(&id)).await?;
        // Done when the job is completed and its container is gone.
        let (mut completed, mut ended) = (false, false);
        while !(completed && ended) {
            let ev = tokio::time::timeout(Duration::from_secs(60), events.recv())
                .await
                .context("a bench job took over 60s")??;
            if ev.job_id.as_deref() != Some(id.as_str()) {
                continue;
            }
            completed |= ev.kind == EventKind::JobStatus && ev.data["to"] == "completed";
            ended |= ev.kind == EventKind::AttemptEnded;
            anyhow::ensure!(!(ev.kind == EventKind::JobStatus && ev.data["to"] == "failed"), "bench job {id} failed");
        }
        if i == 0 {
            claimed_after_warmup = claimed(&server);
        } else {
            george.push(t.elapsed().as_secs_f64() * 1000.0);
            if let Some(at) = first_step(&server, &id).await? {
                first_steps.push((at - submitted).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
        }
    }
    let warm_starts = claimed(&server) - claimed_after_warmup;
    let burst = if args.pool > 0 { Some(burst(&server, &client, n.max(20) * 2).await?) } else { None };
    let engine_id = server.engine.config().engine_id.clone();
    server.stop().await?;
    // The bench's engine is not started again to clean up after itself: what
    // it left (the last jobs' exited containers, its warm ones) goes now.
    let filters = std::collections::HashMap::from([("label", vec![format!("george.io/engine={engine_id}")])]);
    let opts = bollard::query_parameters::ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    for c in docker.list_containers(Some(opts)).await.unwrap_or_default() {
        if let Some(id) = c.id {
            let _ = docker.remove_container(&id, Some(RemoveContainerOptionsBuilder::new().force(true).build())).await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    raw.sort_by(|a, b| a.total_cmp(b));
    george.sort_by(|a, b| a.total_cmp(b));
    let report = DockerBenchReport {
        jobs: n,
        raw_docker_run_mean_ms: mean(&raw),
        raw_docker_run_p50_ms: percentile(&raw, 0.5),
        george_job_mean_ms: mean(&george),
        george_job_p50_ms: percentile(&george, 0.5),
        overhead_ratio_mean: mean(&george) / mean(&raw),
        overhead_ratio_p50: percentile(&george, 0.5) / percentile(&raw, 0.5),
        submit_to_first_step_p50_ms: {
            first_steps.sort_by(|a, b| a.total_cmp(b));
            percentile(&first_steps, 0.5)
        },
        pool: args.pool,
        pool_fill_per_s: fill_per_s,
        raw_start_per_s,
        warm_starts,
        burst,
    };
    match format {
        Format::Json | Format::Yaml => crate::output::render(format, &report, |_| {}),
        Format::Table | Format::Wide | Format::Name => {
            println!("jobs (one at a time)      {}", report.jobs);
            println!("warm pool                 {} ({} jobs started warm)", report.pool, report.warm_starts);
            println!(
                "raw docker run            mean {:.1} ms, p50 {:.1} ms",
                report.raw_docker_run_mean_ms, report.raw_docker_run_p50_ms
            );
            println!(
                "george job in docker      mean {:.1} ms, p50 {:.1} ms",
                report.george_job_mean_ms, report.george_job_p50_ms
            );
            println!(
                "overhead                  {:.2}x (mean), {:.2}x (p50)",
                report.overhead_ratio_mean, report.overhead_ratio_p50
            );
            println!("submit→first step p50     {:.1} ms", report.submit_to_first_step_p50_ms);
            if let (Some(f), Some(raw)) = (report.pool_fill_per_s, report.raw_start_per_s) {
                println!("pool fill                 {f:.1} warm containers/s (the Docker Engine alone: {raw:.1}/s)");
            }
            if let Some(b) = &report.burst {
                println!(
                    "burst                     {} jobs in {:.2} s ({:.1} jobs/s), {} warm claims ({:.1} claims/s)",
                    b.jobs, b.wall_seconds, b.jobs_per_s, b.warm_claims, b.claims_per_s
                );
            }
        }
    }
    Ok(())
}

/// When the job's first step started (the agent's clock), from its events.
async fn first_step(server: &crate::serve::Server, id: &str) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    let events = server.store.events_since(0, 1000, Some(id)).await?;
    Ok(events
        .iter()
        .filter(|e| e.kind == EventKind::StepStatus && e.data["to"] == "in_progress")
        .filter_map(|e| e.data["at"].as_str()?.parse().ok())
        .min())
}

/// Submits `jobs` jobs at once onto the warm pool and waits for them all.
async fn burst(server: &crate::serve::Server, client: &george_client::Client, jobs: usize) -> anyhow::Result<Burst> {
    crate::bench::wait_warm(server, 1).await?;
    let claimed_before = claimed(server);
    let mut events = server.store.subscribe();
    let t = Instant::now();
    for i in 0..jobs {
        client.submit(&noop_job(&format!("dburst-{i:04}"))).await?;
    }
    let mut done = std::collections::HashSet::new();
    while done.len() < jobs {
        let ev = tokio::time::timeout(Duration::from_secs(120), events.recv())
            .await
            .context("a burst job took over 120s")??;
        let Some(job) = ev.job_id.filter(|j| j.starts_with("dburst-")) else { continue };
        if ev.kind == EventKind::JobStatus && (ev.data["to"] == "completed" || ev.data["to"] == "failed") {
            done.insert(job);
        }
    }
    let wall = t.elapsed().as_secs_f64();
    let warm_claims = claimed(server) - claimed_before;
    Ok(Burst {
        jobs,
        wall_seconds: wall,
        jobs_per_s: jobs as f64 / wall,
        warm_claims,
        claims_per_s: warm_claims as f64 / wall,
    })
}

/// Jobs started on a warm container so far.
fn claimed(server: &crate::serve::Server) -> u64 {
    server.engine.pools().iter().map(|p| p.claimed).sum()
}
