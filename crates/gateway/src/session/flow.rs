//! A server attached to a client: bytes flow both ways at once (pipelining, COPY, large results
//! never deadlock), frames are scanned in place, and the server is given back the moment the
//! transaction is over. Client messages are handled in `frontend`, server messages in `backend`.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use pgpilot_sql::SetCommand;
use pgpilot_wire::backend::TxnStatus;
use pgpilot_wire::frame::{peek_backend, peek_frontend, Limits};
use pgpilot_wire::{PgError, SqlState};

use super::client::{sleep_until, Ending, Session};
use super::expect::{Batch, Expect, Expected, Reply};
use crate::config::PoolMode;
use crate::pool::ServerConn;

/// DataRow and CopyData messages larger than this pass through in pieces instead of being buffered whole.
const STREAM_MIN: usize = 64 * 1024;
/// Stop reading from one side while this much output to the other side is waiting.
const HIGH_WATER: usize = 256 * 1024;
/// How long a cancelled query may take to stop before its server is closed.
const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// Server messages are trusted but still bounded.
const SERVER_LIMITS: Limits = Limits { large: 1 << 30, small: 1 << 30 };

#[derive(Debug)]
enum Exit {
    /// The transaction is over and the server can go back to the pool.
    Release,
    /// The session ends.
    End(Ending),
}

/// The last CommandComplete seen, to tell a committed transaction from a rolled-back one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LastCommand {
    Commit,
    Rollback,
    Other,
}

/// State of one attachment.
pub(super) struct Flow {
    pub(super) to_server: BytesMut,
    pub(super) to_client: BytesMut,
    pub(super) expected: Expected,
    /// Extended-protocol messages sent since the last Sync: the server is mid-batch.
    pub(super) unsynced: bool,
    /// Effects of the extended batch in progress, settled at its Sync.
    pub(super) batch: Batch,
    pub(super) client_terminated: bool,
    /// Bytes left of a client (server) message being passed through in pieces.
    client_pass: usize,
    server_pass: usize,
    /// The first request, kept until it is written, to resend it elsewhere if the server is dead.
    replay: Option<BytesMut>,
    /// Rewrite named prepared statements and track session state (transaction pooling).
    pub(super) rewrite: bool,
    pub(super) max_prepared: usize,
    /// The server is in COPY IN and the client has not ended it yet.
    pub(super) copy_in_open: bool,
    /// An ErrorResponse arrived since the last ReadyForQuery.
    pub(super) batch_failed: bool,
    pub(super) last_command: LastCommand,
    /// Session-level SETs of the open transaction, applied if it commits.
    pub(super) txn_settings: Vec<SetCommand>,
    pub(super) xact_started: Option<Instant>,
    pub(super) query_started: Option<Instant>,
    pub(super) query_time_us: u64,
    pub(super) requests: u64,
    last_client_activity: Instant,
    pub(super) cancel_sent: Option<Instant>,
    received: u64,
    sent: u64,
}

impl Flow {
    fn new(s: &Session, max_prepared: usize) -> Flow {
        let rewrite = s.mode == PoolMode::Transaction;
        Flow {
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            expected: Expected::default(),
            unsynced: false,
            batch: Batch::default(),
            client_terminated: false,
            client_pass: 0,
            server_pass: 0,
            replay: None,
            rewrite,
            max_prepared,
            copy_in_open: false,
            batch_failed: false,
            last_command: LastCommand::Other,
            txn_settings: Vec::new(),
            xact_started: None,
            query_started: None,
            query_time_us: 0,
            requests: 0,
            last_client_activity: Instant::now(),
            cancel_sent: None,
            received: 0,
            sent: 0,
        }
    }

    /// Whether the server is between transactions with nothing in flight.
    fn server_clean(&self, s: &Session) -> bool {
        self.expected.ready_owed() == 0
            && !self.unsynced
            && s.status == TxnStatus::Idle
            && self.client_pass == 0
            && self.server_pass == 0
            && self.to_server.is_empty()
    }

