//! pgpilot.toml: what the gateway runs. Loaded, validated with messages a person can act on,
//! and reloaded on SIGHUP.

pub mod cache;
mod database;
pub mod duration;
mod general;
mod one_or_many;
mod overrides;
pub mod pgbouncer_ini;
mod server_url;
mod tls;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use database::{
    DatabaseConfig, LoadBalance, PrimaryReads, ReadYourWrites, ReplicaConfig, ReplicaWeight, RoutingConfig,
    TagRule, UserConfig, FALLBACK_DATABASE,
};
pub use duration::Secs;
pub use general::{AuthType, ConsoleColumns, General, PoolMode};
pub use one_or_many::OneOrMany;
pub use overrides::QuickStart;
pub use server_url::ServerUrl;
pub use tls::{ClientTlsMode, ServerTls, ServerTlsMode, TlsConfig, SYSTEM_ROOTS};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub pgpilot: General,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseConfig>,
    #[serde(default)]
    pub users: BTreeMap<String, UserConfig>,
    #[serde(default)]
    pub insight: crate::insight::InsightConfig,
    /// The DBA advisor behind GET /api/v1/advisor/findings.
    #[serde(default)]
    pub advisor: crate::advisor::AdvisorConfig,
    /// Maintenance jobs (docs/jobs.md), run by the gateway's scheduler.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<pgpilot_scheduler::JobSpec>,
    /// The result cache's shared settings (each database opts in under [databases.NAME.cache]).
    #[serde(default)]
    pub cache: cache::CacheGlobal,
    /// Where the file came from, for reloads; not part of the file.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Made from a pgbouncer.ini, whose unset settings take PgBouncer's defaults (SHOW CONFIG's
    /// `default` column says so too); not part of the file.
    #[serde(skip)]
    pub pgbouncer_defaults: bool,
}

