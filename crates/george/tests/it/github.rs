//! Issue 20 (in part): GitHub Issues as a source, against the GitHub REST
//! test server (`george-testkit/src/servers/github.rs`) through George's
//! client. Two engines with stores of their own poll one repository — one
//! `george serve`, one `george orchestrate` with recac's GitHub flags —
//! through secondary rate limits: each labelled issue becomes one job in
//! one engine (pull requests and unlabelled issues none), and gets one
//! comment when its job ends. A coding issue's pull request closes it; a
//! signed webhook starts work at once; a job's question is asked on the
//! issue and a person's answer there reaches the job.

use crate::common;

use common::git_http::GitHttp;
use common::github::{GitHubServer, NewIssue};
use common::llm::{Reply, ScriptedLlm};
use common::*;
use george_core::JobStatus;
use serde_json::json;
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

const HOOK_KEY: &str = "github-webhook-key-0123456789abcdef";

/// A coding issue, picked up by a signed webhook (the poll interval is an
/// hour): its job clones the repository, commits on `george/<job>`, opens a
/// pull request that closes the issue, and the issue's comment names it.
/// Unsigned, wrongly signed and replayed deliveries change nothing.
#[test]
fn a_webhook_starts_a_coding_issue_whose_pull_request_closes_it() {
    let gh = GitHubServer::start("acme", "app", GH_TOKEN, "george-bot");
    let tmp = common::tempdir().unwrap();
    let remotes = tmp.path().join("remotes");
    std::fs::create_dir_all(remotes.join("acme")).unwrap();
    let bare = common::bare_repo(&remotes.join("acme"), "app", &[("README", "app\n")]);
    let git_server = GitHttp::open(&remotes);
    let (secrets, m) = (tmp.path().join("secrets"), tmp.path().join("manifests"));
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("forge-token"), GH_TOKEN).unwrap();
    std::fs::write(secrets.join("hook-key"), HOOK_KEY).unwrap();
    write(&m, "agents/coder.yaml", "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: coder}\nspec:\n  capabilities: [git, shell]\n  secrets:\n    git: [{name: forge-token}]\n");
    write(&m, "templates/fix.yaml", "apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {name: fix}\nspec:\n  requiredCapabilities: [git, shell]\n  variables:\n    - {name: id, type: string}\n    - {name: summary, type: string}\n    - {name: repo_url, type: string}\n    - {name: open_pull_request, type: boolean, default: false}\n  steps:\n    - id: fix\n      description: fix it\n      run: echo fixed > fix.txt\n");
    let section = format!(
        "secrets: {{dir: '{}'}}\ngithub:\n  apiUrl: '{}'\n  webUrl: '{}'\n  owner: acme\n  repo: app\n  tokenEnv: GH_TOKEN\n  template: fix\n  interval: 1h\n  webhookSecret: hook-key\n",
        secrets.display(),
        gh.url,
        git_server.base
    );
    let e = Engine::start_full(
        &tmp.path().join("engine"),
        &format!("{FAST_CONFIG}{section}"),
        &["--manifests", m.to_str().unwrap()],
        &[("GH_TOKEN", GH_TOKEN)],
    );
    e.rt().block_on(async {
        until(Duration::from_secs(20), "the first poll", async || {
            e.client.sources().await.unwrap().iter().any(|s| s.name == "github" && s.applied_revision.is_some())
        })
        .await;
        gh.add_issue(NewIssue::new(7, "Fix the thing", &["george"]));
        let (headers, body) = gh.delivery(7, "issues", "labeled", HOOK_KEY);
        let post = |headers: Vec<(&'static str, String)>, body: String| {
            let url = format!("{}/api/v1/webhooks/github", e.url);
            async move {
                let mut rb = reqwest::Client::new().post(url).header("content-type", "application/json").body(body);
                for (k, v) in headers {
                    rb = rb.header(k, v);
                }
                rb.send().await.unwrap().status().as_u16()
            }
        };
        let unsigned: Vec<_> = headers.iter().filter(|(k, _)| *k != "X-Hub-Signature-256").cloned().collect();
        assert_eq!(post(unsigned.clone(), body.clone()).await, 401, "unsigned");
        let mut forged = unsigned.clone();
        forged.push(("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64))));
        assert_eq!(post(forged, body.clone()).await, 401, "wrongly signed");
        let tampered = body.replace("Fix the thing", "Fix another thing");
        assert_eq!(post(headers.clone(), tampered).await, 401, "a body other than the one signed");
        assert!(e.client.jobs(&Default::default()).await.unwrap().is_empty(), "nothing before a good delivery");
        assert_eq!(post(headers.clone(), body.clone()).await, 202);
        // The poll interval is an hour: only the webhook can have started it.
        let job = e.wait_status("app-7", JobStatus::Completed, Duration::from_secs(60)).await;
        assert_eq!(job.params["open_pull_request"], true);
        // A replayed delivery asks for a poll, which claims nothing twice.
        assert_eq!(post(headers, body).await, 202);
        let pulls = gh.pulls();
        assert_eq!(pulls.len(), 1, "{pulls:?}");
        let pr = &pulls[0];
        assert_eq!((pr["head"]["ref"].as_str(), pr["base"]["ref"].as_str()), (Some("george/app-7"), Some("main")));
        assert_eq!(pr["title"], "Fix the thing");
        assert!(pr["body"].as_str().unwrap().ends_with("Closes #7"), "{pr}");
        assert_eq!(git(&bare, &["show", "george/app-7:fix.txt"]), "fixed");
        let html_url = pr["html_url"].as_str().unwrap().to_string();
        let done = eventually(Duration::from_secs(20), "the completion comment", async || {
            gh.comments(7).into_iter().map(|(_, c)| c).find(|c| c.starts_with("George finished job"))
        })
        .await;
        assert!(done.contains(&format!("Pull request: {html_url}")), "{done}");
        assert!(done.contains("Branch `george/app-7`"), "{done}");
        let claims = gh.comments(7).iter().filter(|(_, c)| c.starts_with("<!-- george:claim")).count();
        assert_eq!(claims, 1, "claimed once: {:?}", gh.comments(7));
        assert_eq!(e.client.jobs(&Default::default()).await.unwrap().len(), 1);
        // A ping is answered; an event George does not act on is acknowledged.
        let ping = vec![("X-GitHub-Event", "ping".to_string()), ("X-Hub-Signature-256", hub_signature(HOOK_KEY, "{}"))];
        assert_eq!(post(ping, "{}".into()).await, 200);
        let star = vec![("X-GitHub-Event", "star".to_string()), ("X-Hub-Signature-256", hub_signature(HOOK_KEY, "{}"))];
        assert_eq!(post(star, "{}".into()).await, 202);
    });
}

/// A job that asks a question blocks; a person's answer on the issue,
/// delivered by an `issue_comment` webhook, reaches the job's conversation
/// (George's own comments do not) and the job goes on to complete.
#[test]
fn a_persons_comment_on_the_issue_unblocks_its_job() {
    let gh = GitHubServer::start("acme", "app", GH_TOKEN, "george-bot");
    let llm = ScriptedLlm::start();
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    write(&m, "templates/ask.yaml", "apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {name: ask}\nspec:\n  variables:\n    - {name: summary, type: string}\n  steps:\n    - id: deploy\n      description: Deploy to the region the requester names.\n");
    std::fs::write(tmp.path().join("hook-key"), HOOK_KEY).unwrap();
    let section = format!(
        "llm:\n  default: {{provider: scripted, model: m}}\n  providers:\n    - {{name: scripted, api: openai, baseUrl: '{}'}}\ngithub:\n  apiUrl: '{}'\n  owner: acme\n  repo: app\n  tokenEnv: GH_TOKEN\n  template: ask\n  interval: 1h\n  webhookSecretFile: '{}'\n",
        llm.url,
        gh.url,
        tmp.path().join("hook-key").display()
    );
    let e = Engine::start_full(
        &tmp.path().join("engine"),
        &format!("{FAST_CONFIG}{section}"),
        &["--manifests", m.to_str().unwrap()],
        &[("GH_TOKEN", GH_TOKEN)],
    );
    let deliver = |number: u64, event: &str, action: &str| {
        let (headers, body) = gh.delivery(number, event, action, HOOK_KEY);
        let url = format!("{}/api/v1/webhooks/github", e.url);
        async move {
            let mut rb = reqwest::Client::new().post(url).body(body);
            for (k, v) in headers {
                rb = rb.header(k, v);
            }
            assert_eq!(rb.send().await.unwrap().status().as_u16(), 202);
        }
    };
    e.rt().block_on(async {
        until(Duration::from_secs(20), "the first poll", async || {
            e.client.sources().await.unwrap().iter().any(|s| s.name == "github" && s.applied_revision.is_some())
        })
        .await;
        llm.push(Reply::tool("ask_human", json!({"question": "Which region?"}), 10, 2));
        gh.add_issue(NewIssue::new(9, "deploy the service", &["george"]));
        deliver(9, "issues", "opened").await;
        let blocked = e.wait_status("app-9", JobStatus::Blocked, Duration::from_secs(30)).await;
        assert_eq!(blocked.reason.as_deref(), Some("waiting for human: Which region?"));
        // The question is asked on the issue, where the person answers.
        let asked =
            |c: &(String, String)| c.1.starts_with("George is blocked (job `app-9`): waiting for human: Which region?");
        until(Duration::from_secs(20), "the question on the issue", async || gh.comments(9).iter().any(asked)).await;
        llm.push(Reply::tool("complete_step", json!({"summary": "deployed to eu-west-1"}), 10, 2));
        gh.comment_as(9, "ann", "eu-west-1, please");
        deliver(9, "issue_comment", "created").await;
        e.wait_status("app-9", JobStatus::Completed, Duration::from_secs(30)).await;
        let second = &llm.received()[1].body["messages"];
        assert!(second.to_string().contains("eu-west-1, please"), "{second}");
        let conv = e.client.comments("app-9").await.unwrap();
        let from_github: Vec<_> = conv.iter().filter(|c| c.author.starts_with("github:")).collect();
        assert_eq!(from_github.len(), 1, "only the person's comment, once: {conv:?}");
        assert_eq!((from_github[0].author.as_str(), from_github[0].body.as_str()), ("github:ann", "eu-west-1, please"));
        let finished = eventually(Duration::from_secs(20), "the completion comment", async || {
            gh.comments(9).into_iter().map(|(_, c)| c).find(|c| c.starts_with("George finished job `app-9`"))
        })
        .await;
        assert!(!finished.is_empty());
        assert_eq!(gh.comments(9).iter().filter(|c| asked(c)).count(), 1, "asked once: {:?}", gh.comments(9));
    });
}
