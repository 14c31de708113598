//! recac's orchestrator flags, and what each becomes in George: the one
//! source of the flag table in `docs/jira.md` (rendered by [`markdown`] and
//! compared by a test) and checked against `george orchestrate`'s own
//! arguments (every flag there, with the same variable, and no other).

/// One flag of `george orchestrate`.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// Its long name, without `--`.
    pub long: &'static str,
    /// Its short name.
    pub short: Option<char>,
    /// The environment variable it is read from.
    pub env: Option<&'static str>,
    /// Another variable read when that one is unset.
    pub or_env: Option<&'static str>,
    /// Its default.
    pub default: &'static str,
    /// What it sets in George.
    pub george: &'static str,
}

const fn flag(long: &'static str, env: &'static str, default: &'static str, george: &'static str) -> Flag {
    Flag { long, short: None, env: Some(env), or_env: None, default, george }
}

const fn george_only(long: &'static str, default: &'static str, george: &'static str) -> Flag {
    Flag { long, short: None, env: None, or_env: None, default, george }
}

/// Every flag of `george orchestrate`, recac's first, in the docs' order.
pub const FLAGS: &[Flag] = &[
    flag(
        "mode",
        "RECAC_ORCHESTRATOR_MODE",
        "`local`",
        "`local` (or `docker`): the [Docker runtime](runtimes.md#running-agents-in-docker); `process`: local processes; `k8s` (or `kubernetes`): the [Kubernetes runtime](runtimes.md#running-agents-on-kubernetes)",
    ),
    flag(
        "poller",
        "RECAC_POLLER",
        "`jira`",
        "`jira`: the Jira source; `file` (or `filesystem`): the work-file source; `file-dir`: the work-directory source (see below); `github`: the [GitHub Issues](github.md#github-issues) source",
    ),
    flag("watch-dir", "RECAC_WATCH_DIR", "none", "the directory `--poller file-dir` watches: `sources.workDir.path`"),
    Flag {
        long: "verbose",
        short: Some('v'),
        env: None,
        or_env: None,
        default: "off",
        george: "debug logging (`GEORGE_LOG`, when set, wins)",
    },
    Flag {
        long: "github-token",
        short: None,
        env: Some("RECAC_GITHUB_TOKEN"),
        or_env: Some("GITHUB_TOKEN"),
        default: "none",
        george: "the token of the [GitHub Issues](github.md#github-issues) source, for `--poller github`",
    },
    flag("github-owner", "RECAC_GITHUB_OWNER", "none", "`github.owner`"),
    flag("github-repo", "RECAC_GITHUB_REPO", "none", "`github.repo`"),
    flag("github-label", "RECAC_GITHUB_LABEL", "`--jira-label`, as in recac", "`github.label`"),
    flag("interval", "RECAC_ORCHESTRATOR_INTERVAL", "`1m`", "`jira.interval`, or the poller's interval"),
    flag("jira-label", "RECAC_ORCHESTRATOR_JIRA_LABEL", "`recac-agent`", "`jira.label`"),
    flag("jira-query", "RECAC_ORCHESTRATOR_JIRA_QUERY", "none", "`jira.query`"),
    flag("work-file", "RECAC_WORK_FILE", "`work_items.json`", "`sources.workFile.path` (with `--poller file`)"),
    flag(
        "image",
        "RECAC_ORCHESTRATOR_IMAGE",
        "none",
        "`containerBackend.docker.image` and `containerBackend.kubernetes.image`, whatever the mode",
    ),
    flag(
        "image-pull-policy",
        "RECAC_IMAGE_PULL_POLICY",
        "`Always` with `--mode k8s`, as recac; none otherwise",
        "`containerBackend.docker.pullPolicy` and `containerBackend.kubernetes.imagePullPolicy`, whatever the mode",
    ),
    flag(
        "namespace",
        "RECAC_ORCHESTRATOR_NAMESPACE",
        "`default`",
        "with `--mode k8s`, `containerBackend.kubernetes.namespace`. A namespace set in the configuration file is kept unless `--namespace` (or the variable) gives another value than `default`. Without either, the namespace is `default`, not the kubeconfig's. No effect in the other modes.",
    ),
    flag(
        "agent-provider",
        "RECAC_AGENT_PROVIDER",
        "`openrouter`, as recac, when `OPENROUTER_API_KEY` is set and George's configuration names no provider; else none",
        "`llm.default.provider`. A name not under `llm.providers` must be `openai`, `anthropic` or `openrouter`, which need no configuration: their keys come from `OPENAI_API_KEY`, `ANTHROPIC_API_KEY` and `OPENROUTER_API_KEY`.",
    ),
    flag(
        "agent-model",
        "RECAC_AGENT_MODEL",
        "`mistralai/devstral-2512:free` with that default provider",
        "`llm.default.model`",
    ),
    flag(
        "max-iterations",
        "RECAC_MAX_ITERATIONS",
        "none",
        "the built-in `recac-agent`'s `GEORGE_LLM_MAX_TURNS` (turns of an LLM step)",
    ),
    flag(
        "manager-frequency",
        "RECAC_MANAGER_FREQUENCY",
        "none",
        "accepted and not used: it sets recac's manager agent, which George does not have",
    ),
    flag(
        "task-max-iterations",
        "RECAC_TASK_MAX_ITERATIONS",
        "none",
        "accepted and not used: George bounds each LLM step by `GEORGE_LLM_MAX_TURNS`",
    ),
    Flag {
        long: "config",
        short: Some('c'),
        env: Some("GEORGE_CONFIG"),
        or_env: None,
        default: "none",
        george: "a George configuration file to start from, or recac's own (`~/.recac.yaml`): its `orchestrator.*` keys (`mode`, `poller`, `interval`, `jira_label`, `jira_query`, `image`, `namespace`, `agent_provider`, `agent_model`, `image_pull_policy`, `work_file`, `watch_dir`) come below the flags and variables, and `jira.url`, `jira.username` and `jira.api_token` as recac reads them (recac's other keys are its agent's and are ignored). A file that is neither is refused, naming George's key that is wrong.",
    },
    george_only("manifests", "the built-in ones", "`sources.folder.path`"),
    george_only("template", "`recac-task`", "the template tickets and work items become"),
    george_only("listen", "`127.0.0.1:8080`", "`engine.listen`"),
    Flag {
        long: "data-dir",
        short: None,
        env: Some("GEORGE_DATA_DIR"),
        or_env: None,
        default: "`.george`",
        george: "`engine.dataDir`",
    },
];

