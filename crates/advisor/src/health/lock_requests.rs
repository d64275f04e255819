//! The table locks waiting sessions ask for (pg_locks, not granted): which of them are DDL, and
//! which will need rows a root blocker has changed once their table lock is granted.

use std::collections::{HashMap, HashSet};

use anyhow::Result;

use crate::db::Db;

/// Each waiting session's table-lock request. `$1`: the roots of the wait chains. A request to
/// change or lock rows (RowShareLock, RowExclusiveLock) on a table a root holds RowExclusiveLock
/// on (it has changed rows of it in its open transaction) may meet that root again at a row lock:
/// pg_blocking_pids cannot tell, since while the request is queued behind DDL it waits for the
/// table only.
const REQUESTS: &str = "SELECT w.pid, w.mode, \
     coalesce(array_agg(DISTINCT r.pid) FILTER (WHERE r.pid IS NOT NULL), '{}') \
     FROM pg_locks w \
     LEFT JOIN pg_locks r ON w.mode IN ('RowShareLock', 'RowExclusiveLock') \
       AND r.locktype = 'relation' AND r.database = w.database AND r.relation = w.relation \
       AND r.granted AND r.mode = 'RowExclusiveLock' AND r.pid = ANY($1) AND r.pid <> w.pid \
     WHERE w.locktype = 'relation' AND NOT w.granted GROUP BY w.pid, w.mode";

/// Lock modes only DDL and maintenance ask for (VACUUM, CREATE INDEX, ALTER TABLE, LOCK TABLE).
const DDL_MODES: [&str; 5] = [
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
];

#[derive(Debug, Default)]
pub struct LockRequests {
    /// Sessions waiting for a table lock that DDL or maintenance takes.
    pub ddl: HashSet<i32>,
    /// For a session waiting to change rows of a table, the roots that changed rows of it.
    pub row_writers: HashMap<i32, Vec<i32>>,
}

pub async fn read(db: &Db, roots: &[i32]) -> Result<LockRequests> {
    let mut out = LockRequests::default();
    for r in db.client.query(REQUESTS, &[&roots]).await? {
        let (pid, mode, writers): (i32, String, Vec<i32>) = (r.get(0), r.get(1), r.get(2));
        if DDL_MODES.contains(&mode.as_str()) {
            out.ddl.insert(pid);
        }
        if !writers.is_empty() {
            out.row_writers.insert(pid, writers);
        }
    }
    Ok(out)
}
