//! Workload sources: pg_stat_statements (parameterized statements, planned generically) and the
//! gateway's HTTP statistics with a bearer token, served by a small local HTTP server.

mod common;

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use pgpilot_advisor::report::Evidence;
use pgpilot_advisor::{advise, AdviseOptions, NoProgress, WorkloadSources};
use pgpilot_testkit::Cluster;

#[tokio::test(flavor = "multi_thread")]
async fn pg_stat_statements_workload_is_advised_with_generic_plans() {
    let (_cluster, url) = orders_with_pg_stat_statements("app");
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
    assert!(pool.per_instance >= 1 && pool.mean_latency_ms.unwrap() > 0.0, "{pool:?}");
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
    // Asked for by name (the CLI): the run fails, and the CLI exits 1.
    let required = AdviseOptions {
        workload: WorkloadSources { required: true, ..opts.workload.clone() },
        ..opts.clone()
    };
    let error = advise(&required, &NoProgress).await.expect_err("a refused gateway fails a required source");
    assert!(format!("{error:#}").contains("pgpilot statistics could not be read"), "{error:#}");

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
    assert_eq!(pool.mean_latency_ms, Some(2.0));
    assert_eq!(pool.statements_per_s, Some(500.0));
}

/// A statement entry as the gateway answers it.
fn entry(query: &str, database: &str, calls: u64) -> serde_json::Value {
    serde_json::json!({"fingerprint": "f", "query": query, "database": database, "user": "app", "calls": calls,
        "errors": 0, "rows": calls, "total_time_ms": calls as f64, "mean_time_ms": 1.0, "max_time_ms": 1.0,
        "p50_ms": 1.0, "p95_ms": 1.0, "p99_ms": 1.0, "wait_time_ms": 0.0, "primary_calls": calls,
        "replica_calls": 0, "cache_hits": 0})
}

/// More than the advisor's 10 MB limit: 500 statements with 25 KB of text each.
fn huge_answer(database: &str) -> String {
    let statements: Vec<_> = (0..500)
        .map(|i| entry(&format!("SELECT {} FROM t{i}", "c + ".repeat(6_000) + "c"), database, 1))
        .collect();
    serde_json::json!({ "statements": statements }).to_string()
}

type Params = axum::extract::Query<std::collections::HashMap<String, String>>;

/// Another database's statements are many and huge: the answer is small only when the advisor
/// names its database.
async fn busy_neighbour(axum::extract::Query(q): Params) -> String {
    match q.get("database").map(String::as_str) {
        Some("gw") => {
            serde_json::json!({"statements": [entry(common::RECENT_ORDERS, "gw", 1234)]}).to_string()
        }
        _ => huge_answer("other"),
    }
}

/// Our own database's answer is too big for 500 statements, fine for 50; one text was cut by the
/// gateway ([insight] max_query_text) and cannot be planned.
async fn huge_texts(axum::extract::Query(q): Params) -> String {
    match q.get("limit").map(String::as_str) {
        Some("500") => huge_answer("gw"),
        _ => serde_json::json!({"statements": [
            entry(common::RECENT_ORDERS, "gw", 1234),
            entry("SELECT id FROM orders WHERE user_id = $1 AND status IN ( /* … 9000 bytes more */", "gw", 99),
        ]})
        .to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pgpilot_statistics_are_read_for_the_advised_database_and_a_too_big_answer_is_loud() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/neighbour/api/v1/monitoring/statements", get(busy_neighbour))
        .route("/huge/api/v1/monitoring/statements", get(huge_texts));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let cluster = Cluster::start();
    let url = common::database_with_orders(&cluster, "gw");
    let mut opts = common::options(&url);
    opts.skip_indexes = true;

    opts.workload.pgpilot_url = Some(format!("http://{addr}/neighbour"));
    let report = advise(&opts, &NoProgress).await.unwrap();
    assert_eq!(
        report.workload.statements, 1,
        "another database's statements must not spoil ours: {:?}\n{:?}",
        report.workload, report.notes
    );
    assert!(report.workload.warnings.is_empty(), "{:?}", report.workload);

    opts.workload.pgpilot_url = Some(format!("http://{addr}/huge"));
    let report = advise(&opts, &NoProgress).await.unwrap();
    assert_eq!(report.workload.statements, 1, "{:?}\n{:?}", report.workload, report.notes);
    let warning = report.workload.warnings.first().unwrap_or_else(|| panic!("{:?}", report.workload));
    assert!(warning.contains("over 10 MB") && warning.contains("only its 50 most expensive"), "{warning}");
    let text = report.render_text(false);
    assert!(text.contains("WARNING: WORKLOAD INCOMPLETE"), "{text}");
    let html = report.render_html();
    assert!(html.contains("<strong>WARNING:</strong> WORKLOAD INCOMPLETE"), "{html}");
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["workload"]["warnings"][0].as_str().unwrap().starts_with("WORKLOAD INCOMPLETE"), "{json}");
    assert!(
        report.notes.iter().any(|n| n.contains("1 statement(s) from pgpilot left out")),
        "{:?}",
        report.notes
    );
}

/// A workload file that cannot be read: a note when the sources are optional (the gateway), a
/// failed run when it was asked for by name (the CLI's `--workload-file`, which then exits 1).
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_workload_file_fails_the_run_when_required() {
    let cluster = Cluster::start();
    let url = common::database_with_orders(&cluster, "nofile");
    let mut opts = common::options(&url);
    opts.workload.file = Some("/nonexistent/queries.sql".into());
    let report = advise(&opts, &NoProgress).await.unwrap();
    assert!(report.notes.iter().any(|n| n.contains("/nonexistent/queries.sql")), "{:?}", report.notes);

    opts.workload.required = true;
    let error = advise(&opts, &NoProgress).await.expect_err("the file was asked for");
    assert!(format!("{error:#}").contains("/nonexistent/queries.sql"), "{error:#}");
}

