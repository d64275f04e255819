//! Result cache rules, hints, tags, manual invalidation (HTTP API and admin console), partitions and
//! inheritance, stampedes, and the stats endpoint the demo reads.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::*;
use pgpilot_gateway::config::cache::CacheRule;
use pgpilot_gateway::config::{Config, Secs};
use pgpilot_gateway::Gateway;
use pgpilot_testkit::{Cluster, HIDDEN_WRITERS};
use tokio_postgres::SimpleQueryMessage;

fn cache_config(cluster: &Cluster) -> Config {
    let mut c = config_for(cluster);
    let db = c.databases.get_mut("postgres").unwrap();
    db.cache.enabled = true;
    db.cache.rules = vec![
        // Before the cache = false rule: a join of both tables matches it first.
        CacheRule {
            tables: vec!["public.products".into()],
            ttl: Some(Secs::from_millis(700)),
            tags: vec!["catalog".into()],
            ..Default::default()
        },
        CacheRule { tables: vec!["nocache_me".into()], cache: Some(false), ..Default::default() },
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
    // A rule with cache = false: whatever a hint says, and joined with a table of an earlier rule.
    for never in [
        "SELECT x FROM nocache_me",
        "SELECT x FROM nocache_me /* pgpilot:cache ttl=30s */",
        "SELECT price, x FROM products, nocache_me",
    ] {
        value(&c, never).await;
        assert!(!is_hit(&gw, &c, never).await, "{never}");
    }
    // A rule's TTL (700 ms).
    let p = "SELECT price FROM products WHERE id = 1";
    value(&c, p).await;
    assert!(is_hit(&gw, &c, p).await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!is_hit(&gw, &c, p).await, "the rule's TTL expired the result");
    // The rule's tag, invalidated through the admin console; a hint's tags add to the rule's.
    let hinted = "SELECT price FROM products WHERE id = 1 /* pgpilot:cache tags=product:1 */";
    value(&c, hinted).await;
    assert!(is_hit(&gw, &c, p).await);
    assert!(is_hit(&gw, &c, hinted).await);
    psql(&gw, "pgpilot", "INVALIDATE CACHE TAG catalog").unwrap();
    assert!(!is_hit(&gw, &c, p).await, "INVALIDATE CACHE TAG dropped it");
    assert!(!is_hit(&gw, &c, hinted).await, "the rule's tag reaches a hinted result too");
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

fn bypassed(gw: &Gateway, reason: &str) -> u64 {
    pgpilot_gateway::cache::api::stats_json(gw.shared())["bypasses"][reason].as_u64().unwrap_or(0)
}

/// A write whose table runs code of its own (a rule's DO ALSO action, a column default calling a
/// writing function) changes another table: its cached reads must go at once, with or without the
/// triggers (none here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_rules_and_defaults_invalidate_what_their_code_changes() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0); \
         CREATE TABLE rsrc (id int); \
         CREATE RULE touch_t AS ON INSERT TO rsrc DO ALSO UPDATE t SET v = v + 1; \
         CREATE FUNCTION wr() RETURNS int LANGUAGE sql VOLATILE AS 'UPDATE t SET v = v + 1 RETURNING v'; \
         CREATE TABLE dflt (id int, w int DEFAULT wr()); \
         CREATE TABLE checked (id int CHECK (wr() > 0))",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "checked").await;
    let c = connect(&gw).await;
    let read = "SELECT v FROM t WHERE id = 1";
    assert_eq!(value(&c, read).await, "0");
    assert!(is_hit(&gw, &c, read).await);
    c.simple_query("INSERT INTO rsrc VALUES (1)").await.unwrap();
    assert_eq!(value(&c, read).await, "1", "the rule's UPDATE of t was seen");
    assert!(is_hit(&gw, &c, read).await);
    c.simple_query("INSERT INTO dflt (id) VALUES (1)").await.unwrap();
    assert_eq!(value(&c, read).await, "2", "the default's UPDATE of t was seen");
    assert!(is_hit(&gw, &c, read).await);
    c.execute("INSERT INTO checked VALUES ($1)", &[&1i32]).await.unwrap();
    assert_eq!(value(&c, read).await, "3", "the CHECK constraint's UPDATE of t was seen");
}

/// A STABLE function that writes all the same (it calls a VOLATILE one), called with
/// `/* pgpilot:primary */` or under `SET pgpilot.route = primary` as routing-rules.md advises:
/// the call counts as a write for the cache as it does for read-your-writes (the writer read its
/// own write stale for the TTL). Without the request, a STABLE call is taken at its word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stable_function_called_on_the_primary_on_request_invalidates() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0); \
         CREATE FUNCTION bump() RETURNS int LANGUAGE sql VOLATILE AS 'UPDATE t SET v = v + 1 RETURNING v'; \
         CREATE FUNCTION bump_stable() RETURNS int LANGUAGE plpgsql STABLE AS 'BEGIN RETURN bump(); END'",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "t").await;
    let c = connect(&gw).await;
    let read = "SELECT v FROM t WHERE id = 1";
    assert_eq!(value(&c, read).await, "0");
    assert!(is_hit(&gw, &c, read).await);
    c.simple_query("/* pgpilot:primary */ SELECT bump_stable()").await.unwrap();
    assert_eq!(value(&c, read).await, "1", "the hinted call's write was seen");
    assert!(is_hit(&gw, &c, read).await);
    c.simple_query("SET pgpilot.route = primary").await.unwrap();
    c.query_one("SELECT bump_stable()", &[]).await.unwrap();
    assert_eq!(value(&c, read).await, "2", "the call under SET pgpilot.route = primary was seen");
    c.simple_query("RESET pgpilot.route").await.unwrap();
    assert!(is_hit(&gw, &c, read).await);
    // A hinted read that calls no function of the application's leaves the cache alone.
    c.simple_query("/* pgpilot:primary */ SELECT length('x')").await.unwrap();
    assert!(is_hit(&gw, &c, read).await);
}

