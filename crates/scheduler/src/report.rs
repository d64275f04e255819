//! What the scheduler tells the outside world: run reports, history records and job status.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Not run: another instance holds the job's lock, it already ran for this slot, or it is
    /// still running here.
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }

    pub const ALL: [Outcome; 3] = [Outcome::Succeeded, Outcome::Failed, Outcome::Skipped];
}

/// One run (or a decision not to run), as `run_now` and `pgpilot jobs run` return it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    pub job: String,
    pub kind: String,
    pub outcome: Outcome,
    /// The cron slot this run was for; None for runs asked for by hand.
    pub scheduled_for: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    /// 1 plus the retries used.
    pub attempts: u32,
    pub rows: Option<i64>,
    /// What was done, one sentence each.
    pub notes: Vec<String>,
    /// Why it failed, or why it was skipped.
    pub error: Option<String>,
    /// The row in pgpilot.job_runs, when one was written.
    pub run_id: Option<i64>,
    /// Rows in the default partition (partitions jobs).
    pub default_partition_rows: Option<i64>,
    /// The latest success of this job by any instance, read from pgpilot.job_runs.
    pub fleet_last_success: Option<DateTime<Utc>>,
    /// What pgpilot.job_runs said about the job once the run (or the decision to skip it) was
    /// over, for this instance's metrics.
    #[serde(skip)]
    pub(crate) fleet_view: Option<crate::history::FleetView>,
}

/// A row of pgpilot.job_runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub id: i64,
    pub job: String,
    pub kind: String,
    pub scheduled_for: Option<DateTime<Utc>>,
    /// Which pgpilot instance ran it (host:pid).
    pub instance: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// running, succeeded, failed, or abandoned (the instance died mid-run).
    pub outcome: String,
    pub attempts: i32,
    pub rows: Option<i64>,
    pub detail: Option<String>,
    pub error: Option<String>,
}

/// A job as SHOW JOBS and GET /api/v1/jobs show it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobStatus {
    pub name: String,
    pub kind: String,
    pub schedule: String,
    pub enabled: bool,
    /// The longest gap between runs of the schedule, which the alert doubles.
    pub period_seconds: f64,
    pub next_run: Option<DateTime<Utc>>,
    pub running: bool,
    pub last_start: Option<DateTime<Utc>>,
    pub last_end: Option<DateTime<Utc>>,
    pub last_outcome: Option<Outcome>,
    pub last_rows: Option<i64>,
    pub last_duration_seconds: Option<f64>,
    pub last_error: Option<String>,
    /// The latest success by any instance sharing the database.
    pub last_success: Option<DateTime<Utc>>,
}
