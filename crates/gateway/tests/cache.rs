//! The result cache against a real PostgreSQL: hits answered without a server, the exact bytes of
//! both protocols and both formats, default-deny, invalidation through pgpilot, RLS.

mod common;

use std::sync::atomic::Ordering::Relaxed;

use common::*;
use pgpilot_gateway::config::Config;
use pgpilot_gateway::Gateway;
use pgpilot_testkit::Cluster;
use tokio_postgres::SimpleQueryMessage;

fn cache_config(cluster: &Cluster) -> Config {
    let mut c = config_for(cluster);
    let db = c.databases.get_mut("postgres").unwrap();
    db.cache.enabled = true;
    db.routing.health_check_interval = pgpilot_gateway::config::Secs::from_millis(200);
    db.routing.lag_check_interval = pgpilot_gateway::config::Secs::from_millis(200);
    c
}

fn hits(gw: &Gateway) -> u64 {
    gw.shared().cache.stats.hits.load(Relaxed)
}

async fn first_value(c: &tokio_postgres::Client, sql: &str) -> String {
    let rows = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_protocol_hits_and_invalidation_through_pgpilot() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE items (id int primary key, v int); INSERT INTO items SELECT g, g FROM generate_series(1, 100) g");
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "items").await;
    let c = connect(&gw).await;
    let sql = "SELECT sum(v) FROM items";
    assert_eq!(first_value(&c, sql).await, "5050");
    let before = hits(&gw);
    assert_eq!(first_value(&c, sql).await, "5050");
    assert_eq!(
        hits(&gw),
        before + 1,
        "the second read is a hit: {}",
        pgpilot_gateway::cache::api::stats_json(gw.shared())
    );
    let stats = pgpilot_gateway::cache::api::stats_json(gw.shared());
    let p99 = stats["hit_duration_ms"]["bounded"]["p99"].as_f64().expect("hit time recorded");
    assert!(p99 > 0.0 && p99 <= 100.0, "{}", stats["hit_duration_ms"]);
    assert!(stats["hit_duration_ms"]["strict"]["p99"].is_null(), "{}", stats["hit_duration_ms"]);
    let (_, metrics) = http_get(format!("http://{}/metrics", gw.http_addr().unwrap())).await;
    assert!(
        metrics.contains("pgpilot_cache_hit_duration_seconds_count{consistency=\"bounded\"} 1"),
        "{metrics}"
    );
    c.simple_query("UPDATE items SET v = v + 1 WHERE id = 1").await.unwrap();
    assert_eq!(first_value(&c, sql).await, "5051", "a write through pgpilot invalidates at once");
    // A write in an explicit transaction invalidates at its commit.
    c.simple_query("BEGIN; UPDATE items SET v = v + 1 WHERE id = 2; COMMIT").await.unwrap();
    assert_eq!(first_value(&c, sql).await, "5052");
    // COMMIT AND CHAIN commits while a transaction goes on: other clients see the write at once,
    // and what the chained transaction writes invalidates at its own end.
    let other = connect(&gw).await;
    assert_eq!(first_value(&other, sql).await, "5052");
    c.batch_execute("BEGIN; UPDATE items SET v = v + 1 WHERE id = 3").await.unwrap();
    c.batch_execute("COMMIT AND CHAIN").await.unwrap();
    assert_eq!(first_value(&other, sql).await, "5053", "served from before a COMMIT AND CHAIN");
    c.batch_execute(
        "UPDATE items SET v = v + 1 WHERE id = 4; COMMIT AND CHAIN; UPDATE items SET v = v + 1 WHERE id = 5",
    )
    .await
    .unwrap();
    assert_eq!(first_value(&other, sql).await, "5054");
    assert_eq!(first_value(&other, sql).await, "5054");
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(first_value(&other, sql).await, "5055", "the chained transaction's write was missed");
    // Default-deny: volatile and stable functions are never cached.
    let n1 = first_value(&c, "SELECT random()").await;
    let n2 = first_value(&c, "SELECT random()").await;
    assert_ne!(n1, n2);
    let bypass = gw.shared().cache.stats.bypasses();
    assert!(bypass.iter().any(|(r, n)| *r == "volatile_function" && *n >= 2), "{bypass:?}");
    // SET pgpilot.cache = off bypasses the cache for the session.
    assert_eq!(first_value(&c, "SHOW pgpilot.cache").await, "on");
    c.simple_query("SET pgpilot.cache = off").await.unwrap();
    // Shown as PostgreSQL shows a custom setting after SET (the SET never reached a server).
    assert_eq!(first_value(&c, "SHOW pgpilot.cache").await, "off");
    c.simple_query("SET pgpilot.route = primary").await.unwrap();
    assert_eq!(first_value(&c, "show PGPILOT.ROUTE;").await, "primary");
    // The extended protocol's unnamed statement too (pgJDBC and node-postgres send a SHOW so),
    // here with binary results asked for.
    let shown = c.query_typed("SHOW pgpilot.route", &[]).await.expect("SHOW over the extended protocol");
    assert_eq!(shown[0].columns()[0].name(), "pgpilot.route");
    assert_eq!(shown[0].get::<_, String>(0), "primary");
    let shown = c.query_typed("/* app */ show pgpilot.cache", &[]).await.unwrap();
    assert_eq!(shown[0].get::<_, String>(0), "off");
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SELECT 1/0").await.unwrap_err();
    let refused = c.query_typed("SHOW pgpilot.route", &[]).await.unwrap_err();
    assert_eq!(refused.code(), Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION));
    c.batch_execute("ROLLBACK").await.unwrap();
    c.simple_query("RESET pgpilot.route").await.unwrap();
    assert_eq!(first_value(&c, "SHOW pgpilot.route").await, "auto");
    let h = hits(&gw);
    assert_eq!(first_value(&c, sql).await, "5055");
    assert_eq!(hits(&gw), h);
    c.simple_query("SET pgpilot.cache = on").await.unwrap();
    assert_eq!(first_value(&c, sql).await, "5055");
    assert_eq!(hits(&gw), h + 1, "{}", pgpilot_gateway::cache::api::stats_json(gw.shared()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_binary_params_and_results() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE blobs (id int primary key, b bytea, f float8, t text); \
         INSERT INTO blobs SELECT g, decode(lpad(to_hex(g), 8, '0'), 'hex'), g / 3.0, 'row ' || g FROM generate_series(1, 50) g",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "blobs").await;
    let mut c = connect(&gw).await;
    // tokio-postgres: named statements, binary parameters and binary results.
    let stmt =
        c.prepare("SELECT id, b, f, t FROM blobs WHERE id > $1 AND t <> $2 ORDER BY id").await.unwrap();
    let read = |min: i32| {
        let c = &c;
        let stmt = stmt.clone();
        async move {
            let rows = c.query(&stmt, &[&min, &"none"]).await.unwrap();
            rows.iter()
                .map(|r| {
                    (r.get::<_, i32>(0), r.get::<_, Vec<u8>>(1), r.get::<_, f64>(2), r.get::<_, String>(3))
                })
                .collect::<Vec<_>>()
        }
    };
    let first = read(10).await;
    assert_eq!(first.len(), 40);
    let h = hits(&gw);
    assert_eq!(read(10).await, first, "a hit returns the same rows");
    assert_eq!(hits(&gw), h + 1);
    // Another parameter value is another result.
    let other = read(45).await;
    assert_eq!(other.len(), 5);
    assert_eq!(other[0].0, 46);
    // An unnamed statement (query_raw with a fresh Parse each time) hits too, and a write through
    // the extended protocol invalidates.
    let h = hits(&gw);
    let n: i64 = c.query_one("SELECT count(*) FROM blobs WHERE id > $1", &[&0i32]).await.unwrap().get(0);
    let m: i64 = c.query_one("SELECT count(*) FROM blobs WHERE id > $1", &[&0i32]).await.unwrap().get(0);
    assert_eq!((n, m), (50, 50));
    assert!(hits(&gw) > h, "the repeated unnamed read was a hit");
    c.execute("DELETE FROM blobs WHERE id = $1", &[&50i32]).await.unwrap();
    let after: i64 = c.query_one("SELECT count(*) FROM blobs WHERE id > $1", &[&0i32]).await.unwrap().get(0);
    assert_eq!(after, 49);
    assert_eq!(read(45).await.len(), 4);
    // A row limit (a portal fetched in pieces) is never served from the cache.
    let bypass_before = bypass_count(&gw, "partial_fetch");
    let tx = c.transaction().await.unwrap();
    let portal = tx.bind(&stmt, &[&0i32, &"none"]).await.unwrap();
    let part = tx.query_portal(&portal, 10).await.unwrap();
    assert_eq!(part.len(), 10);
    tx.commit().await.unwrap();
    assert!(bypass_count(&gw, "partial_fetch") >= bypass_before);
}

fn bypass_count(gw: &Gateway, reason: &str) -> u64 {
    gw.shared().cache.stats.bypasses().iter().find(|(r, _)| *r == reason).map(|(_, n)| *n).unwrap_or(0)
}

/// A hit needs no server at all: answered while PostgreSQL is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_are_answered_without_a_server() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE cfg (k text primary key, v text); INSERT INTO cfg VALUES ('a', 'one')",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "cfg").await;
    let c = connect(&gw).await;
    let sql = "SELECT v FROM cfg WHERE k = 'a'";
    assert_eq!(first_value(&c, sql).await, "one");
    let stmt = c.prepare("SELECT v FROM cfg WHERE k = $1").await.unwrap();
    let v: String = c.query_one(&stmt, &[&"a"]).await.unwrap().get(0);
    assert_eq!(v, "one");
    cluster.stop();
    assert_eq!(first_value(&c, sql).await, "one", "simple protocol hit with the server down");
    let v: String = c.query_one(&stmt, &[&"a"]).await.unwrap().get(0);
    assert_eq!(v, "one", "extended protocol hit with the server down");
}

