//! A Jira issue as George reads it, and how it becomes a job: the template
//! chosen by the first matching rule (issue type and/or label), parameters
//! from the ticket (only those the template declares), and the priority
//! class from Jira's priority.

use george_core::Priority;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// What George reads of an issue.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    /// `PROJ-12`.
    pub key: String,
    /// One line.
    pub summary: String,
    /// The description as plain text (from ADF).
    pub description: String,
    /// Issue type name (`Task`, `Bug`, …).
    pub issue_type: String,
    /// Labels.
    pub labels: Vec<String>,
    /// Priority name (`Highest` … `Lowest`).
    pub priority: Option<String>,
    /// Status name.
    pub status: String,
    /// Status category key: `new`, `indeterminate` or `done`.
    pub status_category: String,
    /// Issues this one is blocked by that are not done: `(key, status)`.
    pub open_blockers: Vec<(String, String)>,
    /// Every field as Jira sent it (for custom fields).
    pub fields: serde_json::Map<String, Value>,
}

/// The fields George asks the search for (plus configured custom fields).
pub const FIELDS: &[&str] =
    &["summary", "description", "issuetype", "labels", "priority", "status", "issuelinks", "created"];

/// A search result that is no usable issue: it has no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an issue without a key")]
pub struct MissingKey;

impl Ticket {
    /// Reads a search result issue; it must have a key, anything else may be missing.
    pub fn from_issue(issue: &Value) -> Result<Ticket, MissingKey> {
        let key = issue["key"].as_str().filter(|k| !k.is_empty()).ok_or(MissingKey)?.to_string();
        let fields = issue["fields"].as_object().cloned().unwrap_or_default();
        let text = |v: Option<&Value>, path: &str| {
            v.and_then(|v| v.pointer(path)).and_then(Value::as_str).unwrap_or("").to_string()
        };
        let mut open_blockers = Vec::new();
        for link in fields.get("issuelinks").and_then(Value::as_array).into_iter().flatten() {
            let inward = link.pointer("/type/inward").and_then(Value::as_str).unwrap_or("");
            let Some(blocker) = link.get("inwardIssue") else { continue };
            if !inward.eq_ignore_ascii_case("is blocked by") {
                continue;
            }
            let category = blocker.pointer("/fields/status/statusCategory/key").and_then(Value::as_str).unwrap_or("");
            if category != "done" {
                let status = blocker.pointer("/fields/status/name").and_then(Value::as_str).unwrap_or("unknown");
                open_blockers.push((blocker["key"].as_str().unwrap_or("?").to_string(), status.to_string()));
            }
        }
        Ok(Ticket {
            summary: text(fields.get("summary"), ""),
            description: fields.get("description").map(crate::adf::to_text).unwrap_or_default(),
            issue_type: text(fields.get("issuetype"), "/name"),
            labels: fields
                .get("labels")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect(),
            priority: fields.get("priority").and_then(|p| p["name"].as_str()).map(str::to_string),
            status: text(fields.get("status"), "/name"),
            status_category: text(fields.get("status"), "/statusCategory/key"),
            open_blockers,
            key,
            fields,
        })
    }

    /// The repository named by a `Repo: <url>` line of the description (recac's convention).
    pub fn repo_url(&self) -> Option<String> {
        self.description.lines().find_map(|l| {
            let l = l.trim();
            let rest = l.get(..5).filter(|p| p.eq_ignore_ascii_case("repo:")).map(|_| &l[5..])?;
            rest.split_whitespace().next().map(str::to_string)
        })
    }
}

/// Which template a ticket becomes: the first rule whose conditions all hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    /// Issue type name, if the rule needs one.
    #[serde(default)]
    pub issue_type: Option<String>,
    /// A label the ticket must have.
    #[serde(default)]
    pub label: Option<String>,
    /// The template.
    pub template: String,
    /// Its jobs on the board (steps as sub-tasks; see `board`).
    #[serde(default)]
    pub board: bool,
}

/// How tickets become jobs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapping {
    /// Rules, in order.
    pub rules: Vec<Rule>,
    /// The template when no rule matches.
    pub template: String,
    /// Custom field id → parameter name.
    pub fields: BTreeMap<String, String>,
    /// Jira priority name → priority class (defaults: Highest P0, High P1, Medium P2, Low and Lowest P3).
    pub priorities: BTreeMap<String, Priority>,
}

impl Mapping {
    /// The template for `t`.
    pub fn template_for(&self, t: &Ticket) -> &str {
        self.rule_for(t).map_or(self.template.as_str(), |r| r.template.as_str())
    }

    /// Whether the rule that picks `t`'s template puts its job on the board.
    pub fn board_for(&self, t: &Ticket) -> bool {
        self.rule_for(t).is_some_and(|r| r.board)
    }

    fn rule_for(&self, t: &Ticket) -> Option<&Rule> {
        self.rules.iter().find(|r| {
            r.issue_type.as_ref().is_none_or(|i| i.eq_ignore_ascii_case(&t.issue_type))
                && r.label.as_ref().is_none_or(|l| t.labels.iter().any(|x| x == l))
        })
    }

