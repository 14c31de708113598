//! A work queue of job ids in the style of client-go's: an id is queued at
//! most once, a job is never reconciled by two workers at once (an id added
//! while it is being processed is queued again when the worker is done), and
//! ids can be scheduled for later.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Queue of job ids to reconcile.
#[derive(Debug, Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    processing: HashSet<String>,
    dirty: HashSet<String>,
    delayed: HashMap<String, Instant>,
    closed: bool,
}

impl WorkQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Queues `id` now.
    pub fn add(&self, id: &str) {
        let mut s = self.lock();
        s.delayed.remove(id);
        if s.processing.contains(id) {
            s.dirty.insert(id.to_string());
        } else if s.queued.insert(id.to_string()) {
            s.ready.push_back(id.to_string());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues `id` after `delay`, unless it is due sooner already.
    pub fn add_after(&self, id: &str, delay: Duration) {
        if delay.is_zero() {
            return self.add(id);
        }
        let at = Instant::now() + delay;
        let mut s = self.lock();
        if s.queued.contains(id) {
            return;
        }
        let e = s.delayed.entry(id.to_string()).or_insert(at);
        if at < *e {
            *e = at;
        }
        drop(s);
        // A worker may be sleeping until a later deadline.
        self.notify.notify_one();
    }

    /// Waits for the next id; `None` once the queue is closed.
    pub async fn next(&self) -> Option<String> {
        loop {
            let wait_until = {
                let mut s = self.lock();
                if s.closed {
                    return None;
                }
                let now = Instant::now();
                let due: Vec<String> = s.delayed.iter().filter(|(_, at)| **at <= now).map(|(k, _)| k.clone()).collect();
                for id in due {
                    s.delayed.remove(&id);
                    if s.processing.contains(&id) {
                        s.dirty.insert(id);
                    } else if s.queued.insert(id.clone()) {
                        s.ready.push_back(id);
                    }
                }
                if let Some(id) = s.ready.pop_front() {
                    s.queued.remove(&id);
                    s.processing.insert(id.clone());
                    if !s.ready.is_empty() {
                        self.notify.notify_one();
                    }
                    return Some(id);
                }
                s.delayed.values().min().copied()
            };
            match wait_until {
                Some(at) => {
                    tokio::select! {
                        _ = self.notify.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }

    /// Marks `id` as processed; it is queued again if it was added meanwhile.
    pub fn done(&self, id: &str) {
        let mut s = self.lock();
        s.processing.remove(id);
        if s.dirty.remove(id) && s.queued.insert(id.to_string()) {
            s.ready.push_back(id.to_string());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Number of ids waiting (now or later).
    pub fn len(&self) -> usize {
        let s = self.lock();
        s.ready.len() + s.delayed.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes every worker and makes `next` return `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn dedups_and_never_hands_out_a_job_twice_at_once() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let first = q.next().await.unwrap();
        assert_eq!(first, "a");
        q.add("a"); // while processing: deferred, not handed to another worker
        assert_eq!(q.next().await.unwrap(), "b");
        assert!(q.is_empty());
        q.done("a");
        assert_eq!(q.next().await.unwrap(), "a");
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_ids_come_due_in_order() {
        let q = WorkQueue::new();
        q.add_after("late", Duration::from_secs(10));
        q.add_after("soon", Duration::from_secs(1));
        q.add_after("late", Duration::from_secs(60)); // keeps the earlier time
        let start = Instant::now();
        assert_eq!(q.next().await.unwrap(), "soon");
        assert_eq!(start.elapsed().as_secs(), 1);
        q.done("soon");
        assert_eq!(q.next().await.unwrap(), "late");
        assert_eq!(start.elapsed().as_secs(), 10);
        q.add_after("x", Duration::from_secs(5));
        q.add("x"); // now beats later
        assert_eq!(q.next().await.unwrap(), "x");
        q.close();
        assert!(q.next().await.is_none());
    }
}
