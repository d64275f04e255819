//! The workload: the statements the application runs, with how often and how long.

pub mod file;
pub mod pgpilot;
pub mod pgss;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One distinct statement of the workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadStatement {
    /// The text; parameterized (`$1`) when it came from pg_stat_statements or the gateway.
    pub query: String,
    pub calls: u64,
    /// Total execution time in milliseconds, when the source measured it.
    pub total_time_ms: Option<f64>,
    /// Where it came from: "pg_stat_statements", "file", "pgpilot".
    pub source: String,
}

impl WorkloadStatement {
    pub fn mean_time_ms(&self) -> Option<f64> {
        self.total_time_ms.filter(|_| self.calls > 0).map(|t| t / self.calls as f64)
    }
}

/// Merges statements that differ only in constants or spacing (same fingerprint) — except the
/// constants that choose what an expression reads (see [`expression_selectors`]). Within one
/// source their calls and time add up; across sources they do not, because the sources watch
/// the same executions (a statement sent through the gateway is also in pg_stat_statements):
/// the source that counted the most calls is kept. The first text is kept, with the constants
/// that differ among the merged texts turned into parameters (see
/// [`crate::sqltext::parameterise_varying_literals`]). Statements that do not parse keep their
/// own entry.
pub fn merge(statements: Vec<WorkloadStatement>) -> Vec<WorkloadStatement> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, SameStatement> = HashMap::new();
    for s in statements {
        let key = grouping_key(&s.query);
        groups
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                SameStatement::default()
            })
            .add(s);
    }
    order.into_iter().filter_map(|k| groups.remove(&k)).map(SameStatement::into_statement).collect()
}

/// The statement's fingerprint, with its expression selectors: `data ->> 'type'` and
/// `data ->> 'kind'` are different expressions, each indexable on its own, where merged into
/// `data ->> $1` no expression index can be derived for either.
fn grouping_key(query: &str) -> String {
    let selectors = expression_selectors(query);
    if selectors.is_empty() {
        return fingerprint(query);
    }
    format!("{}|{}", fingerprint(query), selectors.join("|"))
}

/// Operators whose right-hand constant picks what they read: a jsonb or json key or array index
/// (`->`, `->>`) or path (`#>`, `#>>`).
const SELECTOR_OPERATORS: &[&str] = &["->", "->>", "#>", "#>>"];

/// Functions whose arguments after the first are a path into the first.
const PATH_FUNCTIONS: &[&str] =
    &["jsonb_extract_path", "jsonb_extract_path_text", "json_extract_path", "json_extract_path_text"];

/// The constants of `query` that select what an expression reads, in the order written: the key
/// of `->>`, the path of `#>>`, the path arguments of `jsonb_extract_path_text` and the like, a
/// constant subscript (`data['type']`). Constants compared with a value are not among them.
pub fn expression_selectors(query: &str) -> Vec<String> {
    use pg_query::NodeRef;
    let Ok(parsed) = pg_query::parse(query, 0) else { return Vec::new() };
    let mut selectors = Vec::new();
    for (node, ..) in parsed.protobuf.nodes() {
        match node {
            NodeRef::AExpr(e) if is_selector_operator(e) => {
                selectors.extend(e.rexpr.as_deref().and_then(literal_sql));
            }
            NodeRef::FuncCall(f) if is_path_function(f) => {
                selectors.extend(f.args.iter().skip(1).filter_map(literal_sql));
            }
            NodeRef::AIndices(i) => {
                let bounds = [i.lidx.as_deref(), i.uidx.as_deref()];
                selectors.extend(bounds.into_iter().flatten().filter_map(literal_sql));
            }
            _ => {}
        }
    }
    selectors
}

fn is_selector_operator(e: &pg_query::protobuf::AExpr) -> bool {
    let op = e.name.iter().rev().find_map(|n| match &n.node {
        Some(pg_query::NodeEnum::String(s)) => Some(s.sval.as_str()),
        _ => None,
    });
    e.kind == pg_query::protobuf::AExprKind::AexprOp as i32
        && op.is_some_and(|op| SELECTOR_OPERATORS.contains(&op))
}

