//! `pgpilot advise`: command-line wiring for the DBA advisor (pgpilot-advisor).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use pgpilot_advisor::{
    advise, apply, connect, render, AdviseOptions, ApplySettings, MachineSpec, NoProgress, Progress,
    Severity, StorageKind, TerminalProgress, WorkloadKind,
};

use crate::exit::{Outcome, FAILURE, FINDINGS, OK, USAGE};

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
    Html,
}

#[derive(Args, Default)]
pub struct AdviseArgs {
    /// Database to advise: postgres://user@host:port/db (password from the URL, PGPASSWORD or ~/.pgpass).
    #[arg(long, conflicts_with = "config")]
    pub url: Option<String>,
    /// pgpilot's TOML configuration; with --database, advise that database's primary.
    #[arg(long, requires = "database")]
    pub config: Option<PathBuf>,
    /// The [databases.NAME] entry of --config.
    #[arg(long)]
    pub database: Option<String>,

    /// A file of SQL statements separated by `;` (an optional `-- calls: N` line weights a statement).
    #[arg(long)]
    pub workload_file: Option<PathBuf>,
    /// A running pgpilot gateway to read per-statement statistics from, e.g. http://127.0.0.1:9930
    /// (bearer token from PGPILOT_API_TOKEN).
    #[arg(long)]
    pub from_pgpilot: Option<String>,
    /// Do not read pg_stat_statements even when it is installed.
    #[arg(long)]
    pub no_pg_stat_statements: bool,
    /// Health and configuration only: no index advice.
    #[arg(long)]
    pub skip_indexes: bool,
    /// Create hypopg and pgstattuple in the database when the server has them but the database does not.
    #[arg(long)]
    pub install_extensions: bool,
    /// Keep an index only when it cuts a statement's planned cost by at least this percentage.
    #[arg(long, default_value_t = 50.0)]
    pub min_cost_reduction: f64,
    /// Ignore statements whose planned cost is already below this.
    #[arg(long, default_value_t = 100.0)]
    pub min_cost: f64,
    /// Analyse at most this many statements (heaviest first).
    #[arg(long, default_value_t = 500)]
    pub max_statements: usize,

    /// Memory of the database server (e.g. 16GB); detected when the server is local.
    #[arg(long, value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// CPUs of the database server; detected when the server is local.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub cpus: Option<u32>,
    /// Storage of the database server: ssd, hdd or san.
    #[arg(long)]
    pub storage: Option<StorageKind>,
    /// Workload type for configuration advice: web, oltp, dw, mixed or desktop.
    #[arg(long, default_value = "mixed")]
    pub workload_type: Option<WorkloadKind>,
    /// Peak statements per second the application needs, multiplied by the measured mean statement
    /// latency (default: the connections busy are measured over 5 seconds, from pg_stat_statements'
    /// execution time or by sampling pg_stat_activity's active client backends).
    #[arg(long, value_parser = parse_rate)]
    pub target_tps: Option<f64>,
    /// Application instances sharing the database (each has its own pool).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub app_instances: u32,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write the report here instead of standard output (HTML defaults to pgpilot-advise.html).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Show only the N most important findings and index suggestions (text format).
    #[arg(long)]
    pub top: Option<usize>,
    /// Exit with code 3 when a finding is at least this severe: warning or critical (index
    /// suggestions count as warnings).
    #[arg(long, value_parser = parse_fail_on)]
    pub fail_on: Option<Severity>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,

    /// Create the suggested indexes (CREATE INDEX CONCURRENTLY) after confirmation, and measure before/after.
    #[arg(long)]
    pub apply: bool,
    /// With --apply: do not ask, create every proven suggestion.
    #[arg(long, requires = "apply")]
    pub yes: bool,
    /// With --apply: how long CREATE INDEX may wait for its lock, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub lock_timeout_ms: u64,
}

