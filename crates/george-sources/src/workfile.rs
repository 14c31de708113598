//! The recac orchestrator's file poller, compatible with its
//! `work_items.json`: a JSON array of objects with `id`, `summary`,
//! `description`, `repo_url` and optional `env_vars`, keys matched as Go
//! matches recac's untagged `WorkItem` fields (case-insensitively: `RepoURL`,
//! `EnvVars`) and as the seed writes them (`repo_url`). A bad item is
//! refused alone (a `job.rejected` event naming it) and the rest run. Each item becomes one job of a configured template,
//! exactly once: the job id is derived from the item id, so a restarted engine
//! (or a re-read file) never dispatches an item twice. Removing an item from
//! the file does not abort its job (the file is a queue, not desired state).

use crate::{Source, SourceError, SyncOutcome};
use async_trait::async_trait;
use george_core::plan::{JobRequest, Origin};
use george_core::{DesiredState, EventKind, Priority};
use george_store::{ApplyReport, Created, Snapshot, Store};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Work files larger than this are refused.
const MAX_WORK_FILE_BYTES: u64 = 16 << 20;

/// One work item.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkItem {
    /// The item's own id (e.g. `TASK-1`).
    pub id: String,
    /// The job id derived from it (e.g. `task-1`).
    pub job_id: String,
    /// One-line summary.
    pub summary: String,
    /// Description.
    pub description: String,
    /// Repository to work in.
    pub repo_url: String,
    /// Extra environment for the agent.
    pub env_vars: BTreeMap<String, String>,
}

/// A work file's items: the good ones, and why each bad one is refused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkFile {
    /// Items to dispatch.
    pub items: Vec<WorkItem>,
    /// One line per refused item, naming its index and key.
    pub refused: Vec<String>,
}

/// A key as recac's Go `encoding/json` matches it against `WorkItem`'s
/// untagged fields (case-insensitively: `RepoURL`, `repourl`), and as the
/// seed writes it (`repo_url`): lowercase, without `_`.
fn canonical(key: &str) -> String {
    key.chars().filter(|c| *c != '_').map(|c| c.to_ascii_lowercase()).collect()
}

/// Parses a work file. A file that is not a JSON array is refused whole
/// (`Err`); a bad item is refused alone and the others are dispatched, as
/// recac does. Every problem names the item's index and key.
pub fn parse_work_items(file: &str, text: &str) -> Result<WorkFile, Vec<String>> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| vec![format!("{file}:{}:{}: invalid JSON: {e}", e.line(), e.column())])?;
    let Value::Array(items) = value else {
        return Err(vec![format!("{file}: expected a JSON array of work items, got {}", kind_of(&value))]);
    };
    let mut out = WorkFile::default();
    for (i, item) in items.iter().enumerate() {
        match parse_item(&format!("{file}: [{i}]"), item) {
            Ok(w) => match out.items.iter().find(|prev| prev.job_id == w.job_id) {
                Some(prev) => out.refused.push(format!(
                    "{file}: [{i}].id: `{}` and `{}` map to the same job id `{}`",
                    w.id, prev.id, w.job_id
                )),
                None => out.items.push(w),
            },
            Err(errors) => out.refused.extend(errors),
        }
    }
    Ok(out)
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One work item (`at` names it in errors: `file: [3]`, or a file of its own).
pub(crate) fn parse_item(at: &str, item: &Value) -> Result<WorkItem, Vec<String>> {
    let key_at = |key: &str| format!("{at}.{key}");
    let Value::Object(map) = item else {
        return Err(vec![format!("{at}: expected an object, got {}", kind_of(item))]);
    };
    let fields: BTreeMap<String, &Value> = map.iter().map(|(k, v)| (canonical(k), v)).collect();
    let mut errors = Vec::new();
    let text = |key: &str, shown: &str, required: bool, errors: &mut Vec<String>| -> String {
        match fields.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) if key == "id" => n.to_string(),
            Some(Value::Null) | None if !required => String::new(),
            None | Some(Value::Null) => {
                errors.push(format!("{}: required", key_at(shown)));
                String::new()
            }
            Some(other) => {
                errors.push(format!("{}: expected a string, got {}", key_at(shown), kind_of(other)));
                String::new()
            }
        }
    };
    let id = text("id", "id", true, &mut errors);
    let summary = text("summary", "summary", false, &mut errors);
    let description = text("description", "description", false, &mut errors);
    let repo_url = text("repourl", "repo_url", false, &mut errors);
    let mut env_vars = BTreeMap::new();
    match fields.get("envvars") {
        None | Some(Value::Null) => {}
        Some(Value::Object(env)) => {
            for (k, v) in env {
                match v {
                    Value::String(s) => {
                        env_vars.insert(k.clone(), s.clone());
                    }
                    Value::Number(_) | Value::Bool(_) => {
                        env_vars.insert(k.clone(), v.to_string());
                    }
                    other => {
                        errors.push(format!("{}.{k}: expected a string, got {}", key_at("env_vars"), kind_of(other)))
                    }
                }
            }
        }
        Some(other) => errors.push(format!("{}: expected an object, got {}", key_at("env_vars"), kind_of(other))),
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let job_id = job_id_for(&id);
    Ok(WorkItem { id, job_id, summary, description, repo_url, env_vars })
}

