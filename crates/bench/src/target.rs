//! Benchmark targets: `[name=]postgres://...` URLs, with the password taken from the URL, PGPASSWORD
//! or the pgpass file, and never shown again.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

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
    pub connect_timeout: Duration,
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
    #[error("target `{0}`: {1}")]
    Address(String, String),
}

impl Target {
    /// Parses `URL` or `NAME=URL` (a name is letters, digits, `-`, `_` and `.` only, so that
    /// key=value connection strings are not mistaken for a name).
    pub fn parse(spec: &str) -> Result<Target, TargetError> {
        Target::parse_in(spec, &AddressEnvironment::from_env())
    }

    /// [`Target::parse`] with PGHOST and PGPORT as given.
    fn parse_in(spec: &str, environment: &AddressEnvironment) -> Result<Target, TargetError> {
        let (name, url) = split_name(spec);
        let given: tokio_postgres::Config = url.parse().map_err(|_| TargetError::Syntax(redact(url)))?;
        if given.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(TargetError::TlsRequired(redact(url)));
        }
        // What the URL leaves out comes from the environment, as in libpq and pgbench.
        let written = WrittenAddress {
            hosts: given.get_hosts(),
            hostaddrs: given.get_hostaddrs(),
            ports: names_port(url, &given).then(|| given.get_ports()),
        };
        let (hosts, ports) =
            written.resolve(environment).map_err(|why| TargetError::Address(redact(url), why))?;
        let mut config = with_hosts_and_ports(&given, &hosts, &ports);
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
            connect_timeout: self.connect_timeout(),
        }
    }

    /// How long connecting and logging in may take: the target's `connect_timeout`, else
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(&self) -> Duration {
        self.config.get_connect_timeout().copied().unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }
}

/// libpq waits forever without a `connect_timeout`; a load generator facing a target that accepts
/// connections and never answers (a stuck pooler, a firewall) must fail instead of hanging.
/// tokio-postgres reads `connect_timeout=0` as none, so it gets this bound too.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// The hosts and ports a target spells out, before the environment fills the gaps.
struct WrittenAddress<'a> {
    /// As parsed: an empty `Host::Tcp` is a host left empty (`postgres://:5433/db`).
    hosts: &'a [Host],
    /// Addresses given with `hostaddr=`, which stand in for hosts when none is named.
    hostaddrs: &'a [std::net::IpAddr],
    /// None when no port is written: tokio-postgres then reports 5432, which must not hide PGPORT.
    ports: Option<&'a [u16]>,
}

/// PGHOST and PGPORT, read once (tests give their own).
#[derive(Default)]
struct AddressEnvironment {
    pghost: Option<String>,
    pgport: Option<String>,
}

impl AddressEnvironment {
    fn from_env() -> AddressEnvironment {
        let non_empty = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        AddressEnvironment { pghost: non_empty("PGHOST"), pgport: non_empty("PGPORT") }
    }
}

impl WrittenAddress<'_> {
    /// libpq's rules: hosts the target leaves out or empty come from PGHOST, else the default
    /// (a Unix socket directory holding the server's socket, else localhost); ports it leaves out
    /// come from PGPORT, else 5432. One port serves every host.
    fn resolve(&self, environment: &AddressEnvironment) -> Result<(Vec<Host>, Vec<u16>), String> {
        let ports = match (self.ports, &environment.pgport) {
            (Some(written), _) => written.to_vec(),
            (None, Some(pgport)) => parse_ports(pgport)?,
            (None, None) => vec![DEFAULT_PORT],
        };
        let default_host = || default_host(ports[0]);
        let named = self.hosts.iter().any(|h| !matches!(h, Host::Tcp(t) if t.is_empty()));
        let hosts: Vec<Host> = if named {
            self.hosts.to_vec()
        } else if !self.hostaddrs.is_empty() {
            self.hostaddrs.iter().map(|a| Host::Tcp(a.to_string())).collect()
        } else if let Some(pghost) = &environment.pghost {
            pghost.split(',').map(host_from_text).collect()
        } else {
            vec![default_host()]
        };
        // An empty entry of a list (`h1,,h3`) is the default host, as in libpq.
        let hosts: Vec<Host> = hosts
            .into_iter()
            .map(|h| match h {
                Host::Tcp(t) if t.is_empty() => default_host(),
                other => other,
            })
            .collect();
        if ports.len() != 1 && ports.len() != hosts.len() {
            return Err(format!(
                "{} ports for {} hosts (give one port, or one per host)",
                ports.len(),
                hosts.len()
            ));
        }
        Ok((hosts, ports))
    }
}

const DEFAULT_PORT: u16 = 5432;

/// Where libpq looks for a server's socket when no host is given: Debian's directory, then the
/// upstream default.
const SOCKET_DIRECTORIES: [&str; 2] = ["/var/run/postgresql", "/tmp"];

