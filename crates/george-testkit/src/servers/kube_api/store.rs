//! The object store of the Kubernetes API test server: objects by kind,
//! namespace and name, the global `resourceVersion` counter (every write
//! bumps it, as etcd's revision), the bounded event history that watches
//! replay, and the API operations — create, list, replace, merge-patch and
//! delete with preconditions, propagation policies and finalizers — that the
//! HTTP layer, the controllers and the test-facing methods all go through.

use super::kubelet::PodRuntime;
use super::select::Selectors;
use super::validate::{self, Cause};
use super::{ImageBehaviour, Request};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub(super) type Shared = Arc<Mutex<State>>;

/// The resources this server serves (all namespaced).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Kind {
    Job,
    Lease,
    Pod,
    Secret,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Job, Kind::Lease, Kind::Pod, Kind::Secret];

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Job => "jobs",
            Kind::Lease => "leases",
            Kind::Pod => "pods",
            Kind::Secret => "secrets",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Kind::Job => "Job",
            Kind::Lease => "Lease",
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
        }
    }

    pub fn group(self) -> &'static str {
        match self {
            Kind::Job => "batch",
            Kind::Lease => "coordination.k8s.io",
            Kind::Pod | Kind::Secret => "",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Job => "batch/v1",
            Kind::Lease => "coordination.k8s.io/v1",
            Kind::Pod | Kind::Secret => "v1",
        }
    }

    /// `jobs.batch`, `pods`: how the apiserver names a resource in messages.
    pub fn resource(self) -> String {
        if self.group().is_empty() {
            self.plural().to_string()
        } else {
            format!("{}.{}", self.plural(), self.group())
        }
    }

    /// `Job.batch`, `Pod`: how the apiserver names a kind in `Invalid` messages.
    pub fn qualified_kind(self) -> String {
        if self.group().is_empty() {
            self.kind().to_string()
        } else {
            format!("{}.{}", self.kind(), self.group())
        }
    }

    pub fn from_plural(plural: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.plural() == plural)
    }

    /// The kind served at `/api/v1/…/{plural}` (`group` empty) or `/apis/{group}/{version}/…/{plural}`.
    pub fn from_path(group: &str, version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.plural() == plural && k.group() == group && version == "v1")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as the watch cache keeps it: the object after the change
/// (for a deletion: the last state, with the deletion's resourceVersion) and
/// the object before it, so a watch with a selector can tell an object
/// that stopped matching (sent as `DELETED`) from one that started (`ADDED`).
pub(super) struct Event {
    pub rv: u64,
    pub kind: Kind,
    pub namespace: String,
    pub etype: EventType,
    pub object: Value,
    pub prev: Option<Value>,
}

/// Job controller bookkeeping that a real controller keeps in finalizers
/// and `status.uncountedTerminatedPods`: which pods it has seen and counted.
#[derive(Default)]
pub(super) struct JobTrack {
    /// Pod uid → counted outcome (`None`: seen active, not counted yet).
    pub pods: HashMap<String, Option<bool>>,
    pub started: Option<std::time::Instant>,
    pub finished: Option<std::time::Instant>,
}

pub(super) struct State {
    pub token: String,
    pub rv: u64,
    pub objects: BTreeMap<(Kind, String, String), Value>,
    pub uids: HashMap<String, (Kind, String, String)>,
    /// The resourceVersion each live object was created at (creation order).
    pub created: HashMap<String, u64>,
    pub history: VecDeque<Event>,
    pub history_limit: usize,
    /// Every change with `rv <= compacted` may be missing from `history`.
    pub compacted: u64,
    /// Bumped on every change and every log append; watches and log
    /// followers wait on it.
    pub tick: tokio::sync::watch::Sender<u64>,
    pub requests: Vec<Request>,
    pub faults: (usize, u16),
    pub images: HashMap<String, ImageBehaviour>,
    /// Kubelet state by pod uid.
    pub pods: HashMap<String, PodRuntime>,
    /// Job controller state by job uid.
    pub jobs: HashMap<String, JobTrack>,
    pub shutdown: bool,
    pub sandbox: PathBuf,
    pub next_ip: u32,
}

