//! `--apply`: create chosen indexes concurrently (never blocking writers for long: lock_timeout),
//! and measure the statements they help before and after with EXPLAIN ANALYZE.

use std::time::Instant;

use anyhow::{anyhow, Result};
use serde_json::Value;
use tokio_postgres::error::SqlState;

use super::catalog::Catalog;
use super::parse;
use super::planner::explain_json;
use crate::connect::Target;
use crate::db::{db_error_text, qualified_relation_sql, quote_literal, Db};
use crate::progress::Progress;
use crate::report::{AppliedIndex, IndexSuggestion, Measurement};

/// How many times each statement runs per measurement; the median is kept.
const RUNS: usize = 3;

pub struct ApplySettings {
    pub lock_timeout_ms: u64,
    pub statement_timeout_ms: u64,
    /// The least time the cleanup of a failed build may wait for its locks (see `cleanup_lock_timeout_ms`).
    pub cleanup_min_lock_timeout_ms: u64,
}

impl Default for ApplySettings {
    fn default() -> Self {
        ApplySettings {
            lock_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            cleanup_min_lock_timeout_ms: 30_000,
        }
    }
}

/// Creates each suggested index (already confirmed by the caller) and measures its statements.
pub async fn apply(
    target: &Target,
    suggestions: &[IndexSuggestion],
    settings: &ApplySettings,
    progress: &dyn Progress,
) -> Result<Vec<AppliedIndex>> {
    let db = Db::open(target, settings.statement_timeout_ms).await?;
    let mut out = Vec::new();
    progress.stage("creating indexes", suggestions.len() as u64);
    for s in suggestions {
        if !s.create_statement.starts_with("CREATE INDEX CONCURRENTLY ") {
            // A plain CREATE INDEX blocks writes for the whole build: never run on the user's
            // behalf. Only a partitioned table's suggestion is one; its rationale says how to build it.
            out.push(AppliedIndex::skipped(s, "partitioned table, see the note under its suggestion"));
            progress.advance(1);
            continue;
        }
        let mut measured = Vec::new();
        for h in &s.statements {
            measured.push((h.query.clone(), measure(&db, &h.query).await.map_err(|e| format!("{e:#}"))));
        }
        let started = Instant::now();
        let created = create(&db, s, settings).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let applied = match created {
            Ok(()) => {
                if s.kind.contains("expression") {
                    // Expression indexes get their own statistics only after ANALYZE.
                    let _ = db.client.batch_execute(&format!("ANALYZE {}", s.table)).await;
                }
                let mut measurements = Vec::new();
                for (query, before) in measured {
                    let after = measure(&db, &query).await.map_err(|e| format!("{e:#}"));
                    measurements.push(measurement(query, before, after));
                }
                AppliedIndex::created(s, elapsed_ms, measurements)
            }
            // Nothing to compare: the statements run as before (no "1.0× faster" for a failure).
            Err(failure) => AppliedIndex::failed(
                s,
                elapsed_ms,
                failure.error,
                failure.left_behind,
                failure.left_behind_ready,
            ),
        };
        out.push(applied);
        progress.advance(1);
    }
    Ok(out)
}

/// Why an index was not created, and the invalid index the failure left behind, if the cleanup
/// could not drop it (the DROP statement to run by hand).
struct CreateFailure {
    error: String,
    left_behind: Option<String>,
    /// Whether writes maintain the index left behind (pg_index.indisready), when known.
    left_behind_ready: Option<bool>,
}

impl From<anyhow::Error> for CreateFailure {
    fn from(e: anyhow::Error) -> Self {
        CreateFailure { error: format!("{e:#}"), left_behind: None, left_behind_ready: None }
    }
}

/// An invalid index a failed build left, if the cleanup could not drop it.
struct LeftBehind {
    /// The DROP statement to run by hand.
    drop: String,
    /// pg_index.indisready, when it could be read.
    ready: Option<bool>,
}

async fn create(
    db: &Db,
    suggestion: &IndexSuggestion,
    settings: &ApplySettings,
) -> std::result::Result<(), CreateFailure> {
    let create_statement = &suggestion.create_statement;
    let index = index_name(create_statement).ok_or_else(|| anyhow!("no index name in {create_statement}"))?;
    // Whatever has this name now is someone else's: the cleanup below must never touch it.
    let existed_before = relation_exists(db, &index).await?;
    let result = without_statement_timeout(db, settings.lock_timeout_ms, settings, create_statement).await?;
    let Err(e) = result else { return Ok(()) };
    // "already exists": this attempt created nothing, whatever is there belongs to someone else.
    let name_was_taken = e.code() == Some(&SqlState::DUPLICATE_TABLE);
    let left_behind = if !existed_before && !name_was_taken {
        drop_if_left_invalid(db, &index, &suggestion.table, settings).await
    } else {
        None
    };
    Err(CreateFailure {
        error: db_error_text(&e),
        left_behind_ready: left_behind.as_ref().and_then(|l| l.ready),
        left_behind: left_behind.map(|l| l.drop),
    })
}

