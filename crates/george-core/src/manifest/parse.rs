//! YAML text → typed manifests. A file may hold several documents separated by
//! `---`. Every problem becomes a [`Diagnostic`] naming the file, the line and
//! column, the field path and what was expected.

use super::{
    AgentSpec, Chapter, Diagnostic, JobManifest, Kind, Manifest, ObjectMeta, Policy, TaskTemplate, API_VERSION,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;

/// Position of a field: 1-based line and column.
pub type Position = (u64, u64);

/// A manifest with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedManifest {
    /// The manifest.
    pub manifest: Manifest,
    /// The file it was read from.
    pub file: String,
    /// Line where its document starts.
    pub line: u64,
    /// Where each field path (e.g. `spec.steps[0].run`) starts.
    pub positions: BTreeMap<String, Position>,
}

impl ParsedManifest {
    /// A diagnostic about `field` of this manifest, located when possible.
    pub fn diagnostic(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        let d = Diagnostic::new(&self.file, message).field(field);
        match self.position_of(field) {
            Some((l, c)) => d.at(l, c),
            None => d.at(self.line, 1),
        }
    }

    /// The position of `field`, or of its nearest located parent.
    pub fn position_of(&self, field: &str) -> Option<Position> {
        let mut path = field;
        loop {
            if let Some(p) = self.positions.get(path) {
                return Some(*p);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

/// Parses every document in `text` (the contents of `file`). Returns the
/// manifests and the problems; a document with a problem yields no manifest.
pub fn parse_manifests(file: &str, text: &str) -> (Vec<ParsedManifest>, Vec<Diagnostic>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for doc in split_documents(text) {
        match parse_document(file, &doc) {
            Ok(Some(m)) => out.push(m),
            Ok(None) => {}
            Err(d) => problems.push(d),
        }
    }
    (out, problems)
}

/// One YAML document, padded with blank lines so positions stay absolute.
struct Document {
    text: String,
    first_line: u64,
}

fn split_documents(text: &str) -> Vec<Document> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut first_line = 1;
    let mut has_content = false;
    for (i, line) in text.lines().enumerate() {
        let lineno = i as u64 + 1;
        let is_marker = line == "---" || line.starts_with("--- ") || line == "...";
        if is_marker {
            if has_content {
                docs.push(Document { text: std::mem::take(&mut current), first_line });
            }
            current = "\n".repeat(lineno as usize);
            has_content = false;
            first_line = lineno + 1;
            if let Some(rest) = line.strip_prefix("--- ") {
                // Content on the marker line itself, e.g. `--- {a: 1}`.
                current.pop();
                current.push_str(&" ".repeat(4));
                current.push_str(rest);
                current.push('\n');
                has_content |= !rest.trim().is_empty() && !rest.trim_start().starts_with('#');
                first_line = lineno;
            }
            continue;
        }
        let trimmed = line.trim();
        if !has_content && !trimmed.is_empty() && !trimmed.starts_with('#') {
            has_content = true;
            first_line = lineno;
        }
        current.push_str(line);
        current.push('\n');
    }
    if has_content {
        docs.push(Document { text: current, first_line });
    }
    docs
}

#[derive(Deserialize)]
struct Header {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<Spanned<String>>,
    #[serde(default)]
    kind: Option<Spanned<String>>,
}

fn parse_document(file: &str, doc: &Document) -> Result<Option<ParsedManifest>, Diagnostic> {
    let header: Header = typed(file, &doc.text)?;
    let Some(kind) = header.kind else {
        return Err(Diagnostic::new(
            file,
            "missing field `kind`; expected one of AgentSpec, TaskTemplate, Job, Chapter, Policy, Trigger",
        )
        .field("kind")
        .at(doc.first_line, 1));
    };
    let kind_value: Kind = kind.value.parse().map_err(|e: String| {
        Diagnostic::new(file, e).field("kind").at(kind.referenced.line(), kind.referenced.column())
    })?;
    match &header.api_version {
        Some(v) if v.value == API_VERSION => {}
        Some(v) => {
            return Err(Diagnostic::new(
                file,
                format!("unsupported apiVersion `{}`, expected `{API_VERSION}`", v.value),
            )
            .field("apiVersion")
            .at(v.referenced.line(), v.referenced.column()))
        }
        None => {
            return Err(Diagnostic::new(file, format!("missing field `apiVersion`, expected `{API_VERSION}`"))
                .field("apiVersion")
                .at(doc.first_line, 1))
        }
    }
    let manifest = match kind_value {
        Kind::AgentSpec => Manifest::AgentSpec(typed_without_kind::<AgentSpec>(file, &doc.text)?),
        Kind::TaskTemplate => Manifest::TaskTemplate(typed_without_kind::<TaskTemplate>(file, &doc.text)?),
        Kind::Job => Manifest::Job(typed_without_kind::<JobManifest>(file, &doc.text)?),
        Kind::Chapter => Manifest::Chapter(typed_without_kind::<Chapter>(file, &doc.text)?),
        Kind::Policy => Manifest::Policy(typed_without_kind::<Policy>(file, &doc.text)?),
        Kind::Trigger => Manifest::Trigger(typed_without_kind::<super::Trigger>(file, &doc.text)?),
    };
    let mut positions = BTreeMap::new();
    if let Ok(tree) = serde_saphyr::from_str::<Spanned<Node>>(&doc.text) {
        tree.value.collect("", &mut positions);
    }
    let parsed = ParsedManifest { manifest, file: file.to_string(), line: doc.first_line, positions };
    check_name(&parsed)?;
    Ok(Some(parsed))
}

fn check_name(m: &ParsedManifest) -> Result<(), Diagnostic> {
    let meta: &ObjectMeta = m.manifest.metadata();
    if !super::is_valid_name(&meta.name) {
        return Err(m.diagnostic(
            "metadata.name",
            format!(
                "invalid name `{}`; expected 1-63 lowercase letters, digits, `-`, `_` or `.`, starting with a letter or digit",
                meta.name
            ),
        ));
    }
    Ok(())
}

/// A kind's struct has no `kind` field: the [`Manifest`] enum carries it.
fn typed_without_kind<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, Diagnostic> {
    // Blank out the top-level `kind:` line (keeping line numbers) so the
    // kind's struct can stay strict about unknown fields.
    let stripped: String =
        text.lines().map(|l| if l.starts_with("kind:") { "" } else { l }).collect::<Vec<_>>().join("\n");
    typed(file, &stripped)
}

fn typed<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, Diagnostic> {
    crate::yaml::from_yaml(text).map_err(|e| {
        let d = Diagnostic::new(file, e.message).field(e.field);
        match (e.line, e.column) {
            (Some(l), Some(c)) => d.at(l, c),
            _ => d,
        }
    })
}

/// A YAML tree whose every value knows where it starts.
enum Node {
    Map(Vec<(String, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Leaf,
}

impl Node {
    fn collect(&self, prefix: &str, out: &mut BTreeMap<String, Position>) {
        match self {
            Node::Map(entries) => {
                for (k, v) in entries {
                    let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    out.insert(path.clone(), (v.referenced.line(), v.referenced.column()));
                    v.value.collect(&path, out);
                }
            }
            Node::Seq(items) => {
                for (i, v) in items.iter().enumerate() {
                    let path = format!("{prefix}[{i}]");
                    out.insert(path.clone(), (v.referenced.line(), v.referenced.column()));
                    v.value.collect(&path, out);
                }
            }
            Node::Leaf => {}
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = m.next_key::<String>()? {
                    entries.push((k, m.next_value::<Spanned<Node>>()?));
                }
                Ok(Node::Map(entries))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = s.next_element::<Spanned<Node>>()? {
                    items.push(v);
                }
                Ok(Node::Seq(items))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Node, D2::Error> {
                Node::deserialize(d)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "apiVersion: george/v1\nkind: Job\nmetadata:\n  name: hello\nspec:\n  template: greet\n  params:\n    who: world\n";

    #[test]
    fn parses_a_job_and_locates_its_fields() {
        let (ms, errs) = parse_manifests("jobs/hello.yaml", JOB);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(ms.len(), 1);
        let m = &ms[0];
        assert_eq!(m.manifest.kind(), Kind::Job);
        assert_eq!(m.manifest.name(), "hello");
        assert_eq!(m.position_of("spec.template"), Some((6, 13)));
        assert_eq!(m.position_of("spec.params.who"), Some((8, 10)));
        assert_eq!(m.position_of("spec.nothing.here"), m.position_of("spec"));
    }

    #[test]
    fn unknown_field_names_file_line_and_path() {
        let text = JOB.replace("  template: greet", "  template: greet\n  tempalte: oops");
        let (ms, errs) = parse_manifests("jobs/hello.yaml", &text);
        assert!(ms.is_empty());
        let e = &errs[0];
        assert_eq!(e.field, "spec.tempalte");
        assert_eq!(e.line, Some(7));
        assert!(e.message.contains("unknown field `tempalte`"), "{e}");
        assert!(e.to_string().starts_with("jobs/hello.yaml:7:"), "{e}");
    }

    #[test]
    fn second_document_errors_keep_absolute_lines() {
        let text = format!("{JOB}---\n# comment\n{}", JOB.replace("hello", "second").replace("greet", "[broken"));
        let (ms, errs) = parse_manifests("jobs/two.yaml", &text);
        assert_eq!(ms.len(), 1);
        assert_eq!(errs.len(), 1, "{errs:?}");
        // The unclosed `[` on line 16 is detected on line 17; relative to its document it would be line 7.
        assert_eq!(errs[0].line, Some(17), "{}", errs[0]);
    }

    #[test]
    fn wrong_kind_version_and_type_are_explained() {
        let (_, errs) = parse_manifests("a.yaml", "apiVersion: george/v1\nkind: Jobb\nmetadata: {name: a}\n");
        assert!(errs[0].message.contains("unknown kind `Jobb`"), "{}", errs[0]);
        let (_, errs) = parse_manifests("a.yaml", &JOB.replace("george/v1", "guild/v1"));
        assert_eq!(errs[0].field, "apiVersion");
        let (_, errs) = parse_manifests("a.yaml", &JOB.replace("template: greet", "template: greet\n  priority: P9"));
        assert_eq!(errs[0].field, "spec.priority");
        let (_, errs) = parse_manifests("a.yaml", &JOB.replace("name: hello", "name: Hello World"));
        assert_eq!(errs[0].field, "metadata.name");
        assert_eq!(errs[0].line, Some(4));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let (_, errs) = parse_manifests("d.yaml", &format!("{JOB}spec:\n  template: other\n"));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].message, "duplicate mapping key: spec");
        assert_eq!(errs[0].line, Some(9));
    }

    #[test]
    fn malformed_yaml_is_a_located_error_not_a_panic() {
        for text in [
            "key: [unclosed\n",
            "a: b\n c: d\n",
            ":\n:\n- -",
            "\t\tkind: Job\n",
            "kind: Job\napiVersion: george/v1\nmetadata: 3\n",
        ] {
            let (ms, errs) = parse_manifests("bad.yaml", text);
            assert!(ms.is_empty());
            assert_eq!(errs.len(), 1, "{text:?} → {errs:?}");
        }
        let (ms, errs) = parse_manifests("empty.yaml", "# nothing here\n");
        assert!(ms.is_empty() && errs.is_empty());
    }
}
