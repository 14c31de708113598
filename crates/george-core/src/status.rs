//! The state machines of jobs, steps and agent instances, and priority classes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Error returned when a status string is not one of the known values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`, expected one of: {expected}")]
pub struct UnknownValue {
    /// What was being parsed (e.g. "job status").
    pub what: &'static str,
    /// The rejected text.
    pub value: String,
    /// The accepted values, comma separated.
    pub expected: &'static str,
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The canonical lowercase text of this value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "enum": [$($text),+]})
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        what: $what,
                        value: s.to_string(),
                        expected: concat!($($text, " "),+),
                    }),
                }
            }
        }
    };
}

string_enum!(
    /// The observed status of a job.
    JobStatus, "job status" {
        /// Waiting for an agent (new, or between attempts).
        Pending => "pending",
        /// An agent attempt is running.
        InProgress => "in_progress",
        /// The agent stopped and needs something (a human, a capability) to continue.
        Blocked => "blocked",
        /// An operator paused the job; no agent runs.
        Paused => "paused",
        /// Every step is done.
        Completed => "completed",
        /// The job cannot complete (a step failed, or attempts ran out).
        Failed => "failed",
        /// An operator or the source aborted the job.
        Aborted => "aborted",
    }
);

impl JobStatus {
    /// Whether the job has reached a final state that the reconciler never leaves.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Aborted)
    }
}

string_enum!(
    /// What the job's owner wants: run it, hold it, or stop it for good.
    DesiredState, "desired state" {
        /// Run the job to completion.
        Active => "active",
        /// Stop any agent and keep the job until resumed.
        Paused => "paused",
        /// Stop any agent and end the job.
        Aborted => "aborted",
    }
);

string_enum!(
    /// The status of one step of a job.
    StepStatus, "step status" {
        /// Not started yet.
        Pending => "pending",
        /// An agent is working on it.
        InProgress => "in_progress",
        /// Done; its `done_when` holds or its `run` succeeded.
        Completed => "completed",
        /// Failed after its retries.
        Failed => "failed",
        /// The agent cannot do it without help.
        Blocked => "blocked",
        /// Not needed (e.g. its job was aborted).
        Skipped => "skipped",
    }
);

impl StepStatus {
    /// Whether the step needs no more work.
    pub fn is_done(self) -> bool {
        matches!(self, StepStatus::Completed | StepStatus::Skipped)
    }

    /// Whether a run of the step has ended (done, failed or blocked).
    pub fn has_ended(self) -> bool {
        matches!(self, StepStatus::Completed | StepStatus::Skipped | StepStatus::Failed | StepStatus::Blocked)
    }
}

string_enum!(
    /// Lifecycle of one agent instance (seed 003 §1). `Dormant` is the state of an
    /// AgentSpec with no instance; an instance goes Awakening → Active → Cooling → Terminated.
    AgentState, "agent state" {
        /// No instance is running.
        Dormant => "dormant",
        /// Spawned, has not reported yet.
        Awakening => "awakening",
        /// Heartbeating and working.
        Active => "active",
        /// Asked to stop (or finished its job) and winding down.
        Cooling => "cooling",
        /// Gone.
        Terminated => "terminated",
    }
);

impl AgentState {
    /// Whether the instance may still be running.
    pub fn is_live(self) -> bool {
        matches!(self, AgentState::Awakening | AgentState::Active | AgentState::Cooling)
    }
}

string_enum!(
    /// Priority classes of seed 003 §2, most urgent first.
    Priority, "priority" {
        /// Critical: immediate.
        P0 => "P0",
        /// High: under a minute.
        P1 => "P1",
        /// Normal (the default): under five minutes.
        P2 => "P2",
        /// Low: queued.
        P3 => "P3",
        /// Idle time only.
        Background => "BACKGROUND",
    }
);

string_enum!(
    /// What an operator token may do; each role includes the ones before it.
    Role, "role" {
        /// Reads everything.
        Viewer => "viewer",
        /// Also pauses, resumes, aborts, injects, overrides, approves, submits and summons.
        Operator => "operator",
        /// Also changes budgets and throttles and manages tokens.
        Admin => "admin",
    }
);

// Not derivable: the enum comes from `string_enum!`.
#[allow(clippy::derivable_impls)]
impl Default for Priority {
    fn default() -> Self {
        Priority::P2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_text() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
        }
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>().unwrap(), *p);
        }
        let err = "done".parse::<JobStatus>().unwrap_err();
        assert!(err.to_string().contains("pending"), "{err}");
    }

    #[test]
    fn final_and_live_states() {
        assert!(JobStatus::Completed.is_final());
        assert!(!JobStatus::Blocked.is_final());
        assert!(AgentState::Cooling.is_live());
        assert!(!AgentState::Terminated.is_live());
        assert!(Priority::P0 < Priority::P2, "P0 sorts first");
    }
}