/// libpq's default host: the Unix socket directory where a server listens on `port`; localhost
/// when there is none (libpq would fail on the missing socket; TCP is the likelier intent).
fn default_host(port: u16) -> Host {
    SOCKET_DIRECTORIES
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join(format!(".s.PGSQL.{port}")).exists())
        .map_or_else(|| Host::Tcp("localhost".into()), Host::Unix)
}

/// A host of PGHOST: a directory (a Unix socket) when it starts with `/`.
fn host_from_text(text: &str) -> Host {
    if text.starts_with('/') {
        Host::Unix(PathBuf::from(text))
    } else {
        Host::Tcp(text.to_string())
    }
}

/// PGPORT: one port, or one per host separated by commas (an empty one is 5432).
fn parse_ports(text: &str) -> Result<Vec<u16>, String> {
    text.split(',')
        .map(|p| match p.trim() {
            "" => Ok(DEFAULT_PORT),
            p => p.parse().map_err(|_| format!("PGPORT `{text}` is not a port number")),
        })
        .collect()
}

/// `given` with its hosts and ports replaced: tokio_postgres::Config can add hosts but not remove
/// an empty one, so everything else is copied over.
fn with_hosts_and_ports(
    given: &tokio_postgres::Config,
    hosts: &[Host],
    ports: &[u16],
) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    for host in hosts {
        match host {
            Host::Tcp(name) => config.host(name),
            Host::Unix(dir) => config.host_path(dir),
        };
    }
    // hostaddr gives each host's address: it only fits the hosts it was written with.
    if given.get_hostaddrs().len() == hosts.len() {
        given.get_hostaddrs().iter().for_each(|a| {
            config.hostaddr(*a);
        });
    }
    ports.iter().for_each(|p| {
        config.port(*p);
    });
    copy_settings(given, &mut config);
    config
}

/// Everything of a configuration but its hosts, hostaddrs and ports.
fn copy_settings(from: &tokio_postgres::Config, to: &mut tokio_postgres::Config) {
    if let Some(user) = from.get_user() {
        to.user(user);
    }
    if let Some(password) = from.get_password() {
        to.password(password);
    }
    if let Some(dbname) = from.get_dbname() {
        to.dbname(dbname);
    }
    if let Some(options) = from.get_options() {
        to.options(options);
    }
    if let Some(name) = from.get_application_name() {
        to.application_name(name);
    }
    if let Some(timeout) = from.get_connect_timeout() {
        to.connect_timeout(*timeout);
    }
    if let Some(timeout) = from.get_tcp_user_timeout() {
        to.tcp_user_timeout(*timeout);
    }
    if let Some(interval) = from.get_keepalives_interval() {
        to.keepalives_interval(interval);
    }
    if let Some(retries) = from.get_keepalives_retries() {
        to.keepalives_retries(retries);
    }
    to.ssl_mode(from.get_ssl_mode())
        .ssl_negotiation(from.get_ssl_negotiation())
        .keepalives(from.get_keepalives())
        .keepalives_idle(from.get_keepalives_idle())
        .target_session_attrs(from.get_target_session_attrs())
        .channel_binding(from.get_channel_binding())
        .load_balance_hosts(from.get_load_balance_hosts());
}

