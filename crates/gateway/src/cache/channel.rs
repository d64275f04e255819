//! Writes that do not pass through this pgpilot (straight to PostgreSQL, another instance) reach
//! the cache through the statement-level triggers `pgpilot cache install-triggers` installs: they
//! bump a row of `pgpilot.cache_versions` and send `NOTIFY pgpilot_cache, '<relid> <µs>'`. One
//! LISTEN connection per database turns each notification into an invalidation and measures its
//! delay. While a database has the triggers but its LISTEN connection is down, nothing of that
//! database is served from the cache (fail closed); every result cached before the connection
//! came back is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use parking_lot::Mutex;
use pgpilot_wire::backend::parse_notification;
use pgpilot_wire::frame::{peek_backend, Limits};
use pgpilot_wire::frontend;

use crate::databases::Database;
use crate::shared::{Phase, Shared};

/// The channel the triggers notify.
pub const CHANNEL: &str = "pgpilot_cache";
/// Delays remembered for the p99.
const DELAYS_KEPT: usize = 2048;
/// A LISTEN connection that answers no ping for this long is taken for dead.
const PING_EVERY: Duration = Duration::from_secs(1);
const DEAD_AFTER: Duration = Duration::from_secs(3);

#[derive(Default)]
pub struct ChannelState {
    /// The database has the triggers (pgpilot.cache_versions exists): the channel must be up.
    required: AtomicBool,
    up: AtomicBool,
    notifications: AtomicU64,
    last_us: AtomicU64,
    max_us: AtomicU64,
    delays: Mutex<VecDeque<u64>>,
}

