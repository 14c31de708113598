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
    /// The writer's leadership term is over: a deposed leader may not write.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The database failed.
    #[error("database error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

impl StoreError {
    /// Names the item of a batch that was refused (`reports[2]: …`).
    pub(crate) fn in_report(self, i: usize) -> Self {
        match self {
            StoreError::Invalid(m) => StoreError::Invalid(format!("reports[{i}]: {m}")),
            StoreError::Conflict(m) => StoreError::Conflict(format!("reports[{i}]: {m}")),
            // The job was found (the batch is fenced first): what is missing
            // is named by the item, so the request is what is wrong.
            StoreError::NotFound { what, id } => StoreError::Invalid(format!("reports[{i}]: {what} `{id}` not found")),
            other => other,
        }
    }
}

/// PostgreSQL errors that are domain outcomes; everything else is `Backend`.
/// A duplicate attempt number means another engine started an attempt at
/// the same time (the SQLite store reports that race as a conflict too), and
/// text with a NUL character is refused: PostgreSQL cannot store it.
impl From<::postgres::Error> for StoreError {
    fn from(e: ::postgres::Error) -> Self {
        use ::postgres::error::SqlState;
        let Some(db) = e.as_db_error() else {
            return StoreError::Backend(Box::new(PostgresError(e)));
        };
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION && db.constraint() == Some("attempts_pkey") {
            return StoreError::Conflict(format!("another attempt started at the same time ({})", db.message()));
        }
        if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE || *code == SqlState::UNTRANSLATABLE_CHARACTER {
            return StoreError::Invalid(format!("PostgreSQL cannot store this text: {}", db.message()));
        }
        StoreError::Backend(Box::new(PostgresError(e)))
    }
}

/// A PostgreSQL error, displayed with its cause: the driver's own display
/// names only the kind of error (e.g. `db error`).
#[derive(Debug)]
pub(crate) struct PostgresError(pub(crate) ::postgres::Error);

impl std::fmt::Display for PostgresError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        match std::error::Error::source(&self.0) {
            Some(cause) => write!(f, ": {cause}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for PostgresError {}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}
