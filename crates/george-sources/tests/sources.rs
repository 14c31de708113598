//! Sources against real git repositories, real files and the SQLite store.

use george_core::{DesiredState, JobStatus};
use george_sources::{FolderSource, GitSource, GitSourceConfig, Source, WorkFileSource};
use george_store::{JobFilter, SqliteStore, Store};
use george_testkit::{git, write};
use std::path::Path;
use std::time::Duration;

const AGENT: &str =
    "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: worker}\nspec:\n  capabilities: [shell]\n";
const TEMPLATE: &str = "apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {name: touch}\nspec:\n  variables:\n    - {name: file, type: string}\n  steps:\n    - id: touch\n      description: create {{file}}\n      run: touch {{file}}\n";
const TICKET: &str = "apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {name: ticket}\nspec:\n  variables:\n    - {name: id, type: string}\n    - {name: summary, type: fuzzy, default: ''}\n    - {name: repo_url, type: string, required: false}\n  steps:\n    - id: note\n      description: \"work on {{id}}: {{summary}}\"\n      run: echo {{id}}\n";

fn job(name: &str) -> String {
    format!("apiVersion: george/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n  template: touch\n  params: {{file: {name}.txt}}\n")
}

fn commit(repo: &Path, msg: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", msg]);
    git(repo, &["rev-parse", "HEAD"])
}

async fn store(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir.join("george.db")).unwrap()
}

#[tokio::test]
async fn git_commits_apply_atomically_and_removed_jobs_abort() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    write(&repo, "george/agents/worker.yaml", AGENT);
    write(&repo, "george/templates/touch.yaml", TEMPLATE);
    write(&repo, "george/jobs/one.yaml", &job("one"));
    write(&repo, "README.md", "not a manifest");
    let c1 = commit(&repo, "first");

    let store = store(tmp.path()).await;
    let source = GitSource::new(GitSourceConfig {
        url: repo.display().to_string(),
        branch: "main".into(),
        path: "george".into(),
        interval: Duration::from_secs(60),
        checkout_dir: tmp.path().join("checkout"),
    });
    let out = source.sync(&store).await.unwrap();
    assert_eq!(out.applied.unwrap().created, ["one"]);
    let one = store.get_job("one").await.unwrap().unwrap();
    assert_eq!(one.origin.revision.as_deref(), Some(c1.as_str()));
    assert_eq!(one.origin.reference.as_deref(), Some("george/jobs/one.yaml"));

    // A new job appears with the next commit.
    write(&repo, "george/jobs/two.yaml", &job("two"));
    let c2 = commit(&repo, "second");
    let out = source.sync(&store).await.unwrap();
    assert_eq!(out.applied.unwrap().created, ["two"]);
    assert_eq!(store.get_job("one").await.unwrap().unwrap().origin.revision.as_deref(), Some(c2.as_str()));

    // A bad manifest rejects the whole commit: the good new job in it is not created either.
    write(&repo, "george/jobs/three.yaml", &job("three"));
    write(&repo, "george/jobs/bad.yaml", &job("bad").replace("template: touch", "template: touch\n  colour: red"));
    let c3 = commit(&repo, "third, broken");
    let out = source.sync(&store).await.unwrap();
    assert!(out.applied.is_none());
    assert_eq!(out.errors.len(), 1);
    assert!(
        out.errors[0].starts_with("george/jobs/bad.yaml:6:3: spec.colour: unknown field `colour`"),
        "{:?}",
        out.errors
    );
    assert!(store.get_job("three").await.unwrap().is_none());
    let src = store.sources().await.unwrap().into_iter().find(|s| s.name == "git").unwrap();
    assert_eq!(
        (src.applied_revision.as_deref(), src.rejected_revision.as_deref()),
        (Some(c2.as_str()), Some(c3.as_str()))
    );
    // Polling again reports the same rejection without re-applying.
    let again = source.sync(&store).await.unwrap();
    assert_eq!(again.errors, out.errors);

    // Fix it and remove job one: one is aborted, three and bad appear.
    std::fs::remove_file(repo.join("george/jobs/bad.yaml")).unwrap();
    std::fs::remove_file(repo.join("george/jobs/one.yaml")).unwrap();
    commit(&repo, "fourth");
    let out = source.sync(&store).await.unwrap();
    let report = out.applied.unwrap();
    assert_eq!((report.created, report.aborted), (vec!["three".to_string()], vec!["one".to_string()]));
    assert_eq!(store.get_job("one").await.unwrap().unwrap().desired, DesiredState::Aborted);
}

