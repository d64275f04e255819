//! GET /api/v1/advisor/findings: the advisor runs in the background on the first request (which
//! gets 404 meanwhile), later requests get the cached report without another run, and the report
//! is what crates/advisor finds on a real database (a planted duplicate index).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pgpilot_gateway::config::{DatabaseConfig, ReplicaConfig};
use pgpilot_gateway::insight::{StatementEvent, Target};
use pgpilot_testkit::Cluster;
use serde_json::Value;

async fn get(url: String) -> (u16, Value) {
    let (status, body) = http_get(url.clone()).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}"));
    (status, json)
}

/// The advisor's report once its background run has finished (404 "running" until then).
async fn finished_report(url: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, body) = get(url.to_string()).await;
        if status == 200 {
            return body;
        }
        assert_eq!(body["status"], "running", "the run failed: {body}");
        assert!(started.elapsed() < Duration::from_secs(90), "no report after 90 s: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_are_served_from_a_background_run() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE orders (id int PRIMARY KEY, customer int); \
         CREATE INDEX orders_customer ON orders (customer); \
         CREATE INDEX orders_customer_again ON orders (customer); \
         INSERT INTO orders SELECT g, g % 100 FROM generate_series(1, 1000) g; ANALYZE orders",
    );
    let mut config = config_for(&cluster);
    // The gateway's name for the database differs from the server's: statistics follow the former.
    config
        .databases
        .insert("shop".into(), DatabaseConfig { primary: cluster.admin_url(), ..Default::default() });
    config.advisor.database = Some("shop".into());
    let gw = start(config).await;
    // Statistics as the sessions record them, under the gateway's database name.
    let (database, user) = (Arc::from("shop"), Arc::from("postgres"));
    let query: Arc<str> = Arc::from("SELECT id FROM orders WHERE customer = $1");
    for _ in 0..20 {
        gw.shared().insight.record(&StatementEvent {
            fingerprint: 0x5eed,
            normalized: &query,
            database: &database,
            user: &user,
            duration: Duration::from_millis(2),
            wait: Duration::ZERO,
            rows: 10,
            error: None,
            target: Target::Primary,
            client_addr: "127.0.0.1:40000",
            server: "127.0.0.1:5432",
            parameters: None,
            client_params: None,
        });
    }
    let url = format!("http://{}/api/v1/advisor/findings", gw.http_addr().unwrap());

    let (status, first) = get(url.clone()).await;
    assert_eq!(status, 404, "no report yet: {first}");
    assert_eq!(first["status"], "running", "{first}");

    let report = finished_report(&url).await;
    assert_eq!(report["database"], "postgres", "the server's dbname");
    let sources = report["workload"]["sources"].to_string();
    assert!(sources.contains("pgpilot at http://"), "pgpilot's own statistics are read: {sources}");
    assert!(sources.contains("(1 statements)"), "the statement recorded under `shop` is read: {sources}");
    assert!(report["generated_at_unix"].as_u64().is_some_and(|t| t > 1_600_000_000), "{report}");
    let findings = report["findings"].as_array().expect("findings");
    let duplicate = findings
        .iter()
        .find(|f| f["title"].as_str().is_some_and(|t| t.starts_with("Duplicate index orders_customer")))
        .unwrap_or_else(|| panic!("the planted duplicate index is found: {report:#}"));
    assert_eq!(duplicate["severity"], "warning");
    assert!(duplicate["fix"].as_str().is_some_and(|f| f.contains("DROP INDEX")), "{duplicate}");
    assert!(report["index_suggestions"].is_array(), "the dashboard reads index_suggestions");
    assert_eq!(report["refreshing"], false);
    assert!(!report.to_string().contains("password"), "no secret in the report");

    // Served from the cache: no run per request.
    for _ in 0..3 {
        let (status, again) = get(url.clone()).await;
        assert_eq!(status, 200);
        assert_eq!(again["generated_at_unix"], report["generated_at_unix"]);
    }
    assert_eq!(gw.shared().advisor.runs("shop"), 1, "one run for five requests");

    let (status, unknown) = get(format!("{url}?database=nope")).await;
    assert_eq!(status, 404);
    assert!(unknown["error"].as_str().unwrap().contains("no such database"), "{unknown}");
    gw.shutdown().await;
}

/// With a `*` fallback database beside named ones, the advisor looks at a named one by default,
/// and the fallback, which names no database of its own, is not one it can be asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_database_is_not_the_advisors_default() {
    let cluster = Cluster::start();
    let mut config = config_for(&cluster);
    let fallback = format!("postgres://127.0.0.1:{}/", cluster.port());
    config.databases.insert("*".into(), DatabaseConfig { primary: fallback, ..Default::default() });
    let gw = start(config).await;
    let url = format!("http://{}/api/v1/advisor/findings", gw.http_addr().unwrap());
    let (status, first) = get(url.clone()).await;
    assert_eq!((status, &first["database"], &first["status"]), (404, &"postgres".into(), &"running".into()));
    let (status, star) = get(format!("{url}?database=*")).await;
    assert_eq!(status, 404);
    assert!(star["error"].as_str().unwrap().contains("no such database"), "{star}");
    gw.shutdown().await;
}

/// The gateway's advisor reads the index scans of the database's replicas too, logging in to them
/// as the pools do: an index only reads on a replica use is not reported unused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_scanned_on_a_replica_is_not_reported_unused() {
    let primary = Cluster::start();
    primary.psql(
        "postgres",
        "CREATE TABLE events (id int PRIMARY KEY, kind int);
         INSERT INTO events SELECT g, g % 300 FROM generate_series(1, 150000) g;
         CREATE INDEX events_kind_read_on_replica ON events (kind);
         CREATE INDEX events_id_kind_unused ON events (id, kind);
         ANALYZE events; CHECKPOINT;",
    );
    let replica = primary.start_replica();
    replica.wait_caught_up(&primary);
    replica.psql(
        "postgres",
        "SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT count(*) FROM events WHERE kind = 7",
    );
    replica.wait_for(
        "t",
        "SELECT idx_scan > 0 FROM pg_stat_user_indexes WHERE indexrelname = 'events_kind_read_on_replica'",
        Duration::from_secs(15),
    );
    let mut config = config_for(&primary);
    // The replica's URL names no user: the primary's is taken, as the pools take it.
    let replica_url = format!("postgres://127.0.0.1:{}/postgres", replica.port());
    let replicas = pgpilot_gateway::config::OneOrMany(vec![ReplicaConfig::Url(replica_url)]);
    config.databases.insert(
        "shop".into(),
        DatabaseConfig { primary: primary.admin_url(), replicas, ..Default::default() },
    );
    config.advisor.database = Some("shop".into());
    let gw = start(config).await;
    let url = format!("http://{}/api/v1/advisor/findings", gw.http_addr().unwrap());
    let report = finished_report(&url).await;
    let unused: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["title"].as_str())
        .filter(|t| t.starts_with("Unused index"))
        .collect();
    assert_eq!(unused, ["Unused index public.events_id_kind_unused"], "{report:#}");
    assert!(!report["notes"].to_string().contains("replica could not be read"), "{report:#}");
    gw.shutdown().await;
}
