//! Printing results: readable tables by default, JSON with `-o json`, YAML
//! with `-o yaml`.

use crate::cli::Format;
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use serde::Serialize;

/// Prints `value` as JSON or YAML, or as the table `table` builds.
pub fn print<T: Serialize>(format: Format, value: &T, table: impl FnOnce(&T) -> Table) {
    render(format, value, |v| println!("{}", table(v)));
}

/// Prints `value` as JSON or YAML, or runs `text` for the table format.
pub fn render<T: Serialize>(format: Format, value: &T, text: impl FnOnce(&T)) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value).unwrap_or_default()),
        Format::Yaml => match serde_saphyr::to_string(value) {
            Ok(y) => print!("{y}"),
            Err(e) => eprintln!("error: cannot print YAML: {e}"),
        },
        Format::Table => text(value),
    }
}

/// A table with a header row.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY).set_header(header.to_vec());
    t
}

/// A timestamp as a short age ("12s ago").
pub fn ago(t: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (chrono::Utc::now() - t).num_seconds().max(0) as u64;
    let d = std::time::Duration::from_secs(secs);
    if secs < 1 {
        "now".into()
    } else {
        format!("{} ago", humantime::format_duration(d).to_string().split(' ').next().unwrap_or(""))
    }
}
