//! The kubelet (and container runtime) of the test server's single node.
//!
//! A pod goes `Pending` (waiting `ContainerCreating`) → volumes → image →
//! container config → `Running` → `Succeeded`/`Failed`, one step per tick,
//! each step a `MODIFIED` event:
//!
//! - **Volumes** (pod level, before any container): `secret` volumes are
//!   written as files (one per key, or per `items` entry, with `mode` /
//!   `defaultMode`, which the apiserver defaults to `0644`), `emptyDir` is an
//!   empty directory, `hostPath` is the host directory itself. A missing
//!   Secret or key keeps the pod in `ContainerCreating` (the real kubelet
//!   reports `FailedMount` as an event; here the message is also put on the
//!   waiting state) and is retried every tick.
//! - **Images**: an image the test never `set_image`d cannot be pulled:
//!   `ErrImagePull`, then `ImagePullBackOff`, until the test sets it.
//! - **Container config**: every `env[].valueFrom.secretKeyRef` (and
//!   `envFrom[].secretRef`) must resolve, else `CreateContainerConfigError`
//!   (`secret "x" not found`, `couldn't find key k in Secret ns/x`), retried
//!   every tick, so a Secret created later unblocks the pod. `fieldRef`
//!   (`metadata.name`, `metadata.namespace`, `metadata.uid`,
//!   `metadata.labels['k']`, `metadata.annotations['k']`, `spec.nodeName`,
//!   `spec.serviceAccountName`, `status.podIP`, `status.hostIP`) resolves;
//!   `$(VAR)` in values, `command` and `args` expands as the kubelet does.
//! - **Running** an `Exec` image: `command[0]` (or `args[0]` without a
//!   command), looked up by file name in the image's map, runs as a local
//!   process in its own process group with the rest of `command` + `args`,
//!   the resolved env only (plus `PATH` — a directory of links to the
//!   image's programs, then the test process's —, `HOME` of the test
//!   process and `HOSTNAME` = the pod name) and stdout+stderr into the pod log. A process
//!   has no mount namespace, so each pod has a sandbox directory: volumes
//!   live under it and **every occurrence of a `mountPath` (or of the
//!   container's `workingDir`) at a path boundary in an env value,
//!   `workingDir`, or an argument is rewritten to the sandbox path** — so
//!   `cat /etc/secret/token` in a `sh -c` script reads the secret volume
//!   file. The working directory is `workingDir` so rewritten (created under
//!   the sandbox's container root), else that root. When the main process
//!   exits, the rest of its process group is killed (the container's PID
//!   namespace dies with it): its process group, and every descendant the
//!   kubelet has seen (it scans `/proc` each tick), even one that left the
//!   group. A command the image does not provide fails to
//!   start: terminated, reason `StartError`, exit code 128.
//! - **Hold** images run until the test's `finish_pod`.
//! - **Exit**: `exitCode`, reason `Completed` (0) or `Error`; death by a
//!   signal is `128 + signal` (137 for SIGKILL), as container runtimes
//!   report it. `restartPolicy` `OnFailure`/`Always` restarts the container
//!   in place (`restartCount`, `lastState`, one tick of
//!   `CrashLoopBackOff`: no exponential back-off here).
//! - **Deletion**: a pod with a `deletionTimestamp` gets SIGTERM (its
//!   containers' main processes, as a runtime stops a container), then
//!   SIGKILL (all their processes) after `min(deletionGracePeriodSeconds, 2 s)` (shortened so tests
//!   stay fast), is marked `Failed` (or `Succeeded` if every container
//!   exited 0), and is removed once its finalizers are gone. A pod removed
//!   from the store while running (force delete) is killed at once.

use super::store::{fmt_time, is_deleting, name_of, now, ns_of, random_hex, str_at, uid_of, Kind, Shared, State};
use super::ImageBehaviour;
use base64::Engine;
use chrono::{DateTime, Utc};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(super) const NODE_NAME: &str = "kube-test-node";
const HOST_IP: &str = "10.0.0.10";

/// One line (or the unfinished end) of a container's output.
#[derive(Clone, Debug)]
pub(super) struct LogLine {
    pub ts: DateTime<Utc>,
    pub text: Vec<u8>,
    pub complete: bool,
}

#[derive(Clone, Debug)]
pub(super) enum CState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started: DateTime<Utc>,
        pid: Option<i32>,
        forced_exit: Option<i32>,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        message: Option<String>,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
    },
}

