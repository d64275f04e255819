//! The end of login: AuthenticationOk, the server's parameters as this client will see them,
//! BackendKeyData with pgpilot's own cancel key, ReadyForQuery.

use bytes::BytesMut;
use pgpilot_wire::backend::{self, TxnStatus};
use pgpilot_wire::startup::StartupParams;
use pgpilot_wire::{PgError, SqlState};

use super::params::{follows_server, is_reported, is_tracked, parse_options, ParamSet};
use crate::databases::{Database, PoolSet};
use crate::net::Sock;
use crate::pool::CheckoutError;
use crate::registry::Registration;

/// The application_name a client logs in with: its startup parameter, else the last
/// `-c application_name=...` of its `options` (as in PostgreSQL, a parameter of its own wins).
/// Empty when neither names one, or the options do not parse (the login fails on them anyway).
pub fn startup_application_name(startup: &StartupParams) -> String {
    if let Some(name) = startup.get("application_name") {
        return name.to_string();
    }
    let options = startup.get("options").and_then(|o| parse_options(o).ok()).unwrap_or_default();
    options
        .into_iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case("application_name"))
        .map(|(_, v)| v)
        .unwrap_or_default()
}

/// The startup parameters with the client's address added to its application_name
/// (application_name_add_host), as PgBouncer adds it: "app - 10.0.0.5:53122". Only at login: a
/// later SET is the client's own.
pub fn with_client_host(startup: &StartupParams, addr: &str) -> StartupParams {
    let mut params = startup.clone();
    let name = startup_application_name(startup);
    let named = format!("{name} - {addr}");
    match params.params.iter_mut().find(|(k, _)| k == "application_name") {
        Some((_, v)) => *v = named,
        None => params.params.push(("application_name".into(), named)),
    }
    params
}

/// Sends the welcome and returns the client's parameter values.
pub async fn welcome(
    sock: &Sock,
    pools: &PoolSet,
    startup: &StartupParams,
    registration: &Registration,
    db: &Database,
) -> Result<ParamSet, PgError> {
    let server_params = server_defaults(pools, db).await?;
    if let Some(known) = pools.logins.find(&server_params, &startup.params) {
        send_welcome(sock, registration, &known.statuses).await?;
        return Ok(known.client.clone());
    }
    // As in PostgreSQL, a parameter of its own wins over the same one in `options`: pgJDBC always
    // sends TimeZone, and a `-c TimeZone=...` in its options does not count.
    let mut requested: Vec<(String, String)> =
        startup.get("options").map(parse_options).transpose()?.unwrap_or_default();
    requested.extend(startup.params.iter().cloned());
    let mut shown: Vec<(String, String)> = server_params.to_vec();
    // A client that sets no application_name has none, whatever the server connection was opened with.
    set(&mut shown, "application_name", startup.get("application_name").unwrap_or(""));
    // Only what PostgreSQL reports is shown, in the server's spelling (below): a driver told of
    // extra_float_digits or statement_timeout here would never be told of later changes.
    for (k, v) in &requested {
        if is_tracked(k) && (is_reported(k) || follows_server(k)) {
            set(&mut shown, k, v);
        }
    }
    let mut client = ParamSet::default();
    for (k, v) in &shown {
        if is_tracked(k) {
            client.report(k, v);
        }
    }
    for (k, v) in &requested {
        if is_tracked(k) {
            client.set(k, v);
        }
    }
    // As the server spells them (`sql, dmy` is `SQL, DMY`, `utf8` is `UTF8`): psycopg reads
    // dates only by DateStyle's canonical names.
    for (k, v) in check_settings(pools, db, &client).await?.iter() {
        set(&mut shown, k, v);
        client.set(k, v);
    }
    // Thousands of clients log in with the same values: let them share one copy.
    {
        let mut shared = pools.login_params.lock();
        if *shared == client {
            client = shared.clone();
        } else {
            *shared = client.clone();
        }
    }
    let welcomed = pools.logins.remember(server_params, startup.params.clone(), &shown, client);
    send_welcome(sock, registration, &welcomed.statuses).await?;
    Ok(welcomed.client.clone())
}

/// AuthenticationOk, the parameters shown (`statuses`, encoded), BackendKeyData, ReadyForQuery.
async fn send_welcome(sock: &Sock, registration: &Registration, statuses: &[u8]) -> Result<(), PgError> {
    let mut out = BytesMut::with_capacity(statuses.len() + 64);
    backend::auth_ok(&mut out);
    out.extend_from_slice(statuses);
    backend::backend_key_data(&mut out, registration.info.pid, registration.info.secret);
    backend::ready_for_query(&mut out, TxnStatus::Idle);
    sock.write_all(&out)
        .await
        .map_err(|_| PgError::fatal(SqlState::CONNECTION_FAILURE, "client closed the connection"))
}

