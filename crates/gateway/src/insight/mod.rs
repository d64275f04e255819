//! Workload insight: per-statement statistics gathered at the proxy (no extension needed on the
//! server), the slow-query log, the JSON monitoring API, Prometheus series for the most expensive
//! statements, a probe of each server's connections against max_connections, and the web dashboard.
//!
//! The session calls [`Insight::record`] once per completed statement. It takes one of 32 small
//! mutexes chosen by the statement's fingerprint, updates counters and a fixed-size histogram,
//! and returns; percentiles, sorting and rendering happen when someone reads.

mod api;
pub mod carried;
pub mod config;
mod dashboard;
mod explain;
mod health;
mod histogram;
mod key;
pub(crate) mod pgclient;
mod probe;
mod prometheus;
mod rates;
mod servers;
mod slowlog;
mod store;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
pub use key::QueryKey;
use serde::Serialize;

pub use api::routes;
pub use config::{HealthThresholds, InsightConfig};
pub use dashboard::routes as dashboard_routes;
pub use probe::spawn_server_probe;
pub use prometheus::{render_metrics, METRIC_NAMES};
pub use servers::ServerStatus;
pub use slowlog::SlowQuery;
pub use store::{Counters, Snapshot, StatementStats};

/// Where a statement was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Primary,
    Replica,
    /// From pgpilot's result cache, without a server.
    Cache,
    /// Refused by pgpilot before any server saw it (query_wait_timeout, a cancel while it
    /// waited, a server that could not be reached): counted as failed, in no target's total.
    Unsent,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Primary => "primary",
            Target::Replica => "replica",
            Target::Cache => "cache",
            Target::Unsent => "none",
        }
    }
}

/// One completed statement, as the session saw it.
pub struct StatementEvent<'a> {
    /// pgpilot_sql::Statement::fingerprint.
    pub fingerprint: u64,
    /// pgpilot_sql::Statement::normalized: constants replaced by $n.
    pub normalized: &'a Arc<str>,
    pub database: &'a Arc<str>,
    pub user: &'a Arc<str>,
    /// From sending the statement to the server (or the cache look-up) until its completion; the
    /// wait for a server connection is not included (see `wait`), as pg_stat_statements' total_exec_time.
    pub duration: Duration,
    /// Time spent waiting for a server connection before the statement could be sent.
    pub wait: Duration,
    pub rows: u64,
    /// The SQLSTATE when it failed.
    pub error: Option<&'a str>,
    pub target: Target,
    pub client_addr: &'a str,
    pub server: &'a str,
    /// Parameter values in text form, only when [`Insight::wants_parameters`] says so.
    pub parameters: Option<&'a [Option<String>]>,
    /// The client's session parameters, read only for a slow statement (its application_name).
    pub client_params: Option<&'a crate::session::params::ParamSet>,
}

pub struct Insight {
    enabled: AtomicBool,
    log_parameters: AtomicBool,
    /// Microseconds; u64::MAX when the slow-query log is off.
    slow_threshold_us: AtomicU64,
    store: store::StatementStore,
    slow: slowlog::SlowLog,
    rates: rates::RateHistory,
    servers: servers::ServerStatuses,
    carried: carried::CarriedTotals,
    config: ArcSwap<InsightConfig>,
}

impl Insight {
    pub fn new(config: &InsightConfig) -> Insight {
        let insight = Insight {
            enabled: AtomicBool::new(config.enabled),
            log_parameters: AtomicBool::new(false),
            slow_threshold_us: AtomicU64::new(u64::MAX),
            store: store::StatementStore::new(config.max_statements),
            slow: slowlog::SlowLog::new(config.slow_log_size),
            rates: rates::RateHistory::default(),
            servers: servers::ServerStatuses::default(),
            carried: carried::CarriedTotals::default(),
            config: ArcSwap::from_pointee(config.clone()),
        };
        insight.configure(config);
        insight
    }

    /// Applies a reloaded `[insight]` section; statistics gathered so far are kept.
    pub fn configure(&self, config: &InsightConfig) {
        for problem in config.problems() {
            tracing::warn!("{problem}");
        }
        self.enabled.store(config.enabled, Relaxed);
        self.log_parameters.store(config.log_parameters, Relaxed);
        let threshold = config.log_min_duration.enabled().map(|d| d.as_micros() as u64).unwrap_or(u64::MAX);
        self.slow_threshold_us.store(threshold, Relaxed);
        self.store.set_max(config.max_statements);
        self.store.set_max_text(config.max_query_text);
        self.slow.set_capacity(config.slow_log_size);
        self.config.store(Arc::new(config.clone()));
    }

    pub fn config(&self) -> Arc<InsightConfig> {
        self.config.load_full()
    }

    /// False when `[insight] enabled = false`: the session may skip building events.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// Whether events should carry their parameter values (log_parameters on and the log on).
    #[inline]
    pub fn wants_parameters(&self) -> bool {
        self.log_parameters.load(Relaxed) && self.slow_threshold_us.load(Relaxed) != u64::MAX
    }

    /// Counts one completed statement; logs and keeps it when it was slow.
    #[inline]
    pub fn record(&self, ev: &StatementEvent<'_>) {
        if !self.enabled.load(Relaxed) {
            return;
        }
        let slow = u64::try_from(ev.duration.as_micros()).unwrap_or(u64::MAX)
            >= self.slow_threshold_us.load(Relaxed);
        self.store.record(ev, slow);
        if slow {
            self.slow.push(ev, self.log_parameters.load(Relaxed), self.store.max_text());
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.store.snapshot()
    }

    /// Per-database totals and failures by SQLSTATE since pgpilot started, resets or not (the
    /// Prometheus counters).
    pub fn totals_since_start(&self, now: &Snapshot) -> carried::DatabaseCounts {
        self.carried.since_start(now)
    }

    /// Slow statements kept in memory, newest first.
    pub fn slow_queries(&self, threshold_ms: f64, database: Option<&str>, limit: usize) -> Vec<SlowQuery> {
        self.slow.list(threshold_ms, database, limit)
    }

    /// Entries of their own (not "other") currently held.
    pub fn tracked_statements(&self) -> usize {
        self.store.tracked()
    }

    /// What the server probe last saw of each server.
    pub fn server_statuses(&self) -> Vec<ServerStatus> {
        self.servers.all()
    }

    /// Forgets statistics and the slow-query log (like pg_stat_statements_reset()).
    pub fn reset(&self) {
        self.carried.carry(&self.store.snapshot());
        self.store.reset();
        self.slow.clear();
        self.rates.clear();
    }
}
