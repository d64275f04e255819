//! Rendering a report for people: a terminal report and a self-contained HTML file.

mod html;
mod printable;
mod text;

pub use text::TextOptions;

use crate::report::{IndexSuggestion, Report};
use crate::units::bytes;

impl Report {
    /// The terminal report, grouped by severity, with ANSI colour when `colour` is true.
    pub fn render_text(&self, colour: bool) -> String {
        text::render(self, &TextOptions { colour, top: None })
    }

    /// The terminal report limited to the `top` most important findings and suggestions.
    pub fn render_text_with(&self, options: &TextOptions) -> String {
        text::render(self, options)
    }

    /// One self-contained HTML page (inline CSS, no external resources).
    pub fn render_html(&self) -> String {
        html::render(self)
    }
}

/// "cost 1094 → 39 (−96%)", or "not proven" for heuristics.
pub(crate) fn cost_change(s: &IndexSuggestion) -> String {
    match (s.weighted_cost_after, s.improvement()) {
        (Some(after), Some(imp)) => {
            format!("weighted cost {:.0} → {:.0} (−{:.0}%)", s.weighted_cost_before, after, imp * 100.0)
        }
        _ => format!("weighted cost {:.0} now; not proven", s.weighted_cost_before),
    }
}

pub(crate) fn size_text(s: &IndexSuggestion) -> String {
    s.estimated_size_bytes.map(|b| format!("~{}", bytes(b))).unwrap_or_else(|| "size unknown".into())
}

/// Whether colour should be used on standard output: a terminal, and NO_COLOR not set.
pub fn stdout_wants_colour() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}
