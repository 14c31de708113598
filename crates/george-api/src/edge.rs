//! The HTTP edge: how connections are accepted and served, so that no
//! client can starve the others.
//!
//! - **A cap on concurrent connections** ([`EdgeConfig::max_connections`]):
//!   past it, new connections wait in the kernel's accept queue instead of
//!   the process running out of file descriptors (which would stop every
//!   answer, `/healthz` included). The cap stays well under the process's
//!   file-descriptor limit, whose soft value is raised to the hard one at
//!   start (as Go's runtime does).
//! - **A header-read timeout** ([`EdgeConfig::header_read_timeout`]): a
//!   connection that does not deliver a request's headers in time — a slow
//!   client, or an idle keep-alive connection waiting for its next request —
//!   is closed. Upgraded connections (WebSockets) and responses being
//!   streamed are not idle and are not cut.
//! - Every connection is served by a task owned by the edge (a `JoinSet`);
//!   at shutdown open connections finish their requests, and those still
//!   open after [`EdgeConfig::shutdown_grace`] are closed.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// How the edge serves connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeConfig {
    /// The most connections served at once.
    pub max_connections: usize,
    /// How long a client has to send a request's headers (also how long an
    /// idle keep-alive connection stays open).
    pub header_read_timeout: Duration,
    /// How long open connections may take to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            max_connections: 8192,
            header_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// File descriptors the edge leaves for everything else (store, logs, agents).
const RESERVED_FDS: u64 = 256;

/// Raises the soft file-descriptor limit to the hard one and returns the
/// connection cap that fits under it.
pub fn fit_connections(wanted: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    };
    let room = limit.saturating_sub(RESERVED_FDS).max(64);
    wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    cfg: EdgeConfig,
) -> std::io::Result<()> {
    let cap = fit_connections(cfg.max_connections);
    tracing::debug!(max_connections = cap, header_read_timeout = ?cfg.header_read_timeout, "HTTP edge");
    let permits = Arc::new(Semaphore::new(cap));
    let (closing, closed) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.map_err(std::io::Error::other)?,
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or a connection reset before it was
                    // accepted: wait a little and go on, never stop serving.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let service = TowerToHyperService::new(router.clone());
        let mut closed = closed.clone();
        let header_read_timeout = cfg.header_read_timeout;
        connections.spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = closed.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let drained =
        tokio::time::timeout(cfg.shutdown_grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::debug!(open = connections.len(), "closing the connections still open at shutdown");
        connections.shutdown().await;
    }
    Ok(())
}

/// Every answer of the API is JSON with the documented error shape, and is
/// never sniffed or cached: an error the web framework produced itself (a
/// body over the limit, a missing WebSocket upgrade, a bad path or query)
/// as plain text becomes the documented JSON error, with its status.
pub async fn harden(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::http::{header, HeaderValue, StatusCode};
    use axum::response::IntoResponse;
    let api = {
        let p = req.uri().path();
        p.starts_with("/api/") || p.starts_with("/llm/") || p == "/metrics" || p == "/healthz" || p == "/readyz"
    };
    let method = req.method().clone();
    let mut resp = next.run(req).await;
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.starts_with("text/event-stream"));
    if (status.is_client_error() || status.is_server_error()) && !json {
        let (parts, body) = resp.into_parts();
        let text = axum::body::to_bytes(body, 64 << 10).await.unwrap_or_default();
        let message = String::from_utf8_lossy(&text).trim().to_string();
        let message =
            if message.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { message };
        let err = match status {
            StatusCode::PAYLOAD_TOO_LARGE => crate::error::ApiError::TooLarge(format!(
                "the request body is over the {} byte limit: {message}",
                crate::MAX_BODY_BYTES
            )),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => crate::error::ApiError::UnsupportedMediaType(message),
            StatusCode::NOT_FOUND => crate::error::ApiError::NotFound(message),
            StatusCode::METHOD_NOT_ALLOWED => {
                let allow = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("");
                crate::error::ApiError::MethodNotAllowed(format!(
                    "{method} is not allowed here; the methods are {allow}"
                ))
            }
            StatusCode::UNAUTHORIZED => crate::error::ApiError::Unauthorized(message),
            StatusCode::FORBIDDEN => crate::error::ApiError::Forbidden(message),
            StatusCode::CONFLICT => crate::error::ApiError::Conflict(message),
            s if s.is_server_error() => crate::error::ApiError::Internal(message),
            _ => crate::error::ApiError::invalid(message),
        };
        let mut fixed = err.into_response();
        *fixed.status_mut() = status;
        for (k, v) in parts.headers.iter() {
            if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
                fixed.headers_mut().insert(k.clone(), v.clone());
            }
        }
        resp = fixed;
    }
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
