//! Acceptance: Jira, through George's real client against the Jira test
//! server (tests/common/jira.rs) over HTTP.
//! - tickets across three pages become jobs exactly once, through engine
//!   restarts and with two engines polling the same project;
//! - a ticket blocked by an open ticket waits until the blocker is done;
//! - status and ADF comments follow a job through in_progress → blocked →
//!   in_progress (after a person's comment) → completed; a failure comments
//!   the error;
//! - 429s and 503s delay write-back but lose nothing and claim nothing twice;
//! - a signed webhook starts a job long before the next poll;
//! - bad JQL, odd descriptions, unknown transitions and wrong credentials
//!   each give a clear error, lose nothing and panic nothing;
//! - `george orchestrate` runs a recac setup (its flags and variables) unchanged;
//! - a ticket with a `Repo:` line is a coding job whose completion comment names the branch and commit;
//! - a ticket a person closes mid-run stays closed; its job is aborted (or paused) with one comment;
//! - a ticket job's sub-agents are mirrored as sub-tasks, once across restarts, moved as they run;
//! - a job on the board (a rule's `board: true`): its steps as sub-tasks, once across restarts,
//!   moved as they run, and its end as a comment with a table of its steps.

use crate::common;

use common::jira::{adf_text, JiraServer, NewIssue};
use common::llm::{Reply, ScriptedLlm};
use common::*;
use george_core::JobStatus;
use serde_json::{json, Value};
use std::time::Duration;

const EMAIL: &str = "george-bot@example.com";
const TOKEN: &str = "jira-api-token-3f9c1e7a5b2d";
const HOOK_KEY: &str = "jira-webhook-signing-key-0123456789";

const TEMPLATES: &str = "apiVersion: george/v1
kind: AgentSpec
metadata: {name: worker}
spec:
  capabilities: [shell]
---
apiVersion: george/v1
kind: TaskTemplate
metadata: {name: ticket}
spec:
  variables:
    - {name: ticket, type: string}
    - {name: summary, type: string, required: false}
    - {name: description, type: string, required: false}
  steps:
    - id: work
      description: work on {{ticket}}
      run: echo {{ticket}} >> \"$GEORGE_OUTPUT_DIR/done\"
---
apiVersion: george/v1
kind: TaskTemplate
metadata: {name: boom}
spec:
  variables:
    - {name: ticket, type: string}
  steps:
    - id: work
      description: fails
      run: echo 'disk full on /var' >&2; exit 1
---
apiVersion: george/v1
kind: AgentSpec
metadata: {name: coder}
spec:
  capabilities: [shell, git]
---
apiVersion: george/v1
kind: TaskTemplate
metadata: {name: code}
spec:
  requiredCapabilities: [git, shell]
  variables:
    - {name: ticket, type: string}
    - {name: repo_url, type: string}
  steps:
    - id: change
      description: change the code
      run: echo changed > change.txt
---
apiVersion: george/v1
kind: TaskTemplate
metadata: {name: slow}
spec:
  variables:
    - {name: ticket, type: string}
  steps:
    - id: work
      description: works until stopped
      run: sleep 3600.9
---
apiVersion: george/v1
kind: AgentSpec
metadata: {name: lead}
spec:
  capabilities: [spawn]
---
apiVersion: george/v1
kind: TaskTemplate
metadata: {name: spawner}
spec:
  requiredCapabilities: [spawn]
  variables:
    - {name: ticket, type: string}
  steps:
    - id: split
      description: Split the ticket into pieces for sub-agents.
---
apiVersion: george/v1
kind: TaskTemplate
metadata: {name: piece}
spec:
  requiredCapabilities: [shell]
  variables:
    - {name: n, type: string}
  steps:
    - id: work
      description: a piece
      run: echo piece {{n}}
---
apiVersion: george/v1
kind: TaskTemplate
metadata: {name: staged}
spec:
  variables:
    - {name: ticket, type: string}
  steps:
    - {id: build, description: Build it, run: echo built}
    - {id: check, description: Check it, depends_on: [build], run: echo checked}
---
apiVersion: george/v1
kind: TaskTemplate
metadata: {name: flaky}
spec:
  variables:
    - {name: ticket, type: string}
  steps:
    - {id: build, description: Build it, run: echo built}
    - {id: check, description: Check it, depends_on: [build], run: 'test -f \"$GEORGE_OUTPUT_DIR/fixed\"'}
---
apiVersion: george/v1
kind: TaskTemplate
metadata: {name: ask}
spec:
  variables:
    - {name: ticket, type: string}
  steps:
    - id: deploy
      description: Deploy to the region the requester names.
";

