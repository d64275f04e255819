//! GET /api/v1/monitoring/health: each pool's utilization and waiting clients, each server's
//! connections against max_connections, replica lag, and recent error and slow-query rates,
//! judged against `[insight.health]`; the overall status is the worst check.

use serde::Serialize;
use serde_json::{json, Value};

use super::config::HealthThresholds;
use super::rates::Rates;
use crate::routing::backend::Role;
use crate::shared::{Phase, Shared};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warning,
    Critical,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is measured: pool_utilization, clients_waiting, server_connections, server_down,
    /// replica_lag, replica_down, error_rate, slow_query_rate, gateway.
    pub check: &'static str,
    /// The pool, server or database it is about.
    pub subject: String,
    pub status: Status,
    pub value: f64,
    pub warning: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical: Option<f64>,
    pub message: String,
}

fn judge(value: f64, warning: f64, critical: Option<f64>) -> Status {
    if critical.is_some_and(|c| value >= c) {
        Status::Critical
    } else if value >= warning {
        Status::Warning
    } else {
        Status::Ok
    }
}

struct Checks(Vec<Check>);

impl Checks {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        check: &'static str,
        subject: String,
        value: f64,
        warning: f64,
        critical: Option<f64>,
        what: &str,
    ) {
        let status = judge(value, warning, critical);
        let message = match status {
            Status::Ok => format!("{subject}: {what} {}", fmt(check, value)),
            _ => format!(
                "{subject}: {what} {} is at or above the {} threshold {}",
                fmt(check, value),
                if status == Status::Critical { "critical" } else { "warning" },
                fmt(check, if status == Status::Critical { critical.unwrap_or(warning) } else { warning })
            ),
        };
        self.0.push(Check { check, subject, status, value, warning, critical, message });
    }
}

/// A value the way a person reads it: fractions as percentages, lag in seconds, rates per second.
fn fmt(check: &str, v: f64) -> String {
    match check {
        "pool_utilization" | "server_connections" | "error_rate" => format!("{:.1}%", v * 100.0),
        "replica_lag" => format!("{v:.3} s"),
        "slow_query_rate" => format!("{v:.2}/s"),
        _ if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        _ => format!("{v:.3}"),
    }
}

pub fn health(shared: &Shared) -> Value {
    let config = shared.insight.config();
    let t = &config.health;
    let mut checks = Checks(Vec::new());
    let phase = shared.phase();
    if phase != Phase::Running {
        checks.0.push(Check {
            check: "gateway",
            subject: "pgpilot".into(),
            status: Status::Critical,
            value: 1.0,
            warning: 1.0,
            critical: Some(1.0),
            message: "pgpilot is shutting down".into(),
        });
    }
    let pools = pool_checks(shared, t, &mut checks);
    let mut servers = shared.insight.server_statuses();
    take_the_routers_view(shared, &mut servers);
    for s in &servers {
        checks.0.extend(server_down(s));
        if let Some(usage) = s.connection_usage() {
            let what = "backends of usable max_connections";
            let (w, c) = (t.server_connections_warning, t.server_connections_critical);
            checks.add("server_connections", s.server.clone(), usage, w, Some(c), what);
        }
    }
    replica_checks(shared, t, &mut checks);
    let snapshot = shared.insight.snapshot();
    let rates = shared.insight.rates.sample(&snapshot.totals(), t.window.get());
    error_rate_check(&rates, t, &mut checks);
    // As for the error rate, a history younger than the window counts as a full window: three slow
    // statements in the first second after a start or a reset are not a rate of three a second.
    let slow_rate = rates.slow_queries as f64 / full_window_secs(&rates, t);
    checks.add(
        "slow_query_rate",
        "all databases".into(),
        slow_rate,
        t.slow_query_rate_warning,
        None,
        "slow statements",
    );
    let status = checks.0.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
    json!({
        "status": status,
        "checks": checks.0,
        "pools": pools,
        "servers": servers,
        "rates": rates,
        "thresholds": t,
    })
}

