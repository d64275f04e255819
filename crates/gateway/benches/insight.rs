//! What `Insight::record` costs the session per completed statement, beside what the pool's own
//! counters already cost, and what reading the statistics costs.
//!
//! cargo bench -p pgpilot-gateway --bench insight

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pgpilot_gateway::insight::{Insight, InsightConfig, StatementEvent, Target};
use pgpilot_gateway::stats::Counters;

struct Names {
    database: Arc<str>,
    user: Arc<str>,
    query: Arc<str>,
}

fn names() -> Names {
    Names {
        database: Arc::from("app"),
        user: Arc::from("web"),
        query: Arc::from("SELECT abalance FROM pgbench_accounts WHERE aid = $1"),
    }
}

fn event(n: &Names, fingerprint: u64, us: u64) -> StatementEvent<'_> {
    StatementEvent {
        fingerprint,
        normalized: &n.query,
        database: &n.database,
        user: &n.user,
        duration: Duration::from_micros(us),
        wait: Duration::from_micros(3),
        rows: 1,
        error: None,
        target: Target::Primary,
        client_addr: "127.0.0.1:50000",
        server: "127.0.0.1:5432",
        parameters: None,
        client_params: None,
    }
}

/// Spreads small integers over the 64-bit space, as fingerprints are.
fn fp(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5bd1_e995
}

fn record(c: &mut Criterion) {
    let n = names();
    let mut g = c.benchmark_group("record");

    let insight = Insight::new(&InsightConfig::default());
    let mut us = 0u64;
    g.bench_function("same statement", |b| {
        b.iter(|| {
            us = (us + 37) % 5_000;
            insight.record(black_box(&event(&n, fp(1), us)));
        })
    });

    let insight = Insight::new(&InsightConfig::default());
    let mut i = 0u64;
    g.bench_function("200 statements in turn", |b| {
        b.iter(|| {
            i += 1;
            insight.record(black_box(&event(&n, fp(i % 200), i % 5_000)));
        })
    });

    // The store is full: every new statement is counted in "other" (compaction at most once a second).
    let insight = Insight::new(&InsightConfig { max_statements: 100, ..Default::default() });
    for i in 0..100 {
        insight.record(&event(&n, fp(i), 10_000));
    }
    let mut i = 1_000u64;
    g.bench_function("store full, new statements", |b| {
        b.iter(|| {
            i += 1;
            insight.record(black_box(&event(&n, fp(i), 5)));
        })
    });

    // Two threads finishing the same statement at once: one shard mutex between them.
    let insight = Arc::new(Insight::new(&InsightConfig::default()));
    g.bench_function("same statement, 2 threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let insight = insight.clone();
                    let n = &n;
                    s.spawn(move || {
                        for k in 0..iters {
                            insight.record(&event(n, fp(1), k % 5_000));
                        }
                    });
                }
            });
            // What each thread paid per statement (both ran `iters` at the same time).
            start.elapsed()
        })
    });

    // For scale: the per-pool counters the proxy already updates for every query.
    let counters = Counters::default();
    g.bench_function("baseline: pool counters (queries + bytes)", |b| {
        b.iter(|| {
            counters.queries(black_box(1), black_box(120));
            counters.bytes(black_box(60), black_box(90));
        })
    });
    g.finish();
}

fn read(c: &mut Criterion) {
    let n = names();
    let insight = Insight::new(&InsightConfig::default());
    for i in 0..1_000 {
        for k in 0..20 {
            insight.record(&event(&n, fp(i), 100 + k * i));
        }
    }
    c.bench_function("snapshot of 1000 statements", |b| b.iter(|| black_box(insight.snapshot())));
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = record, read
}
criterion_main!(benches);
