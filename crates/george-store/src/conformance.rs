//! The conformance suite every [`Store`] implementation must pass.
//!
//! Each check is an async function over a fresh store; the
//! [`store_conformance_tests!`](crate::store_conformance_tests) macro turns the
//! whole list into `#[tokio::test]`s for one implementation:
//!
//! ```ignore
//! george_store::store_conformance_tests!(async {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = SqliteStore::open(dir.path().join("g.db")).unwrap();
//!     (std::sync::Arc::new(store) as std::sync::Arc<dyn Store>, Box::new(dir) as Box<dyn std::any::Any + Send>)
//! });
//! ```
//!
//! Given a second argument, `second: |guard| ...`, a function that opens
//! another store on the same database as the one the guard belongs to, the
//! macro also generates the checks of two stores (two engine processes)
//! sharing one database.

use crate::{
    AttemptEnd, Created, JobFilter, NewAttempt, Override, Report, RetentionScope, Snapshot, StatusChange, Store,
    StoreError,
};
use george_core::api::StepReport;
use george_core::manifest::Kind;
use george_core::plan::{NewJob, Origin};
use george_core::template::StepSpec;
use george_core::{AgentState, DesiredState, EventKind, JobStatus, Priority, StepStatus};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A store under test.
pub type TestStore = Arc<dyn Store>;

/// Generates one `#[tokio::test]` per conformance check. `$make` is an async
/// block returning `(Arc<dyn Store>, Box<dyn Any + Send>)`; the box is kept
/// alive for the test (e.g. a temporary directory). The optional
/// `second: $open` is a closure `|guard: &(dyn Any + Send)| -> Arc<dyn Store>`
/// opening another store on the database of the store that came with `guard`.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr, second: $open:expr $(,)?) => {
        $crate::store_conformance_tests!($make);

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn two_stores_race_for_one_attempt() {
            let (store, guard) = $make.await;
            let open_second: fn(&(dyn ::std::any::Any + Send)) -> $crate::conformance::TestStore = $open;
            let second = open_second(&*guard);
            $crate::conformance::two_stores_race_for_one_attempt(store, second).await;
        }
    };
    ($make:expr) => {
        $crate::store_conformance_tests!(@tests $make;
            create_job_is_idempotent,
            pending_jobs_can_be_updated_until_they_start,
            snapshot_applies_atomically_and_prunes,
            snapshot_with_foreign_job_changes_nothing,
            rejected_revision_keeps_last_good_state,
            attempts_are_numbered_and_fenced,
            concurrent_attempt_starts_yield_one_winner,
            a_hold_stops_an_attempt_in_its_transaction,
            a_handle_known_before_the_spawn_is_recorded_with_its_attempt,
            agent_reports_drive_job_status,
            a_batch_of_reports_applies_in_order_all_or_nothing,
            a_retry_keeps_completed_steps_unless_from_scratch,
            status_changes_are_guarded,
            desired_state_rules,
            overrides_set_status_by_hand,
            comments_and_evidence,
            events_are_sequenced_and_broadcast,
            the_ledger_records_and_sums_usage,
            settings_are_kept_and_listed_by_prefix,
            retention_deletes_only_finished_jobs_below_the_event_floor,
            jobs_are_listed_in_pages,
            jobs_are_picked_by_label_selectors,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make.await;
                $crate::conformance::$name(store).await;
            }
        )+
    };
}

/// A job with two steps (`a`, then `b`).
pub fn job(id: &str, source: &str) -> NewJob {
    let step = |id: &str, deps: &[&str]| StepSpec {
        id: id.into(),
        description: format!("do {id}"),
        run: Some("true".into()),
        done_when: None,
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    };
    NewJob {
        id: id.into(),
        template: "t".into(),
        agent: "worker".into(),
        params: BTreeMap::from([("n".to_string(), json!(1))]),
        priority: Priority::P2,
        chapter: Some("platform".into()),
        desired: DesiredState::Active,
        env: BTreeMap::new(),
        steps: vec![step("a", &[]), step("b", &["a"])],
        max_attempts: Some(3),
        parallelism: george_core::plan::DEFAULT_PARALLELISM,
        fail_fast: true,
        origin: Origin { source: source.into(), reference: Some(format!("jobs/{id}.yaml")), revision: None },
        labels: BTreeMap::from([("team".to_string(), "platform".to_string())]),
        not_before: None,
    }
}

fn attempt(after: u32, token: &str) -> NewAttempt {
    NewAttempt {
        after,
        agent_spec: "worker".into(),
        runtime: "process".into(),
        token_hash: token.into(),
        held_by: None,
        handle: None,
    }
}

fn snapshot(rev: &str, jobs: Vec<NewJob>) -> Snapshot {
    Snapshot {
        source: "git".into(),
        revision: rev.into(),
        manifests: vec![(
            Kind::Chapter,
            "platform".into(),
            "chapters/p.yaml".into(),
            json!({"metadata": {"name": "platform"}}),
        )],
        jobs,
        prune: true,
    }
}

/// A debounced job is created to wake later and can be updated until it starts.
pub async fn pending_jobs_can_be_updated_until_they_start(store: TestStore) {
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    let mut j = job("deb", "trigger:t");
    j.not_before = Some(later);
    store.create_job(j.clone(), "t").await.unwrap();
    assert_eq!(
        store.get_job("deb").await.unwrap().unwrap().next_attempt_at.map(|t| t.timestamp()),
        Some(later.timestamp())
    );
    j.params.insert("n".into(), json!(9));
    j.not_before = Some(later + chrono::Duration::seconds(30));
    assert!(store.update_pending_job(j.clone(), "t").await.unwrap());
    let v = store.get_job("deb").await.unwrap().unwrap();
    assert_eq!(
        (v.params["n"].clone(), v.next_attempt_at.map(|t| t.timestamp())),
        (json!(9), Some(later.timestamp() + 30))
    );
    store.start_attempt("deb", attempt(0, "td")).await.unwrap();
    assert!(!store.update_pending_job(j, "t").await.unwrap(), "a started job keeps its definition");

    assert_eq!(store.trigger_mark("nightly").await.unwrap(), None);
    let mark = chrono::DateTime::parse_from_rfc3339("2026-03-29T01:00:00Z").unwrap().to_utc();
    store.set_trigger_mark("nightly", mark).await.unwrap();
    assert_eq!(store.trigger_mark("nightly").await.unwrap(), Some(mark));
}

