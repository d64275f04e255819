//! The retention job: delete old rows in small batches with pauses, within a time budget.
//!
//! Each batch is its own short transaction, so locks are held briefly, replicas and autovacuum keep
//! up, and a job stopped half-way has still done useful work; the next run carries on.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::{TaskContext, TaskOutput};
use crate::pg::{self, quote_ident, Context, JobError, Relation};
use crate::spec::RetentionTask;

/// How a batch finds its rows again: by primary key, or by physical address on a plain table.
enum RowIdentity {
    PrimaryKey(Vec<String>),
    Ctid,
}

async fn row_identity(client: &Client, rel: &Relation) -> Result<RowIdentity, JobError> {
    let rows = client
        .query(
            "SELECT quote_ident(a.attname)
               FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
              WHERE i.indrelid = $1 AND i.indisprimary
              ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&rel.oid],
        )
        .await
        .context(|| format!("reading the primary key of {}", rel.display()))?;
    let key: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    if !key.is_empty() {
        return Ok(RowIdentity::PrimaryKey(key));
    }
    match rel.kind as u8 {
        b'r' => Ok(RowIdentity::Ctid),
        // ctid is only unique within one partition.
        _ => Err(JobError::Invalid(format!(
            "{} has no primary key; batched deletes need one on a partitioned table \
             (or use a partitions job with `retention`, which detaches whole partitions)",
            rel.display()
        ))),
    }
}

async fn check_column(client: &Client, rel: &Relation, column: &str) -> Result<(), JobError> {
    let found = client
        .query_opt(
            "SELECT 1 FROM pg_attribute WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped",
            &[&rel.oid, &column],
        )
        .await
        .context(|| format!("reading the columns of {}", rel.display()))?;
    match found {
        Some(_) => Ok(()),
        None => Err(JobError::Invalid(format!("{} has no column {column}", rel.display()))),
    }
}

/// True when some valid index has `column` as its first key column, so a batch can find old rows
/// without reading the whole table.
async fn column_is_indexed(client: &Client, rel: &Relation, column: &str) -> Result<bool, JobError> {
    let row = client
        .query_one(
            "SELECT EXISTS (
                 SELECT 1 FROM pg_index i
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                  WHERE i.indrelid = $1 AND i.indisvalid AND a.attname = $2)",
            &[&rel.oid, &column],
        )
        .await
        .context(|| format!("reading the indexes of {}", rel.display()))?;
    Ok(row.get(0))
}

/// The warning for a retention column no index starts with: every batch reads the whole table.
fn unindexed_column_warning(rel: &Relation, column: &str) -> String {
    format!(
        "warning: no index on {} starts with {}: every batch scans the whole table; \
         consider CREATE INDEX CONCURRENTLY ON {} ({})",
        rel.display(),
        quote_ident(column),
        rel.sql(),
        quote_ident(column)
    )
}

