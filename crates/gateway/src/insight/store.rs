//! Per-statement statistics keyed by (fingerprint, database, user), sharded by fingerprint so two
//! sessions lock the same small mutex only when they finish the same statement at the same moment.
//!
//! Memory is bounded: at most `max_statements` entries (each ~2 KiB, mostly its histogram, plus its
//! text, kept up to `max_query_text` bytes: see [`bounded_text`]). A new
//! statement arriving when the store is full is counted in its database's "other" entry, and a
//! compaction (at most once a second, by whichever session notices first) folds the 5% least
//! expensive entries by total time into "other" so new statements can get their own entry, as
//! pg_stat_statements deallocates its least-used entries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::histogram::Histogram;
use super::{StatementEvent, Target};

const SHARDS: usize = 32;
const COMPACTION_PERIOD: Duration = Duration::from_secs(1);
/// The user name of "other" entries, which gather every user of a database.
pub const OTHER_USER: &str = "*";

/// Sums of one entry (or of several, merged).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub calls: u64,
    pub errors: u64,
    pub slow: u64,
    pub rows: u64,
    pub total_us: u64,
    pub max_us: u64,
    pub wait_us: u64,
    pub primary: u64,
    pub replica: u64,
    pub cache: u64,
}

impl Counters {
    pub fn merge(&mut self, o: &Counters) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.slow += o.slow;
        self.rows += o.rows;
        self.total_us += o.total_us;
        self.max_us = self.max_us.max(o.max_us);
        self.wait_us += o.wait_us;
        self.primary += o.primary;
        self.replica += o.replica;
        self.cache += o.cache;
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

struct Entry {
    fingerprint: u64,
    database: Arc<str>,
    user: Arc<str>,
    query: Arc<str>,
    counters: Counters,
    histogram: Box<Histogram>,
}

impl Entry {
    fn new(fingerprint: u64, database: Arc<str>, user: Arc<str>, query: Arc<str>) -> Entry {
        Entry { fingerprint, database, user, query, counters: Counters::default(), histogram: Box::default() }
    }

    fn is(&self, database: &Arc<str>, user: &Arc<str>) -> bool {
        (Arc::ptr_eq(&self.database, database) || *self.database == **database)
            && (Arc::ptr_eq(&self.user, user) || *self.user == **user)
    }

    fn add(&mut self, ev: &StatementEvent<'_>, slow: bool) {
        let us = micros(ev.duration);
        let c = &mut self.counters;
        c.calls += 1;
        c.errors += ev.error.is_some() as u64;
        c.slow += slow as u64;
        c.rows += ev.rows;
        c.total_us = c.total_us.saturating_add(us);
        c.max_us = c.max_us.max(us);
        c.wait_us = c.wait_us.saturating_add(micros(ev.wait));
        match ev.target {
            Target::Primary => c.primary += 1,
            Target::Replica => c.replica += 1,
            Target::Cache => c.cache += 1,
            Target::Unsent => {}
        }
        self.histogram.record(us);
    }

    fn absorb(&mut self, other: &Entry) {
        self.counters.merge(&other.counters);
        self.histogram.merge(&other.histogram);
    }
}

type ByFingerprint = crate::hashing::ByHash<Vec<Entry>>;

#[derive(Default)]
struct Shard {
    entries: ByFingerprint,
    /// One per database: statements that have no entry of their own.
    other: Vec<Entry>,
    /// Failed statements by (database, SQLSTATE), for every statement including "other".
    errors: HashMap<(Arc<str>, [u8; 5]), u64>,
}

impl Shard {
    fn other_for(&mut self, database: &Arc<str>) -> &mut Entry {
        let i = match self.other.iter().position(|e| *e.database == **database) {
            Some(i) => i,
            None => {
                let query = Arc::from("<other statements>");
                self.other.push(Entry::new(0, database.clone(), Arc::from(OTHER_USER), query));
                self.other.len() - 1
            }
        };
        &mut self.other[i]
    }
}

#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// One statement's statistics as read: counters and latency percentiles.
#[derive(Debug, Clone)]
pub struct StatementStats {
    /// None for a database's "other" entry.
    pub fingerprint: Option<u64>,
    pub database: Arc<str>,
    pub user: Arc<str>,
    pub query: Arc<str>,
    pub counters: Counters,
    pub p50_us: f64,
    pub p95_us: f64,
    pub p99_us: f64,
}

impl StatementStats {
    fn of(fingerprint: Option<u64>, e: &Entry) -> StatementStats {
        let max = e.counters.max_us;
        StatementStats {
            fingerprint,
            database: e.database.clone(),
            user: e.user.clone(),
            query: e.query.clone(),
            counters: e.counters,
            p50_us: e.histogram.quantile(0.5, max),
            p95_us: e.histogram.quantile(0.95, max),
            p99_us: e.histogram.quantile(0.99, max),
        }
    }
}

/// Everything the store holds at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub statements: Vec<StatementStats>,
    /// One per database that has statements without an entry of their own.
    pub other: Vec<StatementStats>,
    /// Failed statements by database and SQLSTATE.
    pub errors: Vec<(Arc<str>, String, u64)>,
}

