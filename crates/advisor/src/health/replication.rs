//! Replication lag, replication slots, and WAL archiving.

use anyhow::Result;

use crate::db::Db;
use crate::report::{Category, Finding, Severity};
use crate::units::{bytes, duration};

pub async fn check(db: &Db) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    if db.in_recovery {
        out.extend(replica_lag(db).await?);
    } else {
        out.extend(standby_lag(db).await?);
        out.extend(slots(db).await?);
    }
    out.extend(archiving(db).await?);
    Ok(out)
}

/// Lag severity: warning from 64 MB or 30 s behind, critical from 1 GB or 5 minutes.
pub fn lag_severity(bytes_behind: i64, seconds_behind: f64) -> Option<Severity> {
    if bytes_behind >= 1 << 30 || seconds_behind >= 300.0 {
        Some(Severity::Critical)
    } else if bytes_behind >= 64 << 20 || seconds_behind >= 30.0 {
        Some(Severity::Warning)
    } else {
        None
    }
}

async fn standby_lag(db: &Db) -> Result<Vec<Finding>> {
    let rows = db
        .rows(
            "SELECT coalesce(application_name, ''), coalesce(client_addr::text, 'local'), coalesce(state, ''), \
             coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::int8, \
             coalesce(extract(epoch FROM replay_lag), 0)::float8, coalesce(sync_state, '') \
             FROM pg_stat_replication",
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let (behind, secs): (i64, f64) = (r.get(3), r.get(4));
            let severity = lag_severity(behind, secs)?;
            let name = format!("{}@{}", r.get::<_, String>(0), r.get::<_, String>(1));
            Some(
                Finding::new(severity, Category::Replication, format!("Replica {name} is {} behind", bytes(behind)))
                    .object(name)
                    .evidence(format!("state {}, {} replay lag, {} sync", r.get::<_, String>(2), duration(secs), r.get::<_, String>(5)))
                    .fix("check the replica's disk and CPU, long queries on it (hot_standby_feedback, max_standby_streaming_delay) and the network"),
            )
        })
        .collect())
}

async fn replica_lag(db: &Db) -> Result<Vec<Finding>> {
    let row = db
        .client
        .query_one(
            "SELECT coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::int8, \
             coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)::float8, \
             pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()",
            &[],
        )
        .await?;
    let (behind, secs): (i64, f64) = (row.get(0), row.get(1));
    let caught_up: Option<bool> = row.get(2);
    // On an idle primary the last replayed transaction keeps ageing: time counts only when WAL is pending.
    let secs = if caught_up == Some(true) { 0.0 } else { secs };
    Ok(lag_severity(behind, secs)
        .map(|severity| {
            Finding::new(
                severity,
                Category::Replication,
                format!("This replica is {} behind its primary", bytes(behind)),
            )
            .evidence(format!(
                "{} received but not replayed; last replayed transaction {} ago",
                bytes(behind),
                duration(secs)
            ))
            .fix("check for replay conflicts and long queries on this replica, and its I/O")
        })
        .into_iter()
        .collect())
}

async fn slots(db: &Db) -> Result<Vec<Finding>> {
    let status = if db.version_num >= 130000 { "coalesce(wal_status, '')" } else { "''" };
    let rows = db
        .rows(&format!(
            "SELECT slot_name::text, slot_type, active, \
             coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(restart_lsn, confirmed_flush_lsn)), 0)::int8, {status} \
             FROM pg_replication_slots"
        ))
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let (name, kind, active, retained, status): (String, String, bool, i64, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
            let lost = matches!(status.as_str(), "lost" | "unreserved");
            let severity = if lost || retained >= 10 << 30 {
                Severity::Critical
            } else if !active || retained >= 1 << 30 {
                Severity::Warning
            } else {
                return None;
            };
            let title = if active {
                format!("Replication slot {name} retains {} of WAL", bytes(retained))
            } else {
                format!("Replication slot {name} is inactive")
            };
            Some(
                Finding::new(severity, Category::Replication, title)
                    .object(name.clone())
                    .evidence(format!("{kind} slot, {}active, retaining {} of WAL{}", if active { "" } else { "in" }, bytes(retained),
                        if status.is_empty() { String::new() } else { format!(", wal_status {status}") }))
                    .evidence("an unused slot keeps WAL (and, for logical slots, old catalog rows) forever: the disk fills")
                    .fix(format!("SELECT pg_drop_replication_slot('{}');  -- if its consumer is gone", name.replace('\'', "''"))),
            )
        })
        .collect())
}

async fn archiving(db: &Db) -> Result<Vec<Finding>> {
    let row = db
        .client
        .query_one(
            "SELECT current_setting('archive_mode'), \
             coalesce(current_setting('archive_command', true), ''), coalesce(current_setting('archive_library', true), ''), \
             archived_count::int8, failed_count::int8, coalesce(last_failed_wal, ''), \
             extract(epoch FROM now() - last_archived_time)::float8, \
             coalesce(last_failed_time > coalesce(last_archived_time, 'epoch'::timestamptz), false), \
             current_setting('archive_timeout') \
             FROM pg_stat_archiver",
            &[],
        )
        .await?;
    let mode: String = row.get(0);
    let (command, library): (String, String) = (row.get(1), row.get(2));
    let (archived, failed): (i64, i64) = (row.get(3), row.get(4));
    let last_archived_age: Option<f64> = row.get(6);
    let failing: bool = row.get(7);
    if mode == "off" {
        return Ok(vec![Finding::new(Severity::Info, Category::WalArchiving, "WAL archiving is off")
            .evidence("archive_mode = off: no point-in-time recovery from this server's WAL")
            .fix("set archive_mode = on and an archive_command (or archive_library) such as pgBackRest or WAL-G; restart")]);
    }
    let mut out = Vec::new();
    if command.is_empty() && library.is_empty() {
        out.push(Finding::new(Severity::Critical, Category::WalArchiving, "archive_mode is on but nothing archives")
            .evidence("archive_command and archive_library are empty: WAL accumulates in pg_wal until the disk fills")
            .fix("configure archive_command (or archive_library)"));
    }
    if failing {
        out.push(Finding::new(Severity::Critical, Category::WalArchiving, "WAL archiving is failing")
            .evidence(format!("{failed} failures, last on segment {}; {archived} segments archived", row.get::<_, String>(5)))
            .evidence("unarchived WAL stays in pg_wal: the disk fills and point-in-time recovery has a gap")
            .fix("read the server log for the archive_command's error and fix the command or its destination"));
    }
    if let Some(age) = last_archived_age.filter(|a| *a > 3600.0) {
        out.push(
            Finding::new(
                Severity::Warning,
                Category::WalArchiving,
                format!("No WAL segment archived for {}", duration(age)),
            )
            .evidence(format!(
                "archive_timeout = {}: an idle server archives nothing, a busy one should",
                row.get::<_, String>(8)
            ))
            .fix("check that the archiver runs (ps: postgres: archiver) and that archive_command succeeds"),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_thresholds() {
        assert_eq!(lag_severity(1 << 20, 1.0), None);
        assert_eq!(lag_severity(100 << 20, 1.0), Some(Severity::Warning));
        assert_eq!(lag_severity(0, 45.0), Some(Severity::Warning));
        assert_eq!(lag_severity(2 << 30, 0.0), Some(Severity::Critical));
    }
}
