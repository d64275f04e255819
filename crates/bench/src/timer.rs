//! Sleeping to the microsecond. tokio's timer counts whole milliseconds and rounds a sleep up to
//! the next tick, which adds about a millisecond to every `\sleep` and every `--rate` wait (pgbench
//! sleeps to the microsecond in select(2)). A timerfd per client, awaited through the reactor, is
//! as precise without spinning.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A client's timer: a timerfd, or tokio's own where one cannot be made.
pub(crate) struct Timer {
    fd: Option<AsyncFd<OwnedFd>>,
}

impl Timer {
    pub(crate) fn new() -> Timer {
        Timer { fd: timerfd().ok() }
    }

    /// Sleeps for `d`.
    pub(crate) async fn sleep(&self, d: Duration) {
        if d.is_zero() {
            return;
        }
        let until = Instant::now() + d;
        match &self.fd {
            Some(fd) if precise_sleep(fd, d, until).await.is_ok() => {}
            _ => tokio::time::sleep_until(until.into()).await,
        }
    }
}

fn timerfd() -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: timerfd_create takes no pointers; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same descriptor until the
    // AsyncFd is dropped.
    unsafe { Ok(AsyncFd::register_with_interest(owned, Interest::READABLE)?) }
}

async fn precise_sleep(fd: &AsyncFd<OwnedFd>, d: Duration, until: Instant) -> io::Result<()> {
    let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    let value =
        libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as libc::c_long };
    let spec = libc::itimerspec { it_interval: zero, it_value: value };
    // SAFETY: a valid descriptor and a pointer to a live itimerspec; no old value is asked for.
    if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    loop {
        let mut ready = fd.readable().await?;
        let expired = ready.try_io(|fd| {
            let mut count = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a live 8-byte buffer.
            let n = unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
        // An expiry left from a sleep that was given up early is not this one: wait on.
        if matches!(expired, Ok(Ok(()))) && Instant::now() >= until {
            return Ok(());
        }
        if let Ok(Err(e)) = expired {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_wakes_early_even_after_a_sleep_given_up() {
        let timer = Timer::new();
        assert!(timer.fd.is_some(), "timerfd is available on Linux");
        // A sleep dropped before its end leaves an expiry behind; the next sleep must not take it.
        let given_up =
            tokio::time::timeout(Duration::from_millis(1), timer.sleep(Duration::from_millis(20))).await;
        assert!(given_up.is_err());
        tokio::time::sleep(Duration::from_millis(25)).await;
        for asked in [Duration::from_micros(300), Duration::from_millis(5), Duration::from_micros(50)] {
            let start = Instant::now();
            timer.sleep(asked).await;
            assert!(start.elapsed() >= asked, "woke after {:?} of {asked:?}", start.elapsed());
        }
    }
}
