//! The agent's reports, batched: step statuses, evidence, comments and the
//! verdict are queued and sent together in one call
//! (`POST /api/v1/jobs/{id}/reports`, one store transaction). A trivial job
//! is two round trips in all: `attach`, then one batch with everything; one,
//! when its context came with its release.
//!
//! When a batch goes:
//! - at once when the agent asks ([`Reports::flush`]): before each step
//!   after the first (so a step's completion is stored before the next one
//!   starts: a replacement agent resumes, it does not redo), and with the
//!   verdict;
//! - otherwise at most [`LINGER`] after a report is queued ([`Reports::run`]),
//!   so a long step is shown `in_progress` while it runs.
//!
//! Batches go one at a time and in order. One refused as superseded stops
//! the work; another failure in the background is returned by the next
//! [`Reports::flush`].

use george_client::ClientError;
use george_core::api::{AgentReport, ReportBatch};
use parking_lot::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The longest a queued report waits for others before it is sent anyway.
pub const LINGER: Duration = Duration::from_millis(50);

/// The queue of reports not yet sent.
#[derive(Default)]
pub(crate) struct Reports {
    queue: Mutex<Vec<AgentReport>>,
    /// Held while a batch is sent: batches go one at a time, in order.
    sending: tokio::sync::Mutex<()>,
    queued: Notify,
    /// A background send's failure, for the next flush to return.
    failed: Mutex<Option<ClientError>>,
    /// The number of the last batch sent (see `ReportBatch::seq`).
    sent: std::sync::atomic::AtomicU64,
}

/// What a send needs from the agent: the call with its retries.
pub(crate) trait Sender {
    /// Sends one batch, retrying while the engine is unreachable.
    fn send(&self, batch: &ReportBatch) -> impl std::future::Future<Output = Result<(), ClientError>> + Send;
}

impl Reports {
    /// Queues a report; it goes with the next batch.
    pub(crate) fn push(&self, report: AgentReport) {
        self.queue.lock().push(report);
        self.queued.notify_one();
    }

    /// Sends everything queued, now. Returns a background send's failure, if
    /// one happened since the last flush.
    pub(crate) async fn flush(&self, sender: &impl Sender) -> Result<(), ClientError> {
        let _turn = self.sending.lock().await;
        if let Some(e) = self.failed.lock().take() {
            return Err(e);
        }
        let reports = std::mem::take(&mut *self.queue.lock());
        if reports.is_empty() {
            return Ok(());
        }
        // Numbered, so a batch sent again after a lost answer is applied once.
        let seq = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        sender.send(&ReportBatch { seq: Some(seq), reports }).await
    }

