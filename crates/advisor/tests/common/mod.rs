#![allow(dead_code)]

use pgpilot_advisor::AdviseOptions;
use pgpilot_testkit::Cluster;

/// 60,000 orders for 2,000 users: 0.5% pending, 1% gifts in a jsonb column. ANALYZEd so the
/// planner knows an index would pay.
pub const ORDERS: &str = "
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    user_id int NOT NULL,
    created_at timestamptz NOT NULL,
    status text NOT NULL,
    total numeric(10,2) NOT NULL,
    data jsonb NOT NULL
);
INSERT INTO orders (user_id, created_at, status, total, data)
SELECT i % 2000, now() - (i || ' minutes')::interval,
       CASE WHEN i % 200 = 0 THEN 'pending' WHEN i % 3 = 0 THEN 'shipped' ELSE 'delivered' END,
       (i % 500)::numeric,
       jsonb_build_object('type', CASE WHEN i % 97 = 0 THEN 'gift' ELSE 'standard' END, 'n', i)
FROM generate_series(1, 60000) i;
";

/// The statement that needs (user_id, created_at DESC).
pub const RECENT_ORDERS: &str =
    "SELECT id, total FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 20";

pub fn database_with_orders(cluster: &Cluster, name: &str) -> String {
    cluster.psql("postgres", &format!("CREATE DATABASE {name}"));
    cluster.psql(name, ORDERS);
    cluster.psql(name, "VACUUM ANALYZE orders");
    cluster.url("postgres", name)
}

/// Options for tests: no machine detection surprises, extensions created, pgss off unless asked.
pub fn options(url: &str) -> AdviseOptions {
    let mut opts = AdviseOptions::new(url);
    opts.workload.pg_stat_statements = false;
    opts.index.install_extensions = true;
    opts.machine.memory_bytes = Some(8 << 30);
    opts.machine.cpus = Some(4);
    opts.pool.target_tps = Some(500.0);
    opts
}

/// The report for a workload file with `statements`, with the tests' options.
#[allow(dead_code)] // not every test file uses it
pub async fn advise_workload(url: &str, statements: &str) -> pgpilot_advisor::Report {
    use std::io::Write;
    let mut workload = tempfile::NamedTempFile::new().unwrap();
    workload.write_all(statements.as_bytes()).unwrap();
    let mut opts = options(url);
    opts.workload.file = Some(workload.path().to_path_buf());
    pgpilot_advisor::advise(&opts, &pgpilot_advisor::NoProgress).await.unwrap()
}

/// A session on `url` that holds `table` locked ACCESS EXCLUSIVE (as `LOCK TABLE`, `ALTER TABLE`
/// or `VACUUM FULL` do) until it runs ROLLBACK.
pub async fn hold_access_exclusive(url: &str, table: &str) -> tokio_postgres::Client {
    let (holder, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    holder.batch_execute(&format!("BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")).await.unwrap();
    holder
}
