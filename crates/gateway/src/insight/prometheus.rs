//! Insight's part of /metrics: statements per database and target, errors by SQLSTATE, slow
//! statements, the top `prometheus_top_n` statements by total time with their own series (query
//! text truncated, so label sets stay small), and what the server probe saw.

use std::fmt::Write;

use crate::metrics::{header, label};
use crate::shared::Shared;

use super::store::StatementStats;

/// Every metric name this module renders (histogram-free, so the names are the series names).
pub const METRIC_NAMES: &[&str] = &[
    "pgpilot_statements_total",
    "pgpilot_statements_failed_total",
    "pgpilot_slow_queries_total",
    "pgpilot_statement_calls_total",
    "pgpilot_statement_errors_total",
    "pgpilot_statement_rows_total",
    "pgpilot_statement_seconds_total",
    "pgpilot_statement_wait_seconds_total",
    "pgpilot_statement_max_seconds",
    "pgpilot_statement_latency_seconds",
    "pgpilot_insight_statements_tracked",
    "pgpilot_insight_statements_max",
    "pgpilot_server_probe_up",
    "pgpilot_server_connections",
    "pgpilot_server_max_connections",
    "pgpilot_server_superuser_reserved_connections",
];

/// Longest query text put in a label.
const QUERY_LABEL_CHARS: usize = 120;

fn query_label(q: &str) -> String {
    let mut out = String::with_capacity(QUERY_LABEL_CHARS + 3);
    let mut last_space = false;
    for (n, c) in q.chars().filter(|c| !c.is_control() || c.is_whitespace()).enumerate() {
        if n >= QUERY_LABEL_CHARS {
            out.push_str("...");
            break;
        }
        let space = c.is_whitespace();
        if !(space && last_space) {
            out.push(if space { ' ' } else { c });
        }
        last_space = space;
    }
    label(out.trim())
}

pub fn render_metrics(shared: &Shared, out: &mut String) {
    let insight = &shared.insight;
    let snapshot = insight.snapshot();
    let super::carried::DatabaseCounts { totals, errors } = insight.totals_since_start(&snapshot);
    header(
        out,
        "pgpilot_statements_total",
        "counter",
        "Statements completed, by database and where they ran.",
    );
    for (db, c) in &totals {
        for (target, n) in [("primary", c.primary), ("replica", c.replica), ("cache", c.cache)] {
            let _ = writeln!(
                out,
                "pgpilot_statements_total{{database=\"{}\",target=\"{target}\"}} {n}",
                label(db)
            );
        }
    }
    header(
        out,
        "pgpilot_statements_failed_total",
        "counter",
        "Statements that failed, by database and SQLSTATE.",
    );
    for (db, code, n) in &errors {
        let _ = writeln!(
            out,
            "pgpilot_statements_failed_total{{database=\"{}\",sqlstate=\"{}\"}} {n}",
            label(db),
            label(code)
        );
    }
    header(out, "pgpilot_slow_queries_total", "counter", "Statements slower than log_min_duration.");
    for (db, c) in &totals {
        let _ = writeln!(out, "pgpilot_slow_queries_total{{database=\"{}\"}} {}", label(db), c.slow);
    }
    let n = insight.config().prometheus_top_n;
    let mut top: Vec<&StatementStats> = snapshot.statements.iter().collect();
    top.sort_by_key(|s| std::cmp::Reverse(s.counters.total_us));
    top.truncate(n);
    top_statements(out, &top);
    header(out, "pgpilot_insight_statements_tracked", "gauge", "Statements with statistics of their own.");
    let _ = writeln!(out, "pgpilot_insight_statements_tracked {}", insight.tracked_statements());
    header(out, "pgpilot_insight_statements_max", "gauge", "The max_statements setting.");
    let _ = writeln!(out, "pgpilot_insight_statements_max {}", insight.config().max_statements);
    servers(out, shared);
}