/// The flag table as the docs show it (Markdown).
#[cfg(test)]
pub fn markdown() -> String {
    let mut out = String::from("| flag | variable | default | in George |\n|---|---|---|---|\n");
    for f in FLAGS {
        let name = match f.short {
            Some(s) => format!("`-{s}`, `--{}`", f.long),
            None => format!("`--{}`", f.long),
        };
        let var = match (f.env, f.or_env) {
            (Some(e), Some(o)) => format!("`{e}` (or `{o}`)"),
            (Some(e), None) => format!("`{e}`"),
            _ => "none".to_string(),
        };
        out.push_str(&format!("| {name} | {var} | {} | {} |\n", f.default, f.george));
    }
    out
}

/// The flags as `george orchestrate --help` lists them after its options.
pub fn help() -> String {
    let mut out = String::from("recac's flags in George (docs/jira.md):\n");
    for f in FLAGS {
        let short = f.short.map(|c| format!("-{c}, ")).unwrap_or_default();
        let var = match (f.env, f.or_env) {
            (Some(e), Some(o)) => format!(" [{e}, else {o}]"),
            (Some(e), None) => format!(" [{e}]"),
            _ => String::new(),
        };
        let default = plain(f.default);
        out.push_str(&format!("  {short}--{}{var} (default: {default}): {}\n", f.long, plain(f.george)));
    }
    out
}

/// Markdown without its code marks, and links as their text.
fn plain(md: &str) -> String {
    let mut out = String::new();
    let mut rest = md;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find("](").map(|i| open + i) else { break };
        let Some(end) = rest[close..].find(')').map(|i| close + i) else { break };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..close]);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out.replace('`', "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    const BEGIN: &str = "<!-- recac flags: generated from crates/george/src/recac_flags.rs -->\n";
    const END: &str = "<!-- end of recac flags -->";

    /// The docs' table is [`markdown`]; `GEORGE_BLESS=1` writes it there.
    #[test]
    fn the_docs_flag_table_is_generated_from_the_flags() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/jira.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let start = doc.find(BEGIN).expect("the begin marker in docs/jira.md") + BEGIN.len();
        let end = doc[start..].find(END).expect("the end marker in docs/jira.md") + start;
        let want = markdown();
        if doc[start..end] != want {
            if std::env::var_os("GEORGE_BLESS").is_some() {
                std::fs::write(&path, format!("{}{want}{}", &doc[..start], &doc[end..])).unwrap();
            } else {
                panic!(
                    "docs/jira.md's flag table is not the one recac_flags.rs renders; \
                     run `GEORGE_BLESS=1 cargo test -p george --bin george recac_flags` to write it"
                );
            }
        }
    }

    #[test]
    fn help_text_is_plain() {
        assert_eq!(
            plain("the [GitHub Issues](github.md#x) source, `github.repo`"),
            "the GitHub Issues source, github.repo"
        );
        assert!(help().contains("  --poller [RECAC_POLLER] (default: jira): jira: the Jira source;"), "{}", help());
    }

    /// `george orchestrate` has exactly these flags, with these variables.
    #[test]
    fn george_orchestrate_takes_exactly_these_flags() {
        let cli = crate::cli::Cli::command();
        let cmd = cli.find_subcommand("orchestrate").expect("george orchestrate");
        let args: Vec<_> = cmd.get_arguments().filter(|a| a.get_long() != Some("help")).collect();
        for f in FLAGS {
            let a = args.iter().find(|a| a.get_long() == Some(f.long)).unwrap_or_else(|| panic!("no --{}", f.long));
            assert_eq!(a.get_short(), f.short, "--{}'s short name", f.long);
            assert_eq!(a.get_env().and_then(|e| e.to_str()), f.env, "--{}'s variable", f.long);
        }
        for a in &args {
            let long = a.get_long().unwrap_or_default();
            assert!(FLAGS.iter().any(|f| f.long == long), "--{long} is not in recac_flags::FLAGS");
        }
    }
}
