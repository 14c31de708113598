//! What the Kubernetes runtime asks the cluster for: the `batch/v1` Job of
//! one attempt and the Secret holding that attempt's secrets. Pure functions
//! of the spawn request and the runtime's settings, so the rendered objects
//! can be checked field by field.
//!
//! - **Names** are deterministic (`<prefix>-<job>-<attempt>`, sanitised to a
//!   DNS-1123 label, at most 63 characters, with a hash of the job id when
//!   it had to be shortened or changed), so a retried create — by this
//!   replica or by the next leader — finds the attempt's Job instead of
//!   making a twin.
//! - **Labels** `app=george-agent`, `george.io/instance`, `george.io/job`,
//!   `george.io/attempt` (and the request's own) select the Jobs and pods;
//!   label values are sanitised, so the exact job id and attempt are also
//!   kept in annotations, which adoption reads.
//! - George owns retries: `restartPolicy: Never`, `backoffLimit: 0`; a
//!   retry is a new attempt, hence a new Job.
//! - **Secrets** never appear as plain values: the agent token comes from
//!   the attempt's Secret by `secretKeyRef`, the secret files are that
//!   Secret's keys mounted read-only at [`CONTAINER_SECRETS_DIR`].

use crate::{
    PullPolicy, SpawnRequest, AGENT_TOKEN_FILE, AGENT_TOKEN_FILE_ENV, CONTAINER_AGENT_DIR, CONTAINER_OUTPUT_DIR,
    CONTAINER_RUN_DIR, CONTAINER_SECRETS_DIR,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// The `app` label of every agent Job and pod.
pub const APP: &str = "george-agent";
/// The container's name in the pod.
pub const CONTAINER: &str = "agent";
/// Annotation with the exact job id (label values are sanitised).
pub const JOB_ID_ANNOTATION: &str = "george.io/job-id";
/// Annotation with the attempt number.
pub const ATTEMPT_ANNOTATION: &str = "george.io/attempt";
/// The Secret key of the agent token (mounted as a file at
/// `/run/george/agent/token`, never an environment variable).
pub const TOKEN_KEY: &str = "agent-token";
/// The Secret key of a secret file.
fn file_key(name: &str) -> String {
    format!("file.{name}")
}

/// What the rendering needs from the runtime's settings.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Namespace of the Jobs.
    pub namespace: String,
    /// Distinguishes George installations sharing a namespace (`george.io/instance`).
    pub instance: String,
    /// Prefix of every Job name.
    pub name_prefix: String,
    /// Image for AgentSpecs that name none.
    pub default_image: Option<String>,
    /// Command for AgentSpecs that name none.
    pub default_command: Vec<String>,
    /// `imagePullPolicy`.
    pub pull_policy: PullPolicy,
    /// `serviceAccountName` of agent pods (none: the namespace's default).
    pub service_account: Option<String>,
    /// `ttlSecondsAfterFinished`: the cluster removes a finished Job after this.
    pub ttl_after_finished: Duration,
    /// `terminationGracePeriodSeconds` of agent pods.
    pub termination_grace: Duration,
    /// The engine id (an annotation, for people reading the Job).
    pub engine_id: String,
}

/// A DNS-1123 label: lowercase alphanumerics and `-`, starting and ending
/// alphanumeric, at most 63 characters.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn short_hash(s: &str) -> String {
    hex_prefix(&Sha256::digest(s.as_bytes()), 8)
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()[..n].to_string()
}

/// Lowercases and replaces what a DNS label cannot hold with `-`, collapsing runs.
fn sanitise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out.trim_matches('-').to_string()
}

/// The Job name of an attempt: `<prefix>-<job>-<attempt>` when that is a
/// valid DNS label as is; otherwise sanitised and shortened, with 8 hex
/// digits of the job id's hash so distinct ids never share a name.
pub fn job_name(prefix: &str, job_id: &str, attempt: u32) -> String {
    let plain = format!("{prefix}-{job_id}-{attempt}");
    if is_dns_label(&plain) {
        return plain;
    }
    let suffix = format!("-{}-{attempt}", short_hash(job_id));
    let head = sanitise(&format!("{prefix}-{job_id}"));
    let room = 63 - suffix.len();
    let head = head[..head.len().min(room)].trim_end_matches('-');
    format!("{head}{suffix}")
}

