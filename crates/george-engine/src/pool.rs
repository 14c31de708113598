//! Warm pools (an AgentSpec's `spec.pool`): agents started ahead of work,
//! unassigned — no job, no secrets, no token — so a job claims one instead
//! of waiting for a new agent to start.
//!
//! - One owner: [`Pools`] holds every warm agent this engine process started
//!   and not yet claimed or discarded; the reconciler takes from it, the
//!   refill loop ([`run`]) adds to it and trims it.
//! - Claim: the reconciler takes a warm agent matching the attempt's
//!   [`WarmSpec`] (the oldest one done preparing, [`Runtime::warm_ready`],
//!   else the oldest) and has the runtime claim it ([`Runtime::claim`]): the same
//!   ownership rules as a new agent — the handle is stored before the
//!   binding (job, token, secrets) is delivered, so an agent its engine
//!   cannot find never acts (where the runtime knows the claim's handle
//!   beforehand, the attempt's own transaction records it). A warm agent
//!   serves one attempt, then goes.
//! - Size: `min` warm agents; a job that found the pool empty (a cold start)
//!   grows it by one, up to `max`; after `idleTimeout` without a claim it
//!   shrinks back to `min`. A dismissed AgentSpec, or one whose manifest or
//!   pool is gone, has none. An AgentSpec whose agent changed (image,
//!   command, limits, network) has its old warm agents replaced.
//! - Limits: warm agents take no scheduler slot (they run no job); they
//!   count toward the engine-wide `agents.pool.maxWarm`, and refill is paced
//!   by `agents.pool.refillPerSecond`, a few starts at a time.
//! - Restart: warm agents of a previous engine process end on their own when
//!   its pipes close; [`Runtime::clear_pools`] removes whatever is left at
//!   start-up. Claimed ones are attempts' agents, adopted or cleaned as any.

use crate::context::Context;
use crate::metrics::SpecLabel;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use george_core::manifest::AgentSpec;
use george_runtime::{Resources, WarmAgent, WarmSpec};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Engine-wide pool settings (`agents.pool`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolSettings {
    /// Warm agents in all pools together, at most.
    pub max_warm: u32,
    /// Warm agents started per second, at most.
    pub refill_per_second: u32,
    /// Warm agents started at once, at most.
    pub refill_parallelism: usize,
    /// How often pools are looked at when nothing wakes the loop.
    pub tick: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self { max_warm: 64, refill_per_second: 100, refill_parallelism: 4, tick: Duration::from_millis(250) }
    }
}

/// What a pool looks like now (API, `george status`, dashboard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct PoolStatus {
    /// The AgentSpec.
    pub agent_spec: String,
    /// Its `spec.pool.min`.
    pub min: u32,
    /// Its upper size.
    pub max: u32,
    /// The size aimed at now.
    pub target: u32,
    /// Warm agents waiting.
    pub warm: u32,
    /// Warm agents being started.
    pub starting: u32,
    /// Attempts that started on a warm agent.
    pub claimed: u64,
    /// Attempts that found the pool empty and started cold.
    pub cold: u64,
    /// The last claim's latency, in microseconds (claim to binding delivered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_claim_us: Option<u64>,
}

impl PoolStatus {
    /// A configured pool with nothing in it yet.
    pub fn empty(agent_spec: &str, spec: &george_core::manifest::PoolSpec) -> Self {
        Self {
            agent_spec: agent_spec.to_string(),
            min: spec.min,
            max: spec.upper(),
            target: 0,
            warm: 0,
            starting: 0,
            claimed: 0,
            cold: 0,
            last_claim_us: None,
        }
    }
}

#[derive(Debug, Default)]
struct Pool {
    spec: Option<WarmSpec>,
    min: u32,
    max: u32,
    idle: Duration,
    target: u32,
    /// Above `min` after cold starts, up to `max`.
    extra: u32,
    warm: VecDeque<WarmAgent>,
    starting: u32,
    /// Warm agents to destroy (stale, dead, over the target).
    doomed: Vec<WarmAgent>,
    last_demand: Option<DateTime<Utc>>,
    claimed: u64,
    cold: u64,
    last_claim_us: Option<u64>,
    /// Still configured (else it drains and goes).
    wanted: bool,
    /// A warm start failed: no other is tried before this (the runtime
    /// cannot serve the AgentSpec warm, or its backend is down).
    paused_until: Option<tokio::time::Instant>,
}

