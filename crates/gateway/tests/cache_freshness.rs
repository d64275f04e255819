//! The version-bound freshness checker. Rows carry a version bumped by every write; a writer
//! records each version once its commit is acknowledged; a reader notes, before it sends its
//! read, the highest version acknowledged so far for its row, and its read must return at least
//! that. Writes come through the same pgpilot, through a second pgpilot sharing Redis, and
//! straight to PostgreSQL (caught by the triggers of `pgpilot cache install-triggers`).
//! `strict`: zero stale reads whatever the writer. `bounded`: zero stale reads for writes through
//! the same instance, and the measured staleness (p99, max) for the others, printed.
//! Also: Redis stopped mid-run, reads keep working (uncached) and stay fresh.

mod common;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use parking_lot::Mutex;
use pgpilot_gateway::config::cache::Consistency;
use pgpilot_gateway::config::{Config, Secs};
use pgpilot_gateway::Gateway;
use pgpilot_testkit::{Cluster, RedisCluster, RedisServer};
use rand::Rng;

const KEYS: i32 = 20;

fn cluster() -> Cluster {
    let c = Cluster::builder().setting("synchronous_commit = off").setting("max_connections = 200").start();
    c.psql(
        "postgres",
        &format!(
            "CREATE TABLE fresh (id int PRIMARY KEY, version bigint NOT NULL); \
             INSERT INTO fresh SELECT g, 0 FROM generate_series(0, {}) g",
            KEYS - 1
        ),
    );
    c.psql("postgres", pgpilot_gateway::cache::triggers::INSTALL_SQL);
    c
}

fn config(cluster: &Cluster, redis_url: String, consistency: Consistency) -> Config {
    let mut c = config_for(cluster);
    c.pgpilot.default_pool_size = 12;
    c.cache.redis_url = Some(redis_url);
    let db = c.databases.get_mut("postgres").unwrap();
    db.cache.enabled = true;
    db.cache.consistency = consistency;
    db.routing.health_check_interval = Secs::from_millis(200);
    db.routing.lag_check_interval = Secs::from_millis(200);
    c
}

/// Waits until the cache of `gw` may serve: catalog loaded, LISTEN and Redis links up.
async fn ready(gw: &Gateway) {
    let db = gw.shared().database("postgres").unwrap();
    let shared = gw.shared().clone();
    let ok = eventually(Duration::from_secs(30), || {
        db.cache.catalog_loaded.load(Relaxed)
            && !db.cache.catalog_stale()
            && db.cache.channel.required()
            && db.cache.channel.serving()
            && shared.cache.redis.state.summary().up
            && !db.functions.load().is_empty()
    })
    .await;
    assert!(
        ok,
        "the cache of a gateway never became ready: {}",
        pgpilot_gateway::cache::api::stats_json(gw.shared())
    );
}

/// What writers acknowledged, per row.
struct Acks {
    max: Vec<AtomicI64>,
    /// (version, when its commit was acknowledged), per row.
    log: Vec<Mutex<Vec<(i64, Instant)>>>,
}

impl Acks {
    fn new() -> Arc<Acks> {
        Arc::new(Acks {
            max: (0..KEYS).map(|_| AtomicI64::new(0)).collect(),
            log: (0..KEYS).map(|_| Mutex::new(Vec::new())).collect(),
        })
    }

    fn acked(&self, key: i32, version: i64) {
        self.log[key as usize].lock().push((version, Instant::now()));
        self.max[key as usize].fetch_max(version, SeqCst);
    }

    /// How long before `read_start` the first version newer than `seen` was acknowledged.
    fn staleness(&self, key: i32, seen: i64, read_start: Instant) -> Duration {
        let log = self.log[key as usize].lock();
        let first_missed = log.iter().filter(|(v, _)| *v > seen).map(|(_, t)| *t).min();
        first_missed.map(|t| read_start.saturating_duration_since(t)).unwrap_or_default()
    }
}

