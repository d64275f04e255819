//! Runs the benchmark: rounds of runs, one target at a time in a rotating order, each run with its
//! own clients, connections and clock.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::client::{LiveCounters, RunShared, Tally};
use crate::config::{BenchConfig, Limit};
use crate::jobs;
use crate::observe::{Observer, Progress, RunInfo, RunSummary, Silent};
use crate::prepare::{setup_target, Plan, TargetSetup};
use crate::report::{BenchReport, Latency, TargetAccum};
use crate::target::TargetInfo;

/// Runs a benchmark on a runtime of its own. Do not call it from inside an async context; use
/// [`run_async`] there.
pub fn run(config: BenchConfig) -> Result<BenchReport> {
    run_with(config, Arc::new(Silent))
}

/// [`run`] with an observer that hears about progress.
pub fn run_with(config: BenchConfig, observer: Arc<dyn Observer>) -> Result<BenchReport> {
    // Clients run on job threads of their own; this runtime only sets up and watches.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run_async(config, observer))
}

/// Runs a benchmark from the current tokio runtime (setup and progress run here; the clients run
/// on `jobs` threads of their own).
pub async fn run_async(config: BenchConfig, observer: Arc<dyn Observer>) -> Result<BenchReport> {
    config.validate().map_err(anyhow::Error::msg)?;
    let plan = Arc::new(Plan::build(&config)?);
    let seed = config.random_seed.unwrap_or_else(rand::random);
    let mut setups = Vec::new();
    let mut initialised = HashSet::new();
    for target in &config.targets {
        setups.push(setup_target(&config, &plan, target, seed, &mut initialised, observer.as_ref()).await?);
    }
    if config.stop_on_ctrl_c {
        let stop = config.stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        });
    }
    let labels = plan.script_labels();
    let mut accums: Vec<TargetAccum> =
        setups.iter().map(|s| TargetAccum::new(TargetInfo::from(&s.target), labels.len())).collect();
    let n = setups.len();
    let mut aborted = None;
    'rounds: for round in 0..config.rounds {
        for k in 0..n {
            if config.stop.load(Ordering::Relaxed) {
                break 'rounds;
            }
            let idx = (k + round) % n;
            let run_seed = seed ^ ((idx as u64 + 1) << 32) ^ (round as u64 + 1);
            let (tally, elapsed) =
                run_once(&config, &plan, &setups[idx], round, run_seed, observer.as_ref()).await?;
            if let Some(fatal) = &tally.fatal {
                bail!("{}: the script failed: {fatal}", setups[idx].target.name);
            }
            let abort = abort_message(&tally, &setups[idx].target.name, config.clients);
            let acc = &mut accums[idx];
            acc.tps_per_round.push(tps(tally.ok, elapsed));
            acc.elapsed += elapsed;
            acc.tally.merge(tally);
            if abort.is_some() {
                // The target is gone: later runs would fail to connect, and a report of what was
                // measured says more than that error would.
                aborted = abort;
                break 'rounds;
            }
        }
    }
    let rated = config.rate.is_some();
    let targets = accums.into_iter().map(|a| a.into_report(&labels, rated)).collect();
    let mut report = BenchReport::new(&config, targets, config.stop.load(Ordering::Relaxed));
    report.aborted = aborted;
    Ok(report)
}

/// Why a run ended before its clients were done, if some were aborted.
fn abort_message(tally: &Tally, target: &str, clients: usize) -> Option<String> {
    let reason = tally.abort_reason.as_deref()?;
    let aborted = tally.aborted_clients;
    Some(format!("{target}: {aborted} of {clients} clients stopped early ({reason})"))
}

fn tps(ok: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        ok as f64 / secs
    } else {
        0.0
    }
}

