//! A Kubernetes API test server: the slice of a cluster George's Kubernetes
//! runtime and its Lease-based leader elector use, served over HTTP so they
//! are tested through kube-rs's real client. It follows the API conventions
//! (<https://kubernetes.io/docs/reference/using-api/api-concepts/>) for what
//! it covers; it is a product asset — keep it faithful. What it covers:
//!
//! - **Resources** (namespaced; namespaces are not objects here, every
//!   namespace exists): core `v1` `pods`, `secrets`; `batch/v1` `jobs`;
//!   `coordination.k8s.io/v1` `leases`, at
//!   `/api/v1/namespaces/{ns}/{plural}[/{name}]` and
//!   `/apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]`, plus
//!   list/watch across namespaces at `/api/v1/{plural}` and
//!   `/apis/{group}/{version}/{plural}`, `GET …/pods/{name}/log`, and
//!   `GET /version`. JSON only. Anything else: `404` (`405` for a method a
//!   path does not take). No subresources besides `log` (no `/status`).
//! - **Authentication**: `Authorization: Bearer <token>`, else `401` Status
//!   `Unauthorized`.
//! - **Errors** are `Status` objects (`kind: Status`, `status: Failure`,
//!   `message`, `reason`, `details {name, group, kind, causes}`, `code`), as
//!   kube-rs parses into `kube::Error::Api`: `NotFound` (`jobs.batch "x" not
//!   found`), `AlreadyExists`, `Conflict` (`Operation cannot be fulfilled on
//!   leases.coordination.k8s.io "x": the object has been modified; please
//!   apply your changes to the latest version and try again`), `Invalid`
//!   (422, `Job.batch "x" is invalid: metadata.name: Invalid value: …`, one
//!   cause per field), `BadRequest`, `Expired` (410), `Unauthorized`,
//!   `MethodNotAllowed`, `UnsupportedMediaType`.
//! - **Objects** carry `metadata.resourceVersion` (one global counter, as
//!   etcd's revision: every write — including a deletion, whose `DELETED`
//!   event carries the new version — bumps it), a random `uid`,
//!   `creationTimestamp`, `generation` (jobs; bumped when `spec` changes),
//!   `namespace`, `name`, `apiVersion`, `kind` (list items omit the last
//!   two, as the apiserver does). `generateName` gets 5 random characters.
//! - **create** (`POST`): `201`; `409 AlreadyExists`; `422 Invalid`; `400`
//!   when the body's namespace differs from the path's or its
//!   `apiVersion`/`kind` are another resource's; `500` when
//!   `resourceVersion` is set (the apiserver's "resourceVersion should not
//!   be set on objects to be created").
//! - **get**: `200`/`404`. **list**: `{kind: JobList, apiVersion, metadata:
//!   {resourceVersion}, items}`, sorted by namespace and name;
//!   `labelSelector` (`a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`,
//!   `a notin (x)`, `a>1`, `a<1`; comma = AND; malformed → `400`),
//!   `fieldSelector` (`metadata.name`, `metadata.namespace`, a few per kind:
//!   see `select.rs`; `=`, `==`, `!=`), `limit` + opaque `continue` (later
//!   pages are read from the current state, each item once, and carry the
//!   first page's resourceVersion; `remainingItemCount` is set).
//!   `resourceVersion`/`resourceVersionMatch` on a list are ignored (the
//!   list is always the latest state).
//! - **watch** (`?watch=true|1`): chunked newline-delimited `{"type",
//!   "object"}` events. From `resourceVersion=X`: every change after `X`
//!   from a bounded history (1000 changes; [`KubeServer::start_with_history`]),
//!   then live; `X` older than the history → one `ERROR` event with a `410`
//!   Status (reason `Expired`, `too old resource version: X (Y)`) and the
//!   end of the stream (a watch that falls that far behind gets the same).
//!   No `resourceVersion` or `0`: `ADDED` for every current object first.
//!   `sendInitialEvents=true` (streaming lists): the current objects, then a
//!   `BOOKMARK` annotated `k8s.io/initial-events-end: "true"`. Selectors
//!   apply to the object after each change: an object that stops matching
//!   is sent as `DELETED` (its previous state), one that starts matching as
//!   `ADDED`. `allowWatchBookmarks=true`: a `BOOKMARK` every second.
//!   `timeoutSeconds` ends the stream (default and maximum 30 min).
//! - **replace** (`PUT`): a `metadata.resourceVersion` that is not the
//!   stored one → `409 Conflict`; unset → unconditional. `uid`,
//!   `creationTimestamp`, deletion fields and (jobs, pods) `status` are the
//!   stored ones. A replace that changes nothing is a no-op (no new
//!   resourceVersion, no event), as in the apiserver.
//! - **patch** (`PATCH`): `application/merge-patch+json` (RFC 7386) only,
//!   with the same `resourceVersion` (and `uid`) precondition when the patch
//!   sets one; any other content type → `415`.
//! - **delete** (`DELETE`): `DeleteOptions` in the body and/or
//!   `propagationPolicy`/`gracePeriodSeconds`/`orphanDependents` in the
//!   query; `preconditions {uid, resourceVersion}` (mismatch → `409`).
//!   Answers `200` (`202` only for the legacy `orphanDependents: false`
//!   when the deletion is pending, as the apiserver does) with the object —
//!   carrying `deletionTimestamp` when the deletion is pending (graceful pod
//!   termination, finalizers) — except that an immediate delete of a job,
//!   secret or lease answers a `Success` Status (`details {name, group,
//!   kind, uid}`): only the pod storage returns the deleted object. Removing
//!   the last finalizer of an object being deleted deletes it (one
//!   `DELETED` event, no `MODIFIED`). Garbage collection follows
//!   `ownerReferences` by uid: `Background` removes the
//!   owner at once and the collector deletes its dependents on its next
//!   pass; `Foreground` gives the owner the `foregroundDeletion` finalizer,
//!   the collector deletes the dependents, the owner goes when no dependent
//!   with `blockOwnerDeletion` is left; `Orphan` gives it the `orphan`
//!   finalizer, the collector strips the owner reference from the
//!   dependents and the owner goes. **batch/v1 Jobs default to `Orphan`**
//!   (the Job REST strategy's legacy default; `kubectl` sends `Background`),
//!   everything else to `Background`. Pods terminate gracefully: SIGTERM to
//!   each container's main process, SIGKILL to all its processes after the
//!   grace period (the request's, else the pod's
//!   `terminationGracePeriodSeconds`, default 30 s — **capped at 2 s
//!   here**), then the pod is `Failed` (or `Succeeded`) and goes; an
//!   unscheduled or finished pod goes at once.
//! - **Decoding and defaulting**: type errors, invalid base64 in a Secret's
//!   `data` and a Lease `acquireTime`/`renewTime` that is not a `MicroTime`
//!   (RFC 3339 with exactly six fractional digits) are `400 BadRequest`, as
//!   the apiserver's decoder answers them. Defaults as `kubectl get -o
//!   yaml` shows them (pod `restartPolicy: Always`, `dnsPolicy`,
//!   `terminationGracePeriodSeconds: 30`, `imagePullPolicy`, secret volume
//!   `defaultMode: 420`; job `completions`/`parallelism: 1`,
//!   `backoffLimit: 6`, `completionMode`, `suspend`,
//!   `podReplacementPolicy`; Secret `type: Opaque`; a Job's generated
//!   `selector` and template labels `batch.kubernetes.io/controller-uid`,
//!   `controller-uid`, `batch.kubernetes.io/job-name`, `job-name`; a Job
//!   without labels takes its template's). A Secret's `stringData` is merged
//!   into `data`. Unknown fields are kept (the apiserver drops them).
//! - **Validation** (`422`): names (DNS-1123 subdomain; a Job's name also
//!   becomes a label value, so over 63 characters fails on
//!   `spec.template.metadata.labels`), label keys and values, annotation
//!   keys, owner references, finalizers; pod specs (at least one container,
//!   container names DNS labels and unique, images, env names, `value` xor
//!   `valueFrom`, key references with name and key, volume names DNS labels
//!   and unique with one source, mounts naming a volume with unique paths,
//!   `restartPolicy` — `Never`/`OnFailure` for a Job template); a Job's
//!   `spec.template`, `selector`, `completions` and `completionMode` are
//!   immutable; a pod's spec is immutable but for images and
//!   `activeDeadlineSeconds`; Secret keys, size, `type` and `immutable`; a
//!   Lease's `leaseDurationSeconds` > 0 and `leaseTransitions` ≥ 0.
//! - **Pod logs**: `container` (required when there are several),
//!   `follow` (chunked, until the container terminates), `timestamps`
//!   (RFC3339Nano prefix and a space), `sinceTime`, `sinceSeconds`,
//!   `tailLines`, `limitBytes`, `previous`; `400` `container "c" in pod "p"
//!   is waiting to start: ContainerCreating` (or the kubelet's image pull
//!   wording) before it ran; `404` once the pod is gone.
//! - **Pod attach** (`pods/{name}/attach`, WebSocket, `v5.channel.k8s.io` /
//!   `v4.channel.k8s.io`): stdin into a container started with `stdin:
//!   true`, closed after the first session with `stdinOnce`; a `Status` on
//!   the error channel when the container ends (see `attach.rs`).
//! - **Controllers**, ticking every 50 ms: the **Job controller**
//!   (NonIndexed jobs: pods `{job}-{5 random}` from the template, owned by
//!   the Job; `status.startTime`, `active`, `ready`, `terminating`,
//!   `succeeded`, `failed`; a new pod per failure while `failed <=
//!   backoffLimit` — no back-off delay here; a terminating pod is replaced
//!   at once (`podReplacementPolicy: TerminatingOrFailed`) —, for `OnFailure` the
//!   containers' restarts count against the limit; `SuccessCriteriaMet`
//!   then `Complete` with `completionTime`, `FailureTarget` then `Failed`
//!   (`BackoffLimitExceeded`, `DeadlineExceeded` after
//!   `activeDeadlineSeconds`, active pods deleted first), as Kubernetes ≥
//!   1.31 reports them; a pod that vanishes unfinished counts as failed;
//!   `suspend` deletes the active pods and sets `Suspended`), the
//!   **TTL-after-finished controller**, the **garbage collector**, and the
//!   **kubelet** (see `kubelet.rs`: images are [`ImageBehaviour`]s set by the
//!   test; `Exec` images run local processes in a per-pod sandbox
//!   directory, `Hold` images run until [`KubeServer::finish_pod`]).
//!
//! Not covered: other resources and subresources (`exec`, `portforward`;
//! attach streams no stdout/stderr), `deletecollection`,
//! server-side apply, strategic merge and JSON patch, `dryRun` (refused
//! with `400`), protobuf, namespaces as objects, admission (service
//! accounts, token volumes), indexed jobs, pod failure and success
//! policies, init containers (not run), probes, resource limits, a pod's own
//! `activeDeadlineSeconds` (not enforced by the kubelet), updates of mounted
//! Secrets (written once, at start), exponential back-offs (image pulls,
//! crash loops, job retries: one tick each).

