//! Admission: the one owner of the scheduler's state — who runs, who waits
//! and since when, who is being preempted. A pending job that wants an agent
//! asks here; the answer is a list of [`Decision`]s that the reconciler
//! carries out (start, preempt, record why a job waits). Nothing here reads
//! the store or the clock of the engine, so every rule is checked directly.
//!
//! In the shape of restate's cluster controller service
//! (`crates/admin/src/cluster_controller/service.rs`): state behind one
//! handle, commands in, decisions out. A job holds a slot from admission
//! until it has no live attempt and is not about to spawn one, which the
//! reconciler re-checks on every pass.

use crate::scheduler::{self, Blocked, Limits, QueuedJob, RunningJob, Scheduler, Shares};
use george_core::Priority;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// What admission decided; the reconciler carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The job holds a slot now: reconcile it (it spawns its agent).
    Start {
        /// The job admitted.
        job: QueuedJob,
        /// How long it waited in the queue (none if it never waited).
        waited: Option<Duration>,
    },
    /// Stop the running `victim` to make room for `for_job` (a P0).
    Preempt {
        /// The running job to stop.
        victim: String,
        /// The P0 job that needs its place.
        for_job: String,
    },
    /// The job was queued and waits (recorded once, with why).
    Wait {
        /// The job queued.
        job: String,
        /// Its priority class.
        priority: Priority,
        /// Why it cannot start now.
        reason: String,
        /// Jobs queued before it when it joined.
        ahead: usize,
    },
}

/// The answer to a job's request for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Whether the job holds a slot (it may spawn now).
    pub holds: bool,
    /// What must be carried out, in order.
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Default)]
struct State {
    scheduler: Scheduler,
    /// When each queued job was queued (for the queue-wait metric).
    queued_at: HashMap<String, Instant>,
    /// Jobs being preempted right now.
    preempting: HashSet<String>,
}

impl State {
    /// Admits every job that may start now; stops at a preemption (the
    /// scheduler names the same victim until its slot frees).
    fn pump(&mut self, out: &mut Vec<Decision>) {
        loop {
            match self.scheduler.admit() {
                scheduler::Admission::Start(job) => {
                    let waited = self.queued_at.remove(&job.id).map(|t| t.elapsed());
                    out.push(Decision::Start { job, waited });
                }
                scheduler::Admission::Preempt { victim, for_job } => {
                    if !self.preempting.contains(&victim) {
                        out.push(Decision::Preempt { victim, for_job });
                    }
                    return;
                }
                scheduler::Admission::Idle => return,
            }
        }
    }
}

/// The admission service: the scheduler's state behind one lock, never
/// held across an await.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    state: Mutex<State>,
}

