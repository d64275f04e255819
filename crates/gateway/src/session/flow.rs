//! A server attached to a client: bytes flow both ways at once (pipelining, COPY, large results
//! never deadlock), frames are scanned in place, and the server is given back the moment the
//! transaction is over.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use pgpilot_wire::backend::{parse_parameter_status, TxnStatus};
use pgpilot_wire::error::ErrorFields;
use pgpilot_wire::frame::{peek_backend, peek_frontend, Limits};
use pgpilot_wire::{PgError, SqlState};

use super::client::{sleep_until, Ending, Session};
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
    /// The session ends; `reusable` says whether the server is in a clean state.
    End(Ending),
}

/// State of one attachment.
struct Flow {
    to_server: BytesMut,
    to_client: BytesMut,
    /// ReadyForQuery messages the server still owes.
    pending: u32,
    /// Of those, the leading ones that answer pgpilot's own injected queries (swallowed).
    swallow: u32,
    /// Extended-protocol messages sent since the last Sync.
    unsynced: bool,
    client_terminated: bool,
    /// Bytes left of a client message being passed through in pieces.
    client_pass: usize,
    server_pass: usize,
    /// The first request, kept until it is written, to resend it elsewhere if the server is dead.
    replay: Option<BytesMut>,
    xact_started: Option<Instant>,
    query_started: Option<Instant>,
    query_time_us: u64,
    requests: u64,
    last_client_activity: Instant,
    cancel_sent: Option<Instant>,
    received: u64,
    sent: u64,
}