struct Site {
    tmp: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let tmp = common::tempdir().unwrap();
        write(&tmp.path().join("manifests"), "all.yaml", TEMPLATES);
        std::fs::write(tmp.path().join("hook-key"), HOOK_KEY).unwrap();
        Site { tmp }
    }

    /// An engine (its own data dir under `name`) polling `jira`; `jira_keys`
    /// replace or add keys of the `jira` section, `top` adds sections.
    fn engine(&self, name: &str, jira: &JiraServer, jira_keys: &[(&str, &str)], top: &str) -> Engine {
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let hook = format!("'{}'", self.tmp.path().join("hook-key").display());
        let url = format!("'{}'", jira.url);
        let mut keys: Vec<(&str, &str)> = vec![
            ("url", url.as_str()),
            ("project", "PROJ"),
            ("email", EMAIL),
            ("tokenEnv", "JIRA_TOKEN"),
            ("interval", "200ms"),
            ("pageSize", "2"),
            ("template", "ticket"),
            (
                "rules",
                "[{label: boom, template: boom}, {label: ask, template: ask}, {label: code, template: code}, {label: slow, template: slow}, {label: spawner, template: spawner}, {label: staged, template: staged, board: true}, {label: flaky, template: flaky, board: true}]",
            ),
            ("statuses", "{blocked: Blocked}"),
            ("assignee", "self"),
            ("webhookSecretFile", hook.as_str()),
        ];
        for (k, v) in jira_keys {
            match keys.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v,
                None => keys.push((k, v)),
            }
        }
        let section: String = keys.iter().map(|(k, v)| format!("  {k}: {v}\n")).collect();
        let cfg = format!("{FAST_CONFIG}{top}jira:\n{section}");
        let manifests = self.tmp.path().join("manifests");
        Engine::start_full(
            &dir,
            &cfg,
            &["--manifests", manifests.to_str().unwrap()],
            &[("JIRA_TOKEN", TOKEN), ("GEORGE_ENGINE_ID", name)],
        )
    }
}

fn jira() -> JiraServer {
    JiraServer::start(EMAIL, TOKEN)
}

async fn job_ids(e: &Engine) -> Vec<String> {
    e.client.jobs(&Default::default()).await.unwrap().into_iter().map(|j| j.id).collect()
}

async fn events_of(e: &Engine, kind: &str) -> Vec<george_core::api::EventView> {
    e.client.events(0, 100_000).await.unwrap().into_iter().filter(|x| x.kind == kind).collect()
}

fn bot_comments(j: &JiraServer, key: &str) -> Vec<String> {
    let me = j.bot_account();
    j.comments(key)
        .into_iter()
        .filter(|(a, _)| *a == me)
        .map(|(_, body)| {
            assert_eq!((body["type"].as_str(), body["version"].as_u64()), (Some("doc"), Some(1)), "ADF");
            adf_plain(&body)
        })
        .collect()
}

fn adf_plain(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let own = o.get("text").and_then(Value::as_str).unwrap_or("").to_string();
            let kids: Vec<String> =
                o.get("content").and_then(Value::as_array).into_iter().flatten().map(adf_plain).collect();
            format!("{own}{}", kids.join("\n"))
        }
        _ => String::new(),
    }
}

/// Waits until the engine has searched Jira three more times.
async fn three_more_polls(j: &JiraServer) {
    let polls = || j.requests().iter().filter(|r| r.starts_with("POST /rest/api/3/search/jql")).count();
    let seen = polls();
    until(Duration::from_secs(20), "three more polls", async || polls() >= seen + 3).await;
}

/// Restarts the engine and lets it read Jira and its event log again.
fn restart_and_poll(e: &mut Engine, j: &JiraServer) {
    e.stop();
    e.restart();
    e.rt().block_on(three_more_polls(j));
}

/// Waits until ticket `key` has `n` sub-tasks, all done.
async fn sub_tasks_done(j: &JiraServer, key: &str, n: usize) {
    until(Duration::from_secs(20), &format!("{n} sub-tasks of {key}, done"), async || {
        let subs = j.subtasks(key);
        subs.len() == n && subs.iter().all(|(_, _, status)| status == "Done")
    })
    .await;
}

fn count_in_progress(j: &JiraServer, key: &str) -> usize {
    j.transitions().iter().filter(|(k, s)| k == key && s == "In Progress").count()
}

