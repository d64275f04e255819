//! Opening a server connection: TCP or Unix socket, optional TLS, startup, authentication, and
//! the server's parameters and cancel key.

use crate::net::ReadError;
use std::io;
use std::time::Duration;

use bytes::BytesMut;
use pgpilot_wire::auth::md5;
use pgpilot_wire::auth::scram::{ClientCredentials, ScramClient, ScramError, MECHANISM};
use pgpilot_wire::backend::{parse_auth_request, parse_backend_key, parse_parameter_status, AuthRequest};
use pgpilot_wire::error::ErrorFields;
use pgpilot_wire::frame::Limits;
use pgpilot_wire::{frontend, startup};
use thiserror::Error;
use tokio::net::{TcpStream, UnixStream};

use crate::config::{ServerTlsMode, ServerUrl};
use crate::net::{tls, Sock};

/// What pgpilot logs in to a server with.
#[derive(Clone)]
pub enum ServerSecret {
    None,
    Password(String),
    /// PostgreSQL's stored md5 hash: enough to answer an md5 challenge.
    Md5Hash(String),
    /// A SCRAM ClientKey a client proved to pgpilot.
    ScramKey(pgpilot_wire::auth::scram::ProvenClientKey),
}

impl std::fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerSecret::None => "none",
            ServerSecret::Password(_) => "password",
            ServerSecret::Md5Hash(_) => "md5-hash",
            ServerSecret::ScramKey(_) => "scram-key",
        })
    }
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ServerTarget {
    /// The configured database section whose password applies (`*` for a database made from it).
    pub database: String,
    pub url: ServerUrl,
    pub user: String,
    pub tls_mode: ServerTlsMode,
}

