//! Blocked queries (`pg_blocking_pids`): each waiting session with the sessions it waits on, and
//! the root of its chain of waits, the session whose end frees it.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use tokio_postgres::Row;

use super::activity::shown_query;
use super::lock_requests::{self, LockRequests};
use crate::db::Db;
use crate::report::{Category, Finding, Severity};
use crate::sqltext::without_literals;
use crate::units::{duration, one_line};

/// Who waits on whom: each waiting session's pid and the pids blocking it.
type WaitGraph = HashMap<i32, Vec<i32>>;

/// What pg_stat_activity shows a role without pg_read_all_stats of another role's session: its
/// pid and user, nothing of its state, query, times or waits.
pub(super) const UNKNOWN: &str = "unknown (needs pg_read_all_stats)";

const WAITERS: &str = "SELECT a.pid, coalesce(a.usename::text, ''), \
     extract(epoch FROM now() - a.query_start)::float8, a.query, \
     coalesce(a.wait_event_type, '') || ':' || coalesce(a.wait_event, ''), a.backend_type IS NULL, \
     pg_blocking_pids(a.pid) \
     FROM pg_stat_activity a WHERE cardinality(pg_blocking_pids(a.pid)) > 0 ORDER BY a.query_start";

/// The sessions in `$1`, as a waiter's evidence shows its blockers. pg_stat_activity hides a
/// session's details from a role without pg_read_all_stats: its backend_type is NULL then, and only then.
const BLOCKERS: &str = "SELECT s.pid, coalesce(s.usename::text, ''), s.state, \
     round(extract(epoch FROM now() - s.xact_start))::float8, coalesce(s.query, ''), s.backend_type IS NULL \
     FROM pg_stat_activity s WHERE s.pid = ANY($1)";

pub async fn blocked(db: &Db) -> Result<Vec<Finding>> {
    let rows = db.rows(WAITERS).await?;
    let mut blocker_pids: Vec<i32> = rows.iter().flat_map(|r| r.get::<_, Vec<i32>>(6)).collect();
    blocker_pids.sort_unstable();
    blocker_pids.dedup();
    let blockers: Vec<Blocker> =
        db.client.query(BLOCKERS, &[&blocker_pids]).await?.iter().map(Blocker::of).collect();
    let waiters: Vec<Waiter> = rows.iter().map(|r| Waiter::of(r, &blockers)).collect();
    // Each waiter's blockers are followed back to the sessions that wait on nobody: terminating
    // a blocker that is itself waiting frees nothing.
    let graph: WaitGraph = waiters.iter().map(|w| (w.pid, w.blocker_pids.clone())).collect();
    let mut roots: Vec<i32> = graph.keys().flat_map(|&pid| root_blockers(pid, &graph)).collect();
    roots.sort_unstable();
    roots.dedup();
    let sessions = root_sessions(db, &roots).await?;
    let requests = lock_requests::read(db, &roots).await?;
    Ok(waiters.iter().map(|w| w.finding(&graph, &sessions, &requests)).collect())
}

/// A session blocking a waiter, as pg_stat_activity shows it.
struct Blocker {
    pid: i32,
    user: String,
    state: Option<String>,
    /// Seconds since its transaction began.
    xact_secs: Option<f64>,
    query: String,
    /// pg_stat_activity hides its state, query and times from this role.
    hidden: bool,
}

impl Blocker {
    fn of(r: &Row) -> Blocker {
        Blocker {
            pid: r.get(0),
            user: r.get(1),
            state: r.get(2),
            xact_secs: r.get(3),
            query: r.get(4),
            hidden: r.get(5),
        }
    }

    /// `pid 12 (idle in transaction, app, transaction open 75s): UPDATE ...`, or what is known of it.
    fn describe(&self) -> String {
        if self.hidden {
            return format!("{} (user {}; state, transaction and query {UNKNOWN})", self.pid, self.user);
        }
        let open = self.xact_secs.map(|s| format!(", transaction open {s}s")).unwrap_or_default();
        format!(
            "{} ({}, {}{open}): {}",
            self.pid,
            self.state.as_deref().unwrap_or("?"),
            self.user,
            one_line(&without_literals(&self.query), 160)
        )
    }
}

/// A session waiting for a lock, as pg_stat_activity shows it.
struct Waiter {
    pid: i32,
    user: String,
    /// How long its statement has waited; unknown when its details are hidden from this role.
    waited_secs: Option<f64>,
    query: String,
    wait_event: String,
    hidden: bool,
    /// The sessions blocking it, described (`Blocker::describe`).
    blockers: Vec<String>,
    /// Sorted, without repeats.
    blocker_pids: Vec<i32>,
}

