//! Ctrl-C, SIGTERM and SIGHUP: the first one stops the demo wherever it is so that everything can
//! be torn down; later ones only say that the teardown is under way (exiting then would leave
//! servers and directories behind).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, Result};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Shared by every step of the demo.
#[derive(Clone)]
pub struct Interrupt {
    signalled: watch::Receiver<bool>,
    /// Also set on a signal: ends a benchmark run early, with what it measured so far.
    pub stop: Arc<AtomicBool>,
}

/// The error of a step that a signal cut short.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

impl Interrupt {
    /// Installs the handlers; call from inside the runtime.
    pub fn install() -> Result<Interrupt> {
        let install = |kind| signal(kind).map_err(|e| anyhow!("installing a signal handler: {e}"));
        let mut int = install(SignalKind::interrupt())?;
        let mut term = install(SignalKind::terminate())?;
        let mut hup = install(SignalKind::hangup())?;
        let (tx, rx) = watch::channel(false);
        let stop = Arc::new(AtomicBool::new(false));
        quiet_panics_after(stop.clone());
        let flag = stop.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
                if first {
                    // The session says what it stops: it knows what has started.
                    flag.store(true, Ordering::Relaxed);
                    let _ = tx.send(true);
                    first = false;
                } else {
                    eprintln!("Still tearing down; it takes a few seconds.");
                }
            }
        });
        Ok(Interrupt { signalled: rx, stop })
    }

    pub fn is_set(&self) -> bool {
        *self.signalled.borrow()
    }

    /// Resolves once a signal has arrived.
    pub async fn wait(&self) {
        let mut rx = self.signalled.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Runs `step` unless a signal arrives first, in which case the step is dropped (cancelled)
    /// and the result is [`Interrupted`].
    pub async fn guard<T>(&self, step: impl Future<Output = Result<T>>) -> Result<T> {
        if self.is_set() {
            return Err(Interrupted.into());
        }
        tokio::select! {
            result = step => result,
            _ = self.wait() => Err(Interrupted.into()),
        }
    }
}

/// A Ctrl-C on a terminal also reaches the tools the demo runs (pg_ctl, psql, pg_basebackup); the
/// step that ran one then fails with a panic whose message is noise once the user has asked to stop.
/// The tool may die before the signal task has run, hence the short grace before printing.
fn quiet_panics_after(signalled: Arc<AtomicBool>) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // A failed step of the stack: its message is the error the demo prints.
        if super::stack::panic_is_reported() {
            return;
        }
        for _ in 0..20 {
            if signalled.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        default(info);
    }));
}

/// Whether an error comes from a signal rather than a failure.
pub fn is_interrupted(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Interrupted>().is_some()
}