/// `SET pgpilot.route = primary` as a named prepared statement (psycopg from its sixth run, or
/// with prepare_threshold=0): pgpilot answers it itself, and it invalidates nothing (`primary`,
/// a reserved word, does not parse as a value: it was taken for text that cannot be accounted
/// for, dropping every result of the database at each run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_route_setting_invalidates_nothing() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0)");
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "t").await;
    let reader = connect(&gw).await;
    let setter = connect(&gw).await;
    let read = "SELECT v FROM t WHERE id = 1";
    value(&reader, read).await;
    assert!(is_hit(&gw, &reader, read).await);
    let invalidations = || gw.shared().cache.stats.invalidations.load(Relaxed);
    let before = invalidations();
    for setting in ["SET pgpilot.route = primary", "SET pgpilot.route = auto"] {
        let prepared = setter.prepare(setting).await.unwrap();
        for _ in 0..3 {
            setter.execute(&prepared, &[]).await.unwrap();
        }
    }
    assert_eq!(invalidations(), before, "route settings invalidated results");
    assert!(is_hit(&gw, &reader, read).await, "the other client's read is still a hit");
}

/// Reads whose answer changes by itself are never cached: views over now() or random() (built-in
/// functions pg_depend does not record), TABLESAMPLE without REPEATABLE, and 'now' bound as a
/// parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_deterministic_reads_are_not_cached() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, at timestamptz DEFAULT now()); \
         INSERT INTO t SELECT g FROM generate_series(1, 200) g; \
         CREATE VIEW v_now AS SELECT clock_timestamp()::text AS at; \
         CREATE VIEW v_random AS SELECT random()::text AS r; \
         CREATE VIEW v_recent AS SELECT count(*) FROM t WHERE at > now() - interval '1 hour'; \
         CREATE VIEW v_plain AS SELECT count(*) FROM t",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "v_plain").await;
    let c = connect(&gw).await;
    let plain = "SELECT * FROM v_plain";
    value(&c, plain).await;
    assert!(is_hit(&gw, &c, plain).await, "a view of no volatile function is cached");
    for sql in [
        "SELECT * FROM v_now",
        "SELECT * FROM v_random",
        "SELECT * FROM v_recent",
        "SELECT count(*) FROM t TABLESAMPLE BERNOULLI (50)",
        "SELECT count(*) FROM t TABLESAMPLE SYSTEM (50)",
    ] {
        value(&c, sql).await;
        assert!(!is_hit(&gw, &c, sql).await, "{sql} was answered from the cache");
    }
    assert!(bypassed(&gw, "tablesample") >= 4);
    let repeatable = "SELECT count(*) FROM t TABLESAMPLE BERNOULLI (50) REPEATABLE (7)";
    value(&c, repeatable).await;
    assert!(is_hit(&gw, &c, repeatable).await, "a REPEATABLE sample is deterministic");
    // 'now' as a bound parameter value is the time the statement runs.
    let time_literals = bypassed(&gw, "time_literal");
    let bound = "SELECT $1::text::timestamptz::text";
    let first: String = c.query_one(bound, &[&" Now "]).await.unwrap().get(0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second: String = c.query_one(bound, &[&" Now "]).await.unwrap().get(0);
    assert_ne!(first, second, "'now' bound as a parameter was answered from the cache");
    assert_eq!(bypassed(&gw, "time_literal"), time_literals + 2);
    // Read from a column or an expression (helper-131: a text column holding 'now').
    c.batch_execute("CREATE TABLE due_at (due text); INSERT INTO due_at VALUES ('now')").await.unwrap();
    wait_cache_catalog(&gw, "due_at").await;
    let casts = bypassed(&gw, "time_input_cast");
    for sql in ["SELECT due::timestamptz::text FROM due_at", "SELECT ('n' || 'ow')::timestamp::text"] {
        let first = value(&c, sql).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_ne!(first, value(&c, sql).await, "{sql} was answered from the cache");
    }
    assert_eq!(bypassed(&gw, "time_input_cast"), casts + 4);
    // The same words beside a time or inside a range or an array, in the text or bound.
    for sql in ["SELECT '[now,infinity)'::tstzrange::text", "SELECT '{now}'::timestamptz[]::text"] {
        let first = value(&c, sql).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_ne!(first, value(&c, sql).await, "{sql} was answered from the cache");
    }
    let ranged = "SELECT $1::text::tstzrange::text";
    let first: String = c.query_one(ranged, &[&"[now,infinity)"]).await.unwrap().get(0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second: String = c.query_one(ranged, &[&"[now,infinity)"]).await.unwrap().get(0);
    assert_ne!(first, second, "a range from 'now' bound as a parameter was answered from the cache");
    let today = "SELECT 'today 10:00'::timestamp::text";
    value(&c, today).await;
    assert!(!is_hit(&gw, &c, today).await, "'today 10:00' was answered from the cache");
    let other: String = c.query_one(bound, &[&"2024-01-01 00:00:00+00"]).await.unwrap().get(0);
    let before = hits(&gw);
    let again: String = c.query_one(bound, &[&"2024-01-01 00:00:00+00"]).await.unwrap().get(0);
    assert_eq!((other, hits(&gw)), (again, before + 1), "another value is cached");
}

/// A text column converted to a composite with a date/time attribute (a ROW cast, a cast of the
/// text itself) or read through XMLTABLE as a date/time column reads 'now' as the time the
/// statement runs: never frozen in the cache (helper-190).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_converted_to_composites_of_time_types_is_not_cached() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE tx (s text); INSERT INTO tx VALUES ('now'); \
         CREATE TYPE comp AS (t timestamptz); CREATE TYPE comp2 AS (a int, t timestamptz); \
         CREATE VIEW txv AS SELECT s FROM tx",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "txv").await;
    let c = connect(&gw).await;
    let casts = bypassed(&gw, "time_input_cast");
    let reads = [
        "SELECT row(s)::comp::text FROM tx",
        "SELECT cast(row(s) AS comp)::text FROM tx",
        "SELECT array[row(s)]::comp[]::text FROM tx",
        "SELECT row(1, s)::comp2::text FROM tx",
        "SELECT (1, s)::comp2::text FROM tx",
        "SELECT row(s)::comp::text FROM txv",
        "SELECT s::comp::text FROM (SELECT '(' || s || ')' AS s FROM tx) q",
        "SELECT t::text FROM tx, xmltable('/a' PASSING xmlparse(document '<a>' || s || '</a>') \
         COLUMNS t timestamptz PATH '.') q",
    ];
    for sql in reads {
        let first = value(&c, sql).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_ne!(first, value(&c, sql).await, "{sql} was answered from the cache");
    }
    assert_eq!(bypassed(&gw, "time_input_cast"), casts + 2 * reads.len() as u64);
    let constant = "SELECT row(1, '2024-01-01 00:00+00')::comp2::text FROM tx";
    value(&c, constant).await;
    assert!(is_hit(&gw, &c, constant).await, "a row of constants is cached");
}

