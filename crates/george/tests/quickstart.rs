//! Acceptance: the quickstart's jobs all complete via `george up --once`, and
//! a second run is a no-op (nothing respawned).

mod common;

use common::*;
use george_store::{SqliteStore, Store};
use std::process::Command;

#[test]
fn quickstart_completes_and_a_second_run_is_a_no_op() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join(".george");
    let up = || {
        Command::new(george_bin())
            .args(["up", "examples/quickstart", "--once", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .current_dir(repo_root())
            .output()
            .unwrap()
    };
    let first = up();
    assert!(first.status.success(), "first run failed:\n{}\n{}", stdout(&first), stderr(&first));
    let out = stdout(&first);
    assert!(out.contains("3/3 jobs completed"), "{out}");

    // The jobs did real work.
    let report = std::fs::read_to_string(data.join("outputs/weekly-report/reports/weekly.txt")).unwrap();
    assert_eq!(report.lines().count(), 12);
    assert_eq!(report.lines().next(), Some("Weekly status of the platform team, item 1"));
    let digest = std::fs::read_to_string(data.join("outputs/incident-digest/reports/incidents.txt")).unwrap();
    assert_eq!(digest.lines().last(), Some("INCIDENTS THIS WEEK, ITEM 3!"));
    let sums = std::fs::read_to_string(data.join("outputs/etc-inventory/SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 15);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let count_attempts = || {
        rt.block_on(async {
            let store = SqliteStore::open(data.join("george.db")).unwrap();
            (
                store.list_agents(false, 1000).await.unwrap().len(),
                store.events_since(0, 100_000, None).await.unwrap().len(),
            )
        })
    };
    let (attempts, _) = count_attempts();
    assert_eq!(attempts, 3, "one agent per job");

    let second = up();
    assert!(second.status.success(), "second run failed:\n{}\n{}", stdout(&second), stderr(&second));
    assert!(stdout(&second).contains("3/3 jobs completed"));
    let (attempts_after, _) = count_attempts();
    assert_eq!(attempts_after, 3, "the second run respawned nothing");
}

#[test]
fn up_refuses_invalid_manifests_with_located_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    write(&m, "agents/a.yaml", AGENT);
    write(&m, "jobs/j.yaml", &job("j", "missing-template"));
    let out = Command::new(george_bin())
        .args(["up", "--once", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .arg(&m)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("jobs/j.yaml:5:13: spec.template: unknown TaskTemplate `missing-template`"), "{err}");
}
