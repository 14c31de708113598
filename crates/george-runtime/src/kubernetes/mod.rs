//! The Kubernetes runtime: one `batch/v1` Job per attempt, through the
//! cluster's API with kube-rs (a kubeconfig file named in the config,
//! `KUBECONFIG`, or the in-cluster service account).
//!
//! - **Spawn** creates the attempt's Secret (agent token, secret files), then
//!   its Job ([`spec::render_job`]), then makes the Job the Secret's owner so
//!   the cluster's garbage collector removes both together. Names are
//!   deterministic: a retried spawn finds the Job (`409 AlreadyExists`) and
//!   uses it, so one attempt never has two Jobs.
//! - **Status** is read from the Job and its pod (a fresh read, never a
//!   cache); a pod watcher (kube-runtime's `watcher`: list, then watch,
//!   re-listing when the watch expires) reports terminated containers and
//!   deleted pods at once, so the reconciler need not wait for its next pass.
//! - **Logs** are streamed from the pod (`follow`, with timestamps) into the
//!   attempt's log file; a dropped stream re-attaches from the last line
//!   written. A container stuck waiting (`ImagePullBackOff`,
//!   `CreateContainerConfigError`, …) gets a note in the log.
//! - **Terminate** deletes the pod with the grace period (SIGTERM, then
//!   SIGKILL), waits for it to end, then deletes the Job and Secret with
//!   background propagation. **Cleanup** deletes them (background) once the
//!   log has been copied.
//! - **Adoption**: `list_owned` lists every Job labelled `app=george-agent`
//!   of this installation (whichever replica made it) that belongs to an
//!   attempt, so a new leader adopts current attempts and removes stale ones.
//! - **Warm pools** (`pool.rs`): warm Jobs whose launcher waits on stdin,
//!   bound through an attach session.

mod pool;
pub mod spec;
pub mod status;

use crate::logs::TimestampedLog;
use crate::{
    AgentLogs, AgentStatus, OwnedAgent, Runtime, RuntimeError, RuntimeEvent, SpawnRequest, WarmAgent, WarmSpec,
};
use async_trait::async_trait;
use futures_util::{AsyncReadExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use parking_lot::Mutex;
use serde_json::{json, Value};
use spec::JobSettings;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Settings of the Kubernetes runtime.
#[derive(Debug, Clone)]
pub struct KubernetesRuntimeConfig {
    /// How Jobs are rendered.
    pub job: JobSettings,
    /// Where attempt logs are kept.
    pub logs: AgentLogs,
    /// Most bytes of output kept per attempt.
    pub max_log_bytes: u64,
}

impl KubernetesRuntimeConfig {
    /// Defaults under a data directory.
    pub fn under(data_dir: &std::path::Path, engine_id: &str) -> Self {
        Self {
            job: JobSettings {
                namespace: "default".into(),
                instance: "george".into(),
                name_prefix: "george".into(),
                default_image: None,
                default_command: vec!["george".into(), "agent".into(), "run".into()],
                pull_policy: crate::PullPolicy::IfNotPresent,
                service_account: None,
                ttl_after_finished: Duration::from_secs(3600),
                termination_grace: Duration::from_secs(10),
                engine_id: engine_id.to_string(),
            },
            logs: AgentLogs::new(data_dir.join("logs")),
            max_log_bytes: 16 << 20,
        }
    }
}

/// Runs agents as Kubernetes Jobs.
#[derive(Debug, Clone)]
pub struct KubernetesRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: KubernetesRuntimeConfig,
    jobs: Api<Job>,
    pods: Api<Pod>,
    secrets: Api<Secret>,
    events: broadcast::Sender<RuntimeEvent>,
    /// Log followers by Job name, done when the flag turns true.
    followers: Mutex<HashMap<String, tokio::sync::watch::Receiver<bool>>>,
    /// The pod watcher, the tasks that copy pods' logs, the warm agents' attach sessions.
    watchers: crate::watchers::Watchers,
    /// The client (attach sessions are made with it directly).
    client: Client,
    /// This process's unclaimed warm agents, by Job name.
    warm: Mutex<HashMap<String, pool::WarmPod>>,
    /// Names the next warm Job.
    warm_serial: std::sync::atomic::AtomicU64,
    /// Claimed warm agents and their bindings, sent at release.
    bindings: Mutex<HashMap<(String, u32), pool::Bound>>,
    /// The warm Job serving each attempt a warm agent took (its name is not the attempt's).
    claimed: Mutex<HashMap<(String, u32), String>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRuntime").field("namespace", &self.cfg.job.namespace).finish_non_exhaustive()
    }
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn unavailable(what: &str, e: kube::Error) -> RuntimeError {
    RuntimeError::Unavailable(format!("{what}: {e}"))
}

