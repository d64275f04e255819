//! Counters of the result cache: process-wide atomics (no lock on the hit path but the
//! per-fingerprint table, which is small and short-held).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;
use pgpilot_sql::NotCacheable;

/// Fingerprints tracked for per-statement hit rates.
const MAX_FINGERPRINTS: usize = 1000;

/// Why a request was not looked up in (or not stored into) the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    Statement(NotCacheable),
    /// Inside an explicit transaction.
    InTransaction,
    /// `SET pgpilot.cache = off`.
    SessionOff,
    /// A rule with `cache = false`, or `only_rules` and no rule matched.
    Rule,
    /// The relation catalog is not loaded yet, or is being reloaded after DDL.
    CatalogLoading,
    /// SET SESSION AUTHORIZATION: the identity is not the login user's.
    Identity,
    /// A Bind of a statement pgpilot did not see prepared, or a batch it does not answer.
    UnknownStatement,
    /// Execute with a row limit (a partial fetch).
    PartialFetch,
    /// The result was larger than max_entry_bytes.
    TooLarge,
    /// An error, a notice-only answer, COPY: not a plain result.
    NotAResult,
    /// The invalidation channel is down (fail closed).
    ChannelDown,
    /// `strict` needs the triggers (pgpilot cache install-triggers).
    StrictUnavailable,
    /// A replica answered: it may not have replayed the commits the result must show yet.
    ReplicaAnswer,
    /// The triggers are installed, but a table the read reads has none (made by a role the event
    /// trigger could not act for, or before an older install): writes to it straight in
    /// PostgreSQL would go unheard.
    TableWithoutTrigger,
    /// The session holds its server (a temporary table, an advisory lock, LISTEN...): its reads go
    /// to that server, outside the cache.
    PinnedSession,
}

/// Reasons beyond the statement's own, in index order after NotCacheable::ALL.
const SESSION_REASONS: [(Bypass, &str); 14] = [
    (Bypass::InTransaction, "in_transaction"),
    (Bypass::SessionOff, "session_off"),
    (Bypass::Rule, "rule"),
    (Bypass::CatalogLoading, "catalog_loading"),
    (Bypass::Identity, "session_authorization"),
    (Bypass::UnknownStatement, "unknown_statement"),
    (Bypass::PartialFetch, "partial_fetch"),
    (Bypass::TooLarge, "too_large"),
    (Bypass::NotAResult, "not_a_result"),
    (Bypass::ChannelDown, "invalidation_channel_down"),
    (Bypass::StrictUnavailable, "strict_without_triggers"),
    (Bypass::ReplicaAnswer, "replica_answer"),
    (Bypass::PinnedSession, "pinned_session"),
    (Bypass::TableWithoutTrigger, "table_without_trigger"),
];

const REASONS: usize = NotCacheable::ALL.len() + SESSION_REASONS.len();

impl Bypass {
    fn index(self) -> usize {
        match self {
            Bypass::Statement(r) => NotCacheable::ALL.iter().position(|x| *x == r).unwrap_or(0),
            other => {
                NotCacheable::ALL.len() + SESSION_REASONS.iter().position(|(b, _)| *b == other).unwrap_or(0)
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Bypass::Statement(r) => r.as_str(),
            other => SESSION_REASONS.iter().find(|(b, _)| *b == other).map(|(_, n)| *n).unwrap_or("other"),
        }
    }

    fn name_of(index: usize) -> &'static str {
        match NotCacheable::ALL.get(index) {
            Some(r) => r.as_str(),
            None => SESSION_REASONS[index - NotCacheable::ALL.len()].1,
        }
    }
}

#[derive(Default)]
pub struct FingerprintUse {
    pub hits: u64,
    pub misses: u64,
    pub text: Box<str>,
}

/// One counter per bypass reason (more than `Default` makes for an array).
struct BypassCounts([AtomicU64; REASONS]);

