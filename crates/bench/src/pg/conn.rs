//! One connection: startup, authentication, and request/reply round trips.

use std::io;

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::messages::{self, Reply, RowCapture, TxStatus};
use crate::target::{Address, Endpoint};

/// An error the server sent (ErrorResponse), reduced to what reports need.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{severity}: {message} (SQLSTATE {code})")]
pub struct DbError {
    pub code: String,
    pub severity: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Opening the connection failed before the server said anything (refused, unreachable).
    #[error("cannot reach the server: {0}")]
    Unreachable(io::Error),
    #[error("the server refused the connection: {0}")]
    Refused(DbError),
    #[error("the server closed the connection: {0}")]
    Closed(DbError),
    #[error("connecting timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("the server asked for a password and none was given (set PGPASSWORD or use a pgpass file)")]
    NoPassword,
    #[error("unsupported authentication method {0}")]
    UnsupportedAuth(String),
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ConnError {
    /// The SQLSTATE a report files this error under: the server's own, or the connection classes.
    pub fn sqlstate(&self) -> &str {
        match self {
            ConnError::Refused(e) | ConnError::Closed(e) => &e.code,
            ConnError::Io(_) | ConnError::Protocol(_) => "08006",
            _ => "08001",
        }
    }

    /// The error as one of opening a connection: an I/O failure then is 08001, not a lost one.
    pub fn while_connecting(self) -> ConnError {
        match self {
            ConnError::Io(e) => ConnError::Unreachable(e),
            other => other,
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read_buf(buf).await,
            Stream::Unix(s) => s.read_buf(buf).await,
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(data).await,
            Stream::Unix(s) => s.write_all(data).await,
        }
    }
}

/// A connection owned by one client task.
pub struct Conn {
    stream: Stream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    pub backend_pid: i32,
}

impl Conn {
    pub async fn connect(ep: &Endpoint) -> Result<Conn, ConnError> {
        tokio::time::timeout(ep.connect_timeout, Self::connect_inner(ep))
            .await
            .map_err(|_| ConnError::Timeout(ep.connect_timeout))?
    }

