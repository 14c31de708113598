//! How an attempt is doing, read off its Job and pod as the cluster reports
//! them: the container's terminated state gives the exit code (a signal
//! shows as 128 + n, as container runtimes report it); a Job that finished
//! or vanished without a pod to say how is an exit of unknown status.

use crate::AgentStatus;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

/// Waiting reasons that will not go away without someone changing
/// something (an image or a Secret): worth a note in the attempt's log.
pub const STUCK_REASONS: &[&str] =
    &["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError"];

/// The agent container's terminated state as an exit status, if it ended.
pub fn pod_exit(pod: &Pod) -> Option<AgentStatus> {
    let status = pod.status.as_ref()?;
    let container = status.container_statuses.as_ref()?.iter().find(|c| c.name == super::spec::CONTAINER)?;
    if let Some(t) = container.state.as_ref().and_then(|s| s.terminated.as_ref()) {
        let signal = t.signal.or_else(|| (t.exit_code > 128).then_some(t.exit_code - 128));
        return Some(AgentStatus::Exited { code: Some(t.exit_code), signal });
    }
    matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
        .then_some(AgentStatus::Exited { code: None, signal: None })
}

/// Why the agent container has not started, when it is stuck.
pub fn stuck_reason(pod: &Pod) -> Option<String> {
    let container =
        pod.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == super::spec::CONTAINER)?;
    let waiting = container.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    STUCK_REASONS.contains(&reason).then(|| match &waiting.message {
        Some(m) => format!("{reason}: {m}"),
        None => reason.to_string(),
    })
}

fn condition(job: &Job, kind: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// What the Job's pods alone tell: how the newest that ended ended, or
/// that one still runs. `None`: no pod, or none that runs (ask the Job).
pub fn from_pods(pods: &[Pod]) -> Option<AgentStatus> {
    // backoffLimit 0: there is at most one pod that ran; the newest tells.
    let mut pods: Vec<&Pod> = pods.iter().collect();
    pods.sort_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp));
    if let Some(exit) = pods.iter().rev().find_map(|p| pod_exit(p)) {
        return Some(exit);
    }
    pods.iter().any(|p| p.metadata.deletion_timestamp.is_none()).then_some(AgentStatus::Running)
}

/// The attempt's status from its Job (`None`: gone) and the Job's pods.
pub fn agent_status(job: Option<&Job>, pods: &[Pod]) -> AgentStatus {
    let Some(job) = job else { return AgentStatus::Exited { code: None, signal: None } };
    if let Some(exit @ AgentStatus::Exited { .. }) = from_pods(pods) {
        return exit;
    }
    if condition(job, "Complete") {
        return AgentStatus::Exited { code: Some(0), signal: None };
    }
    if condition(job, "Failed") {
        return AgentStatus::Exited { code: None, signal: None };
    }
    AgentStatus::Running
}

/// The state of a pod's agent container, when the kubelet has reported one.
pub fn agent_state(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerState> {
    pod.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == super::spec::CONTAINER)?.state.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(state: serde_json::Value, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "creationTimestamp": "2026-11-21T10:00:00Z"},
            "status": {"phase": phase, "containerStatuses": [{
                "name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": state
            }]}
        }))
        .unwrap()
    }

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(json!({"metadata": {"name": "j"}, "status": {"conditions": conditions}})).unwrap()
    }

    #[test]
    fn exit_codes_and_signals_come_from_the_terminated_container() {
        let j = job(json!([]));
        let ok = pod(json!({"terminated": {"exitCode": 0, "reason": "Completed"}}), "Succeeded");
        assert_eq!(agent_status(Some(&j), &[ok]), AgentStatus::Exited { code: Some(0), signal: None });
        let killed = pod(json!({"terminated": {"exitCode": 137, "reason": "Error"}}), "Failed");
        assert_eq!(agent_status(Some(&j), &[killed]), AgentStatus::Exited { code: Some(137), signal: Some(9) });
        let running = pod(json!({"running": {"startedAt": "2026-11-21T10:00:01Z"}}), "Running");
        assert_eq!(agent_status(Some(&j), std::slice::from_ref(&running)), AgentStatus::Running);
        assert_eq!(agent_status(None, &[running]), AgentStatus::Exited { code: None, signal: None });
        let failed = job(json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]));
        assert_eq!(agent_status(Some(&failed), &[]), AgentStatus::Exited { code: None, signal: None });
        assert_eq!(agent_status(Some(&j), &[]), AgentStatus::Running);
        assert_eq!(from_pods(&[]), None, "no pod: ask the Job");
        let ended = pod(json!({"terminated": {"exitCode": 2}}), "Failed");
        assert_eq!(from_pods(&[ended]), Some(AgentStatus::Exited { code: Some(2), signal: None }));
        let stuck = pod(json!({"waiting": {"reason": "ImagePullBackOff", "message": "no registry"}}), "Pending");
        assert_eq!(stuck_reason(&stuck).as_deref(), Some("ImagePullBackOff: no registry"));
    }
}