#[test]
fn tickets_become_jobs_exactly_once_across_pages_restarts_and_engines() {
    let site = Site::new();
    let j = jira();
    for n in 1..=6 {
        j.add_issue(NewIssue::new(&format!("PROJ-{n}"), &format!("task {n}")));
    }
    let mut issue = NewIssue::new("PROJ-99", "not for george");
    issue.labels = vec![];
    j.add_issue(issue);
    // Search lags one change behind: claimed tickets still look claimable, so the claim must be the gate.
    j.set_search_lag(1);
    let mut a = site.engine("a", &j, &[], "");
    let b = site.engine("b", &j, &[], "");
    let rt = a.rt();
    let all: Vec<String> = (1..=6).map(|n| format!("proj-{n}")).collect();
    let done = |e: &Engine| {
        let dir = e.dir.clone();
        move |id: &str| dir.join(format!("data/outputs/{id}/done")).exists()
    };
    rt.block_on(async {
        until(Duration::from_secs(30), "all six tickets dispatched", async || {
            let mut ids = job_ids(&a).await;
            ids.extend(job_ids(&b).await);
            ids.sort();
            ids == all
        })
        .await;
    });
    // Two restarts of engine a, with new tickets in between.
    for round in 0..2 {
        a.stop();
        j.add_issue(NewIssue::new(&format!("PROJ-{}", 7 + round), "later"));
        a.restart();
    }
    rt.block_on(async {
        let want: Vec<String> = (1..=8).map(|n| format!("proj-{n}")).collect();
        until(Duration::from_secs(60), "all eight tickets dispatched and done", async || {
            let (ja, jb) = (job_ids(&a).await, job_ids(&b).await);
            let mut ids = ja.clone();
            ids.extend(jb.clone());
            ids.sort();
            let (da, db) = (done(&a), done(&b));
            ids == want
                && ja.iter().all(|id| da(id))
                && jb.iter().all(|id| db(id))
                && (1..=8).all(|n| j.status(&format!("PROJ-{n}")) == "Done")
        })
        .await;
        let (ja, jb) = (job_ids(&a).await, job_ids(&b).await);
        assert!(ja.iter().all(|id| !jb.contains(id)), "a ticket became a job on both engines: {ja:?} {jb:?}");
        for n in 1..=8 {
            let key = format!("PROJ-{n}");
            assert_eq!(count_in_progress(&j, &key), 1, "{key} was claimed once");
            let claim = j.property(&key, "george.claim").expect("the claim is recorded on the ticket");
            let owner = if ja.contains(&format!("proj-{n}")) { "a" } else { "b" };
            assert_eq!(claim["engine"], owner);
            assert_eq!(claim["job"], format!("proj-{n}"));
            assert_eq!(j.assignee(&key), Some(j.bot_account()), "assigned to George");
            let done_file = if owner == "a" { &a.dir } else { &b.dir };
            let lines = std::fs::read_to_string(done_file.join(format!("data/outputs/proj-{n}/done"))).unwrap();
            assert_eq!(lines.lines().count(), 1, "{key} ran once");
        }
        assert_eq!(j.status("PROJ-99"), "To Do", "unlabelled tickets are left alone");
        let job = a.client.job(&ja[0]).await.unwrap();
        assert_eq!(job.origin.source, "jira");
        assert_eq!(job.params["ticket"], job.origin.reference.clone().unwrap());
        // The search walked every page: 4 tickets of page size 2 → at least 2 pages per poll.
        assert!(j.requests().iter().filter(|r| r.starts_with("POST /rest/api/3/search/jql")).count() >= 3);
    });
}

#[test]
fn a_blocked_ticket_waits_for_its_blocker() {
    let site = Site::new();
    let j = jira();
    let mut blocker = NewIssue::new("PROJ-19", "the blocker");
    blocker.labels = vec![];
    blocker.status = "In Progress".into();
    j.add_issue(blocker);
    let mut blocked = NewIssue::new("PROJ-20", "needs 19");
    blocked.blocked_by = vec!["PROJ-19".into()];
    j.add_issue(blocked);
    let e = site.engine("a", &j, &[], "");
    e.rt().block_on(async {
        until(Duration::from_secs(20), "the wait to be recorded", async || {
            events_of(&e, "jira.ticket.waiting").await.iter().any(|x| x.data["ticket"] == "PROJ-20")
        })
        .await;
        let w = events_of(&e, "jira.ticket.waiting").await;
        assert_eq!(w[0].data["reason"], "blocked by PROJ-19 (In Progress)");
        assert!(job_ids(&e).await.is_empty());
        assert_eq!(j.status("PROJ-20"), "To Do", "not claimed while blocked");
        j.set_status("PROJ-19", "Done");
        e.wait_status("proj-20", JobStatus::Completed, Duration::from_secs(30)).await;
    });
}