fn is_path_function(f: &pg_query::protobuf::FuncCall) -> bool {
    let name = f.funcname.iter().rev().find_map(|n| match &n.node {
        Some(pg_query::NodeEnum::String(s)) => Some(s.sval.to_ascii_lowercase()),
        _ => None,
    });
    name.is_some_and(|name| PATH_FUNCTIONS.contains(&name.as_str()))
}

/// A literal (`'type'`, `'{a,b}'::text[]`, `3`) written back as SQL; None for anything else.
fn literal_sql(node: &pg_query::protobuf::Node) -> Option<String> {
    use pg_query::NodeEnum;
    let literal = match &node.node {
        Some(NodeEnum::AConst(c)) => !c.isnull,
        Some(NodeEnum::TypeCast(tc)) => {
            matches!(tc.arg.as_deref().and_then(|a| a.node.as_ref()), Some(NodeEnum::AConst(_)))
        }
        _ => false,
    };
    literal.then(|| crate::index::deparse_expression(node)).flatten()
}

fn fingerprint(query: &str) -> String {
    // Table names count in full: orders_2024 and orders_2025 are different statements here.
    let options =
        pg_query::FingerprintOptions::FULL_RELNAME | pg_query::FingerprintOptions::RANGEVAR_PG17_COMPAT;
    pg_query::fingerprint(query, 0, options).map(|f| f.hex).unwrap_or_else(|_| query.to_string())
}

/// The statements of one fingerprint, while merging.
#[derive(Default)]
struct SameStatement {
    /// Distinct texts, in the order seen.
    texts: Vec<String>,
    /// One entry per source, with that source's calls and time summed.
    per_source: Vec<WorkloadStatement>,
}

impl SameStatement {
    fn add(&mut self, s: WorkloadStatement) {
        if !self.texts.contains(&s.query) {
            self.texts.push(s.query.clone());
        }
        match self.per_source.iter_mut().find(|p| p.source == s.source) {
            Some(p) => {
                p.calls += s.calls;
                p.total_time_ms = match (p.total_time_ms, s.total_time_ms) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                };
            }
            None => self.per_source.push(s),
        }
    }

    fn into_statement(self) -> WorkloadStatement {
        let busiest = self
            .per_source
            .iter()
            .rev()
            .max_by_key(|p| p.calls)
            .expect("a merged statement has at least one source");
        // A source without timings (a file) borrows the mean of one that measured the statement.
        let total_time_ms = busiest.total_time_ms.or_else(|| {
            let mean = self.per_source.iter().find_map(WorkloadStatement::mean_time_ms)?;
            Some(mean * busiest.calls as f64)
        });
        let texts = texts_with_constants(&self.texts);
        let query = if texts.len() > 1 {
            crate::sqltext::parameterise_varying_literals(&texts)
        } else {
            texts[0].to_string()
        };
        let source = self.per_source.iter().map(|p| p.source.as_str()).collect::<Vec<_>>().join("+");
        WorkloadStatement { query, calls: busiest.calls, total_time_ms, source }
    }
}

/// The texts that spell the statement's constants out, when some do: a file's `status =
/// 'pending'` merged with pg_stat_statements' `status = $1` keeps its constant (a partial index's
/// predicate), as a `$1` says nothing about the values that ran. Constants that differ among the
/// texts that spell them still become parameters. All texts when none spells its constants out.
fn texts_with_constants(texts: &[String]) -> Vec<&str> {
    let spelled: Vec<&str> =
        texts.iter().map(String::as_str).filter(|t| crate::sqltext::highest_param(t) == Some(0)).collect();
    if spelled.is_empty() {
        texts.iter().map(String::as_str).collect()
    } else {
        spelled
    }
}

/// Heaviest first: by total time when known, else by calls.
pub fn sort_by_weight(statements: &mut [WorkloadStatement]) {
    statements.sort_by(|a, b| {
        let key = |s: &WorkloadStatement| (s.total_time_ms.unwrap_or(0.0), s.calls);
        key(b).partial_cmp(&key(a)).unwrap_or(std::cmp::Ordering::Equal)
    });
}

/// The mean latency that sizes a pool, and what was left out of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatementLatency {
    /// Weighted by calls, in milliseconds; None when no ordinary statement was timed.
    pub mean_ms: Option<f64>,
    /// What was left out, one line per kind ("utility statements (VACUUM, CREATE INDEX): 2, 3 calls").
    pub excluded: Vec<String>,
}

