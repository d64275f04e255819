//! Live progress: an [`Observer`] hears about each run while it happens, so the CLI can draw a
//! progress bar and the demo its own display.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Limit;

/// Which run (one target in one round) is going on.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub target: String,
    /// 0-based round number.
    pub round: usize,
    pub rounds: usize,
    pub limit: Limit,
    pub clients: usize,
}

/// A snapshot taken every `progress_interval`.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub elapsed: Duration,
    /// Successful transactions so far in this run.
    pub transactions: u64,
    pub failed: u64,
    /// Successful transactions per second over the last interval.
    pub tps: f64,
    /// Mean latency over the last interval, in milliseconds.
    pub mean_latency_ms: f64,
    /// How far along the run is, 0.0 to 1.0.
    pub fraction: f64,
}

/// A run's headline figures, when it ends.
#[derive(Debug, Clone, Copy)]
pub struct RunSummary {
    pub tps: f64,
    pub transactions: u64,
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Receives progress; every method has a do-nothing default.
pub trait Observer: Send + Sync {
    fn note(&self, _text: &str) {}
    fn run_started(&self, _run: &RunInfo) {}
    fn progress(&self, _run: &RunInfo, _p: &Progress) {}
    fn run_finished(&self, _run: &RunInfo, _s: &RunSummary) {}
}

/// Hears nothing.
pub struct Silent;

impl Observer for Silent {}

/// A progress bar on stderr when stderr is a terminal, and one line per run when it ends; setup
/// notes always.
pub struct TerminalProgress {
    bar: Mutex<Option<ProgressBar>>,
    interactive: bool,
    summaries: bool,
}

impl Default for TerminalProgress {
    fn default() -> Self {
        TerminalProgress {
            bar: Mutex::new(None),
            interactive: std::io::stderr().is_terminal(),
            summaries: true,
        }
    }
}

impl TerminalProgress {
    /// Only the setup notes (warnings, initialisation), no bar and no per-run lines.
    pub fn notes_only() -> Self {
        TerminalProgress { bar: Mutex::new(None), interactive: false, summaries: false }
    }

    fn label(run: &RunInfo) -> String {
        if run.rounds > 1 {
            format!("{} (round {}/{})", run.target, run.round + 1, run.rounds)
        } else {
            run.target.clone()
        }
    }
}

impl Observer for TerminalProgress {
    fn note(&self, text: &str) {
        eprintln!("{text}");
    }

    fn run_started(&self, run: &RunInfo) {
        if !self.interactive {
            return;
        }
        let bar = ProgressBar::new(1000);
        bar.set_style(
            ProgressStyle::with_template("{prefix:.bold} [{bar:30.cyan/blue}] {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(Self::label(run));
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }

    fn progress(&self, _run: &RunInfo, p: &Progress) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bar.set_position((p.fraction * 1000.0) as u64);
            bar.set_message(format!(
                "{:>9.0} tps  {:>7.3} ms  {} txns  {} failed",
                p.tps, p.mean_latency_ms, p.transactions, p.failed
            ));
        }
    }

    fn run_finished(&self, run: &RunInfo, s: &RunSummary) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
        if !self.summaries {
            return;
        }
        eprintln!(
            "{}: {:.1} tps, {} txns, {} failed, p50 {:.3} ms, p99 {:.3} ms",
            Self::label(run),
            s.tps,
            s.transactions,
            s.failed,
            s.p50_ms,
            s.p99_ms
        );
    }
}
