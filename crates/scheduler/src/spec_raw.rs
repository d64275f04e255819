//! The flat `[[jobs]]` table as written, and its conversion to and from [`JobSpec`].
//!
//! Unknown keys are refused by serde; keys that exist but belong to another kind of job are refused
//! here, so `interval = "monthly"` on a refresh job is an error rather than silently ignored.

use serde::{Deserialize, Serialize};

use crate::span::Span;
use crate::spec::{
    span, Concurrently, JobSpec, PartitionInterval, PartitionsTask, RefreshTask, RetentionTask, RunLimits,
    SqlTask, Target, Task, ThresholdTask,
};

#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJobSpec {
    name: String,
    kind: String,
    schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lock_timeout: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    statement_timeout: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_backoff: Option<Span>,
    // partitions, retention
    #[serde(default, skip_serializing_if = "Option::is_none")]
    table: Option<String>,
    // partitions
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interval: Option<PartitionInterval>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    premake: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    naming: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retention: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retention_drop: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    move_default_rows: Option<bool>,
    // refresh
    #[serde(default, skip_serializing_if = "Option::is_none")]
    view: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    concurrently: Option<Concurrently>,
    // analyze, vacuum
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tables: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schemas: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_changes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scale_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_tables: Option<u32>,
    // retention
    #[serde(default, skip_serializing_if = "Option::is_none")]
    column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    older_than: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pause: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time_budget: Option<Span>,
    // sql
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sql: Option<String>,
}

const KINDS: &str = "partitions, refresh, analyze, vacuum, retention, sql";

impl RawJobSpec {
    /// The kind-specific keys that were given, by name.
    fn given_task_keys(&self) -> Vec<&'static str> {
        let keys = [
            ("table", self.table.is_some()),
            ("interval", self.interval.is_some()),
            ("premake", self.premake.is_some()),
            ("naming", self.naming.is_some()),
            ("time_zone", self.time_zone.is_some()),
            ("retention", self.retention.is_some()),
            ("retention_drop", self.retention_drop.is_some()),
            ("move_default_rows", self.move_default_rows.is_some()),
            ("view", self.view.is_some()),
            ("concurrently", self.concurrently.is_some()),
            ("tables", self.tables.is_some()),
            ("schemas", self.schemas.is_some()),
            ("min_changes", self.min_changes.is_some()),
            ("scale_factor", self.scale_factor.is_some()),
            ("max_tables", self.max_tables.is_some()),
            ("column", self.column.is_some()),
            ("older_than", self.older_than.is_some()),
            ("filter", self.filter.is_some()),
            ("batch_size", self.batch_size.is_some()),
            ("pause", self.pause.is_some()),
            ("time_budget", self.time_budget.is_some()),
            ("sql", self.sql.is_some()),
        ];
        keys.iter().filter(|(_, given)| *given).map(|(k, _)| *k).collect()
    }

    fn take_task(&mut self) -> Result<Task, String> {
        let kind = self.kind.clone();
        let need = |v: Option<String>, key: &str| v.ok_or_else(|| format!("a {kind} job needs `{key}`"));
        Ok(match kind.as_str() {
            "partitions" => Task::Partitions(PartitionsTask {
                table: need(self.table.take(), "table")?,
                interval: self
                    .interval
                    .take()
                    .ok_or("a partitions job needs `interval` (daily, weekly, monthly or yearly)")?,
                premake: self.premake.take().unwrap_or(4),
                naming: self.naming.take(),
                time_zone: self.time_zone.take().unwrap_or_else(|| "UTC".into()),
                retention: self.retention.take(),
                retention_drop: self.retention_drop.take().unwrap_or(false),
                move_default_rows: self.move_default_rows.take().unwrap_or(false),
            }),
            "refresh" => Task::Refresh(RefreshTask {
                view: need(self.view.take(), "view")?,
                concurrently: self.concurrently.take().unwrap_or_default(),
            }),
            "analyze" | "vacuum" => {
                let t = ThresholdTask {
                    tables: self.tables.take().unwrap_or_default(),
                    schemas: self.schemas.take().unwrap_or_default(),
                    min_changes: self.min_changes.take().unwrap_or(1000),
                    scale_factor: self.scale_factor.take().unwrap_or(0.1),
                    max_tables: self.max_tables.take(),
                };
                if kind == "analyze" {
                    Task::Analyze(t)
                } else {
                    Task::Vacuum(t)
                }
            }
            "retention" => Task::Retention(RetentionTask {
                table: need(self.table.take(), "table")?,
                column: need(self.column.take(), "column")?,
                older_than: self
                    .older_than
                    .take()
                    .ok_or("a retention job needs `older_than` (e.g. \"90 days\")")?,
                filter: self.filter.take(),
                batch_size: self.batch_size.take().unwrap_or(5000),
                pause: self.pause.take().unwrap_or_else(|| span("100ms")),
                time_budget: self.time_budget.take().unwrap_or_else(|| span("10min")),
            }),
            "sql" => Task::Sql(SqlTask { sql: need(self.sql.take(), "sql")? }),
            other => return Err(format!("`kind = \"{other}\"` is not a job kind (one of {KINDS})")),
        })
    }
}

