//! Acceptance: coding jobs. The reference agent clones the job's repository
//! (real git: bare repositories on disk, or served by `git http-backend`
//! behind token authentication), works on `george/<key>`, commits and
//! pushes after every step, and hands back a branch (and a pull request on
//! a GitHub-compatible test forge).
//! - an LLM step edits a file and runs the tests; the branch has the change,
//!   the default branch is untouched, the token is nowhere to be seen;
//! - an agent killed after step 2 of 4 is replaced by one that resumes from
//!   the pushed branch without redoing steps 1–2;
//! - the same ticket run twice continues one branch;
//! - a clone failure, a push rejected by someone else's commit, bad
//!   credentials and a missing `git` capability each block with a reason.

use crate::common;

use common::forge::Forge;
use common::git_http::GitHttp;
use common::llm::{Reply, ScriptedLlm};
use common::*;
use george_core::api::SubmitJob;
use george_core::JobStatus;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOKEN_SECRET: &str = "ghp_clone-token-5e1f0c9a-never-in-config";
const FORGE_SECRET: &str = "forge-token-77ab31-never-logged";

/// A bare repository `<root>/<name>.git` whose `main` has `value.txt` (1)
/// and `check.sh`, the repository's "tests" (value.txt must say 2).
fn bare_repo(root: &Path, name: &str) -> PathBuf {
    common::bare_repo(root, name, &[("value.txt", "1\n"), ("check.sh", "test \"$(cat value.txt)\" = 2\n")])
}

fn branch_log(bare: &Path, branch: &str) -> Vec<String> {
    let out = git(bare, &["log", "--format=%s|%b", branch]);
    out.lines().filter(|l| !l.is_empty()).map(|l| l.replace('|', " ").trim().to_string()).collect()
}

fn branches(bare: &Path) -> Vec<String> {
    git(bare, &["for-each-ref", "--format=%(refname:short)", "refs/heads"]).lines().map(str::to_string).collect()
}

fn submit(id: &str, template: &str, agent: &str, params: serde_json::Value) -> SubmitJob {
    SubmitJob {
        agent: Some(agent.into()),
        params: params.as_object().unwrap().clone().into_iter().collect(),
        ..SubmitJob::named(id, template)
    }
}

struct Setup {
    engine: Engine,
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

/// An engine with the coding AgentSpecs and templates, secrets for `git`, and
/// (when given) the scripted LLM and the forge.
fn setup(llm: Option<&ScriptedLlm>, forge: Option<&Forge>) -> Setup {
    let tmp = common::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let m = root.join("manifests");
    let secrets = root.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("git-token"), TOKEN_SECRET).unwrap();
    std::fs::write(secrets.join("forge-token"), FORGE_SECRET).unwrap();
    let forge_env = forge
        .map(|f| format!("  env: {{GEORGE_FORGE_URL: '{}', GEORGE_FORGE_REPO: acme/shop}}\n", f.api))
        .unwrap_or_default();
    write(&m, "agents/coder.yaml", &format!("apiVersion: george/v1\nkind: AgentSpec\nmetadata: {{name: coder}}\nspec:\n  capabilities: [git, shell, files]\n  secrets:\n    git: [{{name: git-token}}, {{name: forge-token}}]\n{forge_env}"));
    write(
        &m,
        "agents/plain.yaml",
        "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: plain}\nspec:\n  capabilities: [shell]\n",
    );
    write(&m, "agents/direct.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: direct}\nspec:\n  capabilities: [git, shell]\n  env: {GEORGE_GIT_BRANCH_PREFIX: ''}\n");
    let vars = "  variables:\n    - {name: repo_url, type: string}\n    - {name: ticket, type: string, required: false}\n    - {name: parent, type: string, required: false}\n    - {name: branch, type: string, required: false}\n    - {name: open_pull_request, type: boolean, default: false}\n";
    write(&m, "templates/change.yaml", &format!("apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {{name: change}}\nspec:\n  requiredCapabilities: [git, shell]\n{vars}  steps:\n    - id: edit\n      description: Make value.txt say 2 and run the tests (sh check.sh).\n    - id: test\n      description: run the tests\n      run: sh check.sh && cp .git/config \"$GEORGE_OUTPUT_DIR/git-config\"\n"));
    let four = "    - {id: s1, description: one, run: 'echo s1 >> progress.txt'}\n    - {id: s2, description: two, run: 'echo s2 >> progress.txt'}\n    - {id: s3, description: three, run: '[ \"$GEORGE_ATTEMPT\" -gt 1 ] || sleep 600; echo s3 >> progress.txt'}\n    - {id: s4, description: four, run: 'echo s4 >> progress.txt'}\n";
    write(&m, "templates/four.yaml", &format!("apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {{name: four}}\nspec:\n  requiredCapabilities: [git, shell]\n{vars}  steps:\n{four}"));
    let wait = "    - {id: first, description: one, run: 'echo first > first.txt'}\n    - {id: second, description: two, run: 'while [ ! -f \"$GEORGE_OUTPUT_DIR/go\" ]; do sleep 0.05; done; echo second > second.txt'}\n";
    write(&m, "templates/wait.yaml", &format!("apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {{name: wait}}\nspec:\n  requiredCapabilities: [git, shell]\n{vars}  steps:\n{wait}"));
    // Without `git` among its required capabilities, any agent may take it.
    write(&m, "templates/loose.yaml", &format!("apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {{name: loose}}\nspec:\n  requiredCapabilities: [shell]\n{vars}  steps:\n    - {{id: s1, description: one, run: 'true'}}\n"));
    let llm_cfg = llm
        .map(|l| format!("llm:\n  default: {{provider: scripted, model: gpt-test}}\n  providers:\n    - {{name: scripted, api: openai, baseUrl: '{}'}}\n", l.url))
        .unwrap_or_default();
    let engine = Engine::start_full(
        &root,
        &format!("{FAST_CONFIG}{llm_cfg}"),
        &["--manifests", m.to_str().unwrap(), "--secrets-dir", secrets.to_str().unwrap()],
        &[],
    );
    Setup { engine, _tmp: tmp, root }
}

