//! A role without pg_read_all_stats sees `<insufficient privilege>` in place of other roles'
//! statements in pg_stat_statements: those are counted in one note, never analysed as SQL.

mod common;

use pgpilot_advisor::{advise, NoProgress};
use pgpilot_testkit::Cluster;

#[tokio::test(flavor = "multi_thread")]
async fn statements_of_other_roles_are_counted_not_parsed() {
    let cluster = Cluster::builder().setting("shared_preload_libraries = 'pg_stat_statements'").start();
    common::database_with_orders(&cluster, "app");
    cluster.psql(
        "app",
        "CREATE EXTENSION pg_stat_statements;
         CREATE ROLE watcher LOGIN;
         GRANT SELECT ON orders TO watcher;
         SELECT pg_stat_statements_reset();",
    );
    // Three distinct statements run by the superuser, one by the advisor's own role.
    let run_as = |user: &str, sql: &str| {
        cluster.psql("app", &format!("SET ROLE {user}; {sql}"));
    };
    run_as("postgres", "SELECT id FROM orders WHERE user_id = 7 ORDER BY created_at DESC LIMIT 5");
    run_as("postgres", "SELECT count(*) FROM orders WHERE status = 'pending'");
    run_as("postgres", "SELECT max(total) FROM orders WHERE user_id = 3");
    let (own, conn) =
        tokio_postgres::connect(&cluster.url("watcher", "app"), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    own.query("SELECT id FROM orders WHERE user_id = $1", &[&11i32]).await.unwrap();

    let mut opts = common::options(&cluster.url("watcher", "app"));
    opts.workload.pg_stat_statements = true;
    opts.index.install_extensions = false;
    let report = advise(&opts, &NoProgress).await.unwrap();

    assert!(
        report.workload.skipped.iter().all(|s| !s.query.contains("insufficient privilege")),
        "{:#?}",
        report.workload.skipped
    );
    assert!(
        report.workload.skipped.iter().all(|s| !s.reason.contains("does not parse")),
        "{:#?}",
        report.workload.skipped
    );
    let hidden: Vec<&String> = report.notes.iter().filter(|n| n.contains("hidden from this role")).collect();
    assert_eq!(hidden.len(), 1, "{:#?}", report.notes);
    // The superuser's statements: the three above, the reset, SET ROLE.
    let others = cluster.psql(
        "app",
        "SELECT count(*) FROM pg_stat_statements WHERE userid <> 'watcher'::regrole AND toplevel \
           AND dbid = (SELECT oid FROM pg_database WHERE datname = 'app')",
    );
    assert!(others.parse::<i64>().unwrap() >= 3, "{others}");
    assert!(hidden[0].starts_with(&format!("{others} statements of other roles")), "{}", hidden[0]);
    assert!(hidden[0].contains("grant pg_read_all_stats"), "{}", hidden[0]);
}