/// A valid label value for `v`: itself when valid, else sanitised and
/// shortened with a hash (the exact value goes in an annotation).
pub fn label_value(v: &str) -> String {
    let ok = v.len() <= 63
        && v.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && v.bytes().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && v.bytes().last().is_none_or(|c| c.is_ascii_alphanumeric());
    if ok {
        return v.to_string();
    }
    let head = sanitise(v);
    let head = head[..head.len().min(54)].trim_end_matches('-');
    format!("{head}-{}", short_hash(v)).trim_start_matches('-').to_string()
}

/// The selector of every agent Job (and pod) of one installation.
pub fn selector(instance: &str) -> String {
    format!("app={APP},george.io/instance={}", label_value(instance))
}

fn pull_policy(p: PullPolicy) -> &'static str {
    match p {
        PullPolicy::Always => "Always",
        PullPolicy::IfNotPresent => "IfNotPresent",
        PullPolicy::Never => "Never",
    }
}

/// Labels of the Job and its pods.
pub fn labels(s: &JobSettings, req: &SpawnRequest) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = req.labels.iter().map(|(k, v)| (k.clone(), label_value(v))).collect();
    labels.insert("app".into(), APP.into());
    labels.insert("george.io/instance".into(), label_value(&s.instance));
    labels.insert("george.io/job".into(), label_value(&req.job_id));
    labels.insert("george.io/attempt".into(), req.attempt.to_string());
    labels
}

/// Whether the attempt needs a Secret (a secret env var or any secret file).
pub fn needs_secret(req: &SpawnRequest) -> bool {
    !req.secrets.is_empty() || req.agent_token.is_some()
}

/// The attempt's Secret (same name as its Job): the agent token and the files.
pub fn render_secret(s: &JobSettings, req: &SpawnRequest, name: &str) -> Secret {
    let mut data = BTreeMap::new();
    if let Some(t) = &req.agent_token {
        data.insert(TOKEN_KEY.to_string(), ByteString(t.0.clone().into_bytes()));
    }
    for f in &req.secrets {
        data.insert(file_key(&f.name), ByteString(f.content.clone()));
    }
    let mut secret = Secret { type_: Some("Opaque".into()), data: Some(data), ..Default::default() };
    secret.metadata.name = Some(name.to_string());
    secret.metadata.namespace = Some(s.namespace.clone());
    secret.metadata.labels = Some(labels(s, req));
    secret.metadata.annotations = Some(annotations(s, req));
    secret
}

fn annotations(s: &JobSettings, req: &SpawnRequest) -> BTreeMap<String, String> {
    BTreeMap::from([
        (JOB_ID_ANNOTATION.to_string(), req.job_id.clone()),
        (ATTEMPT_ANNOTATION.to_string(), req.attempt.to_string()),
        ("george.io/engine".to_string(), s.engine_id.clone()),
        ("george.io/agent-spec".to_string(), req.agent_spec.clone()),
    ])
}

/// Why a request cannot become a Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// No image for the agent.
    NoImage(String),
    /// A secret file name that cannot be a Secret key or a file name.
    BadSecretName(String),
    /// The rendering does not fit the batch/v1 schema (a bug in George).
    Schema(String),
    /// The AgentSpec asks for something this runtime cannot enforce.
    Unsupported(String),
}

/// The Kubernetes runtime does not enforce network policies: anything but
/// `full` is refused rather than silently widened.
fn check_network(agent_spec: &str, network: george_core::manifest::NetworkPolicy) -> Result<(), RenderError> {
    if network.is_full() {
        return Ok(());
    }
    Err(RenderError::Unsupported(format!(
        "AgentSpec `{agent_spec}` asks for network: {network}, which the Kubernetes runtime does not enforce (use the \
         cluster's NetworkPolicy and network: full)"
    )))
}

fn image_of(s: &JobSettings, agent_spec: &str, image: Option<&String>) -> Result<String, RenderError> {
    image.cloned().or_else(|| s.default_image.clone()).ok_or_else(|| {
        RenderError::NoImage(format!(
            "AgentSpec `{agent_spec}` has no spec.image and no default agent image is configured (containerBackend.kubernetes.image or --image)"
        ))
    })
}

/// Whether a secret file name can be a Secret key and a plain file name.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// What every agent container has: its working directory, output
/// directory and `/tmp`, all empty, and the variables naming them.
fn base_container() -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let env = vec![
        json!({"name": "GEORGE_WORK_DIR", "value": "/work"}),
        json!({"name": "GEORGE_OUTPUT_DIR", "value": CONTAINER_OUTPUT_DIR}),
        json!({"name": "HOME", "value": "/tmp"}),
    ];
    let mounts = vec![
        json!({"name": "work", "mountPath": "/work"}),
        json!({"name": "output", "mountPath": CONTAINER_OUTPUT_DIR}),
        json!({"name": "tmp", "mountPath": "/tmp"}),
    ];
    let volumes = vec![
        json!({"name": "work", "emptyDir": {}}),
        json!({"name": "output", "emptyDir": {}}),
        json!({"name": "tmp", "emptyDir": {}}),
    ];
    (env, mounts, volumes)
}