fn top_statements(out: &mut String, top: &[&StatementStats]) {
    let labels: Vec<String> = top
        .iter()
        .map(|s| {
            format!(
                "fingerprint=\"{:016x}\",database=\"{}\",user=\"{}\",query=\"{}\"",
                s.fingerprint.unwrap_or(0),
                label(&s.database),
                label(&s.user),
                query_label(&s.query)
            )
        })
        .collect();
    type Value = fn(&StatementStats) -> f64;
    let series: [(&str, &str, &str, Value); 6] = [
        (
            "pgpilot_statement_calls_total",
            "counter",
            "Calls of one of the top statements by total time.",
            |s| s.counters.calls as f64,
        ),
        ("pgpilot_statement_errors_total", "counter", "Failed calls of a top statement.", |s| {
            s.counters.errors as f64
        }),
        ("pgpilot_statement_rows_total", "counter", "Rows returned or affected by a top statement.", |s| {
            s.counters.rows as f64
        }),
        ("pgpilot_statement_seconds_total", "counter", "Time spent running a top statement.", |s| {
            s.counters.total_us as f64 / 1e6
        }),
        (
            "pgpilot_statement_wait_seconds_total",
            "counter",
            "Time a top statement waited for a server.",
            |s| s.counters.wait_us as f64 / 1e6,
        ),
        ("pgpilot_statement_max_seconds", "gauge", "Slowest call of a top statement.", |s| {
            s.counters.max_us as f64 / 1e6
        }),
    ];
    for (name, kind, help, value) in series {
        header(out, name, kind, help);
        for (s, l) in top.iter().zip(&labels) {
            let _ = writeln!(out, "{name}{{{l}}} {}", value(s));
        }
    }
    // A summary: Prometheus allows the quantile label on no other type.
    header(
        out,
        "pgpilot_statement_latency_seconds",
        "summary",
        "Latency percentiles of a top statement since statistics began (log buckets, within 6%).",
    );
    for (s, l) in top.iter().zip(&labels) {
        for (q, v) in [("0.5", s.p50_us), ("0.95", s.p95_us), ("0.99", s.p99_us)] {
            let _ = writeln!(out, "pgpilot_statement_latency_seconds{{{l},quantile=\"{q}\"}} {}", v / 1e6);
        }
        let _ = writeln!(
            out,
            "pgpilot_statement_latency_seconds_sum{{{l}}} {}",
            s.counters.total_us as f64 / 1e6
        );
        let _ = writeln!(out, "pgpilot_statement_latency_seconds_count{{{l}}} {}", s.counters.calls);
    }
}

fn servers(out: &mut String, shared: &Shared) {
    let statuses = shared.insight.server_statuses();
    type Value = fn(&super::ServerStatus) -> Option<f64>;
    let series: [(&str, &str, Value); 4] = [
        ("pgpilot_server_probe_up", "1 when the last probe of the server succeeded.", |s| {
            Some(s.up as u8 as f64)
        }),
        (
            "pgpilot_server_connections",
            "Client backends on the server (all users, not only pgpilot's).",
            |s| s.connections.map(|n| n as f64),
        ),
        ("pgpilot_server_max_connections", "The server's max_connections.", |s| {
            s.max_connections.map(|n| n as f64)
        }),
        (
            "pgpilot_server_superuser_reserved_connections",
            "The server's superuser_reserved_connections.",
            |s| s.superuser_reserved_connections.map(|n| n as f64),
        ),
    ];
    for (name, help, value) in series {
        header(out, name, "gauge", help);
        for s in &statuses {
            if let Some(v) = value(s) {
                let _ = writeln!(
                    out,
                    "{name}{{server=\"{}\",role=\"{}\"}} {v}",
                    label(&s.server),
                    label(&s.role)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_labels_are_one_line_short_and_escaped() {
        assert_eq!(
            query_label("SELECT  *\n  FROM t\tWHERE a = \"x\""),
            "SELECT * FROM t WHERE a = \\\"x\\\""
        );
        let long = "SELECT ".to_string() + &"x, ".repeat(100);
        let l = query_label(&long);
        assert!(l.ends_with("...") && l.chars().count() == QUERY_LABEL_CHARS + 3, "{l}");
    }
}
