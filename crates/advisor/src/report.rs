//! The advisor's report: findings, index suggestions, configuration advice. Serializable both ways so
//! the gateway and CI can store and reload it.

use serde::{Deserialize, Serialize};

use crate::config::pool::PoolAdvice;
use crate::config::settings::SettingAdvice;

/// How bad a finding is. Ordered: `Critical > Warning > Info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "info" => Ok(Severity::Info),
            "warning" | "warn" => Ok(Severity::Warning),
            "critical" | "crit" => Ok(Severity::Critical),
            other => Err(format!("unknown severity `{other}` (info, warning, critical)")),
        }
    }
}

/// What a finding is about, to group related findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Indexes,
    Tables,
    Bloat,
    Cache,
    Activity,
    Locks,
    Connections,
    Wraparound,
    Sequences,
    Replication,
    WalArchiving,
    Storage,
    MaterializedViews,
    Configuration,
    Workload,
    Advisor,
}

impl Category {
    pub fn label(self) -> &'static str {
        match self {
            Category::Indexes => "indexes",
            Category::Tables => "tables",
            Category::Bloat => "bloat",
            Category::Cache => "cache",
            Category::Activity => "activity",
            Category::Locks => "locks",
            Category::Connections => "connections",
            Category::Wraparound => "wraparound",
            Category::Sequences => "sequences",
            Category::Replication => "replication",
            Category::WalArchiving => "wal archiving",
            Category::Storage => "storage",
            Category::MaterializedViews => "materialized views",
            Category::Configuration => "configuration",
            Category::Workload => "workload",
            Category::Advisor => "advisor",
        }
    }
}

/// One health-check result: what is wrong, the numbers that show it, and what to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    pub category: Category,
    pub title: String,
    /// The object concerned (`public.orders`, `public.orders_user_id_idx`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The measurements behind the finding, one per line.
    #[serde(default)]
    pub evidence: Vec<String>,
    /// The statement or action that fixes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(severity: Severity, category: Category, title: impl Into<String>) -> Self {
        Finding { severity, category, title: title.into(), object: None, evidence: Vec::new(), fix: None }
    }

    pub fn object(mut self, object: impl Into<String>) -> Self {
        self.object = Some(object.into());
        self
    }

    pub fn evidence(mut self, line: impl Into<String>) -> Self {
        self.evidence.push(line.into());
        self
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// How an index suggestion was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// Proven: the planner chose the hypothetical index (hypopg) and the statements' cost fell.
    Hypothetical,
    /// Not proven: hypopg was not available or cannot simulate this kind of index (GIN); suggested
    /// because the statement scans the whole table on a predicate the index serves.
    Heuristic,
}

/// A statement an index helps, with its planned cost with and without the index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelpedStatement {
    pub query: String,
    pub calls: u64,
    pub cost_before: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_after: Option<f64>,
}

/// What the new index costs the table's writers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WriteOverhead {
    pub existing_indexes: u32,
    pub inserts: i64,
    pub updates: i64,
    pub hot_updates: i64,
    pub deletes: i64,
    /// Calls of the workload's UPDATE statements that can be HOT now and could not be with the
    /// index (they set a column it reads).
    #[serde(default)]
    pub updates_losing_hot: u64,
    /// Human summary ("3 → 4 indexes to maintain per insert; 1,200 writes since statistics reset").
    pub summary: String,
}

/// A proposed index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexSuggestion {
    pub table: String,
    /// `CREATE INDEX CONCURRENTLY ...`, ready to run.
    pub create_statement: String,
    /// btree, partial, expression, gin, covering.
    pub kind: String,
    pub evidence: Evidence,
    /// Why it was proposed, in a sentence.
    pub rationale: String,
    /// Sum over the helped statements of calls × planned cost, before and after.
    pub weighted_cost_before: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weighted_cost_after: Option<f64>,
    pub statements: Vec<HelpedStatement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_size_bytes: Option<i64>,
    pub write_overhead: WriteOverhead,
}

impl IndexSuggestion {
    /// The fraction by which the helped statements' weighted cost falls (0.9 = 90% cheaper).
    pub fn improvement(&self) -> Option<f64> {
        let after = self.weighted_cost_after?;
        (self.weighted_cost_before > 0.0).then(|| 1.0 - after / self.weighted_cost_before)
    }
}

