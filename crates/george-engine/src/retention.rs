//! Retention: a finished job keeps its record, logs, outputs and events for
//! a while (`engine.retention.finished`, or its template's `retention`),
//! then goes, in bounded batches that never hold the store for long.
//!
//! A pass:
//! 1. **The event floor** rises to the newest event every consumer has
//!    read: the lowest of the stored consumer cursors (settings whose key
//!    ends in `.cursor`, such as the Jira write-back's), or the newest event
//!    when there is none. Below the floor the log may be compacted; a watch
//!    stream asked to resume below it is told to resync.
//! 2. **Finished jobs** past their retention whose every event is below the
//!    floor are deleted with their steps, attempts, comments, evidence and
//!    events (one transaction per batch), then their log and output
//!    directories. A job of the template `t` is kept for `t`'s retention,
//!    every other for the engine's. A running job, one whose agent is still
//!    stopping, and one whose last events a consumer has not read yet stay.
//! 3. **Job-less events** (sources applied, jobs deleted, ...) below the floor
//!    and older than the engine's retention are deleted.
//!
//! The store rows go before the files: an engine killed in between leaves a
//! directory without a job, never a job without its logs.

use crate::context::Context;
pub use george_core::api::GcReport;
use george_store::{RetentionScope, StoreError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long finished jobs are kept and how the work is paced.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionSettings {
    /// How long a finished job is kept (a template's `retention` overrides it).
    pub finished: Duration,
    /// How often a pass runs.
    pub interval: Duration,
    /// Jobs (and events) deleted per transaction.
    pub batch: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self { finished: Duration::from_secs(14 * 24 * 3600), interval: Duration::from_secs(600), batch: 500 }
    }
}

/// Why a job could not be deleted by hand.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// No such job.
    #[error("job `{0}` not found")]
    NotFound(String),
    /// It is not finished, or still has an agent, or events not yet consumed.
    #[error("job `{id}` cannot be deleted: {why}")]
    Refused {
        /// The job.
        id: String,
        /// Why.
        why: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs passes every `interval` until `shutdown`.
pub(crate) async fn run(ctx: std::sync::Arc<Context>, shutdown: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(ctx.cfg.retention.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => match pass(&ctx, false).await {
                Ok(r) if !r.jobs.is_empty() || r.events > 0 => {
                    tracing::info!(jobs = r.jobs.len(), bytes = r.bytes, events = r.events, floor = r.floor, "retention pass");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention pass failed"),
            },
        }
    }
}

/// The floor every consumer has read past, and the cursor holding it back.
async fn watermark(ctx: &Context) -> Result<(i64, Option<String>), StoreError> {
    let latest = ctx.store.latest_seq().await?;
    let mut floor = latest + 1;
    let mut held_by = None;
    for (key, value) in ctx.store.settings("").await? {
        let Some(cursor) = value.as_i64().filter(|_| key.ends_with(".cursor")) else { continue };
        if cursor + 1 < floor {
            floor = cursor + 1;
            held_by = Some(key);
        }
    }
    Ok((floor, held_by))
}

/// Retention classes: each template with a retention of its own, then every other job.
async fn classes(ctx: &Context) -> Result<Vec<(RetentionScope, Duration)>, StoreError> {
    let catalog = ctx.catalog.get(ctx.store.as_ref()).await?;
    let own: Vec<(String, Duration)> =
        catalog.templates.iter().filter_map(|(name, t)| t.spec.retention.map(|d| (name.clone(), d.get()))).collect();
    let mut out: Vec<_> = own.iter().map(|(n, d)| (RetentionScope::Template(n.clone()), *d)).collect();
    out.push((RetentionScope::Except(own.into_iter().map(|(n, _)| n).collect()), ctx.cfg.retention.finished));
    Ok(out)
}

fn before(ctx: &Context, keep: Duration) -> chrono::DateTime<chrono::Utc> {
    ctx.clock.now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX)
}