async fn writer(
    client: tokio_postgres::Client,
    acks: Arc<Acks>,
    keys: Range<i32>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let stmt = client
        .prepare("UPDATE fresh SET version = version + 1 WHERE id = $1 RETURNING version")
        .await
        .unwrap();
    let mut n = 0;
    while !stop.load(Relaxed) {
        let key = rand::thread_rng().gen_range(keys.clone());
        let row = client.query_one(&stmt, &[&key]).await.expect("write");
        acks.acked(key, row.get(0));
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n
}

#[derive(Default)]
struct ReadResult {
    reads: u64,
    stale: u64,
    /// Stale reads of rows only the same instance writes.
    stale_same_instance: u64,
    staleness: Vec<Duration>,
}

async fn reader(
    client: tokio_postgres::Client,
    acks: Arc<Acks>,
    same_instance: Range<i32>,
    left: Arc<AtomicU64>,
) -> ReadResult {
    let stmt = client.prepare("SELECT version FROM fresh WHERE id = $1").await.unwrap();
    let mut r = ReadResult::default();
    loop {
        if left.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_err() {
            return r;
        }
        let key = rand::thread_rng().gen_range(0..KEYS);
        let floor = acks.max[key as usize].load(SeqCst);
        let start = Instant::now();
        let seen: i64 = if r.reads % 2 == 0 {
            client.query_one(&stmt, &[&key]).await.expect("extended read").get(0)
        } else {
            let rows = client
                .simple_query(&format!("SELECT version FROM fresh WHERE id = {key}"))
                .await
                .expect("simple read");
            rows.iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse().ok()),
                    _ => None,
                })
                .expect("a row")
        };
        r.reads += 1;
        if seen < floor {
            r.stale += 1;
            if same_instance.contains(&key) {
                r.stale_same_instance += 1;
            }
            r.staleness.push(acks.staleness(key, seen, start));
        }
    }
}

struct Run {
    reads: u64,
    writes: u64,
    stale: u64,
    stale_same_instance: u64,
    staleness: Vec<Duration>,
    hit_rate: f64,
}

/// Readers on `a` (and `b`); writers on `a` for rows 0..10, and on `others` (a second gateway,
/// PostgreSQL itself) for rows 10..20.
async fn run(a: &Gateway, b: Option<&Gateway>, others: Vec<String>, reads: u64) -> Run {
    let acks = Acks::new();
    let stop = Arc::new(AtomicBool::new(false));
    let left = Arc::new(AtomicU64::new(reads));
    let hits_before = a.shared().cache.stats.hits.load(Relaxed);
    let misses_before = a.shared().cache.stats.misses.load(Relaxed);
    let mut writers = Vec::new();
    let same = 0..KEYS / 2;
    for _ in 0..2 {
        writers.push(tokio::spawn(writer(connect(a).await, acks.clone(), same.clone(), stop.clone())));
    }
    for conninfo in &others {
        let client = try_connect(conninfo).await.expect("connecting a writer");
        writers.push(tokio::spawn(writer(client, acks.clone(), KEYS / 2..KEYS, stop.clone())));
    }
    let mut readers = Vec::new();
    for i in 0..8 {
        let on = if i % 2 == 1 { b.unwrap_or(a) } else { a };
        readers.push(tokio::spawn(reader(connect(on).await, acks.clone(), same.clone(), left.clone())));
    }
    let mut run =
        Run { reads: 0, writes: 0, stale: 0, stale_same_instance: 0, staleness: Vec::new(), hit_rate: 0.0 };
    for r in readers {
        let r = r.await.unwrap();
        run.reads += r.reads;
        run.stale += r.stale;
        run.stale_same_instance += r.stale_same_instance;
        run.staleness.extend(r.staleness);
    }
    stop.store(true, Relaxed);
    for w in writers {
        run.writes += w.await.unwrap();
    }
    let hits = a.shared().cache.stats.hits.load(Relaxed) - hits_before;
    let misses = a.shared().cache.stats.misses.load(Relaxed) - misses_before;
    run.hit_rate = hits as f64 / (hits + misses).max(1) as f64;
    run.staleness.sort();
    run
}

