//! How many connections the application keeps busy, measured over a window. Little's law says
//! busy = throughput × latency, and pg_stat_statements' execution time already is that product:
//! its growth over the window divided by the window is the mean number of statements running.
//! The transaction counters of pg_stat_database are no measure of it: each parallel worker's
//! transaction is counted as one more (265 client transactions of a parallel scan raised them by
//! 858), and they count transactions where the latency is per statement.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::db::Db;

/// How long the load is watched: statements of a few hundred milliseconds finish several times
/// inside it, and a report is not held up for long.
pub const WINDOW: Duration = Duration::from_secs(5);
/// How often pg_stat_activity is sampled when pg_stat_statements is missing.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The application's load as measured by the advisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasuredLoad {
    /// Statements running on average over the window (Little's law's L).
    pub busy_connections: f64,
    /// Statements finished per second; None when only active backends were counted.
    pub statements_per_s: Option<f64>,
    pub window_s: f64,
    pub method: LoadMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadMethod {
    /// Growth of calls and total execution time of the ordinary statements.
    PgStatStatements,
    /// Client backends active in pg_stat_activity, sampled every 100 ms.
    ActiveBackends,
}

impl MeasuredLoad {
    /// One line saying what was measured, for how long, and what it came to.
    pub fn describe(&self) -> String {
        let window = self.window_s;
        match (self.method, self.statements_per_s) {
            (LoadMethod::PgStatStatements, Some(rate)) => format!(
                "pg_stat_statements over {window:.0} s: {rate:.1} statements/s ran {:.2} s of execution per second \
                 = {:.2} connections busy on average (Little's law; parallel workers are not counted)",
                self.busy_connections, self.busy_connections
            ),
            _ => format!(
                "pg_stat_activity sampled every {} ms over {window:.0} s: {:.2} client backends active on average \
                 (parallel workers are not counted)",
                SAMPLE_EVERY.as_millis(),
                self.busy_connections
            ),
        }
    }
}

/// The load over [`WINDOW`]: from pg_stat_statements when `use_pgss` and it can be read, else by
/// sampling pg_stat_activity.
pub async fn measure(db: &Db, use_pgss: bool) -> Option<MeasuredLoad> {
    if use_pgss {
        if let Some(load) = from_pg_stat_statements(db).await {
            return Some(load);
        }
    }
    from_active_backends(db).await
}

/// Calls and execution time of this database's ordinary top-level statements, as the workload
/// reader picks them (maintenance and pg_sleep are not the application's pooled work; the
/// advisor's own reading of pg_stat_statements is left out too).
fn pgss_totals_sql(db: &Db) -> String {
    let time = if db.version_num >= 130000 { "total_exec_time" } else { "total_time" };
    let toplevel = if db.version_num >= 140000 { "AND toplevel" } else { "" };
    format!(
        "SELECT coalesce(sum(calls), 0)::float8, coalesce(sum({time}), 0)::float8 FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) {toplevel} \
           AND query !~* '^\\s*(EXPLAIN|PREPARE|EXECUTE|DEALLOCATE|SET|SHOW|BEGIN|COMMIT|ROLLBACK|CREATE|DROP|ALTER|VACUUM|ANALYZE|COPY|SAVEPOINT|RELEASE|DISCARD|RESET|REINDEX|CLUSTER)\\M' \
           AND query !~* 'pg_sleep|pg_stat_statements'"
    )
}

async fn from_pg_stat_statements(db: &Db) -> Option<MeasuredLoad> {
    let sql = pgss_totals_sql(db);
    let totals = |row: tokio_postgres::Row| (row.get::<_, f64>(0), row.get::<_, f64>(1));
    let (calls_before, ms_before) = totals(db.client.query_one(&sql, &[]).await.ok()?);
    let start = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let (calls_after, ms_after) = totals(db.client.query_one(&sql, &[]).await.ok()?);
    let window = start.elapsed().as_secs_f64();
    // An entry evicted or reset meanwhile makes a sum shrink: never a negative load.
    let calls = (calls_after - calls_before).max(0.0);
    let busy = ((ms_after - ms_before) / 1000.0 / window).max(0.0);
    Some(MeasuredLoad {
        busy_connections: busy,
        statements_per_s: Some(calls / window),
        window_s: window,
        method: LoadMethod::PgStatStatements,
    })
}

async fn from_active_backends(db: &Db) -> Option<MeasuredLoad> {
    // Parallel workers run on a leader's behalf: the leader is the one pooled connection.
    let sql = "SELECT count(*)::float8 FROM pg_stat_activity \
               WHERE state = 'active' AND backend_type = 'client backend' \
                 AND pid <> pg_backend_pid() AND datname = current_database()";
    let start = Instant::now();
    let (mut sum, mut samples) = (0.0, 0u32);
    while start.elapsed() < WINDOW {
        // Each statement is its own transaction, so each reads pg_stat_activity afresh.
        sum += db.client.query_one(sql, &[]).await.ok()?.get::<_, f64>(0);
        samples += 1;
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    Some(MeasuredLoad {
        busy_connections: sum / samples.max(1) as f64,
        statements_per_s: None,
        window_s: start.elapsed().as_secs_f64(),
        method: LoadMethod::ActiveBackends,
    })
}