/// Whether the URL or connection string gives a port. tokio-postgres reports 5432 for a URL's
/// host written without one, so a URL is read as written (an empty port, `h:`, is none, as in
/// libpq); a key=value string has ports only if it says `port=`.
fn names_port(url: &str, parsed: &tokio_postgres::Config) -> bool {
    let Some((_, hosts, after)) = around_hosts(url) else { return !parsed.get_ports().is_empty() };
    // [::1]:5432, host:5432 (a bare IPv6 address only in brackets), or ?port= after them.
    let written_port = |chunk: &str| {
        let after_bracket = chunk.rsplit_once(']').map_or(chunk, |(_, rest)| rest);
        after_bracket.split_once(':').is_some_and(|(_, port)| !port.is_empty())
    };
    let query_port =
        after.split(['?', '&']).any(|kv| kv.strip_prefix("port=").is_some_and(|v| !v.is_empty()));
    hosts.split(',').any(written_port) || query_port
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
        let parse = |spec| Target::parse_in(spec, &AddressEnvironment::default());
        let t = parse("pgbouncer=postgres://app@127.0.0.1:6432/shop").unwrap();
        assert_eq!(t.name, "pgbouncer");
        assert_eq!(t.display_url(), "postgres://app@127.0.0.1:6432/shop");
        let t = parse("postgres://app:secret@db.local/shop").unwrap();
        assert_eq!(t.name, "db.local:5432/shop");
        assert!(!format!("{t:?}").contains("secret"));
        assert_eq!(t.endpoint().password.as_deref(), Some(&b"secret"[..]));
        let t = parse("host=127.0.0.1 port=5433 user=u dbname=d").unwrap();
        assert_eq!(t.endpoint().address, Address::Tcp { host: "127.0.0.1".into(), port: 5433 });
        // A name before a key=value connection string too.
        let t = parse("direct=host=127.0.0.1 port=5433 user=u dbname=d").unwrap();
        assert_eq!(t.name, "direct");
        assert_eq!(t.endpoint().address, Address::Tcp { host: "127.0.0.1".into(), port: 5433 });
    }

    #[test]
    fn a_port_given_or_not() {
        let written = |url: &str| names_port(url, &url.parse().unwrap());
        assert!(written("postgres://u:pw@h:6432/db"));
        assert!(written("postgres://[::1]:6432/db"));
        assert!(written("postgres://:6432/db"));
        assert!(written("postgres:///db?host=/tmp&port=6432"));
        assert!(written("host=h port=6432"));
        assert!(!written("postgres://u:pw@h/db"));
        assert!(!written("postgres://[::1]/db"));
        assert!(!written("postgres://h:/db"), "an empty port is none");
        assert!(!written("postgres://"));
        assert!(!written("host=h dbname=d"));
    }

    fn environment(pghost: Option<&str>, pgport: Option<&str>) -> AddressEnvironment {
        AddressEnvironment { pghost: pghost.map(str::to_string), pgport: pgport.map(str::to_string) }
    }

    fn address_of(spec: &str, environment: &AddressEnvironment) -> Address {
        Target::parse_in(spec, environment).unwrap().endpoint().address
    }

    fn tcp(host: &str, port: u16) -> Address {
        Address::Tcp { host: host.into(), port }
    }

    #[test]
    fn what_a_url_leaves_out_comes_from_pghost_and_pgport() {
        let env = environment(Some("127.0.0.1"), Some("22300"));
        for url in ["postgres://", "postgresql://", "postgres:///bench", "postgres://app@/bench"] {
            assert_eq!(address_of(url, &env), tcp("127.0.0.1", 22300), "{url}");
        }
        // An empty port: PGPORT.
        assert_eq!(address_of("postgres://h:/db", &env), tcp("h", 22300));
        // An empty host with a port: PGHOST, and the port written.
        assert_eq!(address_of("postgres://:22301/bench", &env), tcp("127.0.0.1", 22301));
        // A host without a port: PGPORT.
        assert_eq!(address_of("postgres://db.local/shop", &env), tcp("db.local", 22300));
        assert_eq!(address_of("host=db.local dbname=shop", &env), tcp("db.local", 22300));
        // What the target writes wins.
        assert_eq!(address_of("postgres://db.local:6432/shop", &env), tcp("db.local", 6432));
        assert_eq!(address_of("host=db.local port=6432", &env), tcp("db.local", 6432));
        // PGHOST may name a socket directory.
        let socket = environment(Some("/run/pg"), Some("6000"));
        assert_eq!(
            address_of("postgres:///db", &socket),
            Address::Unix { path: "/run/pg/.s.PGSQL.6000".into() }
        );
    }

    #[test]
    fn several_hosts_share_pgport() {
        let env = environment(None, Some("6000"));
        let t = Target::parse_in("postgres://a,b/db", &env).unwrap();
        assert_eq!(t.config().get_ports(), &[6000]);
        assert_eq!(t.config().get_hosts().len(), 2);
        let err = Target::parse_in("postgres://a,b,c/db", &environment(None, Some("1,2"))).unwrap_err();
        assert!(err.to_string().contains("2 ports for 3 hosts"), "{err}");
        let err = Target::parse_in("postgres://a/db", &environment(None, Some("x"))).unwrap_err();
        assert!(err.to_string().contains("PGPORT `x`"), "{err}");
    }

    #[test]
    fn without_pghost_the_default_is_a_socket_directory_or_localhost() {
        let env = environment(None, None);
        let expected = match default_host(DEFAULT_PORT) {
            Host::Unix(dir) => Address::Unix { path: dir.join(".s.PGSQL.5432") },
            Host::Tcp(host) => tcp(&host, DEFAULT_PORT),
        };
        assert_eq!(address_of("postgres:///db", &env), expected);
        assert_eq!(address_of("postgres://:5432/db", &env), expected);
        // A port no server listens on: no socket to find, so TCP on localhost.
        let free = environment(None, Some("1"));
        assert_eq!(address_of("postgres:///db", &free), tcp("localhost", 1));
    }

    #[test]
    fn settings_survive_the_host_and_port_rewrite() {
        let url =
            "postgres://u:pw@/db?application_name=app&options=-c%20x%3D1&connect_timeout=3&keepalives_idle=7";
        let t = Target::parse_in(url, &environment(Some("h"), None)).unwrap();
        let c = t.config();
        assert_eq!(
            (c.get_user(), c.get_dbname(), c.get_password()),
            (Some("u"), Some("db"), Some(&b"pw"[..]))
        );
        assert_eq!(c.get_application_name(), Some("app"));
        assert_eq!(c.get_options(), Some("-c x=1"));
        assert_eq!(c.get_connect_timeout(), Some(&std::time::Duration::from_secs(3)));
        assert_eq!(c.get_keepalives_idle(), std::time::Duration::from_secs(7));
        assert_eq!(t.endpoint().address, tcp("h", 5432));
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
