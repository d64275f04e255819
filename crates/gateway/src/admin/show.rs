//! SHOW commands, with PgBouncer's column names so existing dashboards and exporters keep working.

use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

use super::resultset::{v, Cell, Kind, ResultSet};
use crate::config::ConsoleColumns;
use crate::databases::Database;
use crate::pool::PoolCounts;
use crate::registry::ClientState;
use crate::shared::Shared;
use crate::stats::{Averages, Totals};
use crate::timefmt::{format_utc, format_utc_us};

/// How many of a SHOW command's first columns are PgBouncer 1.23's, for the commands where
/// pgpilot adds its own after them.
pub fn pgbouncer_width(what: &str) -> Option<usize> {
    match what {
        "CLIENTS" | "SERVERS" => Some(PGBOUNCER_CONN_COLUMNS),
        "DATABASES" => Some(PGBOUNCER_DATABASE_COLUMNS),
        "STATS" => Some(PGBOUNCER_STATS_COLUMNS),
        "STATS_TOTALS" | "STATS_AVERAGES" => Some(PER_DATABASE_COLUMNS.len()),
        _ => None,
    }
}

/// SHOW POOLS: PgBouncer 1.23's columns, and no others.
const POOL_COLUMNS: [&str; 16] = [
    "database",
    "user",
    "cl_active",
    "cl_waiting",
    "cl_active_cancel_req",
    "cl_waiting_cancel_req",
    "sv_active",
    "sv_active_cancel",
    "sv_being_canceled",
    "sv_idle",
    "sv_used",
    "sv_tested",
    "sv_login",
    "maxwait",
    "maxwait_us",
    "pool_mode",
];

/// One row per database and user, as PgBouncer's (whose pools may span several hosts too): a
/// split database's primary and replica pools add up, and SHOW SERVERS gives each server's role.
/// Exporters label pools by database and user, and two rows of one pair failed their scrape.
pub fn pools(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(&POOL_COLUMNS).integers_as(Kind::Int4);
    let mut console = vec![v(CONSOLE), v(CONSOLE), v(console_clients(shared))];
    console.extend((0..12).map(|_| v(0)));
    console.push(v("statement"));
    rs.row(console);
    for (_, db) in &shared.databases_by_name() {
        for set in db.pool_sets() {
            let Some(first) = set.all().next() else { continue };
            let mode = first.settings.load().mode;
            let c = set.all().map(|p| p.counts()).fold(PoolCounts::default(), add_counts);
            rs.row(vec![
                v(&first.id.database),
                v(&first.id.user),
                v(set.clients.load(Relaxed).saturating_sub(c.waiting)),
                v(c.waiting),
                v(0),
                v(0),
                v(c.active),
                v(0),
                v(0),
                v(c.idle - c.used.min(c.idle)),
                v(c.used),
                v(0),
                v(c.opening),
                v(c.max_wait.as_secs()),
                v(c.max_wait.subsec_micros()),
                v(mode.as_str()),
            ]);
        }
    }
    rs
}

fn add_counts(sum: PoolCounts, c: PoolCounts) -> PoolCounts {
    PoolCounts {
        active: sum.active + c.active,
        idle: sum.idle + c.idle,
        opening: sum.opening + c.opening,
        in_use: sum.in_use + c.in_use,
        total: sum.total + c.total,
        waiting: sum.waiting + c.waiting,
        used: sum.used + c.used,
        max_wait: sum.max_wait.max(c.max_wait),
    }
}

/// PgBouncer lists its console as database `pgbouncer` of user `pgbouncer` in SHOW POOLS and SHOW
/// DATABASES; exporters and dashboards expect the row.
const CONSOLE: &str = "pgbouncer";

/// Clients logged in to the console.
fn console_clients(shared: &Shared) -> usize {
    let on_console = |c: &crate::registry::ClientInfo| crate::session::is_admin_database(&c.database.lock());
    shared.registry.all().iter().filter(|c| c.state() != ClientState::Login && on_console(c)).count()
}

/// Totals per database, summed over its pools.
pub fn database_totals(shared: &Shared) -> Vec<(String, Totals)> {
    let mut out = Vec::new();
    for (name, db) in &shared.databases_by_name() {
        let mut t = Totals::default();
        for set in db.pool_sets() {
            for pool in set.all() {
                t.add(&pool.stats.totals());
            }
        }
        out.push((name.clone(), t));
    }
    out
}

