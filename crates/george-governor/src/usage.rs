//! Reading token usage from the providers' own responses: the `usage` of a
//! JSON response, or the usage events of a server-sent-event stream (OpenAI's
//! final chunk with `stream_options.include_usage`; Anthropic's
//! `message_start` and `message_delta`).

use crate::provider::ProviderApi;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Tokens of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Input (prompt) tokens, cached ones included.
    pub input: u64,
    /// Output (completion) tokens.
    pub output: u64,
}

impl Usage {
    /// Input plus output.
    pub fn total(&self) -> u64 {
        self.input + self.output
    }
}

fn n(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The usage of a complete (non-streaming) response body.
pub fn parse_usage(api: ProviderApi, body: &Value) -> Option<Usage> {
    let u = body.get("usage").filter(|u| u.is_object())?;
    Some(match api {
        ProviderApi::OpenAi => Usage { input: n(u, "prompt_tokens"), output: n(u, "completion_tokens") },
        ProviderApi::Anthropic => Usage {
            input: n(u, "input_tokens") + n(u, "cache_creation_input_tokens") + n(u, "cache_read_input_tokens"),
            output: n(u, "output_tokens"),
        },
    })
}

/// Follows a server-sent-event stream chunk by chunk and keeps its usage.
#[derive(Debug)]
pub struct StreamUsage {
    api: ProviderApi,
    line: Vec<u8>,
    usage: Usage,
    seen: bool,
}

impl StreamUsage {
    /// A follower for a stream in `api`'s format.
    pub fn new(api: ProviderApi) -> Self {
        Self { api, line: Vec::new(), usage: Usage::default(), seen: false }
    }

    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.line_done(&line);
            } else {
                self.line.push(b);
            }
        }
    }

    fn line_done(&mut self, line: &[u8]) {
        let Ok(text) = std::str::from_utf8(line) else { return };
        let Some(data) = text.trim_end_matches('\r').strip_prefix("data:") else { return };
        let Ok(v) = serde_json::from_str::<Value>(data.trim()) else { return };
        match self.api {
            ProviderApi::OpenAi => {
                if let Some(u) = parse_usage(ProviderApi::OpenAi, &v) {
                    self.usage = u;
                    self.seen = true;
                }
            }
            ProviderApi::Anthropic => match v.get("type").and_then(Value::as_str) {
                Some("message_start") => {
                    if let Some(u) = v.get("message").and_then(|m| parse_usage(ProviderApi::Anthropic, m)) {
                        self.usage = u;
                        self.seen = true;
                    }
                }
                Some("message_delta") => {
                    if let Some(out) = v.get("usage").and_then(|u| u.get("output_tokens")).and_then(Value::as_u64) {
                        self.usage.output = out; // cumulative
                        self.seen = true;
                    }
                }
                _ => {}
            },
        }
    }

    /// The usage, if the stream reported any.
    pub fn usage(&self) -> Option<Usage> {
        self.seen.then_some(self.usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_responses() {
        let o = json!({"usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}});
        assert_eq!(parse_usage(ProviderApi::OpenAi, &o), Some(Usage { input: 12, output: 5 }));
        let a = json!({"usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "output_tokens": 7}});
        assert_eq!(parse_usage(ProviderApi::Anthropic, &a), Some(Usage { input: 14, output: 7 }));
        assert_eq!(parse_usage(ProviderApi::OpenAi, &json!({"choices": []})), None);
    }

    #[test]
    fn streams_split_anywhere() {
        let openai = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
                      data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":9}}\n\ndata: [DONE]\n\n";
        let anthropic = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":21,\"output_tokens\":1}}}\n\n\
                         event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"x\"}}\n\n\
                         event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
        for (api, text, want) in [
            (ProviderApi::OpenAi, openai, Usage { input: 30, output: 9 }),
            (ProviderApi::Anthropic, anthropic, Usage { input: 21, output: 15 }),
        ] {
            for split in [1, 7, 64, 4096] {
                let mut s = StreamUsage::new(api);
                for chunk in text.as_bytes().chunks(split) {
                    s.feed(chunk);
                }
                assert_eq!(s.usage(), Some(want), "{api:?} in chunks of {split}");
            }
        }
    }
}