/// Reads inside an explicit transaction are counted as bypassed `in_transaction`, and a manual
/// invalidation of a table that does not exist is refused without dropping anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_in_transactions_are_counted_and_unknown_tables_refused() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE t (id int, v int); INSERT INTO t VALUES (1, 0)");
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "t").await;
    let mut c = connect(&gw).await;
    let read = "SELECT v FROM t WHERE id = 1";
    let before = bypassed(&gw, "in_transaction");
    c.simple_query(&format!("BEGIN; {read}")).await.unwrap();
    c.simple_query(read).await.unwrap();
    c.simple_query("COMMIT").await.unwrap();
    let txn = c.transaction().await.unwrap();
    txn.query(read, &[]).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(bypassed(&gw, "in_transaction"), before + 2, "one simple and one extended read");

    value(&c, read).await;
    assert!(is_hit(&gw, &c, read).await);
    let http = gw.http_addr().unwrap();
    let answer = ureq::post(&format!("http://{http}/api/v1/cache/invalidate"))
        .header("content-type", "application/json")
        .send(r#"{"table": "public.nope"}"#);
    assert!(matches!(answer, Err(ureq::Error::StatusCode(404))), "an unknown table is not found: {answer:?}");
    let console = psql(&gw, "pgpilot", "INVALIDATE CACHE TABLE nope").unwrap_err();
    assert!(console.contains("no such table: nope"), "{console}");
    assert!(is_hit(&gw, &c, read).await, "nothing was dropped");
    let answer = ureq::post(&format!("http://{http}/api/v1/cache/invalidate"))
        .header("content-type", "application/json")
        .send(r#"{"table": "t"}"#)
        .expect("a known table")
        .into_body()
        .read_to_string()
        .unwrap();
    assert_eq!(answer, r#"{"invalidated":1}"#, "one database had it");
    assert!(!is_hit(&gw, &c, read).await);
}

/// A search_path the server gives sessions (ALTER DATABASE / ROLE ... SET search_path) that the
/// client never set: pgpilot does not know which table an unqualified name is, so such reads are
/// not cached, and a write to the table the name meant is never missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_path_set_on_the_server_is_not_guessed() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE SCHEMA s2; CREATE TABLE s2.thing (v int); INSERT INTO s2.thing VALUES (1); \
         CREATE TABLE public.thing (v int); INSERT INTO public.thing VALUES (100); \
         ALTER DATABASE postgres SET search_path = s2, public",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "thing").await;
    let c = connect(&gw).await;
    assert_eq!(value(&c, "SELECT v FROM thing").await, "1", "the server's search_path");
    value(&c, "SELECT v FROM thing").await;
    c.batch_execute("UPDATE s2.thing SET v = 2").await.unwrap();
    assert_eq!(value(&c, "SELECT v FROM thing").await, "2", "a stale cached read");
    // A client that sets its search_path itself is cached as before.
    c.batch_execute("SET search_path = s2").await.unwrap();
    value(&c, "SELECT v FROM thing").await;
    assert!(
        is_hit(&gw, &c, "SELECT v FROM thing").await,
        "an explicit search_path is known: {}",
        pgpilot_gateway::cache::api::stats_json(gw.shared())
    );
    gw.shutdown().await;
}

/// Reads answered from the cache count in the workload statistics as calls that ran in the cache,
/// with their rows, in both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_count_in_the_statement_statistics() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE counted (id int); INSERT INTO counted VALUES (1), (2), (3)");
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "counted").await;
    let c = connect(&gw).await;
    for _ in 0..5 {
        value(&c, "SELECT id FROM counted WHERE id < 10").await;
    }
    let stmt = c.prepare("SELECT id FROM counted WHERE id > $1").await.unwrap();
    for _ in 0..5 {
        assert_eq!(c.query(&stmt, &[&0i32]).await.unwrap().len(), 3);
    }
    let snap = gw.shared().insight.snapshot();
    for text in ["SELECT id FROM counted WHERE id < $1", "SELECT id FROM counted WHERE id > $1"] {
        let entry = snap.statements.iter().find(|s| &*s.query == text);
        let c = &entry.unwrap_or_else(|| panic!("no {text:?} in {:#?}", snap.statements)).counters;
        assert_eq!(c.calls, 5, "{text}: {c:?}");
        assert!(c.cache >= 3, "{text}: hits not counted: {c:?}");
        assert_eq!(c.cache + c.primary, 5, "{text}: {c:?}");
        assert_eq!(c.rows, 15, "{text}: {c:?}");
    }
    gw.shutdown().await;
}

