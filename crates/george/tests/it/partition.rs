//! Acceptance (issue 7): engine replicas as containers on a user network of
//! this machine's Docker Engine, sharing one PostgreSQL database. Cutting
//! the leader's container off the network (a partition) moves leadership to
//! the other replica, the partitioned one stops acting (it exits), every job
//! completes, and reconnecting and restarting it causes no duplicate work.
//!
//! PostgreSQL runs on the host (the test support's private server, on
//! loopback); the containers reach it through a TCP forwarder that listens on
//! the network's gateway address, so disconnecting a container cuts it off
//! from the database like any real partition.

use crate::common;

use george_testkit::postgres_server;

use common::*;
use postgres_server::TestDatabase;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const JOBS: usize = 3;

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {}: {}", args.join(" "), stderr(&out));
    stdout(&out).trim().to_string()
}

/// Removes the test's containers and network however the test ends.
struct Cleanup {
    containers: Vec<String>,
    network: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        let _ = Command::new("docker").args(["network", "rm", &self.network]).output();
    }
}

/// `key=value` of a connection string.
fn conn_value<'a>(url: &'a str, key: &str) -> &'a str {
    // The last one wins, as in libpq.
    url.split_whitespace().rev().find_map(|kv| kv.strip_prefix(&format!("{key}="))).unwrap()
}

/// The lease holder (none before the replicas created the schema).
fn leader(db: &TestDatabase) -> Option<String> {
    db.with_client(|c| {
        let row = c.query_opt("SELECT holder FROM leases WHERE name = 'george-engine' AND expires_at > now()", &[]);
        Ok(row.ok().flatten().map(|r| r.get(0)))
    })
}

/// The jobs' statuses (none before the replicas created the schema).
fn statuses(db: &TestDatabase) -> Vec<String> {
    db.with_client(|c| {
        let rows = c.query("SELECT status FROM jobs ORDER BY id", &[]);
        Ok(rows.map(|rows| rows.iter().map(|r| r.get(0)).collect()).unwrap_or_default())
    })
}

fn logs(container: &str) -> String {
    let out = Command::new("docker").args(["logs", container]).output().unwrap();
    format!("{}{}", stdout(&out), stderr(&out))
}

fn running(container: &str) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", container]) == "true"
}

fn start_replica(name: &str, id: &str, network: &str, dir: &Path, url: &str) {
    let mount = |host: &Path, inside: &str| format!("{}:{inside}", host.display());
    docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        network,
        "-v",
        &mount(&dir.join("manifests"), "/manifests:ro"),
        "-v",
        &mount(&dir.join("shared"), "/shared"),
        "-v",
        &mount(&dir.join("config.yaml"), "/config.yaml:ro"),
        "-e",
        &format!("GEORGE_DATABASE_URL={url}"),
        "-e",
        &format!("GEORGE_ENGINE_ID={id}"),
        "-e",
        &format!("GEORGE_API_TOKENS=test:{TOKEN}"),
        "-e",
        "GEORGE_LOG=info",
        test_image(),
        "serve",
        "--config",
        "/config.yaml",
        "--listen",
        "0.0.0.0:8080",
        "--data-dir",
        "/var/lib/george",
        "--manifests",
        "/manifests",
    ]);
}