/// Two roles on a table with row level security never see each other's rows (RLS tables are
/// never cached, and the role is part of every key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_is_never_shared() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE ROLE alice; CREATE ROLE bob; \
         CREATE TABLE docs (owner text, body text); \
         INSERT INTO docs VALUES ('alice', 'a1'), ('alice', 'a2'), ('bob', 'b1'); \
         ALTER TABLE docs ENABLE ROW LEVEL SECURITY; \
         CREATE POLICY mine ON docs USING (owner = current_user); \
         GRANT SELECT ON docs TO alice, bob",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "docs").await;
    let a = connect(&gw).await;
    let b = connect(&gw).await;
    a.simple_query("SET ROLE alice").await.unwrap();
    b.simple_query("SET ROLE bob").await.unwrap();
    for _ in 0..5 {
        assert_eq!(rows(&a).await, ["a1", "a2"]);
        assert_eq!(rows(&b).await, ["b1"]);
        let stmt = "SELECT body FROM docs WHERE body > $1 ORDER BY body";
        let ra: Vec<String> = a.query(stmt, &[&""]).await.unwrap().iter().map(|r| r.get(0)).collect();
        let rb: Vec<String> = b.query(stmt, &[&""]).await.unwrap().iter().map(|r| r.get(0)).collect();
        assert_eq!((ra, rb), (vec!["a1".to_string(), "a2".into()], vec!["b1".to_string()]));
    }
    assert!(bypass_count(&gw, "row_level_security") >= 20);
    // A table without RLS read under two roles: each role has its own entries.
    // DDL through pgpilot has the catalog read again at once.
    let admin = connect(&gw).await;
    admin
        .batch_execute("CREATE TABLE pub (x int); INSERT INTO pub VALUES (1); GRANT SELECT ON pub TO alice")
        .await
        .unwrap();
    wait_cache_catalog(&gw, "pub").await;
    assert_eq!(first_value(&a, "SELECT count(*) FROM pub").await, "1");
    assert!(b.simple_query("SELECT count(*) FROM pub").await.is_err(), "bob may not read pub, cached or not");
}

