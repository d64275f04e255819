//! Materialized views refreshed under readers, and batched retention.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{at, client, clock, config, run};
use pgpilot_scheduler::{ManualClock, Outcome};
use pgpilot_testkit::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refresh_never_blocks_or_fails_readers() {
    let cluster = Cluster::start();
    // pg_sleep in the view's FROM makes every refresh take at least 2 s.
    cluster.psql(
        "postgres",
        "CREATE TABLE base AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;
         CREATE MATERIALIZED VIEW mv AS SELECT b.id, b.v FROM base b, pg_sleep(2) s;
         CREATE UNIQUE INDEX mv_id ON mv (id);
         CREATE MATERIALIZED VIEW mv_plain AS SELECT id FROM base;
         INSERT INTO base SELECT g, 'new' FROM generate_series(20001, 20500) g;",
    );
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "mv"
        kind = "refresh"
        schedule = "*/15 * * * *"
        database = "app"
        view = "mv"

        [[jobs]]
        name = "mv-plain"
        kind = "refresh"
        schedule = "@daily"
        database = "app"
        view = "mv_plain"

        [[jobs]]
        name = "mv-plain-strict"
        kind = "refresh"
        schedule = "@daily"
        database = "app"
        view = "mv_plain"
        concurrently = "always"
        "#,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let c = client(&cluster).await;
        c.batch_execute("SET statement_timeout = '5s'").await.unwrap();
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let (mut reads, mut slowest) = (0u32, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let n: i64 =
                    c.query_one("SELECT count(*) FROM mv", &[]).await.expect("a reader failed").get(0);
                assert!(n >= 20000, "readers always see a full view, got {n}");
                slowest = slowest.max(t.elapsed());
                reads += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (reads, slowest)
        }));
    }
    let clock = clock(at(2026, 3, 1, 0, 0, 0));
    let started = Instant::now();
    let report = run(&cfg, "mv", &clock).await;
    let refresh_took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert!(report.notes.iter().any(|n| n.contains("CONCURRENTLY")), "{:?}", report.notes);
    assert!(
        refresh_took >= Duration::from_millis(2000),
        "the refresh was meant to be slow: {refresh_took:?}"
    );
    for reader in readers {
        let (reads, slowest) = reader.await.expect("reader task");
        assert!(reads >= 5, "a reader managed only {reads} reads during a {refresh_took:?} refresh");
        assert!(slowest < Duration::from_millis(1200), "a reader waited {slowest:?}: it was blocked");
    }
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM mv"), "20500");

    // Without a unique index: a plain refresh and the reason; or a refusal when asked to insist.
    let plain = run(&cfg, "mv-plain", &clock).await;
    assert_eq!(plain.outcome, Outcome::Succeeded, "{plain:?}");
    assert!(plain.notes.iter().any(|n| n.contains("no unique index")), "{:?}", plain.notes);
    let strict = run(&cfg, "mv-plain-strict", &clock).await;
    assert_eq!(strict.outcome, Outcome::Failed);
    assert!(strict.error.unwrap_or_default().contains("unique index"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_retention_leaves_recent_rows_alone() {
    let cluster = Cluster::start();
    // "Now" is 2026-06-01. 12,000 rows are over a year old (half of them still 'open'), 1,000 recent.
    cluster.psql(
        "postgres",
        "CREATE TABLE audit (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL, status text NOT NULL);
         INSERT INTO audit (created_at, status)
              SELECT '2025-01-01'::timestamptz + g * interval '1 minute', CASE WHEN g % 2 = 0 THEN 'done' ELSE 'open' END
                FROM generate_series(1, 12000) g;
         INSERT INTO audit (created_at, status)
              SELECT '2026-05-20'::timestamptz + g * interval '1 second', 'done' FROM generate_series(1, 1000) g;
         CREATE TABLE log_nopk (at timestamptz NOT NULL, line text);
         INSERT INTO log_nopk SELECT '2025-01-01'::timestamptz + g * interval '1 minute', 'x' FROM generate_series(1, 3000) g;
         INSERT INTO log_nopk VALUES ('2026-05-31', 'recent');",
    );
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "audit-done"
        kind = "retention"
        schedule = "@daily"
        database = "app"
        table = "audit"
        column = "created_at"
        older_than = "365 days"
        filter = "status = 'done'"
        batch_size = 1000
        pause = "5ms"

        [[jobs]]
        name = "audit-all"
        kind = "retention"
        schedule = "@daily"
        database = "app"
        table = "audit"
        column = "created_at"
        older_than = "1 year"
        batch_size = 500
        pause = "50ms"
        time_budget = "60ms"

        [[jobs]]
        name = "log"
        kind = "retention"
        schedule = "@daily"
        database = "app"
        table = "log_nopk"
        column = "at"
        older_than = "30 days"
        batch_size = 700
        pause = "1ms"
        "#,
    );
    let clock = clock(at(2026, 6, 1, 0, 0, 0));
    let report = run(&cfg, "audit-done", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(report.rows, Some(6000));
    assert!(report.notes.iter().any(|n| n.contains("7 batches")), "{:?}", report.notes);
    let counts = |sql: &str| cluster.psql("postgres", sql);
    assert_eq!(counts("SELECT count(*) FROM audit WHERE created_at >= '2026-01-01'"), "1000");
    assert_eq!(counts("SELECT count(*) FROM audit WHERE status = 'open'"), "6000");

    // A small time budget stops between batches and leaves the rest for the next run.
    let report = run(&cfg, "audit-all", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert!(report.rows.unwrap_or(0) >= 500 && report.rows.unwrap_or(0) < 6000, "{report:?}");
    assert!(report.notes.iter().any(|n| n.contains("time budget")), "{:?}", report.notes);
    assert_eq!(counts("SELECT count(*) FROM audit WHERE created_at >= '2026-01-01'"), "1000");

    let report = run(&cfg, "log", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(report.rows, Some(3000));
    assert_eq!(counts("SELECT line FROM log_nopk"), "recent");

    // pgpilot's host clock two days fast: rows the database counts as 29 days old stay.
    cluster.psql(
        "postgres",
        "TRUNCATE log_nopk; INSERT INTO log_nopk SELECT now() - interval '29 days' + g * interval '1 minute', 'young' FROM generate_series(1, 100) g",
    );
    let fast = ManualClock::new(chrono::Utc::now() + chrono::Duration::days(2));
    let report = run(&cfg, "log", &fast).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(report.rows, Some(0), "{report:?}");
    assert_eq!(counts("SELECT count(*) FROM log_nopk"), "100");
}

/// The job role of docs/jobs.md: no CREATE on the database, the `pgpilot` schema made for it, and
/// SELECT and DELETE on the table. The history table goes into the existing schema; the batches,
/// which lock their rows with FOR UPDATE SKIP LOCKED, also need UPDATE, and the run says so
/// before deleting anything; UPDATE on one column is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_with_a_schema_made_for_the_role_and_table_privileges() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE ROLE rp LOGIN;
         REVOKE CREATE ON DATABASE postgres FROM PUBLIC;
         CREATE SCHEMA pgpilot AUTHORIZATION rp;
         CREATE TABLE logs (id serial PRIMARY KEY, created_at timestamptz NOT NULL);
         INSERT INTO logs (created_at) SELECT now() - (g + 0.5) * interval '1 day' FROM generate_series(0, 20) g;
         GRANT USAGE ON SCHEMA public TO rp;
         GRANT SELECT, DELETE ON logs TO rp;",
    );
    let text = format!(
        "[databases.app]\nprimary = \"{}\"\n\n\
         [[jobs]]\nname = \"logs\"\nkind = \"retention\"\nschedule = \"@daily\"\ndatabase = \"app\"\n\
         table = \"logs\"\ncolumn = \"created_at\"\nolder_than = \"7 days\"\nretries = 0\n",
        cluster.url("rp", "postgres")
    );
    let cfg = pgpilot_scheduler::JobsConfig::parse(&text).expect("config");
    let clock = ManualClock::new(chrono::Utc::now());
    let report = run(&cfg, "logs", &clock).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    let error = report.error.clone().unwrap_or_default();
    assert!(!error.contains("creating schema"), "the schema exists; nothing to create: {error}");
    assert!(
        error.contains("UPDATE") && error.contains("FOR UPDATE SKIP LOCKED") && error.contains("rp"),
        "the error says UPDATE is needed, and why: {error}"
    );
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM pgpilot.job_runs WHERE job = 'logs'"), "1");
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM logs"), "21");

    cluster.psql("postgres", "GRANT UPDATE (created_at) ON logs TO rp");
    let report = run(&cfg, "logs", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(report.rows, Some(14), "{report:?}");
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM logs"), "7");
}

/// A `filter` may end in a `-- comment`: it goes into the statement on lines of its own, so the
/// comment does not swallow the closing parenthesis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_filter_ending_in_a_comment_works() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE notes (id int PRIMARY KEY, at timestamptz NOT NULL, kind text);
         CREATE INDEX ON notes (at);
         INSERT INTO notes VALUES (1, '2020-01-01', 'chat'), (2, '2020-01-01', 'legal'), (3, now(), 'chat');",
    );
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "notes"
        kind = "retention"
        schedule = "@daily"
        database = "app"
        table = "notes"
        column = "at"
        older_than = "30 days"
        filter = "kind <> 'legal' -- legal holds are kept"
        "#,
    );
    let report = run(&cfg, "notes", &clock(at(2026, 12, 1, 0, 0, 0))).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(report.rows, Some(1), "{report:?}");
    assert_eq!(cluster.psql("postgres", "SELECT string_agg(id::text, ',' ORDER BY id) FROM notes"), "2,3");
}

