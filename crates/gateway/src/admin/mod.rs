//! The admin console: clients that log in to the database `pgpilot` (or `pgbouncer`, for existing
//! tools) as an admin or stats user get PgBouncer's commands over the simple query protocol.

pub(crate) mod commands;
mod jobs;
pub mod resultset;
pub mod show;

use std::sync::Arc;

use bytes::BytesMut;
use pgpilot_wire::backend::{self, TxnStatus};
use pgpilot_wire::frame::{peek_frontend, Limits};
use pgpilot_wire::{frontend, PgError, SqlState};

use crate::net::Sock;
use crate::registry::{ClientState, Registration};
use crate::shared::Shared;

pub use resultset::ResultSet;

/// Who logged in to the console.
pub struct AdminLogin {
    pub user: String,
    pub database: String,
    /// admin_users may change things; stats_users may only SHOW.
    pub may_modify: bool,
}

const ADMIN_LIMITS: Limits = Limits { large: 64 * 1024, small: 10_000 };

pub async fn run(shared: Arc<Shared>, sock: Sock, registration: Registration, login: AdminLogin) {
    registration.info.set_state(ClientState::Idle);
    let mut out = BytesMut::with_capacity(512);
    backend::auth_ok(&mut out);
    for (k, val) in [
        // As PgBouncer's console reports itself: tools read a version number here.
        ("server_version", "1.23.1/bouncer"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "UTC"),
        ("standard_conforming_strings", "on"),
        ("integer_datetimes", "on"),
        ("application_name", "pgpilot"),
    ] {
        backend::parameter_status(&mut out, k, val);
    }
    backend::backend_key_data(&mut out, registration.info.pid, registration.info.secret);
    backend::ready_for_query(&mut out, TxnStatus::Idle);
    if sock.write_all(&out).await.is_err() {
        return;
    }
    tracing::info!(user = %login.user, database = %login.database, client = %registration.info.addr, "admin console login");
    let mut buf = BytesMut::new();
    // An extended-protocol message was refused since the last Sync: the rest up to the Sync is
    // skipped, as PostgreSQL skips after an error, so a pipeline gets one error per Sync.
    let mut skipping_to_sync = false;
    loop {
        let h = match peek_frontend(&buf, &ADMIN_LIMITS) {
            Err(e) => return fatal(&sock, PgError::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string())).await,
            Ok(h) => h,
        };
        let Some(h) = h.filter(|h| buf.len() >= h.total) else {
            if registration.info.close_requested() {
                // Shutdown (or SHUTDOWN from this very console) waits for no idle console.
                let e = PgError::fatal(SqlState::ADMIN_SHUTDOWN, "pgpilot is closing this connection");
                return fatal(&sock, e).await;
            }
            tokio::select! {
                read = sock.read_into(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                },
                _ = registration.info.wake.wait() => continue,
            }
        };
        let msg = buf.split_to(h.total);
        out.clear();
        match h.tag {
            b'X' => return,
            b'Q' => {
                let sql = frontend::parse_query(&msg[5..]).map(String::from_utf8_lossy).unwrap_or_default();
                registration.info.touch();
                // Several commands in one query run in order, each with its own answer, and the
                // first that fails ends the query, as in PostgreSQL (libpq keeps the last answer).
                let commands = commands::split(&sql);
                if commands.is_empty() {
                    commands::execute(&shared, &login, "", &mut out).await;
                }
                for command in commands {
                    if !commands::execute(&shared, &login, command, &mut out).await {
                        break;
                    }
                }
                backend::ready_for_query(&mut out, TxnStatus::Idle);
            }
            b'S' => {
                skipping_to_sync = false;
                backend::ready_for_query(&mut out, TxnStatus::Idle);
            }
            // Flush asks for nothing of its own.
            b'H' => {}
            b'P' | b'B' | b'D' | b'E' | b'C' => {
                // Only the simple query protocol is supported, as in PgBouncer.
                if !std::mem::replace(&mut skipping_to_sync, true) {
                    PgError::error(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        "the admin console supports only the simple query protocol",
                    )
                    .encode(&mut out);
                }
            }
            _ => {
                return fatal(&sock, PgError::fatal(SqlState::PROTOCOL_VIOLATION, "unexpected message")).await
            }
        }
        if !out.is_empty() && sock.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn fatal(sock: &Sock, e: PgError) {
    let mut out = BytesMut::new();
    e.encode(&mut out);
    let _ = sock.write_all(&out).await;
}