impl Default for BypassCounts {
    fn default() -> Self {
        BypassCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

#[derive(Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub fills: AtomicU64,
    /// Of `fills`, those read on a replica that had replayed the last change to what they read.
    pub fills_from_replicas: AtomicU64,
    /// Fills dropped because a table they read was written while they were read.
    pub fills_raced: AtomicU64,
    pub evictions: AtomicU64,
    pub expirations: AtomicU64,
    /// Tables, tags or whole databases invalidated.
    pub invalidations: AtomicU64,
    /// Misses that waited for another client's fill of the same result.
    pub fill_waits: AtomicU64,
    /// Hits served to clients, in bytes.
    pub hit_bytes: AtomicU64,
    /// How long pgpilot took to answer each hit: `bounded` hits, then `strict` ones (a version
    /// check first).
    pub hit_times: [super::hit_time::HitTimes; 2],
    bypasses: BypassCounts,
    fingerprints: Mutex<HashMap<u64, FingerprintUse>>,
}

impl CacheStats {
    pub fn bypass(&self, why: Bypass) {
        self.bypasses.0[why.index()].fetch_add(1, Relaxed);
    }

    /// Every reason with its count (zeros included, so metrics exist from the start).
    pub fn bypasses(&self) -> Vec<(&'static str, u64)> {
        self.bypasses.0.iter().enumerate().map(|(i, n)| (Bypass::name_of(i), n.load(Relaxed))).collect()
    }

    pub fn lookup(&self, fingerprint: u64, normalized: &str, hit: bool) {
        if hit {
            self.hits.fetch_add(1, Relaxed);
        } else {
            self.misses.fetch_add(1, Relaxed);
        }
        let mut map = self.fingerprints.lock();
        if map.len() >= MAX_FINGERPRINTS && !map.contains_key(&fingerprint) {
            return;
        }
        let e = map.entry(fingerprint).or_insert_with(|| FingerprintUse {
            text: normalized.chars().take(200).collect::<String>().into(),
            ..Default::default()
        });
        if hit {
            e.hits += 1;
        } else {
            e.misses += 1;
        }
    }

    /// Whether a miss of the statement `fingerprint` is worth reading on the primary to fill the
    /// cache (admission.rs): not when its results are seldom hit (keys that do not repeat, tables
    /// written between reads), except one miss in PROBE_EVERY, so that a change shows.
    pub fn worth_filling(&self, fingerprint: u64) -> bool {
        const SEEN_ENOUGH: u64 = 20;
        const PROBE_EVERY: u64 = 16;
        let map = self.fingerprints.lock();
        let Some(e) = map.get(&fingerprint) else { return true };
        let lookups = e.hits + e.misses;
        lookups < SEEN_ENOUGH || e.hits * 5 >= lookups || e.misses.is_multiple_of(PROBE_EVERY)
    }

    /// The `n` fingerprints with the most lookups: (fingerprint, hits, misses, text).
    pub fn top_fingerprints(&self, n: usize) -> Vec<(u64, u64, u64, String)> {
        let map = self.fingerprints.lock();
        let mut v: Vec<_> = map.iter().map(|(f, u)| (*f, u.hits, u.misses, u.text.to_string())).collect();
        v.sort_by_key(|(_, h, m, _)| std::cmp::Reverse(h + m));
        v.truncate(n);
        v
    }

    pub fn hit_rate(&self) -> f64 {
        let h = self.hits.load(Relaxed);
        let m = self.misses.load(Relaxed);
        if h + m == 0 {
            0.0
        } else {
            h as f64 / (h + m) as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_seldom_hit_are_not_worth_filling_on_the_primary() {
        let stats = CacheStats::default();
        assert!(stats.worth_filling(7), "an unknown statement is given a chance");
        for _ in 0..31 {
            stats.lookup(7, "SELECT $1", false);
        }
        stats.lookup(7, "SELECT $1", true);
        assert!(!stats.worth_filling(7));
        stats.lookup(7, "SELECT $1", false);
        assert!(stats.worth_filling(7), "one miss in sixteen probes");
        for _ in 0..10 {
            stats.lookup(8, "SELECT 2", false);
            stats.lookup(8, "SELECT 2", true);
        }
        assert!(stats.worth_filling(8), "half its lookups hit");
    }
}