#[derive(Debug, Error)]
pub enum ConnectError {
    #[error("cannot connect to {addr}: {source}")]
    Io { addr: String, source: io::Error },
    #[error("connecting to {0} timed out")]
    Timeout(String),
    #[error("server {addr} rejected the login: {} {}", fields.code, fields.message)]
    Rejected { addr: String, fields: ErrorFields },
    #[error("server {addr} requires TLS/authentication pgpilot cannot satisfy: {why}")]
    Unsupported { addr: String, why: String },
    #[error("TLS handshake with server {addr} failed: {why}")]
    TlsHandshake { addr: String, why: String },
    /// The server asks for a password pgpilot does not have for the user (yet: a client's SCRAM
    /// login can give pgpilot the key it needs).
    #[error("server {addr} asks user \"{user}\" for a {method} password pgpilot does not have: give it in auth_file, the server URL or PGPASSWORD (with SCRAM, a client's login can also provide it)")]
    NoSecret { addr: String, user: String, method: &'static str },
    /// The SCRAM key a client proved against auth_file's verifier does not fit the server's
    /// verifier: the password was set again on the server (a new salt), and auth_file still
    /// holds the old verifier. The server is up; the credentials are out of date.
    #[error("server {addr} has another SCRAM verifier for user \"{user}\" than auth_file (the password was set again on the server?): copy its pg_authid.rolpassword into auth_file, or give the password")]
    StaleVerifier { addr: String, user: String },
    /// What answered does not speak PostgreSQL's protocol as a server must (another service on
    /// the port, a broken proxy): retrying will not help, and waiting clients are told at once.
    #[error("protocol error from server {addr}: {why}")]
    Protocol { addr: String, why: String },
    /// The server closed the connection before the login ended (shutting down, restarting).
    #[error("server {addr} closed the connection {when}")]
    Closed { addr: String, when: &'static str },
    /// The server did not answer the pool's last attempt, and the next is not due before the
    /// client's wait ends.
    #[error("{last} (retrying at growing intervals)")]
    StillFailing { last: String },
}

impl ConnectError {
    /// Errors that waiting will not fix (wrong password, unknown database).
    pub fn is_permanent(&self) -> bool {
        self.refuses_login()
            || self.lacks_secret()
            || matches!(
                self,
                ConnectError::Unsupported { .. }
                    | ConnectError::TlsHandshake { .. }
                    | ConnectError::Protocol { .. }
            )
    }

    /// pgpilot lacks the password the server asks for, or holds an outdated one: a problem of
    /// credentials, not of the server, which is up.
    pub fn lacks_secret(&self) -> bool {
        matches!(self, ConnectError::NoSecret { .. } | ConnectError::StaleVerifier { .. })
    }

    /// The server is up but refuses new connections for now: too many (53300, for the server,
    /// the role or the database), or starting up or shutting down (57P03). Retried.
    pub fn is_refused_for_now(&self) -> bool {
        matches!(self, ConnectError::Rejected { .. }) && !self.refuses_login()
    }

    /// The server is starting up or shutting down (57P03): it is moments from answering again
    /// (a restart), unlike a full server (53300) that stays full for a while.
    pub fn is_server_restarting(&self) -> bool {
        matches!(self, ConnectError::Rejected { fields, .. } if fields.code == "57P03")
    }

    /// The server has no connection slot left (53300: for the server, the role or the database).
    pub fn is_server_full(&self) -> bool {
        matches!(self, ConnectError::Rejected { fields, .. } if fields.code == "53300")
    }

    /// The server refused the login for its role's or database's CONNECTION LIMIT (53300 "too
    /// many connections for role" / "for database"), not for want of a slot for anyone ("sorry,
    /// too many clients already"): the server is up and serves other users, and is not marked
    /// down for it (a replica banned from reads for everyone). Told apart by PostgreSQL's English
    /// message: with lc_messages in another language it counts as the server being full.
    pub fn is_limit_of_role_or_database(&self) -> bool {
        matches!(self, ConnectError::Rejected { fields, .. }
            if fields.code == "53300" && fields.message.starts_with("too many connections for "))
    }

    /// The server refused the login for its credentials (class 28) or an unknown database
    /// (3D000): the server itself is up, the user or database is wrong.
    pub fn refuses_login(&self) -> bool {
        matches!(self, ConnectError::Rejected { fields, .. } if fields.code.starts_with("28") || fields.code == "3D000")
    }
}

/// A logged-in server connection, ready for queries.
pub struct Connected {
    pub sock: Sock,
    pub params: Vec<(String, String)>,
    pub pid: i32,
    pub secret: i32,
    pub buf: BytesMut,
    /// The TLS protocol and cipher suite, as SHOW SERVERS' `tls` gives them; None in the clear.
    pub tls: Option<Box<str>>,
    /// pgpilot's end of a TCP connection (SHOW SERVERS' local_addr, local_port): the server sees
    /// it as pg_stat_activity's client_addr and client_port.
    pub local: Option<std::net::SocketAddr>,
}

/// The application_name pooled server connections log in with (clients' own names replace it).
pub const POOLED_APPLICATION_NAME: &str = "pgpilot";
/// The application_name of the monitor's connections, so operators can tell them apart.
pub const MONITOR_APPLICATION_NAME: &str = "pgpilot-monitor";

pub async fn connect(
    target: &ServerTarget,
    secret: &ServerSecret,
    connector: Option<&tokio_rustls::TlsConnector>,
    timeout: Duration,
    application_name: &str,
) -> Result<Connected, ConnectError> {
    let addr = target.url.address();
    match tokio::time::timeout(timeout, connect_inner(target, secret, connector, application_name)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout(addr)),
    }
}

async fn connect_inner(
    target: &ServerTarget,
    secret: &ServerSecret,
    connector: Option<&tokio_rustls::TlsConnector>,
    application_name: &str,
) -> Result<Connected, ConnectError> {
    let mode = target.tls_mode;
    let opened = match open(target, connector, mode.attempts_tls()).await {
        Err(e) if mode == ServerTlsMode::Prefer && matches!(e, ConnectError::TlsHandshake { .. }) => {
            tracing::info!(server = %target.url.address(), error = %e, "sslmode prefer: trying again without TLS");
            open(target, connector, false).await?
        }
        opened => opened?,
    };
    let over_tls = opened.tls.is_some();
    match log_in(opened, target, secret, application_name).await {
        Err(e) if mode.retries_login(over_tls) && matches!(e, ConnectError::Rejected { .. }) => {
            let again = if over_tls { "without TLS" } else { "with TLS" };
            tracing::info!(server = %target.url.address(), error = %e, "sslmode {}: trying again {again}", mode.name());
            log_in(open(target, connector, !over_tls).await?, target, secret, application_name).await
        }
        logged_in => logged_in,
    }
}

/// A connection to the server, TLS negotiated, before the startup packet.
struct Opened {
    sock: Sock,
    tls: Option<Box<str>>,
    local: Option<std::net::SocketAddr>,
}

async fn open(
    target: &ServerTarget,
    connector: Option<&tokio_rustls::TlsConnector>,
    try_tls: bool,
) -> Result<Opened, ConnectError> {
    let addr = target.url.address();
    let io_err = |source| ConnectError::Io { addr: addr.clone(), source };
    if target.url.is_unix_socket() {
        let sock = Sock::Unix(UnixStream::connect(&addr).await.map_err(io_err)?);
        return Ok(Opened { sock, tls: None, local: None });
    }
    let tcp = TcpStream::connect(&addr).await.map_err(io_err)?;
    // On the TCP socket, before TLS puts a socket pair in front of it (net/sock.rs).
    crate::net::sock::nodelay(&tcp);
    crate::net::sock::keepalive(&tcp);
    let local = tcp.local_addr().ok();
    let (sock, tls) =
        if try_tls { negotiate_tls(tcp, target, connector).await? } else { (Sock::Tcp(tcp), None) };
    Ok(Opened { sock, tls, local })
}

async fn log_in(
    opened: Opened,
    target: &ServerTarget,
    secret: &ServerSecret,
    application_name: &str,
) -> Result<Connected, ConnectError> {
    let Opened { sock, tls, local } = opened;
    let addr = target.url.address();
    let mut out = BytesMut::with_capacity(256);
    startup::startup_message(
        &mut out,
        &[("user", &target.user), ("database", &target.url.dbname), ("application_name", application_name)],
    );
    sock.write_all(&out).await.map_err(|source| ConnectError::Io { addr: addr.clone(), source })?;
    let mut login =
        Login { sock: &sock, buf: BytesMut::with_capacity(4096), addr: &addr, user: &target.user };
    login.authenticate(target, secret).await?;
    let (params, pid, key) = login.read_until_ready().await?;
    let buf = login.buf;
    Ok(Connected { sock, params, pid, secret: key, buf, tls, local })
}

async fn negotiate_tls(
    tcp: TcpStream,
    target: &ServerTarget,
    connector: Option<&tokio_rustls::TlsConnector>,
) -> Result<(Sock, Option<Box<str>>), ConnectError> {
    let addr = target.url.address();
    let io_err = |source| ConnectError::Io { addr: addr.clone(), source };
    let sock = Sock::Tcp(tcp);
    let mut out = BytesMut::new();
    startup::ssl_request(&mut out);
    sock.write_all(&out).await.map_err(io_err)?;
    let mut answer = BytesMut::with_capacity(1);
    while answer.is_empty() {
        if sock.read_into(&mut answer).await.map_err(io_err)? == 0 {
            return Err(ConnectError::Closed { addr, when: "during SSL negotiation" });
        }
    }
    let Sock::Tcp(tcp) = sock else { unreachable!() };
    match (answer[0], connector) {
        (b'S', Some(connector)) if answer.len() == 1 => {
            let name = rustls::pki_types::ServerName::try_from(target.url.host.clone())
                .map_err(|e| ConnectError::Unsupported { addr: addr.clone(), why: e.to_string() })?;
            let stream = connector
                .connect(name, tcp)
                .await
                .map_err(|e| ConnectError::TlsHandshake { addr: addr.clone(), why: e.to_string() })?;
            let session = stream.get_ref().1;
            let described = tls::describe(session.protocol_version(), session.negotiated_cipher_suite());
            Ok((tls::bridge(stream).map_err(io_err)?, Some(described.into())))
        }
        (b'N', _) if !target.tls_mode.requires_tls() => Ok((Sock::Tcp(tcp), None)),
        (b'N', _) => Err(ConnectError::Unsupported { addr, why: "server does not support TLS".into() }),
        _ => Err(ConnectError::Protocol { addr, why: "unexpected answer to SSLRequest".into() }),
    }
}

struct Login<'a> {
    sock: &'a Sock,
    buf: BytesMut,
    addr: &'a str,
    user: &'a str,
}

