//! Starting George: the store, the runtime, the sources, the engine and the
//! API, wired from the configuration. Used by `george serve`, `george up`
//! and `george bench`.

use crate::config::{BackendType, Config, LeaseBackend, StoreChoice};
use anyhow::{bail, Context as _};
use george_api::{ApiState, OperatorTokens};
use george_core::Role;
use george_engine::{Engine, EngineConfig};
use george_runtime::{
    launch, DockerRuntime, DockerRuntimeConfig, KubernetesRuntime, KubernetesRuntimeConfig, ProcessRuntime,
    ProcessRuntimeConfig, Runtime,
};
use george_sources::{FolderSource, GitSource, GitSourceConfig, Source, WorkDirSource, WorkFileSource};
use george_store::{SqliteStore, Store};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Default API address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = ".george";
/// The file, in the data directory, holding the generated local operator token.
pub const TOKEN_FILE: &str = "operator-token";

/// A running George.
pub struct Server {
    /// The API's address.
    pub api_url: String,
    /// An operator token.
    pub token: String,
    /// Where the token is kept, if George generated it.
    pub token_file: Option<PathBuf>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The engine.
    pub engine: george_engine::EngineHandle,
    runtime: Arc<dyn Runtime>,
    shutdown: CancellationToken,
    engine_task: tokio::task::JoinHandle<anyhow::Result<()>>,
    api_task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _lock: nix::fcntl::Flock<std::fs::File>,
    /// Says why, if the engine stopped while the API serves: this replica
    /// lost the lease (PostgreSQL), or the engine failed.
    lost: Option<tokio::sync::oneshot::Receiver<String>>,
}

