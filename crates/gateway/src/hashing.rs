//! The hash maps of the hot path. Their keys are mostly hashes already (statement, text and
//! fingerprint hashes), which one multiply spreads over a table's buckets; SipHash, std's default,
//! cost more than a thousand instructions per prepared-statement transaction rehashing them.
//! Byte-string keys a client chooses (statement names) go through foldhash, seeded per process.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// For keys that are hashes already.
#[derive(Default)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Spreads the key's bits into both the bucket index (low bits) and the tag (top bits):
        // a shard of the statistics store took the top bits, the same for all of its keys.
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by a hash.
pub type ByHash<V> = HashMap<u64, V, BuildHasherDefault<PreHashed>>;

/// A map keyed by names or texts a client sends.
pub type ByName<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
