//! Whether this engine is ready to take writes: `/readyz` and the API's
//! write paths answer `503 not_ready` with `Retry-After` until the store is
//! open, the agents of a previous run are adopted and every configured
//! source has been applied once. A standby replica is ready as a standby (it
//! stores writes; the leader acts on them).

use std::time::Duration;
use tokio::sync::watch;

/// The `Retry-After` of a write refused with `503 not_ready`: how long a
/// refused agent waits before it reports again (so its silence after the
/// engine becomes ready counts only from this long after).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where the engine is in its start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Starting; waiting for what is named.
    Starting(&'static str),
    /// A standby replica: serves the API, runs no engine.
    Standby,
    /// Running, with orphans adopted and every source applied once.
    Ready,
    /// Stopped before it was ready: writes held for readiness are refused at once.
    Stopping,
}

impl Phase {
    /// Whether writes are taken.
    pub fn accepts_writes(&self) -> bool {
        !matches!(self, Phase::Starting(_) | Phase::Stopping)
    }

    /// A word for `/readyz`.
    pub fn describe(&self) -> String {
        match self {
            Phase::Starting(what) => format!("starting: {what}"),
            Phase::Standby => "standby".into(),
            Phase::Ready => "ready".into(),
            Phase::Stopping => "stopping".into(),
        }
    }
}

/// The engine's phase, shared by the engine (which moves it) and the API
/// (which reads it).
#[derive(Debug)]
pub struct Readiness {
    tx: watch::Sender<Phase>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self { tx: watch::Sender::new(Phase::Starting("adopting the agents of a previous run")) }
    }
}

impl Readiness {
    /// The phase now.
    pub fn phase(&self) -> Phase {
        self.tx.borrow().clone()
    }

    /// Moves to `phase`.
    pub fn set(&self, phase: Phase) {
        self.tx.send_replace(phase);
    }

    /// Waits up to `within` for the engine to take writes; whether it does.
    /// A starting engine that stops answers at once (a write held until
    /// then would hold the engine's stop for as long).
    pub async fn accepting_writes(&self, within: Duration) -> bool {
        let mut rx = self.tx.subscribe();
        let settled = rx.wait_for(|p| p.accepts_writes() || *p == Phase::Stopping);
        tokio::time::timeout(within, settled).await.is_ok_and(|r| r.is_ok_and(|p| p.accepts_writes()))
    }

    /// The engine stops: if it never became ready, every write waiting for
    /// that is refused now. A ready engine takes writes to the end.
    pub fn stopping(&self) {
        self.tx.send_if_modified(|p| {
            let starting = matches!(p, Phase::Starting(_));
            if starting {
                *p = Phase::Stopping;
            }
            starting
        });
    }

    /// Waits until the engine is ready (not merely a standby).
    pub async fn ready(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|p| *p == Phase::Ready).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write held while the engine starts is refused the moment a starting
    /// engine stops, not at the end of its wait (paused clock: no time passes).
    #[tokio::test(start_paused = true)]
    async fn a_starting_engine_that_stops_refuses_held_writes_at_once() {
        let r = std::sync::Arc::new(Readiness::default());
        let held = tokio::spawn({
            let r = r.clone();
            async move {
                let t0 = tokio::time::Instant::now();
                (r.accepting_writes(Duration::from_secs(5)).await, t0.elapsed())
            }
        });
        tokio::task::yield_now().await;
        r.stopping();
        let (accepted, waited) = held.await.unwrap();
        assert!(!accepted);
        assert_eq!(waited, Duration::ZERO);
        assert_eq!(r.phase(), Phase::Stopping);
    }

    /// A ready engine keeps taking writes while it stops.
    #[tokio::test(start_paused = true)]
    async fn a_ready_engine_takes_writes_while_it_stops() {
        let r = Readiness::default();
        r.set(Phase::Ready);
        r.stopping();
        assert_eq!(r.phase(), Phase::Ready);
        assert!(r.accepting_writes(Duration::from_secs(5)).await);
    }
}
