//! Read/write splitting against a real primary and streaming replica: every statement class routed
//! right (checked on the servers, with pg_is_in_recovery()), health, lag, read-your-writes, replica
//! groups and failover.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pgpilot_gateway::config::{Config, ReplicaConfig, Secs, TagRule};
use pgpilot_gateway::Gateway;
use pgpilot_testkit::{Cluster, HIDDEN_WRITERS};

fn split_config(primary: &Cluster, replicas: &[(&Cluster, &[&str])]) -> Config {
    let mut c = config_for(primary);
    let db = c.databases.get_mut("postgres").unwrap();
    db.replicas = pgpilot_gateway::config::OneOrMany(
        replicas
            .iter()
            .map(|(r, tags)| ReplicaConfig::Detailed {
                url: r.admin_url(),
                weight: 1.into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
            })
            .collect(),
    );
    db.routing.health_check_interval = Secs::from_millis(200);
    db.routing.lag_check_interval = Secs::from_millis(200);
    db.routing.ban_time = Secs::from_secs(2);
    c
}

/// Waits until the monitor has found `n` healthy replicas and loaded the function catalog.
async fn wait_ready(gw: &Gateway, n: usize) {
    let ok = eventually(Duration::from_secs(30), || {
        let out = psql(gw, "pgpilot", "SHOW REPLICAS").unwrap_or_default();
        out.lines().filter(|l| l.contains("|replica|") && l.contains("|up|")).count() >= n
    })
    .await;
    assert!(ok, "replicas not discovered: {:?}", psql(gw, "pgpilot", "SHOW REPLICAS"));
    // The function catalog is loaded in the same round as the first check.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Long enough for the monitor to sample the primary after a write and see the replica replay it.
async fn caught_up() {
    tokio::time::sleep(Duration::from_millis(800)).await;
}

/// Runs `sql`, whose last column is inet_server_port(), and says whether a replica answered.
async fn on_replica(c: &tokio_postgres::Client, sql: &str) -> bool {
    let rows = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let value = rows.iter().rev().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(r.len() - 1).map(str::to_string),
        _ => None,
    });
    let port: u16 = value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{sql}: no port"));
    REPLICA_PORTS.lock().unwrap().contains(&port)
}

/// Ports of the replicas of the running tests (pg_is_in_recovery() itself is volatile, so it
/// cannot be the probe: the server's port tells where a statement ran).
static REPLICA_PORTS: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// The first column of the first row, read with the simple protocol (one request, one routing).
async fn first_value(c: &tokio_postgres::Client, sql: &str) -> String {
    let rows = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

/// The client's write `x = -1` into t on the promoted server, once pgpilot found it (within 10 s;
/// a write made before, on an old primary still up, does not count).
async fn write_after_promotion(c: &tokio_postgres::Client, promoted: &Cluster) {
    let promoted_port = promoted.port().to_string();
    for _ in 0..100 {
        let wrote = c.simple_query("INSERT INTO t VALUES (-1) RETURNING inet_server_port()").await;
        let port = wrote.ok().and_then(|rows| {
            rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
        });
        if port.as_deref() == Some(promoted_port.as_str()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("writes never reached the promoted replica");
}

fn remember(replica: &Cluster) {
    REPLICA_PORTS.lock().unwrap().push(replica.port());
}

/// A primary, one caught-up replica and a gateway splitting reads between them, ready.
async fn split_with_one_replica() -> (Cluster, Cluster, Gateway) {
    let pg = Cluster::start();
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    (pg, replica, gw)
}

/// A streaming replica of `pg`, caught up, its port remembered.
fn caught_up_replica(pg: &Cluster) -> Cluster {
    let replica = pg.start_replica();
    remember(&replica);
    replica.wait_caught_up(pg);
    replica
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_classes_are_routed_right() {
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE t(id int primary key, v text); INSERT INTO t VALUES (1, 'a'); CREATE SEQUENCE s;
         CREATE FUNCTION vol() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1';
         CREATE FUNCTION imm() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1';
         CREATE FUNCTION public.f() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1';
         CREATE SCHEMA app; CREATE FUNCTION app.f() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 2'",
    );
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    let r = "inet_server_port()";
    // Reads go to the replica.
    assert!(on_replica(&c, &format!("SELECT {r}")).await);
    assert!(on_replica(&c, &format!("SELECT v, {r} FROM t")).await);
    assert!(on_replica(&c, &format!("SELECT imm(), {r}")).await);
    assert!(on_replica(&c, &format!("SELECT random(), {r}")).await);
    let row = c.query_one("SELECT inet_server_port()", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), replica.port() as i32, "extended-protocol read went to the primary");
    // Everything that may write goes to the primary.
    for sql in [
        format!("SELECT {r} FROM t FOR UPDATE"),
        format!("SELECT {r} FROM t FOR SHARE"),
        format!("SELECT nextval('s'), {r}"),
        format!("SELECT vol(), {r}"),
        format!("WITH d AS (UPDATE t SET v = 'b' WHERE id = 1 RETURNING id) SELECT {r} FROM d"),
        format!("/* pgpilot:primary */ SELECT {r}"),
        format!("INSERT INTO t VALUES (2, 'x') ON CONFLICT DO NOTHING; SELECT {r}"),
        // STABLE in pg_proc, but a standby refuses them.
        format!("SELECT txid_current(), {r}"),
        format!("SELECT pg_current_xact_id(), {r}"),
    ] {
        assert!(!on_replica(&c, &sql).await, "{sql} ran on the replica");
    }
    // SELECT INTO and LOCK write: they must run (a replica would refuse them).
    c.batch_execute("SELECT * INTO t_copy FROM t").await.unwrap();
    c.batch_execute("BEGIN; LOCK TABLE t IN SHARE MODE; COMMIT").await.unwrap();
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t_copy"), "2");
    // Explicit transactions: read-write on the primary, READ ONLY on a replica (once the replica
    // has replayed this client's writes: read-your-writes holds reads back until then).
    assert!(!on_replica(&c, &format!("BEGIN; SELECT {r}")).await);
    c.batch_execute("COMMIT").await.unwrap();
    caught_up().await;
    assert!(on_replica(&c, &format!("BEGIN READ ONLY; SELECT {r}")).await);
    assert!(on_replica(&c, &format!("SELECT {r}")).await, "still inside the read-only transaction");
    c.batch_execute("COMMIT").await.unwrap();
    // A function is judged by what the client's search_path resolves it to, as the path changes.
    assert!(on_replica(&c, &format!("SELECT f(), {r}")).await, "public.f is immutable");
    c.batch_execute("SET search_path = app, public").await.unwrap();
    assert!(!on_replica(&c, &format!("SELECT f(), {r}")).await, "app.f (volatile) comes first on the path");
    caught_up().await; // that call may have written: read-your-writes holds reads back until replayed
    assert!(on_replica(&c, &format!("SELECT public.f(), {r}")).await, "a qualified name ignores the path");
    c.batch_execute("RESET search_path").await.unwrap();
    assert!(on_replica(&c, &format!("SELECT f(), {r}")).await, "back to the default path");
    // The session override.
    c.batch_execute("SET pgpilot.route = primary").await.unwrap();
    assert!(!on_replica(&c, &format!("SELECT {r}")).await);
    // A value the setting does not take is refused, as PostgreSQL refuses one of an enum setting,
    // and changes nothing (it was accepted, and routed as auto).
    for typo in ["SET pgpilot.route = primay", "SET pgpilot.cache = maybe"] {
        let refused = c.batch_execute(typo).await.unwrap_err();
        assert_eq!(refused.code(), Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE), "{typo}");
    }
    assert!(!on_replica(&c, &format!("SELECT {r}")).await, "a refused value changed the route");
    // Inside a transaction the refusal fails the transaction, as PostgreSQL's own refusals do.
    c.batch_execute("BEGIN").await.unwrap();
    let refused = c.batch_execute("SET pgpilot.route = 'it''s $x$'").await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PARAMETER_VALUE),
        "{refused:?}"
    );
    let aborted = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(
        aborted.code(),
        Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION),
        "{aborted:?}"
    );
    c.batch_execute("ROLLBACK").await.unwrap();
    // A SET of it in a transaction that rolls back is undone, as PostgreSQL undoes a SET.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SET pgpilot.route = auto").await.unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    caught_up().await; // the transactions count as writes for read-your-writes
    assert!(!on_replica(&c, &format!("SELECT {r}")).await, "a rolled-back SET pgpilot.route stayed");
    c.batch_execute("SET pgpilot.route = auto").await.unwrap();
    assert!(on_replica(&c, &format!("SELECT {r}")).await);
    c.batch_execute("SET pgpilot.route = primary").await.unwrap();
    c.batch_execute("RESET ALL").await.unwrap();
    assert!(on_replica(&c, &format!("SELECT {r}")).await, "RESET ALL resets pgpilot.route too");
    c.batch_execute("SET LOCAL pgpilot.route = primary").await.unwrap();
    // A pipeline: a read, then a write, with one Sync. All of it goes to the primary.
    let mut raw = raw_login(addr(&gw)).await;
    let mut out = bytes::BytesMut::new();
    for sql in ["SELECT 1".as_bytes(), b"INSERT INTO t VALUES (3, 'piped')"] {
        pgpilot_wire::frontend::parse(&mut out, b"", sql, &[0, 0]);
        pgpilot_wire::frontend::bind(&mut out, b"", b"", &[0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
    }
    pgpilot_wire::frontend::sync(&mut out);
    tokio::io::AsyncWriteExt::write_all(&mut raw, &out).await.unwrap();
    let answer = read_until_ready(&mut raw).await;
    assert!(!backend_messages(&answer).iter().any(|m| m.0 == b'E'), "the pipelined write failed");
    assert_eq!(pg.psql("postgres", "SELECT v FROM t WHERE id = 3"), "piped");
    // Metrics and the API show the split.
    let api = std::process::Command::new("curl")
        .arg("-s")
        .arg(format!("http://{}/api/v1/monitoring/replicas", gw.http_addr().unwrap()))
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&api.stdout).unwrap();
    let servers = json["replicas"].as_array().unwrap();
    let replica_row = servers.iter().find(|s| s["role"] == "replica").unwrap();
    assert!(replica_row["reads_routed"].as_u64().unwrap() > 0);
    let primary_row = servers.iter().find(|s| s["role"] == "primary").unwrap();
    assert!(primary_row["writes_routed"].as_u64().unwrap() > 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_fails_no_reads_after_detection() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE t(x int); INSERT INTO t SELECT generate_series(1, 100)");
    let replica = caught_up_replica(&pg);
    let mut config = split_config(&pg, &[(&replica, &[])]);
    config.pgpilot.default_pool_size = 4;
    let gw = start(config).await;
    wait_ready(&gw, 1).await;
    let stop_at = Instant::now() + Duration::from_secs(1);
    let detect = Duration::from_secs(2);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = connect(&gw).await;
        tasks.push(tokio::spawn(async move {
            let (mut late_failures, mut reads) = (0, 0);
            let end = stop_at + Duration::from_secs(5);
            while Instant::now() < end {
                let r = c.query_one("SELECT count(*) FROM t", &[]).await;
                reads += 1;
                if r.is_err() && Instant::now() > stop_at + detect {
                    late_failures += 1;
                }
                if r.is_err() && c.is_closed() {
                    break;
                }
            }
            (late_failures, reads, c.is_closed())
        }));
    }
    tokio::time::sleep_until(stop_at.into()).await;
    replica.stop();
    let mut total = 0;
    for t in tasks {
        let (late, reads, closed) = t.await.unwrap();
        assert_eq!(late, 0, "reads failed after the detection window");
        assert!(!closed || reads > 0);
        total += reads;
    }
    assert!(total > 100);
    let replicas = psql(&gw, "pgpilot", "SHOW REPLICAS").unwrap();
    assert!(replicas.contains("|banned|"), "{replicas}");
    gw.shutdown().await;
}

/// Sessions running a statement marked `tag` on `c`, other than the one asking.
fn running(c: &Cluster, tag: &str, extra: &str) -> String {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%{tag}%' AND pid <> pg_backend_pid() {extra}"
    );
    c.psql("postgres", &sql).trim().to_string()
}

/// A primary holding an exclusive lock on table `locked` (replayed on its replica) and a gateway
/// splitting reads onto the replica, whose bans last a minute: a read of `locked` waits on the
/// replica, and nothing of it reaches the client before the lock goes.
struct LockedReplica {
    pg: Cluster,
    replica: Cluster,
    gw: Gateway,
    holder: tokio_postgres::Client,
}

async fn locked_replica() -> LockedReplica {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE locked(x int)");
    let replica = caught_up_replica(&pg);
    let mut config = split_config(&pg, &[(&replica, &[])]);
    let routing = &mut config.databases.get_mut("postgres").unwrap().routing;
    routing.ban_time = Secs::from_secs(60);
    routing.primary_reads = pgpilot_gateway::config::PrimaryReads::Off;
    let gw = start(config).await;
    wait_ready(&gw, 1).await;
    let holder = try_connect(&format!("host=127.0.0.1 port={} user=postgres dbname=postgres", pg.port()))
        .await
        .unwrap();
    holder.batch_execute("BEGIN; LOCK TABLE locked IN ACCESS EXCLUSIVE MODE").await.unwrap();
    // The lock's WAL record reaches the replica once something flushes it: a commit.
    pg.psql("postgres", "CREATE TABLE flush_the_lock()");
    let replayed = eventually(Duration::from_secs(10), || {
        replica.psql("postgres", "SELECT count(*) FROM pg_locks WHERE relation = 'locked'::regclass").trim()
            == "1"
    })
    .await;
    assert!(replayed, "the replica did not replay the lock");
    LockedReplica { pg, replica, gw, holder }
}

