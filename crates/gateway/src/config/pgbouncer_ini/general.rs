//! The `[pgbouncer]` section: every setting PgBouncer knows, mapped to pgpilot's `[pgpilot]` and
//! `[tls]` sections or explained away.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use super::ini::Entry;
use super::values::{boolean, count, int, list, seconds};
use super::{Builder, Outcome};
use crate::config::{AuthType, General, OneOrMany, PoolMode, Secs};

/// How pgpilot's auth_query differs from PgBouncer's.
pub const AUTH_QUERY_CACHE: &str = "pgpilot caches auth_query's answers for auth_query_cache_ttl (30 s; \"no such user\" for \
     auth_query_negative_ttl, 5 s) where PgBouncer queries on every login: a changed or revoked password is seen within that time";

/// PgBouncer's `<empty>` check query sends an empty query; `;` is one PostgreSQL answers the same way.
pub const EMPTY_QUERY: &str = ";";

type CountField = fn(&mut General) -> &mut usize;
type SecsField = fn(&mut General) -> &mut Secs;
type BoolField = fn(&mut General) -> &mut bool;

/// Settings with the same name and meaning in `[pgpilot]`.
const COUNTS: &[(&str, CountField)] = &[
    ("max_client_conn", |g| &mut g.max_client_conn),
    ("default_pool_size", |g| &mut g.default_pool_size),
    ("min_pool_size", |g| &mut g.min_pool_size),
    ("reserve_pool_size", |g| &mut g.reserve_pool_size),
    ("max_db_connections", |g| &mut g.max_db_connections),
    ("max_user_connections", |g| &mut g.max_user_connections),
    ("max_prepared_statements", |g| &mut g.max_prepared_statements),
];

const DURATIONS: &[(&str, SecsField)] = &[
    ("server_idle_timeout", |g| &mut g.server_idle_timeout),
    ("query_wait_timeout", |g| &mut g.query_wait_timeout),
    ("query_timeout", |g| &mut g.query_timeout),
    ("client_idle_timeout", |g| &mut g.client_idle_timeout),
    ("client_login_timeout", |g| &mut g.client_login_timeout),
    ("idle_transaction_timeout", |g| &mut g.idle_transaction_timeout),
    ("server_check_delay", |g| &mut g.server_check_delay),
    ("autodb_idle_timeout", |g| &mut g.autodb_idle_timeout),
];

const BOOLS: &[(&str, BoolField)] = &[
    ("server_reset_query_always", |g| &mut g.server_reset_query_always),
    ("log_connections", |g| &mut g.log_connections),
    ("log_disconnections", |g| &mut g.log_disconnections),
    ("log_pooler_errors", |g| &mut g.log_pooler_errors),
    ("tcp_keepalive", |g| &mut g.tcp_keepalive),
    ("application_name_add_host", |g| &mut g.application_name_add_host),
];

