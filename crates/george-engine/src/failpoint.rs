//! Kill points for the chaos test: `GEORGE_FAILPOINTS=spawn.window@3` makes
//! this engine process `kill -9` itself the third time it passes the point
//! named `spawn.window`. Several points are separated by commas. Unset (the
//! normal case), a point costs one load of an already-initialised cell.
//!
//! The points, in the order a spawn passes them:
//! - `attempt.recorded`: the attempt is in the store, nothing is spawned;
//! - `spawn.window`: the runtime has started the agent (held at its gate),
//!   its handle is not yet in the store;
//! - `claim.window`: instead of `spawn.window` when the attempt claimed a
//!   warm agent: the runtime has claimed it (the attempt's files written,
//!   its binding not delivered), its handle is not yet in the store;
//! - `spawn.recorded`: the handle is in the store, the agent is not yet
//!   released.
//!
//! One *fault* point makes the engine fail instead of dying, so that what
//! runs it can be seen to notice: `engine.start`, where [`Engine::run`]
//! starts (it returns an error).
//!
//! [`Engine::run`]: crate::Engine::run

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The environment variable that arms kill points.
pub const ENV: &str = "GEORGE_FAILPOINTS";

/// Every kill point, for validation and documentation.
pub const POINTS: [&str; 4] = ["attempt.recorded", "spawn.window", "claim.window", "spawn.recorded"];

/// Every fault point.
pub const FAULTS: [&str; 1] = ["engine.start"];

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

/// What is wrong with a `GEORGE_FAILPOINTS` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum SpecError {
    /// Not `NAME@PASS`.
    #[error("`{0}`: expected NAME@PASS")]
    Shape(String),
    /// No such kill point.
    #[error("`{0}`: unknown kill point; expected one of {points}", points = POINTS.iter().chain(&FAULTS).copied().collect::<Vec<_>>().join(", "))]
    Point(String),
    /// The pass is not a whole number from 1.
    #[error("`{0}`: the pass must be a whole number from 1")]
    Pass(String),
}

/// Parses `name@n[,name@n...]`.
fn parse(spec: &str) -> Result<Vec<(String, u32)>, SpecError> {
    spec.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (name, at) = p.trim().split_once('@').ok_or_else(|| SpecError::Shape(p.to_string()))?;
            if !POINTS.contains(&name) && !FAULTS.contains(&name) {
                return Err(SpecError::Point(name.to_string()));
            }
            match at.parse::<u32>() {
                Ok(at) if at > 0 => Ok((name.to_string(), at)),
                _ => Err(SpecError::Pass(p.to_string())),
            }
        })
        .collect()
}

/// Whether this pass of point `name` is the armed one.
fn reached(name: &str) -> Option<u32> {
    let (passes, at) = armed().as_ref()?.points.get(name)?;
    (passes.fetch_add(1, Ordering::SeqCst) + 1 == *at).then_some(*at)
}

/// Passes the kill point `name`: kills this process with SIGKILL if it is
/// armed for this pass.
pub fn hit(name: &'static str) {
    if let Some(at) = reached(name) {
        eprintln!("george: kill point {name} reached (pass {at}); SIGKILL");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Passes the fault point `name`: whether it is armed for this pass (the
/// caller then fails).
pub fn fails(name: &'static str) -> bool {
    reached(name).is_some()
}

#[cfg(test)]
mod tests {
    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        assert_eq!(
            super::parse("spawn.window@3, attempt.recorded@1").unwrap(),
            [("spawn.window".to_string(), 3), ("attempt.recorded".to_string(), 1)]
        );
        assert!(super::parse("nowhere@1").unwrap_err().to_string().contains("unknown kill point"));
        assert_eq!(super::parse("engine.start@1").unwrap(), [("engine.start".to_string(), 1)]);
        assert!(super::parse("spawn.window").unwrap_err().to_string().contains("NAME@PASS"));
        assert!(super::parse("spawn.window@0").unwrap_err().to_string().contains("from 1"));
    }
}