/// How long a pool waits after a warm start failed.
const FAILURE_PAUSE: Duration = Duration::from_secs(30);

/// Every pool of this engine process.
#[derive(Debug, Default)]
pub(crate) struct Pools {
    pools: Mutex<HashMap<String, Pool>>,
    wake: tokio::sync::Notify,
}

/// What an AgentSpec's warm agents are started with (the same as the
/// request its attempts make, see the reconciler).
pub(crate) fn warm_spec(ctx: &Context, spec: &AgentSpec) -> WarmSpec {
    WarmSpec {
        agent_spec: spec.metadata.name.clone(),
        command: spec.spec.command.clone(),
        image: spec.spec.image.clone(),
        resources: resources(ctx, spec),
        network: spec.spec.network,
        outputs: ctx.cfg.output_dir.clone(),
    }
}

/// An AgentSpec's limits, the engine's defaults filling in.
pub(crate) fn resources(ctx: &Context, spec: &AgentSpec) -> Resources {
    Resources {
        memory: spec.spec.resources.memory.or(ctx.cfg.default_resources.memory),
        cpu: spec.spec.resources.cpu.or(ctx.cfg.default_resources.cpu),
    }
}

impl Pools {
    /// A warm agent for the request, if its AgentSpec's pool has one alive and matching.
    /// `None` for an AgentSpec with no pool; a pool found empty counts a
    /// cold start and grows. A warm agent taken is replaced once the claim
    /// is over ([`Claiming`] dropped): the refill's work (its directories,
    /// its process) does not compete with the claim in flight.
    pub(crate) fn take<'a>(&'a self, ctx: &Context, spec: &WarmSpec) -> Option<(WarmAgent, Claiming<'a>)> {
        let mut pools = self.pools.lock();
        let pool = pools.get_mut(&spec.agent_spec).filter(|p| p.wanted)?;
        pool.last_demand = Some(ctx.clock.now());
        let (usable, doomed): (VecDeque<_>, VecDeque<_>) =
            pool.warm.drain(..).partition(|w| w.spec == *spec && ctx.runtime.warm_alive(w));
        pool.warm = usable;
        pool.doomed.extend(doomed);
        // The oldest one prepared (else the oldest: its claim waits for the rest of its start).
        let pick = pool.warm.iter().position(|w| ctx.runtime.warm_ready(w)).or((!pool.warm.is_empty()).then_some(0));
        if let Some(w) = pick.and_then(|i| pool.warm.remove(i)) {
            pool.claimed += 1;
            let label = crate::metrics::ClaimLabel { agent_spec: spec.agent_spec.clone(), start: "warm".into() };
            ctx.metrics.pool_claims.get_or_create(&label).inc();
            return Some((w, Claiming(self)));
        }
        pool.cold += 1;
        pool.extra = (pool.extra + 1).min(pool.max.saturating_sub(pool.min));
        let label = crate::metrics::ClaimLabel { agent_spec: spec.agent_spec.clone(), start: "cold".into() };
        ctx.metrics.pool_claims.get_or_create(&label).inc();
        self.wake.notify_one();
        None
    }

    /// Notes how long a claim took (to its binding delivered).
    pub(crate) fn claimed_in(&self, ctx: &Context, agent_spec: &str, took: Duration) {
        ctx.metrics.pool_claim_latency.observe(took.as_secs_f64());
        if let Some(p) = self.pools.lock().get_mut(agent_spec) {
            p.last_claim_us = Some(took.as_micros() as u64);
        }
    }

    /// Every pool, by AgentSpec name.
    pub(crate) fn status(&self) -> Vec<PoolStatus> {
        let pools = self.pools.lock();
        let mut out: Vec<PoolStatus> = pools
            .iter()
            .filter(|(_, p)| p.wanted)
            .map(|(name, p)| PoolStatus {
                agent_spec: name.clone(),
                min: p.min,
                max: p.max,
                target: p.target,
                warm: p.warm.len() as u32,
                starting: p.starting,
                claimed: p.claimed,
                cold: p.cold,
                last_claim_us: p.last_claim_us,
            })
            .collect();
        out.sort_by(|a, b| a.agent_spec.cmp(&b.agent_spec));
        out
    }

    /// Looks at every pool now (a manifest changed, an AgentSpec was dismissed or summoned).
    pub(crate) fn nudge(&self) {
        self.wake.notify_one();
    }
}