/// Why pgpilot does not honour a setting, and whether that is for now or by design.
#[derive(Clone, Copy)]
enum Reason {
    /// pgpilot has no such setting yet; the behaviour is PgBouncer's default's or pgpilot's own.
    NotYet(&'static str),
    /// pgpilot works differently; the setting has no use.
    Never(&'static str),
}

/// Settings pgpilot does not honour, with the values that make that harmless (PgBouncer's
/// defaults, or values meaning what pgpilot does anyway).
const IGNORED: &[(&str, &[&str], Reason)] = &[
    ("logfile", &[""], Reason::Never("pgpilot logs to stderr (journald under systemd, `kubectl logs` in Kubernetes); redirect stderr if a file is needed")),
    ("pidfile", &[""], Reason::Never("pgpilot does not daemonize; systemd or the container runtime tracks the process")),
    ("user", &[""], Reason::Never("pgpilot does not switch users; start it as an unprivileged user (systemd User=/DynamicUser=, a container's USER)")),
    ("syslog", &["0"], Reason::Never("pgpilot logs to stderr; journald forwards to syslog")),
    ("syslog_ident", &["pgbouncer"], Reason::Never("pgpilot logs to stderr; journald names it after the unit")),
    ("syslog_facility", &["daemon"], Reason::Never("pgpilot logs to stderr; journald forwards to syslog")),
    ("verbose", &["0"], Reason::Never("the log level comes from the PGPILOT_LOG environment variable (e.g. PGPILOT_LOG=debug)")),
    ("log_stats", &["1", "0"], Reason::Never("pgpilot publishes statistics on /metrics and SHOW STATS rather than in the log")),
    ("stats_period", &["15"], Reason::NotYet("the averages in SHOW STATS cover a fixed 15-second window")),
    ("unix_socket_group", &[""], Reason::NotYet("the Unix socket belongs to the process's group")),
    ("listen_backlog", &["128"], Reason::Never("pgpilot uses a listen backlog of 4096 (the kernel caps it at net.core.somaxconn)")),
    ("pkt_buf", &["4096"], Reason::Never("buffer sizing of PgBouncer's event loop; pgpilot sizes its buffers itself")),
    ("sbuf_loopcnt", &["5"], Reason::Never("fairness tuning of PgBouncer's single thread; pgpilot's workers are scheduled by tokio")),
    ("tcp_defer_accept", &["0", "1"], Reason::Never("pgpilot does not set TCP_DEFER_ACCEPT")),
    ("tcp_socket_buffer", &["0"], Reason::Never("the kernel's socket buffer sizes apply")),
    ("tcp_keepcnt", &["0"], Reason::NotYet("keepalive uses the operating system's count (net.ipv4.tcp_keepalive_probes)")),
    ("tcp_keepidle", &["0"], Reason::NotYet("keepalive uses the operating system's idle time (net.ipv4.tcp_keepalive_time)")),
    ("tcp_keepintvl", &["0"], Reason::NotYet("keepalive uses the operating system's interval (net.ipv4.tcp_keepalive_intvl)")),
    ("tcp_user_timeout", &["0"], Reason::NotYet("TCP_USER_TIMEOUT is not set; the operating system's default applies")),
    ("so_reuseport", &["0"], Reason::NotYet("one pgpilot process uses every core (workers), so there is no need for several processes on one port; SO_REUSEPORT for overlapping restarts is not supported yet")),
    ("peer_id", &["0"], Reason::NotYet("peering (forwarding cancel requests between instances behind one address) is not supported; see docs/operations.md")),
    ("dns_max_ttl", &["15"], Reason::Never("pgpilot resolves server host names through the system resolver each time it opens a server connection")),
    ("dns_nxdomain_ttl", &["15"], Reason::Never("pgpilot resolves server host names through the system resolver each time it opens a server connection")),
    ("dns_zone_check_period", &["0"], Reason::Never("pgpilot resolves server host names through the system resolver each time it opens a server connection")),
    ("resolv_conf", &[""], Reason::Never("the system resolver's /etc/resolv.conf applies")),
    ("pool_idle_timeout", &["0"], Reason::NotYet("pgpilot keeps a pool's (empty) bookkeeping until the database is removed or reloaded")),
    ("server_round_robin", &["0"], Reason::NotYet("pgpilot chooses among idle server connections its own way; with one server per database this makes no difference")),
    ("server_fast_close", &["0"], Reason::NotYet("session-mode servers marked for closing (RECONNECT, RELOAD) are closed when their client leaves")),
    ("disable_pqexec", &["0"], Reason::NotYet("pgpilot always accepts the simple query protocol")),
    ("conffile", &[], Reason::Never("pgpilot reloads the file it was started with")),
    ("service_name", &[], Reason::Never("a Windows service name")),
    ("job_name", &[], Reason::Never("a Windows service name")),
    ("suspend_timeout", &["10"], Reason::Never("SUSPEND and online restart (-R) are not supported; docs/operations.md shows restarts without dropped connections")),
    ("cancel_wait_timeout", &["10"], Reason::NotYet("cancel requests are forwarded at once or dropped")),
    ("query_wait_notify", &["0"], Reason::NotYet("waiting clients get no notice")),
    ("login_notify_message", &[""], Reason::NotYet("pgpilot sends no welcome notice")),
    ("scram_iterations", &["4096"], Reason::NotYet("SCRAM secrets pgpilot computes from plain-text auth_file passwords use 4096 iterations")),
    ("auth_hba_file", &[""], Reason::NotYet("pgpilot has no HBA rules; every client uses auth_type (PgBouncer reads the file only with auth_type = hba, whose note says what that loses)")),
    ("auth_ident_file", &[""], Reason::NotYet("pgpilot has no HBA rules or ident maps")),
    ("auth_ldap_options", &[""], Reason::NotYet("LDAP authentication is not supported")),
    ("max_db_client_connections", &["0"], Reason::NotYet("pgpilot has no per-database client limit; max_client_conn applies")),
    ("max_user_client_connections", &["0"], Reason::NotYet("pgpilot has no per-user client limit; max_client_conn applies")),
    ("transaction_timeout", &["0"], Reason::NotYet("pgpilot has no transaction_timeout; idle_transaction_timeout and query_timeout apply, or PostgreSQL's own transaction_timeout (17+)")),
    ("client_tls_protocols", &["secure", "tlsv1.2,tlsv1.3"], Reason::Never("pgpilot (rustls) speaks TLS 1.2 and 1.3 only, PgBouncer's \"secure\"")),
    ("client_tls_ciphers", &["default", "secure", "fast", "normal"], Reason::Never("pgpilot (rustls) offers its own short list of modern cipher suites")),
    ("client_tls13_ciphers", &[""], Reason::Never("pgpilot (rustls) offers its own short list of modern cipher suites")),
    ("client_tls_ecdhcurve", &["auto"], Reason::Never("pgpilot (rustls) chooses the key exchange groups (X25519, P-256, P-384)")),
    ("client_tls_dheparams", &["auto", "none"], Reason::Never("pgpilot (rustls) never uses finite-field Diffie-Hellman")),
    ("server_tls_protocols", &["secure", "tlsv1.2,tlsv1.3"], Reason::Never("pgpilot (rustls) speaks TLS 1.2 and 1.3 only, PgBouncer's \"secure\"")),
    ("server_tls_ciphers", &["default", "secure", "fast", "normal"], Reason::Never("pgpilot (rustls) offers its own short list of modern cipher suites")),
    ("server_tls13_ciphers", &[""], Reason::Never("pgpilot (rustls) offers its own short list of modern cipher suites")),
];

/// Settings that lose a protection PgBouncer gave when they are not honoured. (auth_hba_file is
/// not among them: PgBouncer reads it only under auth_type = hba, which is marked itself.)
const WEAKENING_WHEN_SET: &[&str] = &["disable_pqexec", "client_tls_protocols"];

/// Every `[pgbouncer]` setting PgBouncer knows (its doc/config.md, current release, and older ones).
#[cfg(test)]
pub fn known_settings() -> impl Iterator<Item = &'static str> {
    COUNTS
        .iter()
        .map(|(k, _)| *k)
        .chain(DURATIONS.iter().map(|(k, _)| *k))
        .chain(BOOLS.iter().map(|(k, _)| *k))
        .chain(IGNORED.iter().map(|(k, _, _)| *k))
        .chain(SPECIAL.iter().copied())
}

/// Settings with a conversion of their own in [`special`].
const SPECIAL: &[&str] = &[
    "listen_addr",
    "listen_port",
    "unix_socket_dir",
    "unix_socket_mode",
    "pool_mode",
    "auth_type",
    "auth_file",
    "auth_user",
    "auth_query",
    "auth_dbname",
    "admin_users",
    "stats_users",
    "server_lifetime",
    "server_connect_timeout",
    "server_login_retry",
    "reserve_pool_timeout",
    "server_reset_query",
    "server_check_query",
    "max_packet_size",
    "track_extra_parameters",
    "ignore_startup_parameters",
    "client_tls_sslmode",
    "client_tls_cert_file",
    "client_tls_key_file",
    "client_tls_ca_file",
    "server_tls_sslmode",
    "server_tls_ca_file",
    "server_tls_cert_file",
    "server_tls_key_file",
];

pub fn apply(b: &mut Builder, e: &Entry) -> Result<(), String> {
    let key = e.key.to_ascii_lowercase();
    let setting = format!("[pgbouncer] {key}");
    let bad = |err: String| format!("{}: {key}: {err}", e.origin);
    let value = e.value.as_str();
    if let Some((_, field)) = COUNTS.iter().find(|(k, _)| *k == key) {
        *field(&mut b.config.pgpilot) = count(value).map_err(bad)?;
    } else if let Some((_, field)) = DURATIONS.iter().find(|(k, _)| *k == key) {
        *field(&mut b.config.pgpilot) = seconds(value).map_err(bad)?;
    } else if let Some((_, field)) = BOOLS.iter().find(|(k, _)| *k == key) {
        *field(&mut b.config.pgpilot) = boolean(value).map_err(bad)?;
    } else if let Some((_, harmless, reason)) = IGNORED.iter().find(|(k, _, _)| *k == key) {
        ignored(b, setting, e, harmless, *reason);
        return Ok(());
    } else if SPECIAL.contains(&key.as_str()) {
        return special(b, &key, setting, e).map_err(bad);
    } else {
        return Err(format!("{}: unknown setting {key} in [pgbouncer] (PgBouncer refuses it too)", e.origin));
    }
    let outcome = match timeout_told_otherwise(&key) {
        Some(why) if seconds(value).is_ok_and(|s| !s.get().is_zero()) => Outcome::ChangedMeaning(why.into()),
        _ => Outcome::CarriedOver,
    };
    b.note(setting, Some(&e.origin), outcome, &["pgpilot", &key]);
    Ok(())
}

/// Timeouts whose client sees another outcome or SQLSTATE than PgBouncer's (applications may
/// match on them).
fn timeout_told_otherwise(key: &str) -> Option<&'static str> {
    Some(match key {
        "query_timeout" => {
            "the statement is cancelled (57014) and the client stays connected; PgBouncer closes the \
             client with 08P01 \"query timeout\""
        }
        "client_idle_timeout" => {
            "the client is closed with FATAL 57P05 (PostgreSQL's idle_session_timeout code), not 08P01"
        }
        "idle_transaction_timeout" => {
            "the client is closed with FATAL 25P03 (PostgreSQL's idle_in_transaction_session_timeout \
             code), not 08P01"
        }
        _ => return None,
    })
}