/// Starts a read of the locked table through the gateway (marked with `tag`, its last column the
/// server's port) and waits until it waits for the lock on the replica.
async fn read_waiting_on_the_replica(
    l: &LockedReplica,
    tag: &str,
) -> tokio::task::JoinHandle<Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>> {
    let reader = connect(&l.gw).await;
    let sql = format!("SELECT count(*), '{tag}', inet_server_port() FROM locked");
    let read = tokio::spawn(async move { reader.simple_query(&sql).await });
    let waiting = eventually(Duration::from_secs(10), || {
        running(&l.replica, tag, "AND wait_event_type = 'Lock'") == "1"
    })
    .await;
    assert!(waiting, "the read did not wait for the lock on the replica");
    read
}

/// The port of the server that answered a read of [`read_waiting_on_the_replica`].
fn answered_on(rows: &[tokio_postgres::SimpleQueryMessage]) -> Option<String> {
    rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(2).map(str::to_string),
        _ => None,
    })
}

/// pg_terminate_backend of the backend that has been running a read on a replica for over 5 s is
/// an administrator stopping that read: the replica stays in use, and the read is not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_backend_ended_by_an_administrator_neither_bans_the_replica_nor_runs_again() {
    let l = locked_replica().await;
    let read = read_waiting_on_the_replica(&l, "end_me").await;
    // Past the 5 s within which an ended backend is taken to have died as it was handed the read.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    l.replica.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%end_me%' AND pid <> pg_backend_pid()",
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(running(&l.pg, "end_me", ""), "0", "the ended read runs again on the primary");
    assert_eq!(running(&l.replica, "end_me", ""), "0", "the ended read runs again on the replica");
    let err = read.await.unwrap().expect_err("the ended read ran again");
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("57P01"), "{err}");
    let replicas = psql(&l.gw, "pgpilot", "SHOW REPLICAS").unwrap();
    assert!(!replicas.contains("|banned|"), "{replicas}");
    l.holder.batch_execute("ROLLBACK").await.unwrap();
    let next = connect(&l.gw).await;
    assert!(on_replica(&next, "SELECT inet_server_port()").await, "reads left the replica");
    l.gw.shutdown().await;
}

/// A backend ended within seconds of being handed a read (scripts ending idle connections end
/// pooled ones as they are handed out): the read runs again, and the replica is not banned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_backend_is_ended_at_once_runs_again_on_the_replica() {
    let l = locked_replica().await;
    let read = read_waiting_on_the_replica(&l, "again").await;
    l.replica.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%again%' AND pid <> pg_backend_pid()",
    );
    assert!(
        eventually(Duration::from_secs(10), || running(&l.replica, "again", "") == "1").await,
        "the read did not run again on the replica"
    );
    l.holder.batch_execute("ROLLBACK").await.unwrap();
    let rows = read.await.unwrap().expect("the read failed with its backend");
    assert_eq!(answered_on(&rows), Some(l.replica.port().to_string()));
    let replicas = psql(&l.gw, "pgpilot", "SHOW REPLICAS").unwrap();
    assert!(!replicas.contains("|banned|"), "{replicas}");
    l.gw.shutdown().await;
}

/// A read the replica was running when it shut down moves to the primary, even though pgpilot
/// first brought that replica connection to the client's settings (the server's word on them
/// reached the client, which must not pin the read to the lost server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_running_on_a_replica_that_shuts_down_moves_to_the_primary() {
    let l = locked_replica().await;
    let read = read_waiting_on_the_replica(&l, "move_me").await;
    l.replica.stop();
    assert!(
        eventually(Duration::from_secs(10), || running(&l.pg, "move_me", "") == "1").await,
        "the read did not move to the primary"
    );
    l.holder.batch_execute("ROLLBACK").await.unwrap();
    let rows = read.await.unwrap().expect("the read failed with its replica");
    assert_eq!(answered_on(&rows), Some(l.pg.port().to_string()));
    let replicas = psql(&l.gw, "pgpilot", "SHOW REPLICAS").unwrap();
    assert!(replicas.contains("|banned|"), "{replicas}");
    l.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_gets_no_reads() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE t(x int)");
    let replica = pg.start_replica_with(&["recovery_min_apply_delay = '30s'"]);
    remember(&replica);
    let mut config = split_config(&pg, &[(&replica, &[])]);
    config.databases.get_mut("postgres").unwrap().routing.max_replica_lag = Secs::from_secs(1);
    let gw = start(config).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    assert!(on_replica(&c, "SELECT inet_server_port()").await, "not lagging yet");
    c.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    // The replica cannot apply it for 30 s: beyond max_replica_lag it is skipped.
    let lagging = eventually(Duration::from_secs(10), || {
        psql(&gw, "pgpilot", "SHOW REPLICAS").unwrap_or_default().lines().any(|l| {
            let f: Vec<&str> = l.split('|').collect();
            f.get(2) == Some(&"replica")
                && f.get(6).and_then(|s| s.parse::<f64>().ok()).is_some_and(|s| s > 1.0)
                && f.get(4) == Some(&"lagging")
        })
    })
    .await;
    assert!(lagging, "lag not measured: {:?}", psql(&gw, "pgpilot", "SHOW REPLICAS"));
    for _ in 0..10 {
        assert!(!on_replica(&c, "SELECT inet_server_port()").await, "read sent to a lagging replica");
    }
    let n: i64 = c.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    let (_, api) = http_get(format!("http://{}/api/v1/monitoring/replicas", gw.http_addr().unwrap())).await;
    assert!(api.contains(r#""state":"lagging""#), "{api}");
    gw.shutdown().await;
}

/// helper-171: with no user forced in the database's URLs the monitor has no login until a client
/// comes, and healthy replicas read as `not_following` meanwhile, which sends an operator after a
/// replication fault that is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_are_unchecked_until_the_monitor_can_log_in() {
    let pg = Cluster::start();
    let replica = caught_up_replica(&pg);
    let mut config = split_config(&pg, &[(&replica, &[])]);
    let db = config.databases.get_mut("postgres").unwrap();
    db.primary = format!("postgres://127.0.0.1:{}/postgres", pg.port());
    db.replicas = pgpilot_gateway::config::OneOrMany(vec![ReplicaConfig::Detailed {
        url: format!("postgres://127.0.0.1:{}/postgres", replica.port()),
        weight: 1.into(),
        tags: vec![],
    }]);
    let gw = start(config).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let states = |out: &str| -> Vec<String> {
        out.lines().filter_map(|l| l.split('|').nth(4).map(str::to_string)).collect()
    };
    let before = psql(&gw, "pgpilot", "SHOW REPLICAS").unwrap();
    assert_eq!(states(&before), ["unchecked", "unchecked"], "{before}");
    let c = connect(&gw).await;
    c.simple_query("SELECT 1").await.unwrap();
    wait_ready(&gw, 1).await;
    let after = psql(&gw, "pgpilot", "SHOW REPLICAS").unwrap();
    assert_eq!(states(&after), ["up", "up"], "{after}");
    assert!(on_replica(&c, "SELECT inet_server_port()").await, "the read did not reach the replica");
    gw.shutdown().await;
}

