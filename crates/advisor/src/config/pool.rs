//! Pool sizing from Little's law: connections busy on average = throughput × latency, given as a
//! target rate at the measured latency or measured directly (see `load`). The pool
//! gets headroom for bursts, is split across application instances, and must fit under
//! max_connections with room left for administration.

use serde::{Deserialize, Serialize};

use super::load::MeasuredLoad;

/// Connections kept free for administrators, replication and maintenance beyond the reserved ones.
const ADMIN_HEADROOM: u32 = 5;
/// Bursts above the mean: a pool sized for the mean queues half the time.
const BURST_FACTOR: f64 = 1.5;

/// What keeps connections busy: a target rate the user gave, or the load the advisor measured.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    /// `--target-tps`, taken as statements per second, at the workload's mean statement latency.
    Target {
        statements_per_s: f64,
        mean_latency_ms: f64,
    },
    Measured(MeasuredLoad),
}

impl Load {
    fn busy_connections(&self) -> f64 {
        match self {
            Load::Target { statements_per_s, mean_latency_ms } => statements_per_s * mean_latency_ms / 1000.0,
            Load::Measured(m) => m.busy_connections,
        }
    }

    /// The first line of the explanation: where the busy connections come from.
    fn describe(&self, busy: f64) -> String {
        match self {
            Load::Target { statements_per_s, mean_latency_ms } => format!(
                "--target-tps {statements_per_s:.0} statements/s × {mean_latency_ms:.2} ms mean statement latency \
                 = {busy:.1} connections busy on average (Little's law)"
            ),
            Load::Measured(m) => m.describe(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolSizingInput {
    pub load: Load,
    pub max_connections: u32,
    pub reserved_connections: u32,
    pub app_instances: u32,
    pub cpus: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolAdvice {
    pub per_instance: u32,
    pub total: u32,
    /// Connections busy on average at the target or measured load.
    pub busy_connections: f64,
    /// The target rate (`--target-tps`) or the measured one; None when only active backends were
    /// counted.
    pub statements_per_s: Option<f64>,
    /// The workload's mean statement latency, when the target rate was multiplied by it.
    pub mean_latency_ms: Option<f64>,
    /// The measurement, when the load was measured rather than given.
    pub measured: Option<MeasuredLoad>,
    pub app_instances: u32,
    /// Where the load came from ("--target-tps", "measured over 5 s by pg_stat_statements").
    pub target_source: String,
    pub explanation: Vec<String>,
}

pub fn size(input: &PoolSizingInput, target_source: &str) -> PoolAdvice {
    let instances = input.app_instances.max(1);
    let busy = input.load.busy_connections();
    let wanted = ((busy * BURST_FACTOR).ceil() as u32).max(instances);
    let per_instance = wanted.div_ceil(instances).max(1);
    let usable = input.max_connections.saturating_sub(input.reserved_connections + ADMIN_HEADROOM).max(1);
    let mut explanation =
        vec![input.load.describe(busy), format!("×{BURST_FACTOR} for bursts = {wanted} connections")];
    let mut per_instance = per_instance;
    if per_instance * instances > usable {
        per_instance = (usable / instances).max(1);
        explanation.push(format!(
            "capped to fit max_connections {} (less {} reserved and {ADMIN_HEADROOM} for administration): \
             raise max_connections or put pgpilot in front to share connections",
            input.max_connections, input.reserved_connections
        ));
    }
    let total = per_instance * instances;
    if let Some(cpus) = input.cpus {
        let useful = cpus * 2 + 1;
        if busy > useful as f64 {
            explanation.push(format!(
                "{busy:.0} busy connections exceed what {cpus} CPUs can run at once (~{useful}): more connections \
                 will not add throughput, faster statements (see the index suggestions) will"
            ));
        }
    }
    explanation
        .push(format!("{instances} application instance(s) × {per_instance} = {total} server connections"));
    let (statements_per_s, mean_latency_ms, measured) = match &input.load {
        Load::Target { statements_per_s, mean_latency_ms } => {
            (Some(*statements_per_s), Some(*mean_latency_ms), None)
        }
        Load::Measured(m) => (m.statements_per_s, None, Some(m.clone())),
    };
    PoolAdvice {
        per_instance,
        total,
        busy_connections: busy,
        statements_per_s,
        mean_latency_ms,
        measured,
        app_instances: instances,
        target_source: target_source.to_string(),
        explanation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(tps: f64, ms: f64, instances: u32) -> PoolSizingInput {
        PoolSizingInput {
            load: Load::Target { statements_per_s: tps, mean_latency_ms: ms },
            max_connections: 100,
            reserved_connections: 3,
            app_instances: instances,
            cpus: Some(8),
        }
    }

    #[test]
    fn littles_law_with_headroom() {
        let a = size(&input(2000.0, 5.0, 4), "t");
        assert_eq!(a.busy_connections, 10.0);
        assert_eq!(a.per_instance, 4); // 15 wanted / 4 instances, rounded up
        assert_eq!(a.total, 16);
    }

    #[test]
    fn capped_by_max_connections() {
        let a = size(&input(50_000.0, 10.0, 10), "t");
        assert_eq!(a.busy_connections, 500.0);
        assert_eq!(a.per_instance, 9); // (100 - 3 - 5) / 10
        assert!(a.explanation.iter().any(|e| e.contains("capped")));
        assert!(a.explanation.iter().any(|e| e.contains("exceed what 8 CPUs")));
    }

    #[test]
    fn at_least_one_per_instance() {
        let a = size(&input(1.0, 1.0, 3), "t");
        assert_eq!(a.per_instance, 1);
        assert_eq!(a.total, 3);
    }
}
