//! Recent rates (errors per statement, slow statements per second) from samples of the running
//! totals: the probe samples every few seconds and every health request adds one, so a rate
//! compares now with the newest sample at least one window old.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use super::store::Counters;

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    calls: u64,
    errors: u64,
    slow: u64,
}

impl Sample {
    fn of(c: &Counters) -> Sample {
        Sample { calls: c.calls, errors: c.errors, slow: c.slow }
    }
}

const MAX_SAMPLES: usize = 4096;

pub struct RateHistory {
    samples: Mutex<VecDeque<(Instant, Sample)>>,
    /// Totals start from zero here (startup or the last reset).
    origin: Mutex<Instant>,
}

impl Default for RateHistory {
    fn default() -> Self {
        RateHistory { samples: Mutex::new(VecDeque::new()), origin: Mutex::new(Instant::now()) }
    }
}

/// Statements, errors and slow statements over the last `window_seconds`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rates {
    pub window_seconds: f64,
    pub statements: u64,
    pub errors: u64,
    pub slow_queries: u64,
    pub error_rate: f64,
    pub statements_per_second: f64,
    pub slow_queries_per_second: f64,
}

impl RateHistory {
    /// Adds a sample of the current totals and returns the rates over `window` (or since the
    /// origin when the history is younger than that).
    pub fn sample(&self, totals: &Counters, window: Duration) -> Rates {
        let now = Instant::now();
        let current = Sample::of(totals);
        let mut samples = self.samples.lock();
        let keep_after = now.checked_sub(window * 2);
        while samples.front().is_some_and(|(t, _)| keep_after.is_some_and(|k| *t < k)) {
            samples.pop_front();
        }
        let baseline = samples
            .iter()
            .rev()
            .find(|(t, _)| now.duration_since(*t) >= window)
            .copied()
            .unwrap_or_else(|| (*self.origin.lock(), Sample::default()));
        if samples.len() >= MAX_SAMPLES {
            samples.pop_front();
        }
        samples.push_back((now, current));
        drop(samples);
        let secs = now.duration_since(baseline.0).as_secs_f64().max(1e-3);
        let statements = current.calls.saturating_sub(baseline.1.calls);
        let errors = current.errors.saturating_sub(baseline.1.errors);
        let slow = current.slow.saturating_sub(baseline.1.slow);
        Rates {
            window_seconds: secs,
            statements,
            errors,
            slow_queries: slow,
            error_rate: if statements > 0 { errors as f64 / statements as f64 } else { 0.0 },
            statements_per_second: statements as f64 / secs,
            slow_queries_per_second: slow as f64 / secs,
        }
    }

    pub fn clear(&self) {
        self.samples.lock().clear();
        *self.origin.lock() = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_compare_with_the_sample_a_window_old() {
        let h = RateHistory::default();
        let c = |calls, errors, slow| Counters { calls, errors, slow, ..Default::default() };
        let first = h.sample(&c(100, 1, 0), Duration::from_millis(20));
        assert_eq!((first.statements, first.errors), (100, 1), "the first sample counts from the origin");
        std::thread::sleep(Duration::from_millis(30));
        let second = h.sample(&c(300, 21, 4), Duration::from_millis(20));
        assert_eq!((second.statements, second.errors, second.slow_queries), (200, 20, 4));
        assert!((second.error_rate - 0.1).abs() < 1e-9);
    }
}
