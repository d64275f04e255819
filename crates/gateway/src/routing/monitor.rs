//! The monitor: every health_check_interval it asks each server of each database whether it is in
//! recovery and where its WAL is. From that it knows which server is the primary (so writes follow a
//! failover), how far each replica lags (by LSN first: the replay timestamp keeps ageing on an idle
//! primary), and which servers are down (banned for ban_time). It also refreshes the function
//! catalog that routing consults.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgpilot_sql::{FunctionCatalog, RelationCatalog};

use super::backend::{now_ms, parse_lsn, Backend, Role};
use crate::databases::{Database, PoolSet};
use crate::net::Sock;
use crate::pool::check::query;
use crate::shared::{Phase, Shared};

/// The primary's position is where WAL is inserted, not where it is written: with
/// synchronous_commit = off a commit is acknowledged before its record is written, and a replica
/// that replayed up to the written position may not have it yet (read-your-writes).
const PROBE_SQL: &str = "SELECT pg_catalog.pg_is_in_recovery(), \
     CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_insert_lsn() END, \
     CASE WHEN pg_catalog.pg_is_in_recovery() \
          THEN (SELECT pg_catalog.to_hex(received_tli) FROM pg_catalog.pg_stat_wal_receiver) \
          ELSE substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8) END";

/// Refresh the function catalog this often (and at start).
const CATALOG_EVERY: Duration = Duration::from_secs(60);

/// A monitor connection to one server.
struct Probe {
    sock: Sock,
    buf: BytesMut,
}

/// What one probe of one server said.
struct Reading {
    in_recovery: bool,
    lsn: u64,
    /// A primary's timeline; a replica's is the one it receives WAL on (0 when unknown: no WAL
    /// receiver, or a role without pg_read_all_stats, which sees no details of it).
    timeline: u32,
}

/// The monitor of one database.
struct DatabaseMonitor {
    db: Arc<Database>,
    probes: Vec<Option<Probe>>,
    /// When connecting a server's probe last failed: a server that does not answer is asked
    /// again once per health_check_interval, not at every lag round.
    connect_failed: Vec<Option<Instant>>,
    catalog_loaded: Option<Instant>,
    /// When the relation catalog (for the result cache) was last read.
    relations_loaded: Option<Instant>,
    /// When the primary was first seen at each WAL position: how long ago a replica's position was
    /// current is its lag in time.
    history: std::collections::VecDeque<(u64, u64)>,
    /// The newest timeline a primary of this database has been seen on: a writable server on an
    /// older one is an old primary come back, and never takes writes again.
    newest_timeline: u32,
    /// Per server: a replica not known to follow the current primary (see `verify_followers`).
    doubts: Vec<Option<Doubt>>,
    /// Per server: its timeline could not be read (logged once).
    timeline_hidden: Vec<bool>,
    /// The old primary's address after a failover, until its clients are closed.
    fenced: Option<Arc<str>>,
    /// The monitor has no login for the database yet (said once in the log).
    no_login_logged: bool,
}

/// A replica that gets no reads until its replayed position moves: after a failover (it may have
/// replayed WAL the new primary never had, and then it can never follow it, yet its position
/// compares as caught up), or when it was seen ahead of the primary.
#[derive(Debug, Default, Clone, Copy)]
struct Doubt {
    /// Its position when the doubt began (first reading after it).
    at_lsn: Option<u64>,
    rounds: u32,
    /// Seen receiving an older timeline than the primary's: its position proves nothing until
    /// it receives the primary's.
    older_timeline: bool,
}

/// Rounds a doubted replica gets the primary nudged for (a tiny commit, so replicas that do
/// follow have something to replay) before it is reported as not following.
const NUDGE_ROUNDS: u32 = 20;

/// Primary positions remembered for measuring lag in time (at 10 per second, over a quarter of an hour).
const HISTORY: usize = 10_000;

