//! Connection counts shared by several pools: max_db_connections, max_user_connections.

use std::sync::atomic::{AtomicUsize, Ordering::*};

/// A counter with an optional ceiling; zero means unlimited.
#[derive(Debug, Default)]
pub struct ConnectionLimit {
    max: AtomicUsize,
    used: AtomicUsize,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit { max: AtomicUsize::new(max), used: AtomicUsize::new(0) }
    }

    pub fn set_max(&self, max: usize) {
        self.max.store(max, Relaxed);
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
}
