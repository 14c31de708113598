//! Label and field selectors, parsed and applied as the apiserver does
//! (`k8s.io/apimachinery/pkg/labels` and `…/fields`).
//!
//! Label selectors: comma-separated requirements, all of which must hold:
//! `k=v`, `k==v`, `k!=v` (also true when `k` is absent), `k` (exists), `!k`
//! (does not exist), `k in (a,b)`, `k notin (a)` (also true when absent),
//! `k>n`, `k<n` (integers). Keys and values are validated as label keys and
//! values. Field selectors: `field=v`, `field==v`, `field!=v`, comma = AND,
//! on `metadata.name` and `metadata.namespace`, plus `status.phase`,
//! `spec.nodeName`, `spec.restartPolicy`, `spec.schedulerName`,
//! `spec.serviceAccountName`, `status.podIP` for pods, `type` for secrets and
//! `status.successful` for jobs. Anything else is a `400 BadRequest`.

use super::store::{str_at, Kind};
use super::validate;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Exists,
    DoesNotExist,
    Equals,
    NotEquals,
    In,
    NotIn,
    Gt,
    Lt,
}

#[derive(Debug, Clone)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Not,
    NotEq,
    Eq,
    DoubleEq,
    In,
    NotIn,
    Open,
    Close,
    Comma,
    Gt,
    Lt,
    End,
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Ident(s) => s.clone(),
            Tok::Not => "!".into(),
            Tok::NotEq => "!=".into(),
            Tok::Eq => "=".into(),
            Tok::DoubleEq => "==".into(),
            Tok::In => "in".into(),
            Tok::NotIn => "notin".into(),
            Tok::Open => "(".into(),
            Tok::Close => ")".into(),
            Tok::Comma => ",".into(),
            Tok::Gt => ">".into(),
            Tok::Lt => "<".into(),
            Tok::End => String::new(),
        }
    }
}

fn lex(s: &str) -> Vec<Tok> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (tok, len) = match c {
            '(' => (Tok::Open, 1),
            ')' => (Tok::Close, 1),
            ',' => (Tok::Comma, 1),
            '>' => (Tok::Gt, 1),
            '<' => (Tok::Lt, 1),
            '!' if next == Some('=') => (Tok::NotEq, 2),
            '!' => (Tok::Not, 1),
            '=' if next == Some('=') => (Tok::DoubleEq, 2),
            '=' => (Tok::Eq, 1),
            _ => {
                let start = i;
                let mut j = i;
                while j < chars.len() && !chars[j].is_whitespace() && !"()!=,<>".contains(chars[j]) {
                    j += 1;
                }
                let word: String = chars[start..j].iter().collect();
                let tok = match word.as_str() {
                    "in" => Tok::In,
                    "notin" => Tok::NotIn,
                    _ => Tok::Ident(word),
                };
                (tok, j - start)
            }
        };
        out.push(tok);
        i += len;
    }
    out.push(Tok::End);
    out
}

/// A parsed label selector.
#[derive(Debug, Clone, Default)]
pub(super) struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let toks = lex(s);
        let mut p = 0;
        let mut reqs = Vec::new();
        if toks[0] == Tok::End {
            return Ok(LabelSelector(reqs));
        }
        loop {
            reqs.push(parse_requirement(&toks, &mut p)?);
            match &toks[p] {
                Tok::End => break,
                Tok::Comma => {
                    p += 1;
                    if toks[p] == Tok::End {
                        return Err("found '', expected: identifier after ','".into());
                    }
                }
                t => return Err(format!("found '{}', expected: ',' or 'end of string'", t.text())),
            }
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| {
            let v = get(&r.key);
            match r.op {
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
                Op::Equals | Op::In => v.is_some_and(|v| r.values.iter().any(|x| x == v)),
                Op::NotEquals | Op::NotIn => v.is_none_or(|v| !r.values.iter().any(|x| x == v)),
                Op::Gt | Op::Lt => {
                    let (Some(have), Some(want)) =
                        (v.and_then(|v| v.parse::<i64>().ok()), r.values.first().and_then(|w| w.parse::<i64>().ok()))
                    else {
                        return false;
                    };
                    if r.op == Op::Gt {
                        have > want
                    } else {
                        have < want
                    }
                }
            }
        })
    }
}