pub(super) struct ContainerRt {
    pub name: String,
    pub image: String,
    pub state: CState,
    pub restarts: i64,
    pub last_terminated: Option<Value>,
    pub log: Vec<LogLine>,
    pub prev_log: Option<Vec<LogLine>>,
    /// Bumped at every start: a process's reader and waiter threads only
    /// touch the run they belong to.
    pub run: u64,
    pub container_id: String,
    pub pulled: bool,
    /// The running process's descendants seen so far (pid, start time): the
    /// container's processes, killed with it even if they left its process
    /// group (a container's PID namespace takes them all down).
    pub tracked: Vec<(i32, u64)>,
    /// `stdin: true`: the write end of the running process's stdin, which
    /// attach sessions feed; dropped (end of file) when the first session
    /// ends if `stdinOnce`.
    pub stdin: Option<std::fs::File>,
    /// The container's `stdin` and `stdinOnce`.
    pub stdin_spec: (bool, bool),
}

impl ContainerRt {
    pub fn is_running(&self) -> bool {
        matches!(self.state, CState::Running { .. })
    }

    /// `SIGKILL` (or another signal) to every process of the container.
    pub fn kill(&self, sig: Signal) {
        if let CState::Running { pid: Some(pid), .. } = self.state {
            signal_group(pid, sig);
            signal_tracked(&self.tracked, sig);
        }
    }

