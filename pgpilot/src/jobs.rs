//! `pgpilot jobs list|run|history` and `pgpilot partitions convert`: command-line wiring for
//! pgpilot-scheduler. The config is read here, and databases are logged in to as `serve` does
//! (the gateway's ConfigResolver); everything else lives in the library.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use pgpilot_gateway::config::Config;
use pgpilot_gateway::jobs::ConfigResolver;
use pgpilot_scheduler::convert::{self, ConvertRequest};
use pgpilot_scheduler::{
    check_naming_template, config_from_url, connect, history_each, history_of, redact_url, run_once,
    validate_with_databases, within_connect_timeout, Clock, JobSpec, Outcome as RunOutcome,
    PartitionInterval, RunRecord, RunReport, Schedule, SystemClock, Target,
};
use serde::Serialize;

use crate::exit::{self, Outcome};
use crate::format::Format;

#[derive(Args)]
pub struct JobsArgs {
    /// The pgpilot config file holding [databases.*] and [[jobs]].
    #[arg(long, short, default_value = "pgpilot.toml", env = "PGPILOT_CONFIG", global = true)]
    config: PathBuf,
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Subcommand)]
enum JobsCommand {
    /// The configured jobs, their next run and their latest recorded run.
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Run one job now, under the same fleet-wide lock `pgpilot serve` uses.
    Run {
        name: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Recorded runs from pgpilot.job_runs, newest first.
    History {
        /// Only this job.
        name: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(Args)]
pub struct PartitionsArgs {
    #[command(subcommand)]
    command: PartitionsCommand,
}

#[derive(Subcommand)]
enum PartitionsCommand {
    /// Print the steps that turn a plain table into a range-partitioned one (nothing is run).
    Convert(ConvertArgs),
}

#[derive(Args)]
struct ConvertArgs {
    /// The table to convert (schema-qualified or on the search_path).
    #[arg(long)]
    table: String,
    /// The date/timestamp/timestamptz column to partition by: its exact name (created_at), or a
    /// quoted SQL identifier ('"Created At"').
    #[arg(long)]
    column: String,
    #[arg(long, value_enum)]
    interval: IntervalArg,
    /// Partitions to create after the boundary.
    #[arg(long, default_value_t = 3)]
    premake: u32,
    /// Partition name template, e.g. "{table}_p{YYYY}_{MM}" (default: {table}_y{YYYY}_m{MM} and similar).
    #[arg(long)]
    naming: Option<String>,
    /// A postgres:// URL to plan against; keep the password in PGPASSWORD rather than the URL.
    #[arg(long, conflicts_with = "database")]
    url: Option<String>,
    /// A [databases.NAME] of --config whose primary to plan against.
    #[arg(long)]
    database: Option<String>,
    #[arg(long, short, default_value = "pgpilot.toml", env = "PGPILOT_CONFIG")]
    config: PathBuf,
    /// text prints a commented SQL script; json the plan's parts.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum IntervalArg {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl From<IntervalArg> for PartitionInterval {
    fn from(i: IntervalArg) -> Self {
        match i {
            IntervalArg::Daily => PartitionInterval::Daily,
            IntervalArg::Weekly => PartitionInterval::Weekly,
            IntervalArg::Monthly => PartitionInterval::Monthly,
            IntervalArg::Yearly => PartitionInterval::Yearly,
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

/// The config's jobs, and their databases' logins as `serve` would make them.
struct JobsConfig {
    jobs: Vec<JobSpec>,
    databases: ConfigResolver,
}

impl JobsConfig {
    fn load(path: &Path) -> anyhow::Result<JobsConfig> {
        let config = Config::load(path).map_err(anyhow::Error::msg)?;
        let names: Vec<&str> = config.databases.keys().map(String::as_str).collect();
        let problems = validate_with_databases(&config.jobs, &names);
        if !problems.is_empty() {
            bail!("{} has problems:\n  {}", path.display(), problems.join("\n  "));
        }
        let jobs = config.jobs.clone();
        let databases = ConfigResolver::new(config).map_err(anyhow::Error::msg)?;
        Ok(JobsConfig { jobs, databases })
    }
}

pub fn run(args: JobsArgs) -> Outcome {
    let config = JobsConfig::load(&args.config)?;
    let rt = runtime()?;
    match args.command {
        JobsCommand::List { format } => rt.block_on(list(&config, format)),
        JobsCommand::Run { name, format } => rt.block_on(run_job(&config, &name, format)),
        JobsCommand::History { name, limit, format } => {
            rt.block_on(history(&config, name.as_deref(), limit, format))
        }
    }
}

#[derive(Serialize)]
struct ListedJob {
    name: String,
    kind: String,
    schedule: String,
    enabled: bool,
    target: String,
    period_seconds: f64,
    next_run: Option<String>,
    last_run: Option<RunRecord>,
    history_error: Option<String>,
}

fn target_text(job: &JobSpec) -> String {
    match &job.target {
        Target::Database(name) => format!("database {name}"),
        Target::Url(url) => redact_url(url),
    }
}

async fn list(config: &JobsConfig, format: Format) -> Outcome {
    let now = SystemClock.now();
    let mut listed = Vec::new();
    for job in &config.jobs {
        let schedule = Schedule::parse(&job.schedule).ok();
        let (last_run, history_error) =
            match history_of(&config.jobs, &config.databases, Some(&job.name), 1).await {
                Ok(mut runs) => (runs.pop(), None),
                Err(e) => (None, Some(e.to_string())),
            };
        listed.push(ListedJob {
            name: job.name.clone(),
            kind: job.kind().to_string(),
            schedule: job.schedule.clone(),
            enabled: job.enabled,
            target: target_text(job),
            period_seconds: schedule.as_ref().map(|s| s.period(now).as_secs_f64()).unwrap_or(0.0),
            next_run: schedule
                .filter(|_| job.enabled)
                .and_then(|s| s.next_after(now))
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
            last_run,
            history_error,
        });
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&listed)?),
        Format::Text => print_list(&listed),
    }
    Ok(exit::OK)
}

fn print_list(jobs: &[ListedJob]) {
    if jobs.is_empty() {
        println!("no [[jobs]] in the config");
        return;
    }
    println!("{:<24} {:<10} {:<16} {:<20} LAST RUN", "JOB", "KIND", "SCHEDULE", "NEXT RUN");
    for j in jobs {
        let next =
            if j.enabled { j.next_run.clone().unwrap_or_else(|| "-".into()) } else { "disabled".into() };
        let last = match (&j.last_run, &j.history_error) {
            (Some(r), _) => {
                format!("{} {} by {}", r.started_at.format("%Y-%m-%d %H:%M:%S UTC"), r.outcome, r.instance)
            }
            (None, Some(e)) => format!("unknown ({e})"),
            (None, None) => "never".into(),
        };
        println!("{:<24} {:<10} {:<16} {:<20} {last}", j.name, j.kind, j.schedule, next);
    }
}

async fn run_job(config: &JobsConfig, name: &str, format: Format) -> Outcome {
    let Some(job) = config.jobs.iter().find(|j| j.name == name) else {
        let names: Vec<&str> = config.jobs.iter().map(|j| j.name.as_str()).collect();
        bail!("there is no job named `{name}` (jobs: {})", names.join(", "));
    };
    let report = run_once(job, &config.databases, &SystemClock).await;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print_report(&report),
    }
    Ok(if report.outcome == RunOutcome::Succeeded { exit::OK } else { exit::FAILURE })
}

fn print_report(r: &RunReport) {
    let rows = r.rows.map(|n| format!(", {n} rows")).unwrap_or_default();
    let attempts = if r.attempts > 1 { format!(", {} attempts", r.attempts) } else { String::new() };
    println!("{} {} in {:.2}s{rows}{attempts}", r.job, r.outcome.as_str(), r.duration_seconds);
    for note in &r.notes {
        println!("  {note}");
    }
    if let Some(e) = &r.error {
        println!("  {}: {e}", if r.outcome == RunOutcome::Skipped { "skipped" } else { "error" });
    }
}

async fn history(config: &JobsConfig, name: Option<&str>, limit: usize, format: Format) -> Outcome {
    if let Some(n) = name {
        if !config.jobs.iter().any(|j| j.name == n) {
            bail!("there is no job named `{n}`");
        }
    }
    let runs = match name {
        Some(_) => history_of(&config.jobs, &config.databases, name, limit).await?,
        None => {
            // Every job's history: the databases that answer are shown, each one that does not
            // is named on stderr (JSON stdout stays the array of runs); none answering fails.
            let history = history_each(&config.jobs, &config.databases, None, limit).await;
            if history.databases_read == 0 && !history.errors.is_empty() {
                let all: Vec<String> = history.errors.iter().map(ToString::to_string).collect();
                bail!("{}", all.join("; "));
            }
            for e in &history.errors {
                eprintln!("pgpilot: {e}");
            }
            history.runs
        }
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&runs)?),
        Format::Text => {
            if runs.is_empty() {
                println!("no runs recorded yet");
            }
            for r in &runs {
                let took = r
                    .finished_at
                    .map(|f| format!(" {:.1}s", (f - r.started_at).as_seconds_f64()))
                    .unwrap_or_default();
                let rows = r.rows.map(|n| format!(" {n} rows")).unwrap_or_default();
                println!(
                    "{} {:<24} {:<10}{took}{rows} ({}, attempts {})",
                    r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    r.job,
                    r.outcome,
                    r.instance,
                    r.attempts
                );
                for line in r.detail.iter().flat_map(|d| d.lines()) {
                    println!("    {line}");
                }
                if let Some(e) = &r.error {
                    println!("    error: {e}");
                }
            }
        }
    }
    Ok(exit::OK)
}

