//! A logged-in client: waits for requests while holding no server, attaches one when a request
//! needs it (per transaction, or for the whole session), and cleans up however the session ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use pgpilot_wire::backend::{self, TxnStatus};
use pgpilot_wire::frame::{peek_frontend, Header, Limits};
use pgpilot_wire::{PgError, SqlState};

use super::expect::UnnamedBefore;
use super::params::ParamSet;
use crate::config::PoolMode;
use crate::databases::{Database, PoolSet};
use crate::net::Sock;
use crate::pool::{CheckoutError, Pool, ServerConn};
use crate::registry::{ClientState, Registration};
use crate::shared::Shared;

/// What login hands to the session.
pub struct Setup {
    pub user: String,
    pub db: Arc<Database>,
    pub pools: Arc<PoolSet>,
    pub mode: PoolMode,
    pub params: ParamSet,
    pub pending_input: BytesMut,
    pub tag: Option<Arc<str>>,
}

/// Why a session ends.
#[derive(Debug)]
pub enum Ending {
    /// The client said Terminate or closed its socket.
    ClientGone,
    /// pgpilot ends the session and tells the client why.
    Fatal(PgError),
    /// The server connection died; the client was already told (or cannot be).
    ServerGone(String),
}

/// Settings the session consults on every request, copied at login; milliseconds, 0 for off
/// (compact: every idle client carries them).
pub(super) struct Timeouts {
    client_idle_ms: u32,
    idle_transaction_ms: u32,
    query_ms: u32,
    /// `Shared::timeouts_generation` when these were read.
    generation: u32,
}

impl Timeouts {
    fn of(config: &crate::config::Config, generation: u32) -> Self {
        let [client_idle, idle_transaction, query] = crate::shared::client_timeouts(config);
        let ms = |d: Option<Duration>| d.map_or(0, |d| d.as_millis().clamp(1, u32::MAX as u128) as u32);
        Timeouts {
            client_idle_ms: ms(client_idle),
            idle_transaction_ms: ms(idle_transaction),
            query_ms: ms(query),
            generation,
        }
    }

    fn get(ms: u32) -> Option<Duration> {
        (ms > 0).then(|| Duration::from_millis(ms as u64))
    }

    pub fn client_idle(&self) -> Option<Duration> {
        Self::get(self.client_idle_ms)
    }

    pub fn idle_transaction(&self) -> Option<Duration> {
        Self::get(self.idle_transaction_ms)
    }

    pub fn query(&self) -> Option<Duration> {
        Self::get(self.query_ms)
    }
}

