//! auth_query: passwords of users missing from the auth_file looked up in the database, as
//! PgBouncer does. pgpilot logs in to the database's primary as `auth_user` (its password from the
//! auth_file, the database's configured password when it is that user, or PGPASSWORD) over one
//! kept connection per (database, auth_user), and runs `auth_query` with the client's user name
//! as `$1`. The answer — an md5 hash or SCRAM verifier from pg_shadow — is what the client is
//! checked against, then what the pools log in with (md5) or the SCRAM key the client proved.
//!
//! Answers are cached for `auth_query_cache_ttl`, unknown users for the shorter
//! `auth_query_negative_ttl`, so a burst of logins (or of bogus ones) costs one query. A user
//! found nowhere gets the same exchange and the same error as a wrong password.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pgpilot_wire::auth::Secret;
use pgpilot_wire::{PgError, SqlState};

use crate::config::{Config, ServerUrl};
use crate::databases::Database;
use crate::insight::pgclient::PgConn;
use crate::pool::{ServerSecret, ServerTarget};
use crate::shared::Shared;

/// PgBouncer's default.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1";
/// The application_name of the lookup connections.
const APPLICATION_NAME: &str = "pgpilot-auth";
/// Cached answers kept at most (oldest dropped first), so bogus user names cannot grow memory.
const MAX_CACHED: usize = 10_000;

/// Where and how one database's users are looked up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LookupSettings {
    pub auth_user: String,
    pub query: String,
    /// The `[databases.NAME]` whose primary the query runs on.
    pub database: String,
}

impl LookupSettings {
    /// The settings for clients of `database`, when auth_query applies to it (per-database values
    /// win over `[pgpilot]`'s).
    pub fn for_database(config: &Config, database: &str) -> Option<LookupSettings> {
        let db = config.database_config(database)?;
        let g = &config.pgpilot;
        let auth_user = db.auth_user.clone().or_else(|| g.auth_user.clone())?;
        Some(LookupSettings {
            auth_user,
            query: db
                .auth_query
                .clone()
                .or_else(|| g.auth_query.clone())
                .unwrap_or_else(|| DEFAULT_AUTH_QUERY.into()),
            database: db
                .auth_dbname
                .clone()
                .or_else(|| g.auth_dbname.clone())
                .unwrap_or_else(|| database.to_string()),
        })
    }
}

struct Cached {
    secret: Option<Secret>,
    expires: Instant,
}

type ConnSlot = Arc<tokio::sync::Mutex<Option<PgConn>>>;

#[derive(Default)]
pub struct AuthQuery {
    cache: Mutex<HashMap<(LookupSettings, String), Cached>>,
    connections: Mutex<HashMap<(LookupSettings, String), ConnSlot>>,
    /// Queries sent to a database (cache misses), for metrics and tests.
    queries: AtomicU64,
}

impl AuthQuery {
    pub fn queries(&self) -> u64 {
        self.queries.load(Relaxed)
    }

    /// Forgets cached answers and lookup connections (after a reload changed the settings).
    pub fn clear(&self) {
        self.cache.lock().clear();
        self.connections.lock().clear();
    }

    fn cached(&self, key: &(LookupSettings, String)) -> Option<Option<Secret>> {
        let cache = self.cache.lock();
        cache.get(key).filter(|c| c.expires > Instant::now()).map(|c| c.secret.clone())
    }

    fn remember(&self, key: (LookupSettings, String), secret: Option<Secret>, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED {
            let now = Instant::now();
            cache.retain(|_, c| c.expires > now);
            if cache.len() >= MAX_CACHED {
                if let Some(oldest) = cache.iter().min_by_key(|(_, c)| c.expires).map(|(k, _)| k.clone()) {
                    cache.remove(&oldest);
                }
            }
        }
        cache.insert(key, Cached { secret, expires: Instant::now() + ttl });
    }
}

/// The secret of a `user` missing from the auth_file, when auth_query applies to `db` (the admin
/// console, None, uses the auth_file only). None: unknown user.
pub async fn queried_secret(
    shared: &Shared,
    db: Option<&Database>,
    user: &str,
) -> Result<Option<Secret>, PgError> {
    let Some(db) = db else { return Ok(None) };
    let config = shared.config.load_full();
    let Some(settings) = LookupSettings::for_database(&config, &db.name) else { return Ok(None) };
    let g = &config.pgpilot;
    let key = (settings, user.to_string());
    if let Some(hit) = shared.auth_query.cached(&key) {
        return Ok(hit);
    }
    let slot = {
        let mut connections = shared.auth_query.connections.lock();
        let primary = config.databases.get(&key.0.database).map(|d| d.primary.clone()).unwrap_or_default();
        connections.entry((key.0.clone(), primary)).or_default().clone()
    };
    // One query at a time per lookup connection; whoever waited may find the answer cached.
    let mut conn = slot.lock().await;
    if let Some(hit) = shared.auth_query.cached(&key) {
        return Ok(hit);
    }
    let secret = lookup(shared, &config, &key.0, user, &mut conn).await.map_err(|e| {
        tracing::warn!(database = %key.0.database, auth_user = %key.0.auth_user, error = %e, "auth_query failed");
        PgError::fatal(
            SqlState::CONNECTION_FAILURE,
            "pgpilot could not look up the password (auth_query failed; see pgpilot's log)",
        )
    })?;
    let ttl = if secret.is_some() { g.auth_query_cache_ttl.get() } else { g.auth_query_negative_ttl.get() };
    shared.auth_query.remember(key, secret.clone(), ttl);
    Ok(secret)
}

