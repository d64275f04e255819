//! The `[insight]` section: per-statement statistics, the slow-query log, the monitoring API's
//! EXPLAIN endpoint, and the thresholds GET /api/v1/monitoring/health judges against.

use serde::{Deserialize, Serialize};

use crate::config::Secs;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InsightConfig {
    /// Gather per-statement statistics at all (the slow-query log needs them on).
    pub enabled: bool,
    /// Statements slower than this are logged and kept for /api/v1/monitoring/slow-queries; 0 turns the log off.
    pub log_min_duration: Secs,
    /// Log the parameter values of slow statements (may show personal data: off by default).
    pub log_parameters: bool,
    /// Distinct (statement, database, user) entries kept; the least expensive are folded into an
    /// "other" entry per database when more arrive.
    pub max_statements: usize,
    /// Bytes of normalized text kept per entry and per slow statement: longer texts are cut on a
    /// character boundary and end with `/* … N bytes more */` (the fingerprint is still over the
    /// whole text). Bounds memory and the API's answers however long the statements are.
    pub max_query_text: usize,
    /// Statements exported to Prometheus with their own series, the most expensive by total time.
    pub prometheus_top_n: usize,
    /// Slow statements kept in memory for the API (a ring: the oldest go first).
    pub slow_log_size: usize,
    /// Let POST /api/v1/monitoring/analyze-query run EXPLAIN ANALYZE (executes the statement, read-only).
    pub allow_explain_analyze: bool,
    /// statement_timeout of the EXPLAIN connection.
    pub explain_timeout: Secs,
    /// How often each server is asked for its connection count and max_connections; 0 turns it off.
    pub server_probe_interval: Secs,
    pub health: HealthThresholds,
}

impl Default for InsightConfig {
    fn default() -> Self {
        InsightConfig {
            enabled: true,
            log_min_duration: Secs::from_millis(100),
            log_parameters: false,
            max_statements: 1000,
            max_query_text: 4096,
            prometheus_top_n: 20,
            slow_log_size: 1000,
            allow_explain_analyze: false,
            explain_timeout: Secs::from_secs(10),
            server_probe_interval: Secs::from_secs(30),
            health: HealthThresholds::default(),
        }
    }
}

/// What GET /api/v1/monitoring/health calls a warning and what it calls critical. Fractions are
/// 0..1; rates are measured over `window`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthThresholds {
    pub pool_utilization_warning: f64,
    pub pool_utilization_critical: f64,
    /// Clients waiting for a server connection in one pool.
    pub clients_waiting_warning: usize,
    pub clients_waiting_critical: usize,
    pub replica_lag_warning: Secs,
    pub replica_lag_critical: Secs,
    /// Failed statements divided by statements.
    pub error_rate_warning: f64,
    pub error_rate_critical: f64,
    /// Statements per second over `window` below which the error rate is not judged (a handful of
    /// statements proves nothing): the same minimum as the shipped PgpilotErrorRate* alert rules.
    pub error_rate_min_statements_per_second: f64,
    /// Slow statements per second.
    pub slow_query_rate_warning: f64,
    /// Server backends divided by the server's max_connections.
    pub server_connections_warning: f64,
    pub server_connections_critical: f64,
    /// The span rates are measured over (the most recent samples at least this old are compared).
    pub window: Secs,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds {
            pool_utilization_warning: 0.8,
            pool_utilization_critical: 0.95,
            clients_waiting_warning: 1,
            clients_waiting_critical: 20,
            replica_lag_warning: Secs::from_secs(1),
            replica_lag_critical: Secs::from_secs(30),
            error_rate_warning: 0.01,
            error_rate_critical: 0.05,
            error_rate_min_statements_per_second: 1.0,
            slow_query_rate_warning: 1.0,
            server_connections_warning: 0.8,
            server_connections_critical: 0.95,
            window: Secs::from_secs(300),
        }
    }
}

/// The least `max_query_text`: below it a statement's kept text names too little to recognise it.
const MIN_QUERY_TEXT: usize = 64;

impl InsightConfig {
    /// Problems a person can act on, each naming the setting.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_statements == 0 {
            p.push("[insight] max_statements must be at least 1".to_string());
        }
        if self.max_query_text < MIN_QUERY_TEXT {
            p.push(format!("[insight] max_query_text must be at least {MIN_QUERY_TEXT} (bytes)"));
        }
        let h = &self.health;
        for (name, warn, crit) in [
            ("pool_utilization", h.pool_utilization_warning, h.pool_utilization_critical),
            ("error_rate", h.error_rate_warning, h.error_rate_critical),
            ("server_connections", h.server_connections_warning, h.server_connections_critical),
        ] {
            if !(0.0..=1.0).contains(&warn) || !(0.0..=1.0).contains(&crit) {
                p.push(format!(
                    "[insight.health] {name}_warning and {name}_critical are fractions between 0 and 1"
                ));
            } else if warn > crit {
                p.push(format!("[insight.health] {name}_warning ({warn}) is above {name}_critical ({crit})"));
            }
        }
        if h.clients_waiting_warning > h.clients_waiting_critical {
            p.push("[insight.health] clients_waiting_warning is above clients_waiting_critical".into());
        }
        if h.replica_lag_warning > h.replica_lag_critical {
            p.push("[insight.health] replica_lag_warning is above replica_lag_critical".into());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides_parse() {
        let c: InsightConfig = toml::from_str("").unwrap();
        assert_eq!(c, InsightConfig::default());
        assert_eq!(c.log_min_duration.get(), std::time::Duration::from_millis(100));
        let c: InsightConfig = toml::from_str(
            "log_min_duration = \"250ms\"\nmax_statements = 50\n[health]\npool_utilization_warning = 0.7\n",
        )
        .unwrap();
        assert_eq!(c.log_min_duration.get(), std::time::Duration::from_millis(250));
        assert_eq!(c.max_statements, 50);
        assert_eq!(c.health.pool_utilization_warning, 0.7);
        assert!(c.problems().is_empty());
        assert!(toml::from_str::<InsightConfig>("log_min_duraton = 1").is_err());
    }

    #[test]
    fn inverted_thresholds_are_named() {
        let mut c = InsightConfig::default();
        c.health.error_rate_warning = 0.5;
        c.health.error_rate_critical = 0.1;
        c.max_statements = 0;
        c.max_query_text = 10;
        let p = c.problems();
        assert!(p.iter().any(|m| m.contains("error_rate_warning")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("max_statements")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("max_query_text")), "{p:?}");
    }
}