/// Runs until the gateway stops: one round per database every health_check_interval (or
/// lag_check_interval when shorter).
pub async fn run(shared: Arc<Shared>) {
    let mut monitors: Vec<DatabaseMonitor> = Vec::new();
    loop {
        if shared.phase() == Phase::Stopped {
            return;
        }
        let dbs = shared.databases.load_full();
        monitors.retain(|m| dbs.get(&*m.db.name).is_some_and(|d| Arc::ptr_eq(d, &m.db)));
        for db in dbs.values() {
            if !monitors.iter().any(|m| Arc::ptr_eq(&m.db, db)) {
                monitors.push(DatabaseMonitor {
                    db: db.clone(),
                    probes: db.backends.iter().map(|_| None).collect(),
                    connect_failed: db.backends.iter().map(|_| None).collect(),
                    catalog_loaded: None,
                    relations_loaded: None,
                    history: Default::default(),
                    newest_timeline: 0,
                    doubts: vec![None; db.backends.len()],
                    timeline_hidden: vec![false; db.backends.len()],
                    fenced: None,
                    no_login_logged: false,
                });
            }
        }
        let mut interval = Duration::from_secs(1);
        for m in monitors.iter_mut() {
            let routing = m.db.routing.load();
            interval =
                interval.min(routing.health_check_interval.get()).min(routing.lag_check_interval.get());
            match pool_set_for(&shared, &m.db) {
                Some(set) => m.round(&set).await,
                None => m.say_no_login_yet(),
            }
            if let Some(old_primary) = m.fenced.take() {
                close_clients_on(&shared, &m.db.name, &old_primary);
            }
        }
        tokio::time::sleep(interval.max(Duration::from_millis(100))).await;
    }
}

/// Ends the sessions that hold a server connection to the old primary after a failover (pinned
/// clients, session pooling, a transaction under way): on their own connection they would go on
/// writing there, and those writes would be lost; closed, they come back to the new primary.
fn close_clients_on(shared: &Shared, database: &str, old_primary: &str) {
    let on_old = |c: &crate::registry::ClientInfo| {
        &**c.database.lock() == database && c.server.lock().as_ref().is_some_and(|t| t.address == old_primary)
    };
    let clients: Vec<_> = shared.registry.all().into_iter().filter(|c| on_old(c)).collect();
    if !clients.is_empty() {
        tracing::warn!(
            database,
            server = old_primary,
            clients = clients.len(),
            "closing the clients that hold a server connection to the old primary"
        );
    }
    for c in clients {
        c.request_close_fenced();
    }
}

/// The pools whose credentials the monitor logs in with: the forced user's, or any client's.
pub(crate) fn pool_set_for(shared: &Shared, db: &Database) -> Option<Arc<PoolSet>> {
    // A user whose logins succeed: one client's wrong password says nothing about the server.
    let sets = db.pool_sets();
    let logs_in = |set: &&Arc<PoolSet>| set.all().all(|p| p.last_error.lock().is_none());
    if let Some(set) = sets.iter().find(logs_in).or(sets.first()) {
        return Some(set.clone());
    }
    // A database made from `*` is looked at through its clients' pools only: making pools for it
    // here would log in to any name a client once asked for, the server's missing ones included.
    if db.made_from_fallback {
        return None;
    }
    let forced = db.forced_user.as_deref()?;
    shared.pools_for(&db.name, forced).ok().map(|(_, set)| set)
}

impl DatabaseMonitor {
    /// The monitor logs in as one of the database's clients (or its forced user): until the
    /// first client logs in, roles and lag are unknown (`server_state = unchecked`), and that
    /// first client waits for the first check (up to 5 s) before anything is routed.
    fn say_no_login_yet(&mut self) {
        if !self.no_login_logged && self.db.backends.len() > 1 && !self.db.made_from_fallback {
            self.no_login_logged = true;
            tracing::info!(
                database = %self.db.name,
                "the routing monitor checks the servers once a client has logged in (the database forces no user)"
            );
        }
    }

