//! Logs, and — when `engine.tracing` (or OpenTelemetry's own
//! `OTEL_EXPORTER_OTLP_*` variables) names a collector — attempt traces
//! exported over OTLP (HTTP, protobuf). Traces are off by default; only the
//! spans of attempt traces (`george_engine::trace`) are exported.

use crate::cli::Command;
use crate::config::{Config, TracingSection};
use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporter of attempt traces; [`Traces::shutdown`] sends what is left.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Exports the spans still buffered and stops.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: cannot send the last traces: {e}");
        }
    }
}

/// The tracing settings of a command that runs the engine (`serve`, `up`):
/// its configuration file (if it loads; the command reports it otherwise)
/// and the environment.
pub fn settings(command: &Command) -> Option<TracingSection> {
    let mut cfg = match command {
        Command::Serve(args) => match &args.config {
            Some(path) => Config::load(path).ok()?,
            None => Config::default(),
        },
        Command::Up(_) => Config::default(),
        _ => return None,
    };
    cfg.apply_env(|k| std::env::var(k).ok()).ok()?;
    cfg.engine.tracing.filter(|t| t.traces_url().is_some())
}

/// What [`init`] initialises once per process (its filter's parser), done
/// ahead by a warm agent's launcher.
pub fn prepare() {
    drop(EnvFilter::new("info"));
}

/// Installs the logger (`GEORGE_LOG`, else `RUST_LOG`, else `default`) and,
/// with `traces`, the exporter of attempt traces. Must run outside the async
/// runtime (the exporter's client blocks, on a thread of its own).
pub fn init(default: &str, json: bool, traces: Option<&TracingSection>) -> anyhow::Result<Option<Traces>> {
    let filter = || {
        let directives = std::env::var("GEORGE_LOG")
            .ok()
            .or_else(|| std::env::var("RUST_LOG").ok())
            .unwrap_or_else(|| default.to_string());
        // Attempt traces' spans are for the exporter, not the log.
        EnvFilter::new(format!("{}=off,{directives}", george_engine::trace::TARGET))
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr);
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> =
        vec![if json { log.json().with_filter(filter()).boxed() } else { log.with_filter(filter()).boxed() }];
    let provider = traces.map(provider).transpose()?;
    if let Some(p) = &provider {
        let spans = tracing_opentelemetry::layer()
            .with_tracer(p.tracer("george"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(Targets::new().with_target(george_engine::trace::TARGET, tracing::Level::INFO));
        layers.push(spans.boxed());
    }
    // (A `None` layer would enable every span: a list holds only real ones.)
    tracing_subscriber::registry().with(layers).init();
    Ok(provider.map(|provider| {
        opentelemetry::global::set_tracer_provider(provider.clone());
        Traces { provider }
    }))
}

fn provider(settings: &TracingSection) -> anyhow::Result<SdkTracerProvider> {
    let url = settings.traces_url().context("engine.tracing: no OTLP endpoint")?;
    let parsed =
        reqwest::Url::parse(&url).with_context(|| format!("engine.tracing.otlpEndpoint: `{url}` is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!("engine.tracing.otlpEndpoint: expected an http:// or https:// URL, got `{url}`");
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .context("cannot build the HTTP client of the trace exporter")?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingHttp(client))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("cannot build the OTLP trace exporter")?;
    let service = settings.service_name.clone().unwrap_or_else(|| "george".into());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(george_engine::trace::AttemptIds::default())
        .with_resource(resource)
        .build())
}

/// The exporter's HTTP client: the batch processor exports from a thread of
/// its own, outside the async runtime, so a blocking client serves.
#[derive(Debug)]
struct BlockingHttp(reqwest::blocking::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for BlockingHttp {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<opentelemetry_http::Response<opentelemetry_http::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let sent =
            self.0.request(parts.method, parts.uri.to_string()).headers(parts.headers).body(body.to_vec()).send()?;
        let status = sent.status();
        let headers = sent.headers().clone();
        let mut response = opentelemetry_http::Response::builder().status(status).body(sent.bytes()?)?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}