/// One target, one round: connect every client, start the clock, run, merge.
async fn run_once(
    config: &BenchConfig,
    plan: &Arc<Plan>,
    setup: &TargetSetup,
    round: usize,
    seed: u64,
    observer: &dyn Observer,
) -> Result<(Tally, Duration)> {
    let endpoint = setup.target.endpoint();
    let info = RunInfo {
        target: setup.target.name.clone(),
        round,
        rounds: config.rounds,
        limit: config.limit,
        clients: config.clients,
    };
    // The deadline is set once every client is connected; until then no client reads it.
    let per_client = match config.limit {
        Limit::TransactionsPerClient(n) => Some(n),
        Limit::Duration(_) => None,
    };
    let run_stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(RunShared {
        endpoint,
        scripts: plan.scripts.clone(),
        cumulative_weights: plan.cumulative_weights.clone(),
        vars: plan.vars.clone(),
        initial: setup.initial.clone(),
        client_id_slot: plan.client_id_slot(),
        default_seed: seed.rotate_left(17) as i64,
        protocol: config.protocol,
        connect_each: config.connect_per_transaction,
        rate_interval_us: config.rate.map(|r| 1e6 * config.clients as f64 / r),
        deadline: OnceLock::new(),
        per_client_transactions: per_client,
        stop: run_stop.clone(),
        live: LiveCounters::default(),
    });
    let ready = jobs::spawn(shared.clone(), config.clients, config.worker_threads(), seed)
        .await
        .map_err(|e| anyhow!("target `{}` ({}): {e}", setup.target.name, setup.target.display_url()))?;
    observer.run_started(&info);
    let start = Instant::now();
    if let Limit::Duration(d) = config.limit {
        let _ = shared.deadline.set(start + d);
    }
    let all = ready.start(start);
    tokio::pin!(all);
    let mut ticker = tokio::time::interval(config.progress_interval);
    ticker.tick().await;
    let mut last = (0u64, 0u64, start);
    let results = loop {
        tokio::select! {
            results = &mut all => break results,
            _ = ticker.tick() => {
                if config.stop.load(Ordering::Relaxed) {
                    run_stop.store(true, Ordering::Relaxed);
                }
                last = report_progress(config, &shared.live, observer, &info, start, last);
            }
        }
    };
    let elapsed = start.elapsed();
    let mut tally = Tally::new(plan.scripts.len());
    for t in results.map_err(|e| anyhow!("{}: {e}", setup.target.name))? {
        tally.merge(t);
    }
    let latency = Latency::from_histogram(&tally.hist);
    observer.run_finished(
        &info,
        &RunSummary {
            tps: tps(tally.ok, elapsed),
            transactions: tally.ok,
            failed: tally.failed,
            p50_ms: latency.p50,
            p99_ms: latency.p99,
        },
    );
    Ok((tally, elapsed))
}

fn report_progress(
    config: &BenchConfig,
    live: &LiveCounters,
    observer: &dyn Observer,
    info: &RunInfo,
    start: Instant,
    (last_ok, last_latency, last_at): (u64, u64, Instant),
) -> (u64, u64, Instant) {
    let now = Instant::now();
    let ok = live.ok.load(Ordering::Relaxed);
    let latency = live.latency_us.load(Ordering::Relaxed);
    let interval_ok = ok.saturating_sub(last_ok);
    let window = now.duration_since(last_at).as_secs_f64();
    let fraction = match config.limit {
        Limit::Duration(d) => start.elapsed().as_secs_f64() / d.as_secs_f64(),
        Limit::TransactionsPerClient(n) => {
            let attempted = ok + live.failed.load(Ordering::Relaxed);
            attempted as f64 / (n as f64 * config.clients as f64)
        }
    };
    observer.progress(
        info,
        &Progress {
            elapsed: start.elapsed(),
            transactions: ok,
            failed: live.failed.load(Ordering::Relaxed),
            tps: if window > 0.0 { interval_ok as f64 / window } else { 0.0 },
            mean_latency_ms: if interval_ok > 0 {
                latency.saturating_sub(last_latency) as f64 / interval_ok as f64 / 1000.0
            } else {
                0.0
            },
            fraction: fraction.clamp(0.0, 1.0),
        },
    );
    (ok, latency, now)
}
