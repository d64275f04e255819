//! The gateway's configuration for the demo, written as the TOML a user would write (and saved to
//! a file, so `pgpilot serve -c FILE` runs the same thing): transaction pooling in front of the
//! primary and its replica, trust authentication on loopback, and the result cache with Redis
//! when this build has one.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use pgpilot_gateway::config::Config;

/// What the gateway is put in front of.
pub struct GatewayPlan {
    pub listen_port: u16,
    pub http_port: u16,
    pub primary_url: String,
    pub replica_url: String,
    pub redis_url: Option<String>,
    pub pool_size: usize,
}

/// The configuration, and why the result cache is not in it when it is not.
pub struct GatewaySetup {
    pub config: Config,
    pub text: String,
    /// The gateway's objection to the cache settings (this build has none, or they changed).
    pub cache_refused: Option<String>,
}

pub fn file_in(dir: &Path) -> PathBuf {
    dir.join("pgpilot.toml")
}

pub fn build(plan: &GatewayPlan) -> Result<GatewaySetup> {
    let base = base_toml(plan);
    let with_cache = format!("{base}{}", cache_toml(plan.redis_url.as_deref()));
    // The result cache is being built alongside the demo: a gateway without its settings refuses
    // them as unknown keys, and then the demo runs without a cache and says why.
    let refused = match Config::parse(&with_cache) {
        Ok(config) => return Ok(GatewaySetup { config, text: with_cache, cache_refused: None }),
        Err(e) => e,
    };
    let config = Config::parse(&base).map_err(|e| anyhow!("the demo's gateway configuration: {e}"))?;
    // TOML errors end with what is wrong, after the position and an excerpt of the file.
    let reason = refused.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(&refused).trim();
    let reason = reason.split(", expected one of").next().unwrap_or(reason).to_string();
    Ok(GatewaySetup { config, text: base, cache_refused: Some(reason) })
}

pub fn write(dir: &Path, text: &str) -> Result<PathBuf> {
    let path = file_in(dir);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn base_toml(plan: &GatewayPlan) -> String {
    format!(
        r#"# The configuration `pgpilot demo` runs. `pgpilot serve -c {file}` runs the same gateway.
[pgpilot]
listen = "127.0.0.1:{listen}"
http = "127.0.0.1:{http}"
pool_mode = "transaction"
# Loopback only, and the demo's servers trust loopback too.
auth_type = "trust"
admin_users = ["postgres"]
default_pool_size = {pool_size}
shutdown_timeout = 2
log_connections = false
log_disconnections = false

[tls]
server_tls_sslmode = "disable"

[databases.{db}]
primary = "{primary}"
replicas = ["{replica}"]
"#,
        file = "pgpilot.toml",
        listen = plan.listen_port,
        http = plan.http_port,
        pool_size = plan.pool_size,
        db = super::session::DATABASE,
        primary = plan.primary_url,
        replica = plan.replica_url,
    )
}

/// The result cache for the demo database, with Redis as the shared tier when it runs.
fn cache_toml(redis_url: Option<&str>) -> String {
    let mut text =
        format!("\n[databases.{}.cache]\nenabled = true\nttl = \"30s\"\n", super::session::DATABASE);
    if let Some(url) = redis_url {
        text.push_str(&format!("\n[cache]\nredis_url = \"{url}\"\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> GatewayPlan {
        GatewayPlan {
            listen_port: 6432,
            http_port: 9930,
            primary_url: "postgres://postgres@127.0.0.1:5432/demo".into(),
            replica_url: "postgres://postgres@127.0.0.1:5433/demo".into(),
            redis_url: Some("redis://127.0.0.1:6379".into()),
            pool_size: 8,
        }
    }

    #[test]
    fn the_demo_configuration_is_valid_with_or_without_a_cache() {
        let setup = build(&plan()).unwrap();
        assert_eq!(setup.config.validate(), Vec::<String>::new());
        let db = &setup.config.databases[super::super::session::DATABASE];
        assert_eq!(db.replicas.len(), 1);
        assert_eq!(setup.config.pool_size(db), 8);
        assert!(setup.text.contains("pool_mode = \"transaction\""));
        assert_eq!(setup.cache_refused, None, "the gateway accepts the demo's cache settings");
        assert!(db.cache.enabled);
        assert_eq!(setup.config.cache.redis_url.as_deref().is_some(), plan().redis_url.is_some());
    }
}