/// The attempt's Job.
pub fn render_job(s: &JobSettings, req: &SpawnRequest, name: &str) -> Result<Job, RenderError> {
    check_network(&req.agent_spec, req.network)?;
    let image = image_of(s, &req.agent_spec, req.image.as_ref())?;
    let command = if req.command.is_empty() { s.default_command.clone() } else { req.command.clone() };

    let (base_env, mut mounts, mut volumes) = base_container();
    let mut env: Vec<Value> = req.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect();
    env.extend(base_env);
    if req.agent_token.is_some() {
        env.push(json!({"name": AGENT_TOKEN_FILE_ENV, "value": format!("{CONTAINER_AGENT_DIR}/{AGENT_TOKEN_FILE}")}));
        mounts.push(json!({"name": "agent-token", "mountPath": CONTAINER_AGENT_DIR, "readOnly": true}));
        volumes.push(json!({"name": "agent-token", "secret": {
            "secretName": name,
            "items": [{"key": TOKEN_KEY, "path": AGENT_TOKEN_FILE}],
            "defaultMode": 0o400,
        }}));
    }
    if !req.secrets.is_empty() {
        let mut items = Vec::new();
        for f in &req.secrets {
            if !valid_file_name(&f.name) {
                return Err(RenderError::BadSecretName(f.name.clone()));
            }
            items.push(json!({"key": file_key(&f.name), "path": f.name}));
        }
        env.push(json!({"name": "GEORGE_SECRETS_DIR", "value": CONTAINER_SECRETS_DIR}));
        mounts.push(json!({"name": "secrets", "mountPath": CONTAINER_SECRETS_DIR, "readOnly": true}));
        volumes.push(json!({"name": "secrets", "secret": {"secretName": name, "items": items, "defaultMode": 0o400}}));
    }
    let container = Container { image, command, env, mounts, stdin: false };
    let pod_spec = pod_spec(s, container, req.resources, volumes);
    let mut spec = job_spec(s, labels(s, req), annotations(s, req), pod_spec);
    if let Some(max) = req.max_active {
        spec["activeDeadlineSeconds"] = json!(max.as_secs().max(1));
    }
    job(s, name, labels(s, req), annotations(s, req), spec)
}

/// The label of a warm agent's Job and pod: its AgentSpec (sanitised).
pub const POOL_LABEL: &str = "george.io/pool";

/// A warm agent's Job: the AgentSpec's image and limits, George's launcher
/// waiting for its binding on stdin (`stdin`, `stdinOnce`: the engine's
/// attach session is the only writer, and its end is the launcher's end of
/// file), a private in-memory `/run/george` for the token and secrets the
/// binding brings, and nothing of any job — no Secret, no token, no job
/// labels (a claim adds them).
pub fn render_warm_job(s: &JobSettings, spec: &crate::WarmSpec, name: &str) -> Result<Job, RenderError> {
    check_network(&spec.agent_spec, spec.network)?;
    let image = image_of(s, &spec.agent_spec, spec.image.as_ref())?;
    let (env, mut mounts, mut volumes) = base_container();
    mounts.push(json!({"name": "run", "mountPath": CONTAINER_RUN_DIR}));
    volumes.push(json!({"name": "run", "emptyDir": {"medium": "Memory"}}));
    let command = crate::launch::WarmLaunch::in_container().command();
    let container = Container { image, command, env, mounts, stdin: true };
    let pod_spec = pod_spec(s, container, spec.resources, volumes);
    let mut labels = BTreeMap::from([
        ("app".to_string(), APP.to_string()),
        ("george.io/instance".to_string(), label_value(&s.instance)),
        (POOL_LABEL.to_string(), label_value(&spec.agent_spec)),
    ]);
    labels.retain(|_, v| !v.is_empty());
    let annotations = BTreeMap::from([
        ("george.io/engine".to_string(), s.engine_id.clone()),
        ("george.io/agent-spec".to_string(), spec.agent_spec.clone()),
    ]);
    let job_spec = job_spec(s, labels.clone(), annotations.clone(), pod_spec);
    job(s, name, labels, annotations, job_spec)
}

/// The one container of an agent pod.
struct Container {
    image: String,
    command: Vec<String>,
    env: Vec<Value>,
    mounts: Vec<Value>,
    /// A warm agent's: stdin open for its binding, closed after the first attach.
    stdin: bool,
}

