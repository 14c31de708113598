//! The conformance suite every [`Runtime`] passes (quickwit's shape: one
//! suite, a macro per backend — `quickwit-metastore/src/tests/mod.rs`): a
//! spawn retried makes one agent, an exit is reported with its code (as a
//! status and as an event), terminate stops an agent — also one that
//! ignores SIGTERM — an engine restarted finds and adopts its agents,
//! cleanup forgets a finished one, and (on runtimes with warm pools) a warm
//! agent serves the one attempt it is claimed for and never another.

use async_trait::async_trait;
use george_runtime::{AgentStatus, Runtime, SpawnRequest};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How a test's agent behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Exits at once with this code.
    Exit(i32),
    /// Runs until it is stopped; exits 0 on SIGTERM.
    Run,
    /// Runs and ignores SIGTERM: only a kill ends it.
    IgnoreTerm,
}

impl Behaviour {
    /// The agent as a POSIX shell script (a trap, so that even a container's
    /// PID 1 answers SIGTERM as asked).
    pub fn script(self) -> String {
        match self {
            Behaviour::Exit(code) => format!("exit {code}"),
            Behaviour::Run => "trap 'exit 0' TERM; while :; do sleep 0.1; done".into(),
            Behaviour::IgnoreTerm => "trap '' TERM; while :; do sleep 0.1; done".into(),
        }
    }
}

/// A request for `job`'s `attempt` whose agent runs `b`'s script with
/// `/bin/sh`, labelled with its job and attempt; backends change what they need.
pub fn request(job: &str, attempt: u32, b: Behaviour) -> SpawnRequest {
    SpawnRequest {
        job_id: job.into(),
        attempt,
        agent_spec: "worker".into(),
        command: vec!["/bin/sh".into(), "-c".into(), b.script()],
        image: None,
        env: Default::default(),
        resources: Default::default(),
        labels: [
            ("george.io/job".to_string(), job.to_string()),
            ("george.io/attempt".to_string(), attempt.to_string()),
        ]
        .into(),
        output_dir: None,
        secrets: vec![],
        max_active: None,
        context: None,
        agent_token: None,
        network: Default::default(),
    }
}

/// A runtime backend under test.
#[async_trait]
pub trait RuntimeBackend: Send + Sync {
    /// A runtime for this backend's agents; each call is a new one on the
    /// same machine or cluster (an engine restarted).
    async fn runtime(&self) -> Arc<dyn Runtime>;
    /// The request for `job`'s `attempt`, whose agent behaves as `b`.
    fn request(&self, job: &str, attempt: u32, b: Behaviour) -> SpawnRequest;
}

/// How long an agent may take to start or stop on any backend.
const PATIENCE: Duration = Duration::from_secs(60);

async fn start(rt: &dyn Runtime, req: SpawnRequest) -> Value {
    let (job, attempt) = (req.job_id.clone(), req.attempt);
    let h = rt.spawn(req).await.expect("spawn");
    rt.release(&job, attempt, &h).await.expect("release");
    h
}

async fn status_until(
    rt: &dyn Runtime,
    job: &str,
    attempt: u32,
    h: &Value,
    what: &str,
    ok: impl Fn(AgentStatus) -> bool,
) -> AgentStatus {
    crate::eventually(PATIENCE, what, async || {
        let s = rt.status(job, attempt, h).await.expect("status");
        ok(s).then_some(s)
    })
    .await
}

fn running(s: AgentStatus) -> bool {
    s == AgentStatus::Running
}

async fn owned(rt: &dyn Runtime, job: &str) -> Vec<george_runtime::OwnedAgent> {
    rt.list_owned().await.expect("list").into_iter().filter(|a| a.job_id == job).collect()
}

/// A spawn retried (the engine died before it stored the handle) makes one
/// agent, with the same handle.
pub async fn spawning_twice_makes_one_agent(b: impl RuntimeBackend) {
    let rt = b.runtime().await;
    let req = b.request("twice", 1, Behaviour::Run);
    let first = rt.spawn(req.clone()).await.expect("spawn");
    let second = rt.spawn(req).await.expect("spawn again");
    assert_eq!(first, second, "the same agent");
    assert_eq!(owned(rt.as_ref(), "twice").await.len(), 1, "one agent");
    rt.release("twice", 1, &first).await.expect("release");
    status_until(rt.as_ref(), "twice", 1, &first, "the agent to run", running).await;
    rt.terminate("twice", 1, &first, Duration::from_secs(5)).await.expect("terminate");
    rt.cleanup("twice", 1).await.expect("cleanup");
}

