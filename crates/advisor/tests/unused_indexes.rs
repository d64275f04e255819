//! The unused-index check on real PostgreSQL: the advisor's own planning (which probes btree
//! indexes for a join key's actual range and so counts as index scans) never hides an unused
//! index, in one run or across runs; an index a foreign key needs is never offered for DROP, while
//! one whose key another index serves is, as the duplicate check says; and nothing is offered for
//! DROP while the statistics are young.

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

/// A cluster with database `name` made by `schema`, and options that report every unused index
/// (no index advice).
fn database(name: &str, schema: &str) -> (Cluster, AdviseOptions) {
    let cluster = Cluster::start();
    cluster.psql("postgres", &format!("CREATE DATABASE {name}"));
    cluster.psql(name, schema);
    let mut opts = common::options(&cluster.url("postgres", name));
    opts.skip_indexes = true;
    opts.health.unused_index_min_bytes = 0;
    (cluster, opts)
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
    let (_cluster, mut opts) = database(
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

/// An index on a foreign key's columns is needed only when no other index is led by them: the
/// duplicate check and the unused-index check agree on which index serves the key.
#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_key_served_by_a_longer_index_does_not_keep_its_prefix() {
    let (_cluster, mut opts) = database(
        "fk2",
        "CREATE TABLE customers (id int PRIMARY KEY);
         INSERT INTO customers SELECT generate_series(1, 5000);
         CREATE TABLE orders (id int PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
                              created_at timestamptz NOT NULL DEFAULT now());
         INSERT INTO orders SELECT g, 1 + g % 5000 FROM generate_series(1, 50000) g;
         CREATE INDEX orders_customer_idx ON orders (customer_id);
         CREATE INDEX orders_customer_created_idx ON orders (customer_id, created_at);
         CREATE TABLE lines (id int PRIMARY KEY, order_id int NOT NULL REFERENCES orders);
         INSERT INTO lines SELECT g, 1 + g % 50000 FROM generate_series(1, 50000) g;
         CREATE INDEX lines_order_a ON lines (order_id);
         CREATE INDEX lines_order_b ON lines (order_id);
         CREATE INDEX lines_order_recent ON lines (order_id) WHERE id > 40000;
         ANALYZE customers, orders, lines;",
    );
    opts.health.unused_index_min_stats_days = 0;
    let report = run(&opts).await;
    let text = report.render_text(false);
    let drops = |index: &str| {
        report
            .findings
            .iter()
            .filter(|f| {
                f.fix.as_deref().is_some_and(|fix| fix.contains(&format!("DROP INDEX CONCURRENTLY {index};")))
            })
            .map(|f| f.title.clone())
            .collect::<Vec<_>>()
    };

    // The prefix: the duplicate check drops it, once; it is unused too, which that finding says
    // (no second DROP from the unused-index check).
    assert_eq!(
        drops("public.orders_customer_idx"),
        ["Index orders_customer_idx is a prefix of orders_customer_created_idx"],
        "{text}"
    );
    assert!(unused(&report, "public.orders_customer_idx").is_none(), "{text}");
    // The longer index serves the foreign key: kept by both.
    assert!(drops("public.orders_customer_created_idx").is_empty(), "{text}");
    let longer = unused(&report, "public.orders_customer_created_idx").unwrap();
    assert!(
        longer.evidence.iter().any(|e| e.contains("supports foreign key orders_customer_id_fkey")),
        "{longer:?}"
    );

    // Exact duplicates on a foreign key: exactly one of them is offered for DROP, once.
    assert!(drops("public.lines_order_a").is_empty(), "{text}");
    assert_eq!(
        drops("public.lines_order_b"),
        ["Duplicate index lines_order_b (same as lines_order_a)"],
        "{text}"
    );
    // A partial index does the key's work for no other index; the whole-table one serves it.
    let partial = unused(&report, "public.lines_order_recent").unwrap();
    assert!(
        partial.evidence.iter().any(|e| e.contains("lines_order_id_fkey is served by public.lines_order_a")),
        "{partial:?}"
    );
    assert_eq!(drops("public.lines_order_recent").len(), 1, "{text}");
}

/// An index whose leading column has another collation, or an operator class without the key's
/// equality operator, orders the column differently: the foreign key's lookups cannot use it, so it
/// never stands in for the plain index on the key.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_in_another_collation_or_opclass_does_not_serve_a_foreign_key() {
    let (_cluster, mut opts) = database(
        "fk3",
        "CREATE TABLE parent (code text PRIMARY KEY);
         INSERT INTO parent SELECT 'p' || g FROM generate_series(1, 2000) g;
         CREATE TABLE child (id int PRIMARY KEY, parent_code text REFERENCES parent (code), a int);
         INSERT INTO child SELECT g, 'p' || (1 + g % 2000), g % 7 FROM generate_series(1, 20000) g;
         CREATE INDEX child_pc_idx ON child (parent_code);
         CREATE INDEX child_pc_c_a ON child (parent_code COLLATE \"C\", a);
         CREATE FUNCTION alt_eq(int, int) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT $1 = $2';
         CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = alt_eq);
         CREATE OPERATOR CLASS int4_alt_ops FOR TYPE int4 USING btree
           AS OPERATOR 3 ===, FUNCTION 1 btint4cmp(int4, int4);
         CREATE TABLE p2 (id int PRIMARY KEY);
         INSERT INTO p2 SELECT generate_series(1, 2000);
         CREATE TABLE c2 (id int PRIMARY KEY, p_id int REFERENCES p2, a int);
         INSERT INTO c2 SELECT g, 1 + g % 2000, g % 7 FROM generate_series(1, 20000) g;
         CREATE INDEX c2_p_idx ON c2 (p_id);
         CREATE INDEX c2_p_alt_a ON c2 (p_id int4_alt_ops, a);
         ANALYZE;",
    );
    opts.health.unused_index_min_stats_days = 0;
    let report = run(&opts).await;
    let text = report.render_text(false);
    for (needed, other, fkey) in [
        ("public.child_pc_idx", "public.child_pc_c_a", "child_parent_code_fkey"),
        ("public.c2_p_idx", "public.c2_p_alt_a", "c2_p_id_fkey"),
    ] {
        let kept = unused(&report, needed).unwrap_or_else(|| panic!("{needed}:\n{text}"));
        assert_eq!(kept.fix, None, "{kept:?}");
        assert!(
            kept.evidence.iter().any(|e| e.contains(&format!("supports foreign key {fkey}"))),
            "{kept:?}"
        );
        assert!(!kept.evidence.iter().any(|e| e.contains("not needed for its foreign key")), "{kept:?}");
        let unrelated = unused(&report, other).unwrap_or_else(|| panic!("{other}:\n{text}"));
        assert!(!unrelated.evidence.iter().any(|e| e.contains("supports foreign key")), "{unrelated:?}");
        assert!(
            unrelated
                .fix
                .as_deref()
                .unwrap_or_default()
                .contains(&format!("DROP INDEX CONCURRENTLY {other};")),
            "{unrelated:?}"
        );
        assert!(
            !report
                .findings
                .iter()
                .any(|f| f.fix.as_deref().is_some_and(|x| x.contains(&format!("{needed};")))),
            "{text}"
        );
    }
}

