//! The engine's Prometheus metrics. Names are constants here; the API
//! encodes the registry at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Reconcile passes, by outcome.
pub const RECONCILE_TOTAL: &str = "george_reconcile";
/// Agents spawned.
pub const AGENT_SPAWNS: &str = "george_agent_spawns";
/// Agents that could not be spawned.
pub const AGENT_SPAWN_FAILURES: &str = "george_agent_spawn_failures";
/// Agents stopped for being unhealthy or over time.
pub const AGENT_KILLS: &str = "george_agent_terminations";
/// Seconds from job creation to its first agent being spawned.
pub const JOB_START_LATENCY: &str = "george_job_start_latency_seconds";
/// Jobs by status.
pub const JOBS: &str = "george_jobs";
/// Jobs waiting in the reconcile queue.
pub const QUEUE_DEPTH: &str = "george_reconcile_queue_depth";
/// Seconds a job waited for the scheduler, by priority class.
pub const QUEUE_WAIT: &str = "george_scheduler_queue_wait_seconds";
/// Jobs waiting for the scheduler, by priority class.
pub const SCHEDULER_QUEUED: &str = "george_scheduler_queued";
/// Looks at the cron triggers.
pub const CRON_TICKS: &str = "george_trigger_cron_ticks";

/// API requests, by method and route.
pub const API_REQUESTS: &str = "george_api_requests";
/// Warm agents waiting in a pool, by AgentSpec.
pub const POOL_WARM: &str = "george_pool_warm";
/// Warm agents being started, by AgentSpec.
pub const POOL_STARTING: &str = "george_pool_starting";
/// The size a pool is kept at, by AgentSpec.
pub const POOL_TARGET: &str = "george_pool_target";
/// Attempts of pooled AgentSpecs, by AgentSpec and how they started (`warm`, `cold`).
pub const POOL_CLAIMS: &str = "george_pool_claims";
/// Seconds from a claim to its agent's binding delivered.
pub const POOL_CLAIM_LATENCY: &str = "george_pool_claim_seconds";

/// Seconds the API took to answer, by method, route and status.
pub const HTTP_DURATION: &str = "george_http_request_duration_seconds";
/// Always 1, labelled with the running version.
pub const BUILD_INFO: &str = "george_build_info";
/// Seconds from a job's creation to its end, by template and outcome.
pub const JOB_DURATION: &str = "george_job_duration_seconds";
/// Jobs the engine ended, by template, chapter and outcome.
pub const JOBS_FINISHED: &str = "george_jobs_finished";
/// Failed attempts that the engine retried, by template.
pub const JOB_RETRIES: &str = "george_job_retries";
/// Seconds an attempt's agent lived, by how the attempt ended.
pub const ATTEMPT_DURATION: &str = "george_attempt_duration_seconds";
/// Name of the step duration histogram.
pub const STEP_DURATION: &str = "george_step_duration_seconds";

/// LLM tokens metered through the proxy, by chapter, AgentSpec, model and kind (`input`, `output`).
pub const LLM_TOKENS: &str = "george_llm_tokens";
/// Name of the tokens left of each budget in force, this period.
pub const BUDGET_REMAINING: &str = "george_budget_remaining_tokens";
/// Name of each budget in force.
pub const BUDGET_LIMIT: &str = "george_budget_limit_tokens";

/// When a source's revision was last applied (seconds since the epoch), by source.
pub const SOURCE_LAST_APPLIED: &str = "george_source_last_applied_timestamp_seconds";
/// When a source's revision was last rejected (seconds since the epoch), by source.
pub const SOURCE_LAST_REJECTED: &str = "george_source_last_rejected_timestamp_seconds";
/// When a trigger last fired (seconds since the epoch), by trigger and kind (`cron`, `webhook`, `summon`).
pub const TRIGGER_LAST_FIRED: &str = "george_trigger_last_fired_timestamp_seconds";

/// A label set naming a source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// The source (`folder`, `git`, `jira`, …).
    pub source: String,
}

