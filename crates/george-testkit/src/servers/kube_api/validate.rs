//! What the apiserver does to a body before storing it: decoding (type
//! errors, invalid base64 in a Secret's `data`, a Lease time that is not a
//! `MicroTime` — all `400 BadRequest`, because the real server fails to
//! decode them), defaulting (the fields `kubectl get -o yaml` shows that
//! nobody wrote) and validation (`422 Invalid` with one cause per field, in
//! the apiserver's words).

use super::store::{str_at, ApiError, Kind};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::collections::HashSet;

/// One `StatusCause`: the field (`metadata.name`,
/// `spec.template.spec.containers[0].env[1].name`), the reason
/// (`FieldValueInvalid`…) and the message (`Invalid value: "x": …`).
#[derive(Debug, Clone)]
pub(super) struct Cause {
    pub field: String,
    pub reason: &'static str,
    pub message: String,
}

fn quote(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

impl Cause {
    pub fn invalid(field: &str, value: &Value, detail: &str) -> Cause {
        Cause {
            field: field.into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: {detail}", quote(value)),
        }
    }

    pub fn required(field: &str, detail: &str) -> Cause {
        let message =
            if detail.is_empty() { "Required value".to_string() } else { format!("Required value: {detail}") };
        Cause { field: field.into(), reason: "FieldValueRequired", message }
    }

    pub fn not_supported(field: &str, value: &str, supported: &[&str]) -> Cause {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Cause {
            field: field.into(),
            reason: "FieldValueNotSupported",
            message: format!("Unsupported value: {value:?}: supported values: {}", list.join(", ")),
        }
    }

    pub fn duplicate(field: &str, value: &str) -> Cause {
        Cause { field: field.into(), reason: "FieldValueDuplicate", message: format!("Duplicate value: {value:?}") }
    }

    pub fn not_found(field: &str, value: &str) -> Cause {
        Cause { field: field.into(), reason: "FieldValueNotFound", message: format!("Not found: {value:?}") }
    }

    pub fn forbidden(field: &str, detail: &str) -> Cause {
        Cause { field: field.into(), reason: "FieldValueForbidden", message: format!("Forbidden: {detail}") }
    }

    pub fn too_long(field: &str, max: usize) -> Cause {
        Cause {
            field: field.into(),
            reason: "FieldValueTooLong",
            message: format!("Too long: may not be more than {max} bytes"),
        }
    }
}

// ---------------------------------------------------------------------------
// Name, label and key formats (k8s.io/apimachinery/pkg/util/validation).

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const ENV_NAME_MSG: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

fn is_label_format(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub(super) fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut e = Vec::new();
    if s.len() > 63 {
        e.push("must be no more than 63 characters".to_string());
    }
    if !is_label_format(s) {
        e.push(DNS1123_LABEL_MSG.to_string());
    }
    e
}

pub(super) fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut e = Vec::new();
    if s.len() > 253 {
        e.push("must be no more than 253 characters".to_string());
    }
    if !s.split('.').all(is_label_format) {
        e.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    e
}

fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A label key or annotation key: `[prefix/]name`.
pub(super) fn qualified_name_errors(s: &str) -> Vec<String> {
    let mut e = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                e.push("prefix part must be non-empty".to_string());
            } else {
                e.extend(dns1123_subdomain_errors(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            e.push(format!("a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"));
            return e;
        }
    };
    if name.is_empty() {
        e.push("name part must be non-empty".to_string());
    } else {
        if name.len() > 63 {
            e.push("name part must be no more than 63 characters".to_string());
        }
        if !is_qualified_part(name) {
            e.push(QUALIFIED_NAME_MSG.to_string());
        }
    }
    e
}

pub(super) fn label_value_errors(s: &str) -> Vec<String> {
    let mut e = Vec::new();
    if s.len() > 63 {
        e.push("must be no more than 63 characters".to_string());
    }
    if !s.is_empty() && !is_qualified_part(s) {
        e.push(LABEL_VALUE_MSG.to_string());
    }
    e
}

fn env_name_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn config_key_errors(s: &str) -> Vec<String> {
    let mut e = Vec::new();
    if s.len() > 253 {
        e.push("must be no more than 253 characters".to_string());
    }
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')) {
        e.push(CONFIG_KEY_MSG.to_string());
    }
    if s == "." {
        e.push("must not be '.'".to_string());
    } else if s == ".." {
        e.push("must not be '..'".to_string());
    } else if s.starts_with("..") {
        e.push("must not start with '..'".to_string());
    }
    e
}