impl Admission {
    fn state(&self) -> parking_lot::MutexGuard<'_, State> {
        // The state is consistent after every method: a panic elsewhere
        // while it was held leaves nothing half-done to guard against.
        self.state.lock()
    }

    /// The job asks to start.
    pub fn request(&self, job: QueuedJob) -> Answer {
        let mut s = self.state();
        if s.scheduler.is_running(&job.id) {
            return Answer { holds: true, decisions: Vec::new() };
        }
        let newly = !s.scheduler.is_queued(&job.id);
        let ahead = if newly { s.scheduler.ahead_of_newcomer(job.priority) } else { 0 };
        if newly {
            s.queued_at.insert(job.id.clone(), Instant::now());
            s.scheduler.enqueue(job.clone());
        }
        let mut decisions = Vec::new();
        s.pump(&mut decisions);
        let holds = s.scheduler.is_running(&job.id);
        if newly && !holds {
            let reason = s.scheduler.blocked_by(&job).unwrap_or(Blocked::Behind).to_string();
            decisions.push(Decision::Wait { job: job.id, priority: job.priority, reason, ahead });
        }
        Answer { holds, decisions }
    }

    /// Gives back the job's slot or place in the queue (its agent is gone,
    /// or it will not start); others may start in its place.
    pub fn release(&self, id: &str) -> Vec<Decision> {
        let mut s = self.state();
        let was = s.scheduler.is_running(id) || s.scheduler.is_queued(id);
        s.scheduler.finished(id);
        s.scheduler.dequeue(id);
        s.queued_at.remove(id);
        s.preempting.remove(id);
        let mut decisions = Vec::new();
        if was {
            s.pump(&mut decisions);
        }
        decisions
    }

    /// Whether the job holds a slot or waits for one.
    pub fn is_tracked(&self, id: &str) -> bool {
        let s = self.state();
        s.scheduler.is_running(id) || s.scheduler.is_queued(id)
    }

    /// New limits and shares (the manifests changed); jobs they let start
    /// start now.
    pub fn configure(&self, limits: Limits, shares: Shares) -> Vec<Decision> {
        let mut s = self.state();
        s.scheduler.configure(limits, shares);
        let mut decisions = Vec::new();
        s.pump(&mut decisions);
        decisions
    }

    /// At start-up: a job whose agent lives holds a slot.
    pub fn restore(&self, job: RunningJob) {
        self.state().scheduler.started(job);
    }

    /// Marks `victim` as being preempted; `false` if it already is (so one
    /// preemption is carried out once).
    pub fn begin_preempting(&self, victim: &str) -> bool {
        self.state().preempting.insert(victim.to_string())
    }

    /// Jobs waiting, in all.
    pub fn queued_len(&self) -> usize {
        self.state().scheduler.queued_len()
    }

    /// Jobs waiting, per priority class.
    pub fn depth(&self) -> HashMap<Priority, usize> {
        self.state().scheduler.depth()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, priority: Priority) -> QueuedJob {
        QueuedJob { id: id.into(), priority, chapter: String::new(), agent_spec: "a".into(), due: 0 }
    }

    fn one_slot() -> Admission {
        let a = Admission::default();
        assert!(a.configure(Limits { global: Some(1), ..Default::default() }, Shares::default()).is_empty());
        a
    }

    #[test]
    fn a_job_starts_when_there_is_room_and_waits_once_when_there_is_none() {
        let a = one_slot();
        let first = a.request(job("a", Priority::P2));
        assert!(first.holds);
        assert!(matches!(&first.decisions[..], [Decision::Start { job, .. }] if job.id == "a"));
        let second = a.request(job("b", Priority::P2));
        assert!(!second.holds);
        assert_eq!(
            second.decisions,
            vec![Decision::Wait {
                job: "b".into(),
                priority: Priority::P2,
                reason: "global limit (1 agents)".into(),
                ahead: 0
            }]
        );
        // Asking again is not a second wait.
        assert_eq!(a.request(job("b", Priority::P2)), Answer { holds: false, decisions: vec![] });
        // The slot frees: the waiting job starts.
        let freed = a.release("a");
        assert!(matches!(&freed[..], [Decision::Start { job, waited: Some(_) }] if job.id == "b"));
        assert!(a.request(job("b", Priority::P2)).holds);
        assert!(!a.is_tracked("a") && a.is_tracked("b"));
    }

    #[test]
    fn a_p0_preempts_once_and_starts_when_the_victim_is_gone() {
        let a = one_slot();
        assert!(a.request(job("low", Priority::P3)).holds);
        let urgent = a.request(job("urgent", Priority::P0));
        assert!(!urgent.holds);
        assert_eq!(urgent.decisions[0], Decision::Preempt { victim: "low".into(), for_job: "urgent".into() });
        assert!(a.begin_preempting("low"));
        assert!(!a.begin_preempting("low"), "one preemption is carried out once");
        // While the victim stops, no second preemption is decided.
        assert!(a.configure(Limits { global: Some(1), ..Default::default() }, Shares::default()).is_empty());
        let gone = a.release("low");
        assert!(matches!(&gone[..], [Decision::Start { job, .. }] if job.id == "urgent"));
    }

    #[test]
    fn raising_a_limit_starts_the_waiting_jobs() {
        let a = one_slot();
        a.request(job("a", Priority::P2));
        a.request(job("b", Priority::P2));
        a.request(job("c", Priority::P2));
        assert_eq!(a.queued_len(), 2);
        let started = a.configure(Limits { global: Some(3), ..Default::default() }, Shares::default());
        let ids: Vec<&str> = started
            .iter()
            .filter_map(|d| if let Decision::Start { job, .. } = d { Some(&*job.id) } else { None })
            .collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(a.queued_len(), 0);
    }
}