/// Runs the query on the kept connection, opening it first if needed; a connection that fails is
/// replaced once (the server may have closed an idle one).
async fn lookup(
    shared: &Shared,
    config: &Config,
    settings: &LookupSettings,
    user: &str,
    conn: &mut Option<PgConn>,
) -> Result<Option<Secret>, String> {
    let timeout = config.pgpilot.server_connect_timeout.enabled().unwrap_or(Duration::from_secs(15));
    for attempt in 0..2 {
        if conn.is_none() {
            *conn = Some(open(shared, config, settings, timeout).await?);
        }
        let c = conn.as_mut().expect("opened above");
        shared.auth_query.queries.fetch_add(1, Relaxed);
        let params = [Some(user.to_string())];
        match tokio::time::timeout(timeout, c.extended(&settings.query, &params)).await {
            Ok(Ok(rows)) => return Ok(secret_from(rows)),
            Ok(Err(crate::insight::pgclient::ClientError::Server { code, message })) => {
                // The query itself is wrong (or not permitted): another attempt will not help.
                return Err(format!("the auth_query failed: {message} (SQLSTATE {code})"));
            }
            Ok(Err(e)) if attempt == 0 => {
                tracing::debug!(error = %e, "auth_query connection lost; reconnecting");
                *conn = None;
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                *conn = None;
                return Err(format!("the auth_query took longer than {timeout:?}"));
            }
        }
    }
    Err("the auth_query connection failed twice".into())
}

/// The first row's second column; no row, or a NULL password, is an unknown user.
fn secret_from(rows: crate::insight::pgclient::Rows) -> Option<Secret> {
    let row = rows.into_iter().next()?;
    let password = row.into_iter().nth(1).flatten()?;
    Some(Secret::parse(&password))
}

async fn open(
    shared: &Shared,
    config: &Config,
    settings: &LookupSettings,
    timeout: Duration,
) -> Result<PgConn, String> {
    let name = &settings.database;
    // A database the `*` fallback serves is looked up there, as PgBouncer does.
    let db = config
        .database_config(name)
        .ok_or_else(|| format!("auth_dbname: there is no [databases.{name}] and no [databases.\"*\"]"))?;
    let db = db.as_ref();
    let url = ServerUrl::parse(&db.primary).map_err(|e| format!("[databases.{name}] primary: {e}"))?;
    let tls_mode = config.tls.for_server(&url).mode;
    let target =
        ServerTarget { database: name.clone(), url: url.clone(), user: settings.auth_user.clone(), tls_mode };
    let secret = auth_user_secret(shared, name, db, &url, &settings.auth_user);
    let connector = shared.server_connector(&url);
    PgConn::open(&target, &secret, connector.as_deref(), timeout, APPLICATION_NAME)
        .await
        .map_err(|e| e.to_string())
}

/// auth_user's own password: its auth_file entry (plain or md5), else the database's configured
/// password when the database logs in as that user, else PGPASSWORD.
fn auth_user_secret(
    shared: &Shared,
    name: &str,
    db: &crate::config::DatabaseConfig,
    url: &ServerUrl,
    auth_user: &str,
) -> ServerSecret {
    match shared.secrets.client_secret(auth_user) {
        Some(Secret::Plain(p)) => return ServerSecret::Password(p),
        Some(Secret::Md5(h)) => return ServerSecret::Md5Hash(h),
        _ => {}
    }
    let configured_user = db.user.as_deref().or(url.user.as_deref());
    if configured_user == Some(auth_user) {
        if let Some(p) = shared.secrets.database_password(name) {
            return ServerSecret::Password(p);
        }
    }
    match std::env::var("PGPASSWORD") {
        Ok(p) if !p.is_empty() => ServerSecret::Password(p),
        _ => ServerSecret::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_database_settings_win() {
        let config = Config::parse(
            "[pgpilot]\nauth_user = \"global\"\n\
             [databases.a]\nprimary = \"postgres://h/a\"\n\
             [databases.b]\nprimary = \"postgres://h/b\"\nauth_user = \"b_auth\"\nauth_query = \"SELECT u, p FROM f($1)\"\nauth_dbname = \"a\"\n",
        )
        .unwrap();
        let a = LookupSettings::for_database(&config, "a").unwrap();
        assert_eq!(
            (a.auth_user.as_str(), a.query.as_str(), a.database.as_str()),
            ("global", DEFAULT_AUTH_QUERY, "a")
        );
        let b = LookupSettings::for_database(&config, "b").unwrap();
        assert_eq!(
            (b.auth_user.as_str(), b.query.as_str(), b.database.as_str()),
            ("b_auth", "SELECT u, p FROM f($1)", "a")
        );
        let none = Config::parse("[databases.a]\nprimary = \"postgres://h/a\"\n").unwrap();
        assert!(LookupSettings::for_database(&none, "a").is_none(), "off without auth_user");
    }

    #[test]
    fn rows_become_secrets() {
        let md5 = format!("md5{}", "0".repeat(32));
        assert_eq!(secret_from(vec![vec![Some("u".into()), Some(md5.clone())]]), Some(Secret::Md5(md5)));
        assert_eq!(secret_from(vec![vec![Some("u".into()), None]]), None, "NULL password: no login");
        assert_eq!(secret_from(vec![]), None);
    }
}