/// One pass; `dry_run` reports what it would delete and changes nothing.
pub(crate) async fn pass(ctx: &Context, dry_run: bool) -> Result<GcReport, StoreError> {
    let (floor, held_by) = watermark(ctx).await?;
    let floor = if dry_run { floor } else { ctx.store.raise_event_floor(floor).await? };
    let mut report = GcReport { dry_run, floor, held_by, ..GcReport::default() };
    let batch = ctx.cfg.retention.batch.max(1);
    for (scope, keep) in classes(ctx).await? {
        let cutoff = before(ctx, keep);
        if dry_run {
            // Nothing is deleted, so one read shows them (at most ten batches' worth).
            let ids = ctx.store.expired_jobs(cutoff, &scope, floor, 10 * batch).await?;
            report.bytes += ids.iter().flat_map(|id| job_dirs(ctx, id)).map(|d| disk_bytes(&d)).sum::<u64>();
            report.jobs.extend(ids);
            continue;
        }
        loop {
            let ids = ctx.store.expired_jobs(cutoff, &scope, floor, batch).await?;
            let full = ids.len() == batch as usize;
            let deleted = ctx.store.delete_jobs(&ids, "retention").await?;
            report.bytes += remove_files(ctx, &deleted).await;
            report.jobs.extend(deleted);
            if !full {
                break;
            }
            // Let the hot path in between batches.
            tokio::task::yield_now().await;
        }
    }
    if !dry_run {
        let cutoff = before(ctx, ctx.cfg.retention.finished);
        loop {
            let n = ctx.store.compact_events(cutoff, batch).await?;
            report.events += n;
            if n < u64::from(batch) {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    Ok(report)
}

/// Deletes one finished job now, by hand: the floor is raised first, so
/// only an unread consumer cursor can hold it back.
pub(crate) async fn delete_job(ctx: &Context, id: &str, actor: &str) -> Result<GcReport, DeleteError> {
    let job = ctx.store.get_job(id).await?.ok_or_else(|| DeleteError::NotFound(id.into()))?;
    if !job.status.is_final() {
        return Err(DeleteError::Refused {
            id: id.into(),
            why: format!("it is {}; only a completed, failed or aborted job can be deleted", job.status),
        });
    }
    let (floor, held_by) = watermark(ctx).await?;
    let floor = ctx.store.raise_event_floor(floor).await?;
    let deleted = ctx.store.delete_jobs(&[id.to_string()], actor).await?;
    if deleted.is_empty() {
        let why = match &held_by {
            Some(cursor) => format!("its agent is still stopping, or `{cursor}` has not read its last events yet"),
            None => "its agent is still stopping".to_string(),
        };
        return Err(DeleteError::Refused { id: id.into(), why });
    }
    let bytes = remove_files(ctx, &deleted).await;
    Ok(GcReport { dry_run: false, jobs: deleted, bytes, events: 0, floor, held_by })
}

/// A job's log and output directories.
fn job_dirs(ctx: &Context, id: &str) -> Vec<PathBuf> {
    let mut dirs = vec![ctx.runtime.logs().dir().join(id)];
    dirs.extend(ctx.cfg.output_dir.as_ref().map(|d| d.join(id)));
    dirs
}

/// Removes the deleted jobs' files off the async workers; returns the bytes freed.
async fn remove_files(ctx: &Context, ids: &[String]) -> u64 {
    let dirs: Vec<PathBuf> = ids.iter().flat_map(|id| job_dirs(ctx, id)).collect();
    let removed = tokio::task::spawn_blocking(move || {
        dirs.iter()
            .map(|dir| {
                let bytes = disk_bytes(dir);
                match std::fs::remove_dir_all(dir) {
                    Ok(()) => bytes,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a deleted job's files");
                        0
                    }
                }
            })
            .sum()
    })
    .await;
    removed.unwrap_or(0)
}

/// Bytes of the files below `dir` (0 if it is missing).
pub fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}
