//! Pool sizing from Little's law: connections busy on average = throughput × latency. The pool
//! gets headroom for bursts, is split across application instances, and must fit under
//! max_connections with room left for administration.

use serde::{Deserialize, Serialize};

/// Connections kept free for administrators, replication and maintenance beyond the reserved ones.
const ADMIN_HEADROOM: u32 = 5;
/// Bursts above the mean: a pool sized for the mean queues half the time.
const BURST_FACTOR: f64 = 1.5;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolSizingInput {
    pub mean_latency_ms: f64,
    pub target_tps: f64,
    pub max_connections: u32,
    pub reserved_connections: u32,
    pub app_instances: u32,
    pub cpus: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolAdvice {
    pub per_instance: u32,
    pub total: u32,
    /// Connections busy on average at the target throughput.
    pub busy_connections: f64,
    pub target_tps: f64,
    pub mean_latency_ms: f64,
    pub app_instances: u32,
    /// Where the target came from ("--target-tps", "measured over 1 s").
    pub target_source: String,
    pub explanation: Vec<String>,
}

pub fn size(input: &PoolSizingInput, target_source: &str) -> PoolAdvice {
    let instances = input.app_instances.max(1);
    let busy = input.target_tps * input.mean_latency_ms / 1000.0;
    let wanted = ((busy * BURST_FACTOR).ceil() as u32).max(instances);
    let per_instance = wanted.div_ceil(instances).max(1);
    let usable = input.max_connections.saturating_sub(input.reserved_connections + ADMIN_HEADROOM).max(1);
    let mut explanation = vec![format!(
        "{:.0} statements/s × {:.2} ms = {busy:.1} connections busy on average; ×{BURST_FACTOR} for bursts = {wanted}",
        input.target_tps, input.mean_latency_ms
    )];
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
    PoolAdvice {
        per_instance,
        total,
        busy_connections: busy,
        target_tps: input.target_tps,
        mean_latency_ms: input.mean_latency_ms,
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
            mean_latency_ms: ms,
            target_tps: tps,
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
