//! The parse cache: statement text → classification, bounded, sharded, CLOCK eviction.
//!
//! A hit hashes the text once (foldhash), takes one shard's read lock, compares the text, sets the
//! entry's referenced bit if it was clear and clones an `Arc`: no allocation, no global lock. A miss
//! parses outside any lock and inserts under the shard's write lock, evicting with the CLOCK
//! algorithm (second chance) when the shard is full.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use hashbrown::HashTable;
use parking_lot::RwLock;

use crate::analyze::analyze;
use crate::statement::Statement;

/// Texts longer than this are classified but not kept: they are almost always bulk statements with
/// inline data that never repeat, and keeping them would let a few of them fill memory.
pub const DEFAULT_MAX_CACHED_TEXT: usize = 16 * 1024;

const SHARDS: usize = 16;

/// Classifies statement texts, remembering the result for texts seen before.
pub struct Classifier {
    shards: Box<[Shard]>,
    hasher: foldhash::fast::FixedState,
    max_text_len: usize,
    capacity: usize,
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassifierStats {
    pub hits: u64,
    pub misses: u64,
    /// Misses whose text was too long to keep.
    pub uncached: u64,
    pub evictions: u64,
    pub entries: usize,
    pub capacity: usize,
}

// One shard per cache line pair, so that threads working on different shards never share a line.
#[repr(align(128))]
struct Shard {
    table: RwLock<ShardTable>,
    hits: AtomicU64,
    misses: AtomicU64,
    uncached: AtomicU64,
    evictions: AtomicU64,
}

struct ShardTable {
    /// Indexes into `slots`, hashed by the slot's text hash.
    index: HashTable<u32>,
    slots: Vec<Slot>,
    /// The CLOCK hand: the next slot considered for eviction.
    hand: usize,
    capacity: usize,
}

struct Slot {
    hash: u64,
    text: Box<str>,
    statement: Arc<Statement>,
    referenced: AtomicBool,
}

impl Classifier {
    /// A classifier keeping up to `capacity` statement texts (0 disables the cache).
    pub fn new(capacity: usize) -> Classifier {
        Classifier::with_max_text_len(capacity, DEFAULT_MAX_CACHED_TEXT)
    }

    /// Like [`Classifier::new`], keeping only texts of at most `max_text_len` bytes.
    pub fn with_max_text_len(capacity: usize, max_text_len: usize) -> Classifier {
        let per_shard = capacity.div_ceil(SHARDS);
        let shards = (0..SHARDS)
            .map(|_| Shard {
                table: RwLock::new(ShardTable {
                    index: HashTable::with_capacity(per_shard.min(4096)),
                    slots: Vec::with_capacity(per_shard.min(4096)),
                    hand: 0,
                    capacity: per_shard,
                }),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                uncached: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
            })
            .collect();
        Classifier {
            shards,
            hasher: foldhash::fast::FixedState::with_seed(0x0070_6770_696c_6f74),
            max_text_len,
            capacity: per_shard * SHARDS,
        }
    }

    /// The classification of `sql`, from the cache when the exact text was seen before.
    pub fn classify(&self, sql: &str) -> Arc<Statement> {
        let hash = self.hasher.hash_one(sql);
        let shard = &self.shards[(hash >> 32) as usize % SHARDS];
        if let Some(statement) = shard.table.read().get(hash, sql) {
            shard.hits.fetch_add(1, Ordering::Relaxed);
            return statement;
        }
        shard.misses.fetch_add(1, Ordering::Relaxed);
        let statement = Arc::new(analyze(sql));
        if sql.len() > self.max_text_len || shard.table.read().capacity == 0 {
            shard.uncached.fetch_add(1, Ordering::Relaxed);
            return statement;
        }
        let mut table = shard.table.write();
        if let Some(existing) = table.get(hash, sql) {
            // Another thread parsed the same text meanwhile: keep one copy.
            return existing;
        }
        if table.insert(hash, sql, statement.clone()) {
            shard.evictions.fetch_add(1, Ordering::Relaxed);
        }
        statement
    }

