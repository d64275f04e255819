//! What pgpilot knows about each server of a database: its role (discovered, not configured), its
//! health, its replication lag, and how much it has been asked to do.

use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::config::{RoutingConfig, ServerUrl};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// Not checked yet.
    Unknown = 0,
    Primary = 1,
    Replica = 2,
}

impl Role {
    fn from_u8(v: u8) -> Role {
        match v {
            1 => Role::Primary,
            2 => Role::Replica,
            _ => Role::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// One server of a logical database.
#[derive(Debug)]
pub struct Backend {
    pub index: usize,
    pub url: ServerUrl,
    pub address: Arc<str>,
    /// Listed as the primary in the configuration (discovery may say otherwise after a failover).
    pub configured_primary: bool,
    /// Its share of the reads among the replicas (0: only when no other qualifies). A reload
    /// changes it in place, as it does `tags`: the server's connections stay.
    weight: AtomicU32,
    /// The replica groups it serves (none: the untagged reads).
    tags: ArcSwap<Vec<String>>,
    role: AtomicU8,
    up: AtomicBool,
    banned_until_ms: AtomicU64,
    /// Bytes of WAL the server has not replayed yet (replicas).
    lag_bytes: AtomicU64,
    /// Age of the last replayed transaction while the primary is ahead (replicas), in ms.
    lag_ms: AtomicU64,
    /// Last WAL position seen: current on a primary, replayed on a replica.
    lsn: AtomicU64,
    /// When `lsn` was read (Unix ms).
    lsn_at_ms: AtomicU64,
    timeline: AtomicU32,
    /// Positions read while this server was the primary, for cache fills from replicas.
    pub history: super::positions::PositionHistory,
    /// False while the monitor doubts that this replica follows the current primary (after a
    /// failover, or seen ahead of it): it gets no reads then.
    following: AtomicBool,
    /// Connections of this server checked out right now (least_outstanding).
    pub outstanding: AtomicUsize,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub failed_checks: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

impl Backend {
    pub fn new(
        index: usize,
        url: ServerUrl,
        configured_primary: bool,
        weight: u32,
        tags: Vec<String>,
    ) -> Backend {
        Backend {
            index,
            address: Arc::from(url.address()),
            url,
            configured_primary,
            weight: AtomicU32::new(weight),
            tags: ArcSwap::from_pointee(tags),
            role: AtomicU8::new(Role::Unknown as u8),
            up: AtomicBool::new(true),
            banned_until_ms: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            lsn: AtomicU64::new(0),
            lsn_at_ms: AtomicU64::new(0),
            timeline: AtomicU32::new(0),
            history: Default::default(),
            following: AtomicBool::new(true),
            outstanding: AtomicUsize::new(0),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            failed_checks: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    pub fn tags(&self) -> arc_swap::Guard<Arc<Vec<String>>> {
        self.tags.load()
    }

    /// A reload's weight and tags for this server.
    pub fn set_balance(&self, weight: u32, tags: &[String]) {
        self.weight.store(weight, Relaxed);
        if **self.tags.load() != tags {
            self.tags.store(Arc::new(tags.to_vec()));
        }
    }

    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Relaxed))
    }

    pub fn set_role(&self, r: Role) {
        if self.role.swap(r as u8, Relaxed) != r as u8 {
            self.history.clear();
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    pub fn is_banned(&self) -> bool {
        self.banned_until_ms.load(Relaxed) > now_ms() || !self.is_up()
    }

    pub fn banned_until_ms(&self) -> u64 {
        self.banned_until_ms.load(Relaxed)
    }

    /// A failed check or connection: no reads for ban_time, and until a check passes again.
    pub fn ban(&self, ban_ms: u64, why: &str) {
        if self.is_up() {
            tracing::warn!(server = %self.address, reason = why, "server marked down; no reads go to it");
        }
        self.up.store(false, Relaxed);
        self.banned_until_ms.fetch_max(now_ms() + ban_ms, Relaxed);
        *self.last_error.lock() = Some(why.to_string());
    }

    /// A passing check: the server comes back once its ban has run out.
    pub fn check_passed(&self) {
        if !self.is_up() && self.banned_until_ms.load(Relaxed) <= now_ms() {
            tracing::info!(server = %self.address, "server passed its health check again");
            self.up.store(true, Relaxed);
            *self.last_error.lock() = None;
        }
    }

    pub fn record_position(&self, lsn: u64, at_ms: u64, timeline: u32) {
        self.lsn.store(lsn, Relaxed);
        self.timeline.store(timeline, Relaxed);
        // Released after the position: whoever sees this stamp sees the position read with it.
        self.lsn_at_ms.store(at_ms, Release);
    }

    /// The last position and when it was read. The stamp is read first: a new stamp with the old
    /// position would let read-your-writes trust a position read before a client's commit.
    pub fn lsn(&self) -> (u64, u64) {
        let at_ms = self.lsn_at_ms.load(Acquire);
        (self.lsn.load(Relaxed), at_ms)
    }

    pub fn timeline(&self) -> u32 {
        self.timeline.load(Relaxed)
    }

    /// What SHOW SERVERS, SHOW REPLICAS and the monitoring API say of the server.
    pub fn state_name(&self, routing: &RoutingConfig) -> &'static str {
        if self.is_banned() {
            "banned"
        } else if self.lsn_at_ms.load(Relaxed) == 0 {
            // The monitor has not read the server yet (see `say_no_login_yet`); the configured
            // primary's role is only assumed until then.
            "unchecked"
        } else if !self.follows_primary() || self.role() == Role::Unknown {
            // An old primary fenced after a failover is neither primary nor replica.
            "not_following"
        } else if self.role() == Role::Replica && !self.lag_within(routing) {
            "lagging"
        } else {
            "up"
        }
    }

    /// Whether the replica's last measured lag is within `max_replica_lag(_bytes)`.
    pub fn lag_within(&self, routing: &RoutingConfig) -> bool {
        let (lag_bytes, lag_ms) = self.lag();
        lag_bytes <= routing.max_replica_lag_bytes
            && routing.max_replica_lag.enabled().is_none_or(|max| lag_ms <= max.as_millis() as u64)
    }

    pub fn follows_primary(&self) -> bool {
        self.following.load(Relaxed)
    }

    pub fn set_following(&self, following: bool) {
        self.following.store(following, Relaxed);
    }

    pub fn set_lag(&self, bytes: u64, ms: u64) {
        self.lag_bytes.store(bytes, Relaxed);
        self.lag_ms.store(ms, Relaxed);
    }

    pub fn lag(&self) -> (u64, u64) {
        (self.lag_bytes.load(Relaxed), self.lag_ms.load(Relaxed))
    }
}

/// A guard counting one checked-out connection of a backend.
pub struct Outstanding(pub Arc<Backend>);

impl Outstanding {
    pub fn new(b: Arc<Backend>) -> Outstanding {
        b.outstanding.fetch_add(1, Relaxed);
        Outstanding(b)
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Relaxed);
    }
}

/// Parses "16/B374D848" into a byte position.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(parse_lsn("nonsense"), None);
    }

    #[test]
    fn ban_lasts_until_it_runs_out_and_a_check_passes() {
        let url = ServerUrl::parse("postgres://h/db").unwrap();
        let b = Backend::new(1, url, false, 1, vec![]);
        assert!(!b.is_banned());
        b.ban(60_000, "down");
        assert!(b.is_banned());
        b.check_passed();
        assert!(b.is_banned(), "still within ban_time");
        b.banned_until_ms.store(0, Relaxed);
        b.check_passed();
        assert!(!b.is_banned());
    }
}
