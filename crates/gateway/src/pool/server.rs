//! One server connection as the pool and sessions see it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use pgpilot_wire::frontend;

use super::pool::Pool;
use crate::net::Sock;
use crate::session::params::ParamSet;

static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

/// Enough to cancel whatever this server is running, from another connection.
#[derive(Debug)]
pub struct CancelTarget {
    pub address: String,
    pub is_unix: bool,
    pub pid: i32,
    pub secret: i32,
    /// When the connection was made (SHOW SERVERS' connect_time while it is in use).
    pub connected_at: std::time::SystemTime,
    /// Cancel requests sent to this server and not yet carried out.
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// The TLS protocol and cipher suite (SHOW SERVERS' `tls`); None in the clear.
    pub tls: Option<Box<str>>,
    /// pgpilot's end of a TCP connection (SHOW SERVERS' local_addr and local_port).
    pub local: Option<std::net::SocketAddr>,
    /// Statements pgpilot had prepared on it when it last went back to its pool (SHOW SERVERS'
    /// prepared_statements): the registry itself travels with the connection.
    pub prepared: AtomicUsize,
}

impl CancelTarget {
    /// Counts a cancel in flight until the guard is dropped.
    pub fn cancelling(&self) -> CancelGuard<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        CancelGuard(self)
    }

    pub fn is_being_cancelled(&self) -> bool {
        self.in_flight.load(Relaxed) > 0
    }
}

pub struct CancelGuard<'a>(&'a CancelTarget);

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// A logged-in server connection. It counts against its pool until dropped. Always boxed, from
/// connect to close: it changes hands (pool, client) on every transaction and is large.
pub struct ServerConn {
    pub sock: Sock,
    pub id: u64,
    pub cancel: Arc<CancelTarget>,
    pub created: Instant,
    pub last_used: Instant,
    /// Values of the tracked parameters as this server has them now.
    pub params: ParamSet,
    /// Read buffer, kept for the life of the connection (servers are few, clients are many).
    pub buf: BytesMut,
    /// When the transaction in progress started, while its client looks a request up in the cache.
    pub xact_started: Option<Instant>,
    /// A client request pgpilot may send again (see session/replan.rs); kept like `buf`.
    pub replay: BytesMut,
    /// Named statements prepared here by pgpilot on clients' behalf.
    pub statements: super::statements::ServerStatements,
    /// When a client last took it from the pool (the session's clock for its first request).
    pub checked_out: Option<Instant>,
    /// The session's buffers for its next attachment.
    pub flow_buffers: crate::session::FlowBuffers,
    pub(super) slot: Slot,
}

impl ServerConn {
    pub(super) fn new(
        connected: super::connect::Connected,
        address: String,
        is_unix: bool,
        slot: Slot,
    ) -> ServerConn {
        let mut params = ParamSet::default();
        for (k, v) in &connected.params {
            params.report(k, v);
        }
        let now = Instant::now();
        ServerConn {
            cancel: Arc::new(CancelTarget {
                address,
                is_unix,
                pid: connected.pid,
                secret: connected.secret,
                connected_at: std::time::SystemTime::now(),
                in_flight: Default::default(),
                tls: connected.tls,
                local: connected.local,
                prepared: Default::default(),
            }),
            sock: connected.sock,
            id: NEXT_SERVER_ID.fetch_add(1, Relaxed),
            created: now,
            last_used: now,
            params,
            buf: connected.buf,
            statements: Default::default(),
            replay: BytesMut::new(),
            flow_buffers: Default::default(),
            checked_out: None,
            xact_started: None,
            slot,
        }
    }

    /// Between clients: buffers a large message grew are given back (a pool keeps its servers
    /// for hours, and one big row or request would stay with each). Unread bytes are kept.
    pub(super) fn shed_large_buffers(&mut self) {
        for buf in [&mut self.buf, &mut self.replay] {
            if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
                *buf = BytesMut::new();
            }
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.slot.pool
    }

    /// Tells the server goodbye; the connection is dropped (and uncounted) right after.
    pub fn terminate(self: Box<Self>) {
        let mut out = BytesMut::with_capacity(5);
        frontend::terminate(&mut out);
        let _ = self.sock.try_write(&out);
    }
}

/// The most a released server keeps of each buffer's capacity.
const KEEP_BUFFER: usize = 256 * 1024;

/// A place in a pool's count of open connections, given back when the connection is dropped.
pub struct Slot {
    pub(super) pool: Arc<Pool>,
    /// The pool generation this connection was opened in (see RECONNECT).
    pub(super) generation: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.connection_closed(Some(self.generation));
    }
}
