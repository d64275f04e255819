//! From a job to a connection: `[databases.NAME].primary` URLs or a job's own `url`.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::spec::{JobSpec, Target};

/// A connection being opened.
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<tokio_postgres::Client, tokio_postgres::Error>> + Send + 'a>>;

/// Maps a job to the database it works on, and opens connections to it.
pub trait DatabaseResolver: Send + Sync + 'static {
    fn resolve(&self, job: &JobSpec) -> Result<tokio_postgres::Config, ResolveError>;

    /// Opens a connection and drives it in the background. The default speaks plain TCP; a
    /// resolver that knows the gateway's server TLS settings overrides this to use them.
    fn connect<'a>(&'a self, config: &'a tokio_postgres::Config) -> ConnectFuture<'a> {
        Box::pin(crate::pg::connect(config))
    }
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("there is no [databases.{0}] table in the config")]
    UnknownDatabase(String),
    #[error("[databases.{0}] has no `primary` URL")]
    NoPrimary(String),
    /// The URL itself is never repeated here: it may hold a password.
    #[error("the connection URL for {what} is not valid: {reason}")]
    BadUrl { what: String, reason: String },
}

/// The `[databases.NAME]` tables of pgpilot.toml, reduced to what jobs need: the primary's URL.
#[derive(Clone, Debug, Default)]
pub struct DatabaseUrls {
    primaries: BTreeMap<String, Option<String>>,
}

/// The part of pgpilot.toml that jobs read; every other key is ignored here (the gateway checks it).
#[derive(Deserialize)]
struct PartialConfig {
    #[serde(default)]
    databases: BTreeMap<String, toml::Value>,
    #[serde(default)]
    jobs: Vec<JobSpec>,
}

/// Jobs and database URLs read from a pgpilot.toml's text (the library on its own; `pgpilot jobs`
/// logs in through the gateway's config instead).
#[derive(Clone, Debug)]
pub struct JobsConfig {
    pub databases: DatabaseUrls,
    pub jobs: Vec<JobSpec>,
}

impl JobsConfig {
    pub fn parse(text: &str) -> Result<JobsConfig, String> {
        let partial: PartialConfig = crate::parse_toml(text)?;
        let mut primaries = BTreeMap::new();
        for (name, value) in partial.databases {
            // A [databases.X] table may hold many gateway keys; only `primary` matters to jobs.
            let primary = match value {
                toml::Value::Table(t) => t.get("primary").and_then(|v| v.as_str().map(str::to_string)),
                _ => return Err(format!("[databases.{name}] must be a table")),
            };
            primaries.insert(name, primary);
        }
        Ok(JobsConfig { databases: DatabaseUrls { primaries }, jobs: partial.jobs })
    }
}

impl DatabaseUrls {
    pub fn new(primaries: impl IntoIterator<Item = (String, String)>) -> DatabaseUrls {
        DatabaseUrls { primaries: primaries.into_iter().map(|(k, v)| (k, Some(v))).collect() }
    }

    /// The connection settings of `[databases.NAME]`'s primary.
    pub fn primary(&self, name: &str) -> Result<tokio_postgres::Config, ResolveError> {
        let entry = self.primaries.get(name).ok_or_else(|| ResolveError::UnknownDatabase(name.into()))?;
        let url = entry.as_ref().ok_or_else(|| ResolveError::NoPrimary(name.into()))?;
        config_from_url(url, &format!("[databases.{name}]"))
    }

    pub fn names(&self) -> Vec<&str> {
        self.primaries.keys().map(String::as_str).collect()
    }
}

impl DatabaseResolver for DatabaseUrls {
    fn resolve(&self, job: &JobSpec) -> Result<tokio_postgres::Config, ResolveError> {
        match &job.target {
            Target::Url(url) => config_from_url(url, &format!("job `{}`", job.name)),
            Target::Database(name) => self.primary(name),
        }
    }
}

