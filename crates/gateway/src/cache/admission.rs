//! Which misses are worth filling on the primary. With read/write splitting, a miss that a replica
//! cannot safely answer for the cache (it has not replayed the last change to what the result
//! reads) must read on the primary to be stored. Doing that for every miss would put all cacheable
//! reads on the primary when few of them repeat (random keys, frequent writes), so only a result
//! missed before is filled there; one seen once reads on a replica like any other read.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const SLOTS: usize = 8192;

pub struct MissLedger {
    /// Key hashes of recent misses, one per slot: a collision forgets the older one, which costs
    /// that key one more replica read, never a wrong answer.
    slots: Box<[AtomicU64]>,
}

impl Default for MissLedger {
    fn default() -> Self {
        MissLedger { slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl MissLedger {
    /// Notes a miss of `hash`; true when it was missed before.
    pub fn missed_before(&self, hash: u64) -> bool {
        let slot = &self.slots[hash as usize % SLOTS];
        // Zero marks an empty slot.
        let mark = hash | 1;
        slot.swap(mark, Relaxed) == mark
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_is_worth_filling_once_it_was_missed_before() {
        let ledger = MissLedger::default();
        assert!(!ledger.missed_before(42));
        assert!(ledger.missed_before(42));
        assert!(!ledger.missed_before(43));
        // Another key in the same slot takes it over.
        assert!(!ledger.missed_before(42 + SLOTS as u64 * 2));
        assert!(!ledger.missed_before(42));
    }
}