/// SHOW STATS: PgBouncer 1.23's seventeen columns, then the prepared-statement counts PgBouncer
/// 1.24 added (under its names, after 1.23's rather than among them, so 1.23's layout stays whole).
const STATS_COLUMNS: [&str; 23] = [
    "database",
    "total_server_assignment_count",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "avg_server_assignment_count",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
    "total_client_parse_count",
    "total_server_parse_count",
    "total_bind_count",
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
];

const PGBOUNCER_STATS_COLUMNS: usize = 17;

pub fn stats(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(&STATS_COLUMNS).integers_as(Kind::Numeric);
    let averages = shared.stats_window.lock().averages(&database_totals(shared));
    for (name, t, a) in averages {
        let totals = t.counters();
        let mut row = per_database_row(&name, &totals);
        row.extend(counter_cells(&a));
        row.extend(prepared_cells(&totals));
        row.extend(prepared_cells(&a));
        rs.row(row);
    }
    rs
}

/// The columns SHOW STATS_TOTALS and SHOW STATS_AVERAGES share, in PgBouncer 1.23's names.
const PER_DATABASE_COLUMNS: [&str; 9] = [
    "database",
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
];

/// The prepared-statement counts after them, in PgBouncer 1.24's names (its averages' have `avg_`).
const PREPARED_TOTALS_COLUMNS: [&str; 3] = ["client_parse_count", "server_parse_count", "bind_count"];
const PREPARED_AVERAGES_COLUMNS: [&str; 3] =
    ["avg_client_parse_count", "avg_server_parse_count", "avg_bind_count"];