/// An agent's exit is reported with its code, as its status and as an event.
pub async fn an_exit_is_reported_with_its_code(b: impl RuntimeBackend) {
    let rt = b.runtime().await;
    let mut events = rt.subscribe();
    let h = start(rt.as_ref(), b.request("exits", 1, Behaviour::Exit(3))).await;
    let s = status_until(rt.as_ref(), "exits", 1, &h, "the agent to exit", |s| !running(s)).await;
    assert!(matches!(s, AgentStatus::Exited { code: Some(3), .. }), "exit code 3: {s:?}");
    let event = tokio::time::timeout(PATIENCE, async {
        loop {
            let e = events.recv().await.expect("the event stream");
            if e.job_id == "exits" && e.attempt == 1 {
                return e;
            }
        }
    })
    .await
    .expect("an exit event");
    assert!(matches!(event.status, AgentStatus::Exited { code: Some(3), .. }), "{event:?}");
    rt.cleanup("exits", 1).await.expect("cleanup");
}

/// Terminate stops a running agent, and kills one that ignores SIGTERM
/// once its grace is over.
pub async fn terminate_stops_an_agent_even_one_that_ignores_sigterm(b: impl RuntimeBackend) {
    let rt = b.runtime().await;
    let polite = start(rt.as_ref(), b.request("polite", 1, Behaviour::Run)).await;
    let stubborn = start(rt.as_ref(), b.request("stubborn", 1, Behaviour::IgnoreTerm)).await;
    status_until(rt.as_ref(), "polite", 1, &polite, "the polite agent to run", running).await;
    status_until(rt.as_ref(), "stubborn", 1, &stubborn, "the stubborn agent to run", running).await;
    let ended = rt.terminate("polite", 1, &polite, Duration::from_secs(20)).await.expect("terminate");
    assert!(!running(ended), "stopped: {ended:?}");
    let ended = rt.terminate("stubborn", 1, &stubborn, Duration::from_millis(300)).await.expect("terminate");
    assert!(!running(ended), "killed after its grace: {ended:?}");
    for (job, h) in [("polite", &polite), ("stubborn", &stubborn)] {
        assert!(!running(rt.status(job, 1, h).await.expect("status")), "{job} stays stopped");
        rt.cleanup(job, 1).await.expect("cleanup");
    }
}

/// A new runtime (the engine restarted) lists the running agent, adopts
/// it, and can stop it.
pub async fn a_restarted_engine_finds_and_adopts_its_agents(b: impl RuntimeBackend) {
    let before = b.runtime().await;
    let h = start(before.as_ref(), b.request("kept", 1, Behaviour::Run)).await;
    status_until(before.as_ref(), "kept", 1, &h, "the agent to run", running).await;
    let after = b.runtime().await;
    let found = owned(after.as_ref(), "kept").await;
    assert_eq!(found.len(), 1, "found: {found:?}");
    assert_eq!((found[0].attempt, found[0].status), (1, AgentStatus::Running), "{found:?}");
    after.adopt(&found[0]).await.expect("adopt");
    assert_eq!(after.status("kept", 1, &found[0].handle).await.expect("status"), AgentStatus::Running);
    let ended = after.terminate("kept", 1, &found[0].handle, Duration::from_secs(20)).await.expect("terminate");
    assert!(!running(ended), "stopped by the new engine: {ended:?}");
    after.cleanup("kept", 1).await.expect("cleanup");
    drop(before);
}

/// Cleanup forgets a finished agent (twice is harmless).
pub async fn cleanup_forgets_a_finished_agent(b: impl RuntimeBackend) {
    let rt = b.runtime().await;
    let h = start(rt.as_ref(), b.request("done", 1, Behaviour::Exit(0))).await;
    status_until(rt.as_ref(), "done", 1, &h, "the agent to exit", |s| !running(s)).await;
    rt.cleanup("done", 1).await.expect("cleanup");
    crate::eventually(PATIENCE, "the agent to be forgotten", async || {
        owned(rt.as_ref(), "done").await.is_empty().then_some(())
    })
    .await;
    rt.cleanup("done", 1).await.expect("cleanup twice");
}

