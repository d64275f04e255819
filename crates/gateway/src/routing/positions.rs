//! The primary's recent WAL positions, each stamped with when its probe was sent. A cache fill may
//! read on a replica only once that replica has replayed a position read after the last change to
//! what the result depends on; the oldest such position asks the least of the replica.

use std::collections::VecDeque;

use parking_lot::Mutex;

/// About six seconds at the default `lag_check_interval` of 0.1 s.
const KEPT: usize = 64;

/// A WAL position of the primary and the Unix ms its probe was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamped {
    pub lsn: u64,
    pub at_ms: u64,
}

#[derive(Debug, Default)]
pub struct PositionHistory {
    recent: Mutex<VecDeque<Stamped>>,
}

impl PositionHistory {
    /// A position read while the server was a primary.
    pub fn record(&self, position: Stamped) {
        let mut recent = self.recent.lock();
        if recent.back().is_some_and(|last| last.at_ms >= position.at_ms) {
            return;
        }
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(position);
    }

    /// Forgets everything: the server's positions no longer describe the primary (a failover).
    pub fn clear(&self) {
        self.recent.lock().clear();
    }

    /// The oldest position read strictly after `after_ms`: every commit the primary had
    /// acknowledged by then lies at or before it.
    pub fn first_after(&self, after_ms: u64) -> Option<Stamped> {
        self.recent.lock().iter().find(|p| p.at_ms > after_ms).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_position_read_after_a_moment_is_the_one_asked_for() {
        let h = PositionHistory::default();
        assert_eq!(h.first_after(0), None);
        for (lsn, at_ms) in [(10, 100), (20, 200), (30, 300)] {
            h.record(Stamped { lsn, at_ms });
        }
        assert_eq!(h.first_after(150), Some(Stamped { lsn: 20, at_ms: 200 }));
        assert_eq!(
            h.first_after(200),
            Some(Stamped { lsn: 30, at_ms: 300 }),
            "a probe sent at the moment may precede it"
        );
        assert_eq!(h.first_after(300), None);
        h.record(Stamped { lsn: 25, at_ms: 250 });
        assert_eq!(
            h.first_after(250),
            Some(Stamped { lsn: 30, at_ms: 300 }),
            "an out-of-order probe is not kept"
        );
        for i in 0..(KEPT as u64 + 5) {
            h.record(Stamped { lsn: 100 + i, at_ms: 1000 + i });
        }
        assert_eq!(
            h.first_after(0),
            Some(Stamped { lsn: 105, at_ms: 1005 }),
            "only the last positions are kept"
        );
        h.clear();
        assert_eq!(h.first_after(0), None);
    }
}
