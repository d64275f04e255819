//! Run as a role with only pg_monitor, the advisor cannot see everything: a sequence's last value,
//! the tables EXPLAIN must read, column statistics. What it could not check is said in the
//! report's notes (text, JSON, HTML), never silently left out.

mod common;

use pgpilot_advisor::{advise, Category, NoProgress, Report};
use pgpilot_testkit::Cluster;

const SCHEMA: &str = "
CREATE TABLE tick (id serial PRIMARY KEY, v int);
SELECT setval('tick_id_seq', 2000000000);
CREATE TABLE items (id int PRIMARY KEY, sku text, qty int);
INSERT INTO items SELECT g, 'sku' || g, g % 10 FROM generate_series(1, 300000) g;
DELETE FROM items WHERE id % 2 = 0;
ANALYZE items;
CREATE ROLE mon LOGIN IN ROLE pg_monitor;
";

async fn advise_as(cluster: &Cluster, user: &str) -> Report {
    use std::io::Write;
    let mut workload = tempfile::NamedTempFile::new().unwrap();
    workload.write_all(b"-- calls: 500\nSELECT * FROM items WHERE sku = 'sku77';\n").unwrap();
    let mut opts = common::options(&cluster.url(user, "app"));
    opts.index.install_extensions = false;
    opts.workload.file = Some(workload.path().to_path_buf());
    advise(&opts, &NoProgress).await.unwrap()
}

fn notes_about<'a>(report: &'a Report, words: &str) -> Vec<&'a String> {
    report.notes.iter().filter(|n| n.contains(words)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn what_pg_monitor_cannot_see_is_noted() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE app");
    cluster.psql("app", SCHEMA);

    let superuser = advise_as(&cluster, "postgres").await;
    assert!(
        superuser
            .findings
            .iter()
            .any(|f| f.category == Category::Sequences && f.title.contains("tick_id_seq")),
        "{}",
        superuser.render_text(false)
    );
    assert_eq!(superuser.workload.analysed, 1, "{:?}", superuser.workload.skipped);
    for words in ["could not be checked for overflow", "pg_stats hides", "EXPLAIN needs SELECT"] {
        assert!(notes_about(&superuser, words).is_empty(), "{words}: {:#?}", superuser.notes);
    }

    let monitor = advise_as(&cluster, "mon").await;
    // pg_sequences shows pg_monitor a NULL last value: the critical finding cannot be made ...
    assert!(!monitor.findings.iter().any(|f| f.category == Category::Sequences), "{:#?}", monitor.findings);
    // ... and the report says so, with the privilege that would allow it.
    let sequences = notes_about(&monitor, "could not be checked for overflow");
    assert_eq!(sequences.len(), 1, "{:#?}", monitor.notes);
    assert!(sequences[0].starts_with("1 sequence(s)"), "{}", sequences[0]);
    assert!(
        sequences[0].contains("public.tick_id_seq") && sequences[0].contains("grant SELECT"),
        "{}",
        sequences[0]
    );
    // EXPLAIN needs SELECT on the table: the statement is skipped, and the note says why.
    assert_eq!(monitor.workload.analysed, 0);
    let explain = notes_about(&monitor, "EXPLAIN needs SELECT");
    assert_eq!(explain.len(), 1, "{:#?}", monitor.notes);
    assert!(explain[0].starts_with("1 statement(s) were skipped"), "{}", explain[0]);
    assert!(explain[0].contains("public.items (1 statement(s))"), "{}", explain[0]);
    // pg_stats shows a role only the columns it may read: no bloat estimate for items.
    let stats = notes_about(&monitor, "pg_stats hides");
    assert_eq!(stats.len(), 1, "{:#?}", monitor.notes);
    assert!(stats[0].contains("1 table(s)") && stats[0].contains("public.items"), "{}", stats[0]);

    // Every rendering carries the notes.
    let text = monitor.render_text(false);
    let html = monitor.render_html();
    let json = serde_json::to_string(&monitor).unwrap();
    for words in ["could not be checked for overflow", "EXPLAIN needs SELECT", "pg_stats hides"] {
        assert!(text.contains(words), "text lacks {words}:\n{text}");
        assert!(html.contains(words), "HTML lacks {words}");
        assert!(json.contains(words), "JSON lacks {words}");
    }
}