/// Login settings kept per pool set, beyond which the list starts over.
const SETTINGS_TAKEN_KEPT: usize = 64;

/// Startup settings PostgreSQL would refuse (an unknown parameter, a value it does not take) are
/// refused at login, as PostgreSQL refuses them, and not at the client's first statement: a pool
/// that checks its connections when it opens them kept connections that failed on first use. Each
/// distinct set of values is tried once, on a server of the pool set, as the first request of a
/// client with them would have it (and the server keeps them); application_name takes any value
/// and is left out, so that a name per process does not cost a try each.
async fn check_settings(pools: &PoolSet, db: &Database, client: &ParamSet) -> Result<ParamSet, PgError> {
    let mut key = client.clone();
    key.remove("application_name");
    if let Some((_, spelled)) = pools.settings_taken.lock().iter().find(|(k, _)| *k == key) {
        return Ok(spelled.clone());
    }
    let pool = &pools.pools[db.primary_index()];
    // A server lost mid-check (ended by pg_terminate_backend, a restart) refused nothing: the
    // check is tried again on another.
    let mut tries = 0;
    let spelled = loop {
        let (mut conn, _) = pool.checkout().await.map_err(|e| checkout_error(e, &db.name))?;
        match take_settings(&mut conn, client).await {
            Ok(spelled) => {
                conn.params = client.clone();
                for (k, v) in spelled.iter() {
                    conn.params.set(k, v);
                }
                pool.release(conn);
                break spelled;
            }
            Err(e) => {
                // Refused in one implicit transaction, the settings changed nothing; any other
                // failure leaves the server in doubt.
                pool.discard(conn, "a client's login settings were refused or the check failed");
                let (code, message) = e.split_once(' ').unwrap_or(("08006", e.as_str()));
                if code.len() == 5 {
                    tracing::info!(database = %db.name, user = %pools.user, code, message, "login settings refused by the server");
                    return Err(PgError::fatal(SqlState::from_server(code), message.to_string()));
                }
                tries += 1;
                if tries == LOGIN_CHECK_TRIES {
                    return Err(PgError::fatal(SqlState::CONNECTION_FAILURE, e));
                }
                tracing::info!(database = %db.name, error = %e, "the server checking a client's login settings failed; trying another");
            }
        }
    };
    let mut taken = pools.settings_taken.lock();
    if taken.len() == SETTINGS_TAKEN_KEPT {
        taken.clear();
    }
    taken.push((key, spelled.clone()));
    Ok(spelled)
}

/// How many servers a login's settings check may lose before the login fails.
const LOGIN_CHECK_TRIES: usize = 3;

/// Gives `conn` the client's settings, then reads back its reported ones as the server spells
/// them (`current_setting`: a value the server had already is not reported again when set).
/// application_name is each client's own and is not read.
async fn take_settings(conn: &mut crate::pool::ServerConn, client: &ParamSet) -> Result<ParamSet, String> {
    let timeout = std::time::Duration::from_secs(10);
    if let Some(sql) = client.sync_sql(&conn.params) {
        crate::pool::check::query(&conn.sock, &mut conn.buf, None, &sql, timeout).await?;
    }
    let names: Vec<&str> = client.reported().map(|(k, _)| k).filter(|k| *k != "application_name").collect();
    let mut spelled = ParamSet::default();
    if names.is_empty() {
        return Ok(spelled);
    }
    let columns: Vec<String> =
        names.iter().map(|n| format!("pg_catalog.current_setting({})", super::params::literal(n))).collect();
    let sql = format!("SELECT {}", columns.join(", "));
    let rows = crate::pool::check::query(&conn.sock, &mut conn.buf, None, &sql, timeout).await?;
    let values = rows.into_iter().next().ok_or("no row of settings")?;
    for (name, value) in names.iter().zip(values) {
        if let Some(v) = value {
            spelled.set(name, &v);
        }
    }
    Ok(spelled)
}

fn set(list: &mut Vec<(String, String)>, name: &str, value: &str) {
    match list.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
        Some(entry) => entry.1 = value.to_string(),
        None => list.push((name.to_string(), value.to_string())),
    }
}

