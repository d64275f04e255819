//! The terminal report.

use std::fmt::Write;

use super::printable::{printable as shown, printable_lines};
use super::{cost_change, size_text};
use crate::report::{Evidence, Finding, Report, Severity};
use crate::units::{duration, one_line};

#[derive(Debug, Clone, Copy, Default)]
pub struct TextOptions {
    pub colour: bool,
    /// Show only this many findings and index suggestions (most important first).
    pub top: Option<usize>,
}

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn bold(&self, s: &str) -> String {
        self.wrap("1", s)
    }
    fn dim(&self, s: &str) -> String {
        self.wrap("2", s)
    }
    fn severity(&self, sev: Severity, s: &str) -> String {
        match sev {
            Severity::Critical => self.wrap("1;31", s),
            Severity::Warning => self.wrap("1;33", s),
            Severity::Info => self.wrap("1;36", s),
        }
    }
}

/// Above the findings: every fix that writes must go to another server.
pub const STANDBY_BANNER: &str =
    "STANDBY: this server is a read-only hot standby; fixes that write are to be run on the primary";

pub fn render(report: &Report, options: &TextOptions) -> String {
    let p = Paint { on: options.colour };
    let mut out = String::new();
    header(&mut out, report, &p);
    findings(&mut out, report, options, &p);
    suggestions(&mut out, report, options, &p);
    rejected(&mut out, report, &p);
    applied(&mut out, report, &p);
    settings(&mut out, report, &p);
    if let Some(pool) = &report.pool {
        let _ = writeln!(out, "\n{}", p.bold("POOL SIZING"));
        let _ = writeln!(
            out,
            "  {} connections per application instance ({} in total)",
            pool.per_instance, pool.total
        );
        for line in &pool.explanation {
            let _ = writeln!(out, "  {}", p.dim(&shown(line)));
        }
        let _ = writeln!(out, "  {}", p.dim(&format!("load: {}", shown(&pool.target_source))));
    }
    if !report.notes.is_empty() {
        let _ = writeln!(out, "\n{}", p.bold("NOTES"));
        for n in &report.notes {
            let _ = writeln!(out, "  - {}", shown(n));
        }
    }
    out
}

fn header(out: &mut String, r: &Report, p: &Paint) {
    let (c, w, i) = r.counts();
    let title = format!("pgpilot advise: {} ({})", shown(&r.database), shown(&r.target));
    let _ = writeln!(out, "{}", p.bold(&title));
    let _ = writeln!(
        out,
        "PostgreSQL {}, advised in {:.1} s",
        shown(&r.server_version),
        r.duration_ms as f64 / 1000.0
    );
    let sources =
        if r.workload.sources.is_empty() { "none".to_string() } else { r.workload.sources.join(", ") };
    let _ = writeln!(
        out,
        "workload: {}; {} distinct statements, {} analysed, {} skipped; index method: {}",
        shown(&sources),
        r.workload.statements,
        r.workload.analysed,
        r.workload.skipped.len(),
        shown(&r.index_method)
    );
    if r.standby {
        let _ = writeln!(out, "{}", p.severity(Severity::Warning, STANDBY_BANNER));
    }
    for warning in &r.workload.warnings {
        let _ = writeln!(out, "{}", p.severity(Severity::Warning, &format!("WARNING: {}", shown(warning))));
    }
    let _ = writeln!(
        out,
        "{} critical, {} warning, {} info, {} index suggestion(s)",
        p.severity(Severity::Critical, &c.to_string()),
        p.severity(Severity::Warning, &w.to_string()),
        p.severity(Severity::Info, &i.to_string()),
        r.index_suggestions.len()
    );
}

fn findings(out: &mut String, r: &Report, options: &TextOptions, p: &Paint) {
    let listed: Vec<&Finding> = match options.top {
        Some(n) => r.top_findings(n),
        None => r.findings.iter().collect(),
    };
    for sev in [Severity::Critical, Severity::Warning, Severity::Info] {
        let group: Vec<&&Finding> = listed.iter().filter(|f| f.severity == sev).collect();
        if group.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n{}",
            p.severity(sev, &format!("{} ({})", sev.label().to_uppercase(), group.len()))
        );
        for f in group {
            let _ = writeln!(
                out,
                "  {} {}",
                p.dim(&format!("[{}]", f.category.label())),
                p.bold(&shown(&f.title))
            );
            for e in &f.evidence {
                let _ = writeln!(out, "      {}", shown(e));
            }
            if let Some(fix) = &f.fix {
                let lines = printable_lines(fix);
                let mut lines = lines.iter();
                if let Some(first) = lines.next() {
                    let _ = writeln!(out, "      {} {first}", p.severity(Severity::Info, "fix:"));
                }
                for l in lines {
                    let _ = writeln!(out, "           {l}");
                }
            }
        }
    }
}

