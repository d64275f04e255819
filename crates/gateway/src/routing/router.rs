//! Where a transaction runs: the primary, or one of the replicas that is healthy, caught up enough,
//! in the client's replica group, and (with read-your-writes) has replayed the client's last write.

use std::sync::atomic::Ordering::Relaxed;

use pgpilot_sql::{route, PrimaryReason, Route, RouteHint, Statement, StatementKind, TxnControl};

use super::backend::{Backend, Role};
use super::ryw::{Requirement, WriteMark};
use crate::config::{LoadBalance, PrimaryReads};
use crate::databases::Database;

/// The session's `SET pgpilot.route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionRoute {
    #[default]
    Auto,
    Primary,
    Replica,
}

impl SessionRoute {
    pub fn parse(v: &str) -> Option<SessionRoute> {
        match v.trim_matches(|c| c == '\'' || c == '"').to_ascii_lowercase().as_str() {
            "auto" | "default" => Some(SessionRoute::Auto),
            "primary" => Some(SessionRoute::Primary),
            "replica" => Some(SessionRoute::Replica),
            _ => None,
        }
    }
}

/// Whether `stmt` goes to the primary because it was asked to (a `pgpilot:primary` hint or the
/// session's `SET pgpilot.route = primary`). A call of the application's own function in it then
/// counts as a write whatever its declared volatility (the hint is the documented way to call a
/// STABLE function that writes): for read-your-writes here, for the result cache's invalidation.
pub fn sent_to_primary_on_request(stmt: &Statement, session_route: SessionRoute) -> bool {
    stmt.hints.route == Some(RouteHint::Primary) || session_route == SessionRoute::Primary
}

/// What the router needs to know about the client.
pub struct Request<'a> {
    pub session_route: SessionRoute,
    /// The client's replica group (from tag rules).
    pub tag: Option<&'a str>,
    /// The client's last committed write (read-your-writes).
    pub write_mark: WriteMark,
    /// A primary position the replica must have replayed whatever read-your-writes says: the read
    /// fills the result cache (see positions.rs).
    pub fill_lsn: Option<u64>,
    pub search_path: &'a [String],
}

/// What a statement needs, before placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Any server may run it; `tag` restricts it to a replica group (a hint).
    Read { tag: Option<String> },
    /// Only the primary; `may_write` says whether it counts for read-your-writes.
    Primary { reason: &'static str, may_write: bool },
}

/// Where the transaction goes and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub backend: usize,
    /// The transaction may write (counts for read-your-writes).
    pub may_write: bool,
    pub reason: &'static str,
}

/// The grammar-and-catalog verdict for a classified statement, with hints and the session override.
pub fn verdict(db: &Database, stmt: &Statement, req: &Request<'_>) -> Verdict {
    let hint = stmt.hints.route;
    let routed = route(stmt, &db.functions.load(), req.search_path);
    if sent_to_primary_on_request(stmt, req.session_route) {
        // Sent to the primary on request, it still counts as a write (read-your-writes) whenever
        // pgpilot would have sent it there anyway (a volatile function may write), and whenever it
        // calls a function of the application's: the hint is the documented way to call a STABLE
        // function that writes all the same. (PostgreSQL's own stable functions write nothing.)
        let may_write = !is_read_only(stmt)
            || matches!(routed, Route::Primary(_))
            || calls_user_function(db, stmt, req.search_path);
        return Verdict::Primary { reason: "hint", may_write };
    }
    let allow_replica_override =
        hint == Some(RouteHint::Replica) || req.session_route == SessionRoute::Replica;
    match routed {
        Route::Primary(reason) if !(allow_replica_override && overridable(reason)) => {
            // Sent there for what a standby cannot do, not for a write: read-your-writes need not
            // hold the session's next reads on the primary.
            let may_write = match reason {
                PrimaryReason::SerializableTransaction
                | PrimaryReason::StandbyRefused
                | PrimaryReason::ServerState
                | PrimaryReason::PinsSession => !is_read_only(stmt),
                PrimaryReason::PreparedStatement => !stmt.kinds.iter().all(|k| *k == StatementKind::Prepare),
                // LISTEN, UNLISTEN and advisory locks (asyncpg's reset at each release from its
                // pool: pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL) change no data.
                PrimaryReason::Listen => false,
                PrimaryReason::StateChangingFunction | PrimaryReason::MultiStatementWrite => {
                    stmt.writes_data || calls_other_volatile(db, stmt, req.search_path)
                }
                _ => true,
            };
            Verdict::Primary { reason: reason.as_str(), may_write }
        }
        _ => Verdict::Read { tag: stmt.hints.tag.clone() },
    }
}