    async fn round(&mut self, set: &PoolSet) {
        let routing = self.db.routing.load_full();
        let ban_ms = routing.ban_time.get().as_millis() as u64;
        let timeout = routing.health_check_interval.get().max(Duration::from_secs(2));
        // The primary is probed after the replicas: a replica that follows it can then never
        // read as ahead of it.
        let primary = self.db.primary_index();
        let mut results = self.probe(set, timeout, |i| i != primary).await;
        results.extend(self.probe(set, timeout, |i| i == primary).await);
        let now = now_ms();
        let mut readings: Vec<(Arc<Backend>, Reading)> = Vec::new();
        for (backend, sent, result) in results {
            match result {
                Ok(r) => {
                    backend.check_passed();
                    // The server answers: every user's pool may connect again at once, not after
                    // its own pause with the error it met while the server was down (which a
                    // replica read would otherwise take for a new failure, and ban it again).
                    for other in self.db.pool_sets() {
                        if let Some(pool) = other.pools.get(backend.index) {
                            pool.server_answered();
                        }
                    }
                    backend.record_position(r.lsn, sent, r.timeline);
                    if !r.in_recovery {
                        backend.history.record(super::positions::Stamped { lsn: r.lsn, at_ms: sent });
                    }
                    readings.push((backend, r));
                }
                Err(CheckError::Credentials(e)) => {
                    tracing::warn!(database = %self.db.name, server = %backend.address, error = %e, "health check could not log in; the server is not marked down for it (next try after server_login_retry)");
                }
                Err(CheckError::Server(e)) => {
                    backend.failed_checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    backend.ban(ban_ms, &e);
                }
                // No check was made: the server stays down (until a check passes) with the error
                // the last check met.
                Err(CheckError::LoginRefusedLately | CheckError::NotTriedYet) => {}
            }
        }
        if self.settle_roles(&readings) {
            let primary = self.db.primary_index();
            for (i, doubt) in self.doubts.iter_mut().enumerate() {
                *doubt = (i != primary).then(Doubt::default);
            }
        }
        self.db.roles_now_checked();
        self.measure_lag(&readings, now);
        if self.verify_followers(&readings) {
            self.nudge_primary().await;
        }
        if self.db.take_functions_wanted() || self.catalog_loaded.is_none_or(|t| t.elapsed() >= CATALOG_EVERY)
        {
            self.load_functions().await;
        }
        let cache = &self.db.cache;
        let due = self.relations_loaded.is_none_or(|t| t.elapsed() >= CATALOG_EVERY) || cache.catalog_stale();
        if cache.enabled() && due {
            self.load_relations().await;
        }
    }

    /// Checks the servers `pick` selects, at once; each result comes with the time its probe was
    /// sent. (Read-your-writes trusts a primary position only if it was read after the client's
    /// commit: positions are stamped with the time asked, not answered.)
    async fn probe(
        &mut self,
        set: &PoolSet,
        timeout: Duration,
        pick: impl Fn(usize) -> bool,
    ) -> Vec<(Arc<Backend>, u64, Result<Reading, CheckError>)> {
        let sent = now_ms();
        let every = self.db.routing.load().health_check_interval.get();
        let made_from_fallback = self.db.made_from_fallback;
        let checks = self
            .probes
            .iter_mut()
            .zip(self.connect_failed.iter_mut())
            .zip(self.db.backends.iter())
            .zip(set.pools.iter())
            .filter(|((_, backend), _)| pick(backend.index))
            .map(|(((probe, failed_at), backend), pool)| {
                let pool = pool.clone();
                async move {
                    let result = match failed_at.filter(|at| at.elapsed() < every) {
                        Some(_) => Err(CheckError::NotTriedYet),
                        // A name a client asked for through `*` that the server lacks: as in
                        // PgBouncer, only clients' logins try it again (at most once per
                        // server_login_retry), or each such name would add a FATAL to the
                        // server's log every server_login_retry until autodb_idle_timeout.
                        None if made_from_fallback && pool.database_missing() => {
                            Err(CheckError::LoginRefusedLately)
                        }
                        None => check(probe, failed_at, &pool, timeout).await,
                    };
                    (backend.clone(), sent, result)
                }
            });
        futures::future::join_all(checks).await
    }

