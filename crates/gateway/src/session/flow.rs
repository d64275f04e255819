//! A server attached to a client: bytes flow both ways at once (pipelining, COPY, large results
//! never deadlock), frames are scanned in place, and the server is given back the moment the
//! transaction is over. Client messages are handled in `frontend`, server messages in `backend`.

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use pgpilot_wire::backend::TxnStatus;
use pgpilot_wire::frame::{peek_backend, peek_frontend, Limits};
use pgpilot_wire::{PgError, SqlState};

use super::client::{sleep_until, Ending, Session};
use super::expect::{Batch, Expect, Expected, Reply};
use super::input_budget::LARGE_MESSAGE;
use crate::config::PoolMode;
use crate::pool::ServerConn;

/// DataRow and CopyData messages larger than this pass through in pieces instead of being buffered whole.
const STREAM_MIN: usize = 64 * 1024;
/// Stop reading from one side while this much output to the other side is waiting.
const HIGH_WATER: usize = 256 * 1024;
/// How long a cancelled query may take to stop before its server is closed.
const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// Server messages are trusted but still bounded.
pub(super) const SERVER_LIMITS: Limits = Limits { large: 1 << 30, small: 1 << 30 };

#[derive(Debug)]
enum Exit {
    /// The transaction is over and the server can go back to the pool.
    Release,
    /// The server was lost before it saw or answered the request: these client bytes go through
    /// routing again, to another server.
    Retry(BytesMut),
    /// Between requests of a read-only transaction: the session looks the next one up in the
    /// cache, with the server still attached.
    StepOut,
    /// The server closed between transactions, holding nothing of the client's: it is dropped
    /// and the client, told nothing, goes on with another.
    ServerEnded,
    /// The server failed the client's settings before the client's request was sent: it is
    /// dropped and the request goes to another (counted as a retry).
    Moved,
    /// The session ends.
    End(Ending),
}

/// How many times one request may be moved to another server.
pub(super) const MAX_RETRIES: u8 = 2;

/// An attachment's buffers, kept on its server between attachments so that a transaction
/// allocates none of them (servers are few; clients are many and keep nothing while idle).
#[derive(Debug, Default)]
pub struct FlowBuffers {
    to_server: BytesMut,
    to_client: BytesMut,
    client_input: BytesMut,
    expected: Expected,
}

/// A buffer that grew past this (a large result, a big batch) is not kept: a server holds at most
/// three of this size between attachments, whatever it once carried.
const KEEP_CAPACITY: usize = 16 * 1024;