/// A candidate index the planner was asked about and that is not suggested, and why: so a DBA
/// sees what was considered (an expression index whose cost fell 39% where 50% was asked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedCandidate {
    pub table: String,
    /// The index as it would be created (`CREATE INDEX ON ... USING btree (...)`).
    pub index: String,
    pub reason: String,
    /// The most one statement's planned cost fell with it (0.39 = 39% cheaper), when a plan used it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_cost_reduction: Option<f64>,
}

/// How the reason of an index on an expression with a parameter begins (see `index::mod`).
pub const PARAMETERIZED_EXPRESSION: &str = "the expression takes a parameter";

impl RejectedCandidate {
    /// Rejected after the planner was asked (used by a plan, with the reduction it gave, or not),
    /// or impossible for its statement's parameter: the only word on a statement with no index.
    pub fn worth_showing(&self) -> bool {
        self.best_cost_reduction.is_some()
            || self.reason.starts_with("hypopg")
            || self.reason.starts_with(PARAMETERIZED_EXPRESSION)
    }
}

/// One statement measured before and after `--apply` created an index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub query: String,
    /// Median execution time (EXPLAIN ANALYZE) in milliseconds; None for statements that were not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<f64>,
    pub cost_before: f64,
    pub cost_after: f64,
    /// How the statement was run, or why it was not ("parameters from pg_stats", "DML: planned only").
    pub note: String,
}

/// An index `--apply` created (or failed to create).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedIndex {
    pub create_statement: String,
    pub created: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub elapsed_ms: u64,
    /// The DROP statement to run by hand when a failed build left an invalid index that the
    /// cleanup could not drop (it still slows writes and holds the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_behind: Option<String>,
    /// Whether writes maintain the index left behind (pg_index.indisready), when known: a build
    /// that failed waiting for a lock left one they do not maintain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_behind_ready: Option<bool>,
    /// Why it was not attempted, by design (a partitioned table's plain CREATE INDEX): not a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Before and after; empty when the index was not created (nothing changed to measure).
    pub measurements: Vec<Measurement>,
}

impl AppliedIndex {
    pub fn created(suggestion: &IndexSuggestion, elapsed_ms: u64, measurements: Vec<Measurement>) -> Self {
        AppliedIndex {
            create_statement: suggestion.create_statement.clone(),
            created: true,
            error: None,
            elapsed_ms,
            left_behind: None,
            left_behind_ready: None,
            skipped: None,
            measurements,
        }
    }

    /// Not attempted, by design: `why` says where the suggestion says what to do instead.
    pub fn skipped(suggestion: &IndexSuggestion, why: &str) -> Self {
        AppliedIndex {
            create_statement: suggestion.create_statement.clone(),
            created: false,
            error: None,
            elapsed_ms: 0,
            left_behind: None,
            left_behind_ready: None,
            skipped: Some(why.to_string()),
            measurements: Vec::new(),
        }
    }

    /// Attempted and not created.
    pub fn failed_to_create(&self) -> bool {
        !self.created && self.skipped.is_none()
    }

    pub fn failed(
        suggestion: &IndexSuggestion,
        elapsed_ms: u64,
        error: String,
        left_behind: Option<String>,
        left_behind_ready: Option<bool>,
    ) -> Self {
        AppliedIndex {
            create_statement: suggestion.create_statement.clone(),
            created: false,
            error: Some(error),
            elapsed_ms,
            left_behind,
            left_behind_ready,
            skipped: None,
            measurements: Vec::new(),
        }
    }

    /// What the invalid index left behind costs, as the report says it (empty when not known).
    pub fn left_behind_cost(&self) -> &'static str {
        match self.left_behind_ready {
            Some(true) => " (queries ignore it, writes still maintain it)",
            Some(false) => {
                " (queries ignore it and writes do not maintain it, but it holds its name and space)"
            }
            None => "",
        }
    }
}

/// A workload statement the advisor could not analyse, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedStatement {
    pub query: String,
    pub reason: String,
}