/// Runs one statement with the given lock_timeout and no statement_timeout (a build takes as long
/// as it takes), then puts the session's statement_timeout back. The outer error is the session's.
async fn without_statement_timeout(
    db: &Db,
    lock_timeout_ms: u64,
    settings: &ApplySettings,
    statement: &str,
) -> Result<std::result::Result<(), tokio_postgres::Error>> {
    db.client
        .batch_execute(&format!("SET lock_timeout = {lock_timeout_ms}; SET statement_timeout = 0"))
        .await?;
    let result = db.client.batch_execute(statement).await;
    db.client
        .batch_execute(&format!(
            "SET lock_timeout = {}; SET statement_timeout = {}",
            settings.lock_timeout_ms, settings.statement_timeout_ms
        ))
        .await?;
    Ok(result)
}

async fn relation_exists(db: &Db, qualified_name: &str) -> Result<bool> {
    let row = db.client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified_name]).await?;
    Ok(row.get(0))
}

/// How long the cleanup of a failed build may wait for its locks. The build usually failed on
/// lock_timeout, waiting for a long transaction: DROP INDEX CONCURRENTLY waits for the same
/// transactions, so it gets several times longer (it does not block writers while it waits).
fn cleanup_lock_timeout_ms(settings: &ApplySettings) -> u64 {
    (settings.lock_timeout_ms * 5).max(settings.cleanup_min_lock_timeout_ms)
}

/// A failed CREATE INDEX CONCURRENTLY leaves an invalid index behind: drop it, but only when the
/// index with that name is on the suggestion's table and invalid (the caller checked it did not
/// exist before), so a valid index is never dropped by name alone. Returns the DROP statement to
/// run by hand, and whether writes maintain the index meanwhile, when it is still there.
async fn drop_if_left_invalid(
    db: &Db,
    index: &str,
    table: &str,
    settings: &ApplySettings,
) -> Option<LeftBehind> {
    let (name, _) = match invalid_index(db, index, table).await {
        Ok(Some(found)) => found,
        Ok(None) => return None,
        // Cannot tell whether the build left anything: not dropped blindly, pointed at instead.
        Err(_) => {
            let drop = format!("DROP INDEX CONCURRENTLY IF EXISTS {index};  -- if it is invalid");
            return Some(LeftBehind { drop, ready: None });
        }
    };
    let drop = format!("DROP INDEX CONCURRENTLY IF EXISTS {name};");
    let dropped = without_statement_timeout(db, cleanup_lock_timeout_ms(settings), settings, &drop).await;
    if let Ok(Ok(())) = dropped {
        return None;
    }
    // Read after the failed DROP, which may have got as far as making writes stop maintaining it.
    let ready = invalid_index(db, index, table).await.ok().flatten().map(|(_, ready)| ready);
    Some(LeftBehind { drop, ready })
}

