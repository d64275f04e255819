//! Table-level checks: sequential scans, bloat, dead rows, cache hit ratio, largest relations,
//! materialized views that were never populated.

use anyhow::Result;

use crate::db::Db;
use crate::options::HealthSettings;
use crate::report::{Category, Finding, Severity};
use crate::units::{bytes, count};

pub async fn sequential_scans(db: &Db, settings: &HealthSettings) -> Result<Vec<Finding>> {
    // Reading a table's size locks it: a locked one is left out (the statistics alone lock nothing,
    // and the fence (OFFSET 0) keeps the size from being read before they narrowed the tables).
    // A few scans are maintenance's as likely as the application's (CREATE INDEX CONCURRENTLY
    // scans the table twice, pg_dump once): only a workload's number of scans and rows counts.
    let candidates = format!(
        "seq_scan > coalesce(idx_scan, 0) AND n_live_tup >= 10000 \
         AND seq_tup_read / greatest(seq_scan, 1) >= 1000 AND seq_scan >= {} AND seq_tup_read >= {}",
        settings.seq_scan_min_scans, settings.seq_scan_min_rows_read
    );
    // A partition's scans are its partitioned table's: the index suggestion is made on that table.
    let root = if db.version_num >= 120000 { "pg_partition_root(relid)" } else { "NULL::oid" };
    let sql = format!(
        "SELECT * FROM (SELECT quote_ident(schemaname) || '.' || quote_ident(relname), seq_scan::int8, \
           seq_tup_read::int8, coalesce(idx_scan, 0)::int8, n_live_tup::int8, pg_relation_size(relid)::int8 AS size, \
           (SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c \
              JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = {root}) \
           FROM pg_stat_user_tables WHERE {candidates} AND ($1::oid[] IS NULL OR relid = ANY($1)) OFFSET 0) t \
         WHERE size >= $2 ORDER BY 3 DESC LIMIT $3"
    );
    let tables = format!(
        "SELECT relid, quote_ident(schemaname) || '.' || quote_ident(relname) FROM pg_stat_user_tables \
         WHERE {candidates} ORDER BY 2"
    );
    const LIMIT: i64 = 20;
    let (rows, locked) = db.rows_skipping_locked(&sql, &tables, &[&settings.table_min_bytes, &LIMIT]).await?;
    let rows = super::top_by(rows, 2, LIMIT);
    Ok(SeqScans::grouped(&rows)
        .iter()
        .map(SeqScans::finding)
        .chain(super::locked_relations_finding(Category::Tables, "Sequential scans", &locked))
        .collect())
}

/// The sequential scans of a table, or of the partitions of a partitioned table, added up.
#[derive(Debug, Default)]
struct SeqScans {
    table: String,
    /// The partitions counted, when `table` is partitioned.
    partitions: Vec<String>,
    seq: i64,
    read: i64,
    idx: i64,
    live: i64,
    size: i64,
}

impl SeqScans {
    /// One per table, a partition's counts under its partitioned table, in the order of `rows`.
    fn grouped(rows: &[tokio_postgres::Row]) -> Vec<SeqScans> {
        let mut out: Vec<SeqScans> = Vec::new();
        for r in rows {
            let (name, root): (String, Option<String>) = (r.get(0), r.get(6));
            let table = root.clone().unwrap_or_else(|| name.clone());
            let i = match out.iter().position(|s| s.table == table) {
                Some(i) => i,
                None => {
                    out.push(SeqScans { table, ..Default::default() });
                    out.len() - 1
                }
            };
            let s = &mut out[i];
            if root.is_some() {
                s.partitions.push(name);
            }
            s.seq += r.get::<_, i64>(1);
            s.read += r.get::<_, i64>(2);
            s.idx += r.get::<_, i64>(3);
            s.live += r.get::<_, i64>(4);
            s.size += r.get::<_, i64>(5);
        }
        for s in &mut out {
            s.partitions.sort();
        }
        out
    }

