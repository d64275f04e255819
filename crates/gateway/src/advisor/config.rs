//! `[advisor]`: how the gateway runs the DBA advisor behind GET /api/v1/advisor/findings.

use serde::{Deserialize, Serialize};

use crate::config::Secs;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdvisorConfig {
    /// Serve /api/v1/advisor/findings (a run starts only when someone asks for it).
    pub enabled: bool,
    /// The `[databases.NAME]` advised when the request names none; default: the first by name.
    pub database: Option<String>,
    /// A report older than this is refreshed in the background (the old one is served meanwhile).
    pub refresh_interval: Secs,
    /// After a failed run, how long before the next request may start another.
    pub retry_interval: Secs,
    /// Also run the index advisor (hypothetical indexes when hypopg is installed); health checks
    /// and configuration advice always run.
    pub index_suggestions: bool,
    /// statement_timeout of the advisor's own session.
    pub statement_timeout: Secs,
}

impl Default for AdvisorConfig {
    fn default() -> Self {
        AdvisorConfig {
            enabled: true,
            database: None,
            refresh_interval: Secs::from_secs(600),
            retry_interval: Secs::from_secs(60),
            index_suggestions: true,
            statement_timeout: Secs::from_secs(30),
        }
    }
}

impl AdvisorConfig {
    pub fn problems(&self, databases: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(db) = &self.database {
            if !databases.contains(&db.as_str()) {
                out.push(format!("[advisor] database = {db:?}: there is no [databases.{db}] table"));
            }
        }
        if self.refresh_interval.get() < std::time::Duration::from_secs(10) {
            out.push(
                "[advisor] refresh_interval must be at least 10 seconds (a run reads the whole catalog)"
                    .into(),
            );
        }
        if self.statement_timeout.enabled().is_none() {
            out.push("[advisor] statement_timeout must be more than zero".into());
        }
        out
    }
}
