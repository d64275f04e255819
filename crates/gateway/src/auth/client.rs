//! Authenticating a client: trust, cleartext, md5 or SCRAM-SHA-256 against the auth_file.

use bytes::BytesMut;
use pgpilot_wire::auth::scram::{ProvenClientKey, ScramError, ScramServer, MECHANISM};
use pgpilot_wire::auth::{constant_time_eq, md5, ScramSecret, Secret};
use pgpilot_wire::{backend, frontend, PgError, SqlState};

use crate::config::AuthType;
use crate::net::Sock;
use crate::session::io::{read_message, LOGIN_LIMITS};

/// A successful login, with the SCRAM ClientKey when the client proved one (for pass-through).
pub struct Authenticated {
    pub proven_key: Option<ProvenClientKey>,
}

pub(crate) fn failed(user: &str) -> PgError {
    PgError::fatal(SqlState::INVALID_PASSWORD, format!("password authentication failed for user \"{user}\""))
}

/// Runs the exchange `auth_type` calls for. `secret` is None for a user missing from the auth_file:
/// the exchange still runs to its end so the client cannot tell that apart from a wrong password.
pub async fn authenticate(
    sock: &Sock,
    buf: &mut BytesMut,
    auth_type: AuthType,
    user: &str,
    secret: Option<&Secret>,
) -> Result<Authenticated, PgError> {
    // An empty password logs no one in (as PostgreSQL and PgBouncer): such an entry is treated as
    // a missing one, so the client hears the same as for a wrong password.
    let secret = secret.filter(|s| !s.is_empty_password(user));
    match auth_type {
        AuthType::Trust => Ok(Authenticated { proven_key: None }),
        AuthType::Plain => cleartext(sock, buf, user, secret).await,
        // As PgBouncer: a user whose stored secret is a SCRAM verifier cannot do md5, so gets SCRAM.
        AuthType::Md5 if !matches!(secret, Some(Secret::Scram(_))) => {
            md5_exchange(sock, buf, user, secret).await
        }
        AuthType::Md5 | AuthType::ScramSha256 => scram(sock, buf, user, secret).await,
    }
}

async fn send(sock: &Sock, out: &BytesMut) -> Result<(), PgError> {
    sock.write_all(out)
        .await
        .map_err(|_| PgError::fatal(SqlState::CONNECTION_FAILURE, "client closed the connection"))
}

async fn password_message(sock: &Sock, buf: &mut BytesMut) -> Result<BytesMut, PgError> {
    let (tag, body) = read_message(sock, buf, &LOGIN_LIMITS).await?;
    if tag != b'p' {
        return Err(PgError::fatal(
            SqlState::PROTOCOL_VIOLATION,
            format!("expected password response, got message type {:?}", tag as char),
        ));
    }
    Ok(body)
}

async fn cleartext(
    sock: &Sock,
    buf: &mut BytesMut,
    user: &str,
    secret: Option<&Secret>,
) -> Result<Authenticated, PgError> {
    let mut out = BytesMut::new();
    backend::auth_cleartext(&mut out);
    send(sock, &out).await?;
    let body = password_message(sock, buf).await?;
    let given = frontend::parse_password(&body).ok_or_else(|| failed(user))?;
    let given = std::str::from_utf8(given).map_err(|_| failed(user))?;
    if given.is_empty() {
        return Err(failed(user));
    }
    let ok = match secret {
        Some(Secret::Plain(p)) => constant_time_eq(p.as_bytes(), given.as_bytes()),
        Some(Secret::Md5(h)) => constant_time_eq(md5::stored_hash(user, given).as_bytes(), h.as_bytes()),
        Some(Secret::Scram(v)) => {
            let derived = ScramSecret::from_password(given, &v.salt, v.iterations);
            constant_time_eq(&derived.stored_key, &v.stored_key)
        }
        None => false,
    };
    if ok {
        Ok(Authenticated { proven_key: None })
    } else {
        Err(failed(user))
    }
}

async fn md5_exchange(
    sock: &Sock,
    buf: &mut BytesMut,
    user: &str,
    secret: Option<&Secret>,
) -> Result<Authenticated, PgError> {
    let salt: [u8; 4] = rand::random();
    let mut out = BytesMut::new();
    backend::auth_md5(&mut out, salt);
    send(sock, &out).await?;
    let body = password_message(sock, buf).await?;
    let response = frontend::parse_password(&body).ok_or_else(|| failed(user))?;
    match secret {
        Some(s) if md5::verify(s, user, salt, response) => Ok(Authenticated { proven_key: None }),
        _ => Err(failed(user)),
    }
}

async fn scram(
    sock: &Sock,
    buf: &mut BytesMut,
    user: &str,
    secret: Option<&Secret>,
) -> Result<Authenticated, PgError> {
    let mut out = BytesMut::new();
    backend::auth_sasl(&mut out);
    send(sock, &out).await?;
    let mut server = ScramServer::for_user(user, secret);
    let body = password_message(sock, buf).await?;
    let (mechanism, data) = frontend::parse_sasl_initial(&body)
        .ok_or_else(|| PgError::fatal(SqlState::PROTOCOL_VIOLATION, "malformed SASLInitialResponse"))?;
    if mechanism != MECHANISM.as_bytes() {
        return Err(PgError::fatal(
            SqlState::PROTOCOL_VIOLATION,
            "client selected an invalid SASL authentication mechanism",
        ));
    }
    let server_first = server.client_first(data).map_err(|e| match e {
        ScramError::AuthzId | ScramError::Extension => {
            PgError::fatal(SqlState::FEATURE_NOT_SUPPORTED, e.to_string())
        }
        _ => PgError::fatal(SqlState::PROTOCOL_VIOLATION, format!("SCRAM: {e}")),
    })?;
    out.clear();
    backend::auth_sasl_continue(&mut out, &server_first);
    send(sock, &out).await?;
    let body = password_message(sock, buf).await?;
    // As PostgreSQL: a wrong proof is a wrong password (28P01), a message that breaks the
    // exchange (malformed, another nonce, other channel-binding data) a protocol violation.
    let (server_final, key) = server.client_final(&body).map_err(|e| match e {
        ScramError::BadProof => failed(user),
        _ => PgError::fatal(SqlState::PROTOCOL_VIOLATION, format!("SCRAM: {e}")),
    })?;
    out.clear();
    backend::auth_sasl_final(&mut out, &server_final);
    send(sock, &out).await?;
    Ok(Authenticated { proven_key: Some(key) })
}
