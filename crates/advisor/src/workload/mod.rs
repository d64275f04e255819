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

/// Merges statements that differ only in constants or spacing (same fingerprint). Within one
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
        let key = fingerprint(&s.query);
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
        let texts: Vec<&str> = self.texts.iter().map(String::as_str).collect();
        let query = if texts.len() > 1 {
            crate::sqltext::parameterise_varying_literals(&texts)
        } else {
            self.texts[0].clone()
        };
        let source = self.per_source.iter().map(|p| p.source.as_str()).collect::<Vec<_>>().join("+");
        WorkloadStatement { query, calls: busiest.calls, total_time_ms, source }
    }
}

/// Heaviest first: by total time when known, else by calls.
pub fn sort_by_weight(statements: &mut [WorkloadStatement]) {
    statements.sort_by(|a, b| {
        let key = |s: &WorkloadStatement| (s.total_time_ms.unwrap_or(0.0), s.calls);
        key(b).partial_cmp(&key(a)).unwrap_or(std::cmp::Ordering::Equal)
    });
}

/// Mean latency over the application's statements, weighted by calls, in milliseconds. Statements
/// that read only the system catalogs (monitoring, this advisor's own queries) do not count.
pub fn mean_latency_ms(statements: &[WorkloadStatement]) -> Option<f64> {
    let timed: Vec<&WorkloadStatement> =
        statements.iter().filter(|s| s.total_time_ms.is_some() && reads_user_tables(&s.query)).collect();
    let calls: u64 = timed.iter().map(|s| s.calls).sum();
    let time: f64 = timed.iter().filter_map(|s| s.total_time_ms).sum();
    (calls > 0).then(|| time / calls as f64)
}

fn reads_user_tables(query: &str) -> bool {
    let Ok(tables) = crate::index::parse::referenced_tables(query) else { return true };
    tables.iter().any(|(schema, name)| match schema.as_deref() {
        Some("pg_catalog" | "information_schema") => false,
        Some(_) => true,
        None => !name.starts_with("pg_"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(q: &str, calls: u64, t: Option<f64>, src: &str) -> WorkloadStatement {
        WorkloadStatement { query: q.into(), calls, total_time_ms: t, source: src.into() }
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
