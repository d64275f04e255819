//! Row counts of the demo application, for the demo report.

use anyhow::{Context, Result};
use serde::Serialize;
use tokio_postgres::Client;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub scale: f64,
    pub users: i64,
    pub accounts: i64,
    pub categories: i64,
    pub transactions: i64,
    pub transaction_partitions: i64,
    pub budgets: i64,
    pub workflows: i64,
    pub runs: i64,
    pub runs_pending: i64,
    pub runs_running: i64,
    pub runs_done: i64,
    pub runs_failed: i64,
    pub form_responses: i64,
    /// Heap, indexes and TOAST of both schemas.
    pub total_bytes: i64,
}

const STATS_SQL: &str = "
SELECT (SELECT scale FROM public.pgpilot_demo LIMIT 1),
       (SELECT count(*) FROM ledger.users),
       (SELECT count(*) FROM ledger.accounts),
       (SELECT count(*) FROM ledger.categories),
       (SELECT count(*) FROM ledger.transactions),
       (SELECT count(*) FROM pg_inherits WHERE inhparent = 'ledger.transactions'::regclass),
       (SELECT count(*) FROM ledger.budgets),
       (SELECT count(*) FROM flow.workflows),
       r.total, r.pending, r.running, r.done, r.failed,
       (SELECT count(*) FROM flow.form_responses),
       (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('ledger', 'flow') AND c.relkind IN ('r', 'm'))
FROM (SELECT count(*) AS total,
             count(*) FILTER (WHERE status = 'pending') AS pending,
             count(*) FILTER (WHERE status = 'running') AS running,
             count(*) FILTER (WHERE status = 'done') AS done,
             count(*) FILTER (WHERE status = 'failed') AS failed
        FROM flow.runs) r";

impl Stats {
    /// Exact row counts (the demo's tables are small enough to count).
    pub async fn collect(client: &Client) -> Result<Stats> {
        let row = client.query_one(STATS_SQL, &[]).await.context("counting the demo application's rows")?;
        Ok(Stats {
            scale: row.get(0),
            users: row.get(1),
            accounts: row.get(2),
            categories: row.get(3),
            transactions: row.get(4),
            transaction_partitions: row.get(5),
            budgets: row.get(6),
            workflows: row.get(7),
            runs: row.get(8),
            runs_pending: row.get(9),
            runs_running: row.get(10),
            runs_done: row.get(11),
            runs_failed: row.get(12),
            form_responses: row.get(13),
            total_bytes: row.get(14),
        })
    }
}