async fn ready(e: &Engine) {
    e.wait_registry(3).await
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn an_llm_step_changes_the_code_on_its_own_branch_and_opens_a_pull_request() {
    let llm = ScriptedLlm::start();
    let forge = Forge::start(FORGE_SECRET);
    let s = setup(Some(&llm), Some(&forge));
    let remotes = s.root.join("remotes");
    std::fs::create_dir_all(remotes.join("acme")).unwrap();
    let bare = bare_repo(&remotes.join("acme"), "shop");
    let server = GitHttp::start(&remotes, "bot", TOKEN_SECRET);
    let url = format!("{}/acme/shop.git", server.base);
    let main_before = git(&bare, &["rev-parse", "main"]);
    let e = &s.engine;
    e.rt().block_on(async {
        ready(e).await;
        llm.push(Reply::tool("edit_file", json!({"path": "value.txt", "old": "1", "new": "2"}), 50, 5));
        llm.push(Reply::tool("run_command", json!({"command": "sh check.sh && echo tests pass"}), 60, 5));
        llm.push(Reply::tool("git_diff", json!({}), 70, 5));
        llm.push(Reply::tool("complete_step", json!({"summary": "value.txt says 2; tests pass"}), 80, 5));
        let params = json!({"repo_url": url, "open_pull_request": true});
        e.client.submit(&submit("fix-1", "change", "coder", params)).await.unwrap();
        let j = e.wait_status("fix-1", JobStatus::Completed, Duration::from_secs(60)).await;
        assert_eq!(j.attempt, 1);

        // The branch has the change; main is untouched.
        assert_eq!(git(&bare, &["rev-parse", "main"]), main_before, "the default branch is untouched");
        assert_eq!(git(&bare, &["show", "george/fix-1:value.txt"]), "2");
        let log = branch_log(&bare, "george/fix-1");
        assert!(
            log[0].starts_with("george: step test done") && log[1].starts_with("george: step edit done"),
            "{log:?}"
        );
        // The model saw the test result and the diff.
        let got = llm.received();
        let tool_results: Vec<String> = got[3].body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap().to_string())
            .collect();
        assert!(tool_results[1].contains("exit code 0") && tool_results[1].contains("tests pass"), "{tool_results:?}");
        assert!(tool_results[2].contains("-1") && tool_results[2].contains("+2"), "{tool_results:?}");

        // What it hands back.
        let ev = e.client.evidence("fix-1").await.unwrap();
        let result: serde_json::Value =
            serde_json::from_str(&ev.iter().find(|x| x.kind == "git.result").expect("git.result evidence").content)
                .unwrap();
        assert_eq!(result["branch"], "george/fix-1");
        assert_eq!(result["base"], "main");
        assert_eq!(result["commit"].as_str().unwrap(), git(&bare, &["rev-parse", "george/fix-1"]));
        assert!(result["diff_stat"].as_str().unwrap().contains("value.txt"), "{result}");
        assert_eq!(result["checks"][0]["command"], "sh check.sh && cp .git/config \"$GEORGE_OUTPUT_DIR/git-config\"");
        assert_eq!(result["checks"][0]["result"], "exit code 0");
        let pulls = forge.pulls();
        assert_eq!(pulls.len(), 1);
        assert_eq!(
            (pulls[0]["head"]["ref"].as_str(), pulls[0]["base"]["ref"].as_str()),
            (Some("george/fix-1"), Some("main"))
        );
        assert_eq!(result["pull_request"], pulls[0]["html_url"]);

        // The clone token: used, and nowhere to be seen.
        assert!(server.authenticated_requests() > 0, "the clone and pushes authenticated");
        let events = serde_json::to_string(&e.client.events(0, 100_000).await.unwrap()).unwrap();
        let evidence = serde_json::to_string(&ev).unwrap();
        let mut places = vec![("events", events), ("evidence", evidence), ("George's log", e.log())];
        // The clone's .git/config, as the test step copied it out.
        let config = std::fs::read_to_string(e.dir.join("data/outputs/fix-1/git-config")).unwrap();
        assert!(config.contains(&format!("url = {url}")), "the remote URL has no credentials: {config}");
        places.push((".git/config", config));
        for f in files_under(&e.dir.join("data/logs")) {
            places.push(("an agent log", std::fs::read_to_string(&f).unwrap_or_default()));
        }
        for (what, text) in &places {
            assert!(!text.contains(TOKEN_SECRET), "the clone token is in {what}");
            assert!(!text.contains(FORGE_SECRET), "the forge token is in {what}");
        }
    });
}

