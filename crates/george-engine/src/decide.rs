//! The reconcile decision: from a job's desired and observed state to the one
//! next action. Pure and deterministic: time comes in as `now`, so every rule
//! is unit-tested without waiting.

use chrono::{DateTime, Utc};
use george_core::manifest::HealthCheck;
use george_core::record::Attempt;
use george_core::{AgentState, DesiredState, JobStatus};
use george_runtime::AgentStatus;
use george_store::{AttemptEnd, JobState, StatusChange};
use std::time::Duration;

/// Retry policy for failed attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Wait after the first failure.
    pub initial_backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
    /// Failed attempts before the job fails (when its template sets none).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { initial_backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(300), max_attempts: 5 }
    }
}

impl RetryPolicy {
    /// The wait before the attempt after `failures` failures: doubling from
    /// `initial_backoff`, capped at `max_backoff`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// Rules the decision follows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// Health checks.
    pub health: HealthCheck,
    /// Retries.
    pub retry: RetryPolicy,
    /// How long an agent that reported a final status may take to exit.
    pub exit_grace: Duration,
    /// Longest an agent may run (from its AgentSpec), if limited.
    pub max_active: Option<Duration>,
    /// Since when this engine could have heard every heartbeat: silence
    /// before it (the engine's own downtime) never counts.
    pub heard_since: DateTime<Utc>,
}

/// What the reconciler observed of the current attempt's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// No live attempt.
    NoAgent,
    /// The runtime says the agent runs.
    Running,
    /// The agent runs and this engine is stopping it right now.
    Stopping,
    /// The runtime could not say (e.g. the Docker Engine did not answer):
    /// nothing is concluded, the job is looked at again shortly.
    Unknown,
    /// The runtime says it is gone.
    Gone(AgentStatus),
    /// The attempt has no runtime handle (the engine stopped between recording
    /// the attempt and spawning it).
    NotSpawned,
}

/// The one next action.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing to do; look again after the given time (if any).
    Wait(Option<Duration>),
    /// Start a new attempt.
    Spawn,
    /// Stop the current attempt's agent.
    Terminate {
        /// The attempt.
        attempt: u32,
        /// Why (recorded as the attempt's outcome).
        reason: String,
        /// Whether stopping it counts as a failed attempt.
        failure: bool,
    },
    /// Record that the current attempt's agent is gone and clean up after it.
    EndAttempt {
        /// The attempt.
        attempt: u32,
        /// How it ended.
        end: AttemptEnd,
    },
    /// Change the job's status.
    SetStatus(StatusChange),
}

/// How an attempt that never ran its agent ends: the engine stopped between
/// recording the attempt and releasing the agent. Not a failed attempt.
pub const NEVER_STARTED: &str = "never started";
/// How an attempt ends whose agent was stopped because its job was paused.
/// Not a failed attempt (the job may be resumed before it shows paused).
pub const PAUSED: &str = "job paused";
/// How an attempt ends whose agent was stopped because George itself was
/// stopped (`george up` interrupted). Not a failed attempt.
pub const INTERRUPTED: &str = "interrupted";

/// Whether an attempt that ended with `outcome` ended through no fault of
/// its agent (preempted, never started, interrupted): the job goes back to
/// the queue without counting a failure, and its completed steps stay.
pub fn not_the_agents_fault(outcome: &str) -> bool {
    outcome.starts_with("preempted")
        || outcome.starts_with(NEVER_STARTED)
        || outcome.starts_with(INTERRUPTED)
        // Stopped for a pause that was lifted before the job showed it paused.
        || outcome.starts_with(PAUSED)
}

fn since(now: DateTime<Utc>, t: DateTime<Utc>) -> Duration {
    (now - t).to_std().unwrap_or_default()
}

fn change(from: JobStatus, to: JobStatus, reason: impl Into<Option<String>>) -> Action {
    Action::SetStatus(StatusChange { from, to, reason: reason.into(), next_attempt_at: None, count_failure: false })
}