/// `--fail-on` takes warning or critical. Every report has info findings (the largest tables,
/// archiving off), so `info` would fail every run: it is refused as a usage error, not taken.
fn parse_fail_on(s: &str) -> Result<Severity, String> {
    match s.parse()? {
        Severity::Info => {
            Err("`info` would fail every run (every report has info findings): use warning or critical"
                .into())
        }
        severity => Ok(severity),
    }
}

pub fn run(args: AdviseArgs) -> Outcome {
    // No database named at all is bad usage (2), as clap's own errors are; a configuration that
    // cannot be read is a failure (1).
    if args.url.is_none() && args.database.is_none() && std::env::var_os("DATABASE_URL").is_none() {
        eprintln!("pgpilot: {NO_DATABASE}");
        return Ok(USAGE);
    }
    let opts = options(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let progress: Box<dyn Progress> =
        if args.quiet { Box::new(NoProgress) } else { Box::new(TerminalProgress::new()) };
    let mut report = runtime.block_on(advise(&opts, progress.as_ref()))?;
    if args.apply {
        let chosen = confirm(&report, args.yes)?;
        if !chosen.is_empty() {
            let settings = ApplySettings { lock_timeout_ms: args.lock_timeout_ms, ..Default::default() };
            runtime.block_on(apply(&opts, &mut report, &chosen, &settings, progress.as_ref()))?;
        }
    }
    // Said on the terminal too: a report written to a file (or read as JSON) could hide that the
    // workload behind its index advice was cut short.
    for warning in &report.workload.warnings {
        eprintln!("warning: {warning}");
    }
    write_report(&args, &report)?;
    // An index --apply was asked to create and did not is a failure of the command, whatever the
    // findings: scripts must not read it as done.
    let not_created = report.applied.iter().filter(|a| a.failed_to_create()).count();
    if not_created > 0 {
        eprintln!(
            "pgpilot: {not_created} of {} index(es) could not be created (see APPLIED in the report)",
            report.applied.len()
        );
        return Ok(FAILURE);
    }
    let failed = args.fail_on.is_some_and(|t| report.fails_on(t));
    Ok(if failed { FINDINGS } else { OK })
}

const NO_DATABASE: &str =
    "say which database: --url postgres://..., or --config pgpilot.toml --database NAME";

fn options(args: &AdviseArgs) -> anyhow::Result<AdviseOptions> {
    // A database named in the configuration brings its replicas: their index scans count too.
    let (url, replicas) = match (&args.url, &args.config, &args.database) {
        (Some(url), _, _) => (url.clone(), Vec::new()),
        (None, config, Some(name)) => {
            let path = config.clone().unwrap_or_else(connect::default_config_path);
            (connect::database_url_from_config(&path, name)?, connect::replica_urls_from_config(&path, name)?)
        }
        _ => match std::env::var("DATABASE_URL") {
            Ok(url) => (url, Vec::new()),
            Err(_) => bail!("{NO_DATABASE}"),
        },
    };
    let mut opts = AdviseOptions::new(url);
    opts.replicas = replicas;
    opts.workload.pg_stat_statements = !args.no_pg_stat_statements;
    opts.workload.file = args.workload_file.clone();
    opts.workload.pgpilot_url = args.from_pgpilot.clone();
    // Named on the command line: unreadable, they fail the run (exit 1), as any other bad input.
    opts.workload.required = true;
    opts.workload.pgpilot_token = std::env::var("PGPILOT_API_TOKEN").ok().filter(|t| !t.is_empty());
    opts.skip_indexes = args.skip_indexes;
    opts.index.install_extensions = args.install_extensions;
    opts.index.min_cost_reduction = (args.min_cost_reduction / 100.0).clamp(0.0, 0.99);
    opts.index.min_statement_cost = args.min_cost;
    opts.index.max_statements = args.max_statements;
    opts.machine = MachineSpec { memory_bytes: args.memory, cpus: args.cpus };
    opts.storage = args.storage;
    opts.workload_kind = args.workload_type.unwrap_or(WorkloadKind::Mixed);
    opts.pool.target_tps = args.target_tps;
    opts.pool.app_instances = args.app_instances;
    opts.scan_ledger = scan_ledger_path();
    Ok(opts)
}

/// The advisor's planning probes indexes and counts as their use: it remembers how much between
/// runs in this file, so that the next run still reports an index as unused.
fn scan_ledger_path() -> Option<PathBuf> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("pgpilot/advisor-index-scans.json"))
}