/// The `(job id, attempt)` an object of ours belongs to, from its annotations.
fn owner_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<(String, u32)> {
    let a = meta.annotations.as_ref()?;
    Some((a.get(spec::JOB_ID_ANNOTATION)?.clone(), a.get(spec::ATTEMPT_ANNOTATION)?.parse().ok()?))
}

/// A client for the cluster: from the kubeconfig file `path` if given,
/// else as kube-rs infers it: `KUBECONFIG` or `~/.kube/config`, else the
/// in-cluster service account of the pod. Its `default_namespace()` is the
/// context's namespace (in a pod: the pod's own).
pub async fn client(path: Option<&std::path::Path>) -> Result<Client, RuntimeError> {
    let config = match path {
        Some(path) => {
            let bad = |e: &dyn std::fmt::Display| RuntimeError::Unavailable(format!("kubeconfig {}: {e}", path.display()));
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(&e))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| bad(&e))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            RuntimeError::Unavailable(format!(
                "no Kubernetes configuration: {e}; run in a pod with a service account, set KUBECONFIG, or name a kubeconfig file in the config"
            ))
        })?,
    };
    Client::try_from(config).map_err(|e| unavailable("cannot build the Kubernetes client", e))
}

impl KubernetesRuntime {
    /// A runtime on a client ([`client`]); checks that the namespace's Jobs can be listed.
    pub async fn connect(client: Client, cfg: KubernetesRuntimeConfig) -> Result<Self, RuntimeError> {
        let ns = cfg.job.namespace.clone();
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let selector = spec::selector(&cfg.job.instance);
        let lp = ListParams::default().labels(&selector).limit(1);
        let probe = jobs.list(&lp);
        match tokio::time::timeout(Duration::from_secs(10), probe).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(unavailable(&format!("cannot list Jobs in namespace `{ns}`"), e)),
            Err(_) => {
                return Err(RuntimeError::Unavailable(format!(
                    "the Kubernetes API did not answer within 10s (listing Jobs in namespace `{ns}`)"
                )))
            }
        }
        let (events, _) = broadcast::channel(1024);
        let watchers = crate::watchers::Watchers::default();
        watchers.spawn(watch_pods(pods.clone(), selector, events.clone()));
        let inner = Inner {
            cfg,
            jobs,
            pods,
            secrets,
            events,
            followers: Mutex::new(HashMap::new()),
            watchers,
            client,
            warm: Mutex::new(HashMap::new()),
            warm_serial: Default::default(),
            bindings: Mutex::new(HashMap::new()),
            claimed: Mutex::new(HashMap::new()),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The Job (and Secret) name of an attempt.
    pub fn job_name(&self, job_id: &str, attempt: u32) -> String {
        spec::job_name(&self.inner.cfg.job.name_prefix, job_id, attempt)
    }

    fn name_of(job_id: &str, attempt: u32, handle: &Value) -> Result<String, RuntimeError> {
        handle.get("job").and_then(Value::as_str).map(str::to_string).ok_or_else(|| RuntimeError::Handle {
            agent: george_core::api::agent_id(job_id, attempt),
            message: "expected {job, namespace, uid}".into(),
        })
    }

    fn handle(&self, job: &Job) -> Value {
        json!({
            "job": job.metadata.name,
            "namespace": self.inner.cfg.job.namespace,
            "uid": job.metadata.uid,
        })
    }

    async fn pods_of(&self, name: &str) -> Result<Vec<Pod>, kube::Error> {
        Ok(self.inner.pods.list(&ListParams::default().labels(&format!("job-name={name}"))).await?.items)
    }

    /// One request while the pod runs (the pods of the Job); the Job too
    /// when no pod says how it is.
    async fn read_status(&self, name: &str) -> Result<AgentStatus, RuntimeError> {
        let pods = self.pods_of(name).await.map_err(|e| unavailable(&format!("list pods of Job {name}"), e))?;
        if let Some(known) = status::from_pods(&pods) {
            return Ok(known);
        }
        let job = self.inner.jobs.get_opt(name).await.map_err(|e| unavailable(&format!("get Job {name}"), e))?;
        Ok(status::agent_status(job.as_ref(), &pods))
    }

    /// Creates (or, for a retried spawn, refreshes) the attempt's Secret.
    async fn put_secret(&self, secret: &Secret, name: &str, agent: &str) -> Result<(), RuntimeError> {
        let spawn_err = |what: &str, e: kube::Error| RuntimeError::Spawn {
            agent: agent.to_string(),
            message: format!("{what} Secret {name}: {e}"),
            source: None,
        };
        match self.inner.secrets.create(&PostParams::default(), secret).await {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some(409) => {
                self.inner
                    .secrets
                    .replace(name, &PostParams::default(), secret)
                    .await
                    .map_err(|e| spawn_err("replace", e))?;
                Ok(())
            }
            Err(e) => Err(spawn_err("create", e)),
        }
    }

    async fn delete_objects(&self, name: &str) -> Result<(), RuntimeError> {
        match self.inner.jobs.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if code(&e) == Some(404) => {}
            Err(e) => return Err(unavailable(&format!("delete Job {name}"), e)),
        }
        match self.inner.secrets.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(e) if code(&e) == Some(404) => Ok(()),
            Err(e) => Err(unavailable(&format!("delete Secret {name}"), e)),
        }
    }

    /// Copies the pod's output into the attempt's log file, once per Job.
    fn follow(&self, name: &str, job_id: &str, attempt: u32) {
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        {
            let mut followers = self.inner.followers.lock();
            if followers.get(name).is_some_and(|rx| !*rx.borrow()) {
                return;
            }
            followers.insert(name.to_string(), done_rx);
        }
        let this = self.clone();
        let (name, path) = (name.to_string(), self.inner.cfg.logs.path(job_id, attempt));
        self.inner.watchers.spawn(async move {
            if let Err(e) = this.copy_logs(&name, &path).await {
                tracing::warn!(job = %name, error = %e, "cannot copy the agent pod's logs");
            }
            let _ = done_tx.send(true);
        });
    }

    async fn copy_logs(&self, name: &str, path: &std::path::Path) -> std::io::Result<()> {
        let mut log = TimestampedLog::open(path, self.inner.cfg.max_log_bytes)?;
        let mut noted = None;
        loop {
            let pods = match self.pods_of(name).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(job = %name, error = %e, "cannot list the Job's pods; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some(pod) =
                pods.into_iter().max_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp))
            else {
                match self.inner.jobs.get_opt(name).await {
                    Ok(None) => break,
                    Ok(Some(job)) if status::agent_status(Some(&job), &[]) != AgentStatus::Running => break,
                    _ => {}
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            if let Some(reason) = status::stuck_reason(&pod) {
                if noted.as_ref() != Some(&reason) {
                    tracing::warn!(job = %name, %reason, "the agent's container cannot start");
                    log.note(&format!("the container cannot start: {reason}"))?;
                    noted = Some(reason);
                }
            }
            let started = status::agent_state(&pod).is_some_and(|s| s.running.is_some() || s.terminated.is_some());
            if !started {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let params = LogParams {
                container: Some(spec::CONTAINER.into()),
                follow: true,
                timestamps: true,
                since_time: log.last().and_then(|t| t.to_rfc3339().parse().ok()),
                ..Default::default()
            };
            log.resume();
            match self.inner.pods.log_stream(&pod_name, &params).await {
                Ok(stream) => {
                    let mut stream = Box::pin(stream);
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => log.push(&buf[..n])?,
                        }
                    }
                }
                Err(e) => tracing::debug!(pod = %pod_name, error = %e, "cannot stream the pod's logs; retrying"),
            }
            // The stream ended: the container ended, or the connection dropped.
            match self.inner.pods.get_opt(&pod_name).await {
                Ok(Some(p)) if status::pod_exit(&p).is_none() => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Ok(_) => break,
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        log.finish()
    }

    /// Waits (up to `within`) for the Job's log follower to finish.
    async fn logs_copied(&self, name: &str, within: Duration) {
        let rx = self.inner.followers.lock().get(name).cloned();
        if let Some(mut rx) = rx {
            let _ = tokio::time::timeout(within, rx.wait_for(|done| *done)).await;
        }
        self.inner.followers.lock().remove(name);
    }
}

/// Reports terminated agent containers and deleted pods as runtime events.
async fn watch_pods(pods: Api<Pod>, selector: String, events: broadcast::Sender<RuntimeEvent>) {
    let mut reported: HashSet<(String, u32)> = HashSet::new();
    let stream = watcher(pods, watcher::Config::default().labels(&selector)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        let (pod, deleted) = match event {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => (p, false),
            Ok(watcher::Event::Delete(p)) => (p, true),
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "watching agent pods failed; kube-runtime retries with backoff");
                continue;
            }
        };
        let Some(key) = owner_of(&pod.metadata) else { continue };
        let status = match (status::pod_exit(&pod), deleted) {
            (Some(s), _) => s,
            (None, true) => AgentStatus::Exited { code: None, signal: None },
            (None, false) => continue,
        };
        // Once per attempt; a deleted pod is forgotten, so the set stays small.
        let first = if deleted { !reported.remove(&key) } else { reported.insert(key.clone()) };
        if first {
            let (job_id, attempt) = key;
            tracing::debug!(job = %job_id, attempt, status = %status.describe(), "agent pod ended");
            let _ = events.send(RuntimeEvent { job_id, attempt, status });
        }
    }
}