    fn releasable(&self, s: &Session) -> bool {
        s.mode == PoolMode::Transaction
            && s.pinned.is_none()
            && self.server_clean(s)
            && self.expected.is_empty()
            && self.to_client.is_empty()
    }
}

/// Runs the attachment until the server is released (transaction mode) or the session ends.
pub(super) async fn run_attached(s: &mut Session) -> Result<(), Ending> {
    let mut server = s.server.take().expect("a server is attached");
    let max_prepared = server.pool().settings.load().max_prepared;
    let mut flow = Flow::new(s, max_prepared);
    flow.rewrite &= max_prepared > 0;
    if s.mode == PoolMode::Transaction {
        inject_param_sync(s, &mut server, &mut flow);
    }
    let replayable = s.mode == PoolMode::Transaction && s.status == TxnStatus::Idle && s.pinned.is_none();
    if s.status == TxnStatus::Idle {
        flow.xact_started = Some(Instant::now());
    }
    let exit = match drain_client(s, &mut server, &mut flow) {
        Err(e) => Exit::End(e),
        Ok(()) => {
            if replayable {
                flow.replay = Some(flow.to_server.clone());
            }
            pump(s, &mut server, &mut flow).await
        }
    };
    record_stats(&server, &flow);
    match exit {
        Exit::Release => {
            s.detach(server);
            Ok(())
        }
        Exit::End(ending) => {
            if flow.server_clean(s) && !matches!(ending, Ending::ServerGone(_)) {
                s.server = Some(server);
            } else {
                s.reg.info.server.store(None);
                let pool = server.pool().clone();
                pool.discard(server, ending_reason(&ending));
            }
            Err(ending)
        }
    }
}

fn ending_reason(e: &Ending) -> &'static str {
    match e {
        Ending::ClientGone => "client closed the connection during a transaction",
        Ending::Fatal(_) => "client session ended by pgpilot during a transaction",
        Ending::ServerGone(_) => "server connection lost",
    }
}

fn record_stats(server: &ServerConn, flow: &Flow) {
    let stats = &server.pool().stats;
    if flow.requests > 0 {
        stats.queries(flow.requests, flow.query_time_us);
    }
    stats.bytes(flow.received, flow.sent);
}

/// Before the client's request: bring the server's session parameters in line with the client's.
fn inject_param_sync(s: &Session, server: &mut ServerConn, flow: &mut Flow) {
    if let Some(query) = s.params.sync_query(&server.params) {
        flow.to_server.extend_from_slice(&query);
        flow.expected.push(Expect::Injected(Reply::Query(Batch::default())));
        server.params = s.params.clone();
    }
}

async fn pump(s: &mut Session, server: &mut ServerConn, flow: &mut Flow) -> Exit {
    loop {
        if let Err(exit) = flush_server(s, server, flow).await {
            return exit;
        }
        if flush_client(s, flow).is_err() {
            return Exit::End(Ending::ClientGone);
        }
        if flow.releasable(s) {
            return Exit::Release;
        }
        if flow.client_terminated && flow.to_client.is_empty() {
            return Exit::End(Ending::ClientGone);
        }
        let deadline = timer_deadline(s, flow);
        tokio::select! {
            biased;
            r = server.sock.read_into(&mut server.buf), if flow.to_client.len() < HIGH_WATER => {
                match r {
                    Ok(n) if n > 0 => {
                        if let Err(e) = drain_server(s, server, flow) {
                            return Exit::End(e);
                        }
                    }
                    _ => return server_lost(s, server, flow),
                }
            }
            r = s.sock.read_into(&mut s.buf), if !flow.client_terminated && flow.to_server.len() < HIGH_WATER => {
                match r {
                    Ok(n) if n > 0 => {
                        flow.received += n as u64;
                        flow.last_client_activity = Instant::now();
                        if let Err(e) = drain_client(s, server, flow) {
                            return Exit::End(e);
                        }
                    }
                    _ => return Exit::End(Ending::ClientGone),
                }
            }
            r = server.sock.writable(), if !flow.to_server.is_empty() => {
                if r.is_err() {
                    return server_lost(s, server, flow);
                }
            }
            r = s.sock.writable(), if !flow.to_client.is_empty() => {
                if r.is_err() {
                    return Exit::End(Ending::ClientGone);
                }
            }
            _ = sleep_until(deadline) => {
                if let Some(exit) = on_timer(s, server, flow) {
                    return exit;
                }
            }
            _ = s.reg.info.wake.notified() => {
                if s.reg.info.kill_requested() {
                    let e = PgError::fatal(SqlState::ADMIN_SHUTDOWN, "terminating connection due to KILL from the admin console");
                    return Exit::End(Ending::Fatal(e));
                }
            }
        }
    }
}

