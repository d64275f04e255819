//! The demo's report: what ran, throughput and latency direct vs through pgpilot, where reads went,
//! the cache, the pool, and the advisor's findings — as text for people and JSON for scripts.

use pgpilot_bench::demo_app::Stats;
use pgpilot_bench::{ErrorCount, TargetReport};
use serde::Serialize;

use super::advisor::AdvisorSummary;
use super::gateway_stats::{CacheUse, PoolSnapshot, PoolTotals, PoolUsage, ReadSplit};
use super::stack::StackInfo;
use super::workload::{PhaseResult, WorkloadPlan, DIRECT, PGPILOT};

#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub pgpilot_version: &'static str,
    pub postgres_version: String,
    pub settings: Settings,
    pub servers: StackInfo,
    /// Row counts of the sample application.
    pub app: Stats,
    /// Seconds from start until the workload began (servers, data, replica catch-up, pgpilot).
    pub setup_s: f64,
    pub workload: WorkloadSummary,
    /// Reads routed to the replica and to the primary through pgpilot.
    pub replica: ReadSplit,
    pub cache: CacheUse,
    pub pool: PoolSummary,
    pub advisor: AdvisorSummary,
    /// Things the demo could not show, and why.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub duration_s: f64,
    pub scale: f64,
    pub clients: usize,
    pub rounds: usize,
    pub run_s: f64,
    pub protocol: String,
    pub mixes: Vec<String>,
    /// `--keep`: the servers stay up after the report, so it can name commands to run on them.
    pub keep: bool,
}

