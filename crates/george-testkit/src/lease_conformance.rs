//! The conformance suite every [`LeaseLock`] passes (quickwit's shape: one
//! suite, a macro per backend — `quickwit-metastore/src/tests/mod.rs`).
//! A backend gives candidates for one lease and a way to let the current
//! term run out, as time passing would; each check tries to break the
//! election's promise: one holder at a time, and a new, higher term
//! whenever the lease changes hands or lapses.

use async_trait::async_trait;
use george_leader::LeaseLock;
use std::sync::Arc;

/// A lease backend under test.
#[async_trait]
pub trait LeaseBackend: Send + Sync {
    /// Candidate `holder`'s lock on the one lease.
    async fn candidate(&self, holder: &str) -> Arc<dyn LeaseLock>;
    /// Lets the current term run out (the database's clock moves past it,
    /// or every replica's monotonic clock does).
    async fn expire(&self);
}

async fn take(lock: &Arc<dyn LeaseLock>) -> Option<i64> {
    lock.try_acquire_or_renew().await.expect("the backend answers")
}

/// The first candidate takes a free lease; while it holds it, others get none.
pub async fn one_holder_at_a_time(b: impl LeaseBackend) {
    let (a, c) = (b.candidate("a").await, b.candidate("c").await);
    let term = take(&a).await.expect("a free lease is taken");
    assert_eq!(take(&c).await, None, "a held lease is not taken");
    assert_eq!(take(&a).await, Some(term), "renewing keeps the term");
    assert_eq!(take(&c).await, None, "a renewed lease is still held");
}

/// A released lease is taken at once by another, in a higher term; the
/// old holder cannot take it back while the new one holds it.
pub async fn a_released_lease_changes_hands_in_a_new_term(b: impl LeaseBackend) {
    let (a, c) = (b.candidate("a").await, b.candidate("c").await);
    let first = take(&a).await.expect("a free lease is taken");
    assert_eq!(take(&c).await, None);
    a.release().await.expect("the holder releases");
    let second = take(&c).await.expect("a released lease is taken at once");
    assert!(second > first, "a new term: {second} after {first}");
    assert_eq!(take(&a).await, None, "the old holder waits");
    c.release().await.expect("the holder releases");
    c.release().await.expect("releasing twice is harmless");
}

/// A lease its holder stopped renewing is taken by another, in a higher
/// term; the old holder's next try finds it held.
pub async fn a_lapsed_lease_is_taken_in_a_new_term(b: impl LeaseBackend) {
    let (a, c) = (b.candidate("a").await, b.candidate("c").await);
    let first = take(&a).await.expect("a free lease is taken");
    assert_eq!(take(&c).await, None, "held, and seen held");
    b.expire().await;
    let second = take(&c).await.expect("a lapsed lease is taken");
    assert!(second > first, "a new term: {second} after {first}");
    assert_eq!(take(&a).await, None, "the deposed holder finds it held");
}

/// Of candidates racing for a free lease, exactly one wins.
pub async fn of_racing_candidates_one_wins(b: impl LeaseBackend) {
    let mut candidates = Vec::new();
    for i in 0..6 {
        candidates.push(b.candidate(&format!("r{i}")).await);
    }
    let tries = candidates.iter().map(|c| {
        let c = c.clone();
        tokio::spawn(async move { c.try_acquire_or_renew().await })
    });
    let mut won = Vec::new();
    for t in tries.collect::<Vec<_>>() {
        if let Some(epoch) = t.await.expect("the try ran").expect("the backend answers") {
            won.push(epoch);
        }
    }
    assert_eq!(won.len(), 1, "exactly one winner: {won:?}");
}

/// Generates the suite's tests for a backend: `$make` is an async
/// expression giving a fresh [`LeaseBackend`] for each test.
#[macro_export]
macro_rules! lease_conformance_tests {
    ($make:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn one_holder_at_a_time() {
            $crate::lease_conformance::one_holder_at_a_time($make.await).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_released_lease_changes_hands_in_a_new_term() {
            $crate::lease_conformance::a_released_lease_changes_hands_in_a_new_term($make.await).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_lapsed_lease_is_taken_in_a_new_term() {
            $crate::lease_conformance::a_lapsed_lease_is_taken_in_a_new_term($make.await).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn of_racing_candidates_one_wins() {
            $crate::lease_conformance::of_racing_candidates_one_wins($make.await).await
        }
    };
}
