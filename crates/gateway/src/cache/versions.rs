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
    /// Bumped to drop every result of the database.
    epoch: AtomicU64,
    hasher: foldhash::fast::FixedState,
}

impl Default for Versions {
    fn default() -> Self {
        Versions {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            hasher: foldhash::fast::FixedState::with_seed(0x5eed_cafe),
        }
    }
}

impl Versions {
    fn stripe(&self, dep: Dependency<'_>) -> &AtomicU64 {
        let mut h = self.hasher.build_hasher();
        dep.hash(&mut h);
        let i = std::hash::Hasher::finish(&h) as usize % STRIPES;
        &self.stripes[i]
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
        self.stripe(Dependency::Relation(oid)).fetch_add(1, SeqCst);
    }

    pub fn bump_tag(&self, tag: &str) {
        self.stripe(Dependency::Tag(tag)).fetch_add(1, SeqCst);
    }

    pub fn bump_all(&self) {
        self.epoch.fetch_add(1, SeqCst);
    }
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
