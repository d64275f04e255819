//! State every session and task shares: the live config, databases, secrets, TLS, clients.
//! Config and database map sit behind ArcSwap so a reload never blocks a session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::Mutex;
use pgpilot_wire::{PgError, SqlState};
use tokio::sync::watch;

use crate::auth::{Secrets, UserList};
use crate::config::{ClientTlsMode, Config, DatabaseConfig, ServerTls, ServerUrl};
use crate::databases::{Database, PoolContext, PoolSet};
use crate::net::tls;
use crate::pool::ConnectionLimit;
use crate::registry::Registry;

/// Distinct statement texts kept classified.
const CLASSIFIER_CAPACITY: usize = 20_000;

/// Where the gateway is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// SIGTERM: no new clients; running transactions finish.
    Draining,
    /// Everything is closing now.
    Stopped,
}

pub struct Shared {
    pub config: ArcSwap<Config>,
    pub databases: ArcSwap<HashMap<String, Arc<Database>>>,
    pub registry: Arc<Registry>,
    pub secrets: Arc<Secrets>,
    pub tls_acceptor: ArcSwapOption<tokio_rustls::TlsAcceptor>,
    /// The port of the first listen address as bound (the console shows it as listen_port).
    pub listen_port: std::sync::atomic::AtomicU16,
    /// One TLS connector per certificate check the configured servers use (net::tls).
    pub server_tls: ArcSwap<tls::ServerConnectors>,
    pub phase: watch::Sender<Phase>,
    /// Global PAUSE (per-database pauses live on the database).
    pub paused: watch::Sender<bool>,
    pub started_at: SystemTime,
    pub stats_window: Mutex<crate::stats::StatsWindow>,
    /// Per-statement statistics, the slow-query log and what the server probe saw.
    pub insight: crate::insight::Insight,
    /// Statement classification, parsed once per distinct text.
    pub classifier: pgpilot_sql::Classifier,
    /// Generations of prepared statements whose result type changed (pool/statements.rs).
    pub statement_epochs: crate::pool::statements::StatementEpochs,
    /// The result cache (each database opts in).
    pub cache: crate::cache::ResultCache,
    /// Command-line overrides, re-applied on every reload.
    pub overrides: crate::config::QuickStart,
    /// Set by SHUTDOWN and signals; the gateway's main task watches it.
    pub shutdown_requested: tokio::sync::Notify,
    /// Passwords looked up with auth_query, cached.
    pub auth_query: crate::auth::query::AuthQuery,
    /// The advisor's latest reports (GET /api/v1/advisor/findings).
    pub advisor: crate::advisor::AdvisorCache,
    /// The maintenance scheduler, when `[[jobs]]` are configured (crate::jobs).
    pub jobs: ArcSwapOption<pgpilot_scheduler::SchedulerHandle>,
    /// Schedulers replaced by a reload whose runs may still be going; shutdown bounds them too.
    pub retired_jobs: Mutex<Vec<Arc<pgpilot_scheduler::SchedulerHandle>>>,
    user_limits: Mutex<HashMap<String, Arc<ConnectionLimit>>>,
    /// Memory of large client messages being received, across all clients.
    pub input_budget: crate::session::input_budget::InputBudget,
    /// Bumped whenever a reload or SET changes a client timeout: sessions woken take the new
    /// values (as PgBouncer's clients do), not only clients that log in later.
    pub timeouts_generation: std::sync::atomic::AtomicU32,
}

