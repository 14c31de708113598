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
    /// The agent token: read from the file `GEORGE_AGENT_TOKEN_FILE` names
    /// (which [`AgentEnv::from_env`] then removes), or, for an agent started
    /// by hand, `GEORGE_AGENT_TOKEN`.
    pub token: String,
    /// `GEORGE_HEARTBEAT_INTERVAL_MS` (else the engine's setting).
    pub heartbeat_interval: Option<Duration>,
    /// `GEORGE_ENGINE_PATIENCE_MS`: how long the agent keeps working and
    /// retrying its reports while the engine cannot be reached (default
    /// [`DEFAULT_ENGINE_PATIENCE`]), before it stops.
    pub engine_patience: Duration,
    /// `TRACEPARENT`: the attempt's trace (W3C Trace Context), sent with
    /// every call to the engine so they join it.
    pub traceparent: Option<String>,
}

/// The variable naming the agent token's file.
pub const TOKEN_FILE: &str = "GEORGE_AGENT_TOKEN_FILE";

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
        let job_id = need("GEORGE_JOB_ID")?;
        let api_url = need("GEORGE_API_URL")?;
        let token = match get(TOKEN_FILE) {
            Some(path) if !path.trim().is_empty() => std::fs::read_to_string(path.trim())
                .map(|t| t.trim().to_string())
                .map_err(|e| EnvError { name: TOKEN_FILE, problem: format!("cannot read {path}: {e}") })?,
            _ => need("GEORGE_AGENT_TOKEN")?,
        };
        if token.is_empty() {
            return Err(EnvError { name: TOKEN_FILE, problem: "the token file is empty".into() });
        }
        let traceparent = get("TRACEPARENT").map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
        Ok(Self { job_id, api_url, token, heartbeat_interval, engine_patience, traceparent })
    }

    /// Reads the process environment, then hides the token from everything
    /// the agent starts: the token file is removed (the token lives on in
    /// this process's memory only) and the process is made non-dumpable, so
    /// its steps cannot read its memory or environment through `/proc`.
    pub fn from_env() -> Result<Self, EnvError> {
        let env = Self::from_lookup(|k| std::env::var(k).ok())?;
        if let Ok(path) = std::env::var(TOKEN_FILE) {
            match std::fs::remove_file(path.trim()) {
                Ok(()) => {}
                // A mounted Kubernetes Secret is read-only: it stays, readable by this pod alone.
                Err(e) if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {}
                Err(e) => tracing::warn!(error = %e, "cannot remove the token file; steps may be able to read it"),
            }
        }
        if let Err(e) = nix::sys::prctl::set_dumpable(false) {
            tracing::warn!(error = %e, "cannot make the agent non-dumpable");
        }
        Ok(env)
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

    #[test]
    fn the_token_comes_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "gat_abc\n").unwrap();
        let f = file.display().to_string();
        let env = AgentEnv::from_lookup(|k| match k {
            "GEORGE_AGENT_TOKEN_FILE" => Some(f.clone()),
            "GEORGE_AGENT_TOKEN" => Some("from-env".into()),
            "GEORGE_JOB_ID" | "GEORGE_API_URL" => Some("x".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(env.token, "gat_abc", "the file wins over the variable");
        let missing = dir.path().join("gone").display().to_string();
        let err = AgentEnv::from_lookup(|k| match k {
            "GEORGE_AGENT_TOKEN_FILE" => Some(missing.clone()),
            "GEORGE_JOB_ID" | "GEORGE_API_URL" => Some("x".into()),
            _ => None,
        })
        .unwrap_err();
        assert_eq!(err.name, "GEORGE_AGENT_TOKEN_FILE");
        assert!(err.to_string().contains("cannot read"), "{err}");
    }
}
