//! How long pgpilot takes to answer a hit, from the moment the whole request is in its buffer to
//! the moment the answer is handed to the socket (the strict check and a Redis read included).
//! Under a saturating closed-loop load the client sees more than this — its own queueing for a CPU
//! — so this is the figure that tells pgpilot's share.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds; one more bucket above the last.
pub const BOUNDS_US: [u64; 12] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 100_000];

#[derive(Debug, Default)]
pub struct HitTimes {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl HitTimes {
    pub fn record(&self, took: Duration) {
        let us = took.as_micros() as u64;
        let i = BOUNDS_US.iter().position(|b| us <= *b).unwrap_or(BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Per-bucket counts (not cumulative), the last above every bound.
    pub fn counts(&self) -> [u64; BOUNDS_US.len() + 1] {
        std::array::from_fn(|i| self.buckets[i].load(Relaxed))
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Relaxed)
    }

    /// The upper bound of the bucket holding quantile `q` (ms); None before any hit, and the
    /// largest bound when it lies above it.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let counts = self.counts();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let bound = BOUNDS_US.get(i).copied().unwrap_or(BOUNDS_US[BOUNDS_US.len() - 1]);
                return Some(bound as f64 / 1e3);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets() {
        let h = HitTimes::default();
        assert_eq!(h.quantile_ms(0.99), None);
        for _ in 0..98 {
            h.record(Duration::from_micros(20));
        }
        h.record(Duration::from_micros(400));
        h.record(Duration::from_millis(3));
        assert_eq!(h.quantile_ms(0.5), Some(0.025));
        assert_eq!(h.quantile_ms(0.99), Some(0.5));
        assert_eq!(h.quantile_ms(1.0), Some(5.0));
        assert_eq!(h.sum_us(), 98 * 20 + 400 + 3000);
    }
}