#[test]
fn status_and_comments_follow_the_job_and_a_reply_unblocks_it() {
    let site = Site::new();
    let j = jira();
    let llm = ScriptedLlm::start();
    let mut ask = NewIssue::new("PROJ-30", "deploy the service");
    ask.labels = vec!["george".into(), "ask".into()];
    j.add_issue(ask);
    let mut boom = NewIssue::new("PROJ-31", "this one fails");
    boom.labels = vec!["george".into(), "boom".into()];
    j.add_issue(boom);
    llm.push(Reply::tool("ask_human", json!({"question": "Which region?"}), 10, 2));
    let extra = format!(
        "llm:\n  default: {{provider: scripted, model: m}}\n  providers:\n    - {{name: scripted, api: openai, baseUrl: '{}'}}\n",
        llm.url
    );
    let e = site.engine("a", &j, &[], &extra);
    e.rt().block_on(async {
        let blocked = e.wait_status("proj-30", JobStatus::Blocked, Duration::from_secs(30)).await;
        assert_eq!(blocked.reason.as_deref(), Some("waiting for human: Which region?"));
        until(Duration::from_secs(20), "the ticket to be blocked", async || j.status("PROJ-30") == "Blocked").await;
        // A person answers on the ticket.
        llm.push(Reply::tool("complete_step", json!({"summary": "deployed to eu-west-1"}), 10, 2));
        j.comment_as("PROJ-30", "557058:ann", "Ann", "eu-west-1, please");
        e.wait_status("proj-30", JobStatus::Completed, Duration::from_secs(30)).await;
        until(Duration::from_secs(20), "the ticket to be done", async || j.status("PROJ-30") == "Done").await;
        assert_eq!(j.history("PROJ-30"), ["To Do", "In Progress", "Blocked", "In Progress", "Done"]);
        // The reply reached the agent's conversation.
        let second = &llm.received()[1].body["messages"];
        assert!(second.to_string().contains("eu-west-1, please"), "{second}");
        let conv = e.client.comments("proj-30").await.unwrap();
        assert!(conv.iter().any(|c| c.author == "jira:Ann" && c.body == "eu-west-1, please"));
        until(Duration::from_secs(20), "the completion comment", async || bot_comments(&j, "PROJ-30").len() >= 4).await;
        let said = bot_comments(&j, "PROJ-30");
        assert!(said[0].contains("George is working on this (job proj-30, attempt 1)"), "{said:?}");
        assert!(said[1].contains("George is blocked (job proj-30): waiting for human: Which region?"), "{said:?}");
        assert!(said[2].contains("attempt 2"), "{said:?}");
        assert!(
            said[3].contains("George finished job proj-30") && said[3].contains("deployed to eu-west-1"),
            "{said:?}"
        );

        // The failing ticket: a comment with the error and the output's end.
        e.wait_status("proj-31", JobStatus::Failed, Duration::from_secs(30)).await;
        until(Duration::from_secs(20), "the failure comment", async || {
            bot_comments(&j, "PROJ-31").iter().any(|c| c.contains("could not finish"))
        })
        .await;
        let failure = bot_comments(&j, "PROJ-31").into_iter().find(|c| c.contains("could not finish")).unwrap();
        assert!(failure.contains("exit code 1") && failure.contains("disk full on /var"), "{failure}");
        assert!(events_of(&e, "jira.writeback.failed").await.is_empty(), "every comment was valid ADF");
    });
}

#[test]
fn rate_limits_and_outages_delay_write_back_but_lose_nothing() {
    let site = Site::new();
    let j = jira();
    for n in 40..44 {
        j.add_issue(NewIssue::new(&format!("PROJ-{n}"), "flaky"));
    }
    // From the first request on: 429s (Retry-After 1 s), then 503s.
    j.fail_next(5, 429, Some(1));
    j.fail_next(5, 503, None);
    let e = site.engine("a", &j, &[], "");
    e.rt().block_on(async {
        until(Duration::from_secs(60), "every ticket done with its comments", async || {
            (40..44).all(|n| {
                let key = format!("PROJ-{n}");
                j.status(&key) == "Done" && bot_comments(&j, &key).len() == 2
            })
        })
        .await;
        assert_eq!(j.pending_faults(), 0, "the faults were served");
        for n in 40..44 {
            let key = format!("PROJ-{n}");
            assert_eq!(count_in_progress(&j, &key), 1, "{key} claimed once");
            assert_eq!(j.history(&key), ["To Do", "In Progress", "Done"]);
        }
        // Faults while jobs finish: the write-back waits and catches up.
        j.add_issue(NewIssue::new("PROJ-45", "late"));
        e.wait_status("proj-45", JobStatus::Completed, Duration::from_secs(30)).await;
        j.fail_next(4, 503, None);
        j.fail_next(2, 429, Some(1));
        until(Duration::from_secs(60), "the late ticket's write-back", async || {
            j.status("PROJ-45") == "Done" && bot_comments(&j, "PROJ-45").len() == 2
        })
        .await;
        assert!(events_of(&e, "jira.writeback.failed").await.is_empty());
    });
}