/// The next moment a timeout may fire: query_timeout while the server works, idle_transaction_timeout
/// while the client sits in an open transaction.
fn timer_deadline(s: &Session, flow: &Flow) -> Option<Instant> {
    if flow.expected.ready_owed() > 0 {
        if let Some(sent) = flow.cancel_sent {
            return Some(sent + CANCEL_GRACE);
        }
        return s.timeouts.query.zip(flow.query_started).map(|(t, start)| start + t);
    }
    if s.status != TxnStatus::Idle {
        return s.timeouts.idle_transaction.map(|t| flow.last_client_activity + t);
    }
    None
}

fn on_timer(s: &mut Session, server: &ServerConn, flow: &mut Flow) -> Option<Exit> {
    let now = Instant::now();
    if flow.expected.ready_owed() > 0 {
        if flow.cancel_sent.is_some_and(|t| now >= t + CANCEL_GRACE) {
            let e = PgError::fatal(
                SqlState::QUERY_CANCELED,
                "query_timeout: the query did not stop after cancellation",
            );
            return Some(Exit::End(Ending::Fatal(e)));
        }
        if flow.cancel_sent.is_none()
            && s.timeouts.query.zip(flow.query_started).is_some_and(|(t, q)| now >= q + t)
        {
            tracing::info!(client = %s.reg.info.addr, database = %s.db.name, "query_timeout: cancelling the running query");
            flow.cancel_sent = Some(now);
            let target = server.cancel.clone();
            tokio::spawn(async move {
                let _ = super::cancel::send(&target).await;
            });
        }
        return None;
    }
    if s.status != TxnStatus::Idle {
        if let Some(t) = s.timeouts.idle_transaction {
            if now >= flow.last_client_activity + t {
                let e = PgError::fatal(SqlState::IDLE_IN_TRANSACTION_TIMEOUT, "idle_transaction_timeout");
                return Some(Exit::End(Ending::Fatal(e)));
            }
        }
    }
    None
}

/// The server closed or failed: whatever it sent (a FATAL, say) is forwarded, then the client is told.
fn server_lost(s: &mut Session, server: &ServerConn, flow: &mut Flow) -> Exit {
    let why = format!("server connection {} (backend pid {}) closed", server.id, server.cancel.pid);
    let _ = flush_client(s, flow);
    s.status = TxnStatus::Idle;
    let e = PgError::fatal(SqlState::CONNECTION_FAILURE, "server closed the connection unexpectedly")
        .with_detail(
            "The server connection was lost; the transaction, if any, was rolled back by the server.",
        );
    let mut out = BytesMut::new();
    e.encode(&mut out);
    let _ = s.sock.try_write(&out);
    Exit::End(Ending::ServerGone(why))
}

