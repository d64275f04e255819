//! A small PostgreSQL client for the monitoring side (EXPLAIN, the server probe). It logs in the
//! way the pools do (same credentials, TLS settings and SCRAM pass-through keys, through
//! `pool::connect`), then speaks just enough of the protocol to run a statement and read text rows.

use crate::net::ReadError;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use pgpilot_wire::backend::{begin, finish, put_cstr};
use pgpilot_wire::error::ErrorFields;
use pgpilot_wire::frame::{read_i16, read_i32, Limits};
use pgpilot_wire::frontend;
use thiserror::Error;

use crate::config::ServerUrl;
use crate::databases::Database;
use crate::net::Sock;
use crate::pool::connect::{connect, ConnectError};
use crate::pool::{SecretSource, ServerTarget};
use crate::shared::Shared;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{message}")]
    Server { code: String, message: String },
    #[error("connection to {0} lost: {1}")]
    Io(String, std::io::Error),
    #[error("protocol error from {0}: {1}")]
    Protocol(String, String),
}

/// Rows of text values.
pub type Rows = Vec<Vec<Option<String>>>;

pub struct PgConn {
    sock: Sock,
    buf: BytesMut,
    addr: String,
}

/// The server user pgpilot logs in as for `database`: `user` when given, else the database's
/// forced user, else the user of a pool already open. None when nothing says.
pub fn server_user_for(db: &Database, user: Option<&str>) -> Option<String> {
    if let Some(u) = user {
        return Some(db.server_user(u).to_string());
    }
    if let Some(u) = db.forced_user.as_deref() {
        return Some(u.to_string());
    }
    db.pool_sets().first().and_then(|set| set.all().next().map(|p| p.id.user.to_string()))
}

impl PgConn {
    pub async fn connect(
        shared: &Shared,
        db: &Arc<Database>,
        url: &ServerUrl,
        user: &str,
        timeout: Duration,
    ) -> Result<PgConn, ClientError> {
        let config = shared.config.load();
        let target = ServerTarget {
            database: db.name.to_string(),
            url: url.clone(),
            user: user.to_string(),
            tls_mode: config.tls.for_server(url).mode,
        };
        let secret = shared.secrets.secret_for(&target);
        let connector = shared.server_connector(url);
        let monitor = crate::pool::connect::MONITOR_APPLICATION_NAME;
        PgConn::open(&target, &secret, connector.as_deref(), timeout, monitor).await
    }

    /// Logs in to `target` with the given secret (auth_query's own login, say).
    pub async fn open(
        target: &ServerTarget,
        secret: &crate::pool::ServerSecret,
        connector: Option<&tokio_rustls::TlsConnector>,
        timeout: Duration,
        application_name: &str,
    ) -> Result<PgConn, ClientError> {
        let c = connect(target, secret, connector, timeout, application_name).await?;
        Ok(PgConn { sock: c.sock, buf: c.buf, addr: target.url.address() })
    }

    pub fn address(&self) -> &str {
        &self.addr
    }

    /// Runs `sql` with the simple query protocol; the rows of every result, in order.
    pub async fn simple(&mut self, sql: &str) -> Result<Rows, ClientError> {
        let mut out = BytesMut::new();
        frontend::query(&mut out, sql);
        self.send(&out).await?;
        self.read_until_ready().await
    }

    /// Runs one statement with the extended protocol and text parameters whose types the server infers.
    pub async fn extended(&mut self, sql: &str, params: &[Option<String>]) -> Result<Rows, ClientError> {
        let mut out = BytesMut::new();
        frontend::parse(&mut out, b"", sql.as_bytes(), &[]);
        let mut rest = BytesMut::new();
        rest.put_i16(0); // every parameter in text
        rest.put_i16(i16::try_from(params.len()).map_err(|_| self.protocol("too many parameters"))?);
        for p in params {
            match p {
                Some(v) => {
                    rest.put_i32(v.len() as i32);
                    rest.extend_from_slice(v.as_bytes());
                }
                None => rest.put_i32(-1),
            }
        }
        rest.put_i16(0); // results in text
        frontend::bind(&mut out, b"", b"", &rest);
        let start = begin(&mut out, b'E');
        put_cstr(&mut out, b"");
        out.put_i32(0);
        finish(&mut out, start);
        frontend::sync(&mut out);
        self.send(&out).await?;
        self.read_until_ready().await
    }

    pub async fn close(self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.sock.write_all(&out).await;
    }

    fn protocol(&self, why: &str) -> ClientError {
        ClientError::Protocol(self.addr.clone(), why.to_string())
    }

    async fn send(&self, out: &[u8]) -> Result<(), ClientError> {
        self.sock.write_all(out).await.map_err(|e| ClientError::Io(self.addr.clone(), e))
    }

    async fn next(&mut self) -> Result<(u8, BytesMut), ClientError> {
        let limits = Limits { large: 256 << 20, small: 1 << 20 };
        match self.sock.read_backend_message(&mut self.buf, &limits).await {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(self.protocol("the server closed the connection")),
            Err(ReadError::Frame(e)) => Err(self.protocol(&e.to_string())),
            Err(ReadError::Io(e)) => Err(ClientError::Io(self.addr.clone(), e)),
        }
    }

    /// Reads to ReadyForQuery; the first error wins, rows of every result are kept.
    async fn read_until_ready(&mut self) -> Result<Rows, ClientError> {
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let (tag, body) = self.next().await?;
            match tag {
                b'D' => rows.push(self.data_row(&body)?),
                b'E' if error.is_none() => {
                    let f = ErrorFields::parse(&body);
                    error = Some(ClientError::Server { code: f.code, message: f.message });
                }
                b'Z' => return error.map_or(Ok(rows), Err),
                _ => {}
            }
        }
    }

    fn data_row(&self, body: &[u8]) -> Result<Vec<Option<String>>, ClientError> {
        let bad = || self.protocol("malformed DataRow");
        let (n, mut pos) = read_i16(body, 0).ok_or_else(bad)?;
        let mut row = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n {
            let (len, next) = read_i32(body, pos).ok_or_else(bad)?;
            pos = next;
            if len < 0 {
                row.push(None);
                continue;
            }
            let end = pos.checked_add(len as usize).filter(|&e| e <= body.len()).ok_or_else(bad)?;
            row.push(Some(String::from_utf8_lossy(&body[pos..end]).into_owned()));
            pos = end;
        }
        Ok(row)
    }
}