/// A claim of a warm agent in flight: when it is over (dropped, however it
/// ended), the pools refill.
#[must_use]
pub(crate) struct Claiming<'a>(&'a Pools);

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        self.0.wake.notify_one();
    }
}

/// Keeps the pools at their sizes until `shutdown`; then destroys every
/// warm agent this engine process holds.
pub(crate) async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    if !ctx.runtime.pools() {
        tracing::debug!(runtime = ctx.runtime.kind(), "this runtime keeps no warm pools; spec.pool is ignored");
        return;
    }
    match ctx.runtime.clear_pools().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(cleared = n, "removed warm agents of a previous run"),
        Err(e) => tracing::warn!(error = %e, "cannot remove warm agents of a previous run"),
    }
    let settings = ctx.cfg.pool;
    let mut allowance = Allowance::new(settings.refill_per_second);
    loop {
        let started = match refill(&ctx, &mut allowance).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot look at the warm pools");
                0
            }
        };
        if started > 0 {
            // More may be needed: look again at once (paced by the allowance).
            if shutdown.is_cancelled() {
                break;
            }
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ctx.pools.wake.notified() => {}
            _ = tokio::time::sleep(settings.tick) => {}
        }
    }
    let all: Vec<WarmAgent> = {
        let mut pools = ctx.pools.pools.lock();
        pools.values_mut().flat_map(|p| p.warm.drain(..).chain(p.doomed.drain(..))).collect()
    };
    for w in all {
        let _ = ctx.runtime.discard(&w).await;
    }
}

/// Starts allowed at a steady rate: `rate` per second, in bursts of at most one second's worth.
#[derive(Debug)]
struct Allowance {
    rate: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl Allowance {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self { rate, tokens: rate, at: tokio::time::Instant::now() }
    }

