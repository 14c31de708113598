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

use crate::bench::{noop_job, percentile, start};
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
    raw_docker_run_mean_ms: f64,
    raw_docker_run_p50_ms: f64,
    george_job_mean_ms: f64,
    george_job_p50_ms: f64,
    overhead_ratio_mean: f64,
    overhead_ratio_p50: f64,
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

    let (server, client, dir) = start(|cfg| {
        cfg.engine.id = Some(format!("bench{}", std::process::id()));
        cfg.container_backend.backend_type = crate::config::BackendType::Docker;
        cfg.container_backend.docker.image = Some(image.clone());
        cfg.container_backend.docker.pull_policy = Some("Never".into());
    })
    .await?;
    let mut events = server.store.subscribe();
    let mut george = Vec::with_capacity(n);
    for i in 0..=n {
        let id = format!("dbench-{i:04}");
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
        if i > 0 {
            george.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    server.stop().await?;
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
    };
    match format {
        Format::Json | Format::Yaml => crate::output::render(format, &report, |_| {}),
        Format::Table => {
            println!("jobs (one at a time)      {}", report.jobs);
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
        }
    }
    Ok(())
}
