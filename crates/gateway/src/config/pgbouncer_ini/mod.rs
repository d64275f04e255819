//! Running from an existing pgbouncer.ini: [`convert_file`] reads it (with its `%include`s) the way
//! PgBouncer does, starting from PgBouncer's defaults rather than pgpilot's, and says for every
//! setting it met whether pgpilot carries it over as is, carries it over with a changed meaning, or
//! does not honour it. [`to_commented_toml`] writes the equivalent pgpilot.toml.

mod databases;
mod general;
mod ini;
mod tls;
mod toml_out;
mod values;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{AuthType, Config, General, OneOrMany, PoolMode, Secs, ServerTlsMode, TlsConfig};

pub use general::{set_at_runtime, settable_at_runtime};
pub use toml_out::to_commented_toml;

/// A pgbouncer.ini turned into a pgpilot configuration.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// What pgpilot runs; `source` is the pgbouncer.ini (see [`load`] for reloads).
    pub config: Config,
    /// One note per setting met, in the order of the file.
    pub notes: Vec<Note>,
    /// Things about the file itself a person should know (settings PgBouncer itself discards).
    pub warnings: Vec<String>,
}

impl Conversion {
    /// Notes for settings pgpilot does not honour.
    pub fn not_honoured(&self) -> impl Iterator<Item = &Note> {
        self.notes.iter().filter(|n| matches!(n.outcome, Outcome::NotHonoured(_)))
    }

    /// Notes for settings whose meaning changed.
    pub fn changed(&self) -> impl Iterator<Item = &Note> {
        self.notes.iter().filter(|n| matches!(n.outcome, Outcome::ChangedMeaning(_)))
    }

    /// What an operator is told about the file before pgpilot runs it: settings not honoured or
    /// changed in meaning, then warnings about the file itself.
    pub fn to_tell(&self) -> Vec<String> {
        self.not_honoured()
            .chain(self.changed())
            .map(Note::to_string)
            .chain(self.warnings.iter().cloned())
            .collect()
    }

    /// Settings whose loss lets in clients PgBouncer would have refused.
    pub fn weakening(&self) -> impl Iterator<Item = &Note> {
        self.notes.iter().filter(|n| n.weakens_security)
    }
}

/// What became of one PgBouncer setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    /// The setting as PgBouncer names it: `[pgbouncer] pool_mode`, `[databases] app: pool_size`.
    pub setting: String,
    /// `file:line`; none for a default PgBouncer applies without a line.
    pub origin: Option<String>,
    pub outcome: Outcome,
    /// Where it landed in pgpilot.toml (`["pgpilot", "pool_mode"]`); empty when nowhere.
    pub target: Vec<String>,
    /// Not honouring it lets in connections PgBouncer would have refused.
    pub weakens_security: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "why", rename_all = "snake_case")]
pub enum Outcome {
    /// Same name (or an obvious new home) and the same meaning.
    CarriedOver,
    /// Carried over, but pgpilot's behaviour differs in the way explained.
    ChangedMeaning(String),
    /// pgpilot ignores it, for the reason given.
    NotHonoured(String),
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        write!(f, "{}: ", self.setting)?;
        match &self.outcome {
            Outcome::CarriedOver => write!(f, "carried over"),
            Outcome::ChangedMeaning(why) => write!(f, "changed meaning: {why}"),
            Outcome::NotHonoured(why) => write!(f, "not honoured: {why}"),
        }?;
        if self.weakens_security {
            write!(f, " (less strict than PgBouncer)")?;
        }
        Ok(())
    }
}

/// Reads a pgbouncer.ini (and its includes) into a pgpilot configuration.
pub fn convert_file(path: &Path) -> Result<Conversion, String> {
    let file = ini::read(path)?;
    let ini_dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let mut b = Builder::new(ini_dir);
    let warnings = file.reset_warnings().collect::<Vec<_>>();
    for e in file.entries.iter().filter(|e| e.section == ini::Section::PgBouncer) {
        general::apply(&mut b, e)?;
    }
    b.finish_general();
    for e in file.entries.iter().filter(|e| e.section != ini::Section::PgBouncer) {
        databases::apply(&mut b, e)?;
    }
    b.finish_databases();
    let mut config = b.config;
    config.source = Some(path.to_path_buf());
    config.pgbouncer_defaults = true;
    Ok(Conversion { config, notes: b.notes, warnings })
}

/// Loads either kind of configuration file: a pgbouncer.ini (any file with a `[pgbouncer]`
/// section) is converted, anything else is read as pgpilot.toml. For reloads of a gateway started
/// from a pgbouncer.ini.
pub fn load(path: &Path) -> Result<Config, String> {
    if is_pgbouncer_ini(path) {
        convert_file(path).map(|c| c.config)
    } else {
        Config::load(path)
    }
}

/// Whether the file looks like a pgbouncer.ini: a `[pgbouncer]` header on a line of its own.
pub fn is_pgbouncer_ini(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .map(|t| t.lines().any(|l| l.trim().to_ascii_lowercase().starts_with("[pgbouncer]")))
        .unwrap_or(false)
}

impl ini::IniFile {
    fn reset_warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.pgbouncer_resets.iter().map(|origin| {
            format!(
                "{origin}: a second [pgbouncer] header: PgBouncer resets every [pgbouncer] setting read before it \
                 to its default here, and so does this conversion"
            )
        })
    }
}

