//! Test support: a real `george` engine process on a temporary data
//! directory, real git repositories, and polling with deadlines.

#![allow(dead_code)]

pub mod browser;
pub mod openapi;
pub mod service;

pub use george_testkit::servers::{decode_base64, forge, git_http, github, inbox, jira, kube_api, llm, otlp, slack};

#[path = "../../support/binary.rs"]
mod binary;
pub use binary::*;

use george_client::Client;
use george_core::api::JobView;
use george_core::JobStatus;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Two steps: `wait` until `$GEORGE_OUTPUT_DIR/release` exists, then `finish`.
pub const RELEASE_STEPS: &str = "    - id: wait
      description: wait for the release flag
      run: while [ ! -f \"$GEORGE_OUTPUT_DIR/release\" ]; do sleep 0.05; done
    - id: finish
      description: finish
      depends_on: [wait]
      run: touch \"$GEORGE_OUTPUT_DIR/finished\"
";

pub const TOKEN: &str = "test-operator-token-0123456789";

/// Fast settings so failures are detected in well under a second.
pub const FAST_CONFIG: &str = "engine:
  reconcileInterval: 1s
  retryBackoff: 100ms
  maxRetryBackoff: 400ms
  terminationGrace: 2s
agents:
  healthCheck:
    interval: 200ms
    timeout: 300ms
    unhealthyThreshold: 3
";

/// A running `george serve`.
pub struct Engine {
    pub dir: PathBuf,
    pub child: Child,
    pub url: String,
    pub port: u16,
    pub client: Client,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    log: PathBuf,
    starts: u32,
    command: String,
}

impl Engine {
    /// Starts `george serve` with `FAST_CONFIG` plus `extra_config`, and `args`.
    pub fn start(dir: &Path, extra_config: &str, args: &[&str]) -> Engine {
        Self::start_with_env(dir, extra_config, args, &[])
    }

    /// Like [`Engine::start`], with extra environment variables for the engine.
    pub fn start_with_env(dir: &Path, extra_config: &str, args: &[&str], env: &[(&str, &str)]) -> Engine {
        Self::start_full(dir, &format!("{FAST_CONFIG}{extra_config}"), args, env)
    }

    /// Starts `george serve` with exactly `config` (no `FAST_CONFIG`).
    pub fn start_full(dir: &Path, config: &str, args: &[&str], env: &[(&str, &str)]) -> Engine {
        Self::start_as(dir, "serve", config, args, env)
    }

    /// Starts `george <command>` (`serve`, `orchestrate`) with exactly `config`.
    pub fn start_as(dir: &Path, command: &str, config: &str, args: &[&str], env: &[(&str, &str)]) -> Engine {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("george-config.yaml"), config).unwrap();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut e = Engine {
            dir: dir.to_path_buf(),
            child: Command::new("true").spawn().unwrap(),
            url: String::new(),
            port: 0,
            client: Client::new("http://127.0.0.1:1", TOKEN).unwrap(),
            extra_args: args,
            extra_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log: PathBuf::new(),
            starts: 0,
            command: command.to_string(),
        };
        e.launch("127.0.0.1:0");
        e
    }

    fn launch(&mut self, listen: &str) {
        self.starts += 1;
        self.log = self.dir.join(format!("engine-{}.log", self.starts));
        let log = std::fs::File::create(&self.log).unwrap();
        self.child = Command::new(george_bin())
            .arg(&self.command)
            .arg("--config")
            .arg(self.dir.join("george-config.yaml"))
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--listen")
            .arg(listen)
            .args(&self.extra_args)
            .env("GEORGE_API_TOKENS", format!("test:{TOKEN}"))
            .env("GEORGE_LOG", "info,george_engine=debug")
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("GEORGE_SERVER")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let log_path = self.log.clone();
        let child = &mut self.child;
        let url = wait_for(Duration::from_secs(30), "the engine to start", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the engine exited during start-up ({status}):\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            let f = std::fs::File::open(&log_path).ok()?;
            std::io::BufReader::new(f).lines().map_while(Result::ok).find_map(|l| {
                if l.contains("george is up") {
                    l.split_whitespace().find_map(|w| w.strip_prefix("api=").map(str::to_string))
                } else {
                    None
                }
            })
        });
        self.port = url.rsplit(':').next().unwrap().parse().unwrap();
        self.url = url;
        self.client = Client::new(&self.url, TOKEN).unwrap();
    }

    /// The engine's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kill -9 the engine.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }

    /// Leaves the environment variable `name` out of the engine's next starts.
    pub fn forget_env(&mut self, name: &str) {
        self.extra_env.retain(|(k, _)| k != name);
    }

    /// Waits for the engine process to end on its own (a kill point); its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        wait_for(within, "the engine to exit", || child.try_wait().ok().flatten())
    }

    /// Starts the engine again on the same port and data directory.
    pub fn restart(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        self.launch(&listen);
    }

    /// Runs the CLI against this engine.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(george_bin())
            .args(args)
            .env("GEORGE_SERVER", &self.url)
            .env("GEORGE_TOKEN", TOKEN)
            // Tables whole, whatever terminal runs the tests.
            .env_remove("COLUMNS")
            .current_dir(&self.dir)
            .output()
            .unwrap()
    }

    pub fn rt(&self) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// The job, or panics with the engine log.
    pub async fn job(&self, id: &str) -> JobView {
        self.client.job(id).await.unwrap_or_else(|e| panic!("job {id}: {e}\n{}", self.log()))
    }

    /// Waits until a source has been applied (the manifests are in).
    pub async fn wait_applied(&self) {
        eventually(Duration::from_secs(20), "the manifests to be applied", async || {
            let sources = self.client.sources().await.ok()?;
            sources.iter().any(|x| x.applied_revision.is_some()).then_some(())
        })
        .await
    }

    /// Waits until the registry lists at least `n` AgentSpecs.
    /// The engine's `/metrics` text (read with the operator token).
    pub async fn metrics(&self) -> String {
        let r = reqwest::Client::new().get(format!("{}/metrics", self.url)).bearer_auth(TOKEN).send().await.unwrap();
        r.text().await.unwrap()
    }

    pub async fn wait_registry(&self, n: usize) {
        until(Duration::from_secs(20), &format!("{n} AgentSpecs in the registry"), async || {
            let registry = self.client.get_json("/api/v1/registry").await;
            registry.map(|v| v.as_array().map_or(0, Vec::len)).unwrap_or(0) >= n
        })
        .await
    }

    /// Waits until job `id` has `status`.
    pub async fn wait_status(&self, id: &str, status: JobStatus, within: Duration) -> JobView {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(j) = self.client.job(id).await {
                if j.status == status {
                    return j;
                }
                if Instant::now() > deadline {
                    panic!(
                        "job {id} is {} ({:?}), expected {status}\n--- engine log ---\n{}",
                        j.status,
                        j.reason,
                        self.log()
                    );
                }
            } else if Instant::now() > deadline {
                panic!("job {id} never appeared\n--- engine log ---\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `cond` holds for the job.
    pub async fn wait_job(&self, id: &str, what: &str, within: Duration, cond: impl Fn(&JobView) -> bool) -> JobView {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(j) = self.client.job(id).await {
                if cond(&j) {
                    return j;
                }
                if Instant::now() > deadline {
                    panic!("job {id}: waited for {what}; it is {:?}\n--- engine log ---\n{}", j, self.log());
                }
            } else if Instant::now() > deadline {
                panic!("job {id} never appeared ({what})\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Agents outlive the engine by design; a test leaves none behind.
        for pid in agent_pids(&self.dir) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

pub use george_testkit::{eventually, git, until, wait_for, write};

/// Pids of `george agent run` processes whose working directory is under `dir`.
pub fn agent_pids(dir: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmd).contains("agent\0run") {
            continue;
        }
        if std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(dir)) {
            out.push(pid);
        }
    }
    out
}

/// A process's environment variable.
pub fn proc_env(pid: i32, name: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(&format!("{name}=")).map(str::to_string)
    })
}

/// Live agent processes by job id. A process forked by an agent that has
/// not exec'd its step yet still looks like the agent; it is not counted.
/// The agent token of `job`'s running agent (whichever attempt runs), read
/// out of its memory as a stolen token would be; waits for the agent.
pub fn agent_token(engine: &Engine, job: &str) -> String {
    wait_for(Duration::from_secs(20), "the agent process", || {
        let pid = *agents_by_job(&engine.dir).get(job)?.first()?;
        agent_token_in_memory(pid)
    })
}

pub fn agents_by_job(dir: &Path) -> std::collections::BTreeMap<String, Vec<i32>> {
    let mut out: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
    let pids = agent_pids(dir);
    for &pid in &pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains(") Z") {
            continue;
        }
        let ppid: i32 = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if pids.contains(&ppid) {
            continue;
        }
        if let Some(job) = proc_env(pid, "GEORGE_JOB_ID") {
            out.entry(job).or_default().push(pid);
        }
    }
    out
}

