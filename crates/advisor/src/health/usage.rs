//! How often the application scanned each index, with the advisor's own scans left out.
//!
//! Planning a statement makes PostgreSQL probe btree indexes for a column's actual minimum or
//! maximum (get_actual_variable_range: merge join estimates, constants past the histogram), and
//! every probe counts in pg_stat_user_indexes.idx_scan. An index no application query ever scans
//! would stop being "unused" as soon as the advisor had planned its workload. So:
//!
//! - the counts are read once per run before the advisor plans anything (`IndexScans::read`), and
//!   the unused-index check judges by that snapshot, never by the counts after planning;
//! - each EXPLAIN reads the session's own pending scan counts (pg_stat_get_xact_numscans) just
//!   before and after it, in the same implicit transaction: the difference is what its planning
//!   caused, and nothing another session scanned meanwhile (a delta of idx_scan would count
//!   those too, and could make a rarely used index look unused);
//! - those are added to a ledger per server (host and port, whoever the role), database,
//!   statistics epoch (stats_reset and postmaster start) and index (`record_own_scans`);
//! - the next run subtracts the ledger from its snapshot. The gateway re-runs the advisor in one
//!   process (the ledger lives in memory); the CLI passes a state file so separate runs share it.
//!
//! A new epoch (a statistics reset, a restart) starts a new ledger: forgetting only ever makes an
//! index look used.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::db::Db;

/// The advisor's own scans per index (oid), per `server|database|epoch`.
type Ledger = BTreeMap<String, BTreeMap<u32, i64>>;

/// The ledger of this process, when no state file is given (the gateway).
static PROCESS_LEDGER: Mutex<Ledger> = Mutex::new(BTreeMap::new());

/// idx_scan per index as the application caused it, and how long the statistics have counted.
#[derive(Debug)]
pub struct IndexScans {
    key: String,
    ledger_file: Option<PathBuf>,
    /// idx_scan as read before planning.
    raw: HashMap<u32, i64>,
    /// Of those, the scans earlier advisor runs caused.
    own: BTreeMap<u32, i64>,
    /// Each index's schema-qualified, quoted name: replicas' counts are matched by name.
    names: HashMap<u32, String>,
    /// The scans on the replicas the advisor could read, per index.
    on_replicas: HashMap<u32, i64>,
    /// When counting began on this server, for display ("2024-05-01 10:00 UTC").
    pub since: String,
    /// Seconds the statistics have been counting: on the server whose counting began last, when
    /// replicas count too (an index unused on a freshly restarted replica proves little).
    pub age_secs: f64,
    /// The replicas whose scans are counted.
    pub replicas: Vec<ReplicaScans>,
    /// The replicas that could not be read (described, with the reason): an index only they use
    /// looks unused.
    pub unreachable: Vec<String>,
}

impl IndexScans {
    /// Reads the counts; call it before the advisor plans or runs any statement.
    /// `server` names the server, not the role: the scans are the server's, whoever asked.
    pub async fn read(db: &Db, server: &str, ledger_file: Option<&Path>) -> Result<IndexScans> {
        let (since, age_secs, epoch) = statistics_age(db).await?;
        let key = format!("{server}|{}|{epoch}", db.database);
        let ledger_file = ledger_file.map(Path::to_path_buf);
        let own = load(ledger_file.as_deref()).remove(&key).unwrap_or_default();
        Ok(IndexScans {
            key,
            ledger_file,
            raw: counts(db).await?,
            own,
            names: index_names(db).await?,
            on_replicas: HashMap::new(),
            since,
            age_secs,
            replicas: Vec::new(),
            unreachable: Vec::new(),
        })
    }

    /// Counts the replicas' scans too: an index any server scans is used. Each replica's counts
    /// are matched to this server's indexes by name.
    pub fn add_replicas(&mut self, read: Vec<std::result::Result<ReplicaScans, String>>) {
        let by_name: HashMap<&str, u32> =
            self.names.iter().map(|(&oid, name)| (name.as_str(), oid)).collect();
        for replica in read {
            let replica = match replica {
                Ok(replica) => replica,
                Err(why) => {
                    self.unreachable.push(why);
                    continue;
                }
            };
            for (name, &n) in &replica.by_index {
                if let Some(&oid) = by_name.get(name.as_str()) {
                    *self.on_replicas.entry(oid).or_default() += n;
                }
            }
            self.age_secs = self.age_secs.min(replica.age_secs);
            self.replicas.push(replica);
        }
    }

    /// Where the counts come from: "since X on this server" and each replica read.
    pub fn counted_where(&self) -> String {
        let replicas: Vec<String> =
            self.replicas.iter().map(|r| format!("since {} on replica {}", r.since, r.server)).collect();
        let here = format!("since {} on this server", self.since);
        match replicas.as_slice() {
            [] => here,
            _ => format!("{here}, {}", replicas.join(", ")),
        }
    }

    /// Scans of the index before this run, less those earlier advisor runs caused, plus its scans
    /// on the replicas read (the advisor plans nothing there).
    pub fn application_scans(&self, index: u32) -> i64 {
        let raw = self.raw.get(&index).copied().unwrap_or(0);
        let own = self.own.get(&index).copied().unwrap_or(0);
        // Fewer scans than the advisor alone caused: this index's counters were reset since.
        let here = if raw < own { raw } else { raw - own };
        here + self.on_replicas.get(&index).copied().unwrap_or(0)
    }

