//! The other pgpilot instances sharing the Redis link, known by their heartbeats. One that falls
//! silent may still be taking writes while cut off from Redis: its invalidations would go unheard,
//! so nothing is served from the cache until it is heard again, or until it has been silent long
//! enough to be taken for gone (stopped without saying so, crashed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A peer not heard for this long is taken as cut off (it publishes a heartbeat every second).
pub const SILENT_AFTER: Duration = Duration::from_secs(3);
/// A peer not heard for this long is taken as gone: serving resumes. A peer cut off longer than
/// this may have written unheard meanwhile; its queued invalidations arrive when it is back.
pub const GONE_AFTER: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Peers {
    heard: Mutex<HashMap<u64, Instant>>,
    silent: AtomicBool,
}

impl Peers {
    pub fn heard(&self, instance: u64, at: Instant) {
        self.heard.lock().insert(instance, at);
    }

    /// A peer that said it is stopping: nothing of it is waited for.
    pub fn left(&self, instance: u64) {
        self.heard.lock().remove(&instance);
    }

    /// Takes stock at `now`; true when a peer has just fallen silent (results read before may miss
    /// its writes, and must be dropped).
    pub fn check(&self, now: Instant) -> bool {
        let mut heard = self.heard.lock();
        heard.retain(|_, at| now.saturating_duration_since(*at) < GONE_AFTER);
        let silent = heard.values().any(|at| silent_at(*at, now));
        let was = self.silent.swap(silent, SeqCst);
        silent && !was
    }

    /// No peer is silent: the cache may serve.
    pub fn all_heard(&self) -> bool {
        !self.silent.load(SeqCst)
    }

    /// How many peers are known, and how many of them are silent, at `now`.
    pub fn count(&self, now: Instant) -> (usize, usize) {
        let heard = self.heard.lock();
        let silent = heard.values().filter(|at| silent_at(**at, now)).count();
        (heard.len(), silent)
    }
}

/// A peer last heard `at` is silent at `now`.
fn silent_at(at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(at) >= SILENT_AFTER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_peer_stops_serving_until_heard_again_or_gone() {
        let peers = Peers::default();
        let t0 = Instant::now();
        peers.heard(7, t0);
        assert!(!peers.check(t0 + Duration::from_secs(1)) && peers.all_heard());
        assert!(peers.check(t0 + SILENT_AFTER), "falling silent is reported once");
        assert!(!peers.check(t0 + SILENT_AFTER + Duration::from_secs(1)));
        assert!(!peers.all_heard());
        peers.heard(7, t0 + Duration::from_secs(5));
        assert!(!peers.check(t0 + Duration::from_secs(6)) && peers.all_heard(), "heard again");
        assert!(peers.check(t0 + Duration::from_secs(9)));
        assert!(!peers.check(t0 + Duration::from_secs(5) + GONE_AFTER) && peers.all_heard(), "gone");
        assert_eq!(peers.count(t0 + Duration::from_secs(5) + GONE_AFTER), (0, 0));
        peers.heard(8, t0);
        peers.left(8);
        assert!(!peers.check(t0 + SILENT_AFTER) && peers.all_heard(), "a peer that left is not waited for");
    }
}
