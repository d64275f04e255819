//! One client connection from accept to close: opening, login, then the session loop.

mod backend;
mod cached;
pub mod cancel;
mod client;
mod conforming;
mod deferred_begin;
mod expect;
mod extended_settings;
mod flow;
mod frontend;
mod function_ddl;
mod hidden_effects;
pub mod input_budget;
pub mod io;
mod local_statements;
pub mod login_memo;
mod lost;
mod observe;
pub mod params;
mod pin_release;
mod replan;
mod route;
mod row_shape;
mod show_own;
mod startup;
mod txn_cache;
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
pub use flow::FlowBuffers;

/// Database names that reach the admin console instead of a server.
pub fn is_admin_database(name: &str) -> bool {
    name == "pgpilot" || name == "pgbouncer"
}

/// Serves one accepted connection until it closes. Never panics on client input.
pub async fn serve(shared: Arc<Shared>, sock: Sock) {
    let Some((sock, registration, setup)) = open_session(&shared, sock).await else { return };
    // A task of its own: an idle session keeps only its own size, not that of login's futures.
    // Boxed, as the login's task is by the listener: a task's future is moved as the task is set
    // up and run, and a pointer moves for less than a session's kilobytes.
    tokio::spawn(futures::FutureExt::boxed(client::Session::start(shared, sock, registration, setup).run()));
}

/// The client's connection up to a logged-in session; None when it ended before (refused,
/// cancelled, an admin console session that has run).
async fn open_session(shared: &Arc<Shared>, sock: Sock) -> Option<(Sock, Registration, client::Setup)> {
    let addr = sock.peer();
    let local = sock.local_addr();
    let config = shared.config.load_full();
    let log = config.pgpilot.log_pooler_errors;
    // The console's slots count here too, so an operator still gets in when clients fill the rest.
    let Some(opening) = shared.registry.open(config.pgpilot.max_client_conn.saturating_add(CONSOLE_SLOTS))
    else {
        drop(config);
        refuse_at_open(&sock, &addr, log).await;
        return None;
    };
    let login_timeout = config.pgpilot.client_login_timeout.enabled().unwrap_or(Duration::from_secs(3600));
    let log_connections = config.pgpilot.log_connections;
    drop(config);
    // One deadline for the whole login, startup packet and authentication together: a client
    // must not get the timeout twice by stalling once in each.
    let deadline = tokio::time::Instant::now() + login_timeout;
    // Login is boxed so an idle session's task does not keep its size.
    // The outer limit is for a TLS handshake that stalls (the packets are timed inside).
    let opened = match tokio::time::timeout_at(deadline, startup::open(shared, sock, deadline)).await {
        Err(_) => return None,
        Ok(Ok(None)) | Ok(Ok(Some(startup::Opening::Cancelled))) => return None,
        Ok(Err((sock, e))) => return refuse(&sock, &addr, e, log).await,
        Ok(Ok(Some(startup::Opening::Login { sock, params, tls, buf }))) => (sock, params, tls, buf),
    };
    let (sock, params, tls, buf) = opened;
    let mut max_clients = shared.config.load().pgpilot.max_client_conn;
    let database = params.get("database").filter(|d| !d.is_empty()).or(params.get("user"));
    if database.is_some_and(is_admin_database) {
        // An operator must reach the console exactly when clients have used up every slot.
        max_clients = max_clients.saturating_add(CONSOLE_SLOTS);
    }
    let encrypted = tls.is_some();
    let registration = shared.registry.register(addr.clone(), local, tls, max_clients);
    drop(opening);
    let Some(registration) = registration else {
        return refuse(&sock, &addr, too_many_clients(), log).await;
    };
    if shared.phase() != Phase::Running {
        let e = PgError::fatal(SqlState::ADMIN_SHUTDOWN, "pgpilot is shutting down");
        return refuse(&sock, &addr, e, log).await;
    }
    let login = tokio::time::timeout_at(deadline, log_in(shared, &sock, &params, buf, &registration));
    let session = match login.await {
        Err(_) => {
            return refuse(&sock, &addr, login_timed_out(), log).await;
        }
        Ok(Err(e)) => return refuse(&sock, &addr, e, log).await,
        Ok(Ok(LoggedIn::Admin(admin))) => {
            crate::admin::run(shared.clone(), sock, registration, admin).await;
            return None;
        }
        Ok(Ok(LoggedIn::Client(setup))) => setup,
    };
    if log_connections {
        tracing::info!(client = %addr, user = %session.user, database = %session.db.name, tls = encrypted, "login");
    }
    Some((sock, registration, session))
}

/// What a client that has not logged in within client_login_timeout is told, as PgBouncer tells it.
pub(super) fn login_timed_out() -> PgError {
    PgError::fatal(SqlState::PROTOCOL_VIOLATION, "client_login_timeout")
}

fn too_many_clients() -> PgError {
    PgError::fatal(SqlState::TOO_MANY_CONNECTIONS, "no more connections allowed (max_client_conn)")
}

/// Refused before its startup packet is read (max_client_conn with the console's slots taken).
/// An SSLRequest or GSSENCRequest is answered 'N', and the error follows the startup packet:
/// libpq (since the fixes for CVE-2024-10977 and CVE-2021-23222) shows no error sent in place of
/// that answer and takes bytes sent right after it for an attack. What the client sends then is
/// drained, so that it reads the error, not a reset. Each read waits a moment at most.
async fn refuse_at_open(sock: &Sock, addr: &str, log: bool) {
    let mut first = BytesMut::with_capacity(8);
    let _ = tokio::time::timeout(OPENING_LINGER, read_at_least(sock, &mut first, 8)).await;
    if is_encryption_request(&first) {
        let _ = sock.write_all(b"N").await;
        let mut startup = BytesMut::with_capacity(256);
        let _ = tokio::time::timeout(OPENING_LINGER, read_at_least(sock, &mut startup, 1)).await;
    }
    refuse::<()>(sock, addr, too_many_clients(), log).await;
    sock.linger_before_close(OPENING_LINGER).await;
}

