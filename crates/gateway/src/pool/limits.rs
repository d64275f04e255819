//! Connection counts shared by several pools: max_db_connections, max_user_connections.

use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::pool::Pool;

/// A counter with an optional ceiling; zero means unlimited.
#[derive(Debug, Default)]
pub struct ConnectionLimit {
    max: AtomicUsize,
    used: AtomicUsize,
    /// Clients waiting in the pools under it: when they are all the asking pool's, no other pool
    /// is looked at (a server released under a reached limit would otherwise lock every pool).
    waiting: AtomicUsize,
    /// The pools counting against it: when it is reached, one pool's idle server makes room for
    /// another pool's waiting client (PgBouncer evicts the same way).
    pools: Mutex<Vec<Weak<Pool>>>,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit {
            max: AtomicUsize::new(max),
            used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            pools: Mutex::default(),
        }
    }

    pub(super) fn join(&self, pool: &Arc<Pool>) {
        let mut pools = self.pools.lock();
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }

    /// The pools under this limit but `asking`, taken out of the list's lock (their own are
    /// taken next).
    fn others_than(&self, asking: &Pool) -> Vec<Arc<Pool>> {
        let pools = self.pools.lock();
        pools.iter().filter_map(Weak::upgrade).filter(|p| !std::ptr::eq(Arc::as_ptr(p), asking)).collect()
    }

    fn is_reached(&self) -> bool {
        let max = self.max.load(Relaxed);
        max > 0 && self.used.load(Relaxed) >= max
    }

    /// Closes the least recently used idle server of a pool other than `asking` that may give one
    /// up (see `may_give_up_idle`); whether there was one. Its place is given back as it closes.
    fn close_idle_elsewhere(&self, asking: &Pool) -> bool {
        let ours = asking.server_count();
        let now = Instant::now();
        let mut others: Vec<_> = self
            .others_than(asking)
            .into_iter()
            .filter_map(|p| {
                let share = p.idle_share();
                may_give_up_idle(&share, ours, now).then_some((share.idle_since?, p))
            })
            .collect();
        others.sort_by_key(|(last_used, _)| *last_used);
        others.into_iter().any(|(_, pool)| {
            pool.close_least_recently_used_idle(&asking.id, &|share| may_give_up_idle(share, ours, now))
        })
    }

    /// Among the other pools under this limit whose clients wait for room it keeps from them, the
    /// one with the fewest servers, if a server moved to it from the asking pool (holding
    /// `servers`) makes the shares more even.
    fn pool_with_fewer_servers(&self, asking: &Pool, servers: usize) -> Option<(usize, Instant, Arc<Pool>)> {
        if self.waiting.load(Relaxed) <= asking.waiting_clients() {
            return None;
        }
        self.others_than(asking)
            .into_iter()
            .filter_map(|p| {
                let (since, theirs) = p.oldest_waiting_for_a_limit()?;
                Some((theirs, since, p))
            })
            .filter(|(theirs, _, _)| moving_one_evens_out(servers, *theirs))
            .min_by_key(|(theirs, since, _)| (*theirs, *since))
    }

    /// A lower max (a reload) holds at once for idle servers: as many as are beyond it are
    /// closed, the least recently used of each pool first; busy ones close as they are released
    /// ([`PoolLimits::exceeded`]).
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Relaxed);
        let mut excess = self.excess();
        let pools: Vec<_> = self.pools.lock().iter().filter_map(Weak::upgrade).collect();
        for pool in pools {
            while excess > 0 && pool.close_idle_beyond_limit() {
                excess -= 1;
            }
        }
    }

    /// Connections beyond the max, which a reload lowered.
    fn excess(&self) -> usize {
        match self.max.load(Relaxed) {
            0 => 0,
            max => self.used.load(Relaxed).saturating_sub(max),
        }
    }

    pub fn is_limited(&self) -> bool {
        self.max.load(Relaxed) > 0
    }

    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    pub fn try_acquire(&self) -> bool {
        let max = self.max.load(Relaxed);
        self.used.fetch_update(AcqRel, Acquire, |u| (max == 0 || u < max).then_some(u + 1)).is_ok()
    }

    pub fn release(&self) {
        let _ = self.used.fetch_update(AcqRel, Acquire, |u| Some(u.saturating_sub(1)));
    }
}

/// Whether a server moved from a pool holding `from` to one holding `to` makes their shares of a
/// limit more even: `to` has two fewer, or none at all (with a limit of 1 the only server takes
/// turns; otherwise a pool with no server would wait for server_idle_timeout).
fn moving_one_evens_out(from: usize, to: usize) -> bool {
    to + 1 < from || (to == 0 && from > 0)
}

/// How long a pool's server must have sat idle before a pool holding as many servers (or one
/// fewer) may have it closed for its waiting client: a busy pool's servers are idle only between
/// its transactions, far less than this, and keep their shares (moving one back and forth
/// reconnected a backend per transaction, helper-157); a pool that is done gives them up.
pub(super) const IDLE_GRACE: Duration = Duration::from_millis(100);

