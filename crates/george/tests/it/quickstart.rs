//! Acceptance: the quickstart's jobs all complete via `george up --once`, and
//! a second run is a no-op (nothing respawned).

use crate::common;

use common::*;
use george_store::{SqliteStore, Store};
use std::process::Command;

#[test]
fn quickstart_completes_and_a_second_run_is_a_no_op() {
    let tmp = common::tempdir().unwrap();
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
    let tmp = common::tempdir().unwrap();
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

fn up_cmd(manifests: &std::path::Path, data: &std::path::Path, extra: &[&str]) -> Command {
    let listen = if extra.contains(&"--listen") { vec![] } else { vec!["--listen", "127.0.0.1:0"] };
    let mut c = Command::new(george_bin());
    c.arg("up").arg(manifests).args(listen).arg("--data-dir").arg(data).args(extra);
    c
}

/// A loopback address free now: an agent reaches the engine that adopts it
/// at the address it was started with, so both runs listen there.
fn free_listen() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

#[test]
fn up_once_applies_jobs_added_since_the_last_run() {
    let tmp = common::tempdir().unwrap();
    let (m, data) = (tmp.path().join("m"), tmp.path().join("data"));
    write(&m, "agents/a.yaml", AGENT);
    write(&m, "templates/t.yaml", &template("t", "    - id: s\n      description: s\n      run: \"true\"\n"));
    for j in ["a", "b"] {
        write(&m, &format!("jobs/{j}.yaml"), &job(j, "t"));
    }
    let first = up_cmd(&m, &data, &["--once"]).output().unwrap();
    assert!(first.status.success(), "{}\n{}", stdout(&first), stderr(&first));
    assert!(stdout(&first).contains("2/2 jobs completed"), "{}", stdout(&first));

    // Two more jobs in the folder: the next run counts them (it used to judge
    // the previous revision "settled" and report 2/2).
    for j in ["c", "d"] {
        write(&m, &format!("jobs/{j}.yaml"), &job(j, "t"));
    }
    let second = up_cmd(&m, &data, &["--once"]).output().unwrap();
    assert!(second.status.success(), "{}\n{}", stdout(&second), stderr(&second));
    let out = stdout(&second);
    assert!(out.contains("4/4 jobs completed"), "{out}");
    assert!(!out.contains("2/2 jobs completed"), "judged before the folder was applied: {out}");
}

/// Starts `george up` on a job that waits for a release flag, and waits for its agent.
fn up_with_a_waiting_agent(tmp: &std::path::Path, extra: &[&str]) -> (std::process::Child, i32) {
    let (m, data) = (tmp.join("m"), tmp.join("data"));
    write(&m, "agents/a.yaml", AGENT);
    write(&m, "templates/t.yaml", &template("t", RELEASE_STEPS));
    write(&m, "jobs/w.yaml", &job("w", "t"));
    let child = up_cmd(&m, &data, extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let agent = wait_for(std::time::Duration::from_secs(30), "the agent to run its step", || {
        agent_pids(&data).into_iter().find(|pid| proc_env(*pid, "GEORGE_JOB_ID").as_deref() == Some("w"))
    });
    // The step runs (the agent was released, not merely spawned).
    wait_for(std::time::Duration::from_secs(30), "the step to run", || {
        let log = std::fs::read_to_string(data.join("logs/w/1.log")).ok()?;
        log.contains("running step").then_some(())
    });
    (child, agent)
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
}

#[test]
fn ctrl_c_stops_the_agents_says_what_is_unfinished_and_exits_130() {
    let tmp = common::tempdir().unwrap();
    let (child, agent) = up_with_a_waiting_agent(tmp.path(), &[]);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}\n{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("stopped 1 agents: w-1"), "{text}");
    assert!(text.contains("1 of 1 jobs unfinished") && text.contains(" w "), "{text}");
    assert!(!alive(agent), "the agent outlived `george up`");
    assert!(agent_pids(&tmp.path().join("data")).is_empty());
}

#[test]
fn ctrl_c_with_keep_agents_leaves_them_for_the_next_start() {
    let tmp = common::tempdir().unwrap();
    let listen = free_listen();
    let (child, agent) = up_with_a_waiting_agent(tmp.path(), &["--keep-agents", "--listen", &listen]);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("1 agents left running"), "{}", stdout(&out));
    assert!(alive(agent), "--keep-agents stopped the agent");

    // The next start adopts it and the job completes on attempt 1.
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("outputs/w")).unwrap();
    std::fs::write(data.join("outputs/w/release"), "").unwrap();
    let again = up_cmd(&tmp.path().join("m"), &data, &["--once", "--listen", &listen]).output().unwrap();
    assert!(again.status.success(), "{}\n{}", stdout(&again), stderr(&again));
    assert!(stdout(&again).contains("1/1 jobs completed"), "{}", stdout(&again));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let agents =
        rt.block_on(async { SqliteStore::open(data.join("george.db")).unwrap().list_agents(false, 10).await.unwrap() });
    assert_eq!(agents.len(), 1, "adopted, not replaced: {agents:?}");
}