    /// The application's scans of an index held by `leaves` (itself, or a partitioned index's
    /// partitions' indexes).
    pub fn application_scans_of(&self, leaves: &[u32]) -> i64 {
        leaves.iter().map(|&leaf| self.application_scans(leaf)).sum()
    }

    /// Adds the scans this run's planning caused (counted by `index::planner::explain_json` from
    /// the session's own pending counters) to the ledger.
    pub fn record_own_scans(&self, db: &Db) -> Result<()> {
        let caused = db.own_index_scans.lock().map(|c| c.clone()).unwrap_or_default();
        let mut ledger = load(self.ledger_file.as_deref());
        // Only this epoch's entry is kept for this server and database: older ones are dead.
        let prefix = self.key.rsplit_once('|').map(|(p, _)| format!("{p}|")).unwrap_or_default();
        ledger.retain(|k, _| !k.starts_with(&prefix) || k == &self.key);
        let entry = ledger.entry(self.key.clone()).or_default();
        for (&index, &before) in &self.raw {
            // Fewer scans than the ledger holds: the index's counters were reset since.
            let earlier = self.own.get(&index).copied().filter(|&own| own <= before).unwrap_or(0);
            let total = earlier + caused.get(&index).copied().unwrap_or(0);
            if total > 0 {
                entry.insert(index, total);
            }
        }
        store(self.ledger_file.as_deref(), ledger)
    }
}

async fn index_names(db: &Db) -> Result<HashMap<u32, String>> {
    let rows = db.rows(INDEX_NAMES).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Each user index's oid and schema-qualified, quoted name.
const INDEX_NAMES: &str =
    "SELECT indexrelid, quote_ident(schemaname) || '.' || quote_ident(indexrelname) FROM pg_stat_user_indexes";

/// A replica's index scans, as its own statistics count them.
#[derive(Debug)]
pub struct ReplicaScans {
    /// `user@host:port/db`.
    pub server: String,
    pub since: String,
    pub age_secs: f64,
    /// idx_scan per schema-qualified, quoted index name.
    by_index: HashMap<String, i64>,
}

/// How long the advisor waits for a replica: one that does not answer must not hold up the report.
const REPLICA_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads each replica's index scans; one that cannot be read gives the reason, naming it.
pub async fn read_replicas(
    urls: &[String],
    statement_timeout_ms: u64,
) -> Vec<std::result::Result<ReplicaScans, String>> {
    let mut out = Vec::new();
    for url in urls {
        let read = tokio::time::timeout(REPLICA_TIMEOUT, read_replica(url, statement_timeout_ms)).await;
        out.push(match read {
            Ok(result) => result,
            Err(_) => Err(format!(
                "{}: no answer within {} s",
                crate::connect::redact(url),
                REPLICA_TIMEOUT.as_secs()
            )),
        });
    }
    out
}

async fn read_replica(url: &str, statement_timeout_ms: u64) -> std::result::Result<ReplicaScans, String> {
    let target = crate::connect::Target::parse(url).map_err(|e| format!("{e:#}"))?;
    let server = target.describe();
    let failed = |e: anyhow::Error| format!("{server}: {e:#}");
    // Its error names the server already.
    let db = Db::open(&target, statement_timeout_ms).await.map_err(|e| format!("{e:#}"))?;
    let (since, age_secs, _) = statistics_age(&db).await.map_err(failed)?;
    let rows = db
        .rows("SELECT quote_ident(schemaname) || '.' || quote_ident(indexrelname), idx_scan::int8 FROM pg_stat_user_indexes")
        .await
        .map_err(failed)?;
    let by_index = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(ReplicaScans { server, since, age_secs, by_index })
}

async fn counts(db: &Db) -> Result<HashMap<u32, i64>> {
    let rows = db.rows("SELECT indexrelid, idx_scan::int8 FROM pg_stat_user_indexes").await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Since when the server's statistics count (for display), for how many seconds, and their epoch
/// (the statistics reset and the server's start, which end the ledger's entries).
async fn statistics_age(db: &Db) -> Result<(String, f64, String)> {
    let row = db
        .client
        .query_one(
            "SELECT coalesce(to_char(greatest(d.stats_reset, pg_postmaster_start_time()), 'YYYY-MM-DD HH24:MI TZ'), '?'), \
             extract(epoch FROM now() - greatest(d.stats_reset, pg_postmaster_start_time()))::float8, \
             coalesce(d.stats_reset::text, '') || '/' || pg_postmaster_start_time()::text \
             FROM pg_stat_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .context("reading the statistics' age")?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

fn load(file: Option<&Path>) -> Ledger {
    match file {
        None => PROCESS_LEDGER.lock().map(|l| l.clone()).unwrap_or_default(),
        // A missing or unreadable file is an empty ledger: indexes then only look more used.
        Some(path) => {
            std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
        }
    }
}

fn store(file: Option<&Path>, ledger: Ledger) -> Result<()> {
    let Some(path) = file else {
        if let Ok(mut l) = PROCESS_LEDGER.lock() {
            *l = ledger;
        }
        return Ok(());
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&ledger)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