/// A search_path set for one role does not stop caching for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_roles_search_path_leaves_caching_on() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE SCHEMA s2; CREATE TABLE thing (v int); INSERT INTO thing VALUES (1); \
         CREATE ROLE other LOGIN; ALTER ROLE other SET search_path = s2, public",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "thing").await;
    let c = connect(&gw).await;
    value(&c, "SELECT v FROM thing").await;
    assert!(is_hit(&gw, &c, "SELECT v FROM thing").await, "postgres's reads are no longer cached");
    gw.shutdown().await;
}

/// A write under a search_path changed for the transaction only, or earlier in the same query,
/// invalidates what it wrote: the cache does not resolve its names with the session's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_under_a_transaction_local_search_path_invalidate_what_they_wrote() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE SCHEMA s2; CREATE TABLE s2.counter (v int); INSERT INTO s2.counter VALUES (0); \
         CREATE TABLE public.counter (v int); INSERT INTO public.counter VALUES (100)",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "counter").await;
    let reader = connect(&gw).await;
    let writer = connect(&gw).await;
    let writes = [
        "BEGIN; SET LOCAL search_path = s2, public; UPDATE counter SET v = v + 1; COMMIT",
        "BEGIN; SELECT set_config('search_path', 's2, public', true); UPDATE counter SET v = v + 1; COMMIT",
        "SELECT set_config('search_path', 's2, public', false); UPDATE counter SET v = v + 1",
    ];
    for (i, write) in writes.iter().enumerate() {
        value(&reader, "SELECT v FROM s2.counter").await;
        assert!(is_hit(&gw, &reader, "SELECT v FROM s2.counter").await, "the read is cached");
        writer.batch_execute(write).await.unwrap();
        writer.batch_execute("RESET search_path").await.unwrap();
        assert_eq!(
            value(&reader, "SELECT v FROM s2.counter").await,
            (i + 1).to_string(),
            "stale after: {write}"
        );
    }
    // The same as separate requests of one transaction.
    value(&reader, "SELECT v FROM s2.counter").await;
    for statement in ["BEGIN", "SET LOCAL search_path = s2, public", "UPDATE counter SET v = v + 1", "COMMIT"]
    {
        writer.batch_execute(statement).await.unwrap();
    }
    assert_eq!(
        value(&reader, "SELECT v FROM s2.counter").await,
        "4",
        "stale after a transaction's SET LOCAL"
    );
    gw.shutdown().await;
}

