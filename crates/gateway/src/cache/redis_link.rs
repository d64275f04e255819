//! Invalidations between pgpilot instances over Redis pub/sub. Every instance publishes what the
//! writes it forwarded invalidated (at their commit) and applies what the others publish. While
//! Redis is configured but unreachable, nothing is served from the cache (fail closed): a write
//! through another instance could go unheard. When the link comes back every database's results
//! are dropped. Classic pub/sub is broadcast to every node of a Redis Cluster, so the URL may name
//! any node of one.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::channel::ChannelState;
use super::Invalidation;
use crate::shared::{Phase, Shared};

pub const CHANNEL: &str = "pgpilot:cache:invalidate";
const TIMEOUT: Duration = Duration::from_secs(1);
/// A subscription that delivered nothing for this long, not even this instance's own heartbeat
/// (published every TIMEOUT), is taken as dead: a connection a NAT or load balancer silently
/// dropped stays open and delivers nothing.
const SILENCE: Duration = Duration::from_secs(3);
/// The kind of message that only proves the subscription (and its sender) alive.
const HEARTBEAT: &str = "H";
/// The kind of message an instance sends when it stops: the others need not wait for it.
const LEAVING: &str = "B";

/// What the link sends to Redis.
enum Out {
    Publish(String),
    /// This instance stops: after what was queued before, the others are told, then the sender.
    Goodbye(tokio::sync::oneshot::Sender<()>),
    /// A result for the shared tier: key, value, time to live in ms.
    Store(String, Vec<u8>, u64),
}

pub struct RedisLink {
    /// This process, so it ignores its own messages.
    instance: u64,
    pub state: ChannelState,
    tx: mpsc::UnboundedSender<Out>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Out>>>,
    configured: std::sync::atomic::AtomicBool,
    /// The connection while the link is up, for reading shared results.
    conn: arc_swap::ArcSwapOption<RedisConn>,
    pub l2_hits: std::sync::atomic::AtomicU64,
    pub l2_rejected: std::sync::atomic::AtomicU64,
    /// The other instances, by their heartbeats.
    pub peers: super::peers::Peers,
}

impl Default for RedisLink {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        RedisLink {
            instance: rand::random(),
            state: ChannelState::default(),
            tx,
            rx: Mutex::new(Some(rx)),
            configured: Default::default(),
            conn: Default::default(),
            l2_hits: Default::default(),
            l2_rejected: Default::default(),
            peers: Default::default(),
        }
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

impl RedisLink {
    /// This process's id in the messages it publishes (and in its Redis connection's name,
    /// `pgpilot-<id in hex>`).
    pub fn instance(&self) -> u64 {
        self.instance
    }

    pub fn set_configured(&self, on: bool) {
        self.configured.store(on, SeqCst);
        self.state.set_required(on);
    }

    /// The link is up and every other instance is heard (one fallen silent may be writing unheard).
    pub fn serving(&self) -> bool {
        self.state.serving() && self.peers.all_heard()
    }

    /// Tells the other instances that this one stops (after the invalidations queued before), so
    /// they do not wait for it as for one cut off; waits at most a second.
    pub async fn say_goodbye(&self) {
        if !self.configured.load(SeqCst) || !self.state.up() {
            return;
        }
        let (done, told) = tokio::sync::oneshot::channel();
        if self.tx.send(Out::Goodbye(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), told).await;
        }
    }

    /// A message about this instance itself (no database): `instance - µs kind`.
    fn about_itself(&self, kind: &str) -> String {
        format!("{} - {} {kind}", self.instance, now_us())
    }

    /// Queues a message for the other instances: `instance db µs kind [data]`.
    pub fn publish(&self, database: &str, inv: &Invalidation) {
        if !self.configured.load(SeqCst) {
            return;
        }
        let body = match inv {
            Invalidation::Nothing => return,
            Invalidation::Relations(oids) => {
                let list: Vec<String> = oids.iter().map(|o| o.to_string()).collect();
                format!("R {}", list.join(","))
            }
            Invalidation::Everything => "A".to_string(),
            // The others read their catalog again too (an instance that does not know "S" drops
            // everything, as for "A").
            Invalidation::Schema => "S".to_string(),
        };
        let _ = self.tx.send(Out::Publish(format!("{} {} {} {body}", self.instance, database, now_us())));
    }

