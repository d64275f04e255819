//! The result cache against a real PostgreSQL: hits answered without a server, the exact bytes of
//! both protocols and both formats, default-deny, invalidation through pgpilot, RLS.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

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

/// Waits until the relation catalog the cache judges reads with knows `table`.
async fn wait_catalog(gw: &Gateway, table: &str) {
    let db = gw.shared().database("postgres").unwrap();
    let ok = eventually(Duration::from_secs(20), || {
        let cache = &db.cache;
        !cache.catalog_stale.load(Relaxed)
            && cache.relations.load().relations().iter().any(|r| r.name == table)
            && !db.functions.load().is_empty()
    })
    .await;
    assert!(ok, "the relation catalog never listed {table}");
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
    wait_catalog(&gw, "items").await;
    let c = connect(&gw).await;
    let sql = "SELECT sum(v) FROM items";
    assert_eq!(first_value(&c, sql).await, "5050");
    let before = hits(&gw);
    assert_eq!(first_value(&c, sql).await, "5050");
    assert_eq!(hits(&gw), before + 1, "the second read is a hit");
    c.simple_query("UPDATE items SET v = v + 1 WHERE id = 1").await.unwrap();
    assert_eq!(first_value(&c, sql).await, "5051", "a write through pgpilot invalidates at once");
    // A write in an explicit transaction invalidates at its commit.
    c.simple_query("BEGIN; UPDATE items SET v = v + 1 WHERE id = 2; COMMIT").await.unwrap();
    assert_eq!(first_value(&c, sql).await, "5052");
    // Default-deny: volatile and stable functions are never cached.
    let n1 = first_value(&c, "SELECT random()").await;
    let n2 = first_value(&c, "SELECT random()").await;
    assert_ne!(n1, n2);
    let bypass = gw.shared().cache.stats.bypasses();
    assert!(bypass.iter().any(|(r, n)| *r == "volatile_function" && *n >= 2), "{bypass:?}");
    // SET pgpilot.cache = off bypasses the cache for the session.
    c.simple_query("SET pgpilot.cache = off").await.unwrap();
    let h = hits(&gw);
    assert_eq!(first_value(&c, sql).await, "5052");
    assert_eq!(hits(&gw), h);
    c.simple_query("SET pgpilot.cache = on").await.unwrap();
    assert_eq!(first_value(&c, sql).await, "5052");
    assert_eq!(hits(&gw), h + 1);
}
