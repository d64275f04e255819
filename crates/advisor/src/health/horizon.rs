//! What holds the xmin horizon back: vacuum can freeze no row newer than the oldest transaction
//! still running or still visible to someone, so while one of these is older than
//! autovacuum_freeze_max_age no VACUUM (FREEZE) and no autovacuum worker brings the age down.
//! Holding the transaction ID of shared catalogs, each holds back every database.

use anyhow::Result;

use crate::db::Db;
use crate::units::{count, duration};

/// One thing keeping old transaction IDs from being frozen.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonHolder {
    /// Transactions since the ID it holds.
    pub age: i64,
    pub kind: HolderKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HolderKind {
    /// A session whose transaction (backend_xid) or snapshot (backend_xmin) is old.
    Session {
        pid: i32,
        user: String,
        database: String,
        state: String,
        transaction_secs: f64,
    },
    Prepared {
        gid: String,
        database: String,
    },
    /// A replication slot's xmin or catalog_xmin.
    Slot {
        name: String,
        active: bool,
    },
    /// A standby's oldest snapshot, sent with hot_standby_feedback.
    StandbyFeedback {
        application: String,
        client: String,
    },
}

impl HorizonHolder {
    /// The evidence line naming it.
    pub fn describe(&self) -> String {
        let age = count(self.age);
        match &self.kind {
            HolderKind::Session { pid, user, database, state, transaction_secs } => format!(
                "pid {pid} (user {user} on {database}, {state}, transaction open for {}) holds a transaction \
                 ID or snapshot {age} transactions old",
                duration(*transaction_secs)
            ),
            HolderKind::Prepared { gid, database } => {
                format!("prepared transaction '{gid}' (database {database}) is {age} transactions old")
            }
            HolderKind::Slot { name, active } => format!(
                "replication slot {name} ({}) holds xmin {age} transactions old",
                if *active { "active" } else { "inactive" }
            ),
            HolderKind::StandbyFeedback { application, client } => format!(
                "standby {application} ({client}) holds a snapshot {age} transactions old through hot_standby_feedback"
            ),
        }
    }

    /// The statement (or step) that ends it, and with it the hold.
    pub fn release(&self) -> String {
        match &self.kind {
            HolderKind::Session { pid, state, .. } => format!(
                "SELECT pg_terminate_backend({pid});  -- {state}: or have its application COMMIT or ROLLBACK"
            ),
            HolderKind::Prepared { gid, database } => {
                let quoted = gid.replace('\'', "''");
                format!(
                    "ROLLBACK PREPARED '{quoted}';  -- in database {database}, or COMMIT PREPARED '{quoted}'"
                )
            }
            HolderKind::Slot { name, .. } => format!(
                "SELECT pg_drop_replication_slot('{}');  -- or bring its consumer back to advance it",
                name.replace('\'', "''")
            ),
            HolderKind::StandbyFeedback { application, .. } => format!(
                "-- on standby {application}: end its long-running query, or turn hot_standby_feedback off"
            ),
        }
    }
}

/// Every holder at least `min_age` old, oldest first.
pub async fn holders(db: &Db, min_age: i64) -> Result<Vec<HorizonHolder>> {
    // age() is an int4: a larger threshold is one nothing reaches.
    let min_age = min_age.clamp(0, i32::MAX as i64);
    let mut out = sessions(db, min_age).await?;
    out.extend(prepared(db, min_age).await?);
    out.extend(slots(db, min_age).await?);
    out.extend(standbys(db, min_age).await?);
    out.sort_by_key(|h| std::cmp::Reverse(h.age));
    Ok(out)
}

async fn sessions(db: &Db, min_age: i64) -> Result<Vec<HorizonHolder>> {
    let sql = "SELECT pid, coalesce(usename::text, ''), coalesce(datname::text, ''), coalesce(state, ''), \
             coalesce(extract(epoch FROM now() - xact_start), 0)::float8, \
             greatest(age(backend_xid), age(backend_xmin))::int8 AS held \
             FROM pg_stat_activity WHERE pid <> pg_backend_pid() \
               AND greatest(age(backend_xid), age(backend_xmin)) >= $1";
    holders_of(db, sql, min_age, |r| HolderKind::Session {
        pid: r.get(0),
        user: r.get(1),
        database: r.get(2),
        state: r.get(3),
        transaction_secs: r.get(4),
    })
    .await
}

async fn prepared(db: &Db, min_age: i64) -> Result<Vec<HorizonHolder>> {
    let sql = "SELECT gid, database::text, age(transaction)::int8 FROM pg_prepared_xacts WHERE age(transaction) >= $1";
    holders_of(db, sql, min_age, |r| HolderKind::Prepared { gid: r.get(0), database: r.get(1) }).await
}

async fn slots(db: &Db, min_age: i64) -> Result<Vec<HorizonHolder>> {
    let sql = "SELECT slot_name::text, active, greatest(age(xmin), age(catalog_xmin))::int8 \
             FROM pg_replication_slots WHERE greatest(age(xmin), age(catalog_xmin)) >= $1";
    holders_of(db, sql, min_age, |r| HolderKind::Slot { name: r.get(0), active: r.get(1) }).await
}

async fn standbys(db: &Db, min_age: i64) -> Result<Vec<HorizonHolder>> {
    let sql = "SELECT coalesce(application_name, ''), coalesce(client_addr::text, 'local'), age(backend_xmin)::int8 \
             FROM pg_stat_replication WHERE age(backend_xmin) >= $1";
    holders_of(db, sql, min_age, |r| HolderKind::StandbyFeedback { application: r.get(0), client: r.get(1) })
        .await
}

/// Runs `sql` (`$1` the least age, the age its last column) and makes a holder of each row.
async fn holders_of(
    db: &Db,
    sql: &str,
    min_age: i64,
    kind: impl Fn(&tokio_postgres::Row) -> HolderKind,
) -> Result<Vec<HorizonHolder>> {
    let rows = db.client.query(sql, &[&(min_age as i32)]).await?;
    Ok(rows.iter().map(|r| HorizonHolder { age: r.get(r.len() - 1), kind: kind(r) }).collect())
}