#[test]
fn a_signed_webhook_starts_a_job_before_the_next_poll() {
    let site = Site::new();
    let j = jira();
    let e = site.engine("a", &j, &[("interval", "1h")], "");
    e.rt().block_on(async {
        until(Duration::from_secs(20), "the first poll", async || {
            e.client.sources().await.unwrap().iter().any(|s| s.name == "jira" && s.applied_revision.is_some())
        })
        .await;
        j.add_issue(NewIssue::new("PROJ-50", "via webhook"));
        let body = json!({"webhookEvent": "jira:issue_created", "issue": {"key": "PROJ-50"}}).to_string();
        let post = |sig: Option<String>| {
            let (url, body) = (format!("{}/api/v1/webhooks/jira", e.url), body.clone());
            async move {
                let mut rb = reqwest::Client::new().post(url).header("content-type", "application/json").body(body);
                if let Some(s) = sig {
                    rb = rb.header("X-Hub-Signature", s);
                }
                rb.send().await.unwrap().status().as_u16()
            }
        };
        assert_eq!(post(None).await, 401);
        assert_eq!(post(Some("sha256=00".into())).await, 401);
        assert!(job_ids(&e).await.is_empty());
        assert_eq!(post(Some(hub_signature(HOOK_KEY, &body))).await, 202);
        // The poll interval is an hour: only the webhook can have started it.
        e.wait_status("proj-50", JobStatus::Completed, Duration::from_secs(20)).await;
    });
}

#[test]
fn bad_input_gives_clear_errors_and_loses_nothing() {
    let site = Site::new();
    let j = jira();
    // Odd descriptions: empty, huge, not ADF at all, ADF with unknown nodes.
    let mut empty = NewIssue::new("PROJ-60", "empty description");
    empty.description = Value::Null;
    j.add_issue(empty);
    let mut huge = NewIssue::new("PROJ-61", "huge description");
    huge.description = adf_text(&"x".repeat(200_000));
    j.add_issue(huge);
    let mut plain = NewIssue::new("PROJ-62", "not ADF");
    plain.description = json!(["a", 1, {"b": null}]);
    j.add_issue(plain);
    let mut odd = NewIssue::new("PROJ-63", "unknown nodes");
    odd.description = json!({"type": "doc", "version": 1, "content": [{"type": "whatever", "content": [{"type": "text", "text": "kept"}]}]});
    j.add_issue(odd);
    let e = site.engine("a", &j, &[], "");
    e.rt().block_on(async {
        for n in 60..64 {
            e.wait_status(&format!("proj-{n}"), JobStatus::Completed, Duration::from_secs(30)).await;
        }
        assert_eq!(e.client.job("proj-63").await.unwrap().params["description"], "kept");
        assert_eq!(e.client.job("proj-61").await.unwrap().params["description"].as_str().unwrap().len(), 200_000);
    });
    drop(e);

    // Malformed JQL: Jira's 400 surfaces in the source's status; nothing is dispatched.
    let bad = site.engine("b", &j, &[("query", "'project = PROJ AND labels = george ORDER priority'")], "");
    bad.rt().block_on(async {
        until(Duration::from_secs(20), "the JQL error", async || {
            bad.client.sources().await.unwrap().iter().any(|s| s.name == "jira" && !s.errors.is_empty())
        })
        .await;
        let s = bad.client.sources().await.unwrap().into_iter().find(|s| s.name == "jira").unwrap();
        let err = s.errors.join("; ");
        assert!(err.contains("is invalid") && err.contains("Error in the JQL Query: Expecting 'by'"), "{err}");
        assert!(job_ids(&bad).await.is_empty());
        let out = bad.cli(&["sources"]);
        assert!(stdout(&out).contains("Error in the JQL Query"), "{}", stdout(&out));
    });
    drop(bad);

    // A workflow without the configured status: the ticket waits with the reason; nothing is claimed.
    let k = jira();
    k.add_issue(NewIssue::new("PROJ-70", "needs Doing"));
    let unknown = site.engine("c", &k, &[("statuses", "{inProgress: Doing}")], "");
    unknown.rt().block_on(async {
        until(Duration::from_secs(20), "the reason", async || {
            events_of(&unknown, "jira.ticket.waiting").await.iter().any(|x| x.data["ticket"] == "PROJ-70")
        })
        .await;
        let why = events_of(&unknown, "jira.ticket.waiting").await[0].data["reason"].as_str().unwrap().to_string();
        assert!(
            why.starts_with("no transition from `To Do` to `Doing`") && why.contains("Start Progress → In Progress"),
            "{why}"
        );
        assert_eq!(k.status("PROJ-70"), "To Do");
    });
    drop(unknown);

    // Wrong credentials: one clear error; the engine keeps running its other sources.
    let dir = site.tmp.path().join("d");
    std::fs::create_dir_all(&dir).unwrap();
    write(
        &site.tmp.path().join("m2"),
        "all.yaml",
        &format!(
            "{TEMPLATES}---\n{}",
            job("local-job", "boom").replace("template: boom", "template: ticket\n  params: {ticket: LOCAL-1}")
        ),
    );
    let cfg = format!("{FAST_CONFIG}jira:\n  url: '{}'\n  project: PROJ\n  email: {EMAIL}\n  tokenEnv: JIRA_TOKEN\n  interval: 200ms\n  template: ticket\n", k.url);
    let m2 = site.tmp.path().join("m2");
    let wrong =
        Engine::start_full(&dir, &cfg, &["--manifests", m2.to_str().unwrap()], &[("JIRA_TOKEN", "not-the-token")]);
    wrong.rt().block_on(async {
        wrong.wait_status("local-job", JobStatus::Completed, Duration::from_secs(30)).await;
        until(Duration::from_secs(20), "the credentials error", async || {
            wrong.client.sources().await.unwrap().iter().any(|s| s.name == "jira" && !s.errors.is_empty())
        })
        .await;
        let s = wrong.client.sources().await.unwrap().into_iter().find(|s| s.name == "jira").unwrap();
        assert!(s.errors.join(";").contains("Jira rejected the credentials (401)"), "{:?}", s.errors);
        assert!(!wrong.log().contains("not-the-token"), "the token is not logged");
        assert_eq!(k.status("PROJ-70"), "To Do");
    });
}

