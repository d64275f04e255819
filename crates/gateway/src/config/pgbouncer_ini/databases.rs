//! The `[databases]`, `[users]` and `[peers]` sections.

use std::net::IpAddr;

use super::general::pool_mode;
use super::ini::{Entry, Section};
use super::values::{connstr_pairs, count, int};
use super::{Builder, Outcome};
use crate::config::server_url::percent_encode;
use crate::config::{DatabaseConfig, UserConfig};

pub fn apply(b: &mut Builder, e: &Entry) -> Result<(), String> {
    match e.section {
        Section::Databases => database(b, e),
        Section::Users => user(b, e),
        Section::Peers => {
            let why = "peering (forwarding cancel requests between instances) is not supported";
            b.note(format!("[peers] {}", e.key), Some(&e.origin), Outcome::NotHonoured(why.into()), &[]);
            Ok(())
        }
        Section::PgBouncer => Ok(()),
    }
}

/// Where a server is: a host (the first of a list) or a Unix socket directory.
enum Host {
    Tcp(String),
    Socket(String),
}

/// One `[databases]` line being converted.
struct DbLine {
    dbname: String,
    hosts: Vec<String>,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    config: DatabaseConfig,
}

/// Connection-string keys PgBouncer knows that pgpilot does not honour yet, and why.
const DB_NOT_YET: &[(&str, &str)] = &[
    ("connect_query", "not supported yet: pgpilot has no per-database connect_query"),
    ("application_name", "not supported yet: pgpilot has no per-database startup parameters: the client's application_name is used"),
    ("client_encoding", "not supported yet: pgpilot has no per-database startup parameters: the client's or the server's default applies"),
    ("datestyle", "not supported yet: pgpilot has no per-database startup parameters: the client's or the server's default applies"),
    ("timezone", "not supported yet: pgpilot has no per-database startup parameters: the client's or the server's default applies"),
    ("server_lifetime", "not supported yet: pgpilot has no per-database server_lifetime: the [pgbouncer] value applies"),
    ("query_wait_timeout", "not supported yet: pgpilot has no per-database query_wait_timeout: the [pgbouncer] value applies"),
    ("max_db_client_connections", "not supported yet: pgpilot has no per-database client limit: max_client_conn applies"),
    ("load_balance_hosts", "host lists are not supported yet: pgpilot connects to the first host"),
    (
        "target_session_attrs",
        "pgpilot does not check server roles when connecting; the database's primary gets writes and replicas get reads",
    ),
];

fn database(b: &mut Builder, e: &Entry) -> Result<(), String> {
    let name = e.key.as_str();
    let at = |err: String| format!("{}: [databases] {name}: {err}", e.origin);
    if name.eq_ignore_ascii_case("pgbouncer") || name.eq_ignore_ascii_case("pgpilot") {
        return Err(at("the name is reserved for the admin console; rename the database".into()));
    }
    let pairs = connstr_pairs(&e.value).map_err(&at)?;
    let mut line = DbLine {
        // The fallback's servers are asked for the database the client names, unless dbname= says.
        dbname: if name == crate::config::FALLBACK_DATABASE { String::new() } else { name.to_string() },
        hosts: Vec::new(),
        port: 5432,
        user: None,
        password: None,
        config: DatabaseConfig::default(),
    };
    for (key, value) in &pairs {
        db_key(b, &mut line, name, key, value, e).map_err(&at)?;
    }
    let Some(host) = server_host(b, &line, name, e) else {
        return Ok(());
    };
    if line.password.is_some() && line.user.is_none() {
        let why = "PgBouncer uses a connection string's password only together with user=; so does pgpilot, so it is left out";
        b.note(
            format!("[databases] {name}: password"),
            Some(&e.origin),
            Outcome::NotHonoured(why.into()),
            &[],
        );
        line.password = None;
    }
    line.config.primary =
        server_url(&host, line.port, &line.dbname, line.user.as_deref(), line.password.as_deref());
    b.config.databases.insert(name.to_string(), line.config);
    Ok(())
}

