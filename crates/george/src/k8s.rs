//! `george k8s manifests`: the Kubernetes objects that run George as
//! replicas on one PostgreSQL database: a Deployment (2 replicas by
//! default; every replica serves the API, the lease holder runs the engine,
//! and a replica that loses the lease exits and is restarted as a standby),
//! its ServiceAccount with a Role and RoleBinding, the agents' own
//! ServiceAccount (no role, no token mounted), a Service, and the
//! configuration as a ConfigMap: a Kubernetes Lease elects the leader and
//! agents run as Jobs. The database URL and the API tokens come
//! from Kubernetes Secrets the operator creates; no secret value is ever in
//! these manifests. `deploy/kubernetes/george.yaml` is the default rendering.

use clap::Args;
use serde_json::{json, Value};

/// Options of `george k8s manifests`.
#[derive(Debug, Args, Clone)]
pub struct ManifestsArgs {
    /// Namespace of every object.
    #[arg(long, default_value = "george")]
    pub namespace: String,
    /// The George image (engine and agent).
    #[arg(long, default_value = "george/engine:latest")]
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    #[arg(long, default_value = "IfNotPresent")]
    pub image_pull_policy: String,
    /// Engine replicas.
    #[arg(long, default_value_t = 2)]
    pub replicas: u32,
    /// The Secret whose key `url` is the PostgreSQL URL.
    #[arg(long, default_value = "george-database")]
    pub database_secret: String,
    /// The Secret whose key `tokens` is `GEORGE_API_TOKENS` (`name:role:token,...`).
    #[arg(long, default_value = "george-api-tokens")]
    pub tokens_secret: String,
}

impl Default for ManifestsArgs {
    fn default() -> Self {
        Self {
            namespace: "george".into(),
            image: "george/engine:latest".into(),
            image_pull_policy: "IfNotPresent".into(),
            replicas: 2,
            database_secret: "george-database".into(),
            tokens_secret: "george-api-tokens".into(),
        }
    }
}

const NAME: &str = "george";
const PORT: u16 = 8080;

/// The engine's configuration, as the ConfigMap carries it.
fn config(a: &ManifestsArgs) -> String {
    let (ns, image, pull) = (&a.namespace, &a.image, &a.image_pull_policy);
    format!(
        "# george-config.yaml for replicas on one PostgreSQL database, agents as Kubernetes Jobs.
engine:
  listen: 0.0.0.0:{PORT}
  # What agent pods call back: the Service.
  advertiseUrl: http://{NAME}.{ns}.svc:{PORT}
  leaderElection:
    backend: kubernetes
    leaseDuration: 15s
    renewDeadline: 10s
    retryPeriod: 2s
    kubernetes:
      name: george-engine
      namespace: {ns}
store:
  type: postgres
  urlEnv: GEORGE_DATABASE_URL
containerBackend:
  type: kubernetes
  kubernetes:
    namespace: {ns}
    image: {image}
    imagePullPolicy: {pull}
    serviceAccount: {AGENT_ACCOUNT}
    ttlAfterFinished: 1h
"
    )
}

/// The agents' service account: no role is bound to it.
const AGENT_ACCOUNT: &str = "george-agent";

