//! Counters on the hot path without contention: each thread adds to its own cache-line-aligned
//! shard with relaxed atomics; readers add the shards up when someone asks.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

const SHARDS: usize = 16;

/// Upper bounds (microseconds) of the client wait-time histogram buckets; the last bucket is +Inf.
pub const WAIT_BUCKETS_US: [u64; 12] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000, 10_000_000];

#[derive(Default)]
#[repr(align(128))]
struct Shard {
    xacts: AtomicU64,
    queries: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
    xact_time_us: AtomicU64,
    query_time_us: AtomicU64,
    wait_time_us: AtomicU64,
    assignments: AtomicU64,
    errors: AtomicU64,
    client_parses: AtomicU64,
    server_parses: AtomicU64,
    binds: AtomicU64,
    wait_buckets: [AtomicU64; WAIT_BUCKETS_US.len() + 1],
}

/// Extended-protocol messages an attachment (or a request answered without a server) handled:
/// the client's Parse and Bind messages, and the Parse messages pgpilot sent to servers, its
/// own prepares of a client's statement on another server included. An attachment keeps its
/// own and adds them to its pool's shard when it records the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PreparedCounts {
    pub client_parses: u64,
    pub server_parses: u64,
    pub binds: u64,
}

impl PreparedCounts {
    /// Counts one message from a client (`tag`): a Parse or a Bind.
    pub fn client_message(&mut self, tag: u8) {
        match tag {
            b'P' => self.client_parses += 1,
            b'B' => self.binds += 1,
            _ => {}
        }
    }

    /// Takes back the count of a client message to be handled again (a request moved to another
    /// server after its own was lost).
    pub fn uncount_client_message(&mut self, tag: u8) {
        match tag {
            b'P' => self.client_parses = self.client_parses.saturating_sub(1),
            b'B' => self.binds = self.binds.saturating_sub(1),
            _ => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == PreparedCounts::default()
    }
}

/// Totals of one pool (or a sum of pools).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Totals {
    pub xacts: u64,
    pub queries: u64,
    pub received: u64,
    pub sent: u64,
    pub xact_time_us: u64,
    pub query_time_us: u64,
    pub wait_time_us: u64,
    pub assignments: u64,
    pub errors: u64,
    pub client_parses: u64,
    pub server_parses: u64,
    pub binds: u64,
    pub wait_buckets: [u64; WAIT_BUCKETS_US.len() + 1],
}

impl Totals {
    /// The eight figures SHOW STATS_TOTALS lists, in the shape of a window's averages.
    pub fn counters(&self) -> Averages {
        Averages {
            assignments: self.assignments,
            xacts: self.xacts,
            queries: self.queries,
            received: self.received,
            sent: self.sent,
            xact_time_us: self.xact_time_us,
            query_time_us: self.query_time_us,
            wait_time_us: self.wait_time_us,
            client_parses: self.client_parses,
            server_parses: self.server_parses,
            binds: self.binds,
        }
    }

    pub fn add(&mut self, o: &Totals) {
        self.xacts += o.xacts;
        self.queries += o.queries;
        self.received += o.received;
        self.sent += o.sent;
        self.xact_time_us += o.xact_time_us;
        self.query_time_us += o.query_time_us;
        self.wait_time_us += o.wait_time_us;
        self.assignments += o.assignments;
        self.errors += o.errors;
        self.client_parses += o.client_parses;
        self.server_parses += o.server_parses;
        self.binds += o.binds;
        for (a, b) in self.wait_buckets.iter_mut().zip(o.wait_buckets.iter()) {
            *a += b;
        }
    }
}

pub struct Counters {
    shards: Box<[Shard]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters { shards: (0..SHARDS).map(|_| Shard::default()).collect() }
    }
}

fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static INDEX: usize = NEXT.fetch_add(1, Relaxed) % SHARDS);
    INDEX.with(|i| *i)
}

impl Counters {
    fn shard(&self) -> &Shard {
        &self.shards[shard_index()]
    }

    pub fn transaction(&self, time_us: u64) {
        let s = self.shard();
        s.xacts.fetch_add(1, Relaxed);
        s.xact_time_us.fetch_add(time_us, Relaxed);
    }

    pub fn queries(&self, count: u64, time_us: u64) {
        let s = self.shard();
        s.queries.fetch_add(count, Relaxed);
        s.query_time_us.fetch_add(time_us, Relaxed);
    }

    pub fn bytes(&self, received: u64, sent: u64) {
        let s = self.shard();
        s.received.fetch_add(received, Relaxed);
        s.sent.fetch_add(sent, Relaxed);
    }

    /// A client got a server after waiting `wait_us` (0 when one was free).
    pub fn assignment(&self, wait_us: u64) {
        let s = self.shard();
        s.assignments.fetch_add(1, Relaxed);
        s.wait_time_us.fetch_add(wait_us, Relaxed);
        let bucket = WAIT_BUCKETS_US.iter().position(|&b| wait_us <= b).unwrap_or(WAIT_BUCKETS_US.len());
        s.wait_buckets[bucket].fetch_add(1, Relaxed);
    }

    pub fn error(&self) {
        self.shard().errors.fetch_add(1, Relaxed);
    }