    fn finding(&self) -> Finding {
        let mut f = Finding::new(
            Severity::Warning,
            Category::Tables,
            format!("{} is read mostly by sequential scans", self.table),
        )
        .object(self.table.clone())
        .evidence(format!("{} sequential scans vs {} index scans", count(self.seq), count(self.idx)))
        .evidence(format!(
            "{} rows read by sequential scans (~{} per scan of {} live rows), {} on disk",
            count(self.read),
            count(self.read / self.seq.max(1)),
            count(self.live),
            bytes(self.size)
        ));
        if !self.partitions.is_empty() {
            f = f.evidence(format!(
                "on its partitions {} (an index made on the partitioned table is made on each of them)",
                self.partitions.join(", ")
            ));
        }
        f.fix("see the index suggestions for this table; statements that filter it need an index")
    }
}

/// Bloat from statistics: the pages the live rows need (row width from pg_stats, 24-byte tuple
/// header, 4-byte line pointer, fillfactor) against the pages the table has.
pub async fn table_bloat(db: &Db, settings: &HealthSettings, pgstattuple: bool) -> Result<Vec<Finding>> {
    let rows = db
        .client
        .query(
            "WITH t AS ( \
               SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name, c.relpages::int8 AS pages, \
                 c.reltuples::float8 AS tuples, current_setting('block_size')::int8 AS bs, \
                 coalesce((SELECT substring(o FROM 'fillfactor=(\\d+)')::int FROM unnest(c.reloptions) o \
                           WHERE o LIKE 'fillfactor=%'), 100) AS ff, \
                 (SELECT sum(s.avg_width)::float8 FROM pg_stats s WHERE s.schemaname = n.nspname AND s.tablename = c.relname) AS width \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                 AND n.nspname !~ '^pg_toast' AND c.relpages::int8 * current_setting('block_size')::int8 >= $1) \
             SELECT oid, name, pages * bs, \
               ceil(tuples * (width + 28) / (bs * ff / 100.0 - 24))::int8 * bs \
             FROM t WHERE width IS NOT NULL AND tuples > 0",
            &[&settings.table_min_bytes],
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let (oid, name, actual, expected): (u32, String, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
        let mut estimate =
            BloatEstimate { actual, wasted: (actual - expected).max(0), source: "estimate from statistics" };
        if pgstattuple && estimate.ratio() >= 0.2 {
            // Confirm with pgstattuple_approx: it reads only pages the visibility map does not vouch for.
            if let Ok(row) = db
                .client
                .query_one("SELECT table_len::int8, (dead_tuple_len + approx_free_space)::int8 FROM pgstattuple_approx($1::oid::regclass)", &[&oid])
                .await
            {
                estimate = BloatEstimate { actual: row.get(0), wasted: row.get(1), source: "pgstattuple_approx" };
            }
        }
        let fix = format!(
            "VACUUM (VERBOSE, ANALYZE) {name};  -- makes dead space reusable\n\
                         -- to give the space back without a long lock: pg_repack -t {name}\n\
                         -- (VACUUM FULL also does, under an ACCESS EXCLUSIVE lock for the whole rewrite)"
        );
        out.extend(bloat_finding("Table", &name, &estimate, settings.table_min_bytes, fix));
    }
    Ok(out)
}

/// The note for tables whose bloat could not be estimated because pg_stats hides their column
/// statistics from this role: it shows a column only to a role that may SELECT it, and not at all
/// under active row-level security (pg_monitor gives neither). Only tables large enough for the
/// bloat checks are counted.
pub async fn hidden_statistics(db: &Db, settings: &HealthSettings) -> Result<Option<String>> {
    let rows = db
        .client
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname !~ '^pg_toast' AND NOT pg_is_other_temp_schema(n.oid) AND c.reltuples > 0 \
               AND c.relpages::int8 * current_setting('block_size')::int8 >= $1 \
               AND (EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 \
                              AND NOT a.attisdropped AND NOT has_column_privilege(c.oid, a.attnum, 'SELECT')) \
                    OR (c.relrowsecurity AND row_security_active(c.oid))) \
             ORDER BY 1",
            &[&settings.table_min_bytes],
        )
        .await?;
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    if names.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "pg_stats hides the column statistics of {} table(s) from this role (it lacks SELECT on their \
         columns, or row-level security is active), so their bloat and their indexes' bloat were not \
         estimated; grant SELECT on them (or pg_read_all_data on PostgreSQL 14+), or run the advisor as a \
         superuser: {}",
        names.len(),
        super::some_of(&names)
    )))
}

/// How much of a relation is wasted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BloatEstimate {
    pub actual: i64,
    pub wasted: i64,
    pub source: &'static str,
}

