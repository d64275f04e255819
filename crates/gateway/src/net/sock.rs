//! A connected socket driven by readiness: one read syscall per readable event into a caller's
//! buffer, writes attempted at once and awaited only when the kernel buffer is full.

use std::io;
use std::mem::MaybeUninit;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BufMut, BytesMut};
use pgpilot_wire::frame::{peek_backend, FrameError, Limits};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

/// Why a whole message could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The bytes are not a valid message (or one over the limits).
    Frame(FrameError),
    Io(io::Error),
}

/// The smallest free space offered to a read.
const MIN_READ: usize = 8 * 1024;

/// A client or server connection: TCP, or a Unix socket (local servers, and the plain side of a TLS bridge).
#[derive(Debug)]
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

macro_rules! each {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            Sock::Tcp($s) => $body,
            Sock::Unix($s) => $body,
        }
    };
}

impl Sock {
    /// Reads whatever is available (at least one byte) into `buf`; Ok(0) is end of stream.
    /// Memory is reserved only once the socket is readable, so an idle connection holds no buffer.
    pub async fn read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            // poll_read_ready keeps no future state: the task of an idle client stays small.
            std::future::poll_fn(|cx| each!(self, s => s.poll_read_ready(cx))).await?;
            match self.try_read_into(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// One non-blocking read into `buf`'s spare capacity.
    ///
    /// A short read means the socket was drained at that instant, so we tell tokio the readiness
    /// is used up (by answering WouldBlock from inside `try_io`); tokio only clears it if no new
    /// event arrived meanwhile. That saves the extra EAGAIN read per message that edge-triggered
    /// readiness would otherwise cost.
    pub fn try_read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        if buf.capacity() == 0 {
            if let Some(spare) = super::spare_buffers::take() {
                *buf = spare;
            }
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(MIN_READ);
        }
        let spare: &mut [MaybeUninit<u8>] = buf.spare_capacity_mut();
        let cap = spare.len();
        let mut got = 0usize;
        let result = each!(self, s => s.try_io(Interest::READABLE, || {
            let n = SockRef::from(s).recv(spare)?;
            got = n;
            if n > 0 && n < cap { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(n) }
        }));
        match result {
            Ok(n) => {
                // SAFETY: recv initialised the first n bytes of the spare capacity.
                unsafe { buf.advance_mut(n) };
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => {
                // SAFETY: as above; the WouldBlock was ours, the bytes are real.
                unsafe { buf.advance_mut(got) };
                Ok(got)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes as much as the kernel takes now.
    pub fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        each!(self, s => s.try_write(data))
    }

    pub async fn writable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| each!(self, s => s.poll_write_ready(cx))).await
    }

    /// Writes all of `data`, waiting for room when the kernel buffer is full.
    /// Reads one whole backend message into `buf` and splits it off: its tag and body. Ok(None)
    /// when the server closed the connection first.
    pub async fn read_backend_message(
        &self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<(u8, BytesMut)>, ReadError> {
        loop {
            if let Some(h) = peek_backend(buf, limits).map_err(ReadError::Frame)? {
                if buf.len() >= h.total {
                    let mut msg = buf.split_to(h.total);
                    msg.advance(5);
                    return Ok(Some((h.tag, msg)));
                }
            }
            if self.read_into(buf).await.map_err(ReadError::Io)? == 0 {
                return Ok(None);
            }
        }
    }

    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.try_write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes everything in `buf` and empties it.
    pub async fn flush_buf(&self, buf: &mut BytesMut) -> io::Result<()> {
        let r = self.write_all(buf).await;
        buf.clear();
        r
    }

    /// True when an idle connection has something to read: for a server sitting in the pool that
    /// means it closed (or sent a FATAL error before closing). Costs no syscall unless the socket
    /// was reported readable.
    pub fn has_pending_input(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let ready = each!(self, s => s.poll_read_ready(&mut cx));
        if !matches!(ready, Poll::Ready(Ok(()))) {
            return false;
        }
        let mut probe = [MaybeUninit::<u8>::uninit(); 1];
        let peeked = each!(self, s => s.try_io(Interest::READABLE, || SockRef::from(s).peek(&mut probe)));
        !matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// After a fatal error has been written: sends FIN, then reads and drops what the peer still
    /// sends (the rest of a refused message), until it closes or `limit` passes. Closed with
    /// unread input, the kernel answers with a reset, and the peer may lose the error unread.
    pub async fn linger_before_close(&self, limit: std::time::Duration) {
        let _ = each!(self, s => SockRef::from(s).shutdown(std::net::Shutdown::Write));
        let mut scratch = BytesMut::new();
        let drain = async {
            loop {
                scratch.clear();
                if !matches!(self.read_into(&mut scratch).await, Ok(n) if n > 0) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(limit, drain).await;
    }

    /// The peer address for logs and SHOW CLIENTS ("unix" for Unix sockets).
    pub fn peer(&self) -> String {
        match self {
            Sock::Tcp(s) => s.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into()),
            Sock::Unix(_) => "unix".into(),
        }
    }

    /// The address the client reached pgpilot on; None on the Unix socket.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Sock::Tcp(s) => s.local_addr().ok(),
            Sock::Unix(_) => None,
        }
    }
}

/// TCP_NODELAY on a connection's TCP socket, set before any TLS: pgpilot writes whole messages,
/// and with Nagle's algorithm the last segment of a reply over about 16 KB waited for the peer's
/// delayed ACK (40 ms). A TLS connection's session reads and writes a Unix socket pair
/// (tls.rs), so the option must be on the TCP socket underneath.
pub fn nodelay(s: &TcpStream) {
    let _ = s.set_nodelay(true);
}

/// TCP keepalive probes after 60 s of silence, every 10 s (set before any TLS, as `nodelay`).
pub fn keepalive(s: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(60))
        .with_interval(std::time::Duration::from_secs(10));
    let _ = SockRef::from(s).set_tcp_keepalive(&ka);
}