/// What SHOW CACHE and the API report.
pub struct ChannelSummary {
    pub required: bool,
    pub up: bool,
    pub notifications: u64,
    pub last_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl ChannelState {
    /// Whether results of the database may be served now.
    pub fn serving(&self) -> bool {
        !self.required.load(Relaxed) || self.up.load(SeqCst)
    }

    pub fn set_required(&self, required: bool) {
        self.required.store(required, Relaxed);
    }

    pub fn up(&self) -> bool {
        self.up.load(SeqCst)
    }

    pub fn required(&self) -> bool {
        self.required.load(Relaxed)
    }

    /// Sets whether the channel is up; returns what it was.
    pub fn up_swap(&self, up: bool) -> bool {
        self.up.swap(up, SeqCst)
    }

    pub fn record_delay(&self, us: u64) {
        self.notifications.fetch_add(1, Relaxed);
        self.last_us.store(us, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
        let mut d = self.delays.lock();
        if d.len() >= DELAYS_KEPT {
            d.pop_front();
        }
        d.push_back(us);
    }

    pub fn summary(&self) -> ChannelSummary {
        let mut d: Vec<u64> = self.delays.lock().iter().copied().collect();
        d.sort_unstable();
        let p99 = d.get((d.len() * 99 / 100).min(d.len().saturating_sub(1))).copied().unwrap_or(0);
        ChannelSummary {
            required: self.required.load(Relaxed),
            up: self.up.load(Relaxed),
            notifications: self.notifications.load(Relaxed),
            last_ms: self.last_us.load(Relaxed) as f64 / 1e3,
            p99_ms: p99 as f64 / 1e3,
            max_ms: self.max_us.load(Relaxed) as f64 / 1e3,
        }
    }
}

/// Keeps one LISTEN connection per database that has the triggers, until the gateway stops.
pub async fn run(shared: Arc<Shared>) {
    let mut listeners: HashMap<usize, (Arc<Database>, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        if shared.phase() == Phase::Stopped {
            listeners.values().for_each(|(_, h)| h.abort());
            return;
        }
        let dbs = shared.databases.load_full();
        listeners.retain(|_, (db, h)| {
            let keep = dbs.get(&*db.name).is_some_and(|d| Arc::ptr_eq(d, db)) && db.cache.enabled();
            if !keep {
                h.abort();
            }
            keep && !h.is_finished()
        });
        for db in dbs.values() {
            let id = Arc::as_ptr(db) as usize;
            if db.cache.enabled() && db.cache.channel.required() && !listeners.contains_key(&id) {
                let task = tokio::spawn(listen(shared.clone(), db.clone()));
                listeners.insert(id, (db.clone(), task));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn listen(shared: Arc<Shared>, db: Arc<Database>) {
    let channel = &db.cache.channel;
    loop {
        match listen_once(&shared, &db).await {
            Ok(()) => return,
            Err(e) => {
                if channel.up.swap(false, SeqCst) {
                    tracing::warn!(database = %db.name, error = %e, "cache invalidation channel down: serving nothing from the cache until it is back");
                }
                // Whatever was filled while notifications could be lost must not be served later.
                db.cache.versions.bump_all();
            }
        }
        if shared.phase() == Phase::Stopped {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One LISTEN connection's life; Ok when the gateway stops.
async fn listen_once(shared: &Shared, db: &Database) -> Result<(), String> {
    let set = crate::routing::monitor::pool_set_for(shared, db).ok_or("no pool to connect with yet")?;
    let primary = db.primary_index();
    let pool = set.pools[primary].clone();
    let connected =
        tokio::time::timeout(DEAD_AFTER, pool.connect_unpooled()).await.map_err(|_| "connect timed out")?;
    let connected = connected.map_err(|e| e.to_string())?;
    let (sock, mut buf) = (connected.sock, connected.buf);
    let mut out = BytesMut::new();
    frontend::query(&mut out, &format!("LISTEN {CHANNEL}"));
    sock.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut last_answer = Instant::now();
    let mut listening = false;
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        while let Some(h) = peek_backend(&buf, &Limits::default()).map_err(|e| e.to_string())? {
            if buf.len() < h.total {
                break;
            }
            let msg = buf.split_to(h.total);
            match h.tag {
                b'A' => {
                    if let Some((_, _, payload)) = parse_notification(&msg[5..]) {
                        on_notification(db, payload);
                    }
                }
                b'E' => return Err("LISTEN failed".into()),
                b'Z' => {
                    last_answer = Instant::now();
                    if !listening {
                        listening = true;
                        // Commits before LISTEN took effect were not heard: drop what was cached.
                        db.cache.versions.bump_all();
                        db.cache.channel.up.store(true, SeqCst);
                        tracing::info!(database = %db.name, "cache invalidation channel up");
                    }
                }
                _ => {}
            }
        }
        if shared.phase() == Phase::Stopped {
            return Ok(());
        }
        tokio::select! {
            r = sock.read_into(&mut buf) => {
                match r {
                    Ok(n) if n > 0 => {}
                    _ => return Err("connection closed".into()),
                }
            }
            _ = ping.tick() => {
                if last_answer.elapsed() > DEAD_AFTER {
                    return Err("no answer to pings".into());
                }
                // After a failover the old primary's notifications say nothing of the new one's
                // commits: listen there instead (going down meanwhile drops what was cached).
                if db.primary_index() != primary {
                    return Err("the primary changed".into());
                }
                let mut out = BytesMut::new();
                frontend::query(&mut out, "");
                sock.write_all(&out).await.map_err(|e| e.to_string())?;
            }
        }
    }
}

/// `<relid> <microseconds since the epoch when the trigger ran>`, or `ddl <microseconds>` from the
/// DDL event trigger.
fn on_notification(db: &Database, payload: &str) {
    let mut parts = payload.split_whitespace();
    if payload.starts_with("ddl ") {
        tracing::debug!(database = %db.name, "DDL made in PostgreSQL: results dropped, catalog read again");
        db.cache.apply(&super::Invalidation::Schema);
        parts.next();
        record_delay(db, parts.next());
        return;
    }
    let relid = parts.next().and_then(|r| r.parse::<pgpilot_sql::Oid>().ok());
    let sent_us = parts.next();
    let cache = &db.cache;
    match relid.and_then(|oid| {
        let relations = cache.relations.load();
        relations.by_oid(oid).map(|rel| relations.invalidation_set(rel))
    }) {
        Some(oids) => {
            cache.apply(&super::Invalidation::Relations(oids));
        }
        None => {
            cache.versions.bump_all();
        }
    }
    record_delay(db, sent_us);
}

fn record_delay(db: &Database, sent_us: Option<&str>) {
    if let Some(sent) = sent_us.and_then(|t| t.parse::<u64>().ok()) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
        db.cache.channel.record_delay(now.saturating_sub(sent));
    }
}