impl BloatEstimate {
    pub fn ratio(&self) -> f64 {
        if self.actual > 0 {
            self.wasted as f64 / self.actual as f64
        } else {
            0.0
        }
    }

    /// Worth reporting when at least 30% and `min_bytes` are wasted; critical from 70% and 1 GB.
    pub fn severity(&self, min_bytes: i64) -> Option<Severity> {
        let ratio = self.ratio();
        if ratio >= 0.7 && self.wasted >= 1 << 30 {
            Some(Severity::Critical)
        } else if ratio >= 0.3 && self.wasted >= min_bytes {
            Some(Severity::Warning)
        } else {
            None
        }
    }
}

/// Btree bloat: pgstatindex's page counts when available, else an estimate from key widths.
pub async fn index_bloat(db: &Db, settings: &HealthSettings, pgstattuple: bool) -> Result<Vec<Finding>> {
    let rows = db
        .client
        .query(
            "SELECT ic.oid, quote_ident(n.nspname) || '.' || quote_ident(ic.relname), \
               ic.relpages::int8 * current_setting('block_size')::int8, \
               ceil(ic.reltuples * ((SELECT sum(s.avg_width) FROM pg_attribute a \
                    JOIN pg_stats s ON s.schemaname = tn.nspname AND s.tablename = t.relname AND s.attname = a.attname \
                    WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])) + 12) \
                    / (current_setting('block_size')::int8 * 0.9 - 24))::int8 * current_setting('block_size')::int8 \
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace \
             JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace \
             JOIN pg_am am ON am.oid = ic.relam \
             WHERE am.amname = 'btree' AND i.indisvalid AND i.indexprs IS NULL AND ic.reltuples > 0 \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' \
               AND ic.relpages::int8 * current_setting('block_size')::int8 >= $1",
            &[&settings.table_min_bytes],
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let (oid, name, actual): (u32, String, i64) = (r.get(0), r.get(1), r.get(2));
        let expected: Option<i64> = r.get(3);
        let mut estimate = BloatEstimate {
            actual,
            wasted: expected.map(|e| (actual - e).max(0)).unwrap_or(0),
            source: "estimate from statistics",
        };
        if pgstattuple {
            if let Ok(row) = db
                .client
                .query_one(
                    "SELECT index_size::int8, leaf_pages::int8, empty_pages::int8, deleted_pages::int8, \
                     avg_leaf_density::float8, current_setting('block_size')::int8 FROM pgstatindex($1::oid::regclass)",
                    &[&oid],
                )
                .await
            {
                let pages = BtreePages {
                    leaf: row.get(1),
                    empty: row.get(2),
                    deleted: row.get(3),
                    leaf_density: row.get(4),
                };
                let (size, block_size): (i64, i64) = (row.get(0), row.get(5));
                estimate = BloatEstimate {
                    actual: size,
                    wasted: pages.wasted_pages() * block_size,
                    source: "pgstatindex: deleted and empty pages, leaf density",
                };
            }
        }
        let fix = format!("REINDEX INDEX CONCURRENTLY {name};");
        out.extend(bloat_finding("Index", &name, &estimate, settings.table_min_bytes, fix));
    }
    Ok(out)
}

/// A btree's pages as pgstatindex counts them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BtreePages {
    pub leaf: i64,
    pub empty: i64,
    /// Pages VACUUM emptied and unlinked (after mass deletes or a rolled-back bulk insert): the
    /// index may reuse them, but they stay in its file until a REINDEX.
    pub deleted: i64,
    /// Percent of the leaf pages' space in use (NaN without leaf pages).
    pub leaf_density: f64,
}

impl BtreePages {
    /// Pages a fresh build would not have: the deleted and empty ones, and the part of the leaf
    /// pages that is emptier than the ~90% a fresh btree packs them (its default fillfactor).
    pub fn wasted_pages(&self) -> i64 {
        let density = if self.leaf_density.is_finite() { self.leaf_density / 100.0 } else { 0.9 };
        let sparse_leaves = (self.leaf as f64 * (0.9 - density).max(0.0) / 0.9) as i64;
        self.deleted + self.empty + sparse_leaves
    }
}