    /// `SIGTERM` to the container's main process only, as a runtime stops a container.
    pub fn term(&self) {
        if let CState::Running { pid: Some(pid), .. } = self.state {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }

    pub fn ever_started(&self) -> bool {
        self.run > 0
    }
}

pub(super) struct PodRuntime {
    pub ns: String,
    pub name: String,
    pub dir: PathBuf,
    pub ip: String,
    pub admitted: DateTime<Utc>,
    pub containers: Vec<ContainerRt>,
    pub volumes: Option<HashMap<String, PathBuf>>,
    pub mount_error: Option<String>,
    /// Graceful termination started: SIGKILL after this.
    pub kill_at: Option<Instant>,
}

impl PodRuntime {
    pub fn running_pids(&self) -> Vec<i32> {
        self.containers
            .iter()
            .filter_map(|c| match c.state {
                CState::Running { pid, .. } => pid,
                _ => None,
            })
            .collect()
    }
}

pub(super) fn signal_group(pid: i32, sig: Signal) {
    let _ = killpg(Pid::from_raw(pid), sig);
}

/// Signals tracked processes that are still the same processes (same start time).
fn signal_tracked(tracked: &[(i32, u64)], sig: Signal) {
    for (pid, start) in tracked {
        if proc_stat(*pid).is_some_and(|(_, s)| s == *start) {
            let _ = nix::sys::signal::kill(Pid::from_raw(*pid), sig);
        }
    }
}

/// A live (not zombie) process's parent and start time, from `/proc/{pid}/stat`.
fn proc_stat(pid: i32) -> Option<(i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

/// Records the descendants of every running process.
fn track_descendants(st: &mut State) {
    let running = st
        .pods
        .values()
        .flat_map(|rt| rt.containers.iter())
        .any(|c| matches!(c.state, CState::Running { pid: Some(_), .. }));
    if !running {
        return;
    }
    let mut children: HashMap<i32, Vec<(i32, u64)>> = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if let Some((ppid, start)) = proc_stat(pid) {
            children.entry(ppid).or_default().push((pid, start));
        }
    }
    for c in st.pods.values_mut().flat_map(|rt| rt.containers.iter_mut()) {
        let CState::Running { pid: Some(root), .. } = c.state else { continue };
        let mut queue = vec![root];
        while let Some(p) = queue.pop() {
            for (child, start) in children.get(&p).into_iter().flatten() {
                if !c.tracked.contains(&(*child, *start)) {
                    c.tracked.push((*child, *start));
                }
                queue.push(*child);
            }
        }
    }
}

/// Appends process output to a log, line by line. As the CRI logger does,
/// every line gets its own timestamp, strictly after the previous line's.
pub(super) fn append_log(log: &mut Vec<LogLine>, bytes: &[u8]) {
    for piece in bytes.split_inclusive(|b| *b == b'\n') {
        let complete = piece.ends_with(b"\n");
        match log.last_mut() {
            Some(l) if !l.complete => {
                l.text.extend_from_slice(piece);
                l.complete = complete;
            }
            last => {
                let mut ts = now();
                if let Some(prev) = last {
                    ts = ts.max(prev.ts + chrono::Duration::nanoseconds(1));
                }
                log.push(LogLine { ts, text: piece.to_vec(), complete })
            }
        }
    }
}

/// The kubelet's pass over every pod.
pub(super) fn tick(st: &mut State, shared: &Shared) {
    let pods: Vec<Value> = st.iter(Kind::Pod, None).cloned().collect();
    let live: HashSet<String> = pods.iter().map(|p| uid_of(p).to_string()).collect();
    track_descendants(st);
    let gone: Vec<String> = st.pods.keys().filter(|u| !live.contains(*u)).cloned().collect();
    for uid in gone {
        let Some(rt) = st.pods.get_mut(&uid) else { continue };
        for c in rt.containers.iter_mut() {
            match c.state {
                CState::Running { pid: Some(_), .. } => c.kill(Signal::SIGKILL),
                CState::Running { pid: None, started, .. } => {
                    c.state = terminated(137, started, None);
                }
                _ => {}
            }
        }
        if rt.running_pids().is_empty() {
            if let Some(rt) = st.pods.remove(&uid) {
                let _ = std::fs::remove_dir_all(&rt.dir);
            }
        }
    }
    for pod in pods {
        sync_pod(st, shared, &pod);
    }
}

fn terminated(code: i32, started: DateTime<Utc>, message: Option<String>) -> CState {
    CState::Terminated {
        exit_code: code,
        reason: if code == 0 { "Completed" } else { "Error" }.into(),
        message,
        started,
        finished: now(),
    }
}

fn containers_of(pod: &Value) -> Vec<Value> {
    pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn sync_pod(st: &mut State, shared: &Shared, pod: &Value) {
    let uid = uid_of(pod).to_string();
    let ns = ns_of(pod).to_string();
    let name = name_of(pod).to_string();
    if !st.pods.contains_key(&uid) {
        if is_deleting(pod) {
            if super::store::finalizers(pod).is_empty() {
                st.remove(Kind::Pod, &ns, &name);
            }
            return;
        }
        // Scheduled to the one node; the kubelet admits it.
        st.next_ip += 1;
        let ip = format!("10.244.{}.{}", st.next_ip / 250, st.next_ip % 250 + 2);
        let containers = containers_of(pod)
            .iter()
            .map(|c| ContainerRt {
                name: c.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                image: c.get("image").and_then(Value::as_str).unwrap_or("").to_string(),
                state: CState::Waiting { reason: "ContainerCreating".into(), message: None },
                restarts: 0,
                last_terminated: None,
                log: Vec::new(),
                prev_log: None,
                run: 0,
                container_id: String::new(),
                pulled: false,
                tracked: Vec::new(),
                stdin: None,
                stdin_spec: (
                    c.get("stdin").and_then(Value::as_bool) == Some(true),
                    c.get("stdinOnce").and_then(Value::as_bool) == Some(true),
                ),
            })
            .collect();
        let dir = st.sandbox.join(format!("{ns}_{name}_{}", &uid[..uid.len().min(8)]));
        st.pods.insert(
            uid.clone(),
            PodRuntime {
                ns: ns.clone(),
                name: name.clone(),
                dir,
                ip,
                admitted: now(),
                containers,
                volumes: None,
                mount_error: None,
                kill_at: None,
            },
        );
        st.modify(Kind::Pod, &ns, &name, |p| {
            p["spec"]["nodeName"] = json!(NODE_NAME);
        });
        write_status(st, &ns, &name);
        return;
    }
    if is_deleting(pod) {
        terminate(st, pod);
        return;
    }
    if matches!(str_at(pod, "/status/phase"), Some("Succeeded") | Some("Failed")) {
        return;
    }
    let restart_policy = str_at(pod, "/spec/restartPolicy").unwrap_or("Always").to_string();
    let needs_volumes = st.pods.get(&uid).is_some_and(|rt| rt.volumes.is_none());
    if needs_volumes {
        let dir = st.pods[&uid].dir.clone();
        let result = materialise_volumes(st, pod, &dir);
        let rt = st.pods.get_mut(&uid).expect("runtime");
        match result {
            Ok(v) => {
                rt.volumes = Some(v);
                rt.mount_error = None;
            }
            Err(e) => rt.mount_error = Some(e),
        }
    }
    let specs = containers_of(pod);
    for (i, spec) in specs.iter().enumerate() {
        let Some(rt) = st.pods.get_mut(&uid) else { return };
        if rt.volumes.is_none() || i >= rt.containers.len() {
            break;
        }
        let c = &mut rt.containers[i];
        match c.state.clone() {
            CState::Running { .. } => {}
            CState::Terminated { exit_code, reason, message, started, finished } => {
                let restart = match restart_policy.as_str() {
                    "Always" => true,
                    "OnFailure" => exit_code != 0,
                    _ => false,
                };
                if restart {
                    c.restarts += 1;
                    c.last_terminated = Some(
                        json!({"terminated": terminated_json(exit_code, &reason, message.as_deref(), started, finished, &c.container_id)}),
                    );
                    c.prev_log = Some(std::mem::take(&mut c.log));
                    c.state = CState::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: Some(format!(
                            "back-off 10s restarting failed container={} pod={name}_{ns}({uid})",
                            c.name
                        )),
                    };
                }
            }
            CState::Waiting { .. } => try_start(st, shared, pod, &uid, i, spec),
        }
    }
    write_status(st, &ns, &name);
}

fn set_waiting(st: &mut State, uid: &str, i: usize, reason: &str, message: Option<String>) {
    if let Some(c) = st.pods.get_mut(uid).and_then(|rt| rt.containers.get_mut(i)) {
        c.state = CState::Waiting { reason: reason.into(), message };
    }
}

fn try_start(st: &mut State, shared: &Shared, pod: &Value, uid: &str, i: usize, spec: &Value) {
    let image = spec.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    let Some(behaviour) = st.images.get(&image).cloned() else {
        let waiting = match &st.pods[uid].containers[i].state {
            CState::Waiting { reason, .. } => reason.clone(),
            _ => String::new(),
        };
        if waiting == "ErrImagePull" || waiting == "ImagePullBackOff" {
            set_waiting(st, uid, i, "ImagePullBackOff", Some(format!("Back-off pulling image {image:?}")));
        } else {
            set_waiting(
                st,
                uid,
                i,
                "ErrImagePull",
                Some(format!(
                    "failed to pull and unpack image {image:?}: failed to resolve reference {image:?}: not found"
                )),
            );
        }
        return;
    };
    if let Some(c) = st.pods.get_mut(uid).and_then(|rt| rt.containers.get_mut(i)) {
        c.pulled = true;
    }
    let ip = st.pods[uid].ip.clone();
    let env = match resolve_env(st, pod, spec, &ip) {
        Ok(env) => env,
        Err(msg) => {
            set_waiting(st, uid, i, "CreateContainerConfigError", Some(msg));
            return;
        }
    };
    let started = now();
    let state = match behaviour {
        ImageBehaviour::Hold => Ok(None),
        ImageBehaviour::Exec(programs) => spawn(st, shared, pod, uid, i, spec, &programs, env),
    };
    let Some(c) = st.pods.get_mut(uid).and_then(|rt| rt.containers.get_mut(i)) else { return };
    c.container_id = format!("containerd://{}", random_hex(64));
    match state {
        Ok(pid) => {
            if pid.is_none() {
                c.run += 1;
                c.log.clear();
            }
            c.state = CState::Running { started, pid, forced_exit: None }
        }
        Err(msg) => {
            c.state = CState::Terminated {
                exit_code: 128,
                reason: "StartError".into(),
                message: Some(msg),
                started,
                finished: now(),
            }
        }
    }
}

/// `$(VAR)` expansion as the kubelet does it (`$$` escapes a `$`; unknown
/// references stay as they are).
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(j) => {
                    let var = &inner[..j];
                    match env.get(var) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&format!("$({var})")),
                    }
                    rest = &inner[j + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn secret_data(st: &State, ns: &str, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let s = st.get(Kind::Secret, ns, name)?;
    let mut out = BTreeMap::new();
    for (k, v) in s.get("data").and_then(Value::as_object).into_iter().flatten() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or("")).unwrap_or_default();
        out.insert(k.clone(), bytes);
    }
    Some(out)
}