/// asyncpg's fetchrow runs Execute with a row limit of one, then Sync: outside a transaction the
/// portal is gone after it, so the answer (rows, then PortalSuspended once the limit is reached)
/// is complete and is cached under a key with the limit. Inside a transaction it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_execute_ended_by_sync_is_cached_outside_transactions() {
    use tokio::io::AsyncWriteExt;
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE three (v int); INSERT INTO three VALUES (1), (2), (3)");
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "three").await;
    let mut c = raw_login(addr(&gw)).await;
    let limited = |sql: &str, rows: u8| {
        let mut batch = message(b'P', format!("\0{sql}\0\0\0").as_bytes());
        batch.extend(message(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
        batch.extend(message(b'E', &[0, 0, 0, 0, rows]));
        batch.extend(message(b'S', &[]));
        batch
    };
    let answer = |got: Vec<u8>| {
        backend_messages(&got).iter().filter(|(t, _)| *t != b'S').map(|(t, _)| *t).collect::<Vec<u8>>()
    };
    let before = hits(&gw);
    for _ in 0..3 {
        c.write_all(&limited("SELECT v FROM three ORDER BY v", 1)).await.unwrap();
        assert_eq!(answer(read_until_ready(&mut c).await), b"12DsZ", "one row, then PortalSuspended");
    }
    assert_eq!(hits(&gw) - before, 2, "the limited answer was not cached");
    // Another limit is another answer.
    c.write_all(&limited("SELECT v FROM three ORDER BY v", 2)).await.unwrap();
    assert_eq!(answer(read_until_ready(&mut c).await), b"12DDsZ");
    // Inside a transaction the portal outlives the Sync: never from the cache.
    c.write_all(&message(b'Q', b"BEGIN READ ONLY\0")).await.unwrap();
    read_until_answered(&mut c).await;
    let before = hits(&gw);
    c.write_all(&limited("SELECT v FROM three ORDER BY v", 1)).await.unwrap();
    assert_eq!(answer(read_until_answered(&mut c).await), b"12DsZ");
    assert_eq!(hits(&gw), before);
    c.write_all(&message(b'Q', b"COMMIT\0")).await.unwrap();
    read_until_ready(&mut c).await;
    gw.shutdown().await;
}

/// Raw protocol: reads until a ReadyForQuery, whatever the transaction status.
async fn read_until_answered(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while backend_messages(&got).last().is_none_or(|(t, _)| *t != b'Z') {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// A write hidden behind a user operator, a view, a domain's CHECK or an aggregate's transition
/// function runs every time (never answered from the cache), and drops cached reads of what it may
/// have written, sent with the simple or the extended protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_writes_are_never_skipped_and_invalidate_cached_reads() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)");
    cluster.psql("postgres", HIDDEN_WRITERS);
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "log").await;
    let c = connect(&gw).await;
    let logged = || cluster.psql("postgres", "SELECT count(*) FROM log").parse::<u32>().unwrap();
    let read = "SELECT count(*) FROM log";
    let mut expected = 0;
    for sql in ["SELECT 1 ### 2", "SELECT * FROM v_wr", "SELECT 1::dw", "SELECT wagg(id) FROM t"] {
        for extended in [false, true] {
            assert_eq!(value(&c, read).await, expected.to_string(), "before {sql}");
            assert!(is_hit(&gw, &c, read).await, "the count is cached");
            for _ in 0..2 {
                if extended {
                    c.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql} (extended): {e}"));
                } else {
                    value(&c, sql).await;
                }
                expected += 1;
                assert_eq!(logged(), expected, "{sql} was answered without running (extended: {extended})");
            }
            assert_eq!(
                value(&c, read).await,
                expected.to_string(),
                "{sql} left a stale count (extended: {extended})"
            );
        }
    }
}

