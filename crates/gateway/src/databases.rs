//! Logical databases (what clients name at login) and their pools, one set per server user.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::config::{Config, DatabaseConfig, ServerTlsMode, ServerUrl};
use crate::pool::{ConnectionLimit, Pool, PoolId, PoolLimits, PoolSettings, SecretSource, ServerTarget};

/// The pools of one (database, server user): the primary's and each replica's.
pub struct PoolSet {
    pub primary: Arc<Pool>,
    pub replicas: Vec<Arc<Pool>>,
}

impl PoolSet {
    pub fn all(&self) -> impl Iterator<Item = &Arc<Pool>> {
        std::iter::once(&self.primary).chain(self.replicas.iter())
    }
}

pub struct Database {
    pub name: Arc<str>,
    pub config: DatabaseConfig,
    pub primary: ServerUrl,
    pub replicas: Vec<ServerUrl>,
    /// max_db_connections across this database's pools.
    pub limit: Arc<ConnectionLimit>,
    pools: Mutex<HashMap<String, Arc<PoolSet>>>,
    /// PAUSE: no new transactions start until RESUME.
    pub paused: watch::Sender<bool>,
    /// DISABLE: new clients are refused.
    pub disabled: AtomicBool,
}

impl Database {
    pub fn new(name: &str, config: DatabaseConfig, max_connections: usize) -> Result<Database, String> {
        let primary = config.primary_url().map_err(|e| format!("[databases.{name}] primary: {e}"))?;
        let replicas = config
            .replicas
            .iter()
            .map(|r| ServerUrl::parse(r.url()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("[databases.{name}] replicas: {e}"))?;
        Ok(Database {
            name: Arc::from(name),
            config,
            primary,
            replicas,
            limit: Arc::new(ConnectionLimit::new(max_connections)),
            pools: Mutex::new(HashMap::new()),
            paused: watch::Sender::new(false),
            disabled: AtomicBool::new(false),
        })
    }

    /// The server user for a client user: the database's forced user (its `user` setting, or the
    /// user in its primary URL), else the client's own.
    pub fn server_user<'a>(&'a self, client_user: &'a str) -> &'a str {
        self.config.user.as_deref().or(self.primary.user.as_deref()).unwrap_or(client_user)
    }

    /// Whether a reload can keep this database's pools: same servers, same forced user.
    pub fn same_servers(&self, other: &DatabaseConfig) -> bool {
        self.config.primary == other.primary
            && self.config.user == other.user
            && self.config.replicas.iter().map(|r| r.url()).eq(other.replicas.iter().map(|r| r.url()))
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Relaxed)
    }

    pub fn pool_sets(&self) -> Vec<Arc<PoolSet>> {
        self.pools.lock().values().cloned().collect()
    }

    /// The pools for `server_user`, created on first use.
    pub fn pools_for(&self, server_user: &str, ctx: &PoolContext<'_>) -> Arc<PoolSet> {
        let mut pools = self.pools.lock();
        if let Some(set) = pools.get(server_user) {
            return set.clone();
        }
        let limits = PoolLimits { database: self.limit.clone(), user: ctx.user_limit.clone() };
        let make = |url: &ServerUrl| {
            let tls_mode = url
                .sslmode
                .as_deref()
                .and_then(ServerTlsMode::parse)
                .unwrap_or(ctx.config.tls.server_tls_sslmode);
            let target = ServerTarget {
                database: self.name.to_string(),
                url: url.clone(),
                user: server_user.to_string(),
                tls_mode,
            };
            let id = PoolId {
                database: self.name.clone(),
                user: Arc::from(server_user),
                server: Arc::from(url.address()),
            };
            let settings = PoolSettings::resolve(ctx.config, &self.config, server_user);
            Pool::new(id, target, settings, ctx.secrets.clone(), ctx.connector.clone(), limits.clone())
        };
        let set = Arc::new(PoolSet {
            primary: make(&self.primary),
            replicas: self.replicas.iter().map(make).collect(),
        });
        pools.insert(server_user.to_string(), set.clone());
        set
    }

    /// Applies reloaded settings to existing pools.
    pub fn update_settings(&self, config: &Config, db: &DatabaseConfig) {
        self.limit.set_max(db.max_db_connections.unwrap_or(config.pgpilot.max_db_connections));
        for (user, set) in self.pools.lock().iter() {
            let settings = Arc::new(PoolSettings::resolve(config, db, user));
            for pool in set.all() {
                pool.settings.store(settings.clone());
            }
        }
    }

    pub fn retire(&self) {
        for set in self.pools.lock().values() {
            set.all().for_each(|p| p.retire());
        }
    }
}

/// What building a pool needs from the gateway.
pub struct PoolContext<'a> {
    pub config: &'a Config,
    pub secrets: Arc<dyn SecretSource>,
    pub connector: Option<Arc<tokio_rustls::TlsConnector>>,
    pub user_limit: Arc<ConnectionLimit>,
}
