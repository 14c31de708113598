//! Labels on jobs and the selectors that pick jobs by them, as Kubernetes
//! has them: a key is an optional DNS-subdomain prefix and `/` (at most
//! [`MAX_KEY`] characters in all), then a name of at most 63 characters (letters, digits, `-`, `_`, `.`, starting
//! and ending with a letter or digit); a value is empty or such a name. A
//! selector is requirements separated by commas, all of which must hold:
//! `key=value` (or `==`), `key!=value` (also true without the label),
//! `key` (has it), `!key` (has it not).

use std::collections::BTreeMap;

/// A job's labels.
pub type Labels = BTreeMap<String, String>;

/// The most labels one job may have.
pub const MAX_LABELS: usize = 64;
/// The longest name (of a key, after its prefix) and value.
pub const MAX_NAME: usize = 63;
/// The longest key, prefix and name.
pub const MAX_KEY: usize = 317;

macro_rules! name {
    () => {
        "[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
    };
}
macro_rules! key {
    () => {
        concat!("([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*/)?", name!())
    };
}

/// The pattern a label's name and a non-empty value follow (JSON Schema / ECMA).
pub const NAME_PATTERN: &str = concat!("^", name!(), "$");
/// The pattern a key follows (JSON Schema / ECMA); at most [`MAX_KEY`] characters.
pub const KEY_PATTERN: &str = concat!("^", key!(), "$");

/// The pattern of a selector (JSON Schema / ECMA): requirements separated by
/// commas, spaces around their parts allowed.
pub const SELECTOR_PATTERN: &str = concat!(
    "^( *(!? *",
    key!(),
    "|",
    key!(),
    " *(==|!=|=) *(",
    name!(),
    ")?) *)",
    "(, *(!? *",
    key!(),
    "|",
    key!(),
    " *(==|!=|=) *(",
    name!(),
    ")?) *)*$"
);

fn name_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn prefix_ok(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Why a key is not a label key, if it is not.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.len() > MAX_KEY {
        let start: String = key.chars().take(40).collect();
        return Err(format!("label key `{start}…`: longer than {MAX_KEY} characters"));
    }
    check_key_form(key)
}

/// [`check_key`] but for the length (a selector's longer key just matches nothing).
fn check_key_form(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if prefix.is_some_and(|p| !prefix_ok(p)) {
        return Err(format!(
            "label key `{key}`: its prefix must be a DNS subdomain (lowercase letters, digits, `-` and `.`)"
        ));
    }
    if !name_ok(name) {
        return Err(format!(
            "label key `{key}`: expected at most {MAX_NAME} letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Why a value is not a label value, if it is not.
pub fn check_value(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || name_ok(value) {
        return Ok(());
    }
    Err(format!(
        "label `{key}`: value `{value}`: expected at most {MAX_NAME} letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit (or nothing)"
    ))
}

/// Checks every label; each error names its label (`labels.<key>`).
pub fn check(labels: &Labels) -> Result<(), Vec<(String, String)>> {
    let mut errs = Vec::new();
    if labels.len() > MAX_LABELS {
        errs.push(("labels".to_string(), format!("{} labels; at most {MAX_LABELS} are allowed", labels.len())));
    }
    for (k, v) in labels {
        if let Err(e) = check_key(k).and_then(|()| check_value(k, v)) {
            errs.push((format!("labels.{k}"), e));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value`.
    Equals(String, String),
    /// `key!=value`: true also without the label.
    NotEquals(String, String),
    /// `key`.
    Exists(String),
    /// `!key`.
    Missing(String),
}

impl Requirement {
    /// The label it is about.
    pub fn key(&self) -> &str {
        match self {
            Requirement::Equals(k, _)
            | Requirement::NotEquals(k, _)
            | Requirement::Exists(k)
            | Requirement::Missing(k) => k,
        }
    }

    /// Whether `labels` meet it.
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Missing(k) => !labels.contains_key(k),
        }
    }
}

/// A selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

impl Selector {
    /// Parses `app=web,tier!=db,canary,!legacy`; the error says which part is wrong and why.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut out = Vec::new();
        let trim = |s: &str| s.trim_matches(' ').to_string();
        for part in text.split(',').map(|p| p.trim_matches(' ')) {
            if part.is_empty() {
                return Err(format!("selector `{text}`: an empty requirement (two commas, or one at an end)"));
            }
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(trim(k), trim(v))
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(trim(k), trim(v))
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::Missing(trim(k))
            } else {
                Requirement::Exists(part.into())
            };
            check_key_form(req.key()).map_err(|e| format!("selector `{text}`: {e}"))?;
            if let Requirement::Equals(k, v) | Requirement::NotEquals(k, v) = &req {
                check_value(k, v).map_err(|e| format!("selector `{text}`: {e}"))?;
            }
            out.push(req);
        }
        Ok(Selector(out))
    }

    /// Whether `labels` meet every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn keys_and_values_are_kubernetes_labels() {
        for ok in ["app", "app.kubernetes.io/name", "a_b-c.d", "x/y", "A1"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-app", "app-", "a b", "Upper.Case/x", "/x", "a/", &"n".repeat(64)] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        assert!(check_value("k", "").is_ok() && check_value("k", "v1.2").is_ok());
        assert!(check_value("k", "has space").unwrap_err().contains("label `k`: value `has space`"));
        let errs = check(&labels(&[("ok", "yes"), ("bad key", "x")])).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, "labels.bad key");
    }

    #[test]
    fn selectors_hold_when_every_requirement_does() {
        let s = Selector::parse("team=ops, tier!=db,canary,!legacy").unwrap();
        assert!(s.matches(&labels(&[("team", "ops"), ("canary", "")])));
        assert!(s.matches(&labels(&[("team", "ops"), ("tier", "web"), ("canary", "1")])));
        assert!(!s.matches(&labels(&[("team", "ops"), ("tier", "db"), ("canary", "1")])));
        assert!(!s.matches(&labels(&[("team", "ops"), ("canary", "1"), ("legacy", "")])));
        assert!(!s.matches(&labels(&[("team", "dev"), ("canary", "1")])));
        assert_eq!(Selector::parse("a==b").unwrap().0, [Requirement::Equals("a".into(), "b".into())]);
        let pattern = regex::Regex::new(SELECTOR_PATTERN).unwrap();
        for ok in ["a", "a=b", "x.io/a == b, !c ,d!=", " tier != db "] {
            assert!(pattern.is_match(ok) && Selector::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a,,b", "a b", "a=b=c", "!a=b", "a\t=b", "a===b"] {
            assert!(!pattern.is_match(bad) && Selector::parse(bad).is_err(), "{bad}");
        }
        for (bad, says) in
            [("a,,b", "empty requirement"), ("a b=c", "label key `a b`"), ("a=b c", "value `b c`"), ("", "empty")]
        {
            let e = Selector::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