impl Server {
    /// Starts everything: wires what the configuration asks for.
    pub async fn start(cfg: Config) -> anyhow::Result<Server> {
        // Everything the file says is checked before anything is opened.
        let mut ecfg = EngineConfig::try_from(&cfg)?;
        let timings = cfg.engine.leader_election.timings()?;
        let store_choice = cfg.store.resolve()?;
        let (data_dir, lock) = prepare_data_dir(&cfg)?;
        let listen: SocketAddr = cfg.engine.listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
        let (tokens, token_file) = operator_tokens(&cfg, listen, &data_dir)?;
        // What `george up` itself uses: the most capable token.
        let token = tokens.iter().max_by_key(|t| t.1).map(|t| t.2.clone()).expect("at least one token");
        let (listener, api_url) = bind(&cfg, listen).await?;
        let bound = listener.local_addr()?;
        let (store, postgres) = open_store(store_choice, &data_dir).await?;
        let engine_id = ecfg.engine_id.clone();
        let runtime = build_runtime(&cfg, &data_dir, &engine_id, &api_url).await?;
        let mut sources = build_sources(&cfg, &data_dir);
        let jira = crate::jira_setup::settings(&cfg, &engine_id)?.map(|s| Arc::new(george_jira::JiraSource::new(s)));
        if let Some(j) = &jira {
            sources.push(j.clone());
        }
        let github = match crate::github_setup::settings(&cfg, &engine_id)? {
            Some(g) => Some(Arc::new(george_github::GitHubSource::new(g).context("github")?)),
            None => None,
        };
        if let Some(g) = &github {
            sources.push(g.clone());
        }
        ecfg.api_url = api_url.clone();
        ecfg.output_dir = Some(data_dir.join("outputs"));
        let (engine, handle) =
            Engine::new(ecfg, store.clone(), runtime.clone(), Arc::new(george_core::SystemClock), sources);
        let shutdown = CancellationToken::new();
        // What happens to jobs, written back to the tickets and issues they came from.
        let mut writebacks: Vec<Box<dyn george_sources::WriteBack>> = Vec::new();
        if let Some(j) = &jira {
            writebacks.push(Box::new(george_jira::WriteBack::new(
                j.settings().clone(),
                j.client().clone(),
                store.clone(),
            )));
        }
        if let Some(g) = github {
            writebacks.push(Box::new(george_github::GitHubWriteBack::new(g, store.clone())));
        }
        if let Some(web) = handle.triggers().slack().and_then(|s| george_api::SlackWeb::of(handle.http(), s)) {
            let clock = Arc::new(george_core::SystemClock);
            writebacks.push(Box::new(george_api::SlackWriteBack::new(store.clone(), web, clock)));
        }
        let (lost_tx, lost) = tokio::sync::oneshot::channel::<String>();
        let engine_task = match postgres {
            None => {
                let s = shutdown.clone();
                let writebacks = futures_util::future::join_all(writebacks.into_iter().map(|wb| wb.run(s.clone())));
                tokio::spawn(async move {
                    let run = async {
                        let ran = engine.run(s.clone()).await;
                        if !s.is_cancelled() {
                            // Never an API without its engine: say why, and stop the server.
                            let why = match &ran {
                                Ok(()) => "the engine stopped".to_string(),
                                Err(e) => format!("the engine failed: {e:#}"),
                            };
                            tracing::error!(%why, "stopping");
                            let _ = lost_tx.send(why);
                        }
                        ran
                    };
                    let (ran, _) = tokio::join!(run, writebacks);
                    ran?;
                    Ok(())
                })
            }
            Some(pg) => {
                let holder = format!("{}-{}", engine_id, random_suffix());
                let lock = lease_lock(&cfg.engine.leader_election, &pg, &holder, timings.lease).await?;
                let election = george_leader::Election::new(lock, pg, holder, timings);
                // Until it leads, this replica stores writes for the leader to act on.
                handle.set_standby();
                tokio::spawn(lead(election, engine, writebacks, shutdown.clone(), lost_tx))
            }
        };
        let state = ApiState {
            store: store.clone(),
            engine: handle.clone(),
            catalog: Arc::new(george_engine::FollowedCatalog::new(store.as_ref())),
            operators: Arc::new(OperatorTokens::new(tokens)),
            logs: runtime.logs().clone(),
            runtime: runtime.clone(),
        };
        // `/metrics` for Prometheus, without a token, on an address of its own when one is set.
        let metrics_listener = match cfg.engine.metrics_listen {
            Some(addr) => {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (engine.metricsListen)"))?;
                tracing::info!(listen = %l.local_addr()?, "metrics served without a token (engine.metricsListen)");
                Some(l)
            }
            None => None,
        };
        let api_task = {
            let s = shutdown.clone();
            tokio::spawn(async move {
                let metrics = async {
                    match metrics_listener {
                        Some(l) => {
                            let s = s.clone();
                            george_api::serve_metrics(l, state.clone(), async move { s.cancelled().await }).await
                        }
                        None => Ok(()),
                    }
                };
                let api = george_api::serve(listener, state.clone(), {
                    let s = s.clone();
                    async move { s.cancelled().await }
                });
                tokio::try_join!(api, metrics)?;
                Ok(())
            })
        };
        tracing::info!(api = %api_url, listen = %bound, data_dir = %data_dir.display(), "george is up");
        Ok(Server {
            api_url,
            token,
            token_file,
            store,
            data_dir,
            engine: handle,
            runtime,
            shutdown,
            engine_task,
            api_task,
            _lock: lock,
            lost: Some(lost),
        })
    }

    /// Stops the engine and the API. Agents keep running; the next start adopts them.
    pub async fn stop(self) -> anyhow::Result<()> {
        let runtime = self.runtime.clone();
        self.stop_engine().await?;
        runtime.shutdown().await;
        Ok(())
    }

    async fn stop_engine(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let (e, a) = tokio::join!(self.engine_task, self.api_task);
        e??;
        a??;
        Ok(())
    }