/// A read a replica answers is never stored in the result cache: the replica may not have
/// replayed commits made before the read, and the writer itself would then find its write missing
/// in the cached result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicas_answer_is_never_cached() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE seen(x int)");
    let replica = pg.start_replica_with(&["recovery_min_apply_delay = '3s'"]);
    remember(&replica);
    let mut config = split_config(&pg, &[(&replica, &[])]);
    let db = config.databases.get_mut("postgres").unwrap();
    db.routing.max_replica_lag = Secs::from_secs(60);
    db.cache.enabled = true;
    let gw = start(config).await;
    wait_ready(&gw, 1).await;
    wait_cache_catalog(&gw, "seen").await;
    let count = async |c: &tokio_postgres::Client| -> String {
        let rows = c.simple_query("SELECT count(*) FROM seen").await.unwrap();
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .unwrap()
    };
    let writer = connect(&gw).await;
    let reader = connect(&gw).await;
    writer.batch_execute("INSERT INTO seen VALUES (1)").await.unwrap();
    // Another session, which wrote nothing, may read the lagging replica's older rows...
    for _ in 0..6 {
        count(&reader).await;
    }
    // ...but they are not what the writer reads next.
    assert_eq!(count(&writer).await, "1", "the writer read a replica's stale answer from the cache");
    // A result missed before fills on the primary, so the cache still fills with splitting on...
    let hits = || gw.shared().cache.stats.hits.load(std::sync::atomic::Ordering::Relaxed);
    let before = hits();
    assert_eq!(count(&reader).await, "1");
    assert!(hits() > before, "the cache never fills with splitting on");
    // ...while a result missed once reads on the replica, as reads that never repeat do.
    let db = gw.shared().database("postgres").unwrap();
    let replica_reads =
        || db.backends[1 - db.primary_index()].reads.load(std::sync::atomic::Ordering::Relaxed);
    let before = replica_reads();
    for i in 0..5 {
        reader.simple_query(&format!("SELECT count(*) FROM seen WHERE x > {i}")).await.unwrap();
    }
    assert_eq!(replica_reads() - before, 5, "reads that fill nothing left the replica");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_replayed_the_last_write_fills_the_cache() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE fills(x int); INSERT INTO fills SELECT generate_series(1, 10)");
    let replica = caught_up_replica(&pg);
    let mut config = split_config(&pg, &[(&replica, &[])]);
    config.databases.get_mut("postgres").unwrap().cache.enabled = true;
    let gw = start(config).await;
    wait_ready(&gw, 1).await;
    wait_cache_catalog(&gw, "fills").await;
    // Loading the catalog invalidated everything: the monitor reads a primary position after it.
    caught_up().await;
    let stats = &gw.shared().cache.stats;
    let db = gw.shared().database("postgres").unwrap();
    let replica_reads =
        || db.backends[1 - db.primary_index()].reads.load(std::sync::atomic::Ordering::Relaxed);
    let reader = connect(&gw).await;
    let writer = connect(&gw).await;
    let count = async |c: &tokio_postgres::Client| first_value(c, "SELECT count(*) FROM fills").await;
    let (reads, hits) = (replica_reads(), stats.hits.load(Relaxed));
    assert_eq!(count(&reader).await, "10");
    assert_eq!(replica_reads() - reads, 1, "the first miss did not read on the replica");
    assert_eq!(count(&reader).await, "10");
    assert_eq!(stats.hits.load(Relaxed) - hits, 1, "the replica's answer was not stored");
    assert_eq!(stats.fills_from_replicas.load(Relaxed), 1);
    // A write: no client, the writer least, reads the old count from the cache after it.
    writer.batch_execute("INSERT INTO fills VALUES (11)").await.unwrap();
    assert_eq!(count(&writer).await, "11");
    assert_eq!(count(&reader).await, "11");
    // Once the replica has replayed a position read after the write, it fills again.
    caught_up().await;
    let max = async |c: &tokio_postgres::Client| first_value(c, "SELECT max(x) FROM fills").await;
    let (reads, hits) = (replica_reads(), stats.hits.load(Relaxed));
    assert_eq!(max(&reader).await, "11");
    assert_eq!(max(&writer).await, "11");
    assert_eq!(replica_reads() - reads, 1, "the miss after the write did not read on the replica");
    assert_eq!(stats.hits.load(Relaxed) - hits, 1);
    assert_eq!(stats.fills_from_replicas.load(Relaxed), 2);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_never_misses() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE counter(id int primary key, n int); INSERT INTO counter VALUES (1, 0)");
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    let update = c.prepare("UPDATE counter SET n = $1 WHERE id = 1").await.unwrap();
    let read = c.prepare("SELECT n FROM counter WHERE id = 1").await.unwrap();
    let mut misses = 0;
    for i in 1..=1000 {
        c.execute(&update, &[&i]).await.unwrap();
        let n: i32 = c.query_one(&read, &[]).await.unwrap().get(0);
        if n != i {
            misses += 1;
        }
    }
    assert_eq!(misses, 0, "reads missed the client's own writes");
    // Once the replica has replayed this client's last write, its reads go back there, even while
    // another client keeps writing (the primary is always a little ahead of the replica then).
    let writer = connect(&gw).await;
    writer.batch_execute("CREATE TABLE churn(x int)").await.unwrap();
    let busy = tokio::spawn(async move {
        for i in 0..100_000 {
            writer.execute("INSERT INTO churn VALUES ($1)", &[&i]).await.unwrap();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut back = false;
    while !back && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        back = on_replica(&c, "SELECT inet_server_port()").await;
    }
    assert!(!busy.is_finished(), "the other client stopped writing before the check ended");
    busy.abort();
    assert!(back, "reads stayed on the primary after the replica replayed the client's write");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_groups_keep_analytics_apart() {
    let pg = Cluster::start();
    let app_replica = pg.start_replica();
    let analytics = pg.start_replica();
    app_replica.wait_caught_up(&pg);
    analytics.wait_caught_up(&pg);
    let mut config = split_config(&pg, &[(&app_replica, &[]), (&analytics, &["analytics"])]);
    config.databases.get_mut("postgres").unwrap().routing.tag_rules =
        vec![TagRule { user: None, application_name: Some("reports".into()), tag: "analytics".into() }];
    let gw = start(config.clone()).await;
    wait_ready(&gw, 2).await;
    let port_of = |c: &Cluster| c.port().to_string();
    let app = connect(&gw).await;
    let reports = try_connect(&format!("{} application_name=reports", conninfo(&gw, "postgres", "postgres")))
        .await
        .unwrap();
    for _ in 0..10 {
        let p: i32 = app.query_one("SELECT inet_server_port()", &[]).await.unwrap().get(0);
        assert_eq!(p.to_string(), port_of(&app_replica), "application reads stay off the analytics replica");
        let p: i32 = reports.query_one("SELECT inet_server_port()", &[]).await.unwrap().get(0);
        assert_eq!(p.to_string(), port_of(&analytics), "report reads go only to the analytics replica");
        let p: i32 =
            app.query_one("/* pgpilot:tag=analytics */ SELECT inet_server_port()", &[]).await.unwrap().get(0);
        assert_eq!(p.to_string(), port_of(&analytics));
    }
    // So does one given in the startup options (PGOPTIONS), as PostgreSQL takes it.
    let from_options = conninfo(&gw, "postgres", "postgres") + " options='-capplication_name=reports'";
    let optioned = try_connect(&from_options).await.unwrap();
    for _ in 0..5 {
        let p: i32 = optioned.query_one("SELECT inet_server_port()", &[]).await.unwrap().get(0);
        assert_eq!(p.to_string(), port_of(&analytics), "the name given in options did not route");
    }
    drop(optioned);
    // A name set after connecting counts too.
    let later = connect(&gw).await;
    later.batch_execute("SET application_name = 'reports'").await.unwrap();
    for _ in 0..5 {
        let p: i32 = later.query_one("SELECT inet_server_port()", &[]).await.unwrap().get(0);
        assert_eq!(p.to_string(), port_of(&analytics), "the name set later did not route");
    }
    // SHOW POOLS has one row per database and user, as PgBouncer's (exporters label pools by the
    // pair): the primary's and the replicas' pools add up, a client inside a read-only
    // transaction on a replica included.
    app.batch_execute("BEGIN READ ONLY; SELECT 1").await.unwrap();
    let pool_row = || {
        let pools = psql(&gw, "pgpilot", "SHOW POOLS").unwrap();
        let rows: Vec<Vec<String>> = pools
            .lines()
            .filter(|l| l.starts_with("postgres|"))
            .map(|l| l.split('|').map(str::to_string).collect())
            .collect();
        assert_eq!(rows.len(), 1, "one row for (postgres, postgres): {pools}");
        rows.into_iter().next().unwrap()
    };
    let row = pool_row();
    assert_eq!(row[2], "3", "cl_active: {row:?}");
    assert_eq!(row.len(), 16, "PgBouncer's columns: {row:?}");
    app.batch_execute("COMMIT").await.unwrap();
    // One waiting for a replica's server counts as cl_waiting.
    psql(&gw, "pgpilot", "PAUSE postgres").unwrap();
    let waiting = tokio::spawn(async move { later.simple_query("SELECT 1").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let row = pool_row();
    assert_eq!((row[2].as_str(), row[3].as_str()), ("2", "1"), "cl_active, cl_waiting: {row:?}");
    psql(&gw, "pgpilot", "RESUME postgres").unwrap();
    waiting.await.unwrap().unwrap();
    // A reload that drops the rule reaches the client already connected (helper-170: only new
    // logins took it): its reads leave the analytics replica.
    config.databases.get_mut("postgres").unwrap().routing.tag_rules = vec![];
    gw.shared().apply(config).unwrap();
    wait_ready(&gw, 2).await;
    for _ in 0..5 {
        let p: i32 = reports.query_one("SELECT inet_server_port()", &[]).await.unwrap().get(0);
        assert_eq!(p.to_string(), port_of(&app_replica), "the rule a reload dropped still routed");
    }
    gw.shutdown().await;
}

/// A reload applies new replica weights and tags to the servers in place: the database, its pools
/// and a transaction running on a replica stay. A replica of weight 0 takes reads only when no
/// other replica qualifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_replica_weights_and_tags_in_place() {
    let pg = Cluster::start();
    let first = caught_up_replica(&pg);
    let second = caught_up_replica(&pg);
    let mut config = split_config(&pg, &[(&first, &[]), (&second, &[])]);
    let set_replica = |config: &mut Config, i: usize, w: u32, t: &[&str]| {
        if let ReplicaConfig::Detailed { weight, tags, .. } =
            &mut config.databases.get_mut("postgres").unwrap().replicas.0[i]
        {
            *weight = w.into();
            *tags = t.iter().map(|t| t.to_string()).collect();
        }
    };
    set_replica(&mut config, 1, 0, &[]);
    let gw = start(config.clone()).await;
    wait_ready(&gw, 2).await;
    let c = connect(&gw).await;
    /// The ports twenty reads ran on, each once.
    async fn ports(c: &tokio_postgres::Client) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            seen.insert(first_value(c, "SELECT inet_server_port()").await);
        }
        seen.into_iter().collect()
    }
    assert_eq!(ports(&c).await, [first.port().to_string()], "a replica of weight 0 took reads");
    let db = gw.shared().database("postgres").unwrap();
    let reader = connect(&gw).await;
    reader.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert_eq!(first_value(&reader, "SELECT inet_server_port()").await, first.port().to_string());

    set_replica(&mut config, 0, 0, &[]);
    set_replica(&mut config, 1, 2, &[]);
    gw.shared().apply(config.clone()).unwrap();
    assert!(Arc::ptr_eq(&db, &gw.shared().database("postgres").unwrap()), "the database was made anew");
    assert_eq!((db.backends[1].weight(), db.backends[2].weight()), (0, 2));
    let shown = psql(&gw, "pgpilot", "SHOW REPLICAS").unwrap();
    assert!(shown.lines().any(|l| l.contains(&second.port().to_string()) && l.contains("|2|")), "{shown}");
    assert_eq!(ports(&c).await, [second.port().to_string()], "the new weights did not route");
    // The transaction on the first replica kept its server.
    assert_eq!(first_value(&reader, "SELECT inet_server_port()").await, first.port().to_string());
    reader.batch_execute("COMMIT").await.unwrap();

    // Tagged, the second replica leaves the untagged reads: the reserve takes them.
    set_replica(&mut config, 1, 2, &["analytics"]);
    gw.shared().apply(config).unwrap();
    assert_eq!(db.backends[2].tags().as_slice(), ["analytics".to_string()]);
    assert_eq!(ports(&c).await, [first.port().to_string()], "the reserve did not take the reads");
    let tagged = first_value(&c, "/* pgpilot:tag=analytics */ SELECT inet_server_port()").await;
    assert_eq!(tagged, second.port().to_string());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_a_promoted_replica() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE t(x int)");
    let replica = caught_up_replica(&pg);
    let mut config = split_config(&pg, &[(&replica, &[])]);
    // Writes wait this long for a primary that is down.
    config.pgpilot.query_wait_timeout = Secs::from_secs(2);
    let gw = start(config).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    c.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    pg.stop();
    replica.promote();
    let promoted_at = Instant::now();
    let mut resumed = None;
    while promoted_at.elapsed() < Duration::from_secs(20) {
        if c.batch_execute("INSERT INTO t VALUES (2)").await.is_ok() {
            resumed = Some(promoted_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed = resumed.expect("writes never resumed on the promoted replica");
    assert!(resumed < Duration::from_secs(5), "writes resumed after {resumed:?}");
    let replicas = psql(&gw, "pgpilot", "SHOW REPLICAS").unwrap_or_default();
    let old_row = replicas.lines().find(|l| l.contains(&format!(":{}|", pg.port())));
    let old_row = old_row.unwrap_or_else(|| panic!("the old primary is not listed:\n{replicas}"));
    assert!(
        !old_row.contains("|primary|"),
        "the stopped old primary is still listed as primary:\n{replicas}"
    );
    assert_eq!(replica.psql("postgres", "SELECT count(*) FROM t"), "2");
    // The old primary comes back on its old timeline: it is fenced, never written to.
    pg.start_server();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 3..8 {
        c.batch_execute(&format!("INSERT INTO t VALUES ({i})")).await.unwrap();
    }
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t"), "1", "the old primary was written to");
    assert_eq!(replica.psql("postgres", "SELECT count(*) FROM t"), "7");
    // Shown as what it is, once its ban for being down has run out: not up as a replica, with no
    // lag measured across timelines.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let replicas = psql(&gw, "pgpilot", "SHOW REPLICAS").unwrap_or_default();
    let old_row = replicas.lines().find(|l| l.contains(&format!(":{}|", pg.port()))).unwrap();
    assert!(old_row.contains("|not_following|0|0.000|"), "the fenced old primary:\n{replicas}");
    // The new primary goes down too: the old one, on an older timeline, still gets no writes.
    replica.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 8..11 {
        let _ = c.batch_execute(&format!("INSERT INTO t VALUES ({i})")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t"), "1", "writes went to the old primary");
    gw.shutdown().await;
}

/// Right after pgpilot starts, nothing is routed by the configuration's word alone: after a
/// failover the server listed as primary may be a standby now (or an old primary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_write_after_start_goes_to_the_real_primary() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE t(x int)");
    let replica = pg.start_replica();
    replica.wait_caught_up(&pg);
    // Listed the wrong way round, as a config not edited after a failover would be.
    let mut config = split_config(&replica, &[(&pg, &[])]);
    config.databases.get_mut("postgres").unwrap().routing.health_check_interval = Secs::from_secs(1);
    let gw = start(config).await;
    let c = connect(&gw).await;
    c.batch_execute("INSERT INTO t VALUES (1)").await.expect("the first write found the primary");
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t"), "1");
    gw.shutdown().await;
}

/// A replica that replayed WAL the promoted one never had can never follow it, yet its position
/// compares as caught up: it gets no reads, and a client's own write is never missed on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_left_on_the_old_timeline_gets_no_reads() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE t(x int)");
    let promoted = pg.start_replica();
    let diverged = pg.start_replica();
    remember(&promoted);
    remember(&diverged);
    promoted.wait_caught_up(&pg);
    diverged.wait_caught_up(&pg);
    let gw = start(split_config(&pg, &[(&promoted, &[]), (&diverged, &[])])).await;
    wait_ready(&gw, 2).await;
    // The replica to be promoted stops streaming; the other one replays more of the old timeline.
    promoted.psql("postgres", "ALTER SYSTEM SET primary_conninfo = ''");
    promoted.psql("postgres", "SELECT pg_reload_conf()");
    promoted.wait_for("0", "SELECT count(*) FROM pg_stat_wal_receiver", Duration::from_secs(10));
    pg.psql("postgres", "INSERT INTO t SELECT generate_series(1, 10000)");
    diverged.wait_caught_up(&pg);
    pg.kill();
    promoted.promote();
    let c = connect(&gw).await;
    write_after_promotion(&c, &promoted).await;
    let diverged_port = diverged.port().to_string();
    for _ in 0..20 {
        let rows =
            c.simple_query("SELECT count(*) FILTER (WHERE x = -1), inet_server_port() FROM t").await.unwrap();
        let row = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((r.get(0).unwrap().to_string(), r.get(1).unwrap().to_string()))
            }
            _ => None,
        });
        let (seen, port) = row.expect("a row");
        assert_ne!(port, diverged_port, "a read went to the replica on the old timeline");
        assert_eq!(seen, "1", "the client's own write was missing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let replicas = psql(&gw, "pgpilot", "SHOW REPLICAS").unwrap_or_default();
    assert!(
        replicas.lines().any(|l| l.contains(&format!(":{diverged_port}|")) && l.contains("|not_following|")),
        "{replicas}"
    );
    gw.shutdown().await;
}

/// A replica that goes on following the old primary after a failover (the old primary fenced but
/// still up, writing): its position moves with the old primary's WAL, which made it trusted again,
/// and half the reads missed the client's own writes on the new primary. Its timeline tells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_still_following_the_old_primary_gets_no_reads() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE t(x int)");
    let promoted = pg.start_replica();
    let follower = pg.start_replica();
    remember(&promoted);
    remember(&follower);
    promoted.wait_caught_up(&pg);
    follower.wait_caught_up(&pg);
    let gw = start(split_config(&pg, &[(&promoted, &[]), (&follower, &[])])).await;
    wait_ready(&gw, 2).await;
    promoted.promote();
    let c = connect(&gw).await;
    write_after_promotion(&c, &promoted).await;
    let follower_port = follower.port().to_string();
    for _ in 0..30 {
        // The old primary, fenced by pgpilot, is written to directly: the follower replays it.
        pg.psql("postgres", "INSERT INTO t VALUES (0)");
        let rows = c.simple_query("SELECT inet_server_port() FROM t WHERE x = -1").await.unwrap();
        let port = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap().to_string()),
            _ => None,
        });
        let port = port.expect("the client's own write was missing");
        assert_ne!(port, follower_port, "a read went to the replica following the old primary");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let replicas = psql(&gw, "pgpilot", "SHOW REPLICAS").unwrap_or_default();
    assert!(
        replicas.lines().any(|l| l.contains(&format!(":{follower_port}|")) && l.contains("|not_following|")),
        "{replicas}"
    );
    gw.shutdown().await;
}

/// A write through a function sent to the primary by hint still counts as a write, a STABLE
/// function's included: the client's next reads wait for a replica that has replayed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hinted_write_through_a_function_keeps_read_your_writes() {
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE counter(n int); INSERT INTO counter VALUES (0); \
         CREATE FUNCTION bump() RETURNS int LANGUAGE sql AS 'UPDATE counter SET n = n + 1 RETURNING n'; \
         CREATE FUNCTION bump_stable() RETURNS int LANGUAGE plpgsql STABLE AS 'BEGIN RETURN bump(); END'",
    );
    let replica = caught_up_replica(&pg);
    let mut config = split_config(&pg, &[(&replica, &[])]);
    config.databases.get_mut("postgres").unwrap().routing.max_replica_lag = Secs::from_secs(3600);
    let gw = start(config).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    // The third: the documented way to call a STABLE function that writes all the same.
    let calls = [
        "/* pgpilot:primary */ SELECT bump()",
        "SELECT bump()",
        "/* pgpilot:primary */ SELECT bump_stable()",
    ];
    for (i, call) in calls.iter().enumerate() {
        // Caught up with the writes before (the client's reads may use it again), then held back.
        replica.psql("postgres", "SELECT pg_wal_replay_resume()");
        replica.wait_caught_up(&pg);
        tokio::time::sleep(Duration::from_millis(500)).await;
        replica.psql("postgres", "SELECT pg_wal_replay_pause()");
        c.simple_query(call).await.unwrap();
        let rows = c.simple_query("SELECT n FROM counter").await.unwrap();
        let n = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        assert_eq!(n.as_deref(), Some((i + 1).to_string().as_str()), "{call}: the read missed the write");
    }
    replica.psql("postgres", "SELECT pg_wal_replay_resume()");
    gw.shutdown().await;
}

