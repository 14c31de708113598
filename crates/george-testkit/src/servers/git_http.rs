//! A Git smart-HTTP server for tests: the real `git http-backend` (as CGI)
//! behind HTTP Basic authentication, serving the bare repositories under a
//! root directory at `http://127.0.0.1:<port>/git/<path>`. Clones, fetches
//! and pushes go through git's own protocol code, as against a forge. Like
//! GitHub with a token, any user name is accepted with the right token.

#![allow(dead_code)]

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

struct Config {
    root: PathBuf,
    user: String,
    token: String,
    /// Every Authorization header seen (to prove what the client sent).
    seen_auth: Mutex<Vec<String>>,
}

/// The running server.
pub struct GitHttp {
    pub base: String,
    cfg: Arc<Config>,
}

impl GitHttp {
    /// Serves the repositories under `root`; whoever presents `token` may read and push (as `user`).
    pub fn start(root: &std::path::Path, user: &str, token: &str) -> Self {
        let cfg = Arc::new(Config {
            root: root.to_path_buf(),
            user: user.into(),
            token: token.into(),
            seen_auth: Mutex::new(Vec::new()),
        });
        let app = Router::new().route("/git/{*path}", any(cgi)).with_state(cfg.clone());
        let addr = super::inbox::serve_in_background(app);
        Self { base: format!("http://{addr}/git"), cfg }
    }

    /// Serves the repositories under `root` to anyone (a forge's public
    /// repositories, writable: the stand-in for a remote that sandboxed
    /// agents, which may write only their own directories, push to).
    pub fn open(root: &std::path::Path) -> Self {
        Self::start(root, "anyone", "")
    }

    /// The URL of the repository `name` (a directory `<name>.git` under the root).
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}.git", self.base)
    }

    /// Requests that carried credentials.
    pub fn authenticated_requests(&self) -> usize {
        self.cfg.seen_auth.lock().unwrap().len()
    }
}

async fn cgi(
    State(cfg): State<Arc<Config>>,
    method: Method,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !auth.is_empty() {
        cfg.seen_auth.lock().unwrap().push(auth.to_string());
    }
    let user_part = auth.strip_prefix("Basic ").map(super::decode_base64).unwrap_or_default();
    if !cfg.token.is_empty() && user_part.split_once(':').map(|(_, t)| t) != Some(cfg.token.as_str()) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("WWW-Authenticate", "Basic realm=\"git\"")
            .body(Body::from("authentication required"))
            .unwrap();
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", &cfg.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{path}"))
        .env("REQUEST_METHOD", method.as_str())
        .env("QUERY_STRING", query.unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", &cfg.user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("git http-backend starts");
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(&body).await;
    });
    let out = child.wait_with_output().await.expect("git http-backend runs");
    let _ = writer.await;
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, gap)) = split else {
        return Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::from(String::from_utf8_lossy(&out.stderr).to_string()))
            .unwrap();
    };
    let mut resp = Response::builder().status(StatusCode::OK);
    for line in String::from_utf8_lossy(&raw[..end]).lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code = v.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(500);
            resp = resp.status(code);
        } else {
            resp = resp.header(k.trim(), v);
        }
    }
    resp.body(Body::from(raw[end + gap..].to_vec())).unwrap()
}
