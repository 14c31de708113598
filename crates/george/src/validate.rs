//! `george validate PATH`: every problem in a folder of manifests, each with
//! its file, line:column, field and what was expected.

use crate::cli::Format;
use george_core::manifest::{parse_manifests, Diagnostic};
use std::path::Path;

/// Validates `path`; returns the exit code.
pub fn run(path: &Path, format: Format) -> i32 {
    let result = if path.is_file() {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let (ms, ds) = parse_manifests(&name, &text);
                Ok((ms, ds))
            }
            Err(e) => Err(format!("cannot read {name}: {e}")),
        }
    } else {
        george_sources::read_manifest_dir(path, "").map_err(|e| e.to_string())
    };
    let (manifests, mut problems) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let count = manifests.len();
    let mut jobs = 0;
    if problems.is_empty() {
        match george_core::validate::validate_set(manifests) {
            Ok(set) => jobs = set.jobs.len(),
            Err(d) => problems = d,
        }
    }
    match format {
        Format::Json | Format::Yaml => {
            let out =
                serde_json::json!({"valid": problems.is_empty(), "manifests": count, "jobs": jobs, "errors": problems});
            crate::output::render(format, &out, |_| {});
        }
        Format::Table | Format::Wide | Format::Name => {
            for d in &problems {
                eprintln!("{}", render(d));
            }
            if problems.is_empty() {
                println!("ok: {count} manifests, {jobs} jobs in {}", path.display());
            } else {
                eprintln!(
                    "{} error{} in {}",
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" },
                    path.display()
                );
            }
        }
    }
    i32::from(!problems.is_empty())
}

fn render(d: &Diagnostic) -> String {
    format!("error: {d}")
}