/// Creating a job twice creates it once; reads show its steps.
pub async fn create_job_is_idempotent(store: TestStore) {
    assert_eq!(store.create_job(job("j1", "api"), "test").await.unwrap(), Created::New);
    let mut again = job("j1", "api");
    again.template = "other".into();
    assert_eq!(store.create_job(again, "test").await.unwrap(), Created::Existed);
    let j = store.get_job("j1").await.unwrap().unwrap();
    assert_eq!(j.template, "t");
    assert_eq!(j.status, JobStatus::Pending);
    assert_eq!(j.steps.iter().map(|s| s.spec.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert!(store.get_job("nope").await.unwrap().is_none());
    let mut j2 = job("j2", "api");
    j2.env.insert("LEVEL".into(), "2".into());
    store.create_job(j2, "test").await.unwrap();
    assert_eq!(store.job_env("j2").await.unwrap()["LEVEL"], "2");
    assert!(matches!(store.job_env("nope").await, Err(StoreError::NotFound { .. })));
    let pending = store.list_jobs(&JobFilter { status: vec![JobStatus::Pending], ..Default::default() }).await.unwrap();
    assert_eq!(pending.len(), 2);
    let none = store.list_jobs(&JobFilter { status: vec![JobStatus::Completed], ..Default::default() }).await.unwrap();
    assert!(none.is_empty());
    let created =
        store.events_since(0, 100, None).await.unwrap().into_iter().filter(|e| e.kind == "job.created").count();
    assert_eq!(created, 2);
}

/// A snapshot creates, updates and (with prune) aborts jobs and replaces manifests.
pub async fn snapshot_applies_atomically_and_prunes(store: TestStore) {
    let r = store.apply_snapshot(snapshot("r1", vec![job("a", "git"), job("b", "git")])).await.unwrap();
    assert_eq!(r.created, ["a", "b"]);
    assert_eq!(store.manifests(Some(Kind::Chapter)).await.unwrap().len(), 1);
    let same = store.apply_snapshot(snapshot("r1", vec![])).await.unwrap();
    assert!(same.unchanged, "re-applying a revision is a no-op");
    assert_eq!(store.list_jobs(&JobFilter::default()).await.unwrap().len(), 2);

    // Start `b` so that a spec change no longer applies to it.
    store.start_attempt("b", attempt(0, "tb")).await.unwrap();
    let mut a2 = job("a", "git");
    a2.params.insert("n".into(), json!(2));
    a2.priority = Priority::P1;
    let mut b2 = job("b", "git");
    b2.params.insert("n".into(), json!(2));
    let mut snap = snapshot("r2", vec![a2, b2.clone()]);
    snap.manifests.clear();
    let r = store.apply_snapshot(snap).await.unwrap();
    assert_eq!(r.updated, ["a"]);
    let a = store.get_job("a").await.unwrap().unwrap();
    assert_eq!(a.params["n"], json!(2));
    assert_eq!(a.priority, Priority::P1);
    assert_eq!(a.origin.revision.as_deref(), Some("r2"));
    assert_eq!(store.get_job("b").await.unwrap().unwrap().params["n"], json!(1));
    assert!(store.manifests(None).await.unwrap().is_empty(), "manifests gone from the revision are deleted");

    let r = store.apply_snapshot(snapshot("r3", vec![b2])).await.unwrap();
    assert_eq!(r.aborted, ["a"]);
    let a = store.get_job("a").await.unwrap().unwrap();
    assert_eq!(a.desired, DesiredState::Aborted);
    let src = store.sources().await.unwrap();
    assert_eq!(src[0].applied_revision.as_deref(), Some("r3"));

    // Another source declaring the same manifest name does not take it over.
    let mut other = snapshot("x1", vec![]);
    other.source = "folder".into();
    other.manifests[0].3 = json!({"metadata": {"name": "platform"}, "spec": {"weight": 9}});
    store.apply_snapshot(snapshot("r4", vec![job("b", "git")])).await.unwrap();
    let r = store.apply_snapshot(other).await.unwrap();
    assert_eq!(r.conflicts, ["Chapter/platform"]);
    let kept = store.manifests(Some(Kind::Chapter)).await.unwrap();
    assert_eq!((kept[0].source.as_str(), kept[0].revision.as_str()), ("git", "r4"));
}

/// A snapshot that breaks a rule changes nothing at all.
pub async fn snapshot_with_foreign_job_changes_nothing(store: TestStore) {
    let bad = snapshot("r1", vec![job("a", "git"), job("b", "folder")]);
    let err = store.apply_snapshot(bad).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(store.list_jobs(&JobFilter::default()).await.unwrap().is_empty());
    assert!(store.manifests(None).await.unwrap().is_empty());
    assert!(store.events_since(0, 10, None).await.unwrap().is_empty());
}

/// Rejecting a revision records why and keeps what was applied.
pub async fn rejected_revision_keeps_last_good_state(store: TestStore) {
    store.apply_snapshot(snapshot("good", vec![job("a", "git")])).await.unwrap();
    store.reject_revision("git", "bad", vec!["jobs/x.yaml:3:1: spec: boom".into()]).await.unwrap();
    let src = &store.sources().await.unwrap()[0];
    assert_eq!(src.applied_revision.as_deref(), Some("good"));
    assert_eq!(src.rejected_revision.as_deref(), Some("bad"));
    assert_eq!(src.errors.len(), 1);
    assert!(store.get_job("a").await.unwrap().is_some());
    store.apply_snapshot(snapshot("fixed", vec![job("a", "git")])).await.unwrap();
    let src = &store.sources().await.unwrap()[0];
    assert!(src.errors.is_empty() && src.rejected_revision.is_none());
}

/// Attempts count up; only the current live attempt may write.
pub async fn attempts_are_numbered_and_fenced(store: TestStore) {
    store.create_job(job("j", "api"), "t").await.unwrap();
    let started = store.start_attempt("j", attempt(0, "t1")).await.unwrap();
    assert_eq!((started.attempt, started.status), (1, JobStatus::InProgress));
    // What it returns is what a read finds.
    assert_eq!(Some(&started), store.get_job("j").await.unwrap().as_ref());
    assert!(matches!(store.start_attempt("j", attempt(0, "t1b")).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.agent_for_token("t1").await.unwrap(), Some(("j".into(), 1)));
    assert_eq!(store.agent_for_token("nope").await.unwrap(), None);
    let recorded = store.get_agent("j", 1).await.unwrap().unwrap().started_at;
    store.attempt_spawned("j", 1, json!({"pid": 42})).await.unwrap();
    assert_eq!(store.live_attempts().await.unwrap().len(), 1);
    // The agent starts when its handle is stored (it was held until then), once.
    let started = store.get_agent("j", 1).await.unwrap().unwrap().started_at;
    assert!(started >= recorded, "{started} < {recorded}");
    store.attempt_spawned("j", 1, json!({"pid": 42})).await.unwrap();
    assert_eq!(store.get_agent("j", 1).await.unwrap().unwrap().started_at, started);

    store.heartbeat("j", 1).await.unwrap();
    assert_eq!(store.get_agent("j", 1).await.unwrap().unwrap().state, AgentState::Active);
    assert!(matches!(store.heartbeat("j", 2).await, Err(StoreError::Superseded { .. })));

    // A step's run has a start once in progress, and an end once it ends.
    let running = StepReport { status: StepStatus::InProgress, reason: None };
    store.report_step("j", 1, "a", &running).await.unwrap();
    let a = &store.get_job("j").await.unwrap().unwrap().steps[0];
    assert!(a.started_at.is_some() && a.ended_at.is_none(), "{a:?}");

    // The agent dies: the attempt ends, the job goes back to pending, a new attempt starts.
    store.end_attempt("j", 1, AttemptEnd { exit_code: None, outcome: "killed by signal 9".into() }).await.unwrap();
    // No step stays in progress without its agent.
    let a = &store.get_job("j").await.unwrap().unwrap().steps[0];
    assert_eq!(a.status, StepStatus::Pending);
    assert_eq!(a.reason.as_deref(), Some("interrupted: attempt 1 ended (killed by signal 9)"));
    assert_eq!((a.started_at, a.ended_at), (None, None));
    store.end_attempt("j", 1, AttemptEnd { exit_code: None, outcome: "again".into() }).await.unwrap();
    let change = StatusChange {
        from: JobStatus::InProgress,
        to: JobStatus::Pending,
        reason: Some("agent died".into()),
        next_attempt_at: None,
        count_failure: true,
    };
    assert!(store.change_status("j", change, "t").await.unwrap());
    assert_eq!(store.start_attempt("j", attempt(1, "t2")).await.unwrap().attempt, 2);
    let old = StepReport { status: StepStatus::Completed, reason: None };
    for refused in [
        store.heartbeat("j", 1).await,
        store.report_step("j", 1, "a", &old).await,
        store.report_job("j", 1, JobStatus::Completed, None).await,
        store.add_evidence("j", 1, Some("a"), "output", "x", false).await.map(|_| ()),
        store.agent_comment("j", 1, "hello").await.map(|_| ()),
    ] {
        assert!(matches!(refused, Err(StoreError::Superseded { .. })), "{refused:?}");
    }
    let j = store.get_job("j").await.unwrap().unwrap();
    assert_eq!((j.attempt, j.failures, j.status), (2, 1, JobStatus::InProgress));
    let ended = store.ended_agents("worker", 5).await.unwrap();
    assert_eq!(ended.iter().map(|a| a.attempt).collect::<Vec<_>>(), vec![1], "only the ended one");
    assert!(store.ended_agents("someone-else", 5).await.unwrap().is_empty());
    assert_eq!(store.get_agent("j", 1).await.unwrap().unwrap().outcome.as_deref(), Some("killed by signal 9"));
}

/// Many racing starts of the same attempt: exactly one wins.
pub async fn concurrent_attempt_starts_yield_one_winner(store: TestStore) {
    store.create_job(job("race", "api"), "t").await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move { s.start_attempt("race", attempt(0, &format!("tok{i}"))).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(n) => {
                assert_eq!(n.attempt, 1);
                wins += 1
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.live_attempts().await.unwrap().len(), 1);
}

/// A setting named as the attempt's hold keeps it from starting while it exists.
pub async fn a_hold_stops_an_attempt_in_its_transaction(store: TestStore) {
    store.create_job(job("h", "api"), "t").await.unwrap();
    let held = NewAttempt { held_by: Some("agents.dismissed.worker".into()), ..attempt(0, "th") };
    store.set_setting("agents.dismissed.worker", Some(json!({"by": "op"}))).await.unwrap();
    assert!(matches!(store.start_attempt("h", held.clone()).await, Err(StoreError::Conflict(_))));
    let job = store.get_job("h").await.unwrap().unwrap();
    assert_eq!((job.status, job.attempt), (JobStatus::Pending, 0));
    assert_eq!(store.agent_for_token("th").await.unwrap(), None);
    // Another setting holds nothing; once the hold goes, the attempt starts.
    store.set_setting("agents.dismissed.other", Some(json!({}))).await.unwrap();
    store.set_setting("agents.dismissed.worker", None).await.unwrap();
    assert_eq!(store.start_attempt("h", held).await.unwrap().attempt, 1);
}

/// A warm agent's handle, known before its claim, is recorded by the
/// attempt's own transaction (its `attempt.spawned` event with it); a
/// different one recorded after the claim replaces it.
pub async fn a_handle_known_before_the_spawn_is_recorded_with_its_attempt(store: TestStore) {
    store.create_job(job("k", "api"), "t").await.unwrap();
    let known = NewAttempt { handle: Some(json!({"pid": 7})), ..attempt(0, "tk") };
    store.start_attempt("k", known).await.unwrap();
    assert_eq!(store.get_agent("k", 1).await.unwrap().unwrap().handle, Some(json!({"pid": 7})));
    let events = store.events_since(0, 100, Some("k")).await.unwrap();
    let spawned: Vec<_> = events.iter().filter(|e| e.kind == EventKind::AttemptSpawned).collect();
    assert_eq!(spawned.len(), 1, "{events:?}");
    assert_eq!(spawned[0].data["handle"], json!({"pid": 7}));
    store.attempt_spawned("k", 1, json!({"pid": 8})).await.unwrap();
    assert_eq!(store.get_agent("k", 1).await.unwrap().unwrap().handle, Some(json!({"pid": 8})));
}

/// Two stores on one database (two engines) racing to start the same
/// attempt: exactly one wins, and both see the one attempt.
pub async fn two_stores_race_for_one_attempt(first: TestStore, second: TestStore) {
    first.create_job(job("race", "api"), "t").await.unwrap();
    assert_eq!(second.create_job(job("race", "api"), "t").await.unwrap(), Created::Existed);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = if i % 2 == 0 { first.clone() } else { second.clone() };
            tokio::spawn(async move { s.start_attempt("race", attempt(0, &format!("tok{i}"))).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(n) => {
                assert_eq!(n.attempt, 1);
                wins += 1
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins, 1);
    for store in [&first, &second] {
        assert_eq!(store.live_attempts().await.unwrap().len(), 1);
        let started = store.events_since(0, 100, Some("race")).await.unwrap();
        assert_eq!(started.iter().filter(|e| e.kind == "attempt.started").count(), 1);
    }
}

/// Step and job reports from the current agent move the job along.
pub async fn agent_reports_drive_job_status(store: TestStore) {
    store.create_job(job("j", "api"), "t").await.unwrap();
    store.start_attempt("j", attempt(0, "t1")).await.unwrap();
    let running = StepReport { status: StepStatus::InProgress, reason: None };
    store.report_step("j", 1, "a", &running).await.unwrap();
    store.report_step("j", 1, "a", &StepReport { status: StepStatus::Completed, reason: None }).await.unwrap();
    assert!(matches!(store.report_step("j", 1, "zz", &running).await, Err(StoreError::NotFound { .. })));
    let j = store.get_job("j").await.unwrap().unwrap();
    assert_eq!((j.steps[0].status, j.steps[0].runs), (StepStatus::Completed, 1));

    assert!(matches!(store.report_job("j", 1, JobStatus::Blocked, None).await, Err(StoreError::Invalid(_))));
    assert!(matches!(store.report_job("j", 1, JobStatus::Pending, Some("x")).await, Err(StoreError::Invalid(_))));
    store.report_job("j", 1, JobStatus::Blocked, Some("capability missing: llm")).await.unwrap();
    let st = store.job_state("j").await.unwrap().unwrap();
    assert_eq!(st.job.status, JobStatus::Blocked);
    assert_eq!(st.job.reason.as_deref(), Some("capability missing: llm"));
    assert_eq!(st.current.unwrap().state, AgentState::Cooling);
    assert_eq!(st.blocked_at_comment, None);
    store.report_job("j", 1, JobStatus::Blocked, Some("same again")).await.unwrap();
    assert!(matches!(store.report_job("j", 1, JobStatus::Completed, None).await, Err(StoreError::Conflict(_))));

    // The agent's own words are not an answer; an operator's are.
    store.add_comment("j", "agent:j-1", "still stuck").await.unwrap();
    assert_eq!(store.job_state("j").await.unwrap().unwrap().latest_comment, None);
    let c = store.add_comment("j", "operator:ops", "here is the answer").await.unwrap();
    let st = store.job_state("j").await.unwrap().unwrap();
    assert_eq!(st.latest_comment, Some(c.id));
}

/// An agent's batch is one transaction: in order, all or nothing, a
/// heartbeat too, applied once however often it is sent; a verdict only
/// last; a superseded attempt's is refused.
pub async fn a_batch_of_reports_applies_in_order_all_or_nothing(store: TestStore) {
    store.create_job(job("j", "api"), "t").await.unwrap();
    store.start_attempt("j", attempt(0, "t1")).await.unwrap();
    store.attempt_spawned("j", 1, json!({"pid": 42})).await.unwrap();
    let step =
        |step: &str, status| Report::Step { step: step.into(), report: StepReport { status, reason: None }, at: None };
    let evidence = |content: &str| Report::Evidence {
        step: Some("a".into()),
        kind: "output".into(),
        content: content.into(),
        truncated: false,
    };
    let verdict = Report::Verdict { status: JobStatus::Completed, reason: None };
    let seen = store.latest_seq().await.unwrap();

    // A bad item anywhere refuses the whole batch, naming the item; nothing is stored.
    let bad = vec![step("a", StepStatus::InProgress), evidence("x"), step("zz", StepStatus::Completed)];
    let err = store.apply_reports("j", 1, Some(1), bad).await.unwrap_err();
    assert!(matches!(&err, StoreError::Invalid(m) if m.contains("reports[2]: step `j/zz`")), "{err:?}");
    let early = vec![verdict.clone(), step("a", StepStatus::Completed)];
    let err = store.apply_reports("j", 1, Some(1), early).await.unwrap_err();
    assert!(matches!(&err, StoreError::Invalid(m) if m.contains("reports[0]") && m.contains("last")), "{err:?}");
    let j = store.get_job("j").await.unwrap().unwrap();
    assert_eq!((j.steps[0].status, j.steps[0].runs), (StepStatus::Pending, 0));
    assert!(store.evidence("j").await.unwrap().is_empty());
    assert_eq!(store.latest_seq().await.unwrap(), seen, "no event from a refused batch");
    assert_eq!(store.get_agent("j", 1).await.unwrap().unwrap().state, AgentState::Awakening);

    // A good one applies everything, in order, and is a heartbeat.
    let good = vec![
        step("a", StepStatus::InProgress),
        evidence("ok"),
        step("a", StepStatus::Completed),
        step("b", StepStatus::InProgress),
        step("b", StepStatus::Completed),
        Report::Comment { body: "done".into() },
        verdict.clone(),
    ];
    store.apply_reports("j", 1, Some(1), good.clone()).await.unwrap();
    let after = store.latest_seq().await.unwrap();
    // The same batch again (its answer was lost): applied once, not twice.
    store.apply_reports("j", 1, Some(1), good).await.unwrap();
    assert_eq!(store.latest_seq().await.unwrap(), after, "a repeated batch writes no event");
    assert_eq!(store.evidence("j").await.unwrap().len(), 1);
    let j = store.get_job("j").await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Completed);
    assert!(j.steps.iter().all(|s| (s.status, s.runs) == (StepStatus::Completed, 1)), "{:?}", j.steps);
    assert_eq!(store.evidence("j").await.unwrap()[0].content, "ok");
    assert_eq!(store.comments("j").await.unwrap()[0].author, "agent:j-1");
    let agent = store.get_agent("j", 1).await.unwrap().unwrap();
    assert_eq!(agent.state, AgentState::Cooling, "active from the batch's heartbeat, then cooling");
    assert!(agent.last_heartbeat.is_some());
    let kinds: Vec<_> = store.events_since(seen, 100, Some("j")).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(&kinds[..3], [EventKind::StepStatus, EventKind::EvidenceAdded, EventKind::StepStatus], "{kinds:?}");

    // An agent's clock is kept within its attempt: a start claimed before the
    // attempt began is the attempt's start; an end claimed in the future is now.
    store.create_job(job("k", "api"), "t").await.unwrap();
    store.start_attempt("k", attempt(0, "t2")).await.unwrap();
    let began = store.get_agent("k", 1).await.unwrap().unwrap().started_at;
    let at = |step: &str, status, at| Report::Step {
        step: step.into(),
        report: StepReport { status, reason: None },
        at: Some(at),
    };
    let long_ago = began - chrono::Duration::days(365);
    let future = chrono::Utc::now() + chrono::Duration::days(365);
    let lies = vec![at("a", StepStatus::InProgress, long_ago), at("a", StepStatus::Completed, future)];
    store.apply_reports("k", 1, Some(1), lies).await.unwrap();
    let a = store.get_job("k").await.unwrap().unwrap().steps[0].clone();
    assert_eq!(a.started_at, Some(began), "not before the attempt began");
    assert!(a.ended_at.unwrap() <= chrono::Utc::now(), "not in the future: {a:?}");

    // The attempt ends: its batches are refused.
    store.end_attempt("j", 1, AttemptEnd { exit_code: Some(0), outcome: "exited (code 0)".into() }).await.unwrap();
    let late = store.apply_reports("j", 1, Some(2), vec![Report::Comment { body: "late".into() }]).await;
    assert!(matches!(late, Err(StoreError::Superseded { .. })), "{late:?}");
}

/// A failed, aborted or blocked job is retried: pending and active again,
/// failures forgiven, completed steps kept (all reset from scratch); a job
/// that is running or done is refused.
pub async fn a_retry_keeps_completed_steps_unless_from_scratch(store: TestStore) {
    store.create_job(job("j", "api"), "t").await.unwrap();
    store.start_attempt("j", attempt(0, "t1")).await.unwrap();
    let step = |status| StepReport { status, reason: None };
    store.report_step("j", 1, "a", &step(StepStatus::InProgress)).await.unwrap();
    store.report_step("j", 1, "a", &step(StepStatus::Completed)).await.unwrap();
    let a = &store.get_job("j").await.unwrap().unwrap().steps[0];
    assert!(a.started_at.is_some() && a.ended_at >= a.started_at, "{a:?}");
    store.report_step("j", 1, "b", &step(StepStatus::InProgress)).await.unwrap();
    let refused = store.retry_job("j", "operator:ops", false, None).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::Conflict(m) if m.contains("only a failed, aborted or blocked")),
        "{refused}"
    );
    store.report_step("j", 1, "b", &step(StepStatus::Failed)).await.unwrap();
    store.report_job("j", 1, JobStatus::Failed, Some("step `b` failed")).await.unwrap();
    store.end_attempt("j", 1, AttemptEnd { exit_code: Some(0), outcome: "exited (code 0)".into() }).await.unwrap();
    let seen = store.latest_seq().await.unwrap();

    let j = store.retry_job("j", "operator:ops", false, Some("fixed the flaky test")).await.unwrap();
    assert_eq!((j.status, j.desired, j.failures), (JobStatus::Pending, DesiredState::Active, 0));
    assert_eq!(j.reason.as_deref(), Some("retried by operator:ops: fixed the flaky test"));
    let steps: Vec<_> = j.steps.iter().map(|s| (s.status, s.runs)).collect();
    assert_eq!(steps, [(StepStatus::Completed, 1), (StepStatus::Pending, 1)], "the completed step stays done");
    let kinds: Vec<_> = store.events_since(seen, 10, Some("j")).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::JobRetried, EventKind::JobStatus]);

    store.set_desired("j", DesiredState::Aborted, "operator:ops", None).await.unwrap();
    let j = store.get_job("j").await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Pending, "aborting a pending job is the reconciler's to finish");
    let j = store.override_status("j", &Override::Job(JobStatus::Failed), "operator:ops", "x").await.unwrap();
    assert_eq!(j.status, JobStatus::Failed);
    let j = store.retry_job("j", "operator:ops", true, None).await.unwrap();
    assert_eq!((j.status, j.desired), (JobStatus::Pending, DesiredState::Active), "aborted → active again");
    assert!(j.steps.iter().all(|s| (s.status, s.runs, s.started_at) == (StepStatus::Pending, 0, None)), "{j:?}");
    assert!(matches!(store.retry_job("nope", "operator:ops", false, None).await, Err(StoreError::NotFound { .. })));
}

