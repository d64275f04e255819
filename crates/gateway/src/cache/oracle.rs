//! `strict` consistency: before a hit is served, and before a miss's read is sent, the versions the
//! triggers keep in `pgpilot.cache_versions` are read from PostgreSQL. A result is served only if
//! the versions of its tables are what they were before its read was sent, so no read that starts
//! after a commit (through any pgpilot, or straight to PostgreSQL) sees older data. Concurrent
//! requests share one round trip: the oracle answers everyone waiting with one query.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use pgpilot_sql::Oid;
use tokio::sync::{mpsc, oneshot};

use crate::databases::Database;
use crate::shared::Shared;

pub type VersionMap = Arc<HashMap<Oid, i64>>;
type Waiter = oneshot::Sender<Option<VersionMap>>;

const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The oracle of one database, started on first use.
#[derive(Default)]
pub struct Oracle {
    tx: Mutex<Option<mpsc::UnboundedSender<Waiter>>>,
}

impl Oracle {
    /// The current versions, or None when PostgreSQL cannot be asked (the caller fails closed).
    pub async fn versions(&self, shared: &Arc<Shared>, db: &Arc<Database>) -> Option<VersionMap> {
        let (tx, rx) = oneshot::channel();
        let sender = {
            let mut slot = self.tx.lock();
            match slot.as_ref().filter(|s| !s.is_closed()) {
                Some(s) => s.clone(),
                None => {
                    let (s, r) = mpsc::unbounded_channel();
                    tokio::spawn(serve(shared.clone(), db.clone(), r));
                    *slot = Some(s.clone());
                    s
                }
            }
        };
        sender.send(tx).ok()?;
        tokio::time::timeout(QUERY_TIMEOUT * 2, rx).await.ok()?.ok()?
    }
}

/// The sum of the versions of `oids`.
pub fn sum(map: &HashMap<Oid, i64>, oids: &[Oid]) -> u64 {
    // Version 0 counts DDL made anywhere (the event trigger): a strict read watches it too.
    let ddl = map.get(&0).copied().unwrap_or(0) as u64;
    oids.iter().map(|o| map.get(o).copied().unwrap_or(0) as u64).fold(ddl, u64::wrapping_add)
}

struct Conn {
    sock: crate::net::Sock,
    buf: BytesMut,
    /// The server it is connected to; versions are read from the primary only.
    backend: usize,
}

async fn serve(shared: Arc<Shared>, db: Arc<Database>, mut rx: mpsc::UnboundedReceiver<Waiter>) {
    let mut conn: Option<Conn> = None;
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let answer = read_versions(&shared, &db, &mut conn).await;
        for w in waiters {
            let _ = w.send(answer.clone());
        }
    }
}

async fn read_versions(shared: &Shared, db: &Database, slot: &mut Option<Conn>) -> Option<VersionMap> {
    let primary = db.primary_index();
    if slot.as_ref().is_some_and(|c| c.backend != primary) {
        // A failover: the old primary's versions say nothing of the new one's commits.
        *slot = None;
    }
    if slot.is_none() {
        let set = crate::routing::monitor::pool_set_for(shared, db)?;
        let pool = set.pools[primary].clone();
        let c = tokio::time::timeout(QUERY_TIMEOUT, pool.connect_unpooled()).await.ok()?.ok()?;
        *slot = Some(Conn { sock: c.sock, buf: c.buf, backend: primary });
    }
    let conn = slot.as_mut()?;
    let sql = super::triggers::VERSIONS_SQL;
    match crate::pool::check::query(&conn.sock, &mut conn.buf, None, sql, QUERY_TIMEOUT).await {
        Ok(rows) => {
            let map = rows
                .iter()
                .filter_map(|r| {
                    let oid = r.first()?.as_deref()?.parse().ok()?;
                    let v = r.get(1)?.as_deref()?.parse().ok()?;
                    Some((oid, v))
                })
                .collect();
            Some(Arc::new(map))
        }
        Err(e) => {
            tracing::warn!(database = %db.name, error = %e, "strict cache: could not read pgpilot.cache_versions");
            *slot = None;
            None
        }
    }
}