#[test]
fn george_orchestrate_runs_a_recac_setup() {
    let j = jira();
    let mut t = NewIssue::new("RC-1", "rename the module");
    t.labels = vec!["recac-agent".into()];
    j.add_issue(t);
    let llm = ScriptedLlm::start();
    llm.push(Reply::tool("complete_step", json!({"summary": "renamed"}), 10, 2));
    let tmp = common::tempdir().unwrap();
    // George-only settings (a scripted provider) come from a config file; the rest is recac's.
    let cfg =
        format!("{FAST_CONFIG}llm:\n  providers:\n    - {{name: scripted, api: openai, baseUrl: '{}'}}\n", llm.url);
    let e = Engine::start_as(
        tmp.path(),
        "orchestrate",
        &cfg,
        &[],
        &[
            ("RECAC_ORCHESTRATOR_MODE", "process"),
            ("RECAC_POLLER", "jira"),
            ("RECAC_ORCHESTRATOR_INTERVAL", "200ms"),
            ("RECAC_AGENT_PROVIDER", "scripted"),
            ("RECAC_AGENT_MODEL", "m"),
            ("RECAC_MAX_ITERATIONS", "7"),
            ("JIRA_URL", j.url.as_str()),
            ("JIRA_USERNAME", EMAIL),
            ("JIRA_API_TOKEN", TOKEN),
        ],
    );
    e.rt().block_on(async {
        let job = e.wait_status("rc-1", JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!((job.template.as_str(), job.agent.as_str()), ("recac-task", "recac-agent"));
        assert_eq!(job.params["summary"], "rename the module");
        assert!(llm.received()[0].body.to_string().contains("rename the module"));
        until(Duration::from_secs(20), "the ticket to be done", async || j.status("RC-1") == "Done").await;
        // recac's iteration cap is the built-in agent's LLM turn cap.
        let built_in = std::fs::read_to_string(tmp.path().join("data/orchestrate/recac.yaml")).unwrap();
        assert!(built_in.contains("env: {GEORGE_LLM_MAX_TURNS: \"7\"}"), "{built_in}");
    });
}

#[test]
fn a_coding_ticket_reports_its_branch_and_commit() {
    let site = Site::new();
    let j = jira();
    let bare = bare_repo(site.tmp.path(), "shop", &[("README", "shop\n")]);
    let forge = common::git_http::GitHttp::open(site.tmp.path());
    let mut t = NewIssue::new("PROJ-80", "change the shop");
    t.labels = vec!["george".into(), "code".into()];
    t.description = adf_text(&format!("Please change it.\nRepo: {}", forge.url("shop")));
    j.add_issue(t);
    let e = site.engine("a", &j, &[], "");
    e.rt().block_on(async {
        let job = e.wait_status("proj-80", JobStatus::Completed, Duration::from_secs(30)).await;
        assert_eq!(job.agent, "coder");
        assert_eq!(job.params["repo_url"], forge.url("shop"));
        let head = git(&bare, &["rev-parse", "george/PROJ-80"]);
        until(Duration::from_secs(20), "the completion comment", async || {
            bot_comments(&j, "PROJ-80").iter().any(|c| c.contains("George finished job proj-80"))
        })
        .await;
        let done = bot_comments(&j, "PROJ-80").into_iter().find(|c| c.contains("George finished")).unwrap();
        assert!(done.contains(&format!("Branch george/PROJ-80 at commit {head}")), "{done}");
        assert!(done.contains("change.txt"), "the diff stat: {done}");
    });
}

/// A person closes a ticket while its job runs: the job is aborted and its
/// agent stopped, the ticket is never moved again, and exactly one comment
/// says why. With `jira.onClosed: pause` the job is paused instead.
#[test]
fn a_ticket_a_person_closes_stays_closed_and_its_job_stops() {
    let site = Site::new();
    let j = jira();
    let mut slow = NewIssue::new("PROJ-40", "a long one");
    slow.labels = vec!["george".into(), "slow".into()];
    j.add_issue(slow);
    let mut e = site.engine("a", &j, &[], "");
    e.rt().block_on(async {
        e.wait_status("proj-40", JobStatus::InProgress, Duration::from_secs(30)).await;
        // The claim moves the ticket; the write-back then says the agent started.
        until(Duration::from_secs(20), "the working comment", async || bot_comments(&j, "PROJ-40").len() == 1).await;
        until(Duration::from_secs(20), "the step to run", async || process_running("sleep 3600.9")).await;
        j.set_status("PROJ-40", "Done");
        let aborted = e.wait_status("proj-40", JobStatus::Aborted, Duration::from_secs(30)).await;
        assert_eq!(
            aborted.reason.as_deref(),
            Some("aborted by source:jira: the ticket PROJ-40 was closed in Jira (status `Done`); George will not reopen it")
        );
        until(Duration::from_secs(20), "the agent to stop", async || !process_running("sleep 3600.9")).await;
        until(Duration::from_secs(20), "the explanation", async || bot_comments(&j, "PROJ-40").len() >= 2).await;
        // More polls pass: nothing more is said or moved.
        three_more_polls(&j).await;
        let said = bot_comments(&j, "PROJ-40");
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[1].contains("George stopped job proj-40: aborted by source:jira: the ticket PROJ-40 was closed"), "{said:?}");
        assert_eq!(j.history("PROJ-40"), ["To Do", "In Progress", "Done"], "never reopened");
    });
    e.stop();

    // Paused instead, when so configured; a paused job's ticket stays closed too.
    let mut other = NewIssue::new("PROJ-41", "another long one");
    other.labels = vec!["george".into(), "slow".into()];
    j.add_issue(other);
    let b = site.engine("b", &j, &[("onClosed", "pause")], "");
    b.rt().block_on(async {
        b.wait_status("proj-41", JobStatus::InProgress, Duration::from_secs(30)).await;
        until(Duration::from_secs(20), "the working comment", async || bot_comments(&j, "PROJ-41").len() == 1).await;
        j.set_status("PROJ-41", "Done");
        let paused = b.wait_status("proj-41", JobStatus::Paused, Duration::from_secs(30)).await;
        assert!(paused.reason.unwrap().contains("closed in Jira"));
        until(Duration::from_secs(20), "the explanation", async || bot_comments(&j, "PROJ-41").len() >= 2).await;
        three_more_polls(&j).await;
        let said = bot_comments(&j, "PROJ-41");
        assert!(said.len() == 2 && said[1].contains("George paused job proj-41"), "{said:?}");
        assert_eq!(j.history("PROJ-41"), ["To Do", "In Progress", "Done"]);
    });
}

