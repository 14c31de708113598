//! The LLM conversation of a step, in a neutral form: stored as the step's
//! `llm.conversation` evidence after every turn, so a replacement agent
//! continues it; translated to the OpenAI or Anthropic wire format per call.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// The provider's call id.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments.
    pub args: Value,
}

/// One message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Msg {
    /// From the agent (the task) or from people (comments).
    User {
        /// Text.
        text: String,
    },
    /// From the model.
    Assistant {
        /// Text, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Tool calls, if any.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        calls: Vec<Call>,
    },
    /// A tool's result.
    Tool {
        /// The call it answers.
        call_id: String,
        /// Result text.
        content: String,
    },
}

/// A step's conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// The step.
    pub step: String,
    /// Messages, oldest first.
    pub messages: Vec<Msg>,
    /// The newest comment already in the conversation.
    pub last_comment: i64,
    /// Model turns so far (over all attempts).
    pub turns: u32,
}

/// A tool offered to the model.
#[derive(Debug, Clone)]
pub struct ToolDef {
    /// Name.
    pub name: &'static str,
    /// What it does.
    pub description: &'static str,
    /// JSON schema of its arguments.
    pub schema: Value,
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Text.
    pub text: Option<String>,
    /// Tool calls.
    pub calls: Vec<Call>,
}

/// The request body of one call in the OpenAI format.
pub fn openai_request(system: &str, messages: &[Msg], tools: &[ToolDef]) -> Value {
    let mut out = vec![json!({"role": "system", "content": system})];
    for m in messages {
        out.push(match m {
            Msg::User { text } => json!({"role": "user", "content": text}),
            Msg::Assistant { text, calls } => {
                let mut v = json!({"role": "assistant", "content": text});
                if !calls.is_empty() {
                    v["tool_calls"] = calls
                        .iter()
                        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.args.to_string()}}))
                        .collect();
                }
                v
            }
            Msg::Tool { call_id, content } => json!({"role": "tool", "tool_call_id": call_id, "content": content}),
        });
    }
    let tools: Vec<Value> = tools
        .iter()
        .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.schema}}))
        .collect();
    json!({"messages": out, "tools": tools})
}

/// The model's answer in an OpenAI response.
pub fn openai_answer(resp: &Value) -> Answer {
    let msg = &resp["choices"][0]["message"];
    let calls = msg["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| Call {
            id: c["id"].as_str().unwrap_or_default().to_string(),
            name: c["function"]["name"].as_str().unwrap_or_default().to_string(),
            args: c["function"]["arguments"].as_str().and_then(|a| serde_json::from_str(a).ok()).unwrap_or(json!({})),
        })
        .collect();
    Answer { text: msg["content"].as_str().map(str::to_string), calls }
}

/// The request body of one call in the Anthropic format (roles alternate:
/// consecutive user-side messages are merged into one).
pub fn anthropic_request(system: &str, messages: &[Msg], tools: &[ToolDef]) -> Value {
    let mut out: Vec<Value> = Vec::new();
    for m in messages {
        let (role, blocks) = match m {
            Msg::User { text } => ("user", vec![json!({"type": "text", "text": text})]),
            Msg::Tool { call_id, content } => {
                ("user", vec![json!({"type": "tool_result", "tool_use_id": call_id, "content": content})])
            }
            Msg::Assistant { text, calls } => {
                let mut b: Vec<Value> = text.iter().map(|t| json!({"type": "text", "text": t})).collect();
                b.extend(
                    calls.iter().map(|c| json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.args})),
                );
                ("assistant", b)
            }
        };
        match out.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(arr) = last["content"].as_array_mut() {
                    arr.extend(blocks);
                }
            }
            _ => out.push(json!({"role": role, "content": blocks})),
        }
    }
    let tools: Vec<Value> =
        tools.iter().map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.schema})).collect();
    json!({"system": system, "messages": out, "tools": tools})
}

/// The model's answer in an Anthropic response.
pub fn anthropic_answer(resp: &Value) -> Answer {
    let mut text = None;
    let mut calls = Vec::new();
    for b in resp["content"].as_array().into_iter().flatten() {
        match b["type"].as_str() {
            Some("text") => text = b["text"].as_str().map(str::to_string),
            Some("tool_use") => calls.push(Call {
                id: b["id"].as_str().unwrap_or_default().to_string(),
                name: b["name"].as_str().unwrap_or_default().to_string(),
                args: b["input"].clone(),
            }),
            _ => {}
        }
    }
    Answer { text, calls }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convo() -> Vec<Msg> {
        vec![
            Msg::User { text: "do it".into() },
            Msg::Assistant {
                text: None,
                calls: vec![Call { id: "c1".into(), name: "run_command".into(), args: json!({"command": "ls"}) }],
            },
            Msg::Tool { call_id: "c1".into(), content: "a\nb".into() },
            Msg::User { text: "Comment from operator:x: hurry".into() },
        ]
    }

    #[test]
    fn both_wire_formats_round_trip_the_conversation() {
        let o = openai_request("sys", &convo(), &[]);
        assert_eq!(o["messages"].as_array().unwrap().len(), 5);
        assert_eq!(o["messages"][2]["tool_calls"][0]["function"]["arguments"], "{\"command\":\"ls\"}");
        assert_eq!(o["messages"][3]["role"], "tool");
        let a = anthropic_request("sys", &convo(), &[]);
        let msgs = a["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3, "tool result and the following comment merge into one user turn");
        assert_eq!(msgs[2]["content"][0]["type"], "tool_result");
        assert_eq!(msgs[2]["content"][1]["type"], "text");
        let resp = json!({"content": [{"type": "text", "text": "ok"}, {"type": "tool_use", "id": "t", "name": "x", "input": {"a": 1}}]});
        assert_eq!(anthropic_answer(&resp).calls[0].args, json!({"a": 1}));
        let resp = json!({"choices": [{"message": {"content": null, "tool_calls": [{"id": "c", "function": {"name": "y", "arguments": "{\"b\":2}"}}]}}]});
        assert_eq!(openai_answer(&resp).calls[0].args, json!({"b": 2}));
    }
}
