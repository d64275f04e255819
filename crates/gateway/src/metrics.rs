//! Prometheus text exposition of the gateway's state, rendered on request from the counters.

use std::fmt::Write;

use crate::registry::ClientState;
use crate::shared::Shared;
use crate::stats::WAIT_BUCKETS_US;

/// Clients pinned to their server connection in transaction mode, by reason (process-wide).
static PINS: parking_lot::Mutex<Vec<(&'static str, u64)>> = parking_lot::Mutex::new(Vec::new());

/// Counts a client pinned for `reason` (rare: a lock per pin is fine).
pub fn count_pin(reason: &'static str) {
    let mut pins = PINS.lock();
    match pins.iter_mut().find(|(r, _)| *r == reason) {
        Some((_, n)) => *n += 1,
        None => pins.push((reason, 1)),
    }
}

/// Renders every metric; extra sections (routing, cache, jobs) append their own lines.
pub fn render(shared: &Shared) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let config = shared.config.load();
    header(&mut out, "pgpilot_up", "gauge", "1 while pgpilot runs.");
    let _ = writeln!(out, "pgpilot_up 1");
    header(&mut out, "pgpilot_info", "gauge", "Build information.");
    let _ = writeln!(out, "pgpilot_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    header(&mut out, "pgpilot_clients", "gauge", "Client connections by state.");
    let clients = shared.registry.all();
    for state in [ClientState::Login, ClientState::Idle, ClientState::Waiting, ClientState::Active] {
        let mut n = clients.iter().filter(|c| c.state() == state).count();
        if state == ClientState::Login {
            // Those that have not sent a startup packet yet count against max_client_conn too.
            n += shared.registry.opening();
        }
        let _ = writeln!(out, "pgpilot_clients{{state=\"{}\"}} {n}", state.as_str());
    }
    header(&mut out, "pgpilot_max_client_conn", "gauge", "The max_client_conn setting.");
    let _ = writeln!(out, "pgpilot_max_client_conn {}", config.pgpilot.max_client_conn);
    header(
        &mut out,
        "pgpilot_client_pins_total",
        "counter",
        "Clients pinned to one server connection in transaction mode, by reason.",
    );
    for (reason, n) in PINS.lock().iter() {
        let _ = writeln!(out, "pgpilot_client_pins_total{{reason=\"{reason}\"}} {n}");
    }
    header(&mut out, "pgpilot_clients_pinned", "gauge", "Clients currently pinned to a server connection.");
    let _ = writeln!(
        out,
        "pgpilot_clients_pinned {}",
        clients.iter().filter(|c| c.pinned.lock().is_some()).count()
    );
    header(
        &mut out,
        "pgpilot_auth_queries_total",
        "counter",
        "Passwords looked up with auth_query (cache misses).",
    );
    let _ = writeln!(out, "pgpilot_auth_queries_total {}", shared.auth_query.queries());
    pools(&mut out, shared);
    render_routing(&mut out, shared);
    crate::insight::render_metrics(shared, &mut out);
    crate::jobs::render_metrics(shared, &mut out);
    crate::cache::api::render_metrics(shared, &mut out);
    out
}

pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value.
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn pools(out: &mut String, shared: &Shared) {
    let mut lines: Vec<(&str, &str, &str, Vec<String>)> = vec![
        ("pgpilot_pool_clients_active", "gauge", "Clients of the pool not waiting for a server.", vec![]),
        ("pgpilot_pool_clients_waiting", "gauge", "Clients waiting for a server connection.", vec![]),
        ("pgpilot_pool_servers_active", "gauge", "Server connections linked to a client.", vec![]),
        (
            "pgpilot_pool_servers_idle",
            "gauge",
            "Server connections idle in the pool, ready for use (SHOW POOLS sv_idle).",
            vec![],
        ),
        (
            "pgpilot_pool_servers_used",
            "gauge",
            "Server connections idle in the pool, due for a check before reuse (sv_used).",
            vec![],
        ),
        ("pgpilot_pool_servers_login", "gauge", "Server connections being opened.", vec![]),
        ("pgpilot_pool_size", "gauge", "Configured pool size.", vec![]),
        ("pgpilot_pool_utilization", "gauge", "Server connections in use divided by the pool size.", vec![]),
        ("pgpilot_pool_max_wait_seconds", "gauge", "How long the oldest waiting client has waited.", vec![]),
        ("pgpilot_transactions_total", "counter", "Transactions completed.", vec![]),
        ("pgpilot_queries_total", "counter", "Queries (Query and Sync messages) completed.", vec![]),
        (
            "pgpilot_server_assignments_total",
            "counter",
            "Times a client was given a server connection.",
            vec![],
        ),
        ("pgpilot_bytes_received_total", "counter", "Bytes received from clients.", vec![]),
        ("pgpilot_bytes_sent_total", "counter", "Bytes sent to clients.", vec![]),
        ("pgpilot_transaction_seconds_total", "counter", "Time spent in transactions.", vec![]),
        ("pgpilot_query_seconds_total", "counter", "Time spent in queries.", vec![]),
        ("pgpilot_client_parses_total", "counter", "Parse messages received from clients.", vec![]),
        (
            "pgpilot_server_parses_total",
            "counter",
            "Parse messages sent to servers, pgpilot's prepares of a client's statement on another server included.",
            vec![],
        ),
        ("pgpilot_binds_total", "counter", "Bind messages received from clients.", vec![]),
        // The time clients waited is the histogram pgpilot_client_wait_seconds' _sum: a counter
        // named pgpilot_client_wait_seconds_total beside it would be a second family of the same
        // name to OpenMetrics parsers, which drop a counter's _total.
    ];
    let mut histogram = String::new();
    for db in shared.databases.load().values() {
        for set in db.pool_sets() {
            for (i, pool) in set.all().enumerate() {
                let role = db.role_name(i);
                let l = format!(
                    "database=\"{}\",user=\"{}\",server=\"{}\",role=\"{role}\"",
                    label(&pool.id.database),
                    label(&pool.id.user),
                    label(&pool.id.server)
                );
                let c = pool.counts();
                let size = pool.settings.load().size;
                let clients = set.clients_of(db, i);
                let t = pool.stats.totals();
                let values: [f64; 19] = [
                    clients.saturating_sub(c.waiting) as f64,
                    c.waiting as f64,
                    c.active as f64,
                    // Separate states, as in SHOW POOLS: active + idle + used + login is every
                    // connection of the pool.
                    c.idle.saturating_sub(c.used) as f64,
                    c.used as f64,
                    c.opening as f64,
                    size as f64,
                    if size > 0 { c.active as f64 / size as f64 } else { 0.0 },
                    c.max_wait.as_secs_f64(),
                    t.xacts as f64,
                    t.queries as f64,
                    t.assignments as f64,
                    t.received as f64,
                    t.sent as f64,
                    t.xact_time_us as f64 / 1e6,
                    t.query_time_us as f64 / 1e6,
                    t.client_parses as f64,
                    t.server_parses as f64,
                    t.binds as f64,
                ];
                for (line, value) in lines.iter_mut().zip(values) {
                    line.3.push(format!("{}{{{l}}} {value}", line.0));
                }
                let mut cumulative = 0;
                for (bound, n) in WAIT_BUCKETS_US.iter().zip(t.wait_buckets.iter()) {
                    cumulative += n;
                    let _ = writeln!(
                        histogram,
                        "pgpilot_client_wait_seconds_bucket{{{l},le=\"{}\"}} {cumulative}",
                        *bound as f64 / 1e6
                    );
                }
                cumulative += t.wait_buckets[WAIT_BUCKETS_US.len()];
                let _ =
                    writeln!(histogram, "pgpilot_client_wait_seconds_bucket{{{l},le=\"+Inf\"}} {cumulative}");
                let _ = writeln!(
                    histogram,
                    "pgpilot_client_wait_seconds_sum{{{l}}} {}",
                    t.wait_time_us as f64 / 1e6
                );
                let _ = writeln!(histogram, "pgpilot_client_wait_seconds_count{{{l}}} {}", t.assignments);
            }
        }
    }
    for (name, kind, help, rows) in lines {
        header(out, name, kind, help);
        for r in rows {
            out.push_str(&r);
            out.push('\n');
        }
    }
    header(
        out,
        "pgpilot_client_wait_seconds",
        "histogram",
        "How long clients waited for a server connection.",
    );
    out.push_str(&histogram);
}

/// Per-server routing state: role, health, lag, reads and writes routed.
pub fn render_routing(out: &mut String, shared: &Shared) {
    let mut rows: Vec<(&str, &str, &str, Vec<String>)> = vec![
        (
            "pgpilot_server_up",
            "gauge",
            "1 when the server passes its health checks and is not banned.",
            vec![],
        ),
        ("pgpilot_server_is_primary", "gauge", "1 for the server discovered to be the primary.", vec![]),
        ("pgpilot_replica_lag_bytes", "gauge", "WAL bytes the replica has not replayed yet.", vec![]),
        (
            "pgpilot_replica_lag_seconds",
            "gauge",
            "Age of the oldest change the replica has not replayed (0 when caught up); the primary's position is read every lag_check_interval, so this may read up to one interval low.",
            vec![],
        ),
        ("pgpilot_routed_reads_total", "counter", "Transactions routed to the server as reads.", vec![]),
        (
            "pgpilot_routed_writes_total",
            "counter",
            "Transactions routed to the server as possible writes.",
            vec![],
        ),
        ("pgpilot_server_failed_checks_total", "counter", "Failed health checks: one per health_check_interval while the server does not answer.", vec![]),
    ];
    for (name, db) in shared.databases.load().iter() {
        for b in &db.backends {
            let l = format!(
                "database=\"{}\",server=\"{}\",role=\"{}\"",
                label(name),
                label(&b.address),
                b.role().as_str()
            );
            let (lag_bytes, lag_ms) = b.lag();
            let values = [
                f64::from(u8::from(!b.is_banned())),
                f64::from(u8::from(b.index == db.primary_index())),
                lag_bytes as f64,
                lag_ms as f64 / 1e3,
                b.reads.load(std::sync::atomic::Ordering::Relaxed) as f64,
                b.writes.load(std::sync::atomic::Ordering::Relaxed) as f64,
                b.failed_checks.load(std::sync::atomic::Ordering::Relaxed) as f64,
            ];
            for (row, value) in rows.iter_mut().zip(values) {
                row.3.push(format!("{}{{{l}}} {value}", row.0));
            }
        }
    }
    for (name, kind, help, lines) in rows {
        header(out, name, kind, help);
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
}