impl Waiter {
    fn of(r: &Row, blockers: &[Blocker]) -> Waiter {
        let mut blocker_pids: Vec<i32> = r.get(6);
        blocker_pids.sort_unstable();
        blocker_pids.dedup();
        let described = blocker_pids
            .iter()
            .map(|pid| match blockers.iter().find(|b| b.pid == *pid) {
                Some(b) => b.describe(),
                None => format!("{pid} (it has ended since)"),
            })
            .collect();
        Waiter {
            pid: r.get(0),
            user: r.get(1),
            waited_secs: r.get(2),
            query: r.get(3),
            wait_event: r.get(4),
            hidden: r.get(5),
            blockers: described,
            blocker_pids,
        }
    }

    fn finding(&self, graph: &WaitGraph, sessions: &[RootSession], requests: &LockRequests) -> Finding {
        let roots = root_blockers(self.pid, graph);
        // Critical only on a known wait: an unknown one is not judged.
        let severity = match self.waited_secs {
            Some(secs) if secs >= 300.0 => Severity::Critical,
            _ => Severity::Warning,
        };
        let root_note =
            if roots == self.blocker_pids { String::new() } else { format!(" (root: pid {})", join(&roots)) };
        let waited = self.waited_secs.map(|secs| format!(" for {}", duration(secs))).unwrap_or_default();
        let title = format!(
            "Query (pid {}) blocked{waited} by pid {}{root_note}",
            self.pid,
            join(&self.blocker_pids)
        );
        let waiting = if self.hidden {
            format!("user {}; how long it has waited, on what, and its query: {UNKNOWN}", self.user)
        } else {
            format!("waiting ({}), user {}: {}", self.wait_event, self.user, shown_query(&self.query))
        };
        let mut f = Finding::new(severity, Category::Locks, title)
            .object(format!("pid {}", self.pid))
            .evidence(waiting);
        for b in &self.blockers {
            f = f.evidence(format!("blocked by {b}"));
        }
        for root in &roots {
            f = f.evidence(root_evidence(*root, sessions));
        }
        let queued_behind = only_waiting_blockers(&self.blocker_pids, &roots, graph);
        // Roots that changed rows of the table this query waits to change: past the queue, it may
        // wait on them next.
        let writers: Vec<i32> = requests
            .row_writers
            .get(&self.pid)
            .map(|w| w.iter().copied().filter(|p| roots.contains(p)).collect())
            .unwrap_or_default();
        let note = match &queued_behind {
            Some(waiting) => Some(queued_behind_note(waiting, &writers)),
            None => waiting_blockers_note(&self.blocker_pids, &roots, graph),
        };
        if let Some(note) = note {
            f = f.evidence(note);
        }
        let ddl_in_chain = chain(self.pid, graph).iter().any(|p| requests.ddl.contains(p));
        f.fix(blocked_fix(&roots, queued_behind.as_deref().unwrap_or_default(), &writers, ddl_in_chain))
    }
}

fn root_evidence(root: i32, sessions: &[RootSession]) -> String {
    match sessions.iter().find(|s| s.pid == root) {
        Some(s) => s.describe(),
        None if root == 0 => "root blocker: a prepared transaction (see pg_prepared_xacts)".to_string(),
        None => format!("root blocker: pid {root} (it has ended since)"),
    }
}

/// Says which direct blockers are themselves waiting (outside a cycle, where they are the roots).
fn waiting_blockers_note(blocker_pids: &[i32], roots: &[i32], graph: &WaitGraph) -> Option<String> {
    let waiting: Vec<i32> =
        blocker_pids.iter().copied().filter(|b| graph.contains_key(b) && !roots.contains(b)).collect();
    let one = waiting.len() == 1;
    (!waiting.is_empty()).then(|| {
        format!(
            "pid {} {} waiting for a lock: terminating {} would not free this query",
            join(&waiting),
            if one { "is itself" } else { "are themselves" },
            if one { "it" } else { "them" },
        )
    })
}

/// The query's blockers when every one of them is itself waiting (none is a root): it conflicts
/// with nothing else, typically queued behind a DDL statement that waits for the root's lock
/// (pg_blocking_pids counts the lock requests queued ahead). Cancelling their statements frees it
/// at once, and the root's transaction can go on.
fn only_waiting_blockers(blocker_pids: &[i32], roots: &[i32], graph: &WaitGraph) -> Option<Vec<i32>> {
    let all_waiting =
        !blocker_pids.is_empty() && blocker_pids.iter().all(|b| graph.contains_key(b) && !roots.contains(b));
    all_waiting.then(|| blocker_pids.to_vec())
}

