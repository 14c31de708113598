//! Acceptance: warm pools on the process runtime. A warm agent holds no job,
//! no secret and no token until its claim (its `/proc` environment, its open
//! files and the pool's directory are looked at); a claimed agent runs the
//! job it was bound to with that job's secrets and no other's; a pooled
//! agent serves one attempt and is gone; the pool refills; and a kill -9 of
//! the engine while agents are warm leaves none behind.

use crate::common;

use common::*;
use george_core::JobStatus;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const SECRET: &str = "pooled-deploy-key-0451";

fn setup(root: &Path) -> Engine {
    let m = root.join("manifests");
    let secrets = root.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("deploy-key"), SECRET).unwrap();
    write(
        &m,
        "agents/pooled.yaml",
        "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: pooled}\nspec:\n  capabilities: [shell, deploy]\n  \
         secrets:\n    deploy: [{name: deploy-key}]\n  pool: {min: 2, max: 3}\n",
    );
    // Each job notes which process ran it ($PPID: the agent) and what it could see.
    let note = "echo $PPID > \"$GEORGE_OUTPUT_DIR/agent-pid\"; echo \"$GEORGE_JOB_ID\" > \"$GEORGE_OUTPUT_DIR/job\"; \
                cut -d\" \" -f41 /proc/$PPID/stat > \"$GEORGE_OUTPUT_DIR/policy\"";
    let deploy = format!(
        "    - id: deploy\n      description: uses its key\n      run: '{note}; test \"$(cat \"$GEORGE_SECRETS_DIR/deploy-key\")\" = {SECRET} && touch \"$GEORGE_OUTPUT_DIR/key-ok\"'\n"
    );
    let plain = format!(
        "    - id: plain\n      description: needs no key\n      run: '{note}; test -z \"$GEORGE_SECRETS_DIR\" && touch \"$GEORGE_OUTPUT_DIR/no-key\"'\n"
    );
    write(&m, "templates/deploy.yaml", &template("deploy", &deploy).replace("[shell]", "[shell, deploy]"));
    write(&m, "templates/plain.yaml", &template("plain", &plain));
    // A hostile step goes for the engine's secret store itself (outside the data directory).
    let store = secrets.join("deploy-key");
    let steal = format!(
        "    - id: steal\n      description: reads the store\n      run: 'cat {} > \"$GEORGE_OUTPUT_DIR/loot\" 2>&1; true'\n",
        store.display()
    );
    write(&m, "templates/steal.yaml", &template("steal", &steal));
    Engine::start(root, "", &["--manifests", m.to_str().unwrap(), "--secrets-dir", secrets.to_str().unwrap()])
}

/// Pids of the warm agents of the engine on `data` (processes in its pools' directory).
fn warm_pids(data: &Path) -> BTreeSet<i32> {
    let pools = data.join("agents/.pool");
    let mut out = BTreeSet::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
        let stat = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
        if stat.contains(") Z") {
            continue;
        }
        if std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd == pools) {
            out.insert(pid);
        }
    }
    out
}

async fn wait_warm(data: &Path, n: usize) -> BTreeSet<i32> {
    eventually(Duration::from_secs(20), "the pool to be full", async || {
        let pids = warm_pids(data);
        (pids.len() == n).then_some(pids)
    })
    .await
}

/// The directories made ahead for the engine's warm agents.
fn staged_dirs(data: &Path) -> BTreeSet<std::path::PathBuf> {
    std::fs::read_dir(data.join("agents/.staged")).into_iter().flatten().flatten().map(|e| e.path()).collect()
}

/// The log directories (each with its file) made ahead for warm agents.
fn staged_logs(data: &Path) -> BTreeSet<std::path::PathBuf> {
    std::fs::read_dir(data.join("logs/.staged")).into_iter().flatten().flatten().map(|e| e.path()).collect()
}

/// A process's scheduling policy (`/proc/<pid>/stat` field 41: 0 normal, 5 idle).
fn policy(stat: &str) -> String {
    // After the command name in parentheses, field 3 on.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(41 - 3).unwrap().trim().to_string()
}

/// Whether this process may raise a scheduling priority (CAP_SYS_NICE), as the engine it starts may.
fn may_renice() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
    u64::from_str_radix(caps, 16).unwrap() & (1 << 23) != 0
}

