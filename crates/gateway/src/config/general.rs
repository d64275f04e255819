//! The `[pgpilot]` section: PgBouncer's `[pgbouncer]` settings under the same names and meanings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::duration::Secs;
use super::one_or_many::OneOrMany;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection belongs to a client for its whole session.
    Session,
    /// A server connection belongs to a client for one transaction.
    #[default]
    Transaction,
}

impl PoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AuthType {
    /// No password; only sensible on a loopback or otherwise protected listener.
    Trust,
    /// Cleartext password (only over TLS, please).
    Plain,
    /// md5 challenge; users whose stored secret is a SCRAM verifier get SCRAM instead, as in PgBouncer.
    Md5,
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Trust => "trust",
            AuthType::Plain => "plain",
            AuthType::Md5 => "md5",
            AuthType::ScramSha256 => "scram-sha-256",
        }
    }
}

/// The columns of the admin console's SHOW commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleColumns {
    /// PgBouncer 1.23's columns in its order, then pgpilot's own (a server's role and lag, a
    /// client's id and pin): for people, and for tools that read columns by name.
    #[default]
    Extended,
    /// PgBouncer 1.23's columns and no others: for tools that check the column count against the
    /// version SHOW VERSION gives (pgbouncer_fdw and pgMonitor, dblink queries).
    Pgbouncer,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct General {
    /// Addresses to accept clients on ("127.0.0.1:6432", "[::]:6432").
    pub listen: OneOrMany<String>,
    /// Directory for a Unix socket `.s.PGSQL.<port>` (port of the first listen address), as PgBouncer's unix_socket_dir.
    pub unix_socket_dir: Option<PathBuf>,
    /// Permissions of that socket, in octal ("0777" or "777"), as PgBouncer's unix_socket_mode: the
    /// default lets every local user connect (authentication still applies), whatever the umask.
    pub unix_socket_mode: String,
    /// Address of the HTTP server (metrics, health, monitoring API, dashboard). Off when absent.
    pub http: Option<String>,
    /// Bearer token required by the HTTP API, read from this file (or PGPILOT_API_TOKEN). /metrics and /health stay open.
    pub http_token_file: Option<PathBuf>,
    /// Worker threads; 0 means one per CPU.
    pub workers: usize,
    pub pool_mode: PoolMode,
    /// How clients authenticate (read it with `auth_type()`): None until the file or a flag names
    /// one, so that the password-less loopback quick path is taken only where nothing asked for
    /// authentication.
    pub auth_type: Option<AuthType>,
    /// PgBouncer-format userlist: `"user" "password-or-md5-or-SCRAM-verifier"` per line.
    pub auth_file: Option<PathBuf>,
    /// auth_query: the user pgpilot logs in as to look up the passwords of users missing from the
    /// auth_file (its own password: its auth_file entry, the database's password, or PGPASSWORD).
    pub auth_user: Option<String>,
    /// Returns (user name, password hash) for `$1`; PgBouncer's default reads pg_shadow.
    pub auth_query: Option<String>,
    /// The `[databases.NAME]` the auth_query runs in; default: the database the client asked for.
    pub auth_dbname: Option<String>,
    /// How long a password found by auth_query is used before it is looked up again.
    pub auth_query_cache_ttl: Secs,
    /// How long "no such user" from auth_query is remembered.
    pub auth_query_negative_ttl: Secs,
    pub admin_users: Vec<String>,
    pub stats_users: Vec<String>,
    /// SHOW commands' columns: "extended" (PgBouncer's, then pgpilot's) or "pgbouncer" (PgBouncer's only).
    pub console_columns: ConsoleColumns,
    pub max_client_conn: usize,
    pub default_pool_size: usize,
    pub min_pool_size: usize,
    pub reserve_pool_size: usize,
    pub reserve_pool_timeout: Secs,
    pub max_db_connections: usize,
    pub max_user_connections: usize,
    pub server_lifetime: Secs,
    pub server_idle_timeout: Secs,
    pub server_connect_timeout: Secs,
    pub server_login_retry: Secs,
    /// A database made from the `*` fallback section is forgotten once unused this long.
    pub autodb_idle_timeout: Secs,
    pub query_wait_timeout: Secs,
    pub query_timeout: Secs,
    pub client_idle_timeout: Secs,
    pub client_login_timeout: Secs,
    pub idle_transaction_timeout: Secs,
    pub server_reset_query: String,
    pub server_reset_query_always: bool,
    pub server_check_query: String,
    pub server_check_delay: Secs,
    /// Named prepared statements kept per server connection in transaction mode; 0 passes them through untouched.
    pub max_prepared_statements: usize,
    /// Largest message a client may send (Query, Parse, Bind, CopyData...), in bytes.
    pub max_message_size: usize,
    /// How long SIGTERM waits for running transactions before closing what is left.
    pub shutdown_timeout: Secs,
    pub log_connections: bool,
    pub log_disconnections: bool,
    pub log_pooler_errors: bool,
    pub tcp_keepalive: bool,
    pub application_name_add_host: bool,
}

impl General {
    /// The exchange clients go through: scram-sha-256 unless configured otherwise.
    pub fn auth_type(&self) -> AuthType {
        self.auth_type.unwrap_or_default()
    }

    /// unix_socket_mode as permission bits.
    pub fn unix_socket_permissions(&self) -> Result<u32, String> {
        parse_socket_mode(&self.unix_socket_mode)
    }
}

/// Permission bits written in octal, as chmod and PgBouncer take them ("0777", "777", "0660").
pub fn parse_socket_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim();
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if !digits.is_empty() && mode <= 0o777 => Ok(mode),
        _ => Err(format!("{text:?} is not a file mode: give octal permissions such as \"0777\" or \"0660\"")),
    }
}

impl Default for General {
    fn default() -> Self {
        General {
            listen: OneOrMany(vec!["127.0.0.1:6432".into()]),
            unix_socket_dir: None,
            unix_socket_mode: "0777".into(),
            http: None,
            http_token_file: None,
            workers: 0,
            pool_mode: PoolMode::Transaction,
            auth_type: None,
            auth_file: None,
            auth_user: None,
            auth_query: None,
            auth_dbname: None,
            auth_query_cache_ttl: Secs::from_secs(30),
            auth_query_negative_ttl: Secs::from_secs(5),
            admin_users: Vec::new(),
            stats_users: Vec::new(),
            console_columns: ConsoleColumns::default(),
            max_client_conn: 10_000,
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
            server_check_query: "select 1".into(),
            server_check_delay: Secs::from_secs(30),
            max_prepared_statements: 200,
            max_message_size: 256 << 20,
            shutdown_timeout: Secs::from_secs(30),
            log_connections: true,
            log_disconnections: true,
            log_pooler_errors: true,
            tcp_keepalive: true,
            application_name_add_host: false,
        }
    }
}