/// Places a verdict on a server: the primary, or the best replica for a read.
pub fn place(db: &Database, verdict: &Verdict, req: &Request<'_>) -> Decision {
    let primary = db.primary_index();
    match verdict {
        _ if !db.splits_reads() => Decision { backend: primary, may_write: true, reason: "no_replicas" },
        Verdict::Primary { reason, may_write } => {
            Decision { backend: primary, may_write: *may_write, reason }
        }
        Verdict::Read { .. } if req.session_route == SessionRoute::Primary => {
            Decision { backend: primary, may_write: false, reason: "hint" }
        }
        Verdict::Read { tag } => {
            match pick_replica(db, tag.as_deref().or(req.tag), req.write_mark, req.fill_lsn) {
                Some(i) => Decision { backend: i, may_write: false, reason: "read" },
                None => Decision { backend: primary, may_write: false, reason: "no_eligible_replica" },
            }
        }
    }
}

/// Whether the statement calls a function besides the advisory lock ones that may write (volatile,
/// or not in the catalog).
fn calls_other_volatile(db: &Database, stmt: &Statement, search_path: &[String]) -> bool {
    let catalog = db.functions.load();
    stmt.functions.iter().filter(|f| !f.is_advisory_lock()).any(|f| {
        matches!(
            catalog.volatility(f, search_path),
            pgpilot_sql::Volatility::Volatile | pgpilot_sql::Volatility::Unknown
        )
    })
}

/// Whether the statement calls a function outside pg_catalog (whatever its declared volatility).
fn calls_user_function(db: &Database, stmt: &Statement, search_path: &[String]) -> bool {
    let catalog = db.functions.load();
    stmt.functions.iter().any(|f| !catalog.resolves_in_pg_catalog(f, search_path))
}

/// A hint may send a read with a function pgpilot cannot vouch for to a replica, never a write.
fn overridable(reason: PrimaryReason) -> bool {
    matches!(
        reason,
        PrimaryReason::VolatileFunction | PrimaryReason::UnknownFunction | PrimaryReason::PreparedStatement
    )
}

fn is_read_only(stmt: &Statement) -> bool {
    !stmt.writes && !matches!(&stmt.transaction, Some(TxnControl::Begin(o)) if o.read_only != Some(true))
}

/// Which replicas may serve a client's read right now.
struct ReplicaFilter<'a> {
    routing: arc_swap::Guard<std::sync::Arc<crate::config::RoutingConfig>>,
    tag: Option<&'a str>,
    /// The primary's WAL position the replica must have replayed (read-your-writes).
    required_lsn: Option<u64>,
}

