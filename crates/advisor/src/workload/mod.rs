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

/// Merges statements that differ only in constants or spacing (same fingerprint): calls and time
/// add up, the first text is kept. Statements that do not parse keep their own entry.
pub fn merge(statements: Vec<WorkloadStatement>) -> Vec<WorkloadStatement> {
    let mut order: Vec<String> = Vec::new();
    let mut by_key: HashMap<String, WorkloadStatement> = HashMap::new();
    for s in statements {
        // Table names count in full: orders_2024 and orders_2025 are different statements here.
        let options =
            pg_query::FingerprintOptions::FULL_RELNAME | pg_query::FingerprintOptions::RANGEVAR_PG17_COMPAT;
        let key =
            pg_query::fingerprint(&s.query, 0, options).map(|f| f.hex).unwrap_or_else(|_| s.query.clone());
        match by_key.get_mut(&key) {
            Some(existing) => {
                existing.calls += s.calls;
                existing.total_time_ms = match (existing.total_time_ms, s.total_time_ms) {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                };
                if !existing.source.split('+').any(|x| x == s.source) {
                    existing.source = format!("{}+{}", existing.source, s.source);
                }
            }
            None => {
                order.push(key.clone());
                by_key.insert(key, s);
            }
        }
    }
    order.into_iter().filter_map(|k| by_key.remove(&k)).collect()
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
            stmt("select *  from t where id = 42", 3, Some(2.0), "pgpilot"),
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
        assert_eq!(merged[0].source, "file+pgpilot");
        assert_eq!(mean_latency_ms(&merged), Some(0.6));
        assert_ne!(merged[3].query, merged[4].query);
    }
}
