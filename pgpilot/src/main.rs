//! The `pgpilot` binary: command-line wiring only. Every command's logic lives in a library crate.

mod advise;
mod bench;
mod cache;
mod convert;
mod demo;
mod exit;
mod format;
mod generate;
mod jobs;
mod log_format;
mod log_lines;
mod serve;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's own call (linked in by libmimalloc-sys, which declares it only with its "extended"
// feature): frees what the allocator holds in reserve.
unsafe extern "C" {
    fn mi_collect(force: bool);
}

fn give_memory_back() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any time.
    unsafe { mi_collect(true) }
}

/// `--version` says which build this is: the same binary must be identifiable in incident notes.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PGPILOT_COMMIT"),
    ", ",
    env!("PGPILOT_TARGET"),
    ", ",
    env!("PGPILOT_PROFILE"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "pgpilot",
    // -V says as much as --version: which build is the question either way.
    version = LONG_VERSION,
    long_version = LONG_VERSION,
    about = "The PostgreSQL performance layer",
    long_about = "The PostgreSQL performance layer: connection pooling, read/write splitting, a result cache, \
                  workload insight, a DBA advisor and maintenance jobs in one program.\n\n\
                  Without a command, runs `pgpilot demo`.\n\n\
                  Exit codes: 0 success, 1 failure, 2 usage error, 3 findings (advise --fail-on; convert: a setting whose loss would admit clients PgBouncer refuses), 130 bench interrupted by Ctrl-C.",
    propagate_version = true
)]
pub struct Cli {
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
    /// Result cache: install the triggers that catch writes made outside pgpilot.
    Cache(cache::CacheArgs),
    /// Maintenance jobs: list, run one now, show history.
    Jobs(jobs::JobsArgs),
    /// Partition planning: convert a plain table into a partitioned one (prints the steps).
    Partitions(jobs::PartitionsArgs),
    /// Translate a pgbouncer.ini into the equivalent pgpilot.toml.
    Convert(convert::ConvertArgs),
    /// Print shell completions.
    Completions(generate::CompletionsArgs),
    /// Print the man pages (roff), or write them to a directory (--dir).
    Man(generate::ManArgs),
}

fn main() -> std::process::ExitCode {
    pgpilot_gateway::memory::set_give_back(give_memory_back);
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Demo(demo::DemoArgs::default()));
    if !matches!(command, Command::Serve(_)) {
        quiet_on_closed_pipe();
    }
    let result = match command {
        Command::Serve(args) => serve::run(args),
        Command::CheckConfig(args) => serve::check_config(args),
        Command::Demo(args) => demo::run(args),
        Command::Advise(args) => advise::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Cache(args) => cache::run(args),
        Command::Jobs(args) => jobs::run(args),
        Command::Partitions(args) => jobs::partitions(args),
        Command::Convert(args) => convert::run(args),
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
    };
    exit::report(result)
}

/// A command whose output is piped into `head` ends quietly when the reader goes, as Unix tools
/// do, instead of panicking on a failed print. (The gateway keeps SIGPIPE ignored: a client that
/// vanishes mid-write is an error to handle, not a reason to stop.)
fn quiet_on_closed_pipe() {
    // SAFETY: restoring the default disposition of a signal at start, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
