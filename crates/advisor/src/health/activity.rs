//! Live activity: long-running queries, sessions idle in a transaction, connections against
//! max_connections (blocked queries are in `locks`).

use anyhow::Result;

use super::locks::UNKNOWN;
use crate::db::Db;
use crate::options::HealthSettings;
use crate::report::{Category, Finding, Severity};
use crate::sqltext::without_literals;
use crate::units::{duration, one_line};

const CLIENTS: &str = "backend_type = 'client backend' AND pid <> pg_backend_pid()";

/// Queries waiting for a lock are left out: the blocked-query finding reports them with the session
/// that holds them up, and cancelling the waiter is not the fix.
pub async fn long_running(db: &Db, settings: &HealthSettings) -> Result<Vec<Finding>> {
    let sql = format!(
        "SELECT pid, coalesce(usename::text, ''), coalesce(datname::text, ''), \
         extract(epoch FROM now() - query_start)::float8, query \
         FROM pg_stat_activity WHERE {CLIENTS} AND state = 'active' \
           AND wait_event_type IS DISTINCT FROM 'Lock' AND now() - query_start > make_interval(secs => $1) ORDER BY query_start"
    );
    let rows = db.client.query(&sql, &[&(settings.long_query_secs as f64)]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (pid, secs): (i32, f64) = (r.get(0), r.get(3));
            let severity = if secs >= 3600.0 { Severity::Critical } else { Severity::Warning };
            Finding::new(
                severity,
                Category::Activity,
                format!("Query running for {} (pid {pid})", duration(secs)),
            )
            .object(format!("pid {pid}"))
            .evidence(format!(
                "user {} on {}: {}",
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                shown_query(&r.get::<_, String>(4))
            ))
            .evidence("a long query holds back vacuum's cleanup horizon for the whole cluster")
            .fix(format!("SELECT pg_cancel_backend({pid});  -- and set statement_timeout for the role"))
        })
        .collect())
}

pub async fn idle_in_transaction(db: &Db, settings: &HealthSettings) -> Result<Vec<Finding>> {
    let sql = format!(
        "SELECT pid, coalesce(usename::text, ''), extract(epoch FROM now() - state_change)::float8, \
         extract(epoch FROM now() - xact_start)::float8, state, query, coalesce(datname::text, '') \
         FROM pg_stat_activity WHERE {CLIENTS} AND state LIKE 'idle in transaction%' \
           AND now() - state_change > make_interval(secs => $1) ORDER BY state_change"
    );
    let rows = db.client.query(&sql, &[&(settings.idle_in_transaction_secs as f64)]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (pid, idle, open): (i32, f64, f64) = (r.get(0), r.get(2), r.get(3));
            let severity = if idle >= 3600.0 { Severity::Critical } else { Severity::Warning };
            Finding::new(severity, Category::Activity, format!("Session {pid} idle in transaction for {}", duration(idle)))
                .object(format!("pid {pid}"))
                // The database too: the advisor sees every database's sessions, and a fix made in
                // the wrong one (a lock_timeout, a code change) helps nothing.
                .evidence(format!(
                    "user {} on {}, {}, transaction open for {}",
                    r.get::<_, String>(1),
                    r.get::<_, String>(6),
                    r.get::<_, String>(4),
                    duration(open)
                ))
                .evidence(format!("last statement: {}", shown_query(&r.get::<_, String>(5))))
                .evidence("it keeps its locks and stops vacuum from removing rows deleted since it began")
                .fix(format!(
                    "SELECT pg_terminate_backend({pid});\nALTER SYSTEM SET idle_in_transaction_session_timeout = '5min'; SELECT pg_reload_conf();"
                ))
        })
        .collect())
}

/// Transactions prepared for two-phase commit and never committed or rolled back: no session
/// shows them, yet they keep their locks (DDL behind them waits forever) and hold back vacuum
/// and freezing for the whole cluster (the wraparound fix cannot work while one is there).
/// Judged by the idle-in-transaction threshold: a healthy two-phase commit ends in moments.
pub async fn prepared_transactions(db: &Db, settings: &HealthSettings) -> Result<Vec<Finding>> {
    let rows = db
        .client
        .query(
            "SELECT gid, owner::text, database::text, extract(epoch FROM now() - prepared)::float8, \
             age(transaction)::int8 FROM pg_prepared_xacts \
             WHERE now() - prepared > make_interval(secs => $1) ORDER BY prepared",
            &[&(settings.idle_in_transaction_secs as f64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (gid, owner, database, secs, xid_age): (String, String, String, f64, i64) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            let severity = if secs >= 3600.0 { Severity::Critical } else { Severity::Warning };
            let quoted = gid.replace('\'', "''");
            Finding::new(
                severity,
                Category::Activity,
                format!("Prepared transaction '{gid}' left open for {}", duration(secs)),
            )
            .object(format!("prepared transaction {gid}"))
            .evidence(format!(
                "prepared by {owner} in database {database}; its transaction ID is {} transactions old",
                crate::units::count(xid_age)
            ))
            .evidence(
                "no session shows it: it keeps its locks (DDL on its tables waits behind it) and stops \
                 vacuum from removing or freezing rows in every database, so wraparound comes closer",
            )
            .fix(format!(
                "-- in database {database}, once the transaction manager that prepared it is known to have given up on it:\n\
                 ROLLBACK PREPARED '{quoted}';  -- or COMMIT PREPARED '{quoted}'"
            ))
        })
        .collect())
}