/// A warm agent (runtimes with pools): alive and unclaimed until its claim;
/// then the attempt's agent, running that attempt's command once released;
/// never claimable again. A discarded one is gone, and a restarted engine
/// clears the warm agents of the one before it.
pub async fn a_warm_agent_serves_the_one_attempt_it_is_claimed_for(b: impl RuntimeBackend) {
    let rt = b.runtime().await;
    if !rt.pools() {
        return;
    }
    let req = b.request("pooled", 1, Behaviour::Exit(7));
    let spec = george_runtime::WarmSpec::of(&req);
    let warm = rt.warm(&spec).await.expect("warm");
    assert!(rt.warm_alive(&warm), "a warm agent waits");
    crate::eventually(PATIENCE, "the warm agent to be prepared", async || rt.warm_ready(&warm).then_some(())).await;
    let known = rt.warm_handle(&warm);
    let h = rt.claim(req, warm.clone()).await.expect("claim");
    if let Some(known) = known {
        assert_eq!(known, h, "the handle known before the claim is the claim's");
    }
    assert!(!rt.warm_alive(&warm), "a claimed agent is no longer warm");
    assert_eq!(owned(rt.as_ref(), "pooled").await.len(), 1, "the claimed agent is the attempt's");
    let again = rt.claim(b.request("other", 1, Behaviour::Run), warm.clone()).await;
    if let Ok(h2) = &again {
        assert_ne!(h2, &h, "a claimed warm agent is never given to another attempt");
        rt.cleanup("other", 1).await.expect("cleanup");
    }
    rt.release("pooled", 1, &h).await.expect("release");
    let s = status_until(rt.as_ref(), "pooled", 1, &h, "the bound agent to run its command", |s| !running(s)).await;
    assert!(matches!(s, AgentStatus::Exited { code: Some(7), .. }), "it ran the claimed attempt's command: {s:?}");
    // A later attempt of the same job, whose first attempt's files are still there, is served too.
    let later = rt.warm(&spec).await.expect("warm");
    let h2 = rt.claim(b.request("pooled", 2, Behaviour::Exit(8)), later).await.expect("claim for attempt 2");
    rt.release("pooled", 2, &h2).await.expect("release");
    let s = status_until(rt.as_ref(), "pooled", 2, &h2, "the second attempt's agent to run", |s| !running(s)).await;
    assert!(matches!(s, AgentStatus::Exited { code: Some(8), .. }), "attempt 2 ran its own command: {s:?}");
    rt.cleanup("pooled", 2).await.expect("cleanup");
    rt.cleanup("pooled", 1).await.expect("cleanup");

    let discarded = rt.warm(&spec).await.expect("warm");
    rt.discard(&discarded).await.expect("discard");
    assert!(!rt.warm_alive(&discarded), "a discarded agent is gone");

    let left = rt.warm(&spec).await.expect("warm");
    let restarted = b.runtime().await;
    assert!(restarted.clear_pools().await.expect("clear") >= 1, "the restarted engine clears the warm agent left");
    crate::eventually(PATIENCE, "the cleared warm agent to end", async || (!rt.warm_alive(&left)).then_some(())).await;
}

/// Generates the suite's tests for a backend: `$make` is an async
/// expression giving a fresh [`RuntimeBackend`] for each test.
#[macro_export]
macro_rules! runtime_conformance_tests {
    ($make:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn spawning_twice_makes_one_agent() {
            $crate::runtime_conformance::spawning_twice_makes_one_agent($make.await).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_exit_is_reported_with_its_code() {
            $crate::runtime_conformance::an_exit_is_reported_with_its_code($make.await).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn terminate_stops_an_agent_even_one_that_ignores_sigterm() {
            $crate::runtime_conformance::terminate_stops_an_agent_even_one_that_ignores_sigterm($make.await).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_restarted_engine_finds_and_adopts_its_agents() {
            $crate::runtime_conformance::a_restarted_engine_finds_and_adopts_its_agents($make.await).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_warm_agent_serves_the_one_attempt_it_is_claimed_for() {
            $crate::runtime_conformance::a_warm_agent_serves_the_one_attempt_it_is_claimed_for($make.await).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cleanup_forgets_a_finished_agent() {
            $crate::runtime_conformance::cleanup_forgets_a_finished_agent($make.await).await
        }
    };
}