#[test]
fn sub_agents_of_a_ticket_job_become_its_sub_tasks_once_and_follow_their_jobs() {
    let site = Site::new();
    let j = jira();
    let llm = ScriptedLlm::start();
    let mut ticket = NewIssue::new("PROJ-70", "split this");
    ticket.labels = vec!["george".into(), "spawner".into()];
    j.add_issue(ticket);
    for n in ["a", "b"] {
        llm.push(Reply::tool("spawn_subagent", json!({"key": n, "template": "piece", "params": {"n": n}}), 10, 2));
    }
    llm.push(Reply::tool("wait_for", json!({"keys": ["a", "b"]}), 10, 2));
    llm.push(Reply::tool("complete_step", json!({"summary": "both pieces done"}), 10, 2));
    let extra = format!(
        "llm:\n  default: {{provider: scripted, model: m}}\n  providers:\n    - {{name: scripted, api: openai, baseUrl: '{}'}}\n",
        llm.url
    );
    let mut e = site.engine("a", &j, &[("subtasks", "true")], &extra);
    e.rt().block_on(async {
        e.wait_status("proj-70", JobStatus::Completed, Duration::from_secs(30)).await;
        sub_tasks_done(&j, "PROJ-70", 2).await;
    });
    let subs = j.subtasks("PROJ-70");
    assert_eq!((subs[0].1.as_str(), subs[1].1.as_str()), ("a: piece", "b: piece"), "{subs:?}");
    let map = j.property("PROJ-70", "george.subtasks").expect("the mapping on the ticket");
    assert_eq!(map["proj-70.a"], subs[0].0);
    assert_eq!(map["proj-70.b"], subs[1].0);
    for (key, _, _) in &subs {
        assert_eq!(j.history(key), ["To Do", "In Progress", "Done"], "{key}");
    }
    // A restart reads the event log again from its cursor: nothing is created twice.
    restart_and_poll(&mut e, &j);
    assert_eq!(j.subtasks("PROJ-70").len(), 2);
    assert!(j.subtasks("PROJ-70").iter().all(|(k, _, _)| j.status(k) == "Done"));
}