/// The container's environment, in order, or the config error.
fn resolve_env(st: &State, pod: &Value, spec: &Value, ip: &str) -> Result<Vec<(String, String)>, String> {
    let ns = ns_of(pod);
    let mut env: Vec<(String, String)> = Vec::new();
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let set = |env: &mut Vec<(String, String)>, map: &mut BTreeMap<String, String>, k: String, v: String| {
        env.retain(|(ek, _)| *ek != k);
        map.insert(k.clone(), v.clone());
        env.push((k, v));
    };
    for ef in spec.get("envFrom").and_then(Value::as_array).into_iter().flatten() {
        let prefix = ef.get("prefix").and_then(Value::as_str).unwrap_or("");
        if let Some(r) = ef.get("secretRef") {
            let name = r.get("name").and_then(Value::as_str).unwrap_or("");
            let optional = r.get("optional").and_then(Value::as_bool) == Some(true);
            match secret_data(st, ns, name) {
                Some(data) => {
                    for (k, v) in data {
                        set(&mut env, &mut map, format!("{prefix}{k}"), String::from_utf8_lossy(&v).into_owned());
                    }
                }
                None if optional => {}
                None => return Err(format!("secret {name:?} not found")),
            }
        }
        if let Some(r) = ef.get("configMapRef") {
            let name = r.get("name").and_then(Value::as_str).unwrap_or("");
            if r.get("optional").and_then(Value::as_bool) != Some(true) {
                return Err(format!("configmap {name:?} not found"));
            }
        }
    }
    for e in spec.get("env").and_then(Value::as_array).into_iter().flatten() {
        let name = e.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let value = if let Some(vf) = e.get("valueFrom").filter(|v| !v.is_null()) {
            if let Some(r) = vf.get("secretKeyRef") {
                let sname = r.get("name").and_then(Value::as_str).unwrap_or("");
                let key = r.get("key").and_then(Value::as_str).unwrap_or("");
                let optional = r.get("optional").and_then(Value::as_bool) == Some(true);
                match secret_data(st, ns, sname) {
                    None if optional => continue,
                    None => return Err(format!("secret {sname:?} not found")),
                    Some(data) => match data.get(key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => return Err(format!("couldn't find key {key} in Secret {ns}/{sname}")),
                    },
                }
            } else if let Some(r) = vf.get("configMapKeyRef") {
                if r.get("optional").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                let cname = r.get("name").and_then(Value::as_str).unwrap_or("");
                return Err(format!("configmap {cname:?} not found"));
            } else if let Some(path) = vf.pointer("/fieldRef/fieldPath").and_then(Value::as_str) {
                field_ref(pod, path, ip)
            } else {
                String::new()
            }
        } else {
            expand(e.get("value").and_then(Value::as_str).unwrap_or(""), &map)
        };
        set(&mut env, &mut map, name, value);
    }
    Ok(env)
}

