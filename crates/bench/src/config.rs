//! What a benchmark run is asked to do.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::demo_app::Mix;
use crate::target::Target;

/// How statements travel, as pgbench's `--protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// One Query message per statement, values substituted into the text.
    #[default]
    Simple,
    /// Parse (unnamed) + Bind + Execute + Sync in one round trip, values as parameters.
    Extended,
    /// Parse once per connection and statement, then Bind + Execute + Sync.
    Prepared,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "simple" => Ok(Protocol::Simple),
            "extended" => Ok(Protocol::Extended),
            "prepared" => Ok(Protocol::Prepared),
            other => Err(format!("unknown protocol `{other}` (simple, extended or prepared)")),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
            Protocol::Prepared => "prepared",
        })
    }
}

/// When each run (one target, one round) ends.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Wall-clock time of each run.
    Duration(#[serde(serialize_with = "crate::report::secs")] Duration),
    /// Transactions per client (pgbench's -t).
    TransactionsPerClient(u64),
}

/// A source of scripts, with a weight relative to the others.
#[derive(Clone, Debug)]
pub enum Workload {
    /// A built-in scenario: `select-only`, `tpcb-like`, `simple-update`, `read-heavy`, `write-heavy`.
    Scenario { name: String, weight: u32 },
    /// A pgbench-style script file.
    File { path: PathBuf, weight: u32 },
    /// Script text given directly (tests, the demo).
    Inline { name: String, text: String, weight: u32 },
}

impl Workload {
    /// Its weight relative to the other workloads.
    pub fn weight(&self) -> u32 {
        match self {
            Workload::Scenario { weight, .. }
            | Workload::File { weight, .. }
            | Workload::Inline { weight, .. } => *weight,
        }
    }
}

/// A benchmark: targets, workload and load shape. Build it with [`BenchConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub targets: Vec<Target>,
    pub workload: Vec<Workload>,
    pub clients: usize,
    /// Worker threads of the load generator's runtime; 0 means one per core.
    pub jobs: usize,
    pub limit: Limit,
    /// Runs per target; targets are interleaved in a rotating order each round.
    pub rounds: usize,
    /// Open a new connection for every transaction (pgbench -C).
    pub connect_per_transaction: bool,
    /// Target throughput per target in transactions per second (pgbench -R); latency is then
    /// measured from each transaction's scheduled start.
    pub rate: Option<f64>,
    pub protocol: Protocol,
    /// Create the scenario's tables and data first (pgbench -i; the demo application).
    pub init: bool,
    /// Scale for `init` and the `:scale` variable of custom scripts.
    pub scale: Option<f64>,
    /// Variables set before the first transaction (pgbench -D).
    pub defines: Vec<(String, String)>,
    pub random_seed: Option<u64>,
    /// How often the observer hears about progress.
    pub progress_interval: Duration,
    /// Set to true to end the current run early; the report then says `interrupted`.
    pub stop: Arc<AtomicBool>,
    /// Let Ctrl-C set `stop` (the CLI does; an embedding program may handle signals itself).
    pub stop_on_ctrl_c: bool,
}

impl BenchConfig {
    pub fn new(targets: Vec<Target>) -> BenchConfig {
        BenchConfig {
            targets,
            workload: vec![Workload::Scenario { name: "tpcb-like".into(), weight: 1 }],
            clients: 1,
            jobs: 0,
            limit: Limit::Duration(Duration::from_secs(10)),
            rounds: 1,
            connect_per_transaction: false,
            rate: None,
            protocol: Protocol::Simple,
            init: false,
            scale: None,
            defines: Vec::new(),
            random_seed: None,
            progress_interval: Duration::from_millis(250),
            stop: Arc::new(AtomicBool::new(false)),
            stop_on_ctrl_c: false,
        }
    }

    /// Worker threads to use: `jobs`, or the number of cores.
    pub fn worker_threads(&self) -> usize {
        if self.jobs > 0 {
            self.jobs
        } else {
            std::thread::available_parallelism().map(usize::from).unwrap_or(2)
        }
    }

