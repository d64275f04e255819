//! A pool's effective settings, resolved from the general section, the database and the user.

use std::time::Duration;

use crate::config::{Config, DatabaseConfig, PoolMode};

#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub mode: PoolMode,
    pub size: usize,
    pub min_size: usize,
    pub reserve_size: usize,
    pub reserve_timeout: Duration,
    pub lifetime: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub connect_timeout: Duration,
    pub login_retry: Duration,
    pub query_wait_timeout: Option<Duration>,
    pub check_query: Option<String>,
    pub check_delay: Duration,
    pub reset_query: Option<String>,
    pub reset_always: bool,
    pub max_prepared: usize,
}

impl PoolSettings {
    pub fn resolve(config: &Config, db: &DatabaseConfig, user: &str) -> PoolSettings {
        let g = &config.pgpilot;
        let nonempty = |s: &str| (!s.trim().is_empty()).then(|| s.to_string());
        PoolSettings {
            mode: config.pool_mode(db, user),
            size: config.pool_size(db),
            min_size: db.min_pool_size.unwrap_or(g.min_pool_size),
            reserve_size: db.reserve_pool_size.unwrap_or(g.reserve_pool_size),
            reserve_timeout: g.reserve_pool_timeout.get(),
            lifetime: g.server_lifetime.enabled(),
            idle_timeout: g.server_idle_timeout.enabled(),
            connect_timeout: g.server_connect_timeout.enabled().unwrap_or(Duration::from_secs(15)),
            login_retry: g.server_login_retry.enabled().unwrap_or(Duration::from_secs(1)),
            query_wait_timeout: g.query_wait_timeout.enabled(),
            check_query: nonempty(&g.server_check_query),
            check_delay: g.server_check_delay.get(),
            reset_query: nonempty(&g.server_reset_query),
            reset_always: g.server_reset_query_always,
            max_prepared: g.max_prepared_statements,
        }
    }
}
