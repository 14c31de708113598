//! `kind: TaskTemplate`: typed variables and ordered steps (seed 001).

use super::ObjectMeta;
use crate::duration::HumanDuration;
use serde::{Deserialize, Serialize};

/// A reusable task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskTemplate {
    /// Always `george/v1`.
    pub api_version: String,
    /// Name and labels.
    pub metadata: ObjectMeta,
    /// The task.
    pub spec: TaskTemplateSpec,
}

/// The body of a TaskTemplate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskTemplateSpec {
    /// What the task is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Run with this AgentSpec; otherwise the first (by name) AgentSpec that
    /// has every required capability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Capabilities the agent must have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_capabilities: Vec<String>,
    /// Typed inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    /// Agent attempts before the job fails (default: engine `maxAttempts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// How long its finished jobs are kept, with their logs, outputs and
    /// events (default: engine `retention.finished`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<HumanDuration>,
    /// How many steps may run at once (default 4; a job in a repository
    /// runs one at a time). Steps run as soon as their dependencies are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// Whether a failing step cancels the steps running beside it (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_fast: Option<bool>,
    /// The steps, in order; `depends_on` adds ordering between them.
    pub steps: Vec<StepTemplate>,
}

/// The type of a template variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    /// Text, checked strictly.
    String,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// One of `values`.
    Enum,
    /// Free text for an agent to interpret.
    Fuzzy,
}

impl VarType {
    /// The type's name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            VarType::String => "string",
            VarType::Integer => "integer",
            VarType::Boolean => "boolean",
            VarType::Enum => "enum",
            VarType::Fuzzy => "fuzzy",
        }
    }
}

/// A typed template variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Variable {
    /// Referenced in step text as `{{name}}`.
    pub name: String,
    /// The type (default `string`).
    #[serde(default = "default_var_type", rename = "type")]
    pub var_type: VarType,
    /// Must a job give it? Defaults to true unless a default is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Value used when a job gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// Allowed values of an `enum`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// What the variable means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn default_var_type() -> VarType {
    VarType::String
}

impl Variable {
    /// Whether a job must set this variable.
    pub fn is_required(&self) -> bool {
        self.required.unwrap_or(self.default.is_none())
    }
}

/// One step of a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepTemplate {
    /// Unique within the template.
    pub id: String,
    /// What to do, in natural language; may use `{{variables}}`.
    pub description: String,
    /// A shell command that does the step; its exit code decides success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// A shell command whose exit code 0 means the step is already done.
    #[serde(default, alias = "doneWhen", skip_serializing_if = "Option::is_none")]
    pub done_when: Option<String>,
    /// Steps that must complete first.
    #[serde(default, alias = "dependsOn", skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Longest a `run` may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Extra tries of a failing `run` before the step fails.
    #[serde(default)]
    pub retries: u32,
    /// The wait before the first retry (default 1s); each next one waits
    /// twice as long, with jitter, up to `retry_delay_max`.
    #[serde(default, alias = "retryDelay", skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<HumanDuration>,
    /// The longest wait between two tries (default 5m).
    #[serde(default, alias = "retryDelayMax", skip_serializing_if = "Option::is_none")]
    pub retry_delay_max: Option<HumanDuration>,
}
