//! Health checks on real PostgreSQL with planted problems: duplicate and unused indexes, bloat after
//! mass updates, a query blocked by another session's lock (seen through pg_blocking_pids), a
//! session idle in transaction, a sequence near overflow, a materialized view never refreshed.

mod common;

use std::time::{Duration, Instant};

use pgpilot_advisor::{advise, Category, NoProgress, Report, Severity};
use pgpilot_testkit::Cluster;

const PLANTED: &str = "
CREATE TABLE items (id serial PRIMARY KEY, sku text NOT NULL, price int NOT NULL);
INSERT INTO items (sku, price) SELECT 'sku-' || i, i % 1000 FROM generate_series(1, 20000) i;
CREATE INDEX items_sku_a ON items (sku);
CREATE INDEX items_sku_b ON items (sku);
CREATE INDEX items_price_unused ON items (price);
CREATE TABLE churn (id int PRIMARY KEY, pad text NOT NULL) WITH (autovacuum_enabled = false);
INSERT INTO churn SELECT i, repeat('x', 100) FROM generate_series(1, 40000) i;
UPDATE churn SET pad = repeat('y', 100);
UPDATE churn SET pad = repeat('z', 100);
ANALYZE churn;
CREATE TABLE tickets (id serial PRIMARY KEY, note text);
SELECT setval('tickets_id_seq', 2000000000);
CREATE MATERIALIZED VIEW item_totals AS SELECT price, count(*) FROM items GROUP BY price WITH NO DATA;
CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);
INSERT INTO accounts VALUES (1, 100);
SELECT pg_create_physical_replication_slot('stale_standby', true);
";

fn find<'a>(report: &'a Report, category: Category, needle: &str) -> &'a pgpilot_advisor::Finding {
    report.findings.iter().find(|f| f.category == category && f.title.contains(needle)).unwrap_or_else(|| {
        panic!("no {category:?} finding with `{needle}` in:\n{}", report.render_text(false))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn planted_problems_are_found() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE ops");
    cluster.psql("ops", PLANTED);
    let url = cluster.url("postgres", "ops");

    // Session A takes a row lock and sits idle in its transaction; session B waits for it.
    let (a, conn_a) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn_a);
    a.batch_execute("BEGIN; UPDATE accounts SET balance = balance - 1 WHERE id = 1").await.unwrap();
    let (b, conn_b) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn_b);
    let blocked = tokio::spawn(async move {
        b.batch_execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1").await
    });
    let start = Instant::now();
    while cluster.psql("ops", "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'") != "1" {
        assert!(start.elapsed() < Duration::from_secs(10), "session B never blocked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut opts = common::options(&url);
    opts.skip_indexes = true;
    opts.health.unused_index_min_bytes = 0;
    opts.health.table_min_bytes = 1024 * 1024;
    opts.health.idle_in_transaction_secs = 0;
    let report = advise(&opts, &NoProgress).await.unwrap();

    let dup = find(&report, Category::Indexes, "Duplicate index items_sku_b (same as items_sku_a)");
    assert_eq!(dup.fix.as_deref(), Some("DROP INDEX CONCURRENTLY public.items_sku_b;"));
    let unused = find(&report, Category::Indexes, "Unused index public.items_price_unused");
    assert!(unused.evidence[0].starts_with("0 scans since"), "{unused:?}");

    let bloat = find(&report, Category::Bloat, "Table public.churn is");
    assert!(bloat.evidence[0].contains("pgstattuple_approx"), "pgstattuple was installed: {bloat:?}");
    find(&report, Category::Bloat, "public.churn has 80,000 dead rows");

    let lock = find(&report, Category::Locks, "blocked");
    assert!(
        lock.evidence.iter().any(|e| e.contains("UPDATE accounts SET balance = balance + 1")),
        "{lock:?}"
    );
    assert!(
        lock.evidence.iter().any(|e| e.starts_with("blocked by") && e.contains("idle in transaction")),
        "{lock:?}"
    );
    find(&report, Category::Activity, "idle in transaction");

    let seq = find(&report, Category::Sequences, "public.tickets_id_seq");
    assert_eq!(seq.severity, Severity::Critical);
    find(&report, Category::MaterializedViews, "public.item_totals was never refreshed");
    find(&report, Category::WalArchiving, "WAL archiving is off");
    let slot = find(&report, Category::Replication, "Replication slot stale_standby is inactive");
    assert_eq!(slot.severity, Severity::Warning);
    assert!(!report.notes.iter().any(|n| n.contains("could not run")), "{:?}", report.notes);
    assert!(report.fails_on(Severity::Critical));

    // Configuration: 8 GB / 4 CPUs given, and the test cluster runs 64MB of shared_buffers.
    let sb = report.settings.iter().find(|s| s.name == "shared_buffers").expect("shared_buffers advice");
    assert_eq!(sb.recommended, "2GB");
    assert!(sb.restart);
    assert!(report.pool.is_none(), "no latency source, no pool advice");

    let json = serde_json::to_string(&report).unwrap();
    assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);

    a.batch_execute("ROLLBACK").await.unwrap();
    blocked.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_is_checked_read_only() {
    let primary = Cluster::start();
    primary.psql("postgres", "CREATE DATABASE app");
    primary.psql("app", "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 1000)");
    // pg_basebackup asks for a spread checkpoint: with nothing left to flush it is immediate.
    primary.psql("postgres", "CHECKPOINT");
    let replica = primary.start_replica();
    replica.wait_caught_up(&primary);
    let mut opts = common::options(&replica.url("postgres", "app"));
    opts.skip_indexes = true;
    let report = advise(&opts, &NoProgress).await.unwrap();
    assert!(!report.notes.iter().any(|n| n.contains("could not run")), "{:?}", report.notes);
    assert!(
        report.findings.iter().all(|f| f.category != Category::Replication),
        "a caught-up replica has no lag"
    );
}