    /// Stops the engine and the API, then every agent still running: each
    /// gets `grace` to stop (SIGTERM, then SIGKILL), and its attempt ends as
    /// interrupted (not a failure: the next start runs the job again from the
    /// steps it had completed). Returns the agents stopped.
    pub async fn stop_with_agents(self, grace: Duration) -> anyhow::Result<Vec<String>> {
        let (store, runtime) = (self.store.clone(), self.runtime.clone());
        self.stop_engine().await?;
        let live = store.live_attempts().await?;
        let stops = live.iter().map(|a| {
            let (store, runtime) = (store.clone(), runtime.clone());
            async move {
                if let Some(handle) = &a.handle {
                    if let Err(e) = runtime.terminate(&a.job_id, a.attempt, handle, grace).await {
                        tracing::warn!(job = %a.job_id, attempt = a.attempt, error = %e, "cannot stop agent");
                        return Ok::<_, anyhow::Error>(None);
                    }
                }
                let outcome = format!("{}: george was stopped", george_engine::decide::INTERRUPTED);
                let end = george_store::AttemptEnd { exit_code: None, outcome };
                store.end_attempt(&a.job_id, a.attempt, end).await?;
                let _ = runtime.cleanup(&a.job_id, a.attempt).await;
                Ok(Some(a.id()))
            }
        });
        let stopped = futures_util::future::join_all(stops).await;
        runtime.shutdown().await;
        stopped.into_iter().filter_map(|r| r.transpose()).collect::<anyhow::Result<Vec<_>>>()
    }

    /// Stops after the engine stopped on its own, leaving after 10 s even
    /// if parts of it hang (on a database that cannot be reached).
    pub async fn stop_or_leave(self) {
        if tokio::time::timeout(std::time::Duration::from_secs(10), self.stop()).await.is_err() {
            tracing::warn!("the engine did not stop within 10s; leaving anyway");
        }
    }

    /// Why the engine stopped on its own, when it does (the receiver, to
    /// wait on beside other work; see [`stopped_on_its_own`]).
    pub fn take_lost(&mut self) -> Option<tokio::sync::oneshot::Receiver<String>> {
        self.lost.take()
    }

    /// Runs until SIGINT or SIGTERM, then stops. Also stops (with an error)
    /// when the engine fails, or on PostgreSQL when this replica lost the
    /// lease it led with.
    pub async fn run_until_signal(mut self) -> anyhow::Result<()> {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut lost = self.lost.take();
        let lost = tokio::select! {
            _ = tokio::signal::ctrl_c() => None,
            _ = term.recv() => None,
            why = stopped_on_its_own(&mut lost) => Some(why),
        };
        tracing::info!("shutting down (agents keep running and are adopted on the next start)");
        match lost {
            Some(_) => self.stop_or_leave().await,
            None => self.stop().await?,
        }
        match lost {
            Some(why) => anyhow::bail!("{why}"),
            None => Ok(()),
        }
    }
}

