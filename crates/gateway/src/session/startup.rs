//! The first packets of a connection: TLS negotiation, GSSAPI refusal, cancel requests, and the
//! StartupMessage with its parameters.

use bytes::BytesMut;
use pgpilot_wire::startup::{self, StartupPacket, StartupParams};
use pgpilot_wire::{backend, PgError, SqlState};

use crate::config::ClientTlsMode;
use crate::net::{tls, Sock};
use crate::shared::Shared;

pub enum Opening {
    /// A client wants to log in.
    /// `buf` holds whatever the client sent after its StartupMessage.
    /// `tls`: the session's protocol and cipher suite (SHOW CLIENTS), when the client uses TLS.
    Login { sock: Sock, params: StartupParams, tls: Option<Box<str>>, buf: BytesMut },
    /// A cancel request, already handled; close the connection.
    Cancelled,
}

async fn read_packet(sock: &Sock, buf: &mut BytesMut) -> Result<Option<BytesMut>, PgError> {
    loop {
        if let Some(len) = startup::packet_len(buf)
            .map_err(|e| PgError::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string()))?
        {
            if buf.len() >= len {
                return Ok(Some(buf.split_to(len)));
            }
        }
        match sock.read_into(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// Runs the opening exchange. Ok(None) means the client went away before logging in.
/// `deadline`: client_login_timeout, told to the client (as PgBouncer does) when it runs out
/// while pgpilot waits for a packet.
pub async fn open(
    shared: &Shared,
    mut sock: Sock,
    deadline: tokio::time::Instant,
) -> Result<Option<Opening>, (Sock, PgError)> {
    let mut buf = BytesMut::with_capacity(512);
    let mut tls_session: Option<Box<str>> = None;
    // Each encryption is offered once; asked again after its refusal, PostgreSQL reads the
    // request as a protocol version it does not speak.
    let (mut ssl_refused, mut gss_refused) = (false, false);
    let asked_again = || {
        PgError::fatal(
            SqlState::FEATURE_NOT_SUPPORTED,
            "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0",
        )
    };
    loop {
        let packet = match tokio::time::timeout_at(deadline, read_packet(&sock, &mut buf)).await {
            Ok(Ok(Some(p))) => p,
            Ok(Ok(None)) => return Ok(None),
            Ok(Err(e)) => return Err((sock, e)),
            Err(_) => return Err((sock, super::login_timed_out())),
        };
        let parsed = match startup::parse(&packet) {
            Ok(p) => p,
            // As PostgreSQL answers a protocol it does not speak: 0A000, not a violation.
            Err(e @ startup::StartupError::UnsupportedProtocol(..)) => {
                return Err((sock, PgError::fatal(SqlState::FEATURE_NOT_SUPPORTED, e.to_string())))
            }
            Err(e @ startup::StartupError::NotUtf8(_)) => {
                return Err((sock, PgError::fatal(SqlState::CHARACTER_NOT_IN_REPERTOIRE, e.to_string())))
            }
            Err(e) => return Err((sock, PgError::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string()))),
        };
        match parsed {
            StartupPacket::Ssl if tls_session.is_none() => {
                // As PostgreSQL: no TLS over a Unix socket, which never leaves the host.
                let acceptor = shared.tls_acceptor.load_full().filter(|_| matches!(sock, Sock::Tcp(_)));
                let Some(acceptor) = acceptor else {
                    if std::mem::replace(&mut ssl_refused, true) {
                        return Err((sock, asked_again()));
                    }
                    if sock.write_all(b"N").await.is_err() {
                        return Ok(None);
                    }
                    continue;
                };
                // Anything sent after SSLRequest but before the handshake would be read as if it had
                // come over TLS (CVE-2021-23214): refuse it.
                if !buf.is_empty() {
                    return Err((
                        sock,
                        PgError::fatal(
                            SqlState::PROTOCOL_VIOLATION,
                            "received unencrypted data after SSL request",
                        ),
                    ));
                }
                if sock.write_all(b"S").await.is_err() {
                    return Ok(None);
                }
                let Sock::Tcp(tcp) = sock else { return Ok(None) };
                let stream = match acceptor.accept(tcp).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::info!(error = %e, "client TLS handshake failed");
                        return Ok(None);
                    }
                };
                let session = stream.get_ref().1;
                let described = tls::describe(session.protocol_version(), session.negotiated_cipher_suite());
                sock = match tls::bridge(stream) {
                    Ok(s) => s,
                    Err(_) => return Ok(None),
                };
                tls_session = Some(described.into());
            }
            StartupPacket::GssEnc if tls_session.is_none() => {
                if std::mem::replace(&mut gss_refused, true) {
                    return Err((sock, asked_again()));
                }
                if sock.write_all(b"N").await.is_err() {
                    return Ok(None);
                }
            }
            StartupPacket::Ssl | StartupPacket::GssEnc => {
                return Err((
                    sock,
                    PgError::fatal(SqlState::PROTOCOL_VIOLATION, "duplicate encryption request"),
                ));
            }
            StartupPacket::Cancel { pid, secret } => {
                super::cancel::forward(shared, pid, secret).await;
                return Ok(Some(Opening::Cancelled));
            }
            StartupPacket::Startup(params) => {
                if shared.config.load().tls.client_tls_sslmode == ClientTlsMode::Require
                    && tls_session.is_none()
                    && matches!(sock, Sock::Tcp(_))
                {
                    return Err((sock, PgError::fatal(SqlState::INVALID_AUTHORIZATION, "SSL required")));
                }
                let unknown = params.protocol_options();
                if params.minor_version > 0 || !unknown.is_empty() {
                    let mut out = BytesMut::new();
                    backend::negotiate_protocol_version(&mut out, backend::PROTOCOL_3_0, &unknown);
                    if sock.write_all(&out).await.is_err() {
                        return Ok(None);
                    }
                }
                return Ok(Some(Opening::Login { sock, params, tls: tls_session, buf }));
            }
        }
    }
}
