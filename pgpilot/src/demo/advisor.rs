//! The advisor's view of the demo database after the workload: the indexes it proves would help
//! (the sample application leaves some out on purpose) and the most important health findings.

use std::net::SocketAddr;

use pgpilot_advisor::{advise, AdviseOptions, NoProgress, Report};
use pgpilot_bench::demo_app::{MissingIndex, MISSING_INDEXES};
use serde::Serialize;

use super::gateway_stats::get_json;

/// How many findings the report shows.
const TOP_FINDINGS: usize = 5;

#[derive(Debug, Clone, Default, Serialize)]
pub struct AdvisorSummary {
    /// Set when the advisor could not run; the rest is then empty.
    pub error: Option<String>,
    /// How index suggestions were established (hypopg, or heuristics).
    pub index_method: String,
    /// Where the workload came from (pgpilot's statistics or pg_stat_statements).
    pub workload_sources: Vec<String>,
    /// Workload statements analysed (from pg_stat_statements).
    pub statements_analysed: usize,
    pub duration_ms: u64,
    pub index_suggestions: Vec<Suggestion>,
    pub top_findings: Vec<FindingLine>,
    /// How many findings there were in all.
    pub findings_total: usize,
    /// Of the indexes the sample application leaves out on purpose, how many were suggested.
    pub planted_missing_indexes_found: usize,
    pub planted_missing_indexes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Suggestion {
    pub table: String,
    pub create_statement: String,
    /// How much cheaper the statements it helps become (0.9 = 90%), when proven with hypopg.
    pub cost_reduction: Option<f64>,
    /// It serves one of the indexes the sample application leaves out on purpose.
    pub planted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FindingLine {
    pub severity: String,
    pub category: String,
    pub title: String,
    pub object: Option<String>,
    pub fix: Option<String>,
}

/// Runs the advisor on the primary. Never fails the demo: a failure is recorded in the summary.
///
/// The workload comes from pgpilot's own statement statistics when it has recorded some: they keep
/// the application's constants (`interval '30 days'`, `status = 'pending'`), which
/// pg_stat_statements replaces with parameters the planner cannot always type. Otherwise it comes
/// from pg_stat_statements on the primary.
pub async fn run(primary_url: &str, gateway_http: SocketAddr, measured_tps: f64) -> AdvisorSummary {
    let mut opts = AdviseOptions::new(primary_url);
    if gateway_has_statements(gateway_http).await {
        opts.workload.pgpilot_url = Some(format!("http://{gateway_http}"));
        opts.workload.pg_stat_statements = false;
    }
    // hypopg ships with the demo's Debian packages; the advisor creates it in the demo database.
    opts.index.install_extensions = true;
    if measured_tps > 0.0 {
        opts.pool.target_tps = Some(measured_tps);
    }
    match advise(&opts, &NoProgress).await {
        Ok(report) => summarize(&report),
        Err(e) => AdvisorSummary {
            error: Some(format!("{e:#}")),
            planted_missing_indexes: MISSING_INDEXES.len(),
            ..Default::default()
        },
    }
}

async fn gateway_has_statements(http: SocketAddr) -> bool {
    match get_json(http, "/api/v1/monitoring/statements?limit=1").await {
        Ok(Some(v)) => v.get("statements").and_then(|s| s.as_array()).is_some_and(|s| !s.is_empty()),
        _ => false,
    }
}

fn summarize(report: &Report) -> AdvisorSummary {
    let index_suggestions: Vec<Suggestion> = report
        .index_suggestions
        .iter()
        .map(|s| Suggestion {
            table: s.table.clone(),
            create_statement: s.create_statement.clone(),
            cost_reduction: s.improvement(),
            planted: MISSING_INDEXES.iter().any(|m| covers(&s.table, &s.create_statement, m)),
        })
        .collect();
    let planted_found = MISSING_INDEXES
        .iter()
        .filter(|m| report.index_suggestions.iter().any(|s| covers(&s.table, &s.create_statement, m)))
        .count();
    AdvisorSummary {
        error: None,
        index_method: report.index_method.clone(),
        workload_sources: report.workload.sources.clone(),
        statements_analysed: report.workload.analysed,
        duration_ms: report.duration_ms,
        index_suggestions,
        top_findings: report
            .top_findings(TOP_FINDINGS)
            .into_iter()
            .map(|f| FindingLine {
                severity: f.severity.label().to_string(),
                category: f.category.label().to_string(),
                title: f.title.clone(),
                object: f.object.clone(),
                fix: f.fix.clone(),
            })
            .collect(),
        findings_total: report.findings.len(),
        planted_missing_indexes_found: planted_found,
        planted_missing_indexes: MISSING_INDEXES.len(),
    }
}

/// Whether a suggested index serves what a planted missing index would: the same table (or one of
/// its partitions), the same leading key column, and no other key column the planted index has
/// neither as a key nor in its predicate. `flow.runs (workflow_id, status, created_at)` serves the
/// planted `(workflow_id, created_at) WHERE status = 'pending'`; `(workflow_id, status, started_at)`
/// is a finding of its own (runs finishing, ordered by start), not the one planted.
fn covers(table: &str, create: &str, planted: &MissingIndex) -> bool {
    let (ours, theirs) = (key_columns(create), key_columns(planted.create));
    let predicate = planted.create.split_once(" WHERE ").map_or("", |(_, p)| p);
    same_table(table, planted.table)
        && !ours.is_empty()
        && ours.first() == theirs.first()
        && ours.iter().all(|c| theirs.contains(c) || predicate.contains(c))
}

/// `CREATE INDEX ... ON t USING btree (a, b DESC)` → `[a, b]`; `... USING gin (answers jsonb_path_ops)`
/// → `[answers]`.
fn key_columns(create: &str) -> Vec<&str> {
    let Some(on) = create.find(" ON ") else { return Vec::new() };
    let after_on = &create[on..];
    let Some(open) = after_on.find('(') else { return Vec::new() };
    let keys = &after_on[open + 1..];
    let keys = &keys[..keys.find(')').unwrap_or(keys.len())];
    keys.split(',')
        .filter_map(|k| k.split_whitespace().next())
        .map(|c| c.trim_matches('"'))
        .filter(|c| !c.is_empty())
        .collect()
}

/// `ledger.transactions` also matches its monthly partitions (`ledger.transactions_2025_03`).
fn same_table(suggested: &str, planted: &str) -> bool {
    let suggested = suggested.trim_matches('"');
    suggested == planted || suggested.strip_prefix(planted).is_some_and(|rest| rest.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_count_as_their_parent() {
        assert!(same_table("ledger.transactions", "ledger.transactions"));
        assert!(same_table("ledger.transactions_2025_03", "ledger.transactions"));
        assert!(!same_table("ledger.transactionsx", "ledger.transactions"));
        assert!(!same_table("flow.runs", "ledger.transactions"));
    }

    #[test]
    fn a_suggestion_covers_a_planted_index_by_table_and_key_columns() {
        let runs = &MISSING_INDEXES[1];
        let ours = "CREATE INDEX CONCURRENTLY r ON flow.runs USING btree (workflow_id, status, created_at)";
        assert!(covers("flow.runs", ours, runs));
        let other = "CREATE INDEX CONCURRENTLY r ON flow.runs USING btree (status)";
        assert!(!covers("flow.runs", other, runs));
        let finishing =
            "CREATE INDEX CONCURRENTLY r ON flow.runs USING btree (workflow_id, status, started_at)";
        assert!(
            !covers("flow.runs", finishing, runs),
            "another statement's index counted as the planted one"
        );
        let gin = "CREATE INDEX CONCURRENTLY f ON flow.form_responses USING gin (answers jsonb_path_ops)";
        assert!(covers("flow.form_responses", gin, &MISSING_INDEXES[2]));
        let ledger = &MISSING_INDEXES[0];
        assert_eq!(key_columns(ledger.create), ["account_id", "booked_at"]);
        let one_column =
            "CREATE INDEX CONCURRENTLY t ON ledger.transactions_2025_03 USING btree (account_id)";
        assert!(covers("ledger.transactions_2025_03", one_column, ledger));
    }
}
