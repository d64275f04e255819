//! The HTML report: one file, inline CSS, nothing fetched from anywhere.

use std::fmt::Write;

use super::{cost_change, size_text};
use crate::report::{Evidence, Report, Severity};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}\
h1{font-size:1.5em}h2{margin-top:2em;border-bottom:1px solid #ddd}\
.critical{border-left:6px solid #c0392b}.warning{border-left:6px solid #e6a100}.info{border-left:6px solid #2a7ab0}\
.finding{padding:.4em .8em;margin:.6em 0;background:#fafafa}.cat{color:#777;font-size:.85em}\
pre{background:#f3f3f3;padding:.5em;overflow-x:auto;white-space:pre-wrap}table{border-collapse:collapse}\
td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;font-size:.9em}.badge{font-weight:bold}\
.proven{color:#1e8449}.heuristic{color:#b9770e}ul{margin:.3em 0}";

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>pgpilot advise: {db}</title>\
         <style>{STYLE}</style></head><body><h1>pgpilot advise: {db}</h1><p>{target} · PostgreSQL {ver} · advised in {dur:.1} s · \
         index method: {method}</p><p>workload: {sources}; {n} statements, {a} analysed, {s} skipped</p>",
        db = esc(&r.database),
        target = esc(&r.target),
        ver = esc(&r.server_version),
        dur = r.duration_ms as f64 / 1000.0,
        method = esc(&r.index_method),
        sources = esc(&r.workload.sources.join(", ")),
        n = r.workload.statements,
        a = r.workload.analysed,
        s = r.workload.skipped.len(),
    );
    if r.standby {
        let _ = write!(out, "<p class=\"warning\"><strong>{}</strong></p>", esc(super::text::STANDBY_BANNER));
    }
    for warning in &r.workload.warnings {
        let _ = write!(out, "<p class=\"warning\"><strong>WARNING:</strong> {}</p>", esc(warning));
    }
    findings(&mut out, r);
    suggestions(&mut out, r);
    rejected(&mut out, r);
    applied(&mut out, r);
    configuration(&mut out, r);
    out.push_str("</body></html>\n");
    out
}

fn findings(out: &mut String, r: &Report) {
    for sev in [Severity::Critical, Severity::Warning, Severity::Info] {
        let group: Vec<_> = r.findings.iter().filter(|f| f.severity == sev).collect();
        if group.is_empty() {
            continue;
        }
        let _ = write!(out, "<h2>{} ({})</h2>", sev.label().to_uppercase(), group.len());
        for f in group {
            let _ = write!(
                out,
                "<div class=\"finding {}\"><span class=\"cat\">{}</span> <b>{}</b><ul>",
                sev.label(),
                f.category.label(),
                esc(&f.title)
            );
            for e in &f.evidence {
                let _ = write!(out, "<li>{}</li>", esc(e));
            }
            out.push_str("</ul>");
            if let Some(fix) = &f.fix {
                let _ = write!(out, "<pre>{}</pre>", esc(fix));
            }
            out.push_str("</div>");
        }
    }
}

fn suggestions(out: &mut String, r: &Report) {
    if !r.index_suggestions.is_empty() {
        let _ = write!(out, "<h2>Index suggestions ({})</h2>", r.index_suggestions.len());
        for s in &r.index_suggestions {
            let (class, label) = match s.evidence {
                Evidence::Hypothetical => ("proven", "proven with hypopg"),
                Evidence::Heuristic => ("heuristic", "HEURISTIC (not proven)"),
            };
            let _ = write!(
                out,
                "<div class=\"finding warning\"><pre>{};</pre><span class=\"badge {class}\">{label}</span> · {} · {} · {}<ul>",
                esc(&s.create_statement),
                esc(&s.kind),
                esc(&size_text(s)),
                esc(&cost_change(s))
            );
            for h in &s.statements {
                let after = h.cost_after.map(|a| format!(" → {a:.0}")).unwrap_or_default();
                let _ = write!(
                    out,
                    "<li>{}× <code>{}</code> (cost {:.0}{after})</li>",
                    h.calls,
                    esc(&h.query),
                    h.cost_before
                );
            }
            let _ = write!(
                out,
                "</ul><p class=\"cat\">writes: {}<br>{}</p></div>",
                esc(&s.write_overhead.summary),
                esc(&s.rationale)
            );
        }
    }
}

/// The candidates a plan used that fell short, and those hypopg could not create (the JSON has all).
fn rejected(out: &mut String, r: &Report) {
    let worth: Vec<_> = r.rejected_candidates.iter().filter(|c| c.worth_showing()).collect();
    if worth.is_empty() {
        return;
    }
    let _ = write!(out, "<h2>Candidates not suggested ({})</h2><ul>", worth.len());
    for c in worth {
        let _ = write!(out, "<li><code>{}</code>: {}</li>", esc(&c.index), esc(&c.reason));
    }
    out.push_str("</ul>");
}

fn applied(out: &mut String, r: &Report) {
    if r.applied.is_empty() {
        return;
    }
    out.push_str("<h2>Applied</h2><table><tr><th>index</th><th>statement</th><th>before</th><th>after</th><th>cost</th></tr>");
    for a in &r.applied {
        if let Some(why) = &a.skipped {
            let _ = write!(
                out,
                "<tr><td>{}</td><td colspan=\"4\">skipped: {}</td></tr>",
                esc(&a.create_statement),
                esc(why)
            );
        } else if !a.created {
            let _ = write!(
                out,
                "<tr><td>{}</td><td colspan=\"4\">failed: {}</td></tr>",
                esc(&a.create_statement),
                esc(a.error.as_deref().unwrap_or("?"))
            );
        }
        if let Some(drop) = &a.left_behind {
            let _ = write!(
                out,
                "<tr><td colspan=\"5\"><strong>the failed build left an INVALID index that could not be \
                 dropped{}: run <code>{}</code></strong></td></tr>",
                esc(a.left_behind_cost()),
                esc(drop)
            );
        }
        for m in &a.measurements {
            let ms = |v: Option<f64>| v.map(|x| format!("{x:.2} ms")).unwrap_or_else(|| "—".into());
            let _ = write!(
                out,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{:.0} → {:.0}</td></tr>",
                esc(&a.create_statement),
                esc(&m.query),
                ms(m.before_ms),
                ms(m.after_ms),
                m.cost_before,
                m.cost_after
            );
        }
    }
    out.push_str("</table>");
}

fn configuration(out: &mut String, r: &Report) {
    if !r.settings.is_empty() {
        out.push_str("<h2>Configuration</h2><table><tr><th>setting</th><th>current</th><th>recommended</th><th>applies on</th></tr>");
        for s in &r.settings {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&s.name),
                esc(&s.current),
                esc(&s.recommended),
                if s.restart { "restart" } else { "reload" }
            );
        }
        out.push_str("</table>");
    }
    if let Some(pool) = &r.pool {
        let _ = write!(
            out,
            "<h2>Pool sizing</h2><p><b>{} per instance</b> ({} in total)</p><ul>",
            pool.per_instance, pool.total
        );
        for e in &pool.explanation {
            let _ = write!(out, "<li>{}</li>", esc(e));
        }
        out.push_str("</ul>");
    }
    if !r.notes.is_empty() {
        out.push_str("<h2>Notes</h2><ul>");
        for n in &r.notes {
            let _ = write!(out, "<li>{}</li>", esc(n));
        }
        out.push_str("</ul>");
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
