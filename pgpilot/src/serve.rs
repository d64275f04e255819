//! `pgpilot serve` and `pgpilot check-config`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use pgpilot_gateway::config::{pgbouncer_ini, AuthType, Config, PoolMode, QuickStart, ServerUrl};
use pgpilot_gateway::Gateway;
use pgpilot_scheduler::{redact_url, Target};

use crate::exit::{Outcome, FAILURE, OK};
use crate::format::Format;
use serde::Serialize;

#[derive(Args)]
pub struct ServeArgs {
    /// The configuration file (see pgpilot.example.toml).
    #[arg(long, short, env = "PGPILOT_CONFIG", conflicts_with = "pgbouncer_ini")]
    pub config: Option<PathBuf>,
    /// Run from an existing pgbouncer.ini (and its auth_file) instead of a pgpilot.toml.
    #[arg(long)]
    pub pgbouncer_ini: Option<PathBuf>,
    /// Run a pgbouncer.ini even where pgpilot would admit clients PgBouncer refuses (auth_type =
    /// hba, for one); without it such a file is refused at start.
    #[arg(long)]
    pub allow_less_strict: bool,
    /// Address to accept clients on, overriding the file (e.g. 127.0.0.1:6432).
    #[arg(long)]
    pub listen: Option<String>,
    /// The primary server as a postgres:// URL; clients reach it under the URL's database name.
    #[arg(long)]
    pub primary: Option<String>,
    /// A streaming replica of the primary (repeatable); turns read/write splitting on.
    #[arg(long = "replica")]
    pub replicas: Vec<String>,
    /// Server connections per (database, user) pool.
    #[arg(long)]
    pub pool_size: Option<usize>,
    #[arg(long, value_enum)]
    pub pool_mode: Option<PoolModeArg>,
    /// Address for /metrics, /health, the API and the dashboard (e.g. 127.0.0.1:9930).
    #[arg(long)]
    pub http: Option<String>,
    /// Client authentication; `trust` must be explicit on a non-loopback address.
    #[arg(long, value_enum)]
    pub auth: Option<AuthArg>,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    pub workers: Option<usize>,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Clone, Default)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PoolModeArg {
    Session,
    Transaction,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AuthArg {
    Trust,
    Plain,
    Md5,
    #[value(name = "scram-sha-256")]
    ScramSha256,
}

#[derive(Args)]
pub struct CheckConfigArgs {
    /// The file to check.
    pub file: PathBuf,
    /// `json` prints the report (problems, or what would run) as one JSON document.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

impl ServeArgs {
    fn quick_start(&self) -> QuickStart {
        QuickStart {
            listen: self.listen.clone(),
            primary: self.primary.clone(),
            replicas: self.replicas.clone(),
            pool_size: self.pool_size,
            pool_mode: self.pool_mode.map(|m| match m {
                PoolModeArg::Session => PoolMode::Session,
                PoolModeArg::Transaction => PoolMode::Transaction,
            }),
            http: self.http.clone(),
            auth: self.auth.map(|a| match a {
                AuthArg::Trust => AuthType::Trust,
                AuthArg::Plain => AuthType::Plain,
                AuthArg::Md5 => AuthType::Md5,
                AuthArg::ScramSha256 => AuthType::ScramSha256,
            }),
            admin_users: Vec::new(),
        }
    }
}

pub fn init_logging(log: &LogArgs) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGPILOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal, and never when NO_COLOR is set.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colour);
    let _ = match log.log_format {
        LogFormat::Text if colour => {
            builder.with_writer(crate::log_lines::OneLinePerEvent { colour }).try_init()
        }
        LogFormat::Text => builder
            .event_format(crate::log_format::PlainLine)
            .with_writer(crate::log_lines::OneLinePerEvent { colour })
            .try_init(),
        LogFormat::Json => builder.with_writer(std::io::stderr).json().try_init(),
    };
}

/// Many clients need many file descriptors: take the hard limit.
fn raise_open_files() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

