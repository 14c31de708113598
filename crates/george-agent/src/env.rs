//! The agent's settings, from the environment the runtime gives it.

use std::time::Duration;

/// A missing or malformed variable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}: {problem}; `george agent run` is started by the engine, which sets it")]
pub struct EnvError {
    /// The variable.
    pub name: &'static str,
    /// What is wrong.
    pub problem: String,
}

/// The agent's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEnv {
    /// `GEORGE_JOB_ID`.
    pub job_id: String,
    /// `GEORGE_API_URL`.
    pub api_url: String,
    /// `GEORGE_AGENT_TOKEN`.
    pub token: String,
    /// `GEORGE_HEARTBEAT_INTERVAL_MS` (else the engine's setting).
    pub heartbeat_interval: Option<Duration>,
    /// `GEORGE_ENGINE_PATIENCE_MS`: how long the agent keeps working and
    /// retrying its reports while the engine cannot be reached (default
    /// [`DEFAULT_ENGINE_PATIENCE`]), before it stops.
    pub engine_patience: Duration,
}

/// How long an agent waits for an unreachable engine by default.
pub const DEFAULT_ENGINE_PATIENCE: Duration = Duration::from_secs(15 * 60);

fn millis(get: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<Option<Duration>, EnvError> {
    match get(name) {
        None => Ok(None),
        Some(v) => Ok(Some(Duration::from_millis(
            v.trim().parse().map_err(|_| EnvError { name, problem: format!("expected milliseconds, got `{v}`") })?,
        ))),
    }
}

impl AgentEnv {
    /// Reads the variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let need = |name: &'static str| {
            get(name).filter(|v| !v.trim().is_empty()).ok_or(EnvError { name, problem: "not set".into() })
        };
        let heartbeat_interval = millis(&get, "GEORGE_HEARTBEAT_INTERVAL_MS")?;
        let engine_patience = millis(&get, "GEORGE_ENGINE_PATIENCE_MS")?.unwrap_or(DEFAULT_ENGINE_PATIENCE);
        Ok(Self {
            job_id: need("GEORGE_JOB_ID")?,
            api_url: need("GEORGE_API_URL")?,
            token: need("GEORGE_AGENT_TOKEN")?,
            heartbeat_interval,
            engine_patience,
        })
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_malformed_variables_are_named() {
        let err = AgentEnv::from_lookup(|_| None).unwrap_err();
        assert_eq!(err.name, "GEORGE_JOB_ID");
        let err = AgentEnv::from_lookup(|k| {
            Some(if k == "GEORGE_HEARTBEAT_INTERVAL_MS" { "soon".into() } else { "x".into() })
        })
        .unwrap_err();
        assert!(err.to_string().contains("expected milliseconds"), "{err}");
    }
}
