//! Retention: finding finished jobs past their time, deleting them with
//! everything recorded of them, and compacting the event log below its
//! floor. The floor only rises; events at or above it are append-only (the
//! schema's triggers refuse anything else), so a consumer that has not read
//! past the floor loses nothing.

use crate::dialect::{args, Arg, Db, Writer};
use crate::{Result, RetentionScope};
use chrono::{DateTime, Utc};
use george_core::EventKind;
use serde_json::json;

const FINISHED: &str = "status IN ('completed', 'failed', 'aborted')";
const FINISHED_STATUSES: [&str; 3] = ["completed", "failed", "aborted"];

/// Whether job `jobs.id` may go: no live attempt, and no event at or above
/// the floor `{floor}` (a placeholder, or the stored floor).
fn deletable(floor: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = jobs.id AND a.state <> 'terminated') \
         AND NOT EXISTS (SELECT 1 FROM events e WHERE e.job_id = jobs.id AND e.seq >= {floor})"
    )
}

const STORED_FLOOR: &str = "(SELECT seq FROM event_floor WHERE id = 1)";

pub fn event_floor(c: &mut impl Db) -> Result<i64> {
    c.one(&format!("SELECT {STORED_FLOOR} AS seq"), args![], |r| r.i64("seq"))
}

pub fn raise_event_floor(w: &mut Writer<impl Db>, floor: i64) -> Result<i64> {
    w.db.exec("UPDATE event_floor SET seq = $1 WHERE id = 1 AND seq < $1", args![floor])?;
    event_floor(&mut w.db)
}

pub fn expired_jobs(
    c: &mut impl Db,
    before: DateTime<Utc>,
    scope: &RetentionScope,
    floor: i64,
    limit: u32,
) -> Result<Vec<String>> {
    let mut args = vec![Arg::Null, Arg::Time(before), Arg::from(limit), Arg::Int(floor)];
    let filter = match scope {
        RetentionScope::Template(t) => {
            args.push(Arg::Text(t));
            "AND template = $5".to_string()
        }
        RetentionScope::Except(ts) if ts.is_empty() => String::new(),
        RetentionScope::Except(ts) => {
            let marks: Vec<String> = ts
                .iter()
                .map(|t| {
                    args.push(Arg::Text(t));
                    format!("${}", args.len())
                })
                .collect();
            format!("AND template NOT IN ({})", marks.join(", "))
        }
    };
    // One status at a time: each walks the index by status and age from its
    // oldest job, where all three at once would sort every finished job.
    let sql = format!(
        "SELECT id, updated_at FROM jobs WHERE status = $1 AND updated_at < $2 {filter} AND {} \
         ORDER BY updated_at, id LIMIT $3",
        deletable("$4")
    );
    let mut found = Vec::new();
    for status in FINISHED_STATUSES {
        args[0] = Arg::Text(status);
        found.extend(c.all(&sql, &args, |r| Ok((r.ts("updated_at")?, r.string("id")?)))?);
    }
    found.sort();
    Ok(found.into_iter().take(limit as usize).map(|(_, id)| id).collect())
}

pub fn delete_jobs<D: Db>(w: &mut Writer<D>, ids: &[String], actor: &str) -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    for id in ids {
        // Checked again here, its row locked (PostgreSQL re-checks the row a
        // concurrent retry or new attempt just changed): the job may have
        // been retried, or have had an attempt started, since it was found.
        let attempts = w.db.opt(
            &format!(
                "SELECT attempt FROM jobs WHERE id = $1 AND {FINISHED} AND {}{}",
                deletable(STORED_FLOOR),
                D::LOCK
            ),
            args![id],
            |r| r.i64("attempt"),
        )?;
        let Some(attempts) = attempts else { continue };
        w.db.exec("DELETE FROM events WHERE job_id = $1", args![id])?;
        delete_settings_of(w, id, attempts)?;
        // Steps, attempts, comments and evidence go with it (ON DELETE CASCADE).
        w.db.exec("DELETE FROM jobs WHERE id = $1", args![id])?;
        deleted.push(id.clone());
    }
    if !deleted.is_empty() {
        w.event(None, None, EventKind::JobsDeleted, actor, json!({"jobs": deleted}))?;
    }
    Ok(deleted)
}

/// The job's own settings ([`crate::job_settings`]), each by its exact
/// key (no range or pattern: text order depends on the database's collation).
fn delete_settings_of<D: Db>(w: &mut Writer<D>, id: &str, attempts: i64) -> Result<()> {
    let per_attempt = crate::job_settings::PER_ATTEMPT
        .iter()
        .flat_map(|prefix| (1..=attempts).map(move |n| format!("{prefix}{id}:{n}")));
    let keys = crate::job_settings::PER_JOB.iter().map(|prefix| format!("{prefix}{id}")).chain(per_attempt);
    for key in keys {
        w.db.exec("DELETE FROM settings WHERE key = $1", args![&key])?;
    }
    Ok(())
}

pub fn compact_events(w: &mut Writer<impl Db>, before: DateTime<Utc>, limit: u32) -> Result<u64> {
    w.db.exec(
        &format!(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE job_id IS NULL AND ts < $1 \
             AND seq < {STORED_FLOOR} ORDER BY seq LIMIT $2)"
        ),
        args![before, limit],
    )
}