/// Why the engine stopped on its own, once it has (never, if it does not:
/// a dropped sender means it stopped because it was asked to).
pub async fn stopped_on_its_own(lost: &mut Option<tokio::sync::oneshot::Receiver<String>>) -> String {
    match lost {
        Some(rx) => match rx.await {
            Ok(why) => why,
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// On PostgreSQL: waits for the lease, runs the engine (and the
/// write-backs) while this replica leads, and stops them when it no longer
/// does, saying why on `lost`.
async fn lead(
    election: george_leader::Election,
    engine: Engine,
    writebacks: Vec<Box<dyn george_sources::WriteBack>>,
    shutdown: CancellationToken,
    lost: tokio::sync::oneshot::Sender<String>,
) -> anyhow::Result<()> {
    tracing::info!(holder = election.holder(), "standby: serving the API; waiting for the lease to lead");
    let Some(epoch) = election.acquire(&shutdown).await else { return Ok(()) };
    let term = shutdown.child_token();
    let writebacks =
        tokio::spawn(futures_util::future::join_all(writebacks.into_iter().map(|wb| wb.run(term.clone()))));
    let mut engine_task = tokio::spawn(engine.run(term.clone()));
    let (why, ended) = tokio::select! {
        why = election.hold(epoch, &shutdown) => (why, None),
        // The engine stopped while this replica leads: never hold the lease without
        // running the engine. Hand it over and leave, to restart with fresh state.
        ended = &mut engine_task => {
            election.resign().await;
            let why = match &ended {
                Ok(Ok(())) if shutdown.is_cancelled() => None,
                Ok(Ok(())) => Some("the engine stopped while leading".to_string()),
                Ok(Err(e)) => Some(format!("the engine failed while leading: {e}")),
                Err(e) => Some(format!("the engine task failed while leading: {e}")),
            };
            (why, Some(ended))
        }
    };
    term.cancel();
    if let Some(why) = why {
        // Say so at once: the engine may hang on a database it cannot reach.
        tracing::error!(holder = election.holder(), epoch, %why, "no longer leading; stopping the engine");
        let _ = lost
            .send(format!("{why}; stopped so that two leaders never act at once (restart me: I rejoin as a standby)"));
    }
    let result = match ended {
        Some(ended) => ended,
        None => engine_task.await,
    };
    let _ = writebacks.await;
    result??;
    Ok(())
}

/// The lease the replicas compete for (`engine.leaderElection.backend`).
async fn lease_lock(
    section: &crate::config::LeaderElectionSection,
    store: &george_store::PostgresStore,
    holder: &str,
    duration: Duration,
) -> anyhow::Result<Arc<dyn george_leader::LeaseLock>> {
    use george_leader::{kubernetes::KubernetesLease, postgres::PostgresLease, LEASE};
    match section.backend {
        LeaseBackend::Postgres => Ok(Arc::new(PostgresLease::new(store.clone(), holder.to_string(), duration))),
        LeaseBackend::Kubernetes => {
            let k = &section.kubernetes;
            let client = george_runtime::kubernetes::client(k.kubeconfig.as_deref())
                .await
                .context("engine.leaderElection.kubernetes")?;
            let ns = k.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
            let api = kube::Api::namespaced(client, &ns);
            let name = k.name.as_deref().unwrap_or(LEASE);
            let clock = george_leader::kubernetes::system_clock();
            Ok(Arc::new(KubernetesLease::new(api, name, holder.to_string(), duration, store.clone(), clock)))
        }
    }
}

/// Eight random hex digits.
fn random_suffix() -> String {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("the operating system's random source is unavailable");
    hex::encode(b)
}

/// Creates the data directory, private to the engine (agents running under
/// their own uids may pass through it to their own directories, not list
/// or read it), and locks it: one engine per data directory.
fn prepare_data_dir(cfg: &Config) -> anyhow::Result<(PathBuf, nix::fcntl::Flock<std::fs::File>)> {
    let data_dir = cfg.engine.data_dir.clone().unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let traversable = george_runtime::sandbox::engine_is_root() && cfg.agents.sandbox.enabled != Some(false);
    std::fs::set_permissions(
        &data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(if traversable { 0o711 } else { 0o700 }),
    )
    .with_context(|| format!("cannot set the mode of data directory {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize().with_context(|| format!("data directory {}", data_dir.display()))?;
    let lock = lock_data_dir(&data_dir)?;
    Ok((data_dir, lock))
}

/// The operator tokens (name, role, token); without any, a local token in
/// the data directory, and only on a loopback address.
#[allow(clippy::type_complexity)]
fn operator_tokens(
    cfg: &Config,
    listen: SocketAddr,
    data_dir: &Path,
) -> anyhow::Result<(Vec<(String, Role, String)>, Option<PathBuf>)> {
    let mut tokens = Vec::new();
    for t in &cfg.api.tokens {
        tokens.push((t.name.clone(), t.role.unwrap_or(Role::Admin), t.resolve()?));
    }
    if !tokens.is_empty() {
        return Ok((tokens, None));
    }
    if !listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {listen} without an operator token: anyone who can reach it could run commands. \
             Set api.tokens in the config file or GEORGE_API_TOKENS=name:token, or listen on 127.0.0.1"
        );
    }
    let (token, path) = local_token(data_dir)?;
    tokens.push(("local".into(), Role::Admin, token));
    Ok((tokens, Some(path)))
}

/// Listens on `listen`; returns the listener and the URL agents reach the API at.
async fn bind(cfg: &Config, listen: SocketAddr) -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (is another george running? pass --listen)"))?;
    let bound = listener.local_addr()?;
    let api_url = match &cfg.engine.advertise_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None if bound.ip().is_unspecified() => format!("http://127.0.0.1:{}", bound.port()),
        None => format!("http://{bound}"),
    };
    Ok((listener, api_url))
}

/// Opens the store; the PostgreSQL one is also returned as such (replicas
/// elect a leader on it).
pub(crate) async fn open_store(
    choice: StoreChoice,
    data_dir: &Path,
) -> anyhow::Result<(Arc<dyn Store>, Option<george_store::PostgresStore>)> {
    match choice {
        StoreChoice::Sqlite => {
            let db = data_dir.join("george.db");
            let store =
                SqliteStore::open(&db).with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
            // The database and its journal files: the engine's alone.
            for suffix in ["", "-wal", "-shm"] {
                let f = PathBuf::from(format!("{}{suffix}", db.display()));
                if f.exists() {
                    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                        .with_context(|| format!("cannot set the mode of {}", f.display()))?;
                }
            }
            Ok((Arc::new(store), None))
        }
        StoreChoice::Postgres(url, tls) => {
            // Errors name the server, never the password.
            let store = tokio::task::spawn_blocking(move || george_store::PostgresStore::connect_tls(&url, &tls))
                .await?
                .context("cannot open the PostgreSQL store (store.url)")?;
            Ok((Arc::new(store.clone()), Some(store)))
        }
    }
}

fn lock_data_dir(dir: &Path) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let path = dir.join("george.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!(
            "another george engine is using the data directory {}; stop it first or pass a different --data-dir",
            dir.display()
        )
    })
}

