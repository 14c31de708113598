//! Declarative manifests (`apiVersion: george/v1`): the kinds, their fields and
//! the parser that turns YAML text into typed manifests with precise errors.

mod agent_spec;
mod chapter;
mod diagnostic;
mod job;
mod parse;
mod policy;
mod task_template;
mod trigger;

pub use agent_spec::{
    AgentResources, AgentSpec, AgentSpecSpec, Dependencies, HealthCheck, LlmChoice, NetworkPolicy, PoolSpec, Safety,
    SecretRef, SubagentLimits, TokenBudget,
};
pub use chapter::{Chapter, ChapterSpec};
pub use diagnostic::{Diagnostic, Diagnostics};
pub use job::{JobManifest, JobSpec};
pub use parse::{parse_manifests, ParsedManifest};
pub use policy::{Policy, PolicySpec, RateLimits};
pub use task_template::{StepTemplate, TaskTemplate, TaskTemplateSpec, VarType, Variable};
pub use trigger::{MissedRuns, Trigger, TriggerSpec, TriggerType};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The only API version George reads.
pub const API_VERSION: &str = "george/v1";

/// The metadata every manifest carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Unique name within the kind: lowercase letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// The chapter (team) this object belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chapter: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The kinds of manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// An agent definition.
    AgentSpec,
    /// A reusable task.
    TaskTemplate,
    /// An instance of a template.
    Job,
    /// A team.
    Chapter,
    /// Rate limits and scheduling rules.
    Policy,
    /// What wakes an agent.
    Trigger,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] =
        [Kind::AgentSpec, Kind::TaskTemplate, Kind::Job, Kind::Chapter, Kind::Policy, Kind::Trigger];

    /// The kind's name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AgentSpec => "AgentSpec",
            Kind::TaskTemplate => "TaskTemplate",
            Kind::Job => "Job",
            Kind::Chapter => "Chapter",
            Kind::Policy => "Policy",
            Kind::Trigger => "Trigger",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            format!("unknown kind `{s}`, expected one of AgentSpec, TaskTemplate, Job, Chapter, Policy, Trigger")
        })
    }
}

/// Any manifest. Manifests are few and parsed once, so the variants are not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Manifest {
    /// An agent definition.
    AgentSpec(AgentSpec),
    /// A reusable task.
    TaskTemplate(TaskTemplate),
    /// A job.
    Job(JobManifest),
    /// A team.
    Chapter(Chapter),
    /// Rules.
    Policy(Policy),
    /// What wakes an agent.
    Trigger(Trigger),
}

impl Manifest {
    /// The manifest's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Manifest::AgentSpec(_) => Kind::AgentSpec,
            Manifest::TaskTemplate(_) => Kind::TaskTemplate,
            Manifest::Job(_) => Kind::Job,
            Manifest::Chapter(_) => Kind::Chapter,
            Manifest::Policy(_) => Kind::Policy,
            Manifest::Trigger(_) => Kind::Trigger,
        }
    }

    /// The manifest's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Manifest::AgentSpec(m) => &m.metadata,
            Manifest::TaskTemplate(m) => &m.metadata,
            Manifest::Job(m) => &m.metadata,
            Manifest::Chapter(m) => &m.metadata,
            Manifest::Policy(m) => &m.metadata,
            Manifest::Trigger(m) => &m.metadata,
        }
    }

    /// The manifest's name.
    pub fn name(&self) -> &str {
        &self.metadata().name
    }
}

/// Whether `name` is a valid object name: 1–63 characters of lowercase ASCII
/// letters, digits, `-`, `_`, `.`, starting with a letter or digit.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}
