//! The demo report as text.

use std::fmt::Write;

use super::report::{DemoReport, PhaseSummary, TargetFigures};

const NOT_AVAILABLE: &str = "not available in this build";

pub fn render(r: &DemoReport, out: &mut String) {
    let _ = writeln!(
        out,
        "\npgpilot demo: {}, a primary and a streaming replica, pgpilot {} in front (transaction pooling)\n",
        r.postgres_version, r.pgpilot_version
    );
    application(r, out);
    throughput(r, out);
    reads_and_cache(r, out);
    pool(r, out);
    advisor(r, out);
    for note in &r.notes {
        let _ = writeln!(out, "Note: {note}");
    }
    let _ = writeln!(
        out,
        "\n{} successful transactions, {} failed{}.",
        thousands(r.workload.transactions),
        thousands(r.workload.failed),
        if r.workload.interrupted { " (interrupted)" } else { "" }
    );
}

fn application(r: &DemoReport, out: &mut String) {
    let a = &r.app;
    let _ = writeln!(
        out,
        "Sample application (scale {}): {} users, {} accounts, {} ledger transactions in {} monthly partitions, \
         {} workflow runs, {} form responses; {} MB",
        a.scale,
        thousands(a.users as u64),
        thousands(a.accounts as u64),
        thousands(a.transactions as u64),
        a.transaction_partitions,
        thousands(a.runs as u64),
        thousands(a.form_responses as u64),
        a.total_bytes / (1 << 20)
    );
    let s = &r.settings;
    let _ = writeln!(
        out,
        "Workload: {}, {} clients, {} protocol, {} alternating round(s) of {:.1} s per target and mix (setup took {:.1} s)\n",
        s.mixes.join(" then "),
        s.clients,
        s.protocol,
        s.rounds,
        s.run_s,
        r.setup_s
    );
}

fn throughput(r: &DemoReport, out: &mut String) {
    let _ = writeln!(
        out,
        "{:<13}{:<16}{:>10}{:>9}{:>9}{:>9}{:>8}",
        "", "", "tps", "p50 ms", "p95 ms", "p99 ms", "failed"
    );
    for phase in &r.workload.phases {
        target_line(out, &phase.mix, "direct", &phase.direct);
        target_line(out, "", "through pgpilot", &phase.pgpilot);
        ratio_line(out, phase);
    }
    out.push('\n');
}

fn target_line(out: &mut String, mix: &str, name: &str, t: &TargetFigures) {
    let l = &t.latency_ms;
    let _ = writeln!(
        out,
        "{mix:<13}{name:<16}{:>10.1}{:>9.2}{:>9.2}{:>9.2}{:>8}",
        t.tps, l.p50, l.p95, l.p99, t.failed
    );
    for e in &t.errors {
        let _ = writeln!(out, "{:<29}error {} ×{}: {}", "", e.sqlstate, e.count, e.example);
    }
}

fn ratio_line(out: &mut String, p: &PhaseSummary) {
    let x = |v: f64| format!("{v:.2}x");
    let _ = writeln!(
        out,
        "{:<13}{:<16}{:>10}{:>9}{:>9}{:>9}",
        "",
        "pgpilot/direct",
        x(p.ratio.tps),
        x(p.ratio.p50),
        x(p.ratio.p95),
        x(p.ratio.p99)
    );
}

fn reads_and_cache(r: &DemoReport, out: &mut String) {
    let reads = &r.replica;
    let line = match (reads.available, &reads.error, reads.reads_replica) {
        (false, _, _) => NOT_AVAILABLE.to_string(),
        (true, Some(e), _) => format!("could not be read: {e}"),
        (true, None, replica) => {
            let replica = replica.unwrap_or(0);
            match (reads.reads_primary, reads.replica_share) {
                (Some(primary), Some(share)) => format!(
                    "{} on the replica, {} on the primary ({:.0}% on the replica)",
                    thousands(replica),
                    thousands(primary),
                    share * 100.0
                ),
                _ => format!("{} on the replica", thousands(replica)),
            }
        }
    };
    let _ = writeln!(out, "Reads through pgpilot:  {line}");
    if reads.replica_share.is_some_and(|share| share < 0.5) {
        // Otherwise the demo seems to show a replica that does not help.
        let _ = writeln!(
            out,
            "                        (read-your-writes keeps a session's reads on the primary until a replica has\n\
             \x20                        replayed its last write; the demo's sessions write several times a second)"
        );
    }
    let c = &r.cache;
    let line = match (c.available, &c.error) {
        (false, _) => NOT_AVAILABLE.to_string(),
        (true, Some(e)) => format!("could not be read: {e}"),
        (true, None) if c.enabled == Some(false) => "off".to_string(),
        (true, None) => format!(
            "hit rate {:.1}% ({} hits, {} misses)",
            c.hit_rate.unwrap_or(0.0) * 100.0,
            thousands(c.hits.unwrap_or(0)),
            thousands(c.misses.unwrap_or(0))
        ),
    };
    let _ = writeln!(out, "Result cache:           {line}");
}

