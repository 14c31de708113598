//! Issue 18 (in part): the CLI as a user meets it. Contexts (kubectl's
//! `set-context`/`use-context`) reach an engine without flags; the hint
//! `george up` prints works when copied; a reader that closes the pipe
//! early (`| head`) ends a command quietly with success.

use crate::common;

use common::*;
use george_core::JobStatus;
use std::io::{BufRead, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `george ARGS` in `dir` with the client configuration `config`, and no
/// server or token from the environment.
fn george(dir: &Path, config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(george_bin())
        .args(args)
        .env("GEORGE_CLIENT_CONFIG", config)
        .env_remove("GEORGE_SERVER")
        .env_remove("GEORGE_TOKEN")
        .env_remove("GEORGE_TOKEN_FILE")
        .env_remove("GEORGE_CONTEXT")
        .env_remove("GEORGE_DATA_DIR")
        .env_remove("COLUMNS")
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("panicked"), "{args:?} panicked: {text}");
    (out.status.success(), text)
}

/// A folder of manifests under `root`: one job `id` whose one step runs `run`.
fn folder(root: &Path, id: &str, run: &str) -> std::path::PathBuf {
    let m = root.join("manifests");
    let agent = "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: a}\nspec:\n  capabilities: [shell]\n";
    write(&m, "agents/a.yaml", agent);
    write(&m, "templates/t.yaml", &template("t", &format!("    - id: s\n      description: s\n      run: '{run}'\n")));
    write(&m, "jobs/j.yaml", &job(id, "t"));
    m
}

