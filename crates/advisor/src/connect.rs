//! Connecting to the database being advised: URL or libpq string, password from the URL, PGPASSWORD
//! or the pgpass file (never a flag), TLS per sslmode, or a database named in pgpilot's TOML config.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config};

use crate::pgpass;
use crate::tls::{RustlsConnect, Verification};

/// A parsed connection target. Its Display form never includes the password.
#[derive(Clone)]
pub struct Target {
    config: Config,
    verification: Verification,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Target {
    /// Parses a `postgres://` URL or a `key=value` string and fills in the password.
    pub fn parse(url: &str) -> Result<Target> {
        // tokio-postgres knows disable/prefer/require; verify-ca and verify-full mean "require, and
        // check the certificate", which the TLS connector does itself.
        let verify = url.contains("sslmode=verify-full") || url.contains("sslmode=verify-ca");
        let normalized = url
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require");
        let mut config = Config::from_str(&normalized)
            .map_err(|e| anyhow!("invalid connection string ({}): {e}", redact(url)))?;
        if config.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "postgres".into());
            config.user(user);
        }
        if config.get_hosts().is_empty() {
            config.host(std::env::var("PGHOST").as_deref().unwrap_or("localhost"));
        }
        if config.get_dbname().is_none() {
            let user = config.get_user().unwrap_or("postgres").to_string();
            config.dbname(std::env::var("PGDATABASE").unwrap_or(user));
        }
        if config.get_password().is_none() {
            if let Some(pw) = password_from_environment(&config) {
                config.password(pw);
            }
        }
        let verification = if verify { Verification::Full } else { Verification::None };
        Ok(Target { config, verification })
    }

    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or("postgres")
    }

    /// `user@host:port/db`, for reports and error messages.
    pub fn describe(&self) -> String {
        format!("{}@{}/{}", self.config.get_user().unwrap_or("?"), self.server(), self.dbname())
    }

    /// The server alone, `host:port`: what the server counts is the same whichever role reads it.
    pub fn server(&self) -> String {
        let host = self.config.get_hosts().first().map(host_text).unwrap_or_else(|| "localhost".into());
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}:{port}")
    }

    /// True when the server runs on this machine (so its memory and CPUs can be read here).
    pub fn is_local(&self) -> bool {
        self.config.get_hosts().iter().all(|h| match h {
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1") || name.starts_with("127.")
            }
        })
    }

    pub async fn connect(&self) -> Result<Client> {
        let describe = self.describe();
        let client = if self.config.get_ssl_mode() == SslMode::Disable {
            let (client, connection) = self
                .config
                .connect(tokio_postgres::NoTls)
                .await
                .with_context(|| format!("connecting to {describe}"))?;
            tokio::spawn(connection);
            client
        } else {
            let tls = RustlsConnect::new(self.verification);
            let (client, connection) =
                self.config.connect(tls).await.with_context(|| format!("connecting to {describe}"))?;
            tokio::spawn(connection);
            client
        };
        Ok(client)
    }
}

fn host_text(host: &Host) -> String {
    match host {
        Host::Tcp(name) => name.clone(),
        Host::Unix(path) => path.display().to_string(),
    }
}

fn password_from_environment(config: &Config) -> Option<String> {
    if let Ok(pw) = std::env::var("PGPASSWORD") {
        return Some(pw);
    }
    let file = pgpass::default_path()?;
    // libpq matches a Unix socket as "localhost".
    let host = match config.get_hosts().first()? {
        Host::Tcp(name) => name.clone(),
        Host::Unix(_) => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let entry = pgpass::Entry {
        host: &host,
        port,
        database: config.get_dbname().unwrap_or(""),
        user: config.get_user().unwrap_or(""),
    };
    pgpass::lookup(&file, &entry)
}

/// The URL with any password replaced by `***`, safe to print.
pub fn redact(url: &str) -> String {
    if let Ok(mut parsed) = url::Url::parse(url) {
        if parsed.password().is_some() {
            let _ = parsed.set_password(Some("***"));
        }
        return parsed.to_string();
    }
    // key=value form: hide the value after password=.
    url.split_whitespace()
        .map(|kv| if kv.starts_with("password=") { "password=***" } else { kv })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads `[databases.NAME] primary = "postgres://..."` from pgpilot's TOML configuration, ignoring
/// every other key (the gateway owns the rest of the file).
pub fn database_url_from_config(path: &Path, name: &str) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    database_url_from_toml(&text, name).with_context(|| format!("in {}", path.display()))
}

pub fn database_url_from_toml(text: &str, name: &str) -> Result<String> {
    let doc: toml::Table = text.parse().context("parsing TOML")?;
    let databases =
        doc.get("databases").and_then(|v| v.as_table()).ok_or_else(|| anyhow!("no [databases] section"))?;
    let Some(db) = databases.get(name) else {
        let known: Vec<&str> = databases.keys().map(String::as_str).collect();
        bail!("no [databases.{name}] (known: {})", known.join(", "));
    };
    db.get("primary")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("[databases.{name}] has no `primary = \"postgres://...\"`"))
}