    /// A replica doubted after a failover, or seen ahead of the primary, is trusted again once
    /// its replayed position moves (it replays what the primary writes). Says whether the primary
    /// should be nudged to write something for doubted replicas to replay.
    fn verify_followers(&mut self, readings: &[(Arc<Backend>, Reading)]) -> bool {
        let primary = self.db.primary_index();
        let primary_lsn = readings.iter().find(|(b, _)| b.index == primary).map(|(_, r)| r.lsn);
        for (b, r) in readings.iter().filter(|(b, r)| b.index != primary && r.in_recovery) {
            let doubt = &mut self.doubts[b.index];
            if r.timeline == 0 && !std::mem::replace(&mut self.timeline_hidden[b.index], true) {
                tracing::warn!(server = %b.address, "cannot read the replica's timeline: its WAL receiver is not running (not connected to a primary), or pg_stat_wal_receiver hides it from a role without pg_read_all_stats (grant pg_monitor then); until it is read, a replica still following an old primary after a failover cannot be told from one following the new");
            }
            // Receiving an older timeline than the primary's: it follows an old primary (fenced, or
            // not yet told), whose WAL moves its position too. Only its timeline clears this.
            if r.timeline != 0 && r.timeline < self.newest_timeline {
                if !doubt.is_some_and(|d| d.older_timeline) {
                    tracing::warn!(server = %b.address, timeline = r.timeline, primary_timeline = self.newest_timeline, "replica receives an older timeline than the primary's: no reads go to it until it follows the primary");
                }
                *doubt = Some(Doubt { at_lsn: None, rounds: NUDGE_ROUNDS, older_timeline: true });
                b.set_following(false);
                continue;
            }
            if doubt.as_ref().is_some_and(|d| d.older_timeline) {
                // On the primary's timeline now: doubted afresh, trusted once it replays.
                *doubt = Some(Doubt::default());
            }
            if doubt.is_none() && primary_lsn.is_some_and(|p| r.lsn > p) {
                tracing::warn!(server = %b.address, "replica is ahead of the primary: no reads go to it until it replays the primary's WAL");
                *doubt = Some(Doubt::default());
            }
            if let Some(d) = doubt.as_mut() {
                match d.at_lsn {
                    None => d.at_lsn = Some(r.lsn),
                    Some(lsn) if lsn != r.lsn => {
                        tracing::info!(server = %b.address, "replica follows the primary: reads go to it again");
                        *doubt = None;
                    }
                    Some(_) => {
                        d.rounds += 1;
                        if d.rounds == NUDGE_ROUNDS {
                            tracing::warn!(server = %b.address, "replica does not replay the primary's WAL (on another timeline, or replay paused): no reads go to it until its position moves");
                        }
                    }
                }
            }
            b.set_following(doubt.is_none());
        }
        self.doubts.iter().flatten().any(|d| d.rounds < NUDGE_ROUNDS)
    }

    /// A commit on the primary (any transaction that took an xid writes one) gives replicas that
    /// follow it something to replay, so a doubt clears on an idle database too.
    async fn nudge_primary(&mut self) {
        let primary = self.db.primary_index();
        let Some(probe) = self.probes[primary].as_mut() else { return };
        let nudge = "SELECT pg_catalog.txid_current()";
        if let Err(e) = query(&probe.sock, &mut probe.buf, None, nudge, Duration::from_secs(2)).await {
            tracing::debug!(database = %self.db.name, error = %e, "nudging the primary failed");
            self.probes[primary] = None;
        }
    }

    /// The relation catalog the result cache judges reads with (RLS, temporary and system
    /// relations, partitions, inheritance, views). Read again after DDL through pgpilot.
    async fn load_relations(&mut self) {
        let generation = self.db.cache.catalog_generation();
        let Some(answers) = self.ask_primary(RelationCatalog::text_queries(), "relation").await else {
            return;
        };
        match RelationCatalog::from_text_rows(&answers) {
            Some(catalog) => {
                self.db.cache.set_relations(catalog, generation);
                self.relations_loaded = Some(Instant::now());
            }
            None => tracing::warn!(database = %self.db.name, "the relation catalog had an unexpected shape"),
        }
    }

    /// The primary is the server that is not in recovery, on the newest timeline seen. Says
    /// whether the primary changed (a failover: replicas are doubted until they show they follow).
    fn settle_roles(&mut self, readings: &[(Arc<Backend>, Reading)]) -> bool {
        let newest = readings.iter().filter(|(_, r)| !r.in_recovery).map(|(_, r)| r.timeline).max();
        let timeline_moved = newest.is_some_and(|t| t > self.newest_timeline && self.newest_timeline > 0);
        self.newest_timeline = self.newest_timeline.max(newest.unwrap_or(0));
        let writable = readings
            .iter()
            .filter(|(_, r)| !r.in_recovery && r.timeline >= self.newest_timeline)
            .max_by_key(|(b, _)| (b.configured_primary, std::cmp::Reverse(b.index)));
        for (b, r) in readings {
            let role = if writable.is_some_and(|(p, _)| Arc::ptr_eq(b, p)) {
                Role::Primary
            } else if r.in_recovery {
                Role::Replica
            } else {
                // A second writable server, or one on an older timeline (an old primary back
                // after a failover): fenced off.
                Role::Unknown
            };
            b.set_role(role);
        }
        // With no writable server on the newest timeline up, writes keep going to the primary
        // that was (and fail) rather than to an old one.
        let Some((new_primary, _)) = writable else { return false };
        let old = self.db.primary_index();
        if old == new_primary.index {
            return timeline_moved;
        }
        tracing::warn!(
            database = %self.db.name,
            from = %self.db.backends[old].address,
            to = %new_primary.address,
            "primary changed: writes now go to the new primary"
        );
        self.db.set_primary_index(new_primary.index);
        // Results cached from the old primary may hold commits the new one never got (an
        // asynchronous replica promoted): none is served again.
        self.db.cache.apply(&crate::cache::Invalidation::Everything);
        if self.db.backends[old].role() == Role::Primary && !readings.iter().any(|(b, _)| b.index == old) {
            // The old primary did not answer: it is no longer the primary, whatever it is when back.
            self.db.backends[old].set_role(Role::Unknown);
        }
        for s in self.db.pool_sets() {
            s.pools[old].reconnect();
        }
        self.fenced = Some(self.db.backends[old].address.clone());
        true
    }