fn db_key(
    b: &mut Builder,
    line: &mut DbLine,
    name: &str,
    key: &str,
    value: &str,
    e: &Entry,
) -> Result<(), String> {
    let setting = format!("[databases] {name}: {key}");
    let target: &str = match key {
        "dbname" | "host" | "port" | "user" | "password" => "primary",
        "reserve_pool" => "reserve_pool_size",
        other => other,
    };
    let c = &mut line.config;
    let mut outcome = Outcome::CarriedOver;
    match key {
        "dbname" => line.dbname = value.to_string(),
        "host" => {
            line.hosts = value.split(',').map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect()
        }
        "port" => line.port = u16::try_from(int(value)?).ok().filter(|p| *p > 0).ok_or("invalid port")?,
        "user" => line.user = Some(value.to_string()),
        "password" => line.password = Some(value.to_string()),
        "pool_size" => c.pool_size = optional_count(value)?,
        "min_pool_size" => c.min_pool_size = optional_count(value)?,
        "reserve_pool" | "reserve_pool_size" => c.reserve_pool_size = optional_count(value)?,
        "max_db_connections" => c.max_db_connections = optional_count(value)?,
        "auth_user" => {
            c.auth_user = Some(value.to_string());
            outcome = Outcome::ChangedMeaning(super::general::AUTH_QUERY_CACHE.into());
        }
        "auth_query" => c.auth_query = Some(value.to_string()),
        "auth_dbname" => c.auth_dbname = Some(value.to_string()),
        "pool_mode" => {
            let (mode, o) = pool_mode(value)?;
            c.pool_mode = Some(mode);
            outcome = o;
        }
        other => {
            let Some((_, why)) = DB_NOT_YET.iter().find(|(k, _)| *k == other) else {
                return Err(format!("unrecognized connection parameter {other} (PgBouncer refuses it too)"));
            };
            let harmless = (other == "target_session_attrs" && value.eq_ignore_ascii_case("any"))
                || (other == "load_balance_hosts" && line.hosts.len() < 2);
            outcome = if harmless { Outcome::CarriedOver } else { Outcome::NotHonoured(why.to_string()) };
            b.note(setting, Some(&e.origin), outcome, &[]);
            return Ok(());
        }
    }
    b.note(setting, Some(&e.origin), outcome, &["databases", name, target]);
    Ok(())
}

/// A count where PgBouncer reads negative as "not set".
fn optional_count(value: &str) -> Result<Option<usize>, String> {
    Ok(if int(value)? < 0 { None } else { Some(count(value)?) })
}

/// The server to connect to, or None (with a note) when pgpilot cannot reach it the way PgBouncer would.
fn server_host(b: &mut Builder, line: &DbLine, name: &str, e: &Entry) -> Option<Host> {
    let setting = format!("[databases] {name}: host");
    let Some(first) = line.hosts.first() else {
        // No host: PgBouncer connects through a Unix socket in its own unix_socket_dir.
        let dir = b.unix_socket_dir.clone();
        if dir.is_empty() || dir.starts_with('@') {
            let why = "no host=, and unix_socket_dir names no directory: pgpilot looks for the server's socket in /tmp";
            b.note(
                setting,
                Some(&e.origin),
                Outcome::ChangedMeaning(why.into()),
                &["databases", name, "primary"],
            );
            return Some(Host::Socket("/tmp".into()));
        }
        return Some(Host::Socket(dir));
    };
    if first.starts_with('@') {
        let why = "abstract-namespace Unix sockets are not supported: this database is left out";
        b.note(setting, Some(&e.origin), Outcome::NotHonoured(why.into()), &[]);
        return None;
    }
    if line.hosts.len() > 1 {
        let why = format!(
            "host lists are not supported: pgpilot connects to {first} only (list pgpilot replicas under the database \
             for read scaling)"
        );
        b.note(setting, Some(&e.origin), Outcome::NotHonoured(why), &["databases", name, "primary"]);
    }
    Some(if first.starts_with('/') { Host::Socket(first.clone()) } else { Host::Tcp(first.clone()) })
}

