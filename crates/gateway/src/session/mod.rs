//! One client connection from accept to close: opening, login, then the session loop.

mod backend;
mod cached;
pub mod cancel;
mod client;
mod expect;
mod flow;
mod frontend;
pub mod io;
pub mod params;
mod route;
mod startup;
mod welcome;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pgpilot_wire::startup::StartupParams;
use pgpilot_wire::{PgError, SqlState};

use crate::net::Sock;
use crate::registry::Registration;
use crate::shared::{Phase, Shared};

pub use client::Ending;

/// Database names that reach the admin console instead of a server.
pub fn is_admin_database(name: &str) -> bool {
    name == "pgpilot" || name == "pgbouncer"
}

/// Serves one accepted connection until it closes. Never panics on client input.
pub async fn serve(shared: Arc<Shared>, sock: Sock) {
    let addr = sock.peer();
    let local_port = sock.local_port();
    let config = shared.config.load_full();
    let login_timeout = config.pgpilot.client_login_timeout.enabled().unwrap_or(Duration::from_secs(3600));
    let log_connections = config.pgpilot.log_connections;
    drop(config);
    // Login is boxed so an idle session's task does not keep its size.
    let opened = match tokio::time::timeout(login_timeout, Box::pin(startup::open(&shared, sock))).await {
        Err(_) => return,
        Ok(Ok(None)) | Ok(Ok(Some(startup::Opening::Cancelled))) => return,
        Ok(Err((sock, e))) => return refuse(&sock, &addr, e).await,
        Ok(Ok(Some(startup::Opening::Login { sock, params, tls, buf }))) => (sock, params, tls, buf),
    };
    let (sock, params, tls, buf) = opened;
    let max_clients = shared.config.load().pgpilot.max_client_conn;
    let Some(registration) = shared.registry.register(addr.clone(), local_port, tls, max_clients) else {
        let e =
            PgError::fatal(SqlState::TOO_MANY_CONNECTIONS, "no more connections allowed (max_client_conn)");
        return refuse(&sock, &addr, e).await;
    };
    if shared.phase() != Phase::Running {
        let e = PgError::fatal(SqlState::ADMIN_SHUTDOWN, "pgpilot is shutting down");
        return refuse(&sock, &addr, e).await;
    }
    let login =
        tokio::time::timeout(login_timeout, Box::pin(log_in(&shared, &sock, &params, buf, &registration)));
    let session = match login.await {
        Err(_) => {
            let e = PgError::fatal(SqlState::PROTOCOL_VIOLATION, "client_login_timeout");
            return refuse(&sock, &addr, e).await;
        }
        Ok(Err(e)) => return refuse(&sock, &addr, e).await,
        Ok(Ok(LoggedIn::Admin(admin))) => return crate::admin::run(shared, sock, registration, admin).await,
        Ok(Ok(LoggedIn::Client(setup))) => setup,
    };
    if log_connections {
        tracing::info!(client = %addr, user = %session.user, database = %session.db.name, tls, "login");
    }
    client::Session::start(shared, sock, registration, session).run().await;
}

/// Tells the client why it is being turned away, and logs it.
async fn refuse(sock: &Sock, addr: &str, e: PgError) {
    tracing::info!(client = %addr, error = %e, "client refused");
    let mut out = BytesMut::new();
    e.encode(&mut out);
    let _ = sock.write_all(&out).await;
}

enum LoggedIn {
    Admin(crate::admin::AdminLogin),
    Client(client::Setup),
}

async fn log_in(
    shared: &Arc<Shared>,
    sock: &Sock,
    params: &StartupParams,
    mut buf: BytesMut,
    registration: &Registration,
) -> Result<LoggedIn, PgError> {
    let user = params
        .get("user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            PgError::fatal(
                SqlState::INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet",
            )
        })?
        .to_string();
    let database = params.get("database").filter(|d| !d.is_empty()).unwrap_or(&user).to_string();
    let info = &registration.info;
    *info.user.lock() = Arc::from(user.as_str());
    *info.database.lock() = Arc::from(database.as_str());
    *info.application_name.lock() = Arc::from(params.get("application_name").unwrap_or(""));
    let config = shared.config.load_full();
    if params.get("replication").is_some_and(|r| r != "false" && r != "0" && r != "off") {
        return Err(PgError::fatal(
            SqlState::FEATURE_NOT_SUPPORTED,
            "replication connections are not supported through pgpilot",
        ));
    }
    let secret = shared.secrets.client_secret(&user);
    let is_admin_db = is_admin_database(&database);
    let db = if is_admin_db {
        None
    } else {
        let db = shared.database(&database).ok_or_else(|| {
            PgError::fatal(SqlState::INVALID_CATALOG_NAME, format!("no such database: {database}"))
        })?;
        if db.is_disabled() {
            return Err(PgError::fatal(
                SqlState::CANNOT_CONNECT_NOW,
                format!("database \"{database}\" is disabled"),
            ));
        }
        Some(db)
    };
    let auth =
        crate::auth::client::authenticate(sock, &mut buf, config.pgpilot.auth_type, &user, secret.as_ref())
            .await?;
    if let Some(key) = auth.proven_key {
        shared.secrets.remember_proven_key(&user, key);
    }
    if is_admin_db {
        if !config.is_stats_user(&user) {
            return Err(PgError::fatal(
                SqlState::INVALID_AUTHORIZATION,
                "not allowed: only admin_users and stats_users may use the admin console",
            ));
        }
        let may_modify = config.is_admin(&user);
        return Ok(LoggedIn::Admin(crate::admin::AdminLogin { user, database, may_modify }));
    }
    let db = db.expect("checked above");
    let (db, pools) = shared.pools_for(&db.name, &user)?;
    let mode = config.pool_mode(&db.config, &user);
    let setup = welcome::welcome(sock, &pools, params, registration, &db).await?;
    let tag = replica_tag(&db, &user, params.get("application_name").unwrap_or(""));
    Ok(LoggedIn::Client(client::Setup { user, db, pools, mode, params: setup, pending_input: buf, tag }))
}

/// The replica group a client's reads go to, from the database's tag rules.
fn replica_tag(db: &crate::databases::Database, user: &str, application_name: &str) -> Option<Arc<str>> {
    db.routing.load().tag_rules.iter().find_map(|r| {
        let user_ok = r.user.as_deref().is_none_or(|u| u == user);
        let app_ok = r.application_name.as_deref().is_none_or(|a| a == application_name);
        let specific = r.user.is_some() || r.application_name.is_some();
        (specific && user_ok && app_ok).then(|| Arc::from(r.tag.as_str()))
    })
}
