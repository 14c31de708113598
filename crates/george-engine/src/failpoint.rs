//! Kill points for the chaos test: `GEORGE_FAILPOINTS=spawn.window@3` makes
//! this engine process `kill -9` itself the third time it passes the point
//! named `spawn.window`. Several points are separated by commas. Unset (the
//! normal case), a point costs one load of an already-initialised cell.
//!
//! The points, in the order a spawn passes them:
//! - `attempt.recorded`: the attempt is in the store, nothing is spawned;
//! - `spawn.window`: the runtime has started the agent (held at its gate),
//!   its handle is not yet in the store;
//! - `spawn.recorded`: the handle is in the store, the agent is not yet
//!   released.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms kill points.
pub const ENV: &str = "GEORGE_FAILPOINTS";

/// Every kill point, for validation and documentation.
pub const POINTS: [&str; 3] = ["attempt.recorded", "spawn.window", "spawn.recorded"];

struct Armed {
    /// Passes so far, and the pass that kills.
    points: HashMap<String, (AtomicU32, u32)>,
}

fn armed() -> &'static Option<Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let spec = std::env::var(ENV).ok()?;
        let points =
            parse(&spec).map_err(|e| tracing::error!(variable = ENV, error = %e, "kill points ignored")).ok()?;
        tracing::warn!(variable = ENV, spec = %spec, "kill points armed: this engine will kill itself (testing only)");
        Some(Armed { points: points.into_iter().map(|(k, at)| (k, (AtomicU32::new(0), at))).collect() })
    })
}

/// Parses `name@n[,name@n...]`.
fn parse(spec: &str) -> Result<Vec<(String, u32)>, String> {
    spec.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (name, at) = p.trim().split_once('@').ok_or_else(|| format!("`{p}`: expected NAME@PASS"))?;
            if !POINTS.contains(&name) {
                return Err(format!("`{name}`: unknown kill point; expected one of {}", POINTS.join(", ")));
            }
            let at: u32 = at.parse().map_err(|_| format!("`{p}`: the pass must be a whole number from 1"))?;
            if at == 0 {
                return Err(format!("`{p}`: the pass must be a whole number from 1"));
            }
            Ok((name.to_string(), at))
        })
        .collect()
}

/// Passes the kill point `name`: kills this process with SIGKILL if it is
/// armed for this pass.
pub fn hit(name: &'static str) {
    let Some(armed) = armed() else { return };
    let Some((passes, at)) = armed.points.get(name) else { return };
    if passes.fetch_add(1, Ordering::SeqCst) + 1 == *at {
        eprintln!("george: kill point {name} reached (pass {at}); SIGKILL");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        assert_eq!(
            super::parse("spawn.window@3, attempt.recorded@1").unwrap(),
            [("spawn.window".to_string(), 3), ("attempt.recorded".to_string(), 1)]
        );
        assert!(super::parse("nowhere@1").unwrap_err().contains("unknown kill point"));
        assert!(super::parse("spawn.window").unwrap_err().contains("NAME@PASS"));
        assert!(super::parse("spawn.window@0").unwrap_err().contains("from 1"));
    }
}
