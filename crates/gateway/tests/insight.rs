//! Workload insight: statistics match what was recorded, the slow-query log, bounded memory, the
//! monitoring API behind its token, EXPLAIN on real servers (reads only, replica first), the
//! server probe, and the shipped alert rules and Grafana dashboard against the metrics pgpilot exports.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pgpilot_gateway::config::{Config, DatabaseConfig, PoolMode, ReplicaConfig, Secs};
use pgpilot_gateway::insight::{Insight, InsightConfig, QueryKey, StatementEvent, Target};
use pgpilot_testkit::Cluster;
use serde_json::{json, Value};

// ---------- helpers ----------

struct Names {
    database: Arc<str>,
    user: Arc<str>,
    query: Arc<str>,
}

fn names(database: &str, user: &str, query: &str) -> Names {
    Names { database: Arc::from(database), user: Arc::from(user), query: Arc::from(query) }
}

fn event<'a>(fingerprint: u64, n: &'a Names, duration_us: u64, target: Target) -> StatementEvent<'a> {
    StatementEvent {
        fingerprint,
        normalized: &n.query,
        database: &n.database,
        user: &n.user,
        duration: Duration::from_micros(duration_us),
        wait: Duration::from_micros(10),
        rows: 1,
        error: None,
        target,
        client_addr: "127.0.0.1:50000",
        server: "127.0.0.1:5432",
        parameters: None,
        client_params: None,
    }
}

fn config_with(f: impl FnOnce(&mut InsightConfig)) -> InsightConfig {
    let mut c = InsightConfig::default();
    f(&mut c);
    c
}

