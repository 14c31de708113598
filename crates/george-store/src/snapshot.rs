//! One revision of a source of desired state, applied as a unit.

use chrono::{DateTime, Utc};
use george_core::manifest::Kind;
use george_core::plan::NewJob;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Everything one source declares at one revision. Applying it is atomic:
/// manifests and jobs of the source are made to match it, and (when
/// `prune`) jobs the source no longer declares are aborted.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Source name (e.g. `git`, `folder`).
    pub source: String,
    /// Revision (commit SHA or content hash).
    pub revision: String,
    /// Non-job manifests: (kind, name, file, body).
    pub manifests: Vec<(Kind, String, String, Value)>,
    /// Jobs; each `origin.source` must equal `source`.
    pub jobs: Vec<NewJob>,
    /// Abort this source's jobs that are not in `jobs`.
    pub prune: bool,
}

/// What applying a snapshot changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Jobs created.
    pub created: Vec<String>,
    /// Jobs whose desired state, priority or (not yet started) steps changed.
    pub updated: Vec<String>,
    /// Jobs aborted because the source no longer declares them.
    pub aborted: Vec<String>,
    /// Jobs (by id) and manifests (as `Kind/name`) that another source
    /// already declares under the same name; they are left alone.
    pub conflicts: Vec<String>,
    /// Whether the revision was already applied (nothing done).
    pub unchanged: bool,
}

/// A manifest as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredManifest {
    /// Kind.
    pub kind: Kind,
    /// Name.
    pub name: String,
    /// Source that declared it.
    pub source: String,
    /// File within the source.
    pub file: String,
    /// Source revision.
    pub revision: String,
    /// The manifest (JSON).
    pub body: Value,
    /// Last applied.
    pub updated_at: DateTime<Utc>,
}