fn labels() -> Value {
    json!({"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "engine"})
}

fn meta(name: &str, a: &ManifestsArgs) -> Value {
    json!({"name": name, "namespace": a.namespace, "labels": labels()})
}

/// The objects, in the order to apply them.
pub fn objects(a: &ManifestsArgs) -> Vec<Value> {
    let secret_env = |name: &str, secret: &str, key: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}});
    let probe = |path: &str| json!({"httpGet": {"path": path, "port": "http"}, "periodSeconds": 10});
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(NAME, a)}),
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta(AGENT_ACCOUNT, a),
            "automountServiceAccountToken": false,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(NAME, a),
            "rules": [
                // Patch: a claim annotates a warm agent's Job and pod with its attempt.
                {"apiGroups": ["batch"], "resources": ["jobs"],
                 "verbs": ["create", "get", "list", "watch", "patch", "delete"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch", "delete"]},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                // A warm agent's binding goes to its pod's stdin.
                {"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["create", "get"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                 "verbs": ["get", "create", "update"]},
                // Each attempt's own Secret (its token and secret files), owned by its Job.
                {"apiGroups": [""], "resources": ["secrets"],
                 "verbs": ["get", "create", "update", "patch", "delete"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(NAME, a),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": a.namespace}],
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta("george-config", a),
            "data": {"george-config.yaml": config(a)},
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(NAME, a),
            "spec": {
                "replicas": a.replicas,
                "selector": {"matchLabels": labels()},
                "template": {
                    "metadata": {"labels": labels()},
                    "spec": {
                        "serviceAccountName": NAME,
                        "terminationGracePeriodSeconds": 30,
                        "containers": [{
                            "name": "engine",
                            "image": a.image,
                            "imagePullPolicy": a.image_pull_policy,
                            "args": ["serve", "--config", "/etc/george/george-config.yaml",
                                     "--data-dir", "/var/lib/george"],
                            "env": [
                                // Each pod its own holder name in the lease.
                                {"name": "GEORGE_ENGINE_ID",
                                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                secret_env("GEORGE_DATABASE_URL", &a.database_secret, "url"),
                                secret_env("GEORGE_API_TOKENS", &a.tokens_secret, "tokens"),
                            ],
                            "ports": [{"name": "http", "containerPort": PORT}],
                            "readinessProbe": probe("/healthz"),
                            "livenessProbe": probe("/healthz"),
                            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                                          "limits": {"memory": "1Gi"}},
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/george", "readOnly": true},
                                {"name": "data", "mountPath": "/var/lib/george"},
                            ],
                        }],
                        "volumes": [
                            {"name": "config", "configMap": {"name": "george-config"}},
                            {"name": "data", "emptyDir": {}},
                        ],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(NAME, a),
            "spec": {"selector": labels(), "ports": [{"name": "http", "port": PORT, "targetPort": "http"}]},
        }),
    ]
}

/// The objects as one multi-document YAML stream.
pub fn render(a: &ManifestsArgs) -> anyhow::Result<String> {
    let (ns, db, tokens) = (&a.namespace, &a.database_secret, &a.tokens_secret);
    let mut out = format!(
        "# Rendered by `george k8s manifests`. Create the Secrets first:\n\
         #   kubectl -n {ns} create secret generic {db} --from-literal=url='postgres://...'\n\
         #   kubectl -n {ns} create secret generic {tokens} --from-literal=tokens='ops:admin:<token>'\n",
    );
    for o in objects(a) {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&o)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str) -> Vec<Value> {
        text.split("\n---\n")
            .skip(1)
            .map(|d| serde_saphyr::from_str::<Value>(d).expect("each document parses back"))
            .collect()
    }

    #[test]
    fn the_manifests_run_replicas_with_secrets_only_by_reference() {
        let text = render(&ManifestsArgs { replicas: 3, ..Default::default() }).unwrap();
        let docs = docs(&text);
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["ServiceAccount", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service"]
        );
        let deployment = &docs[5];
        assert_eq!(deployment["spec"]["replicas"], 3);
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "george");
        for env in pod["containers"][0]["env"].as_array().unwrap() {
            assert!(env.get("value").is_none(), "no plain env values: {env}");
        }
        let rules = docs[2]["rules"].to_string();
        for resource in ["jobs", "pods", "pods/log", "pods/attach", "leases", "secrets"] {
            assert!(rules.contains(&format!("\"{resource}\"")), "{resource} in {rules}");
        }
        let config = docs[4]["data"]["george-config.yaml"].as_str().unwrap();
        let parsed: crate::config::Config = serde_saphyr::from_str(config).unwrap();
        assert_eq!(parsed.store.store_type, Some(crate::config::StoreType::Postgres));
        assert_eq!(parsed.container_backend.backend_type, crate::config::BackendType::Kubernetes);
        assert_eq!(parsed.container_backend.kubernetes.service_account.as_deref(), Some("george-agent"));
        assert_eq!(parsed.engine.leader_election.backend, crate::config::LeaseBackend::Kubernetes);
        assert!(parsed.engine.leader_election.timings().is_ok());
        for d in &docs {
            assert_eq!(d["metadata"]["namespace"], "george");
        }
    }

    #[test]
    fn the_deploy_folder_holds_the_default_rendering() {
        let committed = include_str!("../../../deploy/kubernetes/george.yaml");
        assert_eq!(
            committed,
            render(&ManifestsArgs::default()).unwrap(),
            "deploy/kubernetes/george.yaml is stale: run `george k8s manifests > deploy/kubernetes/george.yaml`"
        );
    }
}
