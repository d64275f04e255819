//! pg_stat_statements: the server's own per-statement statistics for this database.

use anyhow::Result;

use super::WorkloadStatement;
use crate::db::Db;

/// The text pg_stat_statements shows a role without pg_read_all_stats for other roles' statements.
const HIDDEN_TEXT: &str = "<insufficient privilege>";

/// What pg_stat_statements showed this role.
#[derive(Debug, Default)]
pub struct PgssWorkload {
    pub statements: Vec<WorkloadStatement>,
    /// Statements of other roles whose text this role may not see (no pg_read_all_stats).
    pub hidden: i64,
}

impl PgssWorkload {
    /// The report's note when part of the workload was hidden: advice on the rest may miss it.
    pub fn hidden_note(&self) -> Option<String> {
        (self.hidden > 0).then(|| {
            format!(
                "{} statements of other roles are hidden from this role in pg_stat_statements \
                 (shown as {HIDDEN_TEXT}): grant pg_read_all_stats to see the whole workload",
                self.hidden
            )
        })
    }
}

pub async fn read(db: &Db, limit: usize) -> Result<PgssWorkload> {
    // PostgreSQL 13 split planning from execution time; before it the column was total_time.
    let time = if db.version_num >= 130000 { "total_exec_time" } else { "total_time" };
    let toplevel = if db.version_num >= 140000 { "AND toplevel" } else { "" };
    let this_database =
        format!("dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) {toplevel}");
    let sql = format!(
        "SELECT query, sum(calls)::int8, sum({time})::float8 FROM pg_stat_statements \
         WHERE {this_database} AND query <> '{HIDDEN_TEXT}' \
           AND query !~* '^\\s*(EXPLAIN|PREPARE|EXECUTE|DEALLOCATE|SET|SHOW|BEGIN|COMMIT|ROLLBACK|CREATE|DROP|ALTER|VACUUM|ANALYZE|COPY|SAVEPOINT|RELEASE|DISCARD|RESET)\\M' \
         GROUP BY query ORDER BY 3 DESC LIMIT {limit}"
    );
    let statements = db
        .rows(&sql)
        .await?
        .iter()
        .map(|r| WorkloadStatement {
            query: r.get(0),
            calls: r.get::<_, i64>(1).max(0) as u64,
            total_time_ms: Some(r.get(2)),
            source: "pg_stat_statements".into(),
        })
        .collect();
    let hidden = db
        .rows(&format!(
            "SELECT count(*) FROM pg_stat_statements WHERE {this_database} AND query = '{HIDDEN_TEXT}'"
        ))
        .await?
        .first()
        .map_or(0, |r| r.get::<_, i64>(0));
    Ok(PgssWorkload { statements, hidden })
}