/// An API error, answered as a `Status` object.
#[derive(Debug, Clone)]
pub(super) struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError { code, reason: reason.to_string(), message: message.into(), details: None }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The `Status` body.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    fn about(kind: Kind, name: &str) -> Value {
        json!({"name": name, "group": kind.group(), "kind": kind.plural()})
    }

    pub fn not_found(kind: Kind, name: &str) -> Self {
        ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", kind.resource()))
            .with_details(Self::about(kind, name))
    }

    pub fn already_exists(kind: Kind, name: &str) -> Self {
        ApiError::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", kind.resource()))
            .with_details(Self::about(kind, name))
    }

    pub fn conflict(kind: Kind, name: &str, why: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": {why}", kind.resource()),
        )
        .with_details(Self::about(kind, name))
    }

    pub fn modified(kind: Kind, name: &str) -> Self {
        Self::conflict(
            kind,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", message)
    }

    /// `422 Invalid`, as `errors.NewInvalid` words it.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let qualified = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let errors: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let agg = if errors.len() == 1 { errors[0].clone() } else { format!("[{}]", errors.join(", ")) };
        let causes: Vec<Value> =
            causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect();
        ApiError::new(422, "Invalid", format!("{qualified} \"{name}\" is invalid: {agg}"))
            .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }

    pub fn invalid_object(kind: Kind, name: &str, causes: Vec<Cause>) -> Self {
        Self::invalid(kind.group(), kind.kind(), name, causes)
    }

    pub fn unauthorized() -> Self {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn path_not_found() -> Self {
        ApiError::new(404, "NotFound", "the server could not find the requested resource").with_details(json!({}))
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            .with_details(json!({}))
    }

    /// A fault injected by the test: the reason that goes with the code.
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Gone",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        let mut e = ApiError::new(code, reason, format!("injected fault ({code})"));
        if code == 429 {
            e = e.with_details(json!({"retryAfterSeconds": 1}));
        }
        e
    }
}

// ---------------------------------------------------------------------------
// Small helpers on JSON objects, times and randomness.

pub(super) fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

pub(super) fn name_of(v: &Value) -> &str {
    str_at(v, "/metadata/name").unwrap_or("")
}

pub(super) fn ns_of(v: &Value) -> &str {
    str_at(v, "/metadata/namespace").unwrap_or("")
}

pub(super) fn uid_of(v: &Value) -> &str {
    str_at(v, "/metadata/uid").unwrap_or("")
}

pub(super) fn rv_of(v: &Value) -> &str {
    str_at(v, "/metadata/resourceVersion").unwrap_or("")
}

pub(super) fn is_deleting(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

pub(super) fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

pub(super) fn set_finalizers(v: &mut Value, f: &[String]) {
    let m = meta_mut(v);
    if f.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(f));
    }
}

/// `metadata` as a mutable map (created if missing or not an object).
pub(super) fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let obj = v.as_object_mut().expect("an object");
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("an object")
}

/// The object's `ownerReferences` uids.
pub(super) fn owner_uids(v: &Value) -> Vec<String> {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|r| r.get("uid").and_then(Value::as_str)).map(str::to_string).collect())
        .unwrap_or_default()
}

pub(super) fn now() -> DateTime<Utc> {
    Utc::now()
}

/// A `metav1.Time`: RFC 3339, seconds, `Z`.
pub(super) fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Go's `time.RFC3339Nano` (trailing zeros of the fraction trimmed), as the
/// kubelet prefixes log lines.
pub(super) fn fmt_nano(t: DateTime<Utc>) -> String {
    let s = t.to_rfc3339_opts(SecondsFormat::Nanos, true);
    let (head, _) = s.split_at(s.len() - 1);
    let head = head.trim_end_matches('0').trim_end_matches('.');
    format!("{head}Z")
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("random bytes");
    b
}

/// `n` characters of the alphabet `generateName` uses (no vowels, no look-alikes).
pub(super) fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    random_bytes(n).iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// A random (version 4) UUID.
pub(super) fn new_uid() -> String {
    let mut b = random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

pub(super) fn random_hex(n: usize) -> String {
    hex::encode(random_bytes(n.div_ceil(2)))[..n].to_string()
}

/// RFC 7386 JSON merge patch.
pub(super) fn merge_patch(target: Value, patch: &Value) -> Value {
    let Some(p) = patch.as_object() else { return patch.clone() };
    let mut t = match target {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            let cur = t.remove(k).unwrap_or(Value::Null);
            t.insert(k.clone(), merge_patch(cur, v));
        }
    }
    Value::Object(t)
}

