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
}

impl AgentEnv {
    /// Reads the variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let need = |name: &'static str| {
            get(name).filter(|v| !v.trim().is_empty()).ok_or(EnvError { name, problem: "not set".into() })
        };
        let heartbeat_interval = match get("GEORGE_HEARTBEAT_INTERVAL_MS") {
            None => None,
            Some(v) => Some(Duration::from_millis(v.trim().parse().map_err(|_| EnvError {
                name: "GEORGE_HEARTBEAT_INTERVAL_MS",
                problem: format!("expected milliseconds, got `{v}`"),
            })?)),
        };
        Ok(Self {
            job_id: need("GEORGE_JOB_ID")?,
            api_url: need("GEORGE_API_URL")?,
            token: need("GEORGE_AGENT_TOKEN")?,
            heartbeat_interval,
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
