//! Sub-agents: child jobs an agent creates for its own job (the `spawn`
//! capability). A child is an ordinary job — same scheduler, runtimes,
//! fencing and audit — tied to its parent three ways:
//!
//! - **Identity.** Its id is derived from the parent's and the child's key
//!   ([`child_id`]), so the parent's next attempt asking again for the same
//!   key gets the same child: nothing is created twice. Its origin is
//!   `parent` with the parent's id as reference and the key as revision, and
//!   it carries the label [`PARENT_LABEL`], by which a family is listed.
//! - **Limits.** The parent's AgentSpec bounds its children
//!   (`subagents.maxChildren`) and the depth of the family
//!   (`subagents.maxDepth`, counted from the job that has no parent).
//!   Children inherit the parent's chapter and priority; a child may ask for
//!   a lower priority, never a higher one.
//! - **Lifecycle.** A parent that waits for children is blocked with the
//!   reason `waiting for children: a, b` and runs no agent; when every child
//!   it waits for has ended, George writes their results in the parent's
//!   conversation, which unblocks it ([`settle_wait`]). Pausing or aborting
//!   a parent pauses or aborts its unfinished children; resuming it resumes
//!   the children its pause paused ([`cascade`]).

use george_core::api::{ChildRequest, ChildView};
use george_core::plan::{JobRequest, Origin};
use george_core::record::Job;
use george_core::{DesiredState, JobStatus};
use george_store::{Created, JobFilter, Store, StoreError};
use sha2::{Digest, Sha256};

/// The origin source of a child job.
pub const SOURCE: &str = "parent";
/// The label naming a child's parent.
pub const PARENT_LABEL: &str = "george.dev/parent";
/// How a waiting parent's block reason begins; the keys follow, comma-separated.
pub const WAITING: &str = george_core::api::WAITING_FOR_CHILDREN;
/// The author of the results George writes in a waiting parent's conversation.
pub const AUTHOR: &str = "george:children";

/// Why a child was not created.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The parent's agent may not create children.
    #[error("{0}")]
    Forbidden(String),
    /// A limit of the parent's AgentSpec.
    #[error("{0}")]
    Limit(String),
    /// The request does not fit the catalog (a template, its parameters).
    #[error("{0}")]
    Unfit(String),
    /// The request itself (names the field).
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
        /// Which field.
        field: String,
    },
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(field: &str, message: String) -> ChildError {
    ChildError::Invalid { message, field: field.into() }
}

/// The id of `parent`'s child `key`: `<parent>.<key>`, or, when that is
/// longer than a job id may be, a prefix of it and a digest of both.
pub fn child_id(parent: &str, key: &str) -> String {
    let id = format!("{parent}.{key}");
    if id.len() <= 63 {
        return id;
    }
    let digest = hex::encode(Sha256::digest(id.as_bytes()));
    format!("{}-{}", id[..50].trim_end_matches(['.', '-', '_']), &digest[..12])
}

/// The parent of `job`, if it is a child.
pub fn parent_of(job: &Job) -> Option<&str> {
    (job.origin.source == SOURCE).then_some(job.origin.reference.as_deref()).flatten()
}

/// The children of `parent`, oldest first.
pub async fn children(store: &dyn Store, parent: &str) -> Result<Vec<Job>, StoreError> {
    let selector = george_core::labels::Selector::parse(&format!("{PARENT_LABEL}={parent}"))
        .map_err(|e| StoreError::Invalid(format!("job id `{parent}` as a label value: {e}")))?;
    let filter = JobFilter { selector, ..Default::default() };
    // The label finds them; the origin, which only George sets, proves them.
    Ok(store.list_jobs(&filter).await?.into_iter().filter(|j| parent_of(j) == Some(parent)).collect())
}

/// How many generations above `job` (0: it has no parent).
async fn depth(store: &dyn Store, job: &Job) -> Result<u32, StoreError> {
    let mut depth = 0;
    let mut up = parent_of(job).map(str::to_string);
    while let Some(id) = up {
        depth += 1;
        if depth > 64 {
            break;
        }
        up = store.get_job(&id).await?.as_ref().and_then(parent_of).map(str::to_string);
    }
    Ok(depth)
}

