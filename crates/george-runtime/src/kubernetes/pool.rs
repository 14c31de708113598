//! Warm agents on Kubernetes: a Job per warm agent
//! ([`spec::render_warm_job`]) whose pod runs George's launcher waiting for
//! its binding on stdin, and an attach session (`pods/attach`, a WebSocket)
//! the engine opens as soon as the pod runs and holds until the claim.
//!
//! - **The channel is the session.** The container has `stdin` and
//!   `stdinOnce`: only a client allowed `pods/attach` can write to it, and
//!   when the first session ends the container's stdin is closed. The
//!   binding — the job's environment, the attempt token, the secret files —
//!   is one line on it; nothing of a job is in the pod's spec, a Secret, or
//!   the API's objects. An engine that dies drops the session, the launcher
//!   reads end of file and exits ([`crate::launch::GATE_CLOSED`]): a warm
//!   agent never outlives its engine's claim on it.
//! - **Claim** annotates the Job and its pod with the attempt (as a cold
//!   Job is), so `list_owned` and the pod watcher know whose it is, and keeps
//!   the binding; **release** (once the handle is stored) sends it and
//!   closes the session. A warm Job's name is not its attempt's, so the
//!   runtime remembers which Job serves which attempt (and learns it again
//!   from the annotations after a restart).
//! - **Clear** deletes the warm Jobs no attempt claimed (an earlier engine's).

use super::{spec, unavailable, KubernetesRuntime};
use crate::{RuntimeError, SpawnRequest, WarmAgent, WarmSpec};
use futures_util::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

/// How long a warm pod may take to run before the warm start is given up.
const START_WITHIN: Duration = Duration::from_secs(120);
/// How long a binding's delivery may take.
const DELIVER_WITHIN: Duration = Duration::from_secs(10);

const STDIN: u8 = 0;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;

/// A binding to send, and where to say whether it was sent.
type Delivery = (Vec<u8>, oneshot::Sender<Result<(), String>>);

/// A claimed warm agent and its binding (one line of JSON), sent at release.
pub(super) type Bound = (WarmPod, Vec<u8>);

/// A warm agent's Job and the session holding its pod's stdin.
#[derive(Debug)]
pub(super) struct WarmPod {
    uid: Option<String>,
    pod: String,
    bind: oneshot::Sender<Delivery>,
    alive: Arc<AtomicBool>,
}