/// How a delete asks dependents to be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// `DeleteOptions`, from the body and/or the query.
#[derive(Default, Debug, Clone)]
pub(super) struct DeleteOptions {
    pub propagation: Option<String>,
    pub orphan_dependents: Option<bool>,
    pub grace: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl State {
    pub fn new(token: &str, history_limit: usize, sandbox: PathBuf) -> State {
        State {
            token: token.to_string(),
            rv: 1000,
            objects: BTreeMap::new(),
            uids: HashMap::new(),
            created: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            compacted: 1000,
            tick: tokio::sync::watch::Sender::new(0),
            requests: Vec::new(),
            faults: (0, 500),
            images: HashMap::new(),
            pods: HashMap::new(),
            jobs: HashMap::new(),
            shutdown: false,
            sandbox,
            next_ip: 10,
        }
    }

    pub fn notify(&self) {
        self.tick.send_modify(|t| *t = t.wrapping_add(1));
    }

    fn record(&mut self, ev: Event) {
        self.history.push_back(ev);
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.compacted = e.rv;
            }
        }
        self.notify();
    }

    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(kind, ns.to_string(), name.to_string()))
    }

    pub fn get_by_uid(&self, uid: &str) -> Option<&Value> {
        let key = self.uids.get(uid)?;
        self.objects.get(key)
    }

    /// Objects of `kind` (in `ns`, or everywhere), by namespace then name.
    pub fn iter(&self, kind: Kind, ns: Option<&str>) -> impl Iterator<Item = &Value> + '_ {
        let start = (kind, ns.unwrap_or("").to_string(), String::new());
        let ns = ns.map(str::to_string);
        self.objects
            .range(start..)
            .take_while(move |((k, n, _), _)| *k == kind && ns.as_ref().is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
    }

    /// Stores a new object (its metadata prepared) and records `ADDED`.
    pub fn insert(&mut self, kind: Kind, mut obj: Value) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let key = (kind, ns_of(&obj).to_string(), name_of(&obj).to_string());
        self.uids.insert(uid_of(&obj).to_string(), key.clone());
        self.created.insert(uid_of(&obj).to_string(), self.rv);
        self.objects.insert(key.clone(), obj.clone());
        let ev =
            Event { rv: self.rv, kind, namespace: key.1, etype: EventType::Added, object: obj.clone(), prev: None };
        self.record(ev);
        obj
    }

    /// Writes an existing object (a new resourceVersion) and records `MODIFIED`.
    pub fn update(&mut self, kind: Kind, mut obj: Value) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let key = (kind, ns_of(&obj).to_string(), name_of(&obj).to_string());
        let prev = self.objects.insert(key.clone(), obj.clone());
        let ev = Event {
            rv: self.rv,
            kind,
            namespace: key.1,
            etype: if prev.is_some() { EventType::Modified } else { EventType::Added },
            object: obj.clone(),
            prev,
        };
        self.record(ev);
        obj
    }

    /// Removes an object and records `DELETED` (the object carries the
    /// deletion's resourceVersion, as etcd's delete revision).
    pub fn remove(&mut self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        let last = self.get(kind, ns, name)?.clone();
        self.remove_as(kind, last)
    }

    /// Removes the stored object `obj` names, recording `obj` as its final
    /// state: an update that removes the last finalizer of an object being
    /// deleted deletes it, and watchers see only the `DELETED` event.
    pub fn remove_as(&mut self, kind: Kind, last: Value) -> Option<Value> {
        let ns = ns_of(&last).to_string();
        let key = (kind, ns.clone(), name_of(&last).to_string());
        let prev = self.objects.remove(&key)?;
        self.uids.remove(uid_of(&prev));
        self.created.remove(uid_of(&prev));
        self.rv += 1;
        let mut obj = last;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let ev = Event {
            rv: self.rv,
            kind,
            namespace: ns,
            etype: EventType::Deleted,
            object: obj.clone(),
            prev: Some(prev),
        };
        self.record(ev);
        Some(obj)
    }

    /// Applies `f` to a stored object and writes it if it changed.
    pub fn modify(&mut self, kind: Kind, ns: &str, name: &str, f: impl FnOnce(&mut Value)) -> Option<Value> {
        let old = self.get(kind, ns, name)?.clone();
        let mut new = old.clone();
        f(&mut new);
        if new == old {
            return Some(old);
        }
        Some(self.update(kind, new))
    }

    // -----------------------------------------------------------------------
    // API operations.

    /// `POST` a collection.
    pub fn create(&mut self, kind: Kind, ns: &str, body: Value) -> Result<Value, ApiError> {
        let mut obj = check_type_meta(kind, body)?;
        validate::decode(kind, &obj)?;
        {
            let m = meta_mut(&mut obj);
            match m.get("namespace").and_then(Value::as_str) {
                Some(bns) if !bns.is_empty() && bns != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => {}
            }
            if m.get("resourceVersion").and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
                return Err(ApiError::internal("resourceVersion should not be set on objects to be created"));
            }
        }
        let mut name = name_of(&obj).to_string();
        let generate = str_at(&obj, "/metadata/generateName").unwrap_or("").to_string();
        if name.is_empty() && !generate.is_empty() {
            let base: String = generate.chars().take(58).collect();
            name = format!("{base}{}", random_suffix(5));
            for _ in 0..8 {
                if self.get(kind, ns, &name).is_none() {
                    break;
                }
                name = format!("{base}{}", random_suffix(5));
            }
        }
        let uid = new_uid();
        {
            let m = meta_mut(&mut obj);
            m.insert("name".into(), json!(name));
            m.insert("namespace".into(), json!(ns));
            m.insert("uid".into(), json!(uid));
            m.insert("creationTimestamp".into(), json!(fmt_time(now())));
            for k in ["deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields", "generation"] {
                m.remove(k);
            }
        }
        let o = obj.as_object_mut().expect("an object");
        o.insert("apiVersion".into(), json!(kind.api_version()));
        o.insert("kind".into(), json!(kind.kind()));
        match kind {
            Kind::Job => {
                meta_mut(&mut obj).insert("generation".into(), json!(1));
                obj["status"] = json!({});
                validate::job_generate_selector(&mut obj);
            }
            Kind::Pod => {
                obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
            Kind::Secret => merge_string_data(&mut obj),
            Kind::Lease => {}
        }
        validate::defaults(kind, &mut obj);
        let mut causes = Vec::new();
        if name.is_empty() {
            causes.push(Cause::required("metadata.name", "name or generateName is required"));
        }
        causes.extend(validate::validate(kind, &obj, None));
        if !causes.is_empty() {
            return Err(ApiError::invalid_object(kind, &name, causes));
        }
        if self.get(kind, ns, &name).is_some() {
            return Err(ApiError::already_exists(kind, &name));
        }
        Ok(self.insert(kind, obj))
    }

    /// `PUT` an item.
    pub fn replace(&mut self, kind: Kind, ns: &str, name: &str, body: Value) -> Result<Value, ApiError> {
        let obj = check_type_meta(kind, body)?;
        validate::decode(kind, &obj)?;
        let body_name = name_of(&obj);
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let bns = ns_of(&obj);
        if !bns.is_empty() && bns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let old = self.get(kind, ns, name).ok_or_else(|| ApiError::not_found(kind, name))?.clone();
        let rv = rv_of(&obj);
        if !rv.is_empty() && rv != rv_of(&old) {
            return Err(ApiError::modified(kind, name));
        }
        let uid = uid_of(&obj);
        if !uid.is_empty() && uid != uid_of(&old) {
            return Err(ApiError::conflict(
                kind,
                name,
                &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", uid_of(&old)),
            ));
        }
        self.apply_update(kind, old, obj)
    }

    /// `PATCH` an item (`application/merge-patch+json`).
    pub fn patch(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if media != "application/merge-patch+json" {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json (got {content_type:?})"
                ),
            ));
        }
        let patch: Value =
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        let old = self.get(kind, ns, name).ok_or_else(|| ApiError::not_found(kind, name))?.clone();
        if let Some(rv) = patch.pointer("/metadata/resourceVersion").and_then(Value::as_str) {
            if rv != rv_of(&old) {
                return Err(ApiError::modified(kind, name));
            }
        }
        if let Some(uid) = patch.pointer("/metadata/uid").and_then(Value::as_str) {
            if uid != uid_of(&old) {
                return Err(ApiError::conflict(
                    kind,
                    name,
                    &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", uid_of(&old)),
                ));
            }
        }
        let merged = merge_patch(old.clone(), &patch);
        let merged = check_type_meta(kind, merged)?;
        validate::decode(kind, &merged)?;
        if name_of(&merged) != name || ns_of(&merged) != ns {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                name_of(&merged)
            )));
        }
        self.apply_update(kind, old, merged)
    }

    /// The common part of replace and patch: system fields are kept,
    /// `status` of jobs and pods is kept (it belongs to the status
    /// subresource), defaults applied, update validation, no-op detection.
    fn apply_update(&mut self, kind: Kind, old: Value, mut obj: Value) -> Result<Value, ApiError> {
        let name = name_of(&old).to_string();
        {
            let om = old.get("metadata").cloned().unwrap_or(json!({}));
            let m = meta_mut(&mut obj);
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "resourceVersion",
            ] {
                match om.get(k) {
                    Some(v) => m.insert(k.into(), v.clone()),
                    None => m.remove(k),
                };
            }
        }
        let o = obj.as_object_mut().expect("an object");
        o.insert("apiVersion".into(), json!(kind.api_version()));
        o.insert("kind".into(), json!(kind.kind()));
        match kind {
            Kind::Job | Kind::Pod => match old.get("status") {
                Some(s) => {
                    o.insert("status".into(), s.clone());
                }
                None => {
                    o.remove("status");
                }
            },
            Kind::Secret => merge_string_data(&mut obj),
            Kind::Lease => {}
        }
        validate::defaults(kind, &mut obj);
        if kind == Kind::Job && obj.get("spec") != old.get("spec") {
            let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1);
            meta_mut(&mut obj).insert("generation".into(), json!(g + 1));
        }
        let causes = validate::validate(kind, &obj, Some(&old));
        if !causes.is_empty() {
            return Err(ApiError::invalid_object(kind, &name, causes));
        }
        if obj == old {
            return Ok(old);
        }
        if kind != Kind::Pod && is_deleting(&obj) && finalizers(&obj).is_empty() {
            return Ok(self.remove_as(kind, obj.clone()).unwrap_or(obj));
        }
        Ok(self.update(kind, obj))
    }

    /// `DELETE` an item. `Ok((true, obj))`: removed now; `Ok((false, obj))`:
    /// the deletion is pending (graceful pod termination, finalizers).
    /// `obj` is the object's last state.
    pub fn delete(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(bool, Value), ApiError> {
        let old = self.get(kind, ns, name).ok_or_else(|| ApiError::not_found(kind, name))?.clone();
        let policy = match opts.propagation.as_deref() {
            Some("Background") => Some(Propagation::Background),
            Some("Foreground") => Some(Propagation::Foreground),
            Some("Orphan") => Some(Propagation::Orphan),
            None | Some("") => None,
            Some(other) => {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "DeleteOptions",
                    "",
                    vec![Cause::not_supported("propagationPolicy", other, &["Foreground", "Background", "Orphan"])],
                ))
            }
        };
        if policy.is_some() && opts.orphan_dependents.is_some() {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                vec![Cause::invalid(
                    "orphanDependents",
                    &json!(opts.orphan_dependents),
                    "orphanDependents and deletionPropagation cannot be both set",
                )],
            ));
        }
        if let Some(g) = opts.grace {
            if g < 0 {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "DeleteOptions",
                    "",
                    vec![Cause::invalid("gracePeriodSeconds", &json!(g), "must be greater than or equal to 0")],
                ));
            }
        }
        if let Some(uid) = opts.uid.as_deref() {
            if uid != uid_of(&old) {
                return Err(ApiError::conflict(
                    kind,
                    name,
                    &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", uid_of(&old)),
                ));
            }
        }
        if let Some(rv) = opts.resource_version.as_deref() {
            if rv != rv_of(&old) {
                return Err(ApiError::conflict(
                    kind,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        rv_of(&old)
                    ),
                ));
            }
        }
        let policy = policy.unwrap_or(match opts.orphan_dependents {
            Some(true) => Propagation::Orphan,
            Some(false) => Propagation::Background,
            // The batch/v1 Job REST strategy keeps the legacy default: orphan.
            None if kind == Kind::Job => Propagation::Orphan,
            None => Propagation::Background,
        });
        let mut obj = old.clone();
        let mut fin = finalizers(&obj);
        match policy {
            Propagation::Orphan => {
                fin.retain(|f| f != "foregroundDeletion");
                if !fin.iter().any(|f| f == "orphan") {
                    fin.push("orphan".into());
                }
            }
            Propagation::Foreground => {
                fin.retain(|f| f != "orphan");
                if !fin.iter().any(|f| f == "foregroundDeletion") {
                    fin.push("foregroundDeletion".into());
                }
            }
            Propagation::Background => {}
        }
        set_finalizers(&mut obj, &fin);
        let mut grace = 0;
        if kind == Kind::Pod {
            let phase = str_at(&old, "/status/phase").unwrap_or("");
            let scheduled = str_at(&old, "/spec/nodeName").is_some_and(|n| !n.is_empty());
            grace = opts
                .grace
                .or_else(|| old.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
                .unwrap_or(30);
            if phase == "Succeeded" || phase == "Failed" || !scheduled {
                grace = 0;
            }
            if let Some(g) = old.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64) {
                grace = grace.min(g);
            }
        }
        if fin.is_empty() && grace == 0 {
            let removed = self.remove(kind, ns, name).unwrap_or(obj);
            return Ok((true, removed));
        }
        let m = meta_mut(&mut obj);
        let when = now() + chrono::Duration::seconds(grace);
        let reset = match m.get("deletionGracePeriodSeconds").and_then(Value::as_i64) {
            Some(g) => grace < g,
            None => true,
        };
        if reset {
            m.insert("deletionTimestamp".into(), json!(fmt_time(when)));
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        if obj == old {
            return Ok((false, old));
        }
        Ok((false, self.update(kind, obj)))
    }

    /// A `…List` of `kind`, filtered and paged.
    pub fn list(
        &self,
        kind: Kind,
        ns: Option<&str>,
        sel: &Selectors,
        limit: Option<usize>,
        cont: Option<&str>,
    ) -> Result<Value, ApiError> {
        let (list_rv, start) = match cont {
            Some(c) if !c.is_empty() => decode_continue(c)?,
            _ => (self.rv, String::new()),
        };
        let mut items: Vec<(String, Value)> = self
            .iter(kind, ns)
            .filter(|o| sel.matches(kind, o))
            .map(|o| (format!("{}/{}", ns_of(o), name_of(o)), o.clone()))
            .filter(|(k, _)| start.is_empty() || *k > start)
            .collect();
        let mut meta = json!({"resourceVersion": list_rv.to_string()});
        if let Some(limit) = limit.filter(|l| *l > 0) {
            if items.len() > limit {
                let remaining = items.len() - limit;
                items.truncate(limit);
                let last = items.last().map(|(k, _)| k.clone()).unwrap_or_default();
                meta["continue"] = json!(encode_continue(list_rv, &last));
                meta["remainingItemCount"] = json!(remaining);
            }
        }
        let items: Vec<Value> = items
            .into_iter()
            .map(|(_, mut o)| {
                // List items carry no kind/apiVersion, as the apiserver sends them.
                if let Some(m) = o.as_object_mut() {
                    m.remove("kind");
                    m.remove("apiVersion");
                }
                o
            })
            .collect();
        Ok(json!({
            "kind": format!("{}List", kind.kind()),
            "apiVersion": kind.api_version(),
            "metadata": meta,
            "items": items,
        }))
    }
}

