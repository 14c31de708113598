//! Sources of desired state: applying a revision, recording rejections, and
//! the stored manifests. A source's row is locked while a revision of it is
//! applied or rejected, so engines applying the same source take turns; a
//! manifest changes owner only through a guarded upsert.

use super::jobs;
use super::rows;
use super::Writer;
use crate::rules::{self, spec_digest};
use crate::{ApplyReport, Catalog, Created, Result, Snapshot, StoreError, StoredManifest};
use chrono::{DateTime, Utc};
use george_core::api::SourceView;
use george_core::manifest::Kind;
use george_core::plan::NewJob;
use george_core::{DesiredState, EventKind, JobStatus};
use postgres::types::Json;
use postgres::Transaction;
use serde_json::json;
use std::collections::BTreeSet;

pub fn apply_snapshot(w: &mut Writer<'_>, s: &Snapshot) -> Result<ApplyReport> {
    rules::check_snapshot(s)?;
    let applied = lock_source(w, &s.source)?.applied_revision;
    let mut report = ApplyReport::default();
    if applied.as_deref() == Some(s.revision.as_str()) {
        checked(w, &s.source)?;
        report.unchanged = true;
        return Ok(report);
    }
    let actor = format!("source:{}", s.source);
    apply_manifests(w, s, &actor, &mut report)?;
    for job in &s.jobs {
        apply_job(w, s, job, &actor, &mut report)?;
    }
    if s.prune {
        prune_jobs(w, s, &actor, &mut report)?;
    }
    w.tx.execute(
        "UPDATE sources SET applied_revision = $2, applied_at = $3, rejected_revision = NULL, errors = '[]', \
         checked_at = $3 WHERE name = $1",
        &[&s.source, &s.revision, &w.now],
    )?;
    w.event(
        None,
        None,
        EventKind::SourceApplied,
        &actor,
        json!({"revision": s.revision, "created": report.created, "updated": report.updated,
               "aborted": report.aborted, "conflicts": report.conflicts}),
    )?;
    Ok(report)
}

/// A source's revisions as stored.
struct SourceRevisions {
    applied_revision: Option<String>,
    rejected_revision: Option<String>,
}

/// Locks a source's row, creating it if the source is new.
fn lock_source(w: &mut Writer<'_>, name: &str) -> Result<SourceRevisions> {
    w.tx.execute(
        "INSERT INTO sources (name, checked_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&name, &w.now],
    )?;
    let row =
        w.tx.query_one("SELECT applied_revision, rejected_revision FROM sources WHERE name = $1 FOR UPDATE", &[&name])?;
    Ok(SourceRevisions {
        applied_revision: row.try_get("applied_revision")?,
        rejected_revision: row.try_get("rejected_revision")?,
    })
}

/// Upserts the manifests the revision declares and deletes those it no
/// longer does. A name another source owns is left alone (first come,
/// first served).
fn apply_manifests(w: &mut Writer<'_>, s: &Snapshot, actor: &str, report: &mut ApplyReport) -> Result<()> {
    let mut keep = BTreeSet::new();
    for (kind, name, file, body) in &s.manifests {
        let claimed = w.tx.execute(
            "INSERT INTO manifests (kind, name, source, file, revision, body, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (kind, name) DO UPDATE SET file = EXCLUDED.file, revision = EXCLUDED.revision, \
             body = EXCLUDED.body, updated_at = EXCLUDED.updated_at WHERE manifests.source = EXCLUDED.source",
            &[&kind.as_str(), name, &s.source, file, &s.revision, body, &w.now],
        )?;
        if claimed == 0 {
            let owner: String =
                w.tx.query_one("SELECT source FROM manifests WHERE kind = $1 AND name = $2", &[&kind.as_str(), name])?
                    .try_get("source")?;
            report.conflicts.push(format!("{kind}/{name}"));
            w.event(
                None,
                None,
                EventKind::ManifestSourceConflict,
                actor,
                json!({"kind": kind.as_str(), "name": name, "owner": owner, "revision": s.revision}),
            )?;
            continue;
        }
        keep.insert((kind.as_str().to_string(), name.clone()));
    }
    let owned = w.tx.query("SELECT kind, name FROM manifests WHERE source = $1 ORDER BY kind, name", &[&s.source])?;
    for row in owned {
        let key: (String, String) = (row.try_get("kind")?, row.try_get("name")?);
        if keep.contains(&key) {
            continue;
        }
        w.tx.execute("DELETE FROM manifests WHERE kind = $1 AND name = $2", &[&key.0, &key.1])?;
        w.event(
            None,
            None,
            EventKind::ManifestDeleted,
            actor,
            json!({"kind": key.0, "name": key.1, "revision": s.revision}),
        )?;
    }
    Ok(())
}