/// Run as a plain role, the advisor sees other roles' sessions in pg_stat_activity without their
/// state, query or times: a blocked query's wait and its blockers are shown as unknown (never as
/// "blocked for 0s"), and a note says what is hidden and which grant shows it.
#[tokio::test(flavor = "multi_thread")]
async fn what_pg_stat_activity_hides_from_a_plain_role_is_unknown_not_made_up() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE app");
    cluster.psql(
        "app",
        "CREATE TABLE counters (id int PRIMARY KEY, v int); INSERT INTO counters VALUES (1, 0);
         CREATE ROLE plain LOGIN;",
    );
    let url = cluster.url("postgres", "app");
    let (holder, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    holder.batch_execute("BEGIN; UPDATE counters SET v = v + 1 WHERE id = 1").await.unwrap();
    let (waiter, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let blocked =
        tokio::spawn(async move { waiter.batch_execute("UPDATE counters SET v = v + 1 WHERE id = 1").await });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let advise_as = |user: &str| {
        let mut opts = common::options(&cluster.url(user, "app"));
        opts.skip_indexes = true;
        opts.index.install_extensions = false;
        opts.health.idle_in_transaction_secs = 0;
        async move { advise(&opts, &NoProgress).await.unwrap() }
    };
    let superuser = advise_as("postgres").await;
    let text = superuser.render_text(false);
    let lock =
        superuser.findings.iter().find(|f| f.category == Category::Locks).unwrap_or_else(|| panic!("{text}"));
    assert!(lock.title.contains(" blocked for "), "{text}");
    assert!(superuser.findings.iter().any(|f| f.title.contains("idle in transaction")), "{text}");
    assert!(notes_about(&superuser, "pg_stat_activity hides").is_empty(), "{:#?}", superuser.notes);

    let plain = advise_as("plain").await;
    let text = plain.render_text(false);
    let lock =
        plain.findings.iter().find(|f| f.category == Category::Locks).unwrap_or_else(|| panic!("{text}"));
    assert!(
        lock.title.starts_with("Query (pid ") && !lock.title.contains(" for "),
        "no made-up wait: {text}"
    );
    for made_up in ["(:)", "(?,", "<insufficient privilege>"] {
        assert!(!lock.evidence.iter().any(|e| e.contains(made_up)), "{made_up}: {lock:#?}");
    }
    assert!(lock.evidence.iter().any(|e| e.contains("unknown (needs pg_read_all_stats)")), "{lock:#?}");
    let hidden = notes_about(&plain, "pg_stat_activity hides");
    assert_eq!(hidden.len(), 1, "{:#?}", plain.notes);
    assert!(hidden[0].contains("grant pg_monitor"), "{}", hidden[0]);

    holder.batch_execute("ROLLBACK").await.unwrap();
    blocked.await.unwrap().unwrap();
}

/// The application's tables in its own schema, named unqualified through its search_path: a role
/// without USAGE on the schema is told which GRANT it needs, and one whose search_path does not
/// reach the schema is told that, never that a statement "reads no user table".
#[tokio::test(flavor = "multi_thread")]
async fn statements_the_advisors_schema_access_leaves_out_are_explained() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE shopdb");
    cluster.psql(
        "shopdb",
        "CREATE SCHEMA shop;
         CREATE TABLE shop.orders (id int PRIMARY KEY, customer int, total int);
         INSERT INTO shop.orders SELECT g, g % 1000, g % 77 FROM generate_series(1, 50000) g;
         ANALYZE shop.orders;
         CREATE ROLE mon LOGIN IN ROLE pg_monitor;",
    );
    let workload = "-- calls: 500\nSELECT * FROM orders WHERE customer = 7;\n\
                    -- calls: 100\nUPDATE orders SET total = 0 WHERE customer = 8;\n\
                    -- calls: 50\nSELECT * FROM shop.orders WHERE total = 3;\n";
    let run = |user: &'static str| {
        let url = cluster.url(user, "shopdb");
        async move { common::advise_workload(&url, workload).await }
    };

    let monitor = run("mon").await;
    assert_eq!(monitor.workload.analysed, 0);
    let usage = notes_about(&monitor, "no USAGE on schema shop (3 statement(s))");
    assert_eq!(usage.len(), 1, "{:#?}", monitor.notes);
    assert!(usage[0].contains("GRANT USAGE ON SCHEMA shop TO mon;"), "{}", usage[0]);

    let owner = run("postgres").await;
    let update = owner.workload.skipped.iter().find(|s| s.query.starts_with("UPDATE")).expect("skipped");
    assert!(
        update.reason.contains("table orders is not on the advisor's search_path (it is in schema shop)"),
        "{update:?}"
    );
    let path = notes_about(&owner, "search_path");
    assert_eq!(path.len(), 1, "{:#?}", owner.notes);
    assert!(path[0].contains("ALTER ROLE postgres SET search_path = shop, public"), "{}", path[0]);
    assert_eq!(owner.workload.analysed, 1, "the qualified statement: {:#?}", owner.workload.skipped);
}
