//! Sources of desired state: applying a revision, recording rejections, and
//! the stored manifests.

use super::jobs;
use super::rows::{self, ts};
use super::Writer;
use crate::rules::{self, spec_digest};
use crate::{ApplyReport, Catalog, Result, Snapshot, StoreError, StoredManifest};
use george_core::api::SourceView;
use george_core::manifest::Kind;
use george_core::{DesiredState, EventKind, JobStatus};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::json;
use std::collections::BTreeSet;

pub fn apply_snapshot(w: &mut Writer<'_>, s: &Snapshot) -> Result<ApplyReport> {
    rules::check_snapshot(s)?;
    let applied: Option<Option<String>> =
        w.tx.query_row("SELECT applied_revision FROM sources WHERE name = ?1", [&s.source], |r| r.get(0)).optional()?;
    let mut report = ApplyReport::default();
    if applied.flatten().as_deref() == Some(s.revision.as_str()) {
        checked(w, &s.source)?;
        report.unchanged = true;
        return Ok(report);
    }
    let now = ts(w.now);
    let actor = format!("source:{}", s.source);

    // Manifests: upsert what the revision declares, delete what it no longer does.
    let mut keep = BTreeSet::new();
    for (kind, name, file, body) in &s.manifests {
        let owner: Option<String> =
            w.tx.query_row(
                "SELECT source FROM manifests WHERE kind = ?1 AND name = ?2",
                params![kind.as_str(), name],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(owner) = owner.filter(|o| o != &s.source) {
            // Another source owns this name; first come, first served.
            report.conflicts.push(format!("{kind}/{name}"));
            w.event(
                None,
                None,
                EventKind::ManifestSourceConflict,
                &actor,
                json!({"kind": kind.as_str(), "name": name, "owner": owner, "revision": s.revision}),
            )?;
            continue;
        }
        w.tx.execute(
            "INSERT INTO manifests (kind, name, source, file, revision, body, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (kind, name) DO UPDATE SET source = excluded.source, file = excluded.file, \
             revision = excluded.revision, body = excluded.body, updated_at = excluded.updated_at",
            params![kind.as_str(), name, s.source, file, s.revision, body.to_string(), now],
        )?;
        keep.insert((kind.as_str().to_string(), name.clone()));
    }
    let owned: Vec<(String, String)> = {
        let mut stmt = w.tx.prepare_cached("SELECT kind, name FROM manifests WHERE source = ?1")?;
        let rows = stmt.query_map([&s.source], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for key in owned.into_iter().filter(|k| !keep.contains(k)) {
        w.tx.execute("DELETE FROM manifests WHERE kind = ?1 AND name = ?2", params![key.0, key.1])?;
        w.event(
            None,
            None,
            EventKind::ManifestDeleted,
            &actor,
            json!({"kind": key.0, "name": key.1, "revision": s.revision}),
        )?;
    }

    // Jobs.
    let mut declared = BTreeSet::new();
    for job in &s.jobs {
        declared.insert(job.id.clone());
        let existing: Option<(String, String, String, u32, String, String)> =
            w.tx.query_row(
                "SELECT origin_source, spec_digest, status, attempt, desired, priority FROM jobs WHERE id = ?1",
                [&job.id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()?;
        let Some((source, old_digest, status, attempt, desired, priority)) = existing else {
            jobs::create(w, job, &actor)?;
            report.created.push(job.id.clone());
            continue;
        };
        if source != s.source {
            report.conflicts.push(job.id.clone());
            w.event(
                Some(&job.id),
                None,
                EventKind::JobSourceConflict,
                &actor,
                json!({"owner": source, "revision": s.revision}),
            )?;
            continue;
        }
        let status: JobStatus = status.parse().map_err(|e| StoreError::Backend(Box::new(e)))?;
        let mut changed = false;
        let new_digest = spec_digest(job);
        if new_digest != old_digest {
            if status == JobStatus::Pending && attempt == 0 {
                w.tx.execute(
                    "UPDATE jobs SET template = ?2, agent = ?3, params = ?4, env = ?5, max_attempts = ?6, \
                     chapter = ?7, spec_digest = ?8 WHERE id = ?1",
                    params![
                        job.id,
                        job.template,
                        job.agent,
                        serde_json::to_string(&job.params)?,
                        serde_json::to_string(&job.env)?,
                        job.max_attempts,
                        job.chapter,
                        new_digest
                    ],
                )?;
                w.tx.execute("DELETE FROM steps WHERE job_id = ?1", [&job.id])?;
                jobs::insert_steps(w.tx, &job.id, &job.steps, &now)?;
                w.event(Some(&job.id), None, EventKind::JobUpdated, &actor, json!({"revision": s.revision}))?;
                changed = true;
            } else {
                // A started job keeps the work it was given; say so once per revision.
                w.event(
                    Some(&job.id),
                    None,
                    EventKind::JobSpecChangeIgnored,
                    &actor,
                    json!({"revision": s.revision, "reason": format!("the job is {status}; its steps no longer change")}),
                )?;
            }
        }
        if priority != job.priority.as_str() {
            w.tx.execute("UPDATE jobs SET priority = ?2 WHERE id = ?1", params![job.id, job.priority.as_str()])?;
            changed = true;
        }
        if desired != job.desired.as_str() && !status.is_final() {
            jobs::set_desired(w, &job.id, job.desired, &actor, Some(&format!("revision {}", s.revision)))?;
            changed = true;
        }
        w.tx.execute(
            "UPDATE jobs SET origin_rev = ?2, origin_ref = ?3, updated_at = CASE WHEN ?4 THEN ?5 ELSE updated_at END \
             WHERE id = ?1",
            params![job.id, s.revision, job.origin.reference, changed, now],
        )?;
        if changed {
            report.updated.push(job.id.clone());
        }
    }
    if s.prune {
        let owned: Vec<(String, String, String)> = {
            let mut stmt = w.tx.prepare_cached("SELECT id, status, desired FROM jobs WHERE origin_source = ?1")?;
            let rows = stmt.query_map([&s.source], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (id, status, desired) in owned {
            let status: JobStatus = status.parse().map_err(|e| StoreError::Backend(Box::new(e)))?;
            if declared.contains(&id) || status.is_final() || desired == DesiredState::Aborted.as_str() {
                continue;
            }
            let reason = format!("removed from source {} at revision {}", s.source, s.revision);
            jobs::set_desired(w, &id, DesiredState::Aborted, &actor, Some(&reason))?;
            report.aborted.push(id);
        }
    }
    w.tx.execute(
        "INSERT INTO sources (name, applied_revision, applied_at, rejected_revision, errors, checked_at) \
         VALUES (?1, ?2, ?3, NULL, '[]', ?3) \
         ON CONFLICT (name) DO UPDATE SET applied_revision = excluded.applied_revision, \
         applied_at = excluded.applied_at, rejected_revision = NULL, errors = '[]', checked_at = excluded.checked_at",
        params![s.source, s.revision, now],
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

pub fn reject_revision(w: &mut Writer<'_>, source: &str, revision: &str, errors: &[String]) -> Result<()> {
    let now = ts(w.now);
    let previous: Option<Option<String>> =
        w.tx.query_row("SELECT rejected_revision FROM sources WHERE name = ?1", [source], |r| r.get(0)).optional()?;
    w.tx.execute(
        "INSERT INTO sources (name, rejected_revision, errors, checked_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO UPDATE SET rejected_revision = excluded.rejected_revision, \
         errors = excluded.errors, checked_at = excluded.checked_at",
        params![source, revision, serde_json::to_string(errors)?, now],
    )?;
    if previous.flatten().as_deref() != Some(revision) {
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
        "INSERT INTO sources (name, checked_at) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET checked_at = excluded.checked_at",
        params![source, ts(w.now)],
    )?;
    Ok(())
}

pub fn list(c: &Connection) -> Result<Vec<SourceView>> {
    let mut stmt = c.prepare_cached(
        "SELECT name, applied_revision, applied_at, rejected_revision, errors, checked_at FROM sources ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(SourceView {
            name: r.get("name")?,
            applied_revision: r.get("applied_revision")?,
            applied_at: rows::get_opt_ts(r, "applied_at")?,
            rejected_revision: r.get("rejected_revision")?,
            errors: rows::get_json(r, "errors")?,
            checked_at: rows::get_ts(r, "checked_at")?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn manifests(c: &Connection, kind: Option<Kind>) -> Result<Vec<StoredManifest>> {
    let mut stmt = c.prepare_cached(
        "SELECT kind, name, source, file, revision, body, updated_at FROM manifests \
         WHERE ?1 IS NULL OR kind = ?1 ORDER BY kind, name",
    )?;
    let rows = stmt.query_map([kind.map(|k| k.as_str())], |r| {
        Ok(StoredManifest {
            kind: rows::get_parsed::<KindText>(r, "kind")?.0,
            name: r.get("name")?,
            source: r.get("source")?,
            file: r.get("file")?,
            revision: r.get("revision")?,
            body: rows::get_json(r, "body")?,
            updated_at: rows::get_ts(r, "updated_at")?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// `Kind` parsing with an error type rusqlite can carry.
struct KindText(Kind);

impl std::str::FromStr for KindText {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        s.parse().map(KindText).map_err(StoreError::Invalid)
    }
}

pub fn trigger_mark(c: &Connection, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    let t: Option<String> =
        c.query_row("SELECT watermark FROM trigger_marks WHERE name = ?1", [name], |r| r.get(0)).optional()?;
    Ok(t.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.to_utc()))
}

pub fn set_trigger_mark(w: &mut Writer<'_>, name: &str, watermark: chrono::DateTime<chrono::Utc>) -> Result<()> {
    w.tx.execute(
        "INSERT INTO trigger_marks (name, watermark, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET watermark = excluded.watermark, updated_at = excluded.updated_at",
        params![name, ts(watermark), ts(w.now)],
    )?;
    Ok(())
}

pub fn catalog(c: &Connection) -> Result<Catalog> {
    rules::catalog(manifests(c, None)?)
}