#![allow(dead_code)]

mod attach;
mod controllers;
mod http;
mod kubelet;
mod select;
mod store;
mod validate;

use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{Kind, Shared, State};

/// What an image does when a container runs it.
#[derive(Clone, Debug)]
pub enum ImageBehaviour {
    /// The image "provides" programs: the pod's container `command[0]`
    /// (matched by file name, e.g. "george") is run as a local process from
    /// this path, with the rest of command+args.
    Exec(BTreeMap<String, PathBuf>),
    /// The container "runs" until the test calls `finish_pod`.
    Hold,
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The raw query string (`""` when there is none).
    pub query: String,
    /// The JSON body, `Null` when empty, a string when it is not JSON.
    pub body: Value,
}

/// The running server. Dropping it kills every process its kubelet started.
pub struct KubeServer {
    pub url: String,
    state: Shared,
    controller: Option<std::thread::JoinHandle<()>>,
    _sandbox: tempfile::TempDir,
}

fn kind_of(plural: &str) -> Kind {
    Kind::from_plural(plural).unwrap_or_else(|| panic!("the kube test server has no resource {plural:?}"))
}

impl KubeServer {
    /// A server that requires `Authorization: Bearer <token>`.
    pub fn start(token: &str) -> KubeServer {
        Self::start_with_history(token, 1000)
    }

