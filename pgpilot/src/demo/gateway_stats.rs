//! What pgpilot says about itself over its HTTP API: pool utilization (sampled while the workload
//! runs through it), reads routed to the replica, and the result cache's hit rate. Endpoints a
//! build does not have yet answer 404, which the report shows as "not available in this build".

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const POOL_STATS: &str = "/api/v1/monitoring/pool-stats";
const REPLICAS: &str = "/api/v1/monitoring/replicas";
const CACHE_STATS: &str = "/api/v1/cache/stats";

/// GET `path` as JSON; `None` when the endpoint does not exist (404).
pub async fn get_json(http: SocketAddr, path: &str) -> Result<Option<Value>> {
    let url = format!("http://{http}{path}");
    tokio::task::spawn_blocking(move || fetch(&url)).await.map_err(|e| anyhow!("GET {path}: {e}"))?
}

fn fetch(url: &str) -> Result<Option<Value>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| anyhow!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    if status == 404 {
        return Ok(None);
    }
    if !(200..300).contains(&status) {
        bail!("GET {url}: HTTP {status}");
    }
    let body = response.body_mut().read_to_string().map_err(|e| anyhow!("GET {url}: {e}"))?;
    serde_json::from_str(&body).map(Some).map_err(|e| anyhow!("GET {url}: not JSON: {e}"))
}

/// One pool as GET /api/v1/monitoring/pool-stats shows it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PoolEntry {
    pub database: String,
    pub server: String,
    pub role: String,
    pub pool_size: u64,
    pub clients_active: u64,
    pub clients_waiting: u64,
    pub servers_active: u64,
    pub servers_total: u64,
    pub transactions: u64,
    pub queries: u64,
    pub avg_wait_us: u64,
    pub max_wait_ms: f64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct PoolStats {
    pools: Vec<PoolEntry>,
}

/// The demo database's pools right now.
#[derive(Debug, Clone, Default)]
pub struct PoolSnapshot {
    pub pools: Vec<PoolEntry>,
}

impl PoolSnapshot {
    pub async fn fetch(http: SocketAddr, database: &str) -> Result<PoolSnapshot> {
        let value = get_json(http, POOL_STATS).await?.ok_or_else(|| anyhow!("{POOL_STATS} is missing"))?;
        let stats: PoolStats = serde_json::from_value(value).map_err(|e| anyhow!("{POOL_STATS}: {e}"))?;
        Ok(PoolSnapshot { pools: stats.pools.into_iter().filter(|p| p.database == database).collect() })
    }

    pub fn waiting(&self) -> u64 {
        self.pools.iter().map(|p| p.clients_waiting).sum()
    }

    pub fn servers(&self) -> u64 {
        self.pools.iter().map(|p| p.servers_total).sum()
    }

