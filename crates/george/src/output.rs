//! Printing results: readable tables by default, JSON with `-o json`, YAML
//! with `-o yaml`.

use crate::cli::Format;
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use serde::Serialize;
use std::sync::OnceLock;

/// How tables are drawn, set once from the command line.
#[derive(Debug, Default, Clone, Copy)]
struct Style {
    /// `-o wide`: every cell whole, no fitting to the terminal.
    wide: bool,
    /// `-o name`: lists as `kind/name` lines.
    names: bool,
    /// `--no-headers`.
    no_headers: bool,
}

static STYLE: OnceLock<Style> = OnceLock::new();

fn style() -> Style {
    STYLE.get().copied().unwrap_or_default()
}

/// Whether lists print as `kind/name` lines (`-o name`).
pub fn names() -> bool {
    style().names
}

/// Whether tables show every column (`-o wide`).
pub fn wide() -> bool {
    style().wide
}

/// Takes the command line's output options; returns the format commands
/// switch on (`wide` and `name` are tables to them: [`print_list`] and the
/// table helpers draw the difference).
pub fn configure(format: Format, no_headers: bool) -> Format {
    let _ = STYLE.set(Style { wide: format == Format::Wide, names: format == Format::Name, no_headers });
    match format {
        Format::Wide | Format::Name => Format::Table,
        other => other,
    }
}

/// Prints `value` as JSON or YAML, or as the table `table` builds.
pub fn print<T: Serialize>(format: Format, value: &T, table: impl FnOnce(&T) -> Table) {
    render(format, value, |v| println!("{}", fit(table(v), false)));
}

/// Prints `value` as JSON or YAML, or runs `text` for the table format.
pub fn render<T: Serialize>(format: Format, value: &T, text: impl FnOnce(&T)) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value).unwrap_or_default()),
        Format::Yaml => match serde_saphyr::to_string(value) {
            Ok(y) => print!("{y}"),
            Err(e) => eprintln!("error: cannot print YAML: {e}"),
        },
        Format::Table | Format::Wide | Format::Name => text(value),
    }
}

/// Prints a list as JSON or YAML, as `kind/name` lines (`-o name`: `name`
/// gives each one's), or as the table `table` builds — or, when the list is
/// empty, one line saying so (`No jobs found.`), not an empty table.
pub fn print_list<T: Serialize>(
    format: Format,
    items: &[T],
    noun: &str,
    name: impl Fn(&T) -> String,
    table: impl FnOnce(&[T]) -> Table,
) {
    render(format, &items, |items| {
        if style().names {
            items.iter().for_each(|i| println!("{}", name(i)));
        } else if items.is_empty() {
            println!("No {noun} found.");
        } else {
            println!("{}", fit(table(items), true));
        }
    });
}

/// A table as wide as the terminal at most (`COLUMNS`, else the terminal
/// on standard output; output to a pipe or file is not cut). A list's rows
/// are one line each (`one_line`): a cell too long for its column ends with
/// `…`; other tables wrap long cells. `-o wide`: every cell whole.
fn fit(mut t: Table, one_line: bool) -> Table {
    let Some(width) = terminal_width().filter(|_| !style().wide) else { return t };
    t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    t.set_width(width);
    if one_line {
        t.set_truncation_indicator("…");
        for row in t.row_iter_mut() {
            row.max_height(1);
        }
        if let Some(mut header) = t.header().cloned() {
            header.max_height(1);
            t.set_header(header);
        }
    }
    t
}

/// The width tables fit in: `COLUMNS` when set (as `ls` reads it), else the terminal's.
fn terminal_width() -> Option<u16> {
    match std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<u16>().ok()) {
        Some(w) if w > 0 => Some(w),
        _ => terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| w.0),
    }
}

/// A cell's text: its first line, with `…` when there was more (`-o wide`: all of it).
pub fn first_line(text: &str) -> String {
    match text.split_once('\n') {
        Some((first, _)) if !style().wide => format!("{}…", first.trim_end()),
        _ => text.to_string(),
    }
}

/// A table with a header row.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    if !style().no_headers {
        t.set_header(header.to_vec());
    }
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