impl<'a> ReplicaFilter<'a> {
    /// None when read-your-writes leaves only the primary (no position known after the write yet).
    fn new(db: &Database, tag: Option<&'a str>, mark: WriteMark) -> Option<ReplicaFilter<'a>> {
        let required_lsn = match mark.requirement(db) {
            Requirement::Any => None,
            Requirement::Replayed(lsn) => Some(lsn),
            Requirement::PrimaryOnly => return None,
        };
        Some(ReplicaFilter { routing: db.routing.load(), tag, required_lsn })
    }

    fn admits(&self, b: &Backend) -> bool {
        b.role() == Role::Replica
            && !b.is_banned()
            && b.follows_primary()
            && b.lag_within(&self.routing)
            && match self.tag {
                Some(t) => b.tags().iter().any(|x| x == t),
                None => b.tags().is_empty(),
            }
            && self.required_lsn.is_none_or(|need| super::ryw::replayed(b.lsn().0, need))
    }
}

/// Whether the replica a client is attached to may serve its next read (a pipelining client stays
/// where it is rather than having its read placed again).
pub fn replica_still_serves(db: &Database, backend: usize, tag: Option<&str>, mark: WriteMark) -> bool {
    ReplicaFilter::new(db, tag, mark).is_some_and(|f| f.admits(&db.backends[backend]))
}

/// The server to read from among the qualifying replicas (and the primary with
/// `primary_reads = "share"`), or None when no replica qualifies. Runs for every read: the
/// candidates live on the stack.
fn pick_replica(db: &Database, tag: Option<&str>, mark: WriteMark, fill_lsn: Option<u64>) -> Option<usize> {
    let mut filter = ReplicaFilter::new(db, tag, mark)?;
    filter.required_lsn = filter.required_lsn.max(fill_lsn);
    let mut candidates: smallvec::SmallVec<[(usize, u64); 8]> =
        db.backends.iter().filter(|b| filter.admits(b)).map(|b| (b.index, b.weight() as u64)).collect();
    if candidates.is_empty() {
        return None;
    }
    keep_reserves_back(&mut candidates);
    let routing = &filter.routing;
    let primary = &db.backends[db.primary_index()];
    if routing.primary_reads == PrimaryReads::Share
        && tag.is_none()
        && !primary.is_banned()
        && routing.primary_read_weight > 0
    {
        candidates.push((primary.index, routing.primary_read_weight as u64));
    }
    let total: u64 = candidates.iter().map(|c| c.1).sum();
    let chosen = match routing.load_balance {
        LoadBalance::RoundRobin => {
            weighted(&candidates, db.next_replica.fetch_add(1, Relaxed) as u64 % total)
        }
        LoadBalance::Random => weighted(&candidates, rand::random::<u64>() % total),
        LoadBalance::LeastOutstanding => least_outstanding(db, &candidates),
    };
    Some(chosen)
}

/// Replicas of weight 0 are reserves: they take reads only when no replica of a positive weight
/// qualifies, and then share them equally.
fn keep_reserves_back(candidates: &mut smallvec::SmallVec<[(usize, u64); 8]>) {
    if candidates.iter().any(|c| c.1 > 0) {
        candidates.retain(|c| c.1 > 0);
    } else {
        candidates.iter_mut().for_each(|c| c.1 = 1);
    }
}

/// The candidate with the fewest reads in flight per unit of weight. Ties, which are the rule at
/// low concurrency (every replica idle), are shared by weight in turn: the first replica listed
/// took every read of a lone client before.
fn least_outstanding(db: &Database, candidates: &[(usize, u64)]) -> usize {
    // Each load read once: the counters move under other clients' reads.
    let loads: smallvec::SmallVec<[(usize, u64, u64); 8]> = candidates
        .iter()
        .map(|&(i, w)| (i, w, db.backends[i].outstanding.load(Relaxed) as u64 * 1000 / w.max(1)))
        .collect();
    let least = loads.iter().map(|l| l.2).min().unwrap_or(0);
    let tied: smallvec::SmallVec<[(usize, u64); 8]> =
        loads.iter().filter(|l| l.2 == least).map(|l| (l.0, l.1)).collect();
    let total = tied.iter().map(|c| c.1).sum::<u64>().max(1);
    weighted(&tied, db.next_replica.fetch_add(1, Relaxed) as u64 % total)
}

fn weighted(candidates: &[(usize, u64)], mut point: u64) -> usize {
    for &(index, weight) in candidates {
        if point < weight {
            return index;
        }
        point -= weight;
    }
    candidates[0].0
}
