//! What the server probe last saw of each PostgreSQL server (by address): backends against
//! max_connections, recovery state and replay lag.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerStatus {
    /// host:port (or socket path).
    pub server: String,
    /// The logical databases that use this server.
    pub databases: Vec<String>,
    /// "primary" or "replica" as configured.
    pub role: String,
    /// Whether the last probe succeeded.
    pub up: bool,
    pub in_recovery: Option<bool>,
    /// Client backends (pg_stat_activity) of every user and application, not only pgpilot's.
    pub connections: Option<u64>,
    pub max_connections: Option<u64>,
    pub superuser_reserved_connections: Option<u64>,
    /// Seconds since the last replayed transaction, 0 when everything the primary wrote is replayed.
    pub lag_seconds: Option<f64>,
    /// WAL bytes the replica has yet to replay.
    pub lag_bytes: Option<u64>,
    /// Why the last probe failed.
    pub error: Option<String>,
    pub updated_unix_ms: u64,
}

impl ServerStatus {
    /// Backends divided by the connections ordinary users may open.
    pub fn connection_usage(&self) -> Option<f64> {
        let max = self.max_connections? - self.superuser_reserved_connections.unwrap_or(0);
        Some(self.connections? as f64 / max.max(1) as f64)
    }
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[derive(Default)]
pub struct ServerStatuses {
    by_server: Mutex<BTreeMap<String, ServerStatus>>,
}

impl ServerStatuses {
    pub fn all(&self) -> Vec<ServerStatus> {
        self.by_server.lock().values().cloned().collect()
    }

    pub fn store(&self, status: ServerStatus) {
        self.by_server.lock().insert(status.server.clone(), status);
    }

    /// Drops servers no longer configured.
    pub fn retain(&self, servers: &[String]) {
        self.by_server.lock().retain(|s, _| servers.contains(s));
    }

    pub fn report_lag(&self, server: &str, lag_seconds: f64, lag_bytes: u64) {
        let mut all = self.by_server.lock();
        let s = all.entry(server.to_string()).or_insert_with(|| ServerStatus {
            server: server.to_string(),
            role: "replica".into(),
            ..Default::default()
        });
        s.lag_seconds = Some(lag_seconds);
        s.lag_bytes = Some(lag_bytes);
        s.updated_unix_ms = now_unix_ms();
    }
}
