//! A runtime's background work — waiting for an agent's exit, copying its
//! output — owned by the runtime: every task is tracked, and
//! [`Watchers::shutdown`] cancels them and waits until they have ended.
//! A runtime dropped cancels them too. Agents are not touched: they outlive the engine by design, and the next
//! engine adopts them.

use std::future::Future;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The tasks a runtime runs in the background.
#[derive(Debug, Default)]
pub struct Watchers {
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Watchers {
    /// Runs `work` until it ends or the runtime shuts down.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = work => {}
            }
        });
    }

    /// Cancels every task and waits for them to end.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