#[test]
fn contexts_reach_an_engine_without_flags_and_never_send_its_token_elsewhere() {
    let tmp = tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let m = folder(&root, "context-job", "true");
    let engine = Engine::start(&root, "", &["--manifests", m.to_str().unwrap()]);
    engine.rt().block_on(engine.wait_status("context-job", JobStatus::Completed, Duration::from_secs(30)));
    let work = root.join("elsewhere");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("token"), format!("{TOKEN}\n")).unwrap();
    let config = root.join("client/config.yaml");

    let (ok, text) = george(&work, &config, &["config", "get-contexts"]);
    assert!(ok && text.contains("No contexts."), "{text}");
    // The token file is given relative to where the command runs, and kept absolute.
    let (ok, text) =
        george(&work, &config, &["config", "set-context", "here", "--server", &engine.url, "--token-file", "token"]);
    assert!(ok && text.contains("context here set") && text.contains("(current)"), "{text}");
    let saved = std::fs::read_to_string(&config).unwrap();
    assert!(
        saved.contains("currentContext: here") && saved.contains(&work.join("token").display().to_string()),
        "{saved}"
    );

    // From any directory, no flag: the current context.
    let (ok, text) = george(&root, &config, &["jobs", "ls"]);
    assert!(ok && text.contains("context-job"), "{text}");
    // `-o name` for scripts, `--no-headers` for `awk`.
    let (ok, text) = george(&root, &config, &["jobs", "ls", "-o", "name"]);
    assert!(ok && text.trim() == "job/context-job", "{text}");
    let (ok, text) = george(&root, &config, &["jobs", "ls", "--no-headers"]);
    assert!(ok && text.contains("context-job") && !text.contains("STATUS"), "{text}");
    let (ok, text) = george(&root, &config, &["jobs", "ls", "--sort-by", "updated", "-o", "name"]);
    assert!(ok && text.trim() == "job/context-job", "{text}");
    let (ok, text) = george(&root, &config, &["jobs", "ls", "-o", "wide"]);
    assert!(ok && text.contains("STATUS") && text.contains("context-job"), "{text}");
    // An empty list says so; an outline has no bare headings.
    let (ok, text) = george(&root, &config, &["jobs", "ls", "--status", "blocked"]);
    assert!(ok && text.trim() == "No jobs found.", "{text}");
    // `events` shows the newest (oldest first among them), unless --since says where to start.
    let seqs = |args: &[&str]| -> Vec<i64> {
        let (ok, text) = george(&root, &config, args);
        assert!(ok, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v.as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect()
    };
    let all = seqs(&["events", "--since", "0", "--limit", "5000", "-o", "json"]);
    assert!(all.len() > 3, "{all:?}");
    assert_eq!(seqs(&["events", "--limit", "3", "-o", "json"]), all[all.len() - 3..].to_vec(), "the newest three");
    assert_eq!(seqs(&["events", "--since", "0", "--limit", "3", "-o", "json"]), all[..3].to_vec(), "the first three");
    let (ok, text) = george(&root, &config, &["status"]);
    assert!(ok && text.contains("queue: none") && !text.lines().any(|l| l.trim_end() == "queue:"), "{text}");

    // A second context, unreachable; the current one stays until switched.
    let dead = ["config", "set-context", "dead", "--server", "http://127.0.0.1:9", "--token-file", "token"];
    let (ok, text) = george(&work, &config, &dead);
    assert!(ok && !text.contains("(current)"), "{text}");
    let (ok, text) = george(&work, &config, &["config", "get-contexts"]);
    assert!(ok, "{text}");
    let current: Vec<&str> = text.lines().filter(|l| l.contains('*')).collect();
    assert!(current.len() == 1 && current[0].contains("here"), "{text}");
    let (ok, text) = george(&work, &config, &["--engine", "dead", "jobs", "ls"]);
    assert!(!ok && text.contains("cannot reach the engine at http://127.0.0.1:9"), "{text}");
    let (ok, text) = george(&work, &config, &["config", "use-context", "dead"]);
    assert!(ok && text.contains("now using context dead"), "{text}");
    assert_eq!(george(&work, &config, &["config", "current-context"]).1.trim(), "dead");
    let (ok, _) = george(&work, &config, &["jobs", "ls"]);
    assert!(!ok, "the current context is the dead one now");
    george(&work, &config, &["config", "use-context", "here"]);

    // Bad input: a context that does not exist, a bad name, a broken file —
    // each named, and the file unchanged.
    let before = std::fs::read_to_string(&config).unwrap();
    let (ok, text) = george(&work, &config, &["config", "use-context", "nope"]);
    assert!(!ok && text.contains("no context `nope`") && text.contains("known: here, dead"), "{text}");
    let (ok, text) = george(&work, &config, &["config", "set-context", "a/b"]);
    assert!(!ok && text.contains("invalid context name"), "{text}");
    let (ok, text) = george(&work, &config, &["config", "set-context", "x", "--server", "127.0.0.1:8080"]);
    assert!(!ok && text.contains("expected an http:// or https:// URL"), "{text}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before, "refused changes leave the file as it was");

    // `--server` alone bypasses the current context: its token goes to no other engine.
    let (ok, text) = george(&root, &config, &["--server", &engine.url, "jobs", "ls"]);
    assert!(!ok && text.contains("no operator token"), "{text}");
    let (ok, text) = george(&root, &config, &["--server", &engine.url, "--engine", "here", "jobs", "ls"]);
    assert!(ok && text.contains("context-job"), "a named context lends its token: {text}");

    std::fs::write(&config, "currentContext: here\ncontexts: [{name: here, sever: x}]\n").unwrap();
    let (ok, text) = george(&root, &config, &["jobs", "ls"]);
    assert!(!ok && text.contains(&config.display().to_string()) && text.contains("sever"), "{text}");
}

/// Runs `george ARGS`, reads `bytes` of its output and closes the pipe.
fn read_then_close(args: &[&str], bytes: usize) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(george_bin())
        .args(args)
        .env("GEORGE_CLIENT_CONFIG", "/nonexistent/george.yaml")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; bytes];
    out.read_exact(&mut buf).unwrap();
    drop(out);
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status, err)
}

#[test]
fn a_reader_closing_the_pipe_early_ends_a_command_quietly() {
    let (status, err) = read_then_close(&["completions", "bash"], 64);
    assert!(status.success() && err.is_empty(), "completions | head: {status} {err}");

    // A followed log much larger than a pipe holds.
    let tmp = tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let m = folder(&root, "chatty", "seq 1 400000; sleep 60");
    let engine = Engine::start(&root, "", &["--manifests", m.to_str().unwrap()]);
    engine.rt().block_on(eventually(Duration::from_secs(30), "the log to grow", async || {
        agent_log(&engine, "chatty-1").await.filter(|l| l.len() > 1 << 20).map(|_| ())
    }));
    let (status, err) =
        read_then_close(&["--server", &engine.url, "--token", TOKEN, "jobs", "logs", "chatty", "-f"], 4096);
    assert!(status.success() && err.is_empty(), "jobs logs -f | head: {status} {err}");
}