/// The job of `item`, of `template` (its declared variables filled from
/// the item), from `source` at `revision`.
pub fn plan_item(
    catalog: &george_core::plan::Catalog,
    template: &str,
    item: &WorkItem,
    source: &str,
    revision: &str,
) -> Result<george_core::plan::NewJob, Vec<String>> {
    plan_item_with(catalog, template, item, BTreeMap::new(), source, revision)
}

/// [`plan_item`], with `extra` parameters a source adds (passed, like the
/// item's, only where the template declares them).
pub fn plan_item_with(
    catalog: &george_core::plan::Catalog,
    template: &str,
    item: &WorkItem,
    extra: BTreeMap<String, Value>,
    source: &str,
    revision: &str,
) -> Result<george_core::plan::NewJob, Vec<String>> {
    let declared = catalog.templates.get(template).map(|t| t.spec.variables.clone()).unwrap_or_default();
    let mut all = BTreeMap::from([
        ("id".to_string(), Value::String(item.id.clone())),
        ("summary".to_string(), Value::String(item.summary.clone())),
        ("description".to_string(), Value::String(item.description.clone())),
        ("repo_url".to_string(), Value::String(item.repo_url.clone())),
    ]);
    all.extend(extra);
    // Only what the template declares; the rest stays on the item.
    let params: BTreeMap<String, Value> = all
        .into_iter()
        .filter(|(k, v)| declared.iter().any(|d| &d.name == k) && v != &Value::String(String::new()))
        .collect();
    let req = JobRequest {
        id: &item.job_id,
        template,
        params: &params,
        agent: None,
        chapter: None,
        priority: Priority::default(),
        desired: DesiredState::Active,
        env: &item.env_vars,
        parallelism: None,
        fail_fast: None,
        labels: &Default::default(),
    };
    let origin = Origin { source: source.into(), reference: Some(item.id.clone()), revision: Some(revision.into()) };
    catalog.plan(&req, origin).map_err(|errs| errs.into_iter().map(|e| format!("item `{}`: {e}", item.id)).collect())
}

/// A valid job id from a work item id: lowercase, other characters become `-`.
pub fn job_id_for(item_id: &str) -> String {
    let mut s: String =
        item_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
    s = s.trim_start_matches(['-', '_', '.']).to_string();
    if s.is_empty() {
        let digest = hex::encode(Sha256::digest(item_id.as_bytes()));
        s = format!("item-{}", &digest[..12]);
    }
    if s.len() > 63 {
        let digest = hex::encode(Sha256::digest(item_id.as_bytes()));
        s = format!("{}-{}", &s[..50], &digest[..12]);
    }
    s
}

/// The work-file source.
#[derive(Debug, Clone)]
pub struct WorkFileSource {
    path: PathBuf,
    template: String,
    interval: Duration,
}

impl WorkFileSource {
    /// Reads `path` every `interval`; each item becomes a job of `template`.
    pub fn new(path: impl Into<PathBuf>, template: impl Into<String>, interval: Duration) -> Self {
        Self { path: path.into(), template: template.into(), interval }
    }
}