/// The seconds a rate is judged over: the window, or the history's age when that is longer.
fn full_window_secs(rates: &Rates, t: &HealthThresholds) -> f64 {
    rates.window_seconds.max(t.window.get().as_secs_f64()).max(1e-3)
}

/// The error rate, judged only with enough statements to judge: at least
/// `error_rate_min_statements_per_second` over the window, as the shipped PgpilotErrorRate* alert
/// rules ask (a history younger than the window counts as a full window, so a few statements just
/// after startup are not enough either).
fn error_rate_check(rates: &Rates, t: &HealthThresholds, checks: &mut Checks) {
    let (w, c) = (t.error_rate_warning, t.error_rate_critical);
    let secs = full_window_secs(rates, t);
    let volume = rates.statements as f64 / secs;
    let min = t.error_rate_min_statements_per_second;
    if volume >= min {
        return checks.add(
            "error_rate",
            "all databases".into(),
            rates.error_rate,
            w,
            Some(c),
            "failed statements",
        );
    }
    let message = format!(
        "all databases: failed statements {} ({} of {}), not judged: too few statements \
         ({volume:.2}/s over the last {secs:.0} s, below error_rate_min_statements_per_second = {min}/s)",
        fmt("error_rate", rates.error_rate),
        rates.errors,
        rates.statements,
    );
    let subject = "all databases".into();
    let value = rates.error_rate;
    checks.0.push(Check {
        check: "error_rate",
        subject,
        status: Status::Ok,
        value,
        warning: w,
        critical: Some(c),
        message,
    });
}

/// Whether a server is up is the router's word where it has one: its health checks run every
/// health_check_interval (1 s), the probe every server_probe_interval (30 s), which flagged an
/// outage 16 s late and a recovery 25 s late (helper-149). `pgpilot_server_up` is the router's.
fn take_the_routers_view(shared: &Shared, servers: &mut [super::servers::ServerStatus]) {
    let databases = shared.databases.load();
    let backends: Vec<_> = databases.values().flat_map(|db| db.backends.iter().cloned()).collect();
    for s in servers.iter_mut() {
        let mine: Vec<_> = backends.iter().filter(|b| *b.address == *s.server).collect();
        if mine.is_empty() {
            continue;
        }
        match mine.iter().find(|b| !b.is_up()) {
            Some(down) => {
                s.up = false;
                s.error = down.last_error.lock().clone().or(s.error.take());
            }
            None => {
                s.up = true;
                s.error = None;
            }
        }
    }
}

/// A server whose last probe failed: critical for a primary (its clients get no server), a warning
/// for a replica (its reads move to the others).
fn server_down(s: &super::servers::ServerStatus) -> Option<Check> {
    if s.up {
        return None;
    }
    let primary = s.role == "primary";
    let why = s.error.as_deref().unwrap_or("no answer");
    Some(Check {
        check: "server_down",
        subject: s.server.clone(),
        status: if primary { Status::Critical } else { Status::Warning },
        value: 1.0,
        warning: 1.0,
        critical: primary.then_some(1.0),
        message: format!("{} ({}): down: {why}", s.server, s.role),
    })
}

/// Lag and state of each replica as the router's monitor measures them (what routing acts on).
fn replica_checks(shared: &Shared, t: &HealthThresholds, checks: &mut Checks) {
    let (w, c) = (t.replica_lag_warning.get().as_secs_f64(), t.replica_lag_critical.get().as_secs_f64());
    for (name, db) in shared.databases.load().iter() {
        for b in db.backends.iter().filter(|b| b.role() == Role::Replica) {
            let subject = format!("{name}@{}", b.address);
            let (_, lag_ms) = b.lag();
            checks.add("replica_lag", subject.clone(), lag_ms as f64 / 1e3, w, Some(c), "replay lag");
            if b.is_banned() {
                checks.add("replica_down", subject, 1.0, 1.0, None, "banned from reads");
            }
        }
    }
}