#[test]
fn the_hint_george_up_prints_works_when_copied() {
    let tmp = tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let m = folder(&root, "hinted", "true");
    let mut up = Command::new(george_bin())
        .args(["up", m.to_str().unwrap(), "--listen", "127.0.0.1:0", "--data-dir", "state"])
        .current_dir(&root)
        .env_remove("GEORGE_SERVER")
        .env_remove("GEORGE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(up.stdout.take().unwrap()).lines();
    let hint = loop {
        let line = lines.next().expect("george up ended before its hint").unwrap();
        if let Some(rest) = line.strip_prefix("still serving: try `") {
            break rest.split('`').next().unwrap().to_string();
        }
    };
    let words: Vec<&str> = hint.split_whitespace().collect();
    assert_eq!(words[0], "george", "{hint}");
    // Pasted in another directory, with no George variables set.
    let elsewhere = root.join("other");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let (ok, text) = george(&elsewhere, &root.join("no-config.yaml"), &words[1..]);
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(up.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = up.wait();
    assert!(ok && text.contains("hinted"), "`{hint}`: {text}");
}

/// The lines `child` prints, as they come (a thread reads them until the pipe closes).
fn lines_of(child: &mut std::process::Child) -> (std::sync::mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (rx, reader)
}

/// `george ARGS` against `engine`, its standard output piped.
fn spawn_cli(engine: &Engine, root: &Path, args: &[&str]) -> std::process::Child {
    Command::new(george_bin())
        .args(["--server", &engine.url, "--token", TOKEN])
        .args(args)
        .env("GEORGE_CLIENT_CONFIG", root.join("none.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `agents ls --watch` and `events --watch`: the list, then each change as it happens.
#[test]
fn agents_and_events_are_watched_after_their_list() {
    let tmp = tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let m = folder(&root, "first", "true");
    let engine = Engine::start(&root, "", &["--manifests", m.to_str().unwrap()]);
    engine.rt().block_on(engine.wait_status("first", JobStatus::Completed, Duration::from_secs(30)));
    let mut agents = spawn_cli(&engine, &root, &["agents", "ls", "--all", "--watch", "-o", "name"]);
    let mut events = spawn_cli(&engine, &root, &["events", "--limit", "1", "--watch", "-o", "json"]);
    let (agent_lines, agent_reader) = lines_of(&mut agents);
    let (event_lines, event_reader) = lines_of(&mut events);
    let within = Duration::from_secs(30);
    assert_eq!(agent_lines.recv_timeout(within).unwrap(), "agent/first-1", "the list first");
    // `-o json` lists as one array; its end is the line `]`.
    let mut listed = String::new();
    while listed.trim_end() != "]" && !listed.ends_with("]\n") {
        listed.push_str(&event_lines.recv_timeout(within).unwrap());
        listed.push('\n');
    }
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    let last = listed[0]["seq"].as_i64().unwrap();
    let submitted = engine.cli(&["jobs", "submit", "t", "--id", "second", "--wait"]);
    assert!(submitted.status.success(), "{}", String::from_utf8_lossy(&submitted.stderr));
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("agent/second-1") || seen.len() < 3 {
        seen.push(agent_lines.recv_timeout(within).expect("a line from agents ls --watch"));
    }
    assert!(seen.iter().all(|l| l == "agent/second-1"), "{seen:?}");
    // Every event after the listed one, in order, each once, up to the job's end.
    let mut seqs = vec![last];
    loop {
        let e: serde_json::Value = serde_json::from_str(&event_lines.recv_timeout(within).unwrap()).unwrap();
        seqs.push(e["seq"].as_i64().unwrap());
        if e["kind"] == "job.status" && e["data"]["to"] == "completed" && e["job_id"] == "second" {
            break;
        }
    }
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    for mut child in [agents, events] {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop((agent_lines, event_lines));
    agent_reader.join().unwrap();
    event_reader.join().unwrap();
}

#[test]
fn jobs_ls_watch_prints_each_change_after_the_list() {
    let tmp = tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let m = folder(&root, "first", "true");
    let engine = Engine::start(&root, "", &["--manifests", m.to_str().unwrap()]);
    engine.rt().block_on(engine.wait_status("first", JobStatus::Completed, Duration::from_secs(30)));
    let mut watch = spawn_cli(&engine, &root, &["jobs", "ls", "--watch", "-o", "name"]);
    let (rx, reader) = lines_of(&mut watch);
    let next = || rx.recv_timeout(Duration::from_secs(30)).expect("a line from jobs ls --watch");
    assert_eq!(next(), "job/first", "the list first");
    // A job submitted now is printed as it is created and as it changes, until it completes.
    let submitted = engine.cli(&["jobs", "submit", "t", "--id", "second", "--wait"]);
    assert!(submitted.status.success(), "{}", String::from_utf8_lossy(&submitted.stderr));
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(next());
    }
    assert!(seen.iter().all(|l| l == "job/second"), "{seen:?}");
    let _ = watch.kill();
    let _ = watch.wait();
    drop(rx);
    reader.join().unwrap();
}

/// Labels, as kubectl has them: a Job manifest's `metadata.labels` and
/// `jobs submit --label`; `jobs ls -l` picks by a selector (the engine does
/// the picking, over every page), `-o wide` shows them; a bad label or
/// selector is refused naming it, by the CLI and by the API. Tables fit
/// the terminal's width.
#[test]
fn jobs_are_labelled_and_listed_by_selector() {
    let tmp = tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let m = folder(&root, "nightly", "true");
    let labelled = job("nightly", "t")
        .replace("metadata: {name: nightly}", "metadata:\n  name: nightly\n  labels: {team: ops, schedule: nightly}");
    write(&m, "jobs/j.yaml", &labelled);
    let engine = Engine::start(&root, "", &["--manifests", m.to_str().unwrap()]);
    engine.rt().block_on(engine.wait_status("nightly", JobStatus::Completed, Duration::from_secs(30)));
    let run = |args: &[&str]| {
        let out = engine.cli(args);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    for (id, labels) in [("adhoc", vec!["team=ops", "app.example.com/tier=batch"]), ("other", vec!["team=dev"])] {
        let mut args = vec!["jobs", "submit", "t", "--id", id];
        for l in &labels {
            args.extend(["--label", l]);
        }
        let (ok, text) = run(&args);
        assert!(ok, "{text}");
    }
    let names = |selector: &str| run(&["jobs", "ls", "-l", selector, "-o", "name"]);
    assert_eq!(names("team=ops"), (true, "job/nightly\njob/adhoc\n".into()));
    assert_eq!(names("team=ops,!schedule"), (true, "job/adhoc\n".into()));
    assert_eq!(names("app.example.com/tier"), (true, "job/adhoc\n".into()));
    assert_eq!(names("team!=ops"), (true, "job/other\n".into()));
    assert_eq!(run(&["jobs", "ls", "-l", "team=nobody"]), (true, "No jobs found.\n".into()));
    let (ok, wide) = run(&["jobs", "ls", "-l", "team=ops", "-o", "wide"]);
    assert!(ok && wide.contains("LABELS") && wide.contains("schedule=nightly,team=ops"), "{wide}");
    let (ok, json) = run(&["jobs", "get", "adhoc", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(ok && v["labels"] == serde_json::json!({"team": "ops", "app.example.com/tier": "batch"}), "{json}");
    // A table fits the terminal (`COLUMNS` here): one line a row, `…` where a cell is cut; `-o wide` cuts nothing.
    let narrow = |extra: &[&str]| {
        let out = Command::new(george_bin())
            .args(["--server", &engine.url, "--token", TOKEN, "jobs", "ls"])
            .args(extra)
            .env("COLUMNS", "44")
            .env("GEORGE_CLIENT_CONFIG", root.join("none.yaml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let fitted = narrow(&[]);
    assert!(fitted.lines().all(|l| l.chars().count() <= 44) && fitted.contains('…'), "{fitted}");
    assert_eq!(fitted.lines().count(), 1 + 3 + 3, "a header, three rows, three borders: {fitted}");
    let whole = narrow(&["-o", "wide"]);
    assert!(whole.lines().any(|l| l.chars().count() > 44) && !whole.contains('…'), "{whole}");
    // Refused, naming what is wrong.
    let (ok, text) = run(&["jobs", "ls", "-l", "team=o ps"]);
    assert!(!ok && text.contains("-l/--selector") && text.contains("value `o ps`"), "{text}");
    let (ok, text) = run(&["jobs", "submit", "t", "--label", "bad key=x"]);
    assert!(!ok && text.contains("--label bad key=x") && text.contains("label key `bad key`"), "{text}");
    engine.rt().block_on(async {
        let q = [("selector".to_string(), "a,,b".to_string())];
        let err = engine.client.get_json_query("/api/v1/jobs", &q).await.unwrap_err().to_string();
        assert!(err.contains("selector") && err.contains("empty requirement"), "{err}");
        let mut bad = george_core::api::SubmitJob::named("bad", "t");
        bad.labels.insert("team".into(), "-ops".into());
        let err = engine.client.submit(&bad).await.unwrap_err().to_string();
        assert!(err.contains("labels.team") && err.contains("value `-ops`"), "{err}");
        assert!(engine.client.job("bad").await.is_err(), "nothing is stored");
    });
}