    /// Up to `want` starts allowed now; when none is, waits for one.
    async fn take(&mut self, want: u32) -> u32 {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + (now - self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        if self.tokens < 1.0 {
            tokio::time::sleep(Duration::from_secs_f64((1.0 - self.tokens) / self.rate)).await;
            self.tokens = 1.0;
            self.at = tokio::time::Instant::now();
        }
        let n = (want as f64).min(self.tokens.floor()) as u32;
        self.tokens -= f64::from(n);
        n
    }
}

/// One look at every pool: follows the catalog, trims, destroys the doomed
/// and starts what is missing (a batch). Returns how many were started.
async fn refill(ctx: &Arc<Context>, allowance: &mut Allowance) -> Result<u32, george_store::StoreError> {
    let catalog = ctx.catalog.get(ctx.store.as_ref()).await?;
    let mut configured = Vec::new();
    for spec in catalog.agents.values() {
        let Some(pool) = spec.spec.pool else { continue };
        let dismissed = ctx.store.setting(&crate::registry::dismissal_key(&spec.metadata.name)).await?.is_some();
        configured.push((spec.metadata.name.clone(), pool, warm_spec(ctx, spec), dismissed));
    }
    let now = ctx.clock.now();
    let settings = ctx.cfg.pool;
    let (doomed, mut wanted) = {
        let mut pools = ctx.pools.pools.lock();
        for p in pools.values_mut() {
            p.wanted = false;
        }
        for (name, pool, spec, dismissed) in configured {
            let p = pools.entry(name).or_default();
            p.wanted = true;
            (p.min, p.max, p.idle) = (pool.min, pool.upper(), pool.idle());
            if p.spec.as_ref() != Some(&spec) {
                // The agent changed: its warm agents are of the old kind.
                p.doomed.extend(p.warm.drain(..));
                p.spec = Some(spec);
            }
            let idle = p.last_demand.is_none_or(|t| (now - t).to_std().unwrap_or_default() >= p.idle);
            if idle {
                p.extra = 0;
            }
            p.target = if dismissed { 0 } else { (p.min + p.extra).min(p.max) };
        }
        let mut total = 0u32;
        let mut wanted = Vec::new();
        for (name, p) in pools.iter_mut() {
            if !p.wanted {
                p.target = 0;
            }
            let (alive, dead): (VecDeque<_>, VecDeque<_>) = p.warm.drain(..).partition(|w| ctx.runtime.warm_alive(w));
            p.warm = alive;
            p.doomed.extend(dead);
            while p.warm.len() as u32 + p.starting > p.target && !p.warm.is_empty() {
                p.doomed.extend(p.warm.pop_back());
            }
            total += p.warm.len() as u32 + p.starting;
            let missing = p.target.saturating_sub(p.warm.len() as u32 + p.starting);
            let paused = p.paused_until.is_some_and(|t| tokio::time::Instant::now() < t);
            if let Some(spec) = p.spec.clone().filter(|_| missing > 0 && !paused) {
                wanted.push((name.clone(), spec, missing));
            }
            let label = SpecLabel { agent_spec: name.clone() };
            ctx.metrics.pool_warm.get_or_create(&label).set(p.warm.len() as i64);
            ctx.metrics.pool_target.get_or_create(&label).set(i64::from(p.target));
        }
        pools.retain(|_, p| p.wanted || p.starting > 0 || !p.doomed.is_empty());
        let doomed: Vec<WarmAgent> = pools.values_mut().flat_map(|p| p.doomed.drain(..)).collect();
        // The engine-wide cap, shared in turn.
        let mut room = settings.max_warm.saturating_sub(total);
        for w in wanted.iter_mut() {
            w.2 = w.2.min(room);
            room -= w.2;
        }
        wanted.retain(|w| w.2 > 0);
        (doomed, wanted)
    };
    for w in doomed {
        if let Err(e) = ctx.runtime.discard(&w).await {
            tracing::warn!(warm = %w.id, error = %e, "cannot destroy a warm agent");
        }
    }
    let want: u32 = wanted.iter().map(|w| w.2).sum();
    if want == 0 {
        return Ok(0);
    }
    let batch = allowance.take(want.min(settings.refill_parallelism as u32 * 4)).await;
    // This batch's starts, spread over the pools that miss agents.
    let mut starts = Vec::new();
    while (starts.len() as u32) < batch && !wanted.is_empty() {
        for w in wanted.iter_mut() {
            if (starts.len() as u32) < batch && w.2 > 0 {
                starts.push((w.0.clone(), w.1.clone()));
                w.2 -= 1;
            }
        }
        wanted.retain(|w| w.2 > 0);
    }
    {
        let mut pools = ctx.pools.pools.lock();
        for (name, _) in &starts {
            if let Some(p) = pools.get_mut(name) {
                p.starting += 1;
                ctx.metrics.pool_starting.get_or_create(&SpecLabel { agent_spec: name.clone() }).inc();
            }
        }
    }
    // Each one joins its pool as soon as it is started: a claim need not
    // wait for the rest of the batch.
    let mut results = futures_util::stream::iter(starts)
        .map(|(name, spec)| async move { (name, ctx.runtime.warm(&spec).await) })
        .buffer_unordered(settings.refill_parallelism.max(1));
    let mut started = 0;
    while let Some((name, result)) = results.next().await {
        let unwanted = {
            let mut pools = ctx.pools.pools.lock();
            let p = pools.entry(name.clone()).or_default();
            p.starting = p.starting.saturating_sub(1);
            let label = SpecLabel { agent_spec: name.clone() };
            ctx.metrics.pool_starting.get_or_create(&label).dec();
            match result {
                Ok(w) if p.wanted && p.spec.as_ref() == Some(&w.spec) => {
                    p.warm.push_back(w);
                    ctx.metrics.pool_warm.get_or_create(&label).set(p.warm.len() as i64);
                    started += 1;
                    None
                }
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(agent_spec = %name, error = %e, pause = ?FAILURE_PAUSE, "cannot start a warm agent; its jobs start cold meanwhile");
                    p.paused_until = Some(tokio::time::Instant::now() + FAILURE_PAUSE);
                    None
                }
            }
        };
        if let Some(w) = unwanted {
            let _ = ctx.runtime.discard(&w).await;
        }
    }
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_allowance_paces_starts_at_its_rate() {
        let mut a = Allowance::new(10);
        // A burst of one second's worth, then one per tenth of a second.
        assert_eq!(a.take(50).await, 10);
        let t = tokio::time::Instant::now();
        assert_eq!(a.take(5).await, 1);
        assert_eq!(t.elapsed(), Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(a.take(5).await, 3);
    }
}
