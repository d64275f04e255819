//! `pgpilot bench`: command-line arguments for the load generator in `pgpilot-bench`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use pgpilot_bench::{BenchConfig, Limit, Observer, Protocol, Target, TerminalProgress, Workload};

use crate::exit::{Outcome, FAILURE, INTERRUPTED, OK, USAGE};
use crate::format::Format;

#[derive(Args, Default)]
pub struct BenchArgs {
    /// Endpoints to measure: postgres:// URLs, optionally named (pgbouncer=postgres://...).
    /// Passwords come from PGPASSWORD or ~/.pgpass, not the command line.
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
    /// Another endpoint (same syntax as TARGET; may be repeated).
    #[arg(long = "target", value_name = "TARGET")]
    more_targets: Vec<String>,
    /// A built-in scenario, optionally weighted: select-only, tpcb-like, simple-update,
    /// read-heavy, write-heavy (default tpcb-like).
    #[arg(short = 'b', long = "scenario", value_name = "NAME[@WEIGHT]")]
    scenarios: Vec<String>,
    /// A pgbench-style script file, optionally weighted (may be repeated).
    #[arg(short = 'f', long = "file", value_name = "FILE[@WEIGHT]")]
    files: Vec<String>,
    /// Shorthand for --scenario select-only.
    #[arg(short = 'S', long)]
    select_only: bool,
    /// Concurrent clients (one connection each).
    #[arg(short = 'c', long, default_value_t = 1)]
    clients: usize,
    /// Worker threads of the load generator (default: one per core).
    #[arg(short = 'j', long)]
    jobs: Option<usize>,
    /// Seconds each run lasts (default 10).
    #[arg(short = 'T', long, value_name = "SECONDS", conflicts_with = "transactions")]
    duration: Option<f64>,
    /// Transactions each client runs, instead of a duration.
    #[arg(short = 't', long, value_name = "N")]
    transactions: Option<u64>,
    /// Open a new connection for every transaction.
    #[arg(short = 'C', long)]
    connect: bool,
    /// Limit throughput to this many transactions per second per target; latency is then
    /// measured from each transaction's scheduled start.
    #[arg(short = 'R', long, value_name = "TPS")]
    rate: Option<f64>,
    /// simple (Query), extended (Parse/Bind/Execute in one round trip) or prepared (Parse once
    /// per connection).
    #[arg(short = 'M', long, default_value = "simple", value_name = "PROTOCOL")]
    protocol: Protocol,
    /// Runs per target; targets take turns in a rotating order and each target's median counts.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Create the scenario's tables first (pgbench tables, or the demo application for
    /// read-heavy/write-heavy). Drops existing ones.
    #[arg(short = 'i', long)]
    init: bool,
    /// Scale for --init (pgbench: 100,000 accounts per unit; demo: 200,000 transactions per
    /// unit) and the :scale of custom scripts.
    #[arg(short = 's', long)]
    scale: Option<f64>,
    /// Sets a script variable before the run (may be repeated).
    #[arg(short = 'D', long = "define", value_name = "NAME=VALUE")]
    defines: Vec<String>,
    /// Seed for the random numbers of the scripts, to repeat a run exactly.
    #[arg(long)]
    random_seed: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// No progress bar or per-run lines on stderr (setup notes still appear).
    #[arg(long)]
    no_progress: bool,
}