fn pool_checks(shared: &Shared, t: &HealthThresholds, checks: &mut Checks) -> Vec<Value> {
    let mut pools = Vec::new();
    for db in shared.databases.load().values() {
        for set in db.pool_sets() {
            for (i, pool) in set.all().enumerate() {
                let c = pool.counts();
                let size = pool.settings.load().size;
                let utilization = if size > 0 { c.active as f64 / size as f64 } else { 0.0 };
                let subject = format!("{}/{}@{}", pool.id.database, pool.id.user, pool.id.server);
                let (w, cr) = (t.pool_utilization_warning, t.pool_utilization_critical);
                checks.add("pool_utilization", subject.clone(), utilization, w, Some(cr), "utilization");
                let (w, cr) = (t.clients_waiting_warning as f64, t.clients_waiting_critical as f64);
                checks.add(
                    "clients_waiting",
                    subject.clone(),
                    c.waiting as f64,
                    w,
                    Some(cr),
                    "clients waiting",
                );
                pools.push(json!({
                    "pool": subject,
                    "database": &*pool.id.database,
                    "user": &*pool.id.user,
                    "server": &*pool.id.server,
                    "role": db.role_name(i),
                    "utilization": utilization,
                    "clients_waiting": c.waiting,
                    "clients": set.clients_of(db, i),
                    "max_wait_ms": c.max_wait.as_secs_f64() * 1e3,
                }));
            }
        }
    }
    pools
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_inclusive_and_critical_wins() {
        assert_eq!(judge(0.5, 0.8, Some(0.95)), Status::Ok);
        assert_eq!(judge(0.8, 0.8, Some(0.95)), Status::Warning);
        assert_eq!(judge(0.97, 0.8, Some(0.95)), Status::Critical);
        assert_eq!(judge(5.0, 1.0, None), Status::Warning);
        assert!(Status::Critical > Status::Warning && Status::Warning > Status::Ok);
    }

    #[test]
    fn a_primary_down_is_critical_and_a_replica_down_a_warning() {
        let status = |role: &str, up: bool| super::super::servers::ServerStatus {
            server: "127.0.0.1:5432".into(),
            role: role.into(),
            up,
            error: Some("Connection refused (os error 111)".into()),
            ..Default::default()
        };
        assert!(server_down(&status("primary", true)).is_none());
        let primary = server_down(&status("primary", false)).unwrap();
        assert_eq!((primary.check, primary.status), ("server_down", Status::Critical));
        assert_eq!(primary.message, "127.0.0.1:5432 (primary): down: Connection refused (os error 111)");
        assert_eq!(server_down(&status("replica", false)).unwrap().status, Status::Warning);
    }

    fn rates(statements: u64, errors: u64, secs: f64) -> Rates {
        Rates {
            window_seconds: secs,
            statements,
            errors,
            error_rate: errors as f64 / statements as f64,
            statements_per_second: statements as f64 / secs,
            ..Default::default()
        }
    }

    #[test]
    fn the_error_rate_is_judged_only_with_enough_statements() {
        let t = HealthThresholds::default();
        let check = |r: Rates| {
            let mut checks = Checks(Vec::new());
            error_rate_check(&r, &t, &mut checks);
            checks.0.remove(0)
        };
        // The tester's case: 9 failures of 16 statements in 5 minutes.
        let few = check(rates(16, 9, 300.0));
        assert_eq!(few.status, Status::Ok, "{few:?}");
        assert!(
            few.message.contains("too few statements") && few.message.contains("9 of 16"),
            "{}",
            few.message
        );
        // Just after startup: 16 statements in 5 s is still a handful.
        assert_eq!(check(rates(16, 9, 5.0)).status, Status::Ok);
        // Enough traffic (2/s): judged.
        let busy = check(rates(600, 60, 300.0));
        assert_eq!(busy.status, Status::Critical, "{busy:?}");
        assert!(busy.message.contains("critical threshold"), "{}", busy.message);
    }
}