/// Loads (or creates, readable only by this user) the local operator token.
fn local_token(dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    let path = dir.join(TOKEN_FILE);
    if let Ok(t) = std::fs::read_to_string(&path) {
        if t.trim().len() >= 16 {
            return Ok((t.trim().to_string(), path));
        }
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
    let token = format!("gop_{}", hex::encode(bytes));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut f, format!("{token}\n").as_bytes())?;
    Ok((token, path))
}

async fn build_runtime(
    cfg: &Config,
    data_dir: &Path,
    engine_id: &str,
    api_url: &str,
) -> anyhow::Result<Arc<dyn Runtime>> {
    match cfg.container_backend.backend_type {
        BackendType::Process => {
            let exe = std::env::current_exe().context("cannot find the george executable to start agents with")?;
            let exe = exe.display().to_string();
            let agent = vec![exe.clone(), "agent".into(), "run".into()];
            let mut rc = ProcessRuntimeConfig::under(data_dir, agent, vec![exe, launch::SUBCOMMAND.into()]);
            rc.keep_workdirs = cfg.container_backend.process.keep_workdirs.unwrap_or(false);
            let sb = &cfg.agents.sandbox;
            rc.sandbox.enabled = sb.enabled.unwrap_or(true);
            // The secret store is the engine's: an agent gets its entitled
            // secrets as files of its own, never the store (wherever it is).
            if let Some(dir) = &cfg.secrets.dir {
                let dir =
                    std::fs::canonicalize(dir).unwrap_or_else(|_| std::path::absolute(dir).unwrap_or(dir.clone()));
                if !rc.sandbox.hidden.iter().any(|h| dir.starts_with(h)) {
                    rc.sandbox.hidden.push(dir);
                }
            }
            if let Some(b) = sb.uid_base {
                if b < 1000 {
                    bail!("agents.sandbox.uidBase: expected 1000 or more (lower uids belong to the system), got {b}");
                }
                rc.sandbox.uid_base = b;
            }
            if let Some(n) = sb.uid_count {
                if n == 0 {
                    bail!("agents.sandbox.uidCount: expected at least 1");
                }
                rc.sandbox.uid_count = n;
            }
            if rc.sandbox.uid_base.checked_add(rc.sandbox.uid_count).is_none_or(|end| end == u32::MAX) {
                bail!("agents.sandbox: uidBase + uidCount must stay below 4294967295");
            }
            let rt = ProcessRuntime::new(rc);
            let iso = rt.isolation();
            for w in &iso.warnings {
                tracing::warn!(warning = %w, "agent isolation");
            }
            if iso.per_attempt_uid {
                george_runtime::sandbox::check_reachable(data_dir)
                    .context("the data directory (agents.sandbox runs each attempt under its own uid)")?;
            }
            tracing::info!(
                landlock_abi = iso.landlock_abi,
                per_attempt_uid = iso.per_attempt_uid,
                enabled = iso.enabled,
                "agent sandbox"
            );
            Ok(Arc::new(rt))
        }
        BackendType::Docker => {
            let d = &cfg.container_backend.docker;
            let mut rc = DockerRuntimeConfig::under(data_dir, engine_id);
            if let Some(n) = &d.network {
                rc.network = n.clone();
            }
            rc.default_image = d.image.clone();
            if let Some(p) = &d.pull_policy {
                rc.pull_policy = p.parse().map_err(|e| anyhow::anyhow!("image pull policy: {e}"))?;
            }
            rc.keep_containers = d.keep_containers.unwrap_or(false);
            rc.api_url = Some(api_url.to_string());
            Ok(Arc::new(DockerRuntime::connect(rc).await?))
        }
        BackendType::Kubernetes => {
            let k = &cfg.container_backend.kubernetes;
            let client = george_runtime::kubernetes::client(k.kubeconfig.as_deref())
                .await
                .context("containerBackend.kubernetes")?;
            let mut rc = KubernetesRuntimeConfig::under(data_dir, engine_id);
            rc.job.namespace = k.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
            rc.job.default_image = k.image.clone();
            if let Some(p) = &k.image_pull_policy {
                rc.job.pull_policy =
                    p.parse().map_err(|e| anyhow::anyhow!("containerBackend.kubernetes.imagePullPolicy: {e}"))?;
            }
            rc.job.service_account = k.service_account.clone();
            if let Some(t) = k.ttl_after_finished {
                rc.job.ttl_after_finished = t.get();
            }
            if let Some(i) = &k.instance {
                // Installations sharing a namespace differ in labels and in Job names.
                rc.job.instance = i.clone();
                rc.job.name_prefix = i.clone();
            }
            if let Some(g) = cfg.engine.termination_grace {
                rc.job.termination_grace = g.get();
            }
            Ok(Arc::new(KubernetesRuntime::connect(client, rc).await?))
        }
    }
}

