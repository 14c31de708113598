//! Servers that stand in for what cannot run on a CI machine, faithful to
//! the public API docs and driven through George's production clients:
//! Jira Cloud ([`jira`]), a Kubernetes API server with a kubelet
//! ([`kube_api`]), LLM providers ([`llm`]), a forge ([`forge`]), git over
//! smart HTTP ([`git_http`]), and an inbox for Slack-style webhooks ([`inbox`]).

pub mod forge;
pub mod git_http;
pub mod github;
pub mod inbox;
pub mod jira;
pub mod kube_api;
pub mod llm;
pub mod otlp;
pub mod slack;

use base64::Engine as _;

/// Decodes standard base64 (as in `Authorization: Basic`); invalid input gives "".
pub fn decode_base64(text: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}
