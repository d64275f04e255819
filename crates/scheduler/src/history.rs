//! The run history in the job's own database: schema `pgpilot`, table `job_runs`.
//!
//! The table is shared by every pgpilot instance working on that database, so it is also how an
//! instance that lost the race for a job learns when the job last succeeded, and how a cron slot
//! is run once even when instances' clocks differ by a few seconds (a unique index on job + slot).
//!
//! Every time written here is the database's (`clock_timestamp()`, `now()`), never an instance's:
//! the instances of a fleet share the table, and one whose clock is off must neither date its runs
//! wrongly nor prune the others' history.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::pg::{Context, JobError};
use crate::report::RunRecord;

/// The advisory lock class that serializes creating the schema between instances.
const SCHEMA_LOCK: (i32, i32) = (0x7067_6a62, 0);
/// History older than this is pruned after a job's runs.
const KEEP: &str = "90 days";

/// Run only when the schema is missing: `CREATE SCHEMA IF NOT EXISTS` checks the database's CREATE
/// privilege before it looks, so it fails for a role given a schema made for it (and no more).
const SCHEMA_DDL: &str = "CREATE SCHEMA pgpilot";
const DDL: &str = "
CREATE TABLE IF NOT EXISTS pgpilot.job_runs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job           text        NOT NULL,
    kind          text        NOT NULL,
    scheduled_for timestamptz,
    instance      text        NOT NULL,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    outcome       text        NOT NULL
                  CHECK (outcome IN ('running', 'succeeded', 'failed', 'abandoned')),
    attempts      int         NOT NULL DEFAULT 1,
    rows_affected bigint,
    detail        text,
    error         text,
    default_partition_rows bigint
);
CREATE UNIQUE INDEX IF NOT EXISTS job_runs_once_per_slot
    ON pgpilot.job_runs (job, scheduled_for) WHERE scheduled_for IS NOT NULL;
CREATE INDEX IF NOT EXISTS job_runs_by_job ON pgpilot.job_runs (job, started_at DESC);
COMMENT ON TABLE pgpilot.job_runs IS 'pgpilot maintenance job runs (written by pgpilot; safe to read)';
";
/// Columns added since the table was first made, for tables an older pgpilot made.
const ADDED_COLUMNS: &str =
    "ALTER TABLE pgpilot.job_runs ADD COLUMN IF NOT EXISTS default_partition_rows bigint";

pub async fn exists(client: &Client) -> Result<bool, JobError> {
    let row = client
        .query_one("SELECT to_regclass('pgpilot.job_runs') IS NOT NULL", &[])
        .await
        .context(|| "looking for pgpilot.job_runs".into())?;
    Ok(row.get(0))
}

/// True when the table has every column this version writes.
async fn is_current(client: &Client) -> Result<bool, JobError> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('pgpilot.job_runs')
                              AND attname = 'default_partition_rows' AND NOT attisdropped)",
            &[],
        )
        .await
        .context(|| "reading the columns of pgpilot.job_runs".into())?;
    Ok(row.get(0))
}

/// Creates the schema and table unless they exist, and adds the columns a table made by an older
/// pgpilot lacks (which takes the table's owner: the role that made it); instances starting
/// together take turns.
pub async fn ensure(client: &Client) -> Result<(), JobError> {
    let (what, result) = if !exists(client).await? {
        ("creating schema pgpilot and table pgpilot.job_runs", create(client).await)
    } else if !is_current(client).await? {
        ("adding the column default_partition_rows to pgpilot.job_runs", upgrade(client).await)
    } else {
        return Ok(());
    };
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result.context(|| what.into())
}

/// Takes the schema lock for the rest of the transaction it begins.
async fn begin_locked(client: &Client) -> Result<(), tokio_postgres::Error> {
    let lock = format!("BEGIN; SELECT pg_advisory_xact_lock({}, {})", SCHEMA_LOCK.0, SCHEMA_LOCK.1);
    client.batch_execute(&lock).await
}

