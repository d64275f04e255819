//! The Redis link between pgpilot instances when its connections fail in ways Redis itself does
//! not see: the command connection killed while a write's invalidation is being published, and a
//! subscription that stays open but delivers nothing (a NAT or load balancer dropping an idle
//! flow). No triggers are installed, so the link is the only way an instance hears of another's
//! writes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pgpilot_gateway::config::{Config, Secs};
use pgpilot_gateway::Gateway;
use pgpilot_testkit::{Cluster, RedisServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn config(cluster: &Cluster, redis_url: String) -> Config {
    let mut c = config_for(cluster);
    c.cache.redis_url = Some(redis_url);
    let db = c.databases.get_mut("postgres").unwrap();
    db.cache.enabled = true;
    db.routing.health_check_interval = Secs::from_millis(200);
    db.routing.lag_check_interval = Secs::from_millis(200);
    c
}

fn link_up(gw: &Gateway) -> bool {
    gw.shared().cache.redis.state.summary().up
}

async fn ready(gw: &Gateway) {
    let db = gw.shared().database("postgres").unwrap();
    let ok =
        eventually(Duration::from_secs(30), || db.cache.catalog_loaded.load(Relaxed) && link_up(gw)).await;
    assert!(ok, "the cache never became ready: {}", pgpilot_gateway::cache::api::stats_json(gw.shared()));
}

async fn count(c: &tokio_postgres::Client) -> i64 {
    c.query_one("SELECT count(*)::bigint FROM items", &[]).await.unwrap().get(0)
}

fn cluster() -> Cluster {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE items (id int)");
    cluster
}

/// An invalidation whose PUBLISH failed because the command connection was killed is published
/// once the link is back, not lost: the other instance stops serving the result it outdates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_caught_by_a_broken_connection_is_published_after_it() {
    let cluster = cluster();
    let redis = RedisServer::start();
    let a = start(config(&cluster, redis.url())).await;
    let b = start(config(&cluster, redis.url())).await;
    ready(&a).await;
    ready(&b).await;
    let (ca, cb) = (connect(&a).await, connect(&b).await);
    let hits = || a.shared().cache.stats.hits.load(Relaxed);
    assert_eq!(count(&ca).await, 0);
    assert_eq!(count(&ca).await, 0);
    assert!(hits() >= 1, "the read was cached");

    // Kill b's command connection only (it is named after b's instance), as a network blip would.
    let mut admin =
        redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let name = format!("pgpilot-{:x}", b.shared().cache.redis.instance());
    let clients: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut admin).await.unwrap();
    let id = clients
        .lines()
        .find(|l| l.contains(&format!(" name={name} ")))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .unwrap_or_else(|| panic!("no connection named {name}: {clients}"))
        .to_string();
    let _: redis::Value =
        redis::cmd("CLIENT").arg("KILL").arg("ID").arg(&id).query_async(&mut admin).await.unwrap();

    cb.batch_execute("INSERT INTO items VALUES (1)").await.unwrap();
    let mut seen = 0;
    for _ in 0..50 {
        seen = count(&ca).await;
        if seen == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 1, "the other instance kept serving a result from before the write");
}

/// A TCP relay to Redis that can stop passing what Redis sends to subscribed connections while
/// keeping them open.
struct Relay {
    port: u16,
    mute_subscribers: Arc<AtomicBool>,
    /// Everything either way is dropped: a network partition that closes nothing.
    cut: Arc<AtomicBool>,
}

impl Relay {
    async fn start(redis_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mute_subscribers = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let (mute, cut_too) = (mute_subscribers.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(("127.0.0.1", redis_port)).await.unwrap();
                tokio::spawn(relay(client, server, mute.clone(), cut_too.clone()));
            }
        });
        Relay { port, mute_subscribers, cut }
    }
}