fn field_ref(pod: &Value, path: &str, ip: &str) -> String {
    let bracket = |prefix: &str| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(key.to_string())
    };
    if let Some(k) = bracket("metadata.labels['") {
        return pod.pointer("/metadata/labels").and_then(|l| l.get(&k)).and_then(Value::as_str).unwrap_or("").into();
    }
    if let Some(k) = bracket("metadata.annotations['") {
        return pod
            .pointer("/metadata/annotations")
            .and_then(|l| l.get(&k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .into();
    }
    match path {
        "metadata.name" => name_of(pod).into(),
        "metadata.namespace" => ns_of(pod).into(),
        "metadata.uid" => uid_of(pod).into(),
        "spec.nodeName" => NODE_NAME.into(),
        "spec.serviceAccountName" => str_at(pod, "/spec/serviceAccountName").unwrap_or("default").into(),
        "status.podIP" | "status.podIPs" => ip.into(),
        "status.hostIP" | "status.hostIPs" => HOST_IP.into(),
        _ => String::new(),
    }
}

/// Writes the pod's volumes under `dir/volumes`: volume name → host directory.
fn materialise_volumes(st: &State, pod: &Value, dir: &Path) -> Result<HashMap<String, PathBuf>, String> {
    let ns = ns_of(pod);
    let mut out = HashMap::new();
    for v in pod.pointer("/spec/volumes").and_then(Value::as_array).into_iter().flatten() {
        let vname = v.get("name").and_then(Value::as_str).unwrap_or("");
        let host = dir.join("volumes").join(vname);
        let fail = |why: String| format!("MountVolume.SetUp failed for volume {vname:?} : {why}");
        if let Some(s) = v.get("secret").filter(|s| !s.is_null()) {
            let sname = s.get("secretName").and_then(Value::as_str).unwrap_or("");
            let optional = s.get("optional").and_then(Value::as_bool) == Some(true);
            let default_mode = s.get("defaultMode").and_then(Value::as_i64).unwrap_or(0o644);
            let _ = std::fs::remove_dir_all(&host);
            std::fs::create_dir_all(&host).map_err(|e| fail(e.to_string()))?;
            let data = match secret_data(st, ns, sname) {
                Some(d) => d,
                None if optional => BTreeMap::new(),
                None => return Err(fail(format!("secret {sname:?} not found"))),
            };
            let mut files: Vec<(String, Vec<u8>, i64)> = Vec::new();
            match s.get("items").and_then(Value::as_array) {
                Some(items) => {
                    for it in items {
                        let key = it.get("key").and_then(Value::as_str).unwrap_or("");
                        let path = it.get("path").and_then(Value::as_str).unwrap_or(key);
                        let mode = it.get("mode").and_then(Value::as_i64).unwrap_or(default_mode);
                        match data.get(key) {
                            Some(b) => files.push((path.to_string(), b.clone(), mode)),
                            None if optional => {}
                            None => return Err(fail(format!("references non-existent secret key: {key}"))),
                        }
                    }
                }
                None => files.extend(data.iter().map(|(k, b)| (k.clone(), b.clone(), default_mode))),
            }
            for (path, bytes, mode) in files {
                let p = host.join(&path);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
                }
                std::fs::write(&p, bytes).map_err(|e| fail(e.to_string()))?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode as u32 & 0o777))
                    .map_err(|e| fail(e.to_string()))?;
            }
            out.insert(vname.to_string(), host);
        } else if v.get("emptyDir").is_some() {
            std::fs::create_dir_all(&host).map_err(|e| fail(e.to_string()))?;
            out.insert(vname.to_string(), host);
        } else if let Some(h) = v.get("hostPath") {
            let path = PathBuf::from(h.get("path").and_then(Value::as_str).unwrap_or(""));
            if h.get("type").and_then(Value::as_str) == Some("DirectoryOrCreate") {
                std::fs::create_dir_all(&path).map_err(|e| fail(e.to_string()))?;
            }
            out.insert(vname.to_string(), path);
        } else if let Some(c) = v.get("configMap") {
            if c.get("optional").and_then(Value::as_bool) != Some(true) {
                let cname = c.get("name").and_then(Value::as_str).unwrap_or("");
                return Err(fail(format!("configmap {cname:?} not found")));
            }
            std::fs::create_dir_all(&host).map_err(|e| fail(e.to_string()))?;
            out.insert(vname.to_string(), host);
        } else {
            return Err(fail("volume type not supported by the test kubelet".into()));
        }
    }
    Ok(out)
}

