//! recac's directory poller (`--poller file-dir`): every `*.json` file
//! dropped into a directory is one work item (an object with the keys of a
//! work file's items), and becomes one job of a configured template, exactly
//! once. The job is created first (its id is derived from the item's id, so
//! creating it again is a no-op), and only then is the file moved to
//! `processed/`: an engine killed between the two reads the file again and
//! creates nothing new. A file that is not a work item is moved to
//! `rejected/`, and a `job.rejected` event says why (recac logs it and reads
//! it again at every poll).

use crate::workfile::{parse_item, plan_item};
use crate::{Source, SourceError, SyncOutcome};
use async_trait::async_trait;
use george_core::EventKind;
use george_store::{ApplyReport, Created, Store};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The source's name in the store.
const SOURCE: &str = "workdir";
/// Files larger than this are not work items.
const MAX_ITEM_BYTES: u64 = 1 << 20;
/// Where dispatched files go, under the directory.
pub const PROCESSED: &str = "processed";
/// Where files that are not work items go, under the directory.
pub const REJECTED: &str = "rejected";

/// The directory source.
#[derive(Debug, Clone)]
pub struct WorkDirSource {
    dir: PathBuf,
    template: String,
    interval: Duration,
}

impl WorkDirSource {
    /// Reads `dir` every `interval`; each work file dropped there becomes a job of `template`.
    pub fn new(dir: impl Into<PathBuf>, template: impl Into<String>, interval: Duration) -> Self {
        Self { dir: dir.into(), template: template.into(), interval }
    }

    /// The work files waiting in the directory, by name.
    fn waiting(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_file() && path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Moves `file` into the subdirectory `to`.
    fn file_away(&self, file: &Path, to: &str) -> Result<(), String> {
        let name = file.file_name().unwrap_or_default();
        let dest = self.dir.join(to).join(name);
        std::fs::rename(file, &dest).map_err(|e| format!("cannot move {} to {}: {e}", file.display(), dest.display()))
    }

    /// The item a file holds, or why it holds none.
    fn read_item(&self, file: &Path) -> Result<crate::WorkItem, Vec<String>> {
        let at = file.display().to_string();
        match std::fs::metadata(file) {
            Ok(m) if m.len() > MAX_ITEM_BYTES => {
                return Err(vec![format!("{at}: {} bytes is over the 1 MiB limit", m.len())])
            }
            Ok(_) => {}
            Err(e) => return Err(vec![format!("{at}: cannot read: {e}")]),
        }
        let text = std::fs::read_to_string(file).map_err(|e| vec![format!("{at}: cannot read: {e}")])?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| vec![format!("{at}:{}:{}: invalid JSON: {e}", e.line(), e.column())])?;
        parse_item(&at, &value)
    }
}

#[async_trait]
impl Source for WorkDirSource {
    fn name(&self) -> &str {
        SOURCE
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn sync(&self, store: &dyn Store) -> Result<SyncOutcome, SourceError> {
        let dir = self.dir.display().to_string();
        let mut outcome = SyncOutcome { source: SOURCE.into(), ..Default::default() };
        let prepared = [PROCESSED, REJECTED].iter().try_for_each(|d| std::fs::create_dir_all(self.dir.join(d)));
        let files = match prepared.and_then(|()| self.waiting()) {
            Ok(f) => f,
            Err(e) => {
                let error = format!("{dir}: cannot read the directory: {e}");
                store.reject_revision(SOURCE, "unreadable", vec![error.clone()]).await?;
                outcome.errors = vec![error];
                return Ok(outcome);
            }
        };
        let revision = format!("{} files", files.len());
        outcome.revision = Some(revision.clone());
        let catalog = store.catalog().await?;
        if !catalog.templates.contains_key(&self.template) {
            // Nothing is taken from the directory until the template exists.
            let known = catalog.templates.keys().cloned().collect::<Vec<_>>().join(", ");
            let errors =
                vec![format!("{dir}: the work template `{}` is not defined (known: [{known}])", self.template)];
            store.reject_revision(SOURCE, &revision, errors.clone()).await?;
            outcome.errors = errors;
            return Ok(outcome);
        }
        let mut report = ApplyReport::default();
        let mut errors = Vec::new();
        for file in files {
            let planned = self.read_item(&file).and_then(|item| {
                let reference = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
                plan_item(&catalog, &self.template, &item, SOURCE, &reference)
                    .map_err(|e| e.into_iter().map(|e| format!("{}: {e}", file.display())).collect())
            });
            match planned {
                Ok(job) => {
                    let id = job.id.clone();
                    // Created (or found created by an earlier pass) before the file moves.
                    if store.create_job(job, "source:workdir").await? == Created::New {
                        report.created.push(id);
                    }
                    if let Err(e) = self.file_away(&file, PROCESSED) {
                        errors.push(e);
                    }
                }
                Err(reasons) => {
                    for reason in &reasons {
                        tracing::warn!(file = %file.display(), reason = %reason, "work file refused");
                        let data = json!({"source": SOURCE, "file": file.display().to_string(), "reason": reason});
                        store.record_event(None, EventKind::JobRejected, "source:workdir", data).await?;
                    }
                    outcome.refused.extend(reasons);
                    if let Err(e) = self.file_away(&file, REJECTED) {
                        errors.push(e);
                    }
                }
            }
        }
        if !report.created.is_empty() {
            tracing::info!(dir = %dir, created = report.created.len(), "dispatched work files");
        }
        crate::finish_poll(store, outcome, revision, errors, report).await
    }
}