fn encode_continue(rv: u64, start: &str) -> String {
    use base64::Engine;
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
}

fn decode_continue(c: &str) -> Result<(u64, String), ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request(format!("continue key is not valid: {c:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?.to_string();
    Ok((rv, start))
}

/// The body must be an object whose `apiVersion`/`kind`, when given, are the resource's.
fn check_type_meta(kind: Kind, body: Value) -> Result<Value, ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(format!(
            "{} in version \"v1\" cannot be handled as a {}: the body is not a JSON object",
            kind.kind(),
            kind.kind()
        )));
    }
    if let Some(av) = body.get("apiVersion").and_then(Value::as_str) {
        if !av.is_empty() && av != kind.api_version() {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                kind.api_version()
            )));
        }
    }
    if let Some(k) = body.get("kind").and_then(Value::as_str) {
        if !k.is_empty() && k != kind.kind() {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.kind()
            )));
        }
    }
    Ok(body)
}

/// A Secret's `stringData` is merged into `data` on write (write-only field).
fn merge_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(o) = obj.as_object_mut() else { return };
    let Some(Value::Object(sd)) = o.remove("stringData") else { return };
    let data = o.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    if let Some(d) = data.as_object_mut() {
        for (k, v) in sd {
            let text = v.as_str().unwrap_or("");
            d.insert(k, json!(base64::engine::general_purpose::STANDARD.encode(text)));
        }
    }
}
