//! The Kubernetes API test server (`common::kube_api`) exercised through
//! kube-rs's real client and k8s-openapi's typed objects: what George's
//! Kubernetes runtime and leader elector will rely on.

use crate::common;

use common::kube_api::{ImageBehaviour, KubeServer};
use futures_util::{AsyncBufReadExt, StreamExt, TryStreamExt};
use george_testkit::eventually;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

const TOKEN: &str = "kube-test-token-0123456789";
const NS: &str = "george";

/// A kube client configured from a kubeconfig the server wrote.
async fn client_with(server: &KubeServer, token: Option<&str>) -> kube::Client {
    let dir = common::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path, NS);
    if let Some(t) = token {
        let text = std::fs::read_to_string(&path).unwrap().replace(TOKEN, t);
        std::fs::write(&path, text).unwrap();
    }
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.unwrap();
    assert_eq!(config.default_namespace, NS);
    kube::Client::try_from(config).unwrap()
}

async fn client(server: &KubeServer) -> kube::Client {
    client_with(server, None).await
}

fn api_error(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn job(name: &str, image: &str, command: &[&str], extra_spec: Value) -> Job {
    let mut spec = json!({
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": {"app": "george"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "agent", "image": image, "command": command}],
            },
        },
    });
    merge(&mut spec, extra_spec);
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn phase(p: &Pod) -> String {
    p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default()
}

fn waiting_reason(p: &Pod) -> Option<String> {
    p.status.as_ref()?.container_statuses.as_ref()?.first()?.state.as_ref()?.waiting.as_ref()?.reason.clone()
}

fn job_condition(j: &Job, t: &str) -> Option<String> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t && c.status == "True")
        .map(|c| c.reason.clone().unwrap_or_default())
}

async fn the_pod_of(pods: &Api<Pod>, job: &str) -> Pod {
    eventually(Duration::from_secs(5), "the job's pod", || async {
        pods.list(&ListParams::default().labels(&format!("job-name={job}"))).await.unwrap().items.into_iter().next()
    })
    .await
}

async fn pod_in_phase(pods: &Api<Pod>, name: &str, want: &str) -> Pod {
    eventually(Duration::from_secs(10), &format!("pod {name} to be {want}"), || async {
        pods.get(name).await.ok().filter(|p| phase(p) == want)
    })
    .await
}

/// The next watch event that is not a bookmark (the server sends one every second).
async fn next_event<K, S>(w: &mut S) -> Option<WatchEvent<K>>
where
    S: futures_util::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("a watch event in time")? {
            Ok(WatchEvent::Bookmark(_)) => continue,
            Ok(e) => return Some(e),
            Err(e) => panic!("watch error: {e}"),
        }
    }
}

fn sh_image() -> ImageBehaviour {
    ImageBehaviour::Exec(BTreeMap::from([("sh".to_string(), PathBuf::from("/bin/sh"))]))
}

#[tokio::test]
async fn create_get_list_with_selectors_and_conflicts() {
    let server = KubeServer::start(TOKEN);
    let client = client(&server).await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    for (name, app, tier) in [("a", "web", Some("front")), ("b", "web", None), ("c", "db", Some("back"))] {
        let mut labels = json!({"app": app});
        if let Some(t) = tier {
            labels["tier"] = json!(t);
        }
        let s: Secret =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "stringData": {"k": name}}))
                .unwrap();
        let created = secrets.create(&PostParams::default(), &s).await.unwrap();
        assert_eq!(created.metadata.namespace.as_deref(), Some(NS));
        assert!(created.metadata.uid.as_deref().is_some_and(|u| u.len() == 36));
        assert!(created.metadata.creation_timestamp.is_some());
        // stringData is merged into data; the apiserver defaults the type.
        assert_eq!(created.data.unwrap()["k"].0, name.as_bytes());
        assert_eq!(created.type_.as_deref(), Some("Opaque"));
    }
    let got = secrets.get("b").await.unwrap();
    assert_eq!(got.metadata.labels.unwrap()["app"], "web");

    let names = |l: kube::core::ObjectList<Secret>| -> Vec<String> {
        l.items.into_iter().map(|s| s.metadata.name.unwrap()).collect()
    };
    for (selector, want) in [
        ("app=web", vec!["a", "b"]),
        ("app==web,tier", vec!["a"]),
        ("app!=web", vec!["c"]),
        ("app in (db, web),!tier", vec!["b"]),
        ("tier notin (front)", vec!["b", "c"]),
        ("", vec!["a", "b", "c"]),
    ] {
        let l = secrets.list(&ListParams::default().labels(selector)).await.unwrap();
        assert_eq!(names(l), want, "selector {selector:?}");
    }
    let l = secrets.list(&ListParams::default().fields("metadata.name!=a")).await.unwrap();
    assert_eq!(names(l), ["b", "c"]);
    let l = secrets.list(&ListParams::default()).await.unwrap();
    let list_rv: u64 = l.metadata.resource_version.unwrap().parse().unwrap();
    assert_eq!(list_rv, server.resource_version());

    // Paging with an opaque continue token.
    let page = secrets.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("a continue token");
    let rest = secrets.list(&ListParams::default().limit(2).continue_token(&token)).await.unwrap();
    assert_eq!(names(rest.clone()), ["c"]);
    assert!(rest.metadata.continue_.is_none_or(|c| c.is_empty()));

    let bad = api_error(secrets.list(&ListParams::default().labels("app in (web")).await.unwrap_err());
    assert_eq!((bad.code, bad.reason.as_str()), (400, "BadRequest"));

    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap();
    let dup = api_error(secrets.create(&PostParams::default(), &s).await.unwrap_err());
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "secrets \"a\" already exists");

    let missing = api_error(secrets.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));

    let generated: Secret = serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let g = secrets.create(&PostParams::default(), &generated).await.unwrap();
    let gname = g.metadata.name.unwrap();
    assert!(gname.starts_with("gen-") && gname.len() == 9, "{gname}");
}