/// `primary_reads`: with "overflow" (the default) a read goes to the primary only while the
/// replica's pool is full; with "share" the primary is one more read server. A client pipelining a
/// write behind a read on a replica gets the write run on the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_takes_reads_the_replicas_cannot() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE p(id serial primary key, port int)");
    let replica = caught_up_replica(&pg);
    let mut config = split_config(&pg, &[(&replica, &[])]);
    config.pgpilot.default_pool_size = 2;
    let gw = start(config).await;
    wait_ready(&gw, 1).await;
    let r = "SELECT inet_server_port()";
    let c = connect(&gw).await;
    for _ in 0..10 {
        assert!(on_replica(&c, r).await, "a read at low load left the replica");
    }
    // Two read-only transactions hold both of the replica's connections.
    let (h1, h2) = (connect(&gw).await, connect(&gw).await);
    for h in [&h1, &h2] {
        assert!(on_replica(h, &format!("BEGIN READ ONLY; {r}")).await);
    }
    assert!(!on_replica(&c, r).await, "a read waited for the full replica instead of the free primary");
    for h in [&h1, &h2] {
        h.batch_execute("COMMIT").await.unwrap();
    }
    assert!(on_replica(&c, r).await, "reads did not return to the replica");

    // A write pipelined behind a read on the replica still runs on the primary.
    let read = c.simple_query("SELECT inet_server_port() FROM pg_catalog.pg_class LIMIT 1");
    let write = c.simple_query("INSERT INTO p(port) SELECT inet_server_port() RETURNING port");
    let (read, write) = tokio::join!(read, write);
    read.unwrap();
    let written = write.expect("pipelined write was sent to the replica");
    let port = written.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(port, Some(pg.port().to_string()));
    gw.shutdown().await;

    let mut config = split_config(&pg, &[(&replica, &[])]);
    config.databases.get_mut("postgres").unwrap().routing.primary_reads =
        pgpilot_gateway::config::PrimaryReads::Share;
    let gw = start(config).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    let mut on_replicas = 0;
    for _ in 0..20 {
        on_replicas += on_replica(&c, r).await as usize;
    }
    assert!(
        (5..=15).contains(&on_replicas),
        "{on_replicas} of 20 reads on the replica with primary_reads = share"
    );
    gw.shutdown().await;
}

/// With synchronous_commit = off a commit is acknowledged before its WAL is written, and replicas
/// receive only written WAL. The position read-your-writes waits for must include the commit
/// (where WAL is inserted), or a replica that replayed everything written serves a stale read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_holds_with_asynchronous_commit() {
    // A slow WAL writer keeps acknowledged commits unwritten for seconds.
    let pg = Cluster::builder().setting("wal_writer_delay = 10s").start();
    pg.psql("postgres", "CREATE TABLE counter(id int primary key, n int); INSERT INTO counter VALUES (1, 0)");
    pg.psql("postgres", "CHECKPOINT");
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    for i in 1..=3 {
        c.batch_execute(&format!("UPDATE counter SET n = {i} WHERE id = 1")).await.unwrap();
        let deadline = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < deadline {
            let n: i32 = c.query_one("SELECT n FROM counter WHERE id = 1", &[]).await.unwrap().get(0);
            assert_eq!(n, i, "a read missed the client's own write");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_waiting_for_a_replica_that_gets_banned_moves_at_once() {
    let pg = Cluster::start();
    let replica = caught_up_replica(&pg);
    let mut config = split_config(&pg, &[(&replica, &[])]);
    config.pgpilot.default_pool_size = 1;
    config.pgpilot.query_wait_timeout = Secs::from_secs(20);
    config.databases.get_mut("postgres").unwrap().routing.primary_reads =
        pgpilot_gateway::config::PrimaryReads::Off;
    let gw = start(config).await;
    wait_ready(&gw, 1).await;
    // One client holds the replica's only connection; another read waits for it.
    let holder = connect(&gw).await;
    let busy = tokio::spawn(async move { holder.simple_query("SELECT pg_sleep(5)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiter = connect(&gw).await;
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let on_replica = on_replica(&waiter, "SELECT inet_server_port()").await;
        (on_replica, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let db = gw.shared().database("postgres").unwrap();
    db.backends[1 - db.primary_index()].ban(10_000, "test: unreachable");
    let (on_replica, took) = waiting.await.unwrap();
    assert!(!on_replica, "the read stayed with the banned replica");
    assert!(took < Duration::from_secs(2), "the read waited {took:?} for the banned replica's connection");
    busy.abort();
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_replaced_by_one_that_writes_is_called_on_the_primary_at_once() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE calls(x int)");
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let admin = connect(&gw).await;
    admin.batch_execute("CREATE FUNCTION g_r() RETURNS int STABLE LANGUAGE sql AS 'SELECT 1'").await.unwrap();
    caught_up().await;
    let app = connect(&gw).await;
    assert!(
        on_replica(&app, "SELECT g_r(), inet_server_port()").await,
        "a stable function reads on the replica"
    );
    admin
        .batch_execute(
            "CREATE OR REPLACE FUNCTION g_r() RETURNS int VOLATILE LANGUAGE sql AS 'INSERT INTO calls VALUES (1) RETURNING 1'",
        )
        .await
        .unwrap();
    // Another client's call the moment the DDL returns, before the catalog is read again.
    assert!(
        !on_replica(&app, "SELECT g_r(), inet_server_port()").await,
        "called on the replica right after the DDL"
    );
    // The monitor reads the catalog again within a lag check or two, not a minute later.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..3 {
        assert!(
            !on_replica(&app, "SELECT g_r(), inet_server_port()").await,
            "a writing function ran on the replica"
        );
    }
    // ALTER ROUTINE, and DDL a DO block runs, change the catalog too.
    for (f, ddl) in [
        ("g_routine", "ALTER ROUTINE g_routine() VOLATILE"),
        ("g_do", "DO $$BEGIN EXECUTE 'ALTER FUNCTION g_do() VOLATILE'; END$$"),
    ] {
        admin
            .batch_execute(&format!("CREATE FUNCTION {f}() RETURNS int STABLE LANGUAGE sql AS 'SELECT 1'"))
            .await
            .unwrap();
        caught_up().await;
        let call = format!("SELECT {f}(), inet_server_port()");
        assert!(on_replica(&app, &call).await, "{f}: a stable function reads on the replica");
        admin.batch_execute(ddl).await.unwrap();
        for _ in 0..3 {
            assert!(!on_replica(&app, &call).await, "{f}: called on the replica after {ddl}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    gw.shutdown().await;
}

/// pgJDBC, psycopg and node-postgres send a SET with Parse, Bind, Describe, Execute and Sync:
/// pgpilot's own settings are answered in that form too, never sent to a server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgpilot_settings_sent_with_the_extended_protocol_route_the_session() {
    use tokio::io::AsyncWriteExt;
    let (_pg, _replica, gw) = split_with_one_replica().await;
    let mut c = raw_login(addr(&gw)).await;
    let port_read = async |c: &mut tokio::net::TcpStream| -> u16 {
        c.write_all(&message(b'Q', b"SELECT inet_server_port()\0")).await.unwrap();
        let got = read_until_ready(c).await;
        let (_, row) = backend_messages(&got).into_iter().find(|(t, _)| *t == b'D').expect("a row");
        String::from_utf8_lossy(&row[6..]).parse().unwrap()
    };
    // Prepared as a named statement (psycopg, once it ran it 5 times) and run twice, as drivers
    // run their prepared statements: pgpilot keeps it, and applies it at each Execute.
    for (name, value, expect_replica) in [(&b"_pg3_0"[..], "primary", false), (b"_pg3_1", "'auto'", true)] {
        let mut parse = name.to_vec();
        parse.push(0);
        parse.extend_from_slice(format!("SET pgpilot.route = {value}\0\0\0").as_bytes());
        let mut bind = vec![0];
        bind.extend_from_slice(name);
        bind.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        let mut batch = message(b'P', &parse);
        for _ in 0..2 {
            batch.extend(message(b'B', &bind));
            batch.extend(message(b'D', b"P\0"));
            batch.extend(message(b'E', &[0, 0, 0, 0, 0]));
        }
        batch.extend(message(b'S', &[]));
        c.write_all(&batch).await.unwrap();
        let got = read_until_ready(&mut c).await;
        // (A ParameterStatus may come first: the server the batch went to got the client's settings.)
        let tags: Vec<u8> = backend_messages(&got).iter().map(|(t, _)| *t).filter(|t| *t != b'S').collect();
        assert_eq!(tags, b"12nC2nCZ", "{:?}", backend_messages(&got));
        // The batch took a server, as a read: it moves no read-your-writes mark.
        for _ in 0..30 {
            let port = port_read(&mut c).await;
            if REPLICA_PORTS.lock().unwrap().contains(&port) == expect_replica {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for _ in 0..3 {
            let port = port_read(&mut c).await;
            let on_replica = REPLICA_PORTS.lock().unwrap().contains(&port);
            assert_eq!(on_replica, expect_replica, "after the prepared SET pgpilot.route = {value}");
        }
    }
    // A refused value (its Execute fails) changes nothing: the route stays auto.
    for (value, expect_replica) in [("primary", false), ("'auto'", true), ("'primay'", true)] {
        let mut batch = message(b'P', format!("\0SET pgpilot.route = {value}\0\0\0").as_bytes());
        batch.extend(message(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
        batch.extend(message(b'D', b"P\0"));
        batch.extend(message(b'E', &[0, 0, 0, 0, 0]));
        batch.extend(message(b'S', &[]));
        c.write_all(&batch).await.unwrap();
        let got = read_until_ready(&mut c).await;
        let tags: Vec<u8> = backend_messages(&got).iter().map(|(t, _)| *t).collect();
        let answer: &[u8] = if value.contains("primay") { b"12nEZ" } else { b"12nCZ" };
        assert_eq!(tags, answer, "{:?}", backend_messages(&got));
        for _ in 0..3 {
            let port = port_read(&mut c).await;
            assert_eq!(
                REPLICA_PORTS.lock().unwrap().contains(&port),
                expect_replica,
                "after SET pgpilot.route = {value}"
            );
        }
    }
    gw.shutdown().await;
}

/// Reads a standby would refuse (a serializable session default), prepared statements under EXPLAIN,
/// and pgpilot's own settings wrapped in the comments tools add.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_defaults_explained_executes_and_commented_settings_route_right() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE t(id int primary key, v text)");
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    let r = "inet_server_port()";
    assert!(on_replica(&c, &format!("SELECT {r}")).await);

    // A standby refuses serializable transactions, the session's default ones too.
    c.batch_execute("SET default_transaction_isolation = 'serializable'").await.unwrap();
    assert!(!on_replica(&c, &format!("SELECT {r}")).await);
    let row = c.query_one("SELECT inet_server_port()", &[]).await.expect("an extended-protocol read");
    assert_eq!(row.get::<_, i32>(0), pg.port() as i32);
    assert!(!on_replica(&c, &format!("BEGIN READ ONLY; SELECT {r}")).await);
    c.batch_execute("COMMIT").await.unwrap();
    assert!(on_replica(&c, &format!("BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY; SELECT {r}")).await);
    c.batch_execute("COMMIT").await.unwrap();
    // The same BEGIN sent on its own (pgpilot defers it to the first statement; helper-130).
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.unwrap();
    assert!(on_replica(&c, &format!("SELECT {r}")).await, "the BEGIN's own level decides");
    c.batch_execute("COMMIT; RESET default_transaction_isolation").await.unwrap();
    assert!(on_replica(&c, &format!("SELECT {r}")).await);
    c.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE").await.unwrap();
    assert!(!on_replica(&c, &format!("SELECT {r}")).await);
    c.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await
        .unwrap();
    assert!(on_replica(&c, &format!("SELECT {r}")).await);
    // The same sent with the extended protocol (pgJDBC's setTransactionIsolation): the setting is
    // kept, not lost to a standby refusing pgpilot's reading it back.
    for set in [
        "SET default_transaction_isolation = 'serializable'",
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    ] {
        let fresh = connect(&gw).await;
        fresh.execute(set, &[]).await.unwrap();
        for _ in 0..3 {
            let row =
                fresh.query_one("SELECT current_setting('transaction_isolation'), inet_server_port()", &[]);
            let row = row.await.expect("a read after the setting");
            assert_eq!(
                (row.get::<_, String>(0), row.get::<_, i32>(1)),
                ("serializable".into(), pg.port() as i32),
                "{set}"
            );
        }
    }

    // EXPLAIN ANALYZE EXECUTE runs the prepared statement: an INSERT's must reach the primary; and
    // EXPLAIN EXECUTE finds the statement wherever it runs.
    c.batch_execute("PREPARE ins(int) AS INSERT INTO t VALUES ($1, 'p')").await.unwrap();
    c.batch_execute("EXPLAIN ANALYZE EXECUTE ins(10)").await.expect("EXPLAIN ANALYZE EXECUTE of an INSERT");
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t WHERE id = 10"), "1");
    c.batch_execute("PREPARE sel AS SELECT 1").await.unwrap();
    for _ in 0..4 {
        c.batch_execute("EXPLAIN EXECUTE sel").await.expect("EXPLAIN EXECUTE on another server");
        c.batch_execute("EXPLAIN EXECUTE sel /* pgpilot:primary */").await.unwrap();
    }
    caught_up().await;

    // SET pgpilot.route with the comments sqlcommenter or marginalia add, before or after.
    c.batch_execute("/* app:web */ SET pgpilot.route = primary").await.unwrap();
    assert!(!on_replica(&c, &format!("SELECT {r}")).await);
    c.batch_execute("SET pgpilot.route = auto /* controller:x */").await.unwrap();
    assert!(on_replica(&c, &format!("SELECT {r}")).await);
    c.batch_execute("-- tagged\nSET pgpilot.route = primary -- note").await.unwrap();
    assert!(!on_replica(&c, &format!("SELECT {r}")).await);
    gw.shutdown().await;
}

/// A write hidden behind a view, a user operator, a cast, a domain's CHECK, an aggregate's
/// transition function or a parameter default runs on the primary (a replica would refuse it),
/// though the statement names no volatile function, and most have no '(' for the quick scan to
/// stop at. Views of no volatile function, or of read-only ones (random()), still read on replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_hidden_behind_views_operators_casts_aggregates_and_defaults_run_on_the_primary() {
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE t(id int primary key); INSERT INTO t VALUES (1);
         CREATE VIEW v_plain AS SELECT id, inet_server_port() AS port FROM t;
         CREATE VIEW v_random AS SELECT random() AS r, inet_server_port() AS port",
    );
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    assert!(on_replica(&c, "SELECT * FROM v_plain").await, "a plain view reads on the replica");
    let db = gw.shared().database("postgres").unwrap();
    assert!(db.plain_selects_only_read(), "a view of random() is no hidden writer: the quick path stays");
    c.batch_execute(HIDDEN_WRITERS).await.unwrap();
    // The DDL through pgpilot has the monitor read the catalog again, within a round or two.
    let seen = eventually(Duration::from_secs(10), || !db.plain_selects_only_read()).await;
    assert!(seen, "the catalog read after the DDL found no hidden writer");
    let logged = || pg.psql("postgres", "SELECT count(*) FROM log").parse::<u32>().unwrap();
    for sql in [
        "SELECT * FROM v_wr",
        "SELECT 1 ### 2",
        "SELECT 1::wt",
        "SELECT 1::dw",
        "SELECT wagg(id) FROM t",
        "SELECT fdef()",
    ] {
        let before = logged();
        c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(logged(), before + 1, "{sql} did not write");
        // The extended protocol is routed by the same verdict.
        c.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql} (extended): {e}"));
        assert_eq!(logged(), before + 2, "{sql} (extended) did not write");
    }
    caught_up().await;
    assert!(on_replica(&c, "SELECT * FROM v_plain").await, "a plain view left the replica");
    assert!(on_replica(&c, "SELECT * FROM v_random").await, "a view of random() left the replica");
    assert!(
        on_replica(&c, "SELECT now() < current_date, 1 + 2, '1'::int, inet_server_port()").await,
        "built-in operators and casts left the replica"
    );
    gw.shutdown().await;
}

/// A built-in a standby refuses, called from a parameter DEFAULT, a `BEGIN ATOMIC` body or a view
/// (nextval, txid_current: pinned, so pg_depend records no such call), sends the call to the
/// primary, where it succeeds; on a replica it failed with 25006. A body calling a read-only
/// volatile built-in (random()) still reads on the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_writers_behind_defaults_atomic_bodies_and_views_run_on_the_primary() {
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE SEQUENCE s1;
         CREATE FUNCTION f_defvol(y bigint DEFAULT nextval('s1')) RETURNS bigint LANGUAGE plpgsql IMMUTABLE
           AS 'BEGIN RETURN y; END';
         CREATE FUNCTION f_atomic() RETURNS bigint LANGUAGE sql IMMUTABLE BEGIN ATOMIC SELECT nextval('s1'); END;
         CREATE FUNCTION f_outer() RETURNS bigint LANGUAGE sql IMMUTABLE BEGIN ATOMIC SELECT f_atomic(); END;
         CREATE FUNCTION f_random() RETURNS float8 LANGUAGE sql IMMUTABLE BEGIN ATOMIC SELECT random(); END;
         CREATE VIEW v_txid AS SELECT txid_current() AS x;",
    );
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    for sql in [
        "SELECT f_defvol(), inet_server_port()",
        "SELECT f_atomic(), inet_server_port()",
        "SELECT f_outer(), inet_server_port()",
        "SELECT x, inet_server_port() FROM v_txid",
    ] {
        assert!(!on_replica(&c, sql).await, "{sql} ran on the replica");
    }
    caught_up().await;
    assert!(on_replica(&c, "SELECT f_random(), inet_server_port()").await, "random() left the replica");
    gw.shutdown().await;
}

/// A SQL PREPARE sent through Parse/Bind/Execute (psycopg with prepare_threshold=0) pins its client
/// to the server it ran on: that is the primary, where its EXECUTEs go (on a replica, the EXECUTE
/// that needed the primary waited forever for a server the pinned client could not give up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_prepare_sent_with_the_extended_protocol_runs_where_its_executes_do() {
    let (pg, _replica, gw) = split_with_one_replica().await;
    let c = connect(&gw).await;
    let prepare = c.prepare("PREPARE px AS SELECT inet_server_port()").await.unwrap();
    c.execute(&prepare, &[]).await.unwrap();
    for _ in 0..3 {
        let simple = tokio::time::timeout(Duration::from_secs(5), c.simple_query("EXECUTE px")).await;
        let rows = simple.expect("EXECUTE hung").unwrap();
        let port = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        assert_eq!(port, Some(pg.port().to_string()), "the prepared statement ran on a replica");
        let extended = tokio::time::timeout(Duration::from_secs(5), c.query_one("EXECUTE px", &[])).await;
        assert_eq!(extended.expect("EXECUTE hung").unwrap().get::<_, i32>(0), i32::from(pg.port()));
    }
    gw.shutdown().await;
}

/// A search_path set with the extended protocol is read back from the server; a statement right
/// behind it, before the answer, must not be routed by the old path (a function of the new path
/// may write where the old one's only read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_right_behind_a_new_search_path_is_routed_by_it() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE SCHEMA s2; CREATE TABLE s2.log(x int);
         CREATE FUNCTION public.f_same(int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT $1';
         CREATE FUNCTION s2.f_same(int) RETURNS int LANGUAGE sql VOLATILE AS 'INSERT INTO s2.log VALUES ($1) RETURNING x'",
    );
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    for round in 0..5 {
        let mut raw = raw_login(addr(&gw)).await;
        let mut out = bytes::BytesMut::new();
        pgpilot_wire::frontend::parse(&mut out, b"", b"SET search_path = s2, public", &[]);
        pgpilot_wire::frontend::bind(&mut out, b"", b"", &[0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
        pgpilot_wire::frontend::sync(&mut out);
        pgpilot_wire::frontend::query(&mut out, "SELECT f_same(1)");
        raw.write_all(&out).await.unwrap();
        let mut got = read_until_ready(&mut raw).await;
        while backend_messages(&got).iter().filter(|(t, _)| *t == b'Z').count() < 2 {
            got.extend(read_until_ready(&mut raw).await);
        }
        let errors: Vec<String> = backend_messages(&got)
            .iter()
            .filter(|(t, _)| *t == b'E')
            .map(|(_, body)| String::from_utf8_lossy(body).into_owned())
            .collect();
        assert!(errors.is_empty(), "round {round}: {errors:?}");
    }
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM s2.log"), "5");
    gw.shutdown().await;
}

/// A standby cannot read unlogged tables and sequences (0A000 "cannot access temporary or unlogged
/// relations during recovery"): reads of them, and of views over them, run on the primary; a table
/// made unlogged through pgpilot is listed once the DDL has run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_unlogged_tables_run_on_the_primary() {
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE UNLOGGED TABLE ulog(x int); INSERT INTO ulog VALUES (1);
         CREATE UNLOGGED SEQUENCE useq; CREATE VIEW uview AS SELECT x FROM ulog;
         CREATE TABLE plain(x int); INSERT INTO plain VALUES (2)",
    );
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    for sql in [
        "SELECT x FROM ulog",
        "SELECT * FROM public.ulog WHERE x = 1",
        "TABLE ulog",
        "SELECT x FROM uview",
        "SELECT last_value FROM useq",
        "SELECT p.x FROM plain p JOIN ulog u ON u.x < p.x",
    ] {
        c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql} (simple): {e}"));
        c.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql} (extended): {e}"));
    }
    assert!(
        on_replica(&c, "SELECT x, inet_server_port() FROM plain").await,
        "a logged table's read left the replicas"
    );
    // Made unlogged through pgpilot: listed for the next reads.
    c.batch_execute("SELECT 1 AS a INTO UNLOGGED made_by_select_into").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let other = connect(&gw).await;
    other
        .simple_query("SELECT a FROM made_by_select_into")
        .await
        .expect("a table made by SELECT INTO UNLOGGED");
    c.batch_execute("ALTER TABLE plain SET UNLOGGED").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    other.simple_query("SELECT x FROM plain").await.expect("a read of a table made unlogged");
    gw.shutdown().await;
}

/// A logged parent over unlogged partitions or inheritance children, and a function that reads an
/// unlogged table, read what a standby cannot: they run on the primary too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_of_unlogged_tables_and_functions_reading_them_run_on_the_primary() {
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE pp(a int) PARTITION BY LIST (a); CREATE UNLOGGED TABLE pp1 PARTITION OF pp FOR VALUES IN (1);
         INSERT INTO pp VALUES (1);
         CREATE TABLE ip(a int); CREATE UNLOGGED TABLE ic() INHERITS (ip); INSERT INTO ic VALUES (2);
         CREATE UNLOGGED TABLE \"Odd.Name\"(a int); INSERT INTO \"Odd.Name\" VALUES (3);
         CREATE FUNCTION read_odd() RETURNS bigint LANGUAGE sql STABLE AS 'SELECT count(*) FROM \"Odd.Name\"';
         CREATE FUNCTION read_ic() RETURNS SETOF ic LANGUAGE plpgsql STABLE AS 'BEGIN RETURN QUERY SELECT * FROM ic; END';
         CREATE FUNCTION plain_f() RETURNS int LANGUAGE sql STABLE AS 'SELECT 1'",
    );
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    for sql in ["SELECT * FROM pp", "SELECT * FROM ip", "SELECT read_odd()", "SELECT * FROM read_ic()"] {
        c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    assert!(
        on_replica(&c, "SELECT plain_f(), inet_server_port()").await,
        "a function reading no unlogged table"
    );
    gw.shutdown().await;
}