/// A client whose notices and warnings are handed over as they come.
async fn connect_hearing_notices(
    gw: &Gateway,
) -> (tokio_postgres::Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use futures::StreamExt;
    let conninfo = conninfo(gw, "postgres", "postgres");
    let (client, mut conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notice(notice) = message {
                let _ = tx.send(notice.message().to_string());
            }
        }
    });
    (client, rx)
}

/// The notices and warnings a read raises are part of its answer: a hit says them again, in both
/// protocols, as PostgreSQL says them at every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_repeats_the_warnings_of_the_read() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE kv (id int PRIMARY KEY, v int); INSERT INTO kv VALUES (1, 7); \
         CREATE FUNCTION noisy(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql \
         AS $$ BEGIN RAISE WARNING 'noisy %', x; RETURN x; END $$",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "kv").await;
    let (c, mut notices) = connect_hearing_notices(&gw).await;
    let heard = |notices: &mut tokio::sync::mpsc::UnboundedReceiver<String>| notices.try_recv().ok();
    let simple = "SELECT noisy(v) FROM kv WHERE id = 1";
    let before = hits(&gw);
    for run in 0..3 {
        assert_eq!(value(&c, simple).await, "7");
        assert_eq!(heard(&mut notices).as_deref(), Some("noisy 7"), "simple protocol, run {run}");
    }
    let extended = "SELECT noisy(v) FROM kv WHERE id = $1";
    for run in 0..3 {
        let row = c.query_one(extended, &[&1i32]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 7);
        assert_eq!(heard(&mut notices).as_deref(), Some("noisy 7"), "extended protocol, run {run}");
    }
    assert_eq!(hits(&gw), before + 4, "the later runs of each were hits");
    assert_eq!(heard(&mut notices), None, "each warning was said once per run");
}

/// Reads through pgpilot and straight from PostgreSQL agree on `read` after `write`, the read
/// having been cached before it.
async fn fresh_after(gw: &Gateway, c: &tokio_postgres::Client, cluster: &Cluster, read: &str, write: &str) {
    value(c, read).await;
    assert!(is_hit(gw, c, read).await, "{read} is cached before {write}");
    c.simple_query(write).await.unwrap_or_else(|e| panic!("{write}: {e}"));
    assert_eq!(value(c, read).await, cluster.psql("postgres", read), "{read} stale after {write}");
}

