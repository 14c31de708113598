//! Decoding one YAML document into a typed value, with the error located:
//! line and column (from serde-saphyr) and field path (from
//! serde_path_to_error). Manifests and the configuration file both use it.

use serde::de::DeserializeOwned;

/// Why a document did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    /// 1-based line, when known.
    pub line: Option<u64>,
    /// 1-based column, when known.
    pub column: Option<u64>,
    /// Field path, e.g. `spec.steps[0].run` (empty for the whole document).
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Decodes `text` (one YAML document) into `T`.
pub fn from_yaml<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    let mut field = String::new();
    let result = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
            field = e.path().to_string();
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let mut opts = serde_saphyr::RenderOptions::default();
        opts.snippets = serde_saphyr::SnippetMode::Off;
        let rendered = e.render_with_options(opts);
        // serde-saphyr appends " at line L, column C"; the position is reported separately.
        let message = match rendered.rfind(" at line ") {
            Some(i) => rendered[..i].to_string(),
            None => rendered,
        };
        // Advice meant for programmers using the library, not for people writing YAML.
        let message = message.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
        let location = e.location();
        YamlError {
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            field: if field == "." || field == "?" { String::new() } else { field },
            message,
        }
    })
}
