//! Logical databases (what clients name at login), their servers, and their pools: one pool per
//! (server, server user).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// The longest a client waits, right after start, for the monitor to find the primary.
const ROLES_CHECK_WAIT: Duration = Duration::from_secs(5);

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use pgpilot_sql::FunctionCatalog;
use tokio::sync::watch;

use crate::config::{Config, DatabaseConfig, ReadYourWrites, RoutingConfig, ServerUrl};
use crate::pool::{ConnectionLimit, Pool, PoolId, PoolLimits, PoolSettings, SecretSource, ServerTarget};
use crate::routing::backend::{Backend, Role};

/// The pools of one (database, server user), one per server, in the database's server order.
pub struct PoolSet {
    pub user: Arc<str>,
    pub pools: Vec<Arc<Pool>>,
    /// Clients logged in with this pool set.
    pub clients: AtomicUsize,
    /// The parameter values the last client logged in with: identical sets are shared, not copied.
    pub login_params: Mutex<crate::session::params::ParamSet>,
    /// Login settings a server of this pool set took (application_name left out), with the values
    /// it reported for them in its spelling: each set is tried once (session/welcome.rs).
    pub settings_taken: Mutex<Vec<(crate::session::params::ParamSet, crate::session::params::ParamSet)>>,
    /// Logins already worked out (session/login_memo.rs).
    pub logins: crate::session::login_memo::LoginMemo,
}

impl PoolSet {
    pub fn all(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.iter()
    }

    /// Clients to show against server `i`'s pool: the clients linked right now (or waiting) on a
    /// replica's row, every other logged-in client on the primary's (as PgBouncer shows
    /// cl_active), so that the rows add up to the clients there are.
    pub fn clients_of(&self, db: &Database, i: usize) -> usize {
        let primary = db.primary_index();
        // Linked to a replica's server or waiting for one (its cl_waiting).
        let on_replica = |p: &Pool| {
            let c = p.counts();
            c.active + c.waiting
        };
        if i != primary {
            return on_replica(&self.pools[i]);
        }
        let on_replicas: usize =
            self.pools.iter().enumerate().filter(|(j, _)| *j != primary).map(|(_, p)| on_replica(p)).sum();
        self.clients.load(Relaxed).saturating_sub(on_replicas)
    }
}

