//! How the API talks to a running engine: [`EngineHandle`] (its life and
//! state), and the focused handles it gives out — [`Triggers`] (wakes,
//! summons, source syncs), [`Control`] (stopping agents, backpressure,
//! budgets, the registry) and [`Meter`] (LLM metering). Each is cheap to
//! clone and holds the engine's shared state.

use crate::context::{Context, EngineConfig};
use crate::meter::Meter;
use crate::metrics::Metrics;
use crate::{alerts, readiness, reconciler, registry, report, triggers, EngineError};
use george_sources::{SyncOutcome, SyncRequest};
use george_store::StoreError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A cloneable handle the API uses to talk to the running engine.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    ctx: Arc<Context>,
    triggers: Triggers,
    control: Control,
    meter: Meter,
}

impl EngineHandle {
    pub(crate) fn new(ctx: Arc<Context>, sync: mpsc::Sender<SyncRequest>) -> Self {
        Self {
            triggers: Triggers { ctx: ctx.clone(), sync },
            control: Control { ctx: ctx.clone() },
            meter: Meter { ctx: ctx.clone() },
            ctx,
        }
    }

    /// Wakes, summons and source syncs.
    pub fn triggers(&self) -> &Triggers {
        &self.triggers
    }

    /// Stopping agents, backpressure, budgets and the registry.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Creates `parent`'s child as `req` asks (see [`crate::children`]),
    /// its token budget carved out of the parent's family budget.
    pub async fn spawn_child(
        &self,
        parent: &george_core::record::Job,
        req: &george_core::api::ChildRequest,
    ) -> Result<(george_core::record::Job, bool), crate::children::ChildError> {
        let store = self.ctx.store.as_ref();
        let catalog = self.ctx.catalog.get(store).await?;
        let limits = catalog.agents.get(&parent.agent).and_then(|s| s.spec.subagents).unwrap_or_default();
        let existing = crate::children::children(store, &parent.id).await?.len() as u32;
        let slots = limits.max_children().saturating_sub(existing);
        let id = crate::children::child_id(&parent.id, &req.key);
        let create = crate::children::spawn(store, parent, req);
        let share = crate::family_budget::Share { id: &id, asked: req.tokens, slots };
        self.ctx.family.carve((store, &catalog), parent, share, create).await
    }

    /// What the agent of `job`'s attempt `attempt` is told of it (the
    /// answer to its `attach`).
    pub async fn agent_context(
        &self,
        job: george_core::record::Job,
        attempt: u32,
    ) -> Result<george_core::api::AgentContext, StoreError> {
        crate::agent_context::of(&self.ctx, job, attempt).await
    }