// ---------------------------------------------------------------------------
// Decoding: a small schema of the fields this server reads, checked as the
// apiserver's JSON decoder would (a type mismatch is a 400, not a 422).

#[derive(Clone, Copy)]
enum T {
    Str,
    Int,
    Bool,
    Time,
    MicroTime,
    Base64,
    Any,
    Obj(&'static [(&'static str, T)]),
    Map(&'static T),
    Arr(&'static T),
}

const STR_MAP: T = T::Map(&T::Str);
const STR_ARR: T = T::Arr(&T::Str);
const OWNER_REF: T = T::Obj(&[
    ("apiVersion", T::Str),
    ("kind", T::Str),
    ("name", T::Str),
    ("uid", T::Str),
    ("controller", T::Bool),
    ("blockOwnerDeletion", T::Bool),
]);
const META: T = T::Obj(&[
    ("name", T::Str),
    ("generateName", T::Str),
    ("namespace", T::Str),
    ("uid", T::Str),
    ("resourceVersion", T::Str),
    ("generation", T::Int),
    ("creationTimestamp", T::Time),
    ("deletionTimestamp", T::Time),
    ("deletionGracePeriodSeconds", T::Int),
    ("labels", STR_MAP),
    ("annotations", STR_MAP),
    ("ownerReferences", T::Arr(&OWNER_REF)),
    ("finalizers", STR_ARR),
]);
const KEY_REF: T = T::Obj(&[("name", T::Str), ("key", T::Str), ("optional", T::Bool)]);
const ENV_VAR: T = T::Obj(&[
    ("name", T::Str),
    ("value", T::Str),
    (
        "valueFrom",
        T::Obj(&[
            ("secretKeyRef", KEY_REF),
            ("configMapKeyRef", KEY_REF),
            ("fieldRef", T::Obj(&[("fieldPath", T::Str), ("apiVersion", T::Str)])),
            ("resourceFieldRef", T::Any),
        ]),
    ),
]);
const ENV_FROM: T = T::Obj(&[
    ("prefix", T::Str),
    ("secretRef", T::Obj(&[("name", T::Str), ("optional", T::Bool)])),
    ("configMapRef", T::Obj(&[("name", T::Str), ("optional", T::Bool)])),
]);
const MOUNT: T = T::Obj(&[("name", T::Str), ("mountPath", T::Str), ("subPath", T::Str), ("readOnly", T::Bool)]);
const CONTAINER: T = T::Obj(&[
    ("name", T::Str),
    ("image", T::Str),
    ("command", STR_ARR),
    ("args", STR_ARR),
    ("workingDir", T::Str),
    ("env", T::Arr(&ENV_VAR)),
    ("envFrom", T::Arr(&ENV_FROM)),
    ("volumeMounts", T::Arr(&MOUNT)),
    ("imagePullPolicy", T::Str),
]);
const KEY_TO_PATH: T = T::Obj(&[("key", T::Str), ("path", T::Str), ("mode", T::Int)]);
const VOLUME: T = T::Obj(&[
    ("name", T::Str),
    (
        "secret",
        T::Obj(&[
            ("secretName", T::Str),
            ("items", T::Arr(&KEY_TO_PATH)),
            ("defaultMode", T::Int),
            ("optional", T::Bool),
        ]),
    ),
    ("hostPath", T::Obj(&[("path", T::Str), ("type", T::Str)])),
]);
const POD_SPEC: T = T::Obj(&[
    ("containers", T::Arr(&CONTAINER)),
    ("initContainers", T::Arr(&CONTAINER)),
    ("volumes", T::Arr(&VOLUME)),
    ("restartPolicy", T::Str),
    ("terminationGracePeriodSeconds", T::Int),
    ("activeDeadlineSeconds", T::Int),
    ("nodeName", T::Str),
    ("serviceAccountName", T::Str),
]);
const POD: T = T::Obj(&[("metadata", META), ("spec", POD_SPEC)]);
const JOB: T = T::Obj(&[
    ("metadata", META),
    (
        "spec",
        T::Obj(&[
            ("template", T::Obj(&[("metadata", META), ("spec", POD_SPEC)])),
            ("backoffLimit", T::Int),
            ("completions", T::Int),
            ("parallelism", T::Int),
            ("activeDeadlineSeconds", T::Int),
            ("ttlSecondsAfterFinished", T::Int),
            ("suspend", T::Bool),
            ("manualSelector", T::Bool),
        ]),
    ),
]);
const SECRET: T = T::Obj(&[
    ("metadata", META),
    ("data", T::Map(&T::Base64)),
    ("stringData", STR_MAP),
    ("type", T::Str),
    ("immutable", T::Bool),
]);
const LEASE: T = T::Obj(&[
    ("metadata", META),
    (
        "spec",
        T::Obj(&[
            ("holderIdentity", T::Str),
            ("leaseDurationSeconds", T::Int),
            ("acquireTime", T::MicroTime),
            ("renewTime", T::MicroTime),
            ("leaseTransitions", T::Int),
        ]),
    ),
]);

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check(v: &Value, t: T, path: &str) -> Result<(), String> {
    if v.is_null() {
        return Ok(());
    }
    let mismatch =
        |want: &str| Err(format!("json: cannot unmarshal {} into Go struct field {path} of type {want}", json_type(v)));
    match t {
        T::Any => Ok(()),
        T::Str => {
            if v.is_string() {
                Ok(())
            } else {
                mismatch("string")
            }
        }
        T::Int => {
            if v.as_i64().is_some() {
                Ok(())
            } else {
                mismatch("int64")
            }
        }
        T::Bool => {
            if v.is_boolean() {
                Ok(())
            } else {
                mismatch("bool")
            }
        }
        T::Time => {
            let Some(s) = v.as_str() else { return mismatch("v1.Time") };
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|_| ())
                .map_err(|_| format!("parsing time {s:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse"))
        }
        T::MicroTime => {
            let Some(s) = v.as_str() else { return mismatch("v1.MicroTime") };
            if is_micro_time(s) {
                Ok(())
            } else {
                Err(format!("parsing time {s:?} as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse"))
            }
        }
        T::Base64 => {
            let Some(s) = v.as_str() else { return mismatch("[]uint8") };
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map(|_| ())
                .map_err(|e| format!("illegal base64 data in {path}: {e}"))
        }
        T::Obj(fields) => {
            let Some(m) = v.as_object() else { return mismatch("object") };
            for (k, ft) in fields {
                if let Some(fv) = m.get(*k) {
                    check(fv, *ft, &format!("{path}.{k}"))?;
                }
            }
            Ok(())
        }
        T::Map(inner) => {
            let Some(m) = v.as_object() else { return mismatch("map[string]") };
            for (k, fv) in m {
                check(fv, *inner, &format!("{path}[{k}]"))?;
            }
            Ok(())
        }
        T::Arr(inner) => {
            let Some(a) = v.as_array() else { return mismatch("[]") };
            for (i, fv) in a.iter().enumerate() {
                check(fv, *inner, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
    }
}

/// `metav1.MicroTime` decodes with Go's `RFC3339Micro` layout: exactly six
/// fractional digits.
fn is_micro_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 26
        && b[19] == b'.'
        && b[20..26].iter().all(u8::is_ascii_digit)
        && (b[26] == b'Z' || b[26] == b'+' || b[26] == b'-')
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

/// Decoding errors: `400 BadRequest`, as the apiserver answers a body its
/// decoder rejects.
pub(super) fn decode(kind: Kind, obj: &Value) -> Result<(), ApiError> {
    let schema = match kind {
        Kind::Job => JOB,
        Kind::Pod => POD,
        Kind::Secret => SECRET,
        Kind::Lease => LEASE,
    };
    let version = kind.api_version().rsplit('/').next().unwrap_or("v1");
    check(obj, schema, kind.kind()).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version {version:?} cannot be handled as a {}: {e}",
            kind.kind(),
            kind.kind()
        ))
    })
}

