//! What the server probe last saw of each PostgreSQL server (by address): backends against
//! max_connections and recovery state. Replication lag is the router's (routing::monitor).

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
}