/// A live query as findings show it: its constants hidden (they can be personal data, and the
/// statistics pages show statements normalized too), on one line.
pub(super) fn shown_query(query: &str) -> String {
    one_line(&without_literals(query), 200)
}

/// A session of another role whose backend type, state, query and times pg_stat_activity hides
/// from a role without pg_read_all_stats (backend_type is NULL then, and only then), connected to
/// a database as a user: a client, as far as can be told (a background worker has no user).
const HIDDEN_CLIENT: &str = "backend_type IS NULL AND usename IS NOT NULL AND datname IS NOT NULL";

/// Says how many sessions pg_stat_activity hides from this role: the long-running and
/// idle-in-transaction checks cannot see them, the lock check shows their waits as unknown, and
/// the connection counts do not know their state.
pub async fn hidden_sessions(db: &Db) -> Result<Option<String>> {
    let sql = format!("SELECT count(*) FILTER (WHERE {HIDDEN_CLIENT})::int8 FROM pg_stat_activity");
    let hidden: i64 = db.client.query_one(&sql, &[]).await?.get(0);
    Ok((hidden > 0).then(|| {
        format!(
            "pg_stat_activity hides the state, query and times of {hidden} session(s) of other roles from this \
             role (it lacks pg_read_all_stats): their long-running queries and idle transactions are not \
             reported, blocked queries show their waits and blockers as unknown, and the connection counts \
             do not know their state; grant pg_monitor (or pg_read_all_stats) to the advisor's role"
        )
    }))
}

pub async fn connections(db: &Db) -> Result<Vec<Finding>> {
    let sql = format!(
        "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int, \
         count(*) FILTER (WHERE backend_type = 'client backend' OR ({HIDDEN_CLIENT}))::int, \
         count(*) FILTER (WHERE state = 'active')::int, count(*) FILTER (WHERE state = 'idle')::int, \
         count(*) FILTER (WHERE state LIKE 'idle in transaction%')::int, \
         count(*) FILTER (WHERE {HIDDEN_CLIENT})::int \
         FROM pg_stat_activity"
    );
    let row = db.client.query_one(&sql, &[]).await?;
    let usage = ConnectionUsage {
        max_connections: row.get(0),
        reserved: row.get(1),
        clients: row.get(2),
        active: row.get(3),
        idle: row.get(4),
        idle_in_transaction: row.get(5),
        hidden: row.get(6),
    };
    Ok(usage.finding().into_iter().collect())
}

/// Connections by state against the limit.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionUsage {
    pub max_connections: i32,
    pub reserved: i32,
    pub clients: i32,
    pub active: i32,
    pub idle: i32,
    pub idle_in_transaction: i32,
    /// Clients of other roles whose state pg_stat_activity hides from this role (counted in `clients`).
    pub hidden: i32,
}

impl ConnectionUsage {
    pub fn finding(&self) -> Option<Finding> {
        let available = (self.max_connections - self.reserved).max(1);
        let ratio = self.clients as f64 / available as f64;
        let hidden =
            if self.hidden > 0 { format!(", {} in a state {UNKNOWN}", self.hidden) } else { String::new() };
        let evidence = format!(
            "{} of {} connections in use ({} active, {} idle, {} idle in transaction{hidden}); {} reserved for superusers",
            self.clients, available, self.active, self.idle, self.idle_in_transaction, self.reserved
        );
        let fix =
            "put a pooler in front (pgpilot serve) so idle application connections do not hold server slots";
        if ratio >= 0.95 {
            Some(
                Finding::new(
                    Severity::Critical,
                    Category::Connections,
                    format!("{:.0}% of connections in use", ratio * 100.0),
                )
                .evidence(evidence)
                .fix(fix),
            )
        } else if ratio >= 0.8 {
            Some(
                Finding::new(
                    Severity::Warning,
                    Category::Connections,
                    format!("{:.0}% of connections in use", ratio * 100.0),
                )
                .evidence(evidence)
                .fix(fix),
            )
        } else if self.idle >= 50 && self.idle > 4 * self.active.max(1) {
            Some(
                Finding::new(
                    Severity::Info,
                    Category::Connections,
                    format!("{} idle connections", self.idle),
                )
                .evidence(evidence)
                .fix(fix),
            )
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(clients: i32, active: i32, idle: i32) -> ConnectionUsage {
        ConnectionUsage {
            max_connections: 100,
            reserved: 3,
            clients,
            active,
            idle,
            idle_in_transaction: 0,
            hidden: 0,
        }
    }

    #[test]
    fn shown_queries_hide_their_literals() {
        assert_eq!(
            shown_query("update dup_t\n   set c='SSN-123-45-6789' where a=4"),
            "update dup_t set c=$1 where a=$2"
        );
    }

    #[test]
    fn connection_thresholds() {
        assert!(usage(10, 5, 5).finding().is_none());
        assert_eq!(usage(80, 40, 40).finding().unwrap().severity, Severity::Warning);
        assert_eq!(usage(93, 40, 53).finding().unwrap().severity, Severity::Critical);
        assert_eq!(usage(70, 5, 65).finding().unwrap().severity, Severity::Info);
    }
}