// ---------------------------------------------------------------------------
// Defaulting.

fn set_default(m: &mut Map<String, Value>, k: &str, v: Value) {
    if m.get(k).is_none_or(Value::is_null) {
        m.insert(k.into(), v);
    }
}

fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn pod_spec_defaults(spec: &mut Value, default_restart: bool) {
    let Some(s) = spec.as_object_mut() else { return };
    if default_restart {
        set_default(s, "restartPolicy", json!("Always"));
    }
    set_default(s, "dnsPolicy", json!("ClusterFirst"));
    set_default(s, "schedulerName", json!("default-scheduler"));
    set_default(s, "securityContext", json!({}));
    set_default(s, "terminationGracePeriodSeconds", json!(30));
    for list in ["containers", "initContainers"] {
        let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) else { continue };
        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
            let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
            set_default(c, "imagePullPolicy", json!(pull_policy(&image)));
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            set_default(c, "resources", json!({}));
            if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
                for e in env.iter_mut() {
                    if let Some(fr) = e.pointer_mut("/valueFrom/fieldRef").and_then(Value::as_object_mut) {
                        set_default(fr, "apiVersion", json!("v1"));
                    }
                }
            }
        }
    }
    if let Some(vols) = s.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols.iter_mut() {
            if let Some(sec) = v.get_mut("secret").and_then(Value::as_object_mut) {
                set_default(sec, "defaultMode", json!(420));
            }
        }
    }
}