async fn relay(client: TcpStream, server: TcpStream, mute: Arc<AtomicBool>, cut: Arc<AtomicBool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let subscriber = Arc::new(AtomicBool::new(false));
    let is_subscriber = subscriber.clone();
    let cut_upstream = cut.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = client_read.read(&mut buf).await {
            if cut_upstream.load(Relaxed) {
                continue;
            }
            if buf[..n].windows(9).any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE")) {
                is_subscriber.store(true, Relaxed);
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = server_read.read(&mut buf).await {
        if cut.load(Relaxed) || (subscriber.load(Relaxed) && mute.load(Relaxed)) {
            continue;
        }
        if client_write.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A subscription that delivers nothing while its connection stays open is noticed (the
/// instance's own heartbeat does not come back): the link is taken down, so nothing is served
/// from the cache, until a new subscription delivers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_delivers_nothing_takes_the_link_down() {
    let cluster = cluster();
    let redis = RedisServer::start();
    let relay = Relay::start(redis.port()).await;
    let a = start(config(&cluster, format!("redis://127.0.0.1:{}", relay.port))).await;
    ready(&a).await;
    relay.mute_subscribers.store(true, Relaxed);
    let down = eventually(Duration::from_secs(8), || !link_up(&a)).await;
    assert!(
        down,
        "a silent subscription went unnoticed: {}",
        pgpilot_gateway::cache::api::stats_json(a.shared())
    );
    // Reconnecting meanwhile, its SUBSCRIBE goes unanswered too: the link must try again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    relay.mute_subscribers.store(false, Relaxed);
    assert!(eventually(Duration::from_secs(10), || link_up(&a)).await, "the link never came back");
}

fn redis_stats(gw: &Gateway) -> serde_json::Value {
    pgpilot_gateway::cache::api::stats_json(gw.shared())["redis"].clone()
}

/// An instance cut off from Redis (a partition that closes nothing) may take writes whose
/// invalidations cannot be published: the others notice its heartbeat missing and serve nothing
/// from the cache until it is heard again, so its writes are read fresh. One that stops says so,
/// and the others go on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_redis_stops_the_others_serving_until_it_is_back() {
    let cluster = cluster();
    let redis = RedisServer::start();
    let relay = Relay::start(redis.port()).await;
    let a = start(config(&cluster, redis.url())).await;
    let b = start(config(&cluster, format!("redis://127.0.0.1:{}", relay.port))).await;
    ready(&a).await;
    ready(&b).await;
    assert!(
        eventually(Duration::from_secs(5), || redis_stats(&a)["peers"] == 1).await,
        "{}",
        redis_stats(&a)
    );
    let (ca, cb) = (connect(&a).await, connect(&b).await);
    let hits = || a.shared().cache.stats.hits.load(Relaxed);
    assert_eq!(count(&ca).await, 0);
    assert_eq!(count(&ca).await, 0);
    assert!(hits() >= 1, "the read was cached");

    relay.cut.store(true, Relaxed);
    // Missed at the next heartbeat after 3 s of silence: from then on nothing is served.
    let silent = eventually(Duration::from_secs(8), || !a.shared().cache.serving()).await;
    assert!(silent, "the cut-off instance was not missed: {}", redis_stats(&a));
    assert_eq!(redis_stats(&a)["peers_silent"], 1);
    cb.batch_execute("INSERT INTO items VALUES (1)").await.unwrap();
    assert_eq!(count(&ca).await, 1, "served from before a write through the cut-off instance");
    let before = hits();
    assert_eq!(count(&ca).await, 1);
    assert_eq!(hits(), before, "served from the cache while an instance was silent");

    relay.cut.store(false, Relaxed);
    assert!(eventually(Duration::from_secs(15), || a.shared().cache.serving()).await, "{}", redis_stats(&a));
    drop(cb);
    b.shutdown().await;
    assert_eq!(count(&ca).await, 1);
    assert_eq!(count(&ca).await, 1);
    tokio::time::sleep(pgpilot_gateway::cache::peers::SILENT_AFTER + Duration::from_secs(1)).await;
    assert!(a.shared().cache.serving(), "an instance that stopped was waited for: {}", redis_stats(&a));
    assert_eq!(redis_stats(&a)["peers"], 0);
}
