//! Per-table version counters of one database. A cached result remembers the sum of the versions of
//! everything it depends on (its relations, its tags, the database's epoch) as they were *before*
//! its read was sent; it is served only while that sum is unchanged. A write bumps the versions of
//! what it changed before its commit reaches the client, so a result read before a commit can never
//! be stored or served after it, and invalidation costs one atomic add per table, whatever the
//! number of cached results.
//!
//! Counters are striped by hash: two tables sharing a stripe only cause extra misses, never a stale
//! hit. Versions only grow, so equal sums mean nothing changed.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

use pgpilot_sql::Oid;

const STRIPES: usize = 4096;

/// What a result depends on, besides the database epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dependency<'a> {
    Relation(Oid),
    Tag(&'a str),
}

pub struct Versions {
    stripes: Box<[AtomicU64]>,
    /// When each stripe was last bumped (µs since the epoch), for results shared through Redis:
    /// another instance's result is taken only if nothing it depends on was bumped here since
    /// it was read.
    bumped_at: Box<[AtomicU64]>,
    /// Bumped to drop every result of the database.
    epoch: AtomicU64,
    epoch_at: AtomicU64,
    hasher: foldhash::fast::FixedState,
}

impl Default for Versions {
    fn default() -> Self {
        Versions {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            bumped_at: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            epoch_at: AtomicU64::new(now_us()),
            hasher: foldhash::fast::FixedState::with_seed(0x5eed_cafe),
        }
    }
}

impl Versions {
    fn index(&self, dep: Dependency<'_>) -> usize {
        let mut h = self.hasher.build_hasher();
        dep.hash(&mut h);
        std::hash::Hasher::finish(&h) as usize % STRIPES
    }

    fn stripe(&self, dep: Dependency<'_>) -> &AtomicU64 {
        &self.stripes[self.index(dep)]
    }

    fn bump(&self, dep: Dependency<'_>) {
        let i = self.index(dep);
        self.bumped_at[i].fetch_max(now_us(), SeqCst);
        self.stripes[i].fetch_add(1, SeqCst);
    }

    /// The last time (µs since the epoch) anything `relations` and `tags` depend on was bumped here.
    pub fn last_bump_us(&self, relations: &[Oid], tags: &[Box<str>]) -> u64 {
        let deps =
            relations.iter().map(|&o| Dependency::Relation(o)).chain(tags.iter().map(|t| Dependency::Tag(t)));
        deps.map(|d| self.bumped_at[self.index(d)].load(SeqCst)).fold(self.epoch_at.load(SeqCst), u64::max)
    }

    /// The current sum over `relations` and `tags` (and the epoch).
    pub fn snapshot(&self, relations: &[Oid], tags: &[Box<str>]) -> u64 {
        let mut sum = self.epoch.load(SeqCst);
        for &oid in relations {
            sum = sum.wrapping_add(self.stripe(Dependency::Relation(oid)).load(SeqCst));
        }
        for tag in tags {
            sum = sum.wrapping_add(self.stripe(Dependency::Tag(tag)).load(SeqCst));
        }
        sum
    }

    pub fn bump_relation(&self, oid: Oid) {
        self.bump(Dependency::Relation(oid));
    }

    pub fn bump_tag(&self, tag: &str) {
        self.bump(Dependency::Tag(tag));
    }

    pub fn bump_all(&self) {
        self.epoch_at.fetch_max(now_us(), SeqCst);
        self.epoch.fetch_add(1, SeqCst);
    }
}

/// Wall-clock microseconds since the Unix epoch (comparable between instances on synchronised hosts).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_changes_the_snapshot_of_what_depends_on_it() {
        let v = Versions::default();
        let tags: Vec<Box<str>> = vec!["user:42".into()];
        let before = v.snapshot(&[1, 2], &tags);
        v.bump_relation(3);
        let after_other = v.snapshot(&[1, 2], &tags);
        v.bump_relation(2);
        assert_ne!(v.snapshot(&[1, 2], &tags), after_other);
        let t = v.snapshot(&[1, 2], &tags);
        v.bump_tag("user:42");
        assert_ne!(v.snapshot(&[1, 2], &tags), t);
        let e = v.snapshot(&[], &[]);
        v.bump_all();
        assert_ne!(v.snapshot(&[], &[]), e);
        let _ = before;
    }
}
