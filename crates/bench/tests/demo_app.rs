//! The demo application: it installs quickly, its mixes run without errors, and what the mixes
//! report having written is what the tables gained.

mod common;

use common::*;
use pgpilot_bench::demo_app::{self, Mix, Sizes, Stats, MISSING_INDEXES};
use pgpilot_bench::{Protocol, Target, Workload};
use pgpilot_testkit::Cluster;

fn stats(target: &Target) -> Stats {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = pgpilot_bench::setup_client(target).await.unwrap();
        Stats::collect(&client).await.unwrap()
    })
}

fn script_count(report: &pgpilot_bench::BenchReport, suffix: &str) -> i64 {
    report.targets[0].scripts.iter().filter(|s| s.name.ends_with(suffix)).map(|s| s.transactions as i64).sum()
}

#[test]
fn installs_runs_both_mixes_and_the_counts_add_up() {
    let cluster = Cluster::start();
    let db = target(&cluster, "db");
    // Install through the bench's --init path at a small scale.
    let mut c = config(
        vec![db.clone()],
        vec![Workload::Scenario { name: "read-heavy".into(), weight: 1 }],
        4,
        per_client(40),
    );
    c.init = true;
    c.scale = Some(0.1);
    let report = pgpilot_bench::run(c).unwrap();
    let t = only(&report);
    assert_eq!((t.transactions, t.failed), (160, 0), "{:?}", t.errors);
    assert_consistent(t);
    assert_eq!(t.scripts.len(), Mix::ReadHeavy.scripts().len());

    let before = stats(&db);
    let sizes = Sizes::for_scale(0.1);
    assert_eq!(before.users, sizes.users);
    assert_eq!(before.accounts, sizes.accounts);
    assert_eq!(before.workflows, sizes.workflows);
    assert_eq!(before.categories, 20);
    assert_eq!(before.transaction_partitions, 19);
    assert_eq!(before.budgets, sizes.users * 5);
    assert!(before.transactions >= sizes.transactions);
    assert!(before.runs >= sizes.runs && before.form_responses >= sizes.responses);

    for protocol in [Protocol::Simple, Protocol::Extended, Protocol::Prepared] {
        let before = stats(&db);
        let mut c = config(
            vec![db.clone()],
            vec![Workload::Scenario { name: "write-heavy".into(), weight: 1 }],
            4,
            per_client(50),
        );
        c.protocol = protocol;
        let report = pgpilot_bench::run(c).unwrap();
        let t = only(&report);
        assert_eq!((t.transactions, t.failed), (200, 0), "{protocol}: {:?}", t.errors);
        let after = stats(&db);
        assert_eq!(after.transactions - before.transactions, script_count(&report, "/book_transaction"));
        assert_eq!(after.runs - before.runs, script_count(&report, "/start_run"));
        assert_eq!(after.form_responses - before.form_responses, script_count(&report, "/submit_form"));
        assert!(script_count(&report, "/book_transaction") > 20, "the write-heavy mix books transactions");
    }
    // Every booking kept the balances equal to the sum of the ledger.
    let drift = cluster.psql(
        "postgres",
        "SELECT count(*) FROM ledger.accounts a LEFT JOIN (SELECT account_id, sum(amount) s FROM ledger.transactions \
         GROUP BY 1) t ON t.account_id = a.id WHERE a.balance <> coalesce(t.s, 0)",
    );
    assert_eq!(drift, "0");
}