/// Decides the next action for a job.
pub fn decide(state: &JobState, observed: Observed, now: DateTime<Utc>, rules: &Rules) -> Action {
    let job = &state.job;
    let live = state.current.as_ref().filter(|a| a.state.is_live());
    if let Some(agent) = live {
        return decide_live(state, agent, observed, now, rules);
    }

    // No agent runs for this job.
    match (job.desired, job.status) {
        (_, s) if s.is_final() => Action::Wait(None),
        (DesiredState::Aborted, s) => change(s, JobStatus::Aborted, reason_or(job.reason.clone(), "aborted")),
        (DesiredState::Paused, JobStatus::Paused) => Action::Wait(None),
        (DesiredState::Paused, s) => change(s, JobStatus::Paused, reason_or(job.reason.clone(), "paused")),
        (DesiredState::Active, JobStatus::Paused) => {
            change(JobStatus::Paused, JobStatus::Pending, reason_or(job.reason.clone(), "resumed"))
        }
        (DesiredState::Active, JobStatus::InProgress) => {
            // The attempt ended without the agent saying the job is done.
            let outcome =
                state.current.as_ref().and_then(|a| a.outcome.clone()).unwrap_or_else(|| "agent stopped".into());
            if not_the_agents_fault(&outcome) {
                // Stopped to make room for more urgent work, or never let
                // start: back to the queue, not a failure; completed steps
                // stay completed.
                return Action::SetStatus(StatusChange {
                    from: JobStatus::InProgress,
                    to: JobStatus::Pending,
                    reason: Some(outcome.split(" (").next().unwrap_or(&outcome).to_string()),
                    next_attempt_at: None,
                    count_failure: false,
                });
            }
            let failures = job.failures + 1;
            let max = job.max_attempts.unwrap_or(rules.retry.max_attempts).max(1);
            if failures >= max {
                Action::SetStatus(StatusChange {
                    from: JobStatus::InProgress,
                    to: JobStatus::Failed,
                    reason: Some(format!("gave up after {failures} failed attempts; last: {outcome}")),
                    next_attempt_at: None,
                    count_failure: true,
                })
            } else {
                let wait = rules.retry.backoff(failures);
                Action::SetStatus(StatusChange {
                    from: JobStatus::InProgress,
                    to: JobStatus::Pending,
                    reason: Some(format!(
                        "attempt {} failed ({outcome}); retrying in {}",
                        job.attempt,
                        humantime::format_duration(wait)
                    )),
                    next_attempt_at: Some(now + chrono::Duration::from_std(wait).unwrap_or_default()),
                    count_failure: true,
                })
            }
        }
        (DesiredState::Active, JobStatus::Blocked) => {
            let answered = match (state.latest_comment, state.blocked_at_comment) {
                (Some(latest), Some(at)) => latest > at,
                (Some(_), None) => true,
                _ => false,
            };
            if answered {
                change(JobStatus::Blocked, JobStatus::Pending, Some("unblocked: new comment".to_string()))
            } else {
                Action::Wait(None)
            }
        }
        (DesiredState::Active, JobStatus::Pending) => match job.next_attempt_at {
            Some(at) if at > now => Action::Wait(Some(since(at, now))),
            _ => Action::Spawn,
        },
        (DesiredState::Active, _) => Action::Wait(None),
    }
}

fn reason_or(reason: Option<String>, default: &str) -> Option<String> {
    Some(reason.unwrap_or_else(|| default.to_string()))
}