#[tokio::test]
async fn invalid_objects_are_422_with_causes() {
    let server = KubeServer::start(TOKEN);
    let client = client(&server).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());

    let e =
        api_error(jobs.create(&PostParams::default(), &job("Bad_Name", "img", &["x"], json!({}))).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let causes = e.details.unwrap().causes;
    assert_eq!(causes[0].field, "metadata.name");
    assert!(
        e.message.starts_with("Job.batch \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""),
        "{}",
        e.message
    );

    let always = job("always", "img", &["x"], json!({"template": {"spec": {"restartPolicy": "Always"}}}));
    let e = api_error(jobs.create(&PostParams::default(), &always).await.unwrap_err());
    assert_eq!(e.code, 422);
    let causes = e.details.unwrap().causes;
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert_eq!(causes[0].field, "spec.template.spec.restartPolicy");
    assert_eq!(causes[0].reason, "FieldValueNotSupported");

    let long = "a".repeat(64);
    let e = api_error(jobs.create(&PostParams::default(), &job(&long, "img", &["x"], json!({}))).await.unwrap_err());
    assert_eq!(e.code, 422);
    assert!(e.details.unwrap().causes.iter().any(|c| c.field == "spec.template.metadata.labels"));

    let env = job(
        "env",
        "img",
        &["x"],
        json!({"template": {"spec": {"containers": [{"name": "agent", "image": "img", "env": [
            {"name": "1BAD", "value": "v"},
            {"name": "BOTH", "value": "v", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ], "volumeMounts": [{"name": "missing", "mountPath": "/m"}]}]}}}),
    );
    let e = api_error(jobs.create(&PostParams::default(), &env).await.unwrap_err());
    let fields: Vec<String> = e.details.unwrap().causes.into_iter().map(|c| c.field).collect();
    assert_eq!(
        fields,
        [
            "spec.template.spec.containers[0].env[0].name",
            "spec.template.spec.containers[0].env[1].valueFrom",
            "spec.template.spec.containers[0].volumeMounts[0].name",
        ]
    );

    // The Job's template is immutable.
    let created =
        jobs.create(&PostParams::default(), &job("ok", "img", &["x"], json!({"suspend": true}))).await.unwrap();
    let mut changed = created.clone();
    changed.metadata.resource_version = None;
    changed.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].command = Some(vec!["y".into()]);
    let e = api_error(jobs.replace("ok", &PostParams::default(), &changed).await.unwrap_err());
    assert_eq!(e.code, 422);
    assert_eq!(e.details.unwrap().causes[0].field, "spec.template");
    // Labels can change; the generation does not (no spec change).
    let patched = jobs
        .patch("ok", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
        .await
        .unwrap();
    assert_eq!(patched.metadata.generation, Some(1));
    assert_eq!(patched.metadata.labels.unwrap()["x"], "y");
    let sel = created.spec.unwrap().selector.unwrap().match_labels.unwrap();
    assert_eq!(sel["batch.kubernetes.io/controller-uid"], created.metadata.uid.unwrap());

    // A Lease time that is not a MicroTime does not decode.
    let leases: Api<Lease> = Api::default_namespaced(client);
    let bad: Lease =
        serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": 0}})).unwrap();
    let e = api_error(leases.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((e.code, e.details.unwrap().causes[0].field.as_str()), (422, "spec.leaseDurationSeconds"));
    let req =
        server.create("leases", NS, json!({"metadata": {"name": "t"}, "spec": {"renewTime": "2025-01-01T00:00:00Z"}}));
    assert_eq!(req.unwrap_err()["code"], 400);
    let ok = server.create(
        "leases",
        NS,
        json!({"metadata": {"name": "t"}, "spec": {"renewTime": "2025-01-01T00:00:00.000000Z"}}),
    );
    assert!(ok.is_ok());
    // Bad base64 in a Secret, a namespace other than the path's: 400.
    let e = server.create("secrets", NS, json!({"metadata": {"name": "b"}, "data": {"k": "not base64!"}})).unwrap_err();
    assert_eq!((e["code"].as_u64(), e["reason"].as_str()), (Some(400), Some("BadRequest")));
    let e = server.create("secrets", NS, json!({"metadata": {"name": "b", "namespace": "other"}})).unwrap_err();
    assert_eq!(e["code"], 400);
    let e = server.create("secrets", NS, json!({"metadata": {"name": "b"}, "data": {"bad key": ""}})).unwrap_err();
    assert_eq!((e["code"].as_u64(), e.pointer("/details/causes/0/field")), (Some(422), Some(&json!("data[bad key]"))));
}

#[tokio::test]
async fn lease_replace_with_a_stale_resource_version_conflicts() {
    let server = KubeServer::start(TOKEN);
    let leases: Api<Lease> = Api::default_namespaced(client(&server).await);
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(k8s_openapi::jiff::Timestamp::now());
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "george-leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }))
    .unwrap();
    let mut lease = leases.create(&PostParams::default(), &lease).await.unwrap();
    lease.spec.as_mut().unwrap().renew_time = Some(now.clone());
    lease.spec.as_mut().unwrap().acquire_time = Some(now);
    let stale = lease.clone();
    let renewed = leases.replace("george-leader", &PostParams::default(), &lease).await.unwrap();
    assert_ne!(renewed.metadata.resource_version, stale.metadata.resource_version);
    assert_eq!(renewed.metadata.uid, stale.metadata.uid);

    let mut taken = stale.clone();
    taken.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let e = api_error(leases.replace("george-leader", &PostParams::default(), &taken).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"george-leader\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(leases.get("george-leader").await.unwrap().spec.unwrap().holder_identity.as_deref(), Some("a"));

    // A merge patch with a stale resourceVersion conflicts too; without one it applies.
    let stale_rv = stale.metadata.resource_version.clone().unwrap();
    let p = json!({"metadata": {"resourceVersion": stale_rv}, "spec": {"holderIdentity": "b"}});
    let e = api_error(leases.patch("george-leader", &PatchParams::default(), &Patch::Merge(p)).await.unwrap_err());
    assert_eq!(e.code, 409);
    let p = json!({"spec": {"holderIdentity": "b"}});
    let l = leases.patch("george-leader", &PatchParams::default(), &Patch::Merge(p)).await.unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("b"));
    // Only merge patches are accepted.
    let p = Patch::Strategic(json!({"spec": {"holderIdentity": "c"}}));
    let e = api_error(leases.patch("george-leader", &PatchParams::default(), &p).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (415, "UnsupportedMediaType"));
    // An unconditional replace (no resourceVersion) applies.
    taken.metadata.resource_version = None;
    let l = leases.replace("george-leader", &PostParams::default(), &taken).await.unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("b"));
}

#[tokio::test]
async fn a_watcher_sees_a_job_pod_go_pending_running_succeeded() {
    let server = KubeServer::start(TOKEN);
    server.set_image("george/agent:1", ImageBehaviour::Hold);
    let client = client(&server).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);
    let mut events = Box::pin(watcher(pods.clone(), watcher::Config::default().labels("job-name=held")));
    // The watcher has listed (nothing yet) before the Job exists.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.try_next()).await.unwrap().unwrap() {
            Some(watcher::Event::InitDone) => break,
            Some(watcher::Event::Init) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut stream = events.applied_objects();
    jobs.create(
        &PostParams::default(),
        &job("held", "george/agent:1", &["george", "agent"], json!({"ttlSecondsAfterFinished": 60})),
    )
    .await
    .unwrap();

    let mut phases: Vec<String> = Vec::new();
    let mut finished = false;
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(pod) = stream.try_next().await.unwrap() {
            let p = phase(&pod);
            if phases.last() != Some(&p) {
                phases.push(p.clone());
            }
            if p == "Running" && !finished {
                let labels = pod.metadata.labels.clone().unwrap();
                assert_eq!(labels["batch.kubernetes.io/job-name"], "held");
                assert_eq!(labels["app"], "george");
                let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
                assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
                let status = pod.status.as_ref().unwrap();
                assert!(status.pod_ip.is_some() && status.start_time.is_some());
                let running = status.container_statuses.as_ref().unwrap()[0].state.as_ref().unwrap().running.clone();
                assert!(running.unwrap().started_at.is_some());
                server.finish_pod(NS, pod.metadata.name.as_deref().unwrap(), 0);
                finished = true;
            }
            if p == "Succeeded" {
                return pod;
            }
        }
        panic!("the watch ended");
    })
    .await
    .unwrap_or_else(|_| panic!("phases seen: {phases:?}"));
    assert_eq!(phases, ["Pending", "Running", "Succeeded"]);
    let term = outcome.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!((term.exit_code, term.reason.as_deref()), (0, Some("Completed")));

    let j = eventually(Duration::from_secs(5), "the job to complete", || async {
        jobs.get("held").await.ok().filter(|j| job_condition(j, "Complete").is_some())
    })
    .await;
    let st = j.status.unwrap();
    assert_eq!((st.succeeded, st.active), (Some(1), None));
    assert!(st.completion_time.is_some() && st.start_time.is_some());
    assert!(st.conditions.unwrap().iter().any(|c| c.type_ == "SuccessCriteriaMet"));
}