/// The invalid index `index` on `table`, if there is one: its quoted, schema-qualified name and
/// whether writes maintain it (pg_index.indisready: a build that failed before its first phase
/// ended, on lock_timeout say, left one they do not).
async fn invalid_index(db: &Db, index: &str, table: &str) -> Result<Option<(String, bool)>> {
    let row = db
        .client
        .query_opt(
            &format!(
                "SELECT {}, i.indisready FROM pg_index i \
                 WHERE i.indexrelid = to_regclass($1) AND i.indrelid = to_regclass($2) AND NOT i.indisvalid",
                qualified_relation_sql("i.indexrelid")
            ),
            &[&index, &table],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// The (quoted) index name in `CREATE INDEX CONCURRENTLY name ON schema.table ...`, qualified with
/// the table's schema so DROP finds it.
fn index_name(create_statement: &str) -> Option<String> {
    let rest = create_statement.strip_prefix("CREATE INDEX CONCURRENTLY ")?;
    let (name, rest) = rest.split_once(" ON ")?;
    let schema = rest.split('.').next()?;
    Some(format!("{schema}.{name}"))
}

#[derive(Debug, Clone)]
struct Timing {
    cost: f64,
    ms: Option<f64>,
    note: String,
}

/// Median execution time of a read-only statement (parameters filled from pg_stats); DML and
/// statements whose parameters have no statistics are planned only.
async fn measure(db: &Db, query: &str) -> Result<Timing> {
    let names = parse::referenced_tables(query)?;
    let catalog = Catalog::load(db, &names).await?;
    let shape = parse::analyse(query, &catalog)?;
    let values = parameter_values(db, &catalog, &shape).await?;
    let name = "pgpilot_advisor_measure";
    let _ = db.client.batch_execute(&format!("DEALLOCATE {name}")).await;
    db.client
        .batch_execute(&format!("PREPARE {name} AS {query}"))
        .await
        .map_err(|e| anyhow!(db_error_text(&e)))?;
    let args = match &values {
        Some(v) if !v.is_empty() => format!("({})", v.join(", ")),
        _ if shape.param_count == 0 => String::new(),
        _ => format!("({})", vec!["NULL"; shape.param_count as usize].join(", ")),
    };
    let result = if shape.read_only && values.is_some() {
        let mut times = Vec::new();
        let mut cost = 0.0;
        for _ in 0..RUNS {
            // A SELECT can still write (a volatile function, a data-modifying CTE): run it read-only.
            db.client.batch_execute("BEGIN READ ONLY").await?;
            let plan =
                explain_json(db, &format!("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}{args}")).await;
            db.client.batch_execute("ROLLBACK").await?;
            let plan = plan?;
            cost = plan_cost(&plan);
            times.push(
                plan.get(0).and_then(|p| p.get("Execution Time")).and_then(Value::as_f64).unwrap_or(0.0),
            );
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let note =
            if shape.param_count > 0 { "run with parameter values from pg_stats" } else { "run as written" };
        Ok(Timing { cost, ms: Some(times[RUNS / 2]), note: note.into() })
    } else {
        let plan = explain_json(db, &format!("EXPLAIN (FORMAT JSON) EXECUTE {name}{args}")).await?;
        let note = if shape.read_only {
            "planned only: no statistics to pick parameter values"
        } else {
            "planned only: data-modifying statement"
        };
        Ok(Timing { cost: plan_cost(&plan), ms: None, note: note.into() })
    };
    let _ = db.client.batch_execute(&format!("DEALLOCATE {name}")).await;
    result
}

fn measurement(query: String, before: Result<Timing, String>, after: Result<Timing, String>) -> Measurement {
    Measurement {
        query,
        before_ms: before.as_ref().ok().and_then(|m| m.ms),
        after_ms: after.as_ref().ok().and_then(|m| m.ms),
        cost_before: before.as_ref().map(|m| m.cost).unwrap_or(0.0),
        cost_after: after.as_ref().map(|m| m.cost).unwrap_or(0.0),
        note: match &before {
            Ok(b) => b.note.clone(),
            Err(e) => format!("not measured: {e}"),
        },
    }
}

fn plan_cost(plan: &Value) -> f64 {
    plan.get(0)
        .and_then(|p| p.get("Plan"))
        .and_then(|p| p.get("Total Cost"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

/// A literal for each parameter: the column's most common value, else the middle of its
/// histogram. None when some parameter's column has no statistics.
async fn parameter_values(
    db: &Db,
    catalog: &Catalog,
    shape: &parse::StatementShape,
) -> Result<Option<Vec<String>>> {
    let mut values = Vec::new();
    for n in 1..=shape.param_count {
        let Some((table, column)) = shape.param_columns.get(&n) else { return Ok(None) };
        let Some(info) = catalog.tables.get(table) else { return Ok(None) };
        let row = db
            .client
            .query_opt(
                "SELECT coalesce((most_common_vals::text::text[])[1], \
                   (histogram_bounds::text::text[])[greatest(1, array_length(histogram_bounds::text::text[], 1) / 2)]) \
                 FROM pg_stats WHERE schemaname = $1 AND tablename = $2 AND attname = $3 AND NOT inherited",
                &[&info.schema, &info.name, column],
            )
            .await?;
        match row.and_then(|r| r.get::<_, Option<String>>(0)) {
            Some(v) => values.push(quote_literal(&v)),
            None => return Ok(None),
        }
    }
    Ok(Some(values))
}

#[cfg(test)]
mod tests {
    #[test]
    fn index_name_is_schema_qualified() {
        assert_eq!(
            super::index_name(
                "CREATE INDEX CONCURRENTLY orders_user_id_idx ON public.orders USING btree (user_id)"
            ),
            Some("public.orders_user_id_idx".into())
        );
    }
}
