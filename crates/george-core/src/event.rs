//! What an event records: every kind George writes to its event log, named
//! once. The log and the API carry the dotted name (`job.status`); code
//! matches on the enum.

/// Declares the kinds, their dotted names and what each records.
macro_rules! event_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// The kind of an event in the log.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind {
            $($(#[doc = $doc])* $variant,)*
        }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            /// The dotted name stored in the log and shown by the API.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }
        }

        impl std::str::FromStr for EventKind {
            type Err = UnknownEventKind;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(EventKind::$variant),)*
                    other => Err(UnknownEventKind(other.to_string())),
                }
            }
        }
    };
}

event_kinds! {
    /// A job was created (`data.source` says by whom or what).
    JobCreated => "job.created",
    /// A job's status changed (`from`, `to`, `reason`).
    JobStatus => "job.status",
    /// A job's desired state changed (paused, resumed, cancelled).
    JobDesired => "job.desired",
    /// A job's definition changed in its source.
    JobUpdated => "job.updated",
    /// A source's change to a running job's spec was not applied.
    JobSpecChangeIgnored => "job.spec_change_ignored",
    /// Two sources define the same job; the first one keeps it.
    JobSourceConflict => "job.source_conflict",
    /// A job could not be created from its source.
    JobRejected => "job.rejected",
    /// A job waits for the scheduler (`reason`, `priority`).
    JobQueued => "job.queued",
    /// A running job is stopped to make room for a P0 (`by`).
    JobPreempted => "job.preempted",
    /// A failed, aborted or blocked job was retried (`from_scratch`, `reason`).
    JobRetried => "job.retried",
    /// A job's spending was approved.
    JobApproved => "job.approved",
    /// Finished jobs were deleted with their records, files and events
    /// (`jobs`: their ids; by retention or by hand). The event names no job.
    JobsDeleted => "jobs.deleted",
    /// An attempt was recorded (before its agent is spawned).
    AttemptStarted => "attempt.started",
    /// An attempt's agent exists and its handle is stored.
    AttemptSpawned => "attempt.spawned",
    /// An attempt's agent state changed (e.g. cooling).
    AttemptState => "attempt.state",
    /// An attempt ended (`outcome`, `exit_code`).
    AttemptEnded => "attempt.ended",
    /// An agent reported it works with reduced function.
    AgentDegraded => "agent.degraded",
    /// An AgentSpec's running agents were halted.
    AgentHalted => "agent.halted",
    /// An AgentSpec's running agents were dismissed.
    AgentDismissed => "agent.dismissed",
    /// An agent reported a step's status.
    StepStatus => "step.status",
    /// A try of a step's command failed (`try`, `of`, `result`, `stderr`, `retry_in_ms`).
    StepTryFailed => "step.try_failed",
    /// An agent added evidence.
    EvidenceAdded => "evidence.added",
    /// Someone commented on a job.
    CommentAdded => "comment.added",
    /// A source's snapshot was applied.
    SourceApplied => "source.applied",
    /// A source's snapshot was refused (nothing of it applied).
    SourceRejected => "source.rejected",
    /// A manifest was deleted with its source's file.
    ManifestDeleted => "manifest.deleted",
    /// Two sources define the same manifest.
    ManifestSourceConflict => "manifest.source_conflict",
    /// A trigger fired and created a job.
    TriggerFired => "trigger.fired",
    /// A trigger's wake was folded into a debounce window.
    TriggerDebounced => "trigger.debounced",
    /// A webhook delivery seen before created nothing.
    TriggerReplayed => "trigger.replayed",
    /// A trigger did not fire (`reason`).
    TriggerSkipped => "trigger.skipped",
    /// A trigger failed to fire.
    TriggerFailed => "trigger.failed",
    /// A trigger was suspended: by an operator (`by`, `reason`), or its due
    /// cron times were not fired under a red budget alert (`fire`, `reason`).
    TriggerSuspended => "trigger.suspended",
    /// An operator resumed a suspended trigger (`by`).
    TriggerResumed => "trigger.resumed",
    /// An LLM call waited for a rate limit.
    LlmPaced => "llm.paced",
    /// An agent's LLM conversation was recorded.
    LlmConversation => "llm.conversation",
    /// A budget refused an LLM call.
    BudgetRefused => "budget.refused",
    /// A budget crossed an alert threshold.
    BudgetAlert => "budget.alert",
    /// An ended child's unspent share of its family budget went back to its
    /// parent (on the parent: `child`, `share`, `spent`, `returned`).
    BudgetReturned => "budget.returned",
    /// A chapter's hourly token rate passed its alert level.
    RateAlert => "rate.alert",
    /// A chapter's hourly token rate was reduced or cleared.
    ChapterThrottled => "chapter.throttled",
    /// An API token was minted.
    TokenMinted => "token.minted",
    /// An API token was revoked.
    TokenRevoked => "token.revoked",
    /// A Jira ticket waits for a human.
    JiraTicketWaiting => "jira.ticket.waiting",
    /// Writing a job's state back to Jira failed.
    JiraWritebackFailed => "jira.writeback.failed",
    /// An API call that changed something (the audit log).
    Audit => "audit",
}

impl EventKind {
    /// Whether events of this kind change the catalog (manifests, and with
    /// them limits, shares and budgets).
    pub fn changes_catalog(self) -> bool {
        matches!(
            self,
            EventKind::SourceApplied
                | EventKind::SourceRejected
                | EventKind::ManifestDeleted
                | EventKind::ManifestSourceConflict
        )
    }

    /// Whether this is an agent's progress report, which cannot change what
    /// the reconciler decides.
    pub fn is_progress(self) -> bool {
        matches!(self, EventKind::StepStatus | EventKind::StepTryFailed | EventKind::EvidenceAdded)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<EventKind> for String {
    fn eq(&self, other: &EventKind) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<EventKind> for str {
    fn eq(&self, other: &EventKind) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<str> for EventKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A name that is no event kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind `{0}`")]
pub struct UnknownEventKind(pub String);

#[cfg(test)]
mod tests {
    use super::EventKind;

    #[test]
    fn every_kind_has_one_name_that_reads_back() {
        let mut names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(*k));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), EventKind::ALL.len());
        assert!("job.nope".parse::<EventKind>().is_err());
        let stored: String = "job.status".into();
        assert!(stored == EventKind::JobStatus && *stored == EventKind::JobStatus);
    }
}
