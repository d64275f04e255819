//! Retention next to other sessions' row locks, and on a column without an index.

mod common;

use common::{at, client, clock, config, run};
use pgpilot_scheduler::Outcome;
use pgpilot_testkit::Cluster;

const JOBS: &str = r#"
[[jobs]]
name = "audit"
kind = "retention"
schedule = "@daily"
database = "app"
table = "audit"
column = "created_at"
older_than = "30 days"
batch_size = 1000
pause = "1ms"
lock_timeout = "300ms"
retries = 0

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
lock_timeout = "300ms"
retries = 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_locked_by_others_are_skipped_and_the_rest_deleted() {
    let cluster = Cluster::start();
    // 5,000 old rows in each table (one with a primary key, one found by ctid), 10 recent ones.
    cluster.psql(
        "postgres",
        "CREATE TABLE audit (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL);
         INSERT INTO audit (created_at)
              SELECT '2025-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 5000) g;
         INSERT INTO audit (created_at) SELECT '2026-05-31'::timestamptz FROM generate_series(1, 10);
         CREATE INDEX audit_created_at ON audit (created_at);
         CREATE TABLE log_nopk (at timestamptz NOT NULL, line text);
         INSERT INTO log_nopk SELECT '2025-01-01'::timestamptz + g * interval '1 minute', g::text
           FROM generate_series(1, 5000) g;",
    );
    let cfg = config(&cluster, JOBS);
    let now = clock(at(2026, 6, 1, 0, 0, 0));

    // Another session holds the oldest rows of both tables, the way a long SELECT ... FOR UPDATE does.
    let holder = client(&cluster).await;
    holder
        .batch_execute(
            "BEGIN;
             SELECT * FROM audit WHERE id <= 3 FOR UPDATE;
             SELECT * FROM log_nopk WHERE line IN ('1', '2') FOR UPDATE;",
        )
        .await
        .unwrap();

    let report = run(&cfg, "audit", &now).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(report.rows, Some(4997), "{report:?}");
    assert!(
        report.notes.iter().any(|n| n.contains("3 rows") && n.contains("locked")),
        "the skipped rows are reported: {:?}",
        report.notes
    );
    assert!(!report.notes.iter().any(|n| n.contains("no index")), "{:?}", report.notes);

    let report = run(&cfg, "log", &now).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(report.rows, Some(4998), "{report:?}");
    assert!(report.notes.iter().any(|n| n.contains("2 rows") && n.contains("locked")), "{:?}", report.notes);
    assert!(
        report.notes.iter().any(|n| n.contains("no index") && n.contains("\"at\"")),
        "a retention column without an index is pointed out: {:?}",
        report.notes
    );

    // Only locked rows are left: the next run selects nothing deletable and ends normally.
    let report = run(&cfg, "audit", &now).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(report.rows, Some(0), "{report:?}");
    assert!(report.notes.iter().any(|n| n.contains("3 rows") && n.contains("locked")), "{:?}", report.notes);

    // Once the other session lets go, the rows it held go too.
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(run(&cfg, "audit", &now).await.rows, Some(3));
    assert_eq!(run(&cfg, "log", &now).await.rows, Some(2));
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM audit"), "10");
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM log_nopk"), "0");
}