impl TryFrom<RawJobSpec> for JobSpec {
    type Error = String;

    fn try_from(mut raw: RawJobSpec) -> Result<JobSpec, String> {
        let name = raw.name.clone();
        let fail = |msg: String| format!("job `{name}`: {msg}");
        let target = match (raw.database.take(), raw.url.take()) {
            (Some(db), None) => Target::Database(db),
            (None, Some(url)) => Target::Url(url),
            (Some(_), Some(_)) => return Err(fail("give `database` or `url`, not both".into())),
            (None, None) => {
                return Err(fail("say which database: `database = \"NAME\"` or `url = ...`".into()))
            }
        };
        let defaults = RunLimits::default();
        let limits = RunLimits {
            lock_timeout: raw.lock_timeout.take().unwrap_or(defaults.lock_timeout),
            statement_timeout: raw.statement_timeout.take().unwrap_or(defaults.statement_timeout),
            retries: raw.retries.take().unwrap_or(defaults.retries),
            retry_backoff: raw.retry_backoff.take().unwrap_or(defaults.retry_backoff),
        };
        let task = raw.take_task().map_err(fail)?;
        let leftover = raw.given_task_keys();
        if !leftover.is_empty() {
            let keys = leftover.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
            return Err(fail(format!("a {} job does not take {keys}", raw.kind)));
        }
        Ok(JobSpec {
            name: raw.name,
            schedule: raw.schedule,
            target,
            enabled: raw.enabled.unwrap_or(true),
            limits,
            task,
        })
    }
}

impl From<JobSpec> for RawJobSpec {
    fn from(job: JobSpec) -> RawJobSpec {
        let mut raw = RawJobSpec {
            name: job.name,
            kind: job.task.kind().to_string(),
            schedule: job.schedule,
            enabled: (!job.enabled).then_some(false),
            lock_timeout: Some(job.limits.lock_timeout),
            statement_timeout: Some(job.limits.statement_timeout),
            retries: Some(job.limits.retries),
            retry_backoff: Some(job.limits.retry_backoff),
            ..RawJobSpec::default()
        };
        match job.target {
            Target::Database(db) => raw.database = Some(db),
            Target::Url(url) => raw.url = Some(url),
        }
        match job.task {
            Task::Partitions(p) => {
                raw.table = Some(p.table);
                raw.interval = Some(p.interval);
                raw.premake = Some(p.premake);
                raw.naming = p.naming;
                raw.time_zone = Some(p.time_zone);
                raw.retention = p.retention;
                raw.retention_drop = Some(p.retention_drop);
                raw.move_default_rows = Some(p.move_default_rows);
            }
            Task::Refresh(r) => {
                raw.view = Some(r.view);
                raw.concurrently = Some(r.concurrently);
            }
            Task::Analyze(t) | Task::Vacuum(t) => {
                raw.tables = Some(t.tables);
                raw.schemas = Some(t.schemas);
                raw.min_changes = Some(t.min_changes);
                raw.scale_factor = Some(t.scale_factor);
                raw.max_tables = t.max_tables;
            }
            Task::Retention(r) => {
                raw.table = Some(r.table);
                raw.column = Some(r.column);
                raw.older_than = Some(r.older_than);
                raw.filter = r.filter;
                raw.batch_size = Some(r.batch_size);
                raw.pause = Some(r.pause);
                raw.time_budget = Some(r.time_budget);
            }
            Task::Sql(s) => raw.sql = Some(s.sql),
        }
        raw
    }
}
