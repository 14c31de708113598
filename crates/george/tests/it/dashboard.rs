//! Acceptance (issue 8): the dashboard in a real headless Chromium.
//! Signed in with a token, it shows the quickstart's jobs arrive and run to
//! completed without a reload; a job's page shows its step graph and its
//! agent's log and its steps' durations; the pause, resume, resubmit, abort,
//! retry and delete buttons steer jobs; the page fits a phone's width. Screenshots land in `target/dashboard/`.

use crate::common;

use common::browser::Browser;
use common::*;
use george_core::JobStatus;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("dashboard")
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// `document.querySelector(css)?.textContent.trim() === text`, as a script.
fn text_is(css: &str, text: &str) -> String {
    format!("const e = document.querySelector({css:?}); return !!e && e.textContent.trim() === {text:?};")
}

#[test]
fn the_dashboard_shows_jobs_live_and_steers_them() {
    let tmp = common::tempdir().unwrap();
    let m = tmp.path().join("manifests");
    write(&m, "agents/worker.yaml", AGENT);
    write(&m, "templates/hold.yaml", &template("hold", RELEASE_STEPS));
    write(
        &m,
        "triggers/yearly.yaml",
        "apiVersion: george/v1\nkind: Trigger\nmetadata: {name: yearly}\nspec:\n  type: cron\n  schedule: 0 0 1 1 *\n  template: hold\n  agent: worker\n",
    );
    let engine = Engine::start(tmp.path(), "", &["--manifests", m.to_str().unwrap()]);
    engine.rt().block_on(async {
        let b = Browser::start(1280, 900).await;
        b.goto(&engine.url).await;

        // Sign in with a token.
        b.wait_js("the sign-in form", WAIT, "return !!document.querySelector('#token-input')").await;
        b.type_into("#token-input", "not-a-valid-token-at-all").await;
        b.click("#login-button").await;
        b.wait_js("the sign-in error", WAIT, "const e = document.querySelector('#login-error'); return !!e && e.textContent.trim().length > 0;").await;
        b.js("document.querySelector('#token-input').value = '';", json!([])).await;
        b.type_into("#token-input", TOKEN).await;
        b.click("#login-button").await;
        b.wait_js("signed in", WAIT, "const e = document.querySelector('#whoami'); return !!e && e.textContent.includes('test (admin)');").await;
        b.wait_js("the live connection", WAIT, "const e = document.querySelector('#live'); return !!e && e.dataset.state === 'open';").await;
        b.wait_js("the overview", WAIT, "return !!document.querySelector('#overview [data-status-count=\"completed\"]');").await;
        assert_eq!(b.js("return document.querySelectorAll('tr[data-job-id]').length;", json!([])).await, 0);

        // A reload would lose this mark; the statuses each row shows are recorded as they change,
        // and any script error is kept.
        b.js(
            "window.__samePage = 'yes'; window.__seen = {}; window.__errors = [];
             window.addEventListener('error', e => window.__errors.push(String(e.message)));
             window.addEventListener('unhandledrejection', e => window.__errors.push(String(e.reason)));
             const record = () => document.querySelectorAll('tr[data-job-id] td[data-field=status]').forEach(td => {
               const id = td.closest('tr').dataset.jobId, s = td.textContent.trim();
               const l = (window.__seen[id] = window.__seen[id] || []);
               if (l[l.length - 1] !== s) l.push(s);
             });
             new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true});",
            json!([]),
        )
        .await;

        // The quickstart's jobs arrive while the page is open and run to completed.
        copy_dir(&repo_root().join("examples/quickstart"), &m);
        engine.client.sync().await.unwrap();
        let quickstart = ["etc-inventory", "incident-digest", "weekly-report"];
        for id in quickstart {
            engine.wait_status(id, JobStatus::Completed, WAIT).await;
        }
        b.wait_js("three completed jobs on the overview", WAIT, &text_is("[data-status-count=\"completed\"]", "3")).await;
        for id in quickstart {
            let css = format!("tr[data-job-id=\"{id}\"] td[data-field=status]");
            b.wait_js(&format!("{id} completed"), WAIT, &text_is(&css, "completed")).await;
        }
        assert_eq!(b.js("return window.__samePage;", json!([])).await, "yes", "the page was not reloaded");
        let seen = b.js("return window.__seen;", json!([])).await;
        for id in quickstart {
            assert_eq!(seen[id].as_array().unwrap().last().unwrap(), "completed", "{seen}");
        }
        eprintln!("statuses the overview showed: {seen}");
        b.screenshot(&artifacts().join("overview.png")).await;
        // Every job shows how long it took, and a reason column (a dash when there is none).
        let cells = b
            .js(
                "return [...document.querySelectorAll('tr[data-job-id]')].map(tr =>
                   [tr.querySelector('td[data-field=duration]').textContent, tr.querySelector('td[data-field=reason]').textContent]);",
                json!([]),
            )
            .await;
        let cells: Vec<(String, String)> = serde_json::from_value(cells).unwrap();
        assert!(!cells.is_empty() && cells.iter().all(|(d, r)| d.chars().any(|c| c.is_ascii_digit()) && !r.is_empty()), "{cells:?}");

        // A job's page: its step graph and its agent's log.
        b.click("a.job-link[href=\"#/jobs/etc-inventory\"]").await;
        b.wait_js("the job page", WAIT, "return !!document.querySelector('#job-detail[data-job-id=\"etc-inventory\"]');").await;
        b.wait_js("the job's status", WAIT, &text_is("#job-status", "completed")).await;
        b.wait_js("the job's duration", WAIT, "const e = document.querySelector('#job-duration'); return !!e && /[0-9]/.test(e.textContent);").await;
        let steps = b
            .wait_js(
                "four completed steps in the graph",
                WAIT,
                "const g = [...document.querySelectorAll('svg#step-graph g.step')];
                 return g.length === 4 && g.every(s => s.dataset.status === 'completed') && g.map(s => s.dataset.stepId);",
            )
            .await;
        let mut ids: Vec<String> = serde_json::from_value(steps).unwrap();
        ids.sort();
        assert_eq!(ids, ["checksum", "list", "stats", "verify"]);
        b.wait_js("the agent's log", WAIT, "const e = document.querySelector('#job-logs'); return !!e && e.textContent.includes('running step');").await;
        // Its labels link to the jobs that share them.
        b.click("#job-labels a[href=\"#/jobs?selector=kind%3Daudit\"]").await;
        let picked = "const rows = [...document.querySelectorAll('#jobs-table tr[data-job-id]')].map((r) => r.dataset.jobId);
                      const f = document.querySelector('#filter-selector');
                      return !!f && f.value === 'kind=audit' && rows.length === 1 && rows[0] === 'etc-inventory';";
        b.wait_js("the jobs labelled kind=audit", WAIT, picked).await;
        b.js("history.back();", json!([])).await;
        b.wait_js("the job page again", WAIT, "return !!document.querySelector('svg#step-graph g.step[data-step-id=\"stats\"]');").await;
        // One step's own output, from the graph: its run, and nothing of the steps beside it.
        b.click("svg#step-graph g.step[data-step-id=\"stats\"]").await;
        let out = b
            .wait_js(
                "the step's output",
                WAIT,
                "const e = document.querySelector('#step-log .step-log[data-step-id=\"stats\"] pre'); return !!e && e.textContent;",
            )
            .await;
        let out = out.as_str().unwrap();
        assert!(out.contains("exit code 0") && out.contains("files=") && !out.contains("sha256sum"), "{out}");
        b.screenshot(&artifacts().join("job.png")).await;

        // Pause and resume a running job with the buttons.
        engine
            .client
            .submit(&serde_json::from_value(json!({"template": "hold", "id": "hold"})).unwrap())
            .await
            .unwrap();
        b.js("location.hash = '#/jobs/hold';", json!([])).await;
        b.wait_js("the running job", WAIT, &text_is("#job-status", "in_progress")).await;
        b.click("#btn-pause").await;
        b.wait_js("desired paused", WAIT, &text_is("#job-desired", "paused")).await;
        b.wait_js("status paused", WAIT, &text_is("#job-status", "paused")).await;
        b.click("#btn-resume").await;
        b.wait_js("desired active", WAIT, &text_is("#job-desired", "active")).await;
        b.wait_js("running again", WAIT, &text_is("#job-status", "in_progress")).await;
        let job = engine.job("hold").await;
        assert_eq!(job.attempt, 2, "pausing stopped the first agent; resuming started another");
        std::fs::write(tmp.path().join("data/outputs/hold/release"), "").unwrap();
        b.wait_js("completed, live", WAIT, &text_is("#job-status", "completed")).await;
        let graph = "const g = [...document.querySelectorAll('svg#step-graph g.step')];
                     return g.length === 2 && g.every(s => s.dataset.status === 'completed');";
        b.wait_js("both steps completed", WAIT, graph).await;
        let desired: Vec<_> = engine
            .client
            .events(0, 5000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "job.desired" && e.job_id.as_deref() == Some("hold"))
            .map(|e| (e.actor, e.data["to"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            desired,
            [("operator:test".to_string(), "paused".to_string()), ("operator:test".to_string(), "active".to_string())]
        );
        assert_eq!(b.js("return window.__samePage;", json!([])).await, "yes", "still the same page");
        let durations = "const d = [...document.querySelectorAll('#job-steps td[data-duration-ms]')];
                         return d.length === 2 && d.every(e => e.dataset.durationMs !== '' && /[0-9]/.test(e.textContent));";
        b.wait_js("each step's duration", WAIT, durations).await;

        // Resubmit, abort, retry and delete with the buttons.
        b.click("#btn-resubmit").await;
        let copy = b
            .wait_js(
                "the resubmitted job's page",
                WAIT,
                "const e = document.querySelector('#job-detail'); return !!e && e.dataset.jobId !== 'hold' && e.dataset.jobId;",
            )
            .await;
        let copy = copy.as_str().unwrap().to_string();
        assert_eq!(engine.job(&copy).await.origin.reference.as_deref(), Some("resubmit of hold"));
        b.wait_js("the copy running", WAIT, &text_is("#job-status", "in_progress")).await;
        b.click("#btn-abort").await;
        b.wait_js("abort armed", WAIT, &text_is("#btn-abort", "Really abort?")).await;
        b.click("#btn-abort").await;
        b.wait_js("the copy aborted", WAIT, &text_is("#job-status", "aborted")).await;
        b.click("#btn-retry").await;
        b.wait_js("the copy running again", WAIT, &text_is("#job-status", "in_progress")).await;
        assert_eq!(engine.job(&copy).await.attempt, 2, "a retry is a new attempt");
        engine.client.act(&copy, "abort", None).await.unwrap();
        b.wait_js("the copy aborted again", WAIT, &text_is("#job-status", "aborted")).await;
        b.click("#btn-delete").await;
        b.wait_js("delete armed", WAIT, &text_is("#btn-delete", "Really delete?")).await;
        b.click("#btn-delete").await;
        b.wait_js("back on the jobs list", WAIT, "return location.hash === '#/jobs';").await;
        assert_eq!(engine.client.job(&copy).await.unwrap_err().status(), Some(404), "deleted");

        // The other views: registry and agents, budgets with a burn-down chart, triggers.
        for (hash, hook) in [
            ("#/agents", "#registry-table tr[data-agent-spec=\"auditor\"]"),
            ("#/agents", "#agents-table"),
            ("#/budgets", "#budgets svg.burndown"),
            ("#/triggers", "#triggers-table"),
            ("#/jobs?status=completed", "#jobs-table tr[data-job-id=\"hold\"]"),
        ] {
            b.js(&format!("location.hash = {hash:?};"), json!([])).await;
            b.wait_js(&format!("{hook} on {hash}"), WAIT, &format!("return !!document.querySelector({hook:?});")).await;
            let name: String = hash[2..].chars().take_while(char::is_ascii_alphabetic).collect();
            b.screenshot(&artifacts().join(format!("{name}.png"))).await;
        }
        // Run a trigger now, from its row.
        b.js("location.hash = '#/triggers';", json!([])).await;
        b.wait_js("the trigger's button", WAIT, "return !!document.querySelector('button[data-trigger-fire=\"yearly\"]');").await;
        b.click("button[data-trigger-fire=\"yearly\"]").await;
        let said = b
            .wait_js(
                "the fired trigger's job",
                WAIT,
                "const t = document.querySelector('#flash')?.textContent ?? ''; return t.startsWith('Trigger yearly fired: job ') && t;",
            )
            .await;
        let job = said.as_str().unwrap().trim_start_matches("Trigger yearly fired: job ").trim_end_matches('.').to_string();
        assert_eq!(engine.job(&job).await.origin.source, "trigger:yearly", "{said}");
        // Suspend it from its row; its page shows who did and its history, and resumes it.
        b.wait_js("the Suspend button", WAIT, "return !!document.querySelector('button[data-trigger-suspend=\"yearly\"]');").await;
        b.click("button[data-trigger-suspend=\"yearly\"]").await;
        b.wait_js(
            "the suspended row",
            WAIT,
            "const r = document.querySelector('tr[data-trigger=\"yearly\"][data-suspended=\"true\"]'); return !!r && r.querySelector('td[data-field=\"next_fire\"]').textContent === '—';",
        )
        .await;
        let t = engine.client.get_json("/api/v1/triggers/yearly").await.unwrap();
        assert_eq!(t["suspended"]["reason"], "from the dashboard", "{t}");
        b.click("tr[data-trigger=\"yearly\"] td.trigger-name a").await;
        let history = "const kinds = [...document.querySelectorAll('#trigger-history li')].map((li) => li.dataset.kind);
                       return kinds.join(',') === 'trigger.suspended,trigger.fired' && kinds;";
        b.wait_js("the trigger's history", WAIT, history).await;
        let linked = format!("return !!document.querySelector('#trigger-history a[href=\"#/jobs/{job}\"]');");
        b.wait_js("the fired job, linked", WAIT, &linked).await;
        b.wait_js("the suspension", WAIT, "return !!document.querySelector('[data-field=\"state\"]')?.textContent.startsWith('Suspended by operator:');").await;
        b.screenshot(&artifacts().join("trigger.png")).await;
        b.click("button[data-trigger-resume=\"yearly\"]").await;
        let resumed = "const kinds = [...document.querySelectorAll('#trigger-history li')].map((li) => li.dataset.kind);
                       return kinds[0] === 'trigger.resumed' && !!document.querySelector('[data-field=\"state\"]')?.textContent.startsWith('active');";
        b.wait_js("resumed", WAIT, resumed).await;
        assert_eq!(b.js("return window.__errors;", json!([])).await, json!([]), "no script errors");

        // A job that fails, then a revision of the manifests that cannot be applied: the overview says so.
        let doomed = "    - id: fail\n      description: fails\n      run: exit 1\n";
        write(&m, "templates/doomed.yaml", &template("doomed", doomed).replace("maxAttempts: 4", "maxAttempts: 1"));
        write(&m, "jobs/doomed.yaml", &common::job("doomed", "doomed"));
        b.js("location.hash = '#/';", json!([])).await;
        let failed = "const e = document.querySelector('li[data-alert=\"failed-jobs\"] a[href=\"#/jobs?status=failed\"]');
                      return !!e && e.textContent === '1 failed job';";
        b.wait_js("the failed job on the overview", WAIT, failed).await;

        write(&m, "jobs/broken.yaml", &common::job("broken", "no-such-template"));
        b.js("location.hash = '#/';", json!([])).await;
        let alert = "const e = document.querySelector('li[data-alert=\"rejected-source\"][data-source=\"folder\"]');
                     return !!e && e.textContent.includes('no-such-template');";
        b.wait_js("the rejected revision on the overview", WAIT, alert).await;
        b.screenshot(&artifacts().join("overview-alerts.png")).await;

        // On a phone: nothing wider than the screen.
        b.resize(390, 844).await;
        b.js("location.hash = '#/';", json!([])).await;
        b.wait_js("the overview", WAIT, &text_is("[data-status-count=\"completed\"]", "4")).await;
        let fits = b.js("return document.documentElement.scrollWidth <= window.innerWidth + 1;", json!([])).await;
        assert_eq!(fits, true, "the overview fits a phone's width");
        b.screenshot(&artifacts().join("overview-phone.png")).await;
        b.quit().await;
    });
}
