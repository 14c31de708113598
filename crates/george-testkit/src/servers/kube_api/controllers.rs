//! The control plane: the garbage collector (finalizers `orphan` and
//! `foregroundDeletion`, dependents whose owners are gone), the Job
//! controller and the TTL-after-finished controller. One pass per tick of
//! the server's controller thread, under the state lock; every change is an
//! ordinary write (a new resourceVersion and a watch event).

use super::store::{is_deleting, name_of, ns_of, owner_uids, str_at, uid_of, DeleteOptions, Kind, Shared, State};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// One pass of every controller and of the kubelet.
pub(super) fn tick(st: &mut State, shared: &Shared) {
    gc(st);
    jobs(st);
    super::kubelet::tick(st, shared);
}

fn background() -> DeleteOptions {
    DeleteOptions { propagation: Some("Background".into()), ..Default::default() }
}

fn all_keys(st: &State) -> Vec<(Kind, String, String)> {
    st.objects.keys().cloned().collect()
}

/// The objects in `ns` with an ownerReference to `uid`.
fn dependents(st: &State, ns: &str, uid: &str) -> Vec<(Kind, String, Value)> {
    st.objects
        .iter()
        .filter(|((_, n, _), o)| n == ns && owner_uids(o).iter().any(|u| u == uid))
        .map(|((k, _, name), o)| (*k, name.clone(), o.clone()))
        .collect()
}

fn drop_owner_refs(obj: &mut Value, gone: &HashSet<String>) {
    let Some(refs) = obj.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) else { return };
    refs.retain(|r| !r.get("uid").and_then(Value::as_str).is_some_and(|u| gone.contains(u)));
    if refs.is_empty() {
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("ownerReferences");
        }
    }
}

fn remove_finalizer(st: &mut State, kind: Kind, ns: &str, name: &str, f: &str) {
    let Some(mut obj) = st.get(kind, ns, name).cloned() else { return };
    let mut fin = super::store::finalizers(&obj);
    fin.retain(|x| x != f);
    super::store::set_finalizers(&mut obj, &fin);
    // Without finalizers the object goes (pods once the kubelet has stopped
    // them, see kubelet.rs).
    if kind != Kind::Pod && fin.is_empty() {
        st.remove_as(kind, obj);
    } else {
        st.modify(kind, ns, name, |o| *o = obj);
    }
}

/// The garbage collector.
fn gc(st: &mut State) {
    for (kind, ns, name) in all_keys(st) {
        let Some(obj) = st.get(kind, &ns, &name).cloned() else { continue };
        if !is_deleting(&obj) {
            continue;
        }
        let uid = uid_of(&obj).to_string();
        let fin = super::store::finalizers(&obj);
        if fin.iter().any(|f| f == "orphan") {
            let me: HashSet<String> = [uid.clone()].into();
            for (dk, dname, _) in dependents(st, &ns, &uid) {
                st.modify(dk, &ns, &dname, |d| drop_owner_refs(d, &me));
            }
            remove_finalizer(st, kind, &ns, &name, "orphan");
        } else if fin.iter().any(|f| f == "foregroundDeletion") {
            let deps = dependents(st, &ns, &uid);
            for (dk, dname, d) in &deps {
                if !is_deleting(d) {
                    let _ = st.delete(*dk, &ns, dname, &background());
                }
            }
            let blocking = dependents(st, &ns, &uid).iter().any(|(_, _, d)| {
                d.pointer("/metadata/ownerReferences").and_then(Value::as_array).into_iter().flatten().any(|r| {
                    r.get("uid").and_then(Value::as_str) == Some(uid.as_str())
                        && r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true)
                })
            });
            if !blocking {
                remove_finalizer(st, kind, &ns, &name, "foregroundDeletion");
            }
        } else if kind != Kind::Pod && fin.is_empty() {
            st.remove(kind, &ns, &name);
        }
    }
    // Dependents whose owners are all gone are deleted; references to some
    // gone owners are dropped.
    for (kind, ns, name) in all_keys(st) {
        let Some(obj) = st.get(kind, &ns, &name).cloned() else { continue };
        let owners = owner_uids(&obj);
        if owners.is_empty() {
            continue;
        }
        let gone: HashSet<String> = owners.iter().filter(|u| !st.uids.contains_key(*u)).cloned().collect();
        if gone.is_empty() {
            continue;
        }
        if gone.len() == owners.len() {
            if !is_deleting(&obj) {
                let _ = st.delete(kind, &ns, &name, &background());
            }
        } else {
            st.modify(kind, &ns, &name, |o| drop_owner_refs(o, &gone));
        }
    }
}

fn condition(conds: &[Value], t: &str) -> Option<Value> {
    conds
        .iter()
        .find(|c| {
            c.get("type").and_then(Value::as_str) == Some(t) && c.get("status").and_then(Value::as_str) == Some("True")
        })
        .cloned()
}