fn report(name: &str, r: &Run) {
    let pct =
        |p: usize| r.staleness.get((r.staleness.len() * p / 100).min(r.staleness.len().saturating_sub(1)));
    println!(
        "{name}: {} reads, {} writes, hit rate {:.1}%, stale reads {} (same-instance rows {}), staleness p99 {:?} max {:?}",
        r.reads,
        r.writes,
        r.hit_rate * 100.0,
        r.stale,
        r.stale_same_instance,
        pct(99).copied().unwrap_or_default(),
        r.staleness.last().copied().unwrap_or_default(),
    );
}

/// PostgreSQL with the triggers, Redis, and two pgpilot instances sharing both, ready to serve.
async fn two_instances(consistency: Consistency) -> (Cluster, RedisServer, Gateway, Gateway) {
    let cluster = cluster();
    let redis = RedisServer::start();
    let a = start(config(&cluster, redis.url(), consistency)).await;
    let b = start(config(&cluster, redis.url(), consistency)).await;
    ready(&a).await;
    ready(&b).await;
    (cluster, redis, a, b)
}

fn direct(cluster: &Cluster) -> String {
    format!("{} sslmode=disable", cluster.conninfo("postgres", "postgres"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_is_never_stale_whoever_writes() {
    let (cluster, _redis, a, b) = two_instances(Consistency::Strict).await;
    let r = run(&a, Some(&b), vec![conninfo(&b, "postgres", "postgres"), direct(&cluster)], 40_000).await;
    report(
        "strict, readers on A and B (results shared through Redis), writers through A, B and PostgreSQL",
        &r,
    );
    println!("shared tier on B: {}", pgpilot_gateway::cache::api::stats_json(b.shared())["redis"]);
    assert_eq!(r.stale, 0, "strict served a stale read");
    // About 15-19% alone; the full suite's load on two cores has brought it under 10%, and once,
    // with other work on the machine, to 4.8%. Strict that never hits measures about 0.
    assert!(r.hit_rate > 0.02, "strict hardly hit: {:.3}", r.hit_rate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_same_instance_is_never_stale_and_others_are_measured() {
    let (cluster, _redis, a, b) = two_instances(Consistency::Bounded).await;
    let r = run(&a, None, vec![], 30_000).await;
    report("bounded, writers through the same pgpilot", &r);
    assert_eq!(r.stale, 0, "bounded served a stale read after a write through the same pgpilot");
    let r = run(&a, None, vec![conninfo(&b, "postgres", "postgres"), direct(&cluster)], 35_000).await;
    report("bounded, writers through A (rows 0-9), B and PostgreSQL (rows 10-19)", &r);
    assert_eq!(r.stale_same_instance, 0, "stale read of a row written through the same pgpilot");
    assert!(r.hit_rate > 0.1, "bounded hardly hit: {:.3}", r.hit_rate);
    let max = r.staleness.last().copied().unwrap_or_default();
    assert!(max < Duration::from_secs(2), "staleness beyond the notification delay: {max:?}");
    let delay = pgpilot_gateway::cache::api::stats_json(a.shared());
    println!("notification delays: {}", delay["databases"][0]["notification_delay_ms"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_reads_keep_working_uncached() {
    let cluster = cluster();
    let mut redis = RedisServer::start();
    let a = start(config(&cluster, redis.url(), Consistency::Bounded)).await;
    ready(&a).await;
    let c = connect(&a).await;
    let read = || async {
        let v: i64 = c.query_one("SELECT version FROM fresh WHERE id = $1", &[&1i32]).await.unwrap().get(0);
        v
    };
    assert_eq!(read().await, 0);
    assert_eq!(read().await, 0);
    let hits = a.shared().cache.stats.hits.load(Relaxed);
    assert!(hits >= 1);
    redis.stop();
    let shared = a.shared().clone();
    assert!(
        eventually(Duration::from_secs(10), || !shared.cache.serving()).await,
        "the Redis link never went down"
    );
    for i in 1..=20i64 {
        c.execute("UPDATE fresh SET version = $1 WHERE id = 1", &[&i]).await.unwrap();
        assert_eq!(read().await, i, "reads stay fresh with Redis down");
    }
    assert_eq!(
        a.shared().cache.stats.hits.load(Relaxed),
        hits,
        "nothing served from the cache while Redis is down"
    );
    let down: u64 = a
        .shared()
        .cache
        .stats
        .bypasses()
        .iter()
        .find(|(r, _)| *r == "invalidation_channel_down")
        .map(|(_, n)| *n)
        .unwrap();
    assert!(down >= 20);
    // What an operator's alert reads.
    let (_, metrics) = http_get(format!("http://{}/metrics", a.http_addr().unwrap())).await;
    assert!(metrics.contains("pgpilot_cache_redis_up 0"), "{metrics}");
    redis.restart();
    assert!(
        eventually(Duration::from_secs(15), || shared.cache.serving()).await,
        "the Redis link never came back"
    );
    read().await;
    assert_eq!(read().await, 20);
    assert!(a.shared().cache.stats.hits.load(Relaxed) > hits, "hits resume once Redis is back");
    let (_, metrics) = http_get(format!("http://{}/metrics", a.http_addr().unwrap())).await;
    assert!(metrics.contains("pgpilot_cache_redis_up 1"), "{metrics}");
}

/// The shared tier: a result one instance read is answered by another from Redis, and never after
/// a write the other instance has seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_shared_between_instances_through_redis() {
    let (_cluster, _redis, a, b) = two_instances(Consistency::Bounded).await;
    let ca = connect(&a).await;
    let cb = connect(&b).await;
    let sql = "SELECT version FROM fresh WHERE id = $1";
    // B takes only results read well after (clock skew allowance) it last dropped everything,
    // which it did when its links came up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v: i64 = ca.query_one(sql, &[&3i32]).await.unwrap().get(0);
    assert_eq!(v, 0);
    let shared_hits = |g: &Gateway| g.shared().cache.redis.l2_hits.load(Relaxed);
    // The SET to Redis is queued: give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fills_b = b.shared().cache.stats.fills.load(Relaxed);
    let v: i64 = cb.query_one(sql, &[&3i32]).await.unwrap().get(0);
    assert_eq!(v, 0);
    assert_eq!(
        shared_hits(&b),
        1,
        "B answered from the result A stored in Redis: {}",
        pgpilot_gateway::cache::api::stats_json(b.shared())["redis"]
    );
    assert_eq!(b.shared().cache.stats.fills.load(Relaxed), fills_b, "without reading it itself");
    // A write through B: B never takes the older shared result again.
    cb.execute("UPDATE fresh SET version = 1 WHERE id = 3", &[]).await.unwrap();
    let v: i64 = cb.query_one(sql, &[&3i32]).await.unwrap().get(0);
    assert_eq!(v, 1, "stale shared result after a write through the same instance");
    // A write through A reaches B by notification.
    ca.execute("UPDATE fresh SET version = 2 WHERE id = 3", &[]).await.unwrap();
    let mut seen: i64 = 0;
    for _ in 0..100 {
        seen = cb.query_one(sql, &[&3i32]).await.unwrap().get(0);
        if seen == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, 2, "B saw A's write within the notification delay");
}

/// helper-147: a result taken from Redis got a whole TTL of its own, so it lived up to twice the
/// TTL after the read that made it (the only bound on writes PostgreSQL's triggers do not see).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_result_expires_a_ttl_after_the_read_that_made_it() {
    let cluster = cluster();
    let redis = RedisServer::start();
    let with_ttl = || {
        let mut c = config(&cluster, redis.url(), Consistency::Bounded);
        c.databases.get_mut("postgres").unwrap().cache.ttl = Secs::from_secs(2);
        c
    };
    let a = start(with_ttl()).await;
    let b = start(with_ttl()).await;
    ready(&a).await;
    ready(&b).await;
    let (ca, cb) = (connect(&a).await, connect(&b).await);
    let sql = "SELECT version FROM fresh WHERE id = $1";
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _: i64 = ca.query_one(sql, &[&5i32]).await.unwrap().get(0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let _: i64 = cb.query_one(sql, &[&5i32]).await.unwrap().get(0);
    let shared_hits = b.shared().cache.redis.l2_hits.load(Relaxed);
    assert_eq!(shared_hits, 1, "B took A's result from Redis");
    // 2.2 s after A's read: B's copy has expired with A's, and B reads for itself.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let hits = b.shared().cache.stats.hits.load(Relaxed);
    let _: i64 = cb.query_one(sql, &[&5i32]).await.unwrap().get(0);
    assert_eq!(b.shared().cache.stats.hits.load(Relaxed), hits, "B's copy outlived the TTL");
    assert_eq!(b.shared().cache.redis.l2_hits.load(Relaxed), shared_hits, "nor taken from Redis again");
}

/// Against a Redis Cluster (`redis_cluster = true`): results are stored on and read from the node
/// that owns each key, and invalidations reach every instance through cluster-wide pub/sub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_shares_results_and_invalidations() {
    let cluster = cluster();
    let redis = RedisCluster::start(3);
    let config = || {
        let mut c = config(&cluster, redis.url(), Consistency::Bounded);
        c.cache.redis_cluster = true;
        c
    };
    let (a, b) = (start(config()).await, start(config()).await);
    ready(&a).await;
    ready(&b).await;
    let (ca, cb) = (connect(&a).await, connect(&b).await);
    let sql = "SELECT version FROM fresh WHERE id = $1";
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in 0..KEYS {
        assert_eq!(ca.query_one(sql, &[&id]).await.unwrap().get::<_, i64>(0), 0);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let holding: Vec<u64> = redis
        .nodes()
        .iter()
        .map(|n| {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &n.port().to_string(), "dbsize"])
                .output();
            String::from_utf8_lossy(&out.unwrap().stdout).trim().parse().unwrap_or(0)
        })
        .collect();
    assert!(
        holding.iter().filter(|&&n| n > 0).count() >= 2,
        "results not spread over the cluster: {holding:?}"
    );
    for id in 0..KEYS {
        assert_eq!(cb.query_one(sql, &[&id]).await.unwrap().get::<_, i64>(0), 0);
    }
    let shared_hits = b.shared().cache.redis.l2_hits.load(Relaxed);
    assert_eq!(shared_hits, KEYS as u64, "B read A's results from the cluster: {holding:?}");
    ca.execute("UPDATE fresh SET version = 5 WHERE id = 7", &[]).await.unwrap();
    let mut seen = 0i64;
    for _ in 0..100 {
        seen = cb.query_one(sql, &[&7i32]).await.unwrap().get(0);
        if seen == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, 5, "B saw A's write through the cluster's pub/sub");
}

/// DDL made straight in PostgreSQL (the event trigger `install-triggers` adds): a `strict` read
/// right after the DDL commits already sees the new shape; a `bounded` one as soon as the `ddl`
/// notification arrives. A temporary table flushes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_made_in_postgres_is_seen() {
    let cluster = cluster();
    let redis = RedisServer::start();
    let strict = start(config(&cluster, redis.url(), Consistency::Strict)).await;
    let bounded = start(config(&cluster, redis.url(), Consistency::Bounded)).await;
    ready(&strict).await;
    ready(&bounded).await;
    let sql = "SELECT * FROM fresh WHERE id = 1";
    let columns = |rows: Vec<tokio_postgres::SimpleQueryMessage>| {
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.len()),
                _ => None,
            })
            .unwrap()
    };
    let (cs, cb) = (connect(&strict).await, connect(&bounded).await);
    for c in [&cs, &cb] {
        assert_eq!(columns(c.simple_query(sql).await.unwrap()), 2);
        assert_eq!(columns(c.simple_query(sql).await.unwrap()), 2);
    }
    let hits = |g: &Gateway| g.shared().cache.stats.hits.load(Relaxed);
    assert!(hits(&strict) >= 1 && hits(&bounded) >= 1, "the reads were cached");
    let temp = tokio_postgres::connect(&direct(&cluster), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(temp.1);
    temp.0.batch_execute("CREATE TEMP TABLE scratch (x int)").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = hits(&bounded);
    assert_eq!(columns(cb.simple_query(sql).await.unwrap()), 2);
    assert_eq!(hits(&bounded), before + 1, "a temporary table flushed the cache");
    cluster.psql("postgres", "ALTER TABLE fresh ADD COLUMN note text DEFAULT 'x'");
    assert_eq!(
        columns(cs.simple_query(sql).await.unwrap()),
        3,
        "strict read served the shape from before the DDL"
    );
    let mut seen = 2;
    for _ in 0..100 {
        seen = columns(cb.simple_query(sql).await.unwrap());
        if seen == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, 3, "bounded read never saw the DDL");
}

/// A write through a partitioned parent, straight to PostgreSQL, bumps the parent's version only
/// (statement triggers fire on the table a statement names): a `strict` read of a partition
/// watches its ancestors, so it is never served from before that write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reads_of_a_partition_see_writes_through_its_parent() {
    let cluster = cluster();
    cluster.psql(
        "postgres",
        "CREATE TABLE part (id int, v text) PARTITION BY RANGE (id); \
         CREATE TABLE part_1 PARTITION OF part FOR VALUES FROM (0) TO (100); \
         INSERT INTO part VALUES (1, 'a')",
    );
    cluster.psql("postgres", pgpilot_gateway::cache::triggers::INSTALL_SQL);
    let redis = RedisServer::start();
    let strict = start(config(&cluster, redis.url(), Consistency::Strict)).await;
    ready(&strict).await;
    let c = connect(&strict).await;
    let count = async || -> String {
        let rows = c.simple_query("SELECT count(*) FROM part_1").await.unwrap();
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(count().await, "1");
    assert_eq!(count().await, "1");
    let hits = strict.shared().cache.stats.hits.load(Relaxed);
    assert!(hits >= 1, "the read was cached");
    cluster.psql("postgres", "INSERT INTO part VALUES (2, 'b')");
    assert_eq!(count().await, "2", "served from before a write through the parent");
    // Through pgpilot, too.
    c.batch_execute("INSERT INTO part VALUES (3, 'c')").await.unwrap();
    assert_eq!(count().await, "3");
}

/// Tables the triggers must reach however they were made: unlogged (cached like any other
/// table), and made inside CREATE SCHEMA (whose command tag is CREATE SCHEMA, not CREATE TABLE).
/// A write straight to PostgreSQL is then seen by the next `strict` read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reads_see_direct_writes_to_unlogged_tables_and_tables_made_with_their_schema() {
    let cluster = cluster();
    cluster.psql("postgres", "CREATE UNLOGGED TABLE early_unlogged (id int)");
    cluster.psql("postgres", pgpilot_gateway::cache::triggers::INSTALL_SQL);
    cluster.psql(
        "postgres",
        "CREATE UNLOGGED TABLE late_unlogged (id int); CREATE SCHEMA made CREATE TABLE inside (id int)",
    );
    let redis = RedisServer::start();
    let strict = start(config(&cluster, redis.url(), Consistency::Strict)).await;
    ready(&strict).await;
    let c = connect(&strict).await;
    for table in ["early_unlogged", "late_unlogged", "made.inside"] {
        let sql = format!("SELECT count(*)::bigint FROM {table}");
        let read = || async { c.query_one(sql.as_str(), &[]).await.unwrap().get::<_, i64>(0) };
        some_answered_from_the_cache(&strict, 4, 0, read).await;
        cluster.psql("postgres", &format!("INSERT INTO {table} VALUES (1)"));
        assert_eq!(read().await, 1, "{table}: a strict read served a result from before a direct write");
    }
}

/// A table without the trigger (its owner's role could not be acted for, or it was made before
/// an older install) while the triggers are installed: its writes straight to PostgreSQL would go
/// unheard, so its reads are not cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_a_table_without_the_trigger_are_not_cached() {
    let cluster = cluster();
    cluster.psql("postgres", "CREATE TABLE bare (id int); DROP TRIGGER pgpilot_cache_bump ON bare");
    // A disabled trigger reports nothing either (pg_restore --disable-triggers, bulk loaders).
    cluster.psql("postgres", "CREATE TABLE quiet (id int); ALTER TABLE quiet DISABLE TRIGGER ALL");
    let redis = RedisServer::start();
    let gw = start(config(&cluster, redis.url(), Consistency::Bounded)).await;
    ready(&gw).await;
    let c = connect(&gw).await;
    let read =
        || async { c.query_one("SELECT count(*)::bigint FROM bare", &[]).await.unwrap().get::<_, i64>(0) };
    let bypassed = || {
        gw.shared()
            .cache
            .stats
            .bypasses()
            .iter()
            .find(|(r, _)| *r == "table_without_trigger")
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(read().await, 0);
    assert_eq!(read().await, 0);
    assert!(bypassed() >= 2, "{}", pgpilot_gateway::cache::api::stats_json(gw.shared()));
    cluster.psql("postgres", "INSERT INTO bare VALUES (1)");
    assert_eq!(read().await, 1, "served from before a direct write to a table without the trigger");
    let quiet =
        || async { c.query_one("SELECT count(*)::bigint FROM quiet", &[]).await.unwrap().get::<_, i64>(0) };
    assert_eq!(quiet().await, 0);
    assert_eq!(quiet().await, 0);
    cluster.psql("postgres", "INSERT INTO quiet VALUES (1)");
    assert_eq!(quiet().await, 1, "served from before a direct write to a table whose trigger is disabled");
    // The others still are.
    some_answered_from_the_cache(&gw, 4, 0, || async {
        c.query_one("SELECT count(*)::bigint FROM fresh WHERE id < 0", &[]).await.unwrap().get::<_, i64>(0)
    })
    .await;
}

/// `strict` with Redis: a manual invalidation (tag, table, all) keeps the older shared copies from
/// being taken back, on the instance that was told and on the others. The trigger-kept versions
/// those copies are checked against do not change with a manual invalidation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_manual_invalidation_drops_shared_copies_everywhere() {
    let (_cluster, _redis, a, b) = two_instances(Consistency::Strict).await;
    let ca = connect(&a).await;
    let cb = connect(&b).await;
    let shared_hits = |g: &Gateway| g.shared().cache.redis.l2_hits.load(Relaxed);
    let hits = |g: &Gateway| g.shared().cache.stats.hits.load(Relaxed);
    let post = |g: &Gateway, body: &str| {
        ureq::post(&format!("http://{}/api/v1/cache/invalidate", g.http_addr().unwrap()))
            .header("content-type", "application/json")
            .send(body)
            .expect("invalidate");
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (id, body) in
        [r#"{"tag": "fresh:5"}"#, r#"{"table": "fresh"}"#, r#"{"all": true}"#].iter().enumerate()
    {
        // A statement of its own per round, which no earlier round stored anywhere.
        let sql = &format!("SELECT version FROM fresh WHERE id = {id} /* pgpilot:cache tags=fresh:5 */");
        ca.simple_query(sql).await.unwrap();
        // The SET to Redis is queued: give it a moment, then B takes A's copy.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (a0, b0) = (shared_hits(&a), shared_hits(&b));
        cb.simple_query(sql).await.unwrap();
        assert_eq!(shared_hits(&b), b0 + 1, "B answered from A's copy before {body}");
        post(&a, body);
        // Let the invalidation reach B: B reads again (and stores a fresh copy).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let hb = hits(&b);
        cb.simple_query(sql).await.unwrap();
        assert_eq!((hits(&b), shared_hits(&b)), (hb, b0 + 1), "B kept an invalidated copy after {body}");
        // Now both A's and B's copies are older than a second invalidation on A.
        tokio::time::sleep(Duration::from_millis(300)).await;
        post(&a, body);
        let ha = hits(&a);
        ca.simple_query(sql).await.unwrap();
        assert_eq!((hits(&a), shared_hits(&a)), (ha, a0), "A took an invalidated copy back after {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// DDL through one instance makes the others read the catalog again (bounded, no triggers): after
/// a foreign key that cascades is added through A, a delete of the parent through B drops B's
/// cached reads of the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_through_another_instance_refreshes_its_catalog() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE yp(id int PRIMARY KEY); CREATE TABLE yc(id int, pid int); \
         INSERT INTO yp VALUES (1), (2); INSERT INTO yc VALUES (1, 1), (2, 2)",
    );
    let redis = RedisServer::start();
    let a = start(config(&cluster, redis.url(), Consistency::Bounded)).await;
    let b = start(config(&cluster, redis.url(), Consistency::Bounded)).await;
    for gw in [&a, &b] {
        let db = gw.shared().database("postgres").unwrap();
        let shared = gw.shared().clone();
        let ok = eventually(Duration::from_secs(30), || {
            db.cache.catalog_loaded.load(Relaxed) && shared.cache.redis.state.summary().up
        })
        .await;
        assert!(ok, "the cache never became ready");
    }
    let (ca, cb) = (connect(&a).await, connect(&b).await);
    ca.batch_execute("ALTER TABLE yc ADD FOREIGN KEY (pid) REFERENCES yp ON DELETE CASCADE").await.unwrap();
    // The message, and B's next catalog read (health checks every 200 ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let count = || async { cb.query_one("SELECT count(*) FROM yc", &[]).await.unwrap().get::<_, i64>(0) };
    some_answered_from_the_cache(&b, 5, 2, count).await;
    cb.execute("DELETE FROM yp WHERE id = 1", &[]).await.unwrap();
    assert_eq!(count().await, 1, "B served its cached count of the child after the cascade");
    a.shutdown().await;
    b.shutdown().await;
}

/// Pools that log in as each client (a URL naming no user): the versions strict reads check are
/// read as whichever role came first, here one with no rights of its own on pgpilot's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reads_work_when_the_first_client_is_an_ordinary_role() {
    let cluster = cluster();
    cluster.psql("postgres", "CREATE ROLE alice LOGIN; GRANT SELECT ON fresh TO alice");
    let redis = RedisServer::start();
    let mut c = config(&cluster, redis.url(), Consistency::Strict);
    c.databases.get_mut("postgres").unwrap().primary =
        format!("postgres://127.0.0.1:{}/postgres", cluster.port());
    let gw = start(c).await;
    let alice = connect_as(&gw, "alice", "postgres").await;
    let read = || async {
        alice.query_one("SELECT version FROM fresh WHERE id = 1", &[]).await.unwrap().get::<_, i64>(0)
    };
    assert_eq!(read().await, 0);
    ready(&gw).await;
    some_answered_from_the_cache(&gw, 10, 0, read).await;
    gw.shutdown().await;
}

/// Runs `read` `times` times, each must give `expected`, and some must be answered by the cache
/// of `gw`.
async fn some_answered_from_the_cache<F, R>(gw: &Gateway, times: usize, expected: i64, read: F)
where
    F: Fn() -> R,
    R: std::future::Future<Output = i64>,
{
    let hits = || gw.shared().cache.stats.hits.load(Relaxed);
    let before = hits();
    for _ in 0..times {
        assert_eq!(read().await, expected);
    }
    assert!(
        hits() > before,
        "never answered from the cache: {}",
        pgpilot_gateway::cache::api::stats_json(gw.shared())
    );
}