async fn upgrade(client: &Client) -> Result<(), tokio_postgres::Error> {
    begin_locked(client).await?;
    client.batch_execute(ADDED_COLUMNS).await?;
    client.batch_execute("COMMIT").await
}

async fn create(client: &Client) -> Result<(), tokio_postgres::Error> {
    begin_locked(client).await?;
    let schema_exists: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgpilot')", &[])
        .await?
        .get(0);
    if !schema_exists {
        client.batch_execute(SCHEMA_DDL).await?;
    }
    client.batch_execute(DDL).await?;
    // Another instance may have made the table as an older pgpilot, before this one took the lock.
    client.batch_execute(ADDED_COLUMNS).await?;
    client.batch_execute("COMMIT").await
}

/// What an abandoned run's row says. Its instance may have died, or lost its connection for
/// longer than it kept trying to record the end: the row cannot tell which.
const ABANDONED: &str = "its end was never recorded (the instance stopped or lost its connection)";

/// Rows left 'running' whose end was never written: whoever holds the job's lock now knows they
/// are over.
pub async fn mark_abandoned(client: &Client, job: &str) -> Result<u64, JobError> {
    client
        .execute(
            &format!(
                "UPDATE pgpilot.job_runs SET outcome = 'abandoned', finished_at = coalesce(finished_at, now()),
                    error = coalesce(error, '{ABANDONED}')
              WHERE job = $1 AND outcome = 'running'"
            ),
            &[&job],
        )
        .await
        .context(|| "marking abandoned runs".into())
}

pub struct NewRun<'a> {
    pub job: &'a str,
    pub kind: &'a str,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub instance: &'a str,
}

/// Records a run's start. None when another instance already ran this cron slot.
pub async fn begin(client: &Client, run: &NewRun<'_>) -> Result<Option<i64>, JobError> {
    let row = client
        .query_opt(
            "INSERT INTO pgpilot.job_runs (job, kind, scheduled_for, instance, started_at, outcome)
             VALUES ($1, $2, $3, $4, clock_timestamp(), 'running')
             ON CONFLICT (job, scheduled_for) WHERE scheduled_for IS NOT NULL DO NOTHING
             RETURNING id",
            &[&run.job, &run.kind, &run.scheduled_for, &run.instance],
        )
        .await
        .context(|| "recording the run's start in pgpilot.job_runs".into())?;
    Ok(row.map(|r| r.get(0)))
}

/// A run's history row as its task sees it while it works.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub run_id: i64,
    /// Rows the run's earlier attempts committed: the row counts the whole run.
    pub rows_before: i64,
}

impl Progress {
    /// Writes the rows committed so far into the running row, so that a run still going, or one
    /// that ends up abandoned (its instance killed), shows what it has done.
    pub async fn record(&self, client: &Client, rows_this_attempt: i64) -> Result<(), JobError> {
        client
            .execute(
                "UPDATE pgpilot.job_runs SET rows_affected = $2 WHERE id = $1 AND outcome = 'running'",
                &[&self.run_id, &(self.rows_before + rows_this_attempt)],
            )
            .await
            .context(|| "recording the run's progress in pgpilot.job_runs".into())?;
        Ok(())
    }
}

pub struct Finish<'a> {
    pub id: i64,
    pub outcome: &'a str,
    pub attempts: i32,
    pub rows: Option<i64>,
    pub detail: Option<String>,
    pub error: Option<String>,
    /// Rows the run found in the default partition (partitions jobs that have one).
    pub default_partition_rows: Option<i64>,
}

pub async fn finish(client: &Client, f: &Finish<'_>) -> Result<(), JobError> {
    client
        .execute(
            "UPDATE pgpilot.job_runs
                SET outcome = $2, finished_at = clock_timestamp(), attempts = $3, rows_affected = $4,
                    detail = $5, error = $6, default_partition_rows = $7
              WHERE id = $1",
            &[&f.id, &f.outcome, &f.attempts, &f.rows, &f.detail, &f.error, &f.default_partition_rows],
        )
        .await
        .context(|| "recording the run's end in pgpilot.job_runs".into())?;
    Ok(())
}

