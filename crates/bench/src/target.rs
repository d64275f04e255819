//! Benchmark targets: `[name=]postgres://...` URLs, with the password taken from the URL, PGPASSWORD
//! or the pgpass file, and never shown again.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use tokio_postgres::config::Host;

/// One endpoint to measure.
#[derive(Clone)]
pub struct Target {
    /// Short name used in reports (`direct`, `pgbouncer`...); defaults to `host:port/db`.
    pub name: String,
    config: tokio_postgres::Config,
    /// The URL without its password, safe to print.
    display_url: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target").field("name", &self.name).field("url", &self.display_url).finish()
    }
}

/// Where and how a client connects, resolved from a target's URL.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub address: Address,
    pub user: String,
    pub dbname: String,
    pub password: Option<Vec<u8>>,
    pub options: Option<String>,
    pub application_name: String,
    pub connect_timeout: std::time::Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Tcp { host: String, port: u16 },
    Unix { path: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target `{0}`: expected a postgres:// URL or a key=value connection string")]
    Syntax(String),
    #[error("target `{0}`: TLS (sslmode=require) is not supported by pgpilot bench; use sslmode=disable or prefer")]
    TlsRequired(String),
    #[error("target `{0}`: no host given")]
    NoHost(String),
}

impl Target {
    /// Parses `URL` or `NAME=URL` (a name is letters, digits, `-`, `_` and `.` only, so that
    /// key=value connection strings are not mistaken for a name).
    pub fn parse(spec: &str) -> Result<Target, TargetError> {
        let (name, url) = split_name(spec);
        let with_port =
            std::env::var("PGPORT").ok().and_then(|p| p.parse::<u16>().ok()).map(|p| with_port(url, p));
        let url = with_port.as_deref().unwrap_or(url);
        let mut config: tokio_postgres::Config = url.parse().map_err(|_| TargetError::Syntax(redact(url)))?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(TargetError::TlsRequired(redact(url)));
        }
        // What the URL leaves out comes from the environment, as in libpq and pgbench.
        if config.get_hosts().is_empty() {
            if let Ok(host) = std::env::var("PGHOST") {
                host.split(',').filter(|h| !h.is_empty()).for_each(|h| {
                    config.host(h);
                });
            }
        }
        if config.get_hosts().is_empty() {
            return Err(TargetError::NoHost(redact(url)));
        }
        if config.get_user().is_none() {
            config.user(default_user());
        }
        if config.get_dbname().is_none() {
            if let Ok(db) = std::env::var("PGDATABASE") {
                config.dbname(db);
            }
        }
        if config.get_dbname().is_none() {
            let user = config.get_user().unwrap_or_default().to_string();
            config.dbname(user);
        }
        if config.get_application_name().is_none() {
            config.application_name("pgpilot-bench");
        }
        let display_url = display_url(&config);
        if config.get_password().is_none() {
            if let Some(pw) = password_from_env(&config) {
                config.password(pw);
            }
        }
        let name = name.map(str::to_string).unwrap_or_else(|| short_name(&config));
        Ok(Target { name, config, display_url })
    }

    /// The URL without any password.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// The tokio-postgres configuration (setup queries, demo installation).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The first host of the URL, which is where load goes.
    pub fn endpoint(&self) -> Endpoint {
        let c = &self.config;
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let address = match &c.get_hosts()[0] {
            Host::Tcp(host) => Address::Tcp { host: host.clone(), port },
            Host::Unix(dir) => Address::Unix { path: dir.join(format!(".s.PGSQL.{port}")) },
        };
        Endpoint {
            address,
            user: c.get_user().unwrap_or_default().to_string(),
            dbname: c.get_dbname().unwrap_or_default().to_string(),
            password: c.get_password().map(<[u8]>::to_vec),
            options: c.get_options().map(str::to_string),
            application_name: c.get_application_name().unwrap_or("pgpilot-bench").to_string(),
            connect_timeout: c.get_connect_timeout().copied().unwrap_or(std::time::Duration::from_secs(10)),
        }
    }
}

/// Keys of libpq connection strings: `host=...` starts a connection string, not a name.
const CONNINFO_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "options",
    "application_name",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "target_session_attrs",
    "channel_binding",
    "keepalives",
    "keepalives_idle",
    "load_balance_hosts",
    "service",
];

fn split_name(spec: &str) -> (Option<&str>, &str) {
    if let Some((name, rest)) = spec.split_once('=') {
        let url = rest.starts_with("postgres://") || rest.starts_with("postgresql://");
        let conninfo = rest.contains('=') && !CONNINFO_KEYS.contains(&name);
        let is_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && (url || conninfo);
        if is_name {
            return (Some(name), rest);
        }
    }
    (None, spec)
}

/// `url` with `port` where it names none (PGPORT, as libpq takes it); as it is otherwise, or when
/// it names several hosts.
fn with_port(url: &str, port: u16) -> String {
    if names_port(url) {
        return url.to_string();
    }
    match around_hosts(url) {
        None => format!("{url} port={port}"),
        Some((_, hosts, _)) if hosts.is_empty() || hosts.contains(',') => url.to_string(),
        Some((before, hosts, after)) => format!("{before}{hosts}:{port}{after}"),
    }
}

/// Whether the URL or connection string gives a port (tokio-postgres fills in 5432 otherwise).
fn names_port(url: &str) -> bool {
    match around_hosts(url) {
        // [::1]:5432, host:5432 (a bare IPv6 address only in brackets), or ?port= after them.
        Some((_, hosts, after)) => {
            hosts.rsplit_once(']').map_or(hosts, |(_, rest)| rest).contains(':') || after.contains("port=")
        }
        None => url.split_whitespace().any(|kv| kv.starts_with("port=")),
    }
}

