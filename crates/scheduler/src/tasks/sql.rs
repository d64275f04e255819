//! The sql job: the operator's own statement(s), under the same timeouts, lock and history.

use tokio_postgres::{Client, SimpleQueryMessage};

use super::{TaskContext, TaskOutput};
use crate::pg::{Context, JobError};
use crate::spec::SqlTask;

pub async fn run(client: &Client, task: &SqlTask, _ctx: &TaskContext) -> Result<TaskOutput, JobError> {
    // The simple protocol runs several statements in one string (as one implicit transaction
    // unless the text has its own BEGIN/COMMIT), and reports each one's row count.
    let messages = client.simple_query(&task.sql).await.context(|| "running the job's SQL".into())?;
    let mut out = TaskOutput::default();
    let rows: u64 = messages
        .iter()
        .map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => *n,
            _ => 0,
        })
        .sum();
    out.rows = Some(rows as i64);
    Ok(out)
}