pub fn run(args: BenchArgs) -> Outcome {
    let format = args.format;
    let quiet = args.no_progress;
    // What the command line asks for is checked before anything runs: a mistake there is a
    // usage error (exit 2), as clap's own are.
    let config = match config_from(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pgpilot: {e:#}");
            return Ok(USAGE);
        }
    };
    let observer: Arc<dyn Observer> =
        Arc::new(if quiet { TerminalProgress::notes_only() } else { TerminalProgress::default() });
    let report = pgpilot_bench::run_with(config, observer)?;
    match format {
        Format::Text => print!("{}", report.render_text()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    // A script must not take a partial run for a finished one, nor a run where a target
    // committed nothing (every transaction failed) for a measurement.
    let nothing_committed: Vec<&str> =
        report.targets.iter().filter(|t| t.transactions == 0).map(|t| t.target.name.as_str()).collect();
    if report.interrupted {
        return Ok(INTERRUPTED);
    }
    if let Some(why) = &report.aborted {
        eprintln!("pgpilot: the run was aborted: {why}; the results above are incomplete");
        return Ok(FAILURE);
    }
    if !nothing_committed.is_empty() {
        eprintln!(
            "pgpilot: no transaction succeeded on {}: nothing was measured",
            nothing_committed.join(", ")
        );
        return Ok(FAILURE);
    }
    Ok(OK)
}

fn config_from(args: BenchArgs) -> anyhow::Result<BenchConfig> {
    let mut targets = Vec::new();
    for spec in args.targets.iter().chain(&args.more_targets) {
        targets.push(Target::parse(spec)?);
    }
    if targets.is_empty() {
        bail!("give at least one target, e.g. pgpilot bench postgres://postgres@127.0.0.1:5432/postgres");
    }
    let mut config = BenchConfig::new(targets);
    let mut workload = Vec::new();
    if args.select_only {
        workload.push(Workload::Scenario { name: "select-only".into(), weight: 1 });
    }
    for spec in &args.scenarios {
        let (name, weight) = pgpilot_bench::script::split_weight(spec).map_err(anyhow::Error::msg)?;
        if pgpilot_bench::script::builtin(name).is_none()
            && pgpilot_bench::demo_app::Mix::from_name(name).is_none()
        {
            bail!(
                "unknown scenario `{name}` (built-in: {}, read-heavy, write-heavy)",
                pgpilot_bench::script::BUILTIN_NAMES.join(", ")
            );
        }
        workload.push(Workload::Scenario { name: name.to_string(), weight });
    }
    for spec in &args.files {
        let (path, weight) = pgpilot_bench::script::split_weight(spec).map_err(anyhow::Error::msg)?;
        workload.push(Workload::File { path: PathBuf::from(path), weight });
    }
    if !workload.is_empty() {
        config.workload = workload;
    }
    for d in &args.defines {
        let (name, value) =
            d.split_once('=').with_context(|| format!("--define `{d}`: expected NAME=VALUE"))?;
        config.defines.push((name.to_string(), value.to_string()));
    }
    config.limit = match (args.transactions, args.duration) {
        (Some(n), _) => Limit::TransactionsPerClient(n),
        (None, Some(secs)) if secs.is_finite() && secs > 0.0 => {
            Limit::Duration(Duration::from_secs_f64(secs))
        }
        (None, Some(secs)) => bail!("--duration must be a positive number of seconds (got {secs})"),
        (None, None) => Limit::Duration(Duration::from_secs(10)),
    };
    if args.clients == 0 || args.rounds == 0 || args.transactions == Some(0) || args.jobs == Some(0) {
        bail!("--clients, --jobs, --rounds and --transactions must be at least 1");
    }
    config.clients = args.clients;
    config.jobs = args.jobs.unwrap_or(0);
    config.connect_per_transaction = args.connect;
    config.rate = args.rate;
    config.protocol = args.protocol;
    config.rounds = args.rounds;
    config.init = args.init;
    config.scale = args.scale;
    config.random_seed = args.random_seed;
    config.stop_on_ctrl_c = true;
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn config(argv: &[&str]) -> anyhow::Result<BenchConfig> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))?;
        config_from(cli.args)
    }

    #[test]
    fn pgbench_style_arguments() {
        let c = config(&[
            "direct=postgres://u@127.0.0.1:5432/db",
            "--target",
            "postgres://u@127.0.0.1:6432/db",
            "-f",
            "a.sql@3",
            "-b",
            "select-only",
            "-c",
            "8",
            "-t",
            "100",
            "-M",
            "prepared",
            "-D",
            "k=v=w",
            "--rounds",
            "3",
        ])
        .unwrap();
        assert_eq!(c.targets[0].name, "direct");
        assert_eq!(c.targets[1].name, "127.0.0.1:6432/db");
        assert_eq!(c.workload_label(), "select-only, a.sql@3");
        assert_eq!((c.clients, c.rounds, c.protocol), (8, 3, Protocol::Prepared));
        assert_eq!(c.limit, Limit::TransactionsPerClient(100));
        assert_eq!(c.defines, vec![("k".to_string(), "v=w".to_string())]);
        assert!(c.stop_on_ctrl_c);
    }

    #[test]
    fn defaults_and_mistakes() {
        let c = config(&["postgres://u@h/db"]).unwrap();
        assert_eq!(c.limit, Limit::Duration(Duration::from_secs(10)));
        assert_eq!(c.workload_label(), "tpcb-like");
        assert!(config(&[]).is_err(), "a target is required");
        assert!(config(&["postgres://u@h/db", "-T", "0"]).is_err());
        assert!(config(&["postgres://u@h/db", "-T", "5", "-t", "5"]).is_err());
        assert!(config(&["postgres://u@h/db", "-M", "fancy"]).is_err());
        assert!(config(&["postgres://u@h/db", "-D", "novalue"]).is_err());
        assert!(config(&["postgres://u@h/db", "-f", "x.sql@many"]).is_err());
    }

    #[test]
    fn rates_and_scales_that_cannot_be_are_usage_errors() {
        let refused = |argv: &[&str]| {
            let args: Vec<&str> = std::iter::once("postgres://u@h/db").chain(argv.iter().copied()).collect();
            config(&args).err().map(|e| e.to_string()).unwrap_or_default()
        };
        assert!(refused(&["-R", "0"]).contains("rate"));
        assert!(refused(&["--rate=-5"]).contains("rate"));
        assert!(refused(&["-s", "0"]).contains("scale"));
        assert!(refused(&["-i", "-s", "0"]).contains("scale"));
        assert!(refused(&["-i", "-s", "0.5"]).contains("whole number"));
        assert!(refused(&["-i", "-s", "0.5", "-b", "tpcb-like", "-b", "read-heavy"]).contains("whole number"));
        // The demo application takes fractions; custom scripts' :scale may be one without --init.
        assert!(config(&["postgres://u@h/db", "-i", "-s", "0.5", "-b", "read-heavy"]).is_ok());
        assert!(config(&["postgres://u@h/db", "-s", "0.5", "-f", "x.sql"]).is_ok());
    }
}