fn decide_live(state: &JobState, agent: &Attempt, observed: Observed, now: DateTime<Utc>, rules: &Rules) -> Action {
    let job = &state.job;
    let attempt = agent.attempt;
    match observed {
        Observed::Gone(status) => {
            let outcome = match agent.outcome.as_deref() {
                Some(why) => format!("{why} ({})", status.describe()),
                None => status.describe(),
            };
            let exit_code = match status {
                AgentStatus::Exited { code, .. } => code,
                AgentStatus::Running => None,
            };
            return Action::EndAttempt { attempt, end: AttemptEnd { exit_code, outcome } };
        }
        Observed::NotSpawned | Observed::NoAgent => {
            return Action::EndAttempt {
                attempt,
                end: AttemptEnd {
                    exit_code: None,
                    outcome: format!("{NEVER_STARTED} (the engine stopped before spawning its agent)"),
                },
            };
        }
        Observed::Stopping => return Action::Wait(Some(rules.exit_grace)),
        Observed::Unknown => return Action::Wait(Some(Duration::from_secs(2))),
        Observed::Running => {}
    }
    if job.status.is_final() || job.status == JobStatus::Blocked {
        // The agent reported its verdict and is exiting on its own; give it a moment.
        let waited = since(now, job.updated_at);
        if waited < rules.exit_grace {
            return Action::Wait(Some(rules.exit_grace - waited));
        }
        return Action::Terminate {
            attempt,
            reason: format!("did not exit after the job became {}", job.status),
            failure: false,
        };
    }
    match job.desired {
        DesiredState::Paused => return Action::Terminate { attempt, reason: PAUSED.into(), failure: false },
        DesiredState::Aborted => return Action::Terminate { attempt, reason: "job aborted".into(), failure: false },
        DesiredState::Active => {}
    }
    if agent.state == AgentState::Cooling {
        // It was being stopped when the engine restarted: stop it again.
        let reason = agent.outcome.clone().unwrap_or_else(|| "stopping".into());
        return Action::Terminate { attempt, reason, failure: true };
    }
    let last_sign = agent.last_heartbeat.unwrap_or(agent.started_at).max(rules.heard_since);
    let silent = since(now, last_sign);
    let grace = rules.health.grace();
    if silent >= grace {
        return Action::Terminate {
            attempt,
            reason: format!("unhealthy: no heartbeat for {}s", silent.as_secs()),
            failure: true,
        };
    }
    let mut next = grace - silent;
    if let Some(max) = rules.max_active {
        let active = since(now, agent.started_at);
        if active >= max {
            return Action::Terminate {
                attempt,
                reason: format!("timeout: ran longer than maxActiveDuration {}", humantime::format_duration(max)),
                failure: true,
            };
        }
        next = next.min(max - active);
    }
    Action::Wait(Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use george_core::plan::Origin;
    use george_core::record::Job;
    use george_core::Clock;
    use george_core::{ManualClock, Priority};

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z").unwrap().to_utc()
    }

    fn rules() -> Rules {
        Rules {
            health: HealthCheck::default(), // grace = 10s * 3 + 5s = 35s
            retry: RetryPolicy {
                initial_backoff: Duration::from_secs(2),
                max_backoff: Duration::from_secs(60),
                max_attempts: 3,
            },
            exit_grace: Duration::from_secs(10),
            max_active: Some(Duration::from_secs(600)),
            heard_since: t0() - chrono::Duration::days(1),
        }
    }

    fn job(status: JobStatus, desired: DesiredState) -> JobState {
        JobState {
            job: Job {
                id: "j".into(),
                template: "t".into(),
                agent: "a".into(),
                status,
                reason: None,
                desired,
                priority: Priority::P2,
                chapter: None,
                params: Default::default(),
                labels: Default::default(),
                origin: Origin::default(),
                attempt: 0,
                failures: 0,
                max_attempts: None,
                parallelism: 4,
                fail_fast: true,
                next_attempt_at: None,
                created_at: t0(),
                updated_at: t0(),
                steps: vec![],
            },
            current: None,
            latest_comment: None,
            blocked_at_comment: None,
        }
    }

    fn with_agent(mut s: JobState, state: AgentState) -> JobState {
        s.job.attempt = 1;
        s.current = Some(Attempt {
            job_id: "j".into(),
            attempt: 1,
            agent_spec: "a".into(),
            runtime: "process".into(),
            handle: None,
            state,
            started_at: t0(),
            last_heartbeat: None,
            ended_at: None,
            exit_code: None,
            outcome: None,
        });
        s
    }

    #[test]
    fn pending_spawns_unless_backing_off() {
        let s = job(JobStatus::Pending, DesiredState::Active);
        assert_eq!(decide(&s, Observed::NoAgent, t0(), &rules()), Action::Spawn);
        let mut s = s;
        s.job.next_attempt_at = Some(t0() + chrono::Duration::seconds(4));
        assert_eq!(decide(&s, Observed::NoAgent, t0(), &rules()), Action::Wait(Some(Duration::from_secs(4))));
        assert_eq!(decide(&s, Observed::NoAgent, t0() + chrono::Duration::seconds(4), &rules()), Action::Spawn);
    }

    #[test]
    fn a_silent_agent_is_unhealthy_after_the_grace() {
        let clock = ManualClock::new(t0());
        let s = with_agent(job(JobStatus::InProgress, DesiredState::Active), AgentState::Awakening);
        assert_eq!(decide(&s, Observed::Running, clock.now(), &rules()), Action::Wait(Some(Duration::from_secs(35))));
        clock.advance(Duration::from_secs(34));
        assert_eq!(decide(&s, Observed::Running, clock.now(), &rules()), Action::Wait(Some(Duration::from_secs(1))));
        clock.advance(Duration::from_secs(1));
        match decide(&s, Observed::Running, clock.now(), &rules()) {
            Action::Terminate { failure: true, reason, .. } => {
                assert!(reason.contains("no heartbeat for 35s"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // A heartbeat resets the clock.
        let mut s = s;
        s.current.as_mut().unwrap().last_heartbeat = Some(clock.now());
        assert_eq!(decide(&s, Observed::Running, clock.now(), &rules()), Action::Wait(Some(Duration::from_secs(35))));
    }

    #[test]
    fn silence_while_the_engine_was_down_never_counts() {
        // The agent's last heartbeat was 56 s ago, but the engine has been up
        // for 10 s only: it is judged on those 10 s.
        let mut s = with_agent(job(JobStatus::InProgress, DesiredState::Active), AgentState::Active);
        let now = t0() + chrono::Duration::seconds(56);
        s.current.as_mut().unwrap().last_heartbeat = Some(t0());
        let mut r = rules();
        r.heard_since = now - chrono::Duration::seconds(10);
        assert_eq!(decide(&s, Observed::Running, now, &r), Action::Wait(Some(Duration::from_secs(25))));
        // Still silent a full grace after the engine came back: unhealthy.
        let later = now + chrono::Duration::seconds(25);
        assert!(matches!(decide(&s, Observed::Running, later, &r), Action::Terminate { failure: true, .. }));
        // Without the restart the same silence is unhealthy at once.
        r.heard_since = t0();
        assert!(matches!(decide(&s, Observed::Running, now, &r), Action::Terminate { failure: true, .. }));
    }

    #[test]
    fn attempts_that_never_started_or_were_interrupted_are_not_failures() {
        for outcome in
            ["never started (the engine stopped before releasing its agent)", "interrupted: george up stopped"]
        {
            let mut s = with_agent(job(JobStatus::InProgress, DesiredState::Active), AgentState::Terminated);
            s.current.as_mut().unwrap().outcome = Some(outcome.into());
            match decide(&s, Observed::NoAgent, t0(), &rules()) {
                Action::SetStatus(c) => assert_eq!((c.to, c.count_failure), (JobStatus::Pending, false), "{outcome}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_unknown_agent_status_concludes_nothing() {
        // Even long past the health deadline: a runtime outage is not a dead agent.
        let s = with_agent(job(JobStatus::InProgress, DesiredState::Active), AgentState::Active);
        let late = t0() + chrono::Duration::seconds(3600);
        assert_eq!(decide(&s, Observed::Unknown, late, &rules()), Action::Wait(Some(Duration::from_secs(2))));
    }

    #[test]
    fn max_active_duration_stops_the_agent() {
        let mut s = with_agent(job(JobStatus::InProgress, DesiredState::Active), AgentState::Active);
        let now = t0() + chrono::Duration::seconds(600);
        s.current.as_mut().unwrap().last_heartbeat = Some(now);
        assert!(matches!(decide(&s, Observed::Running, now, &rules()), Action::Terminate { failure: true, .. }));
    }

    #[test]
    fn a_dead_agent_ends_its_attempt_then_the_job_backs_off_then_fails() {
        let s = with_agent(job(JobStatus::InProgress, DesiredState::Active), AgentState::Active);
        let gone = Observed::Gone(AgentStatus::Exited { code: None, signal: Some(9) });
        match decide(&s, gone, t0(), &rules()) {
            Action::EndAttempt { attempt: 1, end } => assert_eq!(end.outcome, "killed by signal 9"),
            other => panic!("{other:?}"),
        }
        let mut s = s;
        let cur = s.current.as_mut().unwrap();
        cur.state = AgentState::Terminated;
        cur.outcome = Some("killed by signal 9".into());
        match decide(&s, Observed::NoAgent, t0(), &rules()) {
            Action::SetStatus(c) => {
                assert_eq!((c.from, c.to, c.count_failure), (JobStatus::InProgress, JobStatus::Pending, true));
                assert_eq!(c.next_attempt_at, Some(t0() + chrono::Duration::seconds(2)));
                assert!(c.reason.unwrap().contains("killed by signal 9"));
            }
            other => panic!("{other:?}"),
        }
        s.job.failures = 2; // third failure reaches max_attempts = 3
        match decide(&s, Observed::NoAgent, t0(), &rules()) {
            Action::SetStatus(c) => {
                assert_eq!(c.to, JobStatus::Failed);
                assert!(c.reason.unwrap().starts_with("gave up after 3 failed attempts"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_preempted_attempt_goes_back_to_the_queue_without_counting_a_failure() {
        let mut s = with_agent(job(JobStatus::InProgress, DesiredState::Active), AgentState::Terminated);
        s.current.as_mut().unwrap().outcome = Some("preempted by job urgent (exited with code 0)".into());
        match decide(&s, Observed::NoAgent, t0(), &rules()) {
            Action::SetStatus(c) => {
                assert_eq!((c.to, c.count_failure, c.next_attempt_at), (JobStatus::Pending, false, None));
                assert_eq!(c.reason.as_deref(), Some("preempted by job urgent"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// A pause lifted while the agent was being stopped for it: the job
    /// goes back to the queue, and the stop is no failure of the agent's.
    #[test]
    fn a_pause_lifted_before_the_job_showed_it_counts_no_failure() {
        let mut s = with_agent(job(JobStatus::InProgress, DesiredState::Active), AgentState::Terminated);
        s.current.as_mut().unwrap().outcome = Some("job paused (exited with code 0)".into());
        match decide(&s, Observed::NoAgent, t0(), &rules()) {
            Action::SetStatus(c) => assert_eq!((c.to, c.count_failure), (JobStatus::Pending, false)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let r = rules().retry;
        let secs: Vec<u64> = (1..=7).map(|f| r.backoff(f).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn pause_resume_abort() {
        let s = with_agent(job(JobStatus::InProgress, DesiredState::Paused), AgentState::Active);
        assert!(matches!(decide(&s, Observed::Running, t0(), &rules()), Action::Terminate { failure: false, .. }));
        let mut s = s;
        s.current.as_mut().unwrap().state = AgentState::Cooling;
        assert!(matches!(decide(&s, Observed::Stopping, t0(), &rules()), Action::Wait(Some(_))));
        // After an engine restart nobody is stopping it: stop it again.
        assert!(matches!(decide(&s, Observed::Running, t0(), &rules()), Action::Terminate { .. }));
        s.current.as_mut().unwrap().state = AgentState::Terminated;
        assert!(matches!(
            decide(&s, Observed::NoAgent, t0(), &rules()),
            Action::SetStatus(StatusChange { to: JobStatus::Paused, .. })
        ));
        s.job.status = JobStatus::Paused;
        assert_eq!(decide(&s, Observed::NoAgent, t0(), &rules()), Action::Wait(None));
        s.job.desired = DesiredState::Active;
        assert!(matches!(
            decide(&s, Observed::NoAgent, t0(), &rules()),
            Action::SetStatus(StatusChange { to: JobStatus::Pending, .. })
        ));
        s.job.desired = DesiredState::Aborted;
        assert!(matches!(
            decide(&s, Observed::NoAgent, t0(), &rules()),
            Action::SetStatus(StatusChange { to: JobStatus::Aborted, .. })
        ));
    }

    #[test]
    fn blocked_waits_for_a_new_comment() {
        let mut s = job(JobStatus::Blocked, DesiredState::Active);
        s.blocked_at_comment = Some(4);
        s.latest_comment = Some(4);
        assert_eq!(decide(&s, Observed::NoAgent, t0(), &rules()), Action::Wait(None));
        s.latest_comment = Some(5);
        assert!(matches!(
            decide(&s, Observed::NoAgent, t0(), &rules()),
            Action::SetStatus(StatusChange { to: JobStatus::Pending, .. })
        ));
    }

    #[test]
    fn a_finished_agent_gets_time_to_exit_then_is_stopped() {
        let mut s = with_agent(job(JobStatus::Completed, DesiredState::Active), AgentState::Cooling);
        s.job.updated_at = t0();
        assert_eq!(
            decide(&s, Observed::Running, t0() + chrono::Duration::seconds(3), &rules()),
            Action::Wait(Some(Duration::from_secs(7)))
        );
        assert!(matches!(
            decide(&s, Observed::Running, t0() + chrono::Duration::seconds(10), &rules()),
            Action::Terminate { failure: false, .. }
        ));
        // Completed job, agent gone: the attempt ends, then nothing more.
        let gone = Observed::Gone(AgentStatus::Exited { code: Some(0), signal: None });
        assert!(matches!(decide(&s, gone, t0(), &rules()), Action::EndAttempt { .. }));
        s.current.as_mut().unwrap().state = AgentState::Terminated;
        assert_eq!(decide(&s, Observed::NoAgent, t0(), &rules()), Action::Wait(None));
    }
}
