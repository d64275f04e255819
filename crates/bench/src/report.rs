//! The results of a benchmark: per target, per round, and the ratios between targets.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Serialize, Serializer};

use crate::client::Tally;
use crate::config::{BenchConfig, Limit, Protocol};
use crate::target::TargetInfo;

pub(crate) fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Everything a benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub workload: String,
    pub protocol: Protocol,
    pub clients: usize,
    pub jobs: usize,
    pub limit: Limit,
    pub rounds: usize,
    pub connect_per_transaction: bool,
    pub rate: Option<f64>,
    pub targets: Vec<TargetReport>,
    /// Each target against the first one.
    pub ratios: Vec<Ratio>,
    /// True when the run was stopped early (Ctrl-C or the stop flag).
    pub interrupted: bool,
    /// Why the benchmark stopped before its end, when clients could not connect again (with a
    /// transaction count): the figures are incomplete and no further run started.
    pub aborted: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    #[serde(flatten)]
    pub target: TargetInfo,
    /// Whether any round ran against this target: an interrupted run may end before its turn,
    /// and its figures are then zeros that measured nothing.
    pub measured: bool,
    /// Median over rounds of successful transactions per second.
    pub tps: f64,
    pub tps_per_round: Vec<f64>,
    /// Successful transactions over all rounds.
    pub transactions: u64,
    pub failed: u64,
    /// Failed transactions by SQLSTATE (08001/08006 for connection failures).
    pub errors: Vec<ErrorCount>,
    pub latency_ms: Latency,
    pub connections_opened: u64,
    /// Measured time over all rounds, in seconds.
    pub elapsed_s: f64,
    /// Under --rate: how late transactions started against their schedule.
    pub schedule_lag_ms: Option<Lag>,
    pub scripts: Vec<ScriptReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorCount {
    pub sqlstate: String,
    pub count: u64,
    /// The first message seen with this SQLSTATE.
    pub example: String,
}

/// Latency of successful transactions, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub stddev: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Latency {
    /// From a histogram of microseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |quantile: f64| ms(h.value_at_quantile(quantile));
        Latency {
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            stddev: h.stdev() / 1000.0,
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            p99_9: q(0.999),
            max: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Lag {
    pub mean: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScriptReport {
    pub name: String,
    /// In the user's terms: a `-b`/`-f` weight, or a mix script's share of its mix's weight.
    pub weight: f64,
    pub transactions: u64,
    pub failed: u64,
    pub mean_latency_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub target: String,
    pub baseline: String,
    /// target tps / baseline tps.
    pub tps: f64,
    pub p50: f64,
    pub p99: f64,
}

/// One target's runs, accumulated over rounds.
pub(crate) struct TargetAccum {
    pub info: TargetInfo,
    pub tally: Tally,
    pub tps_per_round: Vec<f64>,
    pub elapsed: Duration,
}

impl TargetAccum {
    pub fn new(info: TargetInfo, scripts: usize) -> TargetAccum {
        TargetAccum { info, tally: Tally::new(scripts), tps_per_round: Vec::new(), elapsed: Duration::ZERO }
    }

    pub fn into_report(self, scripts: &[(String, f64)], rated: bool) -> TargetReport {
        let t = self.tally;
        let mut errors: Vec<ErrorCount> = t
            .errors
            .into_iter()
            .map(|(sqlstate, e)| ErrorCount { sqlstate, count: e.count, example: e.message })
            .collect();
        errors.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.sqlstate.cmp(&b.sqlstate)));
        let attempted = t.ok + t.failed;
        let schedule_lag_ms = (rated && attempted > 0).then(|| Lag {
            mean: t.lag_us_sum as f64 / attempted as f64 / 1000.0,
            max: t.lag_us_max as f64 / 1000.0,
        });
        TargetReport {
            target: self.info,
            measured: !self.tps_per_round.is_empty(),
            tps: median(&self.tps_per_round),
            tps_per_round: self.tps_per_round,
            transactions: t.ok,
            failed: t.failed,
            errors,
            latency_ms: Latency::from_histogram(&t.hist),
            connections_opened: t.connections,
            elapsed_s: self.elapsed.as_secs_f64(),
            schedule_lag_ms,
            scripts: scripts
                .iter()
                .zip(t.scripts)
                .map(|((name, weight), s)| ScriptReport {
                    name: name.clone(),
                    weight: *weight,
                    transactions: s.ok,
                    failed: s.failed,
                    mean_latency_ms: if s.ok > 0 { s.latency_us as f64 / s.ok as f64 / 1000.0 } else { 0.0 },
                })
                .collect(),
        }
    }
}

pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

impl BenchReport {
    pub(crate) fn new(config: &BenchConfig, targets: Vec<TargetReport>, interrupted: bool) -> BenchReport {
        let ratios = match targets.split_first() {
            // A target an interrupted run never reached has no figures to compare.
            Some((base, rest)) if base.measured => rest
                .iter()
                .filter(|t| t.measured)
                .map(|t| Ratio {
                    target: t.target.name.clone(),
                    baseline: base.target.name.clone(),
                    tps: ratio(t.tps, base.tps),
                    p50: ratio(t.latency_ms.p50, base.latency_ms.p50),
                    p99: ratio(t.latency_ms.p99, base.latency_ms.p99),
                })
                .collect(),
            _ => Vec::new(),
        };
        BenchReport {
            workload: config.workload_label(),
            protocol: config.protocol,
            clients: config.clients,
            jobs: config.worker_threads().min(config.clients.max(1)),
            limit: config.limit,
            rounds: config.rounds,
            connect_per_transaction: config.connect_per_transaction,
            rate: config.rate,
            targets,
            ratios,
            interrupted,
            aborted: None,
        }
    }

    /// A human-readable report.
    pub fn render_text(&self) -> String {
        crate::render::text(self)
    }
}
