//! The tools an LLM may call, each granted by one capability of the
//! AgentSpec (or by none: talking to people and ending the step). A tool
//! that is not granted is never offered and never run.

use crate::conversation::ToolDef;
use crate::step::{run_command, CommandResult};
use serde_json::{json, Value};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Output of a tool kept for the model.
const MAX_TOOL_OUTPUT: usize = 16 << 10;

/// The capability a tool needs (`None`: every agent has it).
pub fn capability_of(tool: &str) -> Option<&'static str> {
    match tool {
        "run_command" => Some("shell"),
        "read_file" | "write_file" | "list_files" | "search_files" | "edit_file" => Some("files"),
        "git_diff" | "git_commit" | "git_push" => Some("git"),
        "http_get" => Some("http"),
        "spawn_subagent" | "wait_for" => Some("spawn"),
        _ => None,
    }
}

/// Every tool, with its schema.
pub fn all() -> Vec<ToolDef> {
    let s = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required});
    vec![
        ToolDef {
            name: "run_command",
            description: "Run a shell command in the workspace; returns its exit code and output.",
            schema: s(json!({"command": {"type": "string"}}), &["command"]),
        },
        ToolDef {
            name: "read_file",
            description: "Read a text file (a path in the workspace or the job's output directory).",
            schema: s(json!({"path": {"type": "string"}}), &["path"]),
        },
        ToolDef {
            name: "write_file",
            description: "Write a text file (a path in the workspace or the job's output directory).",
            schema: s(json!({"path": {"type": "string"}, "content": {"type": "string"}}), &["path", "content"]),
        },
        ToolDef {
            name: "list_files",
            description: "List a directory (in the workspace or the job's output directory).",
            schema: s(json!({"path": {"type": "string"}}), &[]),
        },
        ToolDef {
            name: "search_files",
            description: "Find lines containing a text in the files under a directory (default: the workspace).",
            schema: s(json!({"text": {"type": "string"}, "path": {"type": "string"}}), &["text"]),
        },
        ToolDef {
            name: "edit_file",
            description: "Replace one exact, unique piece of text in a file with another.",
            schema: s(
                json!({"path": {"type": "string"}, "old": {"type": "string"}, "new": {"type": "string"}}),
                &["path", "old", "new"],
            ),
        },
        ToolDef {
            name: "git_diff",
            description: "Show the repository's status and the uncommitted changes.",
            schema: s(json!({}), &[]),
        },
        ToolDef {
            name: "git_commit",
            description: "Commit all changes in the repository with a message.",
            schema: s(json!({"message": {"type": "string"}}), &["message"]),
        },
        ToolDef {
            name: "git_push",
            description: "Push the job's branch to the remote (never forced; other branches are off limits).",
            schema: s(json!({}), &[]),
        },
        ToolDef {
            name: "http_get",
            description: "Fetch a URL with HTTP GET; returns the status and the start of the body.",
            schema: s(json!({"url": {"type": "string"}}), &["url"]),
        },
        ToolDef {
            name: "spawn_subagent",
            description: "Start a sub-agent: a child job of a template, with parameters, or a task in words for an \
                          LLM template. Give each child a key of your choosing; asking again with the same key \
                          finds the same child.",
            schema: s(
                json!({"key": {"type": "string"}, "template": {"type": "string"}, "params": {"type": "object"},
                       "task": {"type": "string"}, "tokens": {"type": "integer", "minimum": 1}}),
                &["key", "template"],
            ),
        },
        ToolDef {
            name: "wait_for",
            description: "Wait until the children with these keys have ended; returns their results. While they \
                          run, this job waits without an agent and resumes when they are done.",
            schema: s(json!({"keys": {"type": "array", "items": {"type": "string"}}}), &["keys"]),
        },
        ToolDef {
            name: "comment",
            description: "Write a comment on the job for the people following it.",
            schema: s(json!({"text": {"type": "string"}}), &["text"]),
        },
        ToolDef {
            name: "ask_human",
            description: "Ask a person a question and wait for the answer (the job pauses until someone replies).",
            schema: s(json!({"question": {"type": "string"}}), &["question"]),
        },
        ToolDef {
            name: "complete_step",
            description: "Say the step is done, with a short summary of what was done.",
            schema: s(json!({"summary": {"type": "string"}}), &["summary"]),
        },
        ToolDef {
            name: "fail_step",
            description: "Say the step cannot be done, and why.",
            schema: s(json!({"reason": {"type": "string"}}), &["reason"]),
        },
        ToolDef {
            name: "report_missing_capability",
            description: "Say the step needs a capability you do not have (do not work around it).",
            schema: s(json!({"capability": {"type": "string"}, "why": {"type": "string"}}), &["capability"]),
        },
    ]
}

