//! The transparent result cache. A cached result is the exact bytes PostgreSQL sent for a read
//! (RowDescription, DataRows, CommandComplete, and for the extended protocol the
//! ParameterDescription), stored under a key made of everything that can change those bytes
//! (see `key`), and served while the versions of the tables it read are unchanged (see
//! `versions`). Sessions look results up before taking a server (`session/cached.rs`) and fill
//! them from the server's answer (`Fill`, fed by the session's flow).

pub mod admission;
pub mod api;
pub mod channel;
pub mod decide;
pub mod hit_time;
pub mod key;
pub mod l2;
pub mod oracle;
pub mod peers;
pub mod redis_link;
pub mod stats;
pub mod triggers;
pub mod versions;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use pgpilot_sql::Oid;
use tokio::sync::watch;

use crate::config::cache::{CacheGlobal, Consistency};
pub use decide::{DbCache, Invalidation, ReadPlan};
pub use stats::{Bypass, CacheStats};

/// Bookkeeping an entry costs besides its bytes.
const ENTRY_OVERHEAD: usize = 160;

/// One cached result.
pub struct Entry {
    /// The whole key, compared on every hit (the map is keyed by its 64-bit hash).
    pub key: Box<[u8]>,
    pub relations: Box<[Oid]>,
    pub tags: Box<[Box<str>]>,
    /// The versions of `relations` and `tags` before the read was sent.
    pub snapshot: u64,
    /// `strict`: the sum of pgpilot.cache_versions of its tables before the read was sent.
    pub pg_snapshot: Option<u64>,
    /// RowDescription ('T') or NoData ('n') of the portal (or of a simple Query).
    pub row_description: Option<Bytes>,
    /// ParameterDescription ('t') and RowDescription / NoData from a Describe of the statement
    /// (its RowDescription has no result formats yet, unlike the portal's).
    pub param_description: Option<Bytes>,
    pub statement_row_description: Option<Bytes>,
    /// DataRows and CommandComplete.
    pub body: Bytes,
    pub ttl: Duration,
    pub consistency: Consistency,
    pub fingerprint: u64,
    pub stored_at: Instant,
}

impl Entry {
    fn weight(&self) -> u32 {
        let n = self.key.len()
            + self.body.len()
            + self.row_description.as_ref().map_or(0, Bytes::len)
            + self.param_description.as_ref().map_or(0, Bytes::len)
            + self.relations.len() * 4
            + self.tags.iter().map(|t| t.len() + 16).sum::<usize>()
            + ENTRY_OVERHEAD;
        n.min(u32::MAX as usize) as u32
    }
}

struct PerEntryTtl;