/// A postgres:// URL that [`crate::config::ServerUrl::parse`] reads back to the same parts.
fn server_url(host: &Host, port: u16, dbname: &str, user: Option<&str>, password: Option<&str>) -> String {
    let userinfo = match (user, password) {
        (Some(u), Some(p)) => format!("{}:{}@", percent_encode(u), percent_encode(p)),
        (Some(u), None) => format!("{}@", percent_encode(u)),
        _ => String::new(),
    };
    match host {
        Host::Tcp(h) => {
            let h = match h.parse::<IpAddr>() {
                Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
                _ => percent_encode(h),
            };
            format!("postgres://{userinfo}{h}:{port}/{}", percent_encode(dbname))
        }
        Host::Socket(dir) => {
            // Slashes may stay as they are in a query string, which keeps the directory readable.
            let dir = percent_encode(dir).replace("%2F", "/");
            format!("postgres://{userinfo}localhost:{port}/{}?host={dir}", percent_encode(dbname))
        }
    }
}

/// `[users]` keys pgpilot does not honour yet.
const USER_NOT_YET: &[&str] = &[
    "pool_size",
    "reserve_pool_size",
    "query_timeout",
    "query_wait_timeout",
    "idle_transaction_timeout",
    "transaction_timeout",
    "client_idle_timeout",
    "max_user_client_connections",
];

fn user(b: &mut Builder, e: &Entry) -> Result<(), String> {
    let name = e.key.as_str();
    let at = |err: String| format!("{}: [users] {name}: {err}", e.origin);
    let mut config = UserConfig::default();
    for (key, value) in connstr_pairs(&e.value).map_err(&at)? {
        let setting = format!("[users] {name}: {key}");
        match key.as_str() {
            "pool_mode" => {
                let (mode, outcome) = pool_mode(&value).map_err(&at)?;
                config.pool_mode = Some(mode);
                b.note(setting, Some(&e.origin), outcome, &["users", name, "pool_mode"]);
            }
            "max_user_connections" => {
                config.max_user_connections = optional_count(&value).map_err(&at)?;
                b.note(
                    setting,
                    Some(&e.origin),
                    Outcome::CarriedOver,
                    &["users", name, "max_user_connections"],
                );
            }
            other if USER_NOT_YET.contains(&other) => {
                let why = format!(
                    "not supported yet: pgpilot has no per-user {other}; the [pgbouncer] value applies"
                );
                b.note(setting, Some(&e.origin), Outcome::NotHonoured(why), &[]);
            }
            other => {
                return Err(at(format!("unrecognized user parameter {other} (PgBouncer refuses it too)")))
            }
        }
    }
    b.config.users.insert(name.to_string(), config);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerUrl;

    #[test]
    fn urls_read_back_to_the_same_parts() {
        let url = server_url(
            &Host::Tcp("db.example".into()),
            6543,
            "my db/x",
            Some("app user"),
            Some("p@ss:w/rd%'\""),
        );
        let u = ServerUrl::parse(&url).unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.dbname.as_str(), u.user.as_deref(), u.password.as_deref()),
            ("db.example", 6543, "my db/x", Some("app user"), Some("p@ss:w/rd%'\""))
        );
        let v6 = ServerUrl::parse(&server_url(&Host::Tcp("::1".into()), 5432, "d", None, None)).unwrap();
        assert_eq!(v6.address(), "[::1]:5432");
        let sock =
            ServerUrl::parse(&server_url(&Host::Socket("/var/run/postgresql".into()), 5433, "d", None, None))
                .unwrap();
        assert_eq!(sock.address(), "/var/run/postgresql/.s.PGSQL.5433");
    }
}
