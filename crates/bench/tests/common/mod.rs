//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use pgpilot_bench::{BenchConfig, BenchReport, Limit, Target, TargetReport, Workload};
use pgpilot_testkit::Cluster;

pub fn target(cluster: &Cluster, name: &str) -> Target {
    Target::parse(&format!("{name}={}", cluster.admin_url())).expect("a valid URL")
}

pub fn inline(name: &str, text: &str, weight: u32) -> Workload {
    Workload::Inline { name: name.into(), text: text.into(), weight }
}

pub fn config(targets: Vec<Target>, workload: Vec<Workload>, clients: usize, limit: Limit) -> BenchConfig {
    let mut c = BenchConfig::new(targets);
    c.workload = workload;
    c.clients = clients;
    c.jobs = 2;
    c.limit = limit;
    c.random_seed = Some(42);
    c
}

pub fn per_client(n: u64) -> Limit {
    Limit::TransactionsPerClient(n)
}

pub fn seconds(s: f64) -> Limit {
    Limit::Duration(Duration::from_secs_f64(s))
}

pub fn count(cluster: &Cluster, sql: &str) -> u64 {
    cluster.psql("postgres", sql).trim().parse().unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Percentiles must be ordered and the headline tps must follow from the counts.
pub fn assert_consistent(t: &TargetReport) {
    let l = &t.latency_ms;
    assert!(t.transactions > 0, "{t:?}");
    assert!(l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p95, "{l:?}");
    assert!(l.p95 <= l.p99 && l.p99 <= l.p99_9 && l.p99_9 <= l.max, "{l:?}");
    assert!(l.mean > 0.0 && l.mean <= l.max, "{l:?}");
    if t.tps_per_round.len() == 1 {
        let expected = t.transactions as f64 / t.elapsed_s;
        assert!((t.tps - expected).abs() <= expected * 0.001 + 0.01, "tps {} vs {expected}", t.tps);
    }
}

pub fn only(report: &BenchReport) -> &TargetReport {
    assert_eq!(report.targets.len(), 1);
    &report.targets[0]
}
