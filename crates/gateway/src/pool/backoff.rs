//! While a pool's server does not answer (down, restarting, unreachable), one connection attempt
//! at a time per pool, at growing intervals, as PgBouncer retries once per server_login_retry:
//! every waiting client retrying on its own made a storm of connects and log lines (hundreds a
//! second under load). The others wait for that attempt, or for the server to come back.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The first pause after a failed attempt; it doubles up to the pool's server_login_retry.
const FIRST_PAUSE: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct ConnectBackoff {
    failing: Mutex<Option<Failing>>,
    /// Raised when an attempt succeeds (the pool's or the health monitor's).
    recovered: Notify,
}

struct Failing {
    /// No attempt before this moment, but the one that claimed it.
    next_try: Instant,
    /// Counts the attempts claimed while failing: only the failure of the latest makes the pause
    /// longer (openers that started together before the first failure count as one round).
    attempt: u64,
    pause: Duration,
    /// What the last attempt met, for clients that cannot wait for the next one.
    last_error: String,
}

/// Whether an opener may try to connect now.
pub enum Turn {
    Now(Ticket),
    /// Another attempt is due then (or the server comes back first); the last error met.
    After(Instant, String),
}

/// Which attempt an opener makes: none while the server was answering.
#[derive(Clone, Copy)]
pub struct Ticket(Option<u64>);

impl ConnectBackoff {
    /// Claims an attempt: always granted while the server answers; while it fails, granted to
    /// one opener per pause.
    pub fn turn(&self) -> Turn {
        let mut failing = self.failing.lock();
        let Some(f) = failing.as_mut() else { return Turn::Now(Ticket(None)) };
        let now = Instant::now();
        if now < f.next_try {
            return Turn::After(f.next_try, f.last_error.clone());
        }
        // Claimed: nobody else tries until this attempt has had its pause.
        f.next_try = now + f.pause;
        f.attempt += 1;
        Turn::Now(Ticket(Some(f.attempt)))
    }

    /// An attempt failed for the server not answering; the next waits a longer pause.
    pub fn failed(&self, ticket: Ticket, error: String, longest: Duration) {
        let mut failing = self.failing.lock();
        let now = Instant::now();
        match failing.as_mut() {
            None => {
                *failing = Some(Failing {
                    next_try: now + FIRST_PAUSE,
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
            self.recovered.notify_waiters();
        }
    }

    /// Waits until `until`, or less if the server comes back meanwhile.
    pub async fn wait(&self, until: Instant) {
        let recovered = self.recovered.notified();
        tokio::pin!(recovered);
        recovered.as_mut().enable();
        if self.failing.lock().is_none() {
            return;
        }
        tokio::select! {
            _ = recovered => {}
            _ = tokio::time::sleep_until(until.into()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_attempt_per_pause_while_failing() {
        let b = ConnectBackoff::default();
        let Turn::Now(first) = b.turn() else { panic!("not failing yet") };
        let Turn::Now(together) = b.turn() else { panic!("not failing yet") };
        b.failed(first, "refused".into(), Duration::from_secs(15));
        // Started before the first failure: the same round, the pause stays.
        b.failed(together, "refused".into(), Duration::from_secs(15));
        // The pause after the first failure: nobody tries.
        assert!(matches!(b.turn(), Turn::After(_, ref e) if e == "refused"));
        std::thread::sleep(FIRST_PAUSE);
        // One opener gets the next attempt; the rest wait for it.
        let Turn::Now(second) = b.turn() else { panic!("the pause was longer than the first") };
        assert!(matches!(b.turn(), Turn::After(..)));
        b.failed(second, "refused".into(), Duration::from_secs(15));
        let Turn::After(at, _) = b.turn() else { panic!("no pause after the second failure") };
        assert!(at > Instant::now() + FIRST_PAUSE, "the pause did not grow");
        b.succeeded();
        assert!(matches!(b.turn(), Turn::Now(_)));
        assert!(matches!(b.turn(), Turn::Now(_)));
    }

    #[tokio::test]
    async fn waiters_are_let_go_when_the_server_answers() {
        let b = std::sync::Arc::new(ConnectBackoff::default());
        b.failed(Ticket(None), "refused".into(), Duration::from_secs(15));
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.wait(Instant::now() + Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        b.succeeded();
        tokio::time::timeout(Duration::from_secs(2), waiter).await.expect("still waiting").unwrap();
    }
}