/// What a warm agent holds: no environment, no file of the data directory open.
/// It waits at the idle scheduling policy when it can come back from it.
async fn assert_holds_nothing(pid: i32, data: &Path) {
    if may_renice() {
        // From its first instruction on (a process just started may not have got there).
        let idle = async || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            (policy(&stat) == "5").then_some(())
        };
        eventually(Duration::from_secs(10), "the warm agent to wait at SCHED_IDLE", idle).await;
    }
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(environ.is_empty(), "warm agent {pid} has an environment: {:?}", String::from_utf8_lossy(&environ));
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap()).replace('\0', " ");
    assert!(cmdline.contains("sandbox-exec --warm") && !cmdline.contains(SECRET), "{cmdline}");
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        assert!(!target.starts_with(data), "warm agent {pid} holds {} open", target.display());
    }
}

#[test]
fn a_warm_agent_holds_nothing_until_claimed_then_runs_only_its_own_job_once() {
    let tmp = tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let mut engine = setup(&root);
    let data = root.join("data");
    engine.rt().block_on(async {
        engine.wait_registry(1).await;
        let warm = wait_warm(&data, 2).await;
        for &pid in &warm {
            assert_holds_nothing(pid, &data).await;
        }
        // The pool's directory holds the engine's records of its agents, nothing else.
        let files: Vec<String> = std::fs::read_dir(data.join("agents/.pool"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(files.len() == 2 && files.iter().all(|f| f.ends_with(".pid")), "{files:?}");
        // Each has its attempt's directories made ahead, empty, and owned by the uid it will run as.
        let staged = staged_dirs(&data);
        assert_eq!(staged.len(), 2, "{staged:?}");
        for dir in &staged {
            let work = dir.join("1/work");
            assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0, "nothing of any job in {}", work.display());
            // Its token file is made ahead too, empty: no token before the claim.
            let token = dir.join("1/agent/token");
            assert_eq!(std::fs::metadata(&token).unwrap().len(), 0, "{} is empty", token.display());
            // And the job's output directory (the jobs below write theirs: it becomes the agent's).
            let output = dir.join("output");
            assert_eq!(std::fs::read_dir(&output).unwrap().count(), 0, "nothing in {}", output.display());
            if may_renice() {
                use std::os::unix::fs::MetadataExt;
                assert!(std::fs::metadata(&work).unwrap().uid() >= 1000, "{} owned by the agent's uid", work.display());
            }
        }

        // And its log file, empty.
        let logs = staged_logs(&data);
        assert_eq!(logs.len(), 2, "{logs:?}");
        assert!(logs.iter().all(|l| std::fs::metadata(l.join("1.log")).unwrap().len() == 0), "{logs:?}");

        // One job with the key's capability, one without.
        for (id, template) in [("deploy-1", "deploy"), ("plain-1", "plain")] {
            let job = george_core::api::SubmitJob::named(id, template);
            engine.client.submit(&job).await.unwrap();
        }
        let outputs = data.join("outputs");
        let mut ran_by = BTreeSet::new();
        for id in ["deploy-1", "plain-1"] {
            let j = engine.wait_status(id, JobStatus::Completed, Duration::from_secs(30)).await;
            assert_eq!(j.attempt, 1, "{j:?}");
            let pid: i32 = std::fs::read_to_string(outputs.join(id).join("agent-pid")).unwrap().trim().parse().unwrap();
            assert!(warm.contains(&pid), "{id} ran in agent {pid}, not one of the warm agents {warm:?}");
            assert_eq!(std::fs::read_to_string(outputs.join(id).join("job")).unwrap().trim(), id);
            let p = std::fs::read_to_string(outputs.join(id).join("policy")).unwrap();
            assert_eq!(p.trim(), "0", "{id}'s agent works at the normal policy, not the warm agent's idle one");
            ran_by.insert(pid);
            // Served one attempt, and gone.
            let gone = async || {
                (!std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))).then_some(())
            };
            eventually(Duration::from_secs(10), "the claimed agent to be gone", gone).await;
        }
        assert_eq!(ran_by.len(), 2, "one warm agent per job");
        assert!(outputs.join("deploy-1/key-ok").exists(), "the deploy job had its key");
        assert!(outputs.join("plain-1/no-key").exists(), "the plain job had no secrets at all");
        wait_warm(&data, 2).await;
        engine.client.submit(&george_core::api::SubmitJob::named("steal-1", "steal")).await.unwrap();
        engine.wait_status("steal-1", JobStatus::Completed, Duration::from_secs(30)).await;
        let loot = std::fs::read_to_string(outputs.join("steal-1/loot")).unwrap();
        assert!(!loot.contains(SECRET) && loot.contains("Permission denied"), "the secret store is hidden: {loot}");

        // The pool refills with new agents, holding nothing again.
        let refilled = eventually(Duration::from_secs(20), "the pool to refill", async || {
            let pids = warm_pids(&data);
            (pids.len() >= 2 && pids.is_disjoint(&ran_by)).then_some(pids)
        })
        .await;
        for &pid in &refilled {
            assert_holds_nothing(pid, &data).await;
        }
        let registry: serde_json::Value = reqwest::Client::new()
            .get(format!("{}/api/v1/registry", engine.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let pool = &registry[0]["pool"];
        assert_eq!((pool["min"].as_u64(), pool["max"].as_u64()), (Some(2), Some(3)), "{registry}");
        assert_eq!(pool["claimed"].as_u64(), Some(3), "{registry}");
        let metrics = engine.metrics().await;
        assert!(
            metrics.contains("george_pool_claims_total{agent_spec=\"pooled\",start=\"warm\"} 3"),
            "{}",
            metrics.lines().filter(|l| l.contains("pool")).collect::<Vec<_>>().join("\n")
        );
    });

    // kill -9 of the engine while agents are warm: none is left behind.
    let warm = warm_pids(&data);
    assert!(!warm.is_empty());
    engine.kill9();
    engine.rt().block_on(eventually(Duration::from_secs(10), "the warm agents to end with their engine", async || {
        warm_pids(&data).is_empty().then_some(())
    }));
    // A restarted engine fills its pool anew, and the directories made for the dead engine's agents go.
    let (left, left_logs) = (staged_dirs(&data), staged_logs(&data));
    assert!(!left.is_empty() && !left_logs.is_empty());
    engine.restart();
    engine.rt().block_on(async {
        let again = wait_warm(&data, 2).await;
        assert!(again.is_disjoint(&warm));
        eventually(Duration::from_secs(10), "the old staged directories to go", async || {
            let (now, logs) = (staged_dirs(&data), staged_logs(&data));
            (now.is_disjoint(&left) && now.len() == 2 && logs.is_disjoint(&left_logs) && logs.len() == 2).then_some(())
        })
        .await;
    });
}

/// kill -9 of the engine mid-claim (the `claim.window` kill point: the warm
/// agent claimed, the attempt's files written, its handle not yet stored):
/// the claimed agent never runs the job and ends with its engine, and the
/// restarted engine runs the job once, in a new agent.
#[test]
fn an_engine_killed_mid_claim_leaves_no_agent_and_runs_the_job_once() {
    let tmp = tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let m = root.join("manifests");
    write(&m, "agents/pooled.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: pooled}\nspec:\n  capabilities: [shell]\n  pool: {min: 1}\n");
    let count = "    - id: count\n      description: counts its runs\n      run: 'echo \"$GEORGE_ATTEMPT $PPID\" >> \"$GEORGE_OUTPUT_DIR/runs\"'\n";
    write(&m, "templates/count.yaml", &template("count", count));
    let mut engine = Engine::start_with_env(
        &root,
        "",
        &["--manifests", m.to_str().unwrap()],
        &[("GEORGE_FAILPOINTS", "claim.window@1")],
    );
    let data = root.join("data");
    let warm = engine.rt().block_on(async {
        engine.wait_registry(1).await;
        let warm = wait_warm(&data, 1).await;
        // The engine may reach its kill point before its answer is sent: the
        // job is stored first, and only it sets off the claim.
        match engine.client.submit(&george_core::api::SubmitJob::named("once", "count")).await {
            Ok(_) | Err(george_client::ClientError::Unreachable { .. }) => {}
            Err(e) => panic!("submit: {e}"),
        }
        warm
    });
    let status = engine.wait_exit(Duration::from_secs(20));
    assert!(!status.success(), "the engine killed itself at claim.window: {status}\n{}", engine.log());
    // The claimed agent's pipe closed with its engine: it ends without acting.
    engine.rt().block_on(eventually(Duration::from_secs(10), "the claimed agent to end", async || {
        let pid = *warm.first().unwrap();
        (!std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))).then_some(())
    }));
    assert!(!data.join("outputs/once/runs").exists(), "the claimed agent ran the job without its binding");
    engine.forget_env("GEORGE_FAILPOINTS");
    engine.restart();
    engine.rt().block_on(async {
        let j = engine.wait_status("once", JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!(j.attempt, 2, "attempt 1 never started; attempt 2 ran it: {j:?}");
        let runs = std::fs::read_to_string(data.join("outputs/once/runs")).unwrap();
        assert_eq!(runs.lines().count(), 1, "the job ran once: {runs}");
        assert!(runs.starts_with("2 "), "{runs}");
    });
}