    /// The LLM meter: routes, paces and reserves agents' calls, and
    /// settles their usage.
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.ctx.metrics
    }

    /// Every warm pool, by AgentSpec.
    pub fn pools(&self) -> Vec<crate::pool::PoolStatus> {
        self.ctx.pools.status()
    }

    /// Jobs waiting to be reconciled.
    pub fn queue_depth(&self) -> usize {
        self.ctx.queue.len()
    }

    /// How agents are isolated on this machine (the process runtime's sandbox).
    pub fn isolation(&self) -> Option<george_runtime::Isolation> {
        self.ctx.runtime.isolation()
    }

    /// Sets the budget gauges: each budget in force and what is left of it this period.
    pub fn refresh_budget_metrics(&self) {
        let now = self.ctx.clock.now();
        let (governor, m) = (&self.ctx.governor, &self.ctx.metrics);
        m.budget_remaining.clear();
        m.budget_limit.clear();
        for limit in governor.budgets().limits {
            let (level, name) = match &limit.level {
                george_governor::Level::Org => ("org", String::new()),
                george_governor::Level::Chapter(c) => ("chapter", c.clone()),
                george_governor::Level::Agent(a) => ("agent_spec", a.clone()),
            };
            let period = match limit.period {
                george_governor::Period::Day => "day",
                george_governor::Period::Month => "month",
            };
            let label = crate::metrics::BudgetLabel { level: level.into(), name, period: period.into() };
            let left = limit.tokens.saturating_sub(governor.used(&limit.level, limit.period, now));
            m.budget_limit.get_or_create(&label).set(i64::try_from(limit.tokens).unwrap_or(i64::MAX));
            m.budget_remaining.get_or_create(&label).set(i64::try_from(left).unwrap_or(i64::MAX));
        }
    }

    /// Jobs waiting for the scheduler, per priority class.
    pub fn scheduler_depth(&self) -> std::collections::HashMap<george_core::Priority, usize> {
        self.ctx.admission.depth()
    }

    /// Where the engine is in its start-up: `/readyz` and the write paths
    /// answer `503 not_ready` until it is [`readiness::Phase::Ready`] (or a standby).
    pub fn readiness(&self) -> readiness::Phase {
        self.ctx.readiness.phase()
    }

    /// Waits up to `within` for the engine to take writes (ready, or a standby).
    pub async fn accepting_writes(&self, within: Duration) -> bool {
        self.ctx.readiness.accepting_writes(within).await
    }

    /// Marks this engine a standby replica (it serves the API; another leads).
    pub fn set_standby(&self) {
        self.ctx.readiness.set(readiness::Phase::Standby);
    }

    /// Returns once the engine is ready: agents adopted, every source applied once.
    pub async fn ready(&self) {
        self.ctx.readiness.ready().await
    }

    /// Whether this engine runs, with its state loaded (adoption done, the
    /// governor holding the budgets and usage), so it can meter LLM calls,
    /// fire triggers and sync sources. Waits up to `within` for that; `false`
    /// on a standby replica (only the leader runs the engine), or while the
    /// engine still starts.
    pub async fn is_running(&self, within: Duration) -> bool {
        self.ctx.governor_ready_within(within).await
    }

    /// Now, by the engine's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.ctx.clock.now()
    }

    /// Runs `work` in the background, tracked: the engine's stop waits for it.
    pub fn spawn_tracked(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.ctx.tasks.spawn(work);
    }

    /// The engine's HTTP client for outside services (LLM providers, Slack).
    pub fn http(&self) -> &reqwest::Client {
        &self.ctx.http
    }

    /// Asks for a job to be reconciled now.
    pub fn nudge(&self, job: &str) {
        self.ctx.queue.add(job);
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.ctx.cfg
    }
}

/// Wakes, summons and source syncs.
#[derive(Debug, Clone)]
pub struct Triggers {
    ctx: Arc<Context>,
    sync: mpsc::Sender<SyncRequest>,
}

impl Triggers {
    /// A webhook event: every matching trigger fires (or debounces).
    pub async fn event(
        &self,
        source: Option<&str>,
        event: Option<&str>,
        delivery: &str,
        payload: &serde_json::Value,
    ) -> Result<Vec<triggers::Fired>, triggers::TriggerError> {
        triggers::on_event(&self.ctx, source, event, delivery, payload).await
    }

    /// A manual summon of an agent.
    pub async fn summon(
        &self,
        agent: &str,
        template: Option<&str>,
        context: &std::collections::BTreeMap<String, serde_json::Value>,
        priority: Option<george_core::Priority>,
        actor: &str,
    ) -> Result<triggers::Fired, triggers::TriggerError> {
        let extras = triggers::JobExtras { priority, labels: Default::default() };
        self.summon_with(agent, template, context, &extras, actor).await
    }

    /// A manual summon of an agent whose job gets `extras` (its priority,
    /// its labels: e.g. the Slack thread it was summoned from).
    pub async fn summon_with(
        &self,
        agent: &str,
        template: Option<&str>,
        context: &std::collections::BTreeMap<String, serde_json::Value>,
        extras: &triggers::JobExtras,
        actor: &str,
    ) -> Result<triggers::Fired, triggers::TriggerError> {
        triggers::summon(&self.ctx, agent, template, context, extras, actor).await
    }

    /// Fires a trigger once now, by hand.
    pub async fn fire_now(&self, name: &str, actor: &str) -> Result<triggers::Fired, triggers::TriggerError> {
        triggers::fire_now(&self.ctx, name, actor).await
    }

    /// Every trigger with its next fire time.
    pub async fn list(&self) -> Result<Vec<registry::TriggerEntry>, StoreError> {
        registry::triggers(&self.ctx).await
    }

    /// One trigger with its recent history, if it exists.
    pub async fn get(&self, name: &str) -> Result<Option<registry::TriggerDetail>, StoreError> {
        registry::trigger(&self.ctx, name).await
    }