#[test]
fn a_board_jobs_steps_become_sub_tasks_once_and_its_end_a_table() {
    let site = Site::new();
    let j = jira();
    let mut ticket = NewIssue::new("PROJ-80", "build and check");
    ticket.labels = vec!["george".into(), "staged".into()];
    j.add_issue(ticket);
    j.add_issue(NewIssue::new("PROJ-81", "not on the board"));
    let mut e = site.engine("a", &j, &[], "");
    e.rt().block_on(async {
        e.wait_status("proj-80", JobStatus::Completed, Duration::from_secs(30)).await;
        e.wait_status("proj-81", JobStatus::Completed, Duration::from_secs(30)).await;
        until(Duration::from_secs(20), "the steps' sub-tasks done and the table", async || {
            let subs = j.subtasks("PROJ-80");
            subs.len() == 2
                && subs.iter().all(|(_, _, status)| status == "Done")
                && bot_comments(&j, "PROJ-80").iter().any(|c| c.contains("George finished job proj-80"))
        })
        .await;
    });
    let subs = j.subtasks("PROJ-80");
    assert_eq!((subs[0].1.as_str(), subs[1].1.as_str()), ("build: Build it", "check: Check it"), "{subs:?}");
    let map = j.property("PROJ-80", "george.steps").expect("the steps' sub-tasks on the ticket");
    assert_eq!((&map["build"], &map["check"]), (&json!(subs[0].0), &json!(subs[1].0)));
    for (key, _, _) in &subs {
        assert_eq!(j.history(key), ["To Do", "In Progress", "Done"], "{key}");
    }
    // The final comment: a valid ADF table (the server checks it) of the steps and their outcomes.
    let me = j.bot_account();
    let last = j.comments("PROJ-80").into_iter().filter(|(a, _)| *a == me).map(|(_, b)| b).next_back().unwrap();
    let table = last["content"].as_array().unwrap().iter().find(|n| n["type"] == "table").expect("a table");
    let rows: Vec<String> = table["content"].as_array().unwrap().iter().map(adf_plain).collect();
    assert!(rows[0].contains("Step") && rows[0].contains("Duration"), "{rows:?}");
    assert!(rows[1].starts_with("build") && rows[1].contains("completed"), "{rows:?}");
    assert!(rows[2].starts_with("check") && rows[2].contains("completed"), "{rows:?}");
    assert!(j.subtasks("PROJ-81").is_empty(), "a job off the board has no sub-tasks");
    // Each step's output, attached to the ticket as a text file.
    let files = j.attachments("PROJ-80");
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["proj-80-build-attempt-1.log", "proj-80-check-attempt-1.log"]);
    assert!(String::from_utf8_lossy(&files[0].1).contains("built"), "{:?}", String::from_utf8_lossy(&files[0].1));
    assert!(String::from_utf8_lossy(&files[1].1).contains("checked"));
    assert!(j.attachments("PROJ-81").is_empty());
    // A restart replays nothing twice.
    restart_and_poll(&mut e, &j);
    assert_eq!(j.subtasks("PROJ-80").len(), 2);
    assert_eq!(j.attachments("PROJ-80").len(), 2);

    // A step that fails, retried: its sub-task goes back to do, and on to done; the step that held stays done.
    let mut flaky = NewIssue::new("PROJ-82", "check until it holds");
    flaky.labels = vec!["george".into(), "flaky".into()];
    j.add_issue(flaky);
    e.rt().block_on(async {
        e.wait_status("proj-82", JobStatus::Failed, Duration::from_secs(30)).await;
        sub_tasks_done(&j, "PROJ-82", 2).await;
        std::fs::write(e.dir.join("data/outputs/proj-82/fixed"), "").unwrap();
        let retry = george_core::api::RetryRequest { from_scratch: false, reason: Some("fixed".into()) };
        e.client.retry("proj-82", &retry).await.unwrap();
        e.wait_status("proj-82", JobStatus::Completed, Duration::from_secs(30)).await;
        until(Duration::from_secs(20), "the table of the retried job", async || {
            bot_comments(&j, "PROJ-82").iter().any(|c| c.contains("George finished job proj-82"))
        })
        .await;
    });
    let subs = j.subtasks("PROJ-82");
    let (build, check) = (&subs[0].0, &subs[1].0);
    assert_eq!(j.history(build), ["To Do", "In Progress", "Done"], "ran once");
    assert_eq!(j.history(check), ["To Do", "In Progress", "Done", "To Do", "In Progress", "Done"], "ran twice");
}