fn bloat_finding(
    kind: &str,
    name: &str,
    estimate: &BloatEstimate,
    min_bytes: i64,
    fix: String,
) -> Option<Finding> {
    let severity = estimate.severity(min_bytes)?;
    Some(
        Finding::new(
            severity,
            Category::Bloat,
            format!("{kind} {name} is {:.0}% bloat", 100.0 * estimate.ratio()),
        )
        .object(name)
        .evidence(format!(
            "{} on disk, ~{} reclaimable ({})",
            bytes(estimate.actual),
            bytes(estimate.wasted),
            estimate.source
        ))
        .fix(fix),
    )
}

pub async fn dead_rows(db: &Db, settings: &HealthSettings) -> Result<Vec<Finding>> {
    let off = |rel: &str| {
        format!(
            "EXISTS (SELECT 1 FROM pg_options_to_table({rel}.reloptions) o \
             WHERE o.option_name = 'autovacuum_enabled' AND NOT o.option_value::bool)"
        )
    };
    // As for sequential scans: the size is read last, and a locked table is left out.
    let candidates = "s.n_dead_tup >= 10000 AND s.n_dead_tup > 0.2 * greatest(s.n_live_tup, 1)";
    let sql = format!(
        "SELECT * FROM (SELECT quote_ident(s.schemaname) || '.' || quote_ident(s.relname), s.n_live_tup::int8, \
           s.n_dead_tup::int8, \
           coalesce(to_char(greatest(s.last_vacuum, s.last_autovacuum), 'YYYY-MM-DD HH24:MI'), 'never'), \
           {}, {}, pg_relation_size(s.relid)::int8 AS size \
           FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid LEFT JOIN pg_class t ON t.oid = c.reltoastrelid \
           WHERE {candidates} AND ($1::oid[] IS NULL OR s.relid = ANY($1)) OFFSET 0) d \
         WHERE size >= $2 ORDER BY 3 DESC LIMIT $3",
        off("c"),
        off("t")
    );
    let tables = format!(
        "SELECT s.relid, quote_ident(s.schemaname) || '.' || quote_ident(s.relname) FROM pg_stat_user_tables s \
         WHERE {candidates} ORDER BY 2"
    );
    const LIMIT: i64 = 20;
    let (rows, locked) =
        db.rows_skipping_locked(&sql, &tables, &[&(settings.table_min_bytes / 8), &LIMIT]).await?;
    let rows = super::top_by(rows, 2, LIMIT);
    Ok(rows
        .iter()
        .map(|r| {
            let table: String = r.get(0);
            let (live, dead): (i64, i64) = (r.get(1), r.get(2));
            let (why, fix) = vacuum_advice(&table, r.get(4), r.get(5));
            Finding::new(
                Severity::Warning,
                Category::Bloat,
                format!("{table} has {} dead rows waiting for vacuum", count(dead)),
            )
            .object(table.clone())
            .evidence(format!(
                "{} dead vs {} live rows; last vacuum: {}",
                count(dead),
                count(live),
                r.get::<_, String>(3)
            ))
            .evidence(why)
            .fix(fix)
        })
        .chain(super::locked_relations_finding(Category::Bloat, "Dead rows", &locked))
        .collect())
}

/// Why the dead rows pile up and what to do. With autovacuum switched off for the table, tuning its
/// thresholds does nothing: it has to be switched back on, or the table vacuumed by hand on a
/// schedule. Off for the TOAST table only, the heap is still autovacuumed but the TOAST rows are not.
pub fn vacuum_advice(table: &str, autovacuum_off: bool, toast_autovacuum_off: bool) -> (String, String) {
    let mut why = if autovacuum_off {
        "autovacuum is switched off for this table (autovacuum_enabled = false): only a manual VACUUM \
         removes its dead rows, and autovacuum settings have no effect"
            .to_string()
    } else {
        "autovacuum is behind or blocked (long transactions, replication slots, or throttled)".to_string()
    };
    let mut fix = format!("VACUUM (VERBOSE, ANALYZE) {table};\n");
    if autovacuum_off {
        fix += &format!(
            "ALTER TABLE {table} RESET (autovacuum_enabled);  -- let autovacuum look after it again (or keep it off and VACUUM on a schedule)"
        );
    } else {
        fix +=
            &format!("ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0.05);  -- vacuum it sooner");
    }
    if toast_autovacuum_off {
        why += "; its TOAST table has autovacuum switched off (toast.autovacuum_enabled = false)";
        fix += &format!("\nALTER TABLE {table} RESET (toast.autovacuum_enabled);");
    }
    (why, fix)
}

