//! The engine on the PostgreSQL store (issue 7, first part): `george serve`
//! with `GEORGE_DATABASE_URL` runs the quickstart to completion on a real
//! PostgreSQL server, keeps its state there across a `kill -9` and restart
//! (nothing is re-run), refuses a second engine on the same database until
//! leader election exists, and stops when it loses the database's engine
//! lock (its connection broke), so that it never acts beside another.

mod common;

#[path = "../../george-store/tests/postgres_server/mod.rs"]
mod postgres_server;

use common::*;
use george_core::JobStatus;
use postgres_server::TestDatabase;
use std::process::{Command, Stdio};
use std::time::Duration;

const QUICKSTART_JOBS: [&str; 3] = ["etc-inventory", "incident-digest", "weekly-report"];

#[test]
fn the_engine_runs_on_postgres_and_keeps_its_state_there() {
    let db = TestDatabase::create();
    let tmp = tempfile::tempdir().unwrap();
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

    // A second engine on the same database is refused, saying why.
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(george_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(other.path())
        .env("GEORGE_DATABASE_URL", &db.url)
        .env("GEORGE_API_TOKENS", format!("test:{TOKEN}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("another george engine is running on the database"), "{err}");
    assert!(!err.contains("password"), "{err}");

    // The lock's connection breaks (as in a database restart): the engine stops rather than
    // run on without the lock, and starts again cleanly.
    let terminated = db.terminate_connections();
    assert!(terminated >= 2, "the store's and the lock's connections: {terminated}");
    let status = wait_for(Duration::from_secs(30), "the engine to stop", || engine.child.try_wait().unwrap());
    assert!(!status.success());
    let log = engine.log();
    assert!(log.contains("the connection holding the engine lock broke"), "{log}");
    engine.restart();

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