/// Reads `[databases.NAME] replicas` (URLs, or tables with a `url`) from pgpilot's TOML
/// configuration: the advisor counts their index scans too.
pub fn replica_urls_from_config(path: &Path, name: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    replica_urls_from_toml(&text, name).with_context(|| format!("in {}", path.display()))
}

pub fn replica_urls_from_toml(text: &str, name: &str) -> Result<Vec<String>> {
    let doc: toml::Table = text.parse().context("parsing TOML")?;
    let replicas = doc.get("databases").and_then(|d| d.get(name)).and_then(|db| db.get("replicas"));
    // One replica may be written without the brackets, as the gateway accepts it.
    let listed: Vec<&toml::Value> = match replicas {
        None => Vec::new(),
        Some(toml::Value::Array(all)) => all.iter().collect(),
        Some(one) => vec![one],
    };
    listed
        .into_iter()
        .map(|replica| {
            let url = replica.as_str().or_else(|| replica.get("url").and_then(|u| u.as_str()));
            url.map(str::to_string).ok_or_else(|| {
                anyhow!("[databases.{name}] replicas: expected \"postgres://...\" or {{ url = \"...\" }}")
            })
        })
        .collect()
}

/// Where pgpilot's configuration lives by default.
pub fn default_config_path() -> PathBuf {
    PathBuf::from("pgpilot.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_names_the_primary() {
        let toml = r#"
            [server]
            listen = "0.0.0.0:6432"
            [databases.app]
            primary = "postgres://app@db1:5432/app"
            replicas = ["postgres://app@db2/app"]
            [databases.app.pool]
            size = 20
        "#;
        assert_eq!(database_url_from_toml(toml, "app").unwrap(), "postgres://app@db1:5432/app");
        assert_eq!(replica_urls_from_toml(toml, "app").unwrap(), ["postgres://app@db2/app"]);
        let detailed = "[databases.app]\nprimary = \"postgres://a@p/app\"\n\
                        replicas = [{ url = \"postgres://a@r1/app\", weight = 2 }, \"postgres://a@r2/app\"]\n\
                        [databases.solo]\nprimary = \"postgres://a@p/solo\"\nreplicas = \"postgres://a@r/solo\"\n";
        assert_eq!(
            replica_urls_from_toml(detailed, "app").unwrap(),
            ["postgres://a@r1/app", "postgres://a@r2/app"]
        );
        assert_eq!(replica_urls_from_toml(detailed, "solo").unwrap(), ["postgres://a@r/solo"]);
        assert!(replica_urls_from_toml("[databases.x]\nprimary = \"postgres://a@p/x\"\n", "x")
            .unwrap()
            .is_empty());
        let err = database_url_from_toml(toml, "nope").unwrap_err().to_string();
        assert!(err.contains("known: app"), "{err}");
    }

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("host=h password=secret user=u"), "host=h password=*** user=u");
    }

    #[test]
    fn describe_leaves_out_the_password() {
        let t = Target::parse("postgres://app:hunter2@10.0.0.5:6543/shop").unwrap();
        assert_eq!(t.describe(), "app@10.0.0.5:6543/shop");
        assert_eq!(t.server(), "10.0.0.5:6543");
        assert!(!format!("{t:?}").contains("hunter2"));
        assert!(!t.is_local());
        assert!(Target::parse("postgres://app@127.0.0.1/shop").unwrap().is_local());
    }
}