struct Response {
    status: u16,
    body: String,
    headers: Vec<(String, String)>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn request(method: &str, url: &str, token: Option<&str>, body: Option<&Value>) -> Response {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let auth = token.map(|t| format!("Bearer {t}"));
    let result = match (method, body) {
        ("GET", _) => {
            let mut r = agent.get(url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        ("DELETE", _) => {
            let mut r = agent.delete(url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        ("POST", b) => {
            let mut r = agent.post(url).header("Content-Type", "application/json");
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.send(b.map(|b| b.to_string()).unwrap_or_default())
        }
        _ => panic!("method {method}"),
    };
    let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let headers =
        resp.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
    Response {
        status: resp.status().as_u16(),
        body: resp.body_mut().read_to_string().unwrap_or_default(),
        headers,
    }
}

fn base(gw: &pgpilot_gateway::Gateway) -> String {
    format!("http://{}", gw.http_addr().expect("http is on"))
}

fn token_file(token: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), format!("{token}\n")).unwrap();
    f
}

// ---------- statistics, without a server ----------

#[test]
fn statistics_match_what_was_recorded() {
    let insight = Insight::new(&config_with(|c| c.log_min_duration = Secs::from_millis(100)));
    let select = names("app", "web", "SELECT * FROM orders WHERE id = $1");
    let update = names("app", "web", "UPDATE orders SET state = $1 WHERE id = $2");
    let sleep = names("reports", "analyst", "SELECT pg_sleep($1)");
    // 1000 calls of 10 µs .. 10 ms, alternating primary and replica.
    for i in 1..=1000u64 {
        let target = if i % 2 == 0 { Target::Primary } else { Target::Replica };
        insight.record(&event(0xa1, &select, i * 10, target));
    }
    for i in 0..10 {
        let mut ev = event(0xb2, &update, 2_000, Target::Primary);
        ev.error = (i < 3).then_some("23505");
        ev.rows = 0;
        insight.record(&ev);
    }
    for _ in 0..4 {
        insight.record(&event(0xa1, &select, 5, Target::Cache));
    }
    let params = vec![Some("0.25".to_string())];
    let mut slow = event(0xc3, &sleep, 250_000, Target::Replica);
    slow.parameters = Some(&params);
    insight.record(&slow);

    let snap = insight.snapshot();
    let get = |fp| snap.statements.iter().find(|s| s.fingerprint == Some(fp)).expect("statement kept");
    let s = get(0xa1);
    assert_eq!(s.counters.calls, 1004);
    assert_eq!((s.counters.primary, s.counters.replica, s.counters.cache), (500, 500, 4));
    assert_eq!(s.counters.total_us, (1..=1000u64).map(|i| i * 10).sum::<u64>() + 20);
    assert_eq!(s.counters.max_us, 10_000);
    assert_eq!(s.counters.rows, 1004);
    assert_eq!(s.counters.wait_us, 1004 * 10);
    assert_eq!(s.counters.errors, 0);
    for (got, exact) in [(s.p50_us, 5_000.0), (s.p95_us, 9_500.0), (s.p99_us, 9_900.0)] {
        assert!((got - exact).abs() / exact < 0.07, "percentile {got} vs {exact}");
    }
    let u = get(0xb2);
    assert_eq!((u.counters.calls, u.counters.errors, u.counters.rows), (10, 3, 0));
    assert_eq!(snap.errors, vec![(Arc::from("app"), "23505".to_string(), 3)]);
    assert_eq!(&*get(0xc3).database, "reports");
    assert_eq!(get(0xc3).counters.slow, 1);

    // The planted slow statement is in the slow log with its duration, and without its parameters
    // (log_parameters is off by default).
    let slow_log = insight.slow_queries(0.0, None, 10);
    assert_eq!(slow_log.len(), 1, "only the 250 ms statement passed log_min_duration");
    let q = &slow_log[0];
    assert_eq!(&*q.query, "SELECT pg_sleep($1)");
    assert!((q.duration_ms - 250.0).abs() < 1e-6, "{}", q.duration_ms);
    assert_eq!((&*q.database, &*q.user, q.client.as_str()), ("reports", "analyst", "127.0.0.1:50000"));
    assert_eq!(q.fingerprint, "00000000000000c3");
    assert!(q.parameters.is_none());
    assert!(!insight.wants_parameters());

    insight.configure(&config_with(|c| c.log_parameters = true));
    assert!(insight.wants_parameters());
    insight.record(&slow);
    let newest = &insight.slow_queries(0.0, None, 10)[0];
    assert_eq!(newest.parameters.as_deref(), Some(&params[..]));
    assert_eq!(insight.slow_queries(300.0, None, 10).len(), 0, "threshold filters");
    assert_eq!(insight.slow_queries(0.0, Some("app"), 10).len(), 0, "database filters");

    // Turned off: nothing more is counted.
    insight.configure(&config_with(|c| c.enabled = false));
    insight.record(&event(0xa1, &select, 10, Target::Primary));
    assert_eq!(
        insight.snapshot().statements.iter().find(|s| s.fingerprint == Some(0xa1)).unwrap().counters.calls,
        1004
    );
}

#[test]
fn same_statement_is_kept_apart_per_database_and_user() {
    let insight = Insight::new(&InsightConfig::default());
    let a = names("app", "web", "SELECT 1");
    let b = names("app", "batch", "SELECT 1");
    let c = names("other", "web", "SELECT 1");
    for n in [&a, &b, &c, &a] {
        insight.record(&event(7, n, 100, Target::Primary));
    }
    let snap = insight.snapshot();
    let mut keys: Vec<(String, String, u64)> = snap
        .statements
        .iter()
        .map(|s| (s.database.to_string(), s.user.to_string(), s.counters.calls))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            ("app".into(), "batch".into(), 1),
            ("app".into(), "web".into(), 2),
            ("other".into(), "web".into(), 1)
        ]
    );
}

#[test]
fn memory_stays_bounded_with_more_statements_than_max() {
    let insight = Insight::new(&config_with(|c| c.max_statements = 100));
    let n = names("app", "web", "SELECT $1");
    for fp in 1..=2_000u64 {
        // Later statements cost more, so the top by total time changes as they arrive.
        insight.record(&event(fp.wrapping_mul(0x9E37_79B9_7F4A_7C15), &n, fp, Target::Primary));
    }
    assert!(insight.tracked_statements() <= 100, "{} tracked", insight.tracked_statements());
    let snap = insight.snapshot();
    assert!(snap.statements.len() <= 100);
    assert_eq!(snap.other.len(), 1, "one \"other\" entry for the database");
    assert_eq!(&*snap.other[0].user, "*");
    assert_eq!(snap.totals().calls, 2_000, "nothing is lost: the rest is counted in \"other\"");
    assert_eq!(snap.totals().total_us, (1..=2_000u64).sum::<u64>());

    // Compaction makes room (at most once a second): a new expensive statement gets its own entry.
    std::thread::sleep(Duration::from_millis(1_100));
    let heavy = names("app", "web", "SELECT heavy()");
    for _ in 0..3 {
        insight.record(&event(0xdead_beef, &heavy, 1_000_000, Target::Primary));
    }
    let snap = insight.snapshot();
    assert!(snap.statements.len() <= 100);
    let kept =
        snap.statements.iter().find(|s| s.fingerprint == Some(0xdead_beef)).expect("the heavy statement");
    assert!(kept.counters.calls >= 2, "only the call that found the store full went to \"other\"");
    assert_eq!(snap.totals().calls, 2_003);

    // A lower max_statements on reload holds at once, the costliest kept, nothing lost (helper-165).
    insight.configure(&config_with(|c| c.max_statements = 10));
    assert_eq!(insight.tracked_statements(), 10);
    let snap = insight.snapshot();
    assert_eq!(snap.statements.len(), 10);
    assert!(snap.statements.iter().any(|s| s.fingerprint == Some(0xdead_beef)), "the costliest stays");
    assert_eq!(snap.totals().calls, 2_003);
}

/// Statements with about 700 KB of normalized text each (no constants for normalization to fold):
/// entries and the slow-query log keep a bounded prefix of each text, marked as cut, while
/// statements that differ only after the cut still get entries of their own (the fingerprint is
/// computed over the whole text).
#[test]
fn huge_statement_texts_are_kept_bounded_and_apart() {
    let insight = Insight::new(&InsightConfig::default());
    let columns: Vec<String> = (0..60_000).map(|j| format!("col_{j}")).collect();
    let body = format!("SELECT {}", columns.join(" + "));
    let statements = 20;
    for i in 0..statements {
        let text = format!("{body} FROM t{i} WHERE id = {i}");
        let (key, _) = QueryKey::of_str(&text, false);
        assert!(key.normalized.len() > 600_000, "normalization keeps the text long");
        let n = names("app", "web", &key.normalized);
        // 200 ms: slow, so the slow-query log keeps it too.
        insight.record(&event(key.fingerprint, &n, 200_000, Target::Primary));
    }
    let snap = insight.snapshot();
    assert_eq!(snap.statements.len(), statements, "statements that differ after the cut stay apart");
    // docs/insight.md: each entry's text is at most max_query_text (4096 bytes by default).
    let bound = 4096 + 64;
    for s in &snap.statements {
        assert!(s.query.len() <= bound, "an entry keeps {} bytes of text", s.query.len());
        assert!(s.query.starts_with("SELECT col_0 + col_1 + "), "{}", &s.query[..40]);
        assert!(s.query.ends_with(" bytes more */"), "the cut is marked: {}", &s.query[s.query.len() - 40..]);
    }
    let slow = insight.slow_queries(0.0, None, 100);
    assert_eq!(slow.len(), statements);
    for q in &slow {
        assert!(q.query.len() <= bound, "a slow statement keeps {} bytes of text", q.query.len());
    }
}

#[test]
fn concurrent_recording_loses_nothing() {
    let insight = Arc::new(Insight::new(&InsightConfig::default()));
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let insight = insight.clone();
            std::thread::spawn(move || {
                let n = names("app", "web", "SELECT $1");
                for i in 0..20_000u64 {
                    insight.record(&event(i % 16, &n, 100 + t, Target::Primary));
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let snap = insight.snapshot();
    assert_eq!(snap.statements.len(), 16);
    assert_eq!(snap.totals().calls, 160_000);
    assert_eq!(snap.totals().total_us, (0..8u64).map(|t| (100 + t) * 20_000).sum::<u64>());
}

// ---------- the API, on a running gateway ----------

const STATEMENT_FIELDS: &[&str] = &[
    "fingerprint",
    "query",
    "database",
    "user",
    "calls",
    "errors",
    "rows",
    "total_time_ms",
    "mean_time_ms",
    "max_time_ms",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "wait_time_ms",
    "primary_calls",
    "replica_calls",
    "cache_hits",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_serves_what_was_recorded_behind_the_token() {
    let pg = Cluster::start();
    let token = "s3cret-token";
    let file = token_file(token);
    let mut config = config_for(&pg);
    config.pgpilot.http_token_file = Some(file.path().to_path_buf());
    config.insight.prometheus_top_n = 2;
    // A short window, so that the 53 statements below are enough traffic to judge the error rate.
    config.insight.health.window = Secs::from_secs(10);
    let gw = start(config).await;
    let url = base(&gw);
    let insight = &gw.shared().insight;
    let fast = names("postgres", "postgres", "SELECT * FROM t WHERE id = $1");
    let rare = names("postgres", "postgres", "SELECT count(*) FROM t");
    let other_db = names("analytics", "postgres", "SELECT $1");
    for _ in 0..50 {
        insight.record(&event(0xf1, &fast, 1_000, Target::Primary));
    }
    for _ in 0..2 {
        let mut ev = event(0xf2, &rare, 400_000, Target::Replica);
        ev.error = Some("57014");
        insight.record(&ev);
    }
    insight.record(&event(0xf3, &other_db, 50, Target::Cache));

    // The token guards the API, not /metrics, /health or the dashboard page.
    let list = |q: &str| request("GET", &format!("{url}/api/v1/monitoring/statements{q}"), Some(token), None);
    assert_eq!(request("GET", &format!("{url}/api/v1/monitoring/statements"), None, None).status, 401);
    assert_eq!(
        request("GET", &format!("{url}/api/v1/monitoring/statements"), Some("wrong"), None).status,
        401
    );
    assert_eq!(request("GET", &format!("{url}/api/v1/monitoring/health"), None, None).status, 401);
    assert_eq!(request("GET", &format!("{url}/api/v1/monitoring/slow-queries"), None, None).status, 401);
    let no_token = request(
        "POST",
        &format!("{url}/api/v1/monitoring/analyze-query"),
        None,
        Some(&json!({"query": "SELECT 1"})),
    );
    assert_eq!(no_token.status, 401);
    assert_eq!(request("GET", &format!("{url}/metrics"), None, None).status, 200);
    let page = request("GET", &format!("{url}/"), None, None);
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.header("content-security-policy").unwrap().contains("default-src 'self'"));
    assert!(page.body.contains("/dashboard/app.js"));
    for asset in ["app.js", "charts.js", "style.css", "favicon.svg"] {
        assert_eq!(request("GET", &format!("{url}/dashboard/{asset}"), None, None).status, 200, "{asset}");
    }
    assert_eq!(request("GET", &format!("{url}/dashboard/../Cargo.toml"), None, None).status, 404);

    // Sorted by total time by default: the two slow calls outweigh fifty fast ones.
    let r = list("");
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    let statements = body["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 3);
    for field in STATEMENT_FIELDS {
        assert!(statements.iter().all(|s| !s[field].is_null()), "field {field} in {}", r.body);
    }
    let first = &statements[0];
    assert_eq!(first["fingerprint"], "00000000000000f2");
    assert_eq!(first["query"], "SELECT count(*) FROM t");
    assert_eq!((first["calls"].as_u64(), first["errors"].as_u64()), (Some(2), Some(2)));
    assert_eq!(first["replica_calls"], 2);
    assert!((first["total_time_ms"].as_f64().unwrap() - 800.0).abs() < 1e-6);
    assert!((first["max_time_ms"].as_f64().unwrap() - 400.0).abs() < 1e-6);
    let by_calls = list("?sort=calls&limit=1").json();
    assert_eq!(by_calls["statements"].as_array().unwrap().len(), 1);
    assert_eq!(by_calls["statements"][0]["fingerprint"], "00000000000000f1");
    assert_eq!(by_calls["statements"][0]["calls"], 50);
    assert!((by_calls["statements"][0]["mean_time_ms"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    let analytics = list("?database=analytics").json();
    assert_eq!(analytics["statements"].as_array().unwrap().len(), 1);
    assert_eq!(analytics["statements"][0]["cache_hits"], 1);
    assert_eq!(body["summary"]["calls"], 53);
    assert_eq!(list("?sort=nonsense").status, 400);

    // Slow queries: both 400 ms calls (over the 100 ms default), newest first, filterable.
    let slow =
        request("GET", &format!("{url}/api/v1/monitoring/slow-queries?threshold_ms=300"), Some(token), None)
            .json();
    let entries = slow["slow_queries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{slow}");
    assert!((entries[0]["duration_ms"].as_f64().unwrap() - 400.0).abs() < 1e-6);
    assert_eq!(entries[0]["error"], "57014");
    assert_eq!(entries[0]["target"], "replica");
    let none =
        request("GET", &format!("{url}/api/v1/monitoring/slow-queries?threshold_ms=500"), Some(token), None);
    assert_eq!(none.json()["slow_queries"].as_array().unwrap().len(), 0);
    for bad in ["-5", "NaN", "inf", "1e400", "abc"] {
        let url = format!("{url}/api/v1/monitoring/slow-queries?threshold_ms={bad}");
        assert_eq!(request("GET", &url, Some(token), None).status, 400, "threshold_ms={bad}");
    }

    // Health: checks against the thresholds, and the error rate of what was recorded (2 of 53).
    let health = request("GET", &format!("{url}/api/v1/monitoring/health"), Some(token), None).json();
    assert!(matches!(health["status"].as_str(), Some("ok" | "warning" | "critical")), "{health}");
    let error_check =
        health["checks"].as_array().unwrap().iter().find(|c| c["check"] == "error_rate").unwrap();
    assert!((error_check["value"].as_f64().unwrap() - 2.0 / 53.0).abs() < 1e-9, "{error_check}");
    assert_eq!(error_check["status"], "warning", "3.8% is above the 1% warning and below the 5% critical");
    assert_eq!(health["status"], "warning");

    // Prometheus: the top 2 by total time have their own series; every statement is in the totals.
    let metrics = request("GET", &format!("{url}/metrics"), None, None).body;
    let line = |prefix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
            .to_string()
    };
    assert!(line("pgpilot_statement_calls_total{fingerprint=\"00000000000000f1\"").ends_with(" 50"));
    assert!(line("pgpilot_statement_calls_total{fingerprint=\"00000000000000f2\"")
        .contains("query=\"SELECT count(*) FROM t\""));
    assert!(!metrics.contains("fingerprint=\"00000000000000f3\""), "only the top 2 get series");
    assert!(line("pgpilot_statements_total{database=\"postgres\",target=\"primary\"}").ends_with(" 50"));
    assert!(line("pgpilot_statements_total{database=\"analytics\",target=\"cache\"}").ends_with(" 1"));
    assert!(line("pgpilot_statements_failed_total{database=\"postgres\",sqlstate=\"57014\"}").ends_with(" 2"));
    assert!(line("pgpilot_slow_queries_total{database=\"postgres\"}").ends_with(" 2"));
    assert!(line("pgpilot_statement_latency_seconds{fingerprint=\"00000000000000f2\"")
        .contains("quantile=\"0.5\""));
    promtool_accepts_metrics(&metrics);

    // DELETE resets, like pg_stat_statements_reset().
    let reset = request("DELETE", &format!("{url}/api/v1/monitoring/statements"), Some(token), None);
    assert_eq!(reset.status, 204);
    assert_eq!(list("").json()["statements"].as_array().unwrap().len(), 0);
    // The per-database counters go on (as pg_stat_database does): a reset is no restart (helper-153).
    let again = |prefix: &str| {
        let metrics = request("GET", &format!("{url}/metrics"), None, None).body;
        metrics.lines().find(|l| l.starts_with(prefix)).map(str::to_string).unwrap_or_default()
    };
    let name = names("postgres", "postgres", "SELECT 1");
    gw.shared().insight.record(&event(0xf9, &name, 1_000, Target::Primary));
    assert!(again("pgpilot_statements_total{database=\"postgres\",target=\"primary\"}").ends_with(" 51"));
    assert!(
        again("pgpilot_statements_failed_total{database=\"postgres\",sqlstate=\"57014\"}").ends_with(" 2")
    );
    assert!(again("pgpilot_slow_queries_total{database=\"postgres\"}").ends_with(" 2"));
    assert!(!again("pgpilot_statement_calls_total{fingerprint=\"00000000000000f1\"").ends_with(" 50"));

    // Unknown paths and jobs answer in JSON too, as documented (helper-153).
    let unknown = request("GET", &format!("{url}/api/v1/monitoring/nope"), Some(token), None);
    assert_eq!(unknown.status, 404);
    assert!(unknown.json()["error"].as_str().unwrap().contains("/api/v1/monitoring/nope"));
    let history = request("GET", &format!("{url}/api/v1/jobs/history?job=nope"), Some(token), None);
    assert_eq!(history.status, 404, "{}", history.body);
    assert!(history.json()["error"].as_str().unwrap().contains("nope"));
    assert_eq!(request("GET", &format!("{url}/api/v1/jobs/history?limit=0"), Some(token), None).status, 400);
    gw.shutdown().await;
}

/// 9 failures among 19 statements: too few statements to judge an error rate (the shipped alert
/// rules want at least one statement per second), so the health check says so instead of
/// "critical". Three slow statements just after the start are not a slow-query rate of several a
/// second either: a history younger than the window counts as a full window (helper-165).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handful_of_failures_is_not_a_critical_error_rate() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.insight.log_min_duration = Secs::from_millis(100);
    let gw = start(config).await;
    let url = base(&gw);
    let missing = names("postgres", "postgres", "SELECT * FROM missing_table");
    for i in 0..16 {
        let mut ev = event(0xe1, &missing, 1_000, Target::Primary);
        if i < 9 {
            ev.error = Some("42P01");
        }
        gw.shared().insight.record(&ev);
    }
    let sleep = names("postgres", "postgres", "SELECT pg_sleep($1)");
    for _ in 0..3 {
        gw.shared().insight.record(&event(0xe2, &sleep, 110_000, Target::Primary));
    }
    let health = request("GET", &format!("{url}/api/v1/monitoring/health"), None, None).json();
    let slow = health["checks"].as_array().unwrap().iter().find(|c| c["check"] == "slow_query_rate").unwrap();
    assert_eq!(health["rates"]["slow_queries"], 3, "{health}");
    assert!(slow["value"].as_f64().unwrap() < 0.1, "3 slow statements over the window: {slow}");
    assert_eq!(slow["status"], "ok", "{slow}");
    let check = health["checks"].as_array().unwrap().iter().find(|c| c["check"] == "error_rate").unwrap();
    assert!((check["value"].as_f64().unwrap() - 9.0 / 19.0).abs() < 1e-9, "{check}");
    assert_eq!(check["status"], "ok", "{check}");
    let message = check["message"].as_str().unwrap();
    assert!(message.contains("too few statements") && message.contains("9 of 19"), "{message}");
    assert_ne!(health["status"], "critical", "{health}");
    gw.shutdown().await;
}

/// What the gateway records for statements that really went through it: one entry per normalized
/// statement (literals of simple queries become $n), rows from the command tags, errors by
/// SQLSTATE, in both pooling modes, and a slow statement in the slow-query log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_through_the_gateway_are_counted() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE items (id int PRIMARY KEY, v text)");
    for mode in [PoolMode::Transaction, PoolMode::Session] {
        let mut config = config_for(&pg);
        config.pgpilot.pool_mode = mode;
        config.insight.log_min_duration = Secs::from_millis(100);
        let gw = start(config).await;
        let client = connect(&gw).await;
        client.simple_query("TRUNCATE items").await.unwrap();
        let insert = client.prepare("INSERT INTO items VALUES ($1, $2)").await.unwrap();
        for id in 1..=3i32 {
            client.execute(&insert, &[&id, &"x"]).await.unwrap();
        }
        client.simple_query("SELECT v FROM items WHERE id = 1").await.unwrap();
        client.simple_query("select v  from items where id = 2;").await.unwrap();
        let all = client.query("SELECT * FROM items WHERE id > $1", &[&0i32]).await.unwrap();
        assert_eq!(all.len(), 3);
        assert!(client.simple_query("SELECT 1/0").await.is_err());
        assert!(client.query("SELECT $1::int / 0", &[&1i32]).await.is_err());
        client.simple_query("SELECT pg_sleep(0.15)").await.unwrap();
        // A cursor read in pieces of 2 rows is one call of all its rows, as in pg_stat_statements.
        let mut client = client;
        let tx = client.transaction().await.unwrap();
        let cursor = tx.prepare("SELECT id FROM items WHERE id >= $1 ORDER BY id").await.unwrap();
        let portal = tx.bind(&cursor, &[&1i32]).await.unwrap();
        let mut fetched = 0;
        loop {
            let piece = tx.query_portal(&portal, 2).await.unwrap();
            fetched += piece.len();
            if piece.len() < 2 {
                break;
            }
        }
        assert_eq!(fetched, 3);
        tx.commit().await.unwrap();

        let snap = gw.shared().insight.snapshot();
        let find = |q: &str| {
            snap.statements
                .iter()
                .find(|s| &*s.query == q)
                .unwrap_or_else(|| panic!("{mode:?}: no {q:?} in {:#?}", snap.statements))
        };
        let c = &find("INSERT INTO items VALUES ($1, $2)").counters;
        assert_eq!((c.calls, c.rows, c.errors), (3, 3, 0), "{mode:?}");
        let c = &find("SELECT v FROM items WHERE id = $1").counters;
        assert_eq!((c.calls, c.rows), (2, 2), "{mode:?}: literals differ, one statement");
        let c = &find("SELECT * FROM items WHERE id > $1").counters;
        assert_eq!((c.calls, c.rows), (1, 3), "{mode:?}");
        let cursor = &find("SELECT id FROM items WHERE id >= $1 ORDER BY id").counters;
        assert_eq!((cursor.calls, cursor.rows), (1, 3), "{mode:?}: a cursor read in pieces");
        assert_eq!(find("SELECT $1/$2").counters.errors, 1, "{mode:?}");
        assert_eq!(find("SELECT $1::int / $2").counters.errors, 1, "{mode:?}");
        assert!(c.total_us > 0 && c.primary == 1, "{mode:?}: {c:?}");
        let slow = gw.shared().insight.slow_queries(0.0, None, 10);
        assert_eq!(slow.len(), 1, "{mode:?}: {slow:?}");
        assert_eq!(&*slow[0].query, "SELECT pg_sleep($1)");
        assert!(slow[0].duration_ms >= 150.0, "{:?}", slow[0]);
        drop(client);
        gw.shutdown().await;
    }
}

/// Statements sent together (a pipeline, a batch with one Sync) are not each charged the time of
/// the whole batch: 20 sleeps of 20 ms record about 20 ms each, and none is slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_statements_are_timed_each_not_by_their_batch() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.insight.log_min_duration = Secs::from_millis(150);
    let gw = start(config).await;
    const N: usize = 20;
    // One batch with a single Sync: PostgreSQL sends every result at the Sync.
    use tokio::io::AsyncWriteExt;
    let mut s = raw_login(addr(&gw)).await;
    let mut batch = message(b'P', b"\0SELECT pg_sleep(0.02) AS one_sync\0\0\0");
    for _ in 0..N {
        batch.extend(message(b'B', b"\0\0\0\0\0\0\0\0"));
        batch.extend(message(b'E', b"\0\0\0\0\0"));
    }
    batch.extend(message(b'S', b""));
    s.write_all(&batch).await.unwrap();
    let answer = read_until_ready(&mut s).await;
    let completed = backend_messages(&answer).iter().filter(|(tag, _)| *tag == b'C').count();
    assert_eq!(completed, N);
    // A driver's pipeline: each query has its own Sync, all sent before the first answer.
    let client = connect(&gw).await;
    let sleep = client.prepare("SELECT pg_sleep(0.02) AS pipelined").await.unwrap();
    let queries = (0..N).map(|_| client.query(&sleep, &[]));
    for rows in futures::future::join_all(queries).await {
        assert_eq!(rows.unwrap().len(), 1);
    }

    let snap = gw.shared().insight.snapshot();
    for text in ["SELECT pg_sleep($1) AS one_sync", "SELECT pg_sleep($1) AS pipelined"] {
        let found = snap.statements.iter().find(|st| &*st.query == text);
        let c = &found.unwrap_or_else(|| panic!("no {text:?} in {:#?}", snap.statements)).counters;
        assert_eq!(c.calls, N as u64, "{text}");
        let mean_ms = c.total_us as f64 / 1000.0 / N as f64;
        // Charged by its batch, the mean would be some 200 ms (one Sync) or 210 ms (a pipeline).
        assert!((15.0..60.0).contains(&mean_ms), "{text}: mean {mean_ms:.1} ms");
    }
    let slow = gw.shared().insight.slow_queries(0.0, None, 10);
    assert!(slow.is_empty(), "no statement took 150 ms: {slow:?}");
    gw.shutdown().await;
}

/// libpq's PQprepare of the unnamed statement (Parse, Sync) then PQexecPrepared (Bind, Execute,
/// Sync) in later round trips, as pgx's describe-then-execute does: in transaction pooling each
/// round trip is an attachment of its own, and the Executes still count, fail and are slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statements_bound_in_a_later_round_trip_are_counted() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.insight.log_min_duration = Secs::from_millis(100);
    let gw = start(config).await;
    let mut s = raw_login(addr(&gw)).await;
    let execute =
        [message(b'B', b"\0\0\0\0\0\0\0\0"), message(b'E', b"\0\0\0\0\0"), message(b'S', b"")].concat();
    for text in ["SELECT 'unnamed' AS u1", "SELECT 1/0 AS u2", "SELECT pg_sleep(0.12) AS u3"] {
        let parse = [message(b'P', format!("\0{text}\0\0\0").as_bytes()), message(b'S', b"")].concat();
        s.write_all(&parse).await.unwrap();
        read_until_ready(&mut s).await;
        for _ in 0..3 {
            s.write_all(&execute).await.unwrap();
            read_until_ready(&mut s).await;
        }
    }
    let snap = gw.shared().insight.snapshot();
    let find = |q: &str| {
        let found = snap.statements.iter().find(|st| &*st.query == q);
        found.unwrap_or_else(|| panic!("no {q:?} in {:#?}", snap.statements)).counters
    };
    let c = find("SELECT $1 AS u1");
    assert_eq!((c.calls, c.rows, c.errors), (3, 3, 0));
    let c = find("SELECT $1/$2 AS u2");
    assert_eq!((c.calls, c.errors), (3, 3));
    assert_eq!(find("SELECT pg_sleep($1) AS u3").calls, 3);
    let slow = gw.shared().insight.slow_queries(0.0, None, 10);
    assert_eq!(slow.len(), 3, "{slow:?}");
    gw.shutdown().await;
}

/// helper-148: EXPLAIN logs in as the user a request names; where clients authenticate, an API
/// without a token let any local process do so as any user in the auth_file, the superuser too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_query_as_a_user_needs_the_token_where_clients_authenticate() {
    let pg = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("userlist.txt");
    std::fs::write(&users, "\"postgres\" \"pw\"\n").unwrap();
    let mut config = config_for(&pg);
    config.pgpilot.auth_type = Some(pgpilot_gateway::config::AuthType::ScramSha256);
    config.pgpilot.auth_file = Some(users);
    let gw = start(config).await;
    let url = format!("{}/api/v1/monitoring/analyze-query", base(&gw));
    let body = json!({"query": "SELECT 1", "database": "postgres", "user": "postgres"});
    let r = request("POST", &url, None, Some(&body));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("http_token_file"), "{}", r.body);
    gw.shutdown().await;

    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let mut config = config_for(&pg);
    config.pgpilot.auth_type = Some(pgpilot_gateway::config::AuthType::ScramSha256);
    config.pgpilot.auth_file = Some(dir.path().join("userlist.txt"));
    config.pgpilot.http_token_file = Some(token);
    let gw = start(config).await;
    let url = format!("{}/api/v1/monitoring/analyze-query", base(&gw));
    let r = request("POST", &url, Some("t0ken"), Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_query_explains_reads_and_refuses_writes() {
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE orders(id int PRIMARY KEY, state text); \
         INSERT INTO orders SELECT g, 'new' FROM generate_series(1, 1000) g; ANALYZE orders; \
         CREATE TABLE audit(x int); \
         CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql AS 'INSERT INTO audit VALUES (1) RETURNING x';",
    );
    let mut config = config_for(&pg);
    config.insight.explain_timeout = Secs::from_secs(2);
    let gw = start(config).await;
    let url = format!("{}/api/v1/monitoring/analyze-query", base(&gw));
    let post = |body: Value| request("POST", &url, None, Some(&body));

    let r =
        post(json!({"query": "SELECT * FROM orders WHERE id = $1", "database": "postgres", "params": [42]}));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["role"], "primary", "no replica configured");
    assert_eq!(v["plan"][0]["Plan"]["Node Type"], "Index Scan", "{v}");
    assert!(v["plan"][0].get("Execution Time").is_none(), "plain EXPLAIN does not run the statement");
    assert!(v["total_cost"].as_f64().unwrap() > 0.0);

    for (body, status, words) in [
        (json!({"query": "DELETE FROM orders", "database": "postgres"}), 403, "may write"),
        (json!({"query": "UPDATE orders SET state = 'x'"}), 403, "may write"),
        (json!({"query": "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d"}), 403, "writing_cte"),
        (json!({"query": "SELECT * FROM orders FOR UPDATE"}), 403, "may write"),
        (json!({"query": "SELECT 1; SELECT 2"}), 400, "one statement"),
        (json!({"query": "SELECT 1; DROP TABLE orders"}), 403, "may write"),
        (json!({"query": "SELEKT 1"}), 400, "does not parse"),
        (json!({"query": "SELECT * FROM orders", "analyze": true}), 403, "allow_explain_analyze"),
        (json!({"query": "SELECT 1", "database": "nope"}), 404, "no such database"),
        (json!({"query": "SELECT * FROM missing_table"}), 400, "does not exist"),
        (json!({"querry": "SELECT 1"}), 400, "querry"),
    ] {
        let r = post(body.clone());
        assert_eq!(r.status, status, "{body}: {}", r.body);
        let error = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains(words), "{body}: {error}");
    }
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM orders"), "1000", "nothing was deleted");