/// Whether any process's command line contains `needle`.
pub fn process_running(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        !stat.contains(") Z")
            && std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
                .unwrap_or(false)
    })
}

pub fn commit(repo: &Path, msg: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", msg]);
    git(repo, &["rev-parse", "HEAD"])
}

/// An AgentSpec running the reference agent.
pub const AGENT: &str = "apiVersion: george/v1
kind: AgentSpec
metadata: {name: worker}
spec:
  capabilities: [shell]
";

/// A template with one shell step given by `{{cmd}}`... written out per test.
pub fn template(name: &str, steps: &str) -> String {
    format!("apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {{name: {name}}}\nspec:\n  requiredCapabilities: [shell]\n  maxAttempts: 4\n  steps:\n{steps}")
}

pub fn job(name: &str, template: &str) -> String {
    format!("apiVersion: george/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n  template: {template}\n")
}

/// A bare repository `<root>/<name>.git` whose `main` has one commit with `files`.
pub fn bare_repo(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let seed = root.join(format!("{name}-seed"));
    std::fs::create_dir_all(&seed).unwrap();
    git(&seed, &["init", "-q", "-b", "main"]);
    git(&seed, &["config", "user.email", "dev@example.com"]);
    git(&seed, &["config", "user.name", "Dev"]);
    for (path, text) in files {
        write(&seed, path, text);
    }
    commit(&seed, "initial");
    let bare = root.join(format!("{name}.git"));
    git(root, &["clone", "-q", "--bare", seed.to_str().unwrap(), bare.to_str().unwrap()]);
    bare
}