fn per_database_columns(prepared: [&'static str; 3]) -> Vec<&'static str> {
    PER_DATABASE_COLUMNS.iter().copied().chain(prepared).collect()
}

/// The database's name and the eight figures of PER_DATABASE_COLUMNS.
fn per_database_row(name: &str, a: &Averages) -> Vec<Cell> {
    let mut row = vec![v(name)];
    row.extend(counter_cells(a));
    row
}

/// The eight figures in PER_DATABASE_COLUMNS' order (SHOW STATS has them twice: totals, averages).
fn counter_cells(a: &Averages) -> [Cell; 8] {
    [
        v(a.assignments),
        v(a.xacts),
        v(a.queries),
        v(a.received),
        v(a.sent),
        v(a.xact_time_us),
        v(a.query_time_us),
        v(a.wait_time_us),
    ]
}

/// Client Parse, server Parse and Bind messages, in PgBouncer 1.24's order.
fn prepared_cells(a: &Averages) -> [Cell; 3] {
    [v(a.client_parses), v(a.server_parses), v(a.binds)]
}

pub fn stats_totals(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(&per_database_columns(PREPARED_TOTALS_COLUMNS)).integers_as(Kind::Numeric);
    for (name, t) in database_totals(shared) {
        let totals = t.counters();
        let mut row = per_database_row(&name, &totals);
        row.extend(prepared_cells(&totals));
        rs.row(row);
    }
    rs
}

/// PgBouncer's SHOW STATS_AVERAGES: the averages columns of SHOW STATS under their own names.
pub fn stats_averages(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(&per_database_columns(PREPARED_AVERAGES_COLUMNS)).integers_as(Kind::Numeric);
    for (name, _, a) in shared.stats_window.lock().averages(&database_totals(shared)) {
        let mut row = per_database_row(&name, &a);
        row.extend(prepared_cells(&a));
        rs.row(row);
    }
    rs
}

/// PgBouncer's SHOW TOTALS: SHOW STATS summed over every database, one `name | value` row each.
pub fn totals(shared: &Shared) -> ResultSet {
    let per_db = shared.stats_window.lock().averages(&database_totals(shared));
    let mut t = Totals::default();
    let mut rates = Averages::default();
    // Per-transaction times are weighted by each database's rate, so the sum is Δtime / Δcount.
    let (mut xact_us, mut query_us, mut wait_us) = (0u128, 0u128, 0u128);
    for (_, now, a) in &per_db {
        t.add(now);
        rates.assignments += a.assignments;
        rates.xacts += a.xacts;
        rates.queries += a.queries;
        rates.received += a.received;
        rates.sent += a.sent;
        rates.client_parses += a.client_parses;
        rates.server_parses += a.server_parses;
        rates.binds += a.binds;
        xact_us += u128::from(a.xact_time_us) * u128::from(a.xacts);
        query_us += u128::from(a.query_time_us) * u128::from(a.queries);
        wait_us += u128::from(a.wait_time_us) * u128::from(a.assignments);
    }
    let weighted = |sum: u128, n: u64| sum.checked_div(u128::from(n)).unwrap_or(0) as u64;
    let mut rs = ResultSet::new(&["name", "value"]).integers_as(Kind::Numeric);
    // PgBouncer's row names: bytes from clients and from servers.
    for (name, value) in [
        ("total_server_assignment_count", t.assignments),
        ("total_xact_count", t.xacts),
        ("total_query_count", t.queries),
        ("total_client_bytes", t.received),
        ("total_server_bytes", t.sent),
        ("total_xact_time", t.xact_time_us),
        ("total_query_time", t.query_time_us),
        ("total_wait_time", t.wait_time_us),
        ("avg_server_assignment_count", rates.assignments),
        ("avg_xact_count", rates.xacts),
        ("avg_query_count", rates.queries),
        ("avg_client_bytes", rates.received),
        ("avg_server_bytes", rates.sent),
        ("avg_xact_time", weighted(xact_us, rates.xacts)),
        ("avg_query_time", weighted(query_us, rates.queries)),
        ("avg_wait_time", weighted(wait_us, rates.assignments)),
    ] {
        rs.row(vec![v(name), v(value)]);
    }
    // PgBouncer 1.24's rows, after 1.23's, as SHOW STATS has them.
    if shared.config.load().pgpilot.console_columns == ConsoleColumns::Extended {
        for (name, value) in [
            ("total_client_parse_count", t.client_parses),
            ("total_server_parse_count", t.server_parses),
            ("total_bind_count", t.binds),
            ("avg_client_parse_count", rates.client_parses),
            ("avg_server_parse_count", rates.server_parses),
            ("avg_bind_count", rates.binds),
        ] {
            rs.row(vec![v(name), v(value)]);
        }
    }
    rs
}

/// PgBouncer's SHOW STATE. pgpilot has no SUSPEND (no online restart by socket hand-over).
pub fn state(shared: &Shared) -> ResultSet {
    let paused = *shared.paused.borrow();
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut rs = ResultSet::new(&["key", "value"]);
    for (key, value) in [("active", !paused), ("paused", paused), ("suspended", false)] {
        rs.row(vec![v(key), v(yes_no(value))]);
    }
    rs
}

/// SHOW CLIENTS' and SHOW SERVERS' columns up to `prepared_statements` are PgBouncer 1.23's.
const PGBOUNCER_CONN_COLUMNS: usize = 20;

const CONN_COLUMNS: [&str; 22] = [
    "type",
    "user",
    "database",
    "replication",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
    "id",
    "pinned",
];

fn split_addr(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']').to_string(), p.parse().unwrap_or(0)),
        None => (addr.to_string(), 0),
    }
}

/// The columns of SHOW CLIENTS and SHOW SERVERS that PgBouncer sends as int4 (`id` and pgpilot's
/// own counters stay int8).
const CONN_INT4_COLUMNS: [&str; 7] =
    ["port", "local_port", "wait", "wait_us", "close_needed", "remote_pid", "prepared_statements"];