#[tokio::test]
async fn an_exec_pod_runs_a_process_with_secrets_and_its_logs_stream() {
    let server = KubeServer::start(TOKEN);
    server.set_image("busybox", sh_image());
    let client = client(&server).await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds"},
        "stringData": {"x": "from-secret", "token": "s3cret"},
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let shared = common::tempdir().unwrap();
    let spec = json!({"template": {"spec": {
        "containers": [{
            "name": "agent",
            "image": "busybox",
            "command": ["/bin/sh", "-c", "echo hello; echo \"$X\"; cat /etc/creds/token; echo; echo \"$ME\"; pwd; while [ ! -f /shared/release ]; do sleep 0.02; done; echo done"],
            "workingDir": "/work",
            "env": [
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "x"}}},
                {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            ],
            "volumeMounts": [{"name": "creds", "mountPath": "/etc/creds"}, {"name": "shared", "mountPath": "/shared"}],
        }],
        "volumes": [
            {"name": "creds", "secret": {"secretName": "creds", "items": [{"key": "token", "path": "token", "mode": 256}]}},
            {"name": "shared", "hostPath": {"path": shared.path().to_str().unwrap()}},
        ],
    }}});
    jobs.create(&PostParams::default(), &job("exec", "busybox", &[], spec)).await.unwrap();
    let pod = the_pod_of(&pods, "exec").await;
    let name = pod.metadata.name.clone().unwrap();
    assert!(name.starts_with("exec-") && name.len() == 10, "{name}");
    pod_in_phase(&pods, &name, "Running").await;

    let lp = LogParams { follow: true, ..Default::default() };
    let mut lines = pods.log_stream(&name, &lp).await.unwrap().lines();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let l = tokio::time::timeout(Duration::from_secs(5), lines.next()).await.unwrap().unwrap().unwrap();
        seen.push(l);
    }
    assert_eq!(&seen[..4], ["hello", "from-secret", "s3cret", name.as_str()]);
    assert!(seen[4].ends_with("/work") && seen[4] != "/work", "the working dir is in the sandbox: {}", seen[4]);
    // Still running: the stream waits for more.
    assert!(tokio::time::timeout(Duration::from_millis(200), lines.next()).await.is_err());
    std::fs::write(shared.path().join("release"), "").unwrap();
    let last = tokio::time::timeout(Duration::from_secs(5), lines.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(last, "done");
    assert!(
        tokio::time::timeout(Duration::from_secs(5), lines.next()).await.unwrap().is_none(),
        "the stream ends with the container"
    );

    let done = pod_in_phase(&pods, &name, "Succeeded").await;
    let term = done.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!((term.exit_code, term.reason.as_deref()), (0, Some("Completed")));
    let all = pods.logs(&name, &LogParams::default()).await.unwrap();
    assert!(all.starts_with("hello\nfrom-secret\ns3cret\n"), "{all}");
    assert!(all.ends_with("done\n"));
    let tail =
        pods.logs(&name, &LogParams { tail_lines: Some(1), timestamps: true, ..Default::default() }).await.unwrap();
    let (ts, text) = tail.trim_end().split_once(' ').unwrap();
    assert_eq!(text, "done");
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    // Every line has its own timestamp, strictly increasing (lines written together included).
    let stamped = pods.logs(&name, &LogParams { timestamps: true, ..Default::default() }).await.unwrap();
    let times: Vec<_> =
        stamped.lines().map(|l| chrono::DateTime::parse_from_rfc3339(l.split_once(' ').unwrap().0).unwrap()).collect();
    assert_eq!(times.len(), 6);
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{stamped}");
}