/// PgBouncer's defaults, which differ from pgpilot's in places (session pooling, md5, 100 clients,
/// no TCP listener, a Unix socket in /tmp, an empty query as the server check). Every value is
/// spelt out, even where it equals pgpilot's default today, so that a change of pgpilot's defaults
/// never changes what a converted pgbouncer.ini means.
pub fn pgbouncer_defaults() -> Config {
    let general = General {
        listen: OneOrMany(Vec::new()),
        unix_socket_dir: Some(PathBuf::from("/tmp")),
        pool_mode: PoolMode::Session,
        auth_type: Some(AuthType::Md5),
        max_client_conn: 100,
        default_pool_size: 20,
        min_pool_size: 0,
        reserve_pool_size: 0,
        reserve_pool_timeout: Secs::from_secs(5),
        max_db_connections: 0,
        max_user_connections: 0,
        server_lifetime: Secs::from_secs(3600),
        server_idle_timeout: Secs::from_secs(600),
        server_connect_timeout: Secs::from_secs(15),
        server_login_retry: Secs::from_secs(15),
        autodb_idle_timeout: Secs::from_secs(3600),
        query_wait_timeout: Secs::from_secs(120),
        query_timeout: Secs::from_secs(0),
        client_idle_timeout: Secs::from_secs(0),
        client_login_timeout: Secs::from_secs(60),
        idle_transaction_timeout: Secs::from_secs(0),
        server_reset_query: "DISCARD ALL".into(),
        server_reset_query_always: false,
        server_check_query: general::EMPTY_QUERY.into(),
        server_check_delay: Secs::from_secs(30),
        max_prepared_statements: 200,
        // Not PgBouncer's 2 GiB: PgBouncer streams messages, pgpilot holds each one whole.
        log_connections: true,
        log_disconnections: true,
        log_pooler_errors: true,
        tcp_keepalive: true,
        application_name_add_host: false,
        // Tools pointed at PgBouncer may count its columns (pgbouncer_fdw).
        console_columns: crate::config::ConsoleColumns::Pgbouncer,
        ..General::default()
    };
    let tls = TlsConfig { server_tls_sslmode: ServerTlsMode::Prefer, ..TlsConfig::default() };
    Config { pgpilot: general, tls, ..Config::default() }
}

/// The conversion in progress.
struct Builder {
    config: Config,
    notes: Vec<Note>,
    /// Relative file names are looked for here when the working directory has nothing.
    ini_dir: PathBuf,
    listen_addr: Option<(String, ini::Origin)>,
    listen_port: u16,
    /// PgBouncer's unix_socket_dir as written (empty disables): it also locates servers whose
    /// connection string has no host.
    unix_socket_dir: String,
    /// reserve_pool_timeout = 0 turns PgBouncer's reserve pools off.
    reserve_disabled: bool,
}

impl Builder {
    fn new(ini_dir: PathBuf) -> Builder {
        Builder {
            config: pgbouncer_defaults(),
            notes: Vec::new(),
            ini_dir,
            listen_addr: None,
            listen_port: 6432,
            unix_socket_dir: "/tmp".into(),
            reserve_disabled: false,
        }
    }

    fn note(&mut self, setting: String, origin: Option<&ini::Origin>, outcome: Outcome, target: &[&str]) {
        self.notes.push(Note {
            setting,
            origin: origin.map(ToString::to_string),
            outcome,
            target: target.iter().map(|s| s.to_string()).collect(),
            weakens_security: false,
        });
    }

    /// Marks the last note as letting in clients PgBouncer would refuse.
    fn weakens(&mut self) {
        if let Some(n) = self.notes.last_mut() {
            n.weakens_security = true;
        }
    }

    fn path(&self, value: &str) -> PathBuf {
        ini::resolve_path(value, &self.ini_dir)
    }
}

impl Builder {
    fn finish_general(&mut self) {
        general::finish_listen(self);
        if !self.notes.iter().any(|n| n.setting.ends_with("server_tls_sslmode")) {
            self.note(
                "[pgbouncer] server_tls_sslmode".into(),
                None,
                Outcome::ChangedMeaning(
                    "unset: prefer, PgBouncer's default since 1.21 (disable before): TLS where the server offers it, \
                     and in the clear where the TLS handshake or login fails, as libpq's prefer"
                        .into(),
                ),
                &["tls", "server_tls_sslmode"],
            );
        }
        let t = &mut self.config.tls;
        if t.server_tls_sslmode.verifies() && t.server_tls_ca_file.is_none() {
            // PgBouncer then trusts the system's CA store; pgpilot needs that said explicitly.
            t.server_tls_ca_file = Some(PathBuf::from(crate::config::SYSTEM_ROOTS));
            self.note(
                "server_tls_ca_file".into(),
                None,
                Outcome::ChangedMeaning(
                    "unset: servers are verified against the public web roots bundled with pgpilot (\"system\"), not the OS store"
                        .into(),
                ),
                &["tls", "server_tls_ca_file"],
            );
        }
    }

    fn finish_databases(&mut self) {
        if self.reserve_disabled {
            self.config.pgpilot.reserve_pool_size = 0;
            for db in self.config.databases.values_mut() {
                if db.reserve_pool_size.is_some() {
                    db.reserve_pool_size = Some(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
