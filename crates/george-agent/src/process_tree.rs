//! Killing a step's whole process tree (a timed-out `make` and its
//! compilers). Steps stay in the agent's process group, so the engine can
//! always stop everything the agent started; the agent finds a step's
//! descendants through `/proc`.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;

fn parents() -> HashMap<i32, i32> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if let Some(ppid) = fields.get(1).and_then(|p| p.parse().ok()) {
            out.insert(pid, ppid);
        }
    }
    out
}

/// Sends SIGKILL to `root` and every process descended from it.
pub fn kill_tree(root: i32) {
    let parents = parents();
    let mut doomed = vec![root];
    let mut i = 0;
    while i < doomed.len() {
        let p = doomed[i];
        doomed.extend(parents.iter().filter(|(_, pp)| **pp == p).map(|(c, _)| *c));
        i += 1;
    }
    for pid in doomed {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}