#[test]
fn a_replacement_agent_resumes_from_the_pushed_branch() {
    let s = setup(None, None);
    let bare = bare_repo(&s.root, "app");
    let forge = GitHttp::open(&s.root);
    let e = &s.engine;
    e.rt().block_on(async {
        ready(e).await;
        let params = json!({"repo_url": forge.url("app")});
        e.client.submit(&submit("resume", "four", "coder", params)).await.unwrap();
        e.wait_job("resume", "step 3 to start", Duration::from_secs(30), |j| {
            j.steps[2].status == george_core::StepStatus::InProgress
        })
        .await;
        // Steps 1 and 2 are on the remote before step 3 starts.
        assert_eq!(branch_log(&bare, "george/resume").len(), 3, "initial + s1 + s2");
        let pid = agents_by_job(&e.dir)["resume"][0];
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
        let j = e.wait_status("resume", JobStatus::Completed, Duration::from_secs(60)).await;
        assert_eq!(j.attempt, 2);
        let log = branch_log(&bare, "george/resume");
        assert_eq!(
            log,
            [
                "george: step s4 done Job resume, attempt 2.",
                "george: step s3 done Job resume, attempt 2.",
                "george: step s2 done Job resume, attempt 1.",
                "george: step s1 done Job resume, attempt 1.",
                "initial"
            ]
        );
        assert_eq!(git(&bare, &["show", "george/resume:progress.txt"]), "s1\ns2\ns3\ns4", "no step ran twice");
        let ev = e.client.evidence("resume").await.unwrap();
        assert!(ev.iter().any(|x| x.kind == "git" && x.content.contains("continuing the pushed branch")));
        let completions = e
            .client
            .events(0, 100_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|x| x.kind == "step.status" && x.data["step"] == "s1" && x.data["to"] == "completed")
            .count();
        assert_eq!(completions, 1, "step s1 was recorded once");
    });
}

#[test]
fn the_same_ticket_continues_its_branch() {
    let s = setup(None, None);
    let bare = bare_repo(&s.root, "svc");
    let forge = GitHttp::open(&s.root);
    let e = &s.engine;
    e.rt().block_on(async {
        ready(e).await;
        for id in ["proj-7-a", "proj-7-b"] {
            let params = json!({"repo_url": forge.url("svc"), "ticket": "PROJ-7"});
            e.client.submit(&submit(id, "loose", "coder", params)).await.unwrap();
            e.wait_status(id, JobStatus::Completed, Duration::from_secs(60)).await;
        }
        // A job with a parent (an epic) works on the parent's branch.
        let params = json!({"repo_url": forge.url("svc"), "ticket": "PROJ-8", "parent": "PROJ-7"});
        e.client.submit(&submit("proj-8", "loose", "coder", params)).await.unwrap();
        e.wait_status("proj-8", JobStatus::Completed, Duration::from_secs(60)).await;
        assert_eq!(branches(&bare), ["george/PROJ-7", "main"], "one branch for the ticket and its children");
        let log = branch_log(&bare, "george/PROJ-7").join("\n");
        assert!(log.contains("Job proj-7-a") && log.contains("Job proj-7-b") && log.contains("Job proj-8"), "{log}");
        let ev = e.client.evidence("proj-7-b").await.unwrap();
        assert!(ev.iter().any(|x| x.kind == "git" && x.content.contains("continuing the pushed branch")));
    });
}

