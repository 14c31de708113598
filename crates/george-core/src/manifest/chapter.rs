//! `kind: Chapter`: a team with a budget, a fair-share weight and an alert channel.

use super::ObjectMeta;
use serde::{Deserialize, Serialize};

/// A team.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Chapter {
    /// Always `george/v1`.
    pub api_version: String,
    /// Name and labels.
    pub metadata: ObjectMeta,
    /// The definition.
    #[serde(default)]
    pub spec: ChapterSpec,
}

/// The body of a Chapter.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChapterSpec {
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Fair-share weight (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Guaranteed minimum number of concurrent agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_share: Option<u32>,
    /// At most this many of the chapter's agents run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Monthly token budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_budget: Option<u64>,
    /// Where alerts go (e.g. a Slack-compatible webhook URL or channel name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_channel: Option<String>,
}