/// Creates `parent`'s child as `req` asks, or finds the one it created for
/// the same key before. Returns the child and whether it is new.
pub async fn spawn(store: &dyn Store, parent: &Job, req: &ChildRequest) -> Result<(Job, bool), ChildError> {
    if !george_core::manifest::is_valid_name(&req.key) || req.key.len() > 40 {
        return Err(invalid(
            "key",
            format!("invalid child key `{}`; use 1-40 lowercase letters, digits, `-`, `_` or `.`", req.key),
        ));
    }
    let catalog = store.catalog().await?;
    let spec = catalog.agents.get(&parent.agent);
    if !spec.is_some_and(|s| s.spec.capabilities.iter().any(|c| c == "spawn")) {
        return Err(ChildError::Forbidden(format!(
            "AgentSpec `{}` does not have the `spawn` capability: its jobs may not create child jobs",
            parent.agent
        )));
    }
    let limits = spec.and_then(|s| s.spec.subagents).unwrap_or_default();
    let id = child_id(&parent.id, &req.key);
    let family = children(store, &parent.id).await?;
    if let Some(existing) = family.iter().find(|c| c.id == id) {
        return Ok((existing.clone(), false));
    }
    if family.len() as u32 >= limits.max_children() {
        return Err(ChildError::Limit(format!(
            "job `{}` has {} children, the most AgentSpec `{}` allows (subagents.maxChildren)",
            parent.id,
            family.len(),
            parent.agent
        )));
    }
    let generation = depth(store, parent).await? + 1;
    if generation > limits.max_depth() {
        return Err(ChildError::Limit(format!(
            "a child of `{}` would be {generation} generations deep; AgentSpec `{}` allows {} (subagents.maxDepth)",
            parent.id,
            parent.agent,
            limits.max_depth()
        )));
    }
    let mut params = req.params.clone();
    if let Some(task) = &req.task {
        params.insert("task".into(), serde_json::Value::String(task.clone()));
    }
    // A child may be less urgent than its parent, never more.
    let priority = req.priority.map_or(parent.priority, |p| p.max(parent.priority));
    let labels = [(PARENT_LABEL.to_string(), parent.id.clone())].into();
    let request = JobRequest {
        id: &id,
        template: &req.template,
        params: &params,
        agent: req.agent.as_deref(),
        chapter: parent.chapter.as_deref(),
        priority,
        desired: DesiredState::Active,
        env: &Default::default(),
        parallelism: None,
        fail_fast: None,
        labels: &labels,
    };
    let origin = Origin { source: SOURCE.into(), reference: Some(parent.id.clone()), revision: Some(req.key.clone()) };
    let job = catalog.plan(&request, origin).map_err(|errs| {
        let why = errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ");
        ChildError::Unfit(format!("child `{}` of template `{}`: {why}", req.key, req.template))
    })?;
    let created = store.create_job(job, &format!("job:{}", parent.id)).await? == Created::New;
    let child = store.get_job(&id).await?.ok_or_else(|| StoreError::NotFound { what: "job", id: id.clone() })?;
    if parent_of(&child) != Some(parent.id.as_str()) {
        return Err(invalid("key", format!("job `{id}` exists and is not a child of `{}`", parent.id)));
    }
    if created {
        tracing::info!(parent = %parent.id, child = %id, template = %req.template, "child job created");
    }
    Ok((child, created))
}

/// What a parent sees of a child: its status, why, and its summaries (or
/// the end of its output).
pub async fn view(store: &dyn Store, child: &Job) -> Result<ChildView, StoreError> {
    let summary = if child.status.is_final() {
        let ev = store.evidence(&child.id).await?;
        let parts: Vec<String> = ev.iter().filter(|e| e.kind == "summary").map(|e| e.content.clone()).collect();
        // A job of `run` steps has no summary: the end of its last output instead.
        let output_tail = || {
            ev.iter().rev().find(|e| e.kind == "output").map(|e| {
                // After the command and its `[try …]` line.
                let lines: Vec<&str> = e.content.lines().skip_while(|l| !l.starts_with("[try ")).skip(1).collect();
                lines[lines.len().saturating_sub(5)..].join("\n")
            })
        };
        if parts.is_empty() {
            output_tail()
        } else {
            Some(parts.join("\n"))
        }
    } else {
        None
    };
    Ok(ChildView {
        tokens: crate::family_budget::share(store, &child.id).await?,
        tokens_used: crate::family_budget::spent(store, &child.id).await?,
        id: child.id.clone(),
        key: child.origin.revision.clone().unwrap_or_default(),
        template: child.template.clone(),
        status: child.status,
        reason: child.reason.clone(),
        summary,
    })
}

