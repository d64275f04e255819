//! A latency histogram with fixed log-linear buckets over microseconds: exact below 8 µs, then
//! 8 buckets per power of two (each at most 12.5% wide) up to 2^32 µs (71 minutes). Recording is
//! a leading-zeros count and an add; memory is fixed (240 counters), so a statement entry never grows.

const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// The largest magnitude tracked; longer durations land in the last bucket.
const MAX_MSB: u32 = 31;
pub const BUCKETS: usize = (SUB + (MAX_MSB as u64 - SUB_BITS as u64 + 1) * SUB) as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: [u64; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: [0; BUCKETS] }
    }
}

fn index(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let msb = 63 - us.leading_zeros();
    if msb > MAX_MSB {
        return BUCKETS - 1;
    }
    let shift = msb - SUB_BITS;
    (SUB + (shift as u64) * SUB + ((us >> shift) & (SUB - 1))) as usize
}

/// The [low, high) range of microseconds a bucket holds.
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, i + 1);
    }
    let shift = (i - SUB) / SUB;
    let sub = (i - SUB) % SUB;
    let low = (SUB + sub) << shift;
    (low, low + (1 << shift))
}

impl Histogram {
    pub fn record(&mut self, us: u64) {
        self.counts[index(us)] += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..=1) in microseconds: the middle of the bucket holding it, kept within
    /// `max_us` (the exact largest value seen) so a p99 never exceeds the max; the top rank is the max.
    pub fn quantile(&self, q: f64, max_us: u64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        if rank >= total {
            return max_us as f64;
        }
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, high) = bounds(i);
                let mid = if high - low == 1 { low as f64 } else { (low + high) as f64 / 2.0 };
                return mid.min(max_us as f64);
            }
        }
        max_us as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_narrow() {
        let mut expected_low = 0;
        for i in 0..BUCKETS {
            let (low, high) = bounds(i);
            assert_eq!(low, expected_low, "bucket {i}");
            assert_eq!(index(low), i);
            assert_eq!(index(high - 1), i);
            assert!((high - low) as f64 <= (low as f64 / SUB as f64).max(1.0), "bucket {i} too wide");
            expected_low = high;
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        assert_eq!(BUCKETS, 240);
    }

    #[test]
    fn quantiles_are_within_a_bucket() {
        let mut h = Histogram::default();
        for us in 1..=10_000u64 {
            h.record(us);
        }
        for (q, exact) in [(0.5, 5_000.0), (0.95, 9_500.0), (0.99, 9_900.0)] {
            let got = h.quantile(q, 10_000);
            assert!((got - exact).abs() / exact < 0.07, "q{q}: {got} vs {exact}");
        }
        assert_eq!(h.quantile(1.0, 10_000), 10_000.0);
        let mut one = Histogram::default();
        one.record(250_000);
        assert!((one.quantile(0.5, 250_000) - 250_000.0).abs() / 250_000.0 < 0.07);
        assert_eq!(Histogram::default().quantile(0.5, 0), 0.0);
    }
}