/// The apiserver's defaults for `kind`.
pub(super) fn defaults(kind: Kind, obj: &mut Value) {
    match kind {
        Kind::Pod => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec_defaults(spec, true);
            }
        }
        Kind::Job => {
            // SetDefaults_Job: a Job without labels takes its template's.
            let tl = obj.pointer("/spec/template/metadata/labels").cloned();
            if let (Some(tl), Some(m)) = (tl, obj.get_mut("metadata").and_then(Value::as_object_mut)) {
                if m.get("labels").and_then(Value::as_object).is_none_or(Map::is_empty) && tl.is_object() {
                    m.insert("labels".into(), tl);
                }
            }
            let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
            if spec.get("completions").is_none_or(Value::is_null) && spec.get("parallelism").is_none_or(Value::is_null)
            {
                spec.insert("completions".into(), json!(1));
            }
            set_default(spec, "parallelism", json!(1));
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            if let Some(ps) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
                pod_spec_defaults(ps, false);
            }
        }
        Kind::Secret => {
            if let Some(o) = obj.as_object_mut() {
                set_default(o, "type", json!("Opaque"));
            }
        }
        Kind::Lease => {}
    }
}

/// The Job strategy's `generateSelector`: unless `manualSelector`, the
/// selector is the job's uid and the template gets the job labels.
pub(super) fn job_generate_selector(job: &mut Value) {
    if job.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let uid = str_at(job, "/metadata/uid").unwrap_or("").to_string();
    let name = str_at(job, "/metadata/name").unwrap_or("").to_string();
    let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) else { return };
    if spec.get("selector").is_none_or(Value::is_null) {
        spec.insert("selector".into(), json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}));
    }
    let t = spec.entry("template").or_insert_with(|| json!({}));
    if !t.is_object() {
        return;
    }
    let m = t.as_object_mut().expect("an object").entry("metadata").or_insert_with(|| json!({}));
    let Some(m) = m.as_object_mut() else { return };
    let l = m.entry("labels").or_insert_with(|| json!({}));
    if !l.is_object() {
        *l = json!({});
    }
    let l = l.as_object_mut().expect("an object");
    l.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
    l.insert("batch.kubernetes.io/job-name".into(), json!(name));
    l.insert("controller-uid".into(), json!(uid));
    l.insert("job-name".into(), json!(name));
}