    pub fn prepared(&self, counts: PreparedCounts) {
        let s = self.shard();
        for (counter, n) in [
            (&s.client_parses, counts.client_parses),
            (&s.server_parses, counts.server_parses),
            (&s.binds, counts.binds),
        ] {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in self.shards.iter() {
            t.xacts += s.xacts.load(Relaxed);
            t.queries += s.queries.load(Relaxed);
            t.received += s.received.load(Relaxed);
            t.sent += s.sent.load(Relaxed);
            t.xact_time_us += s.xact_time_us.load(Relaxed);
            t.query_time_us += s.query_time_us.load(Relaxed);
            t.wait_time_us += s.wait_time_us.load(Relaxed);
            t.assignments += s.assignments.load(Relaxed);
            t.errors += s.errors.load(Relaxed);
            t.client_parses += s.client_parses.load(Relaxed);
            t.server_parses += s.server_parses.load(Relaxed);
            t.binds += s.binds.load(Relaxed);
            for (a, b) in t.wait_buckets.iter_mut().zip(s.wait_buckets.iter()) {
                *a += b.load(Relaxed);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_add_up_across_threads() {
        let c = std::sync::Arc::new(Counters::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.transaction(2);
                        c.assignment(60);
                        c.prepared(PreparedCounts { client_parses: 1, server_parses: 0, binds: 2 });
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        let t = c.totals();
        assert_eq!((t.xacts, t.xact_time_us, t.assignments), (4000, 8000, 4000));
        assert_eq!(t.wait_buckets[1], 4000, "60us falls in the <=100us bucket");
        assert_eq!((t.client_parses, t.server_parses, t.binds), (4000, 0, 8000));
    }
}

/// Per-second rates and per-event averages over the last stats window, as PgBouncer's avg_* columns.
#[derive(Debug, Clone, Copy, Default)]
pub struct Averages {
    pub assignments: u64,
    pub xacts: u64,
    pub queries: u64,
    pub received: u64,
    pub sent: u64,
    pub xact_time_us: u64,
    pub query_time_us: u64,
    pub wait_time_us: u64,
    pub client_parses: u64,
    pub server_parses: u64,
    pub binds: u64,
}

/// The totals at the start of the current window; a ticker rolls it forward.
pub struct StatsWindow {
    previous: std::collections::HashMap<String, Totals>,
    at: std::time::Instant,
    /// The averages of the last complete window, as PgBouncer shows them (steady for a window,
    /// not drifting while one fills).
    last: Option<std::collections::HashMap<String, Averages>>,
}

impl Default for StatsWindow {
    fn default() -> Self {
        StatsWindow { previous: Default::default(), at: std::time::Instant::now(), last: None }
    }
}

impl StatsWindow {
    pub fn roll(&mut self, current: Vec<(String, Totals)>) {
        let ended = self.window_averages(&current);
        self.last = Some(ended.into_iter().map(|(name, _, a)| (name, a)).collect());
        self.previous = current.into_iter().collect();
        self.at = std::time::Instant::now();
    }

    /// Each database's totals with the averages of the last complete window (of the window so far
    /// until one has ended).
    pub fn averages(&self, current: &[(String, Totals)]) -> Vec<(String, Totals, Averages)> {
        let Some(last) = &self.last else { return self.window_averages(current) };
        current
            .iter()
            .map(|(name, now)| (name.clone(), *now, last.get(name).copied().unwrap_or_default()))
            .collect()
    }

    fn window_averages(&self, current: &[(String, Totals)]) -> Vec<(String, Totals, Averages)> {
        let secs = self.at.elapsed().as_secs_f64().max(1.0);
        current
            .iter()
            .map(|(name, now)| {
                let before = self.previous.get(name).copied().unwrap_or_default();
                let d = |a: u64, b: u64| a.saturating_sub(b);
                let per_sec = |a: u64, b: u64| (d(a, b) as f64 / secs) as u64;
                let per = |t: u64, tb: u64, n: u64, nb: u64| d(t, tb).checked_div(d(n, nb)).unwrap_or(0);
                let a = Averages {
                    assignments: per_sec(now.assignments, before.assignments),
                    xacts: per_sec(now.xacts, before.xacts),
                    queries: per_sec(now.queries, before.queries),
                    received: per_sec(now.received, before.received),
                    sent: per_sec(now.sent, before.sent),
                    xact_time_us: per(now.xact_time_us, before.xact_time_us, now.xacts, before.xacts),
                    query_time_us: per(now.query_time_us, before.query_time_us, now.queries, before.queries),
                    wait_time_us: per(
                        now.wait_time_us,
                        before.wait_time_us,
                        now.assignments,
                        before.assignments,
                    ),
                    client_parses: per_sec(now.client_parses, before.client_parses),
                    server_parses: per_sec(now.server_parses, before.server_parses),
                    binds: per_sec(now.binds, before.binds),
                };
                (name.clone(), *now, a)
            })
            .collect()
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn averages_are_the_last_complete_windows() {
        let totals = |xacts: u64| vec![("db".to_string(), Totals { xacts, ..Totals::default() })];
        let mut window = StatsWindow::default();
        // Before a window has ended: the window so far.
        assert_eq!(window.averages(&totals(7))[0].2.xacts, 7);
        window.roll(totals(0));
        window.roll(totals(100));
        // A window ended with 100 transactions in it (under a second, counted as one).
        let shown = window.averages(&totals(5000));
        assert_eq!((shown[0].1.xacts, shown[0].2.xacts), (5000, 100), "the filling window moved the average");
    }
}
