//! The job kinds. Each takes a connection already under the run's timeouts and advisory lock.

mod catalog;
mod partitions;
pub mod periods;
mod refresh;
mod retention;
mod sql;
mod stop;
mod thresholds;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::history::Progress;
use crate::pg::JobError;
use crate::spec::Task;

pub use stop::StopSignal;

/// What a task runs with besides its connection.
#[derive(Clone, Debug)]
pub struct TaskContext {
    /// The scheduler's clock at the start of the run: periods and cutoffs are counted from it.
    pub now: DateTime<Utc>,
    pub server_version: i32,
    /// Set when the run must stop: tasks of many steps look at it between them and in pauses.
    pub stop: StopSignal,
    /// The run's history row, which a long task keeps told of the rows it has committed so far.
    pub progress: Progress,
}

/// What a task did.
#[derive(Clone, Debug, Default)]
pub struct TaskOutput {
    /// Rows deleted, moved or reported by the server; None when the notion does not apply.
    pub rows: Option<i64>,
    /// What was done, in sentences for the history table and `pgpilot jobs history`.
    pub notes: Vec<String>,
    /// What could not be done; any problem makes the run count as failed.
    pub problems: Vec<String>,
    /// Rows sitting in a partitioned table's default partition (partitions jobs only).
    pub default_rows: Option<i64>,
    pub partitions_created: usize,
    pub partitions_retired: usize,
    pub rows_moved: i64,
}

impl TaskOutput {
    pub fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    pub fn problem(&mut self, text: String) {
        self.problems.push(text);
    }
}

/// Runs the task, writing what it does into `out` as it goes, so that what was done before a
/// step failed is still reported.
pub async fn execute(
    client: &Client,
    task: &Task,
    ctx: &TaskContext,
    out: &mut TaskOutput,
) -> Result<(), JobError> {
    match task {
        Task::Partitions(t) => {
            let result = partitions::run(client, t, ctx, out).await;
            out.rows = Some(out.rows_moved);
            result
        }
        Task::Refresh(t) => refresh::run(client, t, ctx, out).await,
        Task::Analyze(t) => thresholds::run(client, t, thresholds::Pass::Analyze, ctx, out).await,
        Task::Vacuum(t) => thresholds::run(client, t, thresholds::Pass::Vacuum, ctx, out).await,
        Task::Retention(t) => retention::run(client, t, ctx, out).await,
        Task::Sql(t) => sql::run(client, t, ctx, out).await,
    }
}