    fn measure_lag(&mut self, readings: &[(Arc<Backend>, Reading)], now: u64) {
        let primary = self.db.primary_index();
        let Some((_, p)) = readings.iter().find(|(b, _)| b.index == primary) else { return };
        if self.history.back().is_none_or(|(lsn, _)| p.lsn > *lsn) {
            self.history.push_back((p.lsn, now));
            if self.history.len() > HISTORY {
                self.history.pop_front();
            }
        }
        for (b, r) in readings {
            // A writable server that is not the primary (an old primary fenced after a failover)
            // replays nothing: a lag measured across timelines would mean nothing, and trip alerts.
            if b.index == primary || !r.in_recovery {
                b.set_lag(0, 0);
                continue;
            }
            let bytes = if past_page_header_only(p.lsn, r.lsn) { 0 } else { p.lsn.saturating_sub(r.lsn) };
            b.set_lag(bytes, if bytes == 0 { 0 } else { self.time_behind(r.lsn, now) });
        }
    }

    /// How long ago the primary first went past `lsn`: the age of the oldest change a replica at
    /// `lsn` has not replayed. (The replay timestamp is no use: it keeps ageing on an idle primary.)
    fn time_behind(&self, lsn: u64, now: u64) -> u64 {
        let first_past = self.history.iter().find(|(l, _)| *l > lsn);
        first_past.or(self.history.front()).map(|(_, at)| now.saturating_sub(*at)).unwrap_or(0)
    }

    /// The function catalog routing and caching consult (pgpilot_sql's own queries: functions
    /// with the volatility of what they depend on, and the operators, types and views that run
    /// functions the text does not name).
    async fn load_functions(&mut self) {
        let Some(answers) = self.ask_primary(FunctionCatalog::text_queries(), "function").await else {
            return;
        };
        match FunctionCatalog::from_text_rows(&answers) {
            Some(catalog) => {
                self.db.set_functions(catalog);
                self.catalog_loaded = Some(Instant::now());
            }
            None => tracing::warn!(database = %self.db.name, "the function catalog had an unexpected shape"),
        }
    }

    /// The text answers of the `catalog` queries on the primary's probe connection; None (and the
    /// connection dropped) when one fails.
    async fn ask_primary<const N: usize>(
        &mut self,
        queries: [&str; N],
        catalog: &str,
    ) -> Option<[Vec<Vec<Option<String>>>; N]> {
        let primary = self.db.primary_index();
        let probe = self.probes[primary].as_mut()?;
        let mut answers = std::array::from_fn(|_| Vec::new());
        for (answer, sql) in answers.iter_mut().zip(queries) {
            match query(&probe.sock, &mut probe.buf, None, sql, Duration::from_secs(10)).await {
                Ok(rows) => *answer = rows,
                Err(e) => {
                    tracing::warn!(database = %self.db.name, error = %e, "could not load the {catalog} catalog");
                    self.probes[primary] = None;
                    return None;
                }
            }
        }
        Some(answers)
    }
}

/// Why a health check failed: the server, or only the credentials it was made with.
enum CheckError {
    Server(String),
    /// The server answered and refused the login (wrong password, unknown role or database).
    Credentials(String),
    /// A login was refused less than server_login_retry ago: not tried again yet.
    LoginRefusedLately,
    /// The server did not answer the last check, less than health_check_interval ago: it is
    /// asked again once per interval, and a round in between is not a check (nor counted in
    /// pgpilot_server_failed_checks_total, ten times the checks made at lag_check_interval).
    NotTriedYet,
}

