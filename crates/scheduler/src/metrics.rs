//! Prometheus text for the jobs, for the gateway's /metrics.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::history::FleetView;
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

/// What one instance counted about one job, and what it read of the fleet's runs.
#[derive(Clone, Debug, Default)]
pub struct JobCounters {
    pub runs: BTreeMap<Outcome, u64>,
    pub failures: u64,
    /// The latest success by any instance, as the history table dates it (the database's clock:
    /// one instance's clock running fast must not hold the staleness alert off).
    pub last_success: Option<DateTime<Utc>>,
    pub last_duration: Option<f64>,
    /// As the fleet's latest run that counted them found them (see [`FleetView`]): every instance
    /// exports the same count, whichever ran the job.
    pub default_partition_rows: Option<i64>,
    /// The fleet's earliest recorded run of the job.
    pub first_recorded_run: Option<DateTime<Utc>>,
}

impl JobCounters {
    pub fn record(&mut self, report: &RunReport) {
        *self.runs.entry(report.outcome).or_default() += 1;
        if report.outcome == Outcome::Failed {
            self.failures += 1;
        }
        if report.outcome != Outcome::Skipped {
            self.last_duration = Some(report.duration_seconds);
        }
        if let Some(view) = &report.fleet_view {
            self.take_fleet_view(view);
        }
    }

    /// Takes what the history table says about the job: every instance then exports the same
    /// figures, whichever ran the job last.
    pub fn take_fleet_view(&mut self, view: &FleetView) {
        self.last_success = self.last_success.max(view.last_success);
        self.default_partition_rows = view.default_partition_rows;
        self.first_recorded_run = view.first_run;
    }
}

/// One job's view for rendering.
pub struct JobSample<'a> {
    pub name: &'a str,
    /// A disabled job has no schedule to keep: it gets no period and no scheduled-since sample,
    /// so the staleness alerts (which need both) stay quiet about a job switched off on purpose.
    pub enabled: bool,
    pub period_seconds: f64,
    pub scheduled_since: DateTime<Utc>,
    pub running: bool,
    pub counters: &'a JobCounters,
}

fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// One metric family: its name, type, help, and each job's value (None: no sample for that job).
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&JobSample<'_>) -> Option<f64>,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "pgpilot_job_last_success_timestamp_seconds",
        kind: "gauge",
        help: "Unix time of the job's latest success by any instance (absent until it has succeeded once).",
        value: |j| j.counters.last_success.map(seconds),
    },
    Family {
        name: "pgpilot_job_duration_seconds",
        kind: "gauge",
        help: "How long the job's latest run on this instance took.",
        value: |j| j.counters.last_duration,
    },
    Family {
        name: "pgpilot_job_failures_total",
        kind: "counter",
        help: "Failed runs of the job on this instance.",
        value: |j| Some(j.counters.failures as f64),
    },
    Family {
        name: "pgpilot_job_period_seconds",
        kind: "gauge",
        help: "The longest gap between two scheduled runs of the job (absent while it is disabled).",
        value: |j| j.enabled.then_some(j.period_seconds),
    },
    Family {
        name: "pgpilot_job_scheduled_since_timestamp_seconds",
        kind: "gauge",
        help: "Unix time the job has been scheduled since: when this instance started scheduling it as \
               configured now, or the job's earliest recorded run if that is earlier (absent while it is disabled).",
        value: |j| j.enabled.then(|| seconds(j.scheduled_since)),
    },
    Family {
        name: "pgpilot_job_running",
        kind: "gauge",
        help: "1 while the job runs on this instance.",
        value: |j| Some(f64::from(u8::from(j.running))),
    },
    Family {
        name: "pgpilot_job_default_partition_rows",
        kind: "gauge",
        help: "Rows in the default partition of a partitions job's table at the fleet's latest run that counted them.",
        value: |j| j.counters.default_partition_rows.map(|r| r as f64),
    },
];

pub fn render(jobs: &[JobSample<'_>], out: &mut String) {
    if jobs.is_empty() {
        return;
    }
    for family in FAMILIES {
        let _ =
            writeln!(out, "# HELP {} {}\n# TYPE {} {}", family.name, family.help, family.name, family.kind);
        for j in jobs {
            if let Some(v) = (family.value)(j) {
                let _ = writeln!(out, "{}{{job_name=\"{}\"}} {v}", family.name, label(j.name));
            }
        }
    }
    // The one family with a second label.
    let name = "pgpilot_job_runs_total";
    let help = "Runs of the job on this instance by outcome (skipped: another instance ran it).";
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for j in jobs {
        for outcome in Outcome::ALL {
            let n = j.counters.runs.get(&outcome).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "{name}{{job_name=\"{}\",outcome=\"{}\"}} {n}",
                label(j.name),
                outcome.as_str()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exported_name_is_rendered_and_labels_are_escaped() {
        let counters =
            JobCounters { default_partition_rows: Some(3), last_duration: Some(0.5), ..Default::default() };
        let sample = JobSample {
            name: "we\"ird",
            enabled: true,
            period_seconds: 60.0,
            scheduled_since: Utc::now(),
            running: false,
            counters: &counters,
        };
        let mut out = String::new();
        render(&[sample], &mut out);
        for name in METRIC_NAMES.iter().filter(|n| !n.contains("last_success")) {
            assert!(out.contains(&format!("\n{name}{{job_name=\"we\\\"ird\"")), "{name} in\n{out}");
        }
        assert!(!out.contains("pgpilot_job_last_success_timestamp_seconds{"), "no sample before a success");
        assert!(out.contains("pgpilot_job_period_seconds{job_name=\"we\\\"ird\"} 60\n"));
    }

    #[test]
    fn a_disabled_job_has_no_schedule_series() {
        let counters = JobCounters::default();
        let sample = JobSample {
            name: "off",
            enabled: false,
            period_seconds: 86_400.0,
            scheduled_since: Utc::now(),
            running: false,
            counters: &counters,
        };
        let mut out = String::new();
        render(&[sample], &mut out);
        assert!(!out.contains("pgpilot_job_period_seconds{"), "{out}");
        assert!(!out.contains("pgpilot_job_scheduled_since_timestamp_seconds{"), "{out}");
        assert!(out.contains("pgpilot_job_failures_total{job_name=\"off\"} 0\n"), "{out}");
    }
}
