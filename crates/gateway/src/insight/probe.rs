//! The server probe: every `server_probe_interval`, one query per configured server over a kept
//! connection (logged in as the pools are) reads its client backends (of every application, not
//! only pgpilot's) against max_connections, and whether it is in recovery. Replication lag is the
//! router's business (routing::monitor). The same loop samples the statement totals for the
//! health endpoint's rates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pgclient::{server_user_for, PgConn};
use super::servers::{now_unix_ms, ServerStatus};
use crate::config::ServerUrl;
use crate::databases::Database;
use crate::shared::{Phase, Shared};

const TICK: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(5);
const NO_USER: &str = "no server user known yet (no fixed user and no pool opened)";

const PROBE_SQL: &str = "SELECT current_setting('max_connections'), \
     current_setting('superuser_reserved_connections'), \
     (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'), \
     pg_is_in_recovery()";

/// Runs until the gateway stops (or is dropped).
pub fn spawn_server_probe(shared: &Arc<Shared>) -> tokio::task::JoinHandle<()> {
    let weak = Arc::downgrade(shared);
    let mut phase = shared.phase.subscribe();
    tokio::spawn(async move {
        let mut probe = Probe::default();
        let mut last_probe: Option<Instant> = None;
        loop {
            let Some(shared) = weak.upgrade() else { return };
            if shared.phase() == Phase::Stopped {
                return;
            }
            let config = shared.insight.config();
            let snapshot = shared.insight.snapshot();
            shared.insight.rates.sample(&snapshot.totals(), config.health.window.get());
            if let Some(interval) = config.server_probe_interval.enabled() {
                if last_probe.is_none_or(|t| t.elapsed() >= interval) {
                    last_probe = Some(Instant::now());
                    probe.round(&shared).await;
                }
            } else {
                probe.connections.clear();
            }
            let wait = config.server_probe_interval.enabled().unwrap_or(TICK).min(TICK);
            drop(shared);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = phase.changed() => {}
            }
        }
    })
}

#[derive(Default)]
struct Probe {
    connections: HashMap<String, PgConn>,
}

/// What one query returned.
struct Reading {
    max_connections: Option<u64>,
    reserved: Option<u64>,
    connections: Option<u64>,
    in_recovery: Option<bool>,
}

impl Probe {
    async fn round(&mut self, shared: &Arc<Shared>) {
        let databases: Vec<Arc<Database>> = shared.databases.load().values().cloned().collect();
        let mut seen: HashMap<String, ServerStatus> = HashMap::new();
        for db in &databases {
            let user = server_user_for(db, None);
            self.status(shared, db, &db.primary, "primary", user.as_deref(), &mut seen).await;
            for replica in &db.replicas {
                self.status(shared, db, replica, "replica", user.as_deref(), &mut seen).await;
            }
        }
        let servers: Vec<String> = seen.keys().cloned().collect();
        self.connections.retain(|addr, _| servers.contains(addr));
        shared.insight.servers.retain(&servers);
        for status in seen.into_values() {
            shared.insight.servers.store(status);
        }
    }

    /// Probes one server once per round (several databases may share it) and records its status.
    async fn status(
        &mut self,
        shared: &Arc<Shared>,
        db: &Arc<Database>,
        url: &ServerUrl,
        role: &str,
        user: Option<&str>,
        seen: &mut HashMap<String, ServerStatus>,
    ) {
        let addr = url.address();
        let mut status = match seen.remove(&addr) {
            // Probed already; unless no database before this one knew a user to log in as.
            Some(mut s) if s.error.as_deref() != Some(NO_USER) || user.is_none() => {
                s.databases.push(db.name.to_string());
                seen.insert(addr, s);
                return;
            }
            Some(mut s) => {
                s.databases.push(db.name.to_string());
                s.error = None;
                s
            }
            None => ServerStatus {
                server: addr.clone(),
                databases: vec![db.name.to_string()],
                role: role.to_string(),
                updated_unix_ms: now_unix_ms(),
                ..Default::default()
            },
        };
        let result = match user {
            None => Err(NO_USER.to_string()),
            Some(user) => self.read(shared, db, url, user).await,
        };
        match result {
            Ok(reading) => {
                status.up = true;
                status.max_connections = reading.max_connections;
                status.superuser_reserved_connections = reading.reserved;
                status.connections = reading.connections;
                status.in_recovery = reading.in_recovery;
            }
            Err(e) => {
                let was_up = shared.insight.servers.all().iter().any(|s| s.server == addr && s.up);
                // No user yet is no failure: another database on the server may know one (it
                // was logged every round while another database's pool probed the server fine).
                if was_up && e != NO_USER {
                    tracing::warn!(server = %addr, error = %e, "server probe failed");
                }
                status.error = Some(e);
            }
        }
        seen.insert(addr, status);
    }

    async fn read(
        &mut self,
        shared: &Arc<Shared>,
        db: &Arc<Database>,
        url: &ServerUrl,
        user: &str,
    ) -> Result<Reading, String> {
        let addr = url.address();
        let mut conn = match self.connections.remove(&addr) {
            Some(c) => c,
            None => PgConn::connect(shared, db, url, user, TIMEOUT).await.map_err(|e| e.to_string())?,
        };
        let rows = match tokio::time::timeout(TIMEOUT, conn.simple(PROBE_SQL)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("no answer from {addr} within {TIMEOUT:?}")),
        };
        self.connections.insert(addr, conn);
        let row = rows.into_iter().next().ok_or("the probe query returned no row")?;
        let col = |i: usize| row.get(i).cloned().flatten();
        let num = |i: usize| col(i).and_then(|v| v.parse::<u64>().ok());
        Ok(Reading {
            max_connections: num(0),
            reserved: num(1),
            connections: num(2),
            in_recovery: col(3).map(|v| v == "t"),
        })
    }
}
