//! Health checks: each inspects one aspect of the database and returns findings with the
//! evidence and the fix. A check that cannot run (privileges, version) adds a note instead.

mod activity;
mod foreign_keys;
mod horizon;
mod index_drops;
pub(crate) mod indexes;
mod lock_requests;
mod locks;
mod replication;
pub mod standby;
mod storage;
pub mod usage;
pub mod wraparound;

use crate::db::Db;
use crate::options::HealthSettings;
use crate::progress::Progress;
use crate::report::{Category, Finding, Severity};
use usage::IndexScans;

/// Runs every check; returns the findings and the notes about checks that could not run. `scans`
/// were read before the advisor planned anything (see `usage`).
pub async fn run(
    db: &Db,
    settings: &HealthSettings,
    pgstattuple: bool,
    scans: &anyhow::Result<IndexScans>,
    suggested: &[crate::report::IndexSuggestion],
    progress: &dyn Progress,
) -> (Vec<Finding>, Vec<String>) {
    let mut findings = Vec::new();
    let mut notes = Vec::new();
    const CHECKS: u64 = 19;
    progress.stage("health checks", CHECKS);
    macro_rules! check {
        ($name:expr, $call:expr) => {{
            match $call.await {
                Ok(mut f) => findings.append(&mut f),
                Err(e) => notes.push(format!("{} check could not run: {e:#}", $name)),
            }
            progress.advance(1);
        }};
    }
    // Unused and duplicate indexes are judged together: their DROPs must leave each column list
    // an index (see `index_drops`).
    let (mut index_findings, mut index_notes) = index_drops::check(db, settings, scans).await;
    findings.append(&mut index_findings);
    notes.append(&mut index_notes);
    progress.advance(2);
    check!("invalid indexes", indexes::invalid(db));
    check!("foreign key indexes", foreign_keys::unindexed(db, settings, suggested));
    check!("sequential scans", storage::sequential_scans(db, settings));
    check!("table bloat", storage::table_bloat(db, settings, pgstattuple));
    check!("index bloat", storage::index_bloat(db, settings, pgstattuple));
    check!("dead rows", storage::dead_rows(db, settings));
    check!("cache hit ratio", storage::cache_hit_ratio(db));
    check!("largest relations", storage::largest(db, settings));
    check!("materialized views", storage::materialized_views(db));
    check!("long-running queries", activity::long_running(db, settings));
    check!("idle in transaction", activity::idle_in_transaction(db, settings));
    check!("prepared transactions", activity::prepared_transactions(db, settings));
    check!("blocked queries", locks::blocked(db));
    check!("connections", activity::connections(db));
    check!("wraparound", wraparound::check(db));
    check!("sequences", wraparound::sequences(db));
    check!("replication and archiving", replication::check(db));
    // What the role's privileges hid from the checks above: said, never silently left out.
    let hidden = [
        ("activity", activity::hidden_sessions(db).await),
        ("sequences", wraparound::unreadable_sequences(db).await),
        ("table bloat", storage::hidden_statistics(db, settings).await),
    ];
    for (check, note) in hidden {
        match note {
            Ok(note) => notes.extend(note),
            Err(e) => notes.push(format!("{check} check could not tell what this role cannot see: {e:#}")),
        }
    }
    if !pgstattuple {
        notes.push("bloat figures are estimates from statistics (pgstattuple not installed)".into());
    }
    (findings, notes)
}

/// Up to ten names, then how many more.
pub(crate) fn some_of(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut text = names.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// Names the relations a check left out because another session held (or queued for) a lock on
/// them that reading their size or definition waits for: the rest was checked.
pub(crate) fn locked_relations_finding(
    category: Category,
    check: &str,
    locked: &[String],
) -> Option<Finding> {
    if locked.is_empty() {
        return None;
    }
    let finding = Finding::new(
        Severity::Info,
        category,
        format!("{check} not checked on {} locked relation(s)", locked.len()),
    )
    .evidence(
        "another session holds or waits for a lock (ACCESS EXCLUSIVE: ALTER TABLE, LOCK TABLE, VACUUM FULL, \
         REINDEX) on these; the advisor waited lock_timeout for them and checked every other relation",
    )
    .fix("run the advisor again once the lock is released (see the blocked and long-running queries)");
    Some(locked.iter().fold(finding, |f, name| f.evidence(format!("locked: {name}"))))
}

/// The `limit` first of `rows` by their int8 `column`, largest first: what the query's `ORDER BY
/// column DESC LIMIT limit` gives over all relations, when `Db::rows_skipping_locked` gathered the
/// rows relation by relation.
pub(crate) fn top_by(
    mut rows: Vec<tokio_postgres::Row>,
    column: usize,
    limit: i64,
) -> Vec<tokio_postgres::Row> {
    rows.sort_by_key(|r| std::cmp::Reverse(r.get::<_, i64>(column)));
    rows.truncate(limit.max(0) as usize);
    rows
}
