//! Simple queries pgpilot runs on a server by itself: server_check_query, server_reset_query, and the
//! monitors' health and catalog queries.

use std::time::Duration;

use bytes::BytesMut;
use pgpilot_wire::backend::{parse_parameter_status, TxnStatus};
use pgpilot_wire::error::ErrorFields;
use pgpilot_wire::frame::{peek_backend, read_i16, read_i32, Limits};
use pgpilot_wire::frontend;

use super::server::ServerConn;
use crate::net::Sock;
use crate::session::params::ParamSet;

/// Text values of the rows a query returned (None for NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// Runs `sql` on a pooled connection and reads its answer up to ReadyForQuery; fails on an error,
/// a timeout, or a server that is not idle afterwards.
pub async fn run_simple(conn: &mut ServerConn, sql: &str, timeout: Duration) -> Result<(), String> {
    query(&conn.sock, &mut conn.buf, Some(&mut conn.params), sql, timeout).await.map(|_| ())
}

pub async fn run_check(conn: &mut ServerConn, sql: &str, timeout: Duration) -> Result<(), String> {
    run_simple(conn, sql, timeout).await
}

/// Runs `sql` with the simple protocol and returns its rows. ParameterStatus messages update `params`.
pub async fn query(
    sock: &Sock,
    buf: &mut BytesMut,
    params: Option<&mut ParamSet>,
    sql: &str,
    timeout: Duration,
) -> Result<Rows, String> {
    match tokio::time::timeout(timeout, run(sock, buf, params, sql)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn run(
    sock: &Sock,
    buf: &mut BytesMut,
    mut params: Option<&mut ParamSet>,
    sql: &str,
) -> Result<Rows, String> {
    let mut out = BytesMut::with_capacity(sql.len() + 6);
    frontend::query(&mut out, sql);
    sock.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut error = None;
    let mut rows = Vec::new();
    loop {
        while let Some(h) = peek_backend(buf, &Limits::default()).map_err(|e| e.to_string())? {
            if buf.len() < h.total {
                break;
            }
            let msg = buf.split_to(h.total);
            let body = &msg[5..];
            match h.tag {
                b'E' => error = Some(ErrorFields::parse(body)),
                b'D' => rows.push(data_row(body).ok_or("malformed DataRow")?),
                b'S' => {
                    if let (Some(p), Some((k, v))) = (params.as_deref_mut(), parse_parameter_status(body)) {
                        p.set(k, v);
                    }
                }
                b'Z' => {
                    return match (error, TxnStatus::from_byte(body[0])) {
                        (Some(e), _) => Err(format!("{} {}", e.code, e.message)),
                        (None, Some(TxnStatus::Idle)) => Ok(rows),
                        _ => Err("server is not idle after the query".into()),
                    };
                }
                _ => {}
            }
        }
        if sock.read_into(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("server closed the connection".into());
        }
    }
}

pub(crate) fn data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let (n, mut pos) = read_i16(body, 0)?;
    let mut out = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let (len, p) = read_i32(body, pos)?;
        pos = p;
        if len < 0 {
            out.push(None);
        } else {
            let v = body.get(pos..pos + len as usize)?;
            out.push(Some(String::from_utf8_lossy(v).into_owned()));
            pos += len as usize;
        }
    }
    Some(out)
}
