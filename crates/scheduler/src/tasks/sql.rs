//! The sql job: the operator's own statement(s), under the same timeouts, lock and history.

use tokio_postgres::{Client, SimpleQueryMessage};

use super::{TaskContext, TaskOutput};
use crate::pg::{Context, JobError};
use crate::spec::SqlTask;

pub async fn run(
    client: &Client,
    task: &SqlTask,
    _ctx: &TaskContext,
    out: &mut TaskOutput,
) -> Result<(), JobError> {
    // The simple protocol runs several statements in one string (as one implicit transaction
    // unless the text has its own BEGIN/COMMIT), and reports each one's row count.
    let messages = client.simple_query(&task.sql).await.context(|| "running the job's SQL".into())?;
    if transaction_left_open(client).await? {
        // Its work would be lost silently when the connection closes, with the run's history;
        // the runner rolls back after any failure.
        return Err(JobError::Invalid(
            "the job's SQL left a transaction open (BEGIN without COMMIT); it was rolled back".into(),
        ));
    }
    let rows: u64 = messages
        .iter()
        .map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => *n,
            _ => 0,
        })
        .sum();
    out.rows = Some(rows as i64);
    Ok(())
}

/// Inside an explicit transaction a later statement starts after the transaction did; in a
/// simple Query's own implicit transaction the two times are the same. (Not the extended
/// protocol: its Bind and Execute restart the statement's clock after Parse began the transaction.)
async fn transaction_left_open(client: &Client) -> Result<bool, JobError> {
    let messages = client
        .simple_query("SELECT statement_timestamp() <> transaction_timestamp()")
        .await
        .context(|| "checking for an open transaction".into())?;
    Ok(messages.iter().any(|m| matches!(m, SimpleQueryMessage::Row(row) if row.get(0) == Some("t"))))
}