/// Statements a standby refuses although they change nothing, reads of the server's own state
/// (which a replica would answer with its own), and a search_path the server gives the role
/// (ALTER ROLE ... SET): routed so that the client gets what the primary gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_state_standby_refusals_and_role_search_paths_route_to_the_primary() {
    use tokio_postgres::error::SqlState;
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE SCHEMA app; CREATE TABLE app.log(x int);
         CREATE FUNCTION app.g() RETURNS int LANGUAGE sql VOLATILE AS 'INSERT INTO app.log VALUES (1) RETURNING x';
         CREATE FUNCTION public.g() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 42';
         CREATE TABLE rw(x int);
         ALTER ROLE postgres SET search_path = app, public",
    );
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    // The role's search_path finds app.g, which writes.
    assert_eq!(first_value(&c, "SHOW search_path").await, "app, public");
    assert_eq!(first_value(&c, "SELECT g()").await, "1", "app.g ran");
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM app.log"), "1");
    // The primary's own state: its replication connection, its locks.
    assert_eq!(first_value(&c, "SELECT count(*) FROM pg_stat_replication").await, "1");
    assert_eq!(first_value(&c, "SELECT count(*) FROM pg_catalog.pg_stat_replication").await, "1");
    // No-ops outside a transaction on the primary, refused by a standby.
    for sql in ["SET transaction_read_only = off", "SET transaction_isolation = 'serializable'"] {
        c.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    // PostgreSQL takes the last mode: read only, and a standby refuses the READ WRITE before it.
    c.batch_execute("BEGIN READ WRITE, READ ONLY").await.unwrap();
    let err =
        c.batch_execute("INSERT INTO rw VALUES (1)").await.expect_err("a write in a read-only transaction");
    assert_eq!(err.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION));
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM rw"), "0");
    gw.shutdown().await;
}

/// Writes run by code a statement does not call by a user function's name: `a.bumpit` is
/// `bumpit(a)` in attribute notation (no '(' for the quick scan to stop at), query_to_xml and
/// ts_stat run the query they are given. A standby would refuse them (25006). A plain column
/// selected with a dot still reads on the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_attribute_notation_and_query_texts_run_on_the_primary() {
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE code_log (n int);
         CREATE TABLE att (id int); INSERT INTO att VALUES (1);
         CREATE FUNCTION bumpit(att) RETURNS bigint LANGUAGE plpgsql VOLATILE
           AS $$BEGIN INSERT INTO code_log VALUES ($1.id); RETURN (SELECT count(*) FROM code_log); END$$",
    );
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    let logged = || pg.psql("postgres", "SELECT count(*) FROM code_log").parse::<u32>().unwrap();
    for sql in [
        "SELECT a.bumpit FROM att a",
        "SELECT att.bumpit FROM att",
        "SELECT query_to_xml('SELECT bumpit(att) FROM att', true, false, '')",
        "SELECT * FROM ts_stat('SELECT to_tsvector(bumpit(att)::text) FROM att')",
    ] {
        let before = logged();
        c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        c.query(sql, &[]).await.unwrap_or_else(|e| panic!("{sql} (extended): {e}"));
        assert_eq!(logged(), before + 2, "{sql}");
    }
    caught_up().await;
    assert!(on_replica(&c, "SELECT a.id, inet_server_port() FROM att a").await, "a column left the replica");
    gw.shutdown().await;
}

