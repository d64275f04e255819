//! A pool of server connections for one (database, user, server): checkout with fair FIFO waiting,
//! release with direct hand-off to the longest waiter, and the limits PgBouncer users know.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::Mutex;
use thiserror::Error;
use tokio::sync::oneshot;

use super::backoff::Turn;
use super::connect::{connect, ConnectError, ServerSecret, ServerTarget};
use super::limits::{IdleShare, PoolLimits};
use super::server::{ServerConn, Slot};
use super::settings::PoolSettings;
use super::waiters::{Grant, WaitQueue, Waiter, Wake};
use crate::stats::Counters;

#[derive(Default)]
struct PoolState {
    // Boxed on purpose: a connection changes hands every transaction and is large to move.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<ServerConn>>,
    waiters: WaitQueue,
    /// Open or opening connections.
    total: usize,
    /// Connections checked out by clients.
    active: usize,
    opening: usize,
    /// Of those opening, the ones whose login is under way (sv_login): while the server does not
    /// answer the others wait for their turn (backoff.rs), and are no connection yet.
    connecting: usize,
    /// Open connections from before the last RECONNECT: each closes when released, and
    /// WAIT_CLOSE waits until none is left.
    stale: usize,
    /// Clients held by a PAUSE (not in `waiters`), and since when the first of them has waited.
    paused: usize,
    paused_since: Option<Instant>,
    /// Since when each client whose server connection is being opened (or waits for the pool's
    /// next attempt while the server is down) has waited: for maxwait.
    opening_for: Vec<Instant>,
}

#[derive(Debug, Error)]
pub enum CheckoutError {
    #[error("query_wait_timeout: no server connection became free in {0:?}")]
    WaitTimeout(Duration),
    /// query_timeout passed while the request still waited for a server: it is not sent at all.
    #[error("query_timeout: no server connection became free in time for the query")]
    QueryTimeout,
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the pool is closed")]
    Closed,
    /// The caller no longer wants this server (the primary moved elsewhere).
    #[error("the server is no longer the right one for this request")]
    Rerouted,
    /// The client closed its connection while it waited.
    #[error("the client left while waiting for a server")]
    ClientGone,
    /// pgpilot is closing the client (shutdown, KILL) while it waits: its request never runs.
    #[error("the client is being closed")]
    Closing,
}

impl CheckoutError {
    /// The server refused the login for its credentials or database, or for the role's or the
    /// database's CONNECTION LIMIT: it is up, and serves other users (not marked down for it).
    pub fn is_login_refusal(&self) -> bool {
        matches!(self, CheckoutError::Connect(e) if e.refuses_login() || e.is_limit_of_role_or_database())
    }
}

/// Identity of a pool for SHOW commands and metrics.
#[derive(Debug, Clone)]
pub struct PoolId {
    pub database: Arc<str>,
    pub user: Arc<str>,
    /// host:port of the server.
    pub server: Arc<str>,
}

/// Resolves the secret to log in with at connection time (files and keys may change on reload).
pub trait SecretSource: Send + Sync {
    fn secret_for(&self, target: &ServerTarget) -> ServerSecret;
}

/// A refused login: when, the server's address, and what it said.
type Refusal = (Instant, String, pgpilot_wire::error::ErrorFields);

pub struct Pool {
    pub id: PoolId,
    pub target: ServerTarget,
    pub settings: ArcSwap<PoolSettings>,
    pub stats: Counters,
    /// The first server's ParameterStatus values, replayed to clients at login.
    pub startup_params: ArcSwapOption<Vec<(String, String)>>,
    pub last_error: Mutex<Option<String>>,
    connector: ArcSwapOption<tokio_rustls::TlsConnector>,
    secrets: Arc<dyn SecretSource>,
    limits: PoolLimits,
    retired: AtomicBool,
    /// Bumped by RECONNECT: connections from an older generation are closed when released.
    generation: AtomicU64,
    /// The last refused login and when: until server_login_retry has passed, new connections
    /// fail with it at once instead of trying the server again (PgBouncer's server_login_retry).
    login_refused: Mutex<Option<Refusal>>,
    /// The same for a login outside the pool (the health monitor's, the cache's): it holds back
    /// such logins only. It may have met a moment clients never see (a database dropped and made
    /// again, helper-144), and PgBouncer, which makes no such logins, would not turn clients away
    /// for it.
    monitor_login_refused: Mutex<Option<Refusal>>,
    /// The server refused a login for now (too many connections, starting up) while this pool
    /// had other connections: until then its waiters wait for those instead of each trying a
    /// login the server refuses.
    opening_paused_until: Mutex<Option<Instant>>,
    /// When a login last failed for want of the password the server asked for: the health
    /// monitor waits server_login_retry before trying again (clients are not held back: a
    /// client's SCRAM login can bring the key).
    secret_missing_at: Mutex<Option<Instant>>,
    /// One connection attempt at a time while the server does not answer.
    backoff: super::backoff::ConnectBackoff,
    /// Clients waiting for a server of this pool (or out a PAUSE), queued or not.
    waiting_clients: std::sync::atomic::AtomicUsize,
    /// Raised when a server goes idle while connections are being opened: a client whose
    /// connect waits for the backoff's next turn takes it instead (see `wait_for_turn_or_idle`).
    idle_for_openers: tokio::sync::Notify,
    state: Mutex<PoolState>,
}

/// How long new connections wait for the open ones after a server said it is starting up or
/// shutting down (57P03), before trying it again.
const RESTART_PAUSE: Duration = Duration::from_millis(500);

/// How long new connections wait for the open ones after the server refused one for now: a full
/// server (53300) for server_login_retry, as PgBouncer; a restarting one only briefly (a whole
/// server_login_retry stalled clients long after the server was back).
fn pause_after_refusal(e: &ConnectError, login_retry: Duration) -> Duration {
    match e.is_server_restarting() {
        true => login_retry.min(RESTART_PAUSE),
        false => login_retry,
    }
}

