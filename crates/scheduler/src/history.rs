//! The run history in the job's own database: schema `pgpilot`, table `job_runs`.
//!
//! The table is shared by every pgpilot instance working on that database, so it is also how an
//! instance that lost the race for a job learns when the job last succeeded, and how a cron slot
//! is run once even when instances' clocks differ by a few seconds (a unique index on job + slot).

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
    error         text
);
CREATE UNIQUE INDEX IF NOT EXISTS job_runs_once_per_slot
    ON pgpilot.job_runs (job, scheduled_for) WHERE scheduled_for IS NOT NULL;
CREATE INDEX IF NOT EXISTS job_runs_by_job ON pgpilot.job_runs (job, started_at DESC);
COMMENT ON TABLE pgpilot.job_runs IS 'pgpilot maintenance job runs (written by pgpilot; safe to read)';
";

pub async fn exists(client: &Client) -> Result<bool, JobError> {
    let row = client
        .query_one("SELECT to_regclass('pgpilot.job_runs') IS NOT NULL", &[])
        .await
        .context(|| "looking for pgpilot.job_runs".into())?;
    Ok(row.get(0))
}

/// Creates the schema and table unless they exist; instances starting together take turns.
pub async fn ensure(client: &Client) -> Result<(), JobError> {
    if exists(client).await? {
        return Ok(());
    }
    let result = create(client).await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result.context(|| "creating schema pgpilot and table pgpilot.job_runs".into())
}

async fn create(client: &Client) -> Result<(), tokio_postgres::Error> {
    let lock = format!("BEGIN; SELECT pg_advisory_xact_lock({}, {})", SCHEMA_LOCK.0, SCHEMA_LOCK.1);
    client.batch_execute(&lock).await?;
    let schema_exists: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgpilot')", &[])
        .await?
        .get(0);
    if !schema_exists {
        client.batch_execute(SCHEMA_DDL).await?;
    }
    client.batch_execute(DDL).await?;
    client.batch_execute("COMMIT").await
}

/// Rows left 'running' by an instance that died: whoever holds the job's lock now knows they are over.
pub async fn mark_abandoned(client: &Client, job: &str) -> Result<u64, JobError> {
    client
        .execute(
            "UPDATE pgpilot.job_runs SET outcome = 'abandoned', finished_at = coalesce(finished_at, now()),
                    error = coalesce(error, 'the instance running it stopped before it finished')
              WHERE job = $1 AND outcome = 'running'",
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
    pub started_at: DateTime<Utc>,
}

/// Records a run's start. None when another instance already ran this cron slot.
pub async fn begin(client: &Client, run: &NewRun<'_>) -> Result<Option<i64>, JobError> {
    let row = client
        .query_opt(
            "INSERT INTO pgpilot.job_runs (job, kind, scheduled_for, instance, started_at, outcome)
             VALUES ($1, $2, $3, $4, $5, 'running')
             ON CONFLICT (job, scheduled_for) WHERE scheduled_for IS NOT NULL DO NOTHING
             RETURNING id",
            &[&run.job, &run.kind, &run.scheduled_for, &run.instance, &run.started_at],
        )
        .await
        .context(|| "recording the run's start in pgpilot.job_runs".into())?;
    Ok(row.map(|r| r.get(0)))
}

pub struct Finish<'a> {
    pub id: i64,
    pub outcome: &'a str,
    pub finished_at: DateTime<Utc>,
    pub attempts: i32,
    pub rows: Option<i64>,
    pub detail: Option<String>,
    pub error: Option<String>,
}

pub async fn finish(client: &Client, f: &Finish<'_>) -> Result<(), JobError> {
    client
        .execute(
            "UPDATE pgpilot.job_runs
                SET outcome = $2, finished_at = $3, attempts = $4, rows_affected = $5, detail = $6, error = $7
              WHERE id = $1",
            &[&f.id, &f.outcome, &f.finished_at, &f.attempts, &f.rows, &f.detail, &f.error],
        )
        .await
        .context(|| "recording the run's end in pgpilot.job_runs".into())?;
    Ok(())
}

/// Deletes this job's runs older than [`KEEP`] counted back from `now` (the scheduler's clock).
pub async fn prune(client: &Client, job: &str, now: DateTime<Utc>) -> Result<u64, JobError> {
    client
        .execute(
            &format!("DELETE FROM pgpilot.job_runs WHERE job = $1 AND started_at < $2::timestamptz - interval '{KEEP}'"),
            &[&job, &now],
        )
        .await
        .context(|| "pruning old history".into())
}

/// The latest success of `job` by any instance, if the history table exists.
pub async fn last_success(client: &Client, job: &str) -> Result<Option<DateTime<Utc>>, JobError> {
    if !exists(client).await? {
        return Ok(None);
    }
    let row = client
        .query_one(
            "SELECT max(finished_at) FROM pgpilot.job_runs WHERE job = $1 AND outcome = 'succeeded'",
            &[&job],
        )
        .await
        .context(|| "reading the last success".into())?;
    Ok(row.get(0))
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