impl FlowBuffers {
    fn kept(mut buf: BytesMut) -> BytesMut {
        buf.clear();
        // Writing moves a buffer's start forward, and capacity() counts only the room past it: a
        // buffer that carried a 200 MB message was kept with the server, its whole allocation
        // with it. On an empty buffer try_reclaim succeeds only when the whole allocation, the
        // room behind the start included, holds the amount asked (and moves the start back).
        // The usual small buffer costs one call.
        if buf.capacity() <= KEEP_CAPACITY && !buf.try_reclaim(KEEP_CAPACITY + 1) {
            return buf;
        }
        if buf.try_reclaim(super::input_budget::LARGE_MESSAGE) {
            drop(buf);
            crate::memory::give_back();
        }
        BytesMut::new()
    }
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
    /// The client's bytes handled so far, kept while the request can still move to another server
    /// (`keep_input`).
    client_input: BytesMut,
    keep_input: bool,
    /// Whether a lost server may be replaced even after the request reached it (reads only).
    retry_after_send: bool,
    /// Bytes of ParameterStatus answering pgpilot's own settings statements, added to
    /// `to_client` by the drain under way: they do not stop the request from moving.
    pub(super) settings_told: usize,
    written_any: bool,
    /// Client input is left unread: the next request must start on another server.
    hold_client: bool,
    /// Client input is left unhandled until the client's requests in flight are answered: the
    /// next one is answered by pgpilot from the transaction status they leave.
    await_answers: bool,
    /// The client's request waits until the server has the client's settings (inject_param_sync)
    /// and the checks of fresh statement copies are answered (row_shape.rs).
    pub(super) param_sync: ParamSync,
    /// Fresh copies of statements are being described before the request (row_shape.rs).
    pub(super) checking_copies: bool,
    /// The request at the front of the client's input had its copies checked: it goes ahead.
    pub(super) copies_checked_for_request: bool,
    /// A check of the request failed on a stale copy and the copies are being checked again,
    /// freshly prepared (row_shape.rs): once per request.
    pub(super) copies_rechecked: bool,
    /// The prepare clock when the server was last between transactions: the copies of statements
    /// prepared since are dropped if the transaction rolls back (row_shape.rs).
    pub(super) transaction_tick: u64,
    /// The server's FATAL reached the client: when the server then closes, nothing more is said.
    pub(super) server_said_fatal: bool,
    /// The server said it is closing (terminated, shut down) while it held nothing of the
    /// client's: in transaction pooling that is the pool's loss, not the client's (backend.rs).
    pub(super) server_ended_idle: bool,
    /// A check's error inside a transaction, which the client's own Bind would have met: it
    /// stands in for the 25P02 the client's request meets in the transaction the check failed.
    pub(super) check_error: Option<Box<[u8]>>,
    /// The error of pgpilot's own PREPARE of the client's statement (expect.rs
    /// `replays_sql_prepare`): it stands in for the 26000 or 25P02 the client's EXECUTE meets.
    pub(super) replay_error: Option<Box<[u8]>>,
    /// The client's last COMMIT or ROLLBACK answered was a ROLLBACK (ROLLBACK TO SAVEPOINT's tag
    /// too; a COMMIT after it says otherwise).
    pub(super) ended_by_rollback: bool,
    /// The server said COMMIT since the last ReadyForQuery (AND CHAIN keeps a transaction open).
    pub(super) commit_seen: bool,
    /// The server said ROLLBACK (of a savepoint too) in the transaction in progress: row types
    /// learned in it may not hold after it (row_shape.rs).
    pub(super) rollback_seen: bool,
    /// A ROLLBACK (or ROLLBACK TO) ran in the request under way (backend.rs apply_batch).
    pub(super) rollback_in_request: bool,
    /// Statements whose server copy was described inside the transaction in progress (row_shape.rs).
    pub(super) provisional_shapes: Vec<u64>,
    /// The pgpilot-prepared statement the unnamed portal was bound from (its Describe tells the
    /// client that statement's row type).
    pub(super) unnamed_portal_statement: Option<std::sync::Arc<crate::pool::statements::PreparedStatement>>,
    /// Extended-protocol statements pgpilot answers itself (local_statements.rs).
    pub(super) local: super::local_statements::LocalStatements,
    /// A settings sync failed: what the server holds is unknown.
    pub(super) settings_unknown: bool,
    /// RESET ALL or DISCARD ALL gave the server its own defaults: the client's login values go
    /// back once the request is done.
    pub(super) resync_params: bool,
    /// The request creates, alters or drops a function: the catalog is read again once it commits.
    pub(super) function_ddl: bool,
    /// Stopped before a request inside a read-only transaction, for the session to look it up in
    /// the cache (txn_cache.rs); the server stays attached.
    step_out: bool,
    /// The request at the front was looked up already: send it on.
    pub(super) consulted: bool,
    /// The request at the front was just routed to this server: no need to ask again.
    placed_first: bool,
    /// Routing's quick look at that request, when it is a simple Query.
    pub(super) first_look: Option<pgpilot_sql::QuickLook>,
    /// The server's unnamed statement is the client's (or, like the client's, gone): the client
    /// parsed it, or sent a simple Query, during this attachment.
    pub(super) unnamed_in_step: bool,
    pub(super) replan: super::replan::Replan,
    /// The batch so far holds only Close messages: a Parse after them still begins it for
    /// [`super::replan`] (pgJDBC closes the statement the server refused, then prepares anew).
    pub(super) only_closes: bool,
    /// A ParameterDescription held back until its statement's RowDescription arrives: a Describe
    /// that fails on a stale server copy is run again, and the client must see one answer.
    pub(super) held_parameters: Option<Box<[u8]>>,
    /// Rewrite named prepared statements (transaction pooling, unless max_prepared_statements = 0).
    pub(super) rewrite: bool,
    /// Track SET and pinning effects (transaction pooling): the server is someone else's next.
    pub(super) track_session: bool,
    pub(super) max_prepared: usize,
    /// The server is in COPY IN and the client has not ended it yet.
    pub(super) copy_in_open: bool,
    /// The unsynced batch only prepares and describes statements (Parse, Describe and Close of
    /// statements, Flush): no portal, nothing run. See `end_describe_batch`.
    pub(super) describe_only: bool,
    /// An ErrorResponse arrived since the last ReadyForQuery.
    pub(super) batch_failed: bool,
    /// An extended-protocol statement failed and the client's Sync has not come yet: the server
    /// discards everything until it does.
    pub(super) server_skipping: bool,
    /// Settings the open transaction changed, read back from the server when it ends.
    pub(super) settings_to_read: Vec<Box<str>>,
    /// Settings a RESET in the transaction may have reset (backend.rs check_reset_later).
    pub(super) resets_to_check: Vec<Box<str>>,
    pub(super) xact_started: Option<Instant>,
    pub(super) query_started: Option<Instant>,
    pub(super) query_time_us: u64,
    pub(super) requests: u64,
    pub(super) prepared: crate::stats::PreparedCounts,
    /// When the client's bytes last arrived (or the server was taken for them): the start of the
    /// requests among them, for timing, without reading the clock per request.
    pub(super) last_client_activity: Instant,
    /// When the server last answered a request with ReadyForQuery: a client in a transaction is
    /// idle from then (or from its own last message, whichever is later), not while its
    /// statement runs.
    pub(super) last_answer: Instant,
    /// When the request that got this server arrived, for SHOW STATS' query time (statement
    /// statistics time the server alone).
    pub(super) arrived: Option<Instant>,
    /// When the server's bytes now being handled arrived: the clock of everything they finish
    /// (read once per arrival, not per message).
    pub(super) server_activity: Instant,
    pub(super) cancel_sent: Option<Instant>,
    received: u64,
    sent: u64,
    /// What the unnamed statement and the last bound portal run, for statistics.
    pub(super) unnamed_query: Option<crate::insight::QueryKey>,
    pub(super) portal_query: Option<crate::insight::QueryKey>,
    pub(super) portal_parameters: Option<Vec<Option<String>>>,
    /// The statistics records of portals read in pieces, between their Executes.
    #[allow(clippy::vec_box)] // each record travels boxed in the expectation queue
    pub(super) suspended: Vec<Box<super::observe::Observed>>,
    /// Statements completed by the server bytes being handled (statistics).
    pub(super) finished: super::observe::Finished,
    /// The result cache is on for this database: writes are noted for invalidation.
    pub(super) cache_on: bool,
    /// A cache miss being filled from the first answer of this attachment.
    pub(super) capture: Option<Box<crate::cache::Fill>>,
    /// What the open transaction's writes invalidate when it ends.
    pub(super) invalidation: crate::cache::Invalidation,
    /// What the last unnamed Parse invalidates, for its Binds.
    pub(super) unnamed_invalidation: Option<crate::cache::Invalidation>,
    /// Names of statements whose Parse the server skipped after an error, by statement hash: a
    /// Bind pipelined behind them fails naming pgpilot's copy, and the client is told its own.
    pub(super) skipped_names: Vec<(u64, Box<[u8]>)>,
}

