//! The reconciler and admission in-process, on the fake runtime: no agent
//! process, a test decides when an agent reports and exits, so the
//! scheduler's promises are checked directly against the engine that keeps
//! them (the concurrency limit, preemption of the newest low-priority job).

use crate::support;
use george_core::record::Event;
use george_core::{EventKind, JobStatus, ManualClock, Priority};
use george_store::Store;
use george_testkit::{eventually, FakeRuntime};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// An agent the fake runtime runs until the test ends it, and a summon trigger.
const SUMMONED: &str = "apiVersion: george/v1
kind: AgentSpec
metadata: {name: worker}
spec:
  command: [/bin/false]
  capabilities: [shell]
  healthCheck: {interval: 1h, timeout: 2000h}
---
apiVersion: george/v1
kind: Trigger
metadata: {name: summoned}
spec:
  type: summon
  agent: worker
  template: t
";

fn manifests() -> String {
    support::manifests(&[SUMMONED, support::TEMPLATE])
}

pub(crate) struct InProcess {
    pub store: Arc<dyn Store>,
    pub runtime: Arc<FakeRuntime>,
    pub clock: ManualClock,
    pub engine: support::Running,
    pub dir: tempfile::TempDir,
}

/// An engine on a SQLite store and the fake runtime, running at most `max` agents.
async fn engine(max: u32) -> InProcess {
    engine_with(|cfg| cfg.max_concurrent = Some(max)).await
}

/// An engine on a SQLite store and the fake runtime, its settings adjusted by `tune`.
pub(crate) async fn engine_with(tune: impl FnOnce(&mut george_engine::EngineConfig)) -> InProcess {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(chrono::Utc::now());
    let store = support::store_with(dir.path(), &manifests(), Some(&clock)).await;
    let runtime = Arc::new(FakeRuntime::new(dir.path().join("logs")));
    let mut cfg = support::config();
    cfg.reconcile_interval = Duration::from_secs(3600);
    cfg.output_dir = Some(dir.path().join("outputs"));
    tune(&mut cfg);
    let engine = support::start(cfg, store.clone(), runtime.clone(), &clock);
    InProcess { store, runtime, clock, engine, dir }
}

impl InProcess {
    pub(crate) async fn summon(&self, priority: Priority) -> String {
        // A summon's job id is stamped with the engine's clock.
        self.clock.advance(Duration::from_millis(1));
        let fired = self
            .engine
            .handle
            .triggers()
            .summon("worker", Some("t"), &BTreeMap::new(), Some(priority), "test")
            .await
            .unwrap();
        fired.job
    }

    /// Waits until exactly the agents of `jobs` run (attempt numbers aside).
    pub(crate) async fn running(&self, jobs: &[&str]) -> Vec<(String, u32)> {
        eventually(Duration::from_secs(10), &format!("exactly {jobs:?} running"), async || {
            let running = self.runtime.running();
            let mut ids: Vec<&str> = running.iter().map(|(j, _)| j.as_str()).collect();
            ids.sort();
            let mut want = jobs.to_vec();
            want.sort();
            (ids == want).then_some(running.clone())
        })
        .await
    }

    /// The agent reports success and exits, as the reference agent would.
    pub(crate) async fn finish(&self, job: &str, attempt: u32) {
        self.store.report_job(job, attempt, JobStatus::Completed, None).await.unwrap();
        self.runtime.exit(job, attempt, 0);
        eventually(Duration::from_secs(10), "the job to complete", async || {
            let j = self.store.get_job(job).await.unwrap()?;
            (j.status == JobStatus::Completed).then_some(())
        })
        .await;
    }

    async fn events(&self, job: &str, kind: EventKind) -> Vec<Event> {
        let all = self.store.events_since(0, 10_000, Some(job)).await.unwrap();
        all.into_iter().filter(|e| e.kind == kind).collect()
    }