    /// Suspends a trigger: it fires only by hand until resumed.
    pub async fn suspend(
        &self,
        name: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<crate::suspension::Suspension, triggers::TriggerError> {
        crate::suspension::suspend(&self.ctx, name, by, reason).await
    }

    /// Resumes a suspended trigger; whether it was suspended.
    pub async fn resume(&self, name: &str, by: &str) -> Result<bool, triggers::TriggerError> {
        crate::suspension::resume(&self.ctx, name, by).await
    }

    /// The secret webhook senders sign their events with, if configured.
    pub fn webhook_secret(&self) -> Option<&[u8]> {
        self.ctx.cfg.webhook_secret.as_ref().map(|s| s.0.as_slice())
    }

    /// The Jira webhooks' signing key, if Jira webhooks are enabled.
    pub fn jira_webhook_secret(&self) -> Option<&[u8]> {
        self.ctx.cfg.jira_webhook_secret.as_ref().map(|s| s.0.as_slice())
    }

    /// Slack's settings, if Slack commands are enabled.
    pub fn slack(&self) -> Option<&crate::context::SlackSettings> {
        self.ctx.cfg.slack.as_ref()
    }

    /// The GitHub webhooks' signing key, if GitHub webhooks are enabled.
    pub fn github_webhook_secret(&self) -> Option<&[u8]> {
        self.ctx.cfg.github_webhook_secret.as_ref().map(|s| s.0.as_slice())
    }

    /// Syncs every source now and returns what each did.
    pub async fn sync_now(&self) -> Result<Vec<SyncOutcome>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.sync.send(SyncRequest { reply }).await.map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Asks for every source to be synced soon, without waiting for it (a
    /// sync already asked for and not begun covers this one too).
    pub fn sync_soon(&self) -> Result<(), EngineError> {
        let (reply, _) = oneshot::channel();
        match self.sync.try_send(SyncRequest { reply }) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(EngineError::Stopped),
        }
    }
}

/// Stopping agents, backpressure, budgets and the registry.
#[derive(Debug, Clone)]
pub struct Control {
    ctx: Arc<Context>,
}

impl Control {
    /// Stops a live agent instance: gracefully (`grace`), or at once
    /// (emergency, `Duration::ZERO`), recording `reason` as its outcome.
    pub async fn stop_agent(&self, job: &str, attempt: u32, reason: &str, grace: Duration) -> Result<bool, StoreError> {
        let Some(agent) = self.ctx.store.get_agent(job, attempt).await? else { return Ok(false) };
        if !agent.state.is_live() {
            return Ok(false);
        }
        reconciler::stop_with_grace(&self.ctx, &agent, attempt, reason, grace).await?;
        Ok(true)
    }

    /// If a new job of `priority` must be refused now (the queue is too deep),
    /// how long the caller should wait before trying again.
    pub fn backpressure(&self, priority: george_core::Priority) -> Option<Duration> {
        reconciler::admit::backpressure(&self.ctx, priority)
    }

    /// The agent registry, filtered.
    pub async fn registry(&self, q: &registry::RegistryQuery) -> Result<Vec<registry::RegistryEntry>, StoreError> {
        registry::entries(&self.ctx, q).await
    }

    /// The budget alert colour in force for work of `chapter`.
    pub fn alert_color(&self, chapter: Option<&str>) -> alerts::Color {
        alerts::color(&self.ctx, chapter)
    }

    /// The token report of the current day or month.
    pub async fn budget_report(
        &self,
        period: george_governor::Period,
    ) -> Result<george_core::api::BudgetReport, StoreError> {
        report::budget(&self.ctx, period).await
    }

    /// Runs a retention pass now; `dry_run` only reports what it would delete.
    pub async fn gc(&self, dry_run: bool) -> Result<crate::retention::GcReport, StoreError> {
        crate::retention::pass(&self.ctx, dry_run).await
    }

    /// Deletes a finished job now, with its records, files and events.
    pub async fn delete_job(
        &self,
        id: &str,
        actor: &str,
    ) -> Result<crate::retention::GcReport, crate::retention::DeleteError> {
        crate::retention::delete_job(&self.ctx, id, actor).await
    }

    /// Reduces (or clears) a chapter's hourly token rate.
    pub async fn throttle(
        &self,
        chapter: &str,
        req: &george_core::api::ThrottleRequest,
        actor: &str,
    ) -> Result<george_core::api::ThrottleView, report::ThrottleError> {
        report::throttle(&self.ctx, chapter, req, actor).await
    }
}
