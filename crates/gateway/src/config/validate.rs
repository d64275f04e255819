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
    if g.default_pool_size == 0 {
        out.push("[pgpilot] default_pool_size must be at least 1".into());
    }
    if g.max_client_conn == 0 {
        out.push("[pgpilot] max_client_conn must be at least 1".into());
    }
    if g.max_message_size < 1024 {
        out.push("[pgpilot] max_message_size must be at least 1024 bytes".into());
    }
    if !matches!(g.auth_type, AuthType::Trust) && g.auth_file.is_none() {
        out.push(format!(
            "[pgpilot] auth_type = \"{}\" needs auth_file (a userlist.txt with the users' passwords or verifiers)",
            g.auth_type.as_str()
        ));
    }
    if let Some(f) = &g.auth_file {
        if !f.exists() {
            out.push(format!("[pgpilot] auth_file {} does not exist", f.display()));
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
        check_url(&mut out, &format!("[databases.{name}] primary"), &db.primary);
        for r in db.replicas.iter() {
            check_url(&mut out, &format!("[databases.{name}] replicas"), r.url());
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
    let caches: Vec<(&str, &super::cache::DatabaseCache)> =
        c.databases.iter().map(|(n, d)| (n.as_str(), &d.cache)).collect();
    out.extend(super::cache::problems(&c.cache, &caches));
    out
}

fn check_url(out: &mut Vec<String>, what: &str, url: &str) {
    match ServerUrl::parse(url) {
        Ok(u) => {
            if let Some(mode) = &u.sslmode {
                if super::ServerTlsMode::parse(mode).is_none() {
                    out.push(format!("{what}: unknown sslmode {mode:?}"));
                }
            }
        }
        Err(e) => out.push(format!("{what}: {e}")),
    }
}
