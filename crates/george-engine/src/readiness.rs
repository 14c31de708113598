//! Whether this engine is ready to take writes: `/readyz` and the API's
//! write paths answer `503 not_ready` with `Retry-After` until the store is
//! open, the agents of a previous run are adopted and every configured
//! source has been applied once. A standby replica is ready as a standby (it
//! stores writes; the leader acts on them).

use tokio::sync::watch;

/// Where the engine is in its start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Starting; waiting for what is named.
    Starting(&'static str),
    /// A standby replica: serves the API, runs no engine.
    Standby,
    /// Running, with orphans adopted and every source applied once.
    Ready,
}

impl Phase {
    /// Whether writes are taken.
    pub fn accepts_writes(&self) -> bool {
        !matches!(self, Phase::Starting(_))
    }

    /// A word for `/readyz`.
    pub fn describe(&self) -> String {
        match self {
            Phase::Starting(what) => format!("starting: {what}"),
            Phase::Standby => "standby".into(),
            Phase::Ready => "ready".into(),
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
    pub async fn accepting_writes(&self, within: std::time::Duration) -> bool {
        let mut rx = self.tx.subscribe();
        tokio::time::timeout(within, rx.wait_for(Phase::accepts_writes)).await.is_ok_and(|r| r.is_ok())
    }

    /// Waits until the engine is ready (not merely a standby).
    pub async fn ready(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|p| *p == Phase::Ready).await;
    }
}
