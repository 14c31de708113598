//! The engine on the PostgreSQL store, and replicas with leader election
//! (issue 7), against a real PostgreSQL server:
//! - `george serve` with `GEORGE_DATABASE_URL` runs the quickstart and keeps
//!   its state there across `kill -9` and a restart (nothing re-run);
//! - three replicas on one database: exactly one leads; `kill -9` of the
//!   leader mid-run hands the lease to another within the lease duration,
//!   every job completes, no job ever had two live attempts (from the event
//!   log) and none was created twice;
//! - a leader paused past its lease (SIGSTOP, then SIGCONT) has its writes
//!   refused by the fence and stops.

use crate::common;

use george_testkit::postgres_server;

use common::*;
use george_core::JobStatus;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use postgres_server::TestDatabase;
use std::time::{Duration, Instant};

const QUICKSTART_JOBS: [&str; 3] = ["etc-inventory", "incident-digest", "weekly-report"];

/// Short leases so a failover takes seconds.
const ELECTION: &str = "  leaderElection:\n    leaseDuration: 3s\n    renewDeadline: 2s\n    retryPeriod: 300ms\n";

#[test]
fn the_engine_runs_on_postgres_and_keeps_its_state_there() {
    let db = TestDatabase::create();
    let tmp = common::tempdir().unwrap();
    let manifests = repo_root().join("examples/quickstart");
    let env = [("GEORGE_DATABASE_URL", db.url.as_str())];
    let mut engine = Engine::start_with_env(tmp.path(), "", &["--manifests", manifests.to_str().unwrap()], &env);
    let rt = engine.rt();
    rt.block_on(async {
        for id in QUICKSTART_JOBS {
            engine.wait_status(id, JobStatus::Completed, Duration::from_secs(60)).await;
        }
    });
    assert!(!tmp.path().join("data/george.db").exists(), "no SQLite file: the state is in PostgreSQL");
    let jobs_in_db: i64 = db.with_client(|c| c.query_one("SELECT COUNT(*) FROM jobs", &[]).map(|r| r.get(0)));
    assert_eq!(jobs_in_db, 3);

    // Killed and restarted: the same jobs, nothing run again.
    engine.kill9();
    engine.restart();
    rt.block_on(async {
        for id in QUICKSTART_JOBS {
            let job = engine.job(id).await;
            assert_eq!((job.status, job.attempt), (JobStatus::Completed, 1), "{id}");
        }
        let events = engine.client.events(0, 5000).await.unwrap();
        let started = events.iter().filter(|e| e.kind == "attempt.started").count();
        assert_eq!(started, 3, "each job ran once");
    });
}

/// The current leader's holder name, per the database.
fn leader(db: &TestDatabase) -> Option<String> {
    db.with_client(|c| {
        c.query_opt("SELECT holder FROM leases WHERE name = 'george-engine' AND expires_at > now()", &[])
            .map(|r| r.map(|r| r.get(0)))
    })
}

/// Three replicas `a`, `b`, `c` on one database, with `jobs` jobs that wait for `release`.
fn replicas(tmp: &std::path::Path, db: &TestDatabase, jobs: usize) -> (Vec<Engine>, std::path::PathBuf) {
    let release = tmp.join("release");
    let m = tmp.join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    let steps = format!(
        "    - id: wait\n      description: wait for the release\n      run: while [ ! -f {} ]; do sleep 0.05; done\n",
        release.display()
    );
    write(&m, "templates/hold.yaml", &template("hold", &steps));
    for i in 0..jobs {
        write(&m, &format!("jobs/j{i}.yaml"), &job(&format!("j{i}"), "hold"));
    }
    let config = FAST_CONFIG.replacen("engine:\n", &format!("engine:\n{ELECTION}"), 1);
    let engines = ["a", "b", "c"]
        .iter()
        .map(|id| {
            let env = [("GEORGE_DATABASE_URL", db.url.as_str()), ("GEORGE_ENGINE_ID", id)];
            Engine::start_full(&tmp.join(id), &config, &["--manifests", m.to_str().unwrap()], &env)
        })
        .collect();
    (engines, release)
}

fn which(engines: &[Engine], holder: &str) -> usize {
    ["a-", "b-", "c-"].iter().position(|p| holder.starts_with(p)).filter(|i| *i < engines.len()).unwrap()
}