/// The session: holds the attach WebSocket until a binding comes (sent,
/// then stdin closed), or until the container ends or the connection drops
/// (the warm agent is then dead). Dropping the binding's sender (a discard)
/// ends it too: the launcher reads end of file.
async fn hold(conn: kube::client::Connection, bind: oneshot::Receiver<Delivery>, alive: Arc<AtomicBool>, name: String) {
    let v5 = conn.supports_stream_close();
    let mut ws = conn.into_stream();
    let mut bind = std::pin::pin!(bind);
    loop {
        tokio::select! {
            d = &mut bind => {
                alive.store(false, Ordering::Relaxed);
                let Ok((line, done)) = d else { break };
                let sent = async {
                    let mut frame = Vec::with_capacity(line.len() + 1);
                    frame.push(STDIN);
                    frame.extend_from_slice(&line);
                    ws.send(Message::binary(frame)).await?;
                    if v5 {
                        ws.send(Message::binary(vec![CLOSE, STDIN])).await?;
                    }
                    ws.close(None).await
                };
                let _ = done.send(sent.await.map_err(|e| e.to_string()));
                // The server's close answers ours; do not wait long for it.
                let _ = tokio::time::timeout(Duration::from_secs(2), async { while ws.next().await.is_some() {} }).await;
                return;
            }
            m = ws.next() => match m {
                Some(Ok(Message::Binary(b))) if b.first() == Some(&ERROR) => {
                    tracing::debug!(k8s_job = %name, status = %String::from_utf8_lossy(&b[1..]), "warm agent ended");
                    break;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    alive.store(false, Ordering::Relaxed);
}

/// A name no other warm Job has: the prefix, the AgentSpec's hash, and
/// eight hex digits of a hash of this process, the time and a counter.
fn warm_name(prefix: &str, agent_spec: &str, serial: u64) -> String {
    use sha2::{Digest, Sha256};
    let hex = |b: &[u8]| b.iter().take(4).map(|x| format!("{x:02x}")).collect::<String>();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let unique = Sha256::digest(format!("{}-{nanos}-{serial}", std::process::id()).as_bytes());
    let spec = Sha256::digest(agent_spec.as_bytes());
    let tail = format!("-pool-{}-{}", hex(&spec), hex(&unique));
    let head = &prefix[..prefix.len().min(63 - tail.len())];
    format!("{}{tail}", head.trim_end_matches('-'))
}

impl KubernetesRuntime {
    /// Starts a warm Job and, once its pod runs, attaches to its stdin.
    pub(super) async fn start_warm(&self, spec: &WarmSpec) -> Result<WarmAgent, RuntimeError> {
        let s = &self.inner.cfg.job;
        let serial = self.inner.warm_serial.fetch_add(1, Ordering::Relaxed);
        let name = warm_name(&s.name_prefix, &spec.agent_spec, serial);
        let job = spec::render_warm_job(s, spec, &name).map_err(|e| {
            RuntimeError::Unavailable(format!("AgentSpec `{}` cannot have warm agents: {e:?}", spec.agent_spec))
        })?;
        let created = self
            .inner
            .jobs
            .create(&PostParams::default(), &job)
            .await
            .map_err(|e| unavailable(&format!("create warm Job {name}"), e))?;
        let started = async {
            let pod = self.running_pod(&name).await?;
            let ap = AttachParams::default().container(spec::CONTAINER).stdin(true).stdout(false).stderr(false);
            let url = <Pod as kube::Resource>::url_path(&(), Some(&s.namespace));
            let req = kube::core::Request::new(url)
                .attach(&pod, &ap)
                .map_err(|e| RuntimeError::Unavailable(format!("attach to warm pod {pod}: {e}")))?;
            let conn = self
                .inner
                .client
                .connect(req)
                .await
                .map_err(|e| unavailable(&format!("attach to warm pod {pod}"), e))?;
            Ok::<_, RuntimeError>((pod, conn))
        };
        let (pod, conn) = match started.await {
            Ok(p) => p,
            Err(e) => {
                let _ = self.delete_objects(&name).await;
                return Err(e);
            }
        };
        let (bind, bound) = oneshot::channel();
        let alive = Arc::new(AtomicBool::new(true));
        self.inner.watchers.spawn(hold(conn, bound, alive.clone(), name.clone()));
        let warm = WarmPod { uid: created.metadata.uid.clone(), pod, bind, alive };
        self.inner.warm.lock().insert(name.clone(), warm);
        tracing::debug!(agent_spec = %spec.agent_spec, k8s_job = %name, "warm agent Job started and attached");
        Ok(WarmAgent { id: name, spec: spec.clone() })
    }

    /// The name of the Job's pod once its container runs.
    async fn running_pod(&self, job: &str) -> Result<String, RuntimeError> {
        let deadline = Instant::now() + START_WITHIN;
        loop {
            let pods = self.pods_of(job).await.map_err(|e| unavailable(&format!("list pods of Job {job}"), e))?;
            for pod in &pods {
                if let Some(exit) = super::status::pod_exit(pod) {
                    return Err(RuntimeError::Unavailable(format!(
                        "warm Job {job} ended before its binding: {}",
                        exit.describe()
                    )));
                }
                if let Some(reason) = super::status::stuck_reason(pod) {
                    return Err(RuntimeError::Unavailable(format!("warm Job {job} cannot start: {reason}")));
                }
                if super::status::agent_state(pod).is_some_and(|s| s.running.is_some()) {
                    return Ok(pod.metadata.name.clone().unwrap_or_default());
                }
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Unavailable(format!(
                    "warm Job {job}'s pod did not run within {}s",
                    START_WITHIN.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(super) fn warm_is_alive(&self, warm: &WarmAgent) -> bool {
        self.inner.warm.lock().get(&warm.id).is_some_and(|w| w.alive.load(Ordering::Relaxed))
    }

    /// Makes a warm Job the attempt's: annotated as a cold Job is, its
    /// binding kept for [`KubernetesRuntime::bind`].
    pub(super) async fn claim_warm(&self, req: SpawnRequest, warm: WarmAgent) -> Result<Value, RuntimeError> {
        let (job_id, attempt) = (req.job_id.clone(), req.attempt);
        let agent = george_core::api::agent_id(&job_id, attempt);
        let gone = || RuntimeError::Spawn {
            agent: agent.clone(),
            message: format!("warm agent {} is gone", warm.id),
            source: None,
        };
        let Some(w) = self.inner.warm.lock().remove(&warm.id) else { return Err(gone()) };
        if !w.alive.load(Ordering::Relaxed) {
            let _ = self.delete_objects(&warm.id).await;
            return Err(gone());
        }
        if let Some(bad) = req.secrets.iter().find(|f| !spec::valid_file_name(&f.name)) {
            let _ = self.delete_objects(&warm.id).await;
            return Err(RuntimeError::Unrunnable {
                agent,
                message: format!(
                    "secret file name `{}` cannot be a file name (letters, digits, `-`, `_`, `.`)",
                    bad.name
                ),
            });
        }
        let s = &self.inner.cfg.job;
        let mut labels = spec::labels(s, &req);
        labels.insert(spec::POOL_LABEL.into(), spec::label_value(&req.agent_spec));
        let owner = json!({"metadata": {
            "labels": labels,
            "annotations": {
                spec::JOB_ID_ANNOTATION: job_id,
                spec::ATTEMPT_ANNOTATION: attempt.to_string(),
                "george.io/agent-spec": req.agent_spec,
            },
        }});
        let (pp, patch) = (PatchParams::default(), Patch::Merge(&owner));
        let (job, pod) =
            tokio::join!(self.inner.jobs.patch(&warm.id, &pp, &patch), self.inner.pods.patch(&w.pod, &pp, &patch));
        if let Err(e) = job.map(|_| ()).and(pod.map(|_| ())) {
            let _ = self.delete_objects(&warm.id).await;
            return Err(RuntimeError::Spawn {
                agent,
                message: format!("claim warm Job {}: {e}", warm.id),
                source: None,
            });
        }
        let env: Vec<(String, String)> = req.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let (files, root_env) = crate::launch::credentials(&req);
        let command = if req.command.is_empty() { s.default_command.clone() } else { req.command.clone() };
        let context = req.context.clone();
        let binding = crate::launch::Binding { command, env, files, root_env, context, ..Default::default() };
        let mut line = serde_json::to_vec(&binding).unwrap_or_default();
        line.push(b'\n');
        let key = (job_id.clone(), attempt);
        self.inner.claimed.lock().insert(key.clone(), warm.id.clone());
        let handle = json!({"job": warm.id, "namespace": s.namespace, "uid": w.uid});
        self.inner.bindings.lock().insert(key, (w, line));
        self.follow(&warm.id, &job_id, attempt);
        tracing::info!(job = %job_id, attempt, k8s_job = %warm.id, "warm agent Job claimed (held until its binding)");
        Ok(handle)
    }

    /// Sends a claimed warm agent its binding (nothing to do for a cold
    /// Job). A binding that cannot be sent leaves an agent that never acts:
    /// its pod is deleted.
    pub(super) async fn bind(&self, job_id: &str, attempt: u32) -> Result<(), RuntimeError> {
        let Some((w, line)) = self.inner.bindings.lock().remove(&(job_id.to_string(), attempt)) else { return Ok(()) };
        let (done, sent) = oneshot::channel();
        let result = match w.bind.send((line, done)) {
            Ok(()) => match tokio::time::timeout(DELIVER_WITHIN, sent).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err("the attach session ended".into()),
                Err(_) => Err(format!("not sent within {}s", DELIVER_WITHIN.as_secs())),
            },
            Err(_) => Err("the attach session ended".into()),
        };
        match result {
            Ok(()) => {
                tracing::info!(job = job_id, attempt, pod = %w.pod, "warm agent bound");
                Ok(())
            }
            Err(e) => {
                let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::background() };
                let _ = self.inner.pods.delete(&w.pod, &dp).await;
                Err(RuntimeError::Unavailable(format!("bind warm pod {}: {e}", w.pod)))
            }
        }
    }

    /// Ends a warm agent: its session (the launcher reads end of file) and its Job.
    pub(super) async fn discard_warm(&self, warm: &WarmAgent) -> Result<(), RuntimeError> {
        drop(self.inner.warm.lock().remove(&warm.id));
        self.delete_objects(&warm.id).await
    }

    /// Deletes the warm Jobs no attempt claimed and this process does not hold.
    pub(super) async fn clear_warm(&self) -> Result<usize, RuntimeError> {
        let selector = format!("{},{}", spec::selector(&self.inner.cfg.job.instance), spec::POOL_LABEL);
        let jobs = self
            .inner
            .jobs
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| unavailable("list warm agent Jobs", e))?
            .items;
        let mut cleared = 0;
        for job in jobs {
            let name = job.metadata.name.clone().unwrap_or_default();
            if super::owner_of(&job.metadata).is_some() || self.inner.warm.lock().contains_key(&name) {
                continue;
            }
            match self.delete_objects(&name).await {
                Ok(()) => cleared += 1,
                Err(e) => tracing::warn!(k8s_job = %name, error = %e, "cannot delete a warm agent Job left behind"),
            }
        }
        Ok(cleared)
    }

    /// The Job serving an attempt: a claimed warm Job's, else the attempt's own.
    pub(super) fn job_of(&self, job_id: &str, attempt: u32) -> String {
        let claimed = self.inner.claimed.lock().get(&(job_id.to_string(), attempt)).cloned();
        claimed.unwrap_or_else(|| self.job_name(job_id, attempt))
    }
}
