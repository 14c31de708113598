//! The scheduler (seed 003 §2, "the Clocktower"): decides *when* a pending
//! job may start an agent. Pure and deterministic — no I/O, no clock of its
//! own — so every rule is tested directly:
//!
//! - **priority classes**: P0 before P1 … before BACKGROUND;
//! - **limits**: global, per chapter and per AgentSpec; jobs over a limit wait;
//! - **fair share**: within a priority class the chapter furthest below its
//!   share goes first — chapters under their guaranteed minimum before all
//!   others, then the lowest `running / weight` — and within a chapter the
//!   oldest job;
//! - **preemption**: a P0 job that cannot start because the engine is full
//!   names the running job to stop: the lowest priority at P2 or below, the
//!   most recently started of those (it has the least work to lose).
//!
//! Queue operations are O(log n) in the number of queued jobs; choosing the
//! next job looks at each chapter's head once per priority class.

mod queue;

pub use queue::{Admission, Blocked, Limits, QueuedJob, RunningJob, Scheduler, Shares};
