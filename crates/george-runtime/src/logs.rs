//! Where agents' output is kept: one file per attempt under the data
//! directory, written by the runtime and read by the API, kept after the
//! agent is gone. Container runtimes copy a timestamped log stream into it
//! with [`TimestampedLog`], which skips what an earlier follower wrote and
//! caps the file's size.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The log files of agent attempts.
#[derive(Debug, Clone)]
pub struct AgentLogs {
    dir: PathBuf,
}

impl AgentLogs {
    /// Logs under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The log file of one attempt.
    pub fn path(&self, job_id: &str, attempt: u32) -> PathBuf {
        self.dir.join(job_id).join(format!("{attempt}.log"))
    }

    /// The directory holding every log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The RFC 3339 timestamp a container runtime puts in front of each log line.
pub(crate) fn line_timestamp(line: &str) -> Option<&str> {
    let ts = line.split(' ').next()?;
    (ts.len() >= 20 && ts.as_bytes()[4] == b'-' && ts.ends_with('Z')).then_some(ts)
}

/// Parses a log line's timestamp (nanoseconds) for ordering.
pub(crate) fn parse_ts(ts: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(ts).ok().map(|t| t.to_utc())
}

/// Appends a stream of timestamped lines to an attempt's log file. Lines
/// stamped at or before the point it resumed from (the last line in the
/// file when opened, or the last written before [`TimestampedLog::resume`])
/// are skipped, so a follower that re-attaches (after an engine restart or
/// a dropped stream) writes no line twice; lines within one stream may share
/// a timestamp. Output past `max_bytes` is dropped with one note.
pub(crate) struct TimestampedLog {
    file: std::fs::File,
    last: Option<chrono::DateTime<chrono::Utc>>,
    resumed_from: Option<chrono::DateTime<chrono::Utc>>,
    written: u64,
    max_bytes: u64,
    capped: bool,
    partial: String,
}

impl TimestampedLog {
    /// Opens (appending) the log file at `path`.
    pub(crate) fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            private_dir(dir)?;
        }
        let last = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.lines().rev().find_map(|l| line_timestamp(l).and_then(parse_ts)));
        let written = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let file = private_log(path)?;
        Ok(Self {
            file,
            last,
            resumed_from: last,
            written,
            max_bytes,
            capped: written >= max_bytes,
            partial: String::new(),
        })
    }

    /// A new stream starts from the last line written (its lines up to there are skipped).
    pub(crate) fn resume(&mut self) {
        self.partial.clear();
        self.resumed_from = self.last;
    }

    /// The newest timestamp written so far (where a re-attached stream may start).
    pub(crate) fn last(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.last
    }

    /// Writes the complete lines of `chunk`; keeps a trailing partial line for the next chunk.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.partial.push_str(&String::from_utf8_lossy(chunk));
        while let Some(nl) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=nl).collect();
            self.line(&line)?;
        }
        Ok(())
    }

    fn line(&mut self, line: &str) -> std::io::Result<()> {
        let ts = line_timestamp(line).and_then(parse_ts);
        if let (Some(prev), Some(ts)) = (self.resumed_from, ts) {
            if ts <= prev {
                return Ok(());
            }
        }
        if ts.is_some() {
            self.last = ts;
        }
        if self.capped {
            return Ok(());
        }
        if self.written + line.len() as u64 > self.max_bytes {
            writeln!(self.file, "[george: log capped at {} bytes; later output dropped]", self.max_bytes)?;
            self.capped = true;
            return Ok(());
        }
        self.file.write_all(line.as_bytes())?;
        self.written += line.len() as u64;
        Ok(())
    }

    /// Writes a trailing line that had no newline.
    pub(crate) fn finish(&mut self) -> std::io::Result<()> {
        if !self.partial.is_empty() {
            let mut rest = std::mem::take(&mut self.partial);
            rest.push('\n');
            self.line(&rest)?;
        }
        Ok(())
    }

    /// Writes a note from George itself (not from the agent).
    pub(crate) fn note(&mut self, text: &str) -> std::io::Result<()> {
        writeln!(self.file, "[george: {text}]")
    }
}

/// Creates a log directory (and its parents) readable by the engine alone.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Opens a log file for appending, created readable by the engine alone.
pub(crate) fn private_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_are_recognised() {
        let l = "2026-11-21T05:24:55.106405123Z hello world\n";
        assert_eq!(line_timestamp(l), Some("2026-11-21T05:24:55.106405123Z"));
        assert!(parse_ts(line_timestamp(l).unwrap()).is_some());
        assert_eq!(line_timestamp("no timestamp here"), None);
    }

    #[test]
    fn a_reattached_stream_writes_no_line_twice_and_the_cap_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j").join("1.log");
        let mut log = TimestampedLog::open(&path, 200).unwrap();
        log.push(b"2026-11-21T05:00:01.000000000Z one\n2026-11-21T05:00:02.0").unwrap();
        log.push(b"00000000Z two\n").unwrap();
        drop(log);
        let mut log = TimestampedLog::open(&path, 200).unwrap();
        assert_eq!(log.last(), parse_ts("2026-11-21T05:00:02Z"));
        log.push(b"2026-11-21T05:00:02.000000000Z two\n2026-11-21T05:00:03.000000000Z three\n").unwrap();
        // Lines of one stream may share a timestamp.
        log.push(b"2026-11-21T05:00:03.000000000Z three-b\n").unwrap();
        log.resume();
        log.push(b"2026-11-21T05:00:03.000000000Z three-b\n2026-11-21T05:00:03.5Z four").unwrap();
        log.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let words: Vec<_> = text.lines().map(|l| l.split(' ').nth(1).unwrap()).collect();
        assert_eq!(words, ["one", "two", "three", "three-b", "four"]);
        let mut log = TimestampedLog::open(&path, 200).unwrap();
        for i in 4..20 {
            log.push(format!("2026-11-21T05:00:{i:02}.000000000Z line {i}\n").as_bytes()).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() < 260 && text.ends_with("later output dropped]\n"), "{text}");
    }
}