#[async_trait]
impl Runtime for KubernetesRuntime {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    async fn spawn(&self, req: SpawnRequest) -> Result<Value, RuntimeError> {
        let (job_id, attempt) = (req.job_id.clone(), req.attempt);
        let agent = george_core::api::agent_id(&job_id, attempt);
        let name = self.job_name(&job_id, attempt);
        let s = &self.inner.cfg.job;
        let job = spec::render_job(s, &req, &name).map_err(|e| match e {
            spec::RenderError::NoImage(message) | spec::RenderError::Unsupported(message) => {
                RuntimeError::Unrunnable { agent: agent.clone(), message }
            }
            spec::RenderError::BadSecretName(n) => RuntimeError::Unrunnable {
                agent: agent.clone(),
                message: format!(
                    "secret file name `{n}` cannot be a Kubernetes Secret key (letters, digits, `-`, `_`, `.`)"
                ),
            },
            spec::RenderError::Schema(message) => RuntimeError::Spawn { agent: agent.clone(), message, source: None },
        })?;
        // Idempotent: a retried spawn (or the next leader) finds the attempt's Job.
        if let Some(existing) =
            self.inner.jobs.get_opt(&name).await.map_err(|e| unavailable(&format!("get Job {name}"), e))?
        {
            self.follow(&name, &job_id, attempt);
            return Ok(self.handle(&existing));
        }
        let secret = spec::needs_secret(&req).then(|| spec::render_secret(s, &req, &name));
        if let Some(secret) = &secret {
            self.put_secret(secret, &name, &agent).await?;
        }
        let created = match self.inner.jobs.create(&PostParams::default(), &job).await {
            Ok(j) => j,
            Err(e) if code(&e) == Some(409) => {
                self.inner.jobs.get(&name).await.map_err(|e| unavailable(&format!("get Job {name}"), e))?
            }
            Err(e) if matches!(code(&e), Some(400 | 403 | 422)) => {
                return Err(RuntimeError::Unrunnable {
                    agent,
                    message: format!("the cluster refused Job {name}: {e}; check the AgentSpec and the engine's RBAC"),
                })
            }
            Err(e) => {
                return Err(RuntimeError::Spawn { agent, message: format!("create Job {name}: {e}"), source: None })
            }
        };
        if secret.is_some() {
            // The Job owns its Secret: deleting the Job removes it too.
            let owner = json!({"metadata": {"ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": created.metadata.uid,
            }]}});
            if let Err(e) = self.inner.secrets.patch(&name, &PatchParams::default(), &Patch::Merge(&owner)).await {
                tracing::warn!(job = %name, error = %e, "cannot make the Job own its Secret; cleanup deletes it by name");
            }
        }
        self.follow(&name, &job_id, attempt);
        tracing::info!(job = %job_id, attempt, k8s_job = %name, namespace = %s.namespace, "agent Job created");
        Ok(self.handle(&created))
    }

    async fn status(&self, job_id: &str, attempt: u32, handle: &Value) -> Result<AgentStatus, RuntimeError> {
        let name = Self::name_of(job_id, attempt, handle)?;
        self.read_status(&name).await
    }

    async fn terminate(
        &self,
        job_id: &str,
        attempt: u32,
        handle: &Value,
        grace: Duration,
    ) -> Result<AgentStatus, RuntimeError> {
        let name = Self::name_of(job_id, attempt, handle)?;
        let pods = self.pods_of(&name).await.map_err(|e| unavailable(&format!("list pods of Job {name}"), e))?;
        let dp = DeleteParams { grace_period_seconds: Some(grace.as_secs() as u32), ..DeleteParams::background() };
        let mut last = AgentStatus::Exited { code: None, signal: None };
        for pod in &pods {
            if let Some(exit) = status::pod_exit(pod) {
                last = exit;
                continue;
            }
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            match self.inner.pods.delete(&pod_name, &dp).await {
                Ok(_) => {}
                Err(e) if code(&e) == Some(404) => {}
                Err(e) => return Err(unavailable(&format!("delete pod {pod_name}"), e)),
            }
        }
        // Wait for the pods to end (SIGTERM, then SIGKILL after the grace period).
        let deadline = Instant::now() + grace + Duration::from_secs(10);
        while Instant::now() < deadline {
            let pods = self.pods_of(&name).await.map_err(|e| unavailable(&format!("list pods of Job {name}"), e))?;
            if let Some(exit) = pods.iter().find_map(status::pod_exit) {
                last = exit;
            }
            if pods.iter().all(|p| status::pod_exit(p).is_some()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.logs_copied(&name, Duration::from_secs(5)).await;
        self.delete_objects(&name).await?;
        Ok(last)
    }

    async fn list_owned(&self) -> Result<Vec<OwnedAgent>, RuntimeError> {
        let selector = spec::selector(&self.inner.cfg.job.instance);
        let lp = ListParams::default().labels(&selector);
        let jobs = self.inner.jobs.list(&lp).await.map_err(|e| unavailable("list agent Jobs", e))?.items;
        let pods = self.inner.pods.list(&lp).await.map_err(|e| unavailable("list agent pods", e))?.items;
        let mut by_job: HashMap<String, Vec<Pod>> = HashMap::new();
        for pod in pods {
            if let Some(j) = pod.metadata.labels.as_ref().and_then(|l| l.get("job-name")) {
                by_job.entry(j.clone()).or_default().push(pod);
            }
        }
        let mut out = Vec::new();
        for job in jobs {
            let Some((job_id, attempt)) = owner_of(&job.metadata) else { continue };
            let name = job.metadata.name.clone().unwrap_or_default();
            if name != self.job_name(&job_id, attempt) {
                // A claimed warm Job.
                self.inner.claimed.lock().insert((job_id.clone(), attempt), name.clone());
            }
            let status = status::agent_status(Some(&job), by_job.get(&name).map(Vec::as_slice).unwrap_or_default());
            out.push(OwnedAgent { job_id, attempt, handle: self.handle(&job), status });
        }
        out.sort_by(|a, b| (&a.job_id, a.attempt).cmp(&(&b.job_id, b.attempt)));
        Ok(out)
    }

    async fn adopt(&self, agent: &OwnedAgent) -> Result<(), RuntimeError> {
        let name = Self::name_of(&agent.job_id, agent.attempt, &agent.handle)?;
        self.follow(&name, &agent.job_id, agent.attempt);
        tracing::info!(job = %agent.job_id, attempt = agent.attempt, k8s_job = %name, "adopted a running agent Job");
        Ok(())
    }

    async fn cleanup(&self, job_id: &str, attempt: u32) -> Result<(), RuntimeError> {
        let name = self.job_of(job_id, attempt);
        self.inner.bindings.lock().remove(&(job_id.to_string(), attempt));
        self.logs_copied(&name, Duration::from_secs(5)).await;
        self.delete_objects(&name).await?;
        self.inner.claimed.lock().remove(&(job_id.to_string(), attempt));
        Ok(())
    }

    fn logs(&self) -> &AgentLogs {
        &self.inner.cfg.logs
    }

    /// The newest pod's log (with the kubelet's timestamps, as the log files have them).
    async fn backend_logs(&self, job_id: &str, attempt: u32) -> Result<Option<Vec<u8>>, RuntimeError> {
        let name = self.job_of(job_id, attempt);
        let pods = self.pods_of(&name).await.map_err(|e| unavailable(&format!("list pods of Job {name}"), e))?;
        let Some(pod) = pods.iter().max_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp))
        else {
            return Ok(None);
        };
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let params = LogParams {
            container: Some(spec::CONTAINER.into()),
            timestamps: true,
            limit_bytes: Some(self.inner.cfg.max_log_bytes as i64),
            ..Default::default()
        };
        match self.inner.pods.logs(&pod_name, &params).await {
            Ok(text) => Ok(Some(text.into_bytes())),
            // Not started yet, or gone: nothing to show.
            Err(e) if matches!(code(&e), Some(400 | 404)) => Ok(None),
            Err(e) => Err(unavailable(&format!("read the log of pod {pod_name}"), e)),
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<RuntimeEvent> {
        self.inner.events.subscribe()
    }

    async fn shutdown(&self) {
        self.inner.watchers.shutdown().await
    }

    fn pools(&self) -> bool {
        true
    }

    async fn warm(&self, spec: &WarmSpec) -> Result<WarmAgent, RuntimeError> {
        self.start_warm(spec).await
    }

    fn warm_alive(&self, warm: &WarmAgent) -> bool {
        self.warm_is_alive(warm)
    }

    async fn claim(&self, req: SpawnRequest, warm: WarmAgent) -> Result<Value, RuntimeError> {
        self.claim_warm(req, warm).await
    }

    async fn release(&self, job_id: &str, attempt: u32, _handle: &Value) -> Result<(), RuntimeError> {
        self.bind(job_id, attempt).await
    }

    async fn discard(&self, warm: &WarmAgent) -> Result<(), RuntimeError> {
        self.discard_warm(warm).await
    }

    async fn clear_pools(&self) -> Result<usize, RuntimeError> {
        self.clear_warm().await
    }
}
