//! Prometheus text for the jobs, for the gateway's /metrics.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::report::{Outcome, RunReport};

/// Every metric the scheduler exports (the alert rules may only use these).
pub const METRIC_NAMES: &[&str] = &[
    "pgpilot_job_last_success_timestamp_seconds",
    "pgpilot_job_duration_seconds",
    "pgpilot_job_failures_total",
    "pgpilot_job_runs_total",
    "pgpilot_job_period_seconds",
    "pgpilot_job_scheduled_since_timestamp_seconds",
    "pgpilot_job_running",
    "pgpilot_job_default_partition_rows",
];

/// What one instance counted about one job.
#[derive(Clone, Debug, Default)]
pub struct JobCounters {
    pub runs: BTreeMap<Outcome, u64>,
    pub failures: u64,
    /// The latest success by any instance (from the history table) or by this one.
    pub last_success: Option<DateTime<Utc>>,
    pub last_duration: Option<f64>,
    pub default_partition_rows: Option<i64>,
}

impl JobCounters {
    pub fn record(&mut self, report: &RunReport) {
        *self.runs.entry(report.outcome).or_default() += 1;
        match report.outcome {
            Outcome::Failed => self.failures += 1,
            Outcome::Succeeded => self.last_success = self.last_success.max(Some(report.finished_at)),
            Outcome::Skipped => {}
        }
        if report.outcome != Outcome::Skipped {
            self.last_duration = Some(report.duration_seconds);
        }
        if let Some(rows) = report.default_partition_rows {
            self.default_partition_rows = Some(rows);
        }
        self.last_success = self.last_success.max(report.fleet_last_success);
    }
}

/// One job's view for rendering.
pub struct JobSample<'a> {
    pub name: &'a str,
    pub period_seconds: f64,
    pub scheduled_since: DateTime<Utc>,
    pub running: bool,
    pub counters: &'a JobCounters,
}

fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

pub fn render(jobs: &[JobSample<'_>], out: &mut String) {
    if jobs.is_empty() {
        return;
    }
    family(out, "pgpilot_job_last_success_timestamp_seconds", "gauge", "Unix time of the job's latest success by any instance (absent until it has succeeded once).");
    for j in jobs {
        if let Some(t) = j.counters.last_success {
            let _ = writeln!(out, "pgpilot_job_last_success_timestamp_seconds{{job=\"{}\"}} {}", label(j.name), seconds(t));
        }
    }
    family(out, "pgpilot_job_duration_seconds", "gauge", "How long the job's latest run on this instance took.");
    for j in jobs {
        if let Some(d) = j.counters.last_duration {
            let _ = writeln!(out, "pgpilot_job_duration_seconds{{job=\"{}\"}} {d}", label(j.name));
        }
    }
    family(out, "pgpilot_job_failures_total", "counter", "Failed runs of the job on this instance.");
    for j in jobs {
        let _ = writeln!(out, "pgpilot_job_failures_total{{job=\"{}\"}} {}", label(j.name), j.counters.failures);
    }
    family(out, "pgpilot_job_runs_total", "counter", "Runs of the job on this instance by outcome (skipped: another instance ran it).");
    for j in jobs {
        for outcome in Outcome::ALL {
            let n = j.counters.runs.get(&outcome).copied().unwrap_or(0);
            let _ = writeln!(out, "pgpilot_job_runs_total{{job=\"{}\",outcome=\"{}\"}} {n}", label(j.name), outcome.as_str());
        }
    }
    family(out, "pgpilot_job_period_seconds", "gauge", "The longest gap between two scheduled runs of the job.");
    for j in jobs {
        let _ = writeln!(out, "pgpilot_job_period_seconds{{job=\"{}\"}} {}", label(j.name), j.period_seconds);
    }
    family(out, "pgpilot_job_scheduled_since_timestamp_seconds", "gauge", "Unix time this instance started scheduling the job.");
    for j in jobs {
        let _ = writeln!(out, "pgpilot_job_scheduled_since_timestamp_seconds{{job=\"{}\"}} {}", label(j.name), seconds(j.scheduled_since));
    }
    family(out, "pgpilot_job_running", "gauge", "1 while the job runs on this instance.");
    for j in jobs {
        let _ = writeln!(out, "pgpilot_job_running{{job=\"{}\"}} {}", label(j.name), u8::from(j.running));
    }
    family(out, "pgpilot_job_default_partition_rows", "gauge", "Rows in the default partition of a partitions job's table at its latest run.");
    for j in jobs {
        if let Some(rows) = j.counters.default_partition_rows {
            let _ = writeln!(out, "pgpilot_job_default_partition_rows{{job=\"{}\"}} {rows}", label(j.name));
        }
    }
}