/// How a statement counts towards the latency that sizes a pool.
#[derive(Debug, Clone, PartialEq)]
enum LatencyKind {
    /// What the application runs through its pool: SELECT, INSERT, UPDATE, DELETE, MERGE.
    Ordinary,
    /// Reads only the system catalogs: monitoring, this advisor's own queries.
    CatalogOnly,
    /// Maintenance and DDL (VACUUM, CREATE INDEX, COPY, ...): long, rare, and often waiting for
    /// locks; one CREATE INDEX that waited 10 minutes would triple the mean.
    Utility(String),
    /// Sleeps on purpose: its time is not the database's work.
    Sleep,
}

/// A rare statement is an outlier when its mean is this many times the typical statement's.
const OUTLIER_FACTOR: f64 = 100.0;
/// ... and it has at most this share of the ordinary statements' calls.
const OUTLIER_MAX_CALL_SHARE: f64 = 0.01;

/// Mean latency over the application's ordinary statements, weighted by calls, in milliseconds.
/// Catalog-only statements are left out silently; utility statements, pg_sleep and rare outliers
/// (see [`outliers`]) are left out and named in `excluded`.
pub fn statement_latency(statements: &[WorkloadStatement]) -> StatementLatency {
    let timed = statements.iter().filter(|s| s.total_time_ms.is_some());
    let mut ordinary = Vec::new();
    let (mut utility, mut sleeping) = (ExcludedKind::default(), ExcludedKind::default());
    for s in timed {
        match latency_kind(&s.query) {
            LatencyKind::Ordinary if s.calls > 0 => ordinary.push(s),
            LatencyKind::Ordinary | LatencyKind::CatalogOnly => {}
            LatencyKind::Utility(label) => utility.add(s, Some(label)),
            LatencyKind::Sleep => sleeping.add(s, None),
        }
    }
    let (outlying, counted): (Vec<_>, Vec<_>) = {
        let outliers = outliers(&ordinary);
        ordinary.into_iter().enumerate().partition(|(i, _)| outliers.contains(i))
    };
    let mut rare = ExcludedKind::default();
    for (_, s) in &outlying {
        rare.add(s, s.mean_time_ms().map(|m| format!("mean {}", crate::units::duration(m / 1000.0))));
    }
    let calls: u64 = counted.iter().map(|(_, s)| s.calls).sum();
    let time: f64 = counted.iter().map(|(_, s)| s.total_time_ms.unwrap_or(0.0)).sum();
    let excluded = [
        utility.describe("utility statements"),
        sleeping.describe("statements calling pg_sleep"),
        rare.describe(&format!(
            "rare statements taking over {OUTLIER_FACTOR:.0}× the typical statement's time"
        )),
    ];
    StatementLatency {
        mean_ms: (calls > 0).then(|| time / calls as f64),
        excluded: excluded.into_iter().flatten().collect(),
    }
}

/// The statements (indexes into `ordinary`) whose mean is over [`OUTLIER_FACTOR`] times the
/// calls-weighted median statement's and that have at most [`OUTLIER_MAX_CALL_SHARE`] of the
/// calls: one UPDATE that waited 13 minutes for a lock would otherwise raise the mean of a few
/// hundred 60 ms calls 25-fold, and the pool with it, though it held one connection once.
fn outliers(ordinary: &[&WorkloadStatement]) -> Vec<usize> {
    let total_calls: u64 = ordinary.iter().map(|s| s.calls).sum();
    let mut by_mean: Vec<(f64, u64)> =
        ordinary.iter().filter_map(|s| Some((s.mean_time_ms()?, s.calls))).collect();
    by_mean.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    let mut seen = 0;
    let Some(median) = by_mean.iter().find_map(|&(mean, calls)| {
        seen += calls;
        (seen * 2 >= total_calls).then_some(mean)
    }) else {
        return Vec::new();
    };
    let rare = |s: &WorkloadStatement| s.calls as f64 <= OUTLIER_MAX_CALL_SHARE * total_calls as f64;
    ordinary
        .iter()
        .enumerate()
        .filter(|(_, s)| rare(s) && s.mean_time_ms().is_some_and(|m| m > OUTLIER_FACTOR * median.max(0.001)))
        .map(|(i, _)| i)
        .collect()
}

