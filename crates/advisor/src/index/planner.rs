//! Asking the planner: the cost of a statement's generic plan, and hypothetical indexes (hypopg).
//!
//! Parameterized statements ($1...) need a generic plan: PostgreSQL 16+ has EXPLAIN (GENERIC_PLAN);
//! before that the statement is PREPAREd and EXPLAIN EXECUTEd with NULL arguments under
//! plan_cache_mode = force_generic_plan, which plans without looking at the values. The prepared
//! statement is deallocated after each EXPLAIN because hypopg does not invalidate cached plans.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, Result};
use serde_json::Value;

use super::candidates::Candidate;
use super::catalog::TableInfo;
use crate::db::{db_error_text, Db};

/// What EXPLAIN said about a statement.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanSummary {
    pub total_cost: f64,
    /// Every index the plan uses.
    pub indexes: Vec<String>,
    /// Tables read by sequential scans.
    pub seq_scans: Vec<String>,
    /// Per table read by a sequential scan, the most rows such a scan is expected to return (after
    /// its filter; a parallel scan's per-process estimate times its processes).
    pub seq_scan_rows: BTreeMap<String, f64>,
}

impl PlanSummary {
    pub fn uses_index(&self, name: &str) -> bool {
        self.indexes.iter().any(|i| i == name)
    }
}

/// One hypothetical index as the planner sees it: one per leaf partition of a partitioned table.
#[derive(Debug, Default)]
pub struct Hypothetical {
    pub oids: Vec<u32>,
    pub names: Vec<String>,
}

impl Hypothetical {
    /// Whether `plan` uses it (on any partition).
    pub fn used_by(&self, plan: &PlanSummary) -> bool {
        self.names.iter().any(|n| plan.uses_index(n))
    }
}

pub struct Planner<'a> {
    db: &'a Db,
    counter: AtomicU64,
}