// ---------------------------------------------------------------------------
// Validation.

fn validate_labels(labels: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    let Some(l) = labels.and_then(Value::as_object) else { return };
    for (k, v) in l {
        for e in qualified_name_errors(k) {
            causes.push(Cause::invalid(field, &json!(k), &e));
        }
        let v = v.as_str().unwrap_or("");
        for e in label_value_errors(v) {
            causes.push(Cause::invalid(field, &json!(v), &e));
        }
    }
}

fn validate_annotations(ann: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    let Some(a) = ann.and_then(Value::as_object) else { return };
    let mut total = 0;
    for (k, v) in a {
        for e in qualified_name_errors(&k.to_ascii_lowercase()) {
            causes.push(Cause::invalid(field, &json!(k), &e));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > 256 * 1024 {
        causes.push(Cause::too_long(field, 256 * 1024));
    }
}

fn validate_meta(kind: Kind, obj: &Value, causes: &mut Vec<Cause>) {
    let name = str_at(obj, "/metadata/name").unwrap_or("");
    if !name.is_empty() {
        for e in dns1123_subdomain_errors(name) {
            causes.push(Cause::invalid("metadata.name", &json!(name), &e));
        }
    }
    let meta = obj.get("metadata");
    validate_labels(meta.and_then(|m| m.get("labels")), "metadata.labels", causes);
    validate_annotations(meta.and_then(|m| m.get("annotations")), "metadata.annotations", causes);
    if let Some(refs) = obj.pointer("/metadata/ownerReferences").and_then(Value::as_array) {
        let mut controllers = 0;
        for (i, r) in refs.iter().enumerate() {
            for f in ["apiVersion", "kind", "name", "uid"] {
                if r.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                    causes.push(Cause::required(&format!("metadata.ownerReferences[{i}].{f}"), ""));
                }
            }
            if r.get("controller").and_then(Value::as_bool) == Some(true) {
                controllers += 1;
            }
        }
        if controllers > 1 {
            causes.push(Cause::invalid(
                "metadata.ownerReferences",
                &json!(refs),
                "Only one reference can have Controller set to true",
            ));
        }
    }
    for (i, f) in obj.pointer("/metadata/finalizers").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let f = f.as_str().unwrap_or("");
        let standard = ["kubernetes", "orphan", "foregroundDeletion"].contains(&f);
        if !standard && (!f.contains('/') || !qualified_name_errors(f).is_empty()) {
            causes.push(Cause::invalid(
                &format!("metadata.finalizers[{i}]"),
                &json!(f),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    let _ = kind;
}

fn validate_container(c: &Value, path: &str, volumes: &HashSet<String>, causes: &mut Vec<Cause>) {
    let name = c.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::required(&format!("{path}.name"), ""));
    } else {
        for e in dns1123_label_errors(name) {
            causes.push(Cause::invalid(&format!("{path}.name"), &json!(name), &e));
        }
    }
    if c.get("image").and_then(Value::as_str).is_none_or(|i| i.trim().is_empty()) {
        causes.push(Cause::required(&format!("{path}.image"), ""));
    }
    for (i, e) in c.get("env").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let ep = format!("{path}.env[{i}]");
        let ename = e.get("name").and_then(Value::as_str).unwrap_or("");
        if ename.is_empty() {
            causes.push(Cause::required(&format!("{ep}.name"), ""));
        } else if !env_name_ok(ename) {
            causes.push(Cause::invalid(&format!("{ep}.name"), &json!(ename), ENV_NAME_MSG));
        }
        let Some(vf) = e.get("valueFrom").filter(|v| !v.is_null()) else { continue };
        if e.get("value").and_then(Value::as_str).is_some_and(|v| !v.is_empty()) {
            causes.push(Cause::invalid(
                &format!("{ep}.valueFrom"),
                &json!(""),
                "may not be specified when `value` is not empty",
            ));
        }
        let sources: Vec<&String> = vf.as_object().map(|m| m.keys().collect()).unwrap_or_default();
        if sources.is_empty() {
            causes.push(Cause::invalid(
                &format!("{ep}.valueFrom"),
                &json!(""),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if sources.len() > 1 {
            causes.push(Cause::invalid(
                &format!("{ep}.valueFrom"),
                &json!(""),
                "may not have more than one field specified at a time",
            ));
        }
        for src in ["secretKeyRef", "configMapKeyRef"] {
            let Some(r) = vf.get(src) else { continue };
            let rp = format!("{ep}.valueFrom.{src}");
            if r.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push(Cause::required(&format!("{rp}.name"), ""));
            }
            match r.get("key").and_then(Value::as_str) {
                None | Some("") => causes.push(Cause::required(&format!("{rp}.key"), "")),
                Some(k) => {
                    for m in config_key_errors(k) {
                        causes.push(Cause::invalid(&format!("{rp}.key"), &json!(k), &m));
                    }
                }
            }
        }
        if let Some(fr) = vf.get("fieldRef") {
            if fr.get("fieldPath").and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push(Cause::required(&format!("{ep}.valueFrom.fieldRef.fieldPath"), ""));
            }
        }
    }
    let mut paths = HashSet::new();
    for (i, m) in c.get("volumeMounts").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let mp = format!("{path}.volumeMounts[{i}]");
        let vname = m.get("name").and_then(Value::as_str).unwrap_or("");
        if vname.is_empty() {
            causes.push(Cause::required(&format!("{mp}.name"), ""));
        } else if !volumes.contains(vname) {
            causes.push(Cause::not_found(&format!("{mp}.name"), vname));
        }
        let mount_path = m.get("mountPath").and_then(Value::as_str).unwrap_or("");
        if mount_path.is_empty() {
            causes.push(Cause::required(&format!("{mp}.mountPath"), ""));
        } else if !paths.insert(mount_path.to_string()) {
            causes.push(Cause::invalid(&format!("{mp}.mountPath"), &json!(mount_path), "must be unique"));
        }
        if let Some(sp) = m.get("subPath").and_then(Value::as_str) {
            if sp.starts_with('/') || sp.split('/').any(|p| p == "..") {
                causes.push(Cause::invalid(
                    &format!("{mp}.subPath"),
                    &json!(sp),
                    "must be a relative path without '..'",
                ));
            }
        }
    }
}

fn validate_pod_spec(spec: Option<&Value>, path: &str, job_template: bool, causes: &mut Vec<Cause>) {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        causes.push(Cause::required(&format!("{path}.containers"), ""));
        return;
    };
    let mut volumes = HashSet::new();
    for (i, v) in spec.get("volumes").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let vp = format!("{path}.volumes[{i}]");
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(&format!("{vp}.name"), ""));
        } else {
            for e in dns1123_label_errors(name) {
                causes.push(Cause::invalid(&format!("{vp}.name"), &json!(name), &e));
            }
            if !volumes.insert(name.to_string()) {
                causes.push(Cause::duplicate(&format!("{vp}.name"), name));
            }
        }
        let sources: Vec<&String> = v
            .as_object()
            .map(|m| m.iter().filter(|(k, val)| *k != "name" && !val.is_null()).map(|(k, _)| k).collect())
            .unwrap_or_default();
        if sources.is_empty() {
            causes.push(Cause::required(&vp, "must specify a volume type"));
        } else if sources.len() > 1 {
            causes.push(Cause::forbidden(&vp, "may not specify more than 1 volume type"));
        }
        if let Some(s) = v.get("secret") {
            if s.get("secretName").and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push(Cause::required(&format!("{vp}.secret.secretName"), ""));
            }
            for (j, it) in s.get("items").and_then(Value::as_array).into_iter().flatten().enumerate() {
                let ip = format!("{vp}.secret.items[{j}]");
                if it.get("key").and_then(Value::as_str).is_none_or(str::is_empty) {
                    causes.push(Cause::required(&format!("{ip}.key"), ""));
                }
                match it.get("path").and_then(Value::as_str) {
                    None | Some("") => causes.push(Cause::required(&format!("{ip}.path"), "")),
                    Some(p) if p.starts_with('/') || p.split('/').any(|s| s == "..") => causes.push(Cause::invalid(
                        &format!("{ip}.path"),
                        &json!(p),
                        "must be a relative path without '..'",
                    )),
                    Some(_) => {}
                }
                if let Some(m) = it.get("mode").and_then(Value::as_i64) {
                    if !(0..=0o777).contains(&m) {
                        causes.push(Cause::invalid(
                            &format!("{ip}.mode"),
                            &json!(m),
                            "must be a number between 0 and 0777 (octal), both inclusive",
                        ));
                    }
                }
            }
        }
        if let Some(h) = v.get("hostPath") {
            if h.get("path").and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push(Cause::required(&format!("{vp}.hostPath.path"), ""));
            }
        }
    }
    let containers = spec.get("containers").and_then(Value::as_array).cloned().unwrap_or_default();
    if containers.is_empty() {
        causes.push(Cause::required(&format!("{path}.containers"), ""));
    }
    let mut names = HashSet::new();
    for (list, cs) in [
        ("initContainers", spec.get("initContainers").and_then(Value::as_array).cloned().unwrap_or_default()),
        ("containers", containers),
    ] {
        for (i, c) in cs.iter().enumerate() {
            let cp = format!("{path}.{list}[{i}]");
            validate_container(c, &cp, &volumes, causes);
            if let Some(n) = c.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                if !names.insert(n.to_string()) {
                    causes.push(Cause::duplicate(&format!("{cp}.name"), n));
                }
            }
        }
    }
    let restart = spec.get("restartPolicy").and_then(Value::as_str).unwrap_or("");
    if job_template {
        match restart {
            "Never" | "OnFailure" => {}
            "" => {
                causes.push(Cause::required(&format!("{path}.restartPolicy"), "valid values: \"OnFailure\", \"Never\""))
            }
            other => {
                causes.push(Cause::not_supported(&format!("{path}.restartPolicy"), other, &["OnFailure", "Never"]))
            }
        }
    } else if !["Always", "OnFailure", "Never"].contains(&restart) {
        causes.push(Cause::not_supported(&format!("{path}.restartPolicy"), restart, &["Always", "OnFailure", "Never"]));
    }
    if let Some(g) = spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64) {
        if g < 0 {
            causes.push(Cause::invalid(
                &format!("{path}.terminationGracePeriodSeconds"),
                &json!(g),
                "must be greater than or equal to 0",
            ));
        }
    }
    if let Some(d) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64) {
        if d <= 0 {
            causes.push(Cause::invalid(
                &format!("{path}.activeDeadlineSeconds"),
                &json!(d),
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
}

fn non_negative(obj: &Value, ptr: &str, field: &str, causes: &mut Vec<Cause>) {
    if let Some(n) = obj.pointer(ptr).and_then(Value::as_i64) {
        if n < 0 {
            causes.push(Cause::invalid(field, &json!(n), "must be greater than or equal to 0"));
        }
    }
}

/// A spec with the container images blanked: the part of a pod spec that may not change.
fn pod_spec_immutable_part(spec: Option<&Value>) -> Value {
    let mut s = spec.cloned().unwrap_or(Value::Null);
    if let Some(m) = s.as_object_mut() {
        m.remove("activeDeadlineSeconds");
        for list in ["containers", "initContainers"] {
            if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
                for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                    c.remove("image");
                }
            }
        }
    }
    s
}

/// Validation of a create (`old` = None) or an update.
pub(super) fn validate(kind: Kind, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    validate_meta(kind, obj, &mut causes);
    if let Some(old) = old {
        let new_fin: Vec<&Value> = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let old_fin: Vec<&Value> = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        if super::store::is_deleting(old) && new_fin.iter().any(|f| !old_fin.contains(f)) {
            causes.push(Cause::forbidden(
                "metadata.finalizers",
                "no new finalizers can be added if the object is being deleted",
            ));
        }
    }
    match kind {
        Kind::Pod => {
            validate_pod_spec(obj.get("spec"), "spec", false, &mut causes);
            if let Some(old) = old {
                if pod_spec_immutable_part(obj.get("spec")) != pod_spec_immutable_part(old.get("spec")) {
                    causes.push(Cause::forbidden(
                        "spec",
                        "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                    ));
                }
            }
        }
        Kind::Job => {
            validate_labels(
                obj.pointer("/spec/template/metadata/labels"),
                "spec.template.metadata.labels",
                &mut causes,
            );
            validate_annotations(
                obj.pointer("/spec/template/metadata/annotations"),
                "spec.template.metadata.annotations",
                &mut causes,
            );
            validate_pod_spec(obj.pointer("/spec/template/spec"), "spec.template.spec", true, &mut causes);
            for (ptr, field) in [
                ("/spec/backoffLimit", "spec.backoffLimit"),
                ("/spec/completions", "spec.completions"),
                ("/spec/parallelism", "spec.parallelism"),
                ("/spec/ttlSecondsAfterFinished", "spec.ttlSecondsAfterFinished"),
            ] {
                non_negative(obj, ptr, field, &mut causes);
            }
            if let Some(d) = obj.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64) {
                if d <= 0 {
                    causes.push(Cause::invalid("spec.activeDeadlineSeconds", &json!(d), "must be greater than 0"));
                }
            }
            let manual = obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
            let uid = str_at(obj, "/metadata/uid").unwrap_or("");
            match obj.pointer("/spec/selector") {
                None | Some(Value::Null) => causes.push(Cause::required("spec.selector", "")),
                Some(sel) if !manual => {
                    let want = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
                    if *sel != want {
                        causes.push(Cause::invalid("spec.selector", sel, "`selector` not auto-generated"));
                    }
                }
                Some(_) => {}
            }
            if let Some(old) = old {
                for (ptr, field) in [
                    ("/spec/template", "spec.template"),
                    ("/spec/selector", "spec.selector"),
                    ("/spec/completions", "spec.completions"),
                    ("/spec/completionMode", "spec.completionMode"),
                ] {
                    let new_v = obj.pointer(ptr).cloned().unwrap_or(Value::Null);
                    if old.pointer(ptr).cloned().unwrap_or(Value::Null) != new_v {
                        causes.push(Cause::invalid(field, &json!(new_v.to_string()), "field is immutable"));
                    }
                }
            }
        }
        Kind::Secret => {
            let mut size = 0;
            if let Some(d) = obj.get("data").and_then(Value::as_object) {
                for (k, v) in d {
                    for e in config_key_errors(k) {
                        causes.push(Cause::invalid(&format!("data[{k}]"), &json!(k), &e));
                    }
                    size += k.len() + v.as_str().map_or(0, |s| s.len() * 3 / 4);
                }
            }
            if size > 1024 * 1024 {
                causes.push(Cause::too_long("data", 1024 * 1024));
            }
            if let Some(old) = old {
                if obj.get("type") != old.get("type") {
                    let t = obj.get("type").cloned().unwrap_or(Value::Null);
                    causes.push(Cause::invalid("type", &t, "field is immutable"));
                }
                if old.get("immutable").and_then(Value::as_bool) == Some(true) {
                    if obj.get("data") != old.get("data") {
                        causes.push(Cause::forbidden("data", "field is immutable when `immutable` is set"));
                    }
                    if obj.get("immutable") != old.get("immutable") {
                        causes.push(Cause::forbidden("immutable", "field is immutable when `immutable` is set"));
                    }
                }
            }
        }
        Kind::Lease => {
            if let Some(d) = obj.pointer("/spec/leaseDurationSeconds").and_then(Value::as_i64) {
                if d <= 0 {
                    causes.push(Cause::invalid("spec.leaseDurationSeconds", &json!(d), "must be greater than 0"));
                }
            }
            non_negative(obj, "/spec/leaseTransitions", "spec.leaseTransitions", &mut causes);
        }
    }
    causes
}
