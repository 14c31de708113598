//! Client contexts, as kubectl has them: named engines (an API address and
//! where its token is), one of them current, kept in
//! `~/.config/george/config.yaml` (`$XDG_CONFIG_HOME/george/config.yaml`;
//! `GEORGE_CLIENT_CONFIG` names another file). The CLI's commands that talk
//! to an engine find it here unless `--server`/`GEORGE_SERVER` and
//! `--token`/`GEORGE_TOKEN` say otherwise.
//!
//! ```yaml
//! currentContext: local
//! contexts:
//!   - name: local
//!     server: http://127.0.0.1:8080
//!     tokenFile: /home/me/project/.george/operator-token
//! ```

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The client's configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfig {
    /// The context commands use when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// Every context.
    #[serde(default)]
    pub contexts: Vec<Context>,
}

/// One engine the CLI can talk to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Context {
    /// Its name.
    pub name: String,
    /// The engine's API address.
    pub server: String,
    /// The file holding the operator token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// Where the client's configuration is.
pub fn path() -> PathBuf {
    if let Some(p) = std::env::var_os("GEORGE_CLIENT_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from(".config"));
    base.join("george").join("config.yaml")
}

impl ClientConfig {
    /// Reads `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let cfg: Self = serde_saphyr::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e} (expected currentContext and contexts: [{{name, server, tokenFile}}])",
                path.display()
            )
        })?;
        if let Some(current) = &cfg.current_context {
            anyhow::ensure!(
                cfg.get(current).is_some(),
                "{}: currentContext `{current}` names no context (known: {})",
                path.display(),
                cfg.names()
            );
        }
        Ok(cfg)
    }

    /// Writes `path` (0600: it says where tokens are), replacing it whole.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let text = serde_saphyr::to_string(self).context("cannot write the client configuration")?;
        let tmp = path.with_extension("yaml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all())?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
    }

    /// The context named `name`.
    pub fn get(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name)
    }

    /// Every context's name, for messages.
    pub fn names(&self) -> String {
        let names: Vec<&str> = self.contexts.iter().map(|c| c.name.as_str()).collect();
        if names.is_empty() {
            "none; add one with `george config set-context`".into()
        } else {
            names.join(", ")
        }
    }

    /// Adds or replaces a context.
    pub fn set(&mut self, context: Context) {
        match self.contexts.iter_mut().find(|c| c.name == context.name) {
            Some(c) => *c = context,
            None => self.contexts.push(context),
        }
    }

    /// The context to use: `name` if given, else the current one.
    pub fn chosen(&self, name: Option<&str>) -> anyhow::Result<Option<&Context>> {
        match name.or(self.current_context.as_deref()) {
            None => Ok(None),
            Some(n) => self
                .get(n)
                .map(Some)
                .ok_or_else(|| anyhow::anyhow!("no context `{n}` in {} (known: {})", path().display(), self.names())),
        }
    }
}

/// A context's name: 1–63 letters, digits, `-`, `_` or `.`.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    anyhow::ensure!(ok, "invalid context name `{name}`: use 1-63 letters, digits, `-`, `_` or `.`");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_round_trip_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("george/config.yaml");
        let mut cfg = ClientConfig::load(&file).unwrap();
        assert_eq!(cfg, ClientConfig::default(), "a missing file is an empty configuration");
        cfg.set(Context { name: "local".into(), server: "http://127.0.0.1:8080".into(), token_file: None });
        cfg.set(Context {
            name: "prod".into(),
            server: "https://george.example".into(),
            token_file: Some("/t".into()),
        });
        cfg.set(Context { name: "local".into(), server: "http://127.0.0.1:9090".into(), token_file: None });
        cfg.current_context = Some("prod".into());
        cfg.save(&file).unwrap();
        let back = ClientConfig::load(&file).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(back.contexts.len(), 2);
        assert_eq!(back.chosen(None).unwrap().unwrap().server, "https://george.example");
        assert_eq!(back.chosen(Some("local")).unwrap().unwrap().server, "http://127.0.0.1:9090");
        assert!(back.chosen(Some("nope")).unwrap_err().to_string().contains("known: local, prod"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

        std::fs::write(&file, "currentContext: gone\ncontexts: []\n").unwrap();
        let e = ClientConfig::load(&file).unwrap_err().to_string();
        assert!(e.contains("config.yaml") && e.contains("currentContext `gone`"), "{e}");
        std::fs::write(&file, "contexts: [{name: x, sever: y}]\n").unwrap();
        let e = ClientConfig::load(&file).unwrap_err().to_string();
        assert!(e.contains("config.yaml") && e.contains("sever"), "{e}");
        assert!(check_name("ok-1.x").is_ok() && check_name("no/slash").is_err() && check_name("").is_err());
    }
}
