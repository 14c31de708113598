//! The HTTP layer: one handler that records the request, checks the bearer
//! token, answers injected faults, parses the path
//! (`/api/v1/namespaces/{ns}/{plural}[/{name}[/log|/attach]]`,
//! `/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]`, and the
//! all-namespaces collections `/api/v1/{plural}`, `/apis/{g}/{v}/{plural}`
//! for list and watch) and dispatches to the store. Watches and followed
//! logs are chunked streams fed by a task per request that waits on the
//! state's change counter; the state lock is never held across an await.

use super::kubelet::{CState, LogLine};
use super::select::Selectors;
use super::store::{fmt_nano, uid_of, ApiError, DeleteOptions, Event, EventType, Kind, Shared, State};
use super::Request;
use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

pub(super) fn router(state: Shared) -> Router {
    Router::new().fallback(handle).with_state(state)
}

fn json_response(code: u16, v: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = (status, v.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub(super) fn error_response(e: &ApiError) -> Response {
    let mut r = json_response(e.code, &e.status());
    if e.code == 429 {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn respond(result: Result<(u16, Value), ApiError>) -> Response {
    match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true") | Some("1"))
}

pub(super) fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.lock().unwrap()
}

async fn handle(AxState(shared): AxState<Shared>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => return error_response(&ApiError::bad_request("the request body could not be read")),
    };
    let path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let query: HashMap<String, String> = match axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri) {
        Ok(q) => q.0.into_iter().collect(),
        Err(e) => return error_response(&ApiError::bad_request(format!("invalid query: {e}"))),
    };
    let watch = is_true(query.get("watch"));
    {
        let mut st = lock(&shared);
        let body_json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        st.requests.push(Request {
            method: parts.method.to_string(),
            path: path.clone(),
            query: raw_query,
            body: body_json,
        });
        let auth = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let token = auth.get(..7).filter(|s| s.eq_ignore_ascii_case("bearer ")).map(|_| auth[7..].trim());
        if token != Some(st.token.as_str()) {
            return error_response(&ApiError::unauthorized());
        }
        if !watch && st.faults.0 > 0 {
            st.faults.0 -= 1;
            return error_response(&ApiError::injected(st.faults.1));
        }
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let ["api", "v1", "namespaces", ns, "pods", name, "attach"] = segs.as_slice() {
        if parts.method == Method::GET || parts.method == Method::POST {
            let (ns, name) = (ns.to_string(), name.to_string());
            return super::attach::attach(shared, parts, &ns, &name, &query).await;
        }
        return error_response(&ApiError::method_not_allowed());
    }
    route(shared, parts.method, &path, query, bytes, &parts.headers).await
}

async fn route(
    shared: Shared,
    method: Method,
    path: &str,
    q: HashMap<String, String>,
    body: Bytes,
    headers: &HeaderMap,
) -> Response {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if segs == ["version"] && method == Method::GET {
        return json_response(
            200,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64", "goVersion": "go1.24.0", "compiler": "gc"}),
        );
    }
    let empty: &[&str] = &[];
    let parsed = match segs.as_slice() {
        ["api", "v1", "namespaces", ns, plural, rest @ ..] => {
            Some((Kind::from_path("", "v1", plural), Some(*ns), rest))
        }
        ["apis", g, v, "namespaces", ns, plural, rest @ ..] => Some((Kind::from_path(g, v, plural), Some(*ns), rest)),
        ["api", "v1", plural] => Some((Kind::from_path("", "v1", plural), None, empty)),
        ["apis", g, v, plural] => Some((Kind::from_path(g, v, plural), None, empty)),
        _ => None,
    };
    let Some((Some(kind), ns, rest)) = parsed else {
        return error_response(&ApiError::path_not_found());
    };
    if q.contains_key("dryRun") {
        return error_response(&ApiError::bad_request("dryRun is not supported by this test server"));
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    match (ns, rest, &method) {
        (_, [], &Method::GET) => list_or_watch(shared, kind, ns, &q),
        (Some(ns), [], &Method::POST) => respond(parse_body(&content_type, &body).and_then(|b| {
            lock(&shared).create(kind, ns, b).map(|o| (201, o))
        })),
        (_, [], _) => error_response(&ApiError::method_not_allowed()),
        (Some(ns), [name], &Method::GET) => {
            let st = lock(&shared);
            respond(st.get(kind, ns, name).cloned().map(|o| (200, o)).ok_or_else(|| ApiError::not_found(kind, name)))
        }
        (Some(ns), [name], &Method::PUT) => respond(parse_body(&content_type, &body).and_then(|b| {
            lock(&shared).replace(kind, ns, name, b).map(|o| (200, o))
        })),
        (Some(ns), [name], &Method::PATCH) => {
            respond(lock(&shared).patch(kind, ns, name, &content_type, &body).map(|o| (200, o)))
        }
        (Some(ns), [name], &Method::DELETE) => respond(delete_options(&q, &body).and_then(|opts| {
            let (gone, obj) = lock(&shared).delete(kind, ns, name, &opts)?;
            // 202 only for the legacy `orphanDependents: false` on a pending deletion.
            let code = if !gone && opts.orphan_dependents == Some(false) { 202 } else { 200 };
            if gone && kind != Kind::Pod {
                // Only pods' storage returns the deleted object; the others a Success Status.
                let details = json!({"name": name, "group": kind.group(), "kind": kind.plural(), "uid": uid_of(&obj)});
                return Ok((code, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})));
            }
            Ok((code, obj))
        })),
        (Some(_), [_], _) => error_response(&ApiError::method_not_allowed()),
        (Some(ns), [name, "log"], &Method::GET) if kind == Kind::Pod => logs(shared, ns, name, &q),
        _ => error_response(&ApiError::path_not_found()),
    }
}

fn parse_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !media.is_empty() && media != "application/json" && media != "*/*" {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json (got {content_type:?})"),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))
}

fn delete_options(q: &HashMap<String, String>, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let mut o = DeleteOptions {
        propagation: q.get("propagationPolicy").cloned(),
        orphan_dependents: q.get("orphanDependents").map(|v| v == "true"),
        ..Default::default()
    };
    if let Some(g) = q.get("gracePeriodSeconds") {
        o.grace = Some(g.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g:?}")))?);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(o);
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't decode DeleteOptions: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("couldn't decode DeleteOptions: not an object"));
    }
    let bad = |f: &str| ApiError::bad_request(format!("couldn't decode DeleteOptions: {f} has the wrong type"));
    if v.get("dryRun").is_some_and(|d| d.as_array().is_some_and(|a| !a.is_empty())) {
        return Err(ApiError::bad_request("dryRun is not supported by this test server"));
    }
    match v.get("propagationPolicy") {
        None | Some(Value::Null) => {}
        Some(Value::String(p)) => o.propagation = Some(p.clone()),
        Some(_) => return Err(bad("propagationPolicy")),
    }
    match v.get("gracePeriodSeconds") {
        None | Some(Value::Null) => {}
        Some(g) => o.grace = Some(g.as_i64().ok_or_else(|| bad("gracePeriodSeconds"))?),
    }
    match v.get("orphanDependents") {
        None | Some(Value::Null) => {}
        Some(b) => o.orphan_dependents = Some(b.as_bool().ok_or_else(|| bad("orphanDependents"))?),
    }
    if let Some(p) = v.get("preconditions").filter(|p| !p.is_null()) {
        match p.get("uid") {
            None | Some(Value::Null) => {}
            Some(u) => o.uid = Some(u.as_str().ok_or_else(|| bad("preconditions.uid"))?.to_string()),
        }
        match p.get("resourceVersion") {
            None | Some(Value::Null) => {}
            Some(r) => {
                o.resource_version = Some(r.as_str().ok_or_else(|| bad("preconditions.resourceVersion"))?.to_string())
            }
        }
    }
    Ok(o)
}

fn list_or_watch(shared: Shared, kind: Kind, ns: Option<&str>, q: &HashMap<String, String>) -> Response {
    let sel = match Selectors::parse(
        kind,
        q.get("labelSelector").map(String::as_str),
        q.get("fieldSelector").map(String::as_str),
    ) {
        Ok(s) => s,
        Err(e) => return error_response(&ApiError::bad_request(e)),
    };
    if !is_true(q.get("watch")) {
        let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
            None => None,
            Some(Ok(l)) => Some(l),
            Some(Err(_)) => return error_response(&ApiError::bad_request("limit must be a non-negative integer")),
        };
        let st = lock(&shared);
        return respond(st.list(kind, ns, &sel, limit, q.get("continue").map(String::as_str)).map(|l| (200, l)));
    }
    let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let from = if rv.is_empty() || rv == "0" {
        None
    } else {
        match rv.parse::<u64>() {
            Ok(x) => Some(x),
            Err(_) => return error_response(&ApiError::bad_request(format!("invalid resource version: {rv:?}"))),
        }
    };
    let bookmarks = is_true(q.get("allowWatchBookmarks"));
    let send_initial = is_true(q.get("sendInitialEvents"));
    if send_initial && !bookmarks {
        return error_response(&ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            vec![super::validate::Cause::forbidden(
                "sendInitialEvents",
                "sendInitialEvents requires setting allowWatchBookmarks=true",
            )],
        ));
    }
    let timeout =
        q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).filter(|t| *t > 0).map_or(1800, |t| t.min(1800));
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let spec = WatchSpec {
        kind,
        ns: ns.map(str::to_string),
        sel,
        from: if send_initial { None } else { from },
        bookmarks,
        initial_end: send_initial,
        timeout: Duration::from_secs(timeout),
    };
    tokio::spawn(watch_task(shared, spec, tx));
    stream_response("application/json", rx)
}