/// A write whose table runs no code of its own but reaches one that does: a cascading foreign key
/// (ON DELETE and ON UPDATE) to a table with a trigger, an updatable view over one, a partitioned
/// or inheritance parent whose child has one, a column whose domain's CHECK calls a writing
/// function. What that code changes must be invalidated (no triggers of pgpilot installed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_reach_code_on_other_tables_invalidate_what_it_changes() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE code_log (n int);
         CREATE FUNCTION logged() RETURNS trigger LANGUAGE plpgsql
           AS $$BEGIN INSERT INTO code_log VALUES (1); RETURN NULL; END$$;
         CREATE TABLE a (id int PRIMARY KEY);
         CREATE TABLE b (id int, a_id int REFERENCES a ON DELETE CASCADE ON UPDATE CASCADE);
         CREATE TRIGGER b_log AFTER DELETE OR UPDATE ON b FOR EACH ROW EXECUTE FUNCTION logged();
         INSERT INTO a VALUES (1), (2); INSERT INTO b VALUES (1, 1), (2, 2);
         CREATE TABLE vt (id int);
         CREATE TRIGGER vt_log AFTER INSERT ON vt FOR EACH ROW EXECUTE FUNCTION logged();
         CREATE VIEW vv AS SELECT id FROM vt;
         CREATE TABLE p (k int) PARTITION BY RANGE (k);
         CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100);
         CREATE TRIGGER p1_log AFTER INSERT ON p1 FOR EACH ROW EXECUTE FUNCTION logged();
         CREATE TABLE ih (v int); CREATE TABLE ih_c () INHERITS (ih); INSERT INTO ih_c VALUES (0);
         CREATE TRIGGER ih_log AFTER UPDATE ON ih_c FOR EACH ROW EXECUTE FUNCTION logged();
         CREATE FUNCTION checked(int) RETURNS bool LANGUAGE plpgsql VOLATILE
           AS $$BEGIN INSERT INTO code_log VALUES ($1); RETURN true; END$$;
         CREATE DOMAIN dpos AS int CHECK (checked(VALUE)); CREATE DOMAIN dpos2 AS dpos;
         CREATE TABLE dt (v dpos2)",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "dt").await;
    let c = connect(&gw).await;
    let read = "SELECT count(*) FROM code_log";
    for write in [
        "DELETE FROM a WHERE id = 1",
        "UPDATE a SET id = 3 WHERE id = 2",
        "INSERT INTO vv VALUES (1)",
        "INSERT INTO p VALUES (5)",
        "UPDATE ih SET v = v + 1",
        "INSERT INTO dt VALUES (7)",
    ] {
        fresh_after(&gw, &c, &cluster, read, write).await;
    }
    // The rows a cascade changed are invalidated too.
    fresh_after(&gw, &c, &cluster, "SELECT count(*) FROM b", "DELETE FROM a").await;
}

/// Code a statement runs without naming it as a user function: `a.bumpit` is the call `bumpit(a)`
/// (attribute notation), `length(5)` is public.length(integer) over the built-in, query_to_xml and
/// ts_stat run the query they are given. Each writes: it invalidates, and a volatile call is
/// never answered from the cache; an immutable attribute-notation call still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_called_without_a_plain_user_function_name_invalidates() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE code_log (n int);
         CREATE TABLE att (id int); INSERT INTO att VALUES (1);
         CREATE FUNCTION bumpit(att) RETURNS bigint LANGUAGE plpgsql VOLATILE
           AS $$BEGIN INSERT INTO code_log VALUES ($1.id); RETURN (SELECT count(*) FROM code_log); END$$;
         CREATE FUNCTION doubled(att) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1.id * 2';
         CREATE FUNCTION public.length(integer) RETURNS int LANGUAGE plpgsql VOLATILE
           AS $$BEGIN INSERT INTO code_log VALUES ($1); RETURN $1; END$$",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "att").await;
    let c = connect(&gw).await;
    let read = "SELECT count(*) FROM code_log";
    for write in [
        "SELECT a.bumpit FROM att a",
        "SELECT (att).bumpit FROM att",
        "SELECT length(5)",
        "SELECT query_to_xml('SELECT bumpit(att) FROM att', true, false, '')",
        "SELECT * FROM ts_stat('SELECT to_tsvector(bumpit(att)::text) FROM att')",
        "SELECT query_to_xml_and_xmlschema('SELECT bumpit(att) FROM att', true, false, '')",
    ] {
        fresh_after(&gw, &c, &cluster, read, write).await;
    }
    let call = "SELECT att.bumpit FROM att";
    let first: i64 = value(&c, call).await.parse().unwrap();
    assert_eq!(value(&c, call).await, (first + 1).to_string(), "a volatile call was answered from the cache");
    let pure = "SELECT a.doubled FROM att a";
    assert_eq!(value(&c, pure).await, "2");
    assert!(is_hit(&gw, &c, pure).await, "an immutable attribute-notation call is cached");
}