#[test]
fn three_replicas_one_leader_and_failover_after_kill_9() {
    let db = TestDatabase::create();
    let tmp = common::tempdir().unwrap();
    let (mut engines, release) = replicas(tmp.path(), &db, 4);
    let first = wait_for(Duration::from_secs(20), "a leader", || leader(&db));
    let l = which(&engines, &first);
    let rt = engines[0].rt();
    rt.block_on(async {
        for i in 0..4 {
            engines[l]
                .wait_job(&format!("j{i}"), "its agent to run", Duration::from_secs(30), |j| {
                    j.status == JobStatus::InProgress
                })
                .await;
        }
    });
    // Only the leader runs agents.
    for (i, e) in engines.iter().enumerate() {
        let n = agents_by_job(&e.dir).len();
        assert_eq!(n > 0, i == l, "replica {i} runs {n} agents; the leader is {l}");
    }
    // A standby's live event stream carries what the leader's process writes.
    let standby = (l + 1) % engines.len();
    // A standby syncs no sources: it sends the caller elsewhere at once, on a closed connection.
    rt.block_on(async {
        let asked = Instant::now();
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v1/sync", engines[standby].url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        assert!(asked.elapsed() < Duration::from_secs(10), "answered at once: {:?}", asked.elapsed());
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(resp.headers()["connection"], "close");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_leading", "{body}");
    });
    rt.block_on(async {
        let mut watch = engines[standby].client.watch(None, None).await.unwrap();
        engines[l].client.inject("j0", "written through the leader").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let e = tokio::time::timeout_at(deadline.into(), watch.next()).await.expect("the event").unwrap().unwrap();
            if e.kind == "comment.added" && e.job_id.as_deref() == Some("j0") {
                break;
            }
        }
    });

    engines[l].kill9();
    let killed = Instant::now();
    let next = wait_for(Duration::from_secs(15), "another leader", || leader(&db).filter(|h| *h != first));
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(15), "took over in {took:?}");
    let n = which(&engines, &next);
    assert_ne!(n, l);
    std::fs::write(&release, "").unwrap();
    rt.block_on(async {
        for i in 0..4 {
            engines[n].wait_status(&format!("j{i}"), JobStatus::Completed, Duration::from_secs(60)).await;
        }
        let events = engines[n].client.events(0, 5000).await.unwrap();
        assert_one_live_attempt_at_a_time(&events);
        let created = events.iter().filter(|e| e.kind == "job.created").count();
        assert_eq!(created, 4, "no job was created twice");
    });
    eprintln!("leader {first} killed; {next} led after {took:?}");
}

#[test]
fn a_paused_leader_is_fenced_and_stops() {
    let db = TestDatabase::create();
    let tmp = common::tempdir().unwrap();
    let (mut engines, release) = replicas(tmp.path(), &db, 2);
    engines.truncate(2);
    let first = wait_for(Duration::from_secs(20), "a leader", || leader(&db));
    let l = which(&engines, &first);
    let rt = engines[0].rt();
    rt.block_on(async {
        for i in 0..2 {
            engines[l]
                .wait_job(&format!("j{i}"), "its agent to run", Duration::from_secs(30), |j| {
                    j.status == JobStatus::InProgress
                })
                .await;
        }
    });
    let pid = Pid::from_raw(engines[l].child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let next = wait_for(Duration::from_secs(15), "another leader", || leader(&db).filter(|h| *h != first));
    // The other replica leads; the paused one wakes up in a term that is over.
    kill(pid, Signal::SIGCONT).unwrap();
    let status =
        wait_for(Duration::from_secs(20), "the deposed leader to stop", || engines[l].child.try_wait().unwrap());
    assert!(!status.success());
    let log = engines[l].log();
    assert!(log.contains("no longer leading"), "{log}");
    eprintln!("fenced writes refused after SIGCONT: {}", log.matches("fenced").count());
    assert_eq!(leader(&db).as_deref(), Some(next.as_str()), "the new leader kept the lease");
    let epochs: i64 =
        db.with_client(|c| c.query_one("SELECT epoch FROM leases WHERE name = 'george-engine'", &[]).map(|r| r.get(0)));
    assert_eq!(epochs, 2, "two terms");
    std::fs::write(&release, "").unwrap();
    let n = which(&engines, &next);
    rt.block_on(async {
        for i in 0..2 {
            engines[n].wait_status(&format!("j{i}"), JobStatus::Completed, Duration::from_secs(60)).await;
        }
        assert_one_live_attempt_at_a_time(&engines[n].client.events(0, 5000).await.unwrap());
    });
}
