//! One run of one job: connect, take the fleet-wide lock, record, set timeouts, execute, retry.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::clock::Clock;
use crate::history::{self, Finish, NewRun, Progress};
use crate::pg::{self, Context, JobError};
use crate::report::{Outcome, RunReport};
use crate::resolver::DatabaseResolver;
use crate::spec::JobSpec;
use crate::tasks::{self, StopSignal, TaskContext, TaskOutput};

/// The advisory lock class of job runs ("pgjr"); the second key is a hash of the job's name.
pub const JOB_LOCK_CLASS: i32 = 0x7067_6a72;
/// Retry pauses stop growing here.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The pauses before each attempt to reconnect and record the end of a run whose connection was
/// lost: about half a minute in all, long enough for a server restart or a failover.
const RECORD_RECONNECT_PAUSES: [Duration; 5] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(8),
    Duration::from_secs(15),
];

/// The advisory lock keys of a job: stable across versions and machines (FNV-1a of the name).
pub fn advisory_key(job: &str) -> (i32, i32) {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in job.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (JOB_LOCK_CLASS, hash as i32)
}

pub struct RunRequest<'a> {
    pub spec: &'a JobSpec,
    pub config: &'a tokio_postgres::Config,
    pub connector: &'a dyn DatabaseResolver,
    pub clock: &'a dyn Clock,
    pub instance: &'a str,
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Becomes true when the run must stop (shutdown after its grace period).
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Runs the job once and says what happened; never panics on a database problem.
pub async fn run(req: &RunRequest<'_>) -> RunReport {
    let started_at = req.clock.now();
    let timer = Instant::now();
    let mut report = RunReport {
        job: req.spec.name.clone(),
        kind: req.spec.kind().to_string(),
        outcome: Outcome::Failed,
        scheduled_for: req.scheduled_for,
        started_at,
        finished_at: started_at,
        duration_seconds: 0.0,
        attempts: 0,
        rows: None,
        notes: Vec::new(),
        error: None,
        run_id: None,
        default_partition_rows: None,
        fleet_last_success: None,
        fleet_view: None,
    };
    match connect_with_retries(req, &mut report).await {
        Ok(client) => locked_run(req, &client, &mut report).await,
        Err(e) => report.error = Some(format!("connecting: {e}")),
    }
    report.finished_at = req.clock.now();
    report.duration_seconds = timer.elapsed().as_secs_f64();
    report
}