/// A `BEGIN READ ONLY` sent alone (asyncpg's `transaction(readonly=True)`, psql line by line) is
/// answered by pgpilot and sent in front of the transaction's first statement, to the server that
/// statement belongs on: a standby cannot read an unlogged table, give a transaction id or let the
/// transaction turn read-write, and a transaction cannot change servers once begun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_begin_read_only_runs_where_its_first_statement_belongs() {
    use tokio_postgres::error::SqlState;
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE UNLOGGED TABLE ulog(x int); INSERT INTO ulog VALUES (1); CREATE TABLE rw(x int)",
    );
    let replica = caught_up_replica(&pg);
    let mut config = split_config(&pg, &[(&replica, &[])]);
    config.pgpilot.idle_transaction_timeout = Secs::from_millis(1500);
    let gw = start(config).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    let r = "inet_server_port()";
    let read_only = "SELECT current_setting('transaction_read_only')";
    // A read first: the whole transaction on the replica.
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert!(on_replica(&c, &format!("SELECT {r}")).await);
    assert_eq!(first_value(&c, read_only).await, "on");
    assert!(on_replica(&c, &format!("SELECT {r}")).await, "the transaction stays on its replica");
    c.batch_execute("COMMIT").await.unwrap();
    // The tag is PostgreSQL's for each spelling (answered in one write: C, then Z).
    {
        use tokio::io::AsyncWriteExt;
        let mut raw = raw_login(addr(&gw)).await;
        for (begin, tag) in
            [("START TRANSACTION READ ONLY", "START TRANSACTION"), ("BEGIN READ ONLY", "BEGIN")]
        {
            raw.write_all(&query_message(begin)).await.unwrap();
            let got = read_until_any(&mut raw).await;
            let complete =
                backend_messages(&got).into_iter().find(|(t, _)| *t == b'C').expect("a tag").1.to_vec();
            assert_eq!(complete, format!("{tag}\0").into_bytes(), "{begin}");
            raw.write_all(&query_message("COMMIT")).await.unwrap();
            read_until_ready(&mut raw).await;
        }
    }
    // What a standby cannot do first: the transaction runs on the primary, read only all the same.
    for (begin, first) in [
        ("BEGIN READ ONLY", "SELECT x FROM ulog"),
        ("START TRANSACTION READ ONLY", "SELECT txid_current() > 0"),
        // asyncpg's spelling.
        ("BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;", "SELECT pg_current_wal_lsn() IS NOT NULL"),
    ] {
        c.batch_execute(begin).await.unwrap();
        c.simple_query(first).await.unwrap_or_else(|e| panic!("{begin} then {first}: {e}"));
        assert!(!on_replica(&c, &format!("SELECT {r}")).await, "{begin} then {first} left the primary");
        assert_eq!(first_value(&c, read_only).await, "on");
        let err = c
            .batch_execute("INSERT INTO rw VALUES (1)")
            .await
            .expect_err("a write in a read-only transaction");
        assert_eq!(err.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION));
        c.batch_execute("ROLLBACK").await.unwrap();
    }
    // The extended protocol's first statement (psycopg sends BEGIN alone, then its statements).
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    let x: i32 = c.query_one("SELECT x FROM ulog WHERE x = $1", &[&1i32]).await.unwrap().get(0);
    assert_eq!(x, 1);
    c.batch_execute("COMMIT").await.unwrap();
    // SET TRANSACTION READ WRITE before any statement is allowed, as on the primary.
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    c.batch_execute("SET TRANSACTION READ WRITE").await.unwrap();
    c.batch_execute("INSERT INTO rw VALUES (2)").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM rw"), "1");
    caught_up().await; // read-your-writes holds reads on the primary until the insert is replayed
                       // Ended before anything ran: pgpilot's own settings are undone by ROLLBACK, kept by COMMIT.
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    c.batch_execute("SET pgpilot.route = primary").await.unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    assert!(on_replica(&c, &format!("SELECT {r}")).await, "the ROLLBACK undid SET pgpilot.route");
    c.batch_execute("BEGIN READ ONLY").await.unwrap();
    c.batch_execute("SET pgpilot.route = primary").await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
    assert!(!on_replica(&c, &format!("SELECT {r}")).await, "the COMMIT kept SET pgpilot.route");
    // A transaction begun so and left idle ends by idle_transaction_timeout, as one on a server.
    let idle = connect(&gw).await;
    idle.batch_execute("BEGIN READ ONLY").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        idle.simple_query("SELECT 1").await.is_err(),
        "idle_transaction_timeout did not close the client"
    );
    gw.shutdown().await;
}

/// A client that ties itself to its server (Django's `iterator()` declares a WITH HOLD cursor in
/// autocommit) is tied to the primary: its later writes must run where it is pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_pins_its_client_runs_on_the_primary() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE pinned_writes(x int)");
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    for pin in [
        "DECLARE c CURSOR WITH HOLD FOR SELECT inet_server_port()",
        "LOAD 'auto_explain'",
        "SET SESSION AUTHORIZATION postgres",
    ] {
        let c = connect(&gw).await;
        c.batch_execute(pin).await.unwrap_or_else(|e| panic!("{pin}: {e}"));
        for _ in 0..3 {
            c.batch_execute("INSERT INTO pinned_writes VALUES (1)")
                .await
                .unwrap_or_else(|e| panic!("a write after {pin}: {e}"));
            c.execute("INSERT INTO pinned_writes VALUES ($1)", &[&2i32])
                .await
                .unwrap_or_else(|e| panic!("an extended write after {pin}: {e}"));
        }
    }
    let c = connect(&gw).await;
    let n: i64 =
        c.query_one("/* pgpilot:primary */ SELECT count(*) FROM pinned_writes", &[]).await.unwrap().get(0);
    assert_eq!(n, 18);
    gw.shutdown().await;
}

/// asyncpg's way to prepare: Parse and Describe of `name`, then Flush; returns once described.
async fn prepare_with_flush(raw: &mut tokio::net::TcpStream, name: &str, sql: &str) {
    use tokio::io::AsyncWriteExt;
    let mut out = bytes::BytesMut::new();
    pgpilot_wire::frontend::parse(&mut out, name.as_bytes(), sql.as_bytes(), &[0, 0]);
    pgpilot_wire::frontend::target(&mut out, b'D', b'S', name.as_bytes());
    out.extend_from_slice(b"H\0\0\0\x04");
    raw.write_all(&out).await.unwrap();
    let mut got = Vec::new();
    while !backend_messages(&got).iter().any(|m| m.0 == b'T') {
        got.extend(read_until_any(raw).await);
    }
}