/// The title names the index as its DROP does, quoted where SQL needs it.
#[tokio::test(flavor = "multi_thread")]
async fn the_title_quotes_the_index_as_the_fix_does() {
    let (_cluster, mut opts) =
        database("quoted", r#"CREATE TABLE t (id int, v int); CREATE INDEX "i<b>1" ON t (v);"#);
    opts.health.unused_index_min_stats_days = 0;
    let report = run(&opts).await;
    let finding =
        unused(&report, r#"public."i<b>1""#).unwrap_or_else(|| panic!("{}", report.render_text(false)));
    assert!(finding.fix.as_deref().is_some_and(|f| f.contains(r#"public."i<b>1""#)), "{finding:?}");
}

/// Indexes of a partitioned table: an index created on the parent is a partitioned index, with
/// one index per partition attached to it. PostgreSQL refuses to drop an attached one on its own
/// ("index pe_v_idx requires it") and refuses DROP INDEX CONCURRENTLY of the partitioned one, so
/// each finding is made once, on the partitioned index, with a plain DROP INDEX that says what it
/// locks; its partitions' scans count for it. Every DROP offered runs. Texts quote names as the
/// fixes do (`public."Acc Ounts"`).
#[tokio::test(flavor = "multi_thread")]
async fn partitioned_indexes_are_judged_and_dropped_on_the_parent() {
    let (cluster, mut opts) = database(
        "parts",
        r#"CREATE TABLE pe (id int, d date NOT NULL, v int) PARTITION BY RANGE (d);
           CREATE TABLE pe_1 PARTITION OF pe FOR VALUES FROM ('2020-01-01') TO ('2022-01-01');
           CREATE TABLE pe_2 PARTITION OF pe FOR VALUES FROM ('2022-01-01') TO ('2024-01-01')
             PARTITION BY RANGE (id);
           CREATE TABLE pe_2a PARTITION OF pe_2 FOR VALUES FROM (0) TO (10000);
           CREATE TABLE pe_2b PARTITION OF pe_2 FOR VALUES FROM (10000) TO (100000);
           INSERT INTO pe SELECT i, date '2020-01-01' + i % 1400, i FROM generate_series(1, 20000) i;
           CREATE INDEX pe_v_id ON pe (v, id);
           CREATE INDEX pe_id_used ON pe (id);
           CREATE INDEX pe_d_idx ON pe (d);
           CREATE INDEX pe_1_own ON pe_1 (d);
           CREATE TABLE "Acc Ounts" (id int, v int);
           CREATE INDEX acc_v ON "Acc Ounts" (v);
           ANALYZE;"#,
    );
    // One partition's share of pe_id_used is scanned: the partitioned index is used. So is
    // pe_v_id, before its prefixes exist: the duplicate check keeps it (the unused check would drop it).
    cluster.psql(
        "parts",
        "SET enable_seqscan = off; SET enable_bitmapscan = off; \
         SELECT count(*) FROM pe WHERE id = 5 AND d < '2021-01-01'; \
         SELECT count(*) FROM pe WHERE v = 5 AND d < '2021-01-01'",
    );
    wait_scanned(&cluster, "parts", "pe_1_v_id_idx");
    cluster.psql("parts", "CREATE INDEX pe_v_idx ON pe (v); CREATE INDEX pe_v_dup ON pe (v)");
    opts.health.unused_index_min_stats_days = 0;
    let report = run(&opts).await;
    let text = report.render_text(false);
    let attached = ["pe_1_v", "pe_1_id", "pe_2_v", "pe_2_id", "pe_2a_", "pe_2b_"];
    for f in report.findings.iter().filter(|f| f.category == Category::Indexes) {
        let about = format!("{}\n{}", f.title, f.fix.as_deref().unwrap_or_default());
        assert!(!attached.iter().any(|a| about.contains(a)), "a partition's attached index: {f:?}");
    }

    let parent = unused(&report, "public.pe_d_idx").unwrap_or_else(|| panic!("{text}"));
    let fix = parent.fix.as_deref().unwrap_or_default();
    assert!(fix.ends_with("\nDROP INDEX public.pe_d_idx;"), "{fix}");
    assert!(fix.contains("ACCESS EXCLUSIVE lock on public.pe and all its partitions"), "{fix}");
    assert!(parent.evidence.iter().any(|e| e.contains("its 3 partition index(es)")), "{parent:?}");
    assert!(unused(&report, "public.pe_id_used").is_none(), "scanned on pe_1:\n{text}");
    let own = unused(&report, "public.pe_1_own").unwrap_or_else(|| panic!("{text}"));
    assert!(own.fix.as_deref().unwrap_or_default().ends_with("\nDROP INDEX CONCURRENTLY public.pe_1_own;"));
    let quoted = unused(&report, "public.acc_v").unwrap_or_else(|| panic!("{text}"));
    assert!(quoted.evidence.iter().any(|e| e.starts_with(r#"on public."Acc Ounts": "#)), "{quoted:?}");

    let duplicates: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.title.starts_with("Duplicate index") || f.title.contains(" is a prefix of "))
        .collect();
    let mut titles: Vec<&str> = duplicates.iter().map(|f| f.title.as_str()).collect();
    titles.sort();
    assert_eq!(
        titles,
        ["Duplicate index pe_v_idx (same as pe_v_dup)", "Index pe_v_dup is a prefix of pe_v_id"],
        "{text}"
    );
    let duplicate = duplicates.iter().find(|f| f.title.starts_with("Duplicate")).unwrap();
    assert!(duplicate.fix.as_deref().unwrap_or_default().ends_with("\nDROP INDEX public.pe_v_idx;"));

    // Every DROP offered runs (each index once: two checks may offer the same).
    let mut drops: Vec<&str> = report
        .findings
        .iter()
        .filter_map(|f| f.fix.as_deref())
        .flat_map(str::lines)
        .filter(|l| l.starts_with("DROP INDEX"))
        .collect();
    drops.sort();
    drops.dedup();
    assert_eq!(drops.len(), 5, "{drops:#?}");
    assert!(!drops.iter().any(|d| d.contains("pe_v_id;")), "the scanned index stays: {drops:#?}");
    for drop in drops {
        cluster.try_psql("parts", drop).unwrap_or_else(|e| panic!("{drop}: {e}"));
    }
}

/// The DROPs offered by any finding, each statement once, sorted.
fn offered_drops(report: &Report) -> Vec<String> {
    let mut drops: Vec<String> = report
        .findings
        .iter()
        .filter_map(|f| f.fix.as_deref())
        .flat_map(str::lines)
        .filter(|l| l.starts_with("DROP INDEX"))
        .map(str::to_string)
        .collect();
    drops.sort();
    drops
}

/// Waits until the statistics show `index` scanned (a backend reports its counts as it exits).
fn wait_scanned(cluster: &Cluster, db: &str, index: &str) {
    let started = std::time::Instant::now();
    while idx_scan(cluster, db, index) == 0 {
        assert!(started.elapsed() < std::time::Duration::from_secs(15), "{index} never counted as scanned");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Of two exact duplicates the planner uses one: the duplicate check keeps that one, so that its
/// DROP and the unused check's DROP of the other are the same statement, offered once. A prefix
/// whose longer index is unused is not dropped as covered by it: the longer one goes, the prefix
/// (which the planner uses) stays. Every DROP offered runs, and what the workload scans is left.
#[tokio::test(flavor = "multi_thread")]
async fn the_two_checks_never_drop_every_index_of_a_column_list() {
    let (cluster, mut opts) = database(
        "copies",
        "CREATE TABLE t (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL, kind int, pad text);
         INSERT INTO t (created_at, kind, pad)
           SELECT now() - g * interval '1 s', g % 500, repeat('x', 50) FROM generate_series(1, 50000) g;
         CREATE INDEX t_b ON t (created_at);
         CREATE INDEX t_kind ON t (kind);
         ANALYZE t;",
    );
    // The application's scans, before the second copy and the longer index exist.
    cluster.psql(
        "copies",
        "SET enable_seqscan = off; SET enable_bitmapscan = off;
         SELECT count(*) FROM t WHERE created_at > now() - interval '10 s';
         SELECT count(*) FROM t WHERE kind = 7;",
    );
    wait_scanned(&cluster, "copies", "t_b");
    wait_scanned(&cluster, "copies", "t_kind");
    cluster.psql(
        "copies",
        "CREATE INDEX t_a ON t (created_at); CREATE INDEX t_kind_created ON t (kind, created_at)",
    );
    opts.health.unused_index_min_stats_days = 0;
    let report = run(&opts).await;
    let text = report.render_text(false);

    assert_eq!(
        offered_drops(&report),
        ["DROP INDEX CONCURRENTLY public.t_a;", "DROP INDEX CONCURRENTLY public.t_kind_created;"],
        "{text}"
    );
    let duplicate = report.findings.iter().find(|f| f.title == "Duplicate index t_a (same as t_b)");
    let duplicate = duplicate.unwrap_or_else(|| panic!("the scanned copy is kept:\n{text}"));
    let scans =
        duplicate.evidence.iter().find(|e| e.starts_with("scans since ")).expect("both copies' scans");
    assert!(scans.contains(": t_a 0, t_b ") && !scans.ends_with(" 0"), "{duplicate:?}");
    assert!(unused(&report, "public.t_a").is_none(), "one DROP per index:\n{text}");
    assert!(!report.findings.iter().any(|f| f.title.contains("t_kind is a prefix")), "{text}");
    let longer = unused(&report, "public.t_kind_created").unwrap_or_else(|| panic!("{text}"));
    assert!(longer.evidence.iter().any(|e| e.starts_with("it covers public.t_kind")), "{longer:?}");

    for drop in offered_drops(&report) {
        cluster.psql("copies", &drop);
    }
    let left = cluster.psql(
        "copies",
        "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename = 't'",
    );
    assert_eq!(left, "t_b,t_kind,t_pkey");
}

/// The application, scanning the index once the advisor has read the counts and begins to plan.
struct AppScansWhilePlanning<'a> {
    cluster: &'a Cluster,
    db: &'a str,
}

impl pgpilot_advisor::Progress for AppScansWhilePlanning<'_> {
    fn stage(&self, name: &str, _: u64) {
        if name == "planning statements" {
            // psql's backend reports its counts as it exits, before the advisor's planning ends.
            self.cluster.psql(
                self.db,
                "SET enable_seqscan = off; SET enable_bitmapscan = off; \
                 SELECT count(*) FROM orders WHERE customer_id = 7; SELECT count(*) FROM orders WHERE customer_id = 8",
            );
        }
    }
    fn advance(&self, _: u64) {}
}

/// Another session scanning the index while the advisor plans is the application, not the
/// advisor: its scans are not put in the ledger, so the next run still sees the index used.
#[tokio::test(flavor = "multi_thread")]
async fn scans_by_other_sessions_during_planning_are_not_the_advisors() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE busy");
    cluster.psql("busy", ORDERS);
    let mut workload = tempfile::NamedTempFile::new().unwrap();
    workload.write_all(JOIN.as_bytes()).unwrap();
    let ledger_dir = tempfile::tempdir().unwrap();
    let mut opts = common::options(&cluster.url("postgres", "busy"));
    opts.workload.file = Some(workload.path().to_path_buf());
    opts.scan_ledger = Some(ledger_dir.path().join("scans.json"));

    advise(&opts, &AppScansWhilePlanning { cluster: &cluster, db: "busy" }).await.unwrap();
    let report = run(&opts).await;
    assert!(
        unused(&report, "public.orders_customer_unused").is_none(),
        "the application scanned it twice (idx_scan {}, the advisor's probes among them):\n{}",
        idx_scan(&cluster, "busy", "orders_customer_unused"),
        report.render_text(false)
    );
}

/// The ledger is the server's: a run by another role subtracts the probes an earlier run planned.
#[tokio::test(flavor = "multi_thread")]
async fn the_ledger_is_shared_by_the_roles_reading_one_server() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE roles");
    cluster.psql("roles", ORDERS);
    cluster.psql("postgres", "CREATE ROLE watcher LOGIN IN ROLE pg_monitor");
    let mut workload = tempfile::NamedTempFile::new().unwrap();
    workload.write_all(JOIN.as_bytes()).unwrap();
    let ledger_dir = tempfile::tempdir().unwrap();
    let ledger = ledger_dir.path().join("scans.json");
    let mut planner = common::options(&cluster.url("postgres", "roles"));
    planner.workload.file = Some(workload.path().to_path_buf());
    planner.scan_ledger = Some(ledger.clone());
    run(&planner).await;
    assert!(idx_scan(&cluster, "roles", "orders_customer_unused") > 0, "planning probed the index");

    let mut watcher = common::options(&cluster.url("watcher", "roles"));
    watcher.skip_indexes = true;
    watcher.scan_ledger = Some(ledger);
    let report = run(&watcher).await;
    assert!(unused(&report, "public.orders_customer_unused").is_some(), "{}", report.render_text(false));
}