/// "16GB", "512MB", "2T", "1048576" → bytes. Checked as clap parses the command line, so a bad
/// size is a usage error (exit 2) before anything connects; none is zero (shared_buffers = '0GB').
fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_uppercase();
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let number: f64 = digits.parse().map_err(|_| "expected a size such as 16GB".to_string())?;
    let factor = match t[digits.len()..].trim().trim_end_matches("IB").trim_end_matches('B') {
        "" => 1u64,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        other => return Err(format!("unknown unit {other}: use KB, MB, GB or TB")),
    };
    match (number * factor as f64) as u64 {
        0 => Err("the server has more memory than that: give a size such as 16GB".into()),
        bytes => Ok(bytes),
    }
}

/// A rate above zero, for --target-tps.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err("expected statements per second above 0, such as 500".into()),
    }
}

/// Which suggestions to create: all proven ones with --yes, else asked one by one on the terminal.
fn confirm(report: &pgpilot_advisor::Report, yes: bool) -> anyhow::Result<Vec<usize>> {
    let proven: Vec<usize> = report
        .index_suggestions
        .iter()
        .enumerate()
        .filter(|(_, s)| s.evidence == pgpilot_advisor::report::Evidence::Hypothetical)
        .map(|(i, _)| i)
        .collect();
    let costs_hot = |i: &usize| report.index_suggestions[*i].write_overhead.updates_losing_hot > 0;
    if yes {
        // A trade (faster reads, slower updates of a column the workload sets) is the DBA's to
        // make, not an unattended run's.
        for i in proven.iter().filter(|i| costs_hot(i)) {
            eprintln!(
                "skipped (its column is updated, so updates would lose HOT; create it by hand if worth it): {};",
                report.index_suggestions[*i].create_statement
            );
        }
        return Ok(proven.into_iter().filter(|i| !costs_hot(i)).collect());
    }
    if !std::io::stdin().is_terminal() {
        bail!("--apply asks before creating each index: run it on a terminal, or add --yes");
    }
    let mut chosen = Vec::new();
    let stdin = std::io::stdin();
    for (i, s) in report.index_suggestions.iter().enumerate() {
        let kind = match (proven.contains(&i), costs_hot(&i)) {
            (false, _) => " (HEURISTIC, not proven)",
            (true, true) => " (costs HOT updates: its column is updated by the workload)",
            (true, false) => "",
        };
        eprint!("{};{kind}\ncreate it? [y/N] ", s.create_statement);
        std::io::stderr().flush()?;
        let mut answer = String::new();
        stdin.lock().read_line(&mut answer)?;
        if matches!(answer.trim(), "y" | "Y" | "yes") {
            chosen.push(i);
        }
    }
    Ok(chosen)
}

fn write_report(args: &AdviseArgs, report: &pgpilot_advisor::Report) -> anyhow::Result<()> {
    let (text, default_file) = match args.format {
        Format::Json => (serde_json::to_string_pretty(report)? + "\n", None),
        Format::Html => (report.render_html(), Some(PathBuf::from("pgpilot-advise.html"))),
        Format::Text => {
            let colour = args.output.is_none() && render::stdout_wants_colour();
            (report.render_text_with(&render::TextOptions { colour, top: args.top }), None)
        }
    };
    match args.output.clone().or(default_file) {
        Some(path) => {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("report written to {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_memory;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("16GB").unwrap(), 16 << 30);
        assert_eq!(parse_memory("512mb").unwrap(), 512 << 20);
        assert_eq!(parse_memory("2T").unwrap(), 2 << 40);
        assert_eq!(parse_memory("1024").unwrap(), 1024);
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("0GB").is_err());
        assert!(parse_memory("16XB").is_err());
    }
}
