//! `[cache]` (the gateway-wide result cache: memory budget, Redis) and `[databases.NAME.cache]`
//! (opt-in per database, default TTL, rules by table, fingerprint or hint).

use serde::{Deserialize, Serialize};

use super::duration::Secs;

/// `[cache]`: settings shared by every database's cached results.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheGlobal {
    /// Bytes of results kept in memory (all databases together).
    pub max_bytes: u64,
    /// A result larger than this is never cached.
    pub max_entry_bytes: u64,
    /// How long a miss waits for another client's fill of the same result before going to the server.
    pub fill_wait: Secs,
    /// Redis (redis:// or rediss://) shared by pgpilot instances: results (L2) and invalidations.
    pub redis_url: Option<String>,
    /// Share results through Redis too (the second tier), not only invalidations.
    pub redis_results: bool,
    /// `redis_url` names a node of a Redis Cluster: results go to the node that owns each key
    /// (the others are found from it), invalidations through cluster-wide pub/sub.
    pub redis_cluster: bool,
}

impl Default for CacheGlobal {
    fn default() -> Self {
        CacheGlobal {
            max_bytes: 64 << 20,
            max_entry_bytes: 1 << 20,
            fill_wait: Secs::from_secs(2),
            redis_url: None,
            redis_results: true,
            redis_cluster: false,
        }
    }
}

/// How fresh a hit must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Invalidation by notification: writes through this pgpilot are seen at once, others after the
    /// notification delay.
    #[default]
    Bounded,
    /// A hit first checks the versions of its tables with the shared store.
    Strict,
}

impl Consistency {
    pub fn as_str(&self) -> &'static str {
        match self {
            Consistency::Bounded => "bounded",
            Consistency::Strict => "strict",
        }
    }
}

/// `[databases.NAME.cache]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseCache {
    /// Results of this database are cached only when enabled.
    pub enabled: bool,
    /// Time to live of a result no rule or hint gives a TTL.
    pub ttl: Secs,
    pub consistency: Consistency,
    /// Cache only statements a rule or a `pgpilot:cache` hint names (otherwise every cacheable read).
    pub only_rules: bool,
    /// Inside explicit transactions: `never` (the default), or `read_only` — reads inside a
    /// `BEGIN READ ONLY` transaction at READ COMMITTED are answered and filled like reads outside
    /// one (each of its statements sees every earlier commit, and it cannot have written anything).
    pub in_transactions: InTransactions,
    pub rules: Vec<CacheRule>,
}

/// Whether reads inside explicit transactions use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InTransactions {
    #[default]
    Never,
    ReadOnly,
}

impl DatabaseCache {
    pub fn is_default(&self) -> bool {
        *self == DatabaseCache::default()
    }
}

impl Default for DatabaseCache {
    fn default() -> Self {
        DatabaseCache {
            enabled: false,
            ttl: Secs::from_secs(300),
            consistency: Consistency::Bounded,
            only_rules: false,
            in_transactions: InTransactions::Never,
            rules: Vec::new(),
        }
    }
}

/// One rule: matches a read of any of `tables`, or a statement `fingerprint` (hex, as SHOW QUERIES
/// and the insight API print it). The first matching rule wins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CacheRule {
    pub tables: Vec<String>,
    pub fingerprint: Option<String>,
    pub ttl: Option<Secs>,
    pub tags: Vec<String>,
    pub consistency: Option<Consistency>,
    /// `cache = false`: never cache what this rule matches.
    pub cache: Option<bool>,
}

impl CacheRule {
    pub fn fingerprint_value(&self) -> Option<u64> {
        let f = self.fingerprint.as_deref()?;
        u64::from_str_radix(f.trim_start_matches("0x"), 16).ok()
    }
}

/// Problems with the cache settings, each naming the setting.
pub fn problems(global: &CacheGlobal, databases: &[(&str, &DatabaseCache)]) -> Vec<String> {
    let mut out = Vec::new();
    if global.max_entry_bytes == 0 || global.max_entry_bytes > global.max_bytes {
        out.push("[cache] max_entry_bytes must be between 1 and max_bytes".into());
    }
    if let Some(url) = &global.redis_url {
        if !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("redis+unix://"))
        {
            out.push(format!("[cache] redis_url {url:?} must start with redis:// or rediss://"));
        }
    }
    match &global.redis_url {
        None if global.redis_cluster => {
            out.push("[cache] redis_cluster needs redis_url (any node of the cluster)".into())
        }
        Some(url) if global.redis_cluster && url.starts_with("redis+unix://") => {
            out.push("[cache] redis_cluster needs a TCP redis_url, not a unix socket".into())
        }
        _ => {}
    }
    for (name, db) in databases {
        if db.enabled && db.ttl.get().is_zero() {
            out.push(format!("[databases.{name}.cache] ttl must be more than 0 s"));
        }
        for (i, r) in db.rules.iter().enumerate() {
            if r.tables.is_empty() && r.fingerprint.is_none() {
                out.push(format!("[databases.{name}.cache] rules[{i}] needs tables or fingerprint"));
            }
            if r.fingerprint.is_some() && r.fingerprint_value().is_none() {
                out.push(format!("[databases.{name}.cache] rules[{i}] fingerprint must be hexadecimal"));
            }
            if r.ttl.is_some_and(|t| t.get().is_zero()) {
                out.push(format!("[databases.{name}.cache] rules[{i}] ttl must be more than 0 s"));
            }
        }
    }
    out
}
