//! The unused-index check on real PostgreSQL: the advisor's own planning (which probes btree
//! indexes for a join key's actual range and so counts as index scans) never hides an unused
//! index, in one run or across runs; an index that supports a foreign key is never offered for
//! DROP; and nothing is offered for DROP while the statistics are young.

mod common;

use std::io::Write;

use pgpilot_advisor::{advise, AdviseOptions, Category, Finding, NoProgress, Report, Severity};
use pgpilot_testkit::Cluster;

const ORDERS: &str = "
CREATE TABLE customers (id int PRIMARY KEY, email text);
INSERT INTO customers SELECT g, 'e' || g FROM generate_series(1, 50000) g;
CREATE TABLE orders (id bigint, customer_id int, created_at timestamptz);
INSERT INTO orders SELECT g, 1 + g % 50000, now() - (g || ' min')::interval FROM generate_series(1, 300000) g;
CREATE INDEX orders_customer_unused ON orders (customer_id);
ANALYZE orders, customers;
";

/// A merge join is costed with the join keys' actual minimum and maximum, read from their indexes.
const JOIN: &str =
    "-- calls: 10\nSELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id \
                    WHERE o.created_at > now() - interval '1 hour';\n";

fn unused<'a>(report: &'a Report, index: &str) -> Option<&'a Finding> {
    let title = format!("Unused index {index}");
    report.findings.iter().find(|f| f.category == Category::Indexes && f.title == title)
}

fn idx_scan(cluster: &Cluster, db: &str, index: &str) -> i64 {
    let sql = format!("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = '{index}'");
    cluster.psql(db, &sql).parse().unwrap()
}

async fn run(opts: &AdviseOptions) -> Report {
    advise(opts, &NoProgress).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_advisors_own_planning_never_hides_an_unused_index() {
    let cluster = Cluster::start();
    let mut workload = tempfile::NamedTempFile::new().unwrap();
    workload.write_all(JOIN.as_bytes()).unwrap();
    let ledger_dir = tempfile::tempdir().unwrap();
    // One database as the CLI runs it (a state file between runs), one as the gateway does (memory).
    for (db, ledger) in [("cli", Some(ledger_dir.path().join("scans.json"))), ("gateway", None)] {
        cluster.psql("postgres", &format!("CREATE DATABASE {db}"));
        cluster.psql(db, ORDERS);
        let mut opts = common::options(&cluster.url("postgres", db));
        opts.workload.file = Some(workload.path().to_path_buf());
        opts.scan_ledger = ledger;
        for round in 1..=3 {
            let report = run(&opts).await;
            assert!(
                unused(&report, "public.orders_customer_unused").is_some(),
                "{db}, run {round}: idx_scan is {} now, all the advisor's own:\n{}",
                idx_scan(&cluster, db, "orders_customer_unused"),
                report.render_text(false)
            );
        }
        assert!(idx_scan(&cluster, db, "orders_customer_unused") > 0, "{db}: planning did probe the index");
        // The application's own scan between runs counts: the index is used.
        cluster.psql(db, "SET enable_seqscan = off; SELECT count(*) FROM orders WHERE customer_id = 7");
        let report = run(&opts).await;
        assert!(unused(&report, "public.orders_customer_unused").is_none(), "{}", report.render_text(false));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_drop_for_a_foreign_key_index_or_on_young_statistics() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE fk");
    cluster.psql(
        "fk",
        "CREATE TABLE parent (id int PRIMARY KEY);
         INSERT INTO parent SELECT generate_series(1, 20000);
         CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent ON DELETE CASCADE,
                             kind int, pad text);
         INSERT INTO child SELECT g, 1 + g % 20000, g % 7, repeat('x', 20) FROM generate_series(1, 200000) g;
         CREATE INDEX child_parent_kind ON child (parent_id, kind);
         CREATE INDEX child_kind ON child (kind);
         ANALYZE parent, child;",
    );
    let mut opts = common::options(&cluster.url("postgres", "fk"));
    opts.skip_indexes = true;
    opts.health.unused_index_min_bytes = 0;

    // A fresh cluster: statistics of minutes prove nothing, so no DROP at all.
    let report = run(&opts).await;
    for index in ["public.child_parent_kind", "public.child_kind"] {
        let f = unused(&report, index).unwrap_or_else(|| panic!("{index}:\n{}", report.render_text(false)));
        assert_eq!(f.fix, None, "{f:?}");
        assert_eq!(f.severity, Severity::Info, "{f:?}");
    }
    let young = unused(&report, "public.child_kind").unwrap();
    assert!(young.evidence.iter().any(|e| e.contains("observe longer")), "{young:?}");

    // Statistics old enough: the plain index may go, the one behind the foreign key stays.
    opts.health.unused_index_min_stats_days = 0;
    let report = run(&opts).await;
    let plain = unused(&report, "public.child_kind").unwrap();
    assert!(plain.fix.as_deref().unwrap_or_default().contains("DROP INDEX CONCURRENTLY public.child_kind;"));
    let fk = unused(&report, "public.child_parent_kind").unwrap();
    assert_eq!(fk.fix, None, "{fk:?}");
    assert!(fk.evidence.iter().any(|e| e.contains("supports foreign key child_parent_id_fkey")), "{fk:?}");
}
