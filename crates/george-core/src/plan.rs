//! Turning a job request (template + parameters) into a [`NewJob`]: the
//! parameters checked, the steps rendered and the agent chosen, ready to store.

use crate::manifest::{AgentSpec, TaskTemplate, TriggerSpec};
use crate::template::{render_steps, resolve_params, ParamError, StepSpec};
use crate::{DesiredState, Priority};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Where a job came from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Origin {
    /// The source: `api`, `folder`, `git`, `workfile`, ...
    pub source: String,
    /// The thing within the source: a manifest file path, a work item id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The source's revision when the job was last applied (a Git commit SHA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// A job ready to be stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NewJob {
    /// Unique job id.
    pub id: String,
    /// The template it instantiates.
    pub template: String,
    /// The AgentSpec that runs it.
    pub agent: String,
    /// The parameters as given.
    pub params: BTreeMap<String, Value>,
    /// Priority class.
    pub priority: Priority,
    /// The chapter (team) it belongs to.
    pub chapter: Option<String>,
    /// Desired state.
    pub desired: DesiredState,
    /// Extra environment for its agent.
    pub env: BTreeMap<String, String>,
    /// Its steps, rendered.
    pub steps: Vec<StepSpec>,
    /// Agent attempts before the job fails; `None` = the engine default.
    pub max_attempts: Option<u32>,
    /// How many steps may run at once.
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
    /// Whether a failing step cancels the steps running beside it.
    #[serde(default = "yes")]
    pub fail_fast: bool,
    /// Where it came from.
    pub origin: Origin,
    /// Its labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: crate::labels::Labels,
    /// Do not start it before this time (debounced trigger wakes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// How many steps run at once when neither the job nor its template says.
pub const DEFAULT_PARALLELISM: u32 = 4;

pub(crate) fn default_parallelism() -> u32 {
    DEFAULT_PARALLELISM
}

pub(crate) fn yes() -> bool {
    true
}

/// Templates and agent specs by name: what a job can be planned against.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// TaskTemplates by name.
    pub templates: BTreeMap<String, TaskTemplate>,
    /// AgentSpecs by name.
    pub agents: BTreeMap<String, AgentSpec>,
    /// Triggers by name: `kind: Trigger` manifests, and each AgentSpec's own
    /// triggers as `<agent>-t<i>` (their `agent` set to that spec).
    pub triggers: BTreeMap<String, TriggerSpec>,
}

/// What a caller asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRequest<'a> {
    /// The job id.
    pub id: &'a str,
    /// Template name.
    pub template: &'a str,
    /// Parameters.
    pub params: &'a BTreeMap<String, Value>,
    /// AgentSpec override.
    pub agent: Option<&'a str>,
    /// Chapter; defaults to the agent's chapter.
    pub chapter: Option<&'a str>,
    /// Priority.
    pub priority: Priority,
    /// Desired state.
    pub desired: DesiredState,
    /// Extra environment.
    pub env: &'a BTreeMap<String, String>,
    /// Steps at once, instead of the template's.
    pub parallelism: Option<u32>,
    /// Fail fast or not, instead of the template's.
    pub fail_fast: Option<bool>,
    /// Its labels.
    pub labels: &'a crate::labels::Labels,
}

/// The most variables a job's `env` may hold.
pub const MAX_ENV_VARS: usize = 256;
/// The longest name of one variable, in characters.
pub const MAX_ENV_NAME: usize = 256;
/// The longest value of one variable, in characters (Linux refuses one over 128 KiB; [`MAX_ENV_TOTAL`] keeps it under).
pub const MAX_ENV_VALUE: usize = 32 * 1024;
/// The most bytes all of a job's variables may take together.
pub const MAX_ENV_TOTAL: usize = 128 * 1024;