    /// Sends what is queued at most [`LINGER`] after it was queued, until
    /// dropped. A batch refused as superseded cancels `superseded` and `stop`.
    pub(crate) async fn run(&self, sender: &impl Sender, stop: &CancellationToken, superseded: &CancellationToken) {
        loop {
            self.queued.notified().await;
            tokio::time::sleep(LINGER).await;
            match self.flush(sender).await {
                Ok(()) => {}
                Err(e) if e.is_superseded() => {
                    tracing::warn!("the engine superseded this attempt; stopping its step at once");
                    superseded.cancel();
                    stop.cancel();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reports could not be sent; the next flush says so");
                    *self.failed.lock() = Some(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use george_core::api::{EvidenceReport, JobReport};
    use george_core::{JobStatus, StepStatus};

    /// Records the batches it is given; refuses them all once `refuse` is set.
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<Vec<AgentReport>>>,
        refuse: Mutex<Option<fn() -> ClientError>>,
    }

    impl Sender for Recorder {
        async fn send(&self, batch: &ReportBatch) -> Result<(), ClientError> {
            if let Some(refusal) = *self.refuse.lock() {
                return Err(refusal());
            }
            self.batches.lock().push(batch.reports.clone());
            Ok(())
        }
    }

    fn step(status: StepStatus) -> AgentReport {
        AgentReport::Step { step: "s".into(), status, reason: None, at: None }
    }

    fn superseded() -> ClientError {
        ClientError::Api {
            status: 409,
            code: "superseded".into(),
            message: "attempt 1 is superseded".into(),
            details: vec![],
            retry_after: None,
        }
    }

    fn unavailable() -> ClientError {
        ClientError::Api {
            status: 503,
            code: "unavailable".into(),
            message: "down".into(),
            details: vec![],
            retry_after: None,
        }
    }

    /// A quick job's reports all go in the one batch its verdict sends.
    #[tokio::test(start_paused = true)]
    async fn a_quick_job_sends_one_batch_in_order() {
        let (reports, sender) = (Reports::default(), Recorder::default());
        let (stop, superseded) = (CancellationToken::new(), CancellationToken::new());
        let work = async {
            reports.push(step(StepStatus::InProgress));
            let ev = EvidenceReport { step_id: Some("s".into()), kind: "output".into(), content: "ok".into() };
            reports.push(AgentReport::Evidence(ev));
            reports.push(step(StepStatus::Completed));
            reports.push(AgentReport::Verdict(JobReport { status: JobStatus::Completed, reason: None }));
            reports.flush(&sender).await
        };
        tokio::select! {
            r = work => r.unwrap(),
            _ = reports.run(&sender, &stop, &superseded) => unreachable!("runs until dropped"),
        }
        let batches = sender.batches.lock().clone();
        assert_eq!(batches.len(), 1, "{batches:?}");
        assert_eq!(batches[0].len(), 4);
        assert_eq!(batches[0][0], step(StepStatus::InProgress));
        assert!(matches!(batches[0][3], AgentReport::Verdict(_)));
    }

    /// A report queued during a long step goes within the linger, on its own.
    #[tokio::test(start_paused = true)]
    async fn a_long_step_is_shown_in_progress_within_the_linger() {
        let (reports, sender) = (Reports::default(), Recorder::default());
        let (stop, superseded) = (CancellationToken::new(), CancellationToken::new());
        let started = tokio::time::Instant::now();
        let work = async {
            reports.push(step(StepStatus::InProgress));
            // The step runs for a minute; the report must not wait for it.
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if !sender.batches.lock().is_empty() {
                    return started.elapsed();
                }
                assert!(started.elapsed() < Duration::from_secs(60), "never sent");
            }
        };
        let sent_after = tokio::select! {
            t = work => t,
            _ = reports.run(&sender, &stop, &superseded) => unreachable!("runs until dropped"),
        };
        assert!(sent_after >= LINGER && sent_after <= LINGER + Duration::from_millis(2), "{sent_after:?}");
        assert_eq!(sender.batches.lock().clone(), vec![vec![step(StepStatus::InProgress)]]);
    }

    /// A background batch refused as superseded stops the work at once.
    #[tokio::test(start_paused = true)]
    async fn a_superseded_batch_stops_the_work() {
        let (reports, sender) = (Reports::default(), Recorder::default());
        *sender.refuse.lock() = Some(superseded);
        let (stop, superseded) = (CancellationToken::new(), CancellationToken::new());
        reports.push(step(StepStatus::InProgress));
        reports.run(&sender, &stop, &superseded).await;
        assert!(stop.is_cancelled() && superseded.is_cancelled());
    }

    /// Another background failure is not lost: the next flush returns it.
    #[tokio::test(start_paused = true)]
    async fn a_background_failure_is_returned_by_the_next_flush() {
        let (reports, sender) = (Reports::default(), Recorder::default());
        *sender.refuse.lock() = Some(unavailable);
        let (stop, superseded) = (CancellationToken::new(), CancellationToken::new());
        reports.push(step(StepStatus::InProgress));
        let background = async {
            reports.run(&sender, &stop, &superseded).await;
        };
        tokio::select! {
            _ = background => unreachable!("runs until dropped"),
            _ = tokio::time::sleep(LINGER * 2) => {}
        }
        *sender.refuse.lock() = None;
        let err = reports.flush(&sender).await.expect_err("the failure is returned");
        assert!(err.to_string().contains("down"), "{err}");
        assert!(!stop.is_cancelled());
        reports.push(step(StepStatus::Completed));
        reports.flush(&sender).await.unwrap();
        assert_eq!(sender.batches.lock().clone(), vec![vec![step(StepStatus::Completed)]]);
    }
}
