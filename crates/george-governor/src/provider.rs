//! LLM providers: where calls go and with which key. The key stays in the
//! engine: agents call the proxy with their attempt token and never see it.

use serde::{Deserialize, Serialize};

/// The wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderApi {
    /// OpenAI chat completions (also OpenRouter, vLLM, Ollama, ...).
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic messages.
    Anthropic,
}

impl ProviderApi {
    /// The path (after the base URL) of a call.
    pub fn path(self) -> &'static str {
        match self {
            ProviderApi::OpenAi => "chat/completions",
            ProviderApi::Anthropic => "messages",
        }
    }
}

/// A provider API key; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderKey(pub String);

impl std::fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProviderKey(<redacted>)")
    }
}

/// A configured provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    /// Its name in the configuration.
    pub name: String,
    /// Its wire format.
    pub api: ProviderApi,
    /// Base URL, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Its key (none for local servers that need none).
    pub key: Option<ProviderKey>,
}

impl Provider {
    /// A request to the provider with its authentication.
    pub fn request(&self, http: &reqwest::Client, body: Vec<u8>, streaming: bool) -> reqwest::RequestBuilder {
        let url = format!("{}/{}", self.base_url.trim_end_matches('/'), self.api.path());
        let mut rb = http.post(url).header("content-type", "application/json").body(body);
        if streaming {
            rb = rb.header("accept", "text/event-stream");
        }
        match (self.api, &self.key) {
            (ProviderApi::OpenAi, Some(k)) => rb.bearer_auth(&k.0),
            (ProviderApi::Anthropic, Some(k)) => rb.header("x-api-key", &k.0).header("anthropic-version", "2023-06-01"),
            (ProviderApi::Anthropic, None) => rb.header("anthropic-version", "2023-06-01"),
            (ProviderApi::OpenAi, None) => rb,
        }
    }
}