/// A job's `env` is one an agent can be started with: names not empty, at
/// most [`MAX_ENV_NAME`] bytes, without `=` or NUL; values without NUL and at
/// most [`MAX_ENV_VALUE`] bytes; at most [`MAX_ENV_VARS`] variables and
/// [`MAX_ENV_TOTAL`] bytes in all. Each error names the variable.
pub fn check_env(env: &BTreeMap<String, String>) -> Result<(), Vec<ParamError>> {
    let mut errs = Vec::new();
    let mut err = |field: String, message: String| errs.push(ParamError { field, message });
    if env.len() > MAX_ENV_VARS {
        err("env".into(), format!("{} variables; at most {MAX_ENV_VARS} are allowed", env.len()));
    }
    let total: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if total > MAX_ENV_TOTAL {
        err("env".into(), format!("{total} bytes in all; at most {MAX_ENV_TOTAL} are allowed"));
    }
    for (k, v) in env {
        let field = format!("env.{}", k.escape_debug());
        if k.is_empty() {
            err("env".into(), "a variable has an empty name".into());
        } else if k.contains('=') || k.contains('\0') {
            err(field.clone(), "a variable name must not contain `=` or NUL".into());
        } else if k.chars().count() > MAX_ENV_NAME {
            err(field.clone(), format!("the name is {} characters; at most {MAX_ENV_NAME}", k.chars().count()));
        }
        if v.contains('\0') {
            err(field.clone(), "the value must not contain NUL".into());
        } else if v.chars().count() > MAX_ENV_VALUE {
            err(field, format!("the value is {} characters; at most {MAX_ENV_VALUE}", v.chars().count()));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// Why no AgentSpec can run a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoAgent {
    /// The AgentSpec named is not defined.
    #[error("unknown AgentSpec `{0}`")]
    Unknown(String),
    /// The AgentSpec named lacks capabilities the template needs.
    #[error("AgentSpec `{name}` lacks required capabilities [{}]", missing.join(", "))]
    Lacks {
        /// The AgentSpec.
        name: String,
        /// What it lacks.
        missing: Vec<String>,
    },
    /// No AgentSpec has every capability the template needs.
    #[error("no AgentSpec has all required capabilities [{}]", .0.join(", "))]
    NoneCapable(Vec<String>),
}

impl Catalog {
    /// Adds the triggers declared inside the catalog's AgentSpecs.
    pub fn add_agent_triggers(&mut self) {
        for (name, agent) in &self.agents {
            for (i, t) in agent.spec.triggers.iter().enumerate() {
                let mut t = t.clone();
                t.agent.get_or_insert_with(|| name.clone());
                self.triggers.insert(format!("{name}-t{i}"), t);
            }
        }
    }

    /// The AgentSpec a template runs with: the explicit choice, else the first
    /// AgentSpec by name that has every required capability.
    pub fn choose_agent(&self, template: &TaskTemplate, explicit: Option<&str>) -> Result<&AgentSpec, NoAgent> {
        let wanted = &template.spec.required_capabilities;
        let has_all = |a: &AgentSpec| wanted.iter().all(|c| a.spec.capabilities.contains(c));
        if let Some(name) = explicit.or(template.spec.agent.as_deref()) {
            let agent = self.agents.get(name).ok_or_else(|| NoAgent::Unknown(name.to_string()))?;
            if !has_all(agent) {
                let missing = wanted.iter().filter(|c| !agent.spec.capabilities.contains(c)).cloned().collect();
                return Err(NoAgent::Lacks { name: name.to_string(), missing });
            }
            return Ok(agent);
        }
        self.agents.values().find(|a| has_all(a)).ok_or_else(|| NoAgent::NoneCapable(wanted.clone()))
    }

    /// Plans a job: checks the template exists, the parameters fit and an agent
    /// can run it, and renders its steps.
    pub fn plan(&self, req: &JobRequest<'_>, origin: Origin) -> Result<NewJob, Vec<ParamError>> {
        let template = self.templates.get(req.template).ok_or_else(|| {
            vec![ParamError {
                field: "template".into(),
                message: format!(
                    "unknown TaskTemplate `{}`; known templates: [{}]",
                    req.template,
                    self.templates.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            }]
        })?;
        check_env(req.env)?;
        crate::labels::check(req.labels).map_err(|errs| {
            errs.into_iter().map(|(field, message)| ParamError { field, message }).collect::<Vec<_>>()
        })?;
        if req.parallelism == Some(0) {
            let message = "expected 1 or more steps at once, got 0".to_string();
            return Err(vec![ParamError { field: "parallelism".into(), message }]);
        }
        let values = resolve_params(&template.spec, req.params)?;
        let agent = self
            .choose_agent(template, req.agent)
            .map_err(|e| vec![ParamError { field: "agent".into(), message: e.to_string() }])?;
        Ok(NewJob {
            id: req.id.to_string(),
            template: req.template.to_string(),
            agent: agent.metadata.name.clone(),
            params: req.params.clone(),
            priority: req.priority,
            chapter: req.chapter.map(str::to_string).or_else(|| agent.metadata.chapter.clone()),
            desired: req.desired,
            env: req.env.clone(),
            steps: render_steps(&template.spec.steps, &values),
            max_attempts: template.spec.max_attempts,
            parallelism: req.parallelism.or(template.spec.parallelism).unwrap_or(DEFAULT_PARALLELISM),
            fail_fast: req.fail_fast.or(template.spec.fail_fast).unwrap_or(true),
            origin,
            labels: req.labels.clone(),
            not_before: None,
        })
    }
}