#[tokio::test]
async fn a_missing_secret_blocks_the_pod_until_it_exists() {
    let server = KubeServer::start(TOKEN);
    server.set_image("busybox", sh_image());
    let client = client(&server).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let spec = json!({"template": {"spec": {"containers": [{
        "name": "agent",
        "image": "busybox",
        "command": ["sh", "-c", "test \"$K\" = late"],
        "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "late", "key": "k"}}}],
    }]}}});
    jobs.create(&PostParams::default(), &job("late", "busybox", &[], spec)).await.unwrap();
    let pod = the_pod_of(&pods, "late").await;
    let name = pod.metadata.name.unwrap();
    let blocked = eventually(Duration::from_secs(5), "CreateContainerConfigError", || async {
        pods.get(&name).await.ok().filter(|p| waiting_reason(p).as_deref() == Some("CreateContainerConfigError"))
    })
    .await;
    assert_eq!(phase(&blocked), "Pending");
    let waiting = blocked.status.unwrap().container_statuses.unwrap()[0].state.clone().unwrap().waiting.unwrap();
    assert_eq!(waiting.message.as_deref(), Some("secret \"late\" not found"));
    let e = api_error(pods.logs(&name, &LogParams::default()).await.unwrap_err());
    assert_eq!(e.code, 400);
    assert_eq!(
        e.message,
        format!("container \"agent\" in pod \"{name}\" is waiting to start: CreateContainerConfigError")
    );

    let secrets: Api<Secret> = Api::default_namespaced(client);
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "late"}, "stringData": {"k": "late"}})).unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    pod_in_phase(&pods, &name, "Succeeded").await;
}