/// A label set naming a trigger and its kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabel {
    /// The trigger.
    pub trigger: String,
    /// `cron`, `webhook` or `summon`.
    pub kind: String,
}

/// A label set naming who used LLM tokens, on which model, and which kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokensLabel {
    /// The chapter (empty: none).
    pub chapter: String,
    /// The AgentSpec.
    pub agent_spec: String,
    /// The model.
    pub model: String,
    /// `input` or `output`.
    pub kind: String,
}

/// A label set naming a token budget: who it binds (`level` = `org`,
/// `chapter` or `agent_spec`, and its `name`; empty for `org`) and for how long.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabel {
    /// `org`, `chapter` or `agent_spec`.
    pub level: String,
    /// The chapter or AgentSpec (empty for `org`).
    pub name: String,
    /// `day` or `month`.
    pub period: String,
}

/// A label set naming an answered HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabel {
    /// The HTTP method.
    pub method: String,
    /// The route's template (`/api/v1/jobs/{id}`).
    pub route: String,
    /// The status code.
    pub status: String,
}

/// A label set with the running version.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    /// George's version.
    pub version: String,
}

/// A label set naming a template and how its job ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TemplateOutcomeLabel {
    /// The TaskTemplate.
    pub template: String,
    /// `completed`, `failed` or `aborted`.
    pub outcome: String,
}

/// A label set naming a template, a chapter and how a job ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabel {
    /// The TaskTemplate.
    pub template: String,
    /// The chapter (empty: none).
    pub chapter: String,
    /// `completed`, `failed` or `aborted`.
    pub outcome: String,
}

/// A label set naming a template.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TemplateLabel {
    /// The TaskTemplate.
    pub template: String,
}

/// A label set naming an AgentSpec.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpecLabel {
    /// The AgentSpec.
    pub agent_spec: String,
}

/// A label set naming an AgentSpec and how an attempt started.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabel {
    /// The AgentSpec.
    pub agent_spec: String,
    /// `warm` (a pooled agent) or `cold` (the pool was empty).
    pub start: String,
}

/// A label set naming an API route (`POST`, `/api/v1/jobs/{id}/reports`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The HTTP method.
    pub method: String,
    /// The route's template.
    pub route: String,
}

/// A label set with one `priority` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabel {
    /// The priority class.
    pub priority: String,
}

/// A label set with one `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome.
    pub outcome: String,
}

/// A label set with one `status` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The status.
    pub status: String,
}

/// A label set with one `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: String,
}