pub fn clients(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(&CONN_COLUMNS).typed(Kind::Int4, &CONN_INT4_COLUMNS);
    for c in shared.registry.all() {
        let state = c.state();
        if state == ClientState::Login {
            continue;
        }
        let (host, port) = split_addr(&c.addr);
        let server_id = c.server_id.load(Relaxed);
        let pinned = *c.pinned.lock();
        let waited_us = c.waited_us();
        rs.row(vec![
            v("C"),
            v(&*c.user.lock()),
            v(&*c.database.lock()),
            v("none"),
            v(match state {
                ClientState::Waiting => "waiting",
                _ => "active",
            }),
            v(host),
            v(port),
            v(c.local.map_or_else(|| "unix".to_string(), |a| a.ip().to_string())),
            v(c.local.map_or(0, |a| a.port())),
            v(format_utc(c.connected_at)),
            v(format_utc_us(c.last_request_us.load(Relaxed))),
            v(waited_us / 1_000_000),
            v(waited_us % 1_000_000),
            v(i32::from(c.close_requested())),
            v(format!("{:#x}", c.id)),
            // Empty when unlinked, as PgBouncer's (never NULL).
            v(if server_id > 0 { format!("{server_id:#x}") } else { String::new() }),
            // PgBouncer's remote_pid is the peer's process, known for Unix-socket clients only;
            // the pid in a client's cancel key is pgpilot's own number, not a process.
            v(0),
            v(c.tls.as_deref().unwrap_or("")),
            v(&*c.application_name.lock()),
            v(c.prepared()),
            v(c.id),
            v(pinned),
        ]);
    }
    rs
}

const SERVER_COLUMNS: [&str; 27] = [
    "type",
    "user",
    "database",
    "replication",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
    "id",
    "role",
    "server_state",
    "lag_bytes",
    "lag_seconds",
    "routed_reads",
    "routed_writes",
];

/// Role, health, lag and routed traffic of the server at `address` of database `db`.
fn backend_cells(db: Option<&Database>, address: &str) -> Vec<Cell> {
    let Some((db, b)) = db.and_then(|d| Some((d, d.backends.iter().find(|b| &*b.address == address)?)))
    else {
        return vec![Cell::NULL; 6];
    };
    let (lag_bytes, lag_ms) = b.lag();
    vec![
        v(b.role().as_str()),
        v(b.state_name(&db.routing.load())),
        v(lag_bytes),
        v(format!("{:.3}", lag_ms as f64 / 1e3)),
        v(b.reads.load(Relaxed)),
        v(b.writes.load(Relaxed)),
    ]
}

/// pgpilot's end of a server connection, as PgBouncer shows it (0.0.0.0 and 0 for a Unix socket).
fn local_ip(target: &crate::pool::server::CancelTarget) -> String {
    target.local.map_or_else(|| "0.0.0.0".to_string(), |a| a.ip().to_string())
}

fn local_port(target: &crate::pool::server::CancelTarget) -> u16 {
    target.local.map_or(0, |a| a.port())
}

pub fn servers(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(&SERVER_COLUMNS).typed(Kind::Int4, &CONN_INT4_COLUMNS);
    let dbs = shared.databases.load();
    for c in shared.registry.all() {
        let Some(target) = c.server.lock().clone() else { continue };
        let (host, port) = split_addr(&target.address);
        let database = c.database.lock().clone();
        let mut row = vec![
            v("S"),
            v(&*c.user.lock()),
            v(&*database),
            v("none"),
            v("active"),
            v(host),
            v(port),
            v(local_ip(&target)),
            v(local_port(&target)),
            v(format_utc(target.connected_at)),
            v(format_utc_us(c.last_request_us.load(Relaxed))),
            v(0),
            v(0),
            v(0),
            v(format!("{:#x}", c.server_id.load(Relaxed))),
            v(format!("{:#x}", c.id)),
            v(target.pid),
            v(target.tls.as_deref().unwrap_or("")),
            v(&*c.application_name.lock()),
            v(target.prepared.load(Relaxed)),
            v(c.server_id.load(Relaxed)),
        ];
        row.extend(backend_cells(dbs.get(&*database).map(|d| &**d), &target.address));
        rs.row(row);
    }
    for db in dbs.values() {
        for set in db.pool_sets() {
            for pool in set.all() {
                let (host, port) = split_addr(&pool.id.server);
                for idle in pool.idle_servers() {
                    let connected = SystemTime::now() - idle.created.elapsed();
                    let used = SystemTime::now() - idle.last_used.elapsed();
                    let mut row = vec![
                        v("S"),
                        v(&pool.id.user),
                        v(&pool.id.database),
                        v("none"),
                        // As SHOW POOLS counts it: sv_used once server_check_delay has passed.
                        v(if idle.needs_check { "used" } else { "idle" }),
                        v(&host),
                        v(port),
                        v(local_ip(&idle.target)),
                        v(local_port(&idle.target)),
                        v(format_utc(connected)),
                        v(format_utc(used)),
                        v(0),
                        v(0),
                        v(0),
                        v(format!("{:#x}", idle.id)),
                        v(""),
                        v(idle.target.pid),
                        v(idle.target.tls.as_deref().unwrap_or("")),
                        v(""),
                        v(idle.target.prepared.load(Relaxed)),
                        v(idle.id),
                    ];
                    row.extend(backend_cells(Some(db), &pool.id.server));
                    rs.row(row);
                }
            }
        }
    }
    rs
}