/// A partitioned or inheritance parent with a foreign child, and a view over one: its rows change
/// on the other side, out of sight of any write: never cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_reaching_a_foreign_table_are_not_cached() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.csv");
    std::fs::write(&file, "1\n").unwrap();
    let mut perms = std::fs::metadata(dir.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(dir.path(), perms).unwrap();
    let options = format!("OPTIONS (filename '{}', format 'csv')", file.display());
    cluster.psql(
        "postgres",
        &format!(
            "CREATE EXTENSION file_fdw; CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
             CREATE TABLE fp (id int) PARTITION BY LIST (id);
             CREATE FOREIGN TABLE fp_f PARTITION OF fp FOR VALUES IN (1, 2, 3) SERVER files {options};
             CREATE TABLE finh (id int); CREATE FOREIGN TABLE finh_c () INHERITS (finh) SERVER files {options};
             CREATE VIEW vfp AS SELECT id FROM fp;
             CREATE VIEW vff AS SELECT id FROM fp_f"
        ),
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "vff").await;
    let c = connect(&gw).await;
    let reads = ["SELECT count(*) FROM fp", "SELECT count(*) FROM finh", "SELECT count(*) FROM vfp"];
    for read in reads.iter().chain(&["SELECT count(*) FROM vff"]) {
        let before = bypassed(&gw, "foreign_table");
        assert_eq!(value(&c, read).await, "1");
        assert!(!is_hit(&gw, &c, read).await, "{read} was cached");
        assert_eq!(bypassed(&gw, "foreign_table"), before + 2, "{read}");
    }
    std::fs::write(&file, "1\n2\n3\n").unwrap();
    for read in reads {
        assert_eq!(value(&c, read).await, "3", "{read} after the file changed");
    }
}

/// DDL made straight in PostgreSQL, without pgpilot's event trigger: a cascading foreign key added
/// there, a delete through pgpilot judged by the catalog held (it knew of no cascade). Once the
/// catalog is read again, what was cached under the old one goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_read_again_drops_results_its_changes_affect() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE fa (id int PRIMARY KEY); CREATE TABLE fb (fa_id int);
         INSERT INTO fa VALUES (1), (2); INSERT INTO fb VALUES (1), (2)",
    );
    let gw = start(cache_config(&cluster)).await;
    wait_cache_catalog(&gw, "fb").await;
    let c = connect(&gw).await;
    let read = "SELECT count(*) FROM fb";
    assert_eq!(value(&c, read).await, "2");
    assert!(is_hit(&gw, &c, read).await);
    cluster.psql("postgres", "ALTER TABLE fb ADD FOREIGN KEY (fa_id) REFERENCES fa ON DELETE CASCADE");
    c.simple_query("DELETE FROM fa WHERE id = 1").await.unwrap();
    // The reload the monitor makes every minute, asked for now.
    let db = gw.shared().database("postgres").unwrap();
    db.cache.want_catalog();
    let reloaded = eventually(Duration::from_secs(20), || {
        !db.cache.catalog_stale()
            && db
                .cache
                .relations
                .load()
                .relations()
                .iter()
                .any(|r| r.name == "fa" && !r.cascades_to.is_empty())
    })
    .await;
    assert!(reloaded, "the catalog was not read again");
    assert_eq!(value(&c, read).await, "1", "a result cached before the foreign key was added is stale");
    // Reads of tables the DDL did not touch are cached again from then on.
    assert!(is_hit(&gw, &c, read).await);
}