fn pod_spec(s: &JobSettings, c: Container, limits: crate::Resources, volumes: Vec<Value>) -> Value {
    let (cmd, args) = c.command.split_first().map(|(c, a)| (vec![c.clone()], a.to_vec())).unwrap_or_default();
    let mut resources = serde_json::Map::new();
    if let Some(m) = limits.memory {
        resources.insert("memory".into(), json!(m.to_string()));
    }
    if let Some(c) = limits.cpu {
        resources.insert("cpu".into(), json!(c.to_string()));
    }
    let resources =
        if resources.is_empty() { json!({}) } else { json!({"requests": resources.clone(), "limits": resources}) };
    let mut container = json!({
        "name": CONTAINER,
        "image": c.image,
        "imagePullPolicy": pull_policy(s.pull_policy),
        "command": cmd,
        "args": args,
        "workingDir": "/work",
        "env": c.env,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65534,
            "runAsGroup": 65534,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": resources,
        "volumeMounts": c.mounts,
    });
    if c.stdin {
        container["stdin"] = json!(true);
        container["stdinOnce"] = json!(true);
    }
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "automountServiceAccountToken": false,
        "securityContext": {"fsGroup": 65534},
        "enableServiceLinks": false,
        "terminationGracePeriodSeconds": s.termination_grace.as_secs().max(1),
        "containers": [container],
        "volumes": volumes,
    });
    if let Some(sa) = &s.service_account {
        pod_spec["serviceAccountName"] = json!(sa);
    }
    pod_spec
}

fn job_spec(
    s: &JobSettings,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    pod_spec: Value,
) -> Value {
    json!({
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": s.ttl_after_finished.as_secs(),
        "template": {
            "metadata": {"labels": labels, "annotations": annotations},
            "spec": pod_spec,
        },
    })
}

fn job(
    s: &JobSettings,
    name: &str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    spec: Value,
) -> Result<Job, RenderError> {
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": s.namespace, "labels": labels, "annotations": annotations},
        "spec": spec,
    });
    // The JSON above is written to the batch/v1 schema; a mismatch is a bug here.
    serde_json::from_value(job).map_err(|e| RenderError::Schema(format!("the rendered Job is not a batch/v1 Job: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_valid_deterministic_and_distinct() {
        assert_eq!(job_name("george", "etc-inventory", 1), "george-etc-inventory-1");
        let odd = job_name("george", "JIRA/PROJ_123: Fix it!", 12);
        assert!(is_dns_label(&odd), "{odd}");
        assert_eq!(odd, job_name("george", "JIRA/PROJ_123: Fix it!", 12));
        assert_ne!(odd, job_name("george", "jira-proj-123-fix-it", 12));
        let long = "a".repeat(200);
        let n = job_name("george", &long, 4_000_000_000);
        assert!(is_dns_label(&n) && n.len() <= 63 && n.ends_with("-4000000000"), "{n}");
        assert_ne!(n, job_name("george", &"a".repeat(199), 4_000_000_000));
        for weird in ["---", "É", ".", "UPPER", "x".repeat(63).as_str()] {
            assert!(is_dns_label(&job_name("george", weird, 1)), "{weird}");
        }
    }

    #[test]
    fn a_network_policy_it_cannot_enforce_is_refused() {
        let mut settings = super::super::KubernetesRuntimeConfig::under(std::path::Path::new("/nowhere"), "e").job;
        settings.default_image = Some("img".into());
        let mut req = SpawnRequest {
            job_id: "j".into(),
            attempt: 1,
            agent_spec: "a".into(),
            command: vec![],
            image: None,
            env: BTreeMap::new(),
            agent_token: None,
            resources: Default::default(),
            labels: BTreeMap::new(),
            output_dir: None,
            secrets: vec![],
            network: george_core::manifest::NetworkPolicy::None,
            max_active: None,
            context: None,
        };
        match render_job(&settings, &req, "george-j-1") {
            Err(RenderError::Unsupported(m)) => assert!(m.contains("network: none"), "{m}"),
            other => panic!("expected a refusal: {other:?}"),
        }
        req.network = george_core::manifest::NetworkPolicy::Full;
        assert!(render_job(&settings, &req, "george-j-1").is_ok());
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("etc-inventory"), "etc-inventory");
        assert_eq!(label_value(""), "");
        for v in ["JIRA/PROJ 1", "-x-", &"y".repeat(80)] {
            let l = label_value(v);
            assert!(l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && !l.is_empty(), "{v} -> {l}");
        }
    }
}
