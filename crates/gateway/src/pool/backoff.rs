//! While a pool's server does not answer (down, restarting, unreachable), one connection attempt
//! at a time per pool, at growing intervals, as PgBouncer retries once per server_login_retry:
//! every waiting client retrying on its own made a storm of connects and log lines (hundreds a
//! second under load). The others wait for that attempt, or for the server to come back. An
//! attempt that hangs (a stopped postmaster's listen queue) holds the turn until it ends: a new one
//! at every pause had up to pool-size attempts hanging at once.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The first pause after a failed attempt; it doubles up to the pool's server_login_retry.
const FIRST_PAUSE: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct ConnectBackoff {
    failing: Mutex<Option<Failing>>,
    /// Raised when an attempt succeeds (the pool's or the health monitor's) or ends.
    settled: Notify,
}

struct Failing {
    /// No attempt before this moment, but the one that claimed it.
    next_try: Instant,
    /// The attempt claimed last is under way until it ends, at the latest then (its
    /// server_connect_timeout): no other starts before.
    busy_until: Option<Instant>,
    /// Counts the attempts claimed while failing: only the failure of the latest makes the pause
    /// longer (openers that started together before the first failure count as one round).
    attempt: u64,
    pause: Duration,
    /// What the last attempt met, for clients that cannot wait for the next one.
    last_error: String,
}

/// Whether an opener may try to connect now.
pub enum Turn<'a> {
    Now(Attempt<'a>),
    /// Another attempt is due then (or the server comes back first); the last error met.
    After(Instant, String),
}

/// Which attempt an opener makes: none while the server was answering.
#[derive(Clone, Copy)]
pub struct Ticket(Option<u64>);

/// An attempt under way. However it ends (failed, succeeded, given up when its client left) the
/// next may start once it is dropped.
pub struct Attempt<'a> {
    backoff: &'a ConnectBackoff,
    ticket: Ticket,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.backoff.ended(self.ticket);
    }
}

impl Failing {
    /// When the next attempt may start.
    fn free_at(&self) -> Instant {
        self.busy_until.map_or(self.next_try, |busy| busy.max(self.next_try))
    }
}

