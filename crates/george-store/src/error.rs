//! Store errors: domain outcomes callers act on, never driver errors.

/// An error from a [`crate::Store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing does not exist.
    #[error("{what} `{id}` not found")]
    NotFound {
        /// What kind of thing.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The write conflicts with the current state (e.g. it changed since it was read).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The writer's attempt is no longer the job's current, live attempt.
    #[error("attempt {attempt} of job `{job}` is superseded ({why})")]
    Superseded {
        /// Job id.
        job: String,
        /// The refused attempt.
        attempt: u32,
        /// Why it is refused.
        why: String,
    },
    /// The request is not valid for this job.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The database failed.
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}
