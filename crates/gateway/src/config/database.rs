//! `[databases.NAME]`: where a logical database lives (a primary and its replicas) and its pool overrides.

use serde::{Deserialize, Serialize};

use super::duration::Secs;
use super::general::PoolMode;
use super::one_or_many::OneOrMany;
use super::server_url::ServerUrl;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// postgres://[user[:password]@]host[:port]/dbname — a host starting with '/' is a Unix socket directory.
    pub primary: String,
    #[serde(default)]
    pub replicas: OneOrMany<ReplicaConfig>,
    /// Connect to the servers as this user whatever user the client logged in as (PgBouncer's forced user).
    pub user: Option<String>,
    /// Server password read from this file (trailing newline ignored).
    pub password_file: Option<std::path::PathBuf>,
    /// Server password read from this environment variable.
    pub password_env: Option<String>,
    /// auth_query for this database's clients (overrides `[pgpilot]`'s auth_user, auth_query, auth_dbname).
    pub auth_user: Option<String>,
    pub auth_query: Option<String>,
    pub auth_dbname: Option<String>,
    pub pool_size: Option<usize>,
    pub min_pool_size: Option<usize>,
    pub reserve_pool_size: Option<usize>,
    pub max_db_connections: Option<usize>,
    pub pool_mode: Option<PoolMode>,
    #[serde(default)]
    pub routing: RoutingConfig,
    /// The result cache for this database (off unless enabled).
    #[serde(default, skip_serializing_if = "super::cache::DatabaseCache::is_default")]
    pub cache: super::cache::DatabaseCache,
}

/// The name of the fallback database (PgBouncer's `*`): a client asking for a database without a
/// section of its own gets one made from it, named as the client asked.
pub const FALLBACK_DATABASE: &str = "*";

impl DatabaseConfig {
    pub fn primary_url(&self) -> Result<ServerUrl, String> {
        ServerUrl::parse(&self.primary)
    }

    /// The settings of the database `name` made from this fallback (`*`) section: its servers'
    /// URLs that name no database name `name`, as PgBouncer's `*` without `dbname=` does.
    pub fn for_client_database(&self, name: &str) -> DatabaseConfig {
        let mut db = self.clone();
        db.primary = with_database(&self.primary, name);
        for replica in db.replicas.0.iter_mut() {
            match replica {
                ReplicaConfig::Url(u) | ReplicaConfig::Detailed { url: u, .. } => *u = with_database(u, name),
            }
        }
        db
    }
}

/// `url` with database `name` when it names none; unchanged otherwise (and when it does not parse,
/// for validation to report).
fn with_database(url: &str, name: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.path().trim_start_matches('/').is_empty() => {
            u.set_path(&format!("/{}", super::server_url::percent_encode(name)));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// A replica: a URL, or a table with a weight and tags.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReplicaConfig {
    Url(String),
    Detailed {
        url: String,
        #[serde(default)]
        weight: ReplicaWeight,
        #[serde(default)]
        tags: Vec<String>,
    },
}

/// A replica's `weight` as written: any number is taken here, and validation refuses one that is
/// not a whole number from 0 up (a type serde refused would fail the whole replica entry with an
/// error that names neither the replica nor the weight).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct ReplicaWeight(f64);

impl ReplicaWeight {
    /// The weight, when a whole number from 0 to u32::MAX.
    pub fn whole(self) -> Option<u32> {
        (self.0.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&self.0)).then_some(self.0 as u32)
    }
}

impl Default for ReplicaWeight {
    fn default() -> Self {
        ReplicaWeight(1.0)
    }
}

impl From<u32> for ReplicaWeight {
    fn from(weight: u32) -> Self {
        ReplicaWeight(weight.into())
    }
}

impl std::fmt::Display for ReplicaWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for ReplicaWeight {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.whole() {
            Some(w) => s.serialize_u32(w),
            None => s.serialize_f64(self.0),
        }
    }
}

impl ReplicaConfig {
    pub fn url(&self) -> &str {
        match self {
            ReplicaConfig::Url(u) | ReplicaConfig::Detailed { url: u, .. } => u,
        }
    }

    /// The weight; 1 for one validation refuses (see [`ReplicaWeight`]).
    pub fn weight(&self) -> u32 {
        match self {
            ReplicaConfig::Url(_) => 1,
            ReplicaConfig::Detailed { weight, .. } => weight.whole().unwrap_or(1),
        }
    }

    /// The weight as written, when validation refuses it.
    pub fn invalid_weight(&self) -> Option<ReplicaWeight> {
        match self {
            ReplicaConfig::Detailed { weight, .. } if weight.whole().is_none() => Some(*weight),
            _ => None,
        }
    }

    pub fn tags(&self) -> &[String] {
        match self {
            ReplicaConfig::Url(_) => &[],
            ReplicaConfig::Detailed { tags, .. } => tags,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalance {
    #[default]
    RoundRobin,
    Random,
    LeastOutstanding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadYourWrites {
    Off,
    #[default]
    Session,
}

/// Whether the primary serves reads too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PrimaryReads {
    /// Reads go to replicas only (to the primary only when no replica qualifies).
    Off,
    /// Reads go to replicas; a read whose replica pool is full, while the primary's pool has a free
    /// server, runs on the primary instead of waiting. Low load stays on replicas.
    #[default]
    Overflow,
    /// The primary is one more read server, with `primary_read_weight` beside the replicas' weights.
    Share,
}

/// How reads are spread over replicas (see docs/routing-rules.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Send reads to replicas. Defaults to on when the database has replicas.
    pub read_write_split: Option<bool>,
    pub load_balance: LoadBalance,
    pub primary_reads: PrimaryReads,
    /// With `primary_reads = "overflow"`: reads spill to the primary only while fewer than this
    /// many of its connections are busy, so the primary keeps its capacity for writes.
    pub overflow_servers: usize,
    /// The primary's weight among read servers with `primary_reads = "share"`.
    pub primary_read_weight: u32,
    pub read_your_writes: ReadYourWrites,
    /// A replica further behind than this many bytes of WAL gets no reads.
    pub max_replica_lag_bytes: u64,
    /// A replica whose last replayed transaction is older than this (while the primary is writing) gets no reads.
    pub max_replica_lag: Secs,
    pub lag_check_interval: Secs,
    pub health_check_interval: Secs,
    pub ban_time: Secs,
    /// Rules sending some users or applications to replicas with a tag.
    pub tag_rules: Vec<TagRule>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            read_write_split: None,
            load_balance: LoadBalance::RoundRobin,
            primary_reads: PrimaryReads::Overflow,
            overflow_servers: 2,
            primary_read_weight: 1,
            read_your_writes: ReadYourWrites::Session,
            max_replica_lag_bytes: 16 << 20,
            max_replica_lag: Secs::from_secs(5),
            // Read-your-writes holds a client's reads on the primary until a sample of the primary
            // taken after its commit is replayed: the interval is most of that window.
            lag_check_interval: Secs::from_millis(100),
            health_check_interval: Secs::from_secs(1),
            ban_time: Secs::from_secs(10),
            tag_rules: Vec::new(),
        }
    }
}

/// `{ user = "analytics_user", tag = "analytics" }` or `{ application_name = "reports", tag = "reporting" }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagRule {
    pub user: Option<String>,
    pub application_name: Option<String>,
    pub tag: String,
}

/// `[users.NAME]`: PgBouncer's per-user settings.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub pool_mode: Option<PoolMode>,
    pub max_user_connections: Option<usize>,
}