impl Config {
    /// The settings of the database clients call `name`: its own section, else one made from the
    /// fallback section `*` (None when there is neither).
    pub fn database_config(&self, name: &str) -> Option<std::borrow::Cow<'_, DatabaseConfig>> {
        use std::borrow::Cow;
        if name == database::FALLBACK_DATABASE {
            return None;
        }
        match self.databases.get(name) {
            Some(db) => Some(Cow::Borrowed(db)),
            None => self
                .databases
                .get(database::FALLBACK_DATABASE)
                .map(|fallback| Cow::Owned(fallback.for_client_database(name))),
        }
    }

    /// Reads and parses a file; relative paths inside it are resolved against its directory.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut config = Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        config.source = Some(path.to_path_buf());
        if let Some(dir) = path.parent() {
            config.resolve_relative_paths(dir);
        }
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        pgpilot_scheduler::parse_toml(text)
    }

    /// Whether users missing from the auth_file are looked up with auth_query (an auth_user for
    /// all databases or for one).
    pub fn looks_users_up(&self) -> bool {
        self.pgpilot.auth_user.is_some() || self.databases.values().any(|d| d.auth_user.is_some())
    }

    /// The client authentication `serve` would enforce, as check-config reports it.
    pub fn client_auth_summary(&self) -> String {
        match overrides::implied_auth(self) {
            Ok(Some(_)) => "none (nothing configured: password-less clients, on loopback only)".into(),
            _ => self.pgpilot.auth_type().as_str().into(),
        }
    }

    /// Problems that stop the gateway from starting, each a sentence naming the setting.
    pub fn validate(&self) -> Vec<String> {
        validate::problems(self)
    }

    /// What this machine lacks for the config (unset password_env variables, an unusable
    /// http_token_file): check-config reports these too, as serve would refuse to start or fail
    /// closed.
    pub fn environment_problems(&self) -> Vec<String> {
        validate::environment_problems(self)
    }

    /// Settings that work, but not as one may expect: said by check-config and logged at start.
    pub fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let session_users: Vec<&str> = self
            .users
            .iter()
            .filter(|(_, u)| u.pool_mode == Some(PoolMode::Session))
            .map(|(user, _)| user.as_str())
            .collect();
        for (name, db) in &self.databases {
            let splits = db.routing.read_write_split.unwrap_or(true) && !db.replicas.is_empty();
            if !splits {
                continue;
            }
            // A session's server is its own from login to logout: its reads cannot move.
            let mode = db.pool_mode.unwrap_or(self.pgpilot.pool_mode);
            if mode == PoolMode::Session {
                out.push(format!(
                    "database {name}: pool_mode = \"session\" sends every statement to the primary; its replicas are used only with transaction pooling"
                ));
            }
            if !session_users.is_empty() && mode != PoolMode::Session {
                out.push(format!(
                    "database {name}: users in session pooling ({}) read from the primary only",
                    session_users.join(", ")
                ));
            }
        }
        out
    }

    /// Effective settings of one database's pools.
    pub fn pool_size(&self, db: &DatabaseConfig) -> usize {
        db.pool_size.unwrap_or(self.pgpilot.default_pool_size)
    }

    pub fn pool_mode(&self, db: &DatabaseConfig, user: &str) -> PoolMode {
        self.users.get(user).and_then(|u| u.pool_mode).or(db.pool_mode).unwrap_or(self.pgpilot.pool_mode)
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.pgpilot.admin_users.iter().any(|u| u == user)
    }

    pub fn is_stats_user(&self, user: &str) -> bool {
        self.is_admin(user) || self.pgpilot.stats_users.iter().any(|u| u == user)
    }

    fn resolve_relative_paths(&mut self, dir: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p {
                if path.is_relative() {
                    *path = dir.join(&*path);
                }
            }
        };
        fix(&mut self.pgpilot.auth_file);
        fix(&mut self.pgpilot.http_token_file);
        fix(&mut self.tls.client_tls_cert_file);
        fix(&mut self.tls.client_tls_key_file);
        // "system" names the bundled web roots, not a file next to the config.
        if self.tls.server_tls_ca_file.as_deref() != Some(Path::new(SYSTEM_ROOTS)) {
            fix(&mut self.tls.server_tls_ca_file);
        }
        fix(&mut self.tls.server_tls_cert_file);
        fix(&mut self.tls.server_tls_key_file);
        for db in self.databases.values_mut() {
            fix(&mut db.password_file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../pgpilot.example.toml"));
        let config = Config::load(path).expect("example parses");
        assert_eq!(config.validate(), Vec::<String>::new());
        assert!(config.databases.contains_key("app"));
    }

    #[test]
    fn unknown_settings_are_named() {
        let err = Config::parse("[pgpilot]\ndefault_pool_sise = 5\n").unwrap_err();
        assert!(err.contains("default_pool_sise"), "{err}");
    }

    #[test]
    fn unix_socket_mode_is_octal_permissions() {
        let mode =
            |text: &str| Config::parse(&format!("[pgpilot]\nunix_socket_mode = \"{text}\"\n")).unwrap();
        assert_eq!(Config::default().pgpilot.unix_socket_permissions(), Ok(0o777));
        assert_eq!(mode("0660").pgpilot.unix_socket_permissions(), Ok(0o660));
        assert_eq!(mode("777").pgpilot.unix_socket_permissions(), Ok(0o777));
        for bad in ["", "rw-rw-rw-", "0888", "01777", "-1"] {
            let problems = mode(bad).validate();
            assert!(problems.iter().any(|p| p.contains("unix_socket_mode")), "{bad:?}: {problems:?}");
        }
    }

    #[test]
    fn per_user_pool_mode_wins() {
        let c = Config::parse(
            "[pgpilot]\npool_mode = \"transaction\"\n[databases.app]\nprimary = \"postgres://a@h/app\"\n[users.batch]\npool_mode = \"session\"\n",
        )
        .unwrap();
        let db = &c.databases["app"];
        assert_eq!(c.pool_mode(db, "batch"), PoolMode::Session);
        assert_eq!(c.pool_mode(db, "web"), PoolMode::Transaction);
    }

    #[test]
    fn a_replica_weight_must_be_a_whole_number() {
        let replica = |weight: &str| {
            Config::parse(&format!(
                "[databases.app]\nprimary = \"postgres://a@h/app\"\nreplicas = [\"postgres://a@r0/app\", {{ url = \"postgres://a@r/app\", weight = {weight} }}]\n"
            ))
        };
        for good in ["0", "3"] {
            let c = replica(good).unwrap();
            assert_eq!(c.validate(), Vec::<String>::new(), "{good}");
            assert_eq!(c.databases["app"].replicas[1].weight(), good.parse::<u32>().unwrap());
        }
        for bad in ["-1", "1.5"] {
            let problems = replica(bad).expect("parses: validation names the weight").validate();
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert!(
                problems[0].contains(&format!(
                    "[databases.app] replica 2: weight = {bad}: a weight must be a whole number"
                )),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn replicas_a_session_pool_never_reads_from_are_noted() {
        let config = |mode: &str, users: &str| {
            Config::parse(&format!(
                "[pgpilot]\npool_mode = \"{mode}\"\n[databases.app]\nprimary = \"postgres://a@h/app\"\nreplicas = [\"postgres://a@r/app\"]\n{users}"
            ))
            .unwrap()
        };
        assert!(config("transaction", "").notes().is_empty());
        let notes = config("session", "").notes();
        assert!(notes.len() == 1 && notes[0].contains("sends every statement to the primary"), "{notes:?}");
        let notes = config("transaction", "[users.batch]\npool_mode = \"session\"\n").notes();
        assert!(notes.len() == 1 && notes[0].contains("(batch)"), "{notes:?}");
    }
}