/// A pool's standing under a shared limit, read under its lock: whether it may spare an idle
/// server for another pool's waiting client.
#[derive(Debug, Clone, Copy)]
pub(super) struct IdleShare {
    /// Open or opening servers.
    pub servers: usize,
    pub idle: usize,
    /// When its least recently used idle server went idle.
    pub idle_since: Option<Instant>,
    /// Its own clients waiting for a server.
    pub waiting: usize,
}

/// Whether a pool in `theirs` standing gives up an idle server for a waiting client of a pool
/// holding `ours` servers: none of its own clients wait, and moving one evens the shares out, or
/// it holds more than one idle server, or the server has been idle for [`IDLE_GRACE`] (helper-166:
/// a pool done with its work kept its idle servers while another pool's clients ran one after
/// another on a single server, or waited out query_wait_timeout).
pub(super) fn may_give_up_idle(theirs: &IdleShare, ours: usize, now: Instant) -> bool {
    let Some(since) = theirs.idle_since else { return false };
    theirs.waiting == 0
        && (moving_one_evens_out(theirs.servers, ours)
            || theirs.idle > 1
            || now.saturating_duration_since(since) >= IDLE_GRACE)
}

/// The limits one pool's connections count against: its database's and its user's.
#[derive(Debug, Clone, Default)]
pub struct PoolLimits {
    pub database: std::sync::Arc<ConnectionLimit>,
    pub user: std::sync::Arc<ConnectionLimit>,
}

impl PoolLimits {
    pub fn is_limited(&self) -> bool {
        self.database.is_limited() || self.user.is_limited()
    }

    pub fn try_acquire(&self) -> bool {
        if !self.database.try_acquire() {
            return false;
        }
        if !self.user.try_acquire() {
            self.database.release();
            return false;
        }
        true
    }

    pub fn release(&self) {
        self.database.release();
        self.user.release();
    }

    /// More connections are open than a limit a reload lowered allows: a released one closes.
    pub fn exceeded(&self) -> bool {
        self.database.excess() > 0 || self.user.excess() > 0
    }

    /// A client of one of the pools under these limits starts (`true`) or stops waiting.
    pub(super) fn count_waiting(&self, starts: bool) {
        for limit in [&self.database, &self.user] {
            if starts {
                limit.waiting.fetch_add(1, Relaxed);
            } else {
                limit.waiting.fetch_sub(1, Relaxed);
            }
        }
    }

    pub(super) fn join(&self, pool: &Arc<Pool>) {
        self.database.join(pool);
        self.user.join(pool);
    }

    /// Under a limit that is reached (or `freed`: was, until a connection closed just now),
    /// another pool waiting for it with at least two servers fewer than `servers`, the asking
    /// pool's: the server `asking` releases or closes goes to that pool instead of to its own
    /// clients, which would otherwise keep every server while the other pool's starve.
    pub(super) fn pool_with_fewer_servers(
        &self,
        asking: &Pool,
        servers: usize,
        freed: bool,
    ) -> Option<Arc<Pool>> {
        [&self.database, &self.user]
            .into_iter()
            .filter(|l| l.is_limited() && (l.is_reached() || freed))
            .filter_map(|l| l.pool_with_fewer_servers(asking, servers))
            .min_by_key(|(theirs, since, _)| (*theirs, *since))
            .map(|(_, _, pool)| pool)
    }

    /// When a limit keeps `asking` from opening a server, closes an idle one of another pool
    /// under that limit; whether one was closed.
    pub(super) fn make_room_for(&self, asking: &Pool) -> bool {
        [&self.database, &self.user].into_iter().any(|l| l.is_reached() && l.close_idle_elsewhere(asking))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_is_respected_and_zero_is_unlimited() {
        let l = ConnectionLimit::new(2);
        assert!(l.try_acquire() && l.try_acquire());
        assert!(!l.try_acquire());
        l.release();
        assert!(l.try_acquire());
        let u = ConnectionLimit::new(0);
        assert!((0..100).all(|_| u.try_acquire()));
    }

    #[test]
    fn an_idle_server_is_given_up_by_a_pool_done_with_it_not_by_a_busy_one() {
        let now = Instant::now();
        let share = |servers, idle, idle_for: Option<u64>, waiting| IdleShare {
            servers,
            idle,
            idle_since: idle_for.map(|ms| now - Duration::from_millis(ms)),
            waiting,
        };
        // Nothing idle: nothing to give.
        assert!(!may_give_up_idle(&share(3, 0, None, 0), 0, now));
        // Two servers fewer: moving one evens out, as before.
        assert!(may_give_up_idle(&share(3, 1, Some(0), 0), 1, now));
        // As many or one fewer: only once idle for the grace period, or with two idle.
        assert!(!may_give_up_idle(&share(2, 1, Some(5), 0), 1, now));
        assert!(may_give_up_idle(&share(2, 1, Some(150), 0), 1, now));
        assert!(may_give_up_idle(&share(2, 2, Some(0), 0), 1, now));
        // Its own clients wait: it keeps its servers, however long idle.
        assert!(!may_give_up_idle(&share(2, 2, Some(500), 1), 1, now));
        assert!(!may_give_up_idle(&share(3, 1, Some(500), 2), 0, now));
    }
}
