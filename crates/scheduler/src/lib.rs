//! pgpilot's maintenance scheduler: partitions made ahead and retired, materialized views
//! refreshed, analyze/vacuum by thresholds, batched retention and plain SQL, on cron schedules.
//!
//! Every run connects to the job's database, takes a PostgreSQL advisory lock so exactly one
//! pgpilot instance of a fleet runs it, records itself in `pgpilot.job_runs`, sets
//! `lock_timeout` and `statement_timeout`, and retries transient failures with backoff.
//! `docs/jobs.md` is the user's guide.

mod clock;
pub mod convert;
mod history;
mod metrics;
mod pg;
mod report;
mod resolver;
mod runner;
mod schedule;
mod scheduler;
mod span;
mod spec;
mod spec_raw;
mod tasks;
mod toml_text;

pub use clock::{Clock, ManualClock, SystemClock};
pub use metrics::METRIC_NAMES;
pub use pg::{connect, describe as describe_pg_error, within_connect_timeout, ConnectError, JobError};
pub use report::{JobStatus, Outcome, RunRecord, RunReport};
pub use resolver::{
    config_from_url, redact_url, ConnectFuture, DatabaseResolver, DatabaseUrls, JobsConfig, ResolveError,
};
pub use runner::advisory_key;
pub use schedule::Schedule;
pub use scheduler::{
    history_each, history_of, instance_name, run_once, History, HistoryError, Scheduler, SchedulerError,
    SchedulerHandle, SchedulerOptions,
};
pub use span::{Interval, Span};
pub use spec::{
    validate, validate_with_databases, Concurrently, JobSpec, PartitionInterval, PartitionsTask, RefreshTask,
    RetentionTask, RunLimits, SqlTask, Target, Task, ThresholdTask,
};
pub use tasks::periods::check_template as check_naming_template;
pub use toml_text::parse_toml;