impl Flow {
    fn new() -> Flow {
        Flow {
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            pending: 0,
            swallow: 0,
            unsynced: false,
            client_terminated: false,
            client_pass: 0,
            server_pass: 0,
            replay: None,
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
        self.pending == 0
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
            && self.to_client.is_empty()
    }
}

/// Runs the attachment until the server is released (transaction mode) or the session ends.
pub(super) async fn run_attached(s: &mut Session) -> Result<(), Ending> {
    let mut server = s.server.take().expect("a server is attached");
    let mut flow = Flow::new();
    inject_param_sync(s, &mut server, &mut flow);
    let replayable = s.mode == PoolMode::Transaction && s.status == TxnStatus::Idle && s.pinned.is_none();
    let exit = match drain_client(s, &mut flow) {
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
        flow.pending += 1;
        flow.swallow += 1;
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
                        if let Err(e) = drain_client(s, flow) {
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
                if let Some(exit) = on_timer(s, server, flow).await {
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
    if flow.pending > flow.swallow {
        if let Some(sent) = flow.cancel_sent {
            return Some(sent + CANCEL_GRACE);
        }
        return s.timeouts.query.zip(flow.query_started).map(|(t, start)| start + t);
    }
    if flow.pending == 0 && s.status != TxnStatus::Idle {
        return s.timeouts.idle_transaction.map(|t| flow.last_client_activity + t);
    }
    None
}

async fn on_timer(s: &mut Session, server: &ServerConn, flow: &mut Flow) -> Option<Exit> {
    let now = Instant::now();
    if flow.pending > flow.swallow {
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
    if flow.pending == 0 && s.status != TxnStatus::Idle {
        if let Some(t) = s.timeouts.idle_transaction {
            if now >= flow.last_client_activity + t {
                let e = PgError::fatal(SqlState::IDLE_IN_TRANSACTION_TIMEOUT, "idle_transaction_timeout");
                return Some(Exit::End(Ending::Fatal(e)));
            }
        }
    }
    None
}

/// The server closed or failed. If the first request never reached it, try another server;
/// otherwise the client is told (whatever the server sent, such as a FATAL, was already forwarded).
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

/// The attached server was dead before it saw anything: swap in another one and resend.
async fn retry_elsewhere(
    s: &mut Session,
    server: &mut ServerConn,
    flow: &mut Flow,
    request: BytesMut,
) -> Result<(), Exit> {
    let pool = server.pool().clone();
    tracing::info!(database = %s.db.name, server_id = server.id, "server connection was dead; resending the request on another");
    let (fresh, _) = pool
        .checkout()
        .await
        .map_err(|e| Exit::End(Ending::Fatal(super::welcome::checkout_error(e, &s.db.name))))?;
    let dead = std::mem::replace(server, fresh);
    pool.discard(dead, "write failed");
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

/// Moves complete client messages (and pieces of large CopyData) into the server's output.
fn drain_client(s: &mut Session, flow: &mut Flow) -> Result<(), Ending> {
    let mut pos = 0;
    let buf = &s.buf;
    loop {
        if flow.client_pass > 0 {
            let n = flow.client_pass.min(buf.len() - pos);
            flow.to_server.extend_from_slice(&buf[pos..pos + n]);
            flow.client_pass -= n;
            pos += n;
            if flow.client_pass > 0 {
                break;
            }
            continue;
        }
        let h = match peek_frontend(&buf[pos..], &s.limits) {
            Err(e) => return Err(Ending::Fatal(PgError::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string()))),
            Ok(None) => break,
            Ok(Some(h)) => h,
        };
        let available = buf.len() - pos;
        if available >= h.total {
            client_message(flow, s.status, h.tag, &buf[pos..pos + h.total])?;
            pos += h.total;
            if flow.client_terminated {
                break;
            }
        } else if h.tag == b'd' && h.total > STREAM_MIN {
            flow.to_server.extend_from_slice(&buf[pos..]);
            flow.client_pass = h.total - available;
            pos = buf.len();
        } else {
            break;
        }
    }
    s.buf.advance(pos);
    Ok(())
}

fn client_message(flow: &mut Flow, status: TxnStatus, tag: u8, msg: &[u8]) -> Result<(), Ending> {
    match tag {
        b'Q' | b'S' | b'F' => {
            if flow.pending == flow.swallow {
                flow.query_started = Some(Instant::now());
                if status == TxnStatus::Idle && flow.xact_started.is_none() {
                    flow.xact_started = flow.query_started;
                }
            }
            flow.pending += 1;
            if tag == b'S' {
                flow.unsynced = false;
            }
        }
        b'P' | b'B' | b'D' | b'E' | b'C' => flow.unsynced = true,
        b'H' | b'd' | b'c' | b'f' => {}
        b'X' => {
            flow.client_terminated = true;
            return Ok(());
        }
        other => {
            return Err(Ending::Fatal(PgError::fatal(
                SqlState::PROTOCOL_VIOLATION,
                format!("invalid frontend message type {other}"),
            )))
        }
    }
    flow.to_server.extend_from_slice(msg);
    Ok(())
}

/// Moves complete server messages (and pieces of large rows) into the client's output.
fn drain_server(s: &mut Session, server: &mut ServerConn, flow: &mut Flow) -> Result<(), Ending> {
    let mut pos = 0;
    loop {
        let buf = &server.buf;
        if flow.server_pass > 0 {
            let n = flow.server_pass.min(buf.len() - pos);
            flow.to_client.extend_from_slice(&buf[pos..pos + n]);
            flow.server_pass -= n;
            pos += n;
            if flow.server_pass > 0 {
                break;
            }
            continue;
        }
        let h = match peek_backend(&buf[pos..], &SERVER_LIMITS) {
            Err(e) => return Err(Ending::ServerGone(format!("protocol error from server: {e}"))),
            Ok(None) => break,
            Ok(Some(h)) => h,
        };
        let available = buf.len() - pos;
        if available >= h.total {
            let end = pos + h.total;
            server_message(s, server, flow, pos, end);
            pos = end;
        } else if matches!(h.tag, b'D' | b'd') && h.total > STREAM_MIN && flow.swallow == 0 {
            flow.to_client.extend_from_slice(&buf[pos..]);
            flow.server_pass = h.total - available;
            pos = buf.len();
        } else {
            server.buf.reserve(h.total - available);
            break;
        }
    }
    server.buf.advance(pos);
    Ok(())
}

fn server_message(s: &mut Session, server: &mut ServerConn, flow: &mut Flow, start: usize, end: usize) {
    let tag = server.buf[start];
    if flow.swallow > 0 {
        swallow(server, flow, start, end);
        return;
    }
    match tag {
        b'Z' => {
            flow.pending = flow.pending.saturating_sub(1);
            s.status = TxnStatus::from_byte(server.buf[start + 5]).unwrap_or(TxnStatus::Idle);
            flow.requests += 1;
            let now = Instant::now();
            if let Some(q) = flow.query_started.take() {
                flow.query_time_us += now.duration_since(q).as_micros() as u64;
                if flow.pending > 0 {
                    flow.query_started = Some(now);
                }
            }
            if s.status == TxnStatus::Idle && flow.pending == 0 {
                if let Some(x) = flow.xact_started.take() {
                    server.pool().stats.transaction(now.duration_since(x).as_micros() as u64);
                }
            }
            flow.cancel_sent = None;
        }
        b'S' => {
            if let Some((k, v)) = parse_parameter_status(&server.buf[start + 5..end]) {
                server.params.set(k, v);
                s.params.set(k, v);
                if k == "application_name" {
                    *s.reg.info.application_name.lock() = std::sync::Arc::from(v);
                }
            }
        }
        _ => {}
    }
    flow.to_client.extend_from_slice(&server.buf[start..end]);
}

/// Answers to pgpilot's own injected queries never reach the client.
fn swallow(server: &mut ServerConn, flow: &mut Flow, start: usize, end: usize) {
    let body = &server.buf[start + 5..end];
    match server.buf[start] {
        b'Z' => {
            flow.swallow -= 1;
            flow.pending -= 1;
        }
        b'S' => {
            if let Some((k, v)) = parse_parameter_status(body) {
                let (k, v) = (k.to_string(), v.to_string());
                server.params.set(&k, &v);
            }
        }
        b'E' => {
            let e = ErrorFields::parse(body);
            tracing::warn!(server_id = server.id, code = %e.code, message = %e.message, "pgpilot's parameter sync failed on the server");
            // What the server holds is now unknown: make the next client set everything again.
            server.params = Default::default();
        }
        _ => {}
    }
}