    /// The priority class of `t`.
    pub fn priority_for(&self, t: &Ticket) -> Priority {
        let name = t.priority.as_deref().unwrap_or("");
        if let Some(p) = self.priorities.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, p)| *p) {
            return p;
        }
        match name.to_ascii_lowercase().as_str() {
            "highest" | "blocker" | "critical" => Priority::P0,
            "high" | "major" => Priority::P1,
            "low" | "lowest" | "minor" | "trivial" => Priority::P3,
            _ => Priority::P2,
        }
    }

    /// Every parameter the ticket offers (the caller keeps those the template declares).
    pub fn params_for(&self, t: &Ticket) -> BTreeMap<String, Value> {
        let mut p = BTreeMap::from([
            ("ticket".to_string(), Value::String(t.key.clone())),
            ("summary".to_string(), Value::String(t.summary.clone())),
            ("description".to_string(), Value::String(t.description.clone())),
            ("issue_type".to_string(), Value::String(t.issue_type.clone())),
            ("labels".to_string(), Value::String(t.labels.join(","))),
        ]);
        if let Some(r) = t.repo_url() {
            p.insert("repo_url".into(), Value::String(r));
        }
        for (field, param) in &self.fields {
            match t.fields.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => {
                    p.insert(param.clone(), Value::String(s.clone()));
                }
                Some(Value::Object(o)) if o.contains_key("value") => {
                    p.insert(param.clone(), o["value"].clone());
                }
                Some(Value::Object(o)) if o.get("type").and_then(Value::as_str) == Some("doc") => {
                    p.insert(param.clone(), Value::String(crate::adf::to_text(&Value::Object(o.clone()))));
                }
                Some(other) => {
                    p.insert(param.clone(), other.clone());
                }
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn issue() -> Value {
        json!({"id": "10001", "key": "PROJ-5", "fields": {
        "summary": "Add login", "issuetype": {"name": "Bug"}, "labels": ["george", "web"],
        "priority": {"name": "High"}, "status": {"name": "To Do", "statusCategory": {"key": "new"}},
        "description": {"type": "doc", "version": 1, "content": [{"type": "paragraph", "content": [
            {"type": "text", "text": "Please fix."}, {"type": "hardBreak"}, {"type": "text", "text": "repo:  https://git.example.com/app.git  "}]}]},
        "customfield_10010": {"value": "backend"},
        "issuelinks": [
            {"type": {"name": "Blocks", "inward": "is blocked by", "outward": "blocks"},
             "inwardIssue": {"key": "PROJ-3", "fields": {"status": {"name": "In Progress", "statusCategory": {"key": "indeterminate"}}}}},
            {"type": {"name": "Blocks", "inward": "is blocked by", "outward": "blocks"},
             "inwardIssue": {"key": "PROJ-1", "fields": {"status": {"name": "Done", "statusCategory": {"key": "done"}}}}},
            {"type": {"name": "Blocks", "inward": "is blocked by", "outward": "blocks"},
             "outwardIssue": {"key": "PROJ-9", "fields": {"status": {"name": "To Do", "statusCategory": {"key": "new"}}}}}
        ]}})
    }

    #[test]
    fn a_ticket_is_read_and_mapped() {
        let t = Ticket::from_issue(&issue()).unwrap();
        assert_eq!(
            t.open_blockers,
            [("PROJ-3".to_string(), "In Progress".to_string())],
            "done and outward links don't block"
        );
        assert_eq!(t.repo_url().as_deref(), Some("https://git.example.com/app.git"));
        let m = Mapping {
            rules: vec![
                Rule {
                    issue_type: Some("bug".into()),
                    label: Some("mobile".into()),
                    template: "mobile-fix".into(),
                    board: false,
                },
                Rule { issue_type: Some("Bug".into()), label: None, template: "fix".into(), board: false },
            ],
            template: "task".into(),
            fields: BTreeMap::from([("customfield_10010".into(), "component".into())]),
            priorities: BTreeMap::new(),
        };
        assert_eq!(m.template_for(&t), "fix");
        assert_eq!(m.priority_for(&t), Priority::P1);
        let p = m.params_for(&t);
        assert_eq!(p["ticket"], "PROJ-5");
        assert_eq!(p["description"], "Please fix.\nrepo:  https://git.example.com/app.git");
        assert_eq!(p["component"], "backend");
        assert_eq!(p["labels"], "george,web");
        assert_eq!(Ticket::from_issue(&json!({"fields": {}})).unwrap_err(), MissingKey);
        // Missing or odd fields are tolerated.
        let bare = Ticket::from_issue(&json!({"key": "P-1", "fields": {"description": 7, "labels": "x"}})).unwrap();
        assert_eq!((bare.description.as_str(), bare.labels.len(), m.template_for(&bare)), ("", 0, "task"));
    }
}
