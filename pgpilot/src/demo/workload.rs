//! The demo's workload: the sample application's read-heavy mix, then its write-heavy mix, each
//! measured straight against the primary and through pgpilot in alternating rounds (the bench's
//! rotating order, so drift on a busy machine hits both alike).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use pgpilot_bench::demo_app::Mix;
use pgpilot_bench::{BenchConfig, BenchReport, Limit, Protocol, Target, Workload};

use super::gateway_stats::PoolMonitor;
use super::interrupt::Interrupt;
use super::live::LiveDisplay;
use super::report_text::counted;

/// The target names in bench reports.
pub const DIRECT: &str = "direct";
pub const PGPILOT: &str = "pgpilot";

/// How the workload time is spent.
#[derive(Debug, Clone)]
pub struct WorkloadPlan {
    pub mixes: Vec<Mix>,
    pub clients: usize,
    /// Runs per target and mix.
    pub rounds: usize,
    /// Length of one run (one target, one round, one mix).
    pub run: Duration,
    pub protocol: Protocol,
}

impl WorkloadPlan {
    /// Splits `duration` seconds over both mixes, both targets and the rounds: a round per 16
    /// seconds of workload, at most three, so short demos still get runs long enough to measure.
    pub fn new(duration: f64, clients: usize) -> WorkloadPlan {
        let mixes = vec![Mix::ReadHeavy, Mix::WriteHeavy];
        let rounds = ((duration / 16.0).floor() as usize).clamp(1, 3);
        let runs = mixes.len() * 2 * rounds;
        WorkloadPlan {
            mixes,
            clients,
            rounds,
            run: Duration::from_secs_f64(duration / runs as f64),
            // Parameters as drivers send them: one round trip per statement, text stays constant.
            protocol: Protocol::Extended,
        }
    }

    pub fn describe(&self) -> String {
        let mixes: Vec<&str> = self.mixes.iter().map(|m| m.name()).collect();
        format!(
            "{}, {}, direct and through pgpilot in {} of {:.1} s each",
            mixes.join(" then "),
            counted(self.clients as u64, "client"),
            counted(self.rounds as u64, "alternating round"),
            self.run.as_secs_f64()
        )
    }
}

/// One mix's measurements of both targets.
pub struct PhaseResult {
    pub mix: Mix,
    pub report: BenchReport,
}

/// Runs every mix in turn. A signal ends the current run early (its report says `interrupted`)
/// and no further mix starts.
pub async fn run(
    plan: &WorkloadPlan,
    direct_url: &str,
    pgpilot_url: &str,
    interrupt: &Interrupt,
    monitor: &Arc<PoolMonitor>,
) -> Result<Vec<PhaseResult>> {
    let mut results = Vec::new();
    for &mix in &plan.mixes {
        if interrupt.is_set() {
            break;
        }
        let mut config = BenchConfig::new(vec![
            Target::parse(&format!("{DIRECT}={direct_url}"))?,
            Target::parse(&format!("{PGPILOT}={pgpilot_url}"))?,
        ]);
        config.workload = vec![Workload::Scenario { name: mix.name().into(), weight: 1 }];
        config.clients = plan.clients;
        config.rounds = plan.rounds;
        config.limit = Limit::Duration(plan.run);
        config.protocol = plan.protocol;
        config.stop = interrupt.stop.clone();
        config.stop_on_ctrl_c = false;
        let display = Arc::new(LiveDisplay::new(mix.name(), monitor.clone()));
        let report = pgpilot_bench::run_async(config, display).await?;
        results.push(PhaseResult { mix, report });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_duration_is_shared_by_every_run() {
        let plan = WorkloadPlan::new(40.0, 16);
        assert_eq!(plan.rounds, 2);
        assert_eq!(plan.run, Duration::from_secs(5));
        let short = WorkloadPlan::new(5.0, 4);
        assert_eq!(short.rounds, 1);
        assert_eq!(short.run, Duration::from_secs_f64(1.25));
        assert_eq!(WorkloadPlan::new(600.0, 4).rounds, 3);
    }
}
