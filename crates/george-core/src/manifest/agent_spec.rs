//! `kind: AgentSpec`: what an agent is, what it can do and what it may use
//! (seed 000 and seed 003 §5).

use super::ObjectMeta;
use crate::duration::HumanDuration;
use crate::quantity::{Cpu, Memory};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An agent definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentSpec {
    /// Always `george/v1`.
    pub api_version: String,
    /// Name, chapter, labels.
    pub metadata: ObjectMeta,
    /// The definition.
    pub spec: AgentSpecSpec,
}

/// The body of an AgentSpec.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentSpecSpec {
    /// The agent's role, e.g. `Ranger`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub agent_type: Option<String>,
    /// Version of the agent definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Container image (container runtimes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The agent's command line. Defaults to George's reference agent (`george agent run`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Extra environment for the agent (not secrets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// What the agent can do, e.g. `shell`, `git`, `llm`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Secrets per capability: an agent receives a capability's secrets only
    /// when the job's template requires that capability.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, Vec<SecretRef>>,
    /// Resource limits and token budgets.
    #[serde(default)]
    pub resources: AgentResources,
    /// Overrides the engine's `agents.healthCheck`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// The LLM this agent uses (else the engine's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmChoice>,
    /// At most this many agents of this spec run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// What wakes the agent (each entry is a Trigger whose agent is this one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<super::TriggerSpec>,
    /// Other agents this one relies on or tells.
    #[serde(default)]
    pub dependencies: Dependencies,
    /// What the agent is allowed to do on its own.
    #[serde(default)]
    pub safety: Safety,
    /// What the agent may reach over the network.
    #[serde(default, skip_serializing_if = "NetworkPolicy::is_full")]
    pub network: NetworkPolicy,
    /// Agents started ahead of work, so a job starts on a warm one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolSpec>,
    /// Limits on the sub-agents its jobs create (with the `spawn` capability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subagents: Option<SubagentLimits>,
}

/// How many child jobs one job of an AgentSpec may create (`maxChildren`,
/// default 10) and how deep its family may go (`maxDepth`, default 2: its
/// children may have children, theirs may not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubagentLimits {
    /// Children one job may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_children: Option<u32>,
    /// Generations below a job that started without a parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
}

impl SubagentLimits {
    /// Children per job by default.
    pub const DEFAULT_MAX_CHILDREN: u32 = 10;
    /// Depth of a family by default.
    pub const DEFAULT_MAX_DEPTH: u32 = 2;

    /// `maxChildren`, else the default.
    pub fn max_children(&self) -> u32 {
        self.max_children.unwrap_or(Self::DEFAULT_MAX_CHILDREN)
    }

    /// `maxDepth`, else the default.
    pub fn max_depth(&self) -> u32 {
        self.max_depth.unwrap_or(Self::DEFAULT_MAX_DEPTH)
    }
}

/// A warm pool (`spec.pool`): the runtime keeps `min` agents of this spec
/// started and waiting, unassigned (no job, no secrets, no token), and a
/// job claims one instead of starting a new agent. Each pooled agent serves
/// one attempt and is then destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PoolSpec {
    /// Warm agents kept when the pool is idle.
    #[serde(default)]
    pub min: u32,
    /// Warm agents kept at most: after a job found the pool empty, it grows
    /// towards this until it has been idle for `idleTimeout` (default `min`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// How long a pool larger than `min` stays so without a claim (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<HumanDuration>,
}

impl PoolSpec {
    /// The most warm agents one pool may hold.
    pub const LIMIT: u32 = 256;

    /// The upper size (`max`, else `min`).
    pub fn upper(&self) -> u32 {
        self.max.unwrap_or(self.min).max(self.min)
    }

    /// `idleTimeout`, defaulting to five minutes.
    pub fn idle(&self) -> std::time::Duration {
        self.idle_timeout.map(|d| d.get()).unwrap_or(std::time::Duration::from_secs(300))
    }
}

/// What an agent may reach over the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkPolicy {
    /// Anything (the default).
    #[default]
    Full,
    /// The engine's API and nothing else (it needs it to report).
    EngineOnly,
    /// Nothing: an agent that reports only through its exit code and files.
    None,
}

impl std::fmt::Display for NetworkPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NetworkPolicy::Full => "full",
            NetworkPolicy::EngineOnly => "engine-only",
            NetworkPolicy::None => "none",
        })
    }
}

impl NetworkPolicy {
    /// The default: no restriction.
    pub fn is_full(&self) -> bool {
        *self == NetworkPolicy::Full
    }
}

/// Which provider and model an agent's LLM calls go to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LlmChoice {
    /// A provider configured in the engine (`llm.providers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A reference to a secret that a capability needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretRef {
    /// The secret's name in George's secret store.
    pub name: String,
    /// The key within the secret, when it holds several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// File name under the agent's secrets directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Resource limits and token budgets of an agent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentResources {
    /// Memory limit; defaults to `agents.defaultResources.memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// CPU limit; defaults to `agents.defaultResources.cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Token budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_budget: Option<TokenBudget>,
    /// Context window of the agent's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    /// An agent running longer than this is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_duration: Option<HumanDuration>,
}

/// Token budgets (seed 003 §4).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenBudget {
    /// Cap on one LLM call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_invocation: Option<u64>,
    /// Per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u64>,
    /// Per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_hour: Option<u64>,
    /// Per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<u64>,
    /// Per month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_month: Option<u64>,
    /// Per job, over all its attempts, its sub-agents included: a job of
    /// this AgentSpec that has no parent gets this family budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_job: Option<u64>,
}

/// Health-check settings (seed 000 `agents.healthCheck`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheck {
    /// How often an agent heartbeats.
    #[serde(default = "HealthCheck::default_interval")]
    pub interval: HumanDuration,
    /// How late a heartbeat may be before it counts as missed.
    #[serde(default = "HealthCheck::default_timeout")]
    pub timeout: HumanDuration,
    /// Missed heartbeats in a row before the agent is unhealthy.
    #[serde(default = "HealthCheck::default_threshold")]
    pub unhealthy_threshold: u32,
}

impl HealthCheck {
    fn default_interval() -> HumanDuration {
        HumanDuration::from_secs(10)
    }
    fn default_timeout() -> HumanDuration {
        HumanDuration::from_secs(5)
    }
    fn default_threshold() -> u32 {
        3
    }

    /// How long after the last sign of life an agent is declared unhealthy:
    /// `interval × unhealthyThreshold + timeout`.
    pub fn grace(&self) -> std::time::Duration {
        self.interval.get() * self.unhealthy_threshold.max(1) + self.timeout.get()
    }
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            interval: Self::default_interval(),
            timeout: Self::default_timeout(),
            unhealthy_threshold: Self::default_threshold(),
        }
    }
}

/// Other agents an agent relies on or notifies.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Dependencies {
    /// Agents this one needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Agents this one informs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifies: Vec<String>,
}

/// Safety flags (seed 003 §5).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Safety {
    /// May ask a human for help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_escalate_to_human: Option<bool>,
    /// May write to Jira.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_modify_jira: Option<bool>,
    /// May send direct messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_send_direct_messages: Option<bool>,
    /// Direct-message cap per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_dms_per_day: Option<u32>,
}