pub struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) sock: Sock,
    pub(super) reg: Registration,
    pub(super) db: Arc<Database>,
    pub(super) pools: Arc<PoolSet>,
    pub(super) mode: PoolMode,
    pub(super) params: ParamSet,
    /// Client bytes read but not yet handled.
    pub(super) buf: BytesMut,
    /// Bytes read while no server was attached, counted with the next transaction's pool.
    pub(super) unattached_received: u64,
    pub(super) limits: Limits,
    /// Boxed: most clients are idle most of the time and then hold no server.
    pub(super) server: Option<Box<ServerConn>>,
    /// Transaction status as the client last saw it.
    pub(super) status: TxnStatus,
    /// Why this client keeps its server for the whole session in transaction mode.
    pub(super) pinned: Option<&'static str>,
    /// Whether the pin may end, and whether to ask the server about it (pin_release.rs).
    pub(super) pin_release: super::pin_release::PinRelease,
    /// The WITH HOLD cursors the client has open; when they alone pinned it, closing the last
    /// one lets it go (Django's iterator() in autocommit declares one per query).
    pub(super) hold_cursors: Vec<Box<str>>,
    /// WITH HOLD cursors declared in the transaction under way: they exist if it commits.
    pub(super) hold_cursors_pending: Vec<Box<str>>,
    pub(super) timeouts: Timeouts,
    pub(super) user: Arc<str>,
    /// Named and SQL-level prepared statements, by the client's names (transaction pooling).
    pub(super) statements: crate::pool::statements::LazyStatements,
    /// `SET pgpilot.route`.
    pub(super) route: crate::routing::SessionRoute,
    /// The replica group this client's reads go to (tag rules).
    pub(super) tag: Option<Arc<str>>,
    /// The database's routing settings `tag` was found with: a reload that changes its tag rules
    /// gives connected clients their new group too (route.rs `refresh_tag`).
    pub(super) tag_from: Option<Arc<crate::config::RoutingConfig>>,
    /// The client's last transaction that may have written (read-your-writes).
    pub(super) write_mark: crate::routing::WriteMark,
    pub(super) attachment: Option<super::route::Attachment>,
    /// The search_path value and its parsed schemas, parsed again only when the value changes.
    pub(super) search_path: Option<Box<super::route::SearchPath>>,
    /// Times the current request was moved to another server after losing one.
    pub(super) retries: u8,
    /// How long the request now being sent waited for a server (statistics).
    pub(super) wait_before_send: Duration,
    /// `SET pgpilot.cache = off`.
    pub(super) cache_off: bool,
    /// `pgpilot.route` and `pgpilot.cache` as they were before the transaction in progress set
    /// them: given back if it rolls back, as PostgreSQL undoes a SET.
    pub(super) pgpilot_settings_before: Option<(crate::routing::SessionRoute, bool)>,
    /// SET SESSION AUTHORIZATION ran: results are no longer the login user's to share.
    pub(super) cache_identity_changed: bool,
    /// The request or transaction under way changed search_path in a way not recorded yet (SET
    /// LOCAL, set_config(..., true), a SET earlier in the same query): the result cache cannot
    /// tell which tables unqualified names mean until it ends.
    pub(super) search_path_in_flux: bool,
    /// A setting that decides how statement texts are read (`parse_context`) was changed in a
    /// way not recorded yet: a statement prepared meanwhile may be read under a value pgpilot
    /// does not know, so its server copies are this client's alone.
    pub(super) parse_settings_in_flux: bool,
    /// A cache miss whose answer the next attachment collects.
    pub(super) pending_fill: Option<Box<crate::cache::Fill>>,
    /// The transaction in progress may use the cache (see txn_cache.rs).
    pub(super) read_only_txn: bool,
    /// The request at the front of the buffer was just looked up in the cache and missed.
    pub(super) consulted: bool,
    /// Routing's quick look at the simple Query it just placed, for session tracking to reuse.
    pub(super) routed_look: Option<pgpilot_sql::QuickLook>,
    /// A cancelled batch was dropped before its Sync came: the client's messages are skipped up
    /// to that Sync.
    pub(super) discard_to_sync: bool,
    /// The client's unnamed statement (transaction pooling): a driver may Parse it in one batch
    /// and Bind it in the next, which may run on another server.
    pub(super) unnamed: Option<Box<UnnamedStatement>>,
    /// The values the client logged in with: what RESET gives back.
    pub(super) reset_params: ParamSet,
    /// A `BEGIN READ ONLY` Query pgpilot answered and sends with the transaction's first
    /// statement (deferred_begin.rs).
    pub(super) deferred_begin: Option<Box<[u8]>>,
    /// A reset told the client the server's own defaults for reported settings (ParameterStatus)
    /// where its own are its login values: it is told those with its next request.
    pub(super) tell_reported: bool,
    /// The share of the large-message budget the message being received holds.
    pub(super) input: super::input_budget::Reservation,
}

/// The text and parameter types of a client's unnamed statement.
#[derive(Debug)]
pub struct UnnamedStatement {
    pub query: Box<[u8]>,
    pub param_types: Box<[u8]>,
}