#[test]
fn a_partitioned_leader_hands_over_and_rejoining_duplicates_nothing() {
    let db = TestDatabase::create();
    let tmp = common::tempdir().unwrap();
    let dir = tmp.path();
    let suffix: String =
        dir.file_name().unwrap().to_string_lossy().chars().filter(char::is_ascii_alphanumeric).collect();
    let network = format!("george-part-{}", suffix.to_lowercase());
    let names = [format!("{network}-a"), format!("{network}-b")];
    let _cleanup = Cleanup { containers: names.to_vec(), network: network.clone() };

    // Manifests: jobs that wait for /shared/release.
    let m = dir.join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    let steps = "    - id: wait\n      description: wait for the release\n      run: while [ ! -f /shared/release ]; do sleep 0.05; done\n";
    write(&m, "templates/hold.yaml", &template("hold", steps));
    for i in 0..JOBS {
        write(&m, &format!("jobs/j{i}.yaml"), &job(&format!("j{i}"), "hold"));
    }
    std::fs::create_dir_all(dir.join("shared")).unwrap();
    // Containers on a busy 2-core machine: health checks and the lease with some room.
    let config = "engine:
  reconcileInterval: 1s
  retryBackoff: 200ms
  maxRetryBackoff: 1s
  terminationGrace: 2s
  leaderElection:
    leaseDuration: 6s
    renewDeadline: 4s
    retryPeriod: 1s
agents:
  healthCheck:
    interval: 1s
    timeout: 3s
    unhealthyThreshold: 3
";
    std::fs::File::create(dir.join("config.yaml")).unwrap().write_all(config.as_bytes()).unwrap();

    // The network, and the database reachable from it.
    docker(&["network", "create", &network]);
    let gateway = docker(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", &network]);
    let pg: SocketAddr = format!("127.0.0.1:{}", conn_value(&db.url, "port")).parse().unwrap();
    let through = common::service::forward(&format!("{gateway}:0"), pg);
    let url =
        format!("host={} port={} user=postgres dbname={}", through.ip(), through.port(), conn_value(&db.url, "dbname"));
    start_replica(&names[0], "a", &network, dir, &url);
    start_replica(&names[1], "b", &network, dir, &url);

    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some(h) = leader(&db) {
            break h;
        }
        assert!(Instant::now() < deadline, "no leader; the replicas say:\n{}\n{}", logs(&names[0]), logs(&names[1]));
        std::thread::sleep(Duration::from_millis(100));
    };
    let (l, other) = if first.starts_with("a-") { (0, 1) } else { (1, 0) };
    wait_for(Duration::from_secs(60), "every job to run", || {
        let s = statuses(&db);
        (s.len() == JOBS && s.iter().all(|s| s == "in_progress")).then_some(())
    });

    // Partition the leader.
    docker(&["network", "disconnect", "-f", &network, &names[l]]);
    let cut = Instant::now();
    let next = wait_for(Duration::from_secs(30), "the other replica to lead", || leader(&db).filter(|h| *h != first));
    let took = cut.elapsed();
    assert!(took <= Duration::from_secs(15), "took over in {took:?}");
    assert!(next.starts_with(if other == 0 { "a-" } else { "b-" }), "{next}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(&names[l]) {
        assert!(Instant::now() < deadline, "the partitioned replica did not stop; it says:\n{}", logs(&names[l]));
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = Command::new("docker").args(["logs", &names[l]]).output().unwrap();
    let log = format!("{}{}", stdout(&log), stderr(&log));
    assert!(log.contains("no longer leading"), "{log}");

    std::fs::write(dir.join("shared/release"), "").unwrap();
    wait_for(Duration::from_secs(60), "every job to complete", || {
        statuses(&db).iter().all(|s| s == "completed").then_some(())
    });

    // Heal the partition and restart the old leader: it rejoins as a standby.
    docker(&["network", "connect", &network, &names[l]]);
    docker(&["start", &names[l]]);
    wait_for(Duration::from_secs(30), "the old leader to rejoin as a standby", || {
        let out = Command::new("docker").args(["logs", &names[l]]).output().unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        (text.matches("standby: serving the API").count() >= 2).then_some(())
    });
    assert_eq!(leader(&db).as_deref(), Some(next.as_str()), "the leader kept its lease");
    assert!(statuses(&db).iter().all(|s| s == "completed"));

    // Nothing was done twice: each job created once, attempts never overlapped.
    let events: Vec<(String, Option<String>, Option<i64>)> = db.with_client(|c| {
        c.query("SELECT kind, job_id, attempt FROM events ORDER BY seq", &[])
            .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    });
    let created = events.iter().filter(|e| e.0 == "job.created").count();
    assert_eq!(created, JOBS);
    let mut live: std::collections::BTreeMap<String, Option<i64>> = Default::default();
    for (kind, job, attempt) in &events {
        let Some(job) = job else { continue };
        match kind.as_str() {
            "attempt.started" => {
                let prev = live.insert(job.clone(), *attempt);
                assert!(prev.flatten().is_none(), "job {job}: attempt {attempt:?} started while {prev:?} was live");
            }
            "attempt.ended" if live.get(job).copied().flatten() == *attempt => {
                live.insert(job.clone(), None);
            }
            _ => {}
        }
    }
    eprintln!("partitioned {first}; {next} led after {took:?}");
}
