//! The scheduler's queue and its decisions.

use george_core::Priority;
use std::collections::{BTreeSet, HashMap};

/// A job waiting for an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    /// Job id.
    pub id: String,
    /// Priority class.
    pub priority: Priority,
    /// Chapter (`""` when none).
    pub chapter: String,
    /// AgentSpec that will run it.
    pub agent_spec: String,
    /// When it became due to start (microseconds since the epoch: its
    /// creation, or the end of its wait or backoff): jobs of a class start in
    /// this order, whichever reached the scheduler first; ties in arrival order.
    pub due: i64,
}

/// A job whose agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningJob {
    /// Job id.
    pub id: String,
    /// Priority class.
    pub priority: Priority,
    /// Chapter (`""` when none).
    pub chapter: String,
    /// AgentSpec.
    pub agent_spec: String,
}

/// Concurrency limits; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Agents in all.
    pub global: Option<u32>,
    /// Agents per chapter.
    pub chapter: HashMap<String, u32>,
    /// Agents per AgentSpec.
    pub agent_spec: HashMap<String, u32>,
}

/// Fair-share settings per chapter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shares {
    /// Weight (default 1).
    pub weight: HashMap<String, u32>,
    /// Guaranteed minimum number of running agents.
    pub min_share: HashMap<String, u32>,
}

/// The scheduler's answer for the next job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Start this job now.
    Start(QueuedJob),
    /// Nothing can start; to make room for `for_job` (a P0), stop `victim`.
    Preempt {
        /// The running job to stop.
        victim: String,
        /// The P0 job that needs its place.
        for_job: String,
    },
    /// Nothing can start now.
    Idle,
}

/// Why a queued job waits (recorded as the reason of its `job.queued` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// The engine runs as many agents as it may.
    Global(u32),
    /// The chapter runs as many agents as it may.
    Chapter(String, u32),
    /// The AgentSpec runs as many agents as it may.
    AgentSpec(String, u32),
    /// Jobs of higher priority or fairer chapters go first.
    Behind,
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blocked::Global(n) => write!(f, "global limit ({n} agents)"),
            Blocked::Chapter(c, n) => write!(f, "chapter limit ({c}: {n} agents)"),
            Blocked::AgentSpec(s, n) => write!(f, "AgentSpec limit ({s}: {n} agents)"),
            Blocked::Behind => write!(f, "waiting behind higher-priority or fairer work"),
        }
    }
}

/// Arrival order: one counter for enqueues and starts.
type Seq = u64;

/// Ordering key of a queued job within its chapter and class: when it
/// became due, then its arrival.
type Order = (i64, Seq);

#[derive(Debug, Default)]
struct ChapterState {
    /// Queued jobs per priority class, the earliest due first.
    queued: HashMap<Priority, BTreeSet<(Order, String)>>,
    running: u32,
}

/// The scheduler state.
#[derive(Debug, Default)]
pub struct Scheduler {
    limits: Limits,
    shares: Shares,
    chapters: HashMap<String, ChapterState>,
    /// Queued jobs by id: (job, seq).
    queued: HashMap<String, (QueuedJob, Seq)>,
    /// Queued jobs per priority class (kept with `queued`).
    per_class: HashMap<Priority, usize>,
    /// Running jobs by id.
    running: HashMap<String, (RunningJob, Seq)>,
    /// Running jobs ordered for preemption: lowest priority, newest first.
    victims: BTreeSet<(std::cmp::Reverse<Priority>, std::cmp::Reverse<Seq>, String)>,
    running_per_spec: HashMap<String, u32>,
    next_seq: Seq,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(limits: Limits, shares: Shares) -> Self {
        Self { limits, shares, ..Default::default() }
    }

