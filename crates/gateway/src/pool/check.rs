//! Simple queries pgpilot runs on a server by itself: server_check_query, server_reset_query.

use std::time::Duration;

use bytes::BytesMut;
use pgpilot_wire::backend::TxnStatus;
use pgpilot_wire::error::ErrorFields;
use pgpilot_wire::frame::{peek_backend, Limits};
use pgpilot_wire::frontend;

use super::server::ServerConn;

/// Runs `sql` and reads its answer up to ReadyForQuery; fails on an error, a timeout, or a server
/// that is not idle afterwards.
pub async fn run_simple(conn: &mut ServerConn, sql: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, run(conn, sql)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

pub async fn run_check(conn: &mut ServerConn, sql: &str, timeout: Duration) -> Result<(), String> {
    run_simple(conn, sql, timeout).await
}

async fn run(conn: &mut ServerConn, sql: &str) -> Result<(), String> {
    let mut out = BytesMut::with_capacity(sql.len() + 6);
    frontend::query(&mut out, sql);
    conn.sock.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut error = None;
    loop {
        while let Some(h) = peek_backend(&conn.buf, &Limits::default()).map_err(|e| e.to_string())? {
            if conn.buf.len() < h.total {
                break;
            }
            let msg = conn.buf.split_to(h.total);
            match h.tag {
                b'E' => error = Some(ErrorFields::parse(&msg[5..])),
                b'S' => {
                    if let Some((k, v)) = pgpilot_wire::backend::parse_parameter_status(&msg[5..]) {
                        conn.params.set(k, v);
                    }
                }
                b'Z' => {
                    return match (error, TxnStatus::from_byte(msg[5])) {
                        (Some(e), _) => Err(format!("{} {}", e.code, e.message)),
                        (None, Some(TxnStatus::Idle)) => Ok(()),
                        _ => Err("server is not idle after the query".into()),
                    };
                }
                _ => {}
            }
        }
        if conn.sock.read_into(&mut conn.buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("server closed the connection".into());
        }
    }
}