impl ConnectBackoff {
    /// Claims an attempt that gives up after `timeout`: always granted while the server answers;
    /// while it fails, granted to one opener at a time, a pause after the last attempt.
    pub fn turn(&self, timeout: Duration) -> Turn<'_> {
        let mut failing = self.failing.lock();
        let Some(f) = failing.as_mut() else {
            return Turn::Now(Attempt { backoff: self, ticket: Ticket(None) });
        };
        let now = Instant::now();
        if now < f.free_at() {
            return Turn::After(f.free_at(), f.last_error.clone());
        }
        // Claimed: nobody else tries until this attempt has ended and had its pause.
        f.next_try = now + f.pause;
        f.busy_until = Some(now + timeout);
        f.attempt += 1;
        Turn::Now(Attempt { backoff: self, ticket: Ticket(Some(f.attempt)) })
    }

    /// The attempt is over: the next may start (after its pause), and openers waiting look again.
    fn ended(&self, ticket: Ticket) {
        let mut failing = self.failing.lock();
        let Some(f) = failing.as_mut().filter(|f| ticket.0 == Some(f.attempt)) else { return };
        if f.busy_until.take().is_some() {
            drop(failing);
            self.settled.notify_waiters();
        }
    }

    /// An attempt failed for the server not answering; the next waits a longer pause.
    pub fn failed(&self, attempt: &Attempt, error: String, longest: Duration) {
        let ticket = attempt.ticket;
        let mut failing = self.failing.lock();
        let now = Instant::now();
        match failing.as_mut() {
            None => {
                *failing = Some(Failing {
                    next_try: now + FIRST_PAUSE,
                    busy_until: None,
                    attempt: 0,
                    pause: FIRST_PAUSE * 2,
                    last_error: error,
                })
            }
            Some(f) if ticket.0 == Some(f.attempt) => {
                f.next_try = now + f.pause;
                f.pause = (f.pause * 2).min(longest.max(FIRST_PAUSE));
                f.last_error = error;
            }
            Some(f) => f.last_error = error,
        }
    }

    /// The server answered: everyone may connect again, and those waiting are told at once.
    pub fn succeeded(&self) {
        if self.failing.lock().take().is_some() {
            self.settled.notify_waiters();
        }
    }

    /// Waits until `until`, or less if the server comes back or the attempt under way ends
    /// meanwhile.
    pub async fn wait(&self, until: Instant) {
        let settled = self.settled.notified();
        tokio::pin!(settled);
        settled.as_mut().enable();
        // Settled between the turn refused and now: look again at once.
        if self.failing.lock().as_ref().is_none_or(|f| f.free_at() < until) {
            return;
        }
        tokio::select! {
            _ = settled => {}
            _ = tokio::time::sleep_until(until.into()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[test]
    fn one_attempt_per_pause_while_failing() {
        let b = ConnectBackoff::default();
        let Turn::Now(first) = b.turn(TIMEOUT) else { panic!("not failing yet") };
        let Turn::Now(together) = b.turn(TIMEOUT) else { panic!("not failing yet") };
        b.failed(&first, "refused".into(), Duration::from_secs(15));
        // Started before the first failure: the same round, the pause stays.
        b.failed(&together, "refused".into(), Duration::from_secs(15));
        // The pause after the first failure: nobody tries.
        assert!(matches!(b.turn(TIMEOUT), Turn::After(_, ref e) if e == "refused"));
        std::thread::sleep(FIRST_PAUSE);
        // One opener gets the next attempt; the rest wait for it.
        let Turn::Now(second) = b.turn(TIMEOUT) else { panic!("the pause was longer than the first") };
        assert!(matches!(b.turn(TIMEOUT), Turn::After(..)));
        b.failed(&second, "refused".into(), Duration::from_secs(15));
        drop(second);
        let Turn::After(at, _) = b.turn(TIMEOUT) else { panic!("no pause after the second failure") };
        assert!(at > Instant::now() + FIRST_PAUSE, "the pause did not grow");
        b.succeeded();
        assert!(matches!(b.turn(TIMEOUT), Turn::Now(_)));
        assert!(matches!(b.turn(TIMEOUT), Turn::Now(_)));
    }

    #[test]
    fn an_attempt_under_way_holds_the_turn_until_it_ends() {
        let b = ConnectBackoff::default();
        let Turn::Now(first) = b.turn(TIMEOUT) else { panic!("not failing yet") };
        b.failed(&first, "timed out".into(), Duration::from_secs(15));
        drop(first);
        std::thread::sleep(FIRST_PAUSE);
        let Turn::Now(hanging) = b.turn(TIMEOUT) else { panic!("no attempt after the pause") };
        // Past the pause, the attempt hangs on: nobody else tries before it can have timed out.
        std::thread::sleep(FIRST_PAUSE * 3);
        let Turn::After(at, _) = b.turn(TIMEOUT) else { panic!("a second attempt while one is under way") };
        assert!(at > Instant::now() + TIMEOUT - Duration::from_secs(1), "{at:?}");
        // Given up (its client left): the next may start at once, its pause being over.
        drop(hanging);
        assert!(matches!(b.turn(TIMEOUT), Turn::Now(_)));
    }

    #[tokio::test]
    async fn waiters_are_let_go_when_the_server_answers() {
        let b = std::sync::Arc::new(ConnectBackoff::default());
        let Turn::Now(first) = b.turn(TIMEOUT) else { panic!("not failing yet") };
        b.failed(&first, "refused".into(), Duration::from_secs(15));
        drop(first);
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.wait(Instant::now() + Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.succeeded();
        tokio::time::timeout(Duration::from_secs(2), waiter).await.expect("still waiting").unwrap();
    }
}