/// Counts a client among its pool's waiters (SHOW POOLS' cl_waiting) from when it starts waiting
/// until it has a server or gives up, however it stops. An atomic, not the queue: a waiter leaves
/// the queue each time it is told to look again.
pub struct WaitingClient<'a> {
    pool: &'a Pool,
}

impl Drop for WaitingClient<'_> {
    fn drop(&mut self) {
        self.pool.waiting_clients.fetch_sub(1, Relaxed);
        self.pool.limits.count_waiting(false);
    }
}

/// A client held by a PAUSE, counted in cl_waiting and in maxwait until it is dropped.
pub struct PausedClient<'a> {
    waiting: WaitingClient<'a>,
}

impl Drop for PausedClient<'_> {
    fn drop(&mut self) {
        let mut s = self.waiting.pool.state.lock();
        s.paused -= 1;
        if s.paused == 0 {
            s.paused_since = None;
        }
    }
}

/// A client whose server connection is being opened: a waiting client (cl_waiting, maxwait) until
/// the connection is its own, as in PgBouncer. Its place in the pool was counted as an active
/// server and client, and a server that was down showed every waiting client as active.
struct OpeningFor<'a> {
    waiting: WaitingClient<'a>,
    since: Instant,
}

impl Drop for OpeningFor<'_> {
    fn drop(&mut self) {
        let mut s = self.waiting.pool.state.lock();
        if let Some(i) = s.opening_for.iter().position(|t| *t == self.since) {
            s.opening_for.swap_remove(i);
        }
    }
}

/// A login under way, counted in sv_login until it ends, however it ends.
struct Connecting<'a>(&'a Pool);

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.0.state.lock().connecting -= 1;
    }
}

/// A permit to open a connection, counted in the pool since [`Pool::take_locked`]. The open may
/// be dropped mid-connect (its client left while it waited): dropped, the permit gives its place
/// back and lets a waiter open one, or the pool would count a server that never comes.
struct OpenPermit<'a>(&'a Pool);

impl OpenPermit<'_> {
    /// The connection is open: from now on its [`Slot`] holds the place, of the generation this
    /// returns (read under the lock RECONNECT counts the stale connections under).
    fn opened(self) -> u64 {
        let mut s = self.0.state.lock();
        s.opening -= 1;
        let generation = self.0.generation.load(Relaxed);
        drop(s);
        std::mem::forget(self);
        generation
    }
}

impl Drop for OpenPermit<'_> {
    fn drop(&mut self) {
        self.0.abandon_open();
    }
}

/// A waiter's end of its channel. A grant sent just as the waiter gave up (its client left)
/// would be lost with the channel, and the pool's count with it: it goes back to the pool.
struct Pending<'a> {
    pool: &'a Pool,
    rx: oneshot::Receiver<Wake>,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.rx.close();
        match self.rx.try_recv() {
            Ok(Wake::Granted(Grant::Conn(conn))) => self.pool.release_now(conn),
            Ok(Wake::Granted(Grant::Connect)) => self.pool.abandon_open(),
            _ => {}
        }
    }
}

/// How often a connection attempt looks whether its client still wants this server.
const STILL_WANTED_EVERY: Duration = Duration::from_millis(100);

/// `connecting`'s result, unless `still_wanted` turns false first: a replica banned meanwhile (it
/// stopped answering: its connect would only end at server_connect_timeout), or a primary that is
/// no longer one. The client then goes to another server at once.
async fn unless_unwanted<T>(
    connecting: impl std::future::Future<Output = T>,
    still_wanted: &(dyn Fn() -> bool + Sync),
) -> Option<T> {
    tokio::pin!(connecting);
    loop {
        tokio::select! {
            result = &mut connecting => return Some(result),
            _ = tokio::time::sleep(STILL_WANTED_EVERY) => {
                if !still_wanted() {
                    return None;
                }
            }
        }
    }
}

/// A connection taken from the pool and not yet the client's: dropped on the way (the client
/// left), the connection closes through its [`Slot`] and this stops counting it active.
struct Unclaimed<'a>(&'a Pool);

impl Drop for Unclaimed<'_> {
    fn drop(&mut self) {
        self.0.state.lock().active -= 1;
    }
}

/// An idle server connection, as SHOW SERVERS lists it.
pub struct IdleServer {
    pub id: u64,
    pub target: Arc<super::server::CancelTarget>,
    pub created: Instant,
    pub last_used: Instant,
    /// Idle for longer than server_check_delay: SHOW POOLS counts it in `sv_used`.
    pub needs_check: bool,
}

/// A snapshot of a pool's counts.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PoolCounts {
    /// Open connections checked out by clients (not those being opened).
    pub active: usize,
    pub idle: usize,
    /// Connections whose login is under way.
    pub opening: usize,
    /// Connections clients hold or will hold once open (places taken for an open that has not
    /// started yet included): PAUSE waits for all of them to be released.
    pub in_use: usize,
    pub total: usize,
    pub waiting: usize,
    /// Idle connections due for a check before reuse (PgBouncer's sv_used).
    pub used: usize,
    pub max_wait: Duration,
}

