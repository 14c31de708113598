//! `george bench --mode proxy`: what George's LLM proxy adds to a call.
//! A stub OpenAI-compatible provider answers every chat completion at once
//! (with usage figures); the bench calls it directly and through the proxy
//! as a running agent would (its attempt token, budgets checked, usage
//! charged to the ledger), one call at a time, alternating, and reports the
//! latency percentiles of both and their difference.

use crate::bench::{noop_job, percentile, start};
use crate::cli::{BenchArgs, Format};
use crate::config::{LlmDefault, ProviderSection};
use anyhow::Context as _;
use axum::routing::post;
use serde::Serialize;
use serde_json::json;
use std::time::{Duration, Instant};

/// The figures, in milliseconds.
#[derive(Debug, Serialize)]
pub struct ProxyBenchReport {
    requests: usize,
    direct_p50_ms: f64,
    direct_p99_ms: f64,
    proxy_p50_ms: f64,
    proxy_p99_ms: f64,
    added_p50_ms: f64,
    added_p99_ms: f64,
}

/// A provider that answers every call with the same small completion; it
/// stops when dropped.
struct StubProvider {
    url: String,
    server: tokio::task::AbortHandle,
}

impl Drop for StubProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn stub_provider() -> anyhow::Result<StubProvider> {
    let reply = json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13}
    });
    let app = axum::Router::new().route("/v1/chat/completions", post(move || async move { axum::Json(reply) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await }).abort_handle();
    Ok(StubProvider { url: format!("http://{addr}/v1"), server })
}

/// An AgentSpec whose agent hands its token to the bench (a copy in its
/// output directory) before it becomes the reference agent: the bench calls
/// the proxy as that agent would.
fn holder_manifest(exe: &std::path::Path) -> String {
    format!(
        "apiVersion: george/v1
kind: AgentSpec
metadata: {{name: bench-holder}}
spec:
  capabilities: [shell]
  command: [/bin/sh, -c, 'cp \"$GEORGE_AGENT_TOKEN_FILE\" \"$GEORGE_OUTPUT_DIR/t\" && mv \"$GEORGE_OUTPUT_DIR/t\" \"$GEORGE_OUTPUT_DIR/agent-token\" && exec \"$0\" agent run', {exe:?}]
",
        exe = exe.display().to_string()
    )
}

pub async fn run(args: BenchArgs, format: Format) -> anyhow::Result<()> {
    let requests = args.jobs.unwrap_or(2000).max(1);
    let provider = stub_provider().await?;
    let exe = std::env::current_exe().context("cannot find the george executable")?;
    let (server, client, dir) = start(|cfg| {
        if let Some(folder) = &cfg.sources.folder {
            if let Err(e) = std::fs::write(folder.path.join("holder.yaml"), holder_manifest(&exe)) {
                tracing::warn!(error = %e, "cannot write the bench's holder AgentSpec");
            }
        }
        cfg.llm.providers.push(ProviderSection {
            name: "stub".into(),
            api: george_governor::ProviderApi::OpenAi,
            base_url: provider.url.clone(),
            api_key_env: None,
            api_key_file: None,
            api_key_secret: None,
        });
        cfg.llm.default = LlmDefault { provider: Some("stub".into()), model: Some("bench-model".into()) };
    })
    .await?;
    // One agent holds its attempt open; the bench calls as that agent.
    let job = "bench-proxy";
    let submit =
        george_core::api::SubmitJob { template: "hold".into(), agent: Some("bench-holder".into()), ..noop_job(job) };
    client.submit(&submit).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let token_file = dir.join("data/outputs").join(job).join("agent-token");
    let token = loop {
        if let Some(t) = std::fs::read_to_string(&token_file).ok().filter(|t| t.starts_with("gat_")) {
            break t.trim().to_string();
        }
        anyhow::ensure!(Instant::now() < deadline, "the bench agent did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let http = reqwest::Client::new();
    let body = json!({"messages": [{"role": "user", "content": "ping"}], "max_tokens": 16});
    let timed = |url: String, bearer: Option<String>| {
        let (http, body) = (http.clone(), body.clone());
        async move {
            let mut rb = http.post(url).json(&body);
            if let Some(t) = bearer {
                rb = rb.bearer_auth(t);
            }
            let t = Instant::now();
            let resp = rb.send().await?;
            anyhow::ensure!(resp.status().is_success(), "a bench call failed: {}", resp.status());
            resp.bytes().await?;
            Ok::<f64, anyhow::Error>(t.elapsed().as_secs_f64() * 1000.0)
        }
    };
    let direct_url = format!("{}/chat/completions", provider.url);
    let proxy_url = format!("{}/llm/v1/chat/completions", server.api_url);
    // Warm both paths' connections first.
    for _ in 0..20 {
        timed(direct_url.clone(), None).await?;
        timed(proxy_url.clone(), Some(token.clone())).await?;
    }
    let (mut direct, mut proxied) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
    for _ in 0..requests {
        direct.push(timed(direct_url.clone(), None).await?);
        proxied.push(timed(proxy_url.clone(), Some(token.clone())).await.context("calling through the proxy")?);
    }
    std::fs::write(server.data_dir.join("outputs").join(job).join("release"), "")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.job(job).await?.status.is_final() {
        anyhow::ensure!(Instant::now() < deadline, "the bench agent did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    direct.sort_by(|a, b| a.total_cmp(b));
    proxied.sort_by(|a, b| a.total_cmp(b));
    let (d50, d99, p50, p99) =
        (percentile(&direct, 0.5), percentile(&direct, 0.99), percentile(&proxied, 0.5), percentile(&proxied, 0.99));
    let report = ProxyBenchReport {
        requests,
        direct_p50_ms: d50,
        direct_p99_ms: d99,
        proxy_p50_ms: p50,
        proxy_p99_ms: p99,
        added_p50_ms: p50 - d50,
        added_p99_ms: p99 - d99,
    };
    match format {
        Format::Json | Format::Yaml => crate::output::render(format, &report, |_| {}),
        Format::Table | Format::Wide | Format::Name => {
            println!("requests                  {} each way", report.requests);
            println!("direct      p50 / p99     {:.3} / {:.3} ms", report.direct_p50_ms, report.direct_p99_ms);
            println!("via proxy   p50 / p99     {:.3} / {:.3} ms", report.proxy_p50_ms, report.proxy_p99_ms);
            println!("added       p50 / p99     {:.3} / {:.3} ms", report.added_p50_ms, report.added_p99_ms);
        }
    }
    Ok(())
}
