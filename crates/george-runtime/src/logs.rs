//! Where agents' output is kept: one file per attempt under the data
//! directory, written by the runtime and read by the API, kept after the
//! agent is gone.

use std::path::{Path, PathBuf};

/// The log files of agent attempts.
#[derive(Debug, Clone)]
pub struct AgentLogs {
    dir: PathBuf,
}

impl AgentLogs {
    /// Logs under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The log file of one attempt.
    pub fn path(&self, job_id: &str, attempt: u32) -> PathBuf {
        self.dir.join(job_id).join(format!("{attempt}.log"))
    }

    /// The directory holding every log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
