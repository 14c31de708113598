//! Retention by attack: after the retention window, a finished job's
//! record, files and events go; a running job, a finished job whose last
//! events an unread write-back cursor still needs, and that cursor stay.
//! The disk a job uses is bounded by the window.

use crate::in_process::{engine_with, InProcess};
use george_core::Priority;
use george_engine::retention::DeleteError;
use std::path::PathBuf;
use std::time::Duration;

const CURSOR: &str = "jira.writeback.cursor";

/// Gives job `id` a log and an output file, as its agent would have.
fn files_of(e: &InProcess, id: &str) -> Vec<PathBuf> {
    let log = e.dir.path().join("logs").join(id).join("1.log");
    let out = e.dir.path().join("outputs").join(id).join("result.txt");
    for f in [&log, &out] {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, "x".repeat(1000)).unwrap();
    }
    vec![log, out]
}

async fn started(e: &InProcess) -> String {
    let id = e.summon(Priority::P2).await;
    eventually_running(e, &id).await;
    id
}

/// The job's agent reports success, exits, and its attempt is recorded as ended.
async fn finished(e: &InProcess, id: &str) {
    e.finish(id, 1).await;
    george_testkit::eventually(Duration::from_secs(10), "the attempt to end", async || {
        let a = e.store.get_agent(id, 1).await.unwrap()?;
        (!a.state.is_live()).then_some(())
    })
    .await;
}

async fn eventually_running(e: &InProcess, id: &str) {
    george_testkit::eventually(Duration::from_secs(10), "the agent to start", async || {
        e.runtime.running().iter().any(|(j, _)| j == id).then_some(())
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn retention_deletes_a_finished_job_with_its_files_and_events_and_nothing_else() {
    let e = engine_with(|cfg| cfg.retention.interval = Duration::from_secs(365 * 24 * 3600)).await;
    let control = e.engine.handle.control().clone();

    // `old` finishes and the write-back consumer reads past it; `held`
    // finishes after, unread; `live` keeps running.
    let old = started(&e).await;
    let old_files = files_of(&e, &old);
    finished(&e, &old).await;
    let read_up_to = e.store.latest_seq().await.unwrap();
    e.store.set_setting(CURSOR, Some(read_up_to.into())).await.unwrap();
    let held = started(&e).await;
    let held_files = files_of(&e, &held);
    finished(&e, &held).await;
    let live = started(&e).await;
    let live_files = files_of(&e, &live);

    // Inside the window nothing goes, and a running job cannot be deleted by hand.
    assert!(control.gc(false).await.unwrap().jobs.is_empty());
    let refused = control.delete_job(&live, "test").await.unwrap_err();
    assert!(matches!(refused, DeleteError::Refused { .. }), "{refused}");

    e.clock.advance(Duration::from_secs(15 * 24 * 3600));
    e.store.heartbeat(&live, 1).await.unwrap();
    let dry = control.gc(true).await.unwrap();
    assert_eq!(dry.jobs, vec![old.clone()], "{dry:?}");
    assert_eq!(dry.bytes, 2000);
    assert!(e.store.get_job(&old).await.unwrap().is_some(), "a dry run deletes nothing");
    assert!(old_files.iter().all(|f| f.exists()));

    let done = control.gc(false).await.unwrap();
    assert_eq!(done.jobs, vec![old.clone()], "{done:?}");
    assert_eq!(done.bytes, 2000);
    assert_eq!(done.held_by.as_deref(), Some(CURSOR), "the unread cursor holds the floor");
    assert_eq!(done.floor, read_up_to + 1);
    assert!(done.events > 0, "job-less events below the floor were compacted: {done:?}");
    assert!(e.store.get_job(&old).await.unwrap().is_none());
    assert!(e.store.events_since(0, 1000, Some(&old)).await.unwrap().is_empty());
    assert!(old_files.iter().all(|f| !f.exists() && !f.parent().unwrap().exists()), "{old_files:?}");
    for (kept, files) in [(&held, &held_files), (&live, &live_files)] {
        assert!(e.store.get_job(kept).await.unwrap().is_some(), "{kept}");
        assert!(!e.store.events_since(0, 1000, Some(kept)).await.unwrap().is_empty(), "{kept}");
        assert!(files.iter().all(|f| f.exists()), "{files:?}");
    }
    assert!(e.runtime.running().iter().any(|(j, _)| j == &live), "the running agent is untouched");
    assert_eq!(e.store.setting(CURSOR).await.unwrap(), Some(read_up_to.into()), "the cursor is untouched");

    // Once the consumer has read everything, the held job goes too: what is
    // left on disk is the running job's alone.
    e.store.set_setting(CURSOR, Some(e.store.latest_seq().await.unwrap().into())).await.unwrap();
    assert_eq!(control.gc(false).await.unwrap().jobs, vec![held.clone()]);
    for dir in ["logs", "outputs"] {
        let left: Vec<_> = std::fs::read_dir(e.dir.path().join(dir))
            .unwrap()
            .map(|d| d.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, vec![live.clone()], "{dir}");
    }
    e.stop().await;
}
