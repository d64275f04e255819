//! Workload sources: pg_stat_statements (parameterized statements, planned generically) and the
//! gateway's HTTP statistics with a bearer token, served by a small local HTTP server.

mod common;

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use pgpilot_advisor::report::Evidence;
use pgpilot_advisor::{advise, NoProgress};
use pgpilot_testkit::Cluster;

#[tokio::test(flavor = "multi_thread")]
async fn pg_stat_statements_workload_is_advised_with_generic_plans() {
    let cluster = Cluster::builder().setting("shared_preload_libraries = 'pg_stat_statements'").start();
    let url = common::database_with_orders(&cluster, "app");
    cluster.psql("app", "CREATE EXTENSION pg_stat_statements");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    for user in 0..50i32 {
        client.query(common::RECENT_ORDERS, &[&user]).await.unwrap();
    }
    let mut opts = common::options(&url);
    opts.workload.pg_stat_statements = true;
    let report = advise(&opts, &NoProgress).await.unwrap();
    assert!(
        report.workload.sources.iter().any(|s| s.starts_with("pg_stat_statements")),
        "{:?}",
        report.workload
    );
    let s = report
        .index_suggestions
        .iter()
        .find(|s| s.create_statement.contains("(user_id, created_at DESC)"))
        .unwrap_or_else(|| panic!("{}\n{:#?}", report.render_text(false), report.workload));
    assert_eq!(s.evidence, Evidence::Hypothetical);
    assert_eq!(s.statements[0].calls, 50);
    assert!(s.statements[0].query.contains("$1"));
    let pool = report.pool.expect("latency is known from pg_stat_statements");
    assert!(pool.per_instance >= 1 && pool.mean_latency_ms > 0.0, "{pool:?}");
}

async fn statements(headers: HeaderMap) -> Result<String, StatusCode> {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer s3cret") {
        return Err(StatusCode::UNAUTHORIZED);
    }
    Ok(serde_json::json!({"statements": [
        {"fingerprint": "a1", "query": common::RECENT_ORDERS, "database": "gw", "user": "app", "calls": 1234,
         "errors": 0, "rows": 24680, "total_time_ms": 2468.0, "mean_time_ms": 2.0, "max_time_ms": 9.0,
         "p50_ms": 1.8, "p95_ms": 3.0, "p99_ms": 8.0, "wait_time_ms": 0.0, "primary_calls": 1000,
         "replica_calls": 234, "cache_hits": 0},
        {"fingerprint": "b2", "query": "SELECT * FROM elsewhere WHERE x = $1", "database": "other", "user": "app",
         "calls": 5, "errors": 0, "rows": 5, "total_time_ms": 1.0, "mean_time_ms": 0.2, "max_time_ms": 0.3,
         "p50_ms": 0.2, "p95_ms": 0.3, "p99_ms": 0.3, "wait_time_ms": 0.0, "primary_calls": 5,
         "replica_calls": 0, "cache_hits": 0}
    ]})
    .to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn pgpilot_statistics_over_http_with_a_token() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/api/v1/monitoring/statements", get(statements));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let cluster = Cluster::start();
    let url = common::database_with_orders(&cluster, "gw");
    let mut opts = common::options(&url);
    opts.workload.pgpilot_url = Some(format!("http://{addr}"));

    opts.workload.pgpilot_token = Some("wrong".into());
    let refused = advise(&opts, &NoProgress).await.unwrap();
    assert!(
        refused.notes.iter().any(|n| n.contains("pgpilot statistics could not be read")),
        "{:?}",
        refused.notes
    );

    opts.workload.pgpilot_token = Some("s3cret".into());
    let report = advise(&opts, &NoProgress).await.unwrap();
    assert_eq!(
        report.workload.statements, 1,
        "the other database's statement is not ours: {:?}",
        report.workload
    );
    let s = &report.index_suggestions[0];
    assert!(s.create_statement.contains("(user_id, created_at DESC)"), "{}", report.render_text(false));
    assert_eq!(s.statements[0].calls, 1234);
    let pool = report.pool.expect("the gateway measured latency");
    assert_eq!(pool.mean_latency_ms, 2.0);
    assert_eq!(pool.target_tps, 500.0);
}