/// Reads until `buf` holds `n` bytes or the peer stops sending.
async fn read_at_least(sock: &Sock, buf: &mut BytesMut, n: usize) {
    while buf.len() < n {
        if !matches!(sock.read_into(buf).await, Ok(read) if read > 0) {
            return;
        }
    }
}

fn is_encryption_request(packet: &[u8]) -> bool {
    use pgpilot_wire::startup::{self, StartupPacket};
    packet.len() == 8
        && startup::packet_len(packet) == Ok(Some(8))
        && matches!(startup::parse(packet), Ok(StartupPacket::Ssl | StartupPacket::GssEnc))
}

/// How long a connection refused at accept may take to send what it had started sending.
const OPENING_LINGER: Duration = Duration::from_millis(500);

/// Connections to the admin console allowed beyond max_client_conn.
const CONSOLE_SLOTS: usize = 5;

/// Tells the client why it is being turned away, and logs it unless log_pooler_errors is off: as
/// a warning, as PgBouncer logs its pooler errors (a wrong password is what `grep WARN` is for).
async fn refuse<T>(sock: &Sock, addr: &str, e: PgError, log: bool) -> Option<T> {
    if log {
        tracing::warn!(client = %addr, error = %e, "client refused");
    }
    let mut out = BytesMut::new();
    e.encode(&mut out);
    let _ = sock.write_all(&out).await;
    None
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
    let application_name = welcome::startup_application_name(params);
    *info.application_name.lock() = Arc::from(application_name.as_str());
    let config = shared.config.load_full();
    if params.get("replication").is_some_and(|r| !means_false(r)) {
        return Err(PgError::fatal(
            SqlState::FEATURE_NOT_SUPPORTED,
            "replication connections are not supported through pgpilot",
        ));
    }
    let is_admin_db = is_admin_database(&database);
    // An unknown database is told only after the password: before it, any client could list the
    // databases by trying names (PostgreSQL and PgBouncer authenticate first too).
    let db = if is_admin_db { None } else { shared.database_or_fallback(&database) };
    let from_file = shared.secrets.client_secret(&user);
    let queried = match (&from_file, config.pgpilot.auth_type()) {
        (Some(_), _) | (None, crate::config::AuthType::Trust) => None,
        (None, _) => crate::auth::query::queried_secret(shared, db.as_deref(), &user).await?,
    };
    let secret = from_file.as_ref().or(queried.as_ref());
    let auth =
        crate::auth::client::authenticate(sock, &mut buf, config.pgpilot.auth_type(), &user, secret).await?;
    if let Some(key) = auth.proven_key {
        shared.secrets.remember_proven_key(&user, key);
    }
    if let Some(found) = queried {
        // Found by auth_query: the pools log in to the server with it (an md5 hash).
        shared.secrets.remember_queried(&user, found);
    }
    if !is_admin_db {
        let Some(db) = db.as_deref() else {
            return Err(PgError::fatal(
                SqlState::INVALID_CATALOG_NAME,
                format!("no such database: {database}"),
            ));
        };
        if db.is_disabled() {
            return Err(PgError::fatal(
                SqlState::CANNOT_CONNECT_NOW,
                format!("database \"{database}\" is disabled"),
            ));
        }
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
    let mut db = db.expect("checked above");
    if db.made_from_fallback {
        db = shared.keep_database(db);
    }
    let (db, pools) = shared.pools_for(&db.name, &user)?;
    let mode = config.pool_mode(&db.config(), &user);
    // Routing rules match the name the application chose, before any host is added.
    let tag = replica_tag(&db, &user, &application_name);
    let with_host;
    let params = if config.pgpilot.application_name_add_host {
        with_host = welcome::with_client_host(params, &info.addr);
        *info.application_name.lock() = Arc::from(with_host.get("application_name").unwrap_or(""));
        &with_host
    } else {
        params
    };
    let setup = welcome::welcome(sock, &pools, params, registration, &db).await?;
    Ok(LoggedIn::Client(client::Setup { user, db, pools, mode, params: setup, pending_input: buf, tag }))
}

/// The replica group a client's reads go to, from the database's tag rules.
pub(super) fn replica_tag(
    db: &crate::databases::Database,
    user: &str,
    application_name: &str,
) -> Option<Arc<str>> {
    db.routing.load().tag_rules.iter().find_map(|r| {
        let user_ok = r.user.as_deref().is_none_or(|u| u == user);
        let app_ok = r.application_name.as_deref().is_none_or(|a| a == application_name);
        let specific = r.user.is_some() || r.application_name.is_some();
        (specific && user_ok && app_ok).then(|| Arc::from(r.tag.as_str()))
    })
}

/// Whether PostgreSQL reads `value` as boolean false (parse_bool: any case, `f`…`false`, `n`, `no`,
/// `of`, `off`, `0`): `replication=no` is an ordinary session there, and so it is here.
fn means_false(value: &str) -> bool {
    let v = value.to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| v.len() >= min && word.starts_with(v.as_str());
    prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || v == "0"
}
