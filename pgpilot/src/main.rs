//! The `pgpilot` binary: command-line wiring only. Every command's logic lives in a library crate.

mod advise;
mod bench;
mod demo;
mod exit;
mod jobs;
mod serve;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "pgpilot", version, about = "The PostgreSQL performance layer", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: pooler, router, cache, metrics and maintenance jobs.
    Serve(serve::ServeArgs),
    /// Validate a configuration file and print what it would run.
    CheckConfig(serve::CheckConfigArgs),
    /// Start a local primary + replica, put pgpilot in front, drive a workload and report.
    Demo(demo::DemoArgs),
    /// Index suggestions proven with the planner, and a health check of the database.
    Advise(advise::AdviseArgs),
    /// Measure PostgreSQL endpoints side by side with latency percentiles.
    Bench(bench::BenchArgs),
    /// Maintenance jobs: list, run one now, show history.
    Jobs(jobs::JobsArgs),
    /// Partition planning: convert a plain table into a partitioned one (prints the steps).
    Partitions(jobs::PartitionsArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Demo(demo::DemoArgs::default())) {
        Command::Serve(args) => serve::run(args),
        Command::CheckConfig(args) => serve::check_config(args),
        Command::Demo(args) => demo::run(args),
        Command::Advise(args) => advise::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Jobs(args) => jobs::run(args),
        Command::Partitions(args) => jobs::partitions(args),
    };
    exit::report(result)
}
