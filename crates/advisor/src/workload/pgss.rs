//! pg_stat_statements: the server's own per-statement statistics for this database.

use anyhow::Result;

use super::WorkloadStatement;
use crate::db::Db;

pub async fn read(db: &Db, limit: usize) -> Result<Vec<WorkloadStatement>> {
    // PostgreSQL 13 split planning from execution time; before it the column was total_time.
    let time = if db.version_num >= 130000 { "total_exec_time" } else { "total_time" };
    let toplevel = if db.version_num >= 140000 { "AND toplevel" } else { "" };
    let sql = format!(
        "SELECT query, sum(calls)::int8, sum({time})::float8 FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) {toplevel} \
           AND query !~* '^\\s*(EXPLAIN|PREPARE|EXECUTE|DEALLOCATE|SET|SHOW|BEGIN|COMMIT|ROLLBACK|CREATE|DROP|ALTER|VACUUM|ANALYZE|COPY|SAVEPOINT|RELEASE|DISCARD|RESET)\\M' \
         GROUP BY query ORDER BY 3 DESC LIMIT {limit}"
    );
    let rows = db.rows(&sql).await?;
    Ok(rows
        .iter()
        .map(|r| WorkloadStatement {
            query: r.get(0),
            calls: r.get::<_, i64>(1).max(0) as u64,
            total_time_ms: Some(r.get(2)),
            source: "pg_stat_statements".into(),
        })
        .collect())
}
