//! Pool sizing from a measured load: the connections the application keeps busy, not a
//! transaction rate that counts each parallel worker as a transaction of its own.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pgpilot_advisor::{advise, NoProgress};
use pgpilot_testkit::Cluster;

/// `clients` sessions running `statement` back to back until `stop` is set.
async fn clients_running(url: &str, clients: usize, setup: &str, statement: &str, stop: &Arc<AtomicBool>) {
    for _ in 0..clients {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.batch_execute(setup).await.unwrap();
        let (statement, stop) = (statement.to_string(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                client.batch_execute(&statement).await.unwrap();
            }
        });
    }
}

/// Two clients scanning with parallel workers keep at most two connections busy: the workers'
/// transactions (which pg_stat_database counts) must not multiply the load.
#[tokio::test(flavor = "multi_thread")]
async fn parallel_workers_do_not_inflate_the_measured_load() {
    let cluster = Cluster::builder().setting("shared_preload_libraries = 'pg_stat_statements'").start();
    let url = common::database_with_orders(&cluster, "par");
    cluster.psql("par", "CREATE EXTENSION pg_stat_statements");
    let parallel = "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; \
                    SET min_parallel_table_scan_size = 0; SET max_parallel_workers_per_gather = 2";
    let stop = Arc::new(AtomicBool::new(false));
    clients_running(&url, 2, parallel, "SELECT count(*) FROM orders WHERE total > 1", &stop).await;
    let mut opts = common::options(&url);
    opts.workload.pg_stat_statements = true;
    opts.pool.target_tps = None;
    let report = advise(&opts, &NoProgress).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    // Each worker's transaction counts here too: the measure pool sizing used to take.
    let transactions = cluster.psql("par", "SELECT xact_commit FROM pg_stat_database WHERE datname = 'par'");
    let pool = report.pool.expect("measured");
    assert!(
        pool.busy_connections > 0.3 && pool.busy_connections <= 2.05,
        "two clients ({transactions} transactions committed): {pool:#?}"
    );
    assert!(pool.statements_per_s.unwrap() > 1.0, "{pool:#?}");
    assert!(pool.explanation[0].starts_with("pg_stat_statements over 5 s"), "{pool:#?}");
    assert!(pool.target_source.contains("measured over 5 s by pg_stat_statements"), "{pool:#?}");
}

/// Without pg_stat_statements the active client backends are sampled: two sessions in a long
/// statement are two busy connections, and no statement latency is needed to say so.
#[tokio::test(flavor = "multi_thread")]
async fn without_pg_stat_statements_active_backends_are_sampled() {
    let cluster = Cluster::start();
    let url = common::database_with_orders(&cluster, "act");
    let stop = Arc::new(AtomicBool::new(false));
    clients_running(&url, 2, "SELECT 1", "SELECT pg_sleep(1)", &stop).await;
    let mut opts = common::options(&url);
    opts.pool.target_tps = None;
    let report = advise(&opts, &NoProgress).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let pool = report.pool.unwrap_or_else(|| panic!("{:?}", report.notes));
    assert!(pool.busy_connections > 1.5 && pool.busy_connections <= 2.0, "{pool:#?}");
    assert_eq!(pool.statements_per_s, None);
    assert!(pool.explanation[0].contains("client backends active on average"), "{pool:#?}");
    assert_eq!(pool.per_instance, 3, "2 busy × 1.5: {pool:#?}");
}