/// Whether the admin console's SET changes `key` (SHOW CONFIG's changeable column).
pub fn settable_at_runtime(key: &str) -> bool {
    COUNTS.iter().any(|(k, _)| *k == key)
        || DURATIONS.iter().any(|(k, _)| *k == key)
        || BOOLS.iter().any(|(k, _)| *k == key)
        || ZERO_MEANS_SOMETHING.contains(&key)
        || matches!(key, "pool_mode" | "server_reset_query" | "server_check_query")
}

/// Timeouts where PgBouncer gives 0 a meaning of its own (see `zero_means_something`).
const ZERO_MEANS_SOMETHING: &[&str] =
    &["server_lifetime", "server_connect_timeout", "server_login_retry", "reserve_pool_timeout"];

/// The admin console's `SET key = value`: changes one setting of the running configuration, read
/// as pgbouncer.ini reads it. Settings pgpilot takes only at start, or that PgBouncer does not let
/// SET change, are refused; a RELOAD reads the file again, as in PgBouncer.
pub fn set_at_runtime(general: &mut General, key: &str, value: &str) -> Result<(), String> {
    let key = key.to_ascii_lowercase();
    if let Some((_, field)) = COUNTS.iter().find(|(k, _)| *k == key) {
        *field(general) = count(value)?;
    } else if let Some((_, field)) = DURATIONS.iter().find(|(k, _)| *k == key) {
        *field(general) = seconds(value)?;
    } else if let Some((_, field)) = BOOLS.iter().find(|(k, _)| *k == key) {
        *field(general) = boolean(value)?;
    } else if key == "pool_mode" {
        // A mode that would change meaning is refused here: the console has no way to warn.
        general.pool_mode = match pool_mode(value)? {
            (mode, Outcome::CarriedOver) => mode,
            (_, _) => {
                return Err(format!("pool_mode {value:?} is not supported: use session or transaction"))
            }
        };
    } else if key == "server_reset_query" {
        general.server_reset_query = value.to_string();
    } else if key == "server_check_query" {
        general.server_check_query = value.to_string();
    } else if ZERO_MEANS_SOMETHING.contains(&key.as_str()) {
        set_zero_meaning_timeout(general, &key, seconds(value)?)?;
    } else if RESTART_ONLY.contains(&key.as_str()) {
        return Err(format!("{key} cannot be changed with SET: it takes effect only when pgpilot restarts"));
    } else if is_setting(general, &key) {
        return Err(format!("{key} cannot be changed with SET: change the file and RELOAD"));
    } else {
        return Err(format!("unrecognized configuration parameter \"{key}\""));
    }
    Ok(())
}