async fn check(
    slot: &mut Option<Probe>,
    failed_at: &mut Option<Instant>,
    pool: &crate::pool::Pool,
    timeout: Duration,
) -> Result<Reading, CheckError> {
    let reused = slot.is_some();
    let asked = Instant::now();
    match check_once(slot, failed_at, pool, timeout).await {
        // The monitor's own connection ended alone (an administrator's pg_terminate_backend, an
        // idle session timeout): that says nothing of the server, which a new connection asks at
        // once. (A probe that got no answer in time is not asked again: the server is slow.)
        Err(CheckError::Server(_)) if reused && asked.elapsed() < timeout => {
            check_once(slot, failed_at, pool, timeout).await
        }
        result => result,
    }
}

async fn check_once(
    slot: &mut Option<Probe>,
    failed_at: &mut Option<Instant>,
    pool: &crate::pool::Pool,
    timeout: Duration,
) -> Result<Reading, CheckError> {
    if slot.is_none() {
        if pool.login_recently_refused() {
            return Err(CheckError::LoginRefusedLately);
        }
        let connected = match tokio::time::timeout(timeout, pool.connect_unpooled()).await {
            Ok(Ok(connected)) => connected,
            // A role's or database's CONNECTION LIMIT reached: the server is up for everyone else.
            Ok(Err(e)) if e.refuses_login() || e.lacks_secret() || e.is_limit_of_role_or_database() => {
                return Err(CheckError::Credentials(e.to_string()))
            }
            Ok(Err(e)) => {
                *failed_at = Some(Instant::now());
                return Err(CheckError::Server(e.to_string()));
            }
            Err(_) => {
                *failed_at = Some(Instant::now());
                return Err(CheckError::Server("health check: connect timed out".to_string()));
            }
        };
        *failed_at = None;
        *slot = Some(Probe { sock: connected.sock, buf: connected.buf });
    }
    let probe = slot.as_mut().expect("connected above");
    match query(&probe.sock, &mut probe.buf, None, PROBE_SQL, timeout).await {
        Ok(rows) => {
            parse(&rows).ok_or_else(|| CheckError::Server("health check: unexpected answer".to_string()))
        }
        Err(e) => {
            *slot = None;
            Err(CheckError::Server(format!("health check: {e}")))
        }
    }
}

fn parse(rows: &[Vec<Option<String>>]) -> Option<Reading> {
    let row = rows.first()?;
    let text = |i: usize| row.get(i).and_then(|v| v.as_deref());
    Some(Reading {
        in_recovery: text(0)? == "t",
        lsn: text(1).and_then(parse_lsn).unwrap_or(0),
        timeline: text(2).and_then(|v| u32::from_str_radix(v, 16).ok()).unwrap_or(0),
    })
}

/// Whether the primary's WAL position is past the replica's only by the header of a page no record
/// has been written to yet: an idle primary whose last record ended on a page (or segment)
/// boundary reports the position after the next page's header, which no replica ever "replays".
/// The replica is caught up; counted as behind, it read as lagging longer and longer.
fn past_page_header_only(primary: u64, replica: u64) -> bool {
    const PAGE: u64 = 8192;
    const SHORT_HEADER: u64 = 24;
    const LONG_HEADER: u64 = 40;
    let gap = primary.saturating_sub(replica);
    (gap == SHORT_HEADER || gap == LONG_HEADER) && primary % PAGE == gap
}

#[cfg(test)]
mod page_header_tests {
    use super::past_page_header_only;

    #[test]
    fn a_page_header_alone_is_no_lag() {
        let segment = 16 << 20;
        assert!(past_page_header_only(3 * segment + 40, 3 * segment), "a new segment's long header");
        assert!(past_page_header_only(5 * 8192 + 24, 5 * 8192), "a new page's short header");
        assert!(!past_page_header_only(5 * 8192 + 64, 5 * 8192 + 40), "a record on the page");
        assert!(!past_page_header_only(5 * 8192 + 24, 5 * 8192 - 8), "behind by more than the header");
        assert!(!past_page_header_only(100, 100 - 24), "not at a page start");
    }
}