    /// How many texts are cached.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.table.read().slots.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every cached text (counters are kept).
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut table = shard.table.write();
            table.index.clear();
            table.slots.clear();
            table.hand = 0;
        }
    }

    pub fn stats(&self) -> ClassifierStats {
        let mut stats = ClassifierStats { capacity: self.capacity, ..ClassifierStats::default() };
        for shard in self.shards.iter() {
            stats.hits += shard.hits.load(Ordering::Relaxed);
            stats.misses += shard.misses.load(Ordering::Relaxed);
            stats.uncached += shard.uncached.load(Ordering::Relaxed);
            stats.evictions += shard.evictions.load(Ordering::Relaxed);
            stats.entries += shard.table.read().slots.len();
        }
        stats
    }
}

impl ShardTable {
    fn get(&self, hash: u64, sql: &str) -> Option<Arc<Statement>> {
        let &i = self.index.find(hash, |&i| &*self.slots[i as usize].text == sql)?;
        let slot = &self.slots[i as usize];
        if !slot.referenced.load(Ordering::Relaxed) {
            slot.referenced.store(true, Ordering::Relaxed);
        }
        Some(slot.statement.clone())
    }

    /// Inserts a new text; returns whether an entry was evicted to make room.
    fn insert(&mut self, hash: u64, sql: &str, statement: Arc<Statement>) -> bool {
        let new_slot = Slot { hash, text: sql.into(), statement, referenced: AtomicBool::new(false) };
        if self.slots.len() < self.capacity {
            let i = self.slots.len() as u32;
            self.slots.push(new_slot);
            let slots = &self.slots;
            self.index.insert_unique(hash, i, |&j| slots[j as usize].hash);
            return false;
        }
        let victim = self.clock_victim();
        let old_hash = self.slots[victim].hash;
        if let Ok(entry) = self.index.find_entry(old_hash, |&j| j as usize == victim) {
            entry.remove();
        }
        self.slots[victim] = new_slot;
        let slots = &self.slots;
        self.index.insert_unique(hash, victim as u32, |&j| slots[j as usize].hash);
        true
    }

    /// Second chance: sweep from the hand, clearing referenced bits, until an unreferenced slot.
    fn clock_victim(&mut self) -> usize {
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            if !self.slots[i].referenced.swap(false, Ordering::Relaxed) {
                return i;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_returns_the_same_classification() {
        let c = Classifier::new(100);
        let a = c.classify("SELECT 1");
        let b = c.classify("SELECT 1");
        assert!(Arc::ptr_eq(&a, &b));
        let stats = c.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
    }

    #[test]
    fn bounded_with_clock_eviction_keeping_referenced_entries() {
        let c = Classifier::new(SHARDS * 4);
        for i in 0..2000 {
            c.classify(&format!("SELECT {i}"));
            // A statement used all the time survives the churn.
            c.classify("SELECT * FROM hot");
        }
        assert!(c.len() <= SHARDS * 4, "len {}", c.len());
        let before = c.stats().misses;
        c.classify("SELECT * FROM hot");
        assert_eq!(c.stats().misses, before, "the hot statement was evicted");
        assert!(c.stats().evictions > 1000);
    }

    #[test]
    fn zero_capacity_and_long_texts_are_not_kept() {
        let c = Classifier::new(0);
        c.classify("SELECT 1");
        assert_eq!(c.len(), 0);
        let c = Classifier::with_max_text_len(10, 16);
        let long = format!("SELECT '{}'", "x".repeat(100));
        assert_eq!(c.classify(&long).kind, crate::StatementKind::Select);
        assert_eq!(c.len(), 0);
        assert_eq!(c.stats().uncached, 1);
    }

    #[test]
    fn concurrent_classification_is_consistent() {
        let c = Arc::new(Classifier::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let sql = format!("UPDATE t SET x = {} WHERE id = {}", i % 50, t);
                        assert!(c.classify(&sql).writes);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(c.len() <= 64);
        c.clear();
        assert!(c.is_empty());
    }
}