fn is_delim(c: char) -> bool {
    c.is_whitespace() || "=:\"'(),;`|&<>".contains(c)
}

/// Replaces every occurrence of a table prefix that starts at a path
/// boundary and ends at one (or at a `/`), longest prefix first.
fn rewrite(s: &str, table: &[(String, PathBuf)]) -> String {
    let mut out = String::new();
    let mut i = 0;
    let mut prev: Option<char> = None;
    while i < s.len() {
        let at_boundary = prev.is_none_or(is_delim);
        let mut matched = false;
        if at_boundary {
            for (from, to) in table {
                if s[i..].starts_with(from.as_str()) {
                    let after = s[i + from.len()..].chars().next();
                    if after.is_none_or(|c| c == '/' || is_delim(c)) {
                        out.push_str(&to.to_string_lossy());
                        i += from.len();
                        prev = from.chars().last();
                        matched = true;
                        break;
                    }
                }
            }
        }
        if !matched {
            let c = s[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
            prev = Some(c);
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn spawn(
    st: &mut State,
    shared: &Shared,
    pod: &Value,
    uid: &str,
    i: usize,
    spec: &Value,
    programs: &BTreeMap<String, PathBuf>,
    env: Vec<(String, String)>,
) -> Result<Option<i32>, String> {
    let rt = &st.pods[uid];
    let cname = spec.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    let root = rt.dir.join("containers").join(&cname).join("root");
    let volumes = rt.volumes.clone().unwrap_or_default();
    let strings = |k: &str| -> Vec<String> {
        spec.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default()
    };
    let map: BTreeMap<String, String> = env.iter().cloned().collect();
    let mut argv: Vec<String> =
        strings("command").iter().chain(strings("args").iter()).map(|a| expand(a, &map)).collect();
    if argv.is_empty() {
        return Err("failed to create containerd task: no command specified: unknown".into());
    }
    let prog = argv.remove(0);
    let key = Path::new(&prog).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let Some(exe) = programs.get(&prog).or_else(|| programs.get(&key)) else {
        return Err(format!(
            "failed to create containerd task: failed to create shim task: OCI runtime create failed: exec: {prog:?}: executable file not found in $PATH: unknown"
        ));
    };
    let mut table: Vec<(String, PathBuf)> = Vec::new();
    for m in spec.get("volumeMounts").and_then(Value::as_array).into_iter().flatten() {
        let mp = m.get("mountPath").and_then(Value::as_str).unwrap_or("").trim_end_matches('/').to_string();
        let Some(host) = m.get("name").and_then(Value::as_str).and_then(|n| volumes.get(n)) else { continue };
        if mp.is_empty() {
            continue;
        }
        let sub = m.get("subPath").and_then(Value::as_str).unwrap_or("");
        table.push((mp, if sub.is_empty() { host.clone() } else { host.join(sub) }));
    }
    let wd = spec.get("workingDir").and_then(Value::as_str).unwrap_or("").trim_end_matches('/').to_string();
    if !wd.is_empty() && !table.iter().any(|(mp, _)| wd == *mp || wd.starts_with(&format!("{mp}/"))) {
        table.push((wd.clone(), root.join(wd.trim_start_matches('/'))));
    }
    table.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    let cwd = if wd.is_empty() { root.clone() } else { PathBuf::from(rewrite(&wd, &table)) };
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&cwd).map_err(|e| format!("failed to create working directory {wd:?}: {e}"))?;

    let (read_end, write_end) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    let write_err = write_end.try_clone().map_err(|e| e.to_string())?;
    // `stdin: true`: a pipe that attach sessions write to (closed at once
    // otherwise, as a container without stdin reads end of file).
    let (stdin, stdin_writer) = if spec.get("stdin").and_then(Value::as_bool) == Some(true) {
        // Close-on-exec: no other process may hold the write end, or the
        // container would never read end of file.
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
        (Stdio::from(r), Some(std::fs::File::from(w)))
    } else {
        (Stdio::null(), None)
    };
    let mut cmd = Command::new(exe);
    cmd.args(argv.iter().map(|a| rewrite(a, &table)))
        .env_clear()
        .current_dir(&cwd)
        .stdin(stdin)
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::from(write_err))
        .process_group(0);
    // The image's programs are on its PATH (a directory of links to them), then the test process's.
    let bin = rt_dir_bin(&root);
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    for (name, exe) in programs.iter().filter(|(n, _)| !n.contains('/')) {
        let _ = std::os::unix::fs::symlink(exe, bin.join(name));
    }
    let path = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    cmd.env("PATH", std::env::join_paths(std::iter::once(bin).chain(path)).map_err(|e| e.to_string())?);
    if let Ok(v) = std::env::var("HOME") {
        cmd.env("HOME", v);
    }
    cmd.env("HOSTNAME", name_of(pod));
    for (k, v) in &env {
        cmd.env(k, rewrite(v, &table));
    }
    let spawned = cmd.spawn();
    drop(cmd); // the parent's copies of the pipe's write end
    let mut child = spawned.map_err(|e| {
        format!("failed to create containerd task: failed to create shim task: OCI runtime create failed: exec {prog:?}: {e}: unknown")
    })?;
    let pid = child.id() as i32;
    let c = &mut st.pods.get_mut(uid).expect("runtime").containers[i];
    c.run += 1;
    c.log.clear();
    c.tracked.clear();
    c.stdin = stdin_writer;
    let run = c.run;
    // Output can only arrive once the reader below runs (it takes the lock).

    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let reader_state = shared.clone();
    let reader_uid = uid.to_string();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(read_end);
        let mut buf = [0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut s = reader_state.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(c) = s.pods.get_mut(&reader_uid).and_then(|rt| rt.containers.get_mut(i)) {
                        if c.run == run {
                            append_log(&mut c.log, &buf[..n]);
                        }
                    }
                    s.notify();
                }
            }
        }
        let _ = done_tx.send(());
    });
    let waiter_state = shared.clone();
    let waiter_uid = uid.to_string();
    std::thread::spawn(move || {
        let status = child.wait();
        // The container's other processes die with it.
        let tracked = {
            let s = waiter_state.lock().unwrap_or_else(|e| e.into_inner());
            s.pods
                .get(&waiter_uid)
                .and_then(|rt| rt.containers.get(i))
                .filter(|c| c.run == run)
                .map(|c| c.tracked.clone())
                .unwrap_or_default()
        };
        signal_group(pid, Signal::SIGKILL);
        signal_tracked(&tracked, Signal::SIGKILL);
        let _ = done_rx.recv_timeout(Duration::from_secs(1));
        let code = match status {
            Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
            Err(_) => 255,
        };
        let mut s = waiter_state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = s.pods.get_mut(&waiter_uid).and_then(|rt| rt.containers.get_mut(i)) {
            if c.run == run {
                if let CState::Running { started, forced_exit, .. } = c.state {
                    c.state = terminated(forced_exit.unwrap_or(code), started, None);
                }
                c.stdin = None;
            }
        }
        s.notify();
    });
    Ok(Some(pid))
}

