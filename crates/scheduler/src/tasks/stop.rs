//! The run's "stop now" signal as a task sees it between its statements.
//!
//! At shutdown the runner cancels the statement in flight on the server, but a task of many steps
//! (a retention run's batches, an analyze job's tables, a partitions job's creates and detaches)
//! is often between two of them, or in a pause, when the cancel lands: there is nothing for the
//! server to cancel, and without this check the next step would start as if nothing had happened.

use std::time::Duration;

use tokio::sync::watch;

use crate::pg::JobError;

/// Becomes set when the run must stop (pgpilot shutting down after its grace period).
#[derive(Clone, Debug, Default)]
pub struct StopSignal(Option<watch::Receiver<bool>>);

impl StopSignal {
    pub fn new(receiver: Option<watch::Receiver<bool>>) -> Self {
        StopSignal(receiver)
    }

    pub fn is_requested(&self) -> bool {
        self.0.as_ref().is_some_and(|r| *r.borrow())
    }

    /// Fails with [`JobError::Cancelled`] once a stop is requested; `next` names the step that is
    /// then not started.
    pub fn check(&self, next: impl FnOnce() -> String) -> Result<(), JobError> {
        if self.is_requested() {
            return Err(JobError::Cancelled(format!("stopped before {}", next())));
        }
        Ok(())
    }

    /// Sleeps for `pause`, or fails as [`check`](Self::check) does as soon as a stop is requested.
    pub async fn pause(&self, pause: Duration, next: impl FnOnce() -> String) -> Result<(), JobError> {
        let Some(receiver) = &self.0 else {
            tokio::time::sleep(pause).await;
            return Ok(());
        };
        let mut receiver = receiver.clone();
        let stopped = async move {
            // An error means the sender is gone: no stop can come any more.
            if receiver.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopped => {}
        }
        self.check(next)
    }
}
