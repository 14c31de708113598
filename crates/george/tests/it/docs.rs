//! The documentation stays true (issue 18): the README is a front page (at
//! most 250 lines); every relative link in it and in `docs/` reaches a file,
//! and every `#anchor` a heading there; every fenced block marked
//! `sh runnable` runs as written, with the `george` under test on the
//! `PATH`, in a scratch directory; every command of the CLI reference exists
//! and its `--help` shows examples.

use crate::common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// README.md and every docs/*.md, with their text.
fn pages() -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let root = repo();
    out.insert(root.join("README.md"), std::fs::read_to_string(root.join("README.md")).unwrap());
    for e in std::fs::read_dir(root.join("docs")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "md") {
            out.insert(e.path(), std::fs::read_to_string(e.path()).unwrap());
        }
    }
    out
}

/// The lines outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut inside = false;
    text.lines()
        .filter(|l| {
            if l.starts_with("```") {
                inside = !inside;
                return false;
            }
            !inside
        })
        .collect()
}

/// The anchors GitHub gives a page's headings (a repeated one gets `-1`, `-2`, …).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for l in prose(text) {
        let Some(title) = l.trim_start_matches('#').strip_prefix(' ').filter(|_| l.starts_with('#')) else { continue };
        let base: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 { base.clone() } else { format!("{base}-{n}") });
        *n += 1;
    }
    out
}

#[test]
fn the_readme_is_a_front_page_and_every_link_lands() {
    let pages = pages();
    let readme = &pages[&repo().join("README.md")];
    assert!(readme.lines().count() <= 250, "README.md has {} lines", readme.lines().count());
    let mut broken = Vec::new();
    for (page, text) in &pages {
        let dir = page.parent().unwrap();
        for line in prose(text) {
            for (i, _) in line.match_indices("](") {
                let rest = &line[i + 2..];
                let Some(end) = rest.find(')') else { continue };
                let target = &rest[..end];
                if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                    continue;
                }
                let (file, anchor) = target.split_once('#').map_or((target, None), |(f, a)| (f, Some(a)));
                let file = if file.is_empty() { page.clone() } else { dir.join(file) };
                if !file.exists() {
                    broken.push(format!("{}: {target} (no such file)", page.display()));
                    continue;
                }
                if let Some(anchor) = anchor {
                    let text = pages.get(&file.canonicalize().unwrap()).cloned().unwrap_or_default();
                    if !anchors(&text).contains(anchor) {
                        broken.push(format!("{}: {target} (no such heading)", page.display()));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_runnable_example_runs_as_written() {
    let bin = Path::new(george_bin()).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut ran = 0;
    for (page, text) in pages() {
        let mut block: Option<Vec<&str>> = None;
        for line in text.lines() {
            match &mut block {
                None if line.starts_with("```") && line.contains("runnable") => block = Some(Vec::new()),
                Some(lines) if line.starts_with("```") => {
                    let script = lines.join("\n");
                    block = None;
                    let tmp = tempdir().unwrap();
                    let dir = tmp.path().canonicalize().unwrap();
                    // Agents run under their own uids when the tests are root: they pass through.
                    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
                    let out = Command::new("bash")
                        .args(["-euo", "pipefail", "-c", &script])
                        .current_dir(&dir)
                        .env("PATH", &path)
                        .env("GEORGE_CLIENT_CONFIG", dir.join("client.yaml"))
                        .env_remove("GEORGE_SERVER")
                        .env_remove("GEORGE_TOKEN")
                        .output()
                        .unwrap();
                    let log =
                        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                    assert!(out.status.success(), "{}: the example\n{script}\nfailed:\n{log}", page.display());
                    ran += 1;
                }
                Some(lines) => lines.push(line),
                None => {}
            }
        }
    }
    assert!(ran >= 1, "no runnable example found");
}

#[test]
fn every_command_of_the_cli_reference_exists() {
    let cli = std::fs::read_to_string(repo().join("docs/cli.md")).unwrap();
    let mut checked = 0;
    for row in cli.lines().filter(|l| l.starts_with("| `george ")) {
        let command = row.trim_start_matches("| `").split('`').next().unwrap();
        // The command's words, up to its first argument or option.
        let words: Vec<&str> = command
            .split_whitespace()
            .skip(1)
            .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-'))
            .collect();
        for alternative in words.first().map(|w| w.split('|').collect::<Vec<_>>()).unwrap_or_default() {
            let mut args: Vec<&str> = vec![alternative];
            args.extend(words.iter().skip(1).flat_map(|w| w.split('|').take(1)));
            args.push("--help");
            let out = Command::new(george_bin()).args(&args).output().unwrap();
            assert!(out.status.success(), "`george {}` is in docs/cli.md but not a command", args.join(" "));
            let help = String::from_utf8_lossy(&out.stdout);
            assert!(
                help.contains("Examples:\n  george ") || help.contains("Examples:\n  source"),
                "`george {}` shows no examples:\n{help}",
                args.join(" ")
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} commands found in docs/cli.md");
}

/// Issue 20: recac's orchestrator flag list, as docs/jira.md quotes it from
/// recac's source: every flag is accepted by `george orchestrate` (it may
/// then fail for want of a Jira site, but never as an unknown argument), and
/// every variable recac binds is one `george orchestrate --help` names.
#[test]
fn recacs_flag_list_is_accepted_by_george_orchestrate() {
    let doc = std::fs::read_to_string(repo().join("docs/jira.md")).unwrap();
    let quoted: Vec<&str> = doc
        .split("- **recac's flag list.**")
        .nth(1)
        .and_then(|rest| rest.split("```go").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("docs/jira.md quotes recac's flag list")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let quoted_arg = |line: &str, n: usize| line.split('"').nth(2 * n + 1).map(str::to_string);
    let help = Command::new(george_bin()).args(["orchestrate", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let (mut flags, mut vars) = (0, 0);
    for line in &quoted {
        if line.starts_with("pflag.") {
            let name = quoted_arg(line, 0).unwrap();
            let mut args = vec![format!("--{name}")];
            // A value of the flag's type; `--poller` last, so the run stops before starting anything.
            match line.split('(').next().unwrap() {
                "pflag.BoolP" | "pflag.Bool" => {}
                "pflag.Duration" => args.push("30s".into()),
                _ if name == "poller" => args.push("rss".into()),
                _ if name == "config" => args.push("/nonexistent/.recac.yaml".into()),
                _ => args.push("x".into()),
            }
            if name != "poller" {
                args.extend(["--poller".into(), "rss".into()]);
            }
            let out = Command::new(george_bin()).arg("orchestrate").args(&args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.code() != Some(2) && !err.contains("unexpected argument"),
                "recac's `--{name}` is refused: {err}"
            );
            if line.starts_with("pflag.BoolP") {
                let short = quoted_arg(line, 1).unwrap();
                assert!(help.contains(&format!("-{short}, --{name}")), "recac's -{short} is missing:\n{help}");
            }
            flags += 1;
        } else if line.starts_with("viper.BindEnv(") {
            let mut n = 1;
            while let Some(var) = quoted_arg(line, n) {
                assert!(help.contains(&var), "recac's variable {var} is not one `george orchestrate` reads:\n{help}");
                vars += 1;
                n += 1;
            }
        }
    }
    assert!(flags >= 18 && vars >= 18, "{flags} flags and {vars} variables found in the quoted list");
}
