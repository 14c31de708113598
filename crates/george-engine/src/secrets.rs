//! Which secrets an agent gets: for each capability the job's template
//! requires, the secrets the AgentSpec lists under that capability — and
//! nothing else. Secrets are read from the secrets directory
//! (`<dir>/<name>`, or `<dir>/<name>/<key>`) and handed to the runtime as
//! files; their content is never logged.

use george_core::manifest::{AgentSpec, TaskTemplate};
use george_runtime::SecretFile;
use std::path::Path;

/// The secret files an agent of `spec` running `template` is entitled to.
/// An error says which secret is missing and where it was looked for.
pub fn entitled(
    spec: &AgentSpec,
    template: Option<&TaskTemplate>,
    dir: Option<&Path>,
) -> Result<Vec<SecretFile>, String> {
    let Some(template) = template else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for cap in &template.spec.required_capabilities {
        for r in spec.spec.secrets.get(cap).into_iter().flatten() {
            let Some(dir) = dir else {
                return Err(format!(
                    "AgentSpec `{}` needs secret `{}` for capability `{cap}`, but no secrets directory is configured (secrets.dir)",
                    spec.metadata.name, r.name
                ));
            };
            let path = match &r.key {
                Some(key) => dir.join(&r.name).join(key),
                None => dir.join(&r.name),
            };
            let content = std::fs::read(&path).map_err(|e| {
                format!("secret `{}` for capability `{cap}` cannot be read from {}: {e}", r.name, path.display())
            })?;
            let name = r.path.clone().unwrap_or_else(|| match &r.key {
                Some(key) => format!("{}-{key}", r.name),
                None => r.name.clone(),
            });
            out.push(SecretFile { name, content });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use george_core::manifest::parse_manifests;

    fn load(text: &str) -> george_core::manifest::Manifest {
        let (ms, errs) = parse_manifests("x.yaml", text);
        assert!(errs.is_empty(), "{errs:?}");
        ms.into_iter().next().unwrap().manifest
    }

    #[test]
    fn only_the_required_capabilities_secrets_are_given() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("git-token"), "tok").unwrap();
        std::fs::create_dir(dir.path().join("jira")).unwrap();
        std::fs::write(dir.path().join("jira/api"), "jira-key").unwrap();
        let george_core::manifest::Manifest::AgentSpec(spec) = load(
            "apiVersion: george/v1\nkind: AgentSpec\nmetadata: {name: a}\nspec:\n  capabilities: [shell, git, jira]\n  secrets:\n    git: [{name: git-token}]\n    jira: [{name: jira, key: api, path: jira.key}]\n",
        ) else {
            panic!()
        };
        let template = |caps: &str| {
            match load(&format!(
            "apiVersion: george/v1\nkind: TaskTemplate\nmetadata: {{name: t}}\nspec:\n  requiredCapabilities: [{caps}]\n  steps: [{{id: s, description: s}}]\n"
        )) {
            george_core::manifest::Manifest::TaskTemplate(t) => t,
            _ => panic!(),
        }
        };
        let git = entitled(&spec, Some(&template("shell, git")), Some(dir.path())).unwrap();
        assert_eq!(git, vec![SecretFile { name: "git-token".into(), content: b"tok".to_vec() }]);
        let jira = entitled(&spec, Some(&template("jira")), Some(dir.path())).unwrap();
        assert_eq!(jira, vec![SecretFile { name: "jira.key".into(), content: b"jira-key".to_vec() }]);
        assert!(entitled(&spec, Some(&template("shell")), Some(dir.path())).unwrap().is_empty());
        let err = entitled(&spec, Some(&template("git")), None).unwrap_err();
        assert!(err.contains("no secrets directory is configured"), "{err}");
        std::fs::remove_file(dir.path().join("git-token")).unwrap();
        let err = entitled(&spec, Some(&template("git")), Some(dir.path())).unwrap_err();
        assert!(err.contains("secret `git-token` for capability `git` cannot be read"), "{err}");
    }
}