impl Flow {
    fn new(s: &Session, max_prepared: usize, buffers: FlowBuffers, now: Instant) -> Flow {
        let rewrite = s.mode == PoolMode::Transaction;
        Flow {
            to_server: buffers.to_server,
            to_client: buffers.to_client,
            expected: buffers.expected,
            unsynced: false,
            batch: Batch::default(),
            client_terminated: false,
            client_pass: 0,
            server_pass: 0,
            client_input: buffers.client_input,
            keep_input: false,
            retry_after_send: false,
            settings_told: 0,
            written_any: false,
            hold_client: false,
            await_answers: false,
            param_sync: ParamSync::None,
            checking_copies: false,
            copies_checked_for_request: false,
            copies_rechecked: false,
            transaction_tick: crate::pool::statements::prepare_clock(),
            check_error: None,
            replay_error: None,
            server_said_fatal: false,
            server_ended_idle: false,
            local: Default::default(),
            unnamed_portal_statement: None,
            provisional_shapes: Vec::new(),
            ended_by_rollback: false,
            commit_seen: false,
            rollback_seen: false,
            rollback_in_request: false,
            settings_unknown: false,
            resync_params: false,
            function_ddl: false,
            step_out: false,
            consulted: false,
            placed_first: false,
            first_look: None,
            unnamed_in_step: false,
            replan: Default::default(),
            only_closes: false,
            held_parameters: None,
            rewrite,
            track_session: rewrite,
            max_prepared,
            copy_in_open: false,
            describe_only: true,
            batch_failed: false,
            server_skipping: false,
            settings_to_read: Vec::new(),
            resets_to_check: Vec::new(),
            xact_started: None,
            query_started: None,
            query_time_us: 0,
            requests: 0,
            prepared: Default::default(),
            last_client_activity: now,
            last_answer: now,
            arrived: None,
            server_activity: now,
            cancel_sent: None,
            received: 0,
            sent: 0,
            unnamed_query: None,
            portal_query: None,
            portal_parameters: None,
            suspended: Vec::new(),
            finished: Default::default(),
            cache_on: s.db.cache.enabled(),
            capture: None,
            invalidation: Default::default(),
            unnamed_invalidation: None,
            skipped_names: Vec::new(),
        }
    }

    /// The buffers, emptied, for the server to keep until its next attachment.
    fn into_buffers(self) -> FlowBuffers {
        let mut expected = self.expected;
        expected.clear();
        FlowBuffers {
            to_server: FlowBuffers::kept(self.to_server),
            to_client: FlowBuffers::kept(self.to_client),
            client_input: FlowBuffers::kept(self.client_input),
            expected,
        }
    }

    /// The request can no longer move to another server: its bytes need not be kept.
    fn stop_keeping_input(&mut self) {
        self.keep_input = false;
        self.client_input.clear();
    }

    /// Whether the request may still be sent to another server after losing this one.
    fn may_move(&self) -> bool {
        self.keep_input && (self.retry_after_send || !self.written_any)
    }

    /// The request's bytes, when it may still be sent to another server after losing this one.
    fn input_to_retry(&mut self) -> Option<BytesMut> {
        let movable = self.may_move();
        self.keep_input = false;
        movable.then(|| std::mem::take(&mut self.client_input))
    }

