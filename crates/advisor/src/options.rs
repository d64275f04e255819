//! What a run of the advisor is asked to do.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::machine::{MachineSpec, StorageKind, WorkloadKind};

/// Where the workload (the statements to advise on) comes from. Several may be combined.
#[derive(Debug, Clone, Default)]
pub struct WorkloadSources {
    /// Read pg_stat_statements when the extension is installed in the database.
    pub pg_stat_statements: bool,
    /// A file of SQL statements separated by `;` (optional `-- calls: N` weights).
    pub file: Option<PathBuf>,
    /// A running pgpilot gateway whose per-statement statistics to read (`http://127.0.0.1:9930`).
    pub pgpilot_url: Option<String>,
    /// Bearer token for the gateway's API (from PGPILOT_API_TOKEN, never argv).
    pub pgpilot_token: Option<String>,
    /// The gateway's name for the database (its `[databases.NAME]`), when it differs from the
    /// server's dbname; the gateway's statistics are kept under that name.
    pub pgpilot_database: Option<String>,
    /// The file and the gateway were asked for by name (the CLI's `--workload-file`,
    /// `--from-pgpilot`): one that cannot be read fails the run rather than leaving a note, since
    /// advice without it is not the advice asked for. The gateway, reading its own statistics for
    /// a report it refreshes, leaves this off and reports the note.
    pub required: bool,
}

/// Thresholds of the index advisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexAdvisorSettings {
    /// A candidate is kept only when a statement's planned cost falls by at least this fraction (0.5 = 50%).
    pub min_cost_reduction: f64,
    /// Statements whose planned cost is below this are fast enough already.
    pub min_statement_cost: f64,
    /// At most this many statements are analysed (the heaviest by total time first).
    pub max_statements: usize,
    /// Tables with fewer live rows are not worth indexing by heuristic (hypopg decides by cost instead).
    pub heuristic_min_rows: i64,
    /// Create hypopg (and pgstattuple) in the database when available but not installed.
    pub install_extensions: bool,
}

impl Default for IndexAdvisorSettings {
    fn default() -> Self {
        IndexAdvisorSettings {
            min_cost_reduction: 0.5,
            min_statement_cost: 100.0,
            max_statements: 500,
            heuristic_min_rows: 10_000,
            install_extensions: false,
        }
    }
}

/// Thresholds of the health checks that an operator may want to tune.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthSettings {
    /// A query running longer than this is reported.
    pub long_query_secs: u64,
    /// A session idle in a transaction longer than this is reported.
    pub idle_in_transaction_secs: u64,
    /// Indexes smaller than this are not reported as unused (they cost next to nothing).
    pub unused_index_min_bytes: i64,
    /// No DROP is offered for an unused index until the statistics have counted this many days
    /// (since stats_reset or the server's start): weekly and monthly jobs must have had their turn.
    #[serde(default = "default_unused_index_min_stats_days")]
    pub unused_index_min_stats_days: u64,
    /// A foreign key without an index on its referencing columns is reported when the referencing
    /// table holds at least this many rows (estimated): below that, scanning it on each parent
    /// delete costs about as little as the index would.
    #[serde(default = "default_unindexed_foreign_key_min_rows")]
    pub unindexed_foreign_key_min_rows: i64,
    /// A table is reported as read mostly by sequential scans only after at least this many of
    /// them: maintenance scans a table too (CREATE INDEX CONCURRENTLY twice per index, pg_dump
    /// once), and a handful of scans says nothing about the application's queries.
    #[serde(default = "default_seq_scan_min_scans")]
    pub seq_scan_min_scans: i64,
    /// ... and after they read at least this many rows in all (pg_stat_user_tables.seq_tup_read).
    #[serde(default = "default_seq_scan_min_rows_read")]
    pub seq_scan_min_rows_read: i64,
    /// Tables smaller than this are not checked for bloat or sequential scans.
    pub table_min_bytes: i64,
    /// How many of the largest tables and indexes to list.
    pub largest_count: usize,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            long_query_secs: 60,
            idle_in_transaction_secs: 60,
            unused_index_min_bytes: 1024 * 1024,
            unused_index_min_stats_days: default_unused_index_min_stats_days(),
            unindexed_foreign_key_min_rows: default_unindexed_foreign_key_min_rows(),
            seq_scan_min_scans: default_seq_scan_min_scans(),
            seq_scan_min_rows_read: default_seq_scan_min_rows_read(),
            table_min_bytes: 8 * 1024 * 1024,
            largest_count: 10,
        }
    }
}

fn default_unused_index_min_stats_days() -> u64 {
    7
}

/// 10,000 rows are some 50–100 pages: from there a sequential scan per deleted parent row costs
/// milliseconds, and deleting a few thousand parents takes seconds.
fn default_unindexed_foreign_key_min_rows() -> i64 {
    10_000
}

/// Index builds and dumps scan a table a few times each; 50 scans are a workload's.
fn default_seq_scan_min_scans() -> i64 {
    50
}

/// A million rows: 100 full scans of a 10,000-row table, a few of a large one.
fn default_seq_scan_min_rows_read() -> i64 {
    1_000_000
}

/// Inputs of the pool sizing recommendation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PoolInputs {
    /// Statements per second the application must sustain at peak (None: measured from the database).
    pub target_tps: Option<f64>,
    /// How many application instances (each with its own pool) share the database.
    pub app_instances: u32,
}

/// One advisor run.
#[derive(Debug, Clone)]
pub struct AdviseOptions {
    /// postgres:// URL or libpq key=value string; the password comes from it, PGPASSWORD or ~/.pgpass.
    pub url: String,
    pub workload: WorkloadSources,
    pub index: IndexAdvisorSettings,
    pub health: HealthSettings,
    /// The database server's machine; None fields are detected when the server is local.
    pub machine: MachineSpec,
    pub storage: Option<StorageKind>,
    pub workload_kind: WorkloadKind,
    pub pool: PoolInputs,
    /// Skip the index advisor (health and configuration only).
    pub skip_indexes: bool,
    /// Per-statement timeout the advisor sets on its own session, so it never hurts the database.
    pub statement_timeout_ms: u64,
    /// Where to keep the index scans the advisor's own planning caused, so that later runs leave
    /// them out (see `health::usage`). None: kept in this process's memory only.
    pub scan_ledger: Option<PathBuf>,
    /// The database's replicas (URLs or libpq strings, as `url`): an index they scan is used, even
    /// when the primary never scans it. Empty: none known, and the unused-index DROP says to check
    /// the replicas by hand.
    pub replicas: Vec<String>,
}

impl AdviseOptions {
    pub fn new(url: impl Into<String>) -> Self {
        AdviseOptions {
            url: url.into(),
            workload: WorkloadSources { pg_stat_statements: true, ..Default::default() },
            index: IndexAdvisorSettings::default(),
            health: HealthSettings::default(),
            machine: MachineSpec::default(),
            storage: None,
            workload_kind: WorkloadKind::Mixed,
            pool: PoolInputs { target_tps: None, app_instances: 1 },
            skip_indexes: false,
            statement_timeout_ms: 30_000,
            scan_ledger: None,
            replicas: Vec::new(),
        }
    }
}
