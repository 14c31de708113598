//! Atlassian Document Format (ADF), the JSON rich-text format of Jira Cloud
//! descriptions and comments: plain text out of any document, and the small
//! documents George writes (paragraphs and code blocks). Jira rejects empty
//! text nodes, so none is ever produced.

use serde_json::{json, Value};

/// The most text George puts in one comment (Jira's limit is 32 767 characters).
pub const MAX_COMMENT_CHARS: usize = 30_000;

/// Plain text of an ADF document (or of a plain string, as Jira Server and
/// API v2 return). Block nodes become lines; lists get `- `; unknown nodes
/// contribute their text. Anything else (a number, `null`) is empty.
pub fn to_text(doc: &Value) -> String {
    let mut out = String::new();
    match doc {
        Value::String(s) => out.push_str(s),
        Value::Object(_) => walk(doc, &mut out, 0),
        _ => {}
    }
    let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
    lines.join("\n").trim().to_string()
}

fn walk(node: &Value, out: &mut String, depth: usize) {
    if depth > 64 {
        return; // a malicious document cannot recurse without bound
    }
    let kind = node.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" => out.push_str(node.get("text").and_then(Value::as_str).unwrap_or("")),
        "hardBreak" => out.push('\n'),
        "mention" => out.push_str(node.pointer("/attrs/text").and_then(Value::as_str).unwrap_or("@someone")),
        "emoji" => out.push_str(node.pointer("/attrs/text").and_then(Value::as_str).unwrap_or("")),
        "inlineCard" | "blockCard" => out.push_str(node.pointer("/attrs/url").and_then(Value::as_str).unwrap_or("")),
        "listItem" => {
            out.push_str("- ");
            children(node, out, depth);
        }
        "paragraph" | "heading" | "codeBlock" | "blockquote" | "bulletList" | "orderedList" | "panel" | "rule"
        | "table" | "tableRow" | "tableCell" | "tableHeader" | "mediaSingle" | "expand" => {
            // A block starts a line (a list item's first block continues its `- `).
            if !out.is_empty() && !out.ends_with('\n') && !out.ends_with("- ") {
                out.push('\n');
            }
            children(node, out, depth);
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        _ => children(node, out, depth),
    }
}

fn children(node: &Value, out: &mut String, depth: usize) {
    for c in node.get("content").and_then(Value::as_array).into_iter().flatten() {
        walk(c, out, depth + 1);
    }
}

/// One block of a document George writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// A paragraph; lines become hard breaks.
    Paragraph(String),
    /// Preformatted text.
    Code(String),
    /// A table: a header row, then rows of as many cells (empty cells show `—`).
    Table {
        /// Column titles.
        header: Vec<String>,
        /// Rows.
        rows: Vec<Vec<String>>,
    },
}

/// An ADF table cell (`tableHeader` or `tableCell`) holding one paragraph.
fn cell(kind: &str, text: &str) -> Value {
    let text = if text.trim().is_empty() { "—" } else { text };
    json!({"type": kind, "attrs": {}, "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}]})
}

/// An ADF document of `blocks`, at most [`MAX_COMMENT_CHARS`] of text in all.
pub fn doc(blocks: &[Block]) -> Value {
    let mut budget = MAX_COMMENT_CHARS;
    let mut content = Vec::new();
    for b in blocks {
        let (text, code) = match b {
            Block::Paragraph(t) => (t.as_str(), false),
            Block::Code(t) => (t.as_str(), true),
            Block::Table { header, rows } => {
                let mut trs = vec![
                    json!({"type": "tableRow", "content": header.iter().map(|h| cell("tableHeader", &clip(h, &mut budget))).collect::<Vec<_>>()}),
                ];
                for r in rows {
                    let cells: Vec<Value> = r.iter().map(|c| cell("tableCell", &clip(c, &mut budget))).collect();
                    trs.push(json!({"type": "tableRow", "content": cells}));
                }
                content.push(json!({"type": "table", "attrs": {"isNumberColumnEnabled": false, "layout": "default"}, "content": trs}));
                continue;
            }
        };
        let text = clip(text.trim_end(), &mut budget);
        if text.trim().is_empty() {
            continue;
        }
        if code {
            content.push(json!({"type": "codeBlock", "content": [{"type": "text", "text": text}]}));
        } else {
            let mut inline = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if i > 0 {
                    inline.push(json!({"type": "hardBreak"}));
                }
                if !line.is_empty() {
                    inline.push(json!({"type": "text", "text": line}));
                }
            }
            content.push(json!({"type": "paragraph", "content": inline}));
        }
    }
    if content.is_empty() {
        content.push(json!({"type": "paragraph", "content": [{"type": "text", "text": "(no details)"}]}));
    }
    json!({"type": "doc", "version": 1, "content": content})
}

/// At most `budget` characters of `text` (the end is cut), charged to the budget.
fn clip(text: &str, budget: &mut usize) -> String {
    let n = text.chars().count();
    if n <= *budget {
        *budget -= n;
        return text.to_string();
    }
    let keep: String = text.chars().take(budget.saturating_sub(20)).collect();
    *budget = 0;
    format!("{keep}\n[… cut]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_comes_out_of_any_document() {
        let d = json!({"type": "doc", "version": 1, "content": [
            {"type": "heading", "attrs": {"level": 2}, "content": [{"type": "text", "text": "Goal"}]},
            {"type": "paragraph", "content": [{"type": "text", "text": "Add "}, {"type": "text", "text": "login", "marks": [{"type": "strong"}]},
                {"type": "hardBreak"}, {"type": "text", "text": "Repo: https://git.example.com/app.git"}]},
            {"type": "bulletList", "content": [{"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "one"}]}]}]},
            {"type": "mention", "attrs": {"id": "x", "text": "@Ann"}},
            {"type": "mysteryNode", "content": [{"type": "text", "text": "kept"}]}
        ]});
        assert_eq!(to_text(&d), "Goal\nAdd login\nRepo: https://git.example.com/app.git\n- one\n@Annkept");
        assert_eq!(to_text(&json!("plain v2 text")), "plain v2 text");
        assert_eq!(to_text(&Value::Null), "");
        assert_eq!(to_text(&json!(42)), "");
        // Deep nesting is cut off, not a stack overflow.
        let mut deep = json!({"type": "text", "text": "bottom"});
        for _ in 0..200 {
            deep = json!({"type": "blockquote", "content": [deep]});
        }
        let _ = to_text(&deep);
    }

    #[test]
    fn documents_george_writes_are_valid_and_bounded() {
        let d = doc(&[
            Block::Paragraph("Blocked:\nneeds a key".into()),
            Block::Code(String::new()),
            Block::Code("x".repeat(40_000)),
        ]);
        assert_eq!(d["type"], "doc");
        assert_eq!(d["version"], 1);
        let content = d["content"].as_array().unwrap();
        assert_eq!(content.len(), 2, "the empty code block is left out");
        assert_eq!(content[0]["content"][1]["type"], "hardBreak");
        let code = content[1]["content"][0]["text"].as_str().unwrap();
        assert!(code.chars().count() <= MAX_COMMENT_CHARS && code.ends_with("[… cut]"));
        assert_eq!(doc(&[])["content"][0]["content"][0]["text"], "(no details)");
    }
}
