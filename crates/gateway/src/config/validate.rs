//! Checks that turn a parsed config into a list of problems a person can fix.

use std::net::SocketAddr;

use super::{AuthType, ClientTlsMode, Config, ServerUrl};

pub fn problems(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let g = &c.pgpilot;
    if g.listen.is_empty() {
        out.push("[pgpilot] listen: give at least one address such as \"127.0.0.1:6432\"".into());
    }
    for addr in g.listen.iter() {
        if addr.parse::<SocketAddr>().is_err() {
            out.push(format!("[pgpilot] listen: {addr:?} is not an IP:port address"));
        }
    }
    if let Some(http) = &g.http {
        if http.parse::<SocketAddr>().is_err() {
            out.push(format!("[pgpilot] http: {http:?} is not an IP:port address"));
        }
    }
    if let Err(e) = g.unix_socket_permissions() {
        out.push(format!("[pgpilot] unix_socket_mode: {e}"));
    }
    if g.default_pool_size == 0 {
        out.push("[pgpilot] default_pool_size must be at least 1".into());
    }
    if g.max_client_conn == 0 {
        out.push("[pgpilot] max_client_conn must be at least 1".into());
    }
    if g.max_message_size < 1024 {
        out.push("[pgpilot] max_message_size must be at least 1024 bytes".into());
    }
    let implied = super::overrides::implied_auth(c);
    if let Err(e) = &implied {
        out.push(format!("[pgpilot] {e}"));
    } else if implied == Ok(None)
        && !matches!(g.auth_type(), AuthType::Trust)
        && g.auth_file.is_none()
        && !c.looks_users_up()
    {
        out.push(format!(
            "[pgpilot] auth_type = \"{}\" needs auth_file (a userlist.txt with the users' passwords or verifiers) or auth_user (auth_query)",
            g.auth_type().as_str()
        ));
    }
    if let Some(f) = &g.auth_file {
        if !f.exists() {
            out.push(format!("[pgpilot] auth_file {} does not exist", f.display()));
        } else if let Err(e) = crate::auth::userlist::UserList::load(f) {
            // Read as serve reads it: a file check-config passes must not stop the service starting.
            out.push(format!("[pgpilot] auth_file {e}"));
        }
    }
    if c.tls.client_tls_sslmode != ClientTlsMode::Disable
        && (c.tls.client_tls_cert_file.is_none() || c.tls.client_tls_key_file.is_none())
    {
        out.push(
            "[tls] client_tls_sslmode other than disable needs client_tls_cert_file and client_tls_key_file"
                .into(),
        );
    }
    out.extend(c.insight.problems());
    if c.databases.is_empty() {
        out.push("no [databases.NAME] section: name at least one database with its primary URL".into());
    }
    for (name, db) in &c.databases {
        if name == "pgpilot" || name == "pgbouncer" {
            out.push(format!("[databases.{name}]: the name is reserved for the admin console"));
        }
        check_url(&mut out, &format!("[databases.{name}] primary"), &db.primary, &c.tls);
        for (i, r) in db.replicas.iter().enumerate() {
            check_url(&mut out, &format!("[databases.{name}] replicas"), r.url(), &c.tls);
            if let Some(weight) = r.invalid_weight() {
                out.push(format!(
                    "[databases.{name}] replica {}: weight = {weight}: a weight must be a whole number, \
                     0 or more (0: reads only when no other replica qualifies)",
                    i + 1
                ));
            }
        }
        if db.pool_size == Some(0) {
            out.push(format!("[databases.{name}] pool_size must be at least 1"));
        }
        if let Some(f) = &db.password_file {
            if !f.exists() {
                out.push(format!("[databases.{name}] password_file {} does not exist", f.display()));
            }
        }
    }
    let names: Vec<&str> = c.databases.keys().map(String::as_str).collect();
    out.extend(c.advisor.problems(&names));
    out.extend(auth_query_problems(c));
    out.extend(
        pgpilot_scheduler::validate_with_databases(&c.jobs, &names)
            .into_iter()
            .map(|p| format!("[[jobs]] {p}")),
    );
    let caches: Vec<(&str, &super::cache::DatabaseCache)> =
        c.databases.iter().map(|(n, d)| (n.as_str(), &d.cache)).collect();
    out.extend(super::cache::problems(&c.cache, &caches));
    out
}

pub fn environment_problems(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for (name, db) in &c.databases {
        if let Some(var) = &db.password_env {
            if std::env::var_os(var).is_none() {
                out.push(format!(
                    "[databases.{name}] password_env: ${var} is not set (serve refuses to start without it)"
                ));
            }
        }
    }
    if let crate::http::ApiToken::Unusable(why) = crate::http::configured_token(&c.pgpilot.http_token_file) {
        out.push(format!("[pgpilot] {why}: the HTTP API would refuse every request"));
    }
    // The certificate and key are read as serve reads them: a key of another certificate, or a
    // file that is not PEM, fails here rather than at start.
    if let (Some(cert), Some(key)) = (&c.tls.client_tls_cert_file, &c.tls.client_tls_key_file) {
        if let Err(e) = crate::net::tls::client_acceptor(cert, key) {
            out.push(format!("[tls] client_tls_cert_file / client_tls_key_file: {e}"));
        }
    }
    out
}

fn auth_query_problems(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let g = &c.pgpilot;
    let mut check = |section: String, query: Option<&String>, dbname: Option<&String>| {
        if query.is_some_and(|q| !q.contains("$1")) {
            out.push(format!("{section} auth_query must use $1 for the user name"));
        }
        if let Some(name) = dbname {
            if c.database_config(name).is_none() {
                out.push(format!(
                    "{section} auth_dbname = {name:?}: there is no [databases.{name}] table (nor a \"*\" one)"
                ));
            }
        }
    };
    check("[pgpilot]".into(), g.auth_query.as_ref(), g.auth_dbname.as_ref());
    for (name, db) in &c.databases {
        check(format!("[databases.{name}]"), db.auth_query.as_ref(), db.auth_dbname.as_ref());
    }
    for (key, ttl) in [
        ("auth_query_cache_ttl", g.auth_query_cache_ttl),
        ("auth_query_negative_ttl", g.auth_query_negative_ttl),
    ] {
        if ttl.get() > std::time::Duration::from_secs(3600) {
            out.push(format!("[pgpilot] {key} is more than an hour: a changed or revoked password would go unnoticed that long"));
        }
    }
    out
}

fn check_url(out: &mut Vec<String>, what: &str, url: &str, tls: &super::TlsConfig) {
    match ServerUrl::parse(url) {
        Ok(u) => {
            if let Some(mode) = &u.sslmode {
                if super::ServerTlsMode::parse(mode).is_none() {
                    out.push(format!("{what}: unknown sslmode {mode:?}"));
                    return;
                }
            }
            out.extend(server_tls_problem(what, &tls.for_server(&u)));
        }
        Err(e) => out.push(format!("{what}: {e}")),
    }
}

/// verify-ca / verify-full need a CA file that exists (or "system").
fn server_tls_problem(what: &str, server: &super::ServerTls) -> Option<String> {
    if !server.mode.verifies() {
        return None;
    }
    match server.ca_file.as_deref() {
        None => Some(format!("{what}: {}", crate::net::tls::missing_ca_message(server.mode))),
        Some(p) if p == std::path::Path::new(super::SYSTEM_ROOTS) => None,
        Some(p) if !p.is_file() => Some(format!("{what}: CA file {} does not exist", p.display())),
        Some(_) => None,
    }
}