impl<'a> Planner<'a> {
    /// Prepares the session: generic plans for prepared statements (PostgreSQL 12+).
    pub async fn new(db: &'a Db) -> Result<Planner<'a>> {
        // Also on 16+: a statement EXPLAIN (GENERIC_PLAN) cannot type falls back to PREPARE.
        if db.version_num >= 120000 {
            db.client.batch_execute("SET plan_cache_mode = force_generic_plan").await?;
        }
        Ok(Planner { db, counter: AtomicU64::new(0) })
    }

    /// The session the planner asks on.
    pub fn db(&self) -> &Db {
        self.db
    }

    /// True when this server can plan a parameterized statement without values.
    pub fn supports_parameters(&self) -> bool {
        self.db.version_num >= 120000
    }

    /// The generic plan of `query`, which has `params` parameters. Arithmetic between parameters
    /// that PostgreSQL cannot type is planned folded into one parameter (see `plannable`).
    pub async fn explain(&self, query: &str, params: i32) -> Result<PlanSummary> {
        match self.explain_as_written(query, params).await {
            Err(e) if super::plannable::untypeable_operator(&e.to_string()) => {
                let Some(folded) = super::plannable::fold_parameter_arithmetic(query) else { return Err(e) };
                self.explain_as_written(&folded, params).await
            }
            plan => plan,
        }
    }

    async fn explain_as_written(&self, query: &str, params: i32) -> Result<PlanSummary> {
        let query = super::plannable::typed_literal_params(query);
        let query = query.as_ref();
        let json = if params == 0 {
            explain_json(self.db, &format!("EXPLAIN (FORMAT JSON) {query}")).await?
        } else if self.db.version_num >= 160000 {
            match explain_json(self.db, &format!("EXPLAIN (GENERIC_PLAN, FORMAT JSON) {query}")).await {
                Err(e) if super::plannable::untyped_parameter(&e.to_string()).is_some() => {
                    self.explain_prepared(query, params).await?
                }
                plan => plan?,
            }
        } else if self.supports_parameters() {
            self.explain_prepared(query, params).await?
        } else {
            return Err(anyhow!("PostgreSQL before 12 cannot plan parameterized statements without values"));
        };
        summarize(&json)
    }

    async fn explain_prepared(&self, query: &str, params: i32) -> Result<Value> {
        let name = format!("pgpilot_advisor_{}", self.counter.fetch_add(1, Ordering::Relaxed));
        // `unknown` lets PostgreSQL infer the type, as a bare PREPARE does.
        let mut types = vec!["unknown"; params as usize];
        loop {
            let declared = types.join(", ");
            let prepared =
                self.db.client.batch_execute(&format!("PREPARE {name}({declared}) AS {query}")).await;
            let Err(e) = prepared else { break };
            let message = db_error_text(&e);
            match super::plannable::untyped_parameter(&message) {
                Some(n) if types.get(n.wrapping_sub(1)) == Some(&"unknown") => types[n - 1] = "text",
                _ => return Err(anyhow!(message)),
            }
        }
        let nulls = vec!["NULL"; params as usize].join(", ");
        let result =
            self.without_partition_pruning(&format!("EXPLAIN (FORMAT JSON) EXECUTE {name}({nulls})")).await;
        let _ = self.db.client.batch_execute(&format!("DEALLOCATE {name}")).await;
        result
    }

    /// EXPLAIN EXECUTE with NULL arguments prunes every partition at executor start ("Subplans
    /// Removed"), hiding which indexes the generic plan would use on them: only this EXPLAIN is
    /// planned without partition pruning. Everything else is planned with it, as PostgreSQL plans
    /// the real statement: a literal's plan-time pruning leaves out the partitions an index on the
    /// partition key would otherwise be credited with skipping, and EXPLAIN (GENERIC_PLAN) does no
    /// executor-start pruning.
    async fn without_partition_pruning(&self, explain: &str) -> Result<Value> {
        if self.db.version_num < 110000 {
            return explain_json(self.db, explain).await;
        }
        self.db.client.batch_execute("SET enable_partition_pruning = off").await?;
        let result = explain_json(self.db, explain).await;
        self.db.client.batch_execute("RESET enable_partition_pruning").await?;
        result
    }

    /// A hypothetical index for `candidate` on `table`. The planner plans each partition of a
    /// partitioned table with the partition's own indexes, so there it is one per leaf partition.
    pub async fn hypothetical_index(&self, table: &TableInfo, candidate: &Candidate) -> Result<Hypothetical> {
        let mut made = Hypothetical::default();
        for target in index_targets(table) {
            match self.hypothetical(&candidate.create_sql(&target, false, None)).await {
                Ok((oid, name)) => {
                    made.oids.push(oid);
                    made.names.push(name);
                }
                Err(e) => {
                    self.drop_all(&made).await;
                    return Err(e);
                }
            }
        }
        if made.oids.is_empty() {
            return Err(anyhow!("{} has no partition to index", table.qualified()));
        }
        Ok(made)
    }

    /// Total estimated size of a hypothetical index (all its partitions).
    pub async fn hypothetical_index_size(&self, index: &Hypothetical) -> Option<i64> {
        let mut total = 0;
        for &oid in &index.oids {
            total += self.hypothetical_size(oid).await?;
        }
        Some(total)
    }

    /// The rows an index of `candidate` holds: the table's, or for a partial index the planner's
    /// estimate of the rows its predicate keeps (the table's when it cannot tell).
    pub async fn rows_indexed(&self, table: &TableInfo, candidate: &Candidate) -> f64 {
        let Some(predicate) = &candidate.predicate else { return table.rows() };
        let sql = format!("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} WHERE {predicate}", table.qualified());
        let planned =
            explain_json(self.db, &sql).await.ok().and_then(|json| json[0]["Plan"]["Plan Rows"].as_f64());
        planned.unwrap_or_else(|| table.rows())
    }

    pub async fn drop_all(&self, index: &Hypothetical) {
        for &oid in &index.oids {
            self.drop_hypothetical(oid).await;
        }
    }

    /// Creates a hypothetical index; returns its oid and the name plans will show.
    pub async fn hypothetical(&self, create_sql: &str) -> Result<(u32, String)> {
        let row = self
            .db
            .client
            .query_one("SELECT indexrelid, indexname::text FROM hypopg_create_index($1)", &[&create_sql])
            .await
            .map_err(|e| anyhow!(db_error_text(&e)))?;
        Ok((row.get(0), row.get(1)))
    }

    pub async fn hypothetical_size(&self, oid: u32) -> Option<i64> {
        let row = self.db.client.query_one("SELECT hypopg_relation_size($1)::int8", &[&oid]).await.ok()?;
        row.get(0)
    }

    pub async fn drop_hypothetical(&self, oid: u32) {
        let _ = self.db.client.query("SELECT hypopg_drop_index($1)", &[&oid]).await;
    }

    pub async fn reset_hypothetical(&self) {
        let _ = self.db.client.batch_execute("SELECT hypopg_reset()").await;
    }
}

/// The table itself, or each leaf partition of a partitioned one (read with the catalog).
fn index_targets(table: &TableInfo) -> Vec<TableInfo> {
    if !table.partitioned {
        return vec![table.clone()];
    }
    let leaf = |(schema, name): &(String, String)| TableInfo {
        schema: schema.clone(),
        name: name.clone(),
        partitioned: false,
        leaf_partitions: Vec::new(),
        ..table.clone()
    };
    table.leaf_partitions.iter().map(leaf).collect()
}

/// This backend's index scans not yet reported to the statistics, as "oid:n,oid:n". They are the
/// session's own: another session's scans never show here, while pg_stat_user_indexes counts all.
const PENDING_SCANS: &str = "SELECT coalesce(string_agg(indexrelid::text || ':' || n::text, ','), '') \
     FROM (SELECT indexrelid, pg_catalog.pg_stat_get_xact_numscans(indexrelid) AS n FROM pg_catalog.pg_index) s \
     WHERE n > 0";

/// Runs an EXPLAIN (FORMAT JSON ...) and returns its JSON. Planning probes btree indexes for a
/// column's actual minimum or maximum, and each probe counts as a scan: the probes are added to
/// `db.own_index_scans`. The pending counts are read before and after the EXPLAIN in the same
/// message, so in one implicit transaction: a backend reports them only when idle, never in between.
pub async fn explain_json(db: &Db, sql: &str) -> Result<Value> {
    let messages = db
        .client
        .simple_query(&format!("{PENDING_SCANS}; {sql}; {PENDING_SCANS}"))
        .await
        .map_err(|e| anyhow!(db_error_text(&e)))?;
    let rows: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    let [before, plan, after] = rows.as_slice() else { return Err(anyhow!("EXPLAIN returned no plan")) };
    add_own_scans(db, &parse_scans(before), &parse_scans(after));
    Ok(serde_json::from_str(plan)?)
}

fn parse_scans(text: &str) -> HashMap<u32, i64> {
    text.split(',')
        .filter_map(|pair| pair.split_once(':'))
        .filter_map(|(oid, n)| Some((oid.parse().ok()?, n.parse().ok()?)))
        .collect()
}

fn add_own_scans(db: &Db, before: &HashMap<u32, i64>, after: &HashMap<u32, i64>) {
    let Ok(mut own) = db.own_index_scans.lock() else { return };
    for (&index, &n) in after {
        let caused = n - before.get(&index).copied().unwrap_or(0);
        if caused > 0 {
            *own.entry(index).or_default() += caused;
        }
    }
}

/// Total cost, indexes used and tables scanned sequentially, from EXPLAIN (FORMAT JSON).
pub fn summarize(json: &Value) -> Result<PlanSummary> {
    let plan =
        json.get(0).and_then(|p| p.get("Plan")).ok_or_else(|| anyhow!("EXPLAIN output has no Plan"))?;
    let total_cost =
        plan.get("Total Cost").and_then(Value::as_f64).ok_or_else(|| anyhow!("plan has no Total Cost"))?;
    let mut summary = PlanSummary {
        total_cost,
        indexes: Vec::new(),
        seq_scans: Vec::new(),
        seq_scan_rows: BTreeMap::new(),
    };
    walk(plan, 1.0, &mut summary);
    Ok(summary)
}

/// Walks the plan; `processes` is how many processes share the parallel-aware nodes below the
/// nearest Gather (1 outside one).
fn walk(node: &Value, processes: f64, summary: &mut PlanSummary) {
    if let Some(name) = node.get("Index Name").and_then(Value::as_str) {
        summary.indexes.push(name.to_string());
    }
    if node.get("Node Type").and_then(Value::as_str) == Some("Seq Scan") {
        if let Some(rel) = node.get("Relation Name").and_then(Value::as_str) {
            summary.seq_scans.push(rel.to_string());
            let parallel = node.get("Parallel Aware").and_then(Value::as_bool) == Some(true);
            let rows = node.get("Plan Rows").and_then(Value::as_f64).unwrap_or(0.0);
            let rows = if parallel { rows * processes } else { rows };
            let most = summary.seq_scan_rows.entry(rel.to_string()).or_insert(0.0);
            *most = most.max(rows);
        }
    }
    let processes = match node.get("Workers Planned").and_then(Value::as_f64) {
        Some(workers) => parallel_divisor(workers),
        None => processes,
    };
    for child in node.get("Plans").and_then(Value::as_array).into_iter().flatten() {
        walk(child, processes, summary);
    }
}

/// How many processes' worth of rows a parallel plan with `workers` workers divides its estimate
/// by: the workers, plus what the leader contributes besides gathering (PostgreSQL's
/// get_parallel_divisor, with parallel_leader_participation on).
fn parallel_divisor(workers: f64) -> f64 {
    let leader = 1.0 - 0.3 * workers;
    if leader > 0.0 {
        workers + leader
    } else {
        workers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_finds_costs_indexes_and_seq_scans() {
        let json: Value = serde_json::from_str(
            r#"[{"Plan": {"Node Type": "Nested Loop", "Total Cost": 42.5, "Plans": [
                {"Node Type": "Seq Scan", "Relation Name": "users", "Total Cost": 10.0},
                {"Node Type": "Index Scan", "Index Name": "<13556>btree_orders_user_id", "Relation Name": "orders", "Total Cost": 8.0}
            ]}}]"#,
        )
        .unwrap();
        let s = summarize(&json).unwrap();
        assert_eq!(s.total_cost, 42.5);
        assert!(s.uses_index("<13556>btree_orders_user_id"));
        assert_eq!(s.seq_scans, ["users"]);
        assert_eq!(s.seq_scan_rows["users"], 0.0);
    }

    #[test]
    fn a_parallel_scan_returns_its_rows_from_every_process() {
        let json: Value = serde_json::from_str(
            r#"[{"Plan": {"Node Type": "Gather", "Total Cost": 900.0, "Workers Planned": 2, "Plans": [
                {"Node Type": "Seq Scan", "Parallel Aware": true, "Relation Name": "big", "Plan Rows": 1000}
            ]}}]"#,
        )
        .unwrap();
        let s = summarize(&json).unwrap();
        assert!((s.seq_scan_rows["big"] - 2400.0).abs() < 1e-6, "{s:?}");
    }
}
