//! The live display while the workload runs: a progress bar per run with throughput, latency and,
//! through pgpilot, how busy its pool is — on a terminal; elsewhere a plain line every few seconds
//! and one per finished run.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use pgpilot_bench::{Observer, Progress, RunInfo, RunSummary};

use super::gateway_stats::PoolMonitor;
use super::workload::PGPILOT;

/// How often a plain (non-terminal) display prints a progress line.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

pub struct LiveDisplay {
    phase: String,
    interactive: bool,
    monitor: Arc<PoolMonitor>,
    bar: Mutex<Option<ProgressBar>>,
    last_line: Mutex<Instant>,
}

impl LiveDisplay {
    pub fn new(phase: &str, monitor: Arc<PoolMonitor>) -> LiveDisplay {
        LiveDisplay {
            phase: phase.to_string(),
            interactive: std::io::stderr().is_terminal(),
            monitor,
            bar: Mutex::new(None),
            last_line: Mutex::new(Instant::now()),
        }
    }

    fn label(&self, run: &RunInfo) -> String {
        let target = if run.target == PGPILOT { "through pgpilot" } else { "direct" };
        format!("{:<11} {:<15} round {}/{}", self.phase, target, run.round + 1, run.rounds)
    }

    /// Pool figures while a run goes through pgpilot.
    fn pool_note(&self, run: &RunInfo) -> String {
        if run.target != PGPILOT {
            return String::new();
        }
        let Some(snapshot) = self.monitor.latest() else { return String::new() };
        let pools: Vec<String> = snapshot
            .pools
            .iter()
            .map(|p| format!("{} {}/{}", p.role, p.servers_active, p.pool_size))
            .collect();
        if pools.is_empty() {
            return String::new();
        }
        format!("  busy: {}, {} waiting", pools.join(" "), snapshot.waiting())
    }
}

impl Observer for LiveDisplay {
    fn note(&self, text: &str) {
        match self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn run_started(&self, run: &RunInfo) {
        self.monitor.set_measuring(run.target == PGPILOT);
        *self.last_line.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        if !self.interactive {
            return;
        }
        let bar = ProgressBar::new(1000);
        bar.set_style(
            ProgressStyle::with_template("{prefix:.bold} [{bar:24.cyan/blue}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(self.label(run));
        bar.enable_steady_tick(Duration::from_millis(200));
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }

    fn progress(&self, run: &RunInfo, p: &Progress) {
        let line = format!(
            "{:>7.0} tps {:>7.2} ms  {} txns  {} failed{}",
            p.tps,
            p.mean_latency_ms,
            p.transactions,
            p.failed,
            self.pool_note(run)
        );
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            bar.set_position((p.fraction * 1000.0) as u64);
            bar.set_message(line);
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= PLAIN_EVERY {
            *last = Instant::now();
            eprintln!("  {}  {line}", self.label(run));
        }
    }

    fn run_finished(&self, run: &RunInfo, s: &RunSummary) {
        self.monitor.set_measuring(false);
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
        eprintln!(
            "  {}  {:>7.0} tps  p50 {:.2} ms  p99 {:.2} ms  {} txns  {} failed",
            self.label(run),
            s.tps,
            s.p50_ms,
            s.p99_ms,
            s.transactions,
            s.failed
        );
    }
}
