//! One run of one job: connect, take the fleet-wide lock, record, set timeouts, execute, retry.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::clock::Clock;
use crate::history::{self, Finish, NewRun};
use crate::pg::{self, Context, JobError};
use crate::report::{Outcome, RunReport};
use crate::resolver::DatabaseResolver;
use crate::spec::JobSpec;
use crate::tasks::{self, TaskContext, TaskOutput};

/// The advisory lock class of job runs ("pgjr"); the second key is a hash of the job's name.
pub const JOB_LOCK_CLASS: i32 = 0x7067_6a72;
/// Retry pauses stop growing here.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

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
            report.fleet_last_success = history::last_success(client, &req.spec.name).await.ok().flatten();
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
        // Only a failure can leave a transaction open here; a ROLLBACK outside one makes the
        // server log a warning for every run.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    if let Err(e) = client.query_one("SELECT pg_advisory_unlock($1, $2)", &[&class, &key]).await {
        tracing::warn!(job = %req.spec.name, "releasing the job lock: {}", pg::describe(&e));
    }
}

/// Writes the history row around the task. An error here is about the bookkeeping itself.
async fn recorded_run(req: &RunRequest<'_>, client: &Client, report: &mut RunReport) -> Result<(), JobError> {
    history::ensure(client).await?;
    let abandoned = history::mark_abandoned(client, &req.spec.name).await?;
    if abandoned > 0 {
        report.notes.push(format!("marked {abandoned} earlier run(s) abandoned (their instance stopped)"));
    }
    let new = NewRun {
        job: &req.spec.name,
        kind: req.spec.kind(),
        scheduled_for: req.scheduled_for,
        instance: req.instance,
        started_at: report.started_at,
    };
    let Some(id) = history::begin(client, &new).await? else {
        report.outcome = Outcome::Skipped;
        report.error = Some("another pgpilot instance already ran this job for this time slot".into());
        report.fleet_last_success = history::last_success(client, &req.spec.name).await?;
        return Ok(());
    };
    report.run_id = Some(id);
    let result = attempts(req, client, report).await;
    let reset = if result.is_err() {
        "ROLLBACK; RESET lock_timeout; RESET statement_timeout"
    } else {
        "RESET lock_timeout; RESET statement_timeout"
    };
    let _ = client.batch_execute(reset).await;
    match result {
        Ok(out) => {
            report.rows = out.rows;
            report.default_partition_rows = out.default_rows;
            report.notes.extend(out.notes);
            if out.problems.is_empty() {
                report.outcome = Outcome::Succeeded;
            } else {
                report.error = Some(out.problems.join("; "));
            }
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    let finish = Finish {
        id,
        outcome: report.outcome.as_str(),
        finished_at: req.clock.now(),
        attempts: report.attempts as i32,
        rows: report.rows,
        detail: (!report.notes.is_empty()).then(|| report.notes.join("\n")),
        error: report.error.clone(),
    };
    history::finish(client, &finish).await?;
    history::prune(client, &req.spec.name, report.started_at).await?;
    report.fleet_last_success = history::last_success(client, &req.spec.name).await?;
    Ok(())
}

/// The task under its timeouts, retried with doubling pauses while failures are transient.
async fn attempts(
    req: &RunRequest<'_>,
    client: &Client,
    report: &mut RunReport,
) -> Result<TaskOutput, JobError> {
    let limits = &req.spec.limits;
    let ms = |s: &crate::span::Span| s.duration().unwrap_or_default().as_millis();
    let set = format!(
        "SET lock_timeout = '{}ms'; SET statement_timeout = '{}ms'",
        ms(&limits.lock_timeout),
        ms(&limits.statement_timeout)
    );
    client.batch_execute(&set).await.context(|| "setting lock_timeout and statement_timeout".into())?;
    let server_version = pg::server_version_num(client).await?;
    let ctx = TaskContext { now: report.started_at, server_version };
    loop {
        report.attempts += 1;
        match cancellable(req, client, tasks::execute(client, &req.spec.task, &ctx), report).await {
            Ok(out) => return Ok(out),
            Err(e) if e.is_transient() && report.attempts <= limits.retries && !client.is_closed() => {
                // A failed statement may leave a transaction open (an sql job's own BEGIN).
                let _ = client.batch_execute("ROLLBACK").await;
                let pause = backoff(req, report.attempts);
                report.notes.push(format!("attempt {} failed ({e}); retrying in {pause:?}", report.attempts));
                tokio::time::sleep(pause).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs the task; when the run is told to stop, its statement is cancelled on the server and the
/// task ends with that error (57014, not retried).
async fn cancellable(
    req: &RunRequest<'_>,
    client: &Client,
    task: impl std::future::Future<Output = Result<TaskOutput, JobError>>,
    report: &mut RunReport,
) -> Result<TaskOutput, JobError> {
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