/// What max_client_conn clients may take: a TLS client holds three descriptors (its TCP socket
/// and the socket pair its session reads through), a plain one one; server connections and
/// files come on top. Said at start, as PgBouncer does, rather than met as `accept` errors.
fn warn_if_few_open_files(config: &pgpilot_gateway::config::Config) {
    use pgpilot_gateway::config::ClientTlsMode;
    let per_client = if config.tls.client_tls_sslmode == ClientTlsMode::Disable { 1 } else { 3 };
    let wanted = config.pgpilot.max_client_conn as u64 * per_client + 64;
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else { return };
    if soft < wanted {
        tracing::warn!(
            limit = soft,
            wanted,
            "the open-file limit is below what max_client_conn clients need ({per_client} per client, \
             plus server connections): past it new clients are refused; raise LimitNOFILE / ulimit -n \
             or lower max_client_conn"
        );
    }
}

pub fn run(args: ServeArgs) -> Outcome {
    init_logging(&args.log);
    raise_open_files();
    let config = match (&args.config, &args.pgbouncer_ini) {
        (Some(path), _) if pgbouncer_ini::is_pgbouncer_ini(path) => {
            from_pgbouncer_ini(path, args.allow_less_strict)?
        }
        (Some(path), _) => pgbouncer_ini::load(path).map_err(anyhow::Error::msg)?,
        (None, Some(ini)) => from_pgbouncer_ini(ini, args.allow_less_strict)?,
        (None, None) if args.primary.is_none() => {
            anyhow::bail!("nothing to serve: give --config FILE, --pgbouncer-ini FILE or --primary postgres://user@host:port/db")
        }
        (None, None) => Config::default(),
    };
    warn_if_few_open_files(&config);
    warn_of_passwords_in_argv(&args);
    let workers = args.workers.unwrap_or(config.pgpilot.workers);
    let runtime = runtime(workers)?;
    let overrides = args.quick_start();
    runtime.block_on(async move {
        let gateway = Gateway::start(config, overrides).await?;
        gateway.run_until_stopped().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(OK)
}

/// A password in a --primary or --replica URL is readable by every local user (ps,
/// /proc/PID/cmdline) for as long as pgpilot runs; it works, as in psql, but is said at start.
fn warn_of_passwords_in_argv(args: &ServeArgs) {
    let urls = args.primary.iter().chain(&args.replicas);
    if urls.filter_map(|u| ServerUrl::parse(u).ok()).any(|u| u.password.is_some()) {
        tracing::warn!(
            "a server password given on the command line is visible to every local user (ps); \
             put it in PGPASSWORD, a password_file or the config file instead"
        );
    }
}

/// A pgbouncer.ini as it is: what pgpilot does not honour is said once, loudly, at start; a
/// file that would let in clients PgBouncer refuses runs only when the operator says so.
fn from_pgbouncer_ini(path: &std::path::Path, allow_less_strict: bool) -> anyhow::Result<Config> {
    let conversion = pgbouncer_ini::convert_file(path).map_err(anyhow::Error::msg)?;
    for note in conversion.to_tell() {
        tracing::warn!("{note}");
    }
    let weakening: Vec<String> = conversion.weakening().map(|n| n.setting.clone()).collect();
    if !weakening.is_empty() && !allow_less_strict {
        anyhow::bail!(
            "{}: pgpilot would admit clients PgBouncer refuses ({}); see `pgpilot convert` for what changes, \
             or pass --allow-less-strict to run it anyway",
            path.display(),
            weakening.join(", ")
        );
    }
    Ok(conversion.config)
}

/// The runtime for `workers` threads; 0 picks: one per CPU, but a single thread on a machine of
/// two CPUs or fewer, where PostgreSQL or the clients need the other core and a single-threaded
/// runtime (no work stealing, no cross-thread wake-ups) spends about a fifth less CPU per
/// transaction (BENCHMARKS.md).
pub fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = match workers {
        0 if cpus <= 2 => 1,
        0 => cpus,
        n => n,
    };
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if workers > 1 {
        builder.worker_threads(workers);
    }
    Ok(builder.enable_all().thread_name("pgpilot-worker").build()?)
}

pub fn check_config(args: CheckConfigArgs) -> Outcome {
    let report = config_report(&args.file);
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print_config_report(&report),
    }
    Ok(if report.ok { OK } else { FAILURE })
}

/// What check-config found: the problems, or what would run.
#[derive(Serialize)]
struct ConfigReport {
    file: PathBuf,
    ok: bool,
    /// False when the file could not be read or parsed at all (its one problem says why).
    #[serde(skip)]
    loaded: bool,
    /// What a pgbouncer.ini's conversion says (settings not honoured, changed meanings).
    notes: Vec<String>,
    problems: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runs: Option<WhatRuns>,
}

