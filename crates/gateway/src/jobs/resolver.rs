//! From a job to a connection, through the gateway's config: `database = "NAME"` is
//! `[databases.NAME]`'s primary, logged in to as the pools would (forced `user`, else the URL's
//! user; password_file / password_env / URL password / auth_file / PGPASSWORD) with the gateway's
//! server TLS settings. `pgpilot jobs` on the command line logs in the same way (ConfigResolver),
//! without TLS.

use std::sync::{Arc, Weak};

use pgpilot_scheduler::{
    config_from_url, describe_pg_error, ConnectFuture, DatabaseResolver, JobSpec, ResolveError, Target,
};
use tokio_postgres::config::SslMode;

use crate::auth::Secrets;
use crate::config::{Config, ServerTlsMode, ServerUrl};
use crate::pool::{SecretSource, ServerSecret, ServerTarget};
use crate::shared::Shared;
use pgpilot_advisor::tls::RustlsConnect;

/// The application_name job connections carry, so operators can tell them apart.
pub const JOBS_APPLICATION_NAME: &str = "pgpilot-jobs";

/// Holds the gateway weakly: the scheduler lives inside it.
pub struct GatewayResolver {
    shared: Weak<Shared>,
}

impl GatewayResolver {
    pub fn new(shared: &Arc<Shared>) -> GatewayResolver {
        GatewayResolver { shared: Arc::downgrade(shared) }
    }

    fn shared(&self) -> Result<Arc<Shared>, ResolveError> {
        self.shared.upgrade().ok_or_else(|| ResolveError::BadUrl {
            what: "the gateway".into(),
            reason: "it has stopped".into(),
        })
    }
}

impl DatabaseResolver for GatewayResolver {
    fn resolve(&self, job: &JobSpec) -> Result<tokio_postgres::Config, ResolveError> {
        match &job.target {
            Target::Url(url) => {
                let shared = self.shared()?;
                own_url_config(&shared, url, &job.name)
            }
            Target::Database(name) => {
                let shared = self.shared()?;
                primary_config(&shared, name)
            }
        }
    }

    fn connect<'a>(&'a self, config: &'a tokio_postgres::Config) -> ConnectFuture<'a> {
        let connector = match config.get_ssl_mode() {
            SslMode::Disable => None,
            _ => self.shared.upgrade().and_then(|s| job_connector(&s, config)),
        };
        match connector {
            None => Box::pin(pgpilot_scheduler::connect(config)),
            Some(connector) => Box::pin(async move {
                let (client, connection) =
                    config.connect(RustlsConnect::with_config(connector.config().clone())).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("job connection ended: {}", describe_pg_error(&e));
                    }
                });
                Ok(client)
            }),
        }
    }
}

/// A job's own `url`, waiting for its server as long as the gateway waits for any server
/// (server_connect_timeout) unless the URL says otherwise.
fn own_url_config(shared: &Shared, url: &str, job: &str) -> Result<tokio_postgres::Config, ResolveError> {
    let mut pg = config_from_url(url, &format!("job `{job}`"))?;
    if !url.contains("connect_timeout=") {
        pg.connect_timeout(shared.config.load().pgpilot.server_connect_timeout.get());
    }
    Ok(pg)
}

/// The TLS connector for a job's server. tokio-postgres's Config carries no CA file nor
/// verify mode, so the configured database URL at the same host, port and database decides the
/// certificate check (as for the pools); other servers get `[tls]`'s.
fn job_connector(shared: &Shared, pg: &tokio_postgres::Config) -> Option<Arc<tokio_rustls::TlsConnector>> {
    let config = shared.config.load();
    let same_server = |u: &ServerUrl| {
        let host = match pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.as_str(),
            _ => return false,
        };
        u.host == host
            && pg.get_ports().first() == Some(&u.port)
            && pg.get_dbname() == Some(u.dbname.as_str())
    };
    let tls = config
        .databases
        .values()
        .filter_map(|d| ServerUrl::parse(&d.primary).ok())
        .find(|u| same_server(u))
        .map(|u| config.tls.for_server(&u))
        .unwrap_or_else(|| config.tls.for_other_servers());
    shared.server_tls.load().for_server(&tls)
}