#[tokio::test]
async fn folder_source_rejects_yaml_errors_and_keeps_state() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("manifests");
    write(&root, "agents/w.yaml", AGENT);
    write(&root, "templates/t.yaml", TEMPLATE);
    write(&root, "jobs/a.yaml", &job("a"));
    let store = store(tmp.path()).await;
    let source = FolderSource::new(&root, Duration::from_secs(60));
    assert_eq!(source.sync(&store).await.unwrap().applied.unwrap().created, ["a"]);
    assert!(source.sync(&store).await.unwrap().applied.is_none(), "unchanged folder: nothing applied");

    write(&root, "jobs/b.yaml", "apiVersion: george/v1\nkind: Job\nmetadata: {name: b\nspec: [");
    let out = source.sync(&store).await.unwrap();
    assert!(out.errors[0].starts_with("jobs/b.yaml:"), "{:?}", out.errors);
    assert_eq!(store.list_jobs(&JobFilter::default()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn work_items_dispatch_once_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("manifests");
    write(&root, "agents/w.yaml", AGENT);
    write(&root, "templates/ticket.yaml", TICKET);
    let work = tmp.path().join("work_items.json");
    std::fs::write(
        &work,
        r#"[{"ID": "TASK-1", "Summary": "Implement login", "Description": "...", "REPO_URL": "https://example.com/r.git", "Env_Vars": {"LEVEL": "2"}},
            {"id": "TASK-2", "summary": "Fix logout"}]"#,
    )
    .unwrap();
    {
        let store = store(tmp.path()).await;
        let out = FolderSource::new(&root, Duration::from_secs(60)).sync(&store).await.unwrap();
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let wf = WorkFileSource::new(&work, "ticket", Duration::from_secs(60));
        let out = wf.sync(&store).await.unwrap();
        assert_eq!(out.applied.unwrap_or_else(|| panic!("{:?}", out.errors)).created, ["task-1", "task-2"]);
        let t1 = store.get_job("task-1").await.unwrap().unwrap();
        assert_eq!(t1.params["summary"], "Implement login");
        assert_eq!(t1.origin.reference.as_deref(), Some("TASK-1"));
        assert_eq!(t1.steps[0].spec.description, "work on TASK-1: Implement login");
    }
    // "Restart": a fresh store handle on the same database; the file grows by one item.
    let store = store(tmp.path()).await;
    std::fs::write(&work, r#"[{"id": "TASK-1"}, {"id": "TASK-2"}, {"id": "TASK-3", "summary": "new"}]"#).unwrap();
    let out = WorkFileSource::new(&work, "ticket", Duration::from_secs(60)).sync(&store).await.unwrap();
    assert_eq!(out.applied.unwrap().created, ["task-3"]);
    let all = store.list_jobs(&JobFilter::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|j| j.status == JobStatus::Pending));
    let created =
        store.events_since(0, 1000, None).await.unwrap().into_iter().filter(|e| e.kind == "job.created").count();
    assert_eq!(created, 3, "each item was dispatched exactly once");

    // A bad item is refused alone (an event names it); the others are dispatched, as recac does.
    std::fs::write(&work, r#"[{"id": "TASK-9"}, {"summary": "no id"}]"#).unwrap();
    let out = WorkFileSource::new(&work, "ticket", Duration::from_secs(60)).sync(&store).await.unwrap();
    assert!(out.errors.is_empty() && out.refused[0].ends_with("[1].id: required"), "{out:?}");
    assert_eq!(out.applied.unwrap().created, ["task-9"]);
    let rejected: Vec<_> =
        store.events_since(0, 1000, None).await.unwrap().into_iter().filter(|e| e.kind == "job.rejected").collect();
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].data["reason"].as_str().unwrap().ends_with("[1].id: required"), "{rejected:?}");
    // Read again, the same revision refuses nothing anew.
    WorkFileSource::new(&work, "ticket", Duration::from_secs(60)).sync(&store).await.unwrap();
    let again = store.events_since(0, 1000, None).await.unwrap().into_iter().filter(|e| e.kind == "job.rejected");
    assert_eq!(again.count(), 1);
    // A file that is no list of items is refused whole.
    std::fs::write(&work, r#"{"id": "TASK-10"}"#).unwrap();
    let out = WorkFileSource::new(&work, "ticket", Duration::from_secs(60)).sync(&store).await.unwrap();
    assert!(out.errors[0].contains("expected a JSON array"), "{:?}", out.errors);
    assert!(store.get_job("task-10").await.unwrap().is_none());
}