impl Session {
    pub fn start(shared: Arc<Shared>, sock: Sock, reg: Registration, setup: Setup) -> Session {
        let config = shared.config.load();
        let g = &config.pgpilot;
        let timeouts =
            Timeouts::of(&config, shared.timeouts_generation.load(std::sync::atomic::Ordering::Acquire));
        let limits = Limits { large: g.max_message_size, ..Limits::default() };
        drop(config);
        reg.info.set_state(ClientState::Idle);
        setup.pools.clients.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Session {
            shared,
            sock,
            reg,
            db: setup.db,
            pools: setup.pools,
            mode: setup.mode,
            params: setup.params.clone(),
            buf: setup.pending_input,
            unattached_received: 0,
            limits,
            server: None,
            status: TxnStatus::Idle,
            pinned: None,
            pin_release: Default::default(),
            hold_cursors: Vec::new(),
            hold_cursors_pending: Vec::new(),
            timeouts,
            user: Arc::from(setup.user),
            statements: Default::default(),
            route: Default::default(),
            tag: setup.tag,
            tag_from: None,
            write_mark: Default::default(),
            attachment: None,
            search_path: None,
            retries: 0,
            wait_before_send: Duration::ZERO,
            cache_off: false,
            pgpilot_settings_before: None,
            cache_identity_changed: false,
            search_path_in_flux: false,
            parse_settings_in_flux: false,
            pending_fill: None,
            read_only_txn: false,
            consulted: false,
            routed_look: None,
            unnamed: None,
            discard_to_sync: false,
            reset_params: setup.params,
            deferred_begin: None,
            tell_reported: false,
            input: Default::default(),
        }
    }