/// One row per server of every database, whether or not it has connections: role, health, lag.
pub fn replicas(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(&[
        "database",
        "server",
        "role",
        "configured_primary",
        "server_state",
        "lag_bytes",
        "lag_seconds",
        "routed_reads",
        "routed_writes",
        "outstanding",
        "weight",
        "tags",
        "last_error",
    ]);
    for (name, db) in &shared.databases_by_name() {
        let routing = db.routing.load();
        for b in &db.backends {
            let (lag_bytes, lag_ms) = b.lag();
            rs.row(vec![
                v(name),
                v(&b.address),
                v(b.role().as_str()),
                v(b.configured_primary),
                v(b.state_name(&routing)),
                v(lag_bytes),
                v(format!("{:.3}", lag_ms as f64 / 1e3)),
                v(b.reads.load(Relaxed)),
                v(b.writes.load(Relaxed)),
                v(b.outstanding.load(Relaxed)),
                v(b.weight()),
                v(b.tags().join(",")),
                v(b.last_error.lock().clone()),
            ]);
        }
    }
    rs
}

/// SHOW DATABASES: PgBouncer 1.23's fourteen columns in its order, then pgpilot's own (with
/// `console_columns = "pgbouncer"`, the fourteen alone).
const DATABASE_COLUMNS: [&str; 18] = [
    "name",
    "host",
    "port",
    "database",
    "force_user",
    "pool_size",
    "min_pool_size",
    "reserve_pool",
    "server_lifetime",
    "pool_mode",
    "max_connections",
    "current_connections",
    "paused",
    "disabled",
    // PgBouncer 1.24's names for these; exporters read one name or the other.
    "reserve_pool_size",
    "max_client_connections",
    "current_client_connections",
    "replicas",
];

const PGBOUNCER_DATABASE_COLUMNS: usize = 14;

pub fn databases(shared: &Shared) -> ResultSet {
    // pgpilot's own count is int8, as its other columns (PgBouncer's counts are int4).
    let mut rs = ResultSet::new(&DATABASE_COLUMNS).integers_as(Kind::Int4).typed(Kind::Int8, &["replicas"]);
    let config = shared.config.load();
    let listen_port = shared.listen_port.load(Relaxed);
    let mut console = vec![v(CONSOLE), v(None::<&str>), v(listen_port), v(CONSOLE), v(CONSOLE), v(2)];
    console.extend((0..3).map(|_| v(0)));
    console.push(v("statement"));
    console.extend((0..6).map(|_| v(0)));
    console.extend([v(console_clients(shared)), v(0)]);
    rs.row(console);
    for (name, db) in &shared.databases_by_name() {
        let clients: usize = db.pool_sets().iter().map(|s| s.clients.load(Relaxed)).sum();
        let db_config = db.config();
        let reserve = db_config.reserve_pool_size.unwrap_or(config.pgpilot.reserve_pool_size);
        rs.row(vec![
            v(name),
            v(&db.primary.host),
            v(db.primary.port),
            v(&db.primary.dbname),
            v(db.forced_user.clone()),
            v(config.pool_size(&db_config)),
            v(db_config.min_pool_size.unwrap_or(config.pgpilot.min_pool_size)),
            v(reserve),
            v(config.pgpilot.server_lifetime.get().as_secs()),
            // As PgBouncer: empty unless the database sets its own (SHOW POOLS has the mode used).
            v(db_config.pool_mode.map(|m| m.as_str())),
            v(db_config.max_db_connections.unwrap_or(config.pgpilot.max_db_connections)),
            v(db.limit.used()),
            v(i32::from(*db.paused.borrow())),
            v(i32::from(db.is_disabled())),
            v(reserve),
            v(config.pgpilot.max_client_conn),
            v(clients),
            v(db.replicas.len()),
        ]);
    }
    rs
}

