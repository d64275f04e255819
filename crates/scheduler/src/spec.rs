//! What a job is, as written in the `[[jobs]]` tables of pgpilot.toml.
//!
//! The config is flat (`kind = "partitions"` next to `table = ...`); [`crate::spec_raw`] turns that
//! into the typed [`JobSpec`] below and refuses keys that do not belong to the job's kind.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::schedule::Schedule;
use crate::span::Span;

/// One maintenance job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "crate::spec_raw::RawJobSpec", into = "crate::spec_raw::RawJobSpec")]
pub struct JobSpec {
    pub name: String,
    /// 5-field cron or a nickname (@hourly, @daily, @weekly, @monthly, @yearly), evaluated in UTC.
    pub schedule: String,
    pub target: Target,
    /// A disabled job is listed and can be run by hand, but never fires on its schedule.
    pub enabled: bool,
    pub limits: RunLimits,
    pub task: Task,
}

impl JobSpec {
    pub fn kind(&self) -> &'static str {
        self.task.kind()
    }
}

/// Which database a job works on.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// A `[databases.NAME]` table of the gateway's config; its `primary` URL is used.
    Database(String),
    /// A postgres:// URL (its password, if any, is never printed).
    Url(String),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Database(name) => write!(f, "Database({name:?})"),
            Target::Url(url) => write!(f, "Url({:?})", crate::resolver::redact_url(url)),
        }
    }
}

/// Per-run safety limits.
#[derive(Clone, Debug, PartialEq)]
pub struct RunLimits {
    /// `SET lock_timeout`: how long any statement may wait for a lock before giving up.
    pub lock_timeout: Span,
    /// `SET statement_timeout`: how long any one statement may run.
    pub statement_timeout: Span,
    /// Extra attempts after a transient failure (lock timeout, deadlock, serialization failure).
    pub retries: u32,
    /// The first pause before a retry; each further retry waits twice as long.
    pub retry_backoff: Span,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            lock_timeout: span("5s"),
            statement_timeout: span("30min"),
            retries: 3,
            retry_backoff: span("5s"),
        }
    }
}

pub(crate) fn span(text: &str) -> Span {
    Span::parse(text).unwrap_or_else(|e| unreachable!("built-in default {text}: {e}"))
}

#[derive(Clone, Debug, PartialEq)]
pub enum Task {
    Partitions(PartitionsTask),
    Refresh(RefreshTask),
    Analyze(ThresholdTask),
    Vacuum(ThresholdTask),
    Retention(RetentionTask),
    Sql(SqlTask),
}