/// Status changes apply only from the status the caller saw.
pub async fn status_changes_are_guarded(store: TestStore) {
    store.create_job(job("j", "api"), "t").await.unwrap();
    let later = chrono::Utc::now() + chrono::Duration::seconds(30);
    let to_failed = StatusChange {
        from: JobStatus::InProgress,
        to: JobStatus::Failed,
        reason: Some("x".into()),
        next_attempt_at: None,
        count_failure: false,
    };
    assert!(!store.change_status("j", to_failed, "t").await.unwrap(), "job is pending, not in_progress");
    let wait = StatusChange {
        from: JobStatus::Pending,
        to: JobStatus::Pending,
        reason: Some("backing off".into()),
        next_attempt_at: Some(later),
        count_failure: true,
    };
    assert!(store.change_status("j", wait, "t").await.unwrap());
    let j = store.get_job("j").await.unwrap().unwrap();
    assert_eq!(j.failures, 1);
    assert_eq!(j.next_attempt_at.map(|t| t.timestamp()), Some(later.timestamp()));
}

/// Pause, resume and abort; a final job cannot be revived.
pub async fn desired_state_rules(store: TestStore) {
    store.create_job(job("j", "api"), "t").await.unwrap();
    let v = store.set_desired("j", DesiredState::Paused, "operator:a", Some("lunch")).await.unwrap();
    assert_eq!(v.desired, DesiredState::Paused);
    assert_eq!(v.reason.as_deref(), Some("paused by operator:a: lunch"));
    assert!(matches!(store.start_attempt("j", attempt(0, "t")).await, Err(StoreError::Conflict(_))));
    store.set_desired("j", DesiredState::Active, "operator:a", None).await.unwrap();
    store.set_desired("j", DesiredState::Aborted, "operator:a", None).await.unwrap();
    let done = StatusChange {
        from: JobStatus::Pending,
        to: JobStatus::Aborted,
        reason: None,
        next_attempt_at: None,
        count_failure: false,
    };
    store.change_status("j", done, "reconciler").await.unwrap();
    let err = store.set_desired("j", DesiredState::Active, "operator:a", None).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    store
        .set_desired("j", DesiredState::Aborted, "operator:a", None)
        .await
        .expect("aborting an aborted job is a no-op");
    assert!(matches!(
        store.set_desired("nope", DesiredState::Paused, "a", None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(!store.active_job_ids().await.unwrap().contains(&"j".to_string()));
}

/// A job's or a step's status set by hand: allowed moves only, recorded with who and why.
pub async fn overrides_set_status_by_hand(store: TestStore) {
    store.create_job(job("j", "api"), "t").await.unwrap();
    store.start_attempt("j", attempt(0, "t1")).await.unwrap();
    store.report_job("j", 1, JobStatus::Failed, Some("boom")).await.unwrap();
    let err = store.override_status("j", &Override::Job(JobStatus::Completed), "operator:a", "x").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    let err = store.override_status("j", &Override::Job(JobStatus::Paused), "operator:a", "x").await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    let before = store.latest_seq().await.unwrap();
    let v =
        store.override_status("j", &Override::Job(JobStatus::Pending), "operator:a", "fixed the cause").await.unwrap();
    assert_eq!((v.status, v.desired, v.failures), (JobStatus::Pending, DesiredState::Active, 0));
    assert_eq!(v.reason.as_deref(), Some("set by operator:a: fixed the cause"));
    let step = Override::Step { step: "a".into(), status: StepStatus::Completed };
    let v = store.override_status("j", &step, "operator:a", "done by hand").await.unwrap();
    assert_eq!(v.steps[0].status, StepStatus::Completed);
    let missing = Override::Step { step: "zz".into(), status: StepStatus::Completed };
    assert!(matches!(store.override_status("j", &missing, "operator:a", "x").await, Err(StoreError::NotFound { .. })));
    let v = store.override_status("j", &Override::Job(JobStatus::Completed), "operator:a", "verified").await.unwrap();
    assert_eq!(v.status, JobStatus::Completed);
    assert!(matches!(store.override_status("j", &step, "operator:a", "x").await, Err(StoreError::Conflict(_))));
    let events = store.events_since(before, 100, Some("j")).await.unwrap();
    let kinds: Vec<_> =
        events.iter().map(|e| (e.kind.as_str(), e.actor.as_str(), e.data["override"].as_bool())).collect();
    assert_eq!(
        kinds,
        [
            ("job.status", "operator:a", Some(true)),
            ("step.status", "operator:a", Some(true)),
            ("job.status", "operator:a", Some(true))
        ]
    );
}

/// Comments and evidence are kept in order per job.
pub async fn comments_and_evidence(store: TestStore) {
    store.create_job(job("j", "api"), "t").await.unwrap();
    store.start_attempt("j", attempt(0, "t1")).await.unwrap();
    store.add_comment("j", "operator:a", "first").await.unwrap();
    store.agent_comment("j", 1, "second").await.unwrap();
    let cs = store.comments("j").await.unwrap();
    assert_eq!(cs.iter().map(|c| c.body.as_str()).collect::<Vec<_>>(), ["first", "second"]);
    assert_eq!(cs[1].author, "agent:j-1");
    store.add_evidence("j", 1, Some("a"), "output", "hello\n", false).await.unwrap();
    store.add_evidence("j", 1, None, "note", "big", true).await.unwrap();
    assert!(matches!(store.add_evidence("j", 1, Some("zz"), "x", "", false).await, Err(StoreError::NotFound { .. })));
    let ev = store.evidence("j").await.unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!((ev[0].step_id.as_deref(), ev[1].truncated), (Some("a"), true));
    assert!(matches!(store.add_comment("nope", "a", "x").await, Err(StoreError::NotFound { .. })));
}

/// Events have strictly increasing sequence numbers and reach subscribers.
pub async fn events_are_sequenced_and_broadcast(store: TestStore) {
    let mut rx = store.subscribe();
    store.create_job(job("j", "api"), "t").await.unwrap();
    store.set_desired("j", DesiredState::Paused, "operator:a", None).await.unwrap();
    let all = store.events_since(0, 100, None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(store.latest_seq().await.unwrap(), all[1].seq);
    assert!(all[0].seq < all[1].seq);
    assert_eq!(store.events_since(all[0].seq, 100, None).await.unwrap().len(), 1);
    store.create_job(job("other", "api"), "t").await.unwrap();
    let mine = store.events_since(0, 100, Some("j")).await.unwrap();
    assert_eq!(mine.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["job.created", "job.desired"]);
    let first = rx.recv().await.unwrap();
    assert_eq!((first.seq, first.kind.as_str()), (all[0].seq, "job.created"));
    assert_eq!(rx.recv().await.unwrap().kind, "job.desired");
    let ev = store
        .record_event(Some("j"), george_core::EventKind::JobQueued, "scheduler", json!({"reason": "global limit"}))
        .await
        .unwrap();
    assert_eq!(store.events_since(ev.seq - 1, 10, None).await.unwrap()[0].data["reason"], "global limit");
    let counts = store.count_by_status().await.unwrap();
    assert_eq!(counts, vec![(JobStatus::Pending, 2)]);
}

/// The token ledger keeps every call and sums them per chapter and AgentSpec.
pub async fn the_ledger_records_and_sums_usage(store: TestStore) {
    use george_core::api::UsageRecord;
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-05-01T10:00:00Z").unwrap().to_utc();
    let rec = |job: &str, spec: &str, input: u64, output: u64, minutes: i64| UsageRecord {
        ts: t0 + chrono::Duration::minutes(minutes),
        job_id: job.into(),
        attempt: 1,
        agent_spec: spec.into(),
        chapter: "pay".into(),
        provider: "openai".into(),
        model: "gpt-test".into(),
        input_tokens: input,
        output_tokens: output,
        streamed: minutes % 2 == 0,
    };
    store.record_usage(&rec("a", "qm", 100, 20, 0)).await.unwrap();
    store.record_usage(&rec("a", "qm", 50, 5, 1)).await.unwrap();
    store.record_usage(&rec("b", "ranger", 7, 3, 2)).await.unwrap();
    let a = store.usage_records(t0, Some("a")).await.unwrap();
    assert_eq!(
        a.iter().map(|r| (r.input_tokens, r.output_tokens, r.streamed)).collect::<Vec<_>>(),
        [(100, 20, true), (50, 5, false)]
    );
    let totals = store.usage_totals(t0).await.unwrap();
    assert_eq!(totals.len(), 2);
    assert_eq!(
        (totals[0].agent_spec.as_str(), totals[0].invocations, totals[0].input_tokens, totals[0].output_tokens),
        ("qm", 2, 150, 25)
    );
    assert_eq!(store.usage_totals(t0 + chrono::Duration::minutes(2)).await.unwrap().len(), 1, "since filters by time");
}

/// Settings are durable key/value facts, listed by prefix.
pub async fn settings_are_kept_and_listed_by_prefix(store: TestStore) {
    assert_eq!(store.setting("alert:org:yellow").await.unwrap(), None);
    store.set_setting("alert:org:yellow", Some(json!("2026-05-01"))).await.unwrap();
    store.set_setting("alert:org:red", Some(json!("2026-05-01"))).await.unwrap();
    store.set_setting("approval:j1", Some(json!({"by": "operator:a"}))).await.unwrap();
    store.set_setting("alert:org:yellow", Some(json!("2026-06-01"))).await.unwrap();
    assert_eq!(store.setting("alert:org:yellow").await.unwrap(), Some(json!("2026-06-01")));
    let alerts = store.settings("alert:").await.unwrap();
    assert_eq!(alerts.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["alert:org:red", "alert:org:yellow"]);
    store.set_setting("approval:j1", None).await.unwrap();
    assert!(store.settings("approval:").await.unwrap().is_empty());
}

/// Runs job `id` to a verdict; its attempt ends unless `keep_agent`.
async fn finish(store: &TestStore, id: &str, keep_agent: bool) {
    store.create_job(job(id, "api"), "t").await.unwrap();
    let n = store.start_attempt(id, attempt(0, &format!("tok-{id}"))).await.unwrap().attempt;
    store.attempt_spawned(id, n, json!({"pid": 1})).await.unwrap();
    store.report_job(id, n, JobStatus::Completed, None).await.unwrap();
    if !keep_agent {
        store.end_attempt(id, n, AttemptEnd { exit_code: Some(0), outcome: "exited".into() }).await.unwrap();
    }
}

/// Retention takes a finished job with everything recorded of it, once
/// every event of it is below the floor; a running job, a finished job
/// whose agent is still stopping, and events above the floor stay; the
/// floor never goes down; job-less events below the floor are compacted.
pub async fn retention_deletes_only_finished_jobs_below_the_event_floor(store: TestStore) {
    finish(&store, "old", false).await;
    finish(&store, "stopping", true).await;
    store.create_job(job("running", "api"), "t").await.unwrap();
    store.start_attempt("running", attempt(0, "tok-running")).await.unwrap();
    store.record_event(None, george_core::EventKind::SourceApplied, "t", json!({})).await.unwrap();
    let later = chrono::Utc::now() + chrono::Duration::days(1);
    let all = RetentionScope::Except(Vec::new());

    // Every event is still above the floor: nothing may go.
    assert_eq!(store.event_floor().await.unwrap(), 0);
    assert_eq!(store.expired_jobs(later, &all, 0, 100).await.unwrap(), Vec::<String>::new());
    assert_eq!(store.compact_events(later, 100).await.unwrap(), 0);
    // Asked with a higher floor, the old job would go; deleting it still
    // waits until the stored floor has risen past its events.
    let floor = store.latest_seq().await.unwrap() + 1;
    assert_eq!(store.expired_jobs(later, &all, floor, 100).await.unwrap(), vec!["old".to_string()]);
    assert_eq!(store.delete_jobs(&["old".into()], "gc").await.unwrap(), Vec::<String>::new());

    assert_eq!(store.raise_event_floor(floor).await.unwrap(), floor);
    assert_eq!(store.raise_event_floor(1).await.unwrap(), floor, "the floor never goes down");
    assert_eq!(
        store.expired_jobs(chrono::Utc::now() - chrono::Duration::days(1), &all, floor, 100).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(store.expired_jobs(later, &all, floor, 100).await.unwrap(), vec!["old".to_string()]);
    assert_eq!(
        store.expired_jobs(later, &RetentionScope::Template("t".into()), floor, 100).await.unwrap(),
        vec!["old".to_string()]
    );
    assert_eq!(
        store.expired_jobs(later, &RetentionScope::Template("u".into()), floor, 100).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        store.expired_jobs(later, &RetentionScope::Except(vec!["t".into()]), floor, 100).await.unwrap(),
        Vec::<String>::new()
    );

    // The job's own settings go with it; another job's, and other settings, stay.
    use crate::job_settings::{APPROVAL, CHILDREN_SETTLED, GITHUB_SEEN};
    let mine = [format!("{APPROVAL}old"), format!("{GITHUB_SEEN}old"), format!("{CHILDREN_SETTLED}old:1")];
    let others = [format!("{APPROVAL}old-2"), format!("{CHILDREN_SETTLED}old-2:1"), "jira.claim:old".to_string()];
    for key in mine.iter().chain(&others) {
        store.set_setting(key, Some(json!(true))).await.unwrap();
    }
    let ids = ["old", "stopping", "running"].map(String::from);
    assert_eq!(store.delete_jobs(&ids, "gc").await.unwrap(), vec!["old".to_string()]);
    for key in &mine {
        assert_eq!(store.setting(key).await.unwrap(), None, "{key} went with its job");
    }
    for key in &others {
        assert!(store.setting(key).await.unwrap().is_some(), "{key} stays");
    }
    assert!(store.get_job("old").await.unwrap().is_none());
    assert!(store.get_agent("old", 1).await.unwrap().is_none());
    assert!(store.events_since(0, 1000, Some("old")).await.unwrap().is_empty());
    for kept in ["stopping", "running"] {
        assert!(store.get_job(kept).await.unwrap().is_some(), "{kept}");
        assert!(!store.events_since(0, 1000, Some(kept)).await.unwrap().is_empty(), "{kept}");
    }
    let deleted = store.events_since(floor - 1, 1000, None).await.unwrap();
    assert!(deleted.iter().any(|e| e.kind == "jobs.deleted" && e.data["jobs"] == json!(["old"])), "{deleted:?}");

    // Job-less events: only those below the floor and older than asked go.
    assert_eq!(store.compact_events(chrono::Utc::now() - chrono::Duration::days(1), 100).await.unwrap(), 0);
    assert_eq!(store.compact_events(later, 100).await.unwrap(), 1, "the source.applied event below the floor");
    let left = store.events_since(0, 1000, None).await.unwrap();
    assert!(left.iter().all(|e| e.job_id.is_some() || e.seq >= floor), "{left:?}");
}

/// Pages of a job list, each starting after the last of the one before,
/// add up to the whole list, in order, with no job twice.
pub async fn jobs_are_listed_in_pages(store: TestStore) {
    for i in 0..7 {
        store.create_job(job(&format!("p{i}"), "api"), "t").await.unwrap();
    }
    let all: Vec<String> = store.list_jobs(&JobFilter::default()).await.unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(all.len(), 7);
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page =
            store.list_jobs(&JobFilter { limit: Some(3), after: after.clone(), ..Default::default() }).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.created_at, last.id.clone()));
        paged.extend(page.into_iter().map(|j| j.id));
    }
    assert_eq!(paged, all);
    let newest: Vec<String> = store
        .list_jobs(&JobFilter { newest_first: true, limit: Some(3), after: None, ..Default::default() })
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    let last_three: Vec<String> = all.iter().rev().take(3).cloned().collect();
    assert_eq!(newest, last_three);
    let third = &newest[2];
    let created = store.get_job(third).await.unwrap().unwrap().created_at;
    let older = store
        .list_jobs(&JobFilter { newest_first: true, after: Some((created, third.clone())), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(older.len(), 4, "the rest, newest first");
}

/// Selectors pick jobs by their labels; a revision relabels a started job without touching its work.
pub async fn jobs_are_picked_by_label_selectors(store: TestStore) {
    use george_core::labels::Selector;
    let with = |id: &str, labels: &[(&str, &str)]| {
        let mut j = job(id, "git");
        j.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        j
    };
    let jobs = vec![
        with("web", &[("app.kubernetes.io/name", "web"), ("tier", "front")]),
        with("db", &[("app.kubernetes.io/name", "db"), ("tier", "back"), ("canary", "")]),
        with("bare", &[]),
    ];
    store.apply_snapshot(snapshot("r1", jobs)).await.unwrap();
    let pick = async |selector: &str| -> Vec<String> {
        let filter = JobFilter { selector: Selector::parse(selector).unwrap(), ..Default::default() };
        store.list_jobs(&filter).await.unwrap().into_iter().map(|j| j.id).collect()
    };
    assert_eq!(pick("app.kubernetes.io/name=web").await, ["web"]);
    assert_eq!(pick("tier!=front").await, ["bare", "db"], "!= holds without the label");
    assert_eq!(pick("canary").await, ["db"], "an empty value is a value");
    assert_eq!(pick("!canary,tier").await, ["web"]);
    assert_eq!(pick("tier=back,app.kubernetes.io/name==db").await, ["db"]);
    assert!(pick("tier=middle").await.is_empty());
    assert_eq!(store.get_job("web").await.unwrap().unwrap().labels["tier"], "front");
    // A revision that only relabels a started job changes its labels, not its work.
    store.start_attempt("db", attempt(0, "tdb")).await.unwrap();
    let r = store
        .apply_snapshot(snapshot(
            "r2",
            vec![with("db", &[("tier", "back"), ("owner", "ops")]), with("web", &[]), with("bare", &[])],
        ))
        .await
        .unwrap();
    assert_eq!(r.updated, ["db", "web"]);
    assert_eq!(pick("owner=ops").await, ["db"]);
    assert!(pick("canary").await.is_empty());
    let db = store.get_job("db").await.unwrap().unwrap();
    assert_eq!(db.attempt, 1, "still its first attempt");
}