impl Login<'_> {
    fn protocol(&self, why: impl Into<String>) -> ConnectError {
        ConnectError::Protocol { addr: self.addr.to_string(), why: why.into() }
    }

    fn no_secret(&self, method: &'static str) -> ConnectError {
        ConnectError::NoSecret { addr: self.addr.to_string(), user: self.user.to_string(), method }
    }

    fn unsupported(&self, why: impl Into<String>) -> ConnectError {
        ConnectError::Unsupported { addr: self.addr.to_string(), why: why.into() }
    }

    /// Reads one whole message; returns its tag and body.
    async fn next(&mut self) -> Result<(u8, BytesMut), ConnectError> {
        let limits = Limits { large: 1 << 20, small: 1 << 20 };
        match self.sock.read_backend_message(&mut self.buf, &limits).await {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(ConnectError::Closed { addr: self.addr.to_string(), when: "during login" }),
            Err(ReadError::Frame(e)) => Err(self.protocol(e.to_string())),
            Err(ReadError::Io(source)) => Err(ConnectError::Io { addr: self.addr.to_string(), source }),
        }
    }

    async fn send(&self, out: &BytesMut) -> Result<(), ConnectError> {
        self.sock
            .write_all(out)
            .await
            .map_err(|source| ConnectError::Io { addr: self.addr.to_string(), source })
    }

    async fn authenticate(
        &mut self,
        target: &ServerTarget,
        secret: &ServerSecret,
    ) -> Result<(), ConnectError> {
        let mut scram: Option<ScramClient> = None;
        loop {
            let (tag, body) = self.next().await?;
            match tag {
                b'R' => {}
                b'E' => {
                    return Err(ConnectError::Rejected {
                        addr: self.addr.to_string(),
                        fields: ErrorFields::parse(&body),
                    })
                }
                b'N' => continue,
                _ => return Err(self.protocol(format!("unexpected message {:?} during login", tag as char))),
            }
            let request =
                parse_auth_request(&body).ok_or_else(|| self.protocol("malformed authentication request"))?;
            let mut out = BytesMut::new();
            match request {
                AuthRequest::Ok => return Ok(()),
                AuthRequest::Cleartext => match secret {
                    ServerSecret::Password(p) => frontend::password(&mut out, p.as_bytes()),
                    _ => return Err(self.no_secret("cleartext")),
                },
                AuthRequest::Md5 { salt } => {
                    let stored = match secret {
                        ServerSecret::Password(p) => md5::stored_hash(&target.user, p),
                        ServerSecret::Md5Hash(h) => h.clone(),
                        _ => return Err(self.no_secret("md5")),
                    };
                    frontend::password(&mut out, md5::client_response(&stored, salt).as_bytes());
                }
                AuthRequest::Sasl { mechanisms } => {
                    if !mechanisms.contains(&MECHANISM) {
                        return Err(self.unsupported(format!("server offers SASL {mechanisms:?}")));
                    }
                    let creds = match secret {
                        ServerSecret::Password(p) => ClientCredentials::Password(p.clone()),
                        ServerSecret::ScramKey(k) => ClientCredentials::ProvenKey(k.clone()),
                        _ => return Err(self.no_secret("SCRAM")),
                    };
                    let mut client = ScramClient::new(creds);
                    frontend::sasl_initial_response(&mut out, MECHANISM, &client.client_first());
                    scram = Some(client);
                }
                AuthRequest::SaslContinue(data) => {
                    let client = scram.as_mut().ok_or_else(|| self.protocol("SASLContinue before SASL"))?;
                    let reply = client.server_first(data).map_err(|e| match e {
                        ScramError::VerifierMismatch => ConnectError::StaleVerifier {
                            addr: self.addr.to_string(),
                            user: self.user.to_string(),
                        },
                        _ => self.unsupported(format!("SCRAM: {e}")),
                    })?;
                    frontend::sasl_response(&mut out, &reply);
                }
                AuthRequest::SaslFinal(data) => {
                    let client = scram.as_mut().ok_or_else(|| self.protocol("SASLFinal before SASL"))?;
                    client.server_final(data).map_err(|e| self.unsupported(format!("SCRAM: {e}")))?;
                    continue;
                }
                AuthRequest::Unsupported(code) => {
                    return Err(self.unsupported(format!("authentication method {code}")));
                }
            }
            self.send(&out).await?;
        }
    }

    async fn read_until_ready(&mut self) -> Result<(Vec<(String, String)>, i32, i32), ConnectError> {
        let mut params = Vec::new();
        let (mut pid, mut key) = (0, 0);
        loop {
            let (tag, body) = self.next().await?;
            match tag {
                b'S' => {
                    if let Some((k, v)) = parse_parameter_status(&body) {
                        params.push((k.to_string(), v.to_string()));
                    }
                }
                b'K' => {
                    (pid, key) =
                        parse_backend_key(&body).ok_or_else(|| self.protocol("bad BackendKeyData"))?
                }
                b'Z' => return Ok((params, pid, key)),
                b'E' => {
                    return Err(ConnectError::Rejected {
                        addr: self.addr.to_string(),
                        fields: ErrorFields::parse(&body),
                    })
                }
                b'N' => {}
                other => {
                    return Err(self.protocol(format!("unexpected message {:?} after login", other as char)))
                }
            }
        }
    }
}