/// The directory of a container's image programs (next to its root).
fn rt_dir_bin(root: &Path) -> PathBuf {
    root.with_file_name("bin")
}

/// Graceful termination of a pod being deleted.
fn terminate(st: &mut State, pod: &Value) {
    let uid = uid_of(pod).to_string();
    let ns = ns_of(pod).to_string();
    let name = name_of(pod).to_string();
    let grace = pod.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(30);
    let Some(rt) = st.pods.get_mut(&uid) else { return };
    let effective = Duration::from_secs(grace.clamp(0, 2) as u64);
    match rt.kill_at {
        None => {
            rt.kill_at = Some(Instant::now() + effective);
            for c in rt.containers.iter_mut() {
                match c.state {
                    CState::Running { pid: Some(_), .. } if grace == 0 => c.kill(Signal::SIGKILL),
                    CState::Running { pid: Some(_), .. } => c.term(),
                    CState::Running { pid: None, started, .. } => c.state = terminated(143, started, None),
                    _ => {}
                }
            }
        }
        Some(at) if Instant::now() >= at => {
            for c in &rt.containers {
                c.kill(Signal::SIGKILL);
            }
        }
        Some(_) => {}
    }
    if !rt.running_pids().is_empty() {
        write_status(st, &ns, &name);
        return;
    }
    write_status(st, &ns, &name);
    if super::store::finalizers(pod).is_empty() {
        st.remove(Kind::Pod, &ns, &name);
    }
}