/// A blocked parent waiting for children whose every child waited for has
/// ended gets their results in its conversation, which unblocks it.
/// Returns whether it wrote them.
pub async fn settle_wait(store: &dyn Store, parent: &Job) -> Result<bool, StoreError> {
    let Some(keys) = parent
        .reason
        .as_deref()
        .filter(|_| parent.status == JobStatus::Blocked && parent.desired == DesiredState::Active)
        .and_then(|r| r.strip_prefix(WAITING))
    else {
        return Ok(false);
    };
    let family = children(store, &parent.id).await?;
    let mut lines = Vec::new();
    for key in keys.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        let Some(child) = family.iter().find(|c| c.origin.revision.as_deref() == Some(key)) else {
            lines.push(format!("- {key}: no such child"));
            continue;
        };
        if !child.status.is_final() {
            return Ok(false);
        }
        let v = view(store, child).await?;
        let mut line = format!("- {key} ({}): {}", v.id, v.status);
        if let Some(why) = v.reason.filter(|_| v.status != JobStatus::Completed) {
            line.push_str(&format!(" — {why}"));
        }
        if let Some(s) = v.summary {
            line.push_str(&format!("\n  {}", s.replace('\n', "\n  ")));
        }
        lines.push(line);
    }
    // Once per wait (the attempt that waits): that comment unblocks it.
    let settled = format!("{}{}:{}", george_store::job_settings::CHILDREN_SETTLED, parent.id, parent.attempt);
    if store.setting(&settled).await?.is_some() {
        return Ok(false);
    }
    let body = format!("The children this job waited for have ended:\n{}", lines.join("\n"));
    store.add_comment(&parent.id, AUTHOR, &body).await?;
    store.set_setting(&settled, Some(serde_json::json!(true))).await?;
    tracing::info!(parent = %parent.id, "children waited for have ended; parent unblocked");
    Ok(true)
}

/// A child its parent's pause paused follows the parent's resumption even
/// when the parent was resumed before it showed paused (the parent's own
/// pass then never saw it paused). Returns whether it resumed.
pub async fn follow_parent(store: &dyn Store, child: &Job) -> Result<bool, StoreError> {
    let Some(parent) = parent_of(child) else { return Ok(false) };
    let paused_by_parent = format!("parent `{parent}` paused");
    if child.desired != DesiredState::Paused || !child.reason.as_deref().is_some_and(|r| r.ends_with(&paused_by_parent))
    {
        return Ok(false);
    }
    if store.get_job(parent).await?.is_none_or(|p| p.desired != DesiredState::Active) {
        return Ok(false);
    }
    let reason = format!("parent `{parent}` resumed");
    match store.set_desired(&child.id, DesiredState::Active, &format!("job:{parent}"), Some(&reason)).await {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict(_)) | Err(StoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Pausing or aborting `parent` pauses or aborts its unfinished children;
/// resuming it resumes the children its pause paused.
pub async fn cascade(store: &dyn Store, parent: &Job) -> Result<(), StoreError> {
    let paused_by_parent = format!("parent `{}` paused", parent.id);
    for child in children(store, &parent.id).await?.iter().filter(|c| !c.status.is_final()) {
        let (want, reason) = match parent.desired {
            DesiredState::Aborted => (DesiredState::Aborted, format!("parent `{}` aborted", parent.id)),
            DesiredState::Paused => (DesiredState::Paused, paused_by_parent.clone()),
            DesiredState::Active
                if child.desired == DesiredState::Paused
                    && child.reason.as_deref().is_some_and(|r| r.ends_with(paused_by_parent.as_str())) =>
            {
                (DesiredState::Active, format!("parent `{}` resumed", parent.id))
            }
            DesiredState::Active => continue,
        };
        if child.desired == want || child.desired == DesiredState::Aborted {
            continue;
        }
        match store.set_desired(&child.id, want, &format!("job:{}", parent.id), Some(&reason)).await {
            Ok(_) | Err(StoreError::Conflict(_)) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        tracing::info!(parent = %parent.id, child = %child.id, desired = want.as_str(), "cascaded to a child");
    }
    Ok(())
}