    /// The busiest pool's busy / size: a saturated primary pool is the headline even while the
    /// replica's pool idles (their average would hide it).
    pub fn utilization(&self) -> f64 {
        self.pools.iter().map(|p| ratio(p.servers_active as f64, p.pool_size as f64)).fold(0.0, f64::max)
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Samples the pools twice a second; while a run goes through pgpilot the samples count towards
/// its utilization figures.
pub struct PoolMonitor {
    http: SocketAddr,
    database: String,
    measuring: AtomicBool,
    state: Mutex<Samples>,
}

#[derive(Debug, Default)]
struct Samples {
    latest: Option<PoolSnapshot>,
    count: u64,
    overall: Utilization,
    /// Per pool, in the order the gateway lists them (the primary's first).
    pools: Vec<(PoolEntry, Utilization)>,
    servers_peak: u64,
    waiting_peak: u64,
    max_wait_ms: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Utilization {
    sum: f64,
    peak: f64,
}

impl Utilization {
    fn add(&mut self, u: f64) {
        self.sum += u;
        self.peak = self.peak.max(u);
    }
}

/// Pool figures over the runs through pgpilot.
#[derive(Debug, Clone, Default)]
pub struct PoolUsage {
    pub totals: PoolTotals,
    /// Each pool (the primary's, the replica's) on its own.
    pub pools: Vec<PoolUse>,
}

/// Over every pool of the demo database, while the workload ran through pgpilot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolTotals {
    /// Pool samples taken (twice a second).
    pub samples: u64,
    /// Busy server connections / pool size, mean and peak over the samples.
    pub utilization_mean: f64,
    pub utilization_peak: f64,
    /// Most server connections open at once.
    pub server_connections_peak: u64,
    /// Most clients waiting for a server connection at once.
    pub clients_waiting_peak: u64,
    /// Longest a client had waited for a server connection, in milliseconds.
    pub max_wait_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolUse {
    pub role: String,
    pub server: String,
    pub pool_size: u64,
    pub utilization_mean: f64,
    pub utilization_peak: f64,
}

impl PoolMonitor {
    pub fn new(http: SocketAddr, database: &str) -> Arc<PoolMonitor> {
        Arc::new(PoolMonitor {
            http,
            database: database.to_string(),
            measuring: AtomicBool::new(false),
            state: Mutex::new(Samples::default()),
        })
    }

    /// Samples until the task is aborted.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let monitor = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                if let Ok(snapshot) = PoolSnapshot::fetch(monitor.http, &monitor.database).await {
                    monitor.record(snapshot);
                }
            }
        })
    }

    /// Whether samples count now (a run through pgpilot is going on).
    pub fn set_measuring(&self, on: bool) {
        self.measuring.store(on, Ordering::Relaxed);
    }

    fn record(&self, snapshot: PoolSnapshot) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.measuring.load(Ordering::Relaxed) {
            s.count += 1;
            s.overall.add(snapshot.utilization());
            for pool in &snapshot.pools {
                let u = ratio(pool.servers_active as f64, pool.pool_size as f64);
                match s.pools.iter_mut().find(|(p, _)| p.server == pool.server) {
                    Some((_, acc)) => acc.add(u),
                    None => {
                        let mut acc = Utilization::default();
                        acc.add(u);
                        s.pools.push((pool.clone(), acc));
                    }
                }
            }
            s.servers_peak = s.servers_peak.max(snapshot.servers());
            s.waiting_peak = s.waiting_peak.max(snapshot.waiting());
            let wait = snapshot.pools.iter().map(|p| p.max_wait_ms).fold(0.0, f64::max);
            s.max_wait_ms = s.max_wait_ms.max(wait);
        }
        s.latest = Some(snapshot);
    }

    pub fn latest(&self) -> Option<PoolSnapshot> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).latest.clone()
    }

    pub fn usage(&self) -> PoolUsage {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mean = |u: &Utilization| ratio(u.sum, s.count as f64);
        PoolUsage {
            totals: PoolTotals {
                samples: s.count,
                utilization_mean: mean(&s.overall),
                utilization_peak: s.overall.peak,
                server_connections_peak: s.servers_peak,
                clients_waiting_peak: s.waiting_peak,
                max_wait_ms: s.max_wait_ms,
            },
            pools: s
                .pools
                .iter()
                .map(|(p, u)| PoolUse {
                    role: p.role.clone(),
                    server: p.server.clone(),
                    pool_size: p.pool_size,
                    utilization_mean: mean(u),
                    utilization_peak: u.peak,
                })
                .collect(),
        }
    }
}

/// Reads sent to each kind of server, from GET /api/v1/monitoring/replicas.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadSplit {
    /// False when this build has no replicas endpoint; the counts are then null.
    pub available: bool,
    pub reads_replica: Option<u64>,
    pub reads_primary: Option<u64>,
    /// Share of routed reads the replica served (0.0 to 1.0).
    pub replica_share: Option<f64>,
    pub error: Option<String>,
}