async fn flush_server(s: &mut Session, server: &mut ServerConn, flow: &mut Flow) -> Result<(), Exit> {
    while !flow.to_server.is_empty() {
        match server.sock.try_write(&flow.to_server) {
            Ok(n) => {
                flow.to_server.advance(n);
                if flow.to_server.is_empty() {
                    flow.replay = None;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(_) => {
                if let Some(request) = flow.replay.take() {
                    return retry_elsewhere(s, server, flow, request).await;
                }
                return Err(server_lost(s, server, flow));
            }
        }
    }
    Ok(())
}

/// The attached server was dead before it saw anything: swap in another one and resend. The
/// request is resent as it was rewritten for the dead server, so the new one starts with a clean
/// statement registry assumption: the dead server's registrations are moved over.
async fn retry_elsewhere(
    s: &mut Session,
    server: &mut ServerConn,
    flow: &mut Flow,
    request: BytesMut,
) -> Result<(), Exit> {
    let pool = server.pool().clone();
    tracing::info!(database = %s.db.name, server_id = server.id, "server connection was dead; resending the request on another");
    let (mut fresh, _) = pool
        .checkout()
        .await
        .map_err(|e| Exit::End(Ending::Fatal(super::welcome::checkout_error(e, &s.db.name))))?;
    if !server.statements.is_empty() || !fresh.statements.is_empty() || fresh.params != server.params {
        // The rewritten request assumed the dead server's state; only a fresh state-free retry is safe.
        pool.discard(fresh, "unusable for a resend");
        return Err(server_lost(s, server, flow));
    }
    std::mem::swap(server, &mut fresh);
    pool.discard(fresh, "write failed");
    s.reg.info.server.store(Some(server.cancel.clone()));
    flow.to_server = request;
    Ok(())
}

fn flush_client(s: &Session, flow: &mut Flow) -> std::io::Result<()> {
    while !flow.to_client.is_empty() {
        match s.sock.try_write(&flow.to_client) {
            Ok(n) => {
                flow.sent += n as u64;
                flow.to_client.advance(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Handles complete client messages (and passes large CopyData through in pieces).
fn drain_client(s: &mut Session, server: &mut ServerConn, flow: &mut Flow) -> Result<(), Ending> {
    // The buffer is taken out of the session while its messages are handled, so handlers can
    // borrow the session mutably without copying each message.
    let mut buf = std::mem::take(&mut s.buf);
    let mut pos = 0;
    let result = loop {
        if flow.client_pass > 0 {
            let n = flow.client_pass.min(buf.len() - pos);
            flow.to_server.extend_from_slice(&buf[pos..pos + n]);
            flow.client_pass -= n;
            pos += n;
            if flow.client_pass > 0 {
                break Ok(());
            }
            continue;
        }
        let h = match peek_frontend(&buf[pos..], &s.limits) {
            Err(e) => break Err(Ending::Fatal(PgError::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string()))),
            Ok(None) => break Ok(()),
            Ok(Some(h)) => h,
        };
        let available = buf.len() - pos;
        if available >= h.total {
            if let Err(e) = flow.client_message(s, server, h.tag, &buf[pos..pos + h.total]) {
                break Err(e);
            }
            pos += h.total;
            if flow.client_terminated {
                break Ok(());
            }
        } else if h.tag == b'd' && h.total > STREAM_MIN {
            flow.to_server.extend_from_slice(&buf[pos..]);
            flow.client_pass = h.total - available;
            pos = buf.len();
        } else {
            break Ok(());
        }
    };
    buf.advance(pos);
    s.buf = buf;
    flow.emit_passive(s);
    result
}

/// Handles complete server messages (and passes large rows through in pieces).
fn drain_server(s: &mut Session, server: &mut ServerConn, flow: &mut Flow) -> Result<(), Ending> {
    let mut pos = 0;
    loop {
        if flow.server_pass > 0 {
            let n = flow.server_pass.min(server.buf.len() - pos);
            flow.to_client.extend_from_slice(&server.buf[pos..pos + n]);
            flow.server_pass -= n;
            pos += n;
            if flow.server_pass > 0 {
                break;
            }
            continue;
        }
        let h = match peek_backend(&server.buf[pos..], &SERVER_LIMITS) {
            Err(e) => return Err(Ending::ServerGone(format!("protocol error from server: {e}"))),
            Ok(None) => break,
            Ok(Some(h)) => h,
        };
        let available = server.buf.len() - pos;
        if available >= h.total {
            let end = pos + h.total;
            flow.server_message(s, server, pos, end);
            pos = end;
        } else if matches!(h.tag, b'D' | b'd') && h.total > STREAM_MIN && !flow.expected.front_is_injected() {
            flow.to_client.extend_from_slice(&server.buf[pos..]);
            flow.server_pass = h.total - available;
            pos = server.buf.len();
        } else {
            server.buf.reserve(h.total - available);
            break;
        }
    }
    server.buf.advance(pos);
    Ok(())
}
