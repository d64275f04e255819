//! Result cache rules, hints, tags, manual invalidation (HTTP API and admin console), partitions and
//! inheritance, stampedes, and the stats endpoint the demo reads.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::*;
use pgpilot_gateway::config::cache::CacheRule;
use pgpilot_gateway::config::{Config, Secs};
use pgpilot_gateway::Gateway;
use pgpilot_testkit::Cluster;
use tokio_postgres::SimpleQueryMessage;

fn cache_config(cluster: &Cluster) -> Config {
    let mut c = config_for(cluster);
    let db = c.databases.get_mut("postgres").unwrap();
    db.cache.enabled = true;
    db.cache.rules = vec![
        CacheRule { tables: vec!["nocache_me".into()], cache: Some(false), ..Default::default() },
        CacheRule {
            tables: vec!["public.products".into()],
            ttl: Some(Secs::from_millis(700)),
            tags: vec!["catalog".into()],
            ..Default::default()
        },
    ];
    db.routing.health_check_interval = Secs::from_millis(200);
    db.routing.lag_check_interval = Secs::from_millis(200);
    c
}

fn hits(gw: &Gateway) -> u64 {
    gw.shared().cache.stats.hits.load(Relaxed)
}

async fn value(c: &tokio_postgres::Client, sql: &str) -> String {
    let rows = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default()
}