/// The tools an agent with `capabilities` may use.
pub fn granted(capabilities: &[String]) -> Vec<ToolDef> {
    all().into_iter().filter(|t| capability_of(t.name).is_none_or(|c| capabilities.iter().any(|x| x == c))).collect()
}

/// A path the file tools may touch: relative to the workspace, or inside the
/// job's output directory; never outside them.
fn allowed_path(raw: &str) -> Result<PathBuf, String> {
    let p = Path::new(raw);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("`{raw}`: `..` is not allowed"));
    }
    if p.is_absolute() {
        let out = std::env::var("GEORGE_OUTPUT_DIR").map_err(|_| format!("`{raw}`: absolute paths are not allowed"))?;
        if !p.starts_with(&out) {
            return Err(format!("`{raw}` is outside the workspace and the output directory"));
        }
    }
    let roots: Vec<PathBuf> = [std::env::current_dir().ok(), std::env::var_os("GEORGE_OUTPUT_DIR").map(PathBuf::from)]
        .into_iter()
        .flatten()
        .collect();
    resolves_inside(raw, p, &roots)?;
    Ok(p.to_path_buf())
}

/// Refuses a path that symbolic links lead out of `roots`: the deepest part
/// of it that exists, resolved, must lie inside one of them.
fn resolves_inside(raw: &str, p: &Path, roots: &[PathBuf]) -> Result<(), String> {
    let Some(base) = roots.first() else { return Ok(()) };
    let mut probe = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    while std::fs::symlink_metadata(&probe).is_err() {
        if !probe.pop() {
            return Ok(());
        }
    }
    let real = probe.canonicalize().map_err(|e| format!("`{raw}`: {e}"))?;
    if roots.iter().filter_map(|r| r.canonicalize().ok()).any(|r| real.starts_with(r)) {
        Ok(())
    } else {
        Err(format!("`{raw}` leads outside the workspace and the output directory (through a symbolic link)"))
    }
}

fn cap(mut s: String) -> String {
    if s.len() > MAX_TOOL_OUTPUT {
        let mut end = MAX_TOOL_OUTPUT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("\n[output cut]");
    }
    s
}