/// Deletes this job's runs started more than [`KEEP`] ago, except its latest success and its
/// latest run: the fleet's last success (and the staleness alert on it) must outlive the pruning
/// of a job that has been failing for longer than that, or that runs less often.
pub async fn prune(client: &Client, job: &str) -> Result<u64, JobError> {
    client
        .execute(
            &format!(
                "DELETE FROM pgpilot.job_runs
                  WHERE job = $1 AND started_at < now() - interval '{KEEP}'
                    AND id NOT IN ((SELECT id FROM pgpilot.job_runs WHERE job = $1 AND outcome = 'succeeded'
                                     ORDER BY finished_at DESC, id DESC LIMIT 1)
                                   UNION ALL
                                   (SELECT id FROM pgpilot.job_runs WHERE job = $1
                                     ORDER BY started_at DESC, id DESC LIMIT 1))"
            ),
            &[&job],
        )
        .await
        .context(|| "pruning old history".into())
}

/// What the history says about a job, for every instance's metrics alike.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetView {
    pub job: String,
    /// The latest success by any instance.
    pub last_success: Option<DateTime<Utc>>,
    /// The start of the job's earliest recorded run: it has been scheduled at least since then,
    /// whichever instances have restarted since.
    pub first_run: Option<DateTime<Utc>>,
    /// Rows in the default partition as the latest run that counted them found them; None when
    /// no run did, or the latest success found no default partition to count.
    pub default_partition_rows: Option<i64>,
}

/// The [`FleetView`] of each job named, if the history table exists.
pub async fn fleet_view(client: &Client, jobs: &[String]) -> Result<Vec<FleetView>, JobError> {
    if !exists(client).await? {
        return Ok(Vec::new());
    }
    // The column is read through to_jsonb so that a table an older pgpilot made, which no run of
    // this version has upgraded yet, reads as holding no count. A failed run that did not get as
    // far as counting leaves the figure of the run before it.
    let rows = client
        .query(
            "SELECT j.job,
                    (SELECT max(finished_at) FROM pgpilot.job_runs r
                      WHERE r.job = j.job AND r.outcome = 'succeeded'),
                    (SELECT min(started_at) FROM pgpilot.job_runs r WHERE r.job = j.job),
                    (SELECT (to_jsonb(r) ->> 'default_partition_rows')::bigint FROM pgpilot.job_runs r
                      WHERE r.job = j.job AND r.finished_at IS NOT NULL
                        AND (r.outcome = 'succeeded'
                             OR (r.outcome = 'failed' AND to_jsonb(r) ->> 'default_partition_rows' IS NOT NULL))
                      ORDER BY r.finished_at DESC, r.id DESC LIMIT 1)
               FROM unnest($1::text[]) AS j(job)",
            &[&jobs],
        )
        .await
        .context(|| "reading the fleet's runs from pgpilot.job_runs".into())?;
    Ok(rows
        .iter()
        .map(|r| FleetView {
            job: r.get(0),
            last_success: r.get(1),
            first_run: r.get(2),
            default_partition_rows: r.get(3),
        })
        .collect())
}

/// The latest runs of the given jobs, newest first.
pub async fn recent(client: &Client, jobs: &[String], limit: i64) -> Result<Vec<RunRecord>, JobError> {
    if !exists(client).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT id, job, kind, scheduled_for, instance, started_at, finished_at, outcome, attempts,
                    rows_affected, detail, error
               FROM pgpilot.job_runs WHERE job = ANY($1)
              ORDER BY started_at DESC, id DESC LIMIT $2",
            &[&jobs, &limit],
        )
        .await
        .context(|| "reading pgpilot.job_runs".into())?;
    Ok(rows
        .iter()
        .map(|r| RunRecord {
            id: r.get(0),
            job: r.get(1),
            kind: r.get(2),
            scheduled_for: r.get(3),
            instance: r.get(4),
            started_at: r.get(5),
            finished_at: r.get(6),
            outcome: r.get(7),
            attempts: r.get(8),
            rows: r.get(9),
            detail: r.get(10),
            error: r.get(11),
        })
        .collect())
}