/// `writers`: roots that changed rows of the table the query waits to change (see `lock_requests`).
fn queued_behind_note(waiting: &[i32], writers: &[i32]) -> String {
    let one = waiting.len() == 1;
    let queued = format!(
        "pid {} {} waiting for a lock, and this query is queued only behind {}",
        join(waiting),
        if one { "is itself" } else { "are themselves" },
        if one { "it" } else { "them" },
    );
    let its = if one { "its" } else { "their" };
    if writers.is_empty() {
        return format!(
            "{queued}: cancelling {its} statement frees it without ending the root's transaction"
        );
    }
    format!(
        "{queued}, but root pid {} has changed rows of the table it changes, in a transaction still open: \
         cancelling {its} statement frees it only if it touches none of those rows, else it then waits on pid {}",
        join(writers),
        join(writers)
    )
}

/// `pid` and every session it waits on, directly or down the chain.
fn chain(pid: i32, graph: &WaitGraph) -> HashSet<i32> {
    let mut seen = HashSet::from([pid]);
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        for &next in graph.get(&p).into_iter().flatten() {
            if seen.insert(next) {
                stack.push(next);
            }
        }
    }
    seen
}

/// The sessions at the root of the wait chains that hold up `pid`: its blockers, followed through
/// pg_blocking_pids until a session that waits on nobody. A cycle (a deadlock not yet detected)
/// has no such session: then the cycle's members that block `pid` directly are named instead.
fn root_blockers(pid: i32, graph: &WaitGraph) -> Vec<i32> {
    let mut roots = Vec::new();
    let mut seen = HashSet::from([pid]);
    let mut stack: Vec<i32> = graph.get(&pid).cloned().unwrap_or_default();
    while let Some(b) = stack.pop() {
        if !seen.insert(b) {
            continue;
        }
        match graph.get(&b) {
            Some(next) if !next.is_empty() => stack.extend(next.iter().copied()),
            _ => roots.push(b),
        }
    }
    if roots.is_empty() {
        roots = graph.get(&pid).cloned().unwrap_or_default();
    }
    roots.sort_unstable();
    roots.dedup();
    roots
}

/// Cancels the waiting statements the query is queued behind, when that alone frees it (the least
/// disruptive fix), else terminates the roots; pid 0 is a prepared transaction, which only
/// COMMIT/ROLLBACK PREPARED ends. When a root changed rows of the query's table (`writers`),
/// cancelling may only move the wait to that root, and the fix says so. The lock_timeout advice
/// is for DDL queued in the chain, and only then.
fn blocked_fix(roots: &[i32], queued_behind: &[i32], writers: &[i32], ddl_in_chain: bool) -> String {
    let live: Vec<String> =
        roots.iter().filter(|&&p| p != 0).map(|p| format!("SELECT pg_terminate_backend({p});")).collect();
    let mut fix = String::new();
    if !queued_behind.is_empty() {
        let cancels: Vec<String> =
            queued_behind.iter().map(|p| format!("SELECT pg_cancel_backend({p});")).collect();
        fix.push_str(&format!(
            "cancel the waiting statement this query is queued behind (it can be retried later): {}\n",
            cancels.join(" ")
        ));
        if !writers.is_empty() {
            fix.push_str(&format!(
                "-- if it then waits on pid {} (a row that transaction changed), only ending that transaction frees it\n",
                join(writers)
            ));
        }
        if !live.is_empty() {
            fix.push_str(&format!(
                "-- or end the root blocking transaction, which frees the whole chain: {}\n",
                live.join(" ")
            ));
        }
    } else if !live.is_empty() {
        fix.push_str(&format!("finish or cancel the root blocking transaction: {}\n", live.join(" ")));
    }
    if live.len() < roots.len() {
        fix.push_str(
            "-- a prepared transaction holds the lock: SELECT gid, prepared, owner FROM pg_prepared_xacts; \
             then COMMIT PREPARED or ROLLBACK PREPARED it\n",
        );
    }
    if ddl_in_chain {
        fix.push_str("-- and give DDL a lock_timeout so it cannot queue everyone behind it");
    }
    fix.trim_end().to_string()
}

fn join(pids: &[i32]) -> String {
    pids.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
}