impl ReadSplit {
    pub async fn fetch(http: SocketAddr, database: &str) -> ReadSplit {
        match get_json(http, REPLICAS).await {
            Ok(None) => ReadSplit::default(),
            Ok(Some(value)) => ReadSplit::from_json(&value, database),
            Err(e) => ReadSplit { available: true, error: Some(format!("{e:#}")), ..Default::default() },
        }
    }

    fn from_json(value: &Value, database: &str) -> ReadSplit {
        let servers = value.get("replicas").and_then(Value::as_array).cloned().unwrap_or_default();
        let (mut replica, mut primary, mut saw_primary) = (0, 0, false);
        for s in
            servers.iter().filter(|s| s.get("database").and_then(Value::as_str).is_none_or(|d| d == database))
        {
            let reads = s.get("reads_routed").and_then(Value::as_u64).unwrap_or(0);
            if s.get("role").and_then(Value::as_str) == Some("primary") {
                saw_primary = true;
                primary += reads;
            } else {
                replica += reads;
            }
        }
        let primary = saw_primary.then_some(primary);
        let total = replica + primary.unwrap_or(0);
        ReadSplit {
            available: true,
            reads_replica: Some(replica),
            reads_primary: primary,
            replica_share: (primary.is_some() && total > 0).then(|| replica as f64 / total as f64),
            error: None,
        }
    }
}

/// The result cache, from GET /api/v1/cache/stats.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheUse {
    /// False when this build has no cache statistics endpoint; the figures are then null.
    pub available: bool,
    pub enabled: Option<bool>,
    pub hits: Option<u64>,
    pub misses: Option<u64>,
    pub hit_rate: Option<f64>,
    pub error: Option<String>,
}

impl CacheUse {
    pub async fn fetch(http: SocketAddr) -> CacheUse {
        match get_json(http, CACHE_STATS).await {
            Ok(None) => CacheUse::default(),
            Ok(Some(v)) => {
                let hits = v.get("hits").and_then(Value::as_u64);
                let misses = v.get("misses").and_then(Value::as_u64);
                let computed = match (hits, misses) {
                    (Some(h), Some(m)) if h + m > 0 => Some(h as f64 / (h + m) as f64),
                    _ => None,
                };
                CacheUse {
                    available: true,
                    enabled: v.get("enabled").and_then(Value::as_bool),
                    hits,
                    misses,
                    hit_rate: v.get("hit_rate").and_then(Value::as_f64).or(computed),
                    error: None,
                }
            }
            Err(e) => CacheUse { available: true, error: Some(format!("{e:#}")), ..Default::default() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_split_by_role() {
        let v = serde_json::json!({"replicas": [
            {"database": "demo", "server": "127.0.0.1:1", "role": "primary", "reads_routed": 30},
            {"database": "demo", "server": "127.0.0.1:2", "role": "replica", "reads_routed": 70},
            {"database": "other", "server": "127.0.0.1:3", "role": "replica", "reads_routed": 5},
        ]});
        let split = ReadSplit::from_json(&v, "demo");
        assert_eq!((split.reads_replica, split.reads_primary), (Some(70), Some(30)));
        assert!((split.replica_share.unwrap() - 0.7).abs() < 1e-9);
        let only_replicas =
            serde_json::json!({"replicas": [{"database": "demo", "role": "replica", "reads_routed": 4}]});
        let split = ReadSplit::from_json(&only_replicas, "demo");
        assert_eq!((split.reads_replica, split.reads_primary, split.replica_share), (Some(4), None, None));
    }

    #[test]
    fn utilization_is_the_busiest_pools() {
        let pool = |active, size| PoolEntry { servers_active: active, pool_size: size, ..Default::default() };
        let s = PoolSnapshot { pools: vec![pool(2, 8), pool(6, 8)] };
        assert!((s.utilization() - 0.75).abs() < 1e-9);
        assert_eq!(PoolSnapshot::default().utilization(), 0.0);
    }
}