/// As the file's values are read (`zero_means_something`): PgBouncer's 0 where pgpilot has one.
fn set_zero_meaning_timeout(g: &mut General, key: &str, secs: Secs) -> Result<(), String> {
    let zero = secs.get().is_zero();
    match key {
        // PgBouncer: each server connection is used once.
        "server_lifetime" => g.server_lifetime = if zero { Secs::from_millis(1) } else { secs },
        // 0: pgpilot's own 15 seconds, as from the file.
        "server_connect_timeout" => g.server_connect_timeout = secs,
        "server_login_retry" => g.server_login_retry = secs,
        _ if zero => {
            return Err(
                "reserve_pool_timeout = 0 turns reserve pools off in PgBouncer: set reserve_pool_size = 0 \
                        in the file and RELOAD"
                    .into(),
            )
        }
        _ => g.reserve_pool_timeout = secs,
    }
    Ok(())
}

/// Whether `key` names one of the [pgpilot] settings.
fn is_setting(general: &General, key: &str) -> bool {
    serde_json::to_value(general).is_ok_and(|v| v.get(key).is_some())
}

/// Settings read only at start (as PgBouncer's listen_addr, listen_port, unix_socket_dir).
const RESTART_ONLY: &[&str] =
    &["listen", "listen_addr", "listen_port", "http", "workers", "unix_socket_dir", "unix_socket_mode"];

