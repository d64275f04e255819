//! pgbench's tables, created the way `pgbench -i -I dtGvp` does (server-side generation).

use anyhow::{bail, Context, Result};
use tokio_postgres::Client;

/// Drops and recreates pgbench_accounts, _branches, _tellers and _history at `scale`.
pub async fn init(client: &Client, scale: i64) -> Result<()> {
    if scale < 1 {
        bail!("the pgbench scale must be a whole number of at least 1 (got {scale})");
    }
    let ddl = "
        DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers;
        CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
        CREATE TABLE pgbench_tellers (tid int not null, bid int, tbalance int, filler char(84)) WITH (fillfactor=100);
        CREATE TABLE pgbench_accounts (aid int not null, bid int, abalance int, filler char(84)) WITH (fillfactor=100);
        CREATE TABLE pgbench_branches (bid int not null, bbalance int, filler char(88)) WITH (fillfactor=100);";
    client.batch_execute(ddl).await.context("creating pgbench tables")?;
    let data = format!(
        "BEGIN;
         INSERT INTO pgbench_branches (bid, bbalance) SELECT bid, 0 FROM generate_series(1, {scale}) AS bid;
         INSERT INTO pgbench_tellers (tid, bid, tbalance) SELECT tid, (tid - 1) / 10 + 1, 0
             FROM generate_series(1, {tellers}) AS tid;
         INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT aid, (aid - 1) / 100000 + 1, 0, ''
             FROM generate_series(1, {accounts}) AS aid;
         COMMIT;",
        tellers = scale * 10,
        accounts = scale * 100_000
    );
    client.batch_execute(&data).await.context("generating pgbench data")?;
    for table in ["pgbench_branches", "pgbench_tellers", "pgbench_accounts", "pgbench_history"] {
        client.batch_execute(&format!("VACUUM ANALYZE {table}")).await.context("vacuuming pgbench tables")?;
    }
    client
        .batch_execute(
            "ALTER TABLE pgbench_branches ADD PRIMARY KEY (bid);
             ALTER TABLE pgbench_tellers ADD PRIMARY KEY (tid);
             ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid);",
        )
        .await
        .context("adding pgbench primary keys")?;
    Ok(())
}

/// The scale of existing pgbench tables (rows in pgbench_branches), as pgbench detects it.
pub async fn detect_scale(client: &Client) -> Result<Option<i64>> {
    let exists: bool =
        client.query_one("SELECT to_regclass('pgbench_branches') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        return Ok(None);
    }
    let n: i64 = client.query_one("SELECT count(*) FROM pgbench_branches", &[]).await?.get(0);
    Ok((n > 0).then_some(n))
}