impl Task {
    pub fn kind(&self) -> &'static str {
        match self {
            Task::Partitions(_) => "partitions",
            Task::Refresh(_) => "refresh",
            Task::Analyze(_) => "analyze",
            Task::Vacuum(_) => "vacuum",
            Task::Retention(_) => "retention",
            Task::Sql(_) => "sql",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionInterval {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// Keep a range-partitioned table's future partitions made and its old ones retired.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionsTask {
    /// The partitioned table ("public.events").
    pub table: String,
    pub interval: PartitionInterval,
    /// How many partitions after the current one to keep made, counted from now.
    pub premake: u32,
    /// Partition name template; None means the default for the interval (events_y2026_m03).
    pub naming: Option<String>,
    /// The time zone partition boundaries fall in (a PostgreSQL TimeZone name).
    pub time_zone: String,
    /// Partitions whose whole range is older than this are detached.
    pub retention: Option<Span>,
    /// Drop detached partitions instead of keeping them as plain tables.
    pub retention_drop: bool,
    /// Move rows found in the default partition into the partition made for them.
    pub move_default_rows: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Concurrently {
    /// CONCURRENTLY when the view allows it, otherwise a plain refresh and a note saying why.
    #[default]
    Auto,
    /// CONCURRENTLY or fail (readers must never be blocked).
    Always,
    /// Always a plain REFRESH (faster, but blocks readers for its duration).
    Never,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RefreshTask {
    pub view: String,
    pub concurrently: Concurrently,
}

/// ANALYZE or VACUUM the tables whose changes pass `min_changes + scale_factor * rows`.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdTask {
    /// Tables to consider; empty means every table in `schemas`.
    pub tables: Vec<String>,
    /// Schemas to consider when `tables` is empty; empty means every non-system schema.
    pub schemas: Vec<String>,
    pub min_changes: u64,
    pub scale_factor: f64,
    /// At most this many tables per run (the most changed first).
    pub max_tables: Option<u32>,
}

/// Delete old rows in bounded batches.
#[derive(Clone, Debug, PartialEq)]
pub struct RetentionTask {
    pub table: String,
    /// The timestamp (or date) column compared with `older_than`.
    pub column: String,
    pub older_than: Span,
    /// An extra SQL predicate rows must also match (`status = 'done'`).
    pub filter: Option<String>,
    pub batch_size: u32,
    /// Pause between batches, to let replicas and autovacuum keep up.
    pub pause: Span,
    /// Stop starting new batches after this long; the next run carries on.
    pub time_budget: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SqlTask {
    pub sql: String,
}

/// Human messages about everything wrong with `jobs` (empty when all is well), for `check-config`.
pub fn validate(jobs: &[JobSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for job in jobs {
        let mut say = |msg: String| problems.push(format!("job `{}`: {msg}", job.name));
        if job.name.trim().is_empty() {
            say("the name is empty".into());
        } else if !names.insert(job.name.as_str()) {
            say("another job has the same name".into());
        }
        if let Err(e) = Schedule::parse(&job.schedule) {
            say(e);
        }
        match &job.target {
            Target::Database(name) if name.trim().is_empty() => say("`database` is empty".into()),
            Target::Url(url) if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) => {
                say("`url` must start with postgres:// or postgresql://".into())
            }
            // Parsed as the run will parse it: a URL tokio-postgres refuses would fail every run.
            Target::Url(url) => {
                if let Err(crate::ResolveError::BadUrl { reason, .. }) =
                    crate::resolver::config_from_url(url, &job.name)
                {
                    say(format!("`url` is not valid: {reason}"));
                }
            }
            _ => {}
        }
        validate_limits(&job.limits, &mut say);
        validate_task(&job.task, &mut say);
    }
    problems
}

/// Like [`validate`], and also checks that every `database = "NAME"` names a configured database.
pub fn validate_with_databases(jobs: &[JobSpec], databases: &[&str]) -> Vec<String> {
    let mut problems = validate(jobs);
    for job in jobs {
        if let Target::Database(name) = &job.target {
            if !databases.contains(&name.as_str()) {
                problems.push(format!("job `{}`: there is no [databases.{name}] table", job.name));
            }
        }
    }
    problems
}

fn validate_limits(limits: &RunLimits, say: &mut impl FnMut(String)) {
    for (key, span) in [
        ("lock_timeout", &limits.lock_timeout),
        ("statement_timeout", &limits.statement_timeout),
        ("retry_backoff", &limits.retry_backoff),
    ] {
        match span.duration() {
            None => say(format!("`{key}` must be a fixed length of time (seconds to days), not `{span}`")),
            Some(d) if d.is_zero() && key != "retry_backoff" => {
                say(format!("`{key}` must be more than zero (a zero timeout means none at all)"))
            }
            Some(d) if d.as_millis() > i32::MAX as u128 => say(format!("`{key}` is too long")),
            _ => {}
        }
    }
    if limits.retries > 10 {
        say(format!("`retries = {}` is more than 10; a job failing that often needs a look", limits.retries));
    }
}

fn validate_task(task: &Task, say: &mut impl FnMut(String)) {
    match task {
        Task::Partitions(p) => validate_partitions(p, say),
        Task::Refresh(r) => non_empty("view", &r.view, say),
        Task::Analyze(t) | Task::Vacuum(t) => {
            if !t.tables.is_empty() && !t.schemas.is_empty() {
                say("give `schemas` or `tables`, not both: `tables` lists the tables the job considers, \
                     `schemas` stands for every table in them when no `tables` are given (to cover a schema and \
                     more tables, use two jobs)"
                    .into());
            }
            if !(0.0..=100.0).contains(&t.scale_factor) {
                say(format!("`scale_factor = {}` must be between 0 and 100", t.scale_factor));
            }
            if t.max_tables == Some(0) {
                say("`max_tables = 0` would never do anything".into());
            }
        }
        Task::Retention(r) => {
            non_empty("table", &r.table, say);
            non_empty("column", &r.column, say);
            if !r.older_than.interval().is_positive() {
                say("`older_than` must be more than zero".into());
            }
            if r.batch_size == 0 {
                say("`batch_size` must be at least 1".into());
            }
            if r.pause.duration().is_none() || r.time_budget.duration().is_none() {
                say("`pause` and `time_budget` must be fixed lengths of time (seconds to days)".into());
            }
            if r.filter.as_deref().is_some_and(|f| f.trim().is_empty()) {
                say("`filter` is empty; leave it out instead".into());
            }
        }
        Task::Sql(s) => non_empty("sql", &s.sql, say),
    }
}

fn validate_partitions(p: &PartitionsTask, say: &mut impl FnMut(String)) {
    non_empty("table", &p.table, say);
    if p.premake == 0 || p.premake > 400 {
        say(format!("`premake = {}` must be between 1 and 400", p.premake));
    }
    if let Some(template) = &p.naming {
        if let Err(e) = crate::tasks::periods::check_template(template, p.interval) {
            say(e);
        }
    }
    if let Some(name) = overlong_partition_name(p) {
        say(format!(
            "partitions of `{}` would be named like {name} ({} bytes), longer than PostgreSQL's {} \
             bytes; set a shorter `naming` template",
            p.table,
            name.len(),
            crate::tasks::periods::MAX_IDENTIFIER_BYTES
        ));
    }
    if p.time_zone.is_empty()
        || !p.time_zone.chars().all(|c| c.is_ascii_alphanumeric() || "/_+-:".contains(c))
    {
        say(format!("`time_zone = {:?}` is not a time zone name", p.time_zone));
    } else if !known_zone_name(&p.time_zone, std::path::Path::new(ZONEINFO)) {
        say(format!(
            "`time_zone = {:?}` is not in the time zone database ({ZONEINFO}); e.g. \"Europe/Berlin\" or \"UTC\"",
            p.time_zone
        ));
    }
    if let Some(r) = &p.retention {
        if !r.interval().is_positive() {
            say("`retention` must be more than zero".into());
        }
    }
    if p.retention_drop && p.retention.is_none() {
        say("`retention_drop = true` needs a `retention` period".into());
    }
}

/// A partition name the job would make that PostgreSQL would cut at 63 bytes (the job refuses
/// each at run time, so without this the table silently gets no partitions). The placeholders
/// all have fixed widths, so one date stands for every period.
fn overlong_partition_name(p: &PartitionsTask) -> Option<String> {
    use crate::tasks::periods;
    let table = p.table.rsplit('.').next().unwrap_or(&p.table).trim_matches('"');
    let template = p.naming.as_deref().unwrap_or(periods::default_template(p.interval));
    let date = chrono::NaiveDate::from_ymd_opt(2026, 12, 1)?;
    let name = periods::partition_name(template, table, date);
    (name.len() > periods::MAX_IDENTIFIER_BYTES).then_some(name)
}

/// Where the system's time zone database is; PostgreSQL's Debian packages read the same one.
const ZONEINFO: &str = "/usr/share/zoneinfo";

/// Whether a zone name without digits (a typo like "Europe/Berln" fails only when the job runs)
/// is in the time zone database under `dir`, its case ignored as PostgreSQL ignores it. Offsets
/// and POSIX specifications ("+05:30", "UTC+3") are left to the server, as is every name where
/// there is no database to look in.
fn known_zone_name(name: &str, dir: &std::path::Path) -> bool {
    if name.chars().any(|c| c.is_ascii_digit()) || !dir.is_dir() {
        return true;
    }
    let mut path = dir.to_path_buf();
    for part in name.split('/') {
        let found = std::fs::read_dir(&path).ok().and_then(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name())
                .find(|f| f.to_str().is_some_and(|f| f.eq_ignore_ascii_case(part)))
        });
        match found {
            Some(f) => path.push(f),
            None => return false,
        }
    }
    path.is_file()
}

fn non_empty(key: &str, value: &str, say: &mut impl FnMut(String)) {
    if value.trim().is_empty() {
        say(format!("`{key}` is empty"));
    }
}