fn ignored(b: &mut Builder, setting: String, e: &Entry, harmless: &[&str], reason: Reason) {
    let value = e.value.trim();
    let is_harmless = harmless.iter().any(|h| h.eq_ignore_ascii_case(value));
    let outcome = if is_harmless {
        Outcome::CarriedOver
    } else {
        Outcome::NotHonoured(match reason {
            Reason::NotYet(why) => format!("not supported yet: {why}"),
            Reason::Never(why) => why.to_string(),
        })
    };
    let weakens = !is_harmless && WEAKENING_WHEN_SET.contains(&e.key.to_ascii_lowercase().as_str());
    b.note(setting, Some(&e.origin), outcome, &[]);
    if weakens {
        b.weakens();
    }
}

fn special(b: &mut Builder, key: &str, setting: String, e: &Entry) -> Result<(), String> {
    let value = e.value.as_str();
    let origin = Some(&e.origin);
    match key {
        "listen_addr" => {
            b.listen_addr = Some((value.to_string(), e.origin.clone()));
            return Ok(()); // noted with listen_port once both are known
        }
        "listen_port" => {
            b.listen_port = u16::try_from(int(value)?).map_err(|_| format!("{value:?} is not a port"))?;
        }
        "unix_socket_dir" => return unix_socket_dir(b, setting, e),
        "unix_socket_mode" => {
            crate::config::general::parse_socket_mode(value)?;
            b.config.pgpilot.unix_socket_mode = value.trim().to_string();
        }
        "pool_mode" => {
            let (mode, outcome) = pool_mode(value)?;
            b.config.pgpilot.pool_mode = mode;
            b.note(setting, origin, outcome, &["pgpilot", "pool_mode"]);
            return Ok(());
        }
        "auth_type" => return auth_type(b, setting, e),
        "auth_file" => b.config.pgpilot.auth_file = nonempty(value).map(|v| b.path(v)),
        "auth_user" => {
            b.config.pgpilot.auth_user = nonempty(value).map(str::to_string);
            let outcome = if value.trim().is_empty() {
                Outcome::CarriedOver
            } else {
                Outcome::ChangedMeaning(AUTH_QUERY_CACHE.into())
            };
            b.note(setting, origin, outcome, &["pgpilot", "auth_user"]);
            return Ok(());
        }
        "auth_query" => b.config.pgpilot.auth_query = nonempty(value).map(str::to_string),
        "auth_dbname" => b.config.pgpilot.auth_dbname = nonempty(value).map(str::to_string),
        "admin_users" => b.config.pgpilot.admin_users = list(value),
        "stats_users" => b.config.pgpilot.stats_users = list(value),
        "server_reset_query" => b.config.pgpilot.server_reset_query = value.to_string(),
        "server_check_query" => return check_query(b, setting, e),
        "max_packet_size" => return max_packet_size(b, setting, e),
        "track_extra_parameters" | "ignore_startup_parameters" => {
            let why = "pgpilot accepts every startup parameter and keeps each client's parameters \
                       (startup packet, options, SET) in step on whichever server it gets, so no list is needed";
            let outcome = if value.trim().is_empty() {
                Outcome::CarriedOver
            } else {
                Outcome::ChangedMeaning(why.into())
            };
            b.note(setting, origin, outcome, &[]);
            return Ok(());
        }
        "server_lifetime" | "server_connect_timeout" | "server_login_retry" | "reserve_pool_timeout" => {
            return zero_means_something(b, key, setting, e);
        }
        _ => return super::tls::apply(b, key, setting, e),
    }
    let target = match key {
        "listen_port" => "listen",
        other => other,
    };
    b.note(setting, origin, Outcome::CarriedOver, &["pgpilot", target]);
    Ok(())
}