#[async_trait]
impl Source for WorkFileSource {
    fn name(&self) -> &str {
        "workfile"
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn sync(&self, store: &dyn Store) -> Result<SyncOutcome, SourceError> {
        let file = self.path.display().to_string();
        let mut outcome = SyncOutcome { source: "workfile".into(), ..Default::default() };
        let text = match std::fs::metadata(&self.path) {
            Ok(m) if m.len() > MAX_WORK_FILE_BYTES => {
                Err(format!("{file}: {} bytes is over the 16 MiB limit", m.len()))
            }
            Ok(_) => std::fs::read_to_string(&self.path).map_err(|e| format!("{file}: cannot read: {e}")),
            Err(e) => Err(format!("{file}: cannot read: {e}")),
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                store.reject_revision("workfile", "unreadable", vec![e.clone()]).await?;
                outcome.errors = vec![e];
                return Ok(outcome);
            }
        };
        let revision = format!("sha256:{}", &hex::encode(Sha256::digest(text.as_bytes()))[..16]);
        outcome.revision = Some(revision.clone());
        if store
            .sources()
            .await?
            .iter()
            .any(|s| s.name == "workfile" && s.applied_revision.as_deref() == Some(&revision))
        {
            store.source_checked("workfile").await?;
            return Ok(outcome);
        }
        let WorkFile { items, mut refused } = match parse_work_items(&file, &text) {
            Ok(parsed) => parsed,
            Err(errors) => {
                store.reject_revision("workfile", &revision, errors.clone()).await?;
                outcome.errors = errors;
                return Ok(outcome);
            }
        };
        let catalog = store.catalog().await?;
        if !catalog.templates.contains_key(&self.template) {
            let errors = vec![format!(
                "{file}: the work-file template `{}` is not defined (known: [{}])",
                self.template,
                catalog.templates.keys().cloned().collect::<Vec<_>>().join(", ")
            )];
            store.reject_revision("workfile", &revision, errors.clone()).await?;
            outcome.errors = errors;
            return Ok(outcome);
        }
        // A bad item is refused alone; the others are dispatched.
        let mut planned = Vec::new();
        for item in &items {
            match plan_item(&catalog, &self.template, item, "workfile", &revision) {
                Ok(job) => planned.push(job),
                Err(errs) => refused.extend(errs.into_iter().map(|e| format!("{file}: {e}"))),
            }
        }
        // Each refusal once per revision: an event the operator sees (`george events`, diagnose).
        for reason in &refused {
            tracing::warn!(file = %file, revision = %revision, reason = %reason, "work item refused");
            let data = serde_json::json!({"source": "workfile", "revision": revision, "reason": reason});
            store.record_event(None, EventKind::JobRejected, "source:workfile", data).await?;
        }
        outcome.refused = refused;
        let mut report = ApplyReport::default();
        for job in planned {
            let id = job.id.clone();
            match store.create_job(job, "source:workfile").await? {
                Created::New => report.created.push(id),
                Created::Existed => {
                    if let Some(existing) = store.get_job(&id).await? {
                        if existing.origin.source != "workfile" {
                            report.conflicts.push(id);
                        }
                    }
                }
            }
        }
        // Record the revision (the work file owns no manifests and prunes nothing).
        let snapshot = Snapshot { source: "workfile".into(), revision, manifests: vec![], jobs: vec![], prune: false };
        store.apply_snapshot(snapshot).await?;
        if !report.created.is_empty() {
            tracing::info!(file = %file, created = report.created.len(), "dispatched work items");
        }
        outcome.applied = Some(report);
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_as_go_and_the_seed_write_them_and_ids_become_job_ids() {
        // recac's WorkItem has no JSON tags: Go matches `RepoURL`, `EnvVars`, `ID` case-insensitively.
        let text = r#"[{"ID": "TASK-1", "Summary": "Login", "DESCRIPTION": "d", "RepoURL": "r", "EnvVars": {"A": "1", "N": 2}},
                       {"id": 7, "summary": "numeric id", "repo_url": "s", "env_vars": {"B": "x"}},
                       {"Id": "t", "repourl": "u", "Repo_Url": "u"}]"#;
        let parsed = parse_work_items("w.json", text).unwrap();
        assert!(parsed.refused.is_empty(), "{:?}", parsed.refused);
        let items = parsed.items;
        assert_eq!(items[0].job_id, "task-1");
        assert_eq!((items[0].summary.as_str(), items[0].repo_url.as_str()), ("Login", "r"));
        assert_eq!(items[0].env_vars["N"], "2");
        assert_eq!(
            (items[1].id.as_str(), items[1].repo_url.as_str(), items[1].env_vars["B"].as_str()),
            ("7", "s", "x")
        );
        assert_eq!(items[2].repo_url, "u");
        assert_eq!(job_id_for("Feature/ABC 12"), "feature-abc-12");
        assert!(job_id_for("###").starts_with("item-"));
    }

    #[test]
    fn a_bad_item_is_refused_alone_naming_its_index_and_key() {
        let errs = parse_work_items("w.json", "{\"id\": 1}").unwrap_err();
        assert!(errs[0].contains("expected a JSON array"), "{errs:?}");
        let parsed =
            parse_work_items("w.json", "[{\"summary\": 3}, 4, {\"id\": \"a\"}, {\"id\": \"A\"}, {\"id\": \"b\"}]")
                .unwrap();
        assert_eq!(
            parsed.refused,
            [
                "w.json: [0].id: required",
                "w.json: [0].summary: expected a string, got a number",
                "w.json: [1]: expected an object, got a number",
                "w.json: [3].id: `A` and `a` map to the same job id `a`",
            ]
        );
        let ids: Vec<&str> = parsed.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "the good items are kept");
        let errs = parse_work_items("w.json", "[{\"id\": ").unwrap_err();
        assert!(errs[0].starts_with("w.json:1:"), "{errs:?}");
    }
}