fn parse_requirement(toks: &[Tok], p: &mut usize) -> Result<Requirement, String> {
    let mut op = None;
    if toks[*p] == Tok::Not {
        op = Some(Op::DoesNotExist);
        *p += 1;
    }
    let key = match &toks[*p] {
        Tok::Ident(k) => k.clone(),
        t => return Err(format!("found '{}', expected: identifier", t.text())),
    };
    *p += 1;
    let errs = validate::qualified_name_errors(&key);
    if !errs.is_empty() {
        return Err(format!("unable to parse requirement: key: Invalid value: {key:?}: {}", errs.join("; ")));
    }
    if op.is_some() {
        return match &toks[*p] {
            Tok::Comma | Tok::End => Ok(Requirement { key, op: Op::DoesNotExist, values: vec![] }),
            t => Err(format!("found '{}', expected: ',' or 'end of string'", t.text())),
        };
    }
    let op = match &toks[*p] {
        Tok::Comma | Tok::End => return Ok(Requirement { key, op: Op::Exists, values: vec![] }),
        Tok::Eq | Tok::DoubleEq => Op::Equals,
        Tok::NotEq => Op::NotEquals,
        Tok::In => Op::In,
        Tok::NotIn => Op::NotIn,
        Tok::Gt => Op::Gt,
        Tok::Lt => Op::Lt,
        t => return Err(format!("found '{}', expected: '=', '!=', '==', 'in', notin'", t.text())),
    };
    *p += 1;
    let values = match op {
        Op::In | Op::NotIn => {
            if toks[*p] != Tok::Open {
                return Err(format!("found '{}', expected: '('", toks[*p].text()));
            }
            *p += 1;
            let mut values = Vec::new();
            loop {
                match &toks[*p] {
                    Tok::Ident(v) => {
                        values.push(v.clone());
                        *p += 1;
                    }
                    // An empty value: `in (a,)` or `in ()`.
                    Tok::Comma | Tok::Close => values.push(String::new()),
                    t => return Err(format!("found '{}', expected: ',', ')' or identifier", t.text())),
                }
                match &toks[*p] {
                    Tok::Comma => *p += 1,
                    Tok::Close => {
                        *p += 1;
                        break;
                    }
                    t => return Err(format!("found '{}', expected: ',' or ')'", t.text())),
                }
            }
            values
        }
        _ => match &toks[*p] {
            Tok::Ident(v) => {
                *p += 1;
                vec![v.clone()]
            }
            // `a=` is `a` equals the empty string.
            Tok::Comma | Tok::End => vec![String::new()],
            t => return Err(format!("found '{}', expected: identifier", t.text())),
        },
    };
    for (i, v) in values.iter().enumerate() {
        if matches!(op, Op::Gt | Op::Lt) {
            if v.parse::<i64>().is_err() {
                return Err(format!(
                    "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {v:?}"
                ));
            }
            continue;
        }
        let errs = validate::label_value_errors(v);
        if !errs.is_empty() {
            return Err(format!(
                "unable to parse requirement: values[{i}][{key}]: Invalid value: {v:?}: {}",
                errs.join("; ")
            ));
        }
    }
    Ok(Requirement { key, op, values })
}

/// A parsed field selector.
#[derive(Debug, Clone, Default)]
pub(super) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(kind: Kind, s: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for term in split_unescaped(s) {
            if term.trim().is_empty() {
                continue;
            }
            let (field, negate, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, false, v)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{term}'"));
            };
            let field = field.trim().to_string();
            if !supported_field(kind, &field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field, negate, unescape(value.trim())));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, kind: Kind, obj: &Value) -> bool {
        self.0.iter().all(|(f, negate, want)| {
            let have = field_value(kind, obj, f);
            (have == *want) != *negate
        })
    }
}

fn split_unescaped(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.last_mut().expect("non-empty").extend(['\\', c]);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            out.push(String::new());
        } else {
            out.last_mut().expect("non-empty").push(c);
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

fn supported_field(kind: Kind, f: &str) -> bool {
    if f == "metadata.name" || f == "metadata.namespace" {
        return true;
    }
    match kind {
        Kind::Pod => matches!(
            f,
            "status.phase"
                | "spec.nodeName"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "status.podIP"
        ),
        Kind::Secret => f == "type",
        Kind::Job => f == "status.successful",
        Kind::Lease => false,
    }
}

fn field_value(_kind: Kind, obj: &Value, f: &str) -> String {
    let ptr = match f {
        "metadata.name" => "/metadata/name",
        "metadata.namespace" => "/metadata/namespace",
        "status.phase" => "/status/phase",
        "spec.nodeName" => "/spec/nodeName",
        "spec.restartPolicy" => "/spec/restartPolicy",
        "spec.schedulerName" => "/spec/schedulerName",
        "spec.serviceAccountName" => "/spec/serviceAccountName",
        "status.podIP" => "/status/podIP",
        "type" => "/type",
        "status.successful" => {
            return obj.pointer("/status/succeeded").and_then(Value::as_i64).unwrap_or(0).to_string();
        }
        _ => return String::new(),
    };
    str_at(obj, ptr).unwrap_or("").to_string()
}

/// Both selectors of a list or watch.
#[derive(Debug, Clone, Default)]
pub(super) struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn parse(kind: Kind, labels: Option<&str>, fields: Option<&str>) -> Result<Selectors, String> {
        Ok(Selectors {
            labels: LabelSelector::parse(labels.unwrap_or(""))?,
            fields: FieldSelector::parse(kind, fields.unwrap_or(""))?,
        })
    }

    pub fn matches(&self, kind: Kind, obj: &Value) -> bool {
        self.labels.matches(obj.pointer("/metadata/labels")) && self.fields.matches(kind, obj)
    }
}
