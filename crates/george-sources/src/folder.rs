//! A folder of manifests (`agents/ templates/ jobs/ chapters/ policies/` or
//! any layout: every `*.yaml`/`*.yml` below the root is read).

use crate::{apply_folder, Source, SourceError, SyncOutcome};
use async_trait::async_trait;
use george_core::manifest::{parse_manifests, Diagnostic, ParsedManifest};
use george_store::Store;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Files larger than this are refused rather than parsed.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Why a folder of manifests cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The folder is missing or not a directory.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A directory or file in it cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn unreadable(path: &Path) -> impl FnOnce(std::io::Error) -> ReadError + '_ {
    move |source| ReadError::Io { path: path.to_path_buf(), source }
}

fn yaml_files(root: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(unreadable(&dir))?;
        for entry in entries {
            let entry = entry.map_err(unreadable(&dir))?;
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let ft = entry.file_type().map_err(unreadable(&path))?;
            if ft.is_dir() {
                stack.push(path);
            } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads and parses every manifest under `root`. File names in results are
/// relative to `root`, prefixed with `display_prefix`. Errors only if the
/// folder cannot be read at all.
pub fn read_manifest_dir(
    root: &Path,
    display_prefix: &str,
) -> Result<(Vec<ParsedManifest>, Vec<Diagnostic>), ReadError> {
    if !root.is_dir() {
        return Err(ReadError::NotADirectory(root.to_path_buf()));
    }
    let mut manifests = Vec::new();
    let mut problems = Vec::new();
    for path in yaml_files(root)? {
        let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().to_string();
        let name = format!("{display_prefix}{rel}");
        match std::fs::metadata(&path) {
            Ok(m) if m.len() > MAX_MANIFEST_BYTES => {
                problems
                    .push(Diagnostic::new(&name, format!("file is {} bytes; manifests are limited to 1 MiB", m.len())));
                continue;
            }
            Err(e) => {
                problems.push(Diagnostic::new(&name, format!("cannot read: {e}")));
                continue;
            }
            _ => {}
        }
        match std::fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => {
                    let (ms, ds) = parse_manifests(&name, &text);
                    manifests.extend(ms);
                    problems.extend(ds);
                }
                Err(_) => problems.push(Diagnostic::new(&name, "not UTF-8 text")),
            },
            Err(e) => problems.push(Diagnostic::new(&name, format!("cannot read: {e}"))),
        }
    }
    Ok((manifests, problems))
}

/// A content hash of every manifest file under `root`: the folder's revision.
pub fn folder_revision(root: &Path) -> Result<String, ReadError> {
    let mut h = Sha256::new();
    for path in yaml_files(root)? {
        h.update(path.strip_prefix(root).unwrap_or(&path).to_string_lossy().as_bytes());
        h.update([0]);
        h.update(std::fs::read(&path).map_err(unreadable(&path))?);
        h.update([0]);
    }
    Ok(format!("sha256:{}", &hex::encode(h.finalize())[..16]))
}

/// A folder of manifests on the engine's disk.
#[derive(Debug, Clone)]
pub struct FolderSource {
    path: PathBuf,
    interval: Duration,
}

impl FolderSource {
    /// Reads `path` every `interval`.
    pub fn new(path: impl Into<PathBuf>, interval: Duration) -> Self {
        Self { path: path.into(), interval }
    }
}

#[async_trait]
impl Source for FolderSource {
    fn name(&self) -> &str {
        "folder"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn sync(&self, store: &dyn Store) -> Result<SyncOutcome, SourceError> {
        let root = self.path.clone();
        let revision = tokio::task::spawn_blocking(move || folder_revision(&root))
            .await
            .map_err(|e| SourceError::Read(e.to_string()))??;
        if store.sources().await?.iter().any(|s| s.name == "folder" && s.applied_revision.as_deref() == Some(&revision))
        {
            store.source_checked("folder").await?;
            return Ok(SyncOutcome { source: "folder".into(), revision: Some(revision), ..Default::default() });
        }
        apply_folder(store, "folder", &revision, &self.path, "").await
    }
}