impl Pool {
    pub fn new(
        id: PoolId,
        target: ServerTarget,
        settings: PoolSettings,
        secrets: Arc<dyn SecretSource>,
        connector: Option<Arc<tokio_rustls::TlsConnector>>,
        limits: PoolLimits,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            id,
            target,
            settings: ArcSwap::from_pointee(settings),
            stats: Counters::default(),
            startup_params: ArcSwapOption::empty(),
            last_error: Mutex::new(None),
            connector: ArcSwapOption::new(connector),
            secrets,
            limits,
            retired: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            login_refused: Mutex::new(None),
            monitor_login_refused: Mutex::new(None),
            opening_paused_until: Mutex::new(None),
            secret_missing_at: Mutex::new(None),
            backoff: Default::default(),
            waiting_clients: Default::default(),
            idle_for_openers: Default::default(),
            state: Mutex::new(PoolState::default()),
        });
        pool.limits.join(&pool);
        pool
    }

    pub fn counts(&self) -> PoolCounts {
        let s = self.state.lock();
        let check_delay = self.settings.load().check_delay;
        PoolCounts {
            // A place being opened is not a server in use yet: it counts in `opening` alone.
            active: s.active - s.opening,
            idle: s.idle.len(),
            opening: s.connecting,
            in_use: s.active,
            total: s.total,
            waiting: self.waiting_clients.load(Relaxed),
            used: s.idle.iter().filter(|c| c.last_used.elapsed() > check_delay).count(),
            // The paused clients' wait counts from the first of them still paused: they are let
            // go together at RESUME (or one by one at query_wait_timeout, the oldest first).
            max_wait: s
                .waiters
                .oldest()
                .into_iter()
                .chain(s.paused_since)
                .chain(s.opening_for.iter().copied())
                .min()
                .map(|since| since.elapsed())
                .unwrap_or_default(),
        }
    }

    /// Counts a client held by a PAUSE until the returned guard is dropped.
    pub fn count_paused(&self) -> PausedClient<'_> {
        let waiting = self.count_waiting();
        let mut s = self.state.lock();
        s.paused += 1;
        s.paused_since.get_or_insert_with(Instant::now);
        PausedClient { waiting }
    }

    /// Clients waiting for a server of this pool (cl_waiting).
    pub(super) fn waiting_clients(&self) -> usize {
        self.waiting_clients.load(Relaxed)
    }

    /// Counts a client among this pool's waiters until the returned guard is dropped.
    pub fn count_waiting(&self) -> WaitingClient<'_> {
        self.waiting_clients.fetch_add(1, Relaxed);
        self.limits.count_waiting(true);
        WaitingClient { pool: self }
    }

    /// Counts a client waiting since `since` as waiting while its server connection is opened.
    fn count_opening_for(&self, since: Instant) -> OpeningFor<'_> {
        let waiting = self.count_waiting();
        self.state.lock().opening_for.push(since);
        OpeningFor { waiting, since }
    }

    /// Whether a checkout now would get a server without waiting (the database-wide limit aside).
    pub fn has_free_server(&self) -> bool {
        let size = self.settings.load().size;
        let s = self.state.lock();
        s.waiters.is_empty() && (!s.idle.is_empty() || s.total < size)
    }

    /// The idle server connections, as SHOW SERVERS lists them.
    pub fn idle_servers(&self) -> Vec<IdleServer> {
        let s = self.state.lock();
        let check_delay = self.settings.load().check_delay;
        s.idle
            .iter()
            .map(|c| IdleServer {
                id: c.id,
                target: c.cancel.clone(),
                created: c.created,
                last_used: c.last_used,
                needs_check: c.last_used.elapsed() > check_delay,
            })
            .collect()
    }

    pub fn set_connector(&self, connector: Option<Arc<tokio_rustls::TlsConnector>>) {
        self.connector.store(connector);
    }

    /// A retired pool hands out nothing new: its database was removed or changed by a reload.
    pub fn retire(&self) {
        self.retired.store(true, Relaxed);
        let idle = std::mem::take(&mut self.state.lock().idle);
        idle.into_iter().for_each(ServerConn::terminate);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Relaxed)
    }

    /// Gets a server connection: an idle one, a new one if the pool has room, or the next one
    /// released, in arrival order. Returns it with how long the client waited.
    pub async fn checkout(self: &Arc<Self>) -> Result<(Box<ServerConn>, Duration), CheckoutError> {
        self.checkout_with(false, &|| true).await
    }

    /// Like [`Pool::checkout`]; with `fail_fast` a failed connection attempt is returned at once
    /// instead of retried until query_wait_timeout (a replica that is down: read elsewhere), and
    /// waiting stops as soon as `still_wanted` says the caller should go elsewhere.
    pub async fn checkout_with(
        self: &Arc<Self>,
        fail_fast: bool,
        still_wanted: &(dyn Fn() -> bool + Sync),
    ) -> Result<(Box<ServerConn>, Duration), CheckoutError> {
        let start = Instant::now();
        let settings = self.settings.load_full();
        let deadline = settings.query_wait_timeout.map(|t| start + t);
        let mut waited = false;
        loop {
            if self.is_retired() {
                return Err(CheckoutError::Closed);
            }
            let grant = match self.try_take(&settings, false) {
                Some(grant) => grant,
                None => {
                    waited = true;
                    self.wait(settings.clone(), start, deadline, still_wanted).await?
                }
            };
            let mut conn = match grant {
                Grant::Conn(conn) => match self.validate(conn, &settings, start).await {
                    Some(conn) => conn,
                    None => continue,
                },
                Grant::Connect => {
                    let _waiting = self.count_opening_for(start);
                    // The time the connection took to open is waited too (SHOW STATS' wait time,
                    // the wait histogram), not the first request's run time.
                    waited = true;
                    let deadline = if fail_fast { Some(Instant::now()) } else { deadline };
                    // Boxed: connecting (TLS, authentication) is most of the checkout's size, and
                    // every request's future carries the checkout though it rarely connects.
                    match Box::pin(self.open(&settings, deadline, still_wanted, true)).await? {
                        Some(conn) => conn,
                        // The server is full for now, or a server of the pool went idle while
                        // connecting failed: wait for (or take) one of the pool's connections.
                        None => continue,
                    }
                }
            };
            // An idle server taken at once costs no second clock read.
            let now = if waited { Instant::now() } else { start };
            conn.checked_out = Some(now);
            return Ok((conn, now.duration_since(start)));
        }
    }

    /// Takes an idle connection or a permit to open one, without waiting.
    fn try_take(&self, settings: &PoolSettings, reserve: bool) -> Option<Grant> {
        self.take_locked(&mut self.state.lock(), settings, reserve)
    }

    fn take_locked(&self, s: &mut PoolState, settings: &PoolSettings, reserve: bool) -> Option<Grant> {
        if let Some(conn) = s.idle.pop() {
            s.active += 1;
            return Some(Grant::Conn(conn));
        }
        let limit = settings.size + if reserve { settings.reserve_size } else { 0 };
        if s.total < limit && !self.opening_paused() && self.limits.try_acquire() {
            s.total += 1;
            s.opening += 1;
            s.active += 1;
            return Some(Grant::Connect);
        }
        None
    }

    async fn wait(
        self: &Arc<Self>,
        mut settings: Arc<PoolSettings>,
        start: Instant,
        deadline: Option<Instant>,
        still_wanted: &(dyn Fn() -> bool + Sync),
    ) -> Result<Grant, CheckoutError> {
        let _counted = self.count_waiting();
        let reserve_at = (settings.reserve_size > 0).then(|| start + settings.reserve_timeout);
        // A database-wide limit frees room in another pool without telling this one: look again now and then.
        let recheck = Duration::from_millis(if self.limits.is_limited() { 50 } else { 250 });
        let mut now = start;
        let mut use_reserve = reserve_at.is_some_and(|r| now >= r);
        loop {
            if self.limits.is_limited()
                && self.has_room(&settings, use_reserve)
                && self.limits.make_room_for(self)
            {
                // The other pool's server is closed and its place given back: take it now.
                if let Some(grant) = self.try_take(&settings, use_reserve) {
                    return Ok(grant);
                }
            }
            // Once the reserve is open to it the waiter has nothing more to look for at reserve_at:
            // a time to look again already past woke it at once, over and over, and it spun in and
            // out of the queue.
            let reserve_look = reserve_at.filter(|_| !use_reserve);
            let look_at = [deadline, reserve_look, Some(now + recheck)].into_iter().flatten().min().unwrap();
            let (tx, rx) = oneshot::channel();
            let start_sweeper = {
                let mut s = self.state.lock();
                // Looked for and queued under one lock: a connection released in between (by
                // another worker thread) is not missed until the next look.
                if let Some(grant) = self.take_locked(&mut s, &settings, use_reserve) {
                    return Ok(grant);
                }
                s.waiters.enqueue(Waiter { tx, since: start, look_at })
            };
            let mut rx = Pending { pool: self, rx };
            if start_sweeper {
                tokio::spawn(self.clone().sweep());
            }
            match (&mut rx.rx).await {
                Ok(Wake::LookAgain) => {}
                Ok(Wake::Granted(grant)) => return Ok(grant),
                Err(_) => return Err(CheckoutError::Closed),
            }
            now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(CheckoutError::WaitTimeout(now - start));
            }
            use_reserve = reserve_at.is_some_and(|r| now >= r);
            if self.is_retired() {
                return Err(CheckoutError::Closed);
            }
            if !still_wanted() {
                return Err(CheckoutError::Rerouted);
            }
            // A reload may have made the pool larger since the wait began (see settings_changed).
            settings = self.settings.load_full();
        }
    }

    /// Whether the pool may open another server as far as its own size goes.
    fn has_room(&self, settings: &PoolSettings, reserve: bool) -> bool {
        let limit = settings.size + if reserve { settings.reserve_size } else { 0 };
        self.state.lock().total < limit && !self.opening_paused()
    }

    /// When the longest waiter started waiting, if the pool's own size would let it open a server:
    /// it waits for a limit shared with other pools.
    /// Also how many servers the pool has.
    pub(super) fn oldest_waiting_for_a_limit(&self) -> Option<(Instant, usize)> {
        let settings = self.settings.load();
        let s = self.state.lock();
        let oldest = s.waiters.oldest()?;
        (s.total < settings.size && !self.opening_paused()).then_some((oldest, s.total))
    }

    /// The pool's server connections, open or being opened.
    pub(super) fn server_count(&self) -> usize {
        self.state.lock().total
    }

    /// Its standing under a shared limit: whether it may spare an idle server for another pool.
    pub(super) fn idle_share(&self) -> IdleShare {
        Self::idle_share_locked(&self.state.lock(), self.waiting_clients())
    }

    fn idle_share_locked(s: &PoolState, waiting: usize) -> IdleShare {
        IdleShare {
            servers: s.total,
            idle: s.idle.len(),
            idle_since: s.idle.iter().map(|c| c.last_used).min(),
            waiting,
        }
    }

    /// Closes the least recently used idle server for a pool the shared limit keeps waiting, if
    /// `may_give_up` still says so under this pool's lock (a client of its own may have come).
    pub(super) fn close_least_recently_used_idle(
        &self,
        for_pool: &PoolId,
        may_give_up: &dyn Fn(&IdleShare) -> bool,
    ) -> bool {
        let conn = {
            let mut s = self.state.lock();
            if !may_give_up(&Self::idle_share_locked(&s, self.waiting_clients())) {
                return false;
            }
            Self::take_least_recently_used_idle(&mut s)
        };
        let Some(conn) = conn else { return false };
        tracing::info!(database = %self.id.database, user = %self.id.user, server = %self.id.server,
            server_id = conn.id, for_database = %for_pool.database, for_user = %for_pool.user,
            "closing an idle server connection to make room under max_db_connections / max_user_connections");
        conn.terminate();
        true
    }

    /// The pool's settings changed (a reload): clients waiting look again at once, as a larger
    /// pool may serve them now, not only once a server is released.
    pub fn settings_changed(&self) {
        let waiters = self.state.lock().waiters.take_all();
        for tx in waiters {
            let _ = tx.send(Wake::LookAgain);
        }
    }

    /// Runs while clients wait: tells each when to look again (see waiters.rs).
    async fn sweep(self: Arc<Self>) {
        loop {
            let (due, next) = self.state.lock().waiters.take_due(Instant::now());
            for tx in due {
                // A waiter that gave up has dropped its receiver: nothing to tell.
                let _ = tx.send(Wake::LookAgain);
            }
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => return,
            }
        }
    }

    /// Checks an idle connection before handing it out: closed meanwhile, or due for a check query.
    async fn validate(
        &self,
        conn: Box<ServerConn>,
        settings: &PoolSettings,
        now: Instant,
    ) -> Option<Box<ServerConn>> {
        if conn.sock.has_pending_input() {
            self.discard(conn, "server closed the connection while idle");
            return None;
        }
        let idle_for = now.saturating_duration_since(conn.last_used);
        if let Some(query) = settings.check_query.as_deref().filter(|_| idle_for > settings.check_delay) {
            let mut conn = conn;
            let checking = Unclaimed(self);
            // Boxed for the same reason as a connect: rare, and large.
            let checked = Box::pin(super::check::run_check(&mut conn, query, settings.connect_timeout)).await;
            std::mem::forget(checking);
            match checked {
                Ok(()) => return Some(conn),
                Err(e) => {
                    self.discard(conn, &format!("server_check_query failed: {e}"));
                    return None;
                }
            }
        }
        Some(conn)
    }

    /// Opens a connection under a permit from [`Pool::try_take`], retrying transient failures
    /// (a restarting server) until the client's wait deadline. With `take_idle` (a client's
    /// open), a server of the pool that goes idle while connecting fails ends the wait for the
    /// next attempt: the permit is given back and `None` returned, for the client to take it.
    async fn open(
        self: &Arc<Self>,
        settings: &PoolSettings,
        deadline: Option<Instant>,
        still_wanted: &(dyn Fn() -> bool + Sync),
        take_idle: bool,
    ) -> Result<Option<Box<ServerConn>>, CheckoutError> {
        // Every way out but success gives the permit back, a cancelled connect included.
        let permit = OpenPermit(self);
        if let Some(refused) = self.recent_login_refusal(settings.login_retry, &self.login_refused) {
            return Err(CheckoutError::Connect(refused));
        }
        loop {
            let attempt = match self.backoff.turn(settings.connect_timeout) {
                Turn::Now(attempt) => attempt,
                Turn::After(at, last) => {
                    let past_deadline = |at: Instant| deadline.is_some_and(|d| at >= d);
                    if self.is_retired() {
                        return Err(CheckoutError::Connect(ConnectError::StillFailing { last }));
                    }
                    if take_idle && self.has_other_connections() {
                        // helper-164: connecting kept failing (pgpilot out of file descriptors)
                        // and 19 clients waited out query_wait_timeout for their turn to try
                        // again, while the pool's one open server sat idle.
                        if past_deadline(Instant::now()) {
                            return Err(CheckoutError::Connect(ConnectError::StillFailing { last }));
                        }
                        let until = deadline.map_or(at, |d| at.min(d));
                        if self.wait_for_turn_or_idle(until).await {
                            // The permit is given back as it drops: its place goes with it.
                            return Ok(None);
                        }
                    } else {
                        if past_deadline(at) {
                            return Err(CheckoutError::Connect(ConnectError::StillFailing { last }));
                        }
                        self.backoff.wait(at).await;
                    }
                    if !still_wanted() {
                        return Err(CheckoutError::Rerouted);
                    }
                    continue;
                }
            };
            if !still_wanted() {
                return Err(CheckoutError::Rerouted);
            }
            let secret = self.secrets.secret_for(&self.target);
            let connector = self.connector.load_full();
            let connecting = connect(
                &self.target,
                &secret,
                connector.as_deref(),
                settings.connect_timeout,
                super::connect::POOLED_APPLICATION_NAME,
            );
            let counted = self.count_connecting();
            let result = unless_unwanted(connecting, still_wanted).await;
            drop(counted);
            let Some(result) = result else {
                return Err(CheckoutError::Rerouted);
            };
            match result {
                Ok(connected) => {
                    self.backoff.succeeded();
                    if self.startup_params.load().is_none() {
                        self.startup_params.store(Some(Arc::new(connected.params.clone())));
                    }
                    *self.last_error.lock() = None;
                    *self.secret_missing_at.lock() = None;
                    *self.login_refused.lock() = None;
                    let slot = Slot { pool: self.clone(), generation: permit.opened() };
                    let address = self.target.url.address();
                    let is_unix = self.target.url.is_unix_socket();
                    let conn = Box::new(ServerConn::new(connected, address, is_unix, slot));
                    // Its pair, "closing server connection", says why it ended.
                    tracing::info!(database = %self.id.database, user = %self.id.user, server = %self.id.server,
                        server_id = conn.id, backend_pid = conn.cancel.pid, "server connection opened");
                    return Ok(Some(conn));
                }
                Err(e) => {
                    *self.last_error.lock() = Some(e.to_string());
                    if e.is_refused_for_now() && self.has_other_connections() {
                        let pause = pause_after_refusal(&e, settings.login_retry);
                        *self.opening_paused_until.lock() = Some(Instant::now() + pause);
                        tracing::warn!(pool = %self.id.database, server = %self.id.server, error = %e,
                            retry = ?pause, "server refused a new connection; using the open ones for a while");
                        return Ok(None);
                    }
                    self.remember_refusal(&e, &self.login_refused);
                    // A full server with none of this pool's connections open: as in PgBouncer,
                    // the client gets its answer, and the server is not asked again before
                    // server_login_retry (the health monitor's reserved-slot logins succeed, so
                    // the backoff alone restarted at 0.1 s: ten FATAL logins a second).
                    if e.is_permanent() || e.is_server_full() {
                        return Err(CheckoutError::Connect(e));
                    }
                    self.backoff.failed(&attempt, e.to_string(), settings.login_retry);
                    if deadline.is_some_and(|d| Instant::now() >= d) || self.is_retired() {
                        return Err(CheckoutError::Connect(e));
                    }
                    tracing::warn!(pool = %self.id.database, server = %self.id.server, error = %e, "server connection failed; retrying");
                }
            }
        }
    }

    /// Waits for the backoff's next turn until `until`; true, at once, when a server of the pool
    /// is idle or goes idle meanwhile.
    async fn wait_for_turn_or_idle(&self, until: Instant) -> bool {
        let idle = self.idle_for_openers.notified();
        tokio::pin!(idle);
        // Registered before looking: a server released between the look and the wait is not missed.
        idle.as_mut().enable();
        if !self.state.lock().idle.is_empty() {
            return true;
        }
        tokio::select! {
            _ = idle => true,
            _ = self.backoff.wait(until) => false,
        }
    }

    fn count_connecting(&self) -> Connecting<'_> {
        self.state.lock().connecting += 1;
        Connecting(self)
    }

    /// Whether new connections wait (see `opening_paused_until`); reads the clock only then.
    fn opening_paused(&self) -> bool {
        let mut until = self.opening_paused_until.lock();
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    /// Whether the pool has connections besides the one being opened.
    fn has_other_connections(&self) -> bool {
        let s = self.state.lock();
        s.total > s.opening
    }

    /// The login the server refused less than `retry` ago, if any.
    fn recent_login_refusal(
        &self,
        retry: Duration,
        refusal: &Mutex<Option<Refusal>>,
    ) -> Option<ConnectError> {
        let mut refused = refusal.lock();
        match refused.as_ref() {
            Some((at, addr, fields)) if at.elapsed() < retry => {
                Some(ConnectError::Rejected { addr: addr.clone(), fields: fields.clone() })
            }
            Some(_) => {
                *refused = None;
                None
            }
            None => None,
        }
    }

    /// Gives back a permit whose connection could not be opened.
    fn abandon_open(&self) {
        {
            let mut s = self.state.lock();
            s.opening -= 1;
            s.active -= 1;
        }
        self.connection_closed(None);
    }

    /// The pool's server answered another connection (the health monitor's): connecting is no
    /// longer paused.
    pub fn server_answered(&self) {
        self.backoff.succeeded();
    }

    /// A connection outside the pool's count, for monitors: same server, user, credentials and TLS.
    /// A refused login is remembered for server_login_retry, as for the pool's own connections:
    /// a monitor retrying every round would flood the server's log (and trip lockouts).
    pub async fn connect_unpooled(&self) -> Result<super::connect::Connected, ConnectError> {
        let settings = self.settings.load();
        // A refusal met by the pool's clients or by an unpooled login: this one is unpooled too.
        let refused = [&self.login_refused, &self.monitor_login_refused]
            .into_iter()
            .find_map(|refusal| self.recent_login_refusal(settings.login_retry, refusal));
        if let Some(refused) = refused {
            return Err(refused);
        }
        let secret = self.secrets.secret_for(&self.target);
        let connector = self.connector.load_full();
        let result = connect(
            &self.target,
            &secret,
            connector.as_deref(),
            settings.connect_timeout,
            super::connect::MONITOR_APPLICATION_NAME,
        )
        .await;
        match &result {
            Ok(_) => {
                self.backoff.succeeded();
                *self.monitor_login_refused.lock() = None;
            }
            Err(e) => self.remember_refusal(e, &self.monitor_login_refused),
        }
        result
    }

    /// The server's last answer to a login was that the database does not exist (3D000).
    pub fn database_missing(&self) -> bool {
        [&self.login_refused, &self.monitor_login_refused]
            .iter()
            .any(|refusal| refusal.lock().as_ref().is_some_and(|(_, _, fields)| fields.code == "3D000"))
    }

    /// A login refused for its credentials or database is remembered for server_login_retry. A
    /// server starting up or shutting down (57P03) or full (53300) is not: it is retried, and once
    /// it is down the client hears why ("connection refused"), not the last thing it said.
    /// Either is logged as the server's refusal, naming the pool (the client is told the
    /// server's words, which do not say that pgpilot's login was refused, nor for which database).
    fn remember_refusal(&self, e: &ConnectError, refusal: &Mutex<Option<Refusal>>) {
        let id = &self.id;
        match e {
            ConnectError::Rejected { addr, fields } if e.refuses_login() || e.is_server_full() => {
                tracing::warn!(database = %id.database, user = %id.user, server = %id.server,
                    code = %fields.code, message = %fields.message, "server login failed");
                *refusal.lock() = Some((Instant::now(), addr.clone(), fields.clone()));
            }
            ConnectError::NoSecret { .. } | ConnectError::StaleVerifier { .. } => {
                tracing::warn!(database = %id.database, user = %id.user, server = %id.server, error = %e,
                    "server login failed");
                *self.secret_missing_at.lock() = Some(Instant::now())
            }
            _ => {}
        }
    }

    /// Whether a login to this pool's server was refused less than server_login_retry ago.
    pub fn login_recently_refused(&self) -> bool {
        let retry = self.settings.load().login_retry;
        let recent = |refusal: &Mutex<Option<Refusal>>| {
            refusal.lock().as_ref().is_some_and(|(at, _, _)| at.elapsed() < retry)
        };
        recent(&self.login_refused)
            || recent(&self.monitor_login_refused)
            || self.secret_missing_at.lock().is_some_and(|at| at.elapsed() < retry)
    }

    /// Returns a healthy connection that is idle (no transaction) to the pool. One with a cancel
    /// request still in flight waits for it first (sv_being_canceled, in PgBouncer's words).
    pub fn release(self: &Arc<Self>, conn: Box<ServerConn>) {
        if !conn.cancel.is_being_cancelled() {
            return self.release_now(conn);
        }
        let pool = self.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(6);
            while conn.cancel.is_being_cancelled() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            pool.release_now(conn);
        });
    }

    /// `conn.last_used` says when the connection went idle (its last transaction ended): read
    /// there once instead of here again.
    fn release_now(&self, mut conn: Box<ServerConn>) {
        conn.shed_large_buffers();
        conn.cancel.prepared.store(conn.statements.held(), Relaxed);
        let now = conn.last_used;
        let settings = self.settings.load();
        let stale = conn.slot.generation < self.generation.load(Relaxed);
        let too_old = settings.lifetime.is_some_and(|l| now.duration_since(conn.created) >= l);
        if stale || self.is_retired() || too_old {
            let reason = match (stale, too_old) {
                (true, _) => "RECONNECT",
                (_, true) => "server_lifetime",
                _ => "database reconfigured",
            };
            return self.discard(conn, reason);
        }
        if self.limits.is_limited() {
            if self.limits.exceeded() {
                return self.discard(conn, "max_db_connections or max_user_connections lowered");
            }
            if self.owes_a_limited_place(PlaceUnderLimit::Released) {
                self.state.lock().active -= 1;
                conn.terminate();
                return;
            }
        }
        let mut s = self.state.lock();
        if s.total > settings.size && !Self::reserve_wanted(&s, &settings, now) {
            // Beyond the size and no waiter has waited reserve_pool_timeout (the reserve is not
            // wanted, or a reload made the pool smaller): this connection goes.
            s.active -= 1;
            drop(s);
            self.log_close(&conn, "beyond the pool's size");
            conn.terminate();
            return;
        }
        while let Some(w) = s.waiters.pop_front() {
            match w.tx.send(Wake::Granted(Grant::Conn(conn))) {
                Ok(()) => return,
                Err(Wake::Granted(Grant::Conn(back))) => conn = back,
                Err(_) => unreachable!("we sent a connection"),
            }
        }
        s.active -= 1;
        s.idle.push(conn);
        // Connections are being opened: those whose connect waits for the backoff's next turn
        // may take this one (rare, and only then worth the Notify's lock).
        let openers = s.opening > 0;
        drop(s);
        if openers {
            self.idle_for_openers.notify_waiters();
        }
    }

    /// Under a reached max_db_connections or max_user_connections, whether another pool whose
    /// clients wait for the limit has at least two servers fewer than this one: then a server this
    /// pool releases is closed, and the place its closing frees goes to that pool's waiters, which
    /// are let open one. The pools converge on even shares and then keep their servers (moving
    /// one on every release, by the age of the waiters, reconnected every transaction).
    /// Looked at without this pool's lock, as the other pools' are taken.
    fn owes_a_limited_place(&self, place: PlaceUnderLimit) -> bool {
        let freed = place == PlaceUnderLimit::Freed;
        // Counted with the server being released, or just closed.
        let ours = self.server_count() + usize::from(freed);
        let Some(other) = self.limits.pool_with_fewer_servers(self, ours, freed) else { return false };
        if freed {
            other.let_waiters_open();
        } else {
            tracing::debug!(database = %self.id.database, user = %self.id.user, for_database = %other.id.database,
                for_user = %other.id.user, "closing a released server connection for a pool with fewer under a shared limit");
        }
        true
    }

    /// Whether a connection beyond the pool's size may stay: the longest waiter has waited
    /// reserve_pool_timeout and the reserve has room for it.
    fn reserve_wanted(s: &PoolState, settings: &PoolSettings, now: Instant) -> bool {
        s.total <= settings.size + settings.reserve_size
            && s.waiters.oldest().is_some_and(|since| now >= since + settings.reserve_timeout)
    }

    /// A reload may bring the password that was wrong: the next login tries the server again.
    pub fn forget_login_refusal(&self) {
        *self.login_refused.lock() = None;
        *self.monitor_login_refused.lock() = None;
        *self.secret_missing_at.lock() = None;
    }

    /// After a reload that made the pool smaller: closes idle connections beyond its new size at
    /// once; busy ones go when they are released (`release_now`).
    pub fn trim_to_size(&self) {
        let size = self.settings.load().size;
        let mut s = self.state.lock();
        let surplus = s.total.saturating_sub(size).min(s.idle.len());
        // The least recently used sit at the front.
        let closing: Vec<_> = s.idle.drain(..surplus).collect();
        drop(s);
        for conn in closing {
            self.log_close(&conn, "the pool was made smaller");
            conn.terminate();
        }
    }

    /// Closes the least recently used idle server for a max_db_connections or
    /// max_user_connections a reload lowered; whether there was one.
    pub(super) fn close_idle_beyond_limit(&self) -> bool {
        let conn = Self::take_least_recently_used_idle(&mut self.state.lock());
        let Some(conn) = conn else { return false };
        self.log_close(&conn, "max_db_connections or max_user_connections lowered");
        conn.terminate();
        true
    }

    fn take_least_recently_used_idle(s: &mut PoolState) -> Option<Box<ServerConn>> {
        let oldest = s.idle.iter().enumerate().min_by_key(|(_, c)| c.last_used).map(|(i, _)| i);
        // `remove`, not `swap_remove`: the rest stay in the order they went idle.
        oldest.map(|i| s.idle.remove(i))
    }

    fn log_close(&self, conn: &ServerConn, reason: &str) {
        tracing::info!(database = %self.id.database, user = %self.id.user, server = %self.id.server,
            server_id = conn.id, reason, "closing server connection");
    }

    /// Drops a checked-out connection that must not be reused (broken, or left mid-transaction).
    pub fn discard(&self, conn: Box<ServerConn>, reason: &str) {
        self.log_close(&conn, reason);
        self.state.lock().active -= 1;
        conn.terminate();
    }

    /// Called when a connection of this pool is dropped (of its generation; None for one never
    /// opened): frees its place and lets a waiter open one.
    pub(super) fn connection_closed(&self, generation: Option<u64>) {
        self.limits.release();
        let mut s = self.state.lock();
        s.total -= 1;
        if generation.is_some_and(|g| g < self.generation.load(Relaxed)) {
            s.stale = s.stale.saturating_sub(1);
        }
        if self.is_retired() {
            return;
        }
        drop(s);
        if self.limits.is_limited() && self.owes_a_limited_place(PlaceUnderLimit::Freed) {
            return;
        }
        self.let_waiters_open();
    }

    /// Lets this pool's waiters open servers while its size and the shared limits allow.
    fn let_waiters_open(&self) {
        let settings = self.settings.load();
        let mut s = self.state.lock();
        if self.is_retired() {
            return;
        }
        let now = Instant::now();
        while let Some(w) = s.waiters.pop_front() {
            // Only within the size the waiter may use: a pool made smaller by a reload shrinks as
            // its surplus connections close, instead of opening one for every one it closes.
            let reserve = if now >= w.since + settings.reserve_timeout { settings.reserve_size } else { 0 };
            if s.total >= settings.size + reserve || self.opening_paused() || !self.limits.try_acquire() {
                s.waiters.push_front(w);
                return;
            }
            s.total += 1;
            s.opening += 1;
            s.active += 1;
            if w.tx.send(Wake::Granted(Grant::Connect)).is_ok() {
                return;
            }
            s.total -= 1;
            s.opening -= 1;
            s.active -= 1;
            self.limits.release();
        }
    }

    /// Idle connections past server_idle_timeout (beyond min_pool_size) or server_lifetime, or that
    /// the server closed or spoke on (pg_terminate_backend, a crash, a shutdown: its FATAL or EOF
    /// is waiting to be read), removed from the pool for the caller to close. A closed one kept
    /// would sit in CLOSE-WAIT, be counted in SHOW POOLS and hold min_pool_size's place.
    pub fn take_expired(&self) -> Vec<Box<ServerConn>> {
        let settings = self.settings.load();
        let mut s = self.state.lock();
        let mut keep = s.total;
        let mut expired = Vec::new();
        let mut i = 0;
        while i < s.idle.len() {
            let c = &s.idle[i];
            let too_old = settings.lifetime.is_some_and(|l| c.created.elapsed() >= l);
            let too_idle =
                settings.idle_timeout.is_some_and(|t| c.last_used.elapsed() >= t) && keep > settings.min_size;
            let closed = c.sock.has_pending_input();
            let reason = match (closed, too_old, too_idle) {
                (true, _, _) => Some("closed by the server while idle"),
                (_, true, _) => Some("server_lifetime"),
                (_, _, true) => Some("server_idle_timeout"),
                _ => None,
            };
            if let Some(reason) = reason {
                self.log_close(c, reason);
                expired.push(s.idle.remove(i));
                keep -= 1;
            } else {
                i += 1;
            }
        }
        expired
    }

    /// How many connections to open to reach min_pool_size, reserved as permits.
    pub fn reserve_for_minimum(&self) -> usize {
        let settings = self.settings.load();
        let mut s = self.state.lock();
        let mut n = 0;
        while s.total < settings.min_size.min(settings.size) && self.limits.try_acquire() {
            s.total += 1;
            s.opening += 1;
            s.active += 1;
            n += 1;
        }
        n
    }

    /// Opens one connection under a permit from [`Pool::reserve_for_minimum`] and parks it idle.
    pub async fn open_idle(self: &Arc<Self>) {
        let settings = self.settings.load_full();
        match self.open(&settings, Some(Instant::now()), &|| true, false).await {
            Ok(Some(conn)) => self.release(conn),
            Ok(None) => {}
            // The attempt that failed said so already.
            Err(CheckoutError::Connect(ConnectError::StillFailing { .. })) => {}
            Err(e) => {
                tracing::warn!(database = %self.id.database, server = %self.id.server, error = %e, "min_pool_size: could not open a server connection")
            }
        }
    }

    /// RECONNECT: idle connections close now, busy ones when their clients release them.
    pub fn reconnect(&self) {
        {
            let mut s = self.state.lock();
            self.generation.fetch_add(1, Relaxed);
            s.stale = s.total - s.opening;
        }
        self.close_idle();
    }

    /// Open connections from before the last RECONNECT (closed as their clients release them).
    pub fn stale_connections(&self) -> usize {
        self.state.lock().stale
    }

    /// Closes every idle connection (RECONNECT, reload of server settings).
    pub fn close_idle(&self) -> usize {
        let idle = std::mem::take(&mut self.state.lock().idle);
        let n = idle.len();
        idle.into_iter().for_each(ServerConn::terminate);
        n
    }
}