pub fn pool_mode(value: &str) -> Result<(PoolMode, Outcome), String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "session" => Ok((PoolMode::Session, Outcome::CarriedOver)),
        "transaction" => Ok((PoolMode::Transaction, Outcome::CarriedOver)),
        "statement" => Ok((
            PoolMode::Transaction,
            Outcome::ChangedMeaning(
                "statement pooling becomes transaction pooling: pgpilot lets multi-statement transactions \
                 through instead of refusing them"
                    .into(),
            ),
        )),
        other => Err(format!("unknown pool mode {other:?} (session, transaction or statement)")),
    }
}

fn auth_type(b: &mut Builder, setting: String, e: &Entry) -> Result<(), String> {
    let value = e.value.trim().to_ascii_lowercase();
    let (auth, outcome, weakens) = match value.as_str() {
        "trust" => (
            AuthType::Trust,
            Outcome::ChangedMeaning(
                "PgBouncer's trust still requires the user name to be listed in auth_file; pgpilot's trust accepts any user name".into(),
            ),
            true,
        ),
        "any" => (
            AuthType::Trust,
            Outcome::ChangedMeaning(
                "any becomes trust: pgpilot keeps the client's user name (a database with user= still logs in as that user), \
                 and only admin_users may use the admin console"
                    .into(),
            ),
            false,
        ),
        "plain" => (AuthType::Plain, Outcome::CarriedOver, false),
        "md5" => (AuthType::Md5, Outcome::CarriedOver, false),
        "scram-sha-256" => (AuthType::ScramSha256, Outcome::CarriedOver, false),
        "hba" => (
            AuthType::Md5,
            Outcome::NotHonoured(
                "pgpilot has no HBA rules: every client must pass md5 (or SCRAM, for users with a SCRAM secret in auth_file); \
                 address- and TLS-based rules (hostssl, reject, peer, trust lines) are not applied"
                    .into(),
            ),
            true,
        ),
        "cert" | "ldap" | "pam" => (
            AuthType::Md5,
            Outcome::NotHonoured(format!(
                "{value} authentication is not supported: clients must pass md5 (or SCRAM) with a password from auth_file"
            )),
            false,
        ),
        other => return Err(format!("unknown auth_type {other:?}")),
    };
    b.config.pgpilot.auth_type = Some(auth);
    b.note(setting, Some(&e.origin), outcome, &["pgpilot", "auth_type"]);
    if weakens {
        b.weakens();
    }
    Ok(())
}

fn unix_socket_dir(b: &mut Builder, setting: String, e: &Entry) -> Result<(), String> {
    let value = e.value.trim();
    b.unix_socket_dir = value.to_string();
    let outcome = if value.starts_with('@') {
        b.config.pgpilot.unix_socket_dir = None;
        Outcome::NotHonoured(
            "abstract-namespace Unix sockets are not supported; pgpilot listens on TCP only".into(),
        )
    } else {
        b.config.pgpilot.unix_socket_dir = nonempty(value).map(|v| b.path(v));
        Outcome::CarriedOver
    };
    b.note(setting, Some(&e.origin), outcome, &["pgpilot", "unix_socket_dir"]);
    Ok(())
}

fn check_query(b: &mut Builder, setting: String, e: &Entry) -> Result<(), String> {
    let value = e.value.trim();
    let (query, outcome) = if value.eq_ignore_ascii_case("<empty>") {
        (
            EMPTY_QUERY.to_string(),
            Outcome::ChangedMeaning(
                "PgBouncer's <empty> (an empty query) is written as \";\", which PostgreSQL answers the same way".into(),
            ),
        )
    } else {
        (value.to_string(), Outcome::CarriedOver)
    };
    b.config.pgpilot.server_check_query = query;
    b.note(setting, Some(&e.origin), outcome, &["pgpilot", "server_check_query"]);
    Ok(())
}

