//! The advisor's connection to a configured database, as the pools log in (forced `user`, else the
//! URL's; password_file / password_env / URL / plain auth_file entry / PGPASSWORD; sslmode), to its
//! replicas alike (their index scans count for the unused-index check), and the gateway's own
//! statement statistics as a workload source.

use pgpilot_advisor::AdviseOptions;

use crate::config::{Config, DatabaseConfig, ServerTlsMode, ServerUrl};
use crate::pool::{SecretSource, ServerSecret, ServerTarget};
use crate::shared::Shared;

pub fn options(shared: &Shared, database: &str) -> Result<AdviseOptions, String> {
    let config = shared.config.load();
    let db = config.databases.get(database).ok_or_else(|| format!("no such database: {database}"))?;
    let primary = conninfo(shared, &config, database, db, &db.primary, "primary")?;
    let settings = &config.advisor;
    let mut options = AdviseOptions::new(primary);
    // The replicas' index scans count too: an index only reads routed to a replica use is used.
    options.replicas = db
        .replicas
        .iter()
        .map(|replica| conninfo(shared, &config, database, db, replica.url(), "replicas"))
        .collect::<Result<_, _>>()?;
    options.skip_indexes = !settings.index_suggestions;
    options.statement_timeout_ms =
        settings.statement_timeout.get().as_millis().try_into().unwrap_or(u64::MAX);
    // pgpilot's own statistics: a workload even where pg_stat_statements is not installed.
    if config.insight.enabled {
        options.workload.pgpilot_url = shared.advisor.self_url.get().cloned();
        options.workload.pgpilot_token = crate::http::api_token(shared);
        options.workload.pgpilot_database = Some(database.to_string());
    }
    Ok(options)
}

/// The libpq string the advisor logs in to one of the database's servers with, as its pools do.
/// `key` names the setting the URL comes from, for errors.
fn conninfo(
    shared: &Shared,
    config: &Config,
    database: &str,
    db: &DatabaseConfig,
    server_url: &str,
    key: &str,
) -> Result<String, String> {
    let url = ServerUrl::parse(server_url).map_err(|e| format!("[databases.{database}] {key}: {e}"))?;
    // A replica's URL often leaves the user to the primary's.
    let primary_user = || ServerUrl::parse(&db.primary).ok().and_then(|p| p.user);
    let user = db.user.clone().or_else(|| url.user.clone()).or_else(primary_user).ok_or_else(|| {
        format!("[databases.{database}] {key} names no user; the advisor needs one (in the URL or `user`)")
    })?;
    let tls_mode = config.tls.for_server(&url).mode;
    let target =
        ServerTarget { database: database.to_string(), url: url.clone(), user: user.clone(), tls_mode };
    let mut conninfo = format!(
        "host={} port={} dbname={} user={} application_name=pgpilot-advisor sslmode={}",
        quote(&url.host),
        url.port,
        quote(&url.dbname),
        quote(&user),
        match tls_mode {
            ServerTlsMode::Allow => ServerTlsMode::Disable.name(),
            mode => mode.name(),
        }
    );
    if let ServerSecret::Password(p) = shared.secrets.secret_for(&target) {
        conninfo.push_str(&format!(" password={}", quote(&p)));
    }
    Ok(conninfo)
}

/// A libpq key=value value, single-quoted with `\` and `'` escaped.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting_survives_spaces_and_quotes() {
        assert_eq!(super::quote("it's a \\ test"), "'it\\'s a \\\\ test'");
    }
}