    /// Whether the server is between transactions with nothing in flight: one with answers still
    /// on the way would hand them to its next client.
    fn server_clean(&self, s: &Session) -> bool {
        // (An empty queue owes no ReadyForQuery either.)
        self.expected.is_empty()
            && !self.unsynced
            // An extended-protocol COPY FROM STDIN owes no ReadyForQuery (the server dropped the
            // Sync behind it) but holds the server until the client ends it.
            && !self.copy_in_open
            && s.status == TxnStatus::Idle
            && self.client_pass == 0
            && self.server_pass == 0
            && self.to_server.is_empty()
    }

    /// asyncpg prepares with Parse, Describe and Flush, and sends its Sync only with the Bind and
    /// Execute that use the statement, maybe much later: until then the server holds an implicit
    /// transaction open for it, and a pool of such clients is used up by statements prepared and
    /// not yet run. Once such a batch is answered without error, outside a transaction, and the
    /// client has nothing more on the way, pgpilot ends it with a Sync of its own and lets the
    /// server go: the statements live on in pgpilot's registry, and the client's own Sync is
    /// answered by pgpilot.
    fn may_end_describe_batch(&self, s: &Session) -> bool {
        self.unsynced
            && self.describe_only
            && self.rewrite
            && !self.batch_failed
            && !self.server_skipping
            && s.status == TxnStatus::Idle
            && s.pinned.is_none()
            && s.buf.is_empty()
            && self.batch.is_empty()
            && self.expected.is_empty()
            && self.to_server.is_empty()
            && self.to_client.is_empty()
    }

    fn end_describe_batch(&mut self) {
        self.inject_sync();
        self.unsynced = false;
    }

    fn releasable(&self, s: &Session) -> bool {
        s.mode == PoolMode::Transaction
            && s.pinned.is_none()
            && self.server_clean(s)
            && self.to_client.is_empty()
    }
}

