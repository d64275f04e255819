//! The demo report as text.

use std::fmt::Write;

use super::report::{DemoReport, PhaseSummary, TargetFigures};

const NOT_AVAILABLE: &str = "not available in this build";

/// Where the values of the labelled lines (reads, cache, pool) start.
const VALUE_COLUMN: usize = 26;

/// Below these, per target and mix, tail latencies rest on a few transactions and their ratios
/// swing from one run to the next (0.14x, then 2.21x).
const STEADY_MEASURED_S: f64 = 8.0;
const STEADY_TRANSACTIONS: u64 = 2_000;

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
        "Workload: {}, {}, {} protocol, {} of {:.1} s per target and mix (setup took {:.1} s)\n",
        s.mixes.join(" then "),
        counted(s.clients as u64, "client"),
        s.protocol,
        counted(s.rounds as u64, "alternating round"),
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
    short_run_caveat(r, out);
    out.push('\n');
}

/// A short demo still prints ratios; it must not pass them off as steady.
fn short_run_caveat(r: &DemoReport, out: &mut String) {
    let measured_s = r.settings.run_s * r.settings.rounds as f64;
    let fewest = r.workload.phases.iter().flat_map(|p| [p.direct.transactions, p.pgpilot.transactions]).min();
    let Some(fewest) = fewest else { return };
    if measured_s >= STEADY_MEASURED_S && fewest >= STEADY_TRANSACTIONS {
        return;
    }
    let _ = writeln!(
        out,
        "(a short measurement: {measured_s:.1} s per target and mix, as few as {} transactions. p95 and p99\n \
         rest on a handful of slow transactions, and their ratios can swing widely from one run to the next;\n \
         a longer --duration gives steadier figures)",
        thousands(fewest)
    );
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
    labelled(out, "Reads through pgpilot:", &line);
    if reads.replica_share.is_some_and(|share| share < 0.5) {
        // Otherwise the demo seems to show a replica that does not help.
        labelled(out, "", "(read-your-writes keeps a session's reads on the primary until a replica has");
        labelled(out, "", " replayed its last write; the demo's sessions write several times a second)");
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
    labelled(out, "Result cache:", &line);
}

fn pool(r: &DemoReport, out: &mut String) {
    let p = &r.pool;
    let t = &p.totals;
    let waiting = if t.clients_waiting_peak > 0 {
        format!(
            "up to {} waited for a server, at most {:.1} ms",
            counted(t.clients_waiting_peak, "client"),
            t.max_wait_ms
        )
    } else {
        "no client had to wait for a server".to_string()
    };
    let line = format!(
        "{} on at most {} (pool_size {} per server); {waiting}",
        counted(p.clients as u64, "client"),
        counted(t.server_connections_peak, "server connection"),
        p.pool_size,
    );
    labelled(out, &format!("Pool ({} mode):", p.pool_mode), &line);
    for l in &p.pools {
        let _ = writeln!(
            out,
            "{:<VALUE_COLUMN$}{} {}: busy {:.0}% on average, {:.0}% at peak; {} transactions",
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
            let more = if more > 0 {
                format!("  (and {})", counted(more as u64, "more line"))
            } else {
                String::new()
            };
            let _ = writeln!(out, "           fix: {first}{more}");
        }
    }
    if a.findings_total > a.top_findings.len() {
        let url = r.servers.primary.as_ref().map(|p| p.url.as_str()).unwrap_or("postgres://...");
        // Under --keep the servers are still up: the command works as it stands.
        let how = if r.settings.keep { "" } else { "run the demo with --keep, then " };
        let _ = writeln!(
            out,
            "  ... and {}: {how}pgpilot advise --url {url}",
            counted((a.findings_total - a.top_findings.len()) as u64, "more finding"),
        );
    }
}

/// A label and its value, the value at [`VALUE_COLUMN`] however long the label.
fn labelled(out: &mut String, label: &str, value: &str) {
    let _ = writeln!(out, "{label:<width$} {value}", width = VALUE_COLUMN - 1);
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

/// 1 → "1 client", 16 → "16 clients" (`noun` is the singular; these nouns take an s).
pub fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", thousands(n))
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
    use pgpilot_bench::demo_app::Stats;

    use super::super::advisor::{AdvisorSummary, FindingLine};
    use super::super::gateway_stats::{CacheUse, PoolTotals, ReadSplit};
    use super::super::report::{
        DemoReport, PhaseSummary, PoolSummary, Settings, TargetFigures, WorkloadSummary,
    };
    use super::super::stack::{ServerInfo, StackInfo};
    use super::{counted, thousands, VALUE_COLUMN};

    const PRIMARY_URL: &str = "postgres://postgres@127.0.0.1:5555/demo";

    /// A report with nothing measured but what the tests look at.
    fn report(clients: usize, keep: bool) -> DemoReport {
        let settings = Settings {
            duration_s: 4.0,
            scale: 0.1,
            clients,
            rounds: 1,
            run_s: 1.0,
            protocol: "extended".into(),
            mixes: vec!["read-heavy".into()],
            keep,
        };
        let app = Stats {
            scale: 0.1,
            users: 1,
            accounts: 1,
            categories: 1,
            transactions: 1,
            transaction_partitions: 1,
            budgets: 1,
            workflows: 1,
            runs: 1,
            runs_pending: 0,
            runs_running: 0,
            runs_done: 1,
            runs_failed: 0,
            form_responses: 1,
            total_bytes: 1 << 20,
        };
        let primary = ServerInfo { url: PRIMARY_URL.into(), port: 5555, dir: "/tmp/x".into(), pid: None };
        let servers = StackInfo { primary: Some(primary), replica: None, redis: None, pgpilot: None };
        let totals = PoolTotals { server_connections_peak: 1, clients_waiting_peak: 1, ..Default::default() };
        DemoReport {
            pgpilot_version: "0",
            postgres_version: "PostgreSQL 15".into(),
            settings,
            servers,
            app,
            setup_s: 1.0,
            workload: WorkloadSummary { transactions: 10, failed: 0, phases: vec![], interrupted: false },
            replica: ReadSplit::default(),
            cache: CacheUse::default(),
            pool: PoolSummary { pool_mode: "transaction", pool_size: 8, clients, totals, pools: vec![] },
            advisor: AdvisorSummary { findings_total: 1, ..Default::default() },
            notes: vec![],
        }
    }

    #[test]
    fn one_client_is_not_clients() {
        let text = report(1, false).render_text();
        assert!(text.contains("read-heavy, 1 client, extended protocol, 1 alternating round of"), "{text}");
        assert!(text.contains("1 client on at most 1 server connection (pool_size 8"), "{text}");
        assert!(text.contains("up to 1 client waited"), "{text}");
        assert!(text.contains("... and 1 more finding:"), "{text}");
        assert!(!text.contains("1 clients") && !text.contains("round(s)"), "{text}");
        let many = report(16, false).render_text();
        assert!(many.contains("16 clients on at most 1 server connection"), "{many}");
    }

    #[test]
    fn under_keep_the_advise_command_is_given_as_it_stands() {
        let kept = report(1, true).render_text();
        assert!(kept.contains(&format!("more finding: pgpilot advise --url {PRIMARY_URL}")), "{kept}");
        assert!(!kept.contains("with --keep"), "{kept}");
        let not_kept = report(1, false).render_text();
        assert!(not_kept.contains("run the demo with --keep, then pgpilot advise --url"), "{not_kept}");
    }

    #[test]
    fn labelled_values_start_in_one_column() {
        let text = report(16, false).render_text();
        for label in ["Reads through pgpilot:", "Result cache:", "Pool (transaction mode):"] {
            let line =
                text.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("{label}\n{text}"));
            let (padding, value) = line.split_at(VALUE_COLUMN);
            assert!(padding.ends_with(' ') && !value.starts_with(' '), "{label}: {line:?}\n{text}");
        }
    }

    #[test]
    fn a_fix_of_two_lines_has_one_more_line() {
        let mut r = report(1, false);
        let finding = |fix: &str| FindingLine {
            severity: "warning".into(),
            category: "config".into(),
            title: "t".into(),
            object: None,
            fix: Some(fix.into()),
        };
        r.advisor.top_findings = vec![finding("ALTER SYSTEM a;\nALTER SYSTEM b;"), finding("a;\nb;\nc;")];
        r.advisor.findings_total = 2;
        let text = r.render_text();
        assert!(text.contains("fix: ALTER SYSTEM a;  (and 1 more line)\n"), "{text}");
        assert!(text.contains("fix: a;  (and 2 more lines)\n"), "{text}");
    }

    #[test]
    fn ratios_of_a_short_measurement_carry_a_caveat() {
        let phase = |transactions| {
            let figures = TargetFigures { tps: 10.0, transactions, ..Default::default() };
            PhaseSummary {
                mix: "read-heavy".into(),
                direct: figures.clone(),
                pgpilot: figures,
                ratio: Default::default(),
            }
        };
        let with = |run_s: f64, rounds: usize, transactions: u64| {
            let mut r = report(4, false);
            (r.settings.run_s, r.settings.rounds) = (run_s, rounds);
            r.workload.phases = vec![phase(transactions)];
            r.render_text()
        };
        let caveat = "a short measurement";
        let short = with(1.0, 1, 50_000);
        assert!(
            short.contains("(a short measurement: 1.0 s per target and mix, as few as 50,000"),
            "{short}"
        );
        assert!(with(5.0, 2, 300).contains(caveat), "few transactions");
        let steady = with(5.0, 2, 50_000);
        assert!(!steady.contains(caveat), "{steady}");
    }

    #[test]
    fn counts_take_their_plural() {
        assert_eq!(counted(0, "client"), "0 clients");
        assert_eq!(counted(1, "client"), "1 client");
        assert_eq!(counted(1500, "client"), "1,500 clients");
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
