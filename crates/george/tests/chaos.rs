//! The chaos runs: `george bench --mode chaos` kills and freezes agents and
//! the engine at random — inside the spawn window too — and checks every
//! promise afterwards. A chaos run loads the machine hard and the other
//! tests have tight health deadlines, so these runs have a test binary of
//! their own (cargo runs test binaries one after another) and, within it,
//! run one at a time.

#[path = "support/binary.rs"]
#[allow(dead_code)]
mod binary;

use binary::*;
use std::process::Command;

/// One chaos run at a time.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs a chaos plan (`george bench --mode MODE --jobs JOBS`, seeded by
/// `GEORGE_CHAOS_SEED` or the clock) and checks every promise in its report:
/// no job lost, no overlapping attempts, never two live agents of one job, no
/// orphans, no healthy agent ended as unhealthy, the concurrency limit kept.
/// Returns the report and how to repeat the run.
pub fn chaos_run(mode: &str, jobs: u64, extra: &[&str]) -> (serde_json::Value, String) {
    let seed: u64 = std::env::var("GEORGE_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(george_bin())
        .args(["bench", "--mode", mode, "--jobs", &jobs.to_string(), "-o", "json", "--seed", &seed.to_string()])
        .args(extra)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("seed {seed}: no report ({e}):\n{}\n{}", stdout(&out), stderr(&out)));
    let context = format!("seed {seed} (GEORGE_CHAOS_SEED repeats it): {report:#}");
    let n = |k: &str| report[k].as_u64().unwrap_or_else(|| panic!("{k} missing: {context}"));
    assert_eq!(report["violations"], serde_json::json!([]), "{context}");
    assert!(out.status.success(), "{context}\n{}", stderr(&out));
    assert_eq!((n("jobs"), n("completed"), n("lost")), (jobs, jobs, 0), "{context}");
    assert_eq!((n("overlaps"), n("double_agents"), n("orphans")), (0, 0, 0), "{context}");
    assert_eq!(n("healthy_ended_unhealthy"), 0, "{context}");
    assert!(n("max_live_agents") <= n("max_concurrent"), "{context}");
    (report, context)
}

#[test]
fn chaos_kills_and_freezes_break_no_promise_on_the_process_runtime() {
    let (report, context) = chaos_run("chaos", 24, &[]);
    let n = |k: &str| report[k].as_u64().unwrap();
    // The plan ran: agents and the engine were killed, inside the spawn window too.
    assert!(n("agent_kills") >= 4 && n("engine_kills") >= 3, "{context}");
    assert!(n("spawn_window_kills") >= 1, "{context}");
    assert_eq!(n("long_outages"), 1, "{context}");
}

/// The chaos run with a warm pool on the process runtime: jobs start on
/// claimed warm agents and cold ones; kills inside the claim window as well
/// as the spawn window; no warm agent may outlive the run.
#[test]
fn chaos_with_a_warm_pool_breaks_no_promise_on_the_process_runtime() {
    let (report, context) = chaos_run("chaos", 16, &["--pool", "3"]);
    let n = |k: &str| report[k].as_u64().unwrap();
    assert!(n("max_warm_agents") >= 1, "the pool was used: {context}");
    assert!(n("spawn_window_kills") >= 1, "{context}");
}

/// The chaos run on the Docker runtime (smaller), with a warm pool: `docker
/// kill` of agents, kill -9 and freezes of the engine, kills inside the spawn
/// and claim windows (the container created or claimed, its handle not yet
/// stored) and a long outage.
#[test]
fn chaos_kills_break_no_promise_on_the_docker_runtime() {
    let (report, context) = chaos_run("chaos-docker", 12, &["--image", test_image(), "--pool", "2"]);
    let n = |k: &str| report[k].as_u64().unwrap();
    assert!(n("agent_kills") >= 3 && n("spawn_window_kills") >= 1, "{context}");
    // With a warm pool: jobs start on claimed warm containers and on new ones.
    assert!(n("max_warm_agents") >= 1, "{context}");
}
