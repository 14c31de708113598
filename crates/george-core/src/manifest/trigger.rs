//! `kind: Trigger` (and an AgentSpec's `triggers:`): what wakes an agent —
//! a cron schedule, a webhook event, or a manual summon (seed 003 §1).

use super::ObjectMeta;
use crate::duration::HumanDuration;
use crate::Priority;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Trigger {
    /// Always `george/v1`.
    pub api_version: String,
    /// Name and chapter.
    pub metadata: ObjectMeta,
    /// The trigger.
    pub spec: TriggerSpec,
}

/// The kinds of trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TriggerType {
    /// A cron schedule.
    Cron,
    /// An HTTP event (`POST /api/v1/events`), signed with HMAC-SHA256.
    Webhook,
    /// Same as `webhook` (the seed's name for reactive triggers).
    Event,
    /// A manual summon from the API or CLI.
    Summon,
}

/// What to do about cron runs missed while the engine was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MissedRuns {
    /// Run once, at start-up, for the latest missed time (default).
    #[default]
    RunOnce,
    /// Skip them; wait for the next scheduled time.
    Skip,
}

/// The body of a Trigger (also an entry of an AgentSpec's `triggers:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TriggerSpec {
    /// `cron`, `webhook` (or `event`) or `summon`.
    #[serde(rename = "type")]
    pub trigger_type: TriggerType,
    /// The template of the jobs it creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The AgentSpec that runs them (for an AgentSpec's own triggers: that spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Priority of the jobs (default: P3 for cron, P2 for webhooks, P1 for summons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Fixed parameters of the jobs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Why it wakes the agent (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// Cron: 5-field schedule (minute hour day-of-month month day-of-week).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Cron: IANA time zone of the schedule (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Cron: what to do about runs missed while the engine was down.
    #[serde(default)]
    pub missed: MissedRuns,
    /// Webhook: the sender (`source` field of the event, e.g. `datadog`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Webhook: event names that match (`event` field); empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Webhook: payload fields that must have these values (dotted paths allowed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conditions: BTreeMap<String, String>,
    /// Coalesce wakes within this window into one job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce: Option<HumanDuration>,
    /// What events coalesce on: a payload path (e.g. `issue.key`); default: the trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce_key: Option<String>,
    /// Longest debouncing may postpone a wake (default: 5 × debounce).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<HumanDuration>,
}

impl TriggerSpec {
    /// The priority of the jobs it creates.
    pub fn job_priority(&self) -> Priority {
        self.priority.unwrap_or(match self.trigger_type {
            TriggerType::Cron => Priority::P3,
            TriggerType::Webhook | TriggerType::Event => Priority::P2,
            TriggerType::Summon => Priority::P1,
        })
    }

    /// Whether it reacts to webhook events.
    pub fn is_webhook(&self) -> bool {
        matches!(self.trigger_type, TriggerType::Webhook | TriggerType::Event)
    }
}