/// Runs the attachment until the server is released (transaction mode) or the session ends.
/// `just_placed`: the server was attached for the request at the front of the client's input.
pub(super) async fn run_attached(s: &mut Session, just_placed: bool) -> Result<(), Ending> {
    let mut server = s.server.take().expect("a server is attached");
    let max_prepared = server.pool().settings.load().max_prepared;
    let buffers = std::mem::take(&mut server.flow_buffers);
    // The request arrived just before the checkout that gave this server out.
    let now = server.checked_out.take().unwrap_or_else(Instant::now);
    // As in PgBouncer, a request's time and its transaction's count from its arrival, the wait
    // for a server included (the wait alone is total_wait_time).
    let arrived = if just_placed { now.checked_sub(s.wait_before_send).unwrap_or(now) } else { now };
    let mut flow = Flow::new(s, max_prepared, buffers, now);
    flow.arrived = Some(arrived);
    flow.received = std::mem::take(&mut s.unattached_received);
    flow.consulted = std::mem::take(&mut s.consulted);
    flow.placed_first = just_placed;
    // Routing's look belongs to the request it just placed, and to no later one.
    flow.first_look = if just_placed { s.routed_look.take() } else { None };
    flow.rewrite &= max_prepared > 0;
    flow.capture = s.pending_fill.take();
    let replica = s.attachment.as_ref().filter(|a| a.is_replica(s.db.primary_index())).map(|a| a.backend);
    if replica.is_some() && flow.capture.as_ref().is_some_and(|f| f.replica != replica) {
        // A replica may not have replayed commits made before the fill took its versions: what it
        // answers would be stored as fresh. Only the primary's answers are stored, and those of
        // the replica the fill was placed on after it had replayed them (route.rs place_fill).
        flow.capture = None;
        s.shared.cache.stats.bypass(crate::cache::Bypass::ReplicaAnswer);
    }
    // In session pooling too: the server comes from the pool with its own settings (and those a
    // server_reset_query left), not the ones the client logged in with.
    inject_param_sync(s, &mut server, &mut flow);
    flow.function_ddl = s.attachment.as_ref().is_some_and(|a| a.creates_unlogged);
    if std::mem::take(&mut s.tell_reported) {
        s.params.write_reported(&mut flow.to_client);
    }
    let began_here = s.deferred_begin.is_some();
    super::deferred_begin::inject_deferred_begin(s, &mut flow);
    let movable = s.mode == PoolMode::Transaction
        && s.status == TxnStatus::Idle
        && s.pinned.is_none()
        && s.retries < MAX_RETRIES;
    if movable {
        flow.keep_input = true;
        flow.retry_after_send = s.attachment.as_ref().is_some_and(|a| !a.may_write);
    }
    flow.xact_started =
        if s.status == TxnStatus::Idle || began_here { Some(arrived) } else { server.xact_started.take() };
    let drained = match flow.param_sync {
        ParamSync::Waiting => Ok(()),
        _ => drain_client(s, &mut server, &mut flow),
    };
    let exit = match drained {
        Err(e) => Exit::End(e),
        Ok(()) => pump(s, &mut server, &mut flow).await,
    };
    if matches!(exit, Exit::End(Ending::ClientGone)) {
        finish_own_requests(s, &mut server, &mut flow).await;
    }
    if let Exit::Retry(input) = &exit {
        // Its messages are handled again on the next server, and counted there.
        for frame in pgpilot_wire::FrontendFrames::new(input, &s.limits) {
            flow.prepared.uncount_client_message(frame.tag);
        }
    }
    flow.record_stats(&server);
    if !matches!(exit, Exit::Release) && flow.invalidation != crate::cache::Invalidation::Nothing {
        // The transaction's outcome is unknown (a COMMIT may have run): invalidate anyway.
        s.invalidate(&flow.invalidation);
    }
    let xact_started = flow.xact_started.take();
    // After a failed settings statement the server may hold an earlier client's values: it is
    // never given to another client.
    let settings_unknown = flow.settings_unknown;
    let clean = flow.server_clean(s) && !settings_unknown;
    server.flow_buffers = flow.into_buffers();
    match exit {
        Exit::Release => {
            s.retries = 0;
            let discard = settings_unknown
                .then_some("a statement pgpilot ran for the session (its settings or statements) failed");
            s.detach_with(server, discard);
            Ok(())
        }
        Exit::ServerEnded => {
            s.retries = 0;
            s.detach_with(server, Some("the server closed it between transactions"));
            Ok(())
        }
        Exit::Moved => {
            s.retries += 1;
            s.detach_with(server, Some("it failed a client's settings"));
            if s.reg.info.take_cancel() {
                // The client's cancel reached the settings ahead of its request (a SET waiting on
                // a lock): the request, unsent, is given up as cancelled, not moved and run.
                s.record_unsent(SqlState::QUERY_CANCELED.code(), arrived.elapsed());
                return s.drop_cancelled_request().await;
            }
            Ok(())
        }
        Exit::StepOut => {
            server.xact_started = xact_started;
            s.server = Some(server);
            Ok(())
        }
        // Boxed: the judgement is rare and large, and this future is allocated per request.
        Exit::Retry(input) => match Box::pin(super::lost::judge(&server, now.elapsed())).await {
            super::lost::Loss::Terminated(warning) => {
                // The administrator meant to stop this request: it does not run again elsewhere.
                let _ = s.sock.write_all(&warning).await;
                s.status = TxnStatus::Idle;
                let why = format!(
                    "server connection {} (backend pid {}) terminated by an administrator",
                    server.id, server.cancel.pid
                );
                close_attached(s, server, "terminated by an administrator");
                Err(Ending::ServerGone(why))
            }
            loss => {
                s.retries += 1;
                retry_elsewhere(s, server, input, matches!(loss, super::lost::Loss::ServerDown));
                Ok(())
            }
        },
        Exit::End(ending) => {
            if clean && !matches!(ending, Ending::ServerGone(_)) {
                s.server = Some(server);
            } else {
                close_attached(s, server, ending_reason(&ending));
            }
            Err(ending)
        }
    }
}

/// The attachment ends with its server closed, not given back to its pool.
fn close_attached(s: &Session, server: Box<ServerConn>, why: &str) {
    *s.reg.info.server.lock() = None;
    server.pool().clone().discard(server, why);
}

/// The server connection died before answering: it is dropped (a replica that is `down` is
/// banned) and the client's request goes back in front of its input, to be routed again.
fn retry_elsewhere(s: &mut Session, server: Box<ServerConn>, input: BytesMut, down: bool) {
    tracing::warn!(database = %s.db.name, server = %server.pool().id.server, "server lost before answering; the request moves to another server");
    close_attached(s, server, "lost before answering");
    if let Some(a) = s.attachment.take() {
        if down && a.is_replica(s.db.primary_index()) {
            let ban = s.db.routing.load().ban_time.get().as_millis() as u64;
            s.db.backends[a.backend].ban(ban, "connection lost");
        }
    }
    s.reg.info.set_state(crate::registry::ClientState::Idle);
    s.status = TxnStatus::Idle;
    let mut buf = input;
    buf.extend_from_slice(&s.buf);
    s.buf = buf;
}

fn ending_reason(e: &Ending) -> &'static str {
    match e {
        Ending::ClientGone => "client closed the connection during a transaction",
        Ending::Fatal(_) => "client session ended by pgpilot during a transaction",
        Ending::ServerGone(_) => "server connection lost",
    }
}

impl Flow {
    /// Adds what this attachment did since the last call to its pool's statistics: at the end of
    /// each attachment, and at the end of each transaction of one that spans many (session
    /// pooling, a pinned client), so SHOW STATS moves while such a client stays connected.
    pub(super) fn record_stats(&mut self, server: &ServerConn) {
        let stats = &server.pool().stats;
        if self.requests > 0 {
            stats.queries(std::mem::take(&mut self.requests), std::mem::take(&mut self.query_time_us));
        }
        if self.received > 0 || self.sent > 0 {
            stats.bytes(std::mem::take(&mut self.received), std::mem::take(&mut self.sent));
        }
        if !self.prepared.is_empty() {
            stats.prepared(std::mem::take(&mut self.prepared));
        }
    }
}