    pub(crate) async fn stop(self) {
        self.engine.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_limit_of_one_runs_queued_jobs_one_at_a_time_and_says_why_they_wait() {
    let e = engine(1).await;
    let a = e.summon(Priority::P2).await;
    e.running(&[&a]).await;
    // Each queued before the next is summoned: two passes at once may reach
    // the scheduler in either order (the store reads side by side).
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let job = e.summon(Priority::P2).await;
        eventually(Duration::from_secs(10), "the queued job to say why it waits", async || {
            (!e.events(&job, EventKind::JobQueued).await.is_empty()).then_some(())
        })
        .await;
        waiting.push(job);
    }
    let (b, c) = (waiting[0].clone(), waiting[1].clone());
    for (job, next) in [(&a, Some(&b)), (&b, Some(&c)), (&c, None)] {
        let running = e.running(&[job]).await;
        if let Some(next) = next {
            let queued = e.events(next, EventKind::JobQueued).await;
            assert_eq!(queued.len(), 1, "said once, not on every look, for {next}: {queued:?}");
            assert_eq!(queued[0].data["reason"], "global limit (1 agents)");
            let why = e.store.get_job(next).await.unwrap().unwrap().reason.unwrap_or_default();
            let ahead = if next == &c { "; 1 ahead when it joined" } else { "" };
            assert_eq!(why, format!("queued (P2{ahead}): waiting for a slot: global limit (1 agents)"));
            assert_eq!(queued[0].data["ahead"], if next == &c { 1 } else { 0 });
        }
        e.finish(job, running[0].1).await;
    }
    assert_eq!(e.runtime.max_live(), 1, "never more than the limit at once");
    assert_eq!(e.runtime.spawns(), 3, "one agent per job");
    e.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_p0_preempts_the_running_low_priority_job_once_and_then_runs() {
    let e = engine(1).await;
    let low = e.summon(Priority::P3).await;
    e.running(&[&low]).await;
    let urgent = e.summon(Priority::P0).await;
    // The low-priority agent is stopped (once), and the P0's starts in its place.
    let running = e.running(&[&urgent]).await;
    assert_eq!(e.runtime.terminated(), vec![(low.clone(), 1)]);
    let preempted = e.events(&low, EventKind::JobPreempted).await;
    assert_eq!(preempted.len(), 1, "{preempted:?}");
    assert_eq!(preempted[0].data["by"], urgent.as_str());
    e.finish(&urgent, running[0].1).await;
    // The preempted job runs again once the P0 is done.
    let again = e.running(&[&low]).await;
    assert!(again[0].1 > 1, "a new attempt: {again:?}");
    let j = e.store.get_job(&low).await.unwrap().unwrap();
    assert_eq!(j.failures, 0, "a preemption is no failure: {j:?}");
    assert_eq!(e.runtime.max_live(), 1);
    e.stop().await;
}

/// The fake runtime keeps the runtime's contract, like the real ones.
mod fake_runtime_conformance {
    use george_runtime::{Runtime, SpawnRequest};
    use george_testkit::runtime_conformance::{self, Behaviour, RuntimeBackend};
    use george_testkit::FakeRuntime;
    use std::sync::Arc;

    struct Fake {
        runtime: Arc<FakeRuntime>,
        _logs: tempfile::TempDir,
    }

    #[async_trait::async_trait]
    impl RuntimeBackend for Fake {
        async fn runtime(&self) -> Arc<dyn Runtime> {
            self.runtime.clone()
        }

        fn request(&self, job: &str, attempt: u32, b: Behaviour) -> SpawnRequest {
            runtime_conformance::request(job, attempt, b)
        }
    }

    async fn fake() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        Fake { runtime: Arc::new(FakeRuntime::new(dir.path())), _logs: dir }
    }

    george_testkit::runtime_conformance_tests!(fake());
}

/// An LLM call the proxy drops unsettled (its agent hung up mid-stream)
/// while the engine stops: the stop waits for the call's usage, which is in
/// the ledger (at the worst case, no figures having arrived) the moment the
/// engine has stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_while_the_engine_stops_is_still_in_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(chrono::Utc::now());
    let store = support::store_with(dir.path(), &manifests(), Some(&clock)).await;
    let runtime = Arc::new(FakeRuntime::new(dir.path().join("logs")));
    let mut cfg = support::config();
    let provider = george_governor::Provider {
        name: "p".into(),
        api: george_governor::ProviderApi::OpenAi,
        base_url: "http://127.0.0.1:9".into(),
        key: None,
    };
    cfg.llm.providers.insert("p".into(), provider);
    cfg.llm.default_provider = Some("p".into());
    cfg.llm.default_model = Some("m".into());
    let engine = support::start(cfg, store.clone(), runtime.clone(), &clock);
    let job = engine.handle.triggers().summon("worker", Some("t"), &BTreeMap::new(), None, "test").await.unwrap().job;
    let (_, attempt) = eventually(Duration::from_secs(10), "the agent to run", async || {
        runtime.running().into_iter().find(|(j, _)| *j == job)
    })
    .await;

    let meter = engine.handle.meter().clone();
    let route = meter.route(&job, attempt).await.unwrap();
    let call = meter.reserve(route, 1_000, 500).await.unwrap();
    let stopping = tokio::spawn(engine.stop());
    drop(call);
    stopping.await.unwrap();
    let ledger = store.usage_records(chrono::Utc::now() - chrono::Duration::days(1), Some(&job)).await.unwrap();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!((ledger[0].input_tokens, ledger[0].output_tokens), (1_000, 500), "the worst case");
}

/// A restarted engine that cannot adopt one of its running agents (the
/// runtime refuses) still runs: that agent stays its job's (no second one
/// is started beside it) and its report ends the job, and new work starts.
#[tokio::test(start_paused = true)]
async fn an_agent_that_cannot_be_adopted_does_not_stop_the_engine() {
    let e = engine(4).await;
    let a = e.summon(Priority::P2).await;
    let running = e.running(&[&a]).await;
    let InProcess { store, runtime, clock, engine, dir } = e;
    engine.stop().await;
    runtime.refuse_adoption();
    let mut cfg = support::config();
    cfg.reconcile_interval = Duration::from_secs(3600);
    cfg.output_dir = Some(dir.path().join("outputs"));
    let e =
        InProcess { engine: support::start(cfg, store.clone(), runtime.clone(), &clock), store, runtime, clock, dir };
    let b = e.summon(Priority::P2).await;
    e.running(&[&a, &b]).await;
    assert_eq!(e.runtime.spawns(), 2, "one agent per job: {a}'s was not replaced");
    e.finish(&a, running[0].1).await;
    e.stop().await;
}
