//! Progress reporting: the library says which stage it is in and how far along; the terminal
//! binary draws a bar, the gateway may log or ignore it.

use std::sync::Mutex;

/// Receives progress from a running advisor. Implementations must be cheap: they are called once
/// per statement explained.
pub trait Progress: Send + Sync {
    /// A new stage begins with `total` steps (0 when unknown).
    fn stage(&self, name: &str, total: u64);
    /// `n` more steps of the current stage are done.
    fn advance(&self, n: u64);
    /// The run is over.
    fn finish(&self) {}
}

/// Ignores progress.
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// A bar on standard error, drawn only when standard error is a terminal.
pub struct TerminalProgress {
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl TerminalProgress {
    pub fn new() -> Self {
        TerminalProgress { bar: Mutex::new(None) }
    }
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for TerminalProgress {
    fn stage(&self, name: &str, total: u64) {
        let mut guard = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = guard.take() {
            old.finish_and_clear();
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total.max(1)),
            indicatif::ProgressDrawTarget::stderr(),
        );
        let style =
            indicatif::ProgressStyle::with_template("{spinner} {msg:<28} [{bar:30}] {pos}/{len} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(name.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        *guard = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bar.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}
