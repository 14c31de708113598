//! The engine: the reconcile loop that makes actual state match desired
//! state. It is level-triggered — woken by store changes, runtime events and
//! timers, with a periodic resync as a safety net — and every pass is
//! idempotent, so an engine killed at any point converges to the same end
//! state on restart.

mod admission;
mod adoption;
mod agent_context;
pub mod alerts;
pub mod availability;
mod catalog;
pub mod children;
mod context;
pub mod decide;
pub mod failpoint;
pub mod family_budget;
mod handle;
pub mod llm;
pub mod meter;
pub mod metrics;
mod outcomes;
pub mod pool;
pub mod readiness;
mod reconciler;
pub mod registry;
pub mod report;
pub mod retention;
pub mod scheduler;
pub mod secrets;
pub mod suspension;
pub mod tokens;
pub mod trace;
pub mod triggers;
mod workqueue;

use adoption::adopt_orphans;
pub use adoption::{Adopted, AdoptionError};
pub use catalog::FollowedCatalog;
use context::Context;
pub use context::{Backpressure, EngineConfig, SlackSettings, SlackUser, WebhookSecret};
pub use decide::RetryPolicy;
pub use handle::{Control, EngineHandle, Triggers};
pub use metrics::Metrics;
pub use workqueue::WorkQueue;

use george_core::Clock;
use george_runtime::Runtime;
use george_sources::{Source, SourceRunner, SyncRequest};
use george_store::Store;
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Errors that stop the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Adopting agents at start-up failed.
    #[error("adopting running agents failed: {0}")]
    Adoption(#[from] AdoptionError),
    /// The store failed at start-up.
    #[error(transparent)]
    Store(#[from] george_store::StoreError),
    /// The engine has stopped.
    #[error("the engine is not running")]
    Stopped,
    /// A fault point armed for testing was reached (see `failpoint`).
    #[error("fault point {0} reached (GEORGE_FAILPOINTS, testing only)")]
    Injected(&'static str),
}

/// The engine, ready to run.
#[derive(Debug)]
pub struct Engine {
    ctx: Arc<Context>,
    sources: Mutex<Option<(SourceRunner, mpsc::Receiver<SyncRequest>)>>,
}

impl Engine {
    /// Builds an engine and the handle to it.
    pub fn new(
        cfg: EngineConfig,
        store: Arc<dyn Store>,
        runtime: Arc<dyn Runtime>,
        clock: Arc<dyn Clock>,
        sources: Vec<Arc<dyn Source>>,
    ) -> (Engine, EngineHandle) {
        let ctx = Arc::new(Context {
            cfg,
            store: store.clone(),
            runtime,
            clock: clock.clone(),
            queue: WorkQueue::new(),
            catalog: Default::default(),
            metrics: Arc::new(Metrics::default()),
            stopping: Mutex::new(Default::default()),
            tasks: TaskTracker::new(),
            admission: Default::default(),
            limits_dirty: Default::default(),
            trigger_lock: Default::default(),
            governor: Default::default(),
            governor_loaded: tokio::sync::watch::Sender::new(false),
            availability: crate::availability::Availability::new(clock.now()),
            readiness: Default::default(),
            pools: Default::default(),
            family: Default::default(),
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("an HTTP client can be built"),
        });
        let (tx, rx) = mpsc::channel(16);
        let runner = SourceRunner::new(sources, store);
        let handle = EngineHandle::new(ctx.clone(), tx);
        (Engine { ctx, sources: Mutex::new(Some((runner, rx))) }, handle)
    }

    /// Runs until `shutdown`. Agents keep running when the engine stops; the
    /// next engine adopts them.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), EngineError> {
        let ctx = self.ctx.clone();
        // Subscribe before anything can change, so no event is missed.
        let store_events = ctx.store.subscribe();
        let outcome_events = ctx.store.subscribe();
        let runtime_events = ctx.runtime.subscribe();
        ctx.readiness.set(readiness::Phase::Starting("adopting the agents of a previous run"));
        if failpoint::fails("engine.start") {
            return Err(EngineError::Injected("engine.start"));
        }
        adopt_orphans(&ctx).await?;
        reconciler::admit::restore(&ctx).await?;
        reconciler::admit::reload_limits(&ctx).await?;
        llm::configure(&ctx).await?;
        llm::load_usage(&ctx, ctx.clock.now()).await?;
        ctx.governor_loaded.send_replace(true);
        for id in ctx.store.active_job_ids().await? {
            ctx.queue.add(&id);
        }
        // No silence counts until the engine is ready (its API holds writes,
        // heartbeats too, until then); from then on it hears every heartbeat.
        ctx.availability.deaf(ctx.clock.now());
        let tasks = TaskTracker::new();
        tasks.spawn(pulse(ctx.clone(), shutdown.clone()));
        let (applied_tx, applied_rx) = oneshot::channel();
        if let Some((runner, rx)) = self.sources.lock().take() {
            ctx.readiness.set(readiness::Phase::Starting("applying every source once"));
            tasks.spawn(runner.run(rx, shutdown.clone(), applied_tx));
        } else {
            let _ = applied_tx.send(());
        }
        let (ready, stop) = (ctx.clone(), shutdown.clone());
        tasks.spawn(async move {
            tokio::select! {
                applied = applied_rx => if applied.is_ok() {
                    ready.availability.listening(ready.clock.now());
                    ready.readiness.set(readiness::Phase::Ready);
                    tracing::info!("engine ready: agents adopted, every source applied once");
                },
                _ = stop.cancelled() => {}
            }
        });
        tasks.spawn(follow(ctx.clone(), store_events, shutdown.clone(), "store", on_store_event));
        tasks
            .spawn(follow(ctx.clone(), runtime_events, shutdown.clone(), "runtime", |ctx, e| ctx.queue.add(&e.job_id)));
        tasks.spawn(outcomes::run(ctx.clone(), outcome_events, shutdown.clone()));
        tasks.spawn(resync(ctx.clone(), shutdown.clone()));
        tasks.spawn(cron(ctx.clone(), shutdown.clone()));
        tasks.spawn(retention::run(ctx.clone(), shutdown.clone()));
        tasks.spawn(pool::run(ctx.clone(), shutdown.clone()));
        for _ in 0..ctx.cfg.workers.max(1) {
            tasks.spawn(worker(ctx.clone()));
        }
        tasks.close();
        tracing::info!(engine = %ctx.cfg.engine_id, runtime = ctx.runtime.kind(), workers = ctx.cfg.workers, "engine running");
        shutdown.cancelled().await;
        ctx.readiness.stopping();
        ctx.queue.close();
        tasks.wait().await;
        ctx.tasks.close();
        ctx.tasks.wait().await;
        tracing::info!("engine stopped");
        Ok(())
    }
}

async fn worker(ctx: Arc<Context>) {
    while let Some(id) = ctx.queue.next().await {
        if ctx.limits_dirty.swap(false, std::sync::atomic::Ordering::Relaxed) {
            if let Err(e) = reconciler::admit::reload_limits(&ctx).await {
                tracing::warn!(error = %e, "cannot reload scheduling limits");
            }
            if let Err(e) = llm::configure(&ctx).await {
                tracing::warn!(error = %e, "cannot reload token budgets");
            }
        }
        match reconciler::reconcile(&ctx, &id).await {
            Ok(Some(after)) => ctx.queue.add_after(&id, after),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "reconcile failed; retrying");
                ctx.queue.add_after(&id, std::time::Duration::from_secs(1));
            }
        }
        ctx.queue.done(&id);
    }
}

