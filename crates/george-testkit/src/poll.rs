//! Waiting for something another process or task does: poll with a
//! deadline, and fail with what was awaited. (Not a sleep as
//! synchronisation: each poll checks the condition itself.)

use std::time::{Duration, Instant};

/// How often a condition is looked at again.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls the async check `f` until it answers `Some`, or panics after
/// `within` naming `what` was awaited.
pub async fn eventually<T>(within: Duration, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Polls the async condition `f` until it holds, or panics after `within`
/// naming `what` was awaited.
pub async fn until(within: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    eventually(within, what, async || f().await.then_some(())).await
}

/// Polls the blocking check `f` until it answers `Some`, or panics after
/// `within` naming `what` was awaited.
pub fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        std::thread::sleep(POLL);
    }
}
