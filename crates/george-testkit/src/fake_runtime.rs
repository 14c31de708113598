//! An in-memory [`Runtime`]: agents are entries in a table, so the
//! reconciler and admission run in-process, without processes or
//! containers, and a test decides when an agent exits. It keeps the
//! runtime's contract (an idempotent spawn, held until released; status;
//! terminate; list and adopt; cleanup; an exit event per exit) and counts
//! what a test asks about: the most agents live at once, every terminate.
//! An agent whose command ends in a script of
//! [`crate::runtime_conformance::Behaviour`] behaves as it says (it exits
//! when released, or ignores SIGTERM); any other agent runs until the test
//! ends it ([`FakeRuntime::exit`]) or the engine terminates it.

use crate::runtime_conformance::Behaviour;
use async_trait::async_trait;
use george_runtime::{AgentLogs, AgentStatus, OwnedAgent, Runtime, RuntimeError, RuntimeEvent, SpawnRequest};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::broadcast;

/// One agent of the fake runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeAgent {
    /// Its AgentSpec.
    pub agent_spec: String,
    /// Whether the engine let it start.
    pub released: bool,
    /// How it is now.
    pub status: AgentStatus,
    /// What its command asks for.
    behaviour: Option<Behaviour>,
}

#[derive(Debug, Default)]
struct Table {
    agents: BTreeMap<(String, u32), FakeAgent>,
    max_live: usize,
    spawns: usize,
    terminated: Vec<(String, u32)>,
    refuse_adoption: bool,
}

impl Table {
    fn live(&self) -> usize {
        self.agents.values().filter(|a| a.status == AgentStatus::Running).count()
    }
}

/// The in-memory runtime.
#[derive(Debug)]
pub struct FakeRuntime {
    table: Mutex<Table>,
    events: broadcast::Sender<RuntimeEvent>,
    logs: AgentLogs,
}

impl FakeRuntime {
    /// A runtime with no agents, keeping (empty) logs under `logs_dir`.
    pub fn new(logs_dir: impl Into<std::path::PathBuf>) -> Self {
        Self { table: Mutex::default(), events: broadcast::channel(1024).0, logs: AgentLogs::new(logs_dir) }
    }

    fn table(&self) -> parking_lot::MutexGuard<'_, Table> {
        self.table.lock()
    }

    /// The agents running now, by job and attempt.
    pub fn running(&self) -> Vec<(String, u32)> {
        self.table().agents.iter().filter(|(_, a)| a.status == AgentStatus::Running).map(|(k, _)| k.clone()).collect()
    }

    /// The most agents that were running at once.
    pub fn max_live(&self) -> usize {
        self.table().max_live
    }

    /// Agents created, in all.
    pub fn spawns(&self) -> usize {
        self.table().spawns
    }

    /// From now on, adopting an agent fails (as a runtime that cannot watch
    /// it, or reach what it reports through, would).
    pub fn refuse_adoption(&self) {
        self.table().refuse_adoption = true;
    }

    /// The attempts the engine terminated, in order.
    pub fn terminated(&self) -> Vec<(String, u32)> {
        self.table().terminated.clone()
    }

    /// The agent of `job`'s `attempt` exits with `code` (as a process would).
    pub fn exit(&self, job: &str, attempt: u32, code: i32) {
        self.end(job, attempt, AgentStatus::Exited { code: Some(code), signal: None });
    }

    fn end(&self, job: &str, attempt: u32, status: AgentStatus) {
        let ended = match self.table().agents.get_mut(&(job.to_string(), attempt)) {
            Some(a) if a.status == AgentStatus::Running => {
                a.status = status;
                true
            }
            _ => false,
        };
        if ended {
            let _ = self.events.send(RuntimeEvent { job_id: job.into(), attempt, status });
        }
    }

    fn handle(job: &str, attempt: u32) -> Value {
        json!({"fake": format!("{job}/{attempt}")})
    }

    fn known(&self, job: &str, attempt: u32) -> Result<FakeAgent, RuntimeError> {
        self.table().agents.get(&(job.to_string(), attempt)).cloned().ok_or_else(|| RuntimeError::Handle {
            agent: format!("{job}/{attempt}"),
            message: "no such fake agent".into(),
        })
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn spawn(&self, req: SpawnRequest) -> Result<Value, RuntimeError> {
        let mut t = self.table();
        let key = (req.job_id.clone(), req.attempt);
        if !t.agents.contains_key(&key) {
            t.spawns += 1;
            let behaviour = req.command.last().and_then(|script| {
                [Behaviour::Run, Behaviour::IgnoreTerm]
                    .into_iter()
                    .find(|b| b.script() == *script)
                    .or_else(|| script.strip_prefix("exit ")?.parse().ok().map(Behaviour::Exit))
            });
            let agent = FakeAgent {
                agent_spec: req.agent_spec.clone(),
                released: false,
                status: AgentStatus::Running,
                behaviour,
            };
            t.agents.insert(key, agent);
            t.max_live = t.max_live.max(t.live());
        }
        Ok(Self::handle(&req.job_id, req.attempt))
    }

    async fn release(&self, job_id: &str, attempt: u32, _handle: &Value) -> Result<(), RuntimeError> {
        let behaviour = match self.table().agents.get_mut(&(job_id.to_string(), attempt)) {
            Some(a) => {
                a.released = true;
                a.behaviour
            }
            None => None,
        };
        if let Some(Behaviour::Exit(code)) = behaviour {
            self.exit(job_id, attempt, code);
        }
        Ok(())
    }

    async fn status(&self, job_id: &str, attempt: u32, _handle: &Value) -> Result<AgentStatus, RuntimeError> {
        Ok(self.known(job_id, attempt)?.status)
    }

    async fn terminate(
        &self,
        job_id: &str,
        attempt: u32,
        _handle: &Value,
        _grace: Duration,
    ) -> Result<AgentStatus, RuntimeError> {
        let agent = self.known(job_id, attempt)?;
        self.table().terminated.push((job_id.to_string(), attempt));
        let ended = match agent.behaviour {
            // Its trap exits cleanly on SIGTERM.
            Some(Behaviour::Run) => AgentStatus::Exited { code: Some(0), signal: None },
            // Killed once its grace is over.
            Some(Behaviour::IgnoreTerm) => AgentStatus::Exited { code: None, signal: Some(9) },
            _ => AgentStatus::Exited { code: None, signal: Some(15) },
        };
        self.end(job_id, attempt, ended);
        Ok(self.known(job_id, attempt)?.status)
    }

    async fn list_owned(&self) -> Result<Vec<OwnedAgent>, RuntimeError> {
        Ok(self
            .table()
            .agents
            .iter()
            .map(|((job, attempt), a)| OwnedAgent {
                job_id: job.clone(),
                attempt: *attempt,
                handle: Self::handle(job, *attempt),
                status: a.status,
            })
            .collect())
    }

    async fn adopt(&self, agent: &OwnedAgent) -> Result<(), RuntimeError> {
        if self.table().refuse_adoption {
            return Err(RuntimeError::Unavailable(format!("cannot adopt {}/{}", agent.job_id, agent.attempt)));
        }
        self.known(&agent.job_id, agent.attempt).map(|_| ())
    }

    async fn cleanup(&self, job_id: &str, attempt: u32) -> Result<(), RuntimeError> {
        self.table().agents.remove(&(job_id.to_string(), attempt));
        Ok(())
    }

    fn logs(&self) -> &AgentLogs {
        &self.logs
    }

    fn subscribe(&self) -> broadcast::Receiver<RuntimeEvent> {
        self.events.subscribe()
    }
}
