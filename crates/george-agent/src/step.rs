//! Running one shell command for a step: output goes to the agent's log and
//! its tail is kept as evidence; a timeout or a stop request kills the
//! command's whole process tree.

use crate::process_tree::kill_tree;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandResult {
    /// It exited (a signal counts as code 128 + signal).
    Exited {
        /// Exit code.
        code: i32,
        /// The end of its output.
        output: String,
        /// Whether output was cut.
        truncated: bool,
        /// The end of its standard error alone.
        stderr: String,
    },
    /// It ran out of time and was killed.
    TimedOut {
        /// The end of its output.
        output: String,
        /// The end of its standard error alone.
        stderr: String,
    },
    /// The agent was asked to stop; the command was killed.
    Stopped,
    /// The shell could not be started.
    SpawnFailed(String),
}

/// How much of a command's standard error is kept apart, for failure reasons.
const STDERR_TAIL: usize = 4096;

impl CommandResult {
    /// Whether the command exited 0.
    pub fn succeeded(&self) -> bool {
        matches!(self, CommandResult::Exited { code: 0, .. })
    }

    /// The last `lines` lines of its standard error (of its output when it
    /// wrote nothing there), for a reason a person reads.
    pub fn error_tail(&self, lines: usize) -> String {
        let (stderr, output) = match self {
            CommandResult::Exited { stderr, output, .. } | CommandResult::TimedOut { stderr, output } => {
                (stderr, output)
            }
            CommandResult::SpawnFailed(e) => return e.clone(),
            CommandResult::Stopped => return String::new(),
        };
        let text = if stderr.trim().is_empty() { output } else { stderr };
        let kept: Vec<&str> = text.trim_end().lines().rev().take(lines).collect();
        kept.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// Keeps the last `max` bytes written to it.
struct Tail {
    buf: Vec<u8>,
    max: usize,
    truncated: bool,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > self.max {
            let cut = self.buf.len() - self.max;
            self.buf.drain(..cut);
            self.truncated = true;
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    tail: &tokio::sync::Mutex<Tail>,
    apart: Option<&tokio::sync::Mutex<Tail>>,
) {
    let mut out = tokio::io::stdout();
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let _ = out.write_all(&buf[..n]).await;
                tail.lock().await.push(&buf[..n]);
                if let Some(apart) = apart {
                    apart.lock().await.push(&buf[..n]);
                }
            }
        }
    }
}

/// Runs `command` with `sh -c` in the current directory.
pub async fn run_command(
    command: &str,
    timeout: Duration,
    stop: &CancellationToken,
    max_output: usize,
) -> CommandResult {
    let mut child = match tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env_remove("GEORGE_AGENT_TOKEN")
        .env_remove(crate::env::TOKEN_FILE)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return CommandResult::SpawnFailed(e.to_string()),
    };
    let pid = child.id().map(|p| p as i32);
    let tail = tokio::sync::Mutex::new(Tail { buf: Vec::new(), max: max_output, truncated: false });
    let errors = tokio::sync::Mutex::new(Tail { buf: Vec::new(), max: STDERR_TAIL, truncated: false });
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let output = async {
        tokio::join!(
            async {
                if let Some(s) = stdout {
                    pump(s, &tail, None).await
                }
            },
            async {
                if let Some(s) = stderr {
                    pump(s, &tail, Some(&errors)).await
                }
            }
        )
    };
    enum End {
        Exited(i32),
        TimedOut,
        Stopped,
    }
    let waited = async {
        let (status, _) = tokio::join!(child.wait(), output);
        status
    };
    let end = tokio::select! {
        status = waited => {
            use std::os::unix::process::ExitStatusExt;
            let s = status.ok();
            End::Exited(s.and_then(|s| s.code().or(s.signal().map(|sig| 128 + sig))).unwrap_or(-1))
        }
        _ = tokio::time::sleep(timeout) => End::TimedOut,
        _ = stop.cancelled() => End::Stopped,
    };
    // A step that ended while the agent was being stopped was stopped, not failed.
    let end = if stop.is_cancelled() { End::Stopped } else { end };
    if !matches!(end, End::Exited(_)) {
        if let Some(pid) = pid {
            kill_tree(pid);
        }
    }
    let t = tail.lock().await;
    let stderr = errors.lock().await.text();
    match end {
        End::Exited(code) => CommandResult::Exited { code, output: t.text(), truncated: t.truncated, stderr },
        End::TimedOut => CommandResult::TimedOut { output: t.text(), stderr },
        End::Stopped => CommandResult::Stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn captures_exit_code_and_output_tail() {
        let stop = CancellationToken::new();
        let r = run_command("echo hello; echo err >&2; exit 4", Duration::from_secs(10), &stop, 1024).await;
        match r {
            ref r @ CommandResult::Exited { code: 4, ref output, truncated: false, ref stderr } => {
                assert!(output.contains("hello") && output.contains("err"), "{output}");
                assert_eq!(stderr, "err\n");
                assert_eq!(r.error_tail(5), "err");
            }
            other => panic!("{other:?}"),
        }
        let r = run_command("seq 1 1000", Duration::from_secs(10), &stop, 10).await;
        assert_eq!(
            r,
            CommandResult::Exited { code: 0, output: "\n999\n1000\n".into(), truncated: true, stderr: String::new() }
        );
        assert_eq!(r.error_tail(1), "1000", "no standard error: the output's end");
    }

    fn running(needle: &str) -> bool {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
                .unwrap_or(false)
        })
    }

    async fn gone(needle: &str) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while running(needle) {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    #[tokio::test]
    async fn timeouts_and_stops_kill_the_tree() {
        let stop = CancellationToken::new();
        let r = run_command("(sleep 7.123; true) & wait", Duration::from_millis(300), &stop, 1024).await;
        assert!(matches!(r, CommandResult::TimedOut { .. }), "{r:?}");
        assert!(gone("sleep 7.123").await, "the timed-out step's grandchild survived");

        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            run_command("(sleep 8.321; true) & wait", Duration::from_secs(60), &stopping, 1024).await
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !running("sleep 8.321") {
            assert!(tokio::time::Instant::now() < deadline, "step never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        assert_eq!(task.await.unwrap(), CommandResult::Stopped);
        assert!(gone("sleep 8.321").await, "the stopped step's grandchild survived");
    }
}