pub async fn cache_hit_ratio(db: &Db) -> Result<Vec<Finding>> {
    let row = db
        .client
        .query_one(
            "SELECT blks_hit::int8, blks_read::int8, \
               (SELECT coalesce(sum(idx_blks_hit), 0)::int8 FROM pg_statio_user_indexes), \
               (SELECT coalesce(sum(idx_blks_read), 0)::int8 FROM pg_statio_user_indexes) \
             FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for (what, hit, read) in [
        ("Buffer cache", row.get::<_, i64>(0), row.get::<_, i64>(1)),
        ("Index cache", row.get(2), row.get(3)),
    ] {
        if let Some((severity, ratio)) = assess_hit_ratio(hit, read) {
            let shown = percent_below(ratio, hit_ratio_threshold(severity));
            out.push(
                Finding::new(severity, Category::Cache, format!("{what} hit ratio is {shown}%"))
                    .evidence(format!("{} blocks from memory, {} from disk or the OS cache", count(hit), count(read)))
                    .evidence("an OLTP database normally serves more than 99% of its reads from shared_buffers")
                    .fix("raise shared_buffers (see the configuration section) or add memory; check for sequential scans of large tables"),
            );
        }
    }
    Ok(out)
}

/// Hit ratio below 99% is a warning and below 90% critical, once enough blocks were read to judge.
pub fn assess_hit_ratio(hit: i64, read: i64) -> Option<(Severity, f64)> {
    let total = hit + read;
    if total < 100_000 {
        return None;
    }
    let ratio = hit as f64 / total as f64;
    match ratio {
        r if r < hit_ratio_threshold(Severity::Critical) => Some((Severity::Critical, r)),
        r if r < hit_ratio_threshold(Severity::Warning) => Some((Severity::Warning, r)),
        _ => None,
    }
}

/// The hit ratio below which a finding has this severity.
fn hit_ratio_threshold(severity: Severity) -> f64 {
    match severity {
        Severity::Critical => 0.90,
        _ => 0.99,
    }
}

/// `ratio` as a percentage with as many decimals (1 to 4) as it takes to show it below
/// `threshold`: 0.98996 under 0.99 is "98.996", never the "99.0" that rounding to one decimal
/// gives, which reads as no problem at all.
pub fn percent_below(ratio: f64, threshold: f64) -> String {
    let (value, limit) = (ratio * 100.0, threshold * 100.0);
    (1..=4)
        .map(|decimals| format!("{value:.decimals$}"))
        .find(|shown| shown.parse::<f64>().is_ok_and(|v| v < limit))
        .unwrap_or_else(|| format!("{:.4}", (value * 10_000.0).floor() / 10_000.0))
}

pub async fn largest(db: &Db, settings: &HealthSettings) -> Result<Vec<Finding>> {
    let limit = settings.largest_count as i64;
    // The sizes are read from the files, which locks each relation: a locked one is left out.
    let user_relations = |kinds: &str| {
        format!(
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ({kinds}) AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname !~ '^pg_toast'"
        )
    };
    let listed = |kinds: &str| {
        format!(
            "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) {}",
            user_relations(kinds)
        )
    };
    let (tables, locked_tables) = largest_of(
        db,
        &format!(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_total_relation_size(c.oid)::int8, \
             pg_relation_size(c.oid)::int8, pg_indexes_size(c.oid)::int8, c.reltuples::int8 {} \
               AND ($1::oid[] IS NULL OR c.oid = ANY($1)) ORDER BY 2 DESC LIMIT $2",
            user_relations("'r', 'm', 'p'")
        ),
        &listed("'r', 'm', 'p'"),
        limit,
    )
    .await?;
    let (indexes, locked_indexes) = largest_of(
        db,
        &format!(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_relation_size(c.oid)::int8 {} \
               AND ($1::oid[] IS NULL OR c.oid = ANY($1)) ORDER BY 2 DESC LIMIT $2",
            user_relations("'i'")
        ),
        &listed("'i'"),
        limit,
    )
    .await?;
    let locked: Vec<String> = locked_tables.into_iter().chain(locked_indexes).collect();
    let skipped = super::locked_relations_finding(Category::Storage, "Sizes", &locked);
    Ok(largest_finding(&tables, &indexes).into_iter().chain(skipped).collect())
}

