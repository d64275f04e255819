//! The text form of a report.

use std::fmt::Write;

use crate::config::Limit;
use crate::report::BenchReport;

pub(crate) fn text(r: &BenchReport) -> String {
    let mut out = String::new();
    let limit = match r.limit {
        Limit::Duration(d) => format!("{} s", trim(d.as_secs_f64())),
        Limit::TransactionsPerClient(n) => format!("{n} transactions per client"),
    };
    let mut shape = format!("{} clients, {} jobs, {} protocol, {limit}", r.clients, r.jobs, r.protocol);
    if r.rounds > 1 {
        let _ = write!(shape, " x {} rounds", r.rounds);
    }
    if r.connect_per_transaction {
        shape.push_str(", new connection per transaction");
    }
    if let Some(rate) = r.rate {
        let _ = write!(shape, ", rate limit {} tps", trim(rate));
    }
    let _ = writeln!(out, "workload: {}\n{shape}", r.workload);
    if r.interrupted {
        out.push_str("(interrupted: figures cover the time measured before the stop)\n");
    }
    if let Some(why) = &r.aborted {
        let _ = writeln!(out, "(aborted: {why}; the results are incomplete)");
    }
    let name_w = r.targets.iter().map(|t| t.target.name.len()).max().unwrap_or(6).max(6);
    let _ = writeln!(
        out,
        "\n{:<name_w$} {:>10} {:>10} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "target", "tps", "txns", "failed", "p50 ms", "p90", "p95", "p99", "p99.9", "max"
    );
    for t in &r.targets {
        if !t.measured {
            let _ = writeln!(
                out,
                "{:<name_w$} not measured: the benchmark stopped before its turn",
                t.target.name
            );
            continue;
        }
        let l = &t.latency_ms;
        let _ = writeln!(
            out,
            "{:<name_w$} {:>10.1} {:>10} {:>7} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>9.3}",
            t.target.name, t.tps, t.transactions, t.failed, l.p50, l.p90, l.p95, l.p99, l.p99_9, l.max
        );
    }
    if r.rounds > 1 {
        out.push_str("\ntps per round (median is reported):\n");
        for t in &r.targets {
            let rounds: String = t.tps_per_round.iter().map(|v| format!(" {v:>10.1}")).collect();
            let _ = writeln!(out, "  {:<name_w$}{rounds}", t.target.name);
        }
    }
    for t in &r.targets {
        if let Some(lag) = &t.schedule_lag_ms {
            let _ = writeln!(
                out,
                "\n{}: schedule lag mean {:.3} ms, max {:.3} ms",
                t.target.name, lag.mean, lag.max
            );
        }
        if t.scripts.len() > 1 {
            let _ = writeln!(out, "\n{}: per script", t.target.name);
            // As wide as the longest name, so that long file paths keep the columns in line.
            let script_w = t.scripts.iter().map(|s| s.name.chars().count()).max().unwrap_or(0).max(22);
            for s in &t.scripts {
                let _ = writeln!(
                    out,
                    "  {:<script_w$} weight {:>4}  {:>9} txns  {:>6} failed  mean {:.3} ms",
                    s.name,
                    trim((s.weight * 100.0).round() / 100.0),
                    s.transactions,
                    s.failed,
                    s.mean_latency_ms
                );
            }
        }
        for e in &t.errors {
            let _ = writeln!(
                out,
                "{}: {} failed with SQLSTATE {}: {}",
                t.target.name, e.count, e.sqlstate, e.example
            );
        }
    }
    if !r.ratios.is_empty() {
        let _ = writeln!(out, "\nratios against {}:", r.ratios[0].baseline);
        for x in &r.ratios {
            let _ = writeln!(
                out,
                "  {:<name_w$} tps {:.2}x  p50 {:.2}x  p99 {:.2}x",
                x.target, x.tps, x.p50, x.p99
            );
        }
    }
    out
}

fn trim(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BenchConfig;
    use crate::report::{Latency, ScriptReport, TargetReport};
    use crate::target::TargetInfo;

    fn script(name: &str) -> ScriptReport {
        ScriptReport { name: name.into(), weight: 1.0, transactions: 10, failed: 0, mean_latency_ms: 1.0 }
    }

    fn target(scripts: Vec<ScriptReport>) -> TargetReport {
        TargetReport {
            target: TargetInfo { name: "db".into(), url: "postgres://u@h:5432/db".into() },
            measured: true,
            tps: 10.0,
            tps_per_round: vec![10.0],
            transactions: 20,
            failed: 0,
            errors: Vec::new(),
            latency_ms: Latency::default(),
            connections_opened: 1,
            elapsed_s: 2.0,
            schedule_lag_ms: None,
            scripts,
        }
    }

    #[test]
    fn long_script_names_keep_the_per_script_columns_in_line() {
        let long = "/home/someone/benchmarks/a-rather-long-script-name.sql";
        let config = BenchConfig::new(Vec::new());
        let report = BenchReport::new(&config, vec![target(vec![script("short.sql"), script(long)])], false);
        let text = text(&report);
        let columns: Vec<usize> = text.lines().filter_map(|l| l.find(" weight ")).collect();
        assert_eq!(columns.len(), 2, "{text}");
        assert_eq!(columns[0], columns[1], "{text}");
    }

    #[test]
    fn an_aborted_run_says_its_results_are_incomplete() {
        let config = BenchConfig::new(Vec::new());
        let mut report = BenchReport::new(&config, vec![target(vec![script("one")])], false);
        report.aborted = Some("db: 1 of 1 clients stopped early (client 0 could not connect again)".into());
        let text = text(&report);
        assert!(text.contains("(aborted: db: 1 of 1 clients stopped early"), "{text}");
        assert!(text.contains("the results are incomplete"), "{text}");
    }
}