pub fn config(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(&["key", "value", "default", "changeable"]);
    let config = shared.config.load();
    let defaults = match config.pgbouncer_defaults {
        true => crate::config::pgbouncer_ini::pgbouncer_defaults(),
        false => crate::config::Config::default(),
    };
    // The [pgpilot] settings, then the [tls] ones, which PgBouncer lists among the rest.
    config_rows(&mut rs, serde_json::to_value(&config.pgpilot), serde_json::to_value(defaults.pgpilot));
    config_rows(&mut rs, serde_json::to_value(&config.tls), serde_json::to_value(defaults.tls));
    // PgBouncer's two settings for what pgpilot's `listen` says in one; scripts read the port.
    let hosts: Vec<String> = config.pgpilot.listen.0.iter().map(|a| split_addr(a).0).collect();
    let port = shared.listen_port.load(Relaxed);
    rs.row(vec![v("listen_addr"), v(hosts.join(",")), v(""), v("no")]);
    rs.row(vec![v("listen_port"), v(port), v("6432"), v("no")]);
    rs
}

fn config_rows(
    rs: &mut ResultSet,
    current: serde_json::Result<serde_json::Value>,
    defaults: serde_json::Result<serde_json::Value>,
) {
    let (Ok(serde_json::Value::Object(cur)), Ok(serde_json::Value::Object(def))) = (current, defaults) else {
        return;
    };
    for (k, value) in &cur {
        // What SET takes; the rest changes with the file and RELOAD, or at restart.
        let changeable = crate::config::pgbouncer_ini::settable_at_runtime(k);
        // PgBouncer prints the socket's mode as a decimal number (0777 is 511).
        let show = |x: &serde_json::Value| match (k.as_str(), x.as_str()) {
            ("unix_socket_mode", Some(octal)) => {
                u32::from_str_radix(octal, 8).map_or_else(|_| octal.to_string(), |m| m.to_string())
            }
            _ => config_value(x),
        };
        rs.row(vec![
            v(k),
            v(show(value)),
            v(def.get(k).map(show).unwrap_or_default()),
            v(if changeable { "yes" } else { "no" }),
        ]);
    }
}