/// Pool sizing divides the load by how long the application's statements hold a connection:
/// maintenance (VACUUM, CREATE INDEX waiting for a lock) and pg_sleep are not that, and are left
/// out of the latency, with a line that says so.
#[tokio::test(flavor = "multi_thread")]
async fn pool_latency_counts_ordinary_statements_only() {
    let (cluster, url) = orders_with_pg_stat_statements("pool");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    for user in 0..50i32 {
        client.query(common::RECENT_ORDERS, &[&user]).await.unwrap();
    }
    // Maintenance as tools send it: commented, or a command the reader's keyword filter misses.
    client.batch_execute("/* nightly */ VACUUM orders").await.unwrap();
    client.batch_execute("-- deploy 42\nCREATE INDEX orders_total_idx ON orders (total)").await.unwrap();
    client.batch_execute("REINDEX TABLE orders").await.unwrap();
    client.batch_execute("SELECT pg_sleep(0.5), id FROM orders WHERE id = 1").await.unwrap();
    let pool = advised_by_recent_orders(&cluster, "pool", &url).await.pool.expect("checked");
    let basis =
        pool.explanation.iter().find(|l| l.contains("left out")).unwrap_or_else(|| panic!("{pool:#?}"));
    for left_out in ["VACUUM", "CREATE INDEX", "REINDEX", "pg_sleep"] {
        assert!(basis.contains(left_out), "{left_out}: {basis}");
    }
}

/// pg_stat_statements keeps `status = $1` where the workload file spells `status = 'pending'`:
/// merged, the file's constant stays and makes the partial index.
#[tokio::test(flavor = "multi_thread")]
async fn a_files_constants_survive_merging_with_pg_stat_statements() {
    let (cluster, url) = orders_with_pg_stat_statements("lit");
    let query = "SELECT id, created_at FROM orders WHERE status = 'pending' ORDER BY created_at LIMIT 50";
    for _ in 0..20 {
        cluster.psql("lit", query);
    }
    let mut workload = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut workload, format!("{query};\n").as_bytes()).unwrap();
    let mut opts = common::options(&url);
    opts.workload.pg_stat_statements = true;
    opts.workload.file = Some(workload.path().to_path_buf());
    let report = advise(&opts, &NoProgress).await.unwrap();
    let text = report.render_text(false);
    let partial = report
        .index_suggestions
        .iter()
        .find(|s| s.create_statement.contains("WHERE status = 'pending'"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(partial.statements[0].calls, 20, "pg_stat_statements' count: {text}");
}

/// One UPDATE that waited seconds for a lock, among hundreds of quick statements, held one
/// connection once: it is left out of the latency that sizes the pool, and named.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_wait_does_not_size_the_pool() {
    let (cluster, url) = orders_with_pg_stat_statements("waits");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    for user in 0..300i32 {
        client.query(common::RECENT_ORDERS, &[&user]).await.unwrap();
    }
    // A row lock: the wait is in the executor, so in pg_stat_statements' execution time.
    let (holder, holding) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(holding);
    holder.batch_execute("BEGIN; UPDATE orders SET total = total WHERE id = 1").await.unwrap();
    let waiter = tokio::spawn(async move {
        client.execute("UPDATE orders SET total = total WHERE id = 1", &[]).await.unwrap();
    });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    holder.batch_execute("ROLLBACK").await.unwrap();
    waiter.await.unwrap();

    let pool = advised_by_recent_orders(&cluster, "waits", &url).await.pool.expect("checked");
    assert!(pool.explanation.iter().any(|l| l.contains("rare statements")), "{pool:#?}");
}

/// A cluster with pg_stat_statements loaded and the orders database `name`, where the extension
/// is made and its counts start from nothing.
fn orders_with_pg_stat_statements(name: &str) -> (Cluster, String) {
    let cluster = Cluster::builder().setting("shared_preload_libraries = 'pg_stat_statements'").start();
    let url = common::database_with_orders(&cluster, name);
    cluster.psql(name, "CREATE EXTENSION pg_stat_statements; SELECT pg_stat_statements_reset()");
    (cluster, url)
}

/// The advice from pg_stat_statements, its pool sizing checked to rest on the mean execution time
/// of the application's RECENT_ORDERS reads alone (the others left out).
async fn advised_by_recent_orders(cluster: &Cluster, db: &str, url: &str) -> pgpilot_advisor::Report {
    let ordinary: f64 = cluster
        .psql(
            db,
            "SELECT sum(total_exec_time) / sum(calls) FROM pg_stat_statements \
             WHERE query LIKE 'SELECT id, total FROM orders%'",
        )
        .parse()
        .unwrap();
    let mut opts = common::options(url);
    opts.workload.pg_stat_statements = true;
    let report = advise(&opts, &NoProgress).await.unwrap();
    let pool = report.pool.as_ref().expect("latency is known from pg_stat_statements");
    let mean = pool.mean_latency_ms.expect("--target-tps is multiplied by the latency");
    assert!((mean - ordinary).abs() < 1e-6 * ordinary.max(1.0), "{ordinary} ms: {pool:#?}");
    report
}