    // Allowed: EXPLAIN ANALYZE runs, read-only, under the timeout.
    let mut allowed = gw.shared().insight.config().as_ref().clone();
    allowed.allow_explain_analyze = true;
    gw.shared().insight.configure(&allowed);
    let r = post(
        json!({"query": "SELECT count(*) FROM orders WHERE state = $1", "analyze": true, "params": ["new"]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert!(v["plan"][0]["Execution Time"].as_f64().is_some(), "{v}");
    assert_eq!(v["plan"][0]["Plan"]["Actual Rows"], 1);
    // A function that writes is stopped by the READ ONLY transaction.
    let r = post(json!({"query": "SELECT sneaky()", "analyze": true}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["sqlstate"], "25006", "{}", r.body);
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM audit"), "0");
    let r = post(json!({"query": "SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "analyze": true}));
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post(json!({"query": "SELECT pg_sleep(10)", "analyze": true}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["sqlstate"], "57014", "statement_timeout stops it: {}", r.body);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_uses_the_replica_and_health_sees_servers_and_lag() {
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE items(id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 100)",
    );
    let replica = pg.start_replica();
    replica.wait_caught_up(&pg);
    let mut config = config_for(&pg);
    config.databases.get_mut("postgres").unwrap().replicas =
        pgpilot_gateway::config::OneOrMany(vec![ReplicaConfig::Url(replica.admin_url())]);
    config.insight.server_probe_interval = Secs::from_secs(1);
    let gw = start(config).await;
    let url = base(&gw);

    let r = request(
        "POST",
        &format!("{url}/api/v1/monitoring/analyze-query"),
        None,
        Some(&json!({"query": "SELECT * FROM items WHERE id = 5"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["role"], "replica");
    assert_eq!(r.json()["server"], replica.addr());

    let health_of = || request("GET", &format!("{url}/api/v1/monitoring/health"), None, None).json();
    // The probe has read both servers, and the router's monitor has found the replica (its lag is judged).
    let both_up = |h: &Value| {
        h["servers"].as_array().is_some_and(|s| s.len() == 2 && s.iter().all(|s| s["up"] == true))
            && h["checks"].as_array().unwrap().iter().any(|c| c["check"] == "replica_lag")
    };
    let mut health = health_of();
    for _ in 0..100 {
        if both_up(&health) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        health = health_of();
    }
    assert!(both_up(&health), "{health}");
    let servers = health["servers"].as_array().unwrap();
    let primary = servers.iter().find(|s| s["server"] == pg.addr()).unwrap();
    let standby = servers.iter().find(|s| s["server"] == replica.addr()).unwrap();
    assert_eq!((primary["role"].as_str(), primary["in_recovery"].as_bool()), (Some("primary"), Some(false)));
    assert_eq!((standby["role"].as_str(), standby["in_recovery"].as_bool()), (Some("replica"), Some(true)));
    let max = primary["max_connections"].as_u64().unwrap();
    let used = primary["connections"].as_u64().unwrap();
    assert!(max >= 10 && used >= 1 && used <= max, "{primary}");
    let lag = health["checks"].as_array().unwrap().iter().find(|c| c["check"] == "replica_lag").unwrap();
    assert_eq!(lag["subject"], format!("postgres@{}", replica.addr()));
    assert!(lag["value"].as_f64().unwrap() < 1.0, "an idle replica is not behind: {lag}");
    assert!(health["checks"].as_array().unwrap().iter().any(|c| c["check"] == "server_connections"));

    let metrics = request("GET", &format!("{url}/metrics"), None, None).body;
    let wanted = format!("pgpilot_server_max_connections{{server=\"{}\",role=\"primary\"}} {max}", pg.addr());
    assert!(metrics.contains(&wanted), "{wanted} in\n{metrics}");
    assert!(metrics
        .contains(&format!("pgpilot_server_probe_up{{server=\"{}\",role=\"replica\"}} 1", replica.addr())));

    // A replica that stops is reported down, and EXPLAIN falls back to the primary.
    replica.stop();
    let mut down = None;
    for _ in 0..100 {
        let h = health_of();
        if h["servers"].as_array().unwrap().iter().any(|s| s["server"] == replica.addr() && s["up"] == false)
        {
            down = Some(h);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let down = down.expect("the stopped replica is reported down");
    // A check says so, and the verdict is not "ok" while a server cannot be reached.
    let check = down["checks"].as_array().unwrap().iter().find(|c| c["check"] == "server_down").cloned();
    let check = check.unwrap_or_else(|| panic!("no server_down check: {down}"));
    assert_eq!(
        (check["subject"].as_str(), check["status"].as_str()),
        (Some(replica.addr().as_str()), Some("warning"))
    );
    assert!(check["message"].as_str().unwrap().contains("(replica): down: "), "{check}");
    assert_ne!(down["status"], "ok", "{down}");
    let r = request(
        "POST",
        &format!("{url}/api/v1/monitoring/analyze-query"),
        None,
        Some(&json!({"query": "SELECT * FROM items"})),
    );
    assert_eq!((r.status, r.json()["role"].as_str()), (200, Some("primary")), "{}", r.body);
    gw.shutdown().await;
}

// ---------- shipped alert rules and Grafana dashboard ----------

/// Metrics the result cache (issue 5) promises to export; the cache rule is written against them.
const PROMISED_BY_THE_CACHE: &[&str] = &["pgpilot_cache_hits_total", "pgpilot_cache_misses_total"];

fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("pgpilot_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Every metric name a running pgpilot's /metrics declares (`# TYPE` lines; histograms with their
/// series suffixes). The database is never reached: declarations do not depend on it.
async fn exported_names() -> BTreeSet<String> {
    let mut config = Config::default();
    config.pgpilot.listen = pgpilot_gateway::config::OneOrMany(vec!["127.0.0.1:0".into()]);
    config.pgpilot.http = Some("127.0.0.1:0".into());
    config.pgpilot.auth_type = Some(pgpilot_gateway::config::AuthType::Trust);
    config.pgpilot.log_connections = false;
    config.tls.server_tls_sslmode = pgpilot_gateway::config::ServerTlsMode::Disable;
    config.databases.insert(
        "app".into(),
        DatabaseConfig { primary: "postgres://app@127.0.0.1:1/app".into(), ..Default::default() },
    );
    let gw = start(config).await;
    let url = format!("{}/metrics", base(&gw));
    let text = tokio::task::spawn_blocking(move || request("GET", &url, None, None).body).await.unwrap();
    gw.shutdown().await;
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let mut parts = rest.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        assert!(names.insert(name.to_string()), "{name} is declared twice in /metrics");
        if kind == "histogram" || kind == "summary" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    for name in pgpilot_gateway::insight::METRIC_NAMES {
        assert!(names.contains(*name), "{name} is listed in METRIC_NAMES but /metrics does not declare it");
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_use_exported_metrics_and_pass_promtool() {
    let exported = exported_names().await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus");
    let text = std::fs::read_to_string(format!("{dir}/pgpilot.rules.yml")).expect("reading the rules");
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("the rules file is YAML");
    let mut alerts = BTreeSet::new();
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let alert = rule["alert"].as_str().expect("every rule is a named alert");
            let expr = rule["expr"].as_str().expect("an expr");
            let used = metric_names_in(expr);
            assert!(!used.is_empty(), "{alert} uses no pgpilot metric");
            for name in &used {
                assert!(
                    exported.contains(name) || PROMISED_BY_THE_CACHE.contains(&name.as_str()),
                    "{alert} uses {name}, which pgpilot does not export"
                );
            }
            assert!(matches!(rule["labels"]["severity"].as_str(), Some("warning" | "critical")), "{alert}");
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{alert} has a summary");
            alerts.insert(alert.to_string());
        }
    }
    // The thresholds the issue names, each with its alert.
    for (alert, needle) in [
        ("PgpilotPoolUtilizationHigh", "pgpilot_pool_utilization) > 0.8"),
        ("PgpilotClientsWaiting", "pgpilot_pool_clients_waiting) > 0"),
        ("PgpilotReplicaLagHigh", "pgpilot_replica_lag_seconds) > 1"),
        ("PgpilotSlowQueryRate", "pgpilot_slow_queries_total"),
        ("PgpilotErrorRateHigh", "pgpilot_statements_failed_total"),
        ("PgpilotCacheHitRateLow", "< 0.8"),
        ("PgpilotServerConnectionsNearMax", "pgpilot_server_max_connections"),
    ] {
        assert!(alerts.contains(alert), "missing {alert}");
        assert!(text.contains(needle), "{alert}: {needle}");
    }
    assert!(text.contains("for: 5m"), "utilization must hold for 5 minutes");
    for args in [["check", "rules", "pgpilot.rules.yml"], ["test", "rules", "pgpilot.rules.test.yml"]] {
        let out =
            std::process::Command::new("promtool").args(args).current_dir(dir).output().unwrap_or_else(|e| {
                panic!(
                    "promtool could not be run ({e}); install it with `apt-get install prometheus` (Debian)"
                )
            });
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_queries_exported_metrics() {
    let exported = exported_names().await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/pgpilot-dashboard.json");
    let text = std::fs::read_to_string(path).expect("reading the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dashboard["title"].as_str().is_some_and(|t| t.contains("pgpilot")));
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    let mut used_all = BTreeSet::new();
    for expr in &exprs {
        let used = metric_names_in(expr);
        for name in &used {
            assert!(
                exported.contains(name) || PROMISED_BY_THE_CACHE.contains(&name.as_str()),
                "the dashboard queries {name}, which pgpilot does not export: {expr}"
            );
        }
        used_all.extend(used);
    }
    assert!(exprs.len() >= 10, "{} queries", exprs.len());
    for needed in [
        "pgpilot_pool_utilization",
        "pgpilot_statement_seconds_total",
        "pgpilot_statement_latency_seconds",
        "pgpilot_statements_total",
        "pgpilot_replica_lag_seconds",
        "pgpilot_server_max_connections",
        "pgpilot_cache_hits_total",
    ] {
        assert!(used_all.contains(needed), "the dashboard shows {needed}");
    }
    // Panels sit on the grid without overlapping.
    let mut cells = BTreeSet::new();
    for p in panels {
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{} is wider than the grid", p["title"]);
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{} overlaps another panel", p["title"]);
            }
        }
    }
}

#[test]
fn the_openapi_file_documents_every_endpoint() {
    use yaml_rust2::Yaml;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("reading docs/api/openapi.yaml");
    let doc = &yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML")[0];
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_hash().expect("paths");
    for (path, methods) in [
        ("/health", &["get"][..]),
        ("/metrics", &["get"]),
        ("/", &["get"]),
        ("/api/v1/monitoring/pool-stats", &["get"]),
        ("/api/v1/monitoring/statements", &["get", "delete"]),
        ("/api/v1/monitoring/slow-queries", &["get"]),
        ("/api/v1/monitoring/analyze-query", &["post"]),
        ("/api/v1/monitoring/health", &["get"]),
        ("/api/v1/monitoring/replicas", &["get"]),
        ("/api/v1/cache/stats", &["get"]),
        ("/api/v1/cache/invalidate", &["post"]),
        ("/api/v1/advisor/findings", &["get"]),
        ("/api/v1/jobs", &["get"]),
        ("/api/v1/jobs/history", &["get"]),
    ] {
        let ops = &paths[&Yaml::String(path.into())];
        for m in methods {
            let op = &ops[*m];
            assert!(op["responses"].as_hash().is_some_and(|r| !r.is_empty()), "{m} {path} has responses");
            if path.starts_with("/api/") {
                assert!(!op["responses"]["401"].is_badvalue(), "{m} {path} documents 401");
            }
        }
    }
    // Every $ref points at something.
    fn refs(y: &Yaml, out: &mut Vec<String>) {
        match y {
            Yaml::Hash(h) => {
                for (k, v) in h {
                    match (k.as_str(), v.as_str()) {
                        (Some("$ref"), Some(r)) => out.push(r.to_string()),
                        _ => refs(v, out),
                    }
                }
            }
            Yaml::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(doc, &mut all);
    assert!(all.len() > 10);
    for r in all {
        let mut node = doc;
        for part in r.trim_start_matches("#/").split('/') {
            node = &node[part];
        }
        assert!(!node.is_badvalue(), "unresolved $ref {r}");
    }
    // The statement fields the advisor reads are the required ones.
    let required: Vec<&str> = doc["components"]["schemas"]["Statement"]["required"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, STATEMENT_FIELDS);
}

/// `promtool check metrics` (Debian package `prometheus`) reads the exposition as Prometheus would.
fn promtool_accepts_metrics(metrics: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool could not be run ({e}); install it with `apt-get install prometheus`")
        });
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check metrics:\n{text}");
}

/// With standard_conforming_strings = off a backslash escapes a quote in a plain literal: the
/// literal's words (a name, a password) never reach the statistics, whichever way it is sent
/// (helper-134: `select $1Brien SSN-$2-$3-$4$5second$6`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literals_with_escaped_quotes_stay_out_of_the_statistics() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let client = connect(&gw).await;
    client
        .batch_execute("SET standard_conforming_strings = off; SET escape_string_warning = off")
        .await
        .unwrap();
    let rows =
        client.simple_query(r"select 'O\'Brien SSN-123-45-6789' as name, 'second' as x").await.unwrap();
    assert!(
        matches!(&rows[1], tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("O'Brien SSN-123-45-6789"))
    );
    let prepared = client.prepare(r"select 'pw\'HunterTwoPassword' || $1::text").await.unwrap();
    client.query(&prepared, &[&"x"]).await.unwrap();
    client.query(&prepared, &[&"y"]).await.unwrap();
    let snap = gw.shared().insight.snapshot();
    let texts: Vec<&str> = snap.statements.iter().map(|s| &*s.query).collect();
    for word in ["Brien", "SSN", "second", "HunterTwo"] {
        assert!(!texts.iter().any(|t| t.contains(word)), "{word} in {texts:#?}");
    }
    assert!(texts.contains(&"select $1 as name, $2 as x"), "{texts:#?}");
    assert!(texts.contains(&"select $2 || $1::text"), "{texts:#?}");
    gw.shutdown().await;
}

/// A request pgpilot refuses before any server saw it (query_wait_timeout) is its statement's
/// failure in the statistics and the failures by SQLSTATE, as the client saw it (helper-134: the
/// pool timing clients out looked healthy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_refused_before_reaching_a_server_count_as_failed() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.pgpilot.default_pool_size = 1;
    config.pgpilot.query_wait_timeout = Secs::from_secs(1);
    let gw = start(config).await;
    let holder = connect(&gw).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    let waiter = connect(&gw).await;
    let refused = waiter.simple_query("SELECT 42 AS refused").await.unwrap_err();
    assert_eq!(sqlstate(&refused).as_deref(), Some("08P01"), "{refused}");
    holder.batch_execute("COMMIT").await.unwrap();
    let snap = gw.shared().insight.snapshot();
    let entry = snap.statements.iter().find(|s| &*s.query == "SELECT $1 AS refused");
    let entry = entry.unwrap_or_else(|| panic!("not recorded: {:#?}", snap.statements));
    assert_eq!((entry.counters.calls, entry.counters.errors), (1, 1));
    assert!(entry.counters.wait_us >= 900_000, "the wait is counted: {:?}", entry.counters);
    assert!(
        snap.errors.iter().any(|(db, code, n)| &**db == "postgres" && &**code == "08P01" && *n == 1),
        "{:?}",
        snap.errors
    );
    gw.shutdown().await;
}

/// helper-149: the time a request waited for a server connection to be opened was its run time
/// (wait 0): after an outage the slow log was full of slow BEGINs. It is a wait, as in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_server_for_a_request_counts_as_its_wait() {
    let pg = Cluster::start();
    let gw = start(config_for(&pg)).await;
    let holder = connect(&gw).await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();
    // Every new server connection now takes a second to open.
    pg.psql("postgres", "ALTER SYSTEM SET pre_auth_delay = 1");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let opener = connect(&gw).await;
    opener.simple_query("SELECT 7 AS opened").await.unwrap();
    holder.batch_execute("COMMIT").await.unwrap();
    pg.psql("postgres", "ALTER SYSTEM RESET pre_auth_delay");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let snap = gw.shared().insight.snapshot();
    let entry = snap.statements.iter().find(|s| &*s.query == "SELECT $1 AS opened");
    let entry = entry.unwrap_or_else(|| panic!("not recorded: {:#?}", snap.statements));
    assert!(entry.counters.wait_us >= 900_000, "the opening is a wait: {:?}", entry.counters);
    assert!(entry.counters.total_us < 500_000, "and not run time: {:?}", entry.counters);
    gw.shutdown().await;
}

/// helper-149: the health API's `server_down` came from the probe (every 30 s): it flagged an
/// outage 16 s late and a recovery 25 s late, while `pgpilot_server_up` (the router's checks,
/// every second) was right at once. Up or down is now the router's word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_a_server_is_down_and_back_as_the_router_sees_it() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.insight.server_probe_interval = Secs::from_secs(600);
    let gw = start(config).await;
    let url = base(&gw);
    let down = move || {
        let h = request("GET", &format!("{url}/api/v1/monitoring/health"), None, None).json();
        h["checks"].as_array().unwrap().iter().any(|c| c["check"] == "server_down")
    };
    let probed = || !gw.shared().insight.server_statuses().is_empty();
    assert!(eventually(Duration::from_secs(10), probed).await, "the first probe ran");
    let check = down.clone();
    assert!(!tokio::task::spawn_blocking(check).await.unwrap());
    pg.stop();
    let seen_down = eventually(Duration::from_secs(6), &down).await;
    pg.start_server();
    assert!(seen_down, "the stopped server is not reported down");
    // Back within the router's checks (a server starting up refuses them for a while), not the
    // probe's interval.
    assert!(eventually(Duration::from_secs(30), || !down()).await, "the server back is still reported down");
    gw.shutdown().await;
}

/// helper-153: with several databases on one server and URLs naming no user, the probe asked only
/// the first database it came to (HashMap order); one with no pool opened knew no user to log in
/// as, so the server stayed unprobed while another database's pool was busy on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_logs_in_as_any_database_on_the_server_knows() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    let no_user = format!("postgres://127.0.0.1:{}/postgres", pg.port());
    config.databases.clear();
    for name in ["alpha", "beta", "gamma", "postgres"] {
        config
            .databases
            .insert(name.into(), DatabaseConfig { primary: no_user.clone(), ..Default::default() });
    }
    config.insight.server_probe_interval = Secs::from_secs(1);
    let gw = start(config).await;
    let client = connect_as(&gw, "postgres", "gamma").await;
    client.simple_query("SELECT 1").await.unwrap();
    let probed_up = || gw.shared().insight.server_statuses().iter().any(|s| s.server == pg.addr() && s.up);
    assert!(
        eventually(Duration::from_secs(10), probed_up).await,
        "{:?}",
        gw.shared().insight.server_statuses()
    );
    let status = gw.shared().insight.server_statuses().into_iter().find(|s| s.server == pg.addr()).unwrap();
    assert_eq!(status.databases.len(), 4, "{status:?}");
    assert!(status.max_connections.is_some() && status.error.is_none(), "{status:?}");
}
