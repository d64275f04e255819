//! The slow-query log: statements slower than log_min_duration are written to the log (target
//! `pgpilot::slow_query`) and kept in a ring for GET /api/v1/monitoring/slow-queries. Only slow
//! statements come here, so the one mutex is off the common path.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

use super::{StatementEvent, Target};

#[derive(Debug, Clone, Serialize)]
pub struct SlowQuery {
    /// When it finished, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    pub fingerprint: String,
    #[serde(serialize_with = "arc_str")]
    pub query: Arc<str>,
    #[serde(serialize_with = "arc_str")]
    pub database: Arc<str>,
    #[serde(serialize_with = "arc_str")]
    pub user: Arc<str>,
    pub client: String,
    pub server: String,
    pub target: Target,
    pub duration_ms: f64,
    pub wait_ms: f64,
    pub rows: u64,
    /// The SQLSTATE when it failed.
    pub error: Option<String>,
    /// Parameter values (text form) when log_parameters is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Vec<Option<String>>>,
}

fn arc_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

pub struct SlowLog {
    ring: Mutex<VecDeque<SlowQuery>>,
    capacity: std::sync::atomic::AtomicUsize,
}

impl SlowLog {
    pub fn new(capacity: usize) -> SlowLog {
        SlowLog {
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: std::sync::atomic::AtomicUsize::new(capacity),
        }
    }

    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity, std::sync::atomic::Ordering::Relaxed);
        let mut ring = self.ring.lock();
        while ring.len() > capacity {
            ring.pop_front();
        }
    }

    /// Logs one slow statement and keeps it. `parameters` is passed only when log_parameters is on.
    pub fn push(&self, ev: &StatementEvent<'_>, log_parameters: bool) {
        let parameters = ev.parameters.filter(|_| log_parameters).map(<[Option<String>]>::to_vec);
        let q = SlowQuery {
            at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            fingerprint: format!("{:016x}", ev.fingerprint),
            query: ev.normalized.clone(),
            database: ev.database.clone(),
            user: ev.user.clone(),
            client: ev.client_addr.to_string(),
            server: ev.server.to_string(),
            target: ev.target,
            duration_ms: ev.duration.as_secs_f64() * 1e3,
            wait_ms: ev.wait.as_secs_f64() * 1e3,
            rows: ev.rows,
            error: ev.error.map(str::to_string),
            parameters,
        };
        match &q.parameters {
            Some(params) => tracing::warn!(
                target: "pgpilot::slow_query",
                duration_ms = q.duration_ms,
                database = &*q.database,
                user = &*q.user,
                client = %q.client,
                server = %q.server,
                target_role = q.target.as_str(),
                rows = q.rows,
                error = q.error.as_deref().unwrap_or(""),
                parameters = ?params,
                query = &*q.query,
                "slow statement"
            ),
            None => tracing::warn!(
                target: "pgpilot::slow_query",
                duration_ms = q.duration_ms,
                database = &*q.database,
                user = &*q.user,
                client = %q.client,
                server = %q.server,
                target_role = q.target.as_str(),
                rows = q.rows,
                error = q.error.as_deref().unwrap_or(""),
                query = &*q.query,
                "slow statement"
            ),
        }
        let capacity = self.capacity.load(std::sync::atomic::Ordering::Relaxed);
        if capacity == 0 {
            return;
        }
        let mut ring = self.ring.lock();
        while ring.len() >= capacity {
            ring.pop_front();
        }
        ring.push_back(q);
    }

    /// The newest first: those at least `threshold_ms` long, of `database` when given, up to `limit`.
    pub fn list(&self, threshold_ms: f64, database: Option<&str>, limit: usize) -> Vec<SlowQuery> {
        self.ring
            .lock()
            .iter()
            .rev()
            .filter(|q| q.duration_ms >= threshold_ms && database.is_none_or(|d| *q.database == *d))
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn clear(&self) {
        self.ring.lock().clear();
    }
}
