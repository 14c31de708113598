//! Issue 20 (in part): GitHub Issues as a source, against the GitHub REST
//! test server (`george-testkit/src/servers/github.rs`) through George's
//! client. Two engines with stores of their own poll one repository — one
//! `george serve`, one `george orchestrate` with recac's GitHub flags —
//! through secondary rate limits: each labelled issue becomes one job in
//! one engine (pull requests and unlabelled issues none), and gets one
//! comment when its job ends.

use crate::common;

use common::github::{GitHubServer, NewIssue};
use common::*;
use george_core::JobStatus;
use std::collections::BTreeMap;
use std::time::Duration;

const GH_TOKEN: &str = "ghp_testtoken0123456789abcdef";

#[test]
fn labelled_issues_become_one_job_each_across_two_engines_and_are_reported_back() {
    let gh = GitHubServer::start("acme", "app", GH_TOKEN, "george-bot");
    for n in 1..=3 {
        gh.add_issue(NewIssue::new(n, &format!("issue {n}"), &["george"]));
    }
    gh.add_issue(NewIssue::new(4, "not for george", &["bug"]));
    let mut pr = NewIssue::new(5, "a pull request", &["george"]);
    pr.pull_request = true;
    gh.add_issue(pr);
    // The first polls meet a secondary rate limit.
    gh.fail_next(2, 403, Some(1));
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    let issue = "apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {name: issue}\nspec:\n  variables:\n    - {name: id, type: string}\n    - {name: summary, type: string, default: none}\n  steps:\n    - id: work\n      description: work on it\n      run: echo {{id}} >> \"$GEORGE_OUTPUT_DIR/done\"\n";
    write(&m, "templates/issue.yaml", issue);
    let manifests = m.to_str().unwrap();
    let section = format!(
        "github:\n  apiUrl: '{}'\n  owner: acme\n  repo: app\n  tokenEnv: GH_TOKEN\n  template: issue\n  interval: 200ms\n",
        gh.url
    );
    let a = Engine::start_full(
        &tmp.path().join("a"),
        &format!("{FAST_CONFIG}{section}"),
        &["--manifests", manifests],
        &[("GH_TOKEN", GH_TOKEN), ("GEORGE_ENGINE_ID", "a")],
    );
    // recac's command line; only where GitHub is (a test server) comes from George's config file.
    let b = Engine::start_as(
        &tmp.path().join("b"),
        "orchestrate",
        &format!("{FAST_CONFIG}github:\n  apiUrl: '{}'\n", gh.url),
        &[
            "--mode",
            "process",
            "--poller",
            "github",
            "--github-owner",
            "acme",
            "--github-repo",
            "app",
            "--github-label",
            "george",
            "--interval",
            "200ms",
            "--manifests",
            manifests,
            "--template",
            "issue",
        ],
        &[("RECAC_GITHUB_TOKEN", GH_TOKEN), ("GEORGE_ENGINE_ID", "b")],
    );
    let rt = a.rt();
    rt.block_on(async {
        let owners = eventually(Duration::from_secs(30), "the three issues' jobs to complete", async || {
            let mut owners: BTreeMap<String, Vec<&str>> = BTreeMap::new();
            for (name, e) in [("a", &a), ("b", &b)] {
                for j in e.client.jobs(&Default::default()).await.ok()? {
                    if j.status != JobStatus::Completed {
                        return None;
                    }
                    owners.entry(j.id).or_default().push(name);
                }
            }
            (owners.len() == 3).then_some(owners)
        })
        .await;
        assert_eq!(owners.keys().collect::<Vec<_>>(), ["app-1", "app-2", "app-3"]);
        assert!(owners.values().all(|o| o.len() == 1), "one engine each: {owners:?}");
        for (id, engine) in &owners {
            let e = if engine[0] == "a" { &a } else { &b };
            let job = e.job(id).await;
            assert_eq!(job.origin.reference.as_deref(), Some(format!("acme/app#{}", &id[4..]).as_str()));
            assert_eq!(job.params["id"], format!("acme/app#{}", &id[4..]));
        }
        // Each issue hears once that its job finished, however many polls pass.
        let finished = |n: u64| gh.comments(n).iter().filter(|(_, c)| c.starts_with("George finished job")).count();
        until(Duration::from_secs(20), "the completion comments", async || (1..=3).all(|n| finished(n) == 1)).await;
        let polls = || gh.requests().iter().filter(|r| r.starts_with("GET /repos/acme/app/issues?")).count();
        let seen = polls();
        until(Duration::from_secs(20), "four more polls", async || polls() >= seen + 4).await;
        assert!((1..=3).all(|n| finished(n) == 1), "{:?}", (1..=3).map(|n| gh.comments(n)).collect::<Vec<_>>());
        assert!(gh.comments(4).is_empty() && gh.comments(5).is_empty(), "no claim on what is not work");
        assert!(gh.requests().iter().any(|r| r.ends_with("-> 403")), "the rate limit was met");
    });
}
