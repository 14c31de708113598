//! Sources of desired state. A source turns outside state (a folder of
//! manifests, a Git repository, a recac `work_items.json`) into jobs and
//! manifests in the store; it never spawns anything. A Git or folder revision
//! is applied atomically: an invalid manifest rejects the whole revision and
//! the last good state stays.

mod folder;
mod git;
mod runner;
mod workdir;
mod workfile;

pub use folder::{read_manifest_dir, FolderSource, ReadError};
pub use git::{GitSource, GitSourceConfig};
pub use runner::{SourceRunner, SyncRequest};
pub use workdir::WorkDirSource;
pub use workfile::{job_id_for, plan_item, plan_item_with, WorkFileSource, WorkItem};

/// What happens to the jobs of a source, written back where their work came
/// from (a Jira ticket, a GitHub issue): a loop run while this replica runs
/// the engine, following the store's event log from a cursor of its own.
#[async_trait::async_trait]
pub trait WriteBack: Send {
    /// Writes back until `stop`.
    async fn run(self: Box<Self>, stop: tokio_util::sync::CancellationToken);
}

/// One pass of a [`WriteBack`] over the events since its cursor.
#[async_trait::async_trait]
pub trait WriteBackPass: Send {
    /// Why a pass stopped.
    type Error: std::fmt::Display + Send;
    /// Writes back what happened since the last pass.
    async fn pass(&mut self) -> Result<(), Self::Error>;
    /// How long the far side asked to be left alone (a rate limit's `Retry-After`).
    fn retry_after(&self, _error: &Self::Error) -> Option<Duration> {
        None
    }
}

/// The loop of a [`WriteBack`]: a pass on every store event and at least
/// every 5 s, until `stop`. After a failed pass it waits what the pass's
/// `retry_after` says, else a backoff from 1 s doubling to 60 s.
pub async fn follow_events<P: WriteBackPass>(
    store: &dyn Store,
    stop: tokio_util::sync::CancellationToken,
    what: &str,
    p: &mut P,
) {
    let mut events = store.subscribe();
    let mut backoff = Duration::from_secs(1);
    loop {
        let wait = match p.pass().await {
            Ok(()) => {
                backoff = Duration::from_secs(1);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = events.recv() => continue,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, write_back = what, "write-back delayed");
                let wait = p.retry_after(&e).unwrap_or(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(60));
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

use async_trait::async_trait;
use george_core::validate::ManifestSet;
use george_store::{ApplyReport, Snapshot, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// An error that stopped a source from syncing at all (as opposed to a
/// revision it rejected, which is an [`SyncOutcome`] with errors).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the source failed.
    #[error("{0}")]
    Read(String),
    /// A folder of manifests cannot be read.
    #[error(transparent)]
    Folder(#[from] folder::ReadError),
}

/// What one sync of one source did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncOutcome {
    /// Source name.
    pub source: String,
    /// The revision seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// What was applied (absent if rejected or unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<ApplyReport>,
    /// Why the revision was rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Items of an applied revision that were refused alone (a work file's bad items).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

/// Ends a poll of a source that declares no manifests (Jira, GitHub, a work
/// directory): without errors its `revision` is recorded as applied, else as
/// rejected with them; the outcome says so, with what was created.
pub async fn finish_poll(
    store: &dyn george_store::Store,
    mut outcome: SyncOutcome,
    revision: String,
    errors: Vec<String>,
    applied: george_store::ApplyReport,
) -> Result<SyncOutcome, SourceError> {
    if errors.is_empty() {
        let source = outcome.source.clone();
        let snapshot = george_store::Snapshot {
            source,
            revision: revision.clone(),
            manifests: vec![],
            jobs: vec![],
            prune: false,
        };
        store.apply_snapshot(snapshot).await?;
    } else {
        store.reject_revision(&outcome.source, &revision, errors.clone()).await?;
    }
    outcome.revision = Some(revision);
    outcome.errors = errors;
    outcome.applied = Some(applied);
    Ok(outcome)
}

/// A source of desired state.
#[async_trait]
pub trait Source: Send + Sync + std::fmt::Debug + 'static {
    /// Its name in the store (`folder`, `git`, `workfile`).
    fn name(&self) -> &str;
    /// How often it is polled.
    fn interval(&self) -> Duration;
    /// Reads the source and applies what changed.
    async fn sync(&self, store: &dyn Store) -> Result<SyncOutcome, SourceError>;
}

/// Builds the snapshot of a validated manifest set.
pub fn snapshot_of(set: &ManifestSet, source: &str, revision: &str) -> Snapshot {
    let manifests = set
        .manifests
        .iter()
        .filter(|m| m.manifest.kind() != george_core::manifest::Kind::Job)
        .map(|m| {
            let body = match &m.manifest {
                george_core::manifest::Manifest::AgentSpec(x) => serde_json::to_value(x),
                george_core::manifest::Manifest::TaskTemplate(x) => serde_json::to_value(x),
                george_core::manifest::Manifest::Chapter(x) => serde_json::to_value(x),
                george_core::manifest::Manifest::Policy(x) => serde_json::to_value(x),
                george_core::manifest::Manifest::Trigger(x) => serde_json::to_value(x),
                george_core::manifest::Manifest::Job(x) => serde_json::to_value(x),
            }
            .unwrap_or_default();
            (m.manifest.kind(), m.manifest.name().to_string(), m.file.clone(), body)
        })
        .collect();
    let jobs = set
        .jobs
        .iter()
        .cloned()
        .map(|mut j| {
            j.origin.source = source.to_string();
            j.origin.revision = Some(revision.to_string());
            j
        })
        .collect();
    Snapshot { source: source.to_string(), revision: revision.to_string(), manifests, jobs, prune: true }
}

/// Validates a folder's manifests and applies them as one revision, or
/// records why the revision was rejected.
pub(crate) async fn apply_folder(
    store: &dyn Store,
    source: &str,
    revision: &str,
    root: &std::path::Path,
    display_prefix: &str,
) -> Result<SyncOutcome, SourceError> {
    let (root, prefix) = (root.to_path_buf(), display_prefix.to_string());
    let (set, problems) = tokio::task::spawn_blocking(move || load_folder(&root, &prefix))
        .await
        .map_err(|e| SourceError::Read(e.to_string()))??;
    let mut outcome = SyncOutcome { source: source.into(), revision: Some(revision.into()), ..Default::default() };
    match set {
        Some(set) => {
            let report = store.apply_snapshot(snapshot_of(&set, source, revision)).await?;
            if !report.unchanged {
                tracing::info!(
                    source,
                    revision,
                    created = report.created.len(),
                    updated = report.updated.len(),
                    aborted = report.aborted.len(),
                    "applied source revision"
                );
            }
            outcome.applied = Some(report);
        }
        None => {
            outcome.errors = problems.iter().map(|d| d.to_string()).collect();
            tracing::warn!(source, revision, errors = outcome.errors.len(), first = %outcome.errors[0], "rejected source revision");
            store.reject_revision(source, revision, outcome.errors.clone()).await?;
        }
    }
    Ok(outcome)
}

/// Reads and validates a folder: the valid set, or every problem found.
pub fn load_folder(
    root: &std::path::Path,
    display_prefix: &str,
) -> Result<(Option<ManifestSet>, Vec<george_core::manifest::Diagnostic>), SourceError> {
    let (parsed, problems) = read_manifest_dir(root, display_prefix)?;
    if !problems.is_empty() {
        return Ok((None, problems));
    }
    match george_core::validate::validate_set(parsed) {
        Ok(set) => Ok((Some(set), Vec::new())),
        Err(diags) => Ok((None, diags)),
    }
}