fn pool(r: &DemoReport, out: &mut String) {
    let p = &r.pool;
    let t = &p.totals;
    let waiting = if t.clients_waiting_peak > 0 {
        format!(
            "up to {} clients waited for a server, at most {:.1} ms",
            t.clients_waiting_peak, t.max_wait_ms
        )
    } else {
        "no client had to wait for a server".to_string()
    };
    let _ = writeln!(
        out,
        "Pool ({} mode):        {} clients on at most {} server connections (pool_size {} per server); {waiting}",
        p.pool_mode, p.clients, t.server_connections_peak, p.pool_size,
    );
    for l in &p.pools {
        let _ = writeln!(
            out,
            "{:<24}{} {}: busy {:.0}% on average, {:.0}% at peak; {} transactions",
            "",
            l.role,
            l.server,
            l.utilization_mean * 100.0,
            l.utilization_peak * 100.0,
            thousands(l.transactions)
        );
    }
    out.push('\n');
}

fn advisor(r: &DemoReport, out: &mut String) {
    let a = &r.advisor;
    if let Some(e) = &a.error {
        let _ = writeln!(out, "Advisor: could not run: {e}");
        return;
    }
    let _ = writeln!(
        out,
        "Advisor ({}; {} statements analysed from {} in {:.1} s): {} of the {} indexes the sample application \
         leaves out on purpose were found",
        a.index_method,
        a.statements_analysed,
        sources(&a.workload_sources),
        a.duration_ms as f64 / 1000.0,
        a.planted_missing_indexes_found,
        a.planted_missing_indexes
    );
    for s in &a.index_suggestions {
        let gain = s
            .cost_reduction
            .map(|g| format!("{:.0}% cheaper", g * 100.0))
            .unwrap_or_else(|| "heuristic".into());
        let planted = if s.planted { ", one the demo left out" } else { "" };
        let _ = writeln!(out, "  index    {}  ({gain}{planted})", s.create_statement);
    }
    for f in &a.top_findings {
        let object = f.object.as_deref().map(|o| format!(" ({o})")).unwrap_or_default();
        let _ = writeln!(out, "  {:<8} {}: {}{object}", f.severity, f.category, f.title);
        if let Some(fix) = &f.fix {
            // A long fix (nine ALTER SYSTEM lines) is in the JSON and in `pgpilot advise`; one line here.
            let mut lines = fix.lines().filter(|l| !l.trim().is_empty());
            let first = lines.next().unwrap_or_default();
            let more = lines.count();
            let more = if more > 0 { format!("  (and {more} more lines)") } else { String::new() };
            let _ = writeln!(out, "           fix: {first}{more}");
        }
    }
    if a.findings_total > a.top_findings.len() {
        let _ = writeln!(
            out,
            "  ... and {} more findings: run the demo with --keep, then pgpilot advise --url {}",
            a.findings_total - a.top_findings.len(),
            r.servers.primary.as_ref().map(|p| p.url.as_str()).unwrap_or("postgres://...")
        );
    }
}

/// "pg_stat_statements (56 statements)" → "pg_stat_statements".
fn sources(sources: &[String]) -> String {
    let names: Vec<&str> = sources.iter().map(|s| s.split(" (").next().unwrap_or(s)).collect();
    if names.is_empty() {
        "no workload".into()
    } else {
        names.join(" and ")
    }
}

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let head = match digits.len() % 3 {
        0 => 3,
        h => h,
    };
    let mut out = digits[..head].to_string();
    for group in digits.as_bytes()[head..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
