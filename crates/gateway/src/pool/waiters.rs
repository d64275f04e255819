//! Clients waiting for a server connection, in arrival order. A waiter sleeps on its channel
//! alone; one sweeper per pool (running only while someone waits) tells waiters when to look
//! again — for query_wait_timeout, reserve_pool_timeout or a database-wide limit freed in another
//! pool — as PgBouncer's janitor does. A timer per wait cost every waiting checkout a
//! registration in tokio's timer wheel and its removal.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::server::ServerConn;

/// The longest a sweeper sleeps while clients wait: a waiter that arrived during its sleep with
/// an earlier time to look is at most this late.
pub(super) const SWEEP_MAX: Duration = Duration::from_millis(50);

/// What a client that asked for a server gets.
pub(super) enum Grant {
    Conn(Box<ServerConn>),
    /// Room was made: open a new connection yourself.
    Connect,
}

/// What wakes a waiting client.
pub(super) enum Wake {
    Granted(Grant),
    /// Time to check deadlines and limits; the waiter keeps its place if it waits on.
    LookAgain,
}

pub(super) struct Waiter {
    pub tx: oneshot::Sender<Wake>,
    /// When the client started waiting: its place in the queue.
    pub since: Instant,
    /// When the sweeper sends it [`Wake::LookAgain`].
    pub look_at: Instant,
}

#[derive(Default)]
pub(super) struct WaitQueue {
    entries: VecDeque<Waiter>,
    sweeping: bool,
}

impl WaitQueue {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When the longest waiter started waiting.
    pub fn oldest(&self) -> Option<Instant> {
        self.entries.front().map(|w| w.since)
    }

    pub fn pop_front(&mut self) -> Option<Waiter> {
        self.entries.pop_front()
    }

    pub fn push_front(&mut self, w: Waiter) {
        self.entries.push_front(w);
    }

    /// Queues a waiter by when it started waiting, so one that looked again keeps its place.
    /// True when no sweeper runs and the caller must start one.
    pub fn enqueue(&mut self, w: Waiter) -> bool {
        let at = self.entries.partition_point(|e| e.since <= w.since);
        self.entries.insert(at, w);
        !std::mem::replace(&mut self.sweeping, true)
    }

    /// Removes every waiter, to look again now (the pool's settings changed). Each keeps its
    /// place when it queues again.
    pub fn take_all(&mut self) -> Vec<oneshot::Sender<Wake>> {
        self.entries.drain(..).map(|w| w.tx).collect()
    }

    /// Removes the waiters due to look again, and says when to sweep next: `None` when nobody
    /// waits any more, and the sweeper stops.
    pub fn take_due(&mut self, now: Instant) -> (Vec<oneshot::Sender<Wake>>, Option<Instant>) {
        let mut due = Vec::new();
        if self.entries.iter().any(|w| w.look_at <= now) {
            let (ready, waiting): (VecDeque<Waiter>, VecDeque<Waiter>) =
                std::mem::take(&mut self.entries).into_iter().partition(|w| w.look_at <= now);
            self.entries = waiting;
            due.extend(ready.into_iter().map(|w| w.tx));
        }
        let next = self.entries.iter().map(|w| w.look_at).min();
        self.sweeping = next.is_some();
        (due, next.map(|n| n.min(now + SWEEP_MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(since: Instant, look_at: Instant) -> (Waiter, oneshot::Receiver<Wake>) {
        let (tx, rx) = oneshot::channel();
        (Waiter { tx, since, look_at }, rx)
    }

    #[test]
    fn a_waiter_that_looked_again_keeps_its_place() {
        let t0 = Instant::now();
        let mut q = WaitQueue::default();
        let (first, _a) = waiter(t0, t0 + Duration::from_secs(9));
        let (third, _c) = waiter(t0 + Duration::from_millis(2), t0 + Duration::from_secs(9));
        assert!(q.enqueue(first), "the first waiter starts the sweeper");
        assert!(!q.enqueue(third), "a second sweeper was asked for");
        let (second, _b) = waiter(t0 + Duration::from_millis(1), t0 + Duration::from_secs(9));
        q.enqueue(second);
        let order: Vec<_> = std::iter::from_fn(|| q.pop_front()).map(|w| w.since - t0).collect();
        assert_eq!(order, [0, 1, 2].map(Duration::from_millis));
    }

    #[test]
    fn the_sweeper_takes_only_due_waiters_and_stops_when_none_wait() {
        let t0 = Instant::now();
        let mut q = WaitQueue::default();
        let (early, mut early_rx) = waiter(t0, t0 + Duration::from_millis(10));
        let (late, mut late_rx) = waiter(t0, t0 + Duration::from_secs(1));
        q.enqueue(early);
        q.enqueue(late);
        let (due, next) = q.take_due(t0 + Duration::from_millis(20));
        assert_eq!(due.len(), 1);
        due.into_iter().for_each(|tx| assert!(tx.send(Wake::LookAgain).is_ok()));
        assert!(matches!(early_rx.try_recv(), Ok(Wake::LookAgain)));
        assert!(late_rx.try_recv().is_err(), "a waiter not yet due was woken");
        assert_eq!(next, Some(t0 + Duration::from_millis(20) + SWEEP_MAX), "sleeps at most SWEEP_MAX");
        let (due, next) = q.take_due(t0 + Duration::from_secs(2));
        assert_eq!((due.len(), next), (1, None));
        assert!(q.is_empty());
        let (again, _rx) = waiter(t0, t0);
        assert!(q.enqueue(again), "after stopping, the next waiter starts a new sweeper");
    }
}
