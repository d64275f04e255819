//! A wake-up for the one task that waits on it: a client's session, woken by admin commands
//! (KILL, SHUTDOWN, RECONNECT). The session waits on it at every request, so waiting must be
//! cheap: a registration is a few atomic operations, where a `tokio::sync::Notify` locks its
//! waiter list to add the waiter and again to remove it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use futures::task::AtomicWaker;

#[derive(Default)]
pub struct Signal {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    /// Wakes the waiter, or the next wait if nobody waits now.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once the signal is raised; consumes it. Only one task may wait at a time.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.take() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Raised between the check and the registration: its wake went to the old waker.
            if self.take() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    fn take(&self) -> bool {
        self.raised.load(Ordering::Relaxed) && self.raised.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_raise_wakes_the_waiter_and_is_consumed() {
        let signal = Arc::new(Signal::default());
        let raiser = signal.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            raiser.raise();
        });
        tokio::time::timeout(Duration::from_secs(5), signal.wait()).await.expect("the raise was missed");
        let again = tokio::time::timeout(Duration::from_millis(50), signal.wait()).await;
        assert!(again.is_err(), "one raise woke two waits");
    }

    #[tokio::test]
    async fn a_raise_before_the_wait_is_kept() {
        let signal = Signal::default();
        signal.raise();
        tokio::time::timeout(Duration::from_millis(50), signal.wait())
            .await
            .expect("an early raise was lost");
    }
}