/// The privileges a batch needs, checked before the first one so a missing one is named with its
/// reason rather than as PostgreSQL's bare "permission denied for table". Besides DELETE (and
/// SELECT, for the columns the predicate reads), `FOR UPDATE` needs UPDATE: on the table or on any
/// one of its columns.
async fn check_privileges(client: &Client, rel: &Relation, column: &str) -> Result<(), JobError> {
    let row = client
        .query_one(
            "SELECT current_user::text,
                    has_table_privilege($1::oid, 'DELETE'),
                    has_any_column_privilege($1::oid, 'UPDATE'),
                    has_any_column_privilege($1::oid, 'SELECT')",
            &[&rel.oid],
        )
        .await
        .context(|| format!("reading the job role's privileges on {}", rel.display()))?;
    let (role, delete, update, select): (String, bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let missing: Vec<&str> = [("SELECT", select), ("DELETE", delete), ("UPDATE", update)]
        .iter()
        .filter(|(_, has)| !has)
        .map(|(p, _)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(JobError::Invalid(format!(
        "the job's role {role} lacks {} on {}: a retention job needs SELECT and DELETE, and UPDATE because \
         each batch locks its rows with SELECT ... FOR UPDATE SKIP LOCKED (so rows other sessions hold \
         are skipped, not waited for), which PostgreSQL allows only with UPDATE on the table or on one \
         of its columns; e.g. GRANT {} ON {} TO {}",
        missing.join(" and "),
        rel.display(),
        missing
            .iter()
            .map(|p| if *p == "UPDATE" { format!("UPDATE ({})", quote_ident(column)) } else { p.to_string() })
            .collect::<Vec<_>>()
            .join(", "),
        rel.sql(),
        quote_ident(&role)
    )))
}

/// The statement deleting one batch. `FOR UPDATE SKIP LOCKED` leaves rows another session holds
/// (a long `SELECT ... FOR UPDATE`, an open transaction that updated them) to a later run instead
/// of queueing behind them until lock_timeout fails the whole run; it also keeps two overlapping
/// runs from fighting over the same batch.
fn batch_sql(rel: &Relation, identity: &RowIdentity, predicate: &str, batch_size: u32) -> String {
    let table = rel.sql();
    // The predicate is repeated outside the subquery so a row changed by someone else between
    // the two is re-checked (EvalPlanQual) rather than deleted on its old merits.
    match identity {
        RowIdentity::PrimaryKey(cols) => {
            let cols = cols.join(", ");
            format!(
                "DELETE FROM {table} WHERE ({cols}) IN \
                 (SELECT {cols} FROM {table} WHERE {predicate} LIMIT {batch_size} FOR UPDATE SKIP LOCKED) \
                 AND {predicate}"
            )
        }
        RowIdentity::Ctid => format!(
            "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {predicate} \
             LIMIT {batch_size} FOR UPDATE SKIP LOCKED)) AND {predicate}"
        ),
    }
}

/// Rows still matching once a batch came back short: with SKIP LOCKED these are the rows other
/// sessions held (or changed) meanwhile. A plain read does not wait for row locks.
async fn rows_left_behind(
    client: &Client,
    rel: &Relation,
    predicate: &str,
    cutoff: &chrono::DateTime<chrono::Utc>,
) -> Result<i64, JobError> {
    let row = client
        .query_one(&format!("SELECT count(*) FROM {} WHERE {predicate}", rel.sql()), &[cutoff])
        .await
        .context(|| format!("counting the rows left in {}", rel.display()))?;
    Ok(row.get(0))
}

/// The sentence for a run that deleted everything it could reach.
fn finished_note(
    deleted: i64,
    batches: u64,
    cutoff: &chrono::DateTime<chrono::Utc>,
    left_behind: i64,
) -> String {
    let cutoff = cutoff.format("%Y-%m-%d %H:%M:%S UTC");
    if left_behind == 0 {
        return format!("deleted {deleted} rows older than {cutoff} in {batches} batches; none remain");
    }
    format!(
        "deleted {deleted} rows older than {cutoff} in {batches} batches; skipped {left_behind} rows \
         locked by other sessions (the next run tries them again)"
    )
}

/// How often a run writes the rows its batches committed into its history row: often enough to
/// follow a long run (and to see what an abandoned one did), seldom enough not to add a commit to
/// every batch.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// One run's batched delete: what it deletes, and how far it got.
struct Batches<'a> {
    task: &'a RetentionTask,
    rel: &'a Relation,
    identity: &'a RowIdentity,
    predicate: &'a str,
    cutoff: chrono::DateTime<chrono::Utc>,
    deleted: i64,
    batches: u64,
}

impl Batches<'_> {
    /// Deletes batch after batch until none is full, the time budget is spent or the run is told
    /// to stop (checked before each batch and during each pause), and notes how it ended.
    async fn run(
        &mut self,
        client: &Client,
        ctx: &TaskContext,
        out: &mut TaskOutput,
    ) -> Result<(), JobError> {
        let started = Instant::now();
        let mut progress_written = started;
        let statement = client
            .prepare(&batch_sql(self.rel, self.identity, self.predicate, self.task.batch_size))
            .await
            .context(|| format!("preparing the batched delete on {}", self.rel.display()))?;
        let budget = self.task.time_budget.duration().unwrap_or(Duration::from_secs(600));
        let pause = self.task.pause.duration().unwrap_or_default();
        let next_batch = || format!("deleting the next batch from {}", self.rel.display());
        loop {
            ctx.stop.check(next_batch)?;
            let n = client.execute(&statement, &[&self.cutoff]).await.context(|| {
                format!("deleting a batch from {} (after {} rows)", self.rel.display(), self.deleted)
            })?;
            self.deleted += n as i64;
            self.batches += 1;
            // A short batch means nothing unlocked is left: locked rows must not keep the run spinning.
            if n < u64::from(self.task.batch_size) {
                let left_behind = rows_left_behind(client, self.rel, self.predicate, &self.cutoff).await?;
                out.note(finished_note(self.deleted, self.batches, &self.cutoff, left_behind));
                return Ok(());
            }
            if started.elapsed() + pause >= budget {
                out.note(format!(
                    "deleted {} rows in {} batches; the time budget ({}) ended with rows left for the next run",
                    self.deleted, self.batches, self.task.time_budget
                ));
                return Ok(());
            }
            if progress_written.elapsed() >= PROGRESS_EVERY {
                ctx.progress.record(client, self.deleted).await?;
                progress_written = Instant::now();
            }
            ctx.stop.pause(pause, next_batch).await?;
        }
    }
}