/// The primary's reported parameters; connects once if no connection was ever made. Every
/// server of a database reports the same ones, so another's serve while the primary is out of
/// reach (a failover in progress), except that pgpilot always presents a writable server.
async fn server_defaults(
    pools: &PoolSet,
    db: &Database,
) -> Result<std::sync::Arc<Vec<(String, String)>>, PgError> {
    db.wait_roles_checked().await;
    // Before any server connection has opened, a client waits for one as its queries would, up to
    // query_wait_timeout (as in PgBouncer: a pgpilot started while PostgreSQL restarts queues its
    // first clients), and is then told why, rather than a bare timeout. With no
    // query_wait_timeout, client_login_timeout ends the wait.
    let wait = pools.pools[db.primary_index()].settings.load().query_wait_timeout;
    let give_up = std::time::Instant::now() + wait.unwrap_or(std::time::Duration::from_secs(24 * 3600));
    // Bounded in case roles flap.
    for _ in 0..100 {
        let index = db.primary_index();
        let primary = &pools.pools[index];
        let known = primary.startup_params.load_full();
        if let Some(p) = known.or_else(|| pools.pools.iter().find_map(|p| p.startup_params.load_full())) {
            return Ok(writable(p));
        }
        let still_wanted = || db.primary_index() == index && std::time::Instant::now() < give_up;
        match primary.checkout_with(false, &still_wanted).await {
            Ok((conn, _)) => primary.release(conn),
            Err(CheckoutError::Rerouted) if std::time::Instant::now() >= give_up => {
                let why = primary.last_error.lock().clone().unwrap_or_else(|| "no answer".into());
                return Err(PgError::fatal(
                    SqlState::CONNECTION_FAILURE,
                    format!("pgpilot could not connect to the server within query_wait_timeout: {why}"),
                ));
            }
            Err(CheckoutError::Rerouted) => continue,
            Err(e) => return Err(checkout_error(e, &db.name)),
        }
    }
    Err(PgError::fatal(SqlState::CONNECTION_FAILURE, "server parameters unavailable"))
}

/// Parameters as a client of the primary should see them: a server first met as a standby
/// reported in_hot_standby = on, which makes libpq's target_session_attrs=read-write refuse us.
fn writable(params: std::sync::Arc<Vec<(String, String)>>) -> std::sync::Arc<Vec<(String, String)>> {
    if !params.iter().any(|(k, v)| k == "in_hot_standby" && v == "on") {
        return params;
    }
    let mut p = params.to_vec();
    set(&mut p, "in_hot_standby", "off");
    std::sync::Arc::new(p)
}

/// The error a client sees when no server connection can be had.
pub fn checkout_error(e: CheckoutError, database: &str) -> PgError {
    match e {
        CheckoutError::WaitTimeout(_) => PgError::fatal(SqlState::PROTOCOL_VIOLATION, "query_wait_timeout"),
        // As PgBouncer ends a client whose query waited past query_timeout.
        CheckoutError::QueryTimeout => PgError::fatal(SqlState::PROTOCOL_VIOLATION, "query_timeout"),
        // Nobody reads this one: the client is gone.
        CheckoutError::ClientGone => PgError::fatal(SqlState::CONNECTION_FAILURE, "the client left"),
        CheckoutError::Closing => {
            PgError::fatal(SqlState::ADMIN_SHUTDOWN, "pgpilot is closing this connection")
        }
        CheckoutError::Closed | CheckoutError::Rerouted => PgError::fatal(
            SqlState::ADMIN_SHUTDOWN,
            format!("database \"{database}\" was removed or reconfigured"),
        ),
        CheckoutError::Connect(crate::pool::ConnectError::Rejected { fields, .. }) => {
            let code = sqlstate_static(&fields.code);
            PgError::fatal(code, fields.message.clone())
        }
        // The server would refuse this password itself: the client hears what it would have.
        CheckoutError::Connect(crate::pool::ConnectError::StaleVerifier { user, .. }) => {
            crate::auth::client::failed(&user)
        }
        CheckoutError::Connect(other) => PgError::fatal(
            SqlState::CONNECTION_FAILURE,
            format!("pgpilot could not connect to the server: {other}"),
        ),
    }
}

/// SQLSTATEs a server may send at login, mapped to our static codes (others become 08006).
fn sqlstate_static(code: &str) -> SqlState {
    [
        SqlState::INVALID_PASSWORD,
        SqlState::INVALID_AUTHORIZATION,
        SqlState::INVALID_CATALOG_NAME,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::INSUFFICIENT_PRIVILEGE,
    ]
    .into_iter()
    .find(|s| s.0 == code)
    .unwrap_or(SqlState::CONNECTION_FAILURE)
}