    /// Checks what the configuration asks for, before anything connects or is created: a
    /// command line turns these errors into usage errors.
    pub fn validate(&self) -> Result<(), String> {
        if self.targets.is_empty() {
            return Err("no target: give at least one postgres:// URL".into());
        }
        if self.clients == 0 || self.rounds == 0 {
            return Err("clients and rounds must be at least 1".into());
        }
        if self.rate.is_some_and(|rate| !(rate.is_finite() && rate > 0.0)) {
            return Err(format!(
                "the rate must be a positive number of transactions per second (got {})",
                self.rate.unwrap_or_default()
            ));
        }
        if !self.workload.is_empty() && self.workload.iter().all(|w| w.weight() == 0) {
            // No script could ever be picked: a value that cannot be, like `-c 0`.
            return Err("every script has weight 0: give at least one a positive weight".into());
        }
        match self.limit {
            Limit::Duration(d) if d.is_zero() => return Err("the duration must be positive".into()),
            Limit::TransactionsPerClient(0) => return Err("the transaction count must be positive".into()),
            _ => {}
        }
        self.validate_scale()
    }

    /// A scale is positive; pgbench's tables, made by `init`, need a whole one.
    fn validate_scale(&self) -> Result<(), String> {
        let Some(scale) = self.scale else { return Ok(()) };
        if !(scale.is_finite() && scale > 0.0) {
            return Err(format!("the scale must be a positive number (got {scale})"));
        }
        if self.init && self.initialises_pgbench_tables() && scale.fract() != 0.0 {
            return Err(format!("the pgbench scale must be a whole number of at least 1 (got {scale})"));
        }
        Ok(())
    }

    /// Whether `init` creates pgbench's tables: for a pgbench scenario, or when no demo mix is
    /// asked for (custom scripts run on pgbench's tables, as with pgbench -i).
    pub(crate) fn initialises_pgbench_tables(&self) -> bool {
        let is_mix =
            |w: &Workload| matches!(w, Workload::Scenario { name, .. } if Mix::from_name(name).is_some());
        let pgbench_scenario =
            self.workload.iter().any(|w| matches!(w, Workload::Scenario { .. }) && !is_mix(w));
        pgbench_scenario || !self.workload.iter().any(is_mix)
    }

    /// A one-line description of the workload, for reports.
    pub fn workload_label(&self) -> String {
        self.workload
            .iter()
            .map(|w| match w {
                Workload::Scenario { name, weight } => with_weight(name, *weight),
                Workload::File { path, weight } => with_weight(&path.display().to_string(), *weight),
                Workload::Inline { name, weight, .. } => with_weight(name, *weight),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn with_weight(name: &str, weight: u32) -> String {
    if weight == 1 {
        name.to_string()
    } else {
        format!("{name}@{weight}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &str) -> Workload {
        Workload::Scenario { name: name.into(), weight: 1 }
    }

    #[test]
    fn init_makes_pgbench_tables_unless_only_demo_mixes_are_asked_for() {
        let mut c = BenchConfig::new(Vec::new());
        assert!(c.initialises_pgbench_tables(), "tpcb-like by default");
        c.workload = vec![scenario("read-heavy"), scenario("write-heavy")];
        assert!(!c.initialises_pgbench_tables());
        c.workload.push(scenario("select-only"));
        assert!(c.initialises_pgbench_tables());
        c.workload = vec![Workload::File { path: "x.sql".into(), weight: 1 }];
        assert!(c.initialises_pgbench_tables(), "custom scripts run on pgbench's tables, as with pgbench -i");
    }

    #[test]
    fn weights_that_pick_nothing_are_refused_before_anything_runs() {
        let mut c = BenchConfig::new(vec![Target::parse("postgres://u@h/db").unwrap()]);
        c.workload = vec![Workload::File { path: "missing.sql".into(), weight: 0 }];
        assert!(c.validate().unwrap_err().contains("weight 0"));
        c.workload.push(Workload::Scenario { name: "select-only".into(), weight: 1 });
        assert!(c.validate().is_ok(), "one script of weight 0 beside others is fine");
    }
}
