//! `pgpilot demo`: a primary and a streaming replica (and Redis when installed) in temporary
//! directories, the sample application loaded, pgpilot started in-process in front, a mixed workload
//! measured directly and through pgpilot in alternating rounds, and a report. Ctrl-C at any point
//! tears everything down.

mod advisor;
mod gateway_config;
mod gateway_stats;
mod interrupt;
mod keep;
mod live;
mod report;
mod report_text;
mod session;
mod stack;
mod workload;

use clap::builder::TypedValueParser;
use clap::Args;

use crate::exit::Outcome;
use crate::format::Format;

const DEFAULT_DURATION_SECS: f64 = 40.0;
const DEFAULT_SCALE: f64 = 0.5;
const DEFAULT_CLIENTS: usize = 16;
const DEFAULT_POOL_SIZE: usize = 8;
/// Four runs at least (two mixes, direct and through pgpilot) share the duration: below a second
/// each is too short to measure, and the setup would be spent for nothing.
const MIN_DURATION_SECS: f64 = 1.0;

#[derive(Args, Clone, Debug)]
pub struct DemoArgs {
    /// Seconds of workload, shared by the read-heavy and write-heavy phases and by the direct and
    /// through-pgpilot runs (setup and the advisor add about 15 seconds).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_DURATION_SECS, value_parser = workload_seconds)]
    pub duration: f64,
    /// Size of the sample application: 1 is 200,000 ledger transactions, 50,000 workflow runs and
    /// 60,000 form responses.
    #[arg(long, default_value_t = DEFAULT_SCALE, value_parser = positive_number)]
    pub scale: f64,
    /// Concurrent clients of the workload (each with its own connection).
    #[arg(long, default_value_t = DEFAULT_CLIENTS, value_parser = clap::value_parser!(u32).range(1..=1000).map(|n| n as usize))]
    pub clients: usize,
    /// Server connections per pool in pgpilot (transaction pooling): fewer than the clients.
    #[arg(long, default_value_t = DEFAULT_POOL_SIZE, value_parser = clap::value_parser!(u32).range(1..=200).map(|n| n as usize))]
    pub pool_size: usize,
    /// Leave everything running after the report, print how to connect, and wait for Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// Report format on standard output (progress goes to standard error).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs {
            duration: DEFAULT_DURATION_SECS,
            scale: DEFAULT_SCALE,
            clients: DEFAULT_CLIENTS,
            pool_size: DEFAULT_POOL_SIZE,
            keep: false,
            format: Format::Text,
        }
    }
}

fn positive_number(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number")),
    }
}

fn workload_seconds(s: &str) -> Result<f64, String> {
    match positive_number(s)? {
        v if v >= MIN_DURATION_SECS => Ok(v),
        _ => Err(format!(
            "`{s}` is too short: the workload needs at least {MIN_DURATION_SECS} s, shared by four runs"
        )),
    }
}

pub fn run(args: DemoArgs) -> Outcome {
    init_logging();
    let runtime = crate::serve::runtime(0)?;
    let outcome = runtime.block_on(session::run(args));
    // Dropping the runtime waits for blocking tasks still running (a cluster being started when
    // Ctrl-C came), whose results are dropped and so torn down too.
    drop(runtime);
    outcome
}

/// The gateway runs in this process; its warnings would interleave with the display, so only
/// errors are shown unless PGPILOT_LOG asks for more.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGPILOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        demo: DemoArgs,
    }

    #[test]
    fn the_default_matches_the_command_line_defaults() {
        let parsed = Cli::parse_from(["demo"]).demo;
        let default = DemoArgs::default();
        assert_eq!(parsed.duration, default.duration);
        assert_eq!(parsed.scale, default.scale);
        assert_eq!(parsed.clients, default.clients);
        assert_eq!(parsed.pool_size, default.pool_size);
        assert_eq!(parsed.keep, default.keep);
        assert_eq!(parsed.format, default.format);
    }

    #[test]
    fn nonsense_sizes_are_refused() {
        assert!(Cli::try_parse_from(["demo", "--duration", "0"]).is_err());
        assert!(Cli::try_parse_from(["demo", "--scale", "-1"]).is_err());
        assert!(Cli::try_parse_from(["demo", "--clients", "0"]).is_err());
        assert!(Cli::try_parse_from(["demo", "--duration", "NaN"]).is_err());
        assert!(Cli::try_parse_from(["demo", "--duration", "0.01"]).is_err(), "too short to measure");
        assert!(Cli::try_parse_from(["demo", "--duration", "1"]).is_ok());
    }
}