    /// Whether results may be queued for the shared tier now.
    pub fn accepting(&self) -> bool {
        self.configured.load(SeqCst) && self.state.up()
    }

    /// Queues a result for the shared tier.
    pub fn store(&self, key: String, value: Vec<u8>, ttl_ms: u64) {
        let _ = self.tx.send(Out::Store(key, value, ttl_ms.max(1)));
    }

    /// A result another instance stored, if the link is up and Redis answers in time.
    pub async fn fetch(&self, key: &str) -> Option<Vec<u8>> {
        let conn = self.conn.load_full()?;
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        let got = tokio::time::timeout(TIMEOUT, conn.query::<Option<Vec<u8>>>(&cmd)).await;
        got.ok()?.ok()?
    }

    pub fn publish_tag(&self, database: &str, tag: &str) {
        if self.configured.load(SeqCst) {
            let _ =
                self.tx.send(Out::Publish(format!("{} {} {} T {tag}", self.instance, database, now_us())));
        }
    }
}

/// Runs the link until the gateway stops.
pub async fn run(shared: Arc<Shared>) {
    let Some(mut rx) = shared.cache.redis.rx.lock().take() else { return };
    // A message whose PUBLISH failed when the link broke: sent first on the next link, since the
    // other instances may still be serving what it invalidates.
    let mut unsent: Option<String> = None;
    loop {
        if shared.phase() == Phase::Stopped {
            return;
        }
        let url = shared.config.load().cache.redis_url.clone();
        let link = &shared.cache.redis;
        link.set_configured(url.is_some());
        let Some(url) = url else {
            unsent = None;
            while rx.try_recv().is_ok() {}
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let result = connected(&shared, &url, &mut rx, &mut unsent).await;
        link.conn.store(None);
        if let Err(e) = result {
            if link.state.up_swap(false) {
                tracing::warn!(error = %e, "Redis invalidation link down: serving nothing from the cache until it is back");
            }
        }
        drop_everything(&shared);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn drop_everything(shared: &Shared) {
    for db in shared.databases.load().values() {
        db.cache.versions.bump_all();
    }
}

async fn connected(
    shared: &Shared,
    url: &str,
    rx: &mut mpsc::UnboundedReceiver<Out>,
    unsent: &mut Option<String>,
) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let cluster = shared.config.load().cache.redis_cluster;
    let publisher = tokio::time::timeout(TIMEOUT, RedisConn::open(&client, url, cluster))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    // Named, so an operator can tell pgpilot's connections apart in CLIENT LIST (and kill one).
    let mut name = redis::cmd("CLIENT");
    name.arg("SETNAME").arg(format!("pgpilot-{:x}", shared.cache.redis.instance));
    let _ = tokio::time::timeout(TIMEOUT, publisher.query::<redis::Value>(&name)).await;
    let mut pubsub = tokio::time::timeout(TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    // A SUBSCRIBE whose answer never comes (a connection silently dropped) must not hold the link
    // down for good: it is timed out like every other step, and the link tries again.
    tokio::time::timeout(TIMEOUT, pubsub.subscribe(CHANNEL))
        .await
        .map_err(|_| "subscribe timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let mut messages = pubsub.into_on_message();
    let link = &shared.cache.redis;
    // Invalidations published while the link was down were lost.
    drop_everything(shared);
    link.conn.store(Some(Arc::new(publisher.clone())));
    if let Some(message) = unsent.take() {
        publish(&publisher, message, unsent).await?;
    }
    link.state.up_swap(true);
    tracing::info!("Redis invalidation link up");
    let mut heartbeat = tokio::time::interval(TIMEOUT);
    let mut last_heard = tokio::time::Instant::now();
    loop {
        if shared.phase() == Phase::Stopped || shared.config.load().cache.redis_url.as_deref() != Some(url) {
            return Ok(());
        }
        tokio::select! {
            m = messages.next() => {
                let Some(m) = m else { return Err("subscription closed".into()) };
                last_heard = tokio::time::Instant::now();
                if let Ok(payload) = m.get_payload::<String>() {
                    apply(shared, &payload);
                }
            }
            out = rx.recv() => {
                match out {
                    None => return Ok(()),
                    Some(Out::Publish(message)) => publish(&publisher, message, unsent).await?,
                    Some(Out::Store(key, value, ttl_ms)) => store(&publisher, key, value, ttl_ms).await?,
                    Some(Out::Goodbye(done)) => {
                        let _ = publish(&publisher, link.about_itself(LEAVING), &mut None).await;
                        let _ = done.send(());
                    }
                }
            }
            _ = heartbeat.tick() => {
                if link.peers.check(std::time::Instant::now()) {
                    tracing::warn!("a pgpilot instance sharing the cache fell silent: serving nothing from the cache until it is heard again (or for {:?})", super::peers::GONE_AFTER);
                    drop_everything(shared);
                }
                if last_heard.elapsed() > SILENCE {
                    return Err(format!("the subscription delivered nothing for {SILENCE:?}, not even this instance's heartbeat"));
                }
                // Also checks the command connection, as a PING would.
                publish(&publisher, link.about_itself(HEARTBEAT), &mut None).await?;
            }
        }
    }
}

/// Publishes `message`; when that fails it is kept in `unsent` for the next link.
async fn publish(publisher: &RedisConn, message: String, unsent: &mut Option<String>) -> Result<(), String> {
    let mut cmd = redis::cmd("PUBLISH");
    cmd.arg(CHANNEL).arg(&message);
    let answer = tokio::time::timeout(TIMEOUT, publisher.query::<redis::Value>(&cmd)).await;
    let failed = match answer {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "Redis timed out".to_string(),
    };
    *unsent = Some(message);
    Err(failed)
}

/// Stores a result for the shared tier. One Redis refuses (out of memory, a cluster node that does
/// not own the key) is only not shared; the link stays up.
async fn store(publisher: &RedisConn, key: String, value: Vec<u8>, ttl_ms: u64) -> Result<(), String> {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value).arg("PX").arg(ttl_ms);
    let answer = tokio::time::timeout(TIMEOUT, publisher.query::<redis::Value>(&cmd))
        .await
        .map_err(|_| "Redis timed out".to_string())?;
    if let Err(e) = answer {
        tracing::debug!(error = %e, "a result was not stored in Redis");
    }
    Ok(())
}

/// A connection for commands: to one Redis, or to a Redis Cluster (each key to the node that owns
/// its slot). Subscriptions always use a plain connection to the configured node: classic pub/sub
/// is broadcast to every node of a cluster.
#[derive(Clone)]
pub enum RedisConn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl RedisConn {
    async fn open(client: &redis::Client, url: &str, cluster: bool) -> redis::RedisResult<RedisConn> {
        if cluster {
            let client = redis::cluster::ClusterClient::new(vec![url])?;
            return Ok(RedisConn::Cluster(client.get_async_connection().await?));
        }
        Ok(RedisConn::Single(client.get_multiplexed_async_connection().await?))
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self.clone() {
            RedisConn::Single(mut c) => cmd.query_async(&mut c).await,
            RedisConn::Cluster(mut c) => cmd.query_async(&mut c).await,
        }
    }
}

/// Applies another instance's message.
fn apply(shared: &Shared, payload: &str) {
    let mut parts = payload.splitn(5, ' ');
    let (Some(instance), Some(database), Some(sent), Some(kind)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let link = &shared.cache.redis;
    let Ok(instance) = instance.parse::<u64>() else { return };
    if instance == link.instance {
        return;
    }
    match kind {
        LEAVING => return link.peers.left(instance),
        _ => link.peers.heard(instance, std::time::Instant::now()),
    }
    if kind == HEARTBEAT {
        return;
    }
    let Some(db) = shared.database(database) else { return };
    let data = parts.next().unwrap_or("");
    let inv = match kind {
        "R" => Invalidation::Relations(data.split(',').filter_map(|o| o.parse().ok()).collect()),
        "T" => {
            db.cache.versions.bump_tag(data);
            Invalidation::Nothing
        }
        "S" => Invalidation::Schema,
        _ => Invalidation::Everything,
    };
    shared.invalidate_cached(&db, &inv);
    if let Ok(sent) = sent.parse::<u64>() {
        link.state.record_delay(now_us().saturating_sub(sent));
    }
}