impl Shared {
    pub fn new(config: Config, overrides: crate::config::QuickStart) -> Result<Arc<Shared>, String> {
        let (userlist, passwords) = load_secrets(&config)?;
        let shared = Arc::new(Shared {
            config: ArcSwap::from_pointee(config.clone()),
            databases: ArcSwap::from_pointee(HashMap::new()),
            registry: Arc::new(Registry::default()),
            secrets: Secrets::new(userlist, passwords),
            tls_acceptor: ArcSwapOption::empty(),
            listen_port: std::sync::atomic::AtomicU16::new(0),
            server_tls: ArcSwap::from_pointee(tls::ServerConnectors::default()),
            phase: watch::Sender::new(Phase::Running),
            paused: watch::Sender::new(false),
            started_at: SystemTime::now(),
            stats_window: Mutex::new(Default::default()),
            insight: crate::insight::Insight::new(&config.insight),
            classifier: pgpilot_sql::Classifier::new(CLASSIFIER_CAPACITY),
            statement_epochs: Default::default(),
            cache: crate::cache::ResultCache::new(&config.cache),
            overrides,
            shutdown_requested: tokio::sync::Notify::new(),
            auth_query: Default::default(),
            advisor: Default::default(),
            jobs: ArcSwapOption::empty(),
            retired_jobs: Mutex::new(Vec::new()),
            user_limits: Mutex::new(HashMap::new()),
            input_budget: Default::default(),
            timeouts_generation: Default::default(),
        });
        shared.apply(config)?;
        Ok(shared)
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Applies a (re)loaded config: TLS, secrets, databases. Pools of unchanged databases keep
    /// their connections and clients; removed or re-pointed databases are retired.
    pub fn apply(&self, config: Config) -> Result<(), String> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let acceptor = match config.tls.client_tls_sslmode {
            ClientTlsMode::Disable => None,
            _ => Some(Arc::new(tls::client_acceptor(
                config.tls.client_tls_cert_file.as_deref().unwrap(),
                config.tls.client_tls_key_file.as_deref().unwrap(),
            )?)),
        };
        let connectors = Arc::new(build_connectors(&config)?);
        let (userlist, passwords) = load_secrets(&config)?;
        let old = self.databases.load_full();
        // A server connection's TLS mode is fixed when its pool is made: a new mode needs new pools.
        let same_server_tls = self.config.load().tls.server_tls_sslmode == config.tls.server_tls_sslmode;
        let mut next = HashMap::new();
        // Databases made from the `*` fallback stay while it does, made anew if it changed.
        let fallback_made = old.values().filter(|db| db.made_from_fallback).map(|db| db.name.to_string());
        let names: Vec<String> = config
            .databases
            .keys()
            .filter(|name| *name != crate::config::FALLBACK_DATABASE)
            .cloned()
            .chain(fallback_made.filter(|name| !config.databases.contains_key(name)))
            .collect();
        for name in names {
            let Some(db_config) = config.database_config(&name) else { continue };
            let made_from_fallback = !config.databases.contains_key(&name);
            match old.get(&name) {
                Some(db)
                    if same_server_tls
                        && db.same_servers(&db_config)
                        && db.made_from_fallback == made_from_fallback =>
                {
                    db.update_settings(&config, &db_config);
                    next.insert(name, db.clone());
                }
                _ => {
                    let db = make_database(&config, &name, db_config.into_owned())?;
                    next.insert(name, Arc::new(db));
                }
            }
        }
        for (name, db) in old.iter() {
            if !next.get(name).is_some_and(|n| Arc::ptr_eq(n, db)) {
                db.retire();
            }
        }
        for db in next.values() {
            for set in db.pool_sets() {
                set.all().for_each(|p| {
                    p.set_connector(connectors.for_server(&config.tls.for_server(&p.target.url)))
                });
            }
        }
        for (user, limit) in self.user_limits.lock().iter() {
            limit.set_max(user_max(&config, user));
        }
        self.secrets.replace(userlist, passwords);
        // auth_user's password or the query may have changed: look users up afresh.
        self.auth_query.clear();
        self.tls_acceptor.store(acceptor);
        self.server_tls.store(connectors);
        self.databases.store(Arc::new(next));
        self.insight.configure(&config.insight);
        self.cache.configure(&config.cache);
        let timeouts_changed = client_timeouts(&self.config.load()) != client_timeouts(&config);
        self.config.store(Arc::new(config));
        self.tell_clients(&old, timeouts_changed);
        Ok(())
    }

