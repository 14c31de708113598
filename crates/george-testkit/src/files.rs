//! Files and git repositories for tests.

use std::path::Path;
use std::process::Command;

/// Writes `text` to `root/rel`, creating its directories.
pub fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("a file has a directory")).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Runs git in `dir` as a fixed test author (branch `main` by default);
/// panics with git's error if it fails, else returns its output, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The agent launcher for a process runtime in tests: `george-launch`, the
/// runtime crate's binary, which cargo builds beside every test binary of
/// the workspace (`target/<profile>/`, the parent of the test's `deps/`).
pub fn launcher() -> Vec<String> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe.parent().and_then(std::path::Path::parent).expect("target/<profile>/deps/<test>");
    let launcher = profile.join("george-launch");
    assert!(
        launcher.is_file(),
        "{} is missing: build it with `cargo build -p george-runtime --bin george-launch` (cargo test --workspace does)",
        launcher.display()
    );
    vec![launcher.display().to_string()]
}