fn new_condition(t: &str, status: &str, reason: &str, message: &str) -> Value {
    let now = super::store::fmt_time(super::store::now());
    json!({
        "type": t,
        "status": status,
        "lastProbeTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    })
}

fn set_condition(conds: &mut Vec<Value>, c: Value) {
    let t = c.get("type").cloned();
    if let Some(old) = conds.iter_mut().find(|o| o.get("type") == t.as_ref()) {
        if old.get("status") != c.get("status") || old.get("reason") != c.get("reason") {
            *old = c;
        }
    } else {
        conds.push(c);
    }
}

fn controller_uid(pod: &Value) -> Option<&str> {
    pod.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?
        .get("uid")?
        .as_str()
}

fn is_terminal(pod: &Value) -> bool {
    matches!(str_at(pod, "/status/phase"), Some("Succeeded") | Some("Failed"))
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("Ready")
            && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

fn restart_count(pod: &Value) -> i64 {
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|l| pod.pointer(&format!("/status/{l}")).and_then(Value::as_array).cloned().unwrap_or_default())
        .map(|c| c.get("restartCount").and_then(Value::as_i64).unwrap_or(0))
        .sum()
}

fn jobs(st: &mut State) {
    let jobs: Vec<Value> = st.iter(Kind::Job, None).cloned().collect();
    let live: HashSet<String> = jobs.iter().map(|j| uid_of(j).to_string()).collect();
    st.jobs.retain(|uid, _| live.contains(uid));
    for job in jobs {
        sync_job(st, &job);
    }
}

/// The Job controller's sync of one Job (NonIndexed completion mode).
fn sync_job(st: &mut State, job: &Value) {
    let uid = uid_of(job).to_string();
    let ns = ns_of(job).to_string();
    let name = name_of(job).to_string();
    let spec = job.get("spec").cloned().unwrap_or(json!({}));
    let status = job.get("status").cloned().filter(Value::is_object).unwrap_or(json!({}));
    let mut conds: Vec<Value> = status.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let finished = condition(&conds, "Complete").is_some() || condition(&conds, "Failed").is_some();
    let track = st.jobs.entry(uid.clone()).or_default();

    if finished {
        let done = *track.finished.get_or_insert_with(Instant::now);
        if let Some(ttl) = spec.get("ttlSecondsAfterFinished").and_then(Value::as_i64) {
            if !is_deleting(job) && done.elapsed() >= Duration::from_secs(ttl.max(0) as u64) {
                let _ = st.delete(Kind::Job, &ns, &name, &background());
            }
        }
        return;
    }
    if is_deleting(job) {
        return;
    }

    let pods: Vec<Value> =
        st.iter(Kind::Pod, Some(&ns)).filter(|p| controller_uid(p) == Some(uid.as_str())).cloned().collect();
    let mut succeeded = status.get("succeeded").and_then(Value::as_i64).unwrap_or(0);
    let mut failed = status.get("failed").and_then(Value::as_i64).unwrap_or(0);
    let track = st.jobs.entry(uid.clone()).or_default();
    for p in &pods {
        let outcome = track.pods.entry(uid_of(p).to_string()).or_insert(None);
        if outcome.is_none() {
            match str_at(p, "/status/phase") {
                Some("Succeeded") => {
                    *outcome = Some(true);
                    succeeded += 1;
                }
                Some("Failed") => {
                    *outcome = Some(false);
                    failed += 1;
                }
                _ => {}
            }
        }
    }
    // A pod that disappeared before finishing (deleted, node lost) failed.
    let present: HashSet<&str> = pods.iter().map(uid_of).collect();
    for (puid, outcome) in track.pods.iter_mut() {
        if outcome.is_none() && !present.contains(puid.as_str()) {
            *outcome = Some(false);
            failed += 1;
        }
    }
    let active: Vec<&Value> = pods.iter().filter(|p| !is_terminal(p) && !is_deleting(p)).collect();
    let terminating = pods.iter().filter(|p| !is_terminal(p) && is_deleting(p)).count() as i64;
    let ready = active.iter().filter(|p| is_ready(p)).count() as i64;

    let mut new_status = status.clone();
    let suspend = spec.get("suspend").and_then(Value::as_bool) == Some(true);
    if suspend {
        set_condition(&mut conds, new_condition("Suspended", "True", "JobSuspended", "Job suspended"));
        new_status.as_object_mut().map(|s| s.remove("startTime"));
        track.started = None;
    } else {
        if condition(&conds, "Suspended").is_some() {
            set_condition(&mut conds, new_condition("Suspended", "False", "JobResumed", "Job resumed"));
        }
        if new_status.get("startTime").is_none_or(Value::is_null) {
            new_status["startTime"] = json!(super::store::fmt_time(super::store::now()));
            track.started = Some(Instant::now());
        }
        track.started.get_or_insert_with(Instant::now);
    }
    let started = track.started;

    let completions = spec.get("completions").and_then(Value::as_i64);
    let parallelism = spec.get("parallelism").and_then(Value::as_i64).unwrap_or(1);
    let backoff = spec.get("backoffLimit").and_then(Value::as_i64).unwrap_or(6);
    let on_failure = str_at(&spec, "/template/spec/restartPolicy") == Some("OnFailure");

    let target = if let Some(c) = condition(&conds, "SuccessCriteriaMet") {
        Some((true, c))
    } else if let Some(c) = condition(&conds, "FailureTarget") {
        Some((false, c))
    } else {
        let success = match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        let restarts: i64 = pods.iter().filter(|p| !is_terminal(p)).map(restart_count).sum();
        let past_restarts = on_failure && if backoff == 0 { restarts > 0 } else { restarts >= backoff };
        if success {
            let msg = "Reached expected number of succeeded pods";
            Some((true, new_condition("SuccessCriteriaMet", "True", "CompletionsReached", msg)))
        } else if failed > backoff || past_restarts {
            let msg = "Job has reached the specified backoff limit";
            Some((false, new_condition("FailureTarget", "True", "BackoffLimitExceeded", msg)))
        } else if let (Some(d), Some(s)) = (spec.get("activeDeadlineSeconds").and_then(Value::as_i64), started) {
            if !suspend && s.elapsed() >= Duration::from_secs(d.max(0) as u64) {
                let msg = "Job was active longer than specified deadline";
                Some((false, new_condition("FailureTarget", "True", "DeadlineExceeded", msg)))
            } else {
                None
            }
        } else {
            None
        }
    };

    let mut to_delete: Vec<String> = Vec::new();
    let mut to_create = 0;
    let mut active_count = active.len() as i64;
    match &target {
        Some((success, c)) => {
            set_condition(&mut conds, c.clone());
            to_delete.extend(active.iter().map(|p| name_of(p).to_string()));
            if active.is_empty() && terminating == 0 {
                let reason = c.get("reason").and_then(Value::as_str).unwrap_or("");
                let message = c.get("message").and_then(Value::as_str).unwrap_or("");
                if *success {
                    set_condition(&mut conds, new_condition("Complete", "True", reason, message));
                    new_status["completionTime"] = json!(super::store::fmt_time(super::store::now()));
                } else {
                    set_condition(&mut conds, new_condition("Failed", "True", reason, message));
                }
                if let Some(t) = st.jobs.get_mut(&uid) {
                    t.finished = Some(Instant::now());
                }
            }
            active_count = 0;
        }
        None if suspend => {
            to_delete.extend(active.iter().map(|p| name_of(p).to_string()));
            active_count = 0;
        }
        None => {
            let remaining = completions.map_or(parallelism, |c| (c - succeeded).max(0));
            let mut want = parallelism.min(remaining) - active.len() as i64;
            if str_at(&spec, "/podReplacementPolicy") == Some("Failed") {
                want -= terminating;
            }
            to_create = want.max(0);
        }
    }
    for pod in to_delete {
        let _ = st.delete(Kind::Pod, &ns, &pod, &background());
    }
    for _ in 0..to_create {
        create_pod(st, job);
        active_count += 1;
    }

    let s = new_status.as_object_mut().expect("an object");
    for (k, v) in [("active", active_count), ("succeeded", succeeded), ("failed", failed)] {
        if v > 0 {
            s.insert(k.into(), json!(v));
        } else {
            s.remove(k);
        }
    }
    s.insert("ready".into(), json!(ready));
    s.insert("terminating".into(), json!(terminating));
    s.insert("uncountedTerminatedPods".into(), json!({}));
    if conds.is_empty() {
        s.remove("conditions");
    } else {
        s.insert("conditions".into(), json!(conds));
    }
    if new_status != status {
        st.modify(Kind::Job, &ns, &name, |j| j["status"] = new_status);
    }
}

/// A pod from the Job's template, owned by the Job.
fn create_pod(st: &mut State, job: &Value) {
    let ns = ns_of(job).to_string();
    let name = name_of(job);
    let tmeta = job.pointer("/spec/template/metadata").cloned().unwrap_or(json!({}));
    let mut meta = json!({
        "generateName": format!("{name}-"),
        "ownerReferences": [{
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": name,
            "uid": uid_of(job),
            "controller": true,
            "blockOwnerDeletion": true,
        }],
    });
    for k in ["labels", "annotations", "finalizers"] {
        if let Some(v) = tmeta.get(k) {
            meta[k] = v.clone();
        }
    }
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": job.pointer("/spec/template/spec").cloned().unwrap_or(json!({})),
    });
    match st.create(Kind::Pod, &ns, pod) {
        Ok(p) => {
            let puid = uid_of(&p).to_string();
            st.jobs.entry(uid_of(job).to_string()).or_default().pods.insert(puid, None);
        }
        Err(e) => eprintln!("kube test server: job {ns}/{name}: creating a pod failed: {}", e.message),
    }
}