/// Mean latency over the application's ordinary statements (see [`statement_latency`]).
pub fn mean_latency_ms(statements: &[WorkloadStatement]) -> Option<f64> {
    statement_latency(statements).mean_ms
}

/// Statements of one excluded kind, counted for the report.
#[derive(Default)]
struct ExcludedKind {
    statements: usize,
    calls: u64,
    labels: Vec<String>,
}

impl ExcludedKind {
    fn add(&mut self, s: &WorkloadStatement, label: Option<String>) {
        self.statements += 1;
        self.calls += s.calls;
        if let Some(label) = label.filter(|l| !self.labels.contains(l)) {
            self.labels.push(label);
        }
    }

    fn describe(&self, what: &str) -> Option<String> {
        let labels =
            if self.labels.is_empty() { String::new() } else { format!(" ({})", self.labels.join(", ")) };
        (self.statements > 0).then(|| format!("{what}{labels}: {}, {} calls", self.statements, self.calls))
    }
}

fn latency_kind(query: &str) -> LatencyKind {
    // A text that does not parse (cut by its source) counts, as the application ran it.
    let Ok(parsed) = pg_query::parse(query, 0) else { return LatencyKind::Ordinary };
    let first = parsed.protobuf.stmts.first().and_then(|s| s.stmt.as_ref()).and_then(|n| n.node.as_ref());
    use pg_query::NodeEnum;
    match first {
        Some(
            NodeEnum::SelectStmt(_)
            | NodeEnum::InsertStmt(_)
            | NodeEnum::UpdateStmt(_)
            | NodeEnum::DeleteStmt(_)
            | NodeEnum::MergeStmt(_),
        ) => {}
        _ => {
            // Deparsed, the text starts with its command: no leading comment (`/* nightly */ VACUUM`).
            let text = parsed.deparse(Default::default()).unwrap_or_else(|_| query.to_string());
            return LatencyKind::Utility(utility_label(&text));
        }
    }
    if parsed.functions().iter().any(|f| is_sleep(f)) {
        LatencyKind::Sleep
    } else if !reads_user_tables(query) {
        LatencyKind::CatalogOnly
    } else {
        LatencyKind::Ordinary
    }
}

fn reads_user_tables(query: &str) -> bool {
    let Ok(tables) = crate::index::parse::referenced_tables(query) else { return true };
    tables.iter().any(|(schema, name)| match schema.as_deref() {
        Some("pg_catalog" | "information_schema") => false,
        Some(_) => true,
        None => !name.starts_with("pg_"),
    })
}

fn is_sleep(function: &str) -> bool {
    let name = function.rsplit('.').next().unwrap_or(function);
    matches!(name, "pg_sleep" | "pg_sleep_for" | "pg_sleep_until")
}

