//! Acceptance: GitOps and the recac work file through a running engine.
//! - a new job committed appears without restarting;
//! - a bad manifest committed is rejected whole and reported (API and CLI; `george sync` fails);
//! - a removed job file aborts the job;
//! - a recac `work_items.json` is dispatched one job per item, exactly once
//!   across engine restarts.

use crate::common;

use common::*;
use george_core::JobStatus;
use std::time::Duration;

const QUICK: &str = "    - id: touch
      description: touch a file
      run: touch \"$GEORGE_OUTPUT_DIR/done\"
";
const FOREVER: &str = "    - id: forever
      description: run until stopped
      run: sleep 3600.5
";

#[test]
fn gitops_new_bad_and_removed_manifests() {
    let tmp = common::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    write(&repo, "ops/agents/worker.yaml", AGENT);
    write(&repo, "ops/templates/quick.yaml", &template("quick", QUICK));
    write(&repo, "ops/templates/forever.yaml", &template("forever", FOREVER));
    write(&repo, "ops/jobs/first.yaml", &job("first", "quick"));
    write(&repo, "ops/jobs/long.yaml", &job("long", "forever"));
    let c1 = commit(&repo, "initial");
    let engine = Engine::start(
        tmp.path(),
        "",
        &["--git-url", repo.to_str().unwrap(), "--git-branch", "main", "--git-path", "ops"],
    );
    engine.rt().block_on(async {
        let j = engine.wait_status("first", JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!(j.origin.revision.as_deref(), Some(c1.as_str()));
        assert_eq!(j.origin.reference.as_deref(), Some("ops/jobs/first.yaml"));
        engine.wait_status("long", JobStatus::InProgress, Duration::from_secs(30)).await;

        // A new job: picked up by `george sync` (the CLI), no restart.
        write(&repo, "ops/jobs/second.yaml", &job("second", "quick"));
        let c2 = commit(&repo, "second job");
        let out = engine.cli(&["sync"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains(&c2), "{}", stdout(&out));
        engine.wait_status("second", JobStatus::Completed, Duration::from_secs(30)).await;

        // A bad manifest with a good new job in the same commit: all of it is rejected.
        write(&repo, "ops/jobs/third.yaml", &job("third", "quick"));
        write(&repo, "ops/jobs/broken.yaml", "apiVersion: george/v1\nkind: Job\nmetadata: {name: broken}\nspec:\n  template: quick\n  priority: urgent\n");
        let c3 = commit(&repo, "broken");
        let sync = engine.client.sync().await.unwrap();
        let git = sync.sources.iter().find(|s| s.name == "git").unwrap();
        assert_eq!(git.applied_revision.as_deref(), Some(c2.as_str()), "the last good commit stays applied");
        assert_eq!(git.rejected_revision.as_deref(), Some(c3.as_str()));
        assert!(git.errors[0].starts_with("ops/jobs/broken.yaml:6:13: spec.priority:"), "{:?}", git.errors);
        assert!(sync.failed.len() == 1 && sync.failed[0].source == "git", "{:?}", sync.failed);
        let out = engine.cli(&["sources"]);
        assert!(stdout(&out).contains("ops/jobs/broken.yaml:6:13"), "the CLI shows the rejection: {}", stdout(&out));
        // `george sync` fails when a source does, naming it and why.
        let out = engine.cli(&["sync"]);
        assert!(!out.status.success(), "{}", stdout(&out));
        assert!(stderr(&out).contains("1 source(s) failed to sync") && stderr(&out).contains("source git: ops/jobs/broken.yaml:6:13"), "{}", stderr(&out));
        assert_eq!(engine.client.job("third").await.unwrap_err().status(), Some(404));
        let events = engine.client.events(0, 10_000).await.unwrap();
        assert!(events.iter().any(|e| e.kind == "source.rejected" && e.data["revision"] == c3.as_str()));

        // Fix it, and remove the long job's file: that job is aborted and its agent stopped.
        std::fs::remove_file(repo.join("ops/jobs/broken.yaml")).unwrap();
        std::fs::remove_file(repo.join("ops/jobs/long.yaml")).unwrap();
        commit(&repo, "fixed; long job removed");
        engine.client.sync().await.unwrap();
        engine.wait_status("third", JobStatus::Completed, Duration::from_secs(30)).await;
        let long = engine.wait_status("long", JobStatus::Aborted, Duration::from_secs(30)).await;
        assert!(long.reason.unwrap().contains("removed from source git"));
        until(Duration::from_secs(10), "the removed job's step to stop", async || !process_running("sleep 3600.5")).await;
    });
}

#[test]
fn git_changes_arrive_by_polling_too() {
    let tmp = common::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    write(&repo, "agents/worker.yaml", AGENT);
    write(&repo, "templates/quick.yaml", &template("quick", QUICK));
    commit(&repo, "no jobs yet");
    let cfg = format!("sources:\n  git:\n    url: {}\n    branch: main\n    interval: 200ms\n", repo.display());
    let engine = Engine::start(tmp.path(), &cfg, &[]);
    write(&repo, "jobs/polled.yaml", &job("polled", "quick"));
    commit(&repo, "a job");
    engine.rt().block_on(engine.wait_status("polled", JobStatus::Completed, Duration::from_secs(30)));
}

/// recac's work file as recac writes it (Go's field names: `RepoURL`, `EnvVars`): each item
/// dispatched once across restarts; a bad item refused alone.
#[test]
fn work_items_are_dispatched_once_across_restarts() {
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    // recac work items are coding tasks: the agent clones each item's repository.
    write(&m, "agents/worker.yaml", &AGENT.replace("[shell]", "[shell, git]"));
    let app = bare_repo(tmp.path(), "app", &[("README", "app\n")]);
    // The agents push to it as to a forge (they may write only their own directories).
    let forge = common::git_http::GitHttp::open(tmp.path());
    let ticket = "apiVersion: george/v1
kind: TaskTemplate
metadata: {name: ticket}
spec:
  variables:
    - {name: id, type: string}
    - {name: summary, type: fuzzy, default: none}
    - {name: repo_url, type: string, required: false}
  steps:
    - id: note
      description: \"work on {{id}}: {{summary}}\"
      run: echo {{id}} {{summary}} \"$TEAM\" >> \"$GEORGE_OUTPUT_DIR/notes\"
";
    write(&m, "templates/ticket.yaml", ticket);
    let work = tmp.path().join("work_items.json");
    std::fs::write(
        &work,
        format!(
            r#"[{{"ID": "TASK-1", "Summary": "Implement login", "Description": "...", "RepoURL": "{}", "EnvVars": {{"TEAM": "auth"}}}},
            {{"id": "TASK-2", "summary": "Fix logout"}},
            {{"Summary": "no id: refused alone"}}]"#,
            forge.url("app")
        ),
    )
    .unwrap();
    let args =
        ["--manifests", m.to_str().unwrap(), "--work-file", work.to_str().unwrap(), "--work-file-template", "ticket"];
    let mut engine = Engine::start(tmp.path(), "", &args);
    let rt = engine.rt();
    rt.block_on(async {
        let t1 = engine.wait_status("task-1", JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!(t1.origin.reference.as_deref(), Some("TASK-1"));
        assert_eq!(t1.params["repo_url"], forge.url("app"));
        assert_eq!(git(&app, &["log", "--format=%s", "-1", "george/task-1"]), "george: step note done");
        engine.wait_status("task-2", JobStatus::Completed, Duration::from_secs(30)).await;
        let notes = std::fs::read_to_string(engine.dir.join("data/outputs/task-1/notes")).unwrap();
        assert_eq!(notes, "TASK-1 Implement login auth\n");
        let events = engine.client.events(0, 10_000).await.unwrap();
        let refused: Vec<_> = events.iter().filter(|e| e.kind == "job.rejected").collect();
        assert!(
            refused.len() == 1 && refused[0].data["reason"].as_str().unwrap().ends_with("[2].id: required"),
            "{refused:?}"
        );
    });
    engine.stop();
    std::fs::write(&work, r#"[{"id": "TASK-1"}, {"id": "TASK-2"}, {"id": "TASK-3", "summary": "new"}]"#).unwrap();
    engine.restart();
    rt.block_on(async {
        engine.wait_status("task-3", JobStatus::Completed, Duration::from_secs(30)).await;
        engine.client.sync().await.unwrap();
        let jobs = engine.client.jobs(&Default::default()).await.unwrap();
        assert_eq!(jobs.len(), 3);
        let events = engine.client.events(0, 10_000).await.unwrap();
        let created = events.iter().filter(|e| e.kind == "job.created").count();
        let started = events.iter().filter(|e| e.kind == "attempt.started").count();
        assert_eq!((created, started), (3, 3), "each item dispatched once, one agent each");
        let notes = std::fs::read_to_string(engine.dir.join("data/outputs/task-1/notes")).unwrap();
        assert_eq!(notes.lines().count(), 1, "task-1 ran once");
    });
}

/// recac's directory poller through `george orchestrate`, with recac's flags
/// and variables: each work file dropped into the directory runs once and
/// moves to `processed/`; a file that is no work item moves to `rejected/`
/// with an event saying why; a file seen again after a restart (as when the
/// engine died between creating the job and moving the file) creates nothing.
#[test]
fn recac_file_dir_poller_dispatches_each_dropped_file_once() {
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    let ticket = "apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {name: ticket}\nspec:\n  variables:\n    - {name: id, type: string}\n    - {name: summary, type: string, default: none}\n  steps:\n    - id: note\n      description: note it\n      run: echo {{id}} {{summary}} >> \"$GEORGE_OUTPUT_DIR/notes\"\n";
    write(&m, "templates/ticket.yaml", ticket);
    let inbox = tmp.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("a.json"), r#"{"ID": "DIR-1", "Summary": "first", "RepoURL": ""}"#).unwrap();
    std::fs::write(inbox.join("bad.json"), "{not json").unwrap();
    std::fs::write(inbox.join("notes.txt"), "not a work file").unwrap();
    let args = ["-v", "--poller", "file-dir", "--manifests", m.to_str().unwrap(), "--template", "ticket"];
    let env = [
        ("RECAC_ORCHESTRATOR_MODE", "process"),
        ("RECAC_ORCHESTRATOR_INTERVAL", "200ms"),
        // recac's GitHub settings are accepted (its GitHub poller is not used here).
        ("RECAC_GITHUB_OWNER", "acme"),
        ("RECAC_GITHUB_REPO", "app"),
    ];
    // recac reads a `.env` in its working directory; so does `george orchestrate`.
    std::fs::write(tmp.path().join(".env"), format!("RECAC_WATCH_DIR={}\n", inbox.display())).unwrap();
    let mut engine = Engine::start_as(tmp.path(), "orchestrate", FAST_CONFIG, &args, &env);
    let rt = engine.rt();
    rt.block_on(async {
        let job = engine.wait_status("dir-1", JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!((job.origin.source.as_str(), job.origin.reference.as_deref()), ("workdir", Some("DIR-1")));
        until(Duration::from_secs(10), "the files filed away", async || {
            inbox.join("processed/a.json").exists() && inbox.join("rejected/bad.json").exists()
        })
        .await;
        assert!(!inbox.join("a.json").exists() && inbox.join("notes.txt").exists(), "only work files are taken");
        let events = engine.client.events(0, 10_000).await.unwrap();
        let refused: Vec<_> = events.iter().filter(|e| e.kind == "job.rejected").collect();
        assert!(
            refused.len() == 1 && refused[0].data["reason"].as_str().unwrap().contains("invalid JSON"),
            "{refused:?}"
        );
    });
    // Down; meanwhile the dispatched file reappears (as if the move had not happened) and a new one arrives.
    engine.kill9();
    std::fs::copy(inbox.join("processed/a.json"), inbox.join("a-again.json")).unwrap();
    std::fs::write(inbox.join("b.json"), r#"{"id": "DIR-2", "summary": "second"}"#).unwrap();
    engine.restart();
    rt.block_on(async {
        engine.wait_status("dir-2", JobStatus::Completed, Duration::from_secs(30)).await;
        until(Duration::from_secs(10), "the reappeared file filed away", async || {
            inbox.join("processed/a-again.json").exists()
        })
        .await;
        let events = engine.client.events(0, 10_000).await.unwrap();
        let created: Vec<_> =
            events.iter().filter(|e| e.kind == "job.created").filter_map(|e| e.job_id.clone()).collect();
        assert_eq!(created, ["dir-1", "dir-2"], "each item once");
        let notes = std::fs::read_to_string(engine.dir.join("data/outputs/dir-1/notes")).unwrap();
        assert_eq!(notes.lines().count(), 1, "dir-1 ran once: {notes:?}");
    });
}

/// recac's file poller through `george orchestrate`, configured as recac's README does
/// (`RECAC_POLLER=file`, `RECAC_WORK_FILE`), with the file as recac's Go code writes it.
#[test]
fn recac_file_poller_runs_through_george_orchestrate() {
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    let ticket = "apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {name: ticket}\nspec:\n  variables:\n    - {name: id, type: string}\n    - {name: summary, type: string, default: none}\n  steps:\n    - id: note\n      description: note it\n      run: echo {{id}} {{summary}} \"$LEVEL\" >> \"$GEORGE_OUTPUT_DIR/notes\"\n";
    write(&m, "templates/ticket.yaml", ticket);
    let work = tmp.path().join("work_items.json");
    std::fs::write(&work, r#"[{"ID": "FILE-1", "Summary": "from recac", "EnvVars": {"LEVEL": "2"}}]"#).unwrap();
    let env = [
        ("RECAC_ORCHESTRATOR_MODE", "process"),
        ("RECAC_POLLER", "file"),
        ("RECAC_WORK_FILE", work.to_str().unwrap()),
        ("RECAC_ORCHESTRATOR_INTERVAL", "200ms"),
    ];
    let args = ["--manifests", m.to_str().unwrap(), "--template", "ticket"];
    let engine = Engine::start_as(tmp.path(), "orchestrate", FAST_CONFIG, &args, &env);
    engine.rt().block_on(async {
        let job = engine.wait_status("file-1", JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!((job.origin.source.as_str(), job.origin.reference.as_deref()), ("workfile", Some("FILE-1")));
        let notes = std::fs::read_to_string(engine.dir.join("data/outputs/file-1/notes")).unwrap();
        assert_eq!(notes, "FILE-1 from recac 2\n");
    });
}