/// As PgBouncer prints settings: durations in seconds, switches as 0 and 1, so exporters and
/// scripts that read numbers keep working.
fn config_value(x: &serde_json::Value) -> String {
    match x {
        serde_json::Value::Bool(b) => u8::from(*b).to_string(),
        serde_json::Value::String(s) => duration_as_seconds(s).unwrap_or_else(|| s.clone()),
        serde_json::Value::Null => String::new(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// A duration as the config shows it ("2m", "250ms") in seconds ("120", "0.25"); None for any
/// other text.
fn duration_as_seconds(text: &str) -> Option<String> {
    if !text.starts_with(|c: char| c.is_ascii_digit()) || !text.ends_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let d = humantime::parse_duration(text).ok()?;
    Some(if d.subsec_nanos() == 0 { d.as_secs().to_string() } else { format!("{}", d.as_secs_f64()) })
}

pub fn version() -> ResultSet {
    let mut rs = ResultSet::new(&["version"]);
    // Tools read the PgBouncer version to know which columns to expect: pgpilot's follow 1.23.
    rs.row(vec![v(format!("PgBouncer 1.23.1 compatible (pgpilot {})", env!("CARGO_PKG_VERSION")))]);
    rs
}

/// Every user pgpilot knows: from the auth file, from `[users]`, and with a pool now.
pub fn users(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(&["name", "pool_mode", "max_user_connections", "current_connections"])
        .integers_as(Kind::Int4);
    let config = shared.config.load();
    let mut servers = std::collections::BTreeMap::<String, usize>::new();
    for (_, db) in &shared.databases_by_name() {
        for pool in db.pool_sets().iter().flat_map(|set| set.all()) {
            *servers.entry(pool.id.user.to_string()).or_default() += pool.counts().total;
        }
    }
    for name in known_users(shared) {
        let u = config.users.get(&name);
        rs.row(vec![
            v(&name),
            v(u.and_then(|u| u.pool_mode).map(|m| m.as_str())),
            v(u.and_then(|u| u.max_user_connections).unwrap_or(0)),
            v(servers.get(&name).copied().unwrap_or(0)),
        ]);
    }
    rs
}

fn known_users(shared: &Shared) -> std::collections::BTreeSet<String> {
    let mut names: std::collections::BTreeSet<String> = shared.config.load().users.keys().cloned().collect();
    names.extend(shared.secrets.userlist.load().names().map(str::to_string));
    for (_, db) in &shared.databases_by_name() {
        for set in db.pool_sets() {
            names.extend(set.all().map(|p| p.id.user.to_string()));
        }
    }
    names
}

pub fn lists(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(&["list", "items"]).integers_as(Kind::Int4);
    let dbs = shared.databases.load();
    // Counted as SHOW DATABASES and SHOW POOLS list them: the console's own row included, and a
    // split database's primary and replica pools as one (db, user) pool.
    let pools = 1 + dbs.values().map(|d| d.pool_sets().len()).sum::<usize>();
    let clients = shared.registry.all();
    // As in PgBouncer, whose free_* lists are its allocator's cached, unused objects: used_servers
    // is every server connection open or opening, idle ones included; pgpilot caches none.
    let mut used = 0usize;
    for db in dbs.values() {
        for set in db.pool_sets() {
            used += set.all().map(|p| p.counts().total).sum::<usize>();
        }
    }
    let free = 0;
    let active = clients.iter().filter(|c| c.state() == ClientState::Active).count();
    let waiting = clients.iter().filter(|c| c.state() == ClientState::Waiting).count();
    let mut rows = vec![
        ("databases", dbs.len() + 1),
        ("users", known_users(shared).len()),
        // PgBouncer 1.23's peering, which pgpilot has no use for (it shares no cancel keys).
        ("peers", 0),
        ("pools", pools),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", clients.len()),
        ("login_clients", clients.iter().filter(|c| c.state() == ClientState::Login).count()),
        ("free_servers", free),
        ("used_servers", used),
        // pgpilot resolves names with the system's resolver and keeps no cache of its own.
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ];
    if shared.config.load().pgpilot.console_columns == ConsoleColumns::Extended {
        rows.extend([("active_clients", active), ("waiting_clients", waiting)]);
    }
    for (k, n) in rows {
        rs.row(vec![v(k), v(n)]);
    }
    rs
}

/// PgBouncer's SHOW MEM, DNS_HOSTS and DNS_ZONES, with their columns and no rows: pgpilot has no
/// slab caches and no DNS cache of its own, and monitoring tools that ask must not fail.
pub fn empty_pgbouncer_set(what: &str) -> ResultSet {
    match what {
        "MEM" => ResultSet::new(&["name", "size", "used", "free", "memtotal"])
            .typed(Kind::Int4, &["size", "used", "free", "memtotal"]),
        "DNS_HOSTS" => ResultSet::new(&["hostname", "ttl", "addrs"]).typed(Kind::Int8, &["ttl"]),
        _ => ResultSet::new(&["zonename", "serial", "count"])
            .typed(Kind::Int8, &["serial"])
            .typed(Kind::Int4, &["count"]),
    }
}

pub fn help() -> ResultSet {
    let mut rs = ResultSet::new(&["command"]);
    for c in [
        "SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|REPLICAS|USERS|VERSION|STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS|STATE|LISTS|MEM|DNS_HOSTS|DNS_ZONES|JOBS|CACHE",
        "INVALIDATE CACHE TABLE <name> | TAG <tag> | ALL [IN <db>]",
        "PAUSE [<db>]",
        "RESUME [<db>]",
        "DISABLE <db>",
        "ENABLE <db>",
        "RECONNECT [<db>]",
        "WAIT_CLOSE [<db>]",
        "KILL <db>",
        "KILL_CLIENT <id>",
        "SET <setting> = <value>",
        "RELOAD",
        "SHUTDOWN [WAIT_FOR_SERVERS]",
    ] {
        rs.row(vec![v(c)]);
    }
    rs
}