/// Bind, Execute and Sync of `name`, a one-row, one-column statement; its value once the
/// ReadyForQuery of `status` ('I' idle, 'T' in a transaction) arrives.
async fn execute_one_value(raw: &mut tokio::net::TcpStream, name: &str, status: u8) -> String {
    use tokio::io::AsyncWriteExt;
    let mut out = bytes::BytesMut::new();
    pgpilot_wire::frontend::bind(&mut out, b"", name.as_bytes(), &[0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
    pgpilot_wire::frontend::sync(&mut out);
    raw.write_all(&out).await.unwrap();
    let got = read_until_status(raw, status).await;
    let row = backend_messages(&got).into_iter().find(|m| m.0 == b'D').expect("a row").1.to_vec();
    String::from_utf8_lossy(&row[6..]).into_owned()
}

async fn read_until_status(raw: &mut tokio::net::TcpStream, status: u8) -> Vec<u8> {
    let mut got = Vec::new();
    while !got.ends_with(&[b'Z', 0, 0, 0, 5, status]) {
        got.extend(read_until_any(raw).await);
    }
    got
}

/// asyncpg prepares apart from running: Parse, Describe, Flush. Sent to the primary (nothing says
/// yet what will run), that batch runs nothing, so it must not hold the client's reads on the
/// primary for read-your-writes: every asyncpg read went there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepare_alone_does_not_hold_reads_on_the_primary() {
    let (_pg, replica, gw) = split_with_one_replica().await;
    let mut raw = raw_login(addr(&gw)).await;
    for i in 0..5 {
        let name = format!("a{i}");
        prepare_with_flush(&mut raw, &name, "SELECT inet_server_port()").await;
        // The primary's server goes back to its pool once pgpilot's own Sync is answered, which
        // may come after the description: a Bind before that runs there.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let port = execute_one_value(&mut raw, &name, b'I').await;
        assert_eq!(port, replica.port().to_string(), "read {i} ran on the primary");
    }
    // The Bind right behind the description, as asyncpg sends it, while the primary may still be
    // attached: it goes where a read goes, and no prepare counts as a write (helper-170: with
    // statement_cache_size=0 most asyncpg reads ran on the primary, each counted as a write).
    let writes = || async {
        let (_, metrics) = http_get(format!("http://{}/metrics", gw.http_addr().unwrap())).await;
        metrics
            .lines()
            .filter(|l| l.starts_with("pgpilot_routed_writes_total") && l.contains("role=\"primary\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = writes().await;
    for i in 0..20 {
        let name = format!("b{i}");
        prepare_with_flush(&mut raw, &name, "SELECT inet_server_port()").await;
        let port = execute_one_value(&mut raw, &name, b'I').await;
        assert_eq!(port, replica.port().to_string(), "read b{i} ran on the primary");
    }
    assert_eq!(writes().await, before, "preparing a read counted as a write");
    gw.shutdown().await;
}

/// asyncpg's Bind, Execute and Sync sent right behind its Parse, Describe and Flush, which may
/// still hold the primary when they arrive (the read then runs there, judged as a read): the
/// client's next read goes to the replica (helper-170: such reads counted as writes and held the
/// client's reads on the primary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_bound_in_the_batch_that_prepared_it_moves_no_mark() {
    use tokio::io::AsyncWriteExt;
    let (_pg, replica, gw) = split_with_one_replica().await;
    let mut raw = raw_login(addr(&gw)).await;
    for i in 0..10 {
        let mut prepare = bytes::BytesMut::new();
        pgpilot_wire::frontend::parse(&mut prepare, b"", b"SELECT inet_server_port()", &[0, 0]);
        pgpilot_wire::frontend::target(&mut prepare, b'D', b'S', b"");
        prepare.extend_from_slice(b"H\0\0\0\x04");
        raw.write_all(&prepare).await.unwrap();
        let mut run = bytes::BytesMut::new();
        pgpilot_wire::frontend::bind(&mut run, b"", b"", &[0, 0, 0, 0, 0, 0]);
        run.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
        pgpilot_wire::frontend::sync(&mut run);
        raw.write_all(&run).await.unwrap();
        read_until_status(&mut raw, b'I').await;
        raw.write_all(&query_message("SELECT inet_server_port()")).await.unwrap();
        let got = read_until_ready(&mut raw).await;
        let row = backend_messages(&got).into_iter().find(|m| m.0 == b'D').expect("a row").1.to_vec();
        let port = String::from_utf8_lossy(&row[6..]).into_owned();
        assert_eq!(port, replica.port().to_string(), "the read after round {i} was held on the primary");
    }
    gw.shutdown().await;
}

/// asyncpg's `transaction(readonly=True)`: BEGIN READ ONLY alone, then the first statement
/// prepared with Parse, Describe, Flush and run with Bind, Execute, Sync. Nothing in a read-only
/// transaction can write, so the Flush batch goes to a replica like the statement it prepares
/// (it went to the primary, and with it every such transaction whose statement was new).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_transaction_prepared_with_flush_runs_on_a_replica() {
    use tokio::io::AsyncWriteExt;
    let (_pg, replica, gw) = split_with_one_replica().await;
    let mut raw = raw_login(addr(&gw)).await;
    for i in 0..3 {
        raw.write_all(&query_message("BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;")).await.unwrap();
        read_until_status(&mut raw, b'T').await;
        let name = format!("ro{i}");
        prepare_with_flush(&mut raw, &name, "SELECT inet_server_port()").await;
        let port = execute_one_value(&mut raw, &name, b'T').await;
        assert_eq!(port, replica.port().to_string(), "read-only transaction {i} ran on the primary");
        raw.write_all(&query_message("COMMIT")).await.unwrap();
        read_until_ready(&mut raw).await;
    }
    gw.shutdown().await;
}

/// lib/pq runs each parameterized query as two batches: Parse, Describe and Sync of the unnamed
/// statement, then Bind, Execute and Sync. The second batch is the read the first described: it
/// goes to a replica, and moves no read-your-writes mark (every lib/pq read went to the primary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_of_the_unnamed_statement_parsed_before_is_routed_by_its_text() {
    use tokio::io::AsyncWriteExt;
    let (_pg, replica, gw) = split_with_one_replica().await;
    let mut raw = raw_login(addr(&gw)).await;
    let port_of = |got: &[u8]| -> u16 {
        let row = backend_messages(got).into_iter().find(|m| m.0 == b'D').expect("a row").1.to_vec();
        String::from_utf8_lossy(&row[6..]).parse().unwrap()
    };
    for (i, text) in
        [&b"SELECT inet_server_port()"[..], b"SELECT inet_server_port() WHERE $1::int = 1"].iter().enumerate()
    {
        let params: &[u8] = if i == 0 { &[0, 0] } else { &[0, 1, 0, 0, 0, 0] };
        let mut out = bytes::BytesMut::new();
        pgpilot_wire::frontend::parse(&mut out, b"", text, params);
        pgpilot_wire::frontend::target(&mut out, b'D', b'S', b"");
        pgpilot_wire::frontend::sync(&mut out);
        raw.write_all(&out).await.unwrap();
        read_until_ready(&mut raw).await;
        let mut out = bytes::BytesMut::new();
        let bind_rest: &[u8] =
            if i == 0 { &[0, 0, 0, 0, 0, 0] } else { &[0, 0, 0, 1, 0, 0, 0, 1, b'1', 0, 0] };
        pgpilot_wire::frontend::bind(&mut out, b"", b"", bind_rest);
        out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
        pgpilot_wire::frontend::sync(&mut out);
        raw.write_all(&out).await.unwrap();
        let got = read_until_ready(&mut raw).await;
        assert_eq!(port_of(&got), replica.port(), "the bound read {i} ran on the primary");
        // The next read, in one batch, still goes to the replica: nothing moved the mark.
        let mut out = bytes::BytesMut::new();
        pgpilot_wire::frontend::parse(&mut out, b"", b"SELECT inet_server_port()", &[0, 0]);
        pgpilot_wire::frontend::bind(&mut out, b"", b"", &[0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
        pgpilot_wire::frontend::sync(&mut out);
        raw.write_all(&out).await.unwrap();
        let got = read_until_ready(&mut raw).await;
        assert_eq!(port_of(&got), replica.port(), "the read after bound read {i} ran on the primary");
    }
    let (_, metrics) = http_get(format!("http://{}/metrics", gw.http_addr().unwrap())).await;
    let primary_writes: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("pgpilot_routed_writes_total") && l.contains("role=\"primary\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(primary_writes, 0.0, "a bound read counted as a write");
    gw.shutdown().await;
}

/// A statement described on the replica and bound on the primary after the client's own DDL (the
/// write moved its reads there) fails with 0A000, as on one PostgreSQL connection, every time: also
/// when the primary's copy was prepared for another client under the new row type before a DDL
/// that was undone since (lib/pq read int8 values as zeros from the second round on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_type_changed_by_the_clients_own_ddl_fails_its_statement_every_time() {
    use tokio::io::AsyncWriteExt;
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE own_ddl(a int, b text); INSERT INTO own_ddl VALUES (1, 'x')");
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let tags_of = |got: &[u8]| -> Vec<u8> {
        backend_messages(got).iter().map(|m| m.0).filter(|t| !matches!(t, b'S' | b'N')).collect()
    };
    for round in 0..3 {
        replica.wait_caught_up(&pg);
        caught_up().await;
        let mut raw = raw_login(addr(&gw)).await;
        let mut out = bytes::BytesMut::new();
        pgpilot_wire::frontend::parse(&mut out, b"s1", b"SELECT * FROM own_ddl ORDER BY a", &[0, 0]);
        pgpilot_wire::frontend::target(&mut out, b'D', b'S', b"s1");
        pgpilot_wire::frontend::sync(&mut out);
        raw.write_all(&out).await.unwrap();
        assert_eq!(tags_of(&read_until_ready(&mut raw).await), b"1tTZ".to_vec(), "round {round}");
        raw.write_all(&query_message("ALTER TABLE own_ddl ALTER COLUMN a TYPE bigint")).await.unwrap();
        assert_eq!(tags_of(&read_until_ready(&mut raw).await), b"CZ".to_vec(), "round {round}");
        let mut out = bytes::BytesMut::new();
        pgpilot_wire::frontend::bind(&mut out, b"", b"s1", &[0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(b"E\0\0\0\x09\0\0\0\0\0");
        pgpilot_wire::frontend::sync(&mut out);
        raw.write_all(&out).await.unwrap();
        let got = read_until_ready(&mut raw).await;
        let msgs = backend_messages(&got);
        let error = msgs
            .iter()
            .find(|m| m.0 == b'E')
            .unwrap_or_else(|| panic!("round {round}: rows of the new type: {msgs:?}"));
        assert!(
            String::from_utf8_lossy(error.1).contains("C0A000"),
            "round {round}: {:?}",
            String::from_utf8_lossy(error.1)
        );
        raw.write_all(&query_message("ALTER TABLE own_ddl ALTER COLUMN a TYPE int")).await.unwrap();
        assert_eq!(tags_of(&read_until_ready(&mut raw).await), b"CZ".to_vec(), "round {round}");
    }
    gw.shutdown().await;
}

/// Routed writes counted on the primary so far (/metrics).
async fn primary_writes(gw: &Gateway) -> f64 {
    let (_, metrics) = http_get(format!("http://{}/metrics", gw.http_addr().unwrap())).await;
    metrics
        .lines()
        .filter(|l| l.starts_with("pgpilot_routed_writes_total") && l.contains("role=\"primary\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The first column of the one row a simple Query returns, read once the ReadyForQuery of
/// `status` comes; an error fails the test.
async fn raw_value(raw: &mut tokio::net::TcpStream, sql: &str, status: u8) -> String {
    use tokio::io::AsyncWriteExt;
    raw.write_all(&query_message(sql)).await.unwrap();
    let got = read_until_status(raw, status).await;
    let msgs = backend_messages(&got);
    if let Some(error) = msgs.iter().find(|m| m.0 == b'E') {
        panic!("{sql}: {}", String::from_utf8_lossy(error.1));
    }
    let row = msgs.iter().find(|m| m.0 == b'D').expect("a row").1;
    String::from_utf8_lossy(&row[6..]).into_owned()
}

/// Bind of `statement` to the unnamed portal, Describe of the portal, Execute: as pgJDBC,
/// psycopg and node-postgres run a statement.
fn bind_describe_execute(statement: &str) -> Vec<u8> {
    let mut out = message(b'B', &[&[0], statement.as_bytes(), &[0, 0, 0, 0, 0, 0, 0]].concat());
    out.extend(message(b'D', b"P\0"));
    out.extend(message(b'E', &[0, 0, 0, 0, 0]));
    out
}

/// The message types of an answer, ParameterStatus and notices left out.
fn answer_tags(got: &[u8]) -> Vec<u8> {
    backend_messages(got).iter().map(|m| m.0).filter(|t| !matches!(t, b'S' | b'N')).collect()
}

/// pgJDBC's and psycopg's prepared `BEGIN READ ONLY`: Parse, Bind, Describe, Execute and Sync of
/// the BEGIN (named or unnamed), or a Bind of one prepared before. Held back as a Query's BEGIN
/// is, the transaction runs where its first statement belongs: one a standby refuses
/// (`txid_current()`) on the primary, a read on the replica. (The BEGIN went to a replica at
/// once, and such a first statement failed there with 25006.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_begin_read_only_runs_where_its_first_statement_belongs() {
    use tokio::io::AsyncWriteExt;
    let (pg, replica, gw) = split_with_one_replica().await;
    let (primary_port, replica_port) = (pg.port().to_string(), replica.port().to_string());
    let mut raw = raw_login(addr(&gw)).await;
    let txid = "SELECT txid_current() > 0";
    // The statement, the BEGIN the batch parses (None: a Bind of the one parsed before), the
    // answer's tag, the transaction's first statement and the server it belongs on.
    let cases = [
        ("", Some("BEGIN READ ONLY"), "BEGIN", txid, &primary_port),
        ("", Some("BEGIN READ ONLY"), "BEGIN", "SELECT 1", &replica_port),
        ("b1", Some("START TRANSACTION READ ONLY"), "START TRANSACTION", txid, &primary_port),
        ("b1", None, "START TRANSACTION", "SELECT 1", &replica_port),
        ("b1", None, "START TRANSACTION", txid, &primary_port),
    ];
    for (round, (name, parses, tag, first, on)) in cases.into_iter().enumerate() {
        let mut batch = parses.map(|text| parse(name, text)).unwrap_or_default();
        batch.extend(bind_describe_execute(name));
        batch.extend(sync());
        raw.write_all(&batch).await.unwrap();
        let got = read_until_status(&mut raw, b'T').await;
        let answer: &[u8] = if parses.is_some() { b"12nCZ" } else { b"2nCZ" };
        assert_eq!(answer_tags(&got), answer, "round {round}: {:?}", backend_messages(&got));
        let complete = backend_messages(&got).into_iter().find(|m| m.0 == b'C').unwrap().1.to_vec();
        assert_eq!(complete, format!("{tag}\0").into_bytes(), "round {round}");
        raw_value(&mut raw, first, b'T').await;
        let port = raw_value(&mut raw, "SELECT inet_server_port()", b'T').await;
        assert_eq!(&port, on, "round {round}: a transaction begun with {first}");
        assert_eq!(raw_value(&mut raw, "SELECT current_setting('transaction_read_only')", b'T').await, "on");
        raw.write_all(&query_message("COMMIT")).await.unwrap();
        read_until_ready(&mut raw).await;
        // A transaction on the primary holds the next reads there until the replica replays it.
        caught_up().await;
    }
    // psycopg prepares apart (Parse and Sync), then binds the statement.
    raw.write_all(&[parse("b2", "BEGIN READ ONLY"), sync()].concat()).await.unwrap();
    assert_eq!(answer_tags(&read_until_ready(&mut raw).await), b"1Z");
    raw.write_all(&[bind_describe_execute("b2"), sync()].concat()).await.unwrap();
    assert_eq!(answer_tags(&read_until_status(&mut raw, b'T').await), b"2nCZ");
    raw_value(&mut raw, txid, b'T').await;
    raw.write_all(&query_message("COMMIT")).await.unwrap();
    read_until_ready(&mut raw).await;
    // The statement parsed by pgpilot alone is the client's on a server too.
    raw.write_all(&query_message("BEGIN")).await.unwrap();
    read_until_status(&mut raw, b'T').await;
    raw.write_all(&[bind_execute("b1"), sync()].concat()).await.unwrap();
    let got = read_until_status(&mut raw, b'T').await;
    assert_eq!(answer_tags(&got), b"2CZ", "{:?}", backend_messages(&got));
    raw.write_all(&query_message("ROLLBACK")).await.unwrap();
    read_until_ready(&mut raw).await;
    gw.shutdown().await;
}

/// asyncpg writes Bind, Execute and Sync apart, and pgpilot may read the Bind alone, while the
/// primary that took the Parse, Describe and Flush is still attached or after. Placed then, the
/// read went to the primary as a possible write (with statement_cache_size=0, 45 of 50 asyncpg
/// reads): it waits for the rest of its batch and goes to the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_whose_batch_arrives_in_pieces_goes_to_a_replica() {
    use tokio::io::AsyncWriteExt;
    let (_pg, replica, gw) = split_with_one_replica().await;
    let mut raw = raw_login(addr(&gw)).await;
    let before = primary_writes(&gw).await;
    for i in 0..12 {
        // The unnamed statement (statement_cache_size=0), and named ones (asyncpg's cache).
        let name = if i % 2 == 0 { String::new() } else { format!("s{i}") };
        prepare_with_flush(&mut raw, &name, "SELECT inet_server_port()").await;
        if i % 4 >= 2 {
            // The primary's server released before the Bind comes.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut bind = bytes::BytesMut::new();
        pgpilot_wire::frontend::bind(&mut bind, b"", name.as_bytes(), &[0, 0, 0, 0, 0, 0]);
        raw.write_all(&bind).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        raw.write_all(&[message(b'E', &[0, 0, 0, 0, 0]), sync()].concat()).await.unwrap();
        let got = read_until_ready(&mut raw).await;
        let row = backend_messages(&got).into_iter().find(|m| m.0 == b'D').expect("a row").1.to_vec();
        assert_eq!(
            String::from_utf8_lossy(&row[6..]),
            replica.port().to_string(),
            "read {i} ran on the primary"
        );
    }
    assert_eq!(primary_writes(&gw).await, before, "a read counted as a write");
    gw.shutdown().await;
}

/// pgJDBC's first named execution (Parse S_1, Bind S_1, Describe, Execute, Sync: after
/// prepareThreshold uses, and for every Statement with prepareThreshold=1) and node-postgres'
/// named queries: the Bind names the statement the batch parses, unknown before its Parse runs.
/// Judged by that Parse, a read goes to a replica (it went to the primary, as a write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_parsed_and_bound_by_name_in_one_batch_goes_to_a_replica() {
    use tokio::io::AsyncWriteExt;
    let (_pg, replica, gw) = split_with_one_replica().await;
    let mut raw = raw_login(addr(&gw)).await;
    let port_of = |got: &[u8]| -> String {
        let row = backend_messages(got).into_iter().find(|m| m.0 == b'D').expect("a row").1.to_vec();
        String::from_utf8_lossy(&row[6..]).into_owned()
    };
    let before = primary_writes(&gw).await;
    for i in 0..5 {
        let name = format!("S_{i}");
        let mut batch = parse(&name, "SELECT inet_server_port()");
        batch.extend(bind_describe_execute(&name));
        batch.extend(sync());
        raw.write_all(&batch).await.unwrap();
        let got = read_until_ready(&mut raw).await;
        assert_eq!(port_of(&got), replica.port().to_string(), "the first execution of {name}");
        // Run again by name, on whichever server: prepared there if it lacks it.
        raw.write_all(&[bind_execute(&name), sync()].concat()).await.unwrap();
        let got = read_until_ready(&mut raw).await;
        assert_eq!(port_of(&got), replica.port().to_string(), "the second execution of {name}");
    }
    // A write parsed and bound by name still goes to the primary.
    raw.write_all(&[parse("w", "SELECT txid_current()"), bind_execute("w"), sync()].concat()).await.unwrap();
    let got = read_until_ready(&mut raw).await;
    assert!(backend_messages(&got).iter().all(|m| m.0 != b'E'), "{:?}", backend_messages(&got));
    assert_eq!(primary_writes(&gw).await, before + 1.0, "only the write counted as one");
    gw.shutdown().await;
}

/// A prepared `SET pgpilot.route` (pgJDBC, psycopg once it prepares) writes nothing: it does not
/// hold the client's reads on the primary for read-your-writes, nor count as a write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_pgpilot_setting_moves_no_read_your_writes_mark() {
    use tokio::io::AsyncWriteExt;
    let (_pg, replica, gw) = split_with_one_replica().await;
    let mut raw = raw_login(addr(&gw)).await;
    let before = primary_writes(&gw).await;
    for round in 0..3 {
        for (name, value) in [("route_p", "primary"), ("route_a", "auto")] {
            let mut batch =
                if round == 0 { parse(name, &format!("SET pgpilot.route = {value}")) } else { Vec::new() };
            batch.extend(bind_describe_execute(name));
            batch.extend(sync());
            raw.write_all(&batch).await.unwrap();
            let got = read_until_ready(&mut raw).await;
            assert!(answer_tags(&got).ends_with(b"2nCZ"), "{:?}", backend_messages(&got));
        }
        let port = raw_value(&mut raw, "SELECT inet_server_port()", b'I').await;
        assert_eq!(port, replica.port().to_string(), "round {round}: the read after the settings");
    }
    assert_eq!(primary_writes(&gw).await, before, "a setting of pgpilot's counted as a write");
    gw.shutdown().await;
}

/// asyncpg's reset at every release from its pool (pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
/// RESET ALL) runs on the primary but changes no data: the client's next reads may still go to a
/// replica. A write beside an advisory unlock still holds read-your-writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisory_unlocks_and_unlisten_do_not_hold_reads_on_the_primary() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE ryw_locks(x int)");
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    for reset in ["SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;", "UNLISTEN *"] {
        c.batch_execute(reset).await.unwrap();
        assert!(on_replica(&c, "SELECT inet_server_port()").await, "a read after {reset} left the replicas");
    }
    for i in 1..=20i64 {
        c.batch_execute("SELECT pg_advisory_unlock_all(); INSERT INTO ryw_locks VALUES (1)").await.unwrap();
        let n: i64 = c.query_one("SELECT count(*) FROM ryw_locks", &[]).await.unwrap().get(0);
        assert_eq!(n, i, "a read missed the client's own write");
    }
    gw.shutdown().await;
}

/// helper-147: a write made while the client was pinned (a session advisory lock, LISTEN) did not
/// move its read-your-writes mark, so the read right after the unpin went to a lagging replica
/// and missed it (10 of 10 with a 1 s apply delay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_made_while_pinned_is_read_back_after_the_pin_ends() {
    let pg = Cluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE pinned_rw(id int PRIMARY KEY, n int); INSERT INTO pinned_rw VALUES (1, 0)",
    );
    let replica = pg.start_replica_with(&["recovery_min_apply_delay = '1s'"]);
    remember(&replica);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(on_replica(&c, "SELECT inet_server_port()").await, "reads go to the replica to begin with");
    let pins =
        [("SELECT pg_advisory_lock(13)", "SELECT pg_advisory_unlock(13)"), ("LISTEN v1", "UNLISTEN v1")];
    for (round, (pin, unpin)) in pins.iter().cycle().take(6).enumerate() {
        c.batch_execute(pin).await.unwrap();
        let n: i32 =
            c.query_one("UPDATE pinned_rw SET n = n + 1 WHERE id = 1 RETURNING n", &[]).await.unwrap().get(0);
        c.batch_execute(unpin).await.unwrap();
        let read: i32 = c.query_one("SELECT n FROM pinned_rw WHERE id = 1", &[]).await.unwrap().get(0);
        assert_eq!(read, n, "round {round} ({pin}): the read after the unpin missed the client's write");
    }
    gw.shutdown().await;
}

/// A replica promoted without the primary's last commits (asynchronous replication): results cached
/// from the old primary are not served once writes go to the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_drops_what_the_cache_got_from_the_old_primary() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE fo(id int primary key, v int); INSERT INTO fo VALUES (1, 100); CREATE TABLE probe(x int)");
    let replica = caught_up_replica(&pg);
    let mut config = split_config(&pg, &[(&replica, &[])]);
    config.databases.get_mut("postgres").unwrap().cache.enabled = true;
    let gw = start(config).await;
    wait_ready(&gw, 1).await;
    wait_cache_catalog(&gw, "fo").await;
    // The replica stops following: the next commit never reaches it.
    replica.psql("postgres", "ALTER SYSTEM SET primary_conninfo = ''");
    replica.psql("postgres", "SELECT pg_reload_conf()");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = connect(&gw).await;
    c.batch_execute("UPDATE fo SET v = 999 WHERE id = 1").await.unwrap();
    let read = "/* pgpilot:primary */ SELECT v FROM fo WHERE id = 1";
    for _ in 0..3 {
        assert_eq!(first_value(&c, read).await, "999");
    }
    replica.promote();
    let promoted = Instant::now();
    while promoted.elapsed() < Duration::from_secs(10) {
        // Another table: a write to `fo` through pgpilot would drop its results anyway.
        if c.batch_execute("INSERT INTO probe VALUES (1)").await.is_ok()
            && replica.psql("postgres", "SELECT count(*) FROM probe") != "0"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_ne!(replica.psql("postgres", "SELECT count(*) FROM probe"), "0", "writes never moved");
    let other = connect(&gw).await;
    assert_eq!(first_value(&other, read).await, "100", "a result cached from the old primary");
    gw.shutdown().await;
}

/// A client's write is settled on the first primary position read after its commit, not on the
/// position at its next read: under a steady stream of other writes, a replica replaying a little
/// behind (here 300 ms) never reached the latest position, so every read after a write went to
/// the primary however long after the write it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_write_reads_go_back_to_a_replica_that_replays_a_little_behind() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE mine(x int); CREATE TABLE churn(x int)");
    let replica = pg.start_replica_with(&["recovery_min_apply_delay = '300ms'"]);
    remember(&replica);
    // read_your_writes = session is the default.
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let writer = connect(&gw).await;
    let busy = tokio::spawn(async move {
        for i in 0..1_000_000 {
            writer.execute("INSERT INTO churn VALUES ($1)", &[&i]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let c = connect(&gw).await;
    for round in 1..=3 {
        c.execute("INSERT INTO mine VALUES ($1)", &[&round]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let rows = c.simple_query("SELECT count(*), inet_server_port() FROM mine").await.unwrap();
        let row = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((r.get(0).unwrap().to_string(), r.get(1).unwrap().to_string()))
            }
            _ => None,
        });
        let (count, port) = row.expect("a row");
        assert_eq!(count, round.to_string(), "round {round}: the client's own write is missing");
        assert_eq!(
            port,
            replica.port().to_string(),
            "round {round}: read 1.5 s after the write stayed on the primary"
        );
    }
    assert!(!busy.is_finished(), "the other client stopped writing");
    busy.abort();
    gw.shutdown().await;
}

/// Every policy shares a lone client's reads between replicas by their weights (3:1 here).
/// least_outstanding sent them all to the first replica listed: with one client every replica has
/// nothing in flight, and the tie always went the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_load_balancing_policy_shares_reads_by_weight() {
    use pgpilot_gateway::config::LoadBalance;
    let pg = Cluster::start();
    let heavy = caught_up_replica(&pg);
    let light = caught_up_replica(&pg);
    for policy in [LoadBalance::RoundRobin, LoadBalance::Random, LoadBalance::LeastOutstanding] {
        let mut config = split_config(&pg, &[(&heavy, &[]), (&light, &[])]);
        let db = config.databases.get_mut("postgres").unwrap();
        db.routing.load_balance = policy;
        if let ReplicaConfig::Detailed { weight, .. } = &mut db.replicas.0[0] {
            *weight = 3.into();
        }
        let gw = start(config).await;
        wait_ready(&gw, 2).await;
        let c = connect(&gw).await;
        let mut on_heavy = 0;
        for _ in 0..200 {
            // One request per read (a prepared query's Parse is routed too).
            let port = first_value(&c, "SELECT inet_server_port()").await;
            assert_ne!(port, pg.port().to_string(), "{policy:?}: a read went to the primary");
            on_heavy += usize::from(port == heavy.port().to_string());
        }
        assert!(
            (120..=180).contains(&on_heavy),
            "{policy:?}: {on_heavy} of 200 reads on the replica of weight 3"
        );
        gw.shutdown().await;
    }
}

/// After a failover with the old primary still up, a client that holds a server connection to it
/// (pinned by a temporary table, or inside a transaction) is closed rather than left writing
/// there, where its writes would be lost (helper-130).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_holding_the_old_primary_are_closed_after_a_failover() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE t(x int)");
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let pinned = connect(&gw).await;
    pinned.batch_execute("CREATE TEMP TABLE mine (x int)").await.unwrap();
    let in_transaction = connect(&gw).await;
    in_transaction.batch_execute("BEGIN; INSERT INTO t VALUES (1)").await.unwrap();
    replica.promote();
    let fresh = connect(&gw).await;
    write_after_promotion(&fresh, &replica).await;
    let closed =
        eventually(Duration::from_secs(5), || pinned.is_closed() && in_transaction.is_closed()).await;
    assert!(closed, "clients still hold the old primary");
    assert!(pinned.batch_execute("INSERT INTO t VALUES (2)").await.is_err());
    assert!(in_transaction.batch_execute("COMMIT").await.is_err());
    // (The fresh client's writes before pgpilot saw the promotion, x = -1, went there as they
    // would have on its own connection.)
    let written = pg.psql("postgres", "SELECT count(*) FROM t WHERE x >= 0");
    assert_eq!(written, "0", "the old primary was written to by the clients holding it");
    gw.shutdown().await;
}

/// With standard_conforming_strings = off, a write hidden behind a backslash-escaped quote (what
/// reads as a string when backslashes are plain) is seen for what the server runs: the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_an_escaped_quote_goes_to_the_primary() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE t(x int)");
    let replica = caught_up_replica(&pg);
    let gw = start(split_config(&pg, &[(&replica, &[])])).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    c.batch_execute("SET standard_conforming_strings = off; SET escape_string_warning = off").await.unwrap();
    c.batch_execute(r"select 'a\' ; ' ; insert into t values (1); --'")
        .await
        .expect("the write ran on the primary");
    assert_eq!(pg.psql("postgres", "SELECT count(*) FROM t"), "1");
    gw.shutdown().await;
}