    /// A server whose watch cache keeps the last `history` changes (a watch
    /// from an older resourceVersion gets `410 Gone`).
    pub fn start_with_history(token: &str, history: usize) -> KubeServer {
        let sandbox = tempfile::Builder::new().prefix("kube-test-node-").tempdir().expect("a temporary directory");
        let state: Shared = Arc::new(Mutex::new(State::new(token, history, sandbox.path().to_path_buf())));
        let addr = super::inbox::serve_in_background(http::router(state.clone()));
        let ticker = state.clone();
        let controller = std::thread::spawn(move || loop {
            {
                let mut st = ticker.lock().unwrap();
                if st.shutdown {
                    return;
                }
                controllers::tick(&mut st, &ticker);
            }
            std::thread::sleep(Duration::from_millis(50));
        });
        KubeServer { url: format!("http://{addr}"), state, controller: Some(controller), _sandbox: sandbox }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// What containers running `image` do. Images never set cannot be pulled.
    pub fn set_image(&self, image: &str, b: ImageBehaviour) {
        self.lock().images.insert(image.to_string(), b);
    }

    /// A kubeconfig for this server: `server` = the URL, a user with the
    /// token, the current context's `namespace`.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) {
        let token = self.lock().token.clone();
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: kube-test
  cluster:
    server: {url}
users:
- name: kube-test
  user:
    token: {token:?}
contexts:
- name: kube-test
  context:
    cluster: kube-test
    user: kube-test
    namespace: {namespace:?}
current-context: kube-test
preferences: {{}}
",
            url = self.url
        );
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the kubeconfig's directory");
        }
        std::fs::write(path, text).expect("writing the kubeconfig");
    }

    /// The objects of `plural` ("jobs", "pods", "secrets", "leases") in `ns`, by name.
    pub fn list(&self, plural: &str, ns: &str) -> Vec<Value> {
        self.lock().iter(kind_of(plural), Some(ns)).cloned().collect()
    }

    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.lock().get(kind_of(plural), ns, name).cloned()
    }

    /// Creates an object as a client would (defaults, validation): the
    /// stored object, or the error `Status`.
    pub fn create(&self, plural: &str, ns: &str, obj: Value) -> Result<Value, Value> {
        self.lock().create(kind_of(plural), ns, obj).map_err(|e| e.status())
    }

    /// The pods of Job `job` (label `batch.kubernetes.io/job-name`), oldest first.
    pub fn pods_of_job(&self, ns: &str, job: &str) -> Vec<Value> {
        let st = self.lock();
        let mut pods: Vec<Value> = st
            .iter(Kind::Pod, Some(ns))
            .filter(|p| {
                p.pointer("/metadata/labels/batch.kubernetes.io~1job-name").and_then(Value::as_str) == Some(job)
            })
            .cloned()
            .collect();
        pods.sort_by_key(|p| st.created.get(store::uid_of(p)).copied().unwrap_or(0));
        pods
    }

    /// Waits (up to 10 s) until a container of the pod runs, then applies `f`
    /// to its runtime under the lock.
    fn with_running(&self, ns: &str, pod: &str, what: &str, f: impl Fn(&mut kubelet::PodRuntime)) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            {
                let mut st = self.lock();
                let uid = st.get(Kind::Pod, ns, pod).map(|p| store::uid_of(p).to_string());
                let Some(uid) = uid else { panic!("{what}: there is no pod {ns}/{pod}") };
                if let Some(rt) = st.pods.get_mut(&uid) {
                    if rt.containers.iter().any(kubelet::ContainerRt::is_running) {
                        f(rt);
                        st.notify();
                        return;
                    }
                }
            }
            assert!(Instant::now() < deadline, "{what}: pod {ns}/{pod} has no running container");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ends the pod's running containers with `exit_code`: a `Hold` container
    /// exits with it; an `Exec` container's process is killed and the code
    /// recorded instead of the signal's. Waits (up to 10 s) for the pod to run.
    pub fn finish_pod(&self, ns: &str, pod: &str, exit_code: i32) {
        self.with_running(ns, pod, "finish_pod", |rt| {
            for c in rt.containers.iter_mut() {
                if let kubelet::CState::Running { started, pid, .. } = c.state {
                    match pid {
                        None => {
                            c.state = kubelet::CState::Terminated {
                                exit_code,
                                reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
                                message: None,
                                started,
                                finished: store::now(),
                            }
                        }
                        Some(pid) => {
                            c.state =
                                kubelet::CState::Running { started, pid: Some(pid), forced_exit: Some(exit_code) };
                            c.kill(Signal::SIGKILL);
                        }
                    }
                }
            }
        });
    }

    /// SIGKILLs the pod's processes (as the OOM killer or a crash would):
    /// exit code 137, reason `Error`. A `Hold` container ends the same way.
    pub fn kill_pod_process(&self, ns: &str, pod: &str) {
        self.with_running(ns, pod, "kill_pod_process", |rt| {
            for c in rt.containers.iter_mut() {
                if let kubelet::CState::Running { started, pid, .. } = c.state {
                    match pid {
                        None => {
                            c.state = kubelet::CState::Terminated {
                                exit_code: 137,
                                reason: "Error".into(),
                                message: None,
                                started,
                                finished: store::now(),
                            }
                        }
                        Some(_) => c.kill(Signal::SIGKILL),
                    }
                }
            }
        });
    }

    /// Deletes the pod as `kubectl delete pod` does (graceful, default
    /// options): its containers are stopped and the pod goes. Does nothing
    /// when the pod does not exist.
    pub fn delete_pod(&self, ns: &str, pod: &str) {
        let _ = self.lock().delete(Kind::Pod, ns, pod, &store::DeleteOptions::default());
    }

    /// The pod's log (its first container's, or the named one's), as `kubectl logs`.
    pub fn pod_log(&self, ns: &str, pod: &str) -> String {
        let st = self.lock();
        let Some(p) = st.get(Kind::Pod, ns, pod) else { return String::new() };
        let Some(rt) = st.pods.get(store::uid_of(p)) else { return String::new() };
        let bytes: Vec<u8> =
            rt.containers.first().map(|c| c.log.iter().flat_map(|l| l.text.clone()).collect()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Every request seen so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// The next `n` non-watch requests answer `code` with a `Status` body
    /// (and `Retry-After: 1` for 429), without acting on them. Note that
    /// kube-rs's client retries 429, 503 and 504 by itself (up to 15 times):
    /// use another code (500, 409…) for an error the caller sees.
    pub fn inject_faults(&self, n: usize, code: u16) {
        self.lock().faults = (n, code);
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.shutdown = true;
            st.notify();
            for c in st.pods.values().flat_map(|rt| rt.containers.iter()) {
                c.kill(Signal::SIGKILL);
            }
        }
        // Wait for the processes to be reaped, so none outlives the test.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let left = {
                let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                st.pods.values().any(|rt| !rt.running_pids().is_empty())
            };
            if !left {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(t) = self.controller.take() {
            let _ = t.join();
        }
    }
}