fn suggestions(out: &mut String, r: &Report, options: &TextOptions, p: &Paint) {
    if r.index_suggestions.is_empty() {
        return;
    }
    let limit = options.top.unwrap_or(usize::MAX);
    let total = r.index_suggestions.len();
    let count = if limit < total { format!("{limit} of {total}") } else { total.to_string() };
    let _ = writeln!(out, "\n{}", p.bold(&format!("INDEX SUGGESTIONS ({count})")));
    for (n, s) in r.index_suggestions.iter().take(limit).enumerate() {
        let costs_hot = s.write_overhead.updates_losing_hot > 0;
        let label = match (s.evidence, costs_hot) {
            (Evidence::Hypothetical, false) => p.wrap("32", "proven (hypopg)"),
            // Proven faster for its reads, but not a clear win: see its writes.
            (Evidence::Hypothetical, true) => {
                p.severity(Severity::Warning, "proven (hypopg), costs HOT updates")
            }
            (Evidence::Heuristic, _) => p.severity(Severity::Warning, "HEURISTIC"),
        };
        let _ = writeln!(out, "  {}. {}", n + 1, p.bold(&format!("{};", shown(&s.create_statement))));
        let _ = writeln!(out, "     {label} · {} · {} · {}", shown(&s.kind), size_text(s), cost_change(s));
        for h in s.statements.iter().take(5) {
            let after = h.cost_after.map(|a| format!(" → {a:.0}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "     helps {}× {} (cost {:.0}{after})",
                h.calls,
                shown(&one_line(&h.query, 90)),
                h.cost_before
            );
        }
        if s.statements.len() > 5 {
            let _ = writeln!(out, "     … and {} more statements", s.statements.len() - 5);
        }
        let writes = format!("writes: {}", shown(&s.write_overhead.summary));
        let writes = if costs_hot { p.severity(Severity::Warning, &writes) } else { p.dim(&writes) };
        let _ = writeln!(out, "     {writes}");
        // A statement without CONCURRENTLY is a partitioned table's: the rationale says how to
        // build it without blocking writes. On a standby it says where to create it; for an
        // expression index, that the planner judged it with default estimates.
        let says_more = s.evidence == Evidence::Heuristic
            || !s.create_statement.contains(" CONCURRENTLY ")
            || r.standby
            || s.kind.contains("expression");
        if says_more {
            let _ = writeln!(out, "     {}", p.dim(&shown(&s.rationale)));
        }
    }
}

/// Candidates a plan used that fell short, and those hypopg could not create, one line each (the
/// JSON has them all): a DBA who expected an index sees why it is not suggested.
fn rejected(out: &mut String, r: &Report, p: &Paint) {
    const SHOWN: usize = 5;
    let worth: Vec<_> = r.rejected_candidates.iter().filter(|c| c.worth_showing()).collect();
    if worth.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", p.bold(&format!("CANDIDATES NOT SUGGESTED ({})", worth.len())));
    for c in worth.iter().take(SHOWN) {
        let _ = writeln!(out, "  {}", shown(&c.index));
        let _ = writeln!(out, "     {}", p.dim(&shown(&c.reason)));
    }
    if worth.len() > SHOWN {
        let _ = writeln!(out, "  … and {} more (see the JSON report)", worth.len() - SHOWN);
    }
}

fn applied(out: &mut String, r: &Report, p: &Paint) {
    if r.applied.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", p.bold("APPLIED"));
    for a in &r.applied {
        let status = if a.created {
            p.wrap("32", &format!("created in {}", duration(a.elapsed_ms as f64 / 1000.0)))
        } else if let Some(why) = &a.skipped {
            format!("skipped: {}", shown(why))
        } else {
            p.severity(Severity::Critical, &format!("failed: {}", shown(a.error.as_deref().unwrap_or("?"))))
        };
        let _ = writeln!(out, "  {} ({status})", shown(&a.create_statement));
        if let Some(drop) = &a.left_behind {
            let warning = format!(
                "the failed build left an INVALID index that could not be dropped{}: run\n         {}",
                a.left_behind_cost(),
                shown(drop)
            );
            let _ = writeln!(out, "     {}", p.severity(Severity::Critical, &warning));
        }
        for m in &a.measurements {
            let time = match (m.before_ms, m.after_ms) {
                (Some(b), Some(a)) => format!("{b:.2} ms → {a:.2} ms ({:.1}× faster)", b / a.max(0.001)),
                _ => "not timed".to_string(),
            };
            let _ = writeln!(
                out,
                "     {}: {time}; cost {:.0} → {:.0}",
                shown(&one_line(&m.query, 70)),
                m.cost_before,
                m.cost_after
            );
            let _ = writeln!(out, "       {}", p.dim(&shown(&m.note)));
        }
    }
}

fn settings(out: &mut String, r: &Report, p: &Paint) {
    if r.settings.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", p.bold("CONFIGURATION"));
    let rows: Vec<[String; 4]> = r
        .settings
        .iter()
        .map(|s| {
            [
                shown(&s.name).into_owned(),
                shown(&s.current).into_owned(),
                shown(&s.recommended).into_owned(),
                if s.restart { "restart".into() } else { "reload".into() },
            ]
        })
        .collect();
    let header = ["setting".to_string(), "current".into(), "recommended".into(), "applies on".into()];
    let widths: Vec<usize> =
        (0..4).map(|i| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0)).collect();
    let line = |cells: &[String; 4]| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ")
    };
    let _ = writeln!(out, "  {}", p.dim(&line(&header)));
    for row in &rows {
        let _ = writeln!(out, "  {}", line(row));
    }
}