/// A session at the root of a wait chain, as its evidence line shows it.
struct RootSession {
    pid: i32,
    user: String,
    state: String,
    /// Seconds since it went idle in its transaction, when it is.
    idle_secs: Option<f64>,
    /// Seconds since its transaction began.
    xact_secs: Option<f64>,
    query: String,
    /// pg_stat_activity hides its state, query and times from this role.
    hidden: bool,
}

impl RootSession {
    fn describe(&self) -> String {
        if self.hidden {
            return format!(
                "root blocker: pid {} (user {}; state, transaction and last statement {UNKNOWN}), waiting on no lock",
                self.pid, self.user
            );
        }
        let state = match self.idle_secs {
            Some(idle) => format!("{} for {}", self.state, duration(idle)),
            None => self.state.clone(),
        };
        let open = self.xact_secs.map(|s| format!(", transaction open {}", duration(s))).unwrap_or_default();
        format!(
            "root blocker: pid {} ({state}{open}, user {}), waiting on no lock; last statement: {}",
            self.pid,
            self.user,
            one_line(&without_literals(&self.query), 160)
        )
    }
}

async fn root_sessions(db: &Db, pids: &[i32]) -> Result<Vec<RootSession>> {
    if pids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db
        .client
        .query(
            "SELECT pid, coalesce(usename::text, ''), coalesce(state, '?'), \
             CASE WHEN state LIKE 'idle in transaction%' THEN extract(epoch FROM now() - state_change)::float8 END, \
             extract(epoch FROM now() - xact_start)::float8, coalesce(query, ''), backend_type IS NULL \
             FROM pg_stat_activity WHERE pid = ANY($1)",
            &[&pids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| RootSession {
            pid: r.get(0),
            user: r.get(1),
            state: r.get(2),
            idle_secs: r.get(3),
            xact_secs: r.get(4),
            query: r.get(5),
            hidden: r.get(6),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_the_blockers_that_wait_on_nobody() {
        // 30 holds a lock; 20 waits on 30; 10 (DDL) waits on 20 and 30; 40 waits on 10.
        let graph: WaitGraph = [(20, vec![30]), (10, vec![20, 30]), (40, vec![10])].into_iter().collect();
        assert_eq!(root_blockers(10, &graph), vec![30]);
        assert_eq!(root_blockers(40, &graph), vec![30]);
        assert_eq!(root_blockers(20, &graph), vec![30]);
        assert!(waiting_blockers_note(&[20, 30], &[30], &graph)
            .unwrap()
            .starts_with("pid 20 is itself waiting"));
        assert_eq!(waiting_blockers_note(&[30], &[30], &graph), None);
        // 40 waits only on 10, which waits itself: cancelling 10 frees 40. 10 waits on a root too.
        assert_eq!(only_waiting_blockers(&[10], &[30], &graph), Some(vec![10]));
        assert_eq!(only_waiting_blockers(&[20, 30], &[30], &graph), None);
        // Two independent holders.
        let graph: WaitGraph = [(1, vec![2, 3])].into_iter().collect();
        assert_eq!(root_blockers(1, &graph), vec![2, 3]);
        // A cycle (a deadlock PostgreSQL has not broken yet) ends; its direct blockers are named.
        let graph: WaitGraph = [(1, vec![2]), (2, vec![1]), (3, vec![1])].into_iter().collect();
        assert_eq!(root_blockers(1, &graph), vec![2]);
        assert_eq!(root_blockers(3, &graph), vec![1]);
        assert_eq!(
            waiting_blockers_note(&[2], &[2], &graph),
            None,
            "in a cycle the direct blocker is the root"
        );
    }

    #[test]
    fn the_fix_terminates_the_roots_or_ends_a_prepared_transaction() {
        assert!(blocked_fix(&[30], &[], &[], false)
            .starts_with("finish or cancel the root blocking transaction: SELECT pg_terminate_backend(30);"));
        let prepared = blocked_fix(&[0], &[], &[], true);
        assert!(
            prepared.contains("pg_prepared_xacts") && !prepared.contains("pg_terminate_backend"),
            "{prepared}"
        );
        assert!(prepared.ends_with("lock_timeout so it cannot queue everyone behind it"), "{prepared}");
        assert!(!blocked_fix(&[30], &[], &[], false).contains("lock_timeout"), "no DDL in the chain");
        let moved = blocked_fix(&[30], &[10], &[30], true);
        assert!(moved.contains("-- if it then waits on pid 30"), "{moved}");
    }
}