/// Per job, attempts never overlap in the event log: each starts after the previous ended.
pub fn assert_one_live_attempt_at_a_time(events: &[george_core::api::EventView]) {
    let mut live: std::collections::BTreeMap<&str, Option<u32>> = std::collections::BTreeMap::new();
    for e in events {
        let Some(job) = e.job_id.as_deref() else { continue };
        match e.kind.as_str() {
            "attempt.started" => {
                let prev = live.insert(job, e.attempt);
                assert!(prev.flatten().is_none(), "job {job}: attempt {:?} started while {prev:?} was live", e.attempt);
            }
            "attempt.ended" if live.get(job).copied().flatten() == e.attempt => {
                live.insert(job, None);
            }
            _ => {}
        }
    }
}

/// An agent's log as the engine serves it (`None` if it cannot be read yet).
pub async fn agent_log(e: &Engine, id: &str) -> Option<String> {
    let mut out = Vec::new();
    e.client.logs(id, false, &mut out).await.ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// A temporary directory others may pass through (mode 0711): an engine
/// running as root runs each agent under its own uid, and those agents must
/// reach their directories inside the data directory (an engine refuses a
/// data directory they cannot reach).
pub fn tempdir() -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new().permissions(std::fs::Permissions::from_mode(0o711)).tempdir()
}

/// The agent token held by agent process `pid`, read out of its memory (the
/// token is in no environment and its file is gone once the agent started;
/// this test process, unsandboxed root, may read any process's memory).
/// Tests use it to act as a stolen token would.
pub fn agent_token_in_memory(pid: i32) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else { continue };
        let path = parts.nth(3).unwrap_or("");
        if !perms.starts_with("rw") || !(path.is_empty() || path == "[heap]") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16)) else { continue };
        if end - start > 1 << 30 || mem.seek(SeekFrom::Start(start)).is_err() {
            continue;
        }
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.read_exact(&mut buf).is_err() {
            continue;
        }
        let mut at = 0;
        while let Some(i) = buf[at..].windows(4).position(|w| w == b"gat_") {
            let s = at + i;
            let hex = &buf[s + 4..(s + 68).min(buf.len())];
            if hex.len() == 64 && hex.iter().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
                return Some(String::from_utf8_lossy(&buf[s..s + 68]).to_string());
            }
            at = s + 4;
        }
    }
    None
}

/// `sha256=<hex HMAC-SHA256 of body under key>`: a webhook signature as GitHub and Jira send it.
pub fn hub_signature(key: &str, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