/// Where a place under a shared limit comes from when it may go to another pool.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PlaceUnderLimit {
    /// A server was released after its transaction; the limit is reached.
    Released,
    /// A server closed just now; the limit was reached until then.
    Freed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgpilot_wire::error::ErrorFields;

    fn refused(code: &str) -> ConnectError {
        let fields = ErrorFields { severity: "FATAL".into(), code: code.into(), message: "no".into() };
        ConnectError::Rejected { addr: "127.0.0.1:5432".into(), fields }
    }

    #[test]
    fn a_role_or_database_connection_limit_is_no_failure_of_the_server() {
        let limited = |message: &str| {
            let fields =
                ErrorFields { severity: "FATAL".into(), code: "53300".into(), message: message.into() };
            CheckoutError::Connect(ConnectError::Rejected { addr: "127.0.0.1:5432".into(), fields })
        };
        assert!(limited("too many connections for role \"app\"").is_login_refusal());
        assert!(limited("too many connections for database \"app\"").is_login_refusal());
        assert!(!limited("sorry, too many clients already").is_login_refusal());
        assert!(!limited("remaining connection slots are reserved for roles with the SUPERUSER attribute")
            .is_login_refusal());
    }

    #[test]
    fn a_restarting_server_is_tried_again_soon_and_a_full_one_after_server_login_retry() {
        let retry = Duration::from_secs(15);
        assert_eq!(pause_after_refusal(&refused("57P03"), retry), RESTART_PAUSE);
        assert_eq!(pause_after_refusal(&refused("53300"), retry), retry);
        assert_eq!(
            pause_after_refusal(&refused("57P03"), Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }
}