#[tokio::test]
async fn unknown_images_cannot_be_pulled() {
    let server = KubeServer::start(TOKEN);
    let pods: Api<Pod> = Api::default_namespaced(client(&server).await);
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nowhere:1"}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = eventually(Duration::from_secs(5), "ImagePullBackOff", || async {
        pods.get("p").await.ok().filter(|p| waiting_reason(p).as_deref() == Some("ImagePullBackOff"))
    })
    .await;
    assert_eq!(phase(&p), "Pending");
    assert_eq!(p.spec.unwrap().restart_policy.as_deref(), Some("Always"));
    let e = api_error(pods.logs("p", &LogParams::default()).await.unwrap_err());
    assert_eq!(e.message, "container \"c\" in pod \"p\" is waiting to start: trying and failing to pull image");
    // Setting the image lets the kubelet pull it.
    server.set_image("nowhere:1", ImageBehaviour::Hold);
    pod_in_phase(&pods, "p", "Running").await;
    // A bare pod deleted while running: SIGTERM, then it goes.
    let deleted = pods.delete("p", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_left(), "a running pod's deletion is pending, the pod is returned");
    eventually(Duration::from_secs(5), "the pod to go", || async {
        pods.get_opt("p").await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn job_deletion_orphans_by_default_and_background_collects_dependents() {
    let server = KubeServer::start(TOKEN);
    server.set_image("hold", ImageBehaviour::Hold);
    let client = client(&server).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client);

    for name in ["orphaning", "collected", "foreground"] {
        let j = jobs.create(&PostParams::default(), &job(name, "hold", &["x"], json!({}))).await.unwrap();
        let owned: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-env"), "ownerReferences": [{
                "apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": j.metadata.uid.clone().unwrap(),
            }]},
            "stringData": {"k": "v"},
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &owned).await.unwrap();
        let pod = the_pod_of(&pods, name).await;
        pod_in_phase(&pods, pod.metadata.name.as_deref().unwrap(), "Running").await;
    }

    // No propagation policy: a batch/v1 Job orphans its pod.
    jobs.delete("orphaning", &DeleteParams::default()).await.unwrap();
    eventually(Duration::from_secs(5), "the orphaning job to go", || async {
        jobs.get_opt("orphaning").await.unwrap().is_none().then_some(())
    })
    .await;
    let orphan = the_pod_of(&pods, "orphaning").await;
    let orphan = eventually(Duration::from_secs(5), "the owner reference to go", || async {
        pods.get(orphan.metadata.name.as_deref().unwrap()).await.ok().filter(|p| p.metadata.owner_references.is_none())
    })
    .await;
    assert_eq!(phase(&orphan), "Running");
    assert!(secrets.get_opt("orphaning-env").await.unwrap().is_some());

    // Background: the pod and the owned Secret are garbage-collected.
    let collected_pod = the_pod_of(&pods, "collected").await.metadata.name.unwrap();
    jobs.delete("collected", &DeleteParams::background()).await.unwrap();
    assert!(jobs.get_opt("collected").await.unwrap().is_none(), "a background delete removes the owner at once");
    eventually(Duration::from_secs(8), "the dependents to be collected", || async {
        let pod = pods.get_opt(&collected_pod).await.unwrap();
        let secret = secrets.get_opt("collected-env").await.unwrap();
        (pod.is_none() && secret.is_none()).then_some(())
    })
    .await;
    assert_eq!(server.pods_of_job(NS, "orphaning").len(), 1);

    // Foreground: the Job waits, being deleted, until its pod is gone.
    let fg_pod = the_pod_of(&pods, "foreground").await.metadata.name.unwrap();
    let pending = jobs.delete("foreground", &DeleteParams::foreground()).await.unwrap();
    let pending = pending.left().expect("the job, being deleted");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(pending.metadata.finalizers.unwrap(), ["foregroundDeletion"]);
    eventually(Duration::from_secs(8), "the foreground deletion", || async {
        let job = jobs.get_opt("foreground").await.unwrap();
        let pod = pods.get_opt(&fg_pod).await.unwrap();
        assert!(job.is_some() || pod.is_none(), "the job went before its pod");
        job.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_failing_job_retries_up_to_its_backoff_limit() {
    let server = KubeServer::start(TOKEN);
    server.set_image("busybox", sh_image());
    let client = client(&server).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let script = "printf 'no\\nstill no\\n' >&2; exit 3";
    jobs.create(&PostParams::default(), &job("fails", "busybox", &["sh", "-c", script], json!({"backoffLimit": 1})))
        .await
        .unwrap();
    let j = eventually(Duration::from_secs(8), "the job to fail", || async {
        jobs.get("fails").await.ok().filter(|j| job_condition(j, "Failed").is_some())
    })
    .await;
    assert_eq!(job_condition(&j, "Failed").as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(j.status.unwrap().failed, Some(2));
    let pods = server.pods_of_job(NS, "fails");
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Failed");
        assert_eq!(p.pointer("/status/containerStatuses/0/state/terminated/exitCode"), Some(&json!(3)));
        assert_eq!(p.pointer("/status/containerStatuses/0/state/terminated/reason"), Some(&json!("Error")));
    }
    let first = pods[0]["metadata"]["name"].as_str().unwrap();
    assert_eq!(server.pod_log(NS, first), "no\nstill no\n");
    // Two lines written at once still get a timestamp each, the second later.
    let stamped = Api::<Pod>::default_namespaced(client)
        .logs(first, &LogParams { timestamps: true, ..Default::default() })
        .await
        .unwrap();
    let times: Vec<_> = stamped.lines().map(|l| l.split_once(' ').unwrap().0.to_string()).collect();
    assert_eq!(times.len(), 2, "{stamped}");
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap();
    assert!(parse(&times[0]) < parse(&times[1]), "{stamped}");
}

#[tokio::test]
async fn killed_and_deleted_pods_count_as_failures() {
    let server = KubeServer::start(TOKEN);
    server.set_image("busybox", sh_image());
    let jobs: Api<Job> = Api::default_namespaced(client(&server).await);
    jobs.create(
        &PostParams::default(),
        &job("killed", "busybox", &["sh", "-c", "sleep 30"], json!({"backoffLimit": 1})),
    )
    .await
    .unwrap();
    let first = common::wait_for(Duration::from_secs(5), "a running pod", || {
        server.pods_of_job(NS, "killed").into_iter().find(|p| p["status"]["phase"] == "Running")
    });
    server.kill_pod_process(NS, first["metadata"]["name"].as_str().unwrap());
    let first_name = first["metadata"]["name"].as_str().unwrap().to_string();
    let killed = common::wait_for(Duration::from_secs(5), "the pod to fail", || {
        server.get("pods", NS, &first_name).filter(|p| p["status"]["phase"] == "Failed")
    });
    assert_eq!(killed.pointer("/status/containerStatuses/0/state/terminated/exitCode"), Some(&json!(137)));
    // The retry pod is deleted (as a node loss would): a second failure.
    let second = common::wait_for(Duration::from_secs(5), "the retry pod to run", || {
        server.pods_of_job(NS, "killed").into_iter().find(|p| p["status"]["phase"] == "Running")
    });
    server.delete_pod(NS, second["metadata"]["name"].as_str().unwrap());
    let j = eventually(Duration::from_secs(8), "the job to fail", || async {
        jobs.get("killed").await.ok().filter(|j| job_condition(j, "Failed").is_some())
    })
    .await;
    assert_eq!(job_condition(&j, "Failed").as_deref(), Some("BackoffLimitExceeded"));
    // The deleted pod was replaced while it terminated (podReplacementPolicy
    // TerminatingOrFailed); once it failed, the job failed and its
    // replacement was deleted: three failed pods.
    assert_eq!(j.status.unwrap().failed, Some(3));
    assert!(server.pods_of_job(NS, "killed").iter().all(|p| p["status"]["phase"] == "Failed"));
}

#[tokio::test]
async fn finished_jobs_expire_and_deadlines_fail_jobs() {
    let server = KubeServer::start(TOKEN);
    server.set_image("busybox", sh_image());
    server.set_image("hold", ImageBehaviour::Hold);
    let client = client(&server).await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);
    jobs.create(
        &PostParams::default(),
        &job("ttl", "busybox", &["sh", "-c", "exit 0"], json!({"ttlSecondsAfterFinished": 0})),
    )
    .await
    .unwrap();
    jobs.create(&PostParams::default(), &job("deadline", "hold", &["x"], json!({"activeDeadlineSeconds": 1})))
        .await
        .unwrap();
    let held = the_pod_of(&pods, "deadline").await.metadata.name.unwrap();
    let j = eventually(Duration::from_secs(5), "the deadline to pass", || async {
        jobs.get("deadline").await.ok().filter(|j| job_condition(j, "Failed").is_some())
    })
    .await;
    assert_eq!(job_condition(&j, "Failed").as_deref(), Some("DeadlineExceeded"));
    assert_eq!(job_condition(&j, "FailureTarget").as_deref(), Some("DeadlineExceeded"));
    let p = pods.get_opt(&held).await.unwrap();
    assert!(p.is_none_or(|p| phase(&p) == "Failed"), "the active pod was stopped");
    eventually(Duration::from_secs(5), "the finished job and its pod to expire", || async {
        let gone = jobs.get_opt("ttl").await.unwrap().is_none();
        let pods = pods.list(&ListParams::default().labels("job-name=ttl")).await.unwrap();
        (gone && pods.items.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_is_gone() {
    let server = KubeServer::start_with_history(TOKEN, 5);
    let leases: Api<Lease> = Api::default_namespaced(client(&server).await);
    let l: Lease = serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}})).unwrap();
    let created = leases.create(&PostParams::default(), &l).await.unwrap();
    let old_rv = created.metadata.resource_version.clone().unwrap();

    // A recent resourceVersion replays what came after it.
    for i in 0..3 {
        let p = json!({"spec": {"holderIdentity": format!("h{i}")}});
        leases.patch("l", &PatchParams::default(), &Patch::Merge(p)).await.unwrap();
    }
    let mut w = Box::pin(leases.watch(&WatchParams::default().timeout(5), &old_rv).await.unwrap());
    for i in 0..3 {
        match next_event(&mut w).await.unwrap() {
            WatchEvent::Modified(l) => assert_eq!(l.spec.unwrap().holder_identity, Some(format!("h{i}"))),
            other => panic!("expected MODIFIED, got {other:?}"),
        }
    }
    drop(w);

    for i in 3..10 {
        let p = json!({"spec": {"holderIdentity": format!("h{i}")}});
        leases.patch("l", &PatchParams::default(), &Patch::Merge(p)).await.unwrap();
    }
    let mut w = Box::pin(leases.watch(&WatchParams::default(), &old_rv).await.unwrap());
    match next_event(&mut w).await.unwrap() {
        WatchEvent::Error(s) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert!(s.message.starts_with(&format!("too old resource version: {old_rv} (")), "{}", s.message);
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(next_event(&mut w).await.is_none(), "the stream ends after the error");

    // kube-runtime's watcher lists, then watches from the list's version.
    let mut stream = Box::pin(watcher(leases.clone(), watcher::Config::default()).applied_objects());
    let first = tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.spec.unwrap().holder_identity.as_deref(), Some("h9"));
    let p = json!({"spec": {"holderIdentity": "live"}});
    leases.patch("l", &PatchParams::default(), &Patch::Merge(p)).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await.unwrap().unwrap().unwrap();
    assert_eq!(next.spec.unwrap().holder_identity.as_deref(), Some("live"));
}

#[tokio::test]
async fn watches_and_lists_hold_up_with_many_objects() {
    let server = KubeServer::start(TOKEN);
    for i in 0..1500 {
        let labels = json!({"parity": if i % 2 == 0 { "even" } else { "odd" }});
        server.create("secrets", NS, json!({"metadata": {"name": format!("s{i:04}"), "labels": labels}})).unwrap();
    }
    let secrets: Api<Secret> = Api::default_namespaced(client(&server).await);
    // kube-runtime's watcher pages the initial list (500 at a time), then watches.
    let mut events = Box::pin(watcher(secrets.clone(), watcher::Config::default().labels("parity=even")));
    let mut seen = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.try_next()).await.unwrap().unwrap().unwrap() {
            watcher::Event::InitApply(_) => seen += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(seen, 750);
    let pages = server.requests().iter().filter(|r| r.query.contains("limit=500")).count();
    assert_eq!(pages, 2, "750 items in pages of 500");
    server.create("secrets", NS, json!({"metadata": {"name": "new", "labels": {"parity": "even"}}})).unwrap();
    match tokio::time::timeout(Duration::from_secs(5), events.try_next()).await.unwrap().unwrap().unwrap() {
        watcher::Event::Apply(s) => assert_eq!(s.metadata.name.as_deref(), Some("new")),
        other => panic!("expected the new secret, got {other:?}"),
    }
    // A raw watch from "0" starts with every current object.
    let mut w = Box::pin(secrets.watch(&WatchParams::default().timeout(5), "0").await.unwrap());
    for _ in 0..1501 {
        assert!(matches!(next_event(&mut w).await.unwrap(), WatchEvent::Added(_)));
    }
}

#[tokio::test]
async fn a_label_watch_sends_deleted_when_an_object_stops_matching() {
    let server = KubeServer::start(TOKEN);
    let secrets: Api<Secret> = Api::default_namespaced(client(&server).await);
    let mut w = Box::pin(secrets.watch(&WatchParams::default().labels("role=agent").timeout(5), "0").await.unwrap());
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "s", "labels": {"role": "agent"}}})).unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    assert!(matches!(next_event(&mut w).await.unwrap(), WatchEvent::Added(_)));
    let p = json!({"metadata": {"labels": {"role": "other"}}});
    let changed = secrets.patch("s", &PatchParams::default(), &Patch::Merge(p)).await.unwrap();
    match next_event(&mut w).await.unwrap() {
        WatchEvent::Deleted(s) => {
            assert_eq!(s.metadata.labels.unwrap()["role"], "agent", "the previous state");
            assert_eq!(s.metadata.resource_version, changed.metadata.resource_version);
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
    let p = json!({"metadata": {"labels": {"role": "agent"}}});
    secrets.patch("s", &PatchParams::default(), &Patch::Merge(p)).await.unwrap();
    assert!(matches!(next_event(&mut w).await.unwrap(), WatchEvent::Added(_)));
    // A delete: only secrets' storage answers a Success Status; watchers get the object.
    let deleted = secrets.delete("s", &DeleteParams::default()).await.unwrap();
    let status = deleted.right().expect("a Status");
    assert_eq!(status.details.unwrap().name, "s");
    assert!(matches!(next_event(&mut w).await.unwrap(), WatchEvent::Deleted(_)));
    // Bookmarks come every second when asked for.
    let bookmark = tokio::time::timeout(Duration::from_secs(3), w.next()).await.unwrap().unwrap().unwrap();
    match bookmark {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, server.resource_version().to_string()),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_tokens_are_401_and_faults_are_injected() {
    let server = KubeServer::start(TOKEN);
    let bad = client_with(&server, Some("wrong")).await;
    let e = api_error(Api::<Pod>::default_namespaced(bad).list(&ListParams::default()).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));

    let pods: Api<Pod> = Api::default_namespaced(client(&server).await);
    // kube-rs retries 429, 503 and 504 by itself; other codes reach the caller.
    server.inject_faults(1, 503);
    assert!(pods.list(&ListParams::default()).await.is_ok());
    server.inject_faults(1, 500);
    let e = api_error(pods.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    assert!(pods.list(&ListParams::default()).await.is_ok());
    let reqs = server.requests();
    assert_eq!(reqs.len(), 5, "{reqs:?}");
    assert!(reqs.iter().all(|r| r.method == "GET" && r.path == "/api/v1/namespaces/george/pods"));

    let e = api_error(Api::<Pod>::all(pods.clone().into_client()).get("x").await.unwrap_err());
    assert_eq!(e.code, 404);
}

#[test]
fn processes_are_killed_when_the_server_is_dropped() {
    let server = KubeServer::start(TOKEN);
    server.set_image("busybox", sh_image());
    server
        .create(
            "pods",
            NS,
            json!({"metadata": {"name": "sleeper"}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "setsid sleep 3008 & sleep 3007; :"]}]}}),
        )
        .unwrap();
    // A container's processes die with its main process, even one that left its process group.
    server
        .create(
            "pods",
            NS,
            json!({"metadata": {"name": "short"}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "setsid sleep 3009 & sleep 0.5"]}]}}),
        )
        .unwrap();
    common::wait_for(Duration::from_secs(5), "the processes", || {
        (common::process_running("sleep 3007") && common::process_running("sleep 3008")).then_some(())
    });
    common::wait_for(Duration::from_secs(5), "the short pod to succeed", || {
        server.get("pods", NS, "short").filter(|p| p["status"]["phase"] == "Succeeded")
    });
    common::wait_for(Duration::from_secs(2), "the escaped process to die with its container", || {
        (!common::process_running("sleep 3009")).then_some(())
    });
    drop(server);
    common::wait_for(Duration::from_secs(2), "the pod's processes to die with the server", || {
        (!common::process_running("sleep 3007") && !common::process_running("sleep 3008")).then_some(())
    });
}