#[test]
fn scale_one_loads_quickly_and_the_missing_indexes_matter() {
    let cluster = Cluster::start();
    let db = target(&cluster, "db");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let started = std::time::Instant::now();
    let stats = rt.block_on(async {
        let client = pgpilot_bench::setup_client(&db).await.unwrap();
        demo_app::install(&client, 1.0).await.unwrap()
    });
    let took = started.elapsed();
    eprintln!("demo install at scale 1: {took:?}, {stats:?}");
    assert!(took.as_secs() < 60, "installing took {took:?}");
    assert_eq!(stats.transactions, 200_000);
    assert_eq!(stats.runs, 50_000);

    // The queries behind the mixes scan without the indexes and use them once created.
    let plan = |sql: &str| cluster.psql("postgres", &format!("EXPLAIN {sql}"));
    let queries = [
        "SELECT id FROM ledger.transactions WHERE account_id = 7 AND booked_at > now() - interval '60 days' ORDER BY booked_at DESC LIMIT 20",
        "SELECT id FROM flow.runs WHERE workflow_id = 7 AND status = 'pending' ORDER BY created_at LIMIT 10",
        "SELECT id FROM flow.form_responses WHERE answers @> '{\"rating\": 5, \"channel\": \"web\"}' ORDER BY submitted_at DESC LIMIT 20",
    ];
    for (q, missing) in queries.iter().zip(MISSING_INDEXES) {
        let without = plan(q);
        assert!(without.contains("Seq Scan"), "{}: {without}", missing.table);
        cluster.psql("postgres", missing.create);
        cluster.psql("postgres", &format!("ANALYZE {}", missing.table));
        let with = plan(q);
        assert!(!with.contains("Seq Scan"), "{} after {}: {with}", missing.table, missing.create);
    }

    // Installing again replaces the application; a foreign `ledger` schema is never dropped.
    rt.block_on(async {
        let client = pgpilot_bench::setup_client(&db).await.unwrap();
        let again = demo_app::install(&client, 0.05).await.unwrap();
        assert_eq!(again.users, Sizes::for_scale(0.05).users);
        client
            .batch_execute("DROP SCHEMA ledger, flow CASCADE; DROP TABLE pgpilot_demo; CREATE SCHEMA ledger")
            .await
            .unwrap();
        let err = demo_app::install(&client, 0.05).await.unwrap_err().to_string();
        assert!(err.contains("refusing"), "{err}");
    });
}

/// `-b NAME@W` weighs the scenario as a whole, as pgbench weighs scripts: a mix of twelve scripts
/// at @1 beside select-only at @1 is half and half, not select-only against each of its scripts.
#[test]
fn a_mix_weighs_as_much_as_a_single_script_of_the_same_weight() {
    let cluster = Cluster::start();
    let db = target(&cluster, "db");
    let scenario = |name: &str, weight| Workload::Scenario { name: name.into(), weight };
    let select_only_share = |mix_weight: u32, init: bool| {
        let workload = vec![scenario("write-heavy", mix_weight), scenario("select-only", 1)];
        let mut c = config(vec![db.clone()], workload, 4, per_client(200));
        c.init = init;
        c.scale = Some(1.0);
        let report = pgpilot_bench::run(c).unwrap();
        let t = only(&report);
        assert_eq!(t.failed, 0, "{:?}", t.errors);
        let select_only = t.scripts.iter().find(|s| s.name == "select-only").expect("select-only");
        assert_eq!(select_only.weight, 1.0);
        let mix_weight_reported: f64 =
            t.scripts.iter().filter(|s| s.name.starts_with("write-heavy/")).map(|s| s.weight).sum();
        assert!((mix_weight_reported - f64::from(mix_weight)).abs() < 1e-9, "{:?}", t.scripts);
        let booking = t.scripts.iter().find(|s| s.name == "write-heavy/book_transaction").unwrap();
        assert!((booking.weight - 0.25 * f64::from(mix_weight)).abs() < 1e-9, "{booking:?}");
        select_only.transactions as f64 / t.transactions as f64
    };
    // 800 transactions: a binomial share of 0.5 strays beyond 0.35..0.65 about never.
    let even = select_only_share(1, true);
    assert!((0.35..=0.65).contains(&even), "write-heavy@1 -b select-only@1: select-only got {even}");
    let tenth = select_only_share(10, false);
    assert!((0.04..=0.16).contains(&tenth), "write-heavy@10 -b select-only@1 (1/11 expected): {tenth}");
}