/// Parses a postgres:// URL; the password comes from the URL or, failing that, PGPASSWORD.
pub fn config_from_url(url: &str, what: &str) -> Result<tokio_postgres::Config, ResolveError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ResolveError::BadUrl {
            what: what.into(),
            reason: "it must start with postgres://".into(),
        });
    }
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| ResolveError::BadUrl { what: what.into(), reason: parse_error_reason(url, &e) })?;
    if config.get_password().is_none() {
        if let Ok(password) = std::env::var("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name("pgpilot-jobs");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    Ok(config)
}

/// libpq connection parameters tokio-postgres (which job connections use) does not take, with
/// what to do instead where there is something.
const LIBPQ_ONLY_PARAMETERS: &[(&str, &str)] = &[
    ("sslcert", TLS_HINT),
    ("sslkey", TLS_HINT),
    ("sslpassword", TLS_HINT),
    ("sslrootcert", TLS_HINT),
    ("sslcrl", TLS_HINT),
    ("sslcrldir", TLS_HINT),
    ("sslsni", TLS_HINT),
    ("sslcompression", TLS_HINT),
    ("ssl_min_protocol_version", TLS_HINT),
    ("ssl_max_protocol_version", TLS_HINT),
    ("passfile", "give the password in the URL or in PGPASSWORD"),
    ("service", "write the host, port, user and dbname in the URL"),
    ("client_encoding", "job connections always use UTF8"),
    ("fallback_application_name", "use application_name"),
];

const TLS_HINT: &str = "a URL sets only `sslmode` (disable, prefer or require); certificates and CAs come \
                        from [tls] for jobs on a `database` (docs/jobs.md, Limits)";

/// Why tokio-postgres refused a postgres:// URL, naming the parameter. tokio-postgres's own
/// message is only "invalid connection string" (the detail is in its source), and no part of it
/// repeats a value, so no password is shown.
fn parse_error_reason(url: &str, error: &tokio_postgres::Error) -> String {
    let (_, host_at) = redact_userinfo(url);
    let query = url[host_at..].split_once('?').map(|(_, q)| q).unwrap_or("");
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = percent_decoded(pair.split_once('=').map_or(pair, |(k, _)| k));
        if let Some((_, instead)) = LIBPQ_ONLY_PARAMETERS.iter().find(|(name, _)| *name == key) {
            return format!(
                "the parameter `{key}` is not supported by pgpilot's job connections ({instead})"
            );
        }
    }
    match std::error::Error::source(error) {
        Some(source) => {
            let detail = source.to_string();
            match detail.strip_prefix("unknown option ") {
                Some(key) => format!("the parameter {key} is not supported by pgpilot's job connections"),
                None if detail.contains("`sslmode`") => format!(
                    "{error}: {detail} (job connections take disable, prefer or require; certificate checks \
                     come from [tls] for jobs on a `database`)"
                ),
                None => format!("{error}: {detail}"),
            }
        }
        None => error.to_string(),
    }
}

/// Query parameters of a connection URL whose values are secrets (libpq's names).
const SECRET_PARAMETERS: &[&str] = &["password", "sslpassword"];

/// The URL with any password replaced, for messages: the userinfo's (`user:***@`) and the
/// values of secret query parameters (`?password=***`, `sslpassword=***`).
pub fn redact_url(url: &str) -> String {
    let (mut redacted, host_at) = redact_userinfo(url);
    // The query starts at the first `?` after the userinfo (a raw `?` in a password is not one).
    if let Some(q) = redacted[host_at..].find('?').map(|q| host_at + q) {
        let query = redact_query(&redacted[q + 1..]);
        redacted.truncate(q + 1);
        redacted.push_str(&query);
    }
    redacted
}