/// A hit, judged by the hit counter around one read.
async fn is_hit(gw: &Gateway, c: &tokio_postgres::Client, sql: &str) -> bool {
    let before = hits(gw);
    value(c, sql).await;
    hits(gw) > before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_hints_tags_and_manual_invalidation() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE products (id int, price int); INSERT INTO products VALUES (1, 10); \
         CREATE TABLE nocache_me (x int); INSERT INTO nocache_me VALUES (1); \
         CREATE TABLE users (id int, name text); INSERT INTO users VALUES (42, 'ann')",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "users").await;
    let c = connect(&gw).await;
    // A rule with cache = false.
    value(&c, "SELECT x FROM nocache_me").await;
    assert!(!is_hit(&gw, &c, "SELECT x FROM nocache_me").await);
    // A rule's TTL (700 ms).
    let p = "SELECT price FROM products WHERE id = 1";
    value(&c, p).await;
    assert!(is_hit(&gw, &c, p).await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!is_hit(&gw, &c, p).await, "the rule's TTL expired the result");
    // The rule's tag, invalidated through the admin console.
    assert!(is_hit(&gw, &c, p).await);
    psql(&gw, "pgpilot", "INVALIDATE CACHE TAG catalog").unwrap();
    assert!(!is_hit(&gw, &c, p).await, "INVALIDATE CACHE TAG dropped it");
    // A hint's TTL and tags; the tag invalidated through the HTTP API.
    let u = "SELECT name FROM users WHERE id = 42 /* pgpilot:cache ttl=60s tags=user:42 */";
    value(&c, u).await;
    assert!(is_hit(&gw, &c, u).await);
    let http = gw.http_addr().unwrap();
    let post = |body: &str| {
        ureq::post(&format!("http://{http}/api/v1/cache/invalidate"))
            .header("content-type", "application/json")
            .send(body)
    };
    let answer =
        post(r#"{"tag": "user:42"}"#).expect("invalidate by tag").into_body().read_to_string().unwrap();
    assert!(answer.contains("invalidated"), "{answer}");
    assert!(!is_hit(&gw, &c, u).await, "the API's tag invalidation dropped it");
    // By table, through the API and the console.
    assert!(is_hit(&gw, &c, u).await);
    post(r#"{"table": "public.users", "database": "postgres"}"#).expect("invalidate by table");
    assert!(!is_hit(&gw, &c, u).await);
    assert!(is_hit(&gw, &c, u).await);
    psql(&gw, "pgpilot", "INVALIDATE CACHE TABLE users").unwrap();
    assert!(!is_hit(&gw, &c, u).await);
    assert!(post(r#"{"table": "x", "tag": "y"}"#).is_err(), "two targets are refused");
    // A /* pgpilot:nocache */ hint.
    let n = "SELECT name FROM users /* pgpilot:nocache */";
    value(&c, n).await;
    assert!(!is_hit(&gw, &c, n).await);
    // SHOW CACHE and the stats endpoint the demo reads.
    let show = psql(&gw, "pgpilot", "SHOW CACHE").unwrap();
    assert!(show.lines().any(|l| l.starts_with("postgres|true|")), "{show}");
    let stats: serde_json::Value = serde_json::from_str(
        &ureq::get(&format!("http://{http}/api/v1/cache/stats"))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stats["enabled"], true);
    assert!(stats["hits"].as_u64().unwrap() >= 5);
    assert!(stats["hit_rate"].as_f64().unwrap() > 0.0);
    assert!(stats["bypasses"]["rule"].as_u64().unwrap() >= 2);
    assert!(stats["bypasses"]["nocache_hint"].as_u64().unwrap() >= 2);
    let metrics =
        ureq::get(&format!("http://{http}/metrics")).call().unwrap().into_body().read_to_string().unwrap();
    assert!(metrics.contains("pgpilot_cache_hits_total "));
    assert!(metrics.contains("pgpilot_cache_bypass_total{reason=\"volatile_function\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_partitions_and_children_invalidate_their_parents() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE events (id int, at date) PARTITION BY RANGE (at); \
         CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01'); \
         CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01'); \
         INSERT INTO events VALUES (1, '2024-05-01'), (2, '2025-05-01'); \
         CREATE TABLE animals (name text); CREATE TABLE dogs () INHERITS (animals); \
         INSERT INTO dogs VALUES ('rex')",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "dogs").await;
    let c = connect(&gw).await;
    let parent = "SELECT count(*) FROM events";
    let sibling = "SELECT count(*) FROM events_2024";
    assert_eq!(value(&c, parent).await, "2");
    assert_eq!(value(&c, sibling).await, "1");
    assert!(is_hit(&gw, &c, parent).await && is_hit(&gw, &c, sibling).await);
    // A write straight into one partition invalidates the parent's reads, not its sibling's.
    c.simple_query("INSERT INTO events_2025 VALUES (3, '2025-06-01')").await.unwrap();
    assert_eq!(value(&c, parent).await, "3");
    assert!(is_hit(&gw, &c, sibling).await, "a sibling partition's result survives");
    // Through the parent: the partitions' results go too.
    c.simple_query("INSERT INTO events VALUES (4, '2024-07-01')").await.unwrap();
    assert_eq!(value(&c, sibling).await, "2");
    // Inheritance: a write to the child invalidates reads of the parent.
    assert_eq!(value(&c, "SELECT count(*) FROM animals").await, "1");
    c.simple_query("INSERT INTO dogs VALUES ('fido')").await.unwrap();
    assert_eq!(value(&c, "SELECT count(*) FROM animals").await, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_wait_for_one_fill() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE slow (x int); INSERT INTO slow VALUES (1)");
    cluster.psql(
        "postgres",
        "CREATE FUNCTION slow_one(int) RETURNS int IMMUTABLE LANGUAGE sql AS 'SELECT $1 FROM pg_sleep(0.3)'",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "slow").await;
    let sql = "SELECT slow_one(x) FROM slow";
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = connect(&gw).await;
        tasks.push(tokio::spawn(async move { value(&client, sql).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "1");
    }
    let stats = &gw.shared().cache.stats;
    assert_eq!(stats.fills.load(Relaxed), 1, "one fill for eight concurrent misses");
    assert!(stats.fill_waits.load(Relaxed) >= 6, "the others waited: {}", stats.fill_waits.load(Relaxed));
    assert!(stats.hits.load(Relaxed) >= 6);
}