/// Before the client's request: bring the server's session parameters in line with the client's.
/// The client's request is sent only once the settings are in place: if they fail (a role the
/// user lost, a startup option the server refuses), the server still has the previous client's
/// values, and nothing of this client may run under them.
pub(super) fn inject_param_sync(s: &Session, server: &mut ServerConn, flow: &mut Flow) {
    if let Some(query) = s.params.sync_query(&server.params) {
        flow.to_server.extend_from_slice(&query);
        flow.expected.push(Expect::Injected(Reply::ParamSync));
        flow.unnamed_out_of_step();
        flow.param_sync = ParamSync::Waiting;
        server.params = s.params.clone();
    }
}

/// Where a flow's settings sync stands.
#[derive(Debug)]
pub(super) enum ParamSync {
    None,
    Waiting,
    Done,
    /// The server refused them: the session ends and the server is closed (its state is unknown).
    Failed(PgError),
    /// The server ended instead (FATAL), or the sync was cancelled: the client's request, unsent,
    /// goes to another server.
    Moved,
}

impl Flow {
    /// A DEALLOCATE is answered by pgpilot from the transaction status the client's requests in
    /// flight leave, so it waits for their answers; not behind an extended batch without its Sync
    /// or a COPY, whose answers the server sends only after more of the client's input.
    fn must_await_answers(&self, tag: u8, msg: &[u8]) -> bool {
        tag == b'Q'
            && !self.unsynced
            && !self.copy_in_open
            && self.expected.client_pending()
            && super::frontend::may_deallocate(msg)
    }
}

/// After the server answered: handles the client input that waited for the answers in flight.
fn after_answers(s: &mut Session, server: &mut ServerConn, flow: &mut Flow) -> Result<(), Exit> {
    if flow.await_answers && !flow.expected.client_pending() && !flow.server_ended_idle {
        flow.await_answers = false;
        drain_client(s, server, flow).map_err(Exit::End)?;
    }
    Ok(())
}