pub fn partitions(args: PartitionsArgs) -> Outcome {
    let PartitionsCommand::Convert(args) = args.command;
    let pg_config = match (&args.url, &args.database) {
        (Some(url), _) => config_from_url(url, "--url")?,
        (None, Some(db)) => {
            let config = Config::load(&args.config).map_err(anyhow::Error::msg)?;
            ConfigResolver::new(config).map_err(anyhow::Error::msg)?.primary(db)?
        }
        (None, None) => bail!("say which database: --url postgres://... or --database NAME (from --config)"),
    };
    let interval = PartitionInterval::from(args.interval);
    if let Some(template) = &args.naming {
        check_naming_template(template, interval).map_err(anyhow::Error::msg)?;
    }
    let request = ConvertRequest {
        table: args.table,
        column: args.column,
        interval,
        premake: args.premake,
        naming: args.naming,
        database: args.database.clone(),
        now: SystemClock.now(),
    };
    let plan = runtime()?.block_on(async {
        let client = within_connect_timeout(&pg_config, connect(&pg_config))
            .await
            .map_err(|e| anyhow::anyhow!("connecting: {e}"))?;
        convert::plan(&client, &request).await.map_err(anyhow::Error::from)
    })?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        Format::Text => print!("{}", plan.render()),
    }
    Ok(exit::OK)
}
