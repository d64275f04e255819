//! The maintenance scheduler inside the gateway: `[[jobs]]` from the config run on their cron
//! schedules (crates/scheduler), against the databases' primaries with the credentials and TLS
//! settings the pools use. Nothing starts — no task, no connection — when no job is configured.
//!
//! A reload that changes the `[[jobs]]` tables stops the old scheduler from starting runs (its
//! runs in progress finish, uncancelled) and starts a new one; a reload that changes only a
//! database's URL or password is seen by the next run, because jobs resolve their database from
//! the live config. Shutdown waits for both kinds of scheduler for the shutdown_timeout in force
//! when it happens.

mod api;
mod resolver;

use std::sync::Arc;
use std::time::Duration;

use pgpilot_scheduler::{JobSpec, Scheduler, SchedulerHandle, SchedulerOptions, SystemClock};

pub use api::routes;
pub use resolver::{ConfigResolver, GatewayResolver};

use crate::shared::Shared;

/// Starts the scheduler for the config's jobs; None (and nothing running) when there are none.
pub fn start(shared: &Arc<Shared>, jobs: &[JobSpec]) -> Option<SchedulerHandle> {
    start_after(shared, jobs, None)
}

/// Starts the scheduler, taking over from `previous` when a reload replaces it (see `reload`).
fn start_after(
    shared: &Arc<Shared>,
    jobs: &[JobSpec],
    previous: Option<&SchedulerHandle>,
) -> Option<SchedulerHandle> {
    if jobs.is_empty() {
        return None;
    }
    // The shutdown grace is read from the live config when shutting down (see `shutdown`).
    let options = SchedulerOptions::default();
    let resolver = Arc::new(GatewayResolver::new(shared));
    let (specs, clock) = (jobs.to_vec(), Arc::new(SystemClock));
    let handle = match previous {
        Some(previous) => Scheduler::replace(previous, specs, resolver, clock, options),
        None => Scheduler::start_with(specs, resolver, clock, options),
    };
    let enabled = jobs.iter().filter(|j| j.enabled).count();
    tracing::info!(jobs = jobs.len(), enabled, "maintenance scheduler started");
    Some(handle)
}

/// After a reload: restarts the scheduler when the `[[jobs]]` tables changed.
pub fn reload(shared: &Arc<Shared>, previous: &[JobSpec]) {
    let current = shared.config.load().jobs.clone();
    if current == previous {
        return;
    }
    // With no job configured there is no scheduler: the one the last reload retired holds the
    // records of the runs still going on (its jobs', and those of jobs removed before).
    let previous = shared.jobs.load_full().or_else(|| shared.retired_jobs.lock().last().cloned());
    // The new scheduler carries on the old one's per-job records, so a run the old one is
    // finishing stays visible (running, then its outcome) under the job's name, also when the
    // job was removed and is put back while that run goes on.
    let old = shared.jobs.swap(start_after(shared, &current, previous.as_deref()).map(Arc::new));
    if let Some(old) = old {
        // docs/jobs.md: runs in progress finish. The new scheduler's slots start after now; a
        // job still running in the old one is skipped here until it ends.
        old.stop_scheduling();
        let mut retired = shared.retired_jobs.lock();
        retired.retain(|h| !h.is_idle());
        retired.push(old);
    }
    tracing::info!(jobs = current.len(), "[[jobs]] changed: scheduler restarted");
}

/// Stops scheduling at once and waits up to `grace` (shutdown_timeout, as configured now; a second
/// for an immediate stop) for running jobs, including those of schedulers a reload replaced, then
/// cancels what is left.
pub async fn shutdown(shared: &Shared, grace: Duration) {
    let grace = grace.max(Duration::from_secs(1));
    let current = shared.jobs.swap(None);
    let retired = std::mem::take(&mut *shared.retired_jobs.lock());
    let stopping = current.iter().chain(&retired).map(|h| h.shutdown_within(grace));
    futures::future::join_all(stopping).await;
    if current.is_some() {
        tracing::info!("maintenance scheduler stopped");
    }
}

/// The job metrics for /metrics (nothing when no job is configured).
pub fn render_metrics(shared: &Shared, out: &mut String) {
    if let Some(handle) = shared.jobs.load().as_ref() {
        handle.render_prometheus(out);
    }
}