/// A job a snapshot declares, as stored.
struct DeclaredJob {
    source: String,
    spec_digest: String,
    status: JobStatus,
    attempt: u32,
    desired: String,
    priority: String,
}

/// The stored job with this id, its row locked until the transaction ends.
fn lock_declared_job(tx: &mut Transaction<'_>, id: &str) -> Result<Option<DeclaredJob>> {
    let row = tx.query_opt(
        "SELECT origin_source, spec_digest, status, attempt, desired, priority FROM jobs WHERE id = $1 FOR UPDATE",
        &[&id],
    )?;
    row.map(|r| {
        Ok(DeclaredJob {
            source: r.try_get("origin_source")?,
            spec_digest: r.try_get("spec_digest")?,
            status: rows::get_parsed(&r, "status")?,
            attempt: rows::get_u32(&r, "attempt")?,
            desired: r.try_get("desired")?,
            priority: r.try_get("priority")?,
        })
    })
    .transpose()
}

/// Creates the job, or brings the stored one in line with the revision.
fn apply_job(w: &mut Writer<'_>, s: &Snapshot, job: &NewJob, actor: &str, report: &mut ApplyReport) -> Result<()> {
    let stored = match lock_declared_job(&mut w.tx, &job.id)? {
        Some(stored) => stored,
        None => {
            if jobs::create(w, job, actor)? == Created::New {
                report.created.push(job.id.clone());
                return Ok(());
            }
            // Another engine created it since we looked: apply to that one.
            lock_declared_job(&mut w.tx, &job.id)?
                .ok_or_else(|| StoreError::NotFound { what: "job", id: job.id.clone() })?
        }
    };
    if stored.source != s.source {
        report.conflicts.push(job.id.clone());
        return w.event(
            Some(&job.id),
            None,
            EventKind::JobSourceConflict,
            actor,
            json!({"owner": stored.source, "revision": s.revision}),
        );
    }
    let mut changed = false;
    let new_digest = spec_digest(job);
    if new_digest != stored.spec_digest {
        if stored.status == JobStatus::Pending && stored.attempt == 0 {
            replace_definition(w, job, &new_digest)?;
            w.event(Some(&job.id), None, EventKind::JobUpdated, actor, json!({"revision": s.revision}))?;
            changed = true;
        } else {
            // A started job keeps the work it was given; say so once per revision.
            w.event(
                Some(&job.id),
                None,
                EventKind::JobSpecChangeIgnored,
                actor,
                json!({"revision": s.revision,
                       "reason": format!("the job is {}; its steps no longer change", stored.status)}),
            )?;
        }
    }
    if stored.priority != job.priority.as_str() {
        w.tx.execute("UPDATE jobs SET priority = $2 WHERE id = $1", &[&job.id, &job.priority.as_str()])?;
        changed = true;
    }
    if stored.desired != job.desired.as_str() && !stored.status.is_final() {
        jobs::set_desired(w, &job.id, job.desired, actor, Some(&format!("revision {}", s.revision)))?;
        changed = true;
    }
    w.tx.execute(
        "UPDATE jobs SET origin_rev = $2, origin_ref = $3, updated_at = CASE WHEN $4 THEN $5 ELSE updated_at END \
         WHERE id = $1",
        &[&job.id, &s.revision, &job.origin.reference, &changed, &w.now],
    )?;
    if changed {
        report.updated.push(job.id.clone());
    }
    Ok(())
}

/// Replaces the definition of a job that never started.
fn replace_definition(w: &mut Writer<'_>, job: &NewJob, digest: &str) -> Result<()> {
    w.tx.execute(
        "UPDATE jobs SET template = $2, agent = $3, params = $4, env = $5, max_attempts = $6, \
         chapter = $7, spec_digest = $8 WHERE id = $1",
        &[
            &job.id,
            &job.template,
            &job.agent,
            &Json(&job.params),
            &Json(&job.env),
            &job.max_attempts.map(i64::from),
            &job.chapter,
            &digest,
        ],
    )?;
    w.tx.execute("DELETE FROM steps WHERE job_id = $1", &[&job.id])?;
    jobs::insert_steps(&mut w.tx, &job.id, &job.steps, w.now)
}