impl Snapshot {
    /// Sums per database over every statement, "other" included.
    pub fn database_totals(&self) -> Vec<(Arc<str>, Counters)> {
        let mut totals: Vec<(Arc<str>, Counters)> = Vec::new();
        for s in self.statements.iter().chain(self.other.iter()) {
            match totals.iter_mut().find(|(d, _)| *d == s.database) {
                Some((_, c)) => c.merge(&s.counters),
                None => totals.push((s.database.clone(), s.counters)),
            }
        }
        totals.sort_by(|a, b| a.0.cmp(&b.0));
        totals
    }

    pub fn totals(&self) -> Counters {
        let mut t = Counters::default();
        for s in self.statements.iter().chain(self.other.iter()) {
            t.merge(&s.counters);
        }
        t
    }
}

pub struct StatementStore {
    shards: Box<[Padded]>,
    /// Entries of their own (not "other"), across shards.
    tracked: AtomicUsize,
    max: AtomicUsize,
    /// Bytes of normalized text an entry keeps (see [`bounded_text`]).
    max_text: AtomicUsize,
    last_compaction: Mutex<Option<Instant>>,
}

/// The text kept for a statement: at most `max` bytes of its normalized text, cut on a character
/// boundary and marked with how much was left out, so that one huge statement (a multi-megabyte
/// VALUES list, say) costs an entry no more than a long ordinary one. The entry's fingerprint is
/// still the whole statement's: statements that differ only after the cut stay apart.
pub fn bounded_text(text: &Arc<str>, max: usize) -> Arc<str> {
    if text.len() <= max {
        return text.clone();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Arc::from(format!("{} /* … {} bytes more */", &text[..cut], text.len() - cut))
}

impl StatementStore {
    pub fn new(max_statements: usize) -> StatementStore {
        StatementStore {
            shards: (0..SHARDS).map(|_| Padded(Mutex::default())).collect(),
            tracked: AtomicUsize::new(0),
            max: AtomicUsize::new(max_statements.max(1)),
            max_text: AtomicUsize::new(usize::MAX),
            last_compaction: Mutex::new(None),
        }
    }

    /// A lower limit (a reload) takes effect at once: the cheapest entries beyond it are folded
    /// into "other" now, not one compaction a second as new statements overflow.
    pub fn set_max(&self, max_statements: usize) {
        let max = max_statements.max(1);
        self.max.store(max, Relaxed);
        let excess = self.tracked().saturating_sub(max);
        if excess > 0 {
            let _compacting = self.last_compaction.lock();
            self.fold_cheapest(excess);
        }
    }

    pub fn set_max_text(&self, bytes: usize) {
        self.max_text.store(bytes, Relaxed);
    }

    /// `[insight] max_query_text`: the slow-query log keeps texts as short.
    pub fn max_text(&self) -> usize {
        self.max_text.load(Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max.load(Relaxed)
    }

    /// Entries of their own currently held.
    pub fn tracked(&self) -> usize {
        self.tracked.load(Relaxed)
    }

    fn shard(&self, fingerprint: u64) -> &Mutex<Shard> {
        // The low bits pick the hash map's bucket; the high bits pick the shard.
        &self.shards[(fingerprint >> 58) as usize % SHARDS].0
    }

    pub fn record(&self, ev: &StatementEvent<'_>, slow: bool) {
        let mut shard = self.shard(ev.fingerprint).lock();
        if let Some(code) = ev.error {
            *shard.errors.entry((ev.database.clone(), sqlstate(code))).or_insert(0) += 1;
        }
        if let Some(list) = shard.entries.get_mut(&ev.fingerprint) {
            if let Some(e) = list.iter_mut().find(|e| e.is(ev.database, ev.user)) {
                e.add(ev, slow);
                return;
            }
        }
        if self.tracked.fetch_add(1, Relaxed) < self.max.load(Relaxed) {
            let text = bounded_text(ev.normalized, self.max_text.load(Relaxed));
            let mut e = Entry::new(ev.fingerprint, ev.database.clone(), ev.user.clone(), text);
            e.add(ev, slow);
            shard.entries.entry(ev.fingerprint).or_default().push(e);
            return;
        }
        self.tracked.fetch_sub(1, Relaxed);
        shard.other_for(ev.database).add(ev, slow);
        drop(shard);
        self.compact();
    }

    /// Folds the least expensive 5% of entries (at least one) into "other", at most once per
    /// COMPACTION_PERIOD; skipped when another thread is already at it.
    fn compact(&self) {
        let Some(mut last) = self.last_compaction.try_lock() else { return };
        if last.is_some_and(|t| t.elapsed() < COMPACTION_PERIOD) {
            return;
        }
        *last = Some(Instant::now());
        self.fold_cheapest(self.max() / 20);
    }

    /// Folds the `count` entries of least total time (at least one) into "other".
    fn fold_cheapest(&self, count: usize) {
        let mut totals: Vec<u64> = Vec::with_capacity(self.tracked());
        for s in self.shards.iter() {
            totals.extend(s.0.lock().entries.values().flatten().map(|e| e.counters.total_us));
        }
        if totals.is_empty() {
            return;
        }
        let evict = count.clamp(1, totals.len());
        let (_, threshold, _) = totals.select_nth_unstable(evict - 1);
        let threshold = *threshold;
        let mut budget = evict;
        for s in self.shards.iter() {
            if budget == 0 {
                break;
            }
            let mut shard = s.0.lock();
            let mut evicted = Vec::new();
            shard.entries.retain(|_, list| {
                let mut i = 0;
                while i < list.len() {
                    if budget > 0 && list[i].counters.total_us <= threshold {
                        evicted.push(list.swap_remove(i));
                        budget -= 1;
                    } else {
                        i += 1;
                    }
                }
                !list.is_empty()
            });
            self.tracked.fetch_sub(evicted.len(), Relaxed);
            for e in &evicted {
                shard.other_for(&e.database).absorb(e);
            }
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        let mut other: Vec<Entry> = Vec::new();
        let mut errors: HashMap<(Arc<str>, [u8; 5]), u64> = HashMap::new();
        for s in self.shards.iter() {
            let shard = s.0.lock();
            for e in shard.entries.values().flatten() {
                snap.statements.push(StatementStats::of(Some(e.fingerprint), e));
            }
            for e in &shard.other {
                match other.iter_mut().find(|o| o.database == e.database) {
                    Some(o) => o.absorb(e),
                    None => {
                        let mut o = Entry::new(0, e.database.clone(), e.user.clone(), e.query.clone());
                        o.absorb(e);
                        other.push(o);
                    }
                }
            }
            for (k, n) in &shard.errors {
                *errors.entry(k.clone()).or_insert(0) += n;
            }
        }
        snap.other = other.iter().map(|e| StatementStats::of(None, e)).collect();
        snap.errors = errors
            .into_iter()
            .map(|((db, code), n)| (db, String::from_utf8_lossy(&code).into_owned(), n))
            .collect();
        snap.errors.sort();
        snap
    }

    /// Forgets everything (pg_stat_statements_reset).
    pub fn reset(&self) {
        for s in self.shards.iter() {
            let mut shard = s.0.lock();
            let n = shard.entries.values().map(Vec::len).sum::<usize>();
            *shard = Shard::default();
            self.tracked.fetch_sub(n, Relaxed);
        }
    }
}

/// A SQLSTATE as 5 bytes; anything else is kept as "XX000" (internal error).
fn sqlstate(code: &str) -> [u8; 5] {
    match code.as_bytes() {
        [a, b, c, d, e] if code.bytes().all(|b| b.is_ascii_alphanumeric()) => [*a, *b, *c, *d, *e],
        _ => *b"XX000",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_on_a_character_boundary_and_marked() {
        let short: Arc<str> = Arc::from("SELECT $1");
        assert!(Arc::ptr_eq(&bounded_text(&short, 9), &short));
        let long: Arc<str> = Arc::from(format!("SELECT 'é{}'", "x".repeat(100)).as_str());
        // Byte 9 is inside the two-byte é: the cut falls before it.
        let cut = bounded_text(&long, 9);
        assert_eq!(&*cut, format!("SELECT ' /* … {} bytes more */", long.len() - 8));
    }
}
