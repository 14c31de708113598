//! The binary under test, and reading what it printed: shared by both test
//! binaries (`it`, and `chaos`, which runs alone).

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn george_bin() -> &'static str {
    env!("CARGO_BIN_EXE_george")
}

/// The George image (engine and agent), built once per test binary from the
/// binary under test by `scripts/docker-image.sh` (FROM scratch: nothing is pulled).
pub fn test_image() -> &'static str {
    static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        let tag = "george/test-agent:latest";
        let out = Command::new(repo_root().join("scripts/docker-image.sh")).args([tag, george_bin()]).output().unwrap();
        assert!(out.status.success(), "building the test image failed:\n{}", stderr(&out));
        tag.to_string()
    })
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
