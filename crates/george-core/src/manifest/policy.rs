//! `kind: Policy`: rate limits and scheduling rules (seed 003 §2 and §4).

use super::ObjectMeta;
use crate::duration::HumanDuration;
use serde::{Deserialize, Serialize};

/// Rules for rate limits and scheduling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// Always `george/v1`.
    pub api_version: String,
    /// Name and labels.
    pub metadata: ObjectMeta,
    /// The rules.
    #[serde(default)]
    pub spec: PolicySpec,
}

/// The body of a Policy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    /// Token rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimits>,
    /// Global concurrency limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Queue depth above which low-priority submissions are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backpressure_threshold: Option<u32>,
    /// Default debounce window for triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce: Option<HumanDuration>,
}

/// Token rate limits (seed 003 §4 "Rate Limiting").
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimits {
    /// Tokens per single call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_invocation: Option<u64>,
    /// Tokens per minute per agent instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u64>,
    /// Tokens per hour per chapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_hour: Option<u64>,
    /// Tokens per day for the organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<u64>,
}
