//! A job's steps as a graph: which may start now. A step is ready when
//! every step it depends on is done; ready steps are offered in dependency
//! order (template order among equals), so a job with `parallelism: 1`
//! runs exactly as a list.

use george_core::api::StepView;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done,
    /// Failed, blocked or cancelled in this attempt: its dependents never start.
    Stopped,
}

/// The steps of one attempt and where each stands.
#[derive(Debug)]
pub struct StepGraph {
    /// Indexes into the job's steps, in dependency order.
    order: Vec<usize>,
    deps: Vec<Vec<usize>>,
    state: Vec<State>,
}

impl StepGraph {
    /// The graph of `steps` visited in `order` (a topological order); steps
    /// already completed or skipped count as done.
    pub fn new(steps: &[StepView], order: Vec<usize>) -> Self {
        let index: HashMap<&str, usize> = steps.iter().enumerate().map(|(i, s)| (s.spec.id.as_str(), i)).collect();
        let deps = steps
            .iter()
            .map(|s| s.spec.depends_on.iter().filter_map(|d| index.get(d.as_str()).copied()).collect())
            .collect();
        let state = steps.iter().map(|s| if s.status.is_done() { State::Done } else { State::Waiting }).collect();
        Self { order, deps, state }
    }

    /// The next step that may start, marked running.
    pub fn start_next(&mut self) -> Option<usize> {
        let i =
            self.order.iter().copied().find(|&i| {
                self.state[i] == State::Waiting && self.deps[i].iter().all(|&d| self.state[d] == State::Done)
            })?;
        self.state[i] = State::Running;
        Some(i)
    }

    /// Step `i` is done: its dependents may start.
    pub fn done(&mut self, i: usize) {
        self.state[i] = State::Done;
    }

    /// Step `i` ended without being done.
    pub fn stopped(&mut self, i: usize) {
        self.state[i] = State::Stopped;
    }

    /// Whether every step is done.
    pub fn all_done(&self) -> bool {
        self.state.iter().all(|s| *s == State::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use george_core::template::StepSpec;
    use george_core::StepStatus;

    fn step(id: &str, deps: &[&str], status: StepStatus) -> StepView {
        StepView {
            spec: StepSpec {
                id: id.into(),
                depends_on: deps.iter().map(|d| d.to_string()).collect(),
                ..Default::default()
            },
            status,
            reason: None,
            runs: 0,
            started_at: None,
            ended_at: None,
            duration_ms: None,
            updated_at: chrono::Utc::now(),
        }
    }

    /// compile and lint start together; test waits for both; a done step
    /// is not run again; a stopped step's dependents never start.
    #[test]
    fn ready_steps_start_together_and_dependents_wait() {
        let steps = vec![
            step("fetch", &[], StepStatus::Completed),
            step("compile", &["fetch"], StepStatus::Pending),
            step("lint", &["fetch"], StepStatus::Pending),
            step("test", &["compile", "lint"], StepStatus::Pending),
        ];
        let mut g = StepGraph::new(&steps, vec![0, 1, 2, 3]);
        assert_eq!((g.start_next(), g.start_next(), g.start_next()), (Some(1), Some(2), None));
        g.done(1);
        assert_eq!(g.start_next(), None, "test still waits for lint");
        g.done(2);
        assert_eq!(g.start_next(), Some(3));
        g.done(3);
        assert!(g.all_done());

        let mut g = StepGraph::new(&steps, vec![0, 1, 2, 3]);
        let (a, b) = (g.start_next().unwrap(), g.start_next().unwrap());
        g.stopped(a);
        g.done(b);
        assert_eq!(g.start_next(), None, "a dependent of a failed step never starts");
        assert!(!g.all_done());
    }
}
