//! Which of a store's read connections a read takes: a free one, else the
//! next in turn (and waits for it).

use std::sync::atomic::{AtomicUsize, Ordering};

/// A free connection of `readers` (`free` says which are), else the next in
/// turn after `next`, which moves on.
pub(crate) fn pick<'a, T>(readers: &'a [T], next: &AtomicUsize, free: impl Fn(&T) -> bool) -> &'a T {
    let start = next.fetch_add(1, Ordering::Relaxed);
    let n = readers.len();
    (0..n).map(|i| &readers[(start + i) % n]).find(|r| free(r)).unwrap_or(&readers[start % n])
}