#[test]
fn what_a_person_must_fix_blocks_the_job_with_a_reason() {
    let s = setup(None, None);
    let bare = bare_repo(&s.root, "lib");
    let forge = GitHttp::open(&s.root);
    let e = &s.engine;
    e.rt().block_on(async {
        ready(e).await;
        // No such repository.
        let params = json!({"repo_url": s.root.join("nowhere.git").to_str().unwrap()});
        e.client.submit(&submit("no-repo", "four", "coder", params)).await.unwrap();
        let j = e.wait_status("no-repo", JobStatus::Blocked, Duration::from_secs(30)).await;
        let reason = j.reason.unwrap();
        assert!(reason.starts_with("cannot clone") && reason.contains("comment on the job to retry"), "{reason}");

        // No `git` capability.
        let params = json!({"repo_url": forge.url("lib")});
        e.client.submit(&submit("no-git", "loose", "plain", params)).await.unwrap();
        let j = e.wait_status("no-git", JobStatus::Blocked, Duration::from_secs(30)).await;
        let reason = j.reason.unwrap();
        assert!(reason.starts_with("capability missing: git") && reason.contains("grant its AgentSpec"), "{reason}");

        // The default branch is off limits, whatever the job asks.
        let main_before = git(&bare, &["rev-parse", "main"]);
        let params = json!({"repo_url": forge.url("lib"), "branch": "main"});
        e.client.submit(&submit("on-main", "loose", "direct", params)).await.unwrap();
        let j = e.wait_status("on-main", JobStatus::Blocked, Duration::from_secs(30)).await;
        let reason = j.reason.unwrap();
        assert!(
            reason.starts_with("refusing to work on `main`") && reason.contains("set the job's `branch`"),
            "{reason}"
        );
        assert_eq!(git(&bare, &["rev-parse", "main"]), main_before);

        // Someone else pushes to the branch while the agent works: its push is rejected, never forced.
        let params = json!({"repo_url": forge.url("lib")});
        e.client.submit(&submit("race", "wait", "coder", params)).await.unwrap();
        e.wait_job("race", "step 2 to start", Duration::from_secs(30), |j| {
            j.steps[1].status == george_core::StepStatus::InProgress
        })
        .await;
        let other = s.root.join("someone-else");
        git(&s.root, &["clone", "-q", "-b", "george/race", bare.to_str().unwrap(), other.to_str().unwrap()]);
        git(&other, &["config", "user.email", "dev@example.com"]);
        git(&other, &["config", "user.name", "Dev"]);
        std::fs::write(other.join("theirs.txt"), "mine\n").unwrap();
        let theirs = commit(&other, "someone else's work");
        git(&other, &["push", "-q", "origin", "george/race"]);
        std::fs::write(e.dir.join("data/outputs/race/go"), "").unwrap();
        let j = e.wait_status("race", JobStatus::Blocked, Duration::from_secs(30)).await;
        let reason = j.reason.unwrap();
        assert!(
            reason.starts_with("push rejected: `george/race`") && reason.contains("A person must merge or rebase"),
            "{reason}"
        );
        assert_eq!(git(&bare, &["rev-parse", "george/race"]), theirs, "their commit was not overwritten");
    });
}

#[test]
fn wrong_credentials_block_the_clone() {
    let s = setup(None, None);
    let remotes = s.root.join("remotes");
    std::fs::create_dir_all(&remotes).unwrap();
    bare_repo(&remotes, "private");
    let server = GitHttp::start(&remotes, "bot", "a-different-token");
    let e = &s.engine;
    e.rt().block_on(async {
        ready(e).await;
        let params = json!({"repo_url": format!("{}/private.git", server.base)});
        e.client.submit(&submit("denied", "four", "coder", params)).await.unwrap();
        let j = e.wait_status("denied", JobStatus::Blocked, Duration::from_secs(30)).await;
        let reason = j.reason.unwrap();
        assert!(reason.starts_with("cannot clone") && reason.contains("git-token"), "{reason}");
        assert!(!reason.contains(TOKEN_SECRET));
    });
}