fn backoff(req: &RunRequest<'_>, attempt: u32) -> Duration {
    let base = req.spec.limits.retry_backoff.duration().unwrap_or_default();
    base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

async fn connect_with_retries(req: &RunRequest<'_>, report: &mut RunReport) -> Result<Client, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match pg::connect_in_time(req.connector, req.config).await {
            Ok(client) => return Ok(client),
            Err(e) if e.is_transient() && attempt <= req.spec.limits.retries => {
                report.notes.push(format!("connection attempt {attempt} failed: {e}"));
                tokio::time::sleep(backoff(req, attempt)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Everything after connecting. The advisory lock is a session lock: it is released on unlock
/// or, if pgpilot dies, when the server notices the connection is gone.
async fn locked_run(req: &RunRequest<'_>, client: &Client, report: &mut RunReport) {
    // If this pgpilot dies mid-run, PostgreSQL 14 and later notice while the job's statement runs
    // and stop it, instead of letting it commit a run the next one marks abandoned.
    let check = "SELECT pg_catalog.set_config('client_connection_check_interval', '1000', false) \
                 WHERE pg_catalog.current_setting('server_version_num')::int >= 140000";
    if let Err(e) = client.batch_execute(check).await {
        tracing::debug!(job = %req.spec.name, "client_connection_check_interval: {}", pg::describe(&e));
    }
    let (class, key) = advisory_key(&req.spec.name);
    let locked = client.query_one("SELECT pg_try_advisory_lock($1, $2)", &[&class, &key]).await;
    match locked {
        Ok(row) if row.get::<_, bool>(0) => {}
        Ok(_) => {
            report.outcome = Outcome::Skipped;
            report.error = Some("another pgpilot instance is running this job".into());
            // The winner is still running: what this reads is the run before (the periodic
            // reading of the history catches up).
            let _ = read_fleet_view(client, req, report).await;
            return;
        }
        Err(e) => {
            report.error = Some(format!("taking the job's advisory lock: {}", pg::describe(&e)));
            return;
        }
    }
    if let Err(e) = recorded_run(req, client, report).await {
        report.outcome = Outcome::Failed;
        let text = e.to_string();
        report.error = Some(match report.error.take() {
            Some(first) => format!("{first}; then {text}"),
            None => text,
        });
        // Only a failure can leave a transaction open here.
        pg::rollback_if_in_transaction(client).await;
    }
    // A lost connection took the lock with it.
    if client.is_closed() {
        return;
    }
    if let Err(e) = client.query_one("SELECT pg_advisory_unlock($1, $2)", &[&class, &key]).await {
        tracing::warn!(job = %req.spec.name, "releasing the job lock: {}", pg::describe(&e));
    }
}

/// Writes the history row around the task. An error here is about the bookkeeping itself.
async fn recorded_run(req: &RunRequest<'_>, client: &Client, report: &mut RunReport) -> Result<(), JobError> {
    pg::refuse_standby(client, req.config).await?;
    history::ensure(client).await?;
    let abandoned = history::mark_abandoned(client, &req.spec.name).await?;
    if abandoned > 0 {
        report
            .notes
            .push(format!("marked {abandoned} earlier run(s) abandoned: their end was never recorded"));
    }
    let new = NewRun {
        job: &req.spec.name,
        kind: req.spec.kind(),
        scheduled_for: req.scheduled_for,
        instance: req.instance,
    };
    let Some(id) = history::begin(client, &new).await? else {
        report.outcome = Outcome::Skipped;
        report.error = Some("another pgpilot instance already ran this job for this time slot".into());
        read_fleet_view(client, req, report).await?;
        return Ok(());
    };
    report.run_id = Some(id);
    // A long run (a retention job's batches) would otherwise say nothing until it ends.
    tracing::info!(job = %req.spec.name, kind = req.spec.kind(), run_id = id, "job started");
    let (mut problems, result) = attempts(req, client, id, report).await;
    if result.is_err() {
        // Not a bare ROLLBACK: outside a transaction the server warns "there is no transaction
        // in progress" on every failed run.
        pg::rollback_if_in_transaction(client).await;
    }
    let _ = client.batch_execute("RESET lock_timeout; RESET statement_timeout").await;
    if let Err(e) = result {
        problems.push(e.to_string());
    }
    if problems.is_empty() {
        report.outcome = Outcome::Succeeded;
    } else {
        report.error = Some(problems.join("; "));
    }
    let finish = Finish {
        id,
        outcome: report.outcome.as_str(),
        attempts: report.attempts as i32,
        rows: report.rows,
        detail: (!report.notes.is_empty()).then(|| report.notes.join("\n")),
        error: report.error.clone(),
        default_partition_rows: report.default_partition_rows,
    };
    match record_end(client, req, report, &finish).await {
        Err(e) if client.is_closed() || e.is_connection_lost() => {
            record_end_reconnected(req, report, &finish).await
        }
        recorded => recorded,
    }
}

/// Writes the run's end and prunes the job's old history, on the run's connection or a new one.
async fn record_end(
    client: &Client,
    req: &RunRequest<'_>,
    report: &mut RunReport,
    finish: &Finish<'_>,
) -> Result<(), JobError> {
    history::finish(client, finish).await?;
    history::prune(client, &req.spec.name).await?;
    read_fleet_view(client, req, report).await
}

/// Puts what the history says about the job (its run included, when it was recorded) into the
/// report: every instance, winner or not, then exports the fleet's figures.
async fn read_fleet_view(
    client: &Client,
    req: &RunRequest<'_>,
    report: &mut RunReport,
) -> Result<(), JobError> {
    let view = history::fleet_view(client, std::slice::from_ref(&req.spec.name)).await?.pop();
    report.fleet_last_success = view.as_ref().and_then(|v| v.last_success);
    report.fleet_view = view;
    Ok(())
}

/// The run's connection is gone (the server restarted, failed over, or the network broke): its
/// end is written on a new one, tried a few times over some seconds, so the row says what
/// happened instead of staying 'running' until the next run marks it abandoned.
async fn record_end_reconnected(
    req: &RunRequest<'_>,
    report: &mut RunReport,
    finish: &Finish<'_>,
) -> Result<(), JobError> {
    let mut last_error = String::new();
    for pause in RECORD_RECONNECT_PAUSES {
        tokio::time::sleep(pause).await;
        match pg::connect_in_time(req.connector, req.config).await {
            Ok(client) => return record_end(&client, req, report, finish).await,
            Err(e) => last_error = e.to_string(),
        }
    }
    Err(JobError::Invalid(format!(
        "the connection was lost and a new one to record the run's end could not be made: {last_error}"
    )))
}

/// The task under its timeouts, retried with doubling pauses while failures are transient.
/// What each attempt did goes into the report as it ends, a failed one's too (work done before
/// a step failed stays done); returned are what the last attempt could not do and how it ended.
async fn attempts(
    req: &RunRequest<'_>,
    client: &Client,
    run_id: i64,
    report: &mut RunReport,
) -> (Vec<String>, Result<(), JobError>) {
    let limits = &req.spec.limits;
    let ms = |s: &crate::span::Span| s.duration().unwrap_or_default().as_millis();
    let set = format!(
        "SET lock_timeout = '{}ms'; SET statement_timeout = '{}ms'",
        ms(&limits.lock_timeout),
        ms(&limits.statement_timeout)
    );
    if let Err(e) =
        client.batch_execute(&set).await.context(|| "setting lock_timeout and statement_timeout".into())
    {
        return (Vec::new(), Err(e));
    }
    let server_version = match pg::server_version_num(client).await {
        Ok(v) => v,
        Err(e) => return (Vec::new(), Err(e)),
    };
    let mut ctx = TaskContext {
        now: report.started_at,
        server_version,
        stop: StopSignal::new(req.cancel.clone()),
        progress: Progress { run_id, rows_before: 0 },
    };
    loop {
        report.attempts += 1;
        ctx.progress.rows_before = report.rows.unwrap_or(0);
        let mut out = TaskOutput::default();
        let result =
            cancellable(req, client, tasks::execute(client, &req.spec.task, &ctx, &mut out), report).await;
        let problems = add_output(report, out);
        match result {
            // Not on a connection the server ended: the retry could only say "connection closed",
            // and the run is recorded with the real error instead.
            Err(e)
                if e.is_transient()
                    && report.attempts <= limits.retries
                    && !e.is_connection_lost()
                    && !client.is_closed()
                    && !ctx.stop.is_requested() =>
            {
                // A failed statement may leave a transaction open (an sql job's own BEGIN).
                pg::rollback_if_in_transaction(client).await;
                let pause = backoff(req, report.attempts);
                report.notes.push(format!("attempt {} failed ({e}); retrying in {pause:?}", report.attempts));
                tokio::time::sleep(pause).await;
            }
            result => return (problems, result),
        }
    }
}

/// Adds an attempt's notes, rows and default-partition count to the report; returns its problems.
fn add_output(report: &mut RunReport, out: TaskOutput) -> Vec<String> {
    report.notes.extend(out.notes);
    if let Some(rows) = out.rows {
        report.rows = Some(report.rows.unwrap_or(0) + rows);
    }
    if out.default_rows.is_some() {
        report.default_partition_rows = out.default_rows;
    }
    out.problems
}

/// Runs the task; when the run is told to stop, its statement is cancelled on the server and the
/// task ends with that error (57014, not retried).
async fn cancellable(
    req: &RunRequest<'_>,
    client: &Client,
    task: impl std::future::Future<Output = Result<(), JobError>>,
    report: &mut RunReport,
) -> Result<(), JobError> {
    let Some(mut cancel) = req.cancel.clone() else { return task.await };
    tokio::pin!(task);
    tokio::select! {
        out = &mut task => return out,
        _ = cancel.wait_for(|stop| *stop) => {}
    }
    report.notes.push("cancelled: pgpilot is shutting down".into());
    if let Err(e) = client.cancel_token().cancel_query(tokio_postgres::NoTls).await {
        tracing::warn!(job = %req.spec.name, "cancelling the job's statement: {}", pg::describe(&e));
    }
    task.await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable() {
        // Instances of different versions must agree on the key, so it is pinned here.
        assert_eq!(advisory_key("events-partitions"), (JOB_LOCK_CLASS, advisory_key("events-partitions").1));
        assert_eq!(advisory_key("a").1, 0xe40c_292c_u32 as i32);
        assert_ne!(advisory_key("a"), advisory_key("b"));
    }
}
