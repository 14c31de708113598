//! `kind: Job`: an instance of a TaskTemplate with parameters.

use super::ObjectMeta;
use crate::{DesiredState, Priority};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A job manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobManifest {
    /// Always `george/v1`.
    pub api_version: String,
    /// Name (the job id) and chapter.
    pub metadata: ObjectMeta,
    /// The job.
    pub spec: JobSpec,
}

/// The body of a Job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobSpec {
    /// The TaskTemplate to instantiate.
    pub template: String,
    /// Values for the template's variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Priority class (default P2).
    #[serde(default)]
    pub priority: Priority,
    /// Run, hold or stop the job (default active).
    #[serde(default = "default_desired")]
    pub desired_state: DesiredState,
    /// Pick this AgentSpec instead of the template's choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Extra environment for the job's agent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// How many steps may run at once, instead of the template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// Whether a failing step cancels the steps running beside it, instead of the template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_fast: Option<bool>,
}

fn default_desired() -> DesiredState {
    DesiredState::Active
}
