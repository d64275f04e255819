//! Health checks on real PostgreSQL with planted problems: duplicate and unused indexes, bloat after
//! mass updates, a query blocked by another session's lock (seen through pg_blocking_pids), a
//! session idle in transaction, sequences near overflow (serial and identity), an invalid unique
//! index left by duplicates (never marked ready: writes do not maintain it), a materialized view
//! never refreshed, dead rows in a table with autovacuum switched off.

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
CREATE TABLE ticket_notes (ticket_id int REFERENCES tickets, body text);
CREATE TABLE tally (id int GENERATED ALWAYS AS IDENTITY, n int);
SELECT setval('tally_id_seq', 2000000000);
CREATE TABLE iu_t (v int);
INSERT INTO iu_t SELECT g % 10 FROM generate_series(1, 1000) g;
CREATE MATERIALIZED VIEW item_totals AS SELECT price, count(*) FROM items GROUP BY price WITH NO DATA;
CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL, note text);
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
    cluster.try_psql("ops", "CREATE UNIQUE INDEX CONCURRENTLY iu_t_v ON iu_t (v)").expect_err("duplicates");
    let url = cluster.url("postgres", "ops");

    // Session A takes a row lock and sits idle in its transaction; session B waits for it.
    let (a, conn_a) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn_a);
    a.batch_execute("BEGIN; UPDATE accounts SET balance = balance - 1 WHERE id = 1").await.unwrap();
    let (b, conn_b) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn_b);
    let blocked = tokio::spawn(async move {
        b.batch_execute("UPDATE accounts SET balance = balance + 1, note = 'SSN-123-45-6789' WHERE id = 1")
            .await
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
    // churn has autovacuum_enabled = false: tuning autovacuum's thresholds would do nothing.
    let dead = find(&report, Category::Bloat, "public.churn has 80,000 dead rows");
    assert!(
        dead.evidence.iter().any(|e| e.contains("autovacuum is switched off for this table")),
        "{dead:?}"
    );
    let fix = dead.fix.as_deref().unwrap();
    assert!(fix.contains("ALTER TABLE public.churn RESET (autovacuum_enabled);"), "{fix}");
    assert!(!fix.contains("scale_factor"), "{fix}");

    let lock = find(&report, Category::Locks, "blocked");
    assert!(
        lock.evidence.iter().any(|e| e.contains("UPDATE accounts SET balance = balance + $1, note = $2")),
        "{lock:?}"
    );
    let shown = serde_json::to_string(&report.findings).unwrap();
    assert!(!shown.contains("SSN-123"), "live query literals must not reach the report: {shown}");
    assert!(
        lock.evidence.iter().any(|e| e.starts_with("blocked by") && e.contains("idle in transaction")),
        "{lock:?}"
    );
    let idle = find(&report, Category::Activity, "idle in transaction");
    assert!(idle.evidence[0].starts_with("user postgres on ops, idle in transaction"), "{idle:?}");

    let seq = find(&report, Category::Sequences, "public.tickets_id_seq");
    assert_eq!(seq.severity, Severity::Critical);
    let identity = find(&report, Category::Sequences, "public.tally_id_seq");
    // The fixes, run as offered, leave room past the int range for the serial and the identity.
    for (finding, table) in [(seq, "tickets"), (identity, "tally")] {
        let fix = finding.fix.as_deref().unwrap();
        // Schema-qualified, `public` too: the fix reads the same under any search_path.
        assert!(fix.contains(&format!("ALTER TABLE public.{table} ALTER COLUMN id TYPE bigint;")), "{fix}");
        cluster.psql("ops", fix);
        let seq = format!("{table}_id_seq");
        let id = cluster.psql(
            "ops",
            &format!("SELECT setval('{seq}', 2147483647); INSERT INTO {table} DEFAULT VALUES RETURNING id"),
        );
        assert!(id.ends_with("2147483648"), "{table}: {id}");
    }
    // The tickets fix widens the column of the foreign key that references tickets.id too: a
    // note for the first ticket past the int range goes in.
    assert!(seq.evidence.iter().any(|e| e.contains("public.ticket_notes.ticket_id")), "{seq:?}");
    cluster.psql("ops", "INSERT INTO ticket_notes VALUES (2147483648, 'past the int range')");

    let invalid = find(&report, Category::Indexes, "Invalid index public.iu_t_v");
    // The build failed on the duplicates before the index was marked ready (indisready = false).
    assert!(invalid.evidence.iter().any(|e| e.contains("writes do not maintain it")), "{invalid:?}");
    let fix = invalid.fix.as_deref().unwrap();
    assert!(!fix.contains("REINDEX"), "REINDEX fails again on the duplicates: {fix}");
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

    // The invalid unique index's fix, followed as offered (CONCURRENTLY waits for open transactions,
    // hence only now): the duplicates query finds the 10 duplicated keys; once they are resolved,
    // the drop and recreate steps leave a valid index.
    let duplicates_query = fix.lines().find(|l| l.starts_with("SELECT")).expect("a query for the duplicates");
    assert!(duplicates_query.contains(" FROM public.iu_t "), "{duplicates_query}");
    assert_eq!(
        cluster.psql("ops", &format!("SELECT count(*) FROM ({})x", duplicates_query.trim_end_matches(';'))),
        "10"
    );
    cluster.psql("ops", "DELETE FROM iu_t a USING iu_t b WHERE a.v = b.v AND a.ctid > b.ctid");
    for step in fix.lines().filter(|l| !l.starts_with("--") && !l.starts_with("SELECT")) {
        cluster.psql("ops", step);
    }
    assert_eq!(
        cluster.psql("ops", "SELECT indisvalid FROM pg_index WHERE indexrelid = 'iu_t_v'::regclass"),
        "t"
    );
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

/// Three sessions on `url`, each with its backend's pid.
async fn three_sessions(url: &str) -> [(tokio_postgres::Client, i32); 3] {
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        sessions.push((client, pid));
    }
    sessions.try_into().unwrap_or_else(|_| unreachable!("three sessions"))
}

/// A chain of waits: A holds a row lock and sits idle in its transaction, B waits for the row,
/// and an ALTER TABLE (C) waits for both. The fix for C terminates A, the root of the chain, never
/// B, which is itself waiting (terminating it would leave C blocked).
#[tokio::test(flavor = "multi_thread")]
async fn the_fix_for_a_blocked_chain_names_its_root_blocker() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE chain");
    cluster.psql("chain", "CREATE TABLE tiny (id int PRIMARY KEY, v text); INSERT INTO tiny VALUES (1, 'x')");
    let url = cluster.url("postgres", "chain");
    let [(a, pid_a), (b, pid_b), (c, pid_c)] = three_sessions(&url).await;
    a.batch_execute("BEGIN; UPDATE tiny SET v = v WHERE id = 1").await.unwrap();
    let wait_for_waiters = |n: usize| {
        let start = Instant::now();
        let cluster = &cluster;
        async move {
            let sql = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'";
            while cluster.psql("chain", sql) != n.to_string() {
                assert!(start.elapsed() < Duration::from_secs(10), "{n} sessions never waited");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let update = tokio::spawn(async move { b.batch_execute("UPDATE tiny SET v = 'y' WHERE id = 1").await });
    wait_for_waiters(1).await;
    let alter = tokio::spawn(async move {
        c.batch_execute("SET lock_timeout = '60s'; ALTER TABLE tiny ADD COLUMN extra int").await
    });
    wait_for_waiters(2).await;
    let blockers_of_c = cluster.psql("chain", &format!("SELECT pg_blocking_pids({pid_c})"));

    let mut opts = common::options(&url);
    opts.skip_indexes = true;
    // Checks that read the size of the table queue behind the ALTER TABLE's lock: let them give up soon.
    opts.statement_timeout_ms = 2_000;
    let report = advise(&opts, &NoProgress).await.unwrap();

    let for_c = find(&report, Category::Locks, &format!("Query (pid {pid_c})"));
    let context = format!("A={pid_a} B={pid_b} C={pid_c}, blockers of C {blockers_of_c}: {for_c:#?}");
    let fix = for_c.fix.as_deref().unwrap();
    assert!(fix.contains(&format!("pg_terminate_backend({pid_a})")), "{context}");
    assert!(!fix.contains(&format!("pg_terminate_backend({pid_b})")), "B is a waiter itself; {context}");
    assert!(
        for_c
            .evidence
            .iter()
            .any(|e| e.starts_with(&format!("root blocker: pid {pid_a} (idle in transaction for"))),
        "the root, and how long it has been idle in its transaction; {context}"
    );
    assert!(
        for_c.evidence.iter().any(|e| e.contains(&format!("pid {pid_b} is itself waiting"))),
        "{context}"
    );
    let for_b = find(&report, Category::Locks, &format!("Query (pid {pid_b})"));
    assert!(for_b.fix.as_deref().unwrap().contains(&format!("pg_terminate_backend({pid_a})")), "{for_b:?}");

    // Following the fix frees the whole chain.
    cluster.psql("chain", &format!("SELECT pg_terminate_backend({pid_a})"));
    update.await.unwrap().unwrap();
    alter.await.unwrap().unwrap();
    drop(a);
}

/// A bulk insert rolled back, then vacuumed, leaves a btree with as many deleted pages as leaf
/// pages, the leaves still densely packed: half the index is waste, and pgstatindex says so.
#[tokio::test(flavor = "multi_thread")]
async fn deleted_btree_pages_count_as_index_bloat() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE rolled");
    cluster.psql(
        "rolled",
        "CREATE EXTENSION pgstattuple;
         CREATE TABLE order_items (id bigint PRIMARY KEY, qty int);
         INSERT INTO order_items SELECT g, 1 FROM generate_series(1, 150000) g;",
    );
    cluster.psql(
        "rolled",
        "BEGIN; INSERT INTO order_items SELECT g, 1 FROM generate_series(150001, 300000) g; ROLLBACK;",
    );
    cluster.psql("rolled", "VACUUM ANALYZE order_items");
    let deleted = cluster.psql("rolled", "SELECT deleted_pages FROM pgstatindex('order_items_pkey')");
    assert!(deleted.parse::<i64>().unwrap() > 300, "the rolled-back entries' pages: {deleted}");

    let mut opts = common::options(&cluster.url("postgres", "rolled"));
    opts.skip_indexes = true;
    opts.health.table_min_bytes = 1 << 20;
    let report = advise(&opts, &NoProgress).await.unwrap();
    let bloat = find(&report, Category::Bloat, "Index public.order_items_pkey is");
    assert!(bloat.title.ends_with("% bloat"), "{bloat:?}");
    let percent: f64 = bloat.title.rsplit(' ').nth(1).unwrap().trim_end_matches('%').parse().unwrap();
    assert!((40.0..=60.0).contains(&percent), "about half the index is deleted pages: {bloat:?}");
    assert!(bloat.evidence.iter().any(|e| e.contains("pgstatindex")), "{bloat:?}");
}

/// Waits (up to 10 s) until `pg_blocking_pids(pid)` in `db` reads `expected`.
async fn blocked_by(cluster: &Cluster, db: &str, pid: i32, expected: String) {
    let start = Instant::now();
    let sql = format!("SELECT pg_blocking_pids({pid})");
    while cluster.psql(db, &sql) != expected {
        assert!(start.elapsed() < Duration::from_secs(10), "pid {pid} never waited on {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A query queued behind DDL that itself waits: A holds a row lock in an open transaction, B's
/// CREATE INDEX waits for A, and C's UPDATE of another row waits only for B's queued lock. The fix
/// for C cancels B, which frees C at once and leaves A's transaction alone; terminating A is the
/// alternative that frees the whole chain.
#[tokio::test(flavor = "multi_thread")]
async fn a_query_queued_behind_waiting_ddl_is_freed_by_cancelling_the_ddl() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE queue");
    cluster.psql(
        "queue",
        "CREATE TABLE tiny (id int PRIMARY KEY, v text); INSERT INTO tiny VALUES (1, 'x'), (2, 'y')",
    );
    let url = cluster.url("postgres", "queue");
    let [(a, pid_a), (b, pid_b), (c, pid_c)] = three_sessions(&url).await;
    a.batch_execute("BEGIN; UPDATE tiny SET v = v WHERE id = 1").await.unwrap();
    let waiting_on = |pid: i32, expected: String| blocked_by(&cluster, "queue", pid, expected);
    let create_index = tokio::spawn(async move { b.batch_execute("CREATE INDEX tiny_v ON tiny (v)").await });
    waiting_on(pid_b, format!("{{{pid_a}}}")).await;
    let update = tokio::spawn(async move { c.batch_execute("UPDATE tiny SET v = 'z' WHERE id = 2").await });
    waiting_on(pid_c, format!("{{{pid_b}}}")).await;

    let mut opts = common::options(&url);
    opts.skip_indexes = true;
    // Checks that read the size of the table queue behind the CREATE INDEX: let them give up soon.
    opts.statement_timeout_ms = 2_000;
    let report = advise(&opts, &NoProgress).await.unwrap();

    let for_c = find(&report, Category::Locks, &format!("Query (pid {pid_c})"));
    let context = format!("A={pid_a} B={pid_b} C={pid_c}: {for_c:#?}");
    let fix = for_c.fix.as_deref().unwrap();
    assert!(fix.starts_with("cancel the waiting statement"), "{context}");
    assert!(fix.contains(&format!("SELECT pg_cancel_backend({pid_b});")), "{context}");
    assert!(fix.contains(&format!("pg_terminate_backend({pid_a})")), "the alternative; {context}");
    assert!(!for_c.evidence.iter().any(|e| e.contains("would not free this query")), "{context}");

    // Following the fix frees C while A's transaction goes on.
    cluster.psql("queue", &format!("SELECT pg_cancel_backend({pid_b})"));
    tokio::time::timeout(Duration::from_secs(10), update).await.expect("C freed").unwrap().unwrap();
    assert!(create_index.await.unwrap().is_err(), "B was cancelled");
    a.batch_execute("COMMIT").await.unwrap();
}

/// Two tables alike: each with an unused index, an unused index a foreign key needs, an invalid
/// unique index, dead rows (autovacuum off) and sequential scans.
const TWINS: &str = "
CREATE TABLE parent (id int PRIMARY KEY);
INSERT INTO parent SELECT generate_series(1, 100);
CREATE TABLE a (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent, v int, pad text)
  WITH (autovacuum_enabled = false);
CREATE TABLE b (LIKE a INCLUDING ALL, FOREIGN KEY (parent_id) REFERENCES parent) WITH (autovacuum_enabled = false);
INSERT INTO a SELECT g, 1 + g % 100, g % 10, 'x' FROM generate_series(1, 20000) g;
INSERT INTO b SELECT * FROM a;
CREATE INDEX a_v_unused ON a (v);
CREATE INDEX b_v_unused ON b (v);
CREATE INDEX a_parent ON a (parent_id);
CREATE INDEX b_parent ON b (parent_id);
UPDATE a SET pad = 'y';
UPDATE b SET pad = 'y';
ANALYZE a, b;
";

/// A session holding one table locked (reading its size or an index definition waits for the
/// lock) leaves that table out of the unused-index, invalid-index, sequential-scan and dead-row
/// checks, named; every other table is checked.
#[tokio::test(flavor = "multi_thread")]
async fn a_locked_table_is_left_out_of_the_table_checks_and_the_rest_checked() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE twins");
    cluster.psql("twins", TWINS);
    for t in ["a", "b"] {
        cluster
            .try_psql("twins", &format!("CREATE UNIQUE INDEX CONCURRENTLY {t}_v_unique ON {t} (v)"))
            .expect_err("duplicates");
        // Enough sequential scans and rows read to be a workload's (50 scans, 1,000,000 rows).
        cluster.psql("twins", &format!("SELECT count(*) FROM {t} WHERE pad = 'z';\n").repeat(60));
    }
    let url = cluster.url("postgres", "twins");
    let holder = common::hold_access_exclusive(&url, "a").await;

    let mut opts = common::options(&url);
    opts.skip_indexes = true;
    opts.health.unused_index_min_bytes = 0;
    opts.health.unused_index_min_stats_days = 0;
    opts.health.table_min_bytes = 0;
    let report = advise(&opts, &NoProgress).await.unwrap();
    let text = report.render_text(false);

    assert!(!report.notes.iter().any(|n| n.contains("could not run") && n.contains("lock")), "{text}");
    let unused = find(&report, Category::Indexes, "Unused index public.b_v_unused");
    assert!(unused.fix.as_deref().unwrap_or_default().contains("DROP INDEX CONCURRENTLY public.b_v_unused;"));
    let fk = find(&report, Category::Indexes, "Unused index public.b_parent");
    assert!(fk.evidence.iter().any(|e| e.contains("supports foreign key b_parent_id_fkey")), "{fk:?}");
    find(&report, Category::Indexes, "Invalid index public.b_v_unique");
    find(&report, Category::Tables, "public.b is read mostly by sequential scans");
    find(&report, Category::Bloat, "public.b has 20,000 dead rows");
    // Table bloat is estimated from the catalog (no lock): table a may show there, nowhere else.
    for title in ["Unused index public.a_", "Invalid index public.a_", "public.a is read", "public.a has"] {
        assert!(!report.findings.iter().any(|f| f.title.starts_with(title)), "{title}:\n{text}");
    }
    for skipped in [
        "Unused indexes not checked on 1 locked relation(s)",
        "Invalid indexes not checked on 1 locked relation(s)",
        "Sequential scans not checked on 1 locked relation(s)",
        "Dead rows not checked on 1 locked relation(s)",
    ] {
        let info = report
            .findings
            .iter()
            .find(|f| f.title == skipped)
            .unwrap_or_else(|| panic!("no `{skipped}` in:\n{text}"));
        assert!(info.evidence.iter().any(|e| e == "locked: public.a"), "{text}");
    }
    holder.batch_execute("ROLLBACK").await.unwrap();
}

/// A transaction prepared for two-phase commit and forgotten shows in no session, yet holds its
/// locks and vacuum's horizon: reported with the statement that ends it, which works as printed.
#[tokio::test(flavor = "multi_thread")]
async fn a_forgotten_prepared_transaction_is_reported() {
    let cluster = Cluster::builder().setting("max_prepared_transactions = 5").start();
    cluster.psql(
        "postgres",
        "CREATE TABLE t2pc (id int); BEGIN; INSERT INTO t2pc VALUES (1); PREPARE TRANSACTION 'order''s 2pc'",
    );
    let mut opts = common::options(&cluster.url("postgres", "postgres"));
    opts.skip_indexes = true;
    opts.health.idle_in_transaction_secs = 0;
    let report = advise(&opts, &NoProgress).await.unwrap();
    let found = find(&report, Category::Activity, "Prepared transaction 'order's 2pc' left open");
    assert!(
        found.evidence.iter().any(|e| e.contains("prepared by postgres in database postgres")),
        "{found:?}"
    );
    let fix = found.fix.as_deref().unwrap();
    assert!(fix.contains("ROLLBACK PREPARED 'order''s 2pc';"), "{fix}");
    cluster.psql("postgres", fix);
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM pg_prepared_xacts"), "0");
}

/// CREATE INDEX CONCURRENTLY scans the table twice, and two builds on an idle table made it "read
/// mostly by sequential scans": a table is reported only after a workload's number of sequential
/// scans (50) that read a workload's number of rows (1,000,000).
#[tokio::test(flavor = "multi_thread")]
async fn index_builds_alone_do_not_make_a_table_read_by_sequential_scans() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE builds");
    cluster.psql(
        "builds",
        "CREATE TABLE fp (id int, a int, b int); INSERT INTO fp SELECT i, i, i FROM generate_series(1, 300000) i;
         CREATE TABLE scanned (id int, a int); INSERT INTO scanned SELECT i, i FROM generate_series(1, 20000) i;
         ANALYZE;",
    );
    cluster.psql("builds", "CREATE INDEX CONCURRENTLY ON fp (a)");
    cluster.psql("builds", "CREATE INDEX CONCURRENTLY ON fp (b)");
    cluster.psql("builds", &"SELECT count(*) FROM scanned WHERE a = 7;\n".repeat(60));
    // A backend reports its statistics as it exits, after psql has returned.
    let counted = "SELECT (SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'fp') >= 2 \
                     AND (SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'scanned') >= 60";
    let start = Instant::now();
    while cluster.psql("builds", counted) != "t" {
        assert!(start.elapsed() < Duration::from_secs(15), "the scans were never counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut opts = common::options(&cluster.url("postgres", "builds"));
    opts.skip_indexes = true;
    opts.health.table_min_bytes = 0;
    let report = advise(&opts, &NoProgress).await.unwrap();
    let text = report.render_text(false);
    assert!(!report.findings.iter().any(|f| f.title.starts_with("public.fp is read")), "{text}");
    let scanned = find(&report, Category::Tables, "public.scanned is read mostly by sequential scans");
    assert!(scanned.evidence[0].starts_with("60 sequential scans"), "{scanned:?}");
}

/// An index cache hit ratio just under the 99% threshold (97 of every 98 index blocks from
/// memory: 98.98%) is a warning, and its title shows it under 99%, not rounded up to "99.0%".
#[tokio::test(flavor = "multi_thread")]
async fn a_hit_ratio_just_under_the_threshold_is_shown_under_it() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE hits");
    cluster.psql(
        "hits",
        "CREATE TABLE t (k int); INSERT INTO t SELECT g FROM generate_series(1, 400000) g;
         CREATE INDEX t_k ON t (k);",
    );
    cluster.psql("hits", "VACUUM ANALYZE t");
    // An empty buffer cache: the first full scan of the index reads every block, the next 97 find them.
    cluster.restart();
    cluster.psql("hits", "SELECT pg_stat_reset()");
    let scan = "SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT count(*) FROM t WHERE k > 0;\n";
    cluster.psql("hits", &scan.repeat(98));
    let counted =
        "SELECT round(100.0 * idx_blks_hit / (idx_blks_hit + idx_blks_read), 2) FROM pg_statio_user_indexes";
    let started = Instant::now();
    while cluster.psql("hits", counted) != "98.98" {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "index blocks: {}",
            cluster.psql("hits", counted)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut opts = common::options(&cluster.url("postgres", "hits"));
    opts.skip_indexes = true;
    opts.index.install_extensions = false;
    let report = advise(&opts, &NoProgress).await.unwrap();
    let index_cache = find(&report, Category::Cache, "Index cache hit ratio");
    assert_eq!(index_cache.severity, Severity::Warning);
    assert_eq!(index_cache.title, "Index cache hit ratio is 98.98%");
}

/// A queued UPDATE of the very row the root's transaction changed: cancelling the ALTER TABLE it
/// is queued behind only moves its wait to the root, and the fix says so. Once the ALTER is gone,
/// the chain has no DDL, and the fix no lock_timeout advice for DDL; the blocked UPDATE is never a
/// long-running query to cancel.
#[tokio::test(flavor = "multi_thread")]
async fn a_queued_update_of_the_roots_row_is_not_freed_by_cancelling_the_ddl() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE row_queue");
    cluster.psql(
        "row_queue",
        "CREATE TABLE tiny (id int PRIMARY KEY, v text); INSERT INTO tiny VALUES (1, 'x')",
    );
    let url = cluster.url("postgres", "row_queue");
    let [(a, pid_a), (b, pid_b), (c, pid_c)] = three_sessions(&url).await;
    a.batch_execute("BEGIN; UPDATE tiny SET v = v WHERE id = 1").await.unwrap();
    let waiting_on = |pid: i32, expected: String| blocked_by(&cluster, "row_queue", pid, expected);
    let alter = tokio::spawn(async move {
        b.batch_execute("SET lock_timeout = '60s'; ALTER TABLE tiny ADD COLUMN extra int").await
    });
    waiting_on(pid_b, format!("{{{pid_a}}}")).await;
    let update = tokio::spawn(async move { c.batch_execute("UPDATE tiny SET v = 'z' WHERE id = 1").await });
    waiting_on(pid_c, format!("{{{pid_b}}}")).await;

    let mut opts = common::options(&url);
    opts.skip_indexes = true;
    opts.statement_timeout_ms = 2_000;
    opts.health.long_query_secs = 0;
    let report = advise(&opts, &NoProgress).await.unwrap();
    let for_c = find(&report, Category::Locks, &format!("Query (pid {pid_c})"));
    let context = format!("A={pid_a} B={pid_b} C={pid_c}: {for_c:#?}");
    let fix = for_c.fix.as_deref().unwrap();
    assert!(fix.contains(&format!("-- if it then waits on pid {pid_a}")), "{context}");
    assert!(
        for_c.evidence.iter().any(|e| e.contains(&format!("but root pid {pid_a} has changed rows"))),
        "{context}"
    );
    assert!(fix.contains("give DDL a lock_timeout"), "the ALTER is in the chain; {context}");
    let pid_c_object = format!("pid {pid_c}");
    assert!(
        !report
            .findings
            .iter()
            .any(|f| f.category == Category::Activity && f.object.as_deref() == Some(&pid_c_object)),
        "a blocked query is not a long-running one:\n{}",
        report.render_text(false)
    );

    // Cancelling the ALTER moves C's wait to A, as the fix warned.
    cluster.psql("row_queue", &format!("SELECT pg_cancel_backend({pid_b})"));
    assert!(alter.await.unwrap().is_err(), "B was cancelled");
    waiting_on(pid_c, format!("{{{pid_a}}}")).await;
    let report = advise(&opts, &NoProgress).await.unwrap();
    let for_c = find(&report, Category::Locks, &format!("Query (pid {pid_c})"));
    let fix = for_c.fix.as_deref().unwrap();
    assert!(fix.contains(&format!("pg_terminate_backend({pid_a})")), "{for_c:#?}");
    assert!(!fix.contains("lock_timeout"), "no DDL in the chain any more: {for_c:#?}");
    a.batch_execute("ROLLBACK").await.unwrap();
    update.await.unwrap().unwrap();
}

/// Scans of a partitioned table's partitions are one finding, on the partitioned table, where
/// the index suggestion for them is made.
#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_tables_sequential_scans_are_one_finding() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE parts");
    cluster.psql(
        "parts",
        "CREATE TABLE events (id int, kind int) PARTITION BY RANGE (id);
         CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (20001);
         CREATE TABLE events_2 PARTITION OF events FOR VALUES FROM (20001) TO (40001);
         INSERT INTO events SELECT i, i % 100 FROM generate_series(1, 40000) i;
         ANALYZE events;",
    );
    cluster.psql("parts", &"SELECT count(*) FROM events WHERE kind = 7;\n".repeat(60));
    let counted = "SELECT count(*) FROM pg_stat_user_tables WHERE relname LIKE 'events_%' AND seq_scan >= 60";
    let start = Instant::now();
    while cluster.psql("parts", counted) != "2" {
        assert!(start.elapsed() < Duration::from_secs(15), "the scans were never counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut opts = common::options(&cluster.url("postgres", "parts"));
    opts.skip_indexes = true;
    opts.health.table_min_bytes = 0;
    let report = advise(&opts, &NoProgress).await.unwrap();
    let text = report.render_text(false);
    let scans: Vec<_> =
        report.findings.iter().filter(|f| f.title.contains("read mostly by sequential scans")).collect();
    assert_eq!(scans.len(), 1, "{text}");
    assert_eq!(scans[0].title, "public.events is read mostly by sequential scans", "{text}");
    assert!(scans[0].evidence[0].starts_with("120 sequential scans"), "{:?}", scans[0]);
    assert!(
        scans[0].evidence.iter().any(|e| e.starts_with("on its partitions public.events_1, public.events_2")),
        "{:?}",
        scans[0]
    );
}