impl Settings {
    pub fn new(duration_s: f64, scale: f64, keep: bool, plan: &WorkloadPlan) -> Settings {
        Settings {
            duration_s,
            scale,
            keep,
            clients: plan.clients,
            rounds: plan.rounds,
            run_s: plan.run.as_secs_f64(),
            protocol: plan.protocol.to_string(),
            mixes: plan.mixes.iter().map(|m| m.name().to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadSummary {
    /// Successful transactions, both targets and every mix.
    pub transactions: u64,
    pub failed: u64,
    pub phases: Vec<PhaseSummary>,
    /// True when Ctrl-C cut the workload short.
    pub interrupted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseSummary {
    pub mix: String,
    pub direct: TargetFigures,
    pub pgpilot: TargetFigures,
    /// pgpilot / direct: above 1 is more throughput, or more latency.
    pub ratio: Ratios,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetFigures {
    /// Median over rounds of successful transactions per second.
    pub tps: f64,
    pub tps_per_round: Vec<f64>,
    pub transactions: u64,
    pub failed: u64,
    pub errors: Vec<ErrorCount>,
    pub latency_ms: LatencyFigures,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencyFigures {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Ratios {
    pub tps: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl WorkloadSummary {
    pub fn new(phases: &[PhaseResult]) -> WorkloadSummary {
        let phases: Vec<PhaseSummary> = phases.iter().map(PhaseSummary::new).collect();
        let sum = |f: fn(&TargetFigures) -> u64| -> u64 {
            phases.iter().map(|p| f(&p.direct) + f(&p.pgpilot)).sum()
        };
        WorkloadSummary {
            transactions: sum(|t| t.transactions),
            failed: sum(|t| t.failed),
            interrupted: false,
            phases,
        }
    }

    /// What measured nothing, if anything did: a mix that no transaction completed on, directly
    /// or through pgpilot, has no throughput, latency or ratio to report.
    pub fn unmeasured(&self) -> Option<String> {
        self.phases.iter().find_map(|p| {
            let empty = [("directly", &p.direct), ("through pgpilot", &p.pgpilot)]
                .into_iter()
                .find(|(_, figures)| figures.transactions == 0)?;
            let (route, figures) = empty;
            let why = figures
                .errors
                .first()
                .map(|e| {
                    format!(" ({} failed, first with SQLSTATE {}: {})", figures.failed, e.sqlstate, e.example)
                })
                .unwrap_or_default();
            Some(format!("no transaction of the {} mix completed {route}{why}", p.mix))
        })
    }
}

impl PhaseSummary {
    fn new(phase: &PhaseResult) -> PhaseSummary {
        let figures = |name: &str| {
            phase
                .report
                .targets
                .iter()
                .find(|t| t.target.name == name)
                .map(TargetFigures::new)
                .unwrap_or_default()
        };
        let (direct, pgpilot) = (figures(DIRECT), figures(PGPILOT));
        let ratio = Ratios {
            tps: ratio(pgpilot.tps, direct.tps),
            p50: ratio(pgpilot.latency_ms.p50, direct.latency_ms.p50),
            p95: ratio(pgpilot.latency_ms.p95, direct.latency_ms.p95),
            p99: ratio(pgpilot.latency_ms.p99, direct.latency_ms.p99),
        };
        PhaseSummary { mix: phase.mix.name().to_string(), direct, pgpilot, ratio }
    }
}

impl TargetFigures {
    fn new(t: &TargetReport) -> TargetFigures {
        let l = &t.latency_ms;
        TargetFigures {
            tps: t.tps,
            tps_per_round: t.tps_per_round.clone(),
            transactions: t.transactions,
            failed: t.failed,
            errors: t.errors.clone(),
            latency_ms: LatencyFigures { mean: l.mean, p50: l.p50, p95: l.p95, p99: l.p99, max: l.max },
        }
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolSummary {
    pub pool_mode: &'static str,
    /// Server connections per pool (the primary's and the replica's).
    pub pool_size: usize,
    /// Client connections of the workload.
    pub clients: usize,
    #[serde(flatten)]
    pub totals: PoolTotals,
    pub pools: Vec<PoolLine>,
}

/// One pool: its utilization while the workload ran through pgpilot, and its counters afterwards.
#[derive(Debug, Clone, Serialize)]
pub struct PoolLine {
    pub role: String,
    pub server: String,
    pub pool_size: u64,
    pub utilization_mean: f64,
    pub utilization_peak: f64,
    pub server_connections: u64,
    pub transactions: u64,
    pub queries: u64,
    pub avg_wait_us: u64,
}

impl PoolSummary {
    pub fn new(
        pool_size: usize,
        clients: usize,
        usage: PoolUsage,
        last: Option<&PoolSnapshot>,
    ) -> PoolSummary {
        let last_pools = last.map(|s| s.pools.as_slice()).unwrap_or_default();
        let pools = usage
            .pools
            .iter()
            .map(|u| {
                let counters = last_pools.iter().find(|p| p.server == u.server).cloned().unwrap_or_default();
                PoolLine {
                    role: u.role.clone(),
                    server: u.server.clone(),
                    pool_size: u.pool_size,
                    utilization_mean: u.utilization_mean,
                    utilization_peak: u.utilization_peak,
                    server_connections: counters.servers_total,
                    transactions: counters.transactions,
                    queries: counters.queries,
                    avg_wait_us: counters.avg_wait_us,
                }
            })
            .collect();
        PoolSummary { pool_mode: "transaction", pool_size, clients, totals: usage.totals, pools }
    }
}

impl DemoReport {
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        super::report_text::render(self, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(transactions: u64, failed: u64) -> TargetFigures {
        let errors = (failed > 0)
            .then(|| ErrorCount { sqlstate: "08001".into(), count: failed, example: "refused".into() })
            .into_iter()
            .collect();
        TargetFigures { transactions, failed, errors, ..TargetFigures::default() }
    }

    fn phase(mix: &str, direct: TargetFigures, pgpilot: TargetFigures) -> PhaseSummary {
        PhaseSummary { mix: mix.into(), direct, pgpilot, ratio: Ratios::default() }
    }

    #[test]
    fn a_mix_with_no_completed_transaction_is_not_reported_as_figures() {
        let measured = WorkloadSummary {
            transactions: 20,
            failed: 0,
            phases: vec![phase("read-heavy", figures(5, 0), figures(5, 0))],
            interrupted: false,
        };
        assert_eq!(measured.unmeasured(), None);
        let empty = WorkloadSummary {
            phases: vec![
                phase("read-heavy", figures(5, 0), figures(5, 0)),
                phase("write-heavy", figures(5, 0), figures(0, 3)),
            ],
            ..measured
        };
        let what = empty.unmeasured().expect("the empty mix is named");
        assert!(what.contains("write-heavy mix completed through pgpilot"), "{what}");
        assert!(what.contains("3 failed, first with SQLSTATE 08001: refused"), "{what}");
    }
}