/// Lines containing `needle` in the files under `root` (`.git` skipped), capped.
fn search(root: &Path, needle: &str) -> String {
    let mut hits = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    let mut files = 0;
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let Ok(kind) = e.file_type() else { continue };
            if kind.is_dir() && e.file_name() != ".git" {
                dirs.push(path);
            } else if kind.is_file() && files < 10_000 {
                files += 1;
                let Ok(text) = std::fs::read_to_string(&path) else { continue };
                for (n, line) in text.lines().enumerate().filter(|(_, l)| l.contains(needle)) {
                    hits.push(format!(
                        "{}:{}: {}",
                        path.strip_prefix(root).unwrap_or(&path).display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    if hits.is_empty() {
        format!("no line contains `{needle}`")
    } else {
        cap(hits.join("\n"))
    }
}

/// Replaces the one occurrence of `old` in the file at `p` with `new`.
fn edit(p: &Path, old: &str, new: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    match text.matches(old).count() {
        0 => Err(format!("{}: the text to replace is not there", p.display())),
        1 if !old.is_empty() => {
            std::fs::write(p, text.replacen(old, new, 1)).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok(format!("edited {}", p.display()))
        }
        n => Err(format!("{}: the text to replace occurs {n} times; give more of it so it is unique", p.display())),
    }
}

/// Runs one granted tool that acts on the world; returns its result text.
/// Git tools act on the job's repository, when it has one.
pub async fn run(name: &str, args: &Value, stop: &CancellationToken, repo: Option<&crate::git::Repo>) -> String {
    let arg = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    match name {
        "search_files" => {
            let raw = args.get("path").and_then(Value::as_str).unwrap_or(".");
            match allowed_path(raw) {
                Ok(p) => search(&p, &arg("text")),
                Err(e) => format!("error: {e}"),
            }
        }
        "edit_file" => match allowed_path(&arg("path")).and_then(|p| edit(&p, &arg("old"), &arg("new"))) {
            Ok(done) => done,
            Err(e) => format!("error: {e}"),
        },
        "git_diff" | "git_commit" | "git_push" => {
            let Some(repo) = repo else { return "error: this job has no repository (no repo_url)".into() };
            let result = match name {
                "git_diff" => match (repo.git(&["status", "--short"]).await, repo.git(&["diff", "HEAD"]).await) {
                    (Ok(status), Ok(diff)) => Ok(format!("{status}\n\n{diff}")),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                },
                "git_commit" => repo.commit(&arg("message")).await.map(|sha| format!("committed {sha}")),
                _ => repo.push().await.map(|()| format!("pushed `{}`", repo.branch)),
            };
            match result {
                Ok(text) => cap(text),
                Err(e) => format!("error: {e}"),
            }
        }
        "run_command" => match run_command(&arg("command"), Duration::from_secs(120), stop, MAX_TOOL_OUTPUT).await {
            CommandResult::Exited { code, output, .. } => format!("exit code {code}\n{output}"),
            CommandResult::TimedOut { output, .. } => format!("timed out after 120s\n{output}"),
            CommandResult::Stopped => "stopped".into(),
            CommandResult::SpawnFailed(e) => format!("could not start: {e}"),
        },
        "read_file" => match allowed_path(&arg("path"))
            .and_then(|p| std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display())))
        {
            Ok(text) => cap(text),
            Err(e) => format!("error: {e}"),
        },
        "write_file" => match allowed_path(&arg("path")) {
            Ok(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    let _ = std::fs::create_dir_all(dir);
                }
                match std::fs::write(&p, arg("content")) {
                    Ok(()) => format!("wrote {} bytes to {}", arg("content").len(), p.display()),
                    Err(e) => format!("error: {}: {e}", p.display()),
                }
            }
            Err(e) => format!("error: {e}"),
        },
        "list_files" => {
            let raw = args.get("path").and_then(Value::as_str).unwrap_or(".");
            match allowed_path(raw).and_then(|p| std::fs::read_dir(&p).map_err(|e| format!("{}: {e}", p.display()))) {
                Ok(entries) => {
                    let mut names: Vec<String> =
                        entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
                    names.sort();
                    cap(names.join("\n"))
                }
                Err(e) => format!("error: {e}"),
            }
        }
        "http_get" => match reqwest::Client::new().get(arg("url")).timeout(Duration::from_secs(30)).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                format!("status {status}\n{}", cap(r.text().await.unwrap_or_default()))
            }
            Err(e) => format!("error: {e}"),
        },
        other => format!("error: `{other}` is not a tool that runs"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_grant_tools() {
        let names = |caps: &[&str]| -> Vec<&'static str> {
            granted(&caps.iter().map(|c| c.to_string()).collect::<Vec<_>>()).iter().map(|t| t.name).collect()
        };
        let base = ["comment", "ask_human", "complete_step", "fail_step", "report_missing_capability"];
        assert_eq!(names(&[]), base);
        assert!(names(&["files"]).contains(&"read_file") && !names(&["files"]).contains(&"run_command"));
        assert!(names(&["shell"]).contains(&"run_command"));
        assert_eq!(capability_of("http_get"), Some("http"));
    }

    #[test]
    fn file_tools_stay_in_their_folders() {
        assert!(allowed_path("notes/a.txt").is_ok());
        assert!(allowed_path("../etc/passwd").unwrap_err().contains("`..`"));
        assert!(allowed_path("/etc/passwd").is_err());
    }

    #[test]
    fn search_and_edit_work_on_text() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "fn a() {}\nfn total() -> u32 { 1 }\n").unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "fn total").unwrap();
        assert_eq!(search(dir.path(), "fn total"), "src/lib.rs:2: fn total() -> u32 { 1 }");
        assert!(search(dir.path(), "nowhere").starts_with("no line contains"));
        let f = dir.path().join("src/lib.rs");
        assert!(edit(&f, "{ 1 }", "{ 2 }").is_ok());
        assert!(std::fs::read_to_string(&f).unwrap().contains("{ 2 }"));
        assert!(edit(&f, "fn ", "x").unwrap_err().contains("occurs 2 times"));
        assert!(edit(&f, "absent", "x").unwrap_err().contains("not there"));
    }

    #[test]
    fn symbolic_links_do_not_lead_out_of_the_workspace() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), ws.path().join("file-link")).unwrap();
        std::fs::create_dir(ws.path().join("notes")).unwrap();
        let roots = [ws.path().to_path_buf()];
        let check = |raw: &str| resolves_inside(raw, Path::new(raw), &roots);
        assert!(check("link/secret").unwrap_err().contains("symbolic link"));
        assert!(check("link/new-file").is_err(), "writing through a link is refused too");
        assert!(check("file-link").is_err());
        assert!(check("notes/a.txt").is_ok(), "a new file in the workspace");
        assert!(check("fresh/dir/a.txt").is_ok());
    }
}