    /// Not an `async fn`: its argument would be stored twice in the future (once as the argument,
    /// once as the local it becomes), and an idle client's task is mostly this future.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub fn run(mut self) -> impl std::future::Future<Output = ()> + Send {
        async move {
            let ending = self.serve().await;
            Box::pin(self.finish(ending)).await;
        }
    }

    async fn serve(&mut self) -> Ending {
        loop {
            let header = match peek_frontend(&self.buf, &self.limits) {
                Err(e) => return Ending::Fatal(PgError::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string())),
                Ok(h) => h,
            };
            match header {
                Some(h) if self.buf.len() >= h.total => {
                    // Boxed: the task of an idle client keeps only the size of its wait for input.
                    let handled = if self.server.is_some() {
                        Box::pin(self.resume_in_transaction(h)).await
                    } else {
                        Box::pin(self.handle_unattached(h)).await
                    };
                    if let Err(ending) = handled {
                        return ending;
                    }
                }
                incomplete => {
                    if let Some(h) = incomplete {
                        if let Err(e) = self.fit_input(h.total) {
                            return Ending::Fatal(e);
                        }
                    }
                    if let Err(ending) = self.wait_for_input().await {
                        return ending;
                    }
                }
            }
        }
    }

    /// A request arrived while no server is attached.
    async fn handle_unattached(&mut self, h: Header) -> Result<(), Ending> {
        if self.discard_to_sync {
            // After a cancelled batch without its Sync (route.rs): skipped as the server would.
            if !matches!(h.tag, b'S' | b'X') {
                self.count_input_without_server(&self.buf[..h.total]);
                self.buf.advance(h.total);
                return Ok(());
            }
            self.discard_to_sync = false;
        }
        match h.tag {
            b'X' => Err(Ending::ClientGone),
            // As PostgreSQL: a Sync carries nothing.
            b'S' if h.total > 5 => {
                let invalid = PgError::error(SqlState::PROTOCOL_VIOLATION, "invalid message format");
                self.refuse_locally(h.total, &invalid).await
            }
            // Sync with nothing in flight: answer it ourselves.
            b'S' => {
                self.buf.advance(h.total);
                let mut out = BytesMut::with_capacity(6);
                backend::ready_for_query(&mut out, self.status);
                self.write(&out).await
            }
            // Flush with nothing in flight, and COPY messages outside COPY (PostgreSQL ignores those too).
            b'H' | b'd' | b'c' | b'f' => {
                self.buf.advance(h.total);
                Ok(())
            }
            b'Q' | b'P' | b'B' | b'D' | b'E' | b'C' | b'F' => {
                let text = pgpilot_wire::frontend::parse_query(&self.buf[5..h.total]);
                if h.tag == b'Q' && text.is_none() {
                    // As PostgreSQL: an error, and the session goes on (its text has no end).
                    let invalid = PgError::error(SqlState::PROTOCOL_VIOLATION, "invalid string in message");
                    return self.refuse_locally(h.total, &invalid).await;
                }
                // In a failed transaction the server refuses it (25P02), as it would a SHOW of its own.
                let shows = h.tag == b'Q' && self.status != TxnStatus::Failed;
                if let Some(name) = text.filter(|_| shows).and_then(super::show_own::shown_own_setting) {
                    return self.show_own_setting(h.total, name).await;
                }
                if h.tag == b'Q' && text.is_some_and(super::route::maybe_pgpilot_setting) {
                    let sql = text.map(|t| String::from_utf8_lossy(t).into_owned());
                    match sql.and_then(|sql| self.apply_pgpilot_settings(&sql)) {
                        Some(Ok(tag)) => return self.answer_locally(h.total, tag).await,
                        Some(Err(refused)) => return self.refuse_locally(h.total, &refused).await,
                        None => {}
                    }
                }
                if self.awaits_rest_of_batch() {
                    return self.wait_for_input().await;
                }
                if h.tag == b'P' && self.pgpilot_setting_batch().await? {
                    return Ok(());
                }
                if self.begin_deferred(h).await? {
                    return Ok(());
                }
                if matches!(h.tag, b'C' | b'P') && self.statements_locally().await? {
                    return Ok(());
                }
                if self.db.cache.enabled() && self.answer_from_cache(h).await? {
                    return Ok(());
                }
                if !self.attach_routed().await? {
                    return Ok(());
                }
                super::flow::run_attached(self, true).await
            }
            b'p' => Err(Ending::Fatal(PgError::fatal(
                SqlState::PROTOCOL_VIOLATION,
                "unexpected password message",
            ))),
            other => Err(Ending::Fatal(PgError::fatal(
                SqlState::PROTOCOL_VIOLATION,
                format!("invalid frontend message type {}", other),
            ))),
        }
    }

    /// Gets a server from `pool`, waiting while the database or the gateway is paused. A replica's
    /// pool fails fast instead of retrying a server that cannot be reached.
    pub(super) async fn attach(
        &mut self,
        pool: &Arc<Pool>,
        fail_fast: bool,
        still_wanted: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), CheckoutError> {
        let info = self.reg.info.clone();
        // A cancel that found the client idle was for no request: this one starts afresh.
        info.take_cancel();
        info.set_state(ClientState::Waiting);
        info.touch();
        // The wait counts towards query_timeout (as in PgBouncer): past it the query is not sent.
        let query_deadline = self.timeouts.query().map(|t| Instant::now() + t);
        let checkout = self.checkout_unpaused(pool, fail_fast, still_wanted, query_deadline);
        let (conn, waited) = match checkout.await {
            Ok(c) => c,
            Err(e) => {
                info.set_state(ClientState::Idle);
                return Err(e);
            }
        };
        // From here a cancel request finds the server and is sent there.
        *info.server.lock() = Some(conn.cancel.clone());
        info.server_id.store(conn.id, std::sync::atomic::Ordering::Relaxed);
        info.set_state(ClientState::Active);
        if info.cancel_pending() {
            // Cancelled as the server came: nothing of the request reached it, so the request is
            // given up as if it had been cancelled sooner (the cancel is not lost).
            *info.server.lock() = None;
            info.server_id.store(0, std::sync::atomic::Ordering::Relaxed);
            info.set_state(ClientState::Idle);
            pool.release(conn);
            return Err(CheckoutError::Rerouted);
        }
        pool.stats.assignment(waited.as_micros() as u64);
        self.wait_before_send = waited;
        self.server = Some(conn);
        Ok(())
    }

    /// A server from `pool` once neither the gateway nor the database is paused. A PAUSE that came
    /// while the client waited in the pool's queue holds it too: the server it was given goes back,
    /// and no transaction starts until RESUME (as in PgBouncer).
    async fn checkout_unpaused(
        &mut self,
        pool: &Arc<Pool>,
        fail_fast: bool,
        still_wanted: &(dyn Fn() -> bool + Sync),
        query_deadline: Option<Instant>,
    ) -> Result<(Box<ServerConn>, Duration), CheckoutError> {
        let info = self.reg.info.clone();
        loop {
            self.wait_while_paused(pool).await?;
            let wanted = || !info.cancel_pending() && still_wanted();
            let checkout = pool.checkout_with(fail_fast, &wanted);
            let (conn, waited) = self.unless_client_leaves(checkout, query_deadline).await?;
            if !self.paused() {
                return Ok((conn, waited));
            }
            pool.release(conn);
        }
    }

    fn paused(&self) -> bool {
        *self.shared.paused.borrow() || *self.db.paused.borrow()
    }

    /// Waits for `checkout` while watching the client: one that closes its connection while it
    /// waits gives up its place, and its request never runs (as PgBouncer drops it). A client that
    /// gave up on a timeout must not have its writes run later, each on a server found for it.
    async fn unless_client_leaves<T>(
        &mut self,
        checkout: impl std::future::Future<Output = Result<T, CheckoutError>>,
        query_deadline: Option<Instant>,
    ) -> Result<T, CheckoutError> {
        /// Bytes a waiting client may send ahead (pipelining) that are read to notice it leave.
        const WATCH_LIMIT: usize = 64 * 1024;
        let mut checkout = std::pin::pin!(checkout);
        let info = self.reg.info.clone();
        loop {
            if info.close_requested() {
                // Shutdown or KILL: a client waiting is between transactions, and closes now.
                return Err(CheckoutError::Closing);
            }
            let room = self.buf.len() < WATCH_LIMIT;
            tokio::select! {
                biased;
                granted = &mut checkout => return granted,
                read = self.sock.read_into(&mut self.buf), if room => match read {
                    Ok(n) if n > 0 => self.unattached_received += n as u64,
                    _ => return Err(CheckoutError::ClientGone),
                },
                // A cancel request gives the wait up at once; so does a request to close.
                _ = info.wake.wait() => {
                    if info.cancel_pending() {
                        return Err(CheckoutError::Rerouted);
                    }
                }
                _ = sleep_until(query_deadline), if query_deadline.is_some() => return Err(CheckoutError::QueryTimeout),
            }
        }
    }

    /// Waits while paused, as a waiting client of `pool` (SHOW POOLS' cl_waiting) and no longer
    /// than query_wait_timeout, as PgBouncer does.
    async fn wait_while_paused(&self, pool: &Pool) -> Result<(), CheckoutError> {
        if !self.paused() {
            return Ok(());
        }
        let limit = pool.settings.load().query_wait_timeout;
        let deadline = limit.map(|t| Instant::now() + t);
        let mut global = self.shared.paused.subscribe();
        let mut local = self.db.paused.subscribe();
        let _counted = pool.count_paused();
        let mut waited = Ok(());
        let info = &self.reg.info;
        while *global.borrow_and_update() || *local.borrow_and_update() {
            if info.close_requested() {
                return Err(CheckoutError::Closing);
            }
            tokio::select! {
                _ = global.changed() => {}
                _ = local.changed() => {}
                // A cancel request or a request to close ends the wait at once.
                _ = info.wake.wait() => {
                    if info.cancel_pending() {
                        return Err(CheckoutError::Rerouted);
                    }
                }
                _ = sleep_until(deadline) => {
                    waited = Err(CheckoutError::WaitTimeout(limit.unwrap_or_default()));
                    break;
                }
            }
        }
        waited
    }

    /// Gives the server back after a transaction (transaction mode) or keeps it (session mode, pinned).
    /// Ends the attachment; the server is closed for `discard_because` instead of going back to
    /// its pool.
    pub(super) fn detach_with(&mut self, conn: Box<ServerConn>, discard_because: Option<&str>) {
        let info = &self.reg.info;
        *info.server.lock() = None;
        info.server_id.store(0, std::sync::atomic::Ordering::Relaxed);
        info.set_state(ClientState::Idle);
        let pool = conn.pool().clone();
        match discard_because {
            Some(why) => pool.discard(conn, why),
            // server_reset_query_always: reset after every transaction, as PgBouncer does.
            None if pool.settings.load().reset_always => reset_and_release(pool, conn, self.mode),
            None => pool.release(conn),
        }
        self.end_attachment();
    }

    /// Takes client timeouts changed since they were read (a reload or SET woke the session).
    pub(super) fn refresh_timeouts(&mut self) {
        let now = self.shared.timeouts_generation.load(std::sync::atomic::Ordering::Acquire);
        if now != self.timeouts.generation {
            self.timeouts = Timeouts::of(&self.shared.config.load(), now);
        }
    }

    /// Waits for more client bytes while no server is attached.
    async fn wait_for_input(&mut self) -> Result<(), Ending> {
        self.refresh_timeouts();
        if self.reg.info.close_requested() {
            // A client at work sends its next request within moments: the error then answers
            // that request, which drivers report with its SQLSTATE. Sent to an idle client it is
            // mostly lost (libpq: "server closed the connection unexpectedly").
            if self.buf.is_empty() && !self.reg.info.kill_requested() {
                // Boxed: the wait is rare, and an idle client's task must not carry its timer.
                let next = tokio::time::timeout(NEXT_REQUEST_WAIT, self.sock.read_into(&mut self.buf));
                let _ = Box::pin(next).await;
            }
            return Err(Ending::Fatal(PgError::fatal(
                SqlState::ADMIN_SHUTDOWN,
                "pgpilot is closing this connection",
            )));
        }
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            // An idle client holds no buffer: there may be tens of thousands of them.
            crate::net::spare_buffers::give_back(std::mem::take(&mut self.buf));
            self.input.release(&self.shared.input_budget);
        }
        // Boxed, and only when configured: a timer is most of an idle task's size.
        // A transaction pgpilot began for the client (deferred_begin.rs) is idle in transaction.
        let (limit, timed_out) = if self.status == TxnStatus::Idle {
            (self.timeouts.client_idle(), (SqlState::IDLE_SESSION_TIMEOUT, "client_idle_timeout"))
        } else {
            (
                self.timeouts.idle_transaction(),
                (SqlState::IDLE_IN_TRANSACTION_TIMEOUT, "idle_transaction_timeout"),
            )
        };
        let mut timer = limit.map(|t| Box::pin(tokio::time::sleep(t)));
        let read = tokio::select! {
            r = self.sock.read_into(&mut self.buf) => r,
            _ = self.reg.info.wake.wait() => return Ok(()),
            _ = async { match timer.as_mut() { Some(t) => t.await, None => std::future::pending().await } } => {
                return Err(Ending::Fatal(PgError::fatal(timed_out.0, timed_out.1)));
            }
        };
        match read {
            Ok(0) | Err(_) => Err(Ending::ClientGone),
            Ok(n) => {
                self.unattached_received += n as u64;
                Ok(())
            }
        }
    }

    /// Remembers the client's unnamed statement, returning what it was; drivers repeat the same
    /// text, which then costs a comparison and no allocation.
    pub(super) fn remember_unnamed(&mut self, query: &[u8], param_types: &[u8]) -> UnnamedBefore {
        if let Some(u) = self.unnamed.as_deref() {
            if *u.query == *query && *u.param_types == *param_types {
                return UnnamedBefore::Same;
            }
        }
        let new = Box::new(UnnamedStatement { query: query.into(), param_types: param_types.into() });
        UnnamedBefore::Was(self.unnamed.replace(new))
    }

    /// Room for a whole message of `total` bytes in the input buffer (see input_budget.rs).
    pub(super) fn fit_input(&mut self, total: usize) -> Result<(), PgError> {
        let limit = super::input_budget::InputBudget::limit(self.limits.large);
        let fitted = self.input.fit(&self.shared.input_budget, limit, &mut self.buf, total);
        if let Err(e) = &fitted {
            tracing::warn!(client = %self.reg.info.addr, user = %self.user, error = %e, "client message refused");
        }
        fitted
    }

    pub(super) async fn write(&self, data: &[u8]) -> Result<(), Ending> {
        self.sock.write_all(data).await.map_err(|_| Ending::ClientGone)
    }

    /// Ends the session: tells the client why, returns or closes its server.
    async fn finish(mut self, ending: Ending) {
        let config = self.shared.config.load_full();
        match &ending {
            Ending::Fatal(e) => {
                if config.pgpilot.log_pooler_errors {
                    tracing::info!(client = %self.reg.info.addr, user = %self.user, database = %self.db.name, error = %e, "closing client");
                }
                let mut out = BytesMut::new();
                e.encode(&mut out);
                let _ = self.sock.write_all(&out).await;
            }
            Ending::ServerGone(why) => {
                tracing::warn!(client = %self.reg.info.addr, user = %self.user, database = %self.db.name, reason = %why, "server connection lost; closing client");
            }
            Ending::ClientGone => {}
        }
        if config.pgpilot.log_disconnections {
            tracing::info!(client = %self.reg.info.addr, user = %self.user, database = %self.db.name, reason = ending_reason(&ending), "client disconnected");
        }
        self.pools.clients.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.input.release(&self.shared.input_budget);
        crate::net::spare_buffers::give_back(std::mem::take(&mut self.buf));
        self.attachment = None;
        if let Some(conn) = self.server.take() {
            let pool = conn.pool().clone();
            *self.reg.info.server.lock() = None;
            if self.status != TxnStatus::Idle || matches!(ending, Ending::ServerGone(_)) {
                pool.discard(conn, "client left inside a transaction");
            } else {
                // A pinned client's server carries its session state (LISTEN, temp tables, locks): reset it.
                let mode = if self.pinned.is_some() { PoolMode::Session } else { self.mode };
                reset_and_release(pool, conn, mode);
            }
        }
        if matches!(ending, Ending::Fatal(_)) {
            self.sock.linger_before_close(FATAL_LINGER).await;
        }
    }
}

