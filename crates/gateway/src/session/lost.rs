//! A server connection that closed before answering a request that may move (a read outside a
//! transaction). Either the server is going away (shutdown, crash, failover): the request moves
//! and a replica is banned; or the server is up and only this backend ended. Then the request
//! moves (nothing is banned) unless an administrator ended the backend after it had run the
//! request for a while (pg_terminate_backend of a long read), which is then not run again. A
//! login tells whether the server is going away: it refuses new ones at once.

use std::time::Duration;

use bytes::BytesMut;
use pgpilot_wire::error::ErrorFields;
use pgpilot_wire::frame::peek_backend;

use super::flow::SERVER_LIMITS;
use crate::pool::{ConnectError, Pool, ServerConn};

/// How long the login may take: a server that does not answer this soon is taken for gone, as
/// every lost connection was before the check.
const CHECK_LIMIT: Duration = Duration::from_secs(2);

/// PostgreSQL's code for a backend ended by pg_terminate_backend (and by a fast shutdown).
const ADMIN_SHUTDOWN: &str = "57P01";

/// How long a read must have run for its backend's termination to be taken as meant for it.
/// Scripts that end idle connections end pooled ones just as pgpilot hands them a request; the
/// backend, reading it as it dies, looks the same as one stopped while running it. An
/// administrator stops a read that has been running for a while; a busy machine can stall a
/// request for a second or two, hence the margin.
const STOPPED_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(super) enum Loss {
    /// The server is going away or out of reach: the request moves, a replica is banned.
    ServerDown,
    /// The server is up; its backend ended without running the request: the request moves.
    BackendOnly,
    /// An administrator ended the backend running the request: the client gets the server's
    /// error (these bytes) and its connection closes, as without pgpilot.
    Terminated(BytesMut),
}

/// Judges the loss of `server`, whose buffer holds what it said before closing, `running_for`
/// after it was handed the request.
pub(super) async fn judge(server: &ServerConn, running_for: Duration) -> Loss {
    let warning = last_closing_warning(&server.buf);
    if !server_takes_logins(server.pool()).await {
        return Loss::ServerDown;
    }
    match warning {
        Some((code, bytes)) if code == ADMIN_SHUTDOWN && running_for >= STOPPED_AFTER => {
            Loss::Terminated(BytesMut::from(bytes))
        }
        _ => Loss::BackendOnly,
    }
}

/// Whether the server accepts a login now. A refusal for credentials, an unknown database or too
/// many connections still says the server is up; one for shutting down or recovery (57P03) says not.
async fn server_takes_logins(pool: &Pool) -> bool {
    match tokio::time::timeout(CHECK_LIMIT, pool.connect_unpooled()).await {
        Ok(Ok(connected)) => {
            let mut out = BytesMut::with_capacity(5);
            pgpilot_wire::frontend::terminate(&mut out);
            let _ = connected.sock.try_write(&out);
            true
        }
        Ok(Err(e @ ConnectError::Rejected { .. })) => !is_going_away(&e),
        Ok(Err(e))
            if e.lacks_secret()
                || matches!(e, ConnectError::Unsupported { .. } | ConnectError::TlsHandshake { .. }) =>
        {
            true
        }
        Ok(Err(_)) | Err(_) => false,
    }
}

fn is_going_away(e: &ConnectError) -> bool {
    matches!(e, ConnectError::Rejected { fields, .. } if fields.code == "57P03")
}

/// Whether the server's last complete message is a warning that it closes the connection
/// (class 57P: terminated, crash of another backend, shutting down, idle timeout). What came
/// before it (a RowDescription sent ahead of the row a query was computing) has not reached the
/// client yet, so the request may still move.
pub(super) fn ends_with_closing_warning(buf: &[u8]) -> bool {
    last_closing_warning(buf).is_some()
}

/// The code and bytes of the server's last message when it is a class 57P warning.
fn last_closing_warning(buf: &[u8]) -> Option<(String, &[u8])> {
    let mut pos = 0;
    let mut last = None;
    while pos < buf.len() {
        let Ok(Some(h)) = peek_backend(&buf[pos..], &SERVER_LIMITS) else { return None };
        if buf.len() < pos + h.total {
            return None;
        }
        last = None;
        if matches!(h.tag, b'N' | b'E') {
            let code = ErrorFields::parse(&buf[pos + 5..pos + h.total]).code;
            if code.starts_with("57P") {
                last = Some((code, &buf[pos..pos + h.total]));
            }
        }
        pos += h.total;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str) -> Vec<u8> {
        let body = format!("SFATAL\0C{code}\0Mgoing\0\0");
        let mut m = vec![b'E'];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body.as_bytes());
        m
    }

    #[test]
    fn only_a_closing_warning_at_the_end_counts() {
        let terminated = error("57P01");
        assert_eq!(
            last_closing_warning(&terminated).map(|(c, b)| (c, b.len())),
            Some(("57P01".into(), terminated.len()))
        );
        let mut then_other = terminated.clone();
        then_other.extend(error("42P01"));
        assert!(last_closing_warning(&then_other).is_none());
        assert!(last_closing_warning(&terminated[..terminated.len() - 1]).is_none());
        assert!(!ends_with_closing_warning(&error("40001")));
    }
}
