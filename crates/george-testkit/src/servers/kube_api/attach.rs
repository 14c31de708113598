//! `GET|POST /api/v1/namespaces/{ns}/pods/{name}/attach`: a WebSocket
//! session on a running container's stdin, in the apiserver's channel
//! protocol (`v5.channel.k8s.io`, else `v4.channel.k8s.io`, chosen from the
//! client's `Sec-WebSocket-Protocol`): every binary message starts with its
//! channel — `0` stdin, `1` stdout, `2` stderr, `3` the error channel (a
//! `Status` when the container ends), `4` resize, and (v5) `255` a close
//! signal whose second byte names the stream closed.
//!
//! - Query: `container` (required when the pod has several), `stdin`,
//!   `stdout`, `stderr`, `tty`; at least one of the three streams, else
//!   `400`. Unknown pod `404`; unknown container `400 container x is not
//!   valid for pod y`; a container that is not running `400 container "x"
//!   in pod "y" is waiting to start: …`; `stdin=true` for a container
//!   without `stdin: true` `400`; a request that is not a WebSocket upgrade
//!   `400`.
//! - Stdin data goes to the container process's stdin pipe. With
//!   `stdinOnce`, the container's stdin is closed (end of file) when the
//!   first session ends — by a close signal for stdin, a Close frame, or the
//!   connection dropping, whichever comes first — as the kubelet does.
//! - When the container ends, the session sends a `Status` on channel 3
//!   (`Success`, or `Failure` with reason `NonZeroExitCode` and the exit
//!   code as a cause) and closes.
//! - Not modelled: stdout and stderr are not streamed on the session (the
//!   pod's log has them), nor are terminal resizes applied.

use super::http::{container_of, error_response, lock, waiting_message};
use super::kubelet::CState;
use super::store::{uid_of, ApiError, Kind, Shared};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;

const STDIN: u8 = 0;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;

/// Which container of which pod run a session is bound to.
struct Target {
    uid: String,
    idx: usize,
    run: u64,
    once: bool,
}

fn is_true(q: &HashMap<String, String>, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("true" | "1"))
}

/// Checks the request against the pod and upgrades it to a session.
pub(super) async fn attach(
    shared: Shared,
    mut parts: Parts,
    ns: &str,
    name: &str,
    q: &HashMap<String, String>,
) -> Response {
    let stdin = is_true(q, "stdin");
    if !stdin && !is_true(q, "stdout") && !is_true(q, "stderr") {
        return error_response(&ApiError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
    }
    let target = match target(&shared, ns, name, q.get("container"), stdin) {
        Ok(t) => t,
        Err(e) => return error_response(&e),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(_) => return error_response(&ApiError::bad_request("Upgrade request required")),
    };
    upgrade
        .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| session(shared, socket, target))
        .into_response()
}

fn target(shared: &Shared, ns: &str, name: &str, container: Option<&String>, stdin: bool) -> Result<Target, ApiError> {
    let st = lock(shared);
    let pod = st.get(Kind::Pod, ns, name).ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
    let (idx, cname) = container_of(pod, name, container)?;
    let cname = cname.as_str();
    let c = st.pods.get(uid_of(pod)).and_then(|rt| rt.containers.get(idx));
    let Some(c) = c.filter(|c| c.is_running()) else {
        let reason = match c.map(|c| &c.state) {
            Some(CState::Waiting { reason, .. }) => reason.clone(),
            Some(CState::Terminated { .. }) => {
                return Err(ApiError::bad_request(format!(
                    "cannot attach to a container in a completed pod; current phase is {}",
                    pod.pointer("/status/phase").and_then(|p| p.as_str()).unwrap_or("Unknown")
                )))
            }
            _ => "ContainerCreating".into(),
        };
        return Err(ApiError::bad_request(waiting_message(cname, name, &reason)));
    };
    if stdin && !c.stdin_spec.0 {
        return Err(ApiError::bad_request(format!(
            "container {cname} in pod {name} does not accept stdin: its spec does not set stdin: true"
        )));
    }
    Ok(Target { uid: uid_of(pod).to_string(), idx, run: c.run, once: c.stdin_spec.1 })
}

/// The session: stdin frames into the pipe until the client closes it or
/// the container ends.
async fn session(shared: Shared, mut socket: WebSocket, t: Target) {
    let mut rx = lock(&shared).tick.subscribe();
    loop {
        let ended = {
            let st = lock(&shared);
            rx.borrow_and_update();
            match st.pods.get(&t.uid).and_then(|rt| rt.containers.get(t.idx)).filter(|c| c.run == t.run) {
                Some(c) => match &c.state {
                    CState::Running { .. } => None,
                    CState::Terminated { exit_code, .. } => Some(*exit_code),
                    CState::Waiting { .. } => Some(-1),
                },
                None => Some(-1),
            }
        };
        if let Some(code) = ended {
            let status = if code == 0 {
                json!({"metadata": {}, "status": "Success"})
            } else {
                json!({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                       "message": format!("command terminated with non-zero exit code: {code}"),
                       "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
            };
            let mut frame = vec![ERROR];
            frame.extend(status.to_string().into_bytes());
            let _ = socket.send(Message::Binary(frame.into())).await;
            let _ = socket.send(Message::Close(None)).await;
            break;
        }
        let msg = tokio::select! {
            r = rx.changed() => { if r.is_err() { break } continue }
            m = socket.recv() => m,
        };
        match msg {
            Some(Ok(Message::Binary(b))) => match b.first() {
                Some(&STDIN) => write_stdin(&shared, &t, b[1..].to_vec()).await,
                Some(&CLOSE) if b.get(1) == Some(&STDIN) => close_stdin(&shared, &t),
                _ => {}
            },
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => {}
        }
    }
    close_stdin(&shared, &t);
}

async fn write_stdin(shared: &Shared, t: &Target, data: Vec<u8>) {
    let pipe = {
        let st = lock(shared);
        let c = st.pods.get(&t.uid).and_then(|rt| rt.containers.get(t.idx)).filter(|c| c.run == t.run);
        c.and_then(|c| c.stdin.as_ref()).and_then(|f| f.try_clone().ok())
    };
    if let Some(mut pipe) = pipe {
        // A full pipe blocks: off the async threads.
        let _ = tokio::task::spawn_blocking(move || pipe.write_all(&data)).await;
    }
}

/// `stdinOnce`: the first session's end closes the container's stdin.
fn close_stdin(shared: &Shared, t: &Target) {
    if !t.once {
        return;
    }
    let mut st = lock(shared);
    if let Some(c) = st.pods.get_mut(&t.uid).and_then(|rt| rt.containers.get_mut(t.idx)).filter(|c| c.run == t.run) {
        c.stdin = None;
    }
}
