//! Sources of desired state: applying a revision, recording rejections, and
//! the stored manifests. A source's row is locked while a revision of it is
//! applied or rejected, so engines applying the same source take turns; a
//! manifest changes owner only through a guarded upsert.

use crate::dialect::{args, Arg, Db, Writer};
use crate::jobs;
use crate::rules::{self, spec_digest};
use crate::views;
use crate::{ApplyReport, Catalog, Created, Result, Snapshot, StoreError, StoredManifest};
use chrono::{DateTime, Utc};
use george_core::api::SourceView;
use george_core::manifest::Kind;
use george_core::plan::NewJob;
use george_core::{DesiredState, EventKind, JobStatus};
use serde_json::json;
use std::collections::BTreeSet;

pub fn apply_snapshot(w: &mut Writer<impl Db>, s: &Snapshot) -> Result<ApplyReport> {
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
    w.db.exec(
        "UPDATE sources SET applied_revision = $2, applied_at = $3, rejected_revision = NULL, errors = '[]', \
         checked_at = $3 WHERE name = $1",
        args![&s.source, &s.revision, w.now],
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
fn lock_source<D: Db>(w: &mut Writer<D>, name: &str) -> Result<SourceRevisions> {
    w.db.exec(
        "INSERT INTO sources (name, checked_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        args![name, w.now],
    )?;
    w.db.one(
        &format!("SELECT applied_revision, rejected_revision FROM sources WHERE name = $1{}", D::LOCK),
        args![name],
        |r| {
            Ok(SourceRevisions {
                applied_revision: r.text("applied_revision")?,
                rejected_revision: r.text("rejected_revision")?,
            })
        },
    )
}

/// Upserts the manifests the revision declares and deletes those it no
/// longer does. A name another source owns is left alone (first come,
/// first served).
fn apply_manifests(w: &mut Writer<impl Db>, s: &Snapshot, actor: &str, report: &mut ApplyReport) -> Result<()> {
    let mut keep = BTreeSet::new();
    for (kind, name, file, body) in &s.manifests {
        let claimed = w.db.exec(
            "INSERT INTO manifests (kind, name, source, file, revision, body, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (kind, name) DO UPDATE SET file = excluded.file, revision = excluded.revision, \
             body = excluded.body, updated_at = excluded.updated_at WHERE manifests.source = excluded.source",
            &[
                Arg::Text(kind.as_str()),
                Arg::Text(name),
                Arg::Text(&s.source),
                Arg::Text(file),
                Arg::Text(&s.revision),
                Arg::json(body)?,
                Arg::Time(w.now),
            ],
        )?;
        if claimed == 0 {
            let owner = w.db.one(
                "SELECT source FROM manifests WHERE kind = $1 AND name = $2",
                args![kind.as_str(), name],
                |r| r.string("source"),
            )?;
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
    let owned =
        w.db.all("SELECT kind, name FROM manifests WHERE source = $1 ORDER BY kind, name", args![&s.source], |r| {
            Ok((r.string("kind")?, r.string("name")?))
        })?;
    for key in owned.into_iter().filter(|k| !keep.contains(k)) {
        w.db.exec("DELETE FROM manifests WHERE kind = $1 AND name = $2", args![&key.0, &key.1])?;
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
    labels: george_core::labels::Labels,
}

/// The stored job with this id, its row locked until the transaction ends.
fn lock_declared_job<D: Db>(c: &mut D, id: &str) -> Result<Option<DeclaredJob>> {
    c.opt(
        &format!(
            "SELECT origin_source, spec_digest, status, attempt, desired, priority, labels FROM jobs WHERE id = $1{}",
            D::LOCK
        ),
        args![id],
        |r| {
            Ok(DeclaredJob {
                source: r.string("origin_source")?,
                spec_digest: r.string("spec_digest")?,
                status: r.parsed("status")?,
                attempt: r.u32("attempt")?,
                desired: r.string("desired")?,
                priority: r.string("priority")?,
                labels: r.json("labels")?,
            })
        },
    )
}

/// Creates the job, or brings the stored one in line with the revision.
fn apply_job(w: &mut Writer<impl Db>, s: &Snapshot, job: &NewJob, actor: &str, report: &mut ApplyReport) -> Result<()> {
    let stored = match lock_declared_job(&mut w.db, &job.id)? {
        Some(stored) => stored,
        None => {
            if jobs::create(w, job, actor)? == Created::New {
                report.created.push(job.id.clone());
                return Ok(());
            }
            // Another engine created it since we looked: apply to that one.
            lock_declared_job(&mut w.db, &job.id)?
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
            jobs::replace_definition(w, job, &new_digest)?;
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
        w.db.exec("UPDATE jobs SET priority = $2 WHERE id = $1", args![&job.id, job.priority.as_str()])?;
        changed = true;
    }
    if stored.labels != job.labels {
        // Labels describe the job; they change whatever it is doing.
        w.db.exec("UPDATE jobs SET labels = $2 WHERE id = $1", &[Arg::Text(&job.id), Arg::json(&job.labels)?])?;
        changed = true;
    }
    if stored.desired != job.desired.as_str() && !stored.status.is_final() {
        jobs::set_desired(w, &job.id, job.desired, actor, Some(&format!("revision {}", s.revision)))?;
        changed = true;
    }
    w.db.exec(
        "UPDATE jobs SET origin_rev = $2, origin_ref = $3, updated_at = CASE WHEN $4 THEN $5 ELSE updated_at END \
         WHERE id = $1",
        args![&job.id, &s.revision, &job.origin.reference, changed, w.now],
    )?;
    if changed {
        report.updated.push(job.id.clone());
    }
    Ok(())
}

/// Aborts the source's unfinished jobs that the revision no longer declares.
fn prune_jobs<D: Db>(w: &mut Writer<D>, s: &Snapshot, actor: &str, report: &mut ApplyReport) -> Result<()> {
    let declared: BTreeSet<&str> = s.jobs.iter().map(|j| j.id.as_str()).collect();
    let ids = w.db.all(
        &format!(
            "SELECT id FROM jobs WHERE origin_source = $1 AND status NOT IN ('completed', 'failed', 'aborted') \
             AND desired <> $2 ORDER BY created_at, id{}",
            D::LOCK
        ),
        args![&s.source, DesiredState::Aborted.as_str()],
        |r| r.string("id"),
    )?;
    let reason = format!("removed from source {} at revision {}", s.source, s.revision);
    for id in ids.into_iter().filter(|id| !declared.contains(id.as_str())) {
        jobs::set_desired(w, &id, DesiredState::Aborted, actor, Some(&reason))?;
        report.aborted.push(id);
    }
    Ok(())
}

pub fn reject_revision(w: &mut Writer<impl Db>, source: &str, revision: &str, errors: &[String]) -> Result<()> {
    let previous = lock_source(w, source)?.rejected_revision;
    w.db.exec(
        "UPDATE sources SET rejected_revision = $2, errors = $3, checked_at = $4 WHERE name = $1",
        &[Arg::Text(source), Arg::Text(revision), Arg::json(&errors)?, Arg::Time(w.now)],
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

pub fn checked(w: &mut Writer<impl Db>, source: &str) -> Result<()> {
    w.db.exec(
        "INSERT INTO sources (name, checked_at) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET checked_at = excluded.checked_at",
        args![source, w.now],
    )?;
    Ok(())
}

pub fn list(c: &mut impl Db) -> Result<Vec<SourceView>> {
    c.all(
        "SELECT name, applied_revision, applied_at, rejected_revision, errors, checked_at FROM sources ORDER BY name",
        args![],
        views::source,
    )
}

pub fn manifests(c: &mut impl Db, kind: Option<Kind>) -> Result<Vec<StoredManifest>> {
    c.all(
        "SELECT kind, name, source, file, revision, body, updated_at FROM manifests \
         WHERE CAST($1 AS TEXT) IS NULL OR kind = $1 ORDER BY kind, name",
        args![kind.map(|k| k.as_str())],
        views::manifest,
    )
}

pub fn trigger_mark(c: &mut impl Db, name: &str) -> Result<Option<DateTime<Utc>>> {
    c.opt("SELECT watermark FROM trigger_marks WHERE name = $1", args![name], |r| r.ts("watermark"))
}

pub fn set_trigger_mark(w: &mut Writer<impl Db>, name: &str, watermark: DateTime<Utc>) -> Result<()> {
    w.db.exec(
        "INSERT INTO trigger_marks (name, watermark, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET watermark = excluded.watermark, updated_at = excluded.updated_at",
        args![name, watermark, w.now],
    )?;
    Ok(())
}

pub fn catalog(c: &mut impl Db) -> Result<Catalog> {
    rules::catalog(manifests(c, None)?)
}