async fn rows(c: &tokio_postgres::Client) -> Vec<String> {
    let msgs = c.simple_query("SELECT body FROM docs ORDER BY body").await.unwrap();
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect()
}

/// `in_transactions = "read_only"`: reads inside `BEGIN READ ONLY` are answered and filled from the
/// cache, with the transaction's status; other transactions, and a read-only one after anything but
/// a read, always reach the server. With the default (`never`) no read inside a transaction hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_in_read_only_transactions_use_the_cache_when_allowed() {
    use pgpilot_gateway::config::cache::InTransactions;
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE items (id int primary key, v int); INSERT INTO items SELECT g, g FROM generate_series(1, 100) g");
    let mut config = cache_config(&cluster);
    config.databases.get_mut("postgres").unwrap().cache.in_transactions = InTransactions::ReadOnly;
    let gw = start(config).await;
    wait_cache_catalog(&gw, "items").await;
    let c = connect(&gw).await;
    let sql = "SELECT sum(v) FROM items";
    // Filled inside a read-only transaction, then hit inside another, and outside.
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert_eq!(first_value(&c, sql).await, "5050");
    let h = hits(&gw);
    assert_eq!(first_value(&c, sql).await, "5050");
    assert_eq!(
        hits(&gw),
        h + 1,
        "hit inside the read-only transaction: {}",
        pgpilot_gateway::cache::api::stats_json(gw.shared())
    );
    // The transaction is still the server's: its status and its snapshot-free reads carry on.
    assert_eq!(first_value(&c, "SELECT current_setting('transaction_read_only')").await, "on");
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(first_value(&c, sql).await, "5050");
    assert_eq!(hits(&gw), h + 2, "the result filled in the transaction serves outside it");
    // The extended protocol too, and a write elsewhere still invalidates.
    c.batch_execute("START TRANSACTION READ ONLY").await.unwrap();
    let stmt = c.prepare("SELECT v FROM items WHERE id = $1").await.unwrap();
    assert_eq!(c.query_one(&stmt, &[&5i32]).await.unwrap().get::<_, i32>(0), 5);
    let h = hits(&gw);
    assert_eq!(c.query_one(&stmt, &[&5i32]).await.unwrap().get::<_, i32>(0), 5);
    assert_eq!(hits(&gw), h + 1, "extended-protocol hit inside the read-only transaction");
    let other = connect(&gw).await;
    other.batch_execute("UPDATE items SET v = 50 WHERE id = 5").await.unwrap();
    assert_eq!(
        c.query_one(&stmt, &[&5i32]).await.unwrap().get::<_, i32>(0),
        50,
        "read committed sees the commit"
    );
    c.batch_execute("COMMIT").await.unwrap();
    // Read-write and repeatable-read transactions never hit; nor a read-only one after a SET LOCAL.
    for begin in [
        "BEGIN",
        "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ",
        "BEGIN READ ONLY; SET LOCAL work_mem = '8MB'",
    ] {
        c.batch_execute(begin).await.unwrap();
        let h = hits(&gw);
        assert_eq!(first_value(&c, sql).await, "5095");
        assert_eq!(first_value(&c, sql).await, "5095");
        assert_eq!(hits(&gw), h, "a hit inside {begin:?}");
        c.batch_execute("COMMIT").await.unwrap();
    }
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    c.batch_execute("SET LOCAL work_mem = '8MB'").await.unwrap();
    let h = hits(&gw);
    assert_eq!(first_value(&c, sql).await, "5095");
    assert_eq!(hits(&gw), h, "a hit after a SET LOCAL");
    c.batch_execute("COMMIT").await.unwrap();
    // An error inside the transaction is the server's to report.
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert!(c.batch_execute("SELECT 1/0").await.is_err());
    let err = c.simple_query(sql).await.expect_err("the aborted transaction refuses reads");
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION));
    c.batch_execute("ROLLBACK").await.unwrap();
    gw.shutdown().await;
}

