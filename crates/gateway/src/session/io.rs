//! Reading whole messages during login, before the session's streaming loop takes over.

use bytes::{Buf, BytesMut};
use pgpilot_wire::frame::{peek_frontend, Limits};
use pgpilot_wire::{PgError, SqlState};

use crate::net::Sock;

/// Messages during login are small: passwords and SASL exchanges.
pub const LOGIN_LIMITS: Limits = Limits { large: 8192, small: 8192 };

/// Reads one whole frontend message, returns its tag and body (header stripped).
pub async fn read_message(
    sock: &Sock,
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<(u8, BytesMut), PgError> {
    loop {
        match peek_frontend(buf, limits) {
            Err(e) => return Err(PgError::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string())),
            Ok(Some(h)) if buf.len() >= h.total => {
                let mut msg = buf.split_to(h.total);
                msg.advance(5);
                return Ok((h.tag, msg));
            }
            Ok(_) => {}
        }
        match sock.read_into(buf).await {
            Ok(0) | Err(_) => {
                return Err(PgError::fatal(SqlState::CONNECTION_FAILURE, "client closed the connection"))
            }
            Ok(_) => {}
        }
    }
}
