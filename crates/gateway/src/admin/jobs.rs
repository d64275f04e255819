//! SHOW JOBS: the maintenance jobs, their next run and latest run on this instance.

use super::resultset::{v, ResultSet};
use crate::shared::Shared;
use crate::timefmt::format_utc_us;

pub fn show(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(&[
        "name",
        "kind",
        "schedule",
        "enabled",
        "next_run",
        "running",
        "last_start",
        "last_outcome",
        "last_duration_s",
        "last_rows",
        "last_success",
        "last_error",
    ]);
    let Some(handle) = shared.jobs.load_full() else { return rs };
    for job in handle.status() {
        let time = |t: Option<i64>| t.and_then(|us| u64::try_from(us).ok()).map(format_utc_us);
        rs.row(vec![
            v(&job.name),
            v(&job.kind),
            v(&job.schedule),
            v(job.enabled),
            v(time(job.next_run.map(|t| t.timestamp_micros()))),
            v(job.running),
            v(time(job.last_start.map(|t| t.timestamp_micros()))),
            v(job.last_outcome.map(|o| o.as_str())),
            v(job.last_duration_seconds.map(|d| format!("{d:.3}"))),
            v(job.last_rows),
            v(time(job.last_success.map(|t| t.timestamp_micros()))),
            v(job.last_error.clone()),
        ]);
    }
    rs
}
