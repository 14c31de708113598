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

/// A rough token count (4 bytes per token), as the proxy estimates input.
pub fn estimate_tokens(v: &impl Serialize) -> u64 {
    (serde_json::to_string(v).map_or(0, |s| s.len()) as u64).div_ceil(4)
}

/// The messages to send when they may take about `budget` tokens: the task
/// (the first message) and as many of the latest turns as fit, whole — an
/// assistant message with its tool results, or one comment — with a note
/// where earlier turns were left out. The latest turn is always sent.
pub fn fit(messages: &[Msg], budget: u64) -> Vec<Msg> {
    let Some((task, rest)) = messages.split_first() else { return Vec::new() };
    if estimate_tokens(&messages) <= budget {
        return messages.to_vec();
    }
    // Turns: each starts at an assistant or user message; tool results belong to the one before.
    let mut turns: Vec<&[Msg]> = Vec::new();
    let mut start = 0;
    for i in 1..=rest.len() {
        if i == rest.len() || !matches!(rest[i], Msg::Tool { .. }) {
            turns.push(&rest[start..i]);
            start = i;
        }
    }
    let mut left = budget.saturating_sub(estimate_tokens(task) + 20);
    let mut kept: Vec<&[Msg]> = Vec::new();
    for turn in turns.iter().rev() {
        let cost = estimate_tokens(turn);
        if !kept.is_empty() && cost > left {
            break;
        }
        left = left.saturating_sub(cost);
        kept.push(turn);
    }
    let omitted: usize = rest.len() - kept.iter().map(|t| t.len()).sum::<usize>();
    let mut out = vec![task.clone()];
    if omitted > 0 {
        out.push(Msg::User { text: format!("({omitted} earlier messages are left out to fit the context window.)") });
    }
    out.extend(kept.iter().rev().flat_map(|t| t.iter().cloned()));
    out
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
    fn fit_keeps_the_task_and_the_latest_whole_turns() {
        let mut msgs = convo();
        for n in 0..6 {
            let id = format!("c{n}x");
            msgs.push(Msg::Assistant {
                text: Some("x".repeat(200)),
                calls: vec![Call { id: id.clone(), name: "read_file".into(), args: json!({"path": "a"}) }],
            });
            msgs.push(Msg::Tool { call_id: id, content: "y".repeat(200) });
        }
        assert_eq!(fit(&msgs, 1_000_000), msgs, "everything fits");
        let fitted = fit(&msgs, 400);
        assert_eq!(fitted[0], msgs[0], "the task stays");
        assert!(matches!(&fitted[1], Msg::User { text } if text.contains("earlier messages are left out")));
        assert!(estimate_tokens(&fitted) <= 400 + 20, "{}", estimate_tokens(&fitted));
        assert_eq!(fitted.last(), msgs.last(), "the latest turn stays");
        // No tool result without its call.
        let first_kept = &fitted[2];
        assert!(matches!(first_kept, Msg::Assistant { .. }), "{first_kept:?}");
        // A budget smaller than the latest turn still sends it.
        let tiny = fit(&msgs, 1);
        assert_eq!(tiny.len(), 4, "task, note, the latest assistant message and its result");
        // Both wire formats accept the result.
        assert!(openai_request("s", &fitted, &[])["messages"].as_array().unwrap().len() > 2);
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