/// Jobs' connections for `pgpilot jobs` on the command line: the logins `serve` would use (same
/// user and password sources, read from the config once), to the configured primaries, without
/// TLS (docs/jobs.md, Limits).
pub struct ConfigResolver {
    config: Config,
    secrets: Arc<Secrets>,
}

impl ConfigResolver {
    /// Reads the auth_file and the databases' password_file / password_env, as `serve` does at
    /// its start (and fails as it would).
    pub fn new(config: Config) -> Result<ConfigResolver, String> {
        let (userlist, passwords) = crate::shared::load_secrets(&config)?;
        Ok(ConfigResolver { secrets: Secrets::new(userlist, passwords), config })
    }

    /// How `[databases.NAME]`'s primary is logged in to.
    pub fn primary(&self, name: &str) -> Result<tokio_postgres::Config, ResolveError> {
        let mut pg = job_login(&self.config, self.secrets.as_ref(), name, None)?;
        // The command line has no TLS connector (docs/jobs.md, Limits): a `require` from [tls]
        // would only make it fail where it connects in plain text.
        pg.ssl_mode(SslMode::Disable);
        Ok(pg)
    }
}

impl DatabaseResolver for ConfigResolver {
    fn resolve(&self, job: &JobSpec) -> Result<tokio_postgres::Config, ResolveError> {
        match &job.target {
            Target::Url(url) => config_from_url(url, &format!("job `{}`", job.name)),
            Target::Database(name) => self.primary(name),
        }
    }
}

fn primary_config(shared: &Shared, name: &str) -> Result<tokio_postgres::Config, ResolveError> {
    // The primary the monitor found: after a failover, jobs run where writes go, never on the
    // old primary left fenced (their history would be read there too).
    let found = shared.database(name).map(|running| running.backends[running.primary_index()].url.clone());
    job_login(&shared.config.load(), shared.secrets.as_ref(), name, found)
}

/// How a job logs in to `[databases.NAME]` at `primary` (else the configured primary): the user
/// and password the pools would use, the server TLS mode, server_connect_timeout.
fn job_login(
    config: &Config,
    secrets: &dyn SecretSource,
    name: &str,
    primary: Option<ServerUrl>,
) -> Result<tokio_postgres::Config, ResolveError> {
    let db = config.databases.get(name).ok_or_else(|| ResolveError::UnknownDatabase(name.into()))?;
    let what = format!("[databases.{name}] primary");
    let configured = ServerUrl::parse(&db.primary)
        .map_err(|reason| ResolveError::BadUrl { what: what.clone(), reason })?;
    let url = primary.unwrap_or_else(|| configured.clone());
    let user = db.user.clone().or_else(|| url.user.clone()).or_else(|| configured.user.clone());
    let user = user.ok_or_else(|| ResolveError::BadUrl {
        what: what.clone(),
        reason: "it names no user; jobs need one (in the URL, or `user = ...` in the table)".into(),
    })?;
    let tls_mode = config.tls.for_server(&url).mode;
    let target = ServerTarget { database: name.to_string(), url: url.clone(), user: user.clone(), tls_mode };
    let mut pg = tokio_postgres::Config::new();
    // A host starting with '/' is a Unix socket directory for tokio-postgres as for the pools.
    pg.host(&url.host)
        .port(url.port)
        .dbname(&url.dbname)
        .user(&user)
        .application_name(JOBS_APPLICATION_NAME)
        .connect_timeout(config.pgpilot.server_connect_timeout.get())
        .ssl_mode(match tls_mode {
            ServerTlsMode::Disable | ServerTlsMode::Allow => SslMode::Disable,
            ServerTlsMode::Prefer => SslMode::Prefer,
            ServerTlsMode::Require | ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull => SslMode::Require,
        });
    // A stored md5 hash or a SCRAM key a client proved can log the pools in, but not a
    // tokio-postgres client: jobs need a real password (or trust/peer on the server).
    if let ServerSecret::Password(p) = secrets.secret_for(&target) {
        pg.password(p);
    }
    Ok(pg)
}