/// s27 finding 4: a failed first refresh's note said "refreshed without CONCURRENTLY" next to the
/// error. The note says what the job was doing, not that it was done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_refresh_does_not_claim_it_refreshed() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE d (n int); INSERT INTO d VALUES (0);
         CREATE MATERIALIZED VIEW broken AS SELECT 1 / n AS x FROM d WITH NO DATA;",
    );
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "broken"
        kind = "refresh"
        schedule = "@hourly"
        database = "app"
        view = "broken"
        retries = 0
        "#,
    );
    let report = run(&cfg, "broken", &clock(at(2026, 5, 1, 0, 0, 0))).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(report.error.as_deref().unwrap_or_default().contains("22012"), "{report:?}");
    assert!(!report.notes.iter().any(|n| n.contains("refreshed")), "{:?}", report.notes);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.starts_with("refreshing without CONCURRENTLY") && n.contains("never been populated")),
        "{:?}",
        report.notes
    );
}

/// s27 finding 5: after a failed run pgpilot sent ROLLBACK with no transaction open, and the
/// server logged `WARNING: there is no transaction in progress` for every failed run. A failure
/// inside a job's own transaction is still rolled back (the next run is not stuck in it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_rolls_back_only_an_open_transaction() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE marks (n int)");
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "div"
        kind = "sql"
        schedule = "@hourly"
        database = "app"
        sql = "SELECT 1 / 0"
        retries = 0

        [[jobs]]
        name = "txn"
        kind = "sql"
        schedule = "@hourly"
        database = "app"
        sql = "BEGIN; INSERT INTO marks VALUES (1); SELECT 1 / 0"
        retries = 1
        retry_backoff = 0
        "#,
    );
    let clock = clock(at(2026, 5, 1, 0, 0, 0));
    for name in ["div", "txn", "div"] {
        let report = run(&cfg, name, &clock).await;
        assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
        assert!(report.error.as_deref().unwrap_or_default().contains("22012"), "{report:?}");
    }
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM marks"), "0");
    assert_eq!(
        cluster.psql("postgres", "SELECT count(*) FROM pgpilot.job_runs WHERE outcome = 'failed'"),
        "3"
    );
    let log = std::fs::read_to_string(cluster.log_path()).unwrap_or_default();
    assert!(log.contains("division by zero"), "the server log is read: {log}");
    assert!(!log.contains("there is no transaction in progress"), "{log}");
}