pub async fn run(
    client: &Client,
    task: &RetentionTask,
    ctx: &TaskContext,
    out: &mut TaskOutput,
) -> Result<(), JobError> {
    let rel = pg::find_relation(client, &task.table).await?;
    if !matches!(rel.kind as u8, b'r' | b'p') {
        return Err(JobError::Invalid(format!("{} is not a table", rel.display())));
    }
    // A quoted identifier (`"Created At"`) or the exact name, as `pgpilot partitions convert` takes it.
    let column = pg::column_name(&task.column);
    check_column(client, &rel, &column).await?;
    check_privileges(client, &rel, &column).await?;
    let identity = row_identity(client, &rel).await?;
    if !column_is_indexed(client, &rel, &column).await? {
        let warning = unindexed_column_warning(&rel, &column);
        tracing::warn!("{warning}");
        out.note(warning);
    }
    let predicate = predicate(&column, task.filter.as_deref());
    // The earlier of pgpilot's clock and the database's: a host clock running fast must not make
    // rows the database still counts as young look old.
    let cutoff: chrono::DateTime<chrono::Utc> = client
        .query_one(
            "SELECT least($1::timestamptz, now()) - $2::text::interval",
            &[&ctx.now, &task.older_than.interval().to_sql()],
        )
        .await
        .context(|| "computing the retention cutoff".into())?
        .get(0);
    let mut batches = Batches {
        task,
        rel: &rel,
        identity: &identity,
        predicate: &predicate,
        cutoff,
        deleted: 0,
        batches: 0,
    };
    let result = batches.run(client, ctx, out).await;
    if result.is_err() && batches.deleted > 0 {
        // Each batch committed on its own: those rows are gone although the run failed.
        out.note(format!(
            "deleted {} rows in {} batches before the failure",
            batches.deleted, batches.batches
        ));
    }
    out.rows = Some(batches.deleted);
    result
}

/// The rows a batch may delete. The filter goes in as written, on lines of its own, so that a
/// `-- comment` ending it ends before the closing parenthesis.
fn predicate(column: &str, filter: Option<&str>) -> String {
    let older = format!("{} < $1::timestamptz", quote_ident(column));
    match filter {
        Some(filter) => format!("{older} AND (\n{filter}\n)"),
        None => older,
    }
}