/// Two entries of the config for one PostgreSQL database (an alias, as pgbouncer.ini setups often
/// have): a write through one invalidates what the other cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_an_alias_invalidates_the_other_entrys_results() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE items (id int)");
    let mut config = cache_config(&cluster);
    let alias = config.databases["postgres"].clone();
    config.databases.insert("alias".into(), alias);
    let gw = start(config).await;
    wait_cache_catalog(&gw, "items").await;
    let reader = connect(&gw).await;
    let writer = connect_as(&gw, "postgres", "alias").await;
    let sql = "SELECT count(*) FROM items";
    assert_eq!(first_value(&reader, sql).await, "0");
    let before = hits(&gw);
    assert_eq!(first_value(&reader, sql).await, "0");
    assert_eq!(hits(&gw), before + 1, "the read was cached");
    writer.batch_execute("INSERT INTO items VALUES (1)").await.unwrap();
    assert_eq!(first_value(&reader, sql).await, "1", "served from before a write through the alias");
}

/// TRUNCATE empties its tables and nothing else: what reads them goes, what reads other tables
/// stays cached, and the catalog is not read again (ETL jobs truncate staging tables all day).
/// With CASCADE, tables that reference it are emptied too: everything goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_invalidates_its_tables_only() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE staging (id int); INSERT INTO staging VALUES (1); \
         CREATE TABLE items (id int primary key); INSERT INTO items VALUES (1); \
         CREATE TABLE refs (item int REFERENCES items); INSERT INTO refs VALUES (1)",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "refs").await;
    let c = connect(&gw).await;
    let (staging, items, refs) =
        ("SELECT count(*) FROM staging", "SELECT count(*) FROM items", "SELECT count(*) FROM refs");
    for sql in [staging, items, refs] {
        assert_eq!(first_value(&c, sql).await, "1", "{sql}");
    }
    let loading = bypass_count(&gw, "catalog_loading");
    c.batch_execute("TRUNCATE staging").await.unwrap();
    let before = hits(&gw);
    assert_eq!(first_value(&c, items).await, "1");
    assert_eq!(hits(&gw), before + 1, "a read of another table stays cached");
    assert_eq!(first_value(&c, staging).await, "0", "served from before the TRUNCATE");
    assert_eq!(bypass_count(&gw, "catalog_loading"), loading, "the catalog was read again");
    c.batch_execute(
        "BEGIN; INSERT INTO staging VALUES (2); TRUNCATE staging; INSERT INTO staging VALUES (3); COMMIT",
    )
    .await
    .unwrap();
    assert_eq!(first_value(&c, staging).await, "1");
    c.batch_execute("TRUNCATE items CASCADE").await.unwrap();
    assert_eq!(first_value(&c, refs).await, "0", "the table emptied by CASCADE was served from before");
    gw.shutdown().await;
}