/// After the server answered: sends the request that waited for the settings, or ends the
/// session when they failed.
fn after_param_sync(s: &mut Session, server: &mut ServerConn, flow: &mut Flow) -> Result<(), Exit> {
    match std::mem::replace(&mut flow.param_sync, ParamSync::None) {
        // The server said it is closing right after the settings were answered (in the same
        // read): the request stays in the client's buffer for the next server. Drained here, it
        // went to the closing server and was lost, and the client waited for ever (helper-161).
        ParamSync::Done if flow.server_ended_idle => Ok(()),
        ParamSync::Done => drain_client(s, server, flow).map_err(Exit::End),
        ParamSync::Failed(e) => Err(Exit::End(Ending::Fatal(e))),
        ParamSync::Moved => Err(Exit::Moved),
        other => {
            flow.param_sync = other;
            Ok(())
        }
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
        if flow.server_ended_idle && flow.to_client.is_empty() {
            return Exit::ServerEnded;
        }
        if flow.releasable(s) {
            return Exit::Release;
        }
        if flow.may_end_describe_batch(s) {
            flow.end_describe_batch();
            continue;
        }
        if flow.step_out && flow.expected.is_empty() && flow.to_client.is_empty() && flow.to_server.is_empty()
        {
            return Exit::StepOut;
        }
        if flow.client_terminated && flow.to_client.is_empty() {
            return Exit::End(Ending::ClientGone);
        }
        if let Some(exit) = closing_between_transactions(s, flow) {
            return exit;
        }
        let deadline = timer_deadline(s, flow);
        tokio::select! {
            biased;
            r = server.sock.read_into(&mut server.buf), if flow.to_client.len() < HIGH_WATER && !flow.server_ended_idle => {
                match r {
                    Ok(n) if n > 0 && flow.may_move() && super::lost::ends_with_closing_warning(&server.buf) => {
                        // A server shutting down warns before it closes; the request may still move.
                    }
                    Ok(n) if n > 0 => {
                        flow.server_activity = Instant::now();
                        let told_before = flow.to_client.len();
                        flow.settings_told = 0;
                        if let Err(e) = drain_server(s, server, flow) {
                            return Exit::End(e);
                        }
                        if let Err(exit) = after_answers(s, server, flow) {
                            return exit;
                        }
                        if let Err(exit) = after_param_sync(s, server, flow) {
                            return exit;
                        }
                        if flow.to_client.len() > told_before + flow.settings_told {
                            // The client has an answer: the request can no longer move. (What
                            // the server said of settings pgpilot made for the client does not
                            // count: it holds on any server.)
                            flow.stop_keeping_input();
                        }
                    }
                    _ => {
                        if let Some(input) = flow.input_to_retry() {
                            return Exit::Retry(input);
                        }
                        return server_lost(s, server, flow);
                    }
                }
            }
            r = s.sock.read_into(&mut s.buf), if !flow.client_terminated && !flow.server_ended_idle && !flow.hold_client && !flow.await_answers && !matches!(flow.param_sync, ParamSync::Waiting) && flow.to_server.len() < HIGH_WATER => {
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
            _ = s.reg.info.wake.wait() => {
                // Timeouts changed by a reload or SET apply to this very wait (next round).
                s.refresh_timeouts();
                if s.reg.info.kill_requested() {
                    if flow.expected.ready_owed() > 0 {
                        // Closed mid-statement, the server would run it to its end, locks held,
                        // for nobody (a KILL, or shutdown_timeout reached): it is cancelled.
                        let cancel = super::cancel::send(&server.cancel);
                        let _ = tokio::time::timeout(KILL_CANCEL_WAIT, cancel).await;
                    }
                    let why = if s.reg.info.server_fenced() {
                        "terminating connection: its server is no longer the primary (failover), and writes there would be lost"
                    } else if s.shared.phase() == crate::shared::Phase::Running {
                        "terminating connection due to KILL from the admin console"
                    } else {
                        "terminating connection: pgpilot is shutting down (shutdown_timeout reached)"
                    };
                    let e = PgError::fatal(SqlState::ADMIN_SHUTDOWN, why);
                    return Exit::End(Ending::Fatal(e));
                }
                if let Some(exit) = closing_between_transactions(s, flow) {
                    return exit;
                }
            }
        }
    }
}

/// How long a killed session waits to deliver the cancel of its running statement.
const KILL_CANCEL_WAIT: Duration = Duration::from_millis(500);

/// Between transactions, a client asked to close (shutdown, its database removed) that keeps its
/// server (session pooling, or pinned) closes now like any idle client, instead of holding on.
/// Looked at whenever the server is clean, not only when woken: the wake-up may have come while a
/// transaction was still open.
fn closing_between_transactions(s: &Session, flow: &Flow) -> Option<Exit> {
    let quiet = flow.server_clean(s) && flow.to_client.is_empty();
    if !quiet || !s.reg.info.close_requested() {
        return None;
    }
    let e = PgError::fatal(SqlState::ADMIN_SHUTDOWN, "pgpilot is closing this connection");
    Some(Exit::End(Ending::Fatal(e)))
}

/// The next moment a timeout may fire: query_timeout while the server works, idle_transaction_timeout
/// while the client sits in an open transaction.
fn timer_deadline(s: &Session, flow: &Flow) -> Option<Instant> {
    if flow.expected.answer_owed() {
        if let Some(sent) = flow.cancel_sent {
            return Some(sent + CANCEL_GRACE);
        }
        return s.timeouts.query().zip(flow.query_started).map(|(t, start)| start + t);
    }
    if idles_in_transaction(s, flow) {
        return s.timeouts.idle_transaction().map(|t| idle_in_transaction_since(flow) + t);
    }
    None
}

/// Whether the client keeps a transaction open with nothing in flight: an explicit one, or the
/// implicit one of a request it ended with Flush and has not synced (the server holds it open, as
/// PgBouncer's query_timeout sees a request without its ReadyForQuery).
fn idles_in_transaction(s: &Session, flow: &Flow) -> bool {
    s.status != TxnStatus::Idle || flow.unsynced
}

/// Since when the client has kept its transaction open without a request in flight: its last
/// message, or the server's last answer (to a request ended by Flush, no ReadyForQuery marks it).
fn idle_in_transaction_since(flow: &Flow) -> Instant {
    flow.last_client_activity.max(flow.last_answer).max(flow.server_activity)
}

fn on_timer(s: &mut Session, server: &ServerConn, flow: &mut Flow) -> Option<Exit> {
    let now = Instant::now();
    if flow.expected.answer_owed() {
        if flow.cancel_sent.is_some_and(|t| now >= t + CANCEL_GRACE) {
            let e = PgError::fatal(
                SqlState::QUERY_CANCELED,
                "query_timeout: the query did not stop after cancellation",
            );
            return Some(Exit::End(Ending::Fatal(e)));
        }
        if flow.cancel_sent.is_none()
            && s.timeouts.query().zip(flow.query_started).is_some_and(|(t, q)| now >= q + t)
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
    if idles_in_transaction(s, flow) {
        if let Some(t) = s.timeouts.idle_transaction() {
            if now >= idle_in_transaction_since(flow) + t {
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
    if flow.server_said_fatal {
        return Exit::End(Ending::ServerGone(why));
    }
    let e = PgError::fatal(SqlState::CONNECTION_FAILURE, "server closed the connection unexpectedly")
        .with_detail(
            "The server connection was lost; the transaction, if any, was rolled back by the server.",
        );
    let mut out = BytesMut::new();
    e.encode(&mut out);
    let _ = s.sock.try_write(&out);
    Exit::End(Ending::ServerGone(why))
}

/// The client left while only pgpilot's own statements were unanswered (reading settings back
/// after its COMMIT), or said goodbye (Terminate) right behind its last request: the answers are
/// awaited, briefly, as PostgreSQL finishes a request sent before Terminate, so that the server
/// goes back to its pool in a known state instead of being closed.
async fn finish_own_requests(s: &mut Session, server: &mut ServerConn, flow: &mut Flow) {
    let own_only = !flow.expected.client_pending() && s.status == TxnStatus::Idle;
    let worth_waiting = !flow.expected.is_empty()
        && (own_only || flow.client_terminated)
        && !flow.unsynced
        && flow.client_pass == 0;
    if !worth_waiting {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while !flow.expected.is_empty() {
        if flush_server(s, server, flow).await.is_err() {
            return;
        }
        match tokio::time::timeout_at(deadline, server.sock.read_into(&mut server.buf)).await {
            Ok(Ok(n)) if n > 0 => {
                if drain_server(s, server, flow).is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
    flow.to_client.clear();
}

async fn flush_server(s: &mut Session, server: &mut ServerConn, flow: &mut Flow) -> Result<(), Exit> {
    while !flow.to_server.is_empty() {
        match server.sock.try_write(&flow.to_server) {
            Ok(n) => {
                flow.written_any |= n > 0;
                flow.to_server.advance(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(_) => {
                if let Some(input) = flow.input_to_retry() {
                    return Err(Exit::Retry(input));
                }
                return Err(server_lost(s, server, flow));
            }
        }
    }
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
            let msg = &buf[pos..pos + h.total];
            if !flow.unsynced && flow.check_copies(s, server, &buf[pos..]) {
                break Ok(());
            }
            if flow.consult_cache(s, msg) {
                flow.hold_client = true;
                flow.step_out = true;
                break Ok(());
            }
            let placed = std::mem::take(&mut flow.placed_first);
            if !flow.unsynced && !placed && s.needs_other_server(msg, &buf[pos..]) {
                flow.hold_client = true;
                break Ok(());
            }
            if flow.must_await_answers(h.tag, msg) {
                flow.await_answers = true;
                break Ok(());
            }
            flow.retry_after_send &= s.attachment.as_ref().is_some_and(|a| !a.may_write);
            // Counted here, not in client_message, which a re-run (replan.rs) calls again.
            flow.prepared.client_message(h.tag);
            if let Err(e) = flow.client_message(s, server, h.tag, msg) {
                break Err(e);
            }
            if flow.keep_input && msg.len() <= LARGE_MESSAGE {
                flow.client_input.extend_from_slice(msg);
            } else if flow.keep_input {
                // Not a third copy of a large message: it cannot move to another server.
                flow.stop_keeping_input();
            }
            pos += h.total;
            if flow.client_terminated {
                break Ok(());
            }
        } else if h.tag == b'd' && h.total > STREAM_MIN {
            flow.to_server.extend_from_slice(&buf[pos..]);
            flow.client_pass = h.total - available;
            flow.stop_keeping_input();
            pos = buf.len();
        } else {
            // As for the server's buffer: room is made once what was handled is gone.
            buf.advance(pos);
            pos = 0;
            s.buf = std::mem::take(&mut buf);
            let fitted = s.fit_input(h.total);
            buf = std::mem::take(&mut s.buf);
            break fitted.map_err(Ending::Fatal);
        }
    };
    buf.advance(pos);
    if buf.is_empty() && s.input.holds() {
        // The large message is handled: its memory goes, and its share of the budget.
        buf = BytesMut::new();
        s.input.release(&s.shared.input_budget);
    }
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
            if flow.capture.take().is_some() {
                s.shared.cache.stats.bypass(crate::cache::Bypass::TooLarge);
            }
            flow.to_client.extend_from_slice(&server.buf[pos..]);
            flow.server_pass = h.total - available;
            pos = server.buf.len();
        } else {
            // What was handled goes first: reserved with it still in the buffer, the space it took
            // is never reused and the buffer doubled at every partial message at its end (a
            // large result grew a server's buffer to tens of MB, kept with the connection).
            server.buf.advance(pos);
            pos = 0;
            server.buf.reserve(h.total - available);
            break;
        }
    }
    server.buf.advance(pos);
    flow.record_finished(s, server);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_keeps_small_buffers_emptied_and_drops_large_ones() {
        let mut small = BytesMut::with_capacity(4096);
        small.extend_from_slice(b"left over");
        let kept = FlowBuffers::kept(small);
        assert!(kept.is_empty());
        assert!(kept.capacity() >= 4096, "the small buffer's memory was not kept");
        let mut large = BytesMut::with_capacity(KEEP_CAPACITY * 4);
        large.extend_from_slice(&[0u8; 100]);
        assert_eq!(FlowBuffers::kept(large).capacity(), 0, "a large buffer was kept");
    }
}
