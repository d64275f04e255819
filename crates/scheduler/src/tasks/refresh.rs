//! The refresh job: REFRESH MATERIALIZED VIEW, CONCURRENTLY whenever the view allows it.

use tokio_postgres::Client;

use super::{TaskContext, TaskOutput};
use crate::pg::{self, Context, JobError};
use crate::spec::{Concurrently, RefreshTask};

/// Why a concurrent refresh is impossible, or None when it is possible.
async fn concurrent_blocker(client: &Client, view_oid: u32) -> Result<Option<&'static str>, JobError> {
    // The rules of REFRESH ... CONCURRENTLY: the view must be populated and have a unique index
    // that is valid, immediate, without WHERE clause and on plain columns only.
    let row = client
        .query_one(
            "SELECT c.relispopulated,
                    EXISTS (SELECT 1 FROM pg_index i
                             WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid
                               AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL)
               FROM pg_class c WHERE c.oid = $1",
            &[&view_oid],
        )
        .await
        .context(|| "reading the view's indexes".into())?;
    let (populated, unique_index): (bool, bool) = (row.get(0), row.get(1));
    Ok(if !populated {
        Some("the view has never been populated (a first refresh cannot be concurrent)")
    } else if !unique_index {
        Some("the view has no unique index on plain columns without a WHERE clause, which CONCURRENTLY needs")
    } else {
        None
    })
}

pub async fn run(
    client: &Client,
    task: &RefreshTask,
    _ctx: &TaskContext,
    out: &mut TaskOutput,
) -> Result<(), JobError> {
    let view = pg::find_relation(client, &task.view).await?;
    if view.kind != b'm' as i8 {
        return Err(JobError::Invalid(format!("{} is not a materialized view", view.display())));
    }
    let concurrently = match (task.concurrently, concurrent_blocker(client, view.oid).await?) {
        (Concurrently::Never, _) => false,
        (_, None) => true,
        (Concurrently::Always, Some(why)) => {
            return Err(JobError::Invalid(format!(
                "cannot refresh {} CONCURRENTLY: {why}; add such an index or set `concurrently = \"auto\"`",
                view.display()
            )))
        }
        (Concurrently::Auto, Some(why)) => {
            out.note(format!("refreshing without CONCURRENTLY (readers wait meanwhile) because {why}"));
            false
        }
    };
    let how = if concurrently { "CONCURRENTLY " } else { "" };
    let sql = format!("REFRESH MATERIALIZED VIEW {how}{}", view.sql());
    client.batch_execute(&sql).await.context(|| format!("refreshing {}", view.display()))?;
    if concurrently {
        out.note(format!("refreshed {} CONCURRENTLY", view.display()));
    }
    Ok(())
}