    /// Replaces the limits and shares (manifests changed).
    pub fn configure(&mut self, limits: Limits, shares: Shares) {
        self.limits = limits;
        self.shares = shares;
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn seq(&mut self) -> Seq {
        self.next_seq += 1;
        self.next_seq
    }

    /// Queues a job (a no-op if it is queued or running already). O(log n).
    pub fn enqueue(&mut self, job: QueuedJob) {
        if self.queued.contains_key(&job.id) || self.running.contains_key(&job.id) {
            return;
        }
        let seq = self.seq();
        self.chapters
            .entry(job.chapter.clone())
            .or_default()
            .queued
            .entry(job.priority)
            .or_default()
            .insert(((job.due, seq), job.id.clone()));
        *self.per_class.entry(job.priority).or_default() += 1;
        self.queued.insert(job.id.clone(), (job, seq));
    }

    /// How many queued jobs come before a job of `priority` that joins now:
    /// those of more urgent classes and those of its own. O(classes).
    pub fn ahead_of_newcomer(&self, priority: Priority) -> usize {
        let more_urgent = Priority::ALL.iter().take_while(|p| **p != priority);
        more_urgent.chain([&priority]).map(|p| self.per_class.get(p).copied().unwrap_or(0)).sum()
    }

    /// Takes a job out of the queue (aborted, paused, gone). O(log n).
    pub fn dequeue(&mut self, id: &str) -> Option<QueuedJob> {
        let (job, seq) = self.queued.remove(id)?;
        if let Some(n) = self.per_class.get_mut(&job.priority) {
            *n = n.saturating_sub(1);
        }
        if let Some(ch) = self.chapters.get_mut(&job.chapter) {
            if let Some(set) = ch.queued.get_mut(&job.priority) {
                set.remove(&((job.due, seq), job.id.clone()));
            }
        }
        Some(job)
    }

    /// Records that a job's agent runs (admitted, or found running at start-up). O(log n).
    pub fn started(&mut self, job: RunningJob) {
        if self.running.contains_key(&job.id) {
            return;
        }
        self.dequeue(&job.id);
        let seq = self.seq();
        self.chapters.entry(job.chapter.clone()).or_default().running += 1;
        *self.running_per_spec.entry(job.agent_spec.clone()).or_default() += 1;
        self.victims.insert((std::cmp::Reverse(job.priority), std::cmp::Reverse(seq), job.id.clone()));
        self.running.insert(job.id.clone(), (job, seq));
    }

    /// Records that a job's agent is gone. O(log n).
    pub fn finished(&mut self, id: &str) {
        let Some((job, seq)) = self.running.remove(id) else { return };
        if let Some(ch) = self.chapters.get_mut(&job.chapter) {
            ch.running = ch.running.saturating_sub(1);
        }
        if let Some(n) = self.running_per_spec.get_mut(&job.agent_spec) {
            *n = n.saturating_sub(1);
        }
        self.victims.remove(&(std::cmp::Reverse(job.priority), std::cmp::Reverse(seq), job.id));
    }

    /// Whether a job is queued.
    pub fn is_queued(&self, id: &str) -> bool {
        self.queued.contains_key(id)
    }

    /// Whether a job is counted as running.
    pub fn is_running(&self, id: &str) -> bool {
        self.running.contains_key(id)
    }

    /// Queued jobs per priority class. O(classes).
    pub fn depth(&self) -> HashMap<Priority, usize> {
        self.per_class.iter().filter(|(_, n)| **n > 0).map(|(p, n)| (*p, *n)).collect()
    }

    /// Queued jobs in all.
    pub fn queued_len(&self) -> usize {
        self.queued.len()
    }

    /// Running jobs in all.
    pub fn running_len(&self) -> usize {
        self.running.len()
    }

    fn global_full(&self) -> Option<u32> {
        self.limits.global.filter(|g| self.running.len() as u32 >= *g)
    }

    /// Why `job` cannot start now, if it cannot.
    pub fn blocked_by(&self, job: &QueuedJob) -> Option<Blocked> {
        if let Some(g) = self.global_full() {
            return Some(Blocked::Global(g));
        }
        if let Some(max) = self.limits.chapter.get(&job.chapter) {
            if self.chapters.get(&job.chapter).map_or(0, |c| c.running) >= *max {
                return Some(Blocked::Chapter(job.chapter.clone(), *max));
            }
        }
        if let Some(max) = self.limits.agent_spec.get(&job.agent_spec) {
            if self.running_per_spec.get(&job.agent_spec).copied().unwrap_or(0) >= *max {
                return Some(Blocked::AgentSpec(job.agent_spec.clone(), *max));
            }
        }
        None
    }

    /// How far below its share a chapter is: smaller goes first. Chapters
    /// under their guaranteed minimum come before every other chapter.
    fn fairness(&self, chapter: &str) -> (bool, u64) {
        let running = self.chapters.get(chapter).map_or(0, |c| c.running) as u64;
        let min = self.shares.min_share.get(chapter).copied().unwrap_or(0) as u64;
        let weight = self.shares.weight.get(chapter).copied().unwrap_or(1).max(1) as u64;
        // running / weight, compared as fractions scaled by a common factor.
        (running >= min, running * 1_000_000 / weight)
    }

    /// The next job to start, in priority, fairness and age order, without
    /// taking it out of the queue; or the preemption a waiting P0 needs.
    pub fn peek(&self) -> Admission {
        let global_full = self.global_full().is_some();
        for priority in Priority::ALL {
            // Each chapter's oldest job of this class that its limits allow.
            let mut best: Option<((bool, u64), Order, &QueuedJob)> = None;
            let mut p0_waiting: Option<&QueuedJob> = None;
            for (name, ch) in &self.chapters {
                let Some(set) = ch.queued.get(priority) else { continue };
                // Bounded scan past jobs held by their AgentSpec's limit.
                for (order, id) in set.iter().take(64) {
                    let (job, _) = &self.queued[id];
                    match self.blocked_by(job) {
                        None => {
                            let key = (self.fairness(name), *order, job);
                            if best.as_ref().is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
                                best = Some(key);
                            }
                            break;
                        }
                        Some(Blocked::Global(_)) => {
                            p0_waiting = p0_waiting.or(Some(job));
                            break;
                        }
                        Some(_) => continue,
                    }
                }
            }
            if let Some((_, _, job)) = best {
                return Admission::Start(job.clone());
            }
            if *priority == Priority::P0 && global_full {
                if let Some(job) = p0_waiting {
                    if let Some((std::cmp::Reverse(p), _, victim)) = self.victims.iter().next() {
                        if *p >= Priority::P2 {
                            return Admission::Preempt { victim: victim.clone(), for_job: job.id.clone() };
                        }
                    }
                }
            }
        }
        Admission::Idle
    }

