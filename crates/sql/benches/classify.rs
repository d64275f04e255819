//! Cost of classifying a statement: a parse-cache hit (the gateway's hot path), a hit with two threads
//! hammering the same statement, a miss (full parse, fingerprint, normalize), and the decisions.
//!
//! `cargo bench -p pgpilot-sql --bench classify`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use pgpilot_sql::{analyze, route, Classifier, FunctionCatalog, Volatility};

const SHORT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
const TPCB_UPDATE: &str = "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2";
const LONG: &str = "WITH recent AS (SELECT o.id, o.account_id, o.total, o.created_at FROM orders o \
    WHERE o.created_at > $1 AND o.status IN ('paid', 'shipped')), ranked AS (SELECT r.*, \
    row_number() OVER (PARTITION BY r.account_id ORDER BY r.total DESC) AS rn FROM recent r) \
    SELECT a.id, a.name, coalesce(sum(k.total), 0) AS spent, count(k.id) AS n, max(k.created_at) \
    FROM accounts a LEFT JOIN ranked k ON k.account_id = a.id AND k.rn <= 5 \
    JOIN regions g ON g.id = a.region_id WHERE g.code = ANY($2) AND a.deleted_at IS NULL \
    GROUP BY a.id, a.name HAVING count(k.id) > $3 ORDER BY spent DESC LIMIT 50";

fn hits(c: &mut Criterion) {
    let classifier = Classifier::new(10_000);
    // Fill with other statements so the hit is a lookup in a populated table.
    for i in 0..5_000 {
        classifier.classify(&format!("SELECT * FROM t{i} WHERE id = $1"));
    }
    let mut group = c.benchmark_group("classify_hit");
    for (name, sql) in [("short", SHORT), ("update", TPCB_UPDATE), ("long_cte", LONG)] {
        classifier.classify(sql);
        group.bench_function(name, |b| b.iter(|| classifier.classify(black_box(sql))));
    }
    group.finish();
}

/// A second thread classifies the same statement in a loop while the measured thread does too: the
/// shard lock and the Arc's counter are shared, as with two gateway worker threads.
fn contended_hit(c: &mut Criterion) {
    let classifier = Arc::new(Classifier::new(10_000));
    classifier.classify(SHORT);
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (classifier, stop) = (classifier.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                black_box(classifier.classify(black_box(SHORT)));
            }
        })
    };
    c.bench_function("classify_hit_two_threads_same_statement", |b| {
        b.iter(|| classifier.classify(black_box(SHORT)))
    });
    stop.store(true, Ordering::Relaxed);
    other.join().expect("second thread");
}

fn misses(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify_miss");
    for (name, sql) in [("short", SHORT), ("update", TPCB_UPDATE), ("long_cte", LONG)] {
        group.bench_function(name, |b| b.iter(|| analyze(black_box(sql))));
    }
    // Through the cache, with eviction: every text is new.
    let classifier = Classifier::new(1_000);
    let mut n = 0u64;
    group.bench_function("short_through_full_cache", |b| {
        b.iter_batched(
            || {
                n += 1;
                format!("SELECT abalance FROM pgbench_accounts WHERE aid = {n}")
            },
            |sql| classifier.classify(&sql),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn decisions(c: &mut Criterion) {
    let catalog = FunctionCatalog::from_entries(
        (0..3000).map(|i| ("pg_catalog".to_string(), format!("f{i}"), Volatility::Immutable)).chain([
            ("pg_catalog".to_string(), "coalesce".to_string(), Volatility::Immutable),
            ("pg_catalog".to_string(), "row_number".to_string(), Volatility::Immutable),
            ("pg_catalog".to_string(), "sum".to_string(), Volatility::Immutable),
            ("pg_catalog".to_string(), "count".to_string(), Volatility::Immutable),
            ("pg_catalog".to_string(), "max".to_string(), Volatility::Immutable),
        ]),
    );
    let path = vec!["public".to_string()];
    let long = analyze(LONG);
    let short = analyze(SHORT);
    c.bench_function("route_short", |b| b.iter(|| route(black_box(&short), &catalog, &path)));
    c.bench_function("route_long_cte_5_functions", |b| b.iter(|| route(black_box(&long), &catalog, &path)));
}

/// The lexical scans every simple-protocol statement gets on the hot path: the quick look (routing,
/// session tracking) and the normalization for per-statement statistics.
fn lexical(c: &mut Criterion) {
    let select = "SELECT abalance FROM pgbench_accounts WHERE aid = 83671;";
    let update = "UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 5;";
    let mut group = c.benchmark_group("lexical");
    let mut text = String::new();
    for (name, sql) in [("select", select), ("update", update)] {
        group.bench_function(format!("quick_look_{name}"), |b| {
            b.iter(|| pgpilot_sql::quick_look(black_box(sql)))
        });
        group.bench_function(format!("normalize_{name}"), |b| {
            b.iter(|| pgpilot_sql::normalize::normalize_into(black_box(sql), false, &mut text).0)
        });
    }
    group.finish();
}

criterion_group!(benches, hits, contended_hit, misses, decisions, lexical);
criterion_main!(benches);