/// A replica that stops answering (every process of it stopped): a read waiting for a new
/// connection to it goes to another server once the replica is banned, not after
/// server_connect_timeout (helper-130: no reads for 15 s while another server was idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_connecting_to_a_hung_replica_moves_when_it_is_banned() {
    let pg = Cluster::start();
    let replica = caught_up_replica(&pg);
    let mut config = split_config(&pg, &[(&replica, &[])]);
    config.pgpilot.server_connect_timeout = Secs::from_secs(30);
    let gw = start(config).await;
    wait_ready(&gw, 1).await;
    let c = connect(&gw).await;
    let postmaster = std::fs::read_to_string(replica.data_dir().join("postmaster.pid")).unwrap();
    let postmaster = postmaster.lines().next().unwrap().trim().to_string();
    let children = std::process::Command::new("pgrep").args(["-P", &postmaster]).output().unwrap();
    let mut pids: Vec<String> =
        String::from_utf8_lossy(&children.stdout).split_whitespace().map(String::from).collect();
    pids.push(postmaster);
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill").arg(sig).args(&pids).status().unwrap();
        assert!(status.success(), "kill {sig} {pids:?}");
    };
    signal("-STOP");
    let started = Instant::now();
    let answered = tokio::time::timeout(Duration::from_secs(20), first_value(&c, "SELECT 1")).await;
    let took = started.elapsed();
    signal("-CONT");
    assert_eq!(answered.expect("the read never moved off the hung replica"), "1");
    assert!(took < Duration::from_secs(10), "the read waited {took:?} for the hung replica");
    gw.shutdown().await;
}

/// The monitor's own connection ended by an administrator (a kill script's
/// pg_terminate_backend) says nothing of the server: a new one is asked at once, and the replica
/// is not banned (nor the primary reported down) for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_connection_ended_alone_bans_no_server() {
    let (pg, replica, gw) = split_with_one_replica().await;
    let kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                WHERE application_name = 'pgpilot-monitor'";
    let mut killed = 0;
    for _ in 0..10 {
        killed += pg.psql("postgres", kill).parse::<u32>().unwrap();
        killed += replica.psql("postgres", kill).parse::<u32>().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(killed >= 10, "{killed} monitor connections ended");
    let failed: u64 = gw
        .shared()
        .databases_by_name()
        .iter()
        .flat_map(|(_, db)| db.backends.iter())
        .map(|b| b.failed_checks.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert_eq!(failed, 0, "checks counted as failed: {:?}", psql(&gw, "pgpilot", "SHOW REPLICAS"));
    let replicas = psql(&gw, "pgpilot", "SHOW REPLICAS").unwrap();
    assert!(replicas.lines().any(|l| l.contains("|replica|") && l.contains("|up|")), "{replicas}");
    gw.shutdown().await;
}

/// A role at its CONNECTION LIMIT on a replica (53300 "too many connections for role") is that
/// role's business: the replica is not marked down, and other users' reads still go to it (a
/// black-box check saw "server marked down; no reads go to it" for the whole server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_at_its_connection_limit_on_a_replica_does_not_ban_the_replica() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE ROLE lim LOGIN CONNECTION LIMIT 1");
    let replica = caught_up_replica(&pg);
    let mut config = split_config(&pg, &[(&replica, &[])]);
    // No user in the URLs: each client's own user logs in.
    let db = config.databases.get_mut("postgres").unwrap();
    db.primary = format!("postgres://127.0.0.1:{}/postgres", pg.port());
    db.replicas = pgpilot_gateway::config::OneOrMany(vec![ReplicaConfig::Detailed {
        url: format!("postgres://127.0.0.1:{}/postgres", replica.port()),
        weight: 1.into(),
        tags: Vec::new(),
    }]);
    let gw = start(config).await;
    // The monitor logs in as a user it has seen: postgres.
    let other = connect(&gw).await;
    other.simple_query("SELECT 1").await.unwrap();
    wait_ready(&gw, 1).await;
    // lim's one connection on the replica, held outside pgpilot.
    let _holder = try_connect(&format!("host=127.0.0.1 port={} user=lim dbname=postgres", replica.port()))
        .await
        .expect("lim's own connection to the replica");
    let limited = connect_as(&gw, "lim", "postgres").await;
    // Refused by the replica for lim (53300), or served elsewhere: either way not a server failure.
    let _ = limited.simple_query("SELECT inet_server_port()").await;
    let log = std::fs::read_to_string(replica.log_path()).unwrap();
    assert!(log.contains("too many connections for role \"lim\""), "the replica never refused lim");
    // Past a health check round: the replica is up, and takes the other users' reads.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let replicas = psql(&gw, "pgpilot", "SHOW REPLICAS").unwrap();
    assert!(!replicas.contains("|banned|"), "{replicas}");
    assert!(on_replica(&other, "SELECT inet_server_port()").await, "reads left the replica");
    gw.shutdown().await;
}