    /// After a reload: clients of a removed database are closed (57P01) at their next transaction
    /// boundary, and, when client timeouts changed, every session is woken to take them.
    fn tell_clients(&self, old: &HashMap<String, Arc<Database>>, timeouts_changed: bool) {
        let databases = self.databases.load();
        let removed: Vec<&str> =
            old.keys().filter(|name| !databases.contains_key(*name)).map(String::as_str).collect();
        if removed.is_empty() && !timeouts_changed {
            return;
        }
        if timeouts_changed {
            self.timeouts_generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        for client in self.registry.all() {
            if removed.contains(&&**client.database.lock()) {
                client.request_close(false);
            } else if timeouts_changed {
                client.wake.raise();
            }
        }
    }

    /// The TLS connector for the server at `url`, checking its certificate as its effective
    /// sslmode (the URL's, else `[tls]`) asks.
    pub fn server_connector(&self, url: &ServerUrl) -> Option<Arc<tokio_rustls::TlsConnector>> {
        self.server_tls.load().for_server(&self.config.load().tls.for_server(url))
    }

    /// Every database, in name order (as PgBouncer's console lists them).
    pub fn databases_by_name(&self) -> Vec<(String, Arc<Database>)> {
        let mut all: Vec<(String, Arc<Database>)> =
            self.databases.load().iter().map(|(name, db)| (name.clone(), db.clone())).collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn database(&self, name: &str) -> Option<Arc<Database>> {
        self.databases.load().get(name).cloned()
    }

    /// Applies `inv` to the cached results of `db` and of its aliases (other entries whose primary
    /// is the same PostgreSQL database: a write through one outdates what the others read);
    /// returns how many invalidations `db` itself took.
    pub fn invalidate_cached(&self, db: &Database, inv: &crate::cache::Invalidation) -> u64 {
        let n = db.cache.apply(inv);
        let same = |other: &Database| {
            other.primary.port == db.primary.port
                && other.primary.host == db.primary.host
                && other.primary.dbname == db.primary.dbname
        };
        for alias in self.databases.load().values().filter(|o| o.name != db.name && same(o)) {
            alias.cache.apply(inv);
        }
        n
    }

    /// The database `name`, or one made for it from the `*` fallback section, not yet kept: the
    /// client's login makes it known with [`Shared::keep_database`], so clients that never log in
    /// add nothing.
    pub fn database_or_fallback(&self, name: &str) -> Option<Arc<Database>> {
        if let Some(db) = self.database(name) {
            return Some(db);
        }
        let config = self.config.load();
        if config.databases.contains_key(name) {
            // Its own section, not in the map yet: a reload in flight, not the fallback's to make.
            return None;
        }
        let db_config = config.database_config(name)?;
        match make_database(&config, name, db_config.into_owned()) {
            Ok(db) => Some(Arc::new(db)),
            Err(e) => {
                tracing::warn!(database = name, error = %e, "cannot make a database from the \"*\" section");
                None
            }
        }
    }

    /// Keeps a database made from the fallback; another client's, made meanwhile, wins.
    pub fn keep_database(&self, db: Arc<Database>) -> Arc<Database> {
        self.databases.rcu(|dbs| {
            let mut dbs = HashMap::clone(dbs);
            dbs.entry(db.name.to_string()).or_insert_with(|| db.clone());
            dbs
        });
        self.database(&db.name).unwrap_or(db)
    }

    /// Forgets the databases made from the fallback that nobody used for autodb_idle_timeout.
    pub fn forget_unused_fallback_databases(&self) {
        let limit = self.config.load().pgpilot.autodb_idle_timeout.get();
        let unused: Vec<Arc<str>> = self
            .databases
            .load()
            .values()
            .filter(|db| db.made_from_fallback && db.unused_for(limit))
            .map(|db| db.name.clone())
            .collect();
        if unused.is_empty() {
            return;
        }
        let mut gone = Vec::new();
        self.databases.rcu(|dbs| {
            let mut dbs = HashMap::clone(dbs);
            gone = unused.iter().filter_map(|name| dbs.remove(&**name)).collect();
            dbs
        });
        for db in gone {
            tracing::info!(database = %db.name, "a database made from \"*\" went unused for autodb_idle_timeout: forgotten");
            db.retire();
        }
    }

    /// The pools a client of `database` logged in as `client_user` uses.
    pub fn pools_for(
        &self,
        database: &str,
        client_user: &str,
    ) -> Result<(Arc<Database>, Arc<PoolSet>), PgError> {
        let db = self.database(database).ok_or_else(|| {
            PgError::fatal(SqlState::INVALID_CATALOG_NAME, format!("no such database: {database}"))
        })?;
        let config = self.config.load();
        let server_user = db.server_user(client_user).to_string();
        let ctx = PoolContext {
            config: &config,
            secrets: self.secrets.clone(),
            connectors: self.server_tls.load_full(),
            user_limit: self.user_limit(&config, &server_user),
        };
        let set = db.pools_for(&server_user, &ctx);
        Ok((db, set))
    }

    fn user_limit(&self, config: &Config, user: &str) -> Arc<ConnectionLimit> {
        self.user_limits
            .lock()
            .entry(user.to_string())
            .or_insert_with(|| Arc::new(ConnectionLimit::new(user_max(config, user))))
            .clone()
    }
}

/// Connectors for every configured server's effective TLS settings, and for `[tls]`'s own (jobs
/// and other connections to servers not named by a database URL use those).
fn build_connectors(config: &Config) -> Result<tls::ServerConnectors, String> {
    let t = &config.tls;
    let mut servers: Vec<ServerTls> = config
        .databases
        .values()
        .flat_map(|d| std::iter::once(d.primary.as_str()).chain(d.replicas.iter().map(|r| r.url())))
        .filter_map(|u| ServerUrl::parse(u).ok())
        .map(|u| t.for_server(&u))
        .collect();
    let global = t.for_other_servers();
    // The global settings may be unusable (verify without a CA) when every URL overrides them.
    if tls::CertCheck::for_server(&global).is_ok() {
        servers.push(global);
    }
    let client_cert = t.server_tls_cert_file.as_deref().zip(t.server_tls_key_file.as_deref());
    tls::ServerConnectors::build(&servers, client_cert)
}

fn user_max(config: &Config, user: &str) -> usize {
    config.users.get(user).and_then(|u| u.max_user_connections).unwrap_or(config.pgpilot.max_user_connections)
}

/// The database `name` of `config`, from `db_config`: its own section's settings, or those made
/// for it from the `*` fallback.
fn make_database(config: &Config, name: &str, db_config: DatabaseConfig) -> Result<Database, String> {
    let max = db_config.max_db_connections.unwrap_or(config.pgpilot.max_db_connections);
    let mut db = Database::new(name, db_config, max)?;
    db.made_from_fallback = !config.databases.contains_key(name);
    Ok(db)
}

/// The timeouts a session applies to its client (read at login, and again when they change):
/// client_idle_timeout, idle_transaction_timeout, query_timeout.
pub(crate) fn client_timeouts(config: &Config) -> [Option<std::time::Duration>; 3] {
    let g = &config.pgpilot;
    [g.client_idle_timeout.enabled(), g.idle_transaction_timeout.enabled(), g.query_timeout.enabled()]
}

/// The auth_file and the per-database server passwords (password_file, password_env, URL).
pub(crate) fn load_secrets(config: &Config) -> Result<(UserList, HashMap<String, String>), String> {
    let userlist = match &config.pgpilot.auth_file {
        Some(path) => UserList::load(path)?,
        None => UserList::default(),
    };
    let mut passwords = HashMap::new();
    for (name, db) in &config.databases {
        let password = if let Some(file) = &db.password_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("[databases.{name}] password_file {}: {e}", file.display()))?;
            Some(text.trim_end_matches(['\n', '\r']).to_string())
        } else if let Some(var) = &db.password_env {
            Some(
                std::env::var(var)
                    .map_err(|_| format!("[databases.{name}] password_env: ${var} is not set"))?,
            )
        } else {
            db.primary_url().ok().and_then(|u| u.password)
        };
        if let Some(p) = password {
            passwords.insert(name.clone(), p);
        }
    }
    Ok((userlist, passwords))
}