fn stream_response(content_type: &'static str, rx: mpsc::Receiver<Bytes>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

struct WatchSpec {
    kind: Kind,
    ns: Option<String>,
    sel: Selectors,
    /// `None`: send the current objects first (`resourceVersion` unset or "0").
    from: Option<u64>,
    bookmarks: bool,
    initial_end: bool,
    timeout: Duration,
}

fn line(etype: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": etype, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn bookmark(kind: Kind, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line("BOOKMARK", &json!({"kind": kind.kind(), "apiVersion": kind.api_version(), "metadata": meta}))
}

fn expired(asked: u64, compacted: u64) -> Bytes {
    let e = ApiError::new(410, "Expired", format!("too old resource version: {asked} ({compacted})"));
    line("ERROR", &e.status())
}

/// The event a watch with this selector sends for a change, if any.
fn convert(e: &Event, spec: &WatchSpec) -> Option<Bytes> {
    if e.kind != spec.kind || spec.ns.as_ref().is_some_and(|n| *n != e.namespace) {
        return None;
    }
    let cur = spec.sel.matches(spec.kind, &e.object);
    let old = e.prev.as_ref().is_some_and(|p| spec.sel.matches(spec.kind, p));
    match e.etype {
        EventType::Added => cur.then(|| line("ADDED", &e.object)),
        EventType::Deleted => cur.then(|| line("DELETED", &e.object)),
        EventType::Modified => match (cur, old) {
            (true, true) => Some(line("MODIFIED", &e.object)),
            (true, false) => Some(line("ADDED", &e.object)),
            (false, true) => {
                // The previous state, with this change's resourceVersion.
                let mut prev = e.prev.clone().unwrap_or(Value::Null);
                super::store::meta_mut(&mut prev).insert("resourceVersion".into(), json!(e.rv.to_string()));
                Some(line("DELETED", &prev))
            }
            (false, false) => None,
        },
    }
}

async fn watch_task(shared: Shared, spec: WatchSpec, tx: mpsc::Sender<Bytes>) {
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let start = {
        let st = lock(&shared);
        let mut rx = st.tick.subscribe();
        rx.borrow_and_update();
        match spec.from {
            Some(x) if x < st.compacted => Err(expired(x, st.compacted)),
            Some(x) => Ok((rx, x, Vec::new())),
            None => {
                let lines: Vec<Bytes> = st
                    .iter(spec.kind, spec.ns.as_deref())
                    .filter(|o| spec.sel.matches(spec.kind, o))
                    .map(|o| line("ADDED", o))
                    .collect();
                Ok((rx, st.rv, lines))
            }
        }
    };
    let (mut rx, mut pos, initial) = match start {
        Ok(s) => s,
        Err(msg) => {
            let _ = tx.send(msg).await;
            return;
        }
    };
    for l in initial {
        if tx.send(l).await.is_err() {
            return;
        }
    }
    if spec.initial_end && tx.send(bookmark(spec.kind, pos, true)).await.is_err() {
        return;
    }
    let every = Duration::from_secs(1);
    let mut next_bookmark = tokio::time::Instant::now() + every;
    loop {
        let batch = {
            let st = lock(&shared);
            rx.borrow_and_update();
            if st.shutdown {
                return;
            }
            if pos < st.compacted {
                Err(st.compacted)
            } else {
                let start = st.history.partition_point(|e| e.rv <= pos);
                let lines: Vec<Bytes> = st.history.range(start..).filter_map(|e| convert(e, &spec)).collect();
                pos = pos.max(st.rv);
                Ok(lines)
            }
        };
        match batch {
            Err(compacted) => {
                let _ = tx.send(expired(pos, compacted)).await;
                return;
            }
            Ok(lines) => {
                for l in lines {
                    if tx.send(l).await.is_err() {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(next_bookmark), if spec.bookmarks => {
                if tx.send(bookmark(spec.kind, pos, false)).await.is_err() {
                    return;
                }
                next_bookmark = tokio::time::Instant::now() + every;
            }
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
        }
    }
}

// ---------------------------------------------------------------------------
// Pod logs.

struct LogQuery {
    timestamps: bool,
    limit_bytes: Option<usize>,
}

fn render(l: &LogLine, q: &LogQuery) -> Vec<u8> {
    let mut out = Vec::new();
    if q.timestamps {
        out.extend_from_slice(fmt_nano(l.ts).as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(&l.text);
    out
}

/// The container a log or attach request names (`container`, or the pod's
/// only one): its index and name, or the apiserver's `400`.
pub(super) fn container_of(pod: &Value, name: &str, container: Option<&String>) -> Result<(usize, String), ApiError> {
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let cname = match container {
        Some(c) => c.as_str(),
        None if names.len() == 1 => names[0],
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )))
        }
    };
    match names.iter().position(|n| *n == cname) {
        Some(idx) => Ok((idx, cname.to_string())),
        None => Err(ApiError::bad_request(format!("container {cname} is not valid for pod {name}"))),
    }
}

pub(super) fn waiting_message(container: &str, pod: &str, reason: &str) -> String {
    let why = match reason {
        "ErrImagePull" => "image can't be pulled",
        "ImagePullBackOff" => "trying and failing to pull image",
        other => other,
    };
    format!("container {container:?} in pod {pod:?} is waiting to start: {why}")
}

fn logs(shared: Shared, ns: &str, name: &str, q: &HashMap<String, String>) -> Response {
    let parse_num = |k: &str| -> Result<Option<i64>, ApiError> {
        match q.get(k) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| ApiError::bad_request(format!("invalid {k}: {v:?}"))),
        }
    };
    let prepared = (|| -> Result<_, ApiError> {
        let tail = parse_num("tailLines")?;
        let limit = parse_num("limitBytes")?;
        if limit.is_some_and(|l| l <= 0) {
            return Err(ApiError::invalid(
                "",
                "PodLogOptions",
                "",
                vec![super::validate::Cause::invalid("limitBytes", &json!(limit), "must be greater than 0")],
            ));
        }
        let since: Option<DateTime<Utc>> = match (q.get("sinceTime"), parse_num("sinceSeconds")?) {
            (Some(t), _) => Some(
                DateTime::parse_from_rfc3339(t)
                    .map_err(|_| ApiError::bad_request(format!("invalid sinceTime: {t:?}")))?
                    .with_timezone(&Utc),
            ),
            (None, Some(s)) => Some(Utc::now() - chrono::Duration::seconds(s)),
            (None, None) => None,
        };
        let st = lock(&shared);
        let pod = st.get(Kind::Pod, ns, name).ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
        let (idx, cname) = container_of(pod, name, q.get("container"))?;
        let uid = uid_of(pod).to_string();
        let c = st.pods.get(&uid).and_then(|rt| rt.containers.get(idx));
        let Some(c) = c else {
            return Err(ApiError::bad_request(waiting_message(&cname, name, "ContainerCreating")));
        };
        let (log, live) = if is_true(q.get("previous")) {
            match &c.prev_log {
                Some(l) => (l.clone(), None),
                None => {
                    return Err(ApiError::bad_request(format!(
                        "previous terminated container {cname:?} in pod {name:?} not found"
                    )))
                }
            }
        } else {
            match &c.state {
                CState::Running { .. } => (c.log.clone(), Some((uid.clone(), idx, c.run))),
                CState::Terminated { .. } => (c.log.clone(), None),
                CState::Waiting { reason, .. } => match &c.prev_log {
                    Some(l) => (l.clone(), None),
                    None => return Err(ApiError::bad_request(waiting_message(&cname, name, reason))),
                },
            }
        };
        let mut start = 0;
        if let Some(since) = since {
            start = log.iter().position(|l| l.ts >= since).unwrap_or(log.len());
        }
        if let Some(t) = tail {
            start = start.max(log.len().saturating_sub(t.max(0) as usize));
        }
        Ok((log, start, live, limit.map(|l| l as usize)))
    })();
    let (log, start, live, limit_bytes) = match prepared {
        Ok(p) => p,
        Err(e) => return error_response(&e),
    };
    let lq = LogQuery { timestamps: is_true(q.get("timestamps")), limit_bytes };
    let follow = is_true(q.get("follow"));
    let Some(live) = live.filter(|_| follow) else {
        let mut out: Vec<u8> = log[start..].iter().flat_map(|l| render(l, &lq)).collect();
        if let Some(n) = lq.limit_bytes {
            out.truncate(n);
        }
        let mut r = (StatusCode::OK, out).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return r;
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(follow_task(shared, live, start, lq, tx));
    stream_response("text/plain", rx)
}

/// Streams a running container's log from line `pos` until it terminates.
async fn follow_task(
    shared: Shared,
    live: (String, usize, u64),
    mut pos: usize,
    lq: LogQuery,
    tx: mpsc::Sender<Bytes>,
) {
    let (uid, idx, run) = live;
    let mut budget = lq.limit_bytes.unwrap_or(usize::MAX);
    let mut rx = lock(&shared).tick.subscribe();
    loop {
        let (chunk, done) = {
            let st = lock(&shared);
            rx.borrow_and_update();
            match st.pods.get(&uid).and_then(|rt| rt.containers.get(idx)).filter(|c| c.run == run) {
                None => (Vec::new(), true),
                Some(c) => {
                    let done = !c.is_running() || st.shutdown;
                    let mut out = Vec::new();
                    while pos < c.log.len() && (c.log[pos].complete || done) {
                        out.extend(render(&c.log[pos], &lq));
                        pos += 1;
                    }
                    (out, done)
                }
            }
        };
        if !chunk.is_empty() {
            let mut chunk = chunk;
            let over = chunk.len() >= budget;
            chunk.truncate(budget);
            budget -= chunk.len();
            if tx.send(Bytes::from(chunk)).await.is_err() || over {
                return;
            }
        }
        if done {
            return;
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tx.closed() => return,
        }
    }
}
