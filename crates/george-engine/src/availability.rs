//! Since when this engine could have heard every heartbeat. Health is judged
//! only on heartbeats the engine could have received (downtime is the
//! engine's fault, not the agent's): while the engine starts (its API holds
//! writes, heartbeats too, until it is ready) no silence counts; after it
//! becomes ready (a start, a leader change), or a stall of the engine's own
//! process (SIGSTOP, a suspended machine, a runtime
//! starved for more than [`STALL`]), an agent's silence counts only from that
//! moment on — from [`crate::readiness::RETRY_AFTER`] later when the engine
//! becomes ready, since agents refused while it started were told to wait that
//! long before they try again.

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// How often the engine notes that it runs.
pub const TICK: Duration = Duration::from_millis(100);
/// A gap between two notes longer than this means the engine did not run.
pub const STALL: Duration = Duration::from_secs(1);

/// The moment from which silence counts, kept in step with the engine's pulse.
#[derive(Debug)]
pub struct Availability {
    inner: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// Whether heartbeats can be received at all (the engine is ready).
    listening: bool,
    /// Heartbeats sent from this moment on could have been received.
    since: DateTime<Utc>,
    /// When the engine last noted that it runs (monotonic).
    pulse: Instant,
}

impl State {
    /// The engine runs at `at`; a gap since the last note longer than
    /// [`STALL`] moves `since` to `now`. Returns whether it did.
    fn note(&mut self, now: DateTime<Utc>, at: Instant) -> bool {
        let gap = at.saturating_duration_since(self.pulse);
        self.pulse = at;
        if gap <= STALL {
            return false;
        }
        tracing::warn!(
            gap_ms = gap.as_millis() as u64,
            "the engine did not run for a while; agents' silence counts from now"
        );
        self.since = now;
        true
    }
}

impl Availability {
    /// Counting from `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self { inner: Mutex::new(State { listening: false, since: now, pulse: Instant::now() }) }
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, State> {
        self.inner.lock()
    }

    /// The engine starts (or starts leading): until [`Availability::listening`],
    /// no silence counts.
    pub fn deaf(&self, now: DateTime<Utc>) {
        *self.state() = State { listening: false, since: now, pulse: Instant::now() };
    }

    /// The engine is ready at `now`: heartbeats reach it from now on, and
    /// silence counts from the `Retry-After` its refusals gave later.
    pub fn listening(&self, now: DateTime<Utc>) {
        let since = now + crate::readiness::RETRY_AFTER;
        *self.state() = State { listening: true, since, pulse: Instant::now() };
    }

    /// The engine notes that it runs; a gap since the last note longer than
    /// [`STALL`] moves `since` to `now`. Returns whether it did.
    pub fn pulse(&self, now: DateTime<Utc>) -> bool {
        self.pulse_at(now, Instant::now())
    }

    fn pulse_at(&self, now: DateTime<Utc>, at: Instant) -> bool {
        self.state().note(now, at)
    }

    /// Since when silence counts, as of `now` (noting a stall first): `now`
    /// itself while the engine is not listening yet.
    pub fn since(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut s = self.state();
        s.note(now, Instant::now());
        if s.listening {
            s.since
        } else {
            now
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_moves_the_start_of_silence_and_a_steady_pulse_does_not() {
        let t0 = DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z").unwrap().to_utc();
        let a = Availability::new(t0);
        let deaf = t0 + chrono::Duration::seconds(30);
        assert_eq!(a.since(deaf), deaf, "no silence counts before the engine listens");
        a.listening(t0);
        let after_refusals = t0 + crate::readiness::RETRY_AFTER;
        assert_eq!(a.since(t0), after_refusals, "an agent told to wait is not silent while it waits");
        let i0 = a.state().pulse;
        let later = t0 + chrono::Duration::seconds(1);
        assert!(!a.pulse_at(later, i0 + Duration::from_millis(900)));
        assert_eq!(a.state().since, after_refusals);
        let much_later = t0 + chrono::Duration::seconds(60);
        assert!(a.pulse_at(much_later, i0 + Duration::from_secs(60)));
        assert_eq!(a.state().since, much_later);
        a.listening(t0 + chrono::Duration::seconds(90));
        assert_eq!(a.state().since, t0 + chrono::Duration::seconds(90) + crate::readiness::RETRY_AFTER);
    }
}