/// Reads a session makes on the server it keeps (pinned by a temporary table, or after SET
/// SESSION AUTHORIZATION) are not cached, and are counted under their reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_sessions_that_keep_their_server_are_counted_as_bypassed() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE items (id int); INSERT INTO items VALUES (7); CREATE ROLE alice; GRANT SELECT ON items TO alice",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "items").await;
    let sql = "SELECT id FROM items";

    let pinned = connect(&gw).await;
    pinned.batch_execute("CREATE TEMP TABLE scratch (x int)").await.unwrap();
    let before = bypass_count(&gw, "pinned_session");
    for _ in 0..3 {
        assert_eq!(first_value(&pinned, sql).await, "7");
    }
    assert_eq!(bypass_count(&gw, "pinned_session"), before + 3);
    // Any SELECT counts, not only those without a function call.
    assert_eq!(first_value(&pinned, "SELECT count(*) FROM items").await, "1");
    assert_eq!(bypass_count(&gw, "pinned_session"), before + 4);

    let other = connect(&gw).await;
    other.batch_execute("SET SESSION AUTHORIZATION alice").await.unwrap();
    let before = bypass_count(&gw, "session_authorization");
    for _ in 0..3 {
        assert_eq!(first_value(&other, sql).await, "7");
    }
    assert_eq!(bypass_count(&gw, "session_authorization"), before + 3);
    assert_eq!(hits(&gw), 0, "{}", pgpilot_gateway::cache::api::stats_json(gw.shared()));
}

/// `"$user"` in the search_path names the role a SET ROLE took, not the login user: a read of an
/// unqualified name is cached as the server resolves it, and a write to that table invalidates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dollar_user_in_the_search_path_is_the_role_set() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE ROLE alice; CREATE SCHEMA alice AUTHORIZATION alice; \
         CREATE TABLE public.us (v text); INSERT INTO public.us VALUES ('p0'); \
         CREATE TABLE alice.us (v text); INSERT INTO alice.us VALUES ('a0'); \
         GRANT SELECT ON public.us TO PUBLIC; GRANT ALL ON alice.us TO alice",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "us").await;
    let reader = connect(&gw).await;
    let writer = connect(&gw).await;
    reader.simple_query("SET ROLE alice").await.unwrap();
    let before = hits(&gw);
    assert_eq!(first_value(&reader, "SELECT v FROM us").await, "a0");
    assert_eq!(first_value(&reader, "SELECT v FROM us").await, "a0");
    assert_eq!(hits(&gw), before + 1, "the second read is a hit");
    writer.simple_query("UPDATE alice.us SET v = 'a1'").await.unwrap();
    assert_eq!(first_value(&reader, "SELECT v FROM us").await, "a1", "a read of alice.us outlived its write");
    // The role's own write through an unqualified name invalidates the same entry.
    reader.simple_query("UPDATE us SET v = 'a2'").await.unwrap();
    assert_eq!(first_value(&writer, "SELECT v FROM alice.us").await, "a2");
    assert_eq!(first_value(&reader, "SELECT v FROM us").await, "a2");
    reader.simple_query("RESET ROLE").await.unwrap();
    assert_eq!(first_value(&reader, "SELECT v FROM us").await, "p0");
}