/// A URL cut around its hosts (with their ports): what comes before (scheme and user), the hosts,
/// and what follows (path and query). None for a key=value connection string.
fn around_hosts(url: &str) -> Option<(&str, &str, &str)> {
    let rest_at = url.find("://")? + 3;
    let rest = &url[rest_at..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let hosts_at = rest[..end].rfind('@').map_or(0, |i| i + 1);
    Some((&url[..rest_at + hosts_at], &rest[hosts_at..end], &rest[end..]))
}

fn default_user() -> String {
    std::env::var("PGUSER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "postgres".into())
}

fn host_label(config: &tokio_postgres::Config) -> (String, u16) {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    (host, port)
}

fn short_name(config: &tokio_postgres::Config) -> String {
    let (host, port) = host_label(config);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or_default())
}

fn display_url(config: &tokio_postgres::Config) -> String {
    let (host, port) = host_label(config);
    let host = if host.starts_with('/') { format!("[{host}]") } else { host };
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or_default(),
        config.get_dbname().unwrap_or_default()
    )
}

/// A URL as the user wrote it, with anything between `:` and `@` in the authority removed.
fn redact(url: &str) -> String {
    if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        if let Some((auth, tail)) = rest.split_once('@') {
            if let Some((user, _)) = auth.split_once(':') {
                let scheme = &url[..url.len() - rest.len()];
                return format!("{scheme}{user}:***@{tail}");
            }
        }
    }
    if url.contains("password=") {
        return "(connection string with a password)".into();
    }
    url.to_string()
}

/// PGPASSWORD first, then the pgpass file (PGPASSFILE or ~/.pgpass), as libpq does.
fn password_from_env(config: &tokio_postgres::Config) -> Option<String> {
    if let Ok(pw) = std::env::var("PGPASSWORD") {
        return Some(pw);
    }
    let file = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let (host, port) = host_label(config);
    let host = if host.starts_with('/') { "localhost".to_string() } else { host };
    pgpass_lookup(
        &text,
        &host,
        &port.to_string(),
        config.get_dbname().unwrap_or_default(),
        config.get_user().unwrap_or_default(),
    )
}

/// Finds the first matching `host:port:db:user:password` line (`*` matches anything, `\` escapes).
pub(crate) fn pgpass_lookup(text: &str, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() != 5 {
            continue;
        }
        let matches = |field: &str, value: &str| field == "*" || field == value;
        if matches(&fields[0], host)
            && matches(&fields[1], port)
            && matches(&fields[2], db)
            && matches(&fields[3], user)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut().expect("non-empty").push(n);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            _ => fields.last_mut().expect("non-empty").push(c),
        }
    }
    fields
}

/// The identity shown in reports.
#[derive(Clone, Debug, Serialize)]
pub struct TargetInfo {
    pub name: String,
    pub url: String,
}

impl From<&Target> for TargetInfo {
    fn from(t: &Target) -> Self {
        TargetInfo { name: t.name.clone(), url: t.display_url.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls() {
        let t = Target::parse("pgbouncer=postgres://app@127.0.0.1:6432/shop").unwrap();
        assert_eq!(t.name, "pgbouncer");
        assert_eq!(t.display_url(), "postgres://app@127.0.0.1:6432/shop");
        let t = Target::parse("postgres://app:secret@db.local/shop").unwrap();
        assert_eq!(t.name, "db.local:5432/shop");
        assert!(!format!("{t:?}").contains("secret"));
        assert_eq!(t.endpoint().password.as_deref(), Some(&b"secret"[..]));
        let t = Target::parse("host=127.0.0.1 port=5433 user=u dbname=d").unwrap();
        assert_eq!(t.endpoint().address, Address::Tcp { host: "127.0.0.1".into(), port: 5433 });
        // A name before a key=value connection string too.
        let t = Target::parse("direct=host=127.0.0.1 port=5433 user=u dbname=d").unwrap();
        assert_eq!(t.name, "direct");
        assert_eq!(t.endpoint().address, Address::Tcp { host: "127.0.0.1".into(), port: 5433 });
    }

    #[test]
    fn a_port_given_or_not() {
        assert!(names_port("postgres://u:pw@h:6432/db"));
        assert!(names_port("postgres://[::1]:6432/db"));
        assert!(names_port("host=h port=6432"));
        assert!(!names_port("postgres://u:pw@h/db"));
        assert!(!names_port("postgres://[::1]/db"));
        assert!(!names_port("host=h dbname=d"));
        assert_eq!(with_port("postgres://u:pw@h/db?x=1", 6432), "postgres://u:pw@h:6432/db?x=1");
        assert_eq!(with_port("postgres://u@h:5433/db", 6432), "postgres://u@h:5433/db");
        assert_eq!(with_port("host=h dbname=d", 6432), "host=h dbname=d port=6432");
    }

    #[test]
    fn bad_urls_never_echo_passwords() {
        let err = Target::parse("postgres://u:hunter2@h:notaport/db").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let err = Target::parse("postgres://u:hunter2@h/db?sslmode=require").unwrap_err().to_string();
        assert!(err.contains("TLS") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn pgpass_matching() {
        let text = "# comment\nother:5432:*:*:nope\n127.0.0.1:*:shop:app:pa\\:ss\n";
        assert_eq!(pgpass_lookup(text, "127.0.0.1", "6432", "shop", "app").as_deref(), Some("pa:ss"));
        assert_eq!(pgpass_lookup(text, "127.0.0.1", "6432", "other", "app"), None);
    }
}
