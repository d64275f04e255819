//! The quick path: command-line flags that override (or replace) the file.

use std::net::SocketAddr;

use super::{AuthType, Config, OneOrMany, PoolMode, ReplicaConfig, ServerUrl};

/// Flags of `pgpilot serve` that override the file.
#[derive(Debug, Clone, Default)]
pub struct QuickStart {
    pub listen: Option<String>,
    pub primary: Option<String>,
    pub replicas: Vec<String>,
    pub pool_size: Option<usize>,
    pub pool_mode: Option<PoolMode>,
    pub http: Option<String>,
    pub auth: Option<AuthType>,
    pub admin_users: Vec<String>,
}

impl QuickStart {
    /// Applies the flags. With `--primary`, clients reach it under the URL's database name.
    pub fn apply(&self, config: &mut Config) -> Result<(), String> {
        if let Some(listen) = &self.listen {
            config.pgpilot.listen = OneOrMany(vec![listen.clone()]);
        }
        if let Some(http) = &self.http {
            config.pgpilot.http = Some(http.clone());
        }
        if let Some(mode) = self.pool_mode {
            config.pgpilot.pool_mode = mode;
        }
        if let Some(size) = self.pool_size {
            config.pgpilot.default_pool_size = size;
            for db in config.databases.values_mut() {
                db.pool_size = Some(size);
            }
        }
        if let Some(primary) = &self.primary {
            let url = ServerUrl::parse(primary).map_err(|e| format!("--primary: {e}"))?;
            let db = config.databases.entry(url.dbname.clone()).or_default();
            db.primary = primary.clone();
            if !self.replicas.is_empty() {
                db.replicas = OneOrMany(self.replicas.iter().cloned().map(ReplicaConfig::Url).collect());
            }
            // The quick path (no users file, no auth_query): its one user also runs the console.
            // Where clients authenticate, only admin_users do, as in PgBouncer.
            let no_user_lookup = config.pgpilot.auth_file.is_none() && config.pgpilot.auth_user.is_none();
            if let Some(user) = url.user.as_ref().filter(|_| no_user_lookup) {
                if config.pgpilot.admin_users.is_empty() {
                    config.pgpilot.admin_users.push(user.clone());
                }
            }
        } else if !self.replicas.is_empty() {
            return Err("--replica needs --primary".into());
        }
        config.pgpilot.admin_users.extend(self.admin_users.iter().cloned());
        self.settle_auth(config)
    }

    fn settle_auth(&self, config: &mut Config) -> Result<(), String> {
        if let Some(auth) = self.auth {
            config.pgpilot.auth_type = Some(auth);
            return Ok(());
        }
        if let Some(implied) = implied_auth(config)? {
            config.pgpilot.auth_type = Some(implied);
        }
        Ok(())
    }
}

/// The authentication a config gets without naming one. Where nothing asks for authentication (no
/// auth_type, auth_file or auth_user), clients may connect without a password, but only when every
/// listener is on loopback; anywhere else pgpilot refuses to start (`--auth trust` says it on
/// purpose). Where anything does, it is enforced as configured (or refused by validation): an
/// auth_type with a missing users file must never fall open.
pub(crate) fn implied_auth(config: &Config) -> Result<Option<AuthType>, String> {
    let g = &config.pgpilot;
    if g.auth_type.is_some() || g.auth_file.is_some() || config.looks_users_up() {
        return Ok(None);
    }
    let all_loopback =
        g.listen.iter().all(|a| a.parse::<SocketAddr>().map(|s| s.ip().is_loopback()).unwrap_or(false));
    if all_loopback {
        Ok(Some(AuthType::Trust))
    } else {
        Err(format!(
            "pgpilot would listen on {} without client authentication: configure auth_type and auth_file, \
             or pass --auth trust to accept password-less clients on purpose",
            g.listen.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(listen: &str) -> QuickStart {
        QuickStart {
            listen: Some(listen.into()),
            primary: Some("postgres://app@127.0.0.1:5432/shop".into()),
            ..Default::default()
        }
    }

    #[test]
    fn loopback_quick_path_trusts_clients() {
        let mut c = Config::default();
        quick("127.0.0.1:6432").apply(&mut c).unwrap();
        assert_eq!(c.pgpilot.auth_type, Some(AuthType::Trust));
        assert!(c.databases.contains_key("shop"));
        assert_eq!(c.validate(), Vec::<String>::new());
    }

    #[test]
    fn the_quick_path_user_runs_the_console_only_without_a_users_file() {
        let mut quick_path = Config::default();
        quick("127.0.0.1:6432").apply(&mut quick_path).unwrap();
        assert_eq!(quick_path.pgpilot.admin_users, vec!["app".to_string()]);

        let mut with_users = Config::default();
        with_users.pgpilot.auth_file = Some("/etc/pgpilot/userlist.txt".into());
        with_users.pgpilot.auth_type = Some(AuthType::Md5);
        quick("127.0.0.1:6432").apply(&mut with_users).unwrap();
        assert!(with_users.pgpilot.admin_users.is_empty(), "{:?}", with_users.pgpilot.admin_users);

        let mut with_auth_query = Config::default();
        with_auth_query.pgpilot.auth_user = Some("pgpilot_auth".into());
        quick("127.0.0.1:6432").apply(&mut with_auth_query).unwrap();
        assert!(with_auth_query.pgpilot.admin_users.is_empty());
    }

    #[test]
    fn public_listener_without_auth_is_refused() {
        let mut c = Config::default();
        let err = quick("0.0.0.0:6432").apply(&mut c).unwrap_err();
        assert!(err.contains("--auth trust"), "{err}");
        let mut c = Config::default();
        QuickStart { auth: Some(AuthType::Trust), ..quick("0.0.0.0:6432") }.apply(&mut c).unwrap();
        assert_eq!(c.pgpilot.auth_type, Some(AuthType::Trust));
    }

    /// helper-148: a config naming auth_type or auth_user but no users file used to be let in
    /// without a password on loopback (serve), while check-config refused it.
    #[test]
    fn configured_authentication_never_falls_open() {
        let mut explicit = Config::default();
        explicit.pgpilot.auth_type = Some(AuthType::ScramSha256);
        QuickStart::default().apply(&mut explicit).unwrap();
        assert_eq!(explicit.pgpilot.auth_type(), AuthType::ScramSha256);
        let problems = explicit.validate();
        assert!(problems.iter().any(|p| p.contains("needs auth_file")), "{problems:?}");

        let mut auth_query = Config::default();
        auth_query.pgpilot.auth_user = Some("pgpilot_auth".into());
        QuickStart::default().apply(&mut auth_query).unwrap();
        assert_eq!(auth_query.pgpilot.auth_type(), AuthType::ScramSha256);

        let mut per_database = Config::default();
        per_database.databases.entry("app".into()).or_default().auth_user = Some("pgpilot_auth".into());
        QuickStart::default().apply(&mut per_database).unwrap();
        assert_eq!(per_database.pgpilot.auth_type(), AuthType::ScramSha256);
    }

    #[test]
    fn check_config_agrees_with_serve_on_the_quick_path() {
        let mut loopback = Config::default();
        loopback.databases.entry("shop".into()).or_default().primary = "postgres://app@127.0.0.1/shop".into();
        assert_eq!(loopback.validate(), Vec::<String>::new());
        loopback.pgpilot.listen = super::OneOrMany(vec!["0.0.0.0:6432".into()]);
        let problems = loopback.validate();
        assert!(problems.iter().any(|p| p.contains("without client authentication")), "{problems:?}");
    }
}