/// How long a client between transactions that is to be closed (shutdown, a removed database)
/// has to send its next request, which is then answered with the error.
const NEXT_REQUEST_WAIT: Duration = Duration::from_millis(500);

/// How long a client told a FATAL error may keep sending before its socket is closed anyway.
const FATAL_LINGER: Duration = Duration::from_secs(1);

fn ending_reason(e: &Ending) -> &'static str {
    match e {
        Ending::ClientGone => "client closed the connection",
        Ending::Fatal(_) => "pgpilot closed the connection",
        Ending::ServerGone(_) => "server connection lost",
    }
}

/// A session-mode server (or any server when server_reset_query_always) is reset before reuse,
/// in the background so the departing client does not wait.
fn reset_and_release(pool: Arc<Pool>, mut conn: Box<ServerConn>, mode: PoolMode) {
    let settings = pool.settings.load_full();
    let query = settings.reset_query.clone().filter(|_| mode == PoolMode::Session || settings.reset_always);
    let Some(query) = query else {
        pool.release(conn);
        return;
    };
    tokio::spawn(async move {
        match crate::pool::check::run_simple(&mut conn, &query, settings.connect_timeout).await {
            Ok(()) => {
                conn.last_used = Instant::now();
                // DISCARD ALL (the usual reset) drops prepared statements and SET values; any
                // other query is taken to have dropped no more than it says.
                if drops_prepared_statements(&query) {
                    conn.statements.clear();
                }
                conn.params.after_reset_query(&query);
                pool.release(conn);
            }
            Err(e) => pool.discard(conn, &format!("server_reset_query failed: {e}")),
        }
    });
}

pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Whether a server_reset_query drops the server's prepared statements. When unsure, pgpilot
/// keeps its record: a statement it then finds missing is prepared again (replan.rs).
fn drops_prepared_statements(query: &str) -> bool {
    let q = query.to_ascii_lowercase().split_whitespace().collect::<Vec<_>>().join(" ");
    q.contains("discard all") || q.contains("deallocate all") || q.contains("deallocate prepare all")
}