/// Handles every message of `events` until `shutdown`; if the receiver falls
/// behind (messages were dropped), every active job is queued instead.
async fn follow<T: Clone>(
    ctx: Arc<Context>,
    mut events: broadcast::Receiver<T>,
    shutdown: CancellationToken,
    what: &'static str,
    on_event: impl Fn(&Context, T),
) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => e,
        };
        match event {
            Ok(e) => on_event(&ctx, e),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, source = what, "fell behind; resyncing every active job");
                ctx.catalog.invalidate();
                enqueue_active(&ctx).await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn on_store_event(ctx: &Context, e: george_core::record::Event) {
    if e.kind.changes_catalog() {
        ctx.catalog.invalidate();
        ctx.pools.nudge();
        // Limits and shares may have changed with the manifests.
        ctx.limits_dirty.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // An agent's progress reports cannot change what the reconciler decides;
    // everything else about a job can.
    if let (Some(job), false) = (&e.job_id, e.kind.is_progress()) {
        ctx.queue.add(job);
    }
}

async fn resync(ctx: Arc<Context>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.cfg.reconcile_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                ctx.catalog.invalidate();
                if let Err(e) = reconciler::admit::reload_limits(&ctx).await {
                    tracing::warn!(error = %e, "cannot reload scheduling limits");
                }
                if let Err(e) = llm::configure(&ctx).await {
                    tracing::warn!(error = %e, "cannot reload token budgets");
                }
                enqueue_active(&ctx).await;
                if let Err(e) = adoption::sweep(&ctx).await {
                    tracing::warn!(error = %e, "cannot look for agents of superseded attempts");
                }
            }
        }
    }
}

/// Notes that the engine runs, so a stall of its own process is told from an
/// agent's silence (see [`availability`]).
async fn pulse(ctx: Arc<Context>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(availability::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                ctx.availability.pulse(ctx.clock.now());
            }
        }
    }
}

async fn cron(ctx: Arc<Context>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ctx.cfg.trigger_tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = triggers::cron_tick(&ctx).await {
                    tracing::warn!(error = %e, "cron triggers not checked");
                }
            }
        }
    }
}

async fn enqueue_active(ctx: &Context) {
    match ctx.store.active_job_ids().await {
        Ok(ids) => ids.iter().for_each(|id| ctx.queue.add(id)),
        Err(e) => tracing::warn!(error = %e, "resync failed"),
    }
}