fn terminated_json(
    code: i32,
    reason: &str,
    message: Option<&str>,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
    container_id: &str,
) -> Value {
    let mut t = json!({
        "exitCode": code,
        "reason": reason,
        "startedAt": fmt_time(started),
        "finishedAt": fmt_time(finished),
        "containerID": container_id,
    });
    if let Some(m) = message {
        t["message"] = json!(m);
    }
    t
}

fn state_json(c: &ContainerRt) -> Value {
    match &c.state {
        CState::Waiting { reason, message } => {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            json!({"waiting": w})
        }
        CState::Running { started, .. } => json!({"running": {"startedAt": fmt_time(*started)}}),
        CState::Terminated { exit_code, reason, message, started, finished } => json!({
            "terminated": terminated_json(*exit_code, reason, message.as_deref(), *started, *finished, &c.container_id)
        }),
    }
}

/// Recomputes the pod's status from the runtime and writes it if it changed.
pub(super) fn write_status(st: &mut State, ns: &str, name: &str) {
    let Some(pod) = st.get(Kind::Pod, ns, name).cloned() else { return };
    let uid = uid_of(&pod).to_string();
    let Some(rt) = st.pods.get(&uid) else { return };
    let deleting = is_deleting(&pod);
    let all_terminated =
        !rt.containers.is_empty() && rt.containers.iter().all(|c| matches!(c.state, CState::Terminated { .. }));
    let all_ok = rt.containers.iter().all(|c| matches!(c.state, CState::Terminated { exit_code: 0, .. }));
    let any_started = rt.containers.iter().any(ContainerRt::ever_started);
    let phase = if all_terminated || (deleting && rt.running_pids().is_empty() && rt.kill_at.is_some()) {
        if all_terminated && all_ok {
            "Succeeded"
        } else {
            "Failed"
        }
    } else if any_started {
        "Running"
    } else {
        "Pending"
    };
    let all_running = rt.containers.iter().all(ContainerRt::is_running);
    let ready = phase == "Running" && all_running && !deleting;
    let not_ready: Vec<&str> = rt.containers.iter().filter(|c| !c.is_running()).map(|c| c.name.as_str()).collect();
    let old = pod.get("status").cloned().unwrap_or(json!({}));
    let old_conds = old.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let cond = |t: &str, ok: bool, reason: Option<&str>, message: Option<String>| -> Value {
        let status = if ok { "True" } else { "False" };
        let since = old_conds
            .iter()
            .find(|c| {
                c.get("type").and_then(Value::as_str) == Some(t)
                    && c.get("status").and_then(Value::as_str) == Some(status)
            })
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(fmt_time(now())));
        let mut c = json!({"type": t, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        if let Some(m) = message {
            c["message"] = json!(m);
        }
        c
    };
    let (ready_reason, ready_msg) = if ready {
        (None, None)
    } else if phase == "Succeeded" {
        (Some("PodCompleted"), None)
    } else {
        (Some("ContainersNotReady"), Some(format!("containers with unready status: [{}]", not_ready.join(" "))))
    };
    let sandbox_ready = rt.volumes.is_some() && !(phase == "Succeeded" || phase == "Failed");
    let conditions = vec![
        cond("PodReadyToStartContainers", sandbox_ready, None, None),
        cond("Initialized", true, None, None),
        cond("Ready", ready, ready_reason, ready_msg.clone()),
        cond("ContainersReady", ready, ready_reason, ready_msg),
        cond("PodScheduled", true, None, None),
    ];
    let statuses: Vec<Value> = rt
        .containers
        .iter()
        .map(|c| {
            let mut s = json!({
                "name": c.name,
                "state": state_json(c),
                "lastState": c.last_terminated.clone().unwrap_or(json!({})),
                "ready": ready && c.is_running(),
                "restartCount": c.restarts,
                "image": c.image,
                "imageID": if c.pulled { format!("{}@sha256:{}", c.image, hex::encode(sha2::Sha256::digest(c.image.as_bytes()))) } else { String::new() },
                "started": c.is_running(),
            });
            if c.ever_started() || !c.container_id.is_empty() {
                s["containerID"] = json!(c.container_id);
            }
            s
        })
        .collect();
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "startTime": fmt_time(rt.admitted),
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    });
    if rt.volumes.is_some() {
        status["podIP"] = json!(rt.ip);
        status["podIPs"] = json!([{"ip": rt.ip}]);
    }
    if let Some(m) = &rt.mount_error {
        // The real kubelet reports this as a FailedMount event.
        if let Some(cs) = status["containerStatuses"].as_array_mut() {
            for c in cs.iter_mut() {
                if c.pointer("/state/waiting/reason").and_then(Value::as_str) == Some("ContainerCreating") {
                    c["state"]["waiting"]["message"] = json!(m);
                }
            }
        }
    }
    if status != old {
        st.modify(Kind::Pod, ns, name, |p| p["status"] = status);
    }
}
