//! Parsing and running admin console commands.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pgpilot_wire::{backend, PgError, SqlState};

use super::{show, AdminLogin, ResultSet};
use crate::config::ConsoleColumns;
use crate::shared::Shared;

/// The commands of one query: split at the semicolons outside quotes (a `SET` value may hold
/// one), the empty ones left out.
pub fn split(sql: &str) -> Vec<&str> {
    let mut commands = Vec::new();
    let (mut start, mut quote) = (0, None);
    for (i, c) in sql.char_indices() {
        match (c, quote) {
            ('\'' | '"', None) => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            (';', None) => {
                commands.push(&sql[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    commands.push(&sql[start..]);
    commands.retain(|c| !c.trim().is_empty());
    commands
}

/// Runs one command and writes its answer; false when it failed.
pub async fn execute(shared: &Arc<Shared>, login: &AdminLogin, sql: &str, out: &mut BytesMut) -> bool {
    let text = sql.trim().trim_end_matches(';').trim();
    if text.is_empty() {
        backend::empty_query_response(out);
        return true;
    }
    let words: Vec<String> = text.split_whitespace().map(|w| w.to_ascii_uppercase()).collect();
    let arg = match optional_argument(&words[0], text) {
        Ok(arg) => arg,
        Err(e) => {
            e.encode(out);
            return false;
        }
    };
    let result = match words[0].as_str() {
        "SHOW" => show_command(shared, words.get(1).map(String::as_str).unwrap_or("")),
        _ if !login.may_modify => Err(PgError::error(
            SqlState::INSUFFICIENT_PRIVILEGE,
            "admin access needed: stats_users may only run SHOW commands",
        )),
        "PAUSE" => pause(shared, arg.as_deref(), true).await.map(|_| Reply::Tag("PAUSE".into())),
        "RESUME" => pause(shared, arg.as_deref(), false).await.map(|_| Reply::Tag("RESUME".into())),
        "DISABLE" | "ENABLE" => enable(shared, arg.as_deref(), words[0] == "DISABLE")
            .map(|_| Reply::Tag(if words[0] == "DISABLE" { "DISABLE" } else { "ENABLE" }.into())),
        "RECONNECT" => reconnect(shared, arg.as_deref()).map(|_| Reply::Tag("RECONNECT".into())),
        "WAIT_CLOSE" => wait_close(shared, arg.as_deref()).await.map(|_| Reply::Tag("WAIT_CLOSE".into())),
        "KILL" => kill(shared, arg.as_deref()).map(|_| Reply::Tag("KILL".into())),
        "KILL_CLIENT" => kill_client(shared, arg.as_deref()).map(|_| Reply::Tag("KILL_CLIENT".into())),
        "INVALIDATE" => invalidate_cache(shared, text).map(|_| Reply::Tag("INVALIDATE CACHE".into())),
        // PgBouncer's tag names the setting: scripts match it.
        "SET" => set(shared, login, text).map(|(key, value)| Reply::Tag(format!("SET {key}={value}").into())),
        // Done before answering, and refused out loud: a script that reloads through the console
        // learns that its file was not taken (PgBouncer answers RELOAD either way).
        "RELOAD" => crate::gateway::reload_and_log(shared, "RELOAD")
            .map(|_| Reply::Tag("RELOAD".into()))
            .map_err(|e| {
                PgError::error(
                    SqlState::CONFIG_FILE_ERROR,
                    format!("configuration reload failed; keeping the running configuration: {e}"),
                )
            }),
        "SHUTDOWN" => {
            tracing::warn!(user = %login.user, "SHUTDOWN requested from the admin console");
            shared.shutdown_requested.notify_one();
            Ok(Reply::Tag("SHUTDOWN".into()))
        }
        // PgBouncer's commands pgpilot knows but does not have: said so, not "invalid command".
        "SUSPEND" => Err(PgError::error(
            SqlState::FEATURE_NOT_SUPPORTED,
            "SUSPEND is not supported: pgpilot has no online restart (docs/operations.md: upgrades and restarts)",
        )),
        _ => Err(invalid_command(text)),
    };
    match result {
        Ok(Reply::Rows(rs)) => rs.encode(out, "SHOW"),
        Ok(Reply::Tag(tag)) => backend::command_complete(out, &tag),
        Err(e) => {
            e.encode(out);
            return false;
        }
    }
    true
}

/// The one word a command may take after its name (a database, a client id), checked as PgBouncer
/// checks it: more words are an invalid command, not ignored (`PAUSE app app2` paused only app;
/// `SHUTDOWN NOW` shut down; `SHOW POOLS extra` too, PgBouncer's one rule for every command but SET).
/// SET and INVALIDATE read their own words.
fn optional_argument(command: &str, text: &str) -> Result<Option<String>, PgError> {
    let mut words = text.split_whitespace().skip(1);
    let arg = words.next().map(|s| s.trim_matches('"').to_string());
    let most = match command {
        "SET" | "INVALIDATE" => return Ok(arg),
        "RELOAD" | "SUSPEND" => 0,
        // PgBouncer 1.23's SHUTDOWN WAIT_FOR_SERVERS is what pgpilot's SHUTDOWN does.
        "SHUTDOWN" if arg.as_deref().is_some_and(|a| a.eq_ignore_ascii_case("WAIT_FOR_SERVERS")) => 1,
        "SHUTDOWN" => 0,
        _ => 1,
    };
    if usize::from(arg.is_some()) + words.count() > most {
        return Err(invalid_command(text));
    }
    Ok(arg)
}

/// `SET key = value` (or `TO`): one setting of the running configuration, until the next RELOAD.
fn set(shared: &Shared, login: &AdminLogin, text: &str) -> Result<(String, String), PgError> {
    let usage = || PgError::error(SqlState::SYNTAX_ERROR, "usage: SET key = value");
    let rest = text.get(3..).ok_or_else(usage)?.trim();
    let (key, value) = match rest.split_once('=') {
        Some((k, v)) => (k.trim(), v.trim()),
        None => {
            let (k, v) = rest.split_once(char::is_whitespace).ok_or_else(usage)?;
            let v = v.trim_start();
            (k, v.strip_prefix("TO ").or_else(|| v.strip_prefix("to ")).ok_or_else(usage)?.trim())
        }
    };
    let value =
        value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).unwrap_or(value).replace("''", "'");
    let mut config = (*shared.config.load_full()).clone();
    crate::config::pgbouncer_ini::set_at_runtime(&mut config.pgpilot, key, &value)
        .map_err(|e| PgError::error(SqlState::INVALID_PARAMETER_VALUE, e))?;
    shared.apply(config).map_err(|e| PgError::error(SqlState::INVALID_PARAMETER_VALUE, e))?;
    tracing::info!(user = %login.user, setting = key, value = %value, "setting changed from the admin console");
    Ok((key.to_string(), value))
}

/// PgBouncer's answer to a command it does not know (08P01), which scripts and tools match.
fn invalid_command(text: &str) -> PgError {
    PgError::error(SqlState::PROTOCOL_VIOLATION, format!("invalid command '{text}', use SHOW HELP;"))
}

enum Reply {
    Rows(ResultSet),
    Tag(std::borrow::Cow<'static, str>),
}

fn show_command(shared: &Shared, what: &str) -> Result<Reply, PgError> {
    let mut rs = match what {
        "POOLS" => show::pools(shared),
        "STATS" => show::stats(shared),
        "STATS_TOTALS" => show::stats_totals(shared),
        "STATS_AVERAGES" => show::stats_averages(shared),
        "TOTALS" => show::totals(shared),
        "STATE" => show::state(shared),
        "CLIENTS" => show::clients(shared),
        "SERVERS" => show::servers(shared),
        "REPLICAS" => show::replicas(shared),
        "DATABASES" => show::databases(shared),
        "CONFIG" => show::config(shared),
        "VERSION" => show::version(),
        "USERS" => show::users(shared),
        "LISTS" => show::lists(shared),
        "MEM" | "DNS_HOSTS" | "DNS_ZONES" => show::empty_pgbouncer_set(what),
        "JOBS" => super::jobs::show(shared),
        "CACHE" => crate::cache::api::show(shared),
        "HELP" => show::help(),
        other => return Err(invalid_command(format!("SHOW {other}").trim_end())),
    };
    if shared.config.load().pgpilot.console_columns == ConsoleColumns::Pgbouncer {
        if let Some(n) = show::pgbouncer_width(what) {
            rs.keep_columns(n);
        }
    }
    Ok(Reply::Rows(rs))
}

/// `INVALIDATE CACHE TABLE name [IN db]`, `INVALIDATE CACHE TAG t [IN db]`, `INVALIDATE CACHE ALL [IN db]`.
fn invalidate_cache(shared: &Shared, text: &str) -> Result<(), PgError> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let usage = || {
        PgError::error(
            SqlState::SYNTAX_ERROR,
            "usage: INVALIDATE CACHE TABLE <name> | TAG <tag> | ALL [IN <database>]",
        )
    };
    if words.get(1).map(|w| w.to_ascii_uppercase()) != Some("CACHE".into()) {
        return Err(usage());
    }
    let mut req = crate::cache::api::InvalidateRequest::default();
    let (what, rest) = match words.get(2).map(|w| w.to_ascii_uppercase()).as_deref() {
        Some("TABLE") => (words.get(3).map(|t| t.to_string()).ok_or_else(usage)?, 4),
        Some("TAG") => (words.get(3).map(|t| t.trim_matches('\'').to_string()).ok_or_else(usage)?, 4),
        Some("ALL") => (String::new(), 3),
        _ => return Err(usage()),
    };
    match words[2].to_ascii_uppercase().as_str() {
        "TABLE" => req.table = Some(what),
        "TAG" => req.tag = Some(what),
        _ => req.all = true,
    }
    match (words.get(rest).map(|w| w.to_ascii_uppercase()).as_deref(), words.get(rest + 1)) {
        (None, _) => {}
        (Some("IN"), Some(db)) => req.database = Some(db.trim_matches('"').to_string()),
        _ => return Err(usage()),
    }
    crate::cache::api::invalidate(shared, &req).map(|_| ()).map_err(|e| match e {
        crate::cache::api::InvalidateError::UnknownTable(_) => {
            PgError::error(SqlState::UNDEFINED_OBJECT, e.to_string())
        }
        crate::cache::api::InvalidateError::Invalid(_) => {
            PgError::error(SqlState::SYNTAX_ERROR, e.to_string())
        }
    })
}

fn databases_named(
    shared: &Shared,
    name: Option<&str>,
) -> Result<Vec<std::sync::Arc<crate::databases::Database>>, PgError> {
    let dbs = shared.databases.load();
    match name {
        None => Ok(dbs.values().cloned().collect()),
        Some(n) => {
            dbs.get(n).cloned().map(|d| vec![d]).ok_or_else(|| {
                PgError::error(SqlState::INVALID_CATALOG_NAME, format!("no such database: {n}"))
            })
        }
    }
}

/// PAUSE waits until every server connection of the paused databases is back in its pool, then
/// closes them, as PgBouncer does: it is what an operator runs before restarting PostgreSQL or
/// moving it, and connections kept across that would each fail once on RESUME.
pub(crate) async fn pause(shared: &Shared, name: Option<&str>, on: bool) -> Result<(), PgError> {
    let dbs = databases_named(shared, name)?;
    if !on {
        // As PgBouncer answers: a RESUME that resumes nothing is a mistake worth saying.
        let paused = |db: &std::sync::Arc<crate::databases::Database>| *db.paused.borrow();
        match name {
            Some(n) if !dbs.iter().any(paused) => {
                return Err(PgError::error(
                    SqlState::PROTOCOL_VIOLATION,
                    format!("database {n} is not paused"),
                ))
            }
            None if !*shared.paused.borrow() && !dbs.iter().any(paused) => {
                return Err(PgError::error(SqlState::PROTOCOL_VIOLATION, "pgpilot is not paused"))
            }
            _ => {}
        }
    }
    // A global PAUSE is the gateway's, not each database's (SHOW DATABASES says paused 0, as
    // PgBouncer's, and RESUME of one database is refused); a global RESUME resumes everything.
    if name.is_none() {
        shared.paused.send_replace(on);
    }
    for db in dbs.iter().filter(|_| name.is_some() || !on) {
        db.paused.send_replace(on);
    }
    if !on {
        return Ok(());
    }
    loop {
        // A RESUME meanwhile (another console, SIGUSR2) ends the wait: closing the servers the
        // resumed clients now use would fail their next queries.
        let resumed = match name {
            None => !*shared.paused.borrow(),
            Some(_) => !dbs.iter().any(|db| *db.paused.borrow()),
        };
        if resumed {
            return Ok(());
        }
        // Looked up each time: a client of a new user may make a pool meanwhile.
        let pools: Vec<_> = dbs
            .iter()
            .flat_map(|d| d.pool_sets())
            .flat_map(|s| s.all().cloned().collect::<Vec<_>>())
            .collect();
        if pools.iter().all(|p| p.counts().in_use == 0) {
            for pool in &pools {
                pool.close_idle();
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn enable(shared: &Shared, name: Option<&str>, disable: bool) -> Result<(), PgError> {
    let Some(name) = name else {
        return Err(PgError::error(SqlState::SYNTAX_ERROR, "a database name is required"));
    };
    for db in databases_named(shared, Some(name))? {
        db.disabled.store(disable, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

fn reconnect(shared: &Shared, name: Option<&str>) -> Result<(), PgError> {
    for db in databases_named(shared, name)? {
        for set in db.pool_sets() {
            set.all().for_each(|p| p.reconnect());
        }
    }
    Ok(())
}

/// KILL_CLIENT id: closes one client (the `id` of SHOW CLIENTS) and the server it holds.
fn kill_client(shared: &Shared, id: Option<&str>) -> Result<(), PgError> {
    let id: u64 = id.and_then(|id| id.parse().ok()).ok_or_else(|| {
        PgError::error(SqlState::SYNTAX_ERROR, "KILL_CLIENT takes a client id (SHOW CLIENTS)")
    })?;
    let client = shared.registry.all().into_iter().find(|c| c.id == id);
    let client = client.ok_or_else(|| PgError::error(SqlState::PROTOCOL_VIOLATION, "client not found"))?;
    tracing::warn!(client_id = id, "KILL_CLIENT from the admin console");
    client.request_close(true);
    Ok(())
}

/// WAIT_CLOSE: returns once every server connection opened before the last RECONNECT (or KILL)
/// of the databases named has closed, as their clients release them. Ops scripts run
/// `RECONNECT; WAIT_CLOSE;` before they take a server away.
async fn wait_close(shared: &Shared, name: Option<&str>) -> Result<(), PgError> {
    let dbs = databases_named(shared, name)?;
    loop {
        let stale: usize = dbs
            .iter()
            .flat_map(|d| d.pool_sets())
            .map(|set| set.all().map(|p| p.stale_connections()).sum::<usize>())
            .sum();
        if stale == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kill(shared: &Shared, name: Option<&str>) -> Result<(), PgError> {
    let Some(name) = name else {
        return Err(PgError::error(SqlState::SYNTAX_ERROR, "a database name is required"));
    };
    // As in PgBouncer, the database stays paused: new clients wait for RESUME.
    for db in databases_named(shared, Some(name))? {
        db.paused.send_replace(true);
    }
    for c in shared.registry.all() {
        if &**c.database.lock() == name {
            c.request_close(true);
        }
    }
    reconnect(shared, Some(name))
}