/// The URL with the userinfo's password masked, and where its host begins. The userinfo ends at
/// the last `@` before the path.
fn redact_userinfo(url: &str) -> (String, usize) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return (url.to_string(), 0) };
    let rest = &url[scheme_end..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
            let head = format!("{}{masked}@", &url[..scheme_end]);
            let host_at = head.len();
            (format!("{head}{}", &rest[at + 1..]), host_at)
        }
        None => (url.to_string(), scheme_end),
    }
}

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if SECRET_PARAMETERS.contains(&percent_decoded(key).as_str()) => {
                format!("{key}=***")
            }
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `%XX` escapes decoded (a key may be written `pass%77ord`); anything malformed is kept as is.
fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// Identifies a database (host, port, name, user) so jobs on the same one share history queries.
pub fn database_key(config: &tokio_postgres::Config) -> String {
    format!("{}@{}", config.get_user().unwrap_or(""), server_address(config))
}

/// `host:port/dbname` of the settings, for messages naming the server (several hosts joined by commas).
pub fn server_address(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    let port = if ports.is_empty() { "5432".to_string() } else { ports.join(",") };
    format!("{}:{port}/{}", hosts.join(","), config.get_dbname().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://app:s3cret@db:5432/app"), "postgres://app:***@db:5432/app");
        assert_eq!(redact_url("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(redact_url("postgres://db/app?user=x"), "postgres://db/app?user=x");
    }

    #[test]
    fn redacts_secret_query_parameters() {
        assert_eq!(
            redact_url("postgres://u@db/app?password=s3cret&sslmode=disable"),
            "postgres://u@db/app?password=***&sslmode=disable"
        );
        assert_eq!(
            redact_url("postgresql://u:pw@db/app?sslpassword=k3y&pass%77ord=x&application_name=a"),
            "postgresql://u:***@db/app?sslpassword=***&pass%77ord=***&application_name=a"
        );
        assert_eq!(redact_url("postgres://db?password="), "postgres://db?password=***");
        // An `@` in a query value is not userinfo; a raw `?` in a password is not a query.
        assert_eq!(redact_url("postgres://db/app?options=a@b"), "postgres://db/app?options=a@b");
        assert_eq!(redact_url("postgres://u:p?w@db/app?password=x"), "postgres://u:***@db/app?password=***");
    }

    #[test]
    fn reads_databases_and_jobs_ignoring_gateway_keys() {
        let config = JobsConfig::parse(
            r#"
            listen = "0.0.0.0:6432"
            [databases.app]
            primary = "postgres://app@127.0.0.1:5432/app"
            replicas = ["postgres://app@127.0.0.1:5433/app"]
            pool_size = 20

            [[jobs]]
            name = "events-partitions"
            kind = "partitions"
            schedule = "@daily"
            database = "app"
            table = "public.events"
            interval = "monthly"
            "#,
        )
        .unwrap();
        assert_eq!(config.jobs.len(), 1);
        let cfg = config.databases.resolve(&config.jobs[0]).unwrap();
        assert_eq!(cfg.get_dbname(), Some("app"));
        assert_eq!(cfg.get_application_name(), Some("pgpilot-jobs"));
    }

    #[test]
    fn libpq_only_parameters_are_named_without_their_values() {
        let err = config_from_url("postgres://u:hunter2@db/app?sslpassword=TopSecret96", "job `x`")
            .unwrap_err()
            .to_string();
        assert!(err.contains("the parameter `sslpassword` is not supported"), "{err}");
        assert!(!err.contains("TopSecret96") && !err.contains("hunter2"), "{err}");
        for key in [
            "sslrootcert",
            "sslcert",
            "gssencmode",
            "passfile",
            "client_encoding",
            "fallback_application_name",
        ] {
            let err = config_from_url(&format!("postgres://db/app?sslmode=require&{key}=v"), "x")
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{key}` is not supported")), "{err}");
        }
        let err = config_from_url("postgres://db:notaport/app", "x").unwrap_err().to_string();
        assert!(err.contains("invalid value for option `port`"), "{err}");
        assert!(config_from_url("postgres://db/app?sslmode=require&application_name=a", "x").is_ok());
    }

    #[test]
    fn bad_url_errors_do_not_repeat_the_password() {
        let err = config_from_url("postgres://u:hunter2@host:notaport/db", "x").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