#[derive(Serialize)]
struct WhatRuns {
    listen: Vec<String>,
    http: Option<String>,
    pool_mode: &'static str,
    auth_type: String,
    databases: Vec<DatabaseRun>,
    jobs: Vec<JobRun>,
}

#[derive(Serialize)]
struct DatabaseRun {
    name: String,
    /// The primary's URL, without any password.
    primary: String,
    replicas: usize,
    pool_size: usize,
}

#[derive(Serialize)]
struct JobRun {
    name: String,
    kind: String,
    target: String,
    schedule: String,
    enabled: bool,
}

fn config_report(file: &std::path::Path) -> ConfigReport {
    let loaded = if pgbouncer_ini::is_pgbouncer_ini(file) {
        // What `serve` would warn about at start, said here where it can still be fixed.
        pgbouncer_ini::convert_file(file).map(|conversion| {
            let notes = conversion.to_tell();
            (conversion.config, notes)
        })
    } else {
        pgbouncer_ini::load(file).map(|c| (c, Vec::new()))
    };
    let mut report = ConfigReport {
        file: file.to_path_buf(),
        ok: false,
        loaded: false,
        notes: Vec::new(),
        problems: Vec::new(),
        runs: None,
    };
    let (config, notes) = match loaded {
        Ok(c) => c,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    report.loaded = true;
    report.notes = notes;
    report.notes.extend(config.notes());
    report.problems = config.validate();
    report.problems.extend(config.environment_problems());
    if let Some(dir) = config.pgpilot.unix_socket_dir.as_ref().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            report.problems.push(format!("unix_socket_dir {} is not a directory here", dir.display()));
        }
    }
    report.ok = report.problems.is_empty();
    if report.ok {
        report.runs = Some(what_runs(&config));
    }
    report
}

fn what_runs(config: &Config) -> WhatRuns {
    let databases = config
        .databases
        .iter()
        .map(|(name, db)| {
            let mut primary = db.primary_url().map(|u| u.to_string()).unwrap_or_default();
            if name == pgpilot_gateway::config::FALLBACK_DATABASE {
                primary = format!(
                    "{} (each client's own database, unless the URL names one)",
                    redact_url(&db.primary)
                );
            }
            DatabaseRun {
                name: name.clone(),
                primary,
                replicas: db.replicas.len(),
                pool_size: config.pool_size(db),
            }
        })
        .collect();
    let jobs = config
        .jobs
        .iter()
        .map(|job| JobRun {
            name: job.name.clone(),
            kind: job.kind().to_string(),
            target: match &job.target {
                Target::Database(name) => format!("database {name}"),
                Target::Url(url) => redact_url(url),
            },
            schedule: job.schedule.to_string(),
            enabled: job.enabled,
        })
        .collect();
    WhatRuns {
        listen: config.pgpilot.listen.0.clone(),
        http: config.pgpilot.http.clone(),
        pool_mode: config.pgpilot.pool_mode.as_str(),
        auth_type: config.client_auth_summary(),
        databases,
        jobs,
    }
}

fn print_config_report(report: &ConfigReport) {
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    let Some(runs) = report.runs.as_ref().filter(|_| report.ok) else {
        if !report.loaded {
            // Worded as the program's other failures are.
            report.problems.iter().for_each(|p| eprintln!("pgpilot: {p}"));
            return;
        }
        eprintln!("{}: {} problem(s):", report.file.display(), report.problems.len());
        for p in &report.problems {
            eprintln!("  - {p}");
        }
        return;
    };
    println!("{}: OK", report.file.display());
    println!("  listen: {}", runs.listen.join(", "));
    if let Some(http) = &runs.http {
        println!("  http: {http}");
    }
    println!("  pool_mode: {}, auth_type: {}", runs.pool_mode, runs.auth_type);
    for db in &runs.databases {
        println!(
            "  database {}: primary {}, {} replica(s), pool_size {}",
            db.name, db.primary, db.replicas, db.pool_size
        );
    }
    for job in &runs.jobs {
        let state = if job.enabled { "" } else { " (disabled: runs only when asked)" };
        println!("  job {}: {} on {}, schedule {} UTC{state}", job.name, job.kind, job.target, job.schedule);
    }
}