pub struct Database {
    pub name: Arc<str>,
    /// The database's settings, replaced by a reload that keeps its pools (SHOW DATABASES and
    /// pools made after the reload read them here).
    config: ArcSwap<DatabaseConfig>,
    /// The server user every client logs in as: the database's `user` setting, else the user in
    /// its primary URL. Fixed for the database's life: a reload that changes it makes a new one.
    pub forced_user: Option<String>,
    /// The configured primary's URL.
    pub primary: ServerUrl,
    pub replicas: Vec<ServerUrl>,
    /// Every server: the configured primary first, then the replicas. Which one *is* the primary
    /// is discovered (pg_is_in_recovery), so a failover needs no restart.
    pub backends: Vec<Arc<Backend>>,
    primary_index: AtomicUsize,
    pub routing: ArcSwap<RoutingConfig>,
    /// Volatility of the database's functions, for routing and caching.
    pub functions: ArcSwap<FunctionCatalog>,
    /// A client created, altered or dropped a function: the monitor reads the catalog again.
    functions_wanted: AtomicBool,
    /// The function catalog lists user operators, cast types or views that run volatile functions
    /// without naming them: a plain SELECT may then write, and is classified.
    implicit_writers: AtomicBool,
    /// max_db_connections across this database's pools.
    pub limit: Arc<ConnectionLimit>,
    pools: Mutex<HashMap<String, Arc<PoolSet>>>,
    /// PAUSE: no new transactions start until RESUME.
    pub paused: watch::Sender<bool>,
    /// DISABLE: new clients are refused.
    pub disabled: AtomicBool,
    /// Round-robin position among replicas.
    pub next_replica: AtomicUsize,
    /// The result cache's state for this database (settings, relation catalog, table versions).
    pub cache: crate::cache::DbCache,
    /// Whether the monitor has asked the servers which one is the primary. Until then the
    /// configured primary may be an old one back after a failover: nothing is routed.
    roles_checked: watch::Sender<bool>,
    roles_known: AtomicBool,
    /// Made from the `*` fallback section for a client that asked for it by name; forgotten
    /// after autodb_idle_timeout unused.
    pub made_from_fallback: bool,
    /// Since when a database made from the fallback has had no client.
    pub unused_since: Mutex<Option<std::time::Instant>>,
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
        let mut backends = vec![Arc::new(Backend::new(0, primary.clone(), true, 1, Vec::new()))];
        for (i, (url, r)) in replicas.iter().zip(config.replicas.iter()).enumerate() {
            backends.push(Arc::new(Backend::new(i + 1, url.clone(), false, r.weight(), r.tags().to_vec())));
        }
        backends[0].set_role(Role::Primary);
        let cache = crate::cache::DbCache::new(&config.cache);
        let forced_user = config.user.clone().or(primary.user.clone());
        // One server has no other to be mistaken for.
        let single = backends.len() == 1;
        Ok(Database {
            name: Arc::from(name),
            routing: ArcSwap::from_pointee(config.routing.clone()),
            config: ArcSwap::from_pointee(config),
            forced_user,
            primary,
            replicas,
            backends,
            primary_index: AtomicUsize::new(0),
            functions: ArcSwap::from_pointee(FunctionCatalog::default()),
            functions_wanted: AtomicBool::new(false),
            implicit_writers: AtomicBool::new(false),
            limit: Arc::new(ConnectionLimit::new(max_connections)),
            pools: Mutex::new(HashMap::new()),
            paused: watch::Sender::new(false),
            disabled: AtomicBool::new(false),
            next_replica: AtomicUsize::new(0),
            cache,
            roles_known: AtomicBool::new(single),
            roles_checked: watch::Sender::new(single),
            made_from_fallback: false,
            unused_since: Mutex::new(None),
        })
    }

    /// For a database made from the fallback: whether it has had no client for `limit` (its idle
    /// server connections do not count, as in PgBouncer); the clock starts at the first call that
    /// finds it so.
    pub fn unused_for(&self, limit: std::time::Duration) -> bool {
        let in_use = self
            .pool_sets()
            .iter()
            .any(|set| set.clients.load(Relaxed) > 0 || set.all().any(|p| p.counts().in_use > 0));
        let mut since = self.unused_since.lock();
        if in_use {
            *since = None;
            return false;
        }
        since.get_or_insert_with(std::time::Instant::now).elapsed() >= limit
    }

    /// The database's settings as last loaded.
    pub fn config(&self) -> arc_swap::Guard<Arc<DatabaseConfig>> {
        self.config.load()
    }

    /// "primary", "replica" or "unknown" for server `i`, as discovered.
    pub fn role_name(&self, i: usize) -> &'static str {
        self.backends[i].role().as_str()
    }

    /// Index of the server that is the primary now.
    pub fn primary_index(&self) -> usize {
        self.primary_index.load(Relaxed)
    }

    /// Right after start (or a reconfiguration) the configured primary may be an old one back
    /// after a failover: waits, a little at most, until the monitor has found the real one.
    pub async fn wait_roles_checked(&self) {
        // An atomic first: every request asks, and the channel's borrow takes a lock.
        if self.roles_known.load(Relaxed) {
            return;
        }
        let mut checked = self.roles_checked.subscribe();
        let _ = tokio::time::timeout(ROLES_CHECK_WAIT, checked.wait_for(|c| *c)).await;
    }

    /// Function DDL ran through pgpilot: the catalog is read again soon, and until then calls of
    /// functions outside pg_catalog go to the primary (the DDL may have made them write, and other
    /// clients call them the moment it returns).
    pub fn want_functions(&self) {
        self.functions.store(Arc::new(self.functions.load().outdated()));
        self.functions_wanted.store(true, Relaxed);
    }

    pub fn take_functions_wanted(&self) -> bool {
        self.functions_wanted.swap(false, Relaxed)
    }

    /// A function catalog just read.
    pub fn set_functions(&self, catalog: FunctionCatalog) {
        // Either way a plain SELECT must be parsed: for what it runs unseen, or what it reads.
        let must_parse = catalog.has_implicit_writers() || catalog.has_standby_unreadable();
        self.implicit_writers.store(must_parse, Relaxed);
        self.functions.store(Arc::new(catalog));
    }

    /// Whether a single SELECT that calls no function by name (the quick scan's `plain_select`)
    /// surely runs no volatile function: true unless the database has user operators, casts or
    /// views that run volatile functions unseen (then such a SELECT is classified). One relaxed
    /// load on the hot path.
    pub fn plain_selects_only_read(&self) -> bool {
        !self.implicit_writers.load(Relaxed)
    }

    /// The monitor has asked the servers which one is the primary.
    pub fn roles_now_checked(&self) {
        if !self.roles_known.swap(true, Relaxed) {
            self.roles_checked.send_replace(true);
        }
    }

    pub fn set_primary_index(&self, i: usize) {
        self.primary_index.store(i, Relaxed);
    }

    /// Whether reads may go to replicas.
    pub fn splits_reads(&self) -> bool {
        self.routing.load().read_write_split.unwrap_or(!self.replicas.is_empty()) && self.backends.len() > 1
    }

    pub fn read_your_writes(&self) -> bool {
        self.routing.load().read_your_writes == ReadYourWrites::Session
    }

    /// The server user for a client user: the database's forced user (its `user` setting, or the
    /// user in its primary URL), else the client's own.
    pub fn server_user<'a>(&'a self, client_user: &'a str) -> &'a str {
        self.forced_user.as_deref().unwrap_or(client_user)
    }

    /// Whether a reload can keep this database's pools: same servers, same forced user (the
    /// replicas' weights and tags may differ: `update_settings` applies them in place).
    pub fn same_servers(&self, other: &DatabaseConfig) -> bool {
        let config = self.config.load();
        config.primary == other.primary
            && config.user == other.user
            && config.replicas.iter().map(|r| r.url()).eq(other.replicas.iter().map(|r| r.url()))
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Relaxed)
    }

    /// The pools of each user, in user name order (as SHOW POOLS lists them).
    pub fn pool_sets(&self) -> Vec<Arc<PoolSet>> {
        let pools = self.pools.lock();
        let mut users: Vec<(&String, &Arc<PoolSet>)> = pools.iter().collect();
        users.sort_unstable_by(|a, b| a.0.cmp(b.0));
        users.into_iter().map(|(_, set)| set.clone()).collect()
    }

    /// Drops the pools of a user whose logins never reached the server (a name the server does
    /// not know, let in by trust) once nobody uses them: a stream of unknown names must not grow
    /// SHOW POOLS and memory without bound. Pools that ever had a server stay, with their counters,
    /// and so do refusals for server_login_retry (the server is not asked again before).
    pub fn drop_failed_pool_sets(&self) {
        self.pools.lock().retain(|_, set| {
            let never_connected = set.all().all(|p| {
                p.counts().total == 0
                    && p.startup_params.load().is_none()
                    && p.last_error.lock().is_some()
                    && !p.login_recently_refused()
            });
            set.clients.load(Relaxed) > 0 || !never_connected
        });
    }

    /// The pools for `server_user`, created on first use.
    pub fn pools_for(&self, server_user: &str, ctx: &PoolContext<'_>) -> Arc<PoolSet> {
        let mut pools = self.pools.lock();
        if let Some(set) = pools.get(server_user) {
            return set.clone();
        }
        let limits = PoolLimits { database: self.limit.clone(), user: ctx.user_limit.clone() };
        let make = |b: &Arc<Backend>| {
            let url = &b.url;
            let tls = ctx.config.tls.for_server(url);
            let connector = ctx.connectors.for_server(&tls);
            // A database made from `*` logs in with the `*` section's password, as PgBouncer's.
            let secrets_of =
                if self.made_from_fallback { crate::config::FALLBACK_DATABASE } else { &self.name };
            let target = ServerTarget {
                database: secrets_of.to_string(),
                url: url.clone(),
                user: server_user.to_string(),
                tls_mode: tls.mode,
            };
            let id = PoolId {
                database: self.name.clone(),
                user: Arc::from(server_user),
                server: b.address.clone(),
            };
            let settings = PoolSettings::resolve(ctx.config, &self.config.load(), server_user);
            Pool::new(id, target, settings, ctx.secrets.clone(), connector, limits.clone())
        };
        let set = Arc::new(PoolSet {
            user: Arc::from(server_user),
            pools: self.backends.iter().map(make).collect(),
            clients: AtomicUsize::new(0),
            login_params: Mutex::new(Default::default()),
            settings_taken: Mutex::new(Vec::new()),
            logins: Default::default(),
        });
        pools.insert(server_user.to_string(), set.clone());
        set
    }

    /// Applies reloaded settings to existing pools.
    pub fn update_settings(&self, config: &Config, db: &DatabaseConfig) {
        self.limit.set_max(db.max_db_connections.unwrap_or(config.pgpilot.max_db_connections));
        self.routing.store(Arc::new(db.routing.clone()));
        self.cache.update(&db.cache);
        self.config.store(Arc::new(db.clone()));
        // Same servers (see same_servers): their weights and tags change in place.
        for (backend, replica) in self.backends[1..].iter().zip(db.replicas.iter()) {
            backend.set_balance(replica.weight(), replica.tags());
        }
        for (user, set) in self.pools.lock().iter() {
            let settings = Arc::new(PoolSettings::resolve(config, db, user));
            for pool in set.all() {
                pool.settings.store(settings.clone());
                pool.trim_to_size();
                pool.forget_login_refusal();
                pool.settings_changed();
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
    /// The TLS connectors; each server gets the one its effective sslmode asks for.
    pub connectors: Arc<crate::net::tls::ServerConnectors>,
    pub user_limit: Arc<ConnectionLimit>,
}
