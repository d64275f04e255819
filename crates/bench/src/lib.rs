//! pgpilot's load generator: measures PostgreSQL endpoints (direct, through PgBouncer, through
//! pgpilot) side by side with HDR latency percentiles, running pgbench's built-in scenarios,
//! pgbench-style script files, and the demo application's read-heavy and write-heavy mixes.
//!
//! ```no_run
//! use pgpilot_bench::{BenchConfig, Target, Workload};
//! let mut config = BenchConfig::new(vec![Target::parse("postgres://postgres@127.0.0.1:5432/postgres")?]);
//! config.workload = vec![Workload::Scenario { name: "select-only".into(), weight: 1 }];
//! config.clients = 10;
//! let report = pgpilot_bench::run(config)?;
//! println!("{}", report.render_text());
//! # anyhow::Ok(())
//! ```

mod client;
mod config;
pub mod demo_app;
mod jobs;
mod observe;
mod pg;
pub mod pgbench_init;
mod prepare;
mod render;
mod report;
mod runner;
pub mod script;
mod target;
mod timer;

pub use config::{BenchConfig, Limit, Protocol, Workload};
pub use observe::{Observer, Progress, RunInfo, RunSummary, Silent, TerminalProgress};
pub use prepare::setup_client;
pub use report::{BenchReport, ErrorCount, Lag, Latency, Ratio, ScriptReport, TargetReport};
pub use runner::{run, run_async, run_with};
pub use target::{Target, TargetError, TargetInfo, DEFAULT_CONNECT_TIMEOUT};
