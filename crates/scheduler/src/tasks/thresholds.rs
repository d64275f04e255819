//! The analyze and vacuum jobs: only the tables whose changes since the last pass cross a threshold,
//! with autovacuum's formula (`min_changes + scale_factor * rows`) so the numbers feel familiar.

use tokio_postgres::Client;

use super::{StopSignal, TaskContext, TaskOutput};
use crate::pg::{self, Context, JobError};
use crate::spec::ThresholdTask;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Analyze,
    Vacuum,
}

/// What a job's tables come to: those over the threshold, partitioned parents analyzed every run,
/// and names that are no table (the others are still done; the run then fails naming these).
struct Candidates {
    over: Vec<Candidate>,
    partitioned: Vec<Candidate>,
    missing: Vec<String>,
}

struct Candidate {
    sql_name: String,
    display: String,
    changes: i64,
    rows: f64,
}

async fn candidates(
    client: &Client,
    task: &ThresholdTask,
    pass: Pass,
    ctx: &TaskContext,
) -> Result<Candidates, JobError> {
    let mut oids = Vec::new();
    let mut partitioned = Vec::new();
    let mut missing = Vec::new();
    for name in &task.tables {
        let rel = match pg::find_relation(client, name).await {
            Ok(rel) => rel,
            Err(JobError::Invalid(why)) => {
                missing.push(why);
                continue;
            }
            Err(e) => return Err(e),
        };
        match rel.kind as u8 {
            // Autovacuum never analyzes a partitioned parent and keeps no change counts for it,
            // so a parent named here is analyzed on every run.
            b'p' if pass == Pass::Analyze => partitioned.push(Candidate {
                sql_name: rel.sql(),
                display: rel.display(),
                changes: 0,
                rows: 0.0,
            }),
            // Its partitions hold the rows and the dead tuples: each is vacuumed when over the
            // threshold (the parent has no counts of its own, so naming it did nothing).
            b'p' if ctx.server_version >= 120000 => oids.extend(leaf_partitions(client, &rel).await?),
            b'r' | b'm' | b'p' => oids.push(rel.oid),
            _ => return Err(JobError::Invalid(format!("{} is not a table", rel.display()))),
        }
    }
    let changes = match (pass, ctx.server_version >= 130000) {
        (Pass::Analyze, _) => "s.n_mod_since_analyze",
        (Pass::Vacuum, true) => "s.n_dead_tup + s.n_ins_since_vacuum",
        (Pass::Vacuum, false) => "s.n_dead_tup",
    };
    if !task.tables.is_empty() && oids.is_empty() && partitioned.is_empty() {
        return Err(JobError::Invalid(missing.join("; ")));
    }
    let only_listed = !task.tables.is_empty();
    let sql = format!(
        "SELECT quote_ident(s.schemaname) || '.' || quote_ident(s.relname), s.schemaname || '.' || s.relname,
                ({changes})::int8, greatest(c.reltuples, 0)::float8
           FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
          WHERE (NOT $1 OR s.relid = ANY($2))
            AND (cardinality($3::text[]) = 0 OR s.schemaname = ANY($3))
            AND ({changes}) >= $4::float8 + $5::float8 * greatest(c.reltuples, 0)
            AND ({changes}) > 0
          ORDER BY 3 DESC"
    );
    let min_changes = task.min_changes as f64;
    let schemas = if only_listed { Vec::new() } else { task.schemas.clone() };
    let rows = client
        .query(&sql, &[&only_listed, &oids, &schemas, &min_changes, &task.scale_factor])
        .await
        .context(|| "reading table change counts from pg_stat_user_tables".into())?;
    let over = rows
        .iter()
        .map(|r| Candidate { sql_name: r.get(0), display: r.get(1), changes: r.get(2), rows: r.get(3) })
        .collect();
    Ok(Candidates { over, partitioned, missing })
}

/// The leaf partitions under a partitioned table, sub-partitions included.
async fn leaf_partitions(client: &Client, rel: &pg::Relation) -> Result<Vec<u32>, JobError> {
    let rows = client
        .query("SELECT relid::oid FROM pg_partition_tree($1::oid::regclass) WHERE isleaf", &[&rel.oid])
        .await
        .context(|| format!("listing the partitions of {}", rel.display()))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn run(
    client: &Client,
    task: &ThresholdTask,
    pass: Pass,
    ctx: &TaskContext,
    out: &mut TaskOutput,
) -> Result<(), JobError> {
    let Candidates { mut over, partitioned, missing } = candidates(client, task, pass, ctx).await?;
    over.extend(partitioned);
    if let Some(max) = task.max_tables {
        if over.len() > max as usize {
            let left = over.len() - max as usize;
            over.truncate(max as usize);
            out.note(format!("{left} more tables are over the threshold; they come first next run"));
        }
    }
    let mut done = Vec::new();
    let result = process(client, &over, pass, &ctx.stop, &mut done).await;
    out.rows = Some(done.len() as i64);
    let verb = pass.verb();
    match (done.is_empty(), &result) {
        (true, Ok(())) => out.note("no table is over the threshold".into()),
        (true, Err(_)) => {}
        (false, _) => out.note(format!("{verb}: {}", done.join(", "))),
    }
    // The other tables are done; the run still counts as failed, so the configuration gets fixed.
    out.problems.extend(missing);
    result
}

impl Pass {
    fn verb(self) -> &'static str {
        match self {
            Pass::Analyze => "ANALYZE",
            Pass::Vacuum => "VACUUM",
        }
    }
}

/// Runs the pass on each table in turn until told to stop; `done` says which were, also when
/// one fails.
async fn process(
    client: &Client,
    tables: &[Candidate],
    pass: Pass,
    stop: &StopSignal,
    done: &mut Vec<String>,
) -> Result<(), JobError> {
    let verb = pass.verb();
    for t in tables {
        stop.check(|| format!("{verb} {}", t.display))?;
        client
            .batch_execute(&format!("{verb} {}", t.sql_name))
            .await
            .context(|| format!("{verb} {}", t.display))?;
        done.push(if t.changes > 0 {
            format!("{} ({} changes, ~{} rows)", t.display, t.changes, t.rows as i64)
        } else {
            t.display.clone()
        });
    }
    Ok(())
}