    async fn connect_inner(ep: &Endpoint) -> Result<Conn, ConnError> {
        let stream = match &ep.address {
            Address::Tcp { host, port } => {
                let s = TcpStream::connect((host.as_str(), *port)).await?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Address::Unix { path } => Stream::Unix(UnixStream::connect(path).await?),
        };
        let mut conn = Conn {
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: BytesMut::with_capacity(4 * 1024),
            backend_pid: 0,
        };
        conn.startup(ep).await?;
        Ok(conn)
    }

    async fn startup(&mut self, ep: &Endpoint) -> Result<(), ConnError> {
        let mut params = vec![
            ("user", ep.user.as_str()),
            ("database", ep.dbname.as_str()),
            ("application_name", ep.application_name.as_str()),
            ("client_encoding", "UTF8"),
        ];
        if let Some(options) = &ep.options {
            params.push(("options", options.as_str()));
        }
        frontend::startup_message(params, &mut self.wbuf)?;
        self.flush().await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, body) = self.next_owned_frame().await?;
            match tag {
                b'R' => self.authenticate(ep, &body, &mut scram).await?,
                b'K' if body.len() >= 4 => {
                    self.backend_pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]])
                }
                b'E' => return Err(ConnError::Refused(messages::parse_error(&body))),
                b'Z' => return Ok(()),
                _ => {} // ParameterStatus, NoticeResponse, NegotiateProtocolVersion
            }
        }
    }

    async fn authenticate(
        &mut self,
        ep: &Endpoint,
        body: &[u8],
        scram: &mut Option<ScramSha256>,
    ) -> Result<(), ConnError> {
        let code = body.get(..4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let data = body.get(4..).unwrap_or(&[]);
        let password = || ep.password.as_deref().ok_or(ConnError::NoPassword);
        match code {
            Some(0) => return Ok(()),
            Some(3) => frontend::password_message(password()?, &mut self.wbuf)?,
            Some(5) => {
                let salt: [u8; 4] = data.get(..4).and_then(|s| s.try_into().ok()).ok_or_else(bad_auth)?;
                let hash = md5_hash(ep.user.as_bytes(), password()?, salt);
                frontend::password_message(hash.as_bytes(), &mut self.wbuf)?;
            }
            Some(10) => {
                let offers_scram = data.split(|&b| b == 0).any(|m| m == SCRAM_SHA_256.as_bytes());
                if !offers_scram {
                    return Err(ConnError::UnsupportedAuth(String::from_utf8_lossy(data).into_owned()));
                }
                let s = ScramSha256::new(password()?, ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.wbuf)?;
                *scram = Some(s);
            }
            Some(11) => {
                let s = scram.as_mut().ok_or_else(bad_auth)?;
                s.update(data)?;
                frontend::sasl_response(s.message(), &mut self.wbuf)?;
            }
            Some(12) => {
                scram.as_mut().ok_or_else(bad_auth)?.finish(data)?;
                return Ok(());
            }
            other => return Err(ConnError::UnsupportedAuth(format!("code {other:?}"))),
        }
        self.flush().await?;
        Ok(())
    }

    /// Queues a simple-protocol Query.
    pub fn push_query(&mut self, sql: &str) {
        messages::query(&mut self.wbuf, sql);
    }

    /// Queues Close of a named statement (closing one that does not exist is not an error).
    pub fn push_close_statement(&mut self, name: &str) {
        messages::close_statement(&mut self.wbuf, name);
    }

    /// Queues Parse (when `parse` is given: the SQL for statement `name`), Bind, optionally
    /// Describe, Execute and Sync: one round trip, like libpq's PQsendQueryParams.
    pub fn push_extended<'a>(
        &mut self,
        name: &str,
        parse: Option<&str>,
        params: impl ExactSizeIterator<Item = &'a [u8]>,
        describe: bool,
    ) {
        if let Some(sql) = parse {
            messages::parse(&mut self.wbuf, name, sql);
        }
        messages::bind(&mut self.wbuf, name, params);
        if describe {
            messages::describe_portal(&mut self.wbuf);
        }
        messages::execute(&mut self.wbuf);
        messages::sync(&mut self.wbuf);
    }

    /// Sends what was queued and reads the reply up to ReadyForQuery. Server errors are part of
    /// the reply; only a broken connection is an `Err`.
    pub async fn round_trip(&mut self, mut capture: Option<&mut RowCapture>) -> Result<Reply, ConnError> {
        self.flush().await?;
        let mut reply = Reply { status: TxStatus::Idle, rows: 0, error: None };
        loop {
            while let Some(len) = messages::complete_frame(&self.rbuf) {
                let frame = &self.rbuf[..len];
                let body = &frame[5..];
                match frame[0] {
                    b'D' => {
                        reply.rows += 1;
                        if let Some(c) = capture.as_deref_mut() {
                            c.rows += 1;
                            if c.first_row.is_none() {
                                c.first_row = Some(messages::parse_data_row(body));
                            }
                        }
                    }
                    b'T' => {
                        if let Some(c) = capture.as_deref_mut() {
                            c.columns = messages::parse_row_description(body);
                        }
                    }
                    // Only the first error of a request counts (a simple query stops at it).
                    b'E' if reply.error.is_none() => reply.error = Some(messages::parse_error(body)),
                    b'Z' => {
                        reply.status = TxStatus::from_byte(body.first().copied().unwrap_or(b'I'));
                        self.rbuf.advance(len);
                        return Ok(reply);
                    }
                    b'G' | b'H' | b'W' => {
                        return Err(ConnError::Protocol("COPY is not supported in bench scripts".into()))
                    }
                    _ => {} // CommandComplete, ParseComplete, BindComplete, notices, notifications...
                }
                self.rbuf.advance(len);
            }
            if let Err(e) = self.fill().await {
                // A FATAL error (admin shutdown, terminated backend) comes just before the close.
                return Err(reply.error.take().map_or(e, ConnError::Closed));
            }
        }
    }

    /// Runs one simple query and returns its reply (setup and cleanup, not the hot path).
    pub async fn simple(&mut self, sql: &str) -> Result<Reply, ConnError> {
        self.push_query(sql);
        self.round_trip(None).await
    }

    /// Says goodbye to the server (best effort) and closes the socket.
    pub async fn close(mut self) {
        messages::terminate(&mut self.wbuf);
        let _ = self.flush().await;
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            let result = self.stream.write_all(&self.wbuf).await;
            self.wbuf.clear();
            result?;
        }
        Ok(())
    }

    async fn fill(&mut self) -> Result<(), ConnError> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(16 * 1024);
        }
        if self.stream.read_buf(&mut self.rbuf).await? == 0 {
            return Err(ConnError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        Ok(())
    }

    async fn next_owned_frame(&mut self) -> Result<(u8, Vec<u8>), ConnError> {
        loop {
            if let Some(len) = messages::complete_frame(&self.rbuf) {
                let tag = self.rbuf[0];
                let body = self.rbuf[5..len].to_vec();
                self.rbuf.advance(len);
                return Ok((tag, body));
            }
            self.fill().await?;
        }
    }
}

fn bad_auth() -> ConnError {
    ConnError::Protocol("malformed authentication request".into())
}