/// The command of a utility statement as a DBA names it: `VACUUM`, `CREATE INDEX`, `ALTER TABLE`.
fn utility_label(query: &str) -> String {
    let mut words = query
        .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
        .filter(|w| !w.is_empty())
        .map(str::to_uppercase);
    let first = words.next().unwrap_or_default();
    if !matches!(first.as_str(), "CREATE" | "ALTER" | "DROP" | "REFRESH") {
        return first;
    }
    // CREATE UNIQUE INDEX is a CREATE INDEX; CREATE OR REPLACE VIEW a CREATE VIEW.
    let object = words.find(|w| !matches!(w.as_str(), "UNIQUE" | "OR" | "REPLACE" | "TEMP" | "TEMPORARY"));
    object.map(|o| format!("{first} {o}")).unwrap_or(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(q: &str, calls: u64, t: Option<f64>, src: &str) -> WorkloadStatement {
        WorkloadStatement { query: q.into(), calls, total_time_ms: t, source: src.into() }
    }

    #[test]
    fn utility_statements_and_sleeps_do_not_count_towards_latency() {
        let latency = statement_latency(&[
            stmt("SELECT * FROM t WHERE id = $1", 10, Some(20.0), "pg_stat_statements"),
            stmt("/* nightly */ VACUUM t", 2, Some(5000.0), "pg_stat_statements"),
            stmt("CREATE UNIQUE INDEX CONCURRENTLY t_a ON t (a)", 1, Some(600000.0), "pg_stat_statements"),
            stmt("SELECT pg_sleep($1) FROM t", 1, Some(1000.0), "pg_stat_statements"),
            stmt("SELECT count(*) FROM pg_stat_activity", 1000, Some(1000.0), "pg_stat_statements"),
        ]);
        assert_eq!(latency.mean_ms, Some(2.0));
        assert_eq!(
            latency.excluded,
            [
                "utility statements (VACUUM, CREATE INDEX): 2, 3 calls",
                "statements calling pg_sleep: 1, 1 calls"
            ]
        );
    }

    /// One statement that waited 13 minutes on a lock once must not size the pool.
    #[test]
    fn a_rare_outlier_does_not_count_towards_latency() {
        let latency = statement_latency(&[
            stmt("SELECT * FROM t WHERE id = $1", 300, Some(300.0 * 60.0), "pg_stat_statements"),
            stmt("SELECT * FROM u WHERE id = $1", 162, Some(162.0 * 80.0), "pg_stat_statements"),
            stmt("UPDATE t SET a = $1 WHERE id = $2", 1, Some(781_000.0), "pg_stat_statements"),
        ]);
        let mean = latency.mean_ms.unwrap();
        assert!((60.0..=80.0).contains(&mean), "{mean}");
        assert_eq!(latency.excluded.len(), 1, "{:?}", latency.excluded);
        assert!(latency.excluded[0].contains("1, 1 calls"), "{:?}", latency.excluded);
    }

    #[test]
    fn same_shape_statements_merge() {
        let merged = merge(vec![
            stmt("SELECT * FROM t WHERE id = 1", 2, Some(1.0), "file"),
            stmt("select *  from t where id = 42", 3, Some(2.0), "file"),
            stmt("SELECT * FROM u", 1, None, "file"),
            stmt("SELECT count(*) FROM pg_stat_activity", 1000, Some(1000.0), "pg_stat_statements"),
            stmt("SELECT * FROM t12 WHERE id = 1", 1, None, "file"),
            stmt("SELECT * FROM t13 WHERE id = 1", 1, None, "file"),
            stmt("SELECT a.id FROM t39 a JOIN t40 b ON b.x = a.x", 1, None, "file"),
            stmt("SELECT a.id FROM t104 a JOIN t105 b ON b.x = a.x", 1, None, "file"),
        ]);
        assert_eq!(merged.len(), 7, "different tables are different statements, aliases or not");
        assert_eq!(merged[0].calls, 5);
        assert_eq!(merged[0].total_time_ms, Some(3.0));
        assert_eq!(merged[0].query, "SELECT * FROM t WHERE id = $1", "the varying constant is a parameter");
        assert_eq!(mean_latency_ms(&merged), Some(0.6));
        assert_ne!(merged[3].query, merged[4].query);
    }

    /// The gateway's statistics and pg_stat_statements count the same executions.
    #[test]
    fn sources_are_not_added_up() {
        let merged = merge(vec![
            stmt("SELECT * FROM dc_t WHERE a = $1", 100, Some(50.0), "pg_stat_statements"),
            stmt("SELECT * FROM dc_t WHERE a = $1", 100, Some(60.0), "pgpilot"),
            stmt("SELECT * FROM t WHERE id = $1", 40, Some(4.0), "pg_stat_statements"),
            stmt("SELECT * FROM t WHERE id = $1", 30, Some(3.0), "pgpilot"),
            stmt("SELECT * FROM t WHERE id = 7", 500, None, "file"),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].calls, merged[0].total_time_ms), (100, Some(50.0)));
        assert_eq!(merged[0].source, "pg_stat_statements+pgpilot");
        assert_eq!(merged[1].calls, 500, "the source that counted the most");
        assert_eq!(merged[1].total_time_ms, Some(50.0), "a file's weight with the measured mean (0.1 ms)");
        assert_eq!(merged[1].source, "pg_stat_statements+pgpilot+file");
    }

    /// pg_stat_statements and the gateway keep `$n` where a workload file spells the constant out:
    /// the file's constant stays, for the partial index it can make.
    #[test]
    fn a_files_constants_survive_a_parameterised_source() {
        let merged = merge(vec![
            stmt(
                "SELECT id FROM orders WHERE status = $1 ORDER BY created_at LIMIT $2",
                900,
                Some(90.0),
                "pg_stat_statements",
            ),
            stmt(
                "SELECT id FROM orders WHERE status = 'pending' ORDER BY created_at LIMIT 50",
                10,
                None,
                "file",
            ),
            stmt("SELECT id FROM t WHERE a = 1 AND b = 'x'", 1, None, "file"),
            stmt("SELECT id FROM t WHERE a = 2 AND b = 'x'", 1, None, "file"),
            stmt("SELECT id FROM t WHERE a = $1 AND b = $2", 5, Some(1.0), "pgpilot"),
        ]);
        assert_eq!(
            merged[0].query,
            "SELECT id FROM orders WHERE status = 'pending' ORDER BY created_at LIMIT 50"
        );
        assert_eq!((merged[0].calls, merged[0].total_time_ms), (900, Some(90.0)));
        assert_eq!(merged[1].query, "SELECT id FROM t WHERE a = $1 AND b = 'x'");
    }

    /// The key a jsonb expression reads is part of the expression: statements on different keys
    /// stay apart (each can have its own expression index), on the same key they merge.
    #[test]
    fn statements_reading_different_keys_are_not_merged() {
        let merged = merge(vec![
            stmt("SELECT * FROM ev WHERE (data ->> 'type') = 't5'", 3, None, "file"),
            stmt("SELECT * FROM ev WHERE (data ->> 'kind') = 'k7'", 2, None, "file"),
            stmt("SELECT * FROM ev WHERE (data ->> 'kind') = 'k8'", 1, None, "file"),
            stmt("SELECT * FROM ev WHERE jsonb_extract_path_text(data, 'a', 'b') = 'x'", 1, None, "file"),
            stmt("SELECT * FROM ev WHERE jsonb_extract_path_text(data, 'a', 'c') = 'x'", 1, None, "file"),
            stmt("SELECT * FROM ev WHERE data #>> '{a,b}' = 'x'", 1, None, "file"),
            stmt("SELECT * FROM ev WHERE data #>> '{a,c}' = 'x'", 1, None, "file"),
        ]);
        let queries: Vec<&str> = merged.iter().map(|s| s.query.as_str()).collect();
        assert_eq!(
            queries,
            [
                "SELECT * FROM ev WHERE (data ->> 'type') = 't5'",
                "SELECT * FROM ev WHERE (data ->> 'kind') = $1",
                "SELECT * FROM ev WHERE jsonb_extract_path_text(data, 'a', 'b') = 'x'",
                "SELECT * FROM ev WHERE jsonb_extract_path_text(data, 'a', 'c') = 'x'",
                "SELECT * FROM ev WHERE data #>> '{a,b}' = 'x'",
                "SELECT * FROM ev WHERE data #>> '{a,c}' = 'x'",
            ]
        );
        assert_eq!(merged[1].calls, 3);
    }

    /// Literal statements merged into one must not keep one call's constants as if every call
    /// had them; constants all calls share stay.
    #[test]
    fn varying_literals_become_parameters() {
        let merged = merge(vec![
            stmt("SELECT * FROM orders WHERE status = 'shipped' AND customer_id = 42", 100, None, "file"),
            stmt("SELECT * FROM orders WHERE status = 'shipped' AND customer_id = 43", 100, None, "file"),
            stmt("SELECT * FROM orders WHERE status = 'pending' AND customer_id = 44", 100, None, "file"),
            stmt("SELECT * FROM items WHERE kind = 'book' AND owner_id = 1", 1, None, "file"),
            stmt("SELECT * FROM items WHERE kind = 'book' AND owner_id = 2", 1, None, "file"),
        ]);
        assert_eq!(merged[0].query, "SELECT * FROM orders WHERE status = $1 AND customer_id = $2");
        assert_eq!(merged[0].calls, 300);
        assert_eq!(merged[1].query, "SELECT * FROM items WHERE kind = 'book' AND owner_id = $1");
    }
}