    /// Takes the next job to start out of the queue and counts it as running.
    pub fn admit(&mut self) -> Admission {
        match self.peek() {
            Admission::Start(job) => {
                self.started(RunningJob {
                    id: job.id.clone(),
                    priority: job.priority,
                    chapter: job.chapter.clone(),
                    agent_spec: job.agent_spec.clone(),
                });
                Admission::Start(job)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, p: Priority, chapter: &str, spec: &str) -> QueuedJob {
        QueuedJob { id: id.into(), priority: p, chapter: chapter.into(), agent_spec: spec.into(), due: 0 }
    }

    fn started(id: &str, p: Priority, chapter: &str) -> RunningJob {
        RunningJob { id: id.into(), priority: p, chapter: chapter.into(), agent_spec: "a".into() }
    }

    fn admit_ids(s: &mut Scheduler, n: usize) -> Vec<String> {
        (0..n)
            .map_while(|_| match s.admit() {
                Admission::Start(j) => Some(j.id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn priority_then_age() {
        let mut s = Scheduler::default();
        s.enqueue(job("p2-old", Priority::P2, "", "a"));
        s.enqueue(job("bg", Priority::Background, "", "a"));
        s.enqueue(job("p0", Priority::P0, "", "a"));
        s.enqueue(job("p2-new", Priority::P2, "", "a"));
        s.enqueue(job("p1", Priority::P1, "", "a"));
        s.enqueue(job("p1", Priority::P1, "", "a")); // twice: still once
        assert_eq!(admit_ids(&mut s, 10), ["p0", "p1", "p2-old", "p2-new", "bg"]);
        assert_eq!(s.admit(), Admission::Idle);
    }

    #[test]
    fn jobs_of_a_class_start_in_the_order_they_became_due_not_of_arrival() {
        // Passes run side by side: a job due earlier may reach the scheduler later.
        let due = |id: &str, chapter: &str, at: i64| QueuedJob { due: at, ..job(id, Priority::P2, chapter, "a") };
        let mut s = Scheduler::default();
        s.enqueue(due("second", "", 200));
        s.enqueue(due("third", "", 300));
        s.enqueue(due("first", "", 100));
        s.enqueue(due("also-second", "", 200)); // a tie: arrival decides
        s.enqueue(due("latest", "", 900));
        assert_eq!(admit_ids(&mut s, 10), ["first", "second", "also-second", "third", "latest"]);
        // Across chapters equally served, too.
        s.enqueue(due("pay-late", "pay", 500));
        s.enqueue(due("search-early", "search", 400));
        assert_eq!(admit_ids(&mut s, 10), ["search-early", "pay-late"]);
        // A dequeued job leaves no trace of its place.
        s.enqueue(due("gone", "", 1));
        s.enqueue(due("kept", "", 2));
        assert!(s.dequeue("gone").is_some());
        assert_eq!(admit_ids(&mut s, 10), ["kept"]);
    }

    #[test]
    fn limits_hold_jobs_back_and_say_why() {
        let limits = Limits {
            global: Some(3),
            chapter: HashMap::from([("pay".into(), 1)]),
            agent_spec: HashMap::from([("gpu".into(), 1)]),
        };
        let mut s = Scheduler::new(limits, Shares::default());
        s.enqueue(job("pay-1", Priority::P2, "pay", "a"));
        s.enqueue(job("pay-2", Priority::P1, "pay", "a"));
        s.enqueue(job("gpu-1", Priority::P2, "search", "gpu"));
        s.enqueue(job("gpu-2", Priority::P2, "search", "gpu"));
        s.enqueue(job("plain", Priority::P3, "search", "a"));
        assert_eq!(admit_ids(&mut s, 10), ["pay-2", "gpu-1", "plain"]);
        assert_eq!(s.blocked_by(&job("pay-1", Priority::P2, "pay", "a")), Some(Blocked::Global(3)));
        s.finished("plain");
        assert_eq!(s.blocked_by(&job("pay-1", Priority::P2, "pay", "a")), Some(Blocked::Chapter("pay".into(), 1)));
        assert_eq!(
            s.blocked_by(&job("gpu-2", Priority::P2, "search", "gpu")),
            Some(Blocked::AgentSpec("gpu".into(), 1))
        );
        assert_eq!(s.admit(), Admission::Idle, "pay-1 and gpu-2 are both held by their limits");
        s.finished("gpu-1");
        assert_eq!(admit_ids(&mut s, 10), ["gpu-2"]);
        assert_eq!(Blocked::Chapter("pay".into(), 1).to_string(), "chapter limit (pay: 1 agents)");
    }

    #[test]
    fn a_p0_preempts_the_newest_lowest_priority_job_at_p2_or_below() {
        let mut s = Scheduler::new(Limits { global: Some(3), ..Default::default() }, Shares::default());
        s.started(started("p1", Priority::P1, ""));
        s.started(started("p3-old", Priority::P3, ""));
        s.started(started("p3-new", Priority::P3, ""));
        s.enqueue(job("p1-wait", Priority::P1, "", "a"));
        assert_eq!(s.admit(), Admission::Idle, "only a P0 preempts");
        s.enqueue(job("urgent", Priority::P0, "", "a"));
        assert_eq!(s.admit(), Admission::Preempt { victim: "p3-new".into(), for_job: "urgent".into() });
        s.finished("p3-new");
        assert_eq!(admit_ids(&mut s, 1), ["urgent"]);
        // With only P0/P1 work running, nothing is preempted.
        let mut s = Scheduler::new(Limits { global: Some(1), ..Default::default() }, Shares::default());
        s.started(started("p1", Priority::P1, ""));
        s.enqueue(job("urgent", Priority::P0, "", "a"));
        assert_eq!(s.admit(), Admission::Idle);
    }

    #[test]
    fn fair_share_follows_weights_over_a_long_run() {
        // Two chapters flood the queue; weights 3:1; jobs finish in start order.
        let shares = Shares { weight: HashMap::from([("a".into(), 3), ("b".into(), 1)]), ..Default::default() };
        let mut s = Scheduler::new(Limits { global: Some(8), ..Default::default() }, shares);
        for i in 0..5000 {
            s.enqueue(job(&format!("a{i}"), Priority::P2, "a", "x"));
            s.enqueue(job(&format!("b{i}"), Priority::P2, "b", "x"));
        }
        let mut running = std::collections::VecDeque::new();
        let mut started_a = 0;
        let mut total = 0;
        for _ in 0..4000 {
            while let Admission::Start(j) = s.admit() {
                if j.chapter == "a" {
                    started_a += 1;
                }
                total += 1;
                running.push_back(j.id);
            }
            let done = running.pop_front().unwrap();
            s.finished(&done);
        }
        let share_a = started_a as f64 / total as f64;
        assert!((share_a - 0.75).abs() < 0.02, "chapter a got {share_a:.3} of the starts, expected 0.75 ± 0.02");
    }

    #[test]
    fn a_guaranteed_minimum_beats_a_heavier_weight() {
        let shares = Shares {
            weight: HashMap::from([("big".into(), 100), ("small".into(), 1)]),
            min_share: HashMap::from([("small".into(), 2)]),
        };
        let mut s = Scheduler::new(Limits { global: Some(4), ..Default::default() }, shares);
        for i in 0..10 {
            s.enqueue(job(&format!("big{i}"), Priority::P2, "big", "x"));
        }
        for i in 0..10 {
            s.enqueue(job(&format!("small{i}"), Priority::P2, "small", "x"));
        }
        let first = admit_ids(&mut s, 4);
        assert_eq!(first.iter().filter(|id| id.starts_with("small")).count(), 2, "{first:?}");
    }

    #[test]
    fn dequeue_and_depth() {
        let mut s = Scheduler::default();
        s.enqueue(job("x", Priority::P3, "c", "a"));
        s.enqueue(job("y", Priority::P3, "c", "a"));
        s.enqueue(job("z", Priority::P0, "c", "a"));
        assert_eq!(s.depth()[&Priority::P3], 2);
        assert!(s.dequeue("x").is_some());
        assert!(s.dequeue("x").is_none());
        assert_eq!(admit_ids(&mut s, 5), ["z", "y"]);
        assert_eq!((s.queued_len(), s.running_len()), (0, 2));
    }
}