/// The `limit` largest relations by the query's second column (`sql` as for
/// `Db::rows_skipping_locked`, `$2` the limit), and the locked relations left out.
async fn largest_of(
    db: &Db,
    sql: &str,
    relations: &str,
    limit: i64,
) -> Result<(Vec<tokio_postgres::Row>, Vec<String>)> {
    let (rows, locked) = db.rows_skipping_locked(sql, relations, &[&limit]).await?;
    // Relation by relation, each query returned its one row: rank them here.
    Ok((super::top_by(rows, 1, limit), locked))
}

fn largest_finding(tables: &[tokio_postgres::Row], indexes: &[tokio_postgres::Row]) -> Option<Finding> {
    if tables.is_empty() {
        return None;
    }
    let mut f = Finding::new(
        Severity::Info,
        Category::Storage,
        format!("Largest {} tables and indexes", tables.len()),
    );
    for r in tables {
        f = f.evidence(format!(
            "table {}: {} total ({} heap, {} indexes), ~{} rows",
            r.get::<_, String>(0),
            bytes(r.get(1)),
            bytes(r.get(2)),
            bytes(r.get(3)),
            count(r.get::<_, i64>(4).max(0))
        ));
    }
    for r in indexes {
        f = f.evidence(format!("index {}: {}", r.get::<_, String>(0), bytes(r.get(1))));
    }
    Some(f)
}

pub async fn materialized_views(db: &Db) -> Result<Vec<Finding>> {
    let rows = db
        .rows(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(matviewname) FROM pg_matviews \
             WHERE NOT ispopulated ORDER BY 1",
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            Finding::new(
                Severity::Warning,
                Category::MaterializedViews,
                format!("Materialized view {name} was never refreshed"),
            )
            .object(name.clone())
            .evidence("created WITH NO DATA and never populated: every query on it fails")
            .fix(format!("REFRESH MATERIALIZED VIEW {name};  -- then schedule it (pgpilot jobs)"))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bloat_thresholds() {
        let b = |actual, wasted| BloatEstimate { actual, wasted, source: "" };
        assert_eq!(b(100 << 20, 20 << 20).severity(8 << 20), None);
        assert_eq!(b(100 << 20, 40 << 20).severity(8 << 20), Some(Severity::Warning));
        assert_eq!(b(10 << 20, 5 << 20).severity(8 << 20), None);
        assert_eq!(b(4 << 30, 3 << 30).severity(8 << 20), Some(Severity::Critical));
    }

    #[test]
    fn deleted_and_empty_btree_pages_are_waste_beside_sparse_leaves() {
        let pages = |leaf, empty, deleted, leaf_density| BtreePages { leaf, empty, deleted, leaf_density };
        assert_eq!(pages(1640, 0, 1645, 90.0).wasted_pages(), 1645);
        assert_eq!(pages(1000, 10, 0, 45.0).wasted_pages(), 510);
        assert_eq!(pages(1000, 0, 0, 95.0).wasted_pages(), 0);
        assert_eq!(pages(0, 0, 3, f64::NAN).wasted_pages(), 3);
    }

    #[test]
    fn hit_ratio_thresholds() {
        assert_eq!(assess_hit_ratio(99, 1), None);
        assert_eq!(assess_hit_ratio(995_000, 5_000), None);
        assert_eq!(assess_hit_ratio(980_000, 20_000), Some((Severity::Warning, 0.98)));
        assert_eq!(assess_hit_ratio(800_000, 200_000), Some((Severity::Critical, 0.8)));
    }

    #[test]
    fn a_hit_ratio_under_the_threshold_is_shown_under_it() {
        // 98.96% is a warning under 99%: never shown as "99.0%".
        let (severity, ratio) = assess_hit_ratio(989_600, 10_400).unwrap();
        assert_eq!(severity, Severity::Warning);
        assert_eq!(percent_below(ratio, hit_ratio_threshold(severity)), "98.96");
        assert_eq!(percent_below(0.98999, 0.99), "98.999");
        assert_eq!(percent_below(0.9899999, 0.99), "98.9999");
        assert_eq!(percent_below(0.89996, 0.90), "89.996");
        assert_eq!(percent_below(0.788, 0.90), "78.8");
    }
}