fn max_packet_size(b: &mut Builder, setting: String, e: &Entry) -> Result<(), String> {
    let size = count(&e.value)?;
    let default = crate::config::General::default().max_message_size;
    b.config.pgpilot.max_message_size = size.clamp(1024, default);
    let why = if size > default {
        "not carried over: PgBouncer passes messages through in pieces, pgpilot holds each client message \
         whole (it reads the SQL), so it keeps its own limit, max_message_size = 256 MiB; raise it only knowing \
         that each message that large takes its size in memory"
    } else if size < 1024 {
        "renamed max_message_size and raised to pgpilot's minimum of 1024 bytes; it limits messages from clients \
         (queries, Bind, COPY data) but not rows coming back from the server"
    } else {
        "renamed max_message_size; it limits messages from clients (queries, Bind, COPY data) but not rows coming \
         back from the server"
    };
    b.note(setting, Some(&e.origin), Outcome::ChangedMeaning(why.into()), &["pgpilot", "max_message_size"]);
    Ok(())
}

/// Timeouts where PgBouncer gives 0 a meaning of its own.
fn zero_means_something(b: &mut Builder, key: &str, setting: String, e: &Entry) -> Result<(), String> {
    let secs = seconds(&e.value)?;
    let zero = secs.get().is_zero();
    let g = &mut b.config.pgpilot;
    let (field, why): (&mut Secs, &str) = match key {
        "server_lifetime" => (
            &mut g.server_lifetime,
            "0 means \"use a server connection once\" in PgBouncer but \"no limit\" in pgpilot: written as 1ms, \
             which closes each server connection when it is released",
        ),
        "server_connect_timeout" => (
            &mut g.server_connect_timeout,
            "0 turns the timeout off in PgBouncer; pgpilot uses 15 seconds instead",
        ),
        "server_login_retry" => (
            &mut g.server_login_retry,
            "0 retries at once in PgBouncer; pgpilot waits 1 second between failed logins",
        ),
        _ => (
            &mut g.reserve_pool_timeout,
            "0 turns reserve pools off in PgBouncer but makes them immediate in pgpilot: written as \
             reserve_pool_size = 0 for every pool instead",
        ),
    };
    *field = if zero && key == "server_lifetime" { Secs::from_millis(1) } else { secs };
    if zero && key == "reserve_pool_timeout" {
        b.reserve_disabled = true;
    }
    let outcome = if zero { Outcome::ChangedMeaning(why.into()) } else { Outcome::CarriedOver };
    b.note(setting, Some(&e.origin), outcome, &["pgpilot", key]);
    Ok(())
}

/// Turns listen_addr + listen_port into pgpilot's `listen` list.
pub fn finish_listen(b: &mut Builder) {
    let port = b.listen_port;
    let Some((addr, origin)) = b.listen_addr.take() else {
        b.config.pgpilot.listen = OneOrMany(vec![format!("127.0.0.1:{port}")]);
        let why =
            "PgBouncer without listen_addr accepts only Unix-socket clients; pgpilot always listens on TCP, \
                   so it listens on loopback (127.0.0.1) only";
        b.note(
            "[pgbouncer] listen_addr".into(),
            None,
            Outcome::ChangedMeaning(why.into()),
            &["pgpilot", "listen"],
        );
        return;
    };
    let mut listen = Vec::new();
    let mut resolved = Vec::new();
    for a in list(&addr) {
        if a == "*" {
            listen.push(format!("0.0.0.0:{port}"));
            listen.push(format!("[::]:{port}"));
        } else if let Ok(ip) = a.trim_matches(['[', ']']).parse::<IpAddr>() {
            listen.push(SocketAddr::new(ip, port).to_string());
        } else {
            let addrs: Vec<String> = (a.as_str(), port)
                .to_socket_addrs()
                .map(|it| it.map(|s| s.to_string()).collect())
                .unwrap_or_default();
            resolved.push(format!(
                "{a} → {}",
                if addrs.is_empty() { "nothing".into() } else { addrs.join(", ") }
            ));
            listen.extend(addrs);
        }
    }
    listen.dedup();
    let outcome = if resolved.is_empty() {
        Outcome::CarriedOver
    } else {
        Outcome::ChangedMeaning(format!(
            "host names were resolved once, now ({}); pgpilot listens on IP addresses",
            resolved.join("; ")
        ))
    };
    b.config.pgpilot.listen = OneOrMany(listen);
    b.note("[pgbouncer] listen_addr".into(), Some(&origin), outcome, &["pgpilot", "listen"]);
}

fn nonempty(v: &str) -> Option<&str> {
    Some(v.trim()).filter(|v| !v.is_empty())
}