/// Aborts the source's unfinished jobs that the revision no longer declares.
fn prune_jobs(w: &mut Writer<'_>, s: &Snapshot, actor: &str, report: &mut ApplyReport) -> Result<()> {
    let declared: BTreeSet<&str> = s.jobs.iter().map(|j| j.id.as_str()).collect();
    let rows = w.tx.query(
        "SELECT id FROM jobs WHERE origin_source = $1 AND status NOT IN ('completed', 'failed', 'aborted') \
         AND desired <> $2 ORDER BY created_at, id FOR UPDATE",
        &[&s.source, &DesiredState::Aborted.as_str()],
    )?;
    let reason = format!("removed from source {} at revision {}", s.source, s.revision);
    for row in rows {
        let id: String = row.try_get("id")?;
        if declared.contains(id.as_str()) {
            continue;
        }
        jobs::set_desired(w, &id, DesiredState::Aborted, actor, Some(&reason))?;
        report.aborted.push(id);
    }
    Ok(())
}

pub fn reject_revision(w: &mut Writer<'_>, source: &str, revision: &str, errors: &[String]) -> Result<()> {
    let previous = lock_source(w, source)?.rejected_revision;
    w.tx.execute(
        "UPDATE sources SET rejected_revision = $2, errors = $3, checked_at = $4 WHERE name = $1",
        &[&source, &revision, &Json(errors), &w.now],
    )?;
    if previous.as_deref() != Some(revision) {
        w.event(
            None,
            None,
            EventKind::SourceRejected,
            &format!("source:{source}"),
            json!({"revision": revision, "errors": errors}),
        )?;
    }
    Ok(())
}

pub fn checked(w: &mut Writer<'_>, source: &str) -> Result<()> {
    w.tx.execute(
        "INSERT INTO sources (name, checked_at) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET checked_at = EXCLUDED.checked_at",
        &[&source, &w.now],
    )?;
    Ok(())
}

pub fn list(c: &mut Transaction<'_>) -> Result<Vec<SourceView>> {
    let rows = c.query(
        "SELECT name, applied_revision, applied_at, rejected_revision, errors, checked_at FROM sources ORDER BY name",
        &[],
    )?;
    rows.iter()
        .map(|r| {
            Ok(SourceView {
                name: r.try_get("name")?,
                applied_revision: r.try_get("applied_revision")?,
                applied_at: r.try_get("applied_at")?,
                rejected_revision: r.try_get("rejected_revision")?,
                errors: rows::get_json(r, "errors")?,
                checked_at: r.try_get("checked_at")?,
            })
        })
        .collect()
}

pub fn manifests(c: &mut Transaction<'_>, kind: Option<Kind>) -> Result<Vec<StoredManifest>> {
    let rows = c.query(
        "SELECT kind, name, source, file, revision, body, updated_at FROM manifests \
         WHERE $1::text IS NULL OR kind = $1 ORDER BY kind, name",
        &[&kind.map(|k| k.as_str())],
    )?;
    rows.iter()
        .map(|r| {
            Ok(StoredManifest {
                kind: rows::get_parsed(r, "kind")?,
                name: r.try_get("name")?,
                source: r.try_get("source")?,
                file: r.try_get("file")?,
                revision: r.try_get("revision")?,
                body: r.try_get("body")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect()
}

pub fn trigger_mark(c: &mut Transaction<'_>, name: &str) -> Result<Option<DateTime<Utc>>> {
    let row = c.query_opt("SELECT watermark FROM trigger_marks WHERE name = $1", &[&name])?;
    Ok(row.map(|r| r.try_get("watermark")).transpose()?)
}

pub fn set_trigger_mark(w: &mut Writer<'_>, name: &str, watermark: DateTime<Utc>) -> Result<()> {
    w.tx.execute(
        "INSERT INTO trigger_marks (name, watermark, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET watermark = EXCLUDED.watermark, updated_at = EXCLUDED.updated_at",
        &[&name, &watermark, &w.now],
    )?;
    Ok(())
}

pub fn catalog(c: &mut Transaction<'_>) -> Result<Catalog> {
    rules::catalog(manifests(c, None)?)
}