impl moka::Expiry<u64, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(&self, _key: &u64, value: &Arc<Entry>, _now: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

struct L1 {
    map: moka::sync::Cache<u64, Arc<Entry>>,
    max_bytes: u64,
}

type Inflight = Arc<Mutex<HashMap<u64, watch::Receiver<()>>>>;

/// The gateway's result cache (every database; each opts in).
pub struct ResultCache {
    l1: ArcSwap<L1>,
    inflight: Inflight,
    pub stats: Arc<CacheStats>,
    pub global: ArcSwap<CacheGlobal>,
    /// Invalidations between pgpilot instances (Redis pub/sub).
    pub redis: redis_link::RedisLink,
    hasher: foldhash::fast::FixedState,
}

impl ResultCache {
    pub fn new(global: &CacheGlobal) -> ResultCache {
        let stats = Arc::new(CacheStats::default());
        ResultCache {
            l1: ArcSwap::from_pointee(build_l1(global.max_bytes, &stats)),
            inflight: Default::default(),
            stats,
            global: ArcSwap::from_pointee(global.clone()),
            redis: Default::default(),
            hasher: foldhash::fast::FixedState::with_seed(0x0ca0_c4e5),
        }
    }

    /// A reload: a new memory budget starts an empty cache.
    pub fn configure(&self, global: &CacheGlobal) {
        self.redis.set_configured(global.redis_url.is_some());
        if self.l1.load().max_bytes != global.max_bytes {
            self.l1.store(Arc::new(build_l1(global.max_bytes, &self.stats)));
        }
        self.global.store(Arc::new(global.clone()));
    }

    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The result stored under `key`, if it is still valid.
    pub fn get(&self, db: &DbCache, hash: u64, key: &[u8]) -> Option<Arc<Entry>> {
        let l1 = self.l1.load();
        let entry = l1.map.get(&hash)?;
        if *entry.key != *key {
            return None;
        }
        if db.versions.snapshot(&entry.relations, &entry.tags) != entry.snapshot {
            l1.map.invalidate(&hash);
            return None;
        }
        Some(entry)
    }

    /// Claims the fill of `hash`; when another client is filling it, the receiver to wait on.
    pub fn begin_fill(&self, hash: u64) -> Result<FillGuard, watch::Receiver<()>> {
        let mut map = self.inflight.lock();
        if let Some(rx) = map.get(&hash) {
            if rx.has_changed().is_ok() {
                return Err(rx.clone());
            }
        }
        let (tx, rx) = watch::channel(());
        map.insert(hash, rx);
        Ok(FillGuard { hash, tx: Some(tx), inflight: self.inflight.clone() })
    }

    /// Stores a finished fill, unless a table it read changed since the read was sent; also in
    /// the shared tier when Redis is configured.
    pub fn store(&self, database: &str, db: &DbCache, fill: Fill) {
        let max = self.global.load().max_entry_bytes as usize;
        if fill.body.len() > max {
            self.stats.bypass(Bypass::TooLarge);
            return;
        }
        if db.versions.snapshot(&fill.plan.relations, &fill.plan.tags) != fill.snapshot {
            self.stats.fills_raced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        let entry = Entry {
            key: fill.key,
            relations: fill.plan.relations,
            tags: fill.plan.tags,
            snapshot: fill.snapshot,
            pg_snapshot: fill.pg_snapshot,
            row_description: fill.row_description,
            param_description: fill.param_description,
            statement_row_description: fill.statement_row_description,
            body: fill.body.freeze(),
            ttl: fill.plan.ttl,
            consistency: fill.plan.consistency,
            fingerprint: fill.plan.fingerprint,
            stored_at: Instant::now(),
        };
        self.stats.fills.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if fill.replica.is_some() {
            self.stats.fills_from_replicas.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if self.global.load().redis_results && self.redis.accepting() {
            let ttl_ms = entry.ttl.as_millis() as u64;
            self.redis.store(
                l2::redis_key(database, fill.hash),
                l2::encode(&entry, fill.read_sent_us),
                ttl_ms,
            );
        }
        self.l1.load().map.insert(fill.hash, Arc::new(entry));
    }

    /// A result another instance stored in Redis, taken into this instance's memory when it is
    /// provably fresh (see `l2`).
    pub async fn get_shared(
        &self,
        database: &str,
        db: &DbCache,
        hash: u64,
        key: &[u8],
        pg_snapshot: Option<u64>,
    ) -> Option<Arc<Entry>> {
        if !self.global.load().redis_results || !self.redis.state.up() {
            return None;
        }
        let bytes = self.redis.fetch(&l2::redis_key(database, hash)).await?;
        let shared = l2::decode(&bytes)?;
        let mut entry = shared.entry;
        if *entry.key != *key {
            return None;
        }
        // Taken before the check: a bump after it makes the copy in memory invalid at once.
        let snapshot = db.versions.snapshot(&entry.relations, &entry.tags);
        // Nothing it depends on was invalidated here since it was read: writes seen here, and
        // manual invalidations (tags, tables, everything), which no trigger-kept version records.
        let untouched_here =
            db.versions.last_bump_us(&entry.relations, &entry.tags) + l2::CLOCK_SKEW_US < shared.read_sent_us;
        let fresh = match entry.pg_snapshot {
            Some(pg) => Some(pg) == pg_snapshot && untouched_here,
            None => pg_snapshot.is_none() && untouched_here,
        };
        if !fresh {
            self.redis.l2_rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        // The TTL runs from the read that made the result, not from this copy: taken with a full
        // TTL, a result outlived it (twice over when its maker took it back from Redis).
        let age = Duration::from_micros(versions::now_us().saturating_sub(shared.read_sent_us));
        let left = entry.ttl.checked_sub(age).filter(|left| !left.is_zero())?;
        entry.ttl = left;
        self.redis.l2_hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        entry.snapshot = snapshot;
        let entry = Arc::new(entry);
        self.l1.load().map.insert(hash, entry.clone());
        Some(entry)
    }

    /// Entries and bytes held now.
    pub fn usage(&self) -> (u64, u64) {
        let l1 = self.l1.load();
        l1.map.run_pending_tasks();
        (l1.map.entry_count(), l1.map.weighted_size())
    }

    pub fn max_bytes(&self) -> u64 {
        self.l1.load().max_bytes
    }

    /// Tells other pgpilot instances what a write invalidated (Redis pub/sub when configured).
    pub fn publish(&self, database: &str, inv: &Invalidation) {
        self.redis.publish(database, inv);
    }

    /// Tells other pgpilot instances a tag was invalidated.
    pub fn publish_tag(&self, database: &str, tag: &str) {
        self.redis.publish_tag(database, tag);
    }

    /// Whether the links between instances allow serving from the cache (fail closed).
    pub fn serving(&self) -> bool {
        self.redis.serving()
    }

    /// The Redis link's state, for the API.
    pub fn redis_state(&self) -> serde_json::Value {
        let s = self.redis.state.summary();
        let (peers, peers_silent) = self.redis.peers.count(std::time::Instant::now());
        serde_json::json!({
            "configured": s.required, "up": s.up, "messages": s.notifications,
            "peers": peers, "peers_silent": peers_silent,
            "shared_hits": self.redis.l2_hits.load(std::sync::atomic::Ordering::Relaxed),
            "shared_rejected": self.redis.l2_rejected.load(std::sync::atomic::Ordering::Relaxed),
            "delay_ms": { "last": s.last_ms, "p99": s.p99_ms, "max": s.max_ms },
        })
    }
}

fn build_l1(max_bytes: u64, stats: &Arc<CacheStats>) -> L1 {
    let stats = stats.clone();
    let map = moka::sync::Cache::builder()
        .max_capacity(max_bytes)
        .weigher(|_k: &u64, e: &Arc<Entry>| e.weight())
        .expire_after(PerEntryTtl)
        .eviction_listener(move |_k, _v, cause| {
            use std::sync::atomic::Ordering::Relaxed;
            match cause {
                moka::notification::RemovalCause::Size => stats.evictions.fetch_add(1, Relaxed),
                moka::notification::RemovalCause::Expired => stats.expirations.fetch_add(1, Relaxed),
                _ => 0,
            };
        })
        .build();
    L1 { map, max_bytes }
}

/// The claim on one key's fill: waiters wake when it is dropped (stored or abandoned).
pub struct FillGuard {
    hash: u64,
    tx: Option<watch::Sender<()>>,
    inflight: Inflight,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        let tx = self.tx.take();
        let mut map = self.inflight.lock();
        if let (Some(rx), Some(tx)) = (map.get(&self.hash), tx.as_ref()) {
            if rx.same_channel(&tx.subscribe()) {
                map.remove(&self.hash);
            }
        }
        drop(map);
        drop(tx);
    }
}

/// A miss being filled: the server's answer is collected here as it passes to the client.
pub struct Fill {
    pub hash: u64,
    pub key: Box<[u8]>,
    pub plan: ReadPlan,
    pub snapshot: u64,
    /// When the read was sent (µs since the epoch), for the shared tier. A replica's answer
    /// shows the primary as of the position it was required to have replayed: that position's
    /// stamp.
    pub read_sent_us: u64,
    /// The replica allowed to answer it (one that had replayed the last change to what it reads);
    /// otherwise only the primary's answer is stored.
    pub replica: Option<usize>,
    pub pg_snapshot: Option<u64>,
    pub row_description: Option<Bytes>,
    pub param_description: Option<Bytes>,
    pub statement_row_description: Option<Bytes>,
    /// A ParameterDescription came last: the next RowDescription describes the statement.
    pub describing_statement: bool,
    pub body: BytesMut,
    pub max_bytes: usize,
    /// Its Execute had a row limit and its batch Syncs outside a transaction: a PortalSuspended
    /// ends the answer like a CommandComplete.
    pub row_limited: bool,
    pub _guard: FillGuard,
}

/// What one server message does to a fill.
#[derive(Debug, PartialEq, Eq)]
pub enum Captured {
    Continue,
    /// Not a plain result (an error, COPY, a suspended portal, too large): not cached.
    Abandon(Bypass),
    /// ReadyForQuery: the answer is complete.
    Complete,
}

impl Fill {
    /// Takes in one whole server message (header included) answering the filled request.
    pub fn capture(&mut self, msg: &[u8]) -> Captured {
        match msg[0] {
            b'1' | b'2' | b'3' => Captured::Continue,
            b't' => {
                self.param_description = Some(Bytes::copy_from_slice(msg));
                self.describing_statement = true;
                Captured::Continue
            }
            b'T' | b'n' => {
                let copy = Some(Bytes::copy_from_slice(msg));
                if std::mem::take(&mut self.describing_statement) {
                    self.statement_row_description = copy;
                } else {
                    self.row_description = copy;
                }
                Captured::Continue
            }
            b's' if !self.row_limited => Captured::Abandon(Bypass::PartialFetch),
            // A row limit reached (PortalSuspended) ends the answer of a batch that then Syncs
            // outside a transaction: the portal is gone, nothing more can be fetched from it.
            // Notices and warnings the read raised are part of its answer: a hit says them again,
            // as PostgreSQL would (client_min_messages is in the key).
            b'N' | b'D' | b'C' | b's' => {
                if self.body.len() + msg.len() > self.max_bytes {
                    return Captured::Abandon(Bypass::TooLarge);
                }
                self.body.extend_from_slice(msg);
                Captured::Continue
            }
            b'Z' => Captured::Complete,
            _ => Captured::Abandon(Bypass::NotAResult),
        }
    }
}