/// Where the workload came from and how much of it was analysed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSummary {
    pub sources: Vec<String>,
    pub statements: usize,
    pub analysed: usize,
    pub skipped: Vec<SkippedStatement>,
    /// Weighted mean latency of the ordinary statements (SELECT, INSERT, UPDATE, DELETE, MERGE) in
    /// milliseconds, when the source measured it: what sizes the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_latency_ms: Option<f64>,
    /// What the mean latency leaves out (utility statements, pg_sleep), one line per kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_excluded: Vec<String>,
    /// The workload read is incomplete (a source's answer too big, say): shown above the findings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Everything one advisor run found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub database: String,
    /// The connection target without its password.
    pub target: String,
    pub server_version: String,
    /// The server is a hot standby (read-only): fixes that write are marked for the primary.
    #[serde(default)]
    pub standby: bool,
    /// Seconds since the Unix epoch when the run started.
    pub generated_at_unix: u64,
    pub duration_ms: u64,
    /// "hypopg" or "heuristic (...)": how index suggestions were established.
    pub index_method: String,
    pub workload: WorkloadSummary,
    pub findings: Vec<Finding>,
    pub index_suggestions: Vec<IndexSuggestion>,
    /// Candidates tried with hypothetical indexes and not suggested, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected_candidates: Vec<RejectedCandidate>,
    pub settings: Vec<SettingAdvice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolAdvice>,
    #[serde(default)]
    pub applied: Vec<AppliedIndex>,
    /// Things the run could not check, and why (missing privileges, extensions, remote machine).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl Report {
    /// The most severe finding, counting each index suggestion as a warning (a missing index).
    pub fn worst_severity(&self) -> Option<Severity> {
        let suggestions = (!self.index_suggestions.is_empty()).then_some(Severity::Warning);
        self.findings.iter().map(|f| f.severity).chain(suggestions).max()
    }

    /// True when `--fail-on threshold` should fail the run.
    pub fn fails_on(&self, threshold: Severity) -> bool {
        self.worst_severity().is_some_and(|s| s >= threshold)
    }

    /// The `n` most important findings: most severe first, then in the order the checks ran.
    pub fn top_findings(&self, n: usize) -> Vec<&Finding> {
        let mut sorted: Vec<&Finding> = self.findings.iter().collect();
        sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
        sorted.truncate(n);
        sorted
    }

    /// How many findings there are of each severity: (critical, warning, info).
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |s| self.findings.iter().filter(|f| f.severity == s).count();
        (count(Severity::Critical), count(Severity::Warning), count(Severity::Info))
    }

    /// Sorts findings most severe first, keeping the check order within a severity.
    pub(crate) fn sort(&mut self) {
        self.findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(findings: Vec<Finding>) -> Report {
        Report {
            database: "app".into(),
            target: "postgres://app@db/app".into(),
            server_version: "15".into(),
            standby: false,
            generated_at_unix: 0,
            duration_ms: 0,
            index_method: "hypopg".into(),
            workload: WorkloadSummary::default(),
            findings,
            index_suggestions: vec![],
            rejected_candidates: vec![],
            settings: vec![],
            pool: None,
            applied: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn fail_on_compares_with_the_worst_finding() {
        let r = report(vec![
            Finding::new(Severity::Info, Category::Cache, "a"),
            Finding::new(Severity::Warning, Category::Indexes, "b"),
        ]);
        assert!(r.fails_on(Severity::Warning));
        assert!(!r.fails_on(Severity::Critical));
        assert!(!report(vec![]).fails_on(Severity::Info));
    }

    #[test]
    fn top_findings_puts_critical_first() {
        let r = report(vec![
            Finding::new(Severity::Info, Category::Cache, "i"),
            Finding::new(Severity::Critical, Category::Locks, "c"),
            Finding::new(Severity::Warning, Category::Indexes, "w"),
        ]);
        let top: Vec<&str> = r.top_findings(2).iter().map(|f| f.title.as_str()).collect();
        assert_eq!(top, ["c", "w"]);
    }

    #[test]
    fn report_round_trips_through_json() {
        let r = report(vec![Finding::new(Severity::Warning, Category::Bloat, "x").evidence("e").fix("f")]);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
    }
}