fn build_sources(cfg: &Config, data_dir: &Path) -> Vec<Arc<dyn Source>> {
    let mut sources: Vec<Arc<dyn Source>> = Vec::new();
    if let Some(f) = &cfg.sources.folder {
        let interval = f.interval.map(|d| d.get()).unwrap_or(Duration::from_secs(10));
        sources.push(Arc::new(FolderSource::new(&f.path, interval)));
    }
    if let Some(g) = &cfg.sources.git {
        sources.push(Arc::new(GitSource::new(GitSourceConfig {
            url: g.url.clone(),
            branch: g.branch.clone().unwrap_or_else(|| "main".into()),
            path: g.path.clone().unwrap_or_default(),
            interval: g.interval.map(|d| d.get()).unwrap_or(Duration::from_secs(60)),
            checkout_dir: data_dir.join("sources").join("git"),
        })));
    }
    if let Some(w) = &cfg.sources.work_file {
        let interval = w.interval.map(|d| d.get()).unwrap_or(Duration::from_secs(30));
        sources.push(Arc::new(WorkFileSource::new(&w.path, &w.template, interval)));
    }
    if let Some(w) = &cfg.sources.work_dir {
        let interval = w.interval.map(|d| d.get()).unwrap_or(Duration::from_secs(30));
        sources.push(Arc::new(WorkDirSource::new(&w.path, &w.template, interval)));
    }
    sources
}