/// The engine's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    /// The registry holding every metric below.
    pub registry: Registry,
    /// Reconcile passes by action taken.
    pub reconciles: Family<OutcomeLabel, Counter>,
    /// Agents spawned.
    pub spawns: Counter,
    /// Spawn failures.
    pub spawn_failures: Counter,
    /// Terminations by reason class.
    pub terminations: Family<ReasonLabel, Counter>,
    /// Job start latency.
    pub start_latency: Histogram,
    /// Jobs by status (refreshed when scraped).
    pub jobs: Family<StatusLabel, Gauge>,
    /// Queue depth (refreshed when scraped).
    pub queue_depth: Gauge,
    /// Scheduler queue wait by class.
    pub queue_wait: Family<PriorityLabel, Histogram>,
    /// Scheduler queue depth by class (refreshed when scraped).
    pub scheduler_queued: Family<PriorityLabel, Gauge>,
    /// Completed looks at the cron triggers.
    pub cron_ticks: Counter,
    /// API requests by route.
    pub api_requests: Family<RouteLabel, Counter>,
    /// Warm agents by AgentSpec.
    pub pool_warm: Family<SpecLabel, Gauge>,
    /// Warm agents starting by AgentSpec.
    pub pool_starting: Family<SpecLabel, Gauge>,
    /// Pool sizes aimed at by AgentSpec.
    pub pool_target: Family<SpecLabel, Gauge>,
    /// Attempts of pooled AgentSpecs by how they started.
    pub pool_claims: Family<ClaimLabel, Counter>,
    /// Claim latency.
    pub pool_claim_latency: Histogram,
    /// API answer times.
    pub http_duration: Family<HttpLabel, Histogram>,
    /// Job durations, creation to end.
    pub job_duration: Family<TemplateOutcomeLabel, Histogram>,
    /// Jobs ended.
    pub jobs_finished: Family<FinishedLabel, Counter>,
    /// Retried failed attempts.
    pub job_retries: Family<TemplateLabel, Counter>,
    /// Attempt durations.
    pub attempt_duration: Family<OutcomeLabel, Histogram>,
    /// Step durations (a run's start to its end), by template and how the step ended.
    pub step_duration: Family<TemplateOutcomeLabel, Histogram>,
    /// LLM tokens used.
    pub llm_tokens: Family<TokensLabel, Counter>,
    /// Tokens left of each budget, this period (refreshed when scraped).
    pub budget_remaining: Family<BudgetLabel, Gauge>,
    /// Each budget in force (refreshed when scraped).
    pub budget_limit: Family<BudgetLabel, Gauge>,
    /// Sources' last applied revisions.
    pub source_applied: Family<SourceLabel, Gauge>,
    /// Sources' last rejected revisions.
    pub source_rejected: Family<SourceLabel, Gauge>,
    /// Triggers' last fires.
    pub trigger_fired: Family<TriggerLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<OutcomeLabel, Counter>::default();
        let spawns = Counter::default();
        let spawn_failures = Counter::default();
        let terminations = Family::<ReasonLabel, Counter>::default();
        let start_latency = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        let jobs = Family::<StatusLabel, Gauge>::default();
        let queue_depth = Gauge::default();
        let queue_wait = Family::<PriorityLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 3600.0])
        });
        let scheduler_queued = Family::<PriorityLabel, Gauge>::default();
        let cron_ticks = Counter::default();
        let api_requests = Family::<RouteLabel, Counter>::default();
        let pool_warm = Family::<SpecLabel, Gauge>::default();
        let pool_starting = Family::<SpecLabel, Gauge>::default();
        let pool_target = Family::<SpecLabel, Gauge>::default();
        let pool_claims = Family::<ClaimLabel, Counter>::default();
        let pool_claim_latency = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let http_duration = Family::<HttpLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0])
        });
        let long =
            || Histogram::new([0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0, 24.0 * 3600.0]);
        let job_duration = Family::<TemplateOutcomeLabel, Histogram>::new_with_constructor(long);
        let jobs_finished = Family::<FinishedLabel, Counter>::default();
        let job_retries = Family::<TemplateLabel, Counter>::default();
        let attempt_duration = Family::<OutcomeLabel, Histogram>::new_with_constructor(long);
        let step_duration = Family::<TemplateOutcomeLabel, Histogram>::new_with_constructor(long);
        registry.register(
            STEP_DURATION,
            "How long steps ran (a run's start to its end), by template and how the step ended",
            step_duration.clone(),
        );
        let llm_tokens = Family::<TokensLabel, Counter>::default();
        registry.register(
            LLM_TOKENS,
            "LLM tokens the proxy metered, by chapter, AgentSpec, model and kind (input, output)",
            llm_tokens.clone(),
        );
        let budget_remaining = Family::<BudgetLabel, Gauge>::default();
        let budget_limit = Family::<BudgetLabel, Gauge>::default();
        registry.register(
            BUDGET_REMAINING,
            "Tokens left of each budget in force this period (its limit less what the governor counted)",
            budget_remaining.clone(),
        );
        registry.register(BUDGET_LIMIT, "Each token budget in force, per period", budget_limit.clone());
        let source_applied = Family::<SourceLabel, Gauge>::default();
        let source_rejected = Family::<SourceLabel, Gauge>::default();
        let trigger_fired = Family::<TriggerLabel, Gauge>::default();
        registry.register(
            SOURCE_LAST_APPLIED,
            "When a source's revision was last applied, in seconds since the epoch",
            source_applied.clone(),
        );
        registry.register(
            SOURCE_LAST_REJECTED,
            "When a source's revision was last rejected, in seconds since the epoch",
            source_rejected.clone(),
        );
        registry.register(
            TRIGGER_LAST_FIRED,
            "When a trigger last fired, in seconds since the epoch, by trigger and kind",
            trigger_fired.clone(),
        );
        let build_info = Family::<BuildLabel, Gauge>::default();
        build_info.get_or_create(&BuildLabel { version: env!("CARGO_PKG_VERSION").into() }).set(1);
        registry.register(BUILD_INFO, "Always 1, labelled with the running version", build_info);
        registry.register(
            HTTP_DURATION,
            "Seconds the API took to answer (to the answer's head), by method, route and status",
            http_duration.clone(),
        );
        registry.register(
            JOB_DURATION,
            "Seconds from a job's creation to its end, by template and outcome",
            job_duration.clone(),
        );
        registry.register(
            JOBS_FINISHED,
            "Jobs the engine ended, by template, chapter and outcome",
            jobs_finished.clone(),
        );
        registry.register(JOB_RETRIES, "Failed attempts the engine retried, by template", job_retries.clone());
        registry.register(
            ATTEMPT_DURATION,
            "Seconds an attempt's agent lived, by how it ended",
            attempt_duration.clone(),
        );
        registry.register(RECONCILE_TOTAL, "Reconcile passes by action", reconciles.clone());
        registry.register(AGENT_SPAWNS, "Agents spawned", spawns.clone());
        registry.register(AGENT_SPAWN_FAILURES, "Agents that could not be spawned", spawn_failures.clone());
        registry.register(AGENT_KILLS, "Agents stopped by the engine, by reason", terminations.clone());
        registry.register(
            JOB_START_LATENCY,
            "Seconds from job creation to its first agent spawn",
            start_latency.clone(),
        );
        registry.register(JOBS, "Jobs by status", jobs.clone());
        registry.register(QUEUE_DEPTH, "Jobs waiting in the reconcile queue", queue_depth.clone());
        registry.register(QUEUE_WAIT, "Seconds jobs waited for the scheduler, by priority class", queue_wait.clone());
        registry.register(
            SCHEDULER_QUEUED,
            "Jobs waiting for the scheduler, by priority class",
            scheduler_queued.clone(),
        );
        registry.register(CRON_TICKS, "Completed looks at the cron triggers", cron_ticks.clone());
        registry.register(API_REQUESTS, "API requests, by method and route", api_requests.clone());
        registry.register(POOL_WARM, "Warm agents waiting in a pool, by AgentSpec", pool_warm.clone());
        registry.register(POOL_STARTING, "Warm agents being started, by AgentSpec", pool_starting.clone());
        registry.register(POOL_TARGET, "The size a pool is kept at, by AgentSpec", pool_target.clone());
        registry.register(
            POOL_CLAIMS,
            "Attempts of pooled AgentSpecs, by how their agent started (warm or cold)",
            pool_claims.clone(),
        );
        registry.register(
            POOL_CLAIM_LATENCY,
            "Seconds from claiming a warm agent to its binding delivered",
            pool_claim_latency.clone(),
        );
        Self {
            registry,
            reconciles,
            spawns,
            spawn_failures,
            terminations,
            start_latency,
            jobs,
            queue_depth,
            queue_wait,
            scheduler_queued,
            cron_ticks,
            api_requests,
            pool_warm,
            pool_starting,
            pool_target,
            pool_claims,
            pool_claim_latency,
            http_duration,
            job_duration,
            jobs_finished,
            job_retries,
            attempt_duration,
            step_duration,
            llm_tokens,
            budget_remaining,
            budget_limit,
            source_applied,
            source_rejected,
            trigger_fired,
        }
    }
}
