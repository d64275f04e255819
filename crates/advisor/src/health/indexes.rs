//! Index checks: unused, duplicate or prefix-covered, invalid.

use anyhow::Result;

use super::standby;
use super::usage::IndexScans;
use crate::db::{qualified_relation_sql, quote_ident, Db};
use crate::options::HealthSettings;
use crate::report::{Category, Finding, Severity};
use crate::units::{bytes, duration};

/// An index no application query scanned since statistics began (see `usage` for how the
/// advisor's own planning is left out).
pub(super) struct UnusedIndex {
    pub(super) oid: u32,
    quoted: String,
    table: String,
    /// The index is a partitioned table's (pg_class.relkind 'I'): its partitions' indexes hold
    /// the rows and count the scans, and DROP INDEX CONCURRENTLY cannot drop it.
    partitioned: bool,
    /// The indexes that hold its rows: itself, or a partitioned index's leaf partitions' indexes.
    leaves: Vec<u32>,
    size: i64,
    definition: String,
    /// Foreign keys on the table whose referencing columns lead this index, and that need it: no
    /// better-ranked index serves them in its place.
    foreign_keys: Vec<String>,
    /// Foreign keys whose columns lead this index too, but that another index serves
    /// (`fk is served by index`).
    served_elsewhere: Vec<String>,
}

/// Each foreign key with the valid indexes its referencing columns lead (in any order), ranked as
/// the duplicate check ranks equivalent indexes (`IndexKey::keep_rank`, then the name), after
/// whole-table before partial, btree before other methods and more key columns before fewer: so
/// a prefix of a longer index, or the second of two exact duplicates, ranks below the index the
/// duplicate check keeps. An index serves a key's lookups (`fkcol = $1`, as the RI triggers write
/// them) only when each of the key's columns is indexed with the column's own collation and an
/// operator class whose family holds the key's equality operator: one in another collation (`COLLATE
/// "C"`) or opclass orders the column differently and the planner cannot use it for them.
pub(super) const FK_INDEXES: &str = "SELECT c.oid AS conoid, quote_ident(c.conname) AS conname, o.indexrelid, \
       quote_ident(n.nspname) || '.' || quote_ident(oc.relname) AS index_name, am.amname, \
       coalesce(pg_get_expr(o.indpred, o.indrelid), '') AS predicate, \
       row_number() OVER (PARTITION BY c.oid ORDER BY o.indpred IS NULL DESC, am.amname = 'btree' DESC, \
         o.indisprimary DESC, \
         EXISTS (SELECT 1 FROM pg_constraint p WHERE p.conindid = o.indexrelid \
                   AND (p.contype = 'f' OR (p.contype IN ('p', 'u', 'x') AND p.conrelid = o.indrelid))) DESC, \
         o.indisunique DESC, o.indnkeyatts DESC, oc.relname) AS rank \
     FROM pg_constraint c JOIN pg_index o ON o.indrelid = c.conrelid \
     JOIN pg_class oc ON oc.oid = o.indexrelid JOIN pg_namespace n ON n.oid = oc.relnamespace \
     JOIN pg_am am ON am.oid = oc.relam \
     WHERE c.contype = 'f' AND o.indisvalid AND cardinality(c.conkey) <= o.indnkeyatts \
       AND c.conkey <@ ARRAY(SELECT o.indkey[k] FROM generate_series(0, cardinality(c.conkey) - 1) k) \
       AND NOT EXISTS (SELECT 1 FROM generate_series(0, cardinality(c.conkey) - 1) k \
         JOIN unnest(c.conkey, c.conpfeqop) AS fk(attnum, eqop) ON fk.attnum = o.indkey[k] \
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = fk.attnum \
         JOIN pg_operator op ON op.oid = fk.eqop \
         WHERE o.indcollation[k] <> a.attcollation \
            OR NOT EXISTS (SELECT 1 FROM pg_opclass opc JOIN pg_amop ao ON ao.amopfamily = opc.opcfamily \
                           WHERE opc.oid = o.indclass[k] AND ao.amopopr IN (op.oid, op.oprcom)))";

/// For each (foreign key, index) of `fk_index`, the best-ranked other index that does its work for
/// the key: one over the whole table (or over the same rows), of the same method or btree. The
/// best-ranked index of each such group has none: it is the one the key needs.
const SERVED_ELSEWHERE: &str = "SELECT DISTINCT ON (mine.conoid, mine.indexrelid) \
       mine.conoid, mine.indexrelid, mine.conname, f.index_name AS served_by \
     FROM fk_index mine JOIN fk_index f ON f.conoid = mine.conoid AND f.rank < mine.rank \
       AND (f.predicate = '' OR f.predicate = mine.predicate) AND (f.amname = 'btree' OR f.amname = mine.amname) \
     ORDER BY mine.conoid, mine.indexrelid, f.rank";

/// The index `i` (pg_index) is not attached to a partitioned index. One that is (a partition's share
/// of an index created on the partitioned table) cannot be dropped on its own: PostgreSQL refuses
/// ("cannot drop index pe_1_v_idx because index pe_v_idx requires it"), so the checks judge the
/// partitioned index it belongs to instead.
const NOT_ATTACHED_TO_A_PARENT_INDEX: &str =
    "NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)";

/// SQL: the oids of the indexes that hold the rows of index `oid` (an SQL expression): itself when
/// it is a plain index, its leaf partitions' indexes when it is a partitioned one. pg_inherits
/// links partition indexes to their parent at every level.
fn leaf_indexes_sql(oid: &str) -> String {
    format!(
        "ARRAY(WITH RECURSIVE tree(relid) AS (SELECT {oid} UNION ALL \
           SELECT h.inhrelid FROM pg_inherits h JOIN tree ON h.inhparent = tree.relid) \
         SELECT t.relid FROM tree t JOIN pg_class lc ON lc.oid = t.relid WHERE lc.relkind = 'i')"
    )
}

/// SQL: the size on disk of the index `oid` and, when it is partitioned, of its partitions' indexes
/// (a partitioned index has no storage of its own).
fn index_tree_size_sql(oid: &str) -> String {
    format!("(SELECT coalesce(sum(pg_relation_size(l)), 0) FROM unnest({}) l)::int8", leaf_indexes_sql(oid))
}

/// The indexes no application query scanned, and the relations left out because they were locked.
/// The duplicate check decides which of them get a finding of their own (`index_drops`).
pub(super) async fn unused(
    db: &Db,
    settings: &HealthSettings,
    scans: &IndexScans,
) -> Result<(Vec<UnusedIndex>, Vec<String>)> {
    // An index a foreign key needs is kept: deleting or updating a referenced row looks the
    // referencing rows up through it. Those scans do not show until the parent changes, and
    // without the index each such change scans the whole child table. One index per key is
    // enough: the others led by its columns are not kept for it (the duplicate check drops them).
    // Reading a size or a definition (pg_relation_size, pg_get_indexdef, pg_get_expr) locks the
    // table: a locked one is left out. The fence (OFFSET 0) keeps the sizes from being read before
    // the catalog narrowed the indexes to the tables asked for.
    let candidates = format!(
        "{USER_INDEXES} AND ic.relkind IN ('i', 'I') AND NOT i.indisunique AND NOT i.indisprimary \
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) AND {NOT_ATTACHED_TO_A_PARENT_INDEX}"
    );
    let table = qualified_relation_sql("i.indrelid");
    let leaves = leaf_indexes_sql("i.indexrelid");
    let size = index_tree_size_sql("i.indexrelid");
    let sql = format!(
        "WITH fk_index AS ({FK_INDEXES} AND ($1::oid[] IS NULL OR c.conrelid = ANY($1))), \
         served AS ({SERVED_ELSEWHERE}) \
         SELECT * FROM (SELECT i.indexrelid, quote_ident(n.nspname) || '.' || quote_ident(ic.relname), \
         {table}, {size} AS size, pg_get_indexdef(i.indexrelid), ic.relkind = 'I', {leaves}, \
         ARRAY(SELECT m.conname FROM fk_index m WHERE m.indexrelid = i.indexrelid AND NOT EXISTS \
                 (SELECT 1 FROM served e WHERE e.conoid = m.conoid AND e.indexrelid = m.indexrelid) ORDER BY 1), \
         ARRAY(SELECT e.conname || ' is served by ' || e.served_by FROM served e \
               WHERE e.indexrelid = i.indexrelid ORDER BY 1) \
         FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace \
         WHERE {candidates} AND ($1::oid[] IS NULL OR i.indrelid = ANY($1)) OFFSET 0) u \
         WHERE size >= $2"
    );
    let tables = format!(
        "SELECT DISTINCT i.indrelid, {table} FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = ic.relnamespace WHERE {candidates} ORDER BY 2"
    );
    let (rows, locked) = db.rows_skipping_locked(&sql, &tables, &[&settings.unused_index_min_bytes]).await?;
    // Largest first, also when gathered table by table.
    let rows = super::top_by(rows, 3, i64::MAX);
    let unused = rows
        .iter()
        .map(|r| UnusedIndex {
            oid: r.get(0),
            quoted: r.get(1),
            table: r.get(2),
            size: r.get(3),
            definition: r.get(4),
            partitioned: r.get(5),
            leaves: r.get(6),
            foreign_keys: r.get(7),
            served_elsewhere: r.get(8),
        })
        .filter(|index| scans.application_scans_of(&index.leaves) == 0)
        .collect();
    Ok((unused, locked))
}

impl UnusedIndex {
    pub(super) fn leaves(&self) -> &[u32] {
        &self.leaves
    }

    /// Its finding offers a DROP: no foreign key needs it and the statistics are old enough.
    pub(super) fn offers_drop(&self, scans: &IndexScans, settings: &HealthSettings) -> bool {
        keep_unused(self, scans, settings).is_none()
    }

    /// The statement that drops it. A partitioned index cannot be dropped CONCURRENTLY (PostgreSQL
    /// refuses), so its DROP locks the table and every partition until it commits: said first.
    fn drop_statement(&self) -> String {
        if self.partitioned {
            drop_partitioned_index(&self.quoted, &self.table)
        } else {
            format!("DROP INDEX CONCURRENTLY {};", self.quoted)
        }
    }
}

/// DROP INDEX of a partitioned index, with what it locks: DROP INDEX CONCURRENTLY refuses a
/// partitioned index ("cannot drop partitioned index ... concurrently"), and its partitions' indexes
/// cannot be dropped on their own while attached to it.
fn drop_partitioned_index(index: &str, table: &str) -> String {
    format!(
        "-- a partitioned index cannot be dropped CONCURRENTLY: DROP INDEX takes an ACCESS EXCLUSIVE lock on \
         {table} and all its partitions until it commits (quick, but it waits for and blocks every query on \
         them): run it at a quiet time, with a short lock_timeout (SET lock_timeout = '5s')\nDROP INDEX {index};"
    )
}

pub(super) fn unused_finding(
    index: &UnusedIndex,
    scans: &IndexScans,
    settings: &HealthSettings,
    standby: bool,
) -> Finding {
    let keep = keep_unused(index, scans, settings);
    // A standby's counters say nothing about the primary's queries: no warning on them alone.
    let severity = if keep.is_some() || standby { Severity::Info } else { Severity::Warning };
    // Named as the fix names it: quoted where SQL needs it (`public."i<b>1"`).
    let finding = Finding::new(severity, Category::Indexes, format!("Unused index {}", index.quoted))
        .object(index.quoted.clone())
        .evidence(format!("0 scans {}; {} on disk", scans.counted_where(), bytes(index.size)))
        .evidence(format!("on {}: {}", index.table, index.definition));
    let finding = if index.partitioned {
        finding.evidence(format!(
            "a partitioned index: its {} partition index(es) hold the rows, and none was scanned",
            index.leaves.len()
        ))
    } else {
        finding
    };
    let finding = finding.evidence("every insert and non-HOT update of the table still maintains it");
    let finding = index.served_elsewhere.iter().fold(finding, |f, served| {
        f.evidence(format!("not needed for its foreign key: {served} (its columns lead that index)"))
    });
    let finding = if standby { finding.evidence(standby::PER_SERVER_USAGE) } else { finding };
    match (keep, standby) {
        (Some(why), _) => finding.evidence(why),
        (None, false) => finding.fix(format!("{}{}", replicas_caveat(scans), index.drop_statement())),
        (None, true) => finding.fix(format!(
            "{}-- only if idx_scan is 0 there and on every other replica too:\n{}",
            standby::ON_THE_PRIMARY,
            index.drop_statement()
        )),
    }
}

/// What to check before the DROP: the replicas' scans, unless the advisor counted every one it knows.
/// With none known (a plain URL), the replicas are unknown too.
fn replicas_caveat(scans: &IndexScans) -> String {
    match (scans.replicas.is_empty(), scans.unreachable.is_empty()) {
        (true, true) => "-- check replicas too (their scans are counted there), then:\n".to_string(),
        (_, false) => format!(
            "-- check replicas too (their scans are counted there): {} could not be read, then:\n",
            scans.unreachable.len()
        ),
        (false, true) => String::new(),
    }
}

/// Why no DROP is offered for an unused index, if there is a reason.
fn keep_unused(index: &UnusedIndex, scans: &IndexScans, settings: &HealthSettings) -> Option<String> {
    if !index.foreign_keys.is_empty() {
        return Some(format!(
            "keep it: it supports foreign key {} (deleting or updating a referenced row finds the \
             referencing rows through it; without it each such change scans the whole table)",
            index.foreign_keys.join(", ")
        ));
    }
    let days = settings.unused_index_min_stats_days;
    (scans.age_secs < days as f64 * 86_400.0).then(|| {
        format!(
            "statistics cover only {} (less than {days} days): observe longer before dropping it \
             (weekly and monthly jobs count too)",
            duration(scans.age_secs)
        )
    })
}

/// One index as the duplicate check sees it.
#[derive(Debug, Clone)]
pub struct IndexKey {
    pub oid: u32,
    pub name: String,
    pub quoted: String,
    pub table: String,
    pub method: String,
    /// Key columns with operator class, options and collation, as comparable strings: indexes that
    /// differ in collation order and compare differently (a case-insensitive ICU collation).
    pub keys: Vec<String>,
    pub include: Vec<String>,
    pub expressions: String,
    pub predicate: String,
    pub unique: bool,
    /// UNIQUE NULLS NOT DISTINCT (15+): a different constraint from plain UNIQUE.
    pub nulls_not_distinct: bool,
    /// A deferrable unique constraint's index checks at commit: not the same constraint either.
    pub immediate: bool,
    pub size: i64,
    pub definition: String,
    pub pins: Pins,
    /// A partitioned table's index (pg_class.relkind 'I'): DROP INDEX CONCURRENTLY refuses it.
    pub partitioned: bool,
    /// Attached to a partitioned index (a partition's share of it): never dropped on its own.
    pub attached: bool,
    /// The application's scans of it (of a partitioned index, its partitions'): of two equivalent
    /// indexes the one the planner uses is kept.
    pub scans: i64,
}

/// What holds an index in place: PostgreSQL refuses DROP INDEX while any of these need it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pins {
    pub primary: bool,
    /// The PRIMARY KEY, UNIQUE or EXCLUDE constraint the index implements (quoted name).
    pub constraint: Option<String>,
    /// Foreign keys whose referenced key this index provides (`name on table`).
    pub referenced_by: Vec<String>,
}

impl Pins {
    pub(super) fn pinned(&self) -> bool {
        self.constraint.is_some() || !self.referenced_by.is_empty()
    }
}

impl IndexKey {
    /// Which of two equivalent indexes to keep: the primary key, then one a constraint or foreign
    /// key needs, then a unique one (it enforces something), then one attached to a partitioned
    /// index (it cannot be dropped on its own), then the one scanned most (dropping the copy the
    /// planner uses would leave the other unused check's DROP as the only index), then the first
    /// by name. The unused check ranks the indexes serving a foreign key alike (`FK_INDEXES`) but
    /// for the scans: when they disagree, the copy it keeps for the key is unscanned, and the
    /// duplicate finding that drops it replaces its unused-index finding (`index_drops`).
    fn keep_rank(&self) -> (bool, bool, bool, bool, i64) {
        (self.pins.primary, self.pins.pinned(), self.unique, self.attached, self.scans)
    }

    /// Both indexes order and compare rows alike, over the same rows.
    fn same_shape(&self, other: &IndexKey) -> bool {
        self.table == other.table
            && self.method == other.method
            && self.expressions == other.expressions
            && self.predicate == other.predicate
    }

    /// Two unique indexes are the same constraint only when NULLs and deferral behave alike.
    fn same_constraint(&self, other: &IndexKey) -> bool {
        !(self.unique && other.unique)
            || (self.nulls_not_distinct == other.nulls_not_distinct && self.immediate == other.immediate)
    }
}

/// `redundant` is made unnecessary by `keeper`: an exact duplicate or a leading prefix of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Redundancy {
    pub redundant: usize,
    pub keeper: usize,
    pub exact: bool,
}

/// Finds duplicates and prefix-covered btree indexes among one table's indexes. A unique index is
/// never the redundant one of a pair with a non-unique index: it enforces what the other does not.
/// Nor is a partition's index attached to a partitioned index: two such duplicates are the
/// partitioned table's, reported once there.
pub fn redundancies(indexes: &[IndexKey]) -> Vec<Redundancy> {
    let mut out = Vec::new();
    for (a, ia) in indexes.iter().enumerate() {
        for (b, ib) in indexes.iter().enumerate() {
            if a == b || ia.attached || !ia.same_shape(ib) {
                continue;
            }
            let exact = ia.keys == ib.keys && ia.include == ib.include;
            if exact {
                if !ia.same_constraint(ib) {
                    continue;
                }
                // Report each pair once, dropping the lower-ranked one.
                let drop_a = ia.keep_rank() < ib.keep_rank()
                    || (ia.keep_rank() == ib.keep_rank() && ia.name > ib.name);
                if drop_a {
                    out.push(Redundancy { redundant: a, keeper: b, exact: true });
                }
                continue;
            }
            let prefix = ia.method == "btree"
                && !ia.unique
                && !ia.pins.pinned()
                && ia.include.is_empty()
                && ia.keys.len() < ib.keys.len()
                && ib.keys.starts_with(&ia.keys);
            if prefix {
                out.push(Redundancy { redundant: a, keeper: b, exact: false });
            }
        }
    }
    out
}

/// Every valid index of the user tables, with its scans when they could be read (else 0: the
/// other rules choose), and the tables left out because they were locked.
pub(super) async fn index_keys(db: &Db, scans: Option<&IndexScans>) -> Result<(Vec<IndexKey>, Vec<String>)> {
    let nulls_not_distinct = if db.version_num >= 150000 { "i.indnullsnotdistinct" } else { "false" };
    let table = qualified_relation_sql("i.indrelid");
    let referencing_table = qualified_relation_sql("c.conrelid");
    let size = index_tree_size_sql("i.indexrelid");
    let leaves = leaf_indexes_sql("i.indexrelid");
    let sql = format!(
        "SELECT ic.relname::text, quote_ident(n.nspname) || '.' || quote_ident(ic.relname), \
         {table}, am.amname::text, \
         ARRAY(SELECT i.indkey[k]::text || '/' || i.indclass[k]::text || '/' || i.indoption[k]::text \
                      || '/' || i.indcollation[k]::text \
               FROM generate_series(0, i.indnkeyatts - 1) k), \
         ARRAY(SELECT i.indkey[k]::text FROM generate_series(i.indnkeyatts, i.indnatts - 1) k), \
         coalesce(pg_get_expr(i.indexprs, i.indrelid), ''), coalesce(pg_get_expr(i.indpred, i.indrelid), ''), \
         i.indisunique, {size}, pg_get_indexdef(i.indexrelid), \
         {nulls_not_distinct}, i.indimmediate, i.indisprimary, \
         (SELECT quote_ident(c.conname) FROM pg_constraint c WHERE c.conindid = i.indexrelid \
            AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x') LIMIT 1), \
         ARRAY(SELECT quote_ident(c.conname) || ' on ' || {referencing_table} FROM pg_constraint c \
               WHERE c.conindid = i.indexrelid AND c.contype = 'f' ORDER BY 1), \
         ic.relkind = 'I', NOT {NOT_ATTACHED_TO_A_PARENT_INDEX}, i.indexrelid, {leaves} \
         FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace \
         JOIN pg_am am ON am.oid = ic.relam \
         WHERE {USER_INDEXES} AND ($1::oid[] IS NULL OR i.indrelid = ANY($1)) \
         ORDER BY 3, 1"
    );
    // Reading a definition (pg_get_expr, pg_get_indexdef) or a size locks the table.
    let tables = format!(
        "SELECT DISTINCT i.indrelid, quote_ident(n.nspname) || '.' || quote_ident(t.relname) FROM pg_index i \
         JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace \
         JOIN pg_class t ON t.oid = i.indrelid WHERE {USER_INDEXES} ORDER BY 2"
    );
    let (rows, locked) = db.rows_skipping_locked(&sql, &tables, &[]).await?;
    let indexes: Vec<IndexKey> = rows
        .iter()
        .map(|r| IndexKey {
            name: r.get(0),
            quoted: r.get(1),
            table: r.get(2),
            method: r.get(3),
            keys: r.get(4),
            include: r.get(5),
            expressions: r.get(6),
            predicate: r.get(7),
            unique: r.get(8),
            size: r.get(9),
            definition: r.get(10),
            nulls_not_distinct: r.get(11),
            immediate: r.get(12),
            pins: Pins { primary: r.get(13), constraint: r.get(14), referenced_by: r.get(15) },
            partitioned: r.get(16),
            attached: r.get(17),
            oid: r.get(18),
            scans: scans.map_or(0, |s| s.application_scans_of(&r.get::<_, Vec<u32>>(19))),
        })
        .collect();
    Ok((indexes, locked))
}

/// One finding per index to drop, however many indexes cover it: each fix drops it once, so the
/// fixes run in order without "index does not exist". An exact duplicate is named before an
/// index it is a prefix of, and a keeper that stays before one that is dropped itself; the other
/// keepers come back for the evidence.
pub(super) fn one_per_index(
    found: &[Redundancy],
    stays: impl Fn(usize) -> bool,
) -> Vec<(&Redundancy, Vec<usize>)> {
    let mut ordered: Vec<&Redundancy> = found.iter().collect();
    ordered.sort_by_key(|r| (!r.exact, !stays(r.keeper)));
    let mut out: Vec<(&Redundancy, Vec<usize>)> = Vec::new();
    for r in ordered {
        match out.iter_mut().find(|(first, _)| first.redundant == r.redundant) {
            Some((_, others)) => others.push(r.keeper),
            None => out.push((r, Vec::new())),
        }
    }
    out.sort_by_key(|(r, _)| r.redundant);
    out
}

/// The valid indexes of user tables (`i`, its class `ic`, its namespace `n`).
const USER_INDEXES: &str =
    "i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'";

pub(super) fn redundancy_finding(drop: &IndexKey, keep: &IndexKey, exact: bool) -> Finding {
    // Names quoted where SQL needs it, as the fix writes them (`"i<b>2"`, not `i<b>2`).
    let (dropped, kept) = (quote_ident(&drop.name), quote_ident(&keep.name));
    let title = if exact {
        format!("Duplicate index {dropped} (same as {kept})")
    } else {
        format!("Index {dropped} is a prefix of {kept}")
    };
    let finding = Finding::new(Severity::Warning, Category::Indexes, title)
        .object(drop.quoted.clone())
        .evidence(format!("{} ({})", drop.definition, bytes(drop.size)))
        .evidence(format!("{} ({})", keep.definition, bytes(keep.size)))
        .evidence(if exact {
            "both indexes answer exactly the same queries; writes maintain both".to_string()
        } else {
            "queries on the leading columns can use the longer index".to_string()
        });
    match pinned_fix(drop, keep) {
        Some((why, fix)) => finding.evidence(why).fix(fix),
        None if drop.partitioned => finding.fix(drop_partitioned_index(&drop.quoted, &drop.table)),
        None => finding.fix(format!("DROP INDEX CONCURRENTLY {};", drop.quoted)),
    }
}

/// When the index to drop is itself held by a constraint (so is the one kept: it ranks first),
/// PostgreSQL refuses DROP INDEX: the constraint has to go instead, which is the user's call.
fn pinned_fix(drop: &IndexKey, keep: &IndexKey) -> Option<(String, String)> {
    if !drop.pins.pinned() {
        return None;
    }
    let keeper =
        keep.pins.constraint.as_deref().map_or_else(|| keep.name.clone(), |c| format!("constraint {c}"));
    let why = format!("each index is needed by a constraint or foreign key, so PostgreSQL refuses DROP INDEX on either; {keeper} is kept");
    let fix = match (&drop.pins.constraint, drop.pins.referenced_by.as_slice()) {
        (Some(c), []) => format!(
            "-- drop the redundant constraint instead (not run for you: check that nothing relies on its name):\n\
             -- ALTER TABLE {} DROP CONSTRAINT {c};",
            drop.table
        ),
        (_, fks) => format!(
            "-- no DROP offered: foreign key(s) {} reference {}; recreate them against {} first if you want one index",
            fks.join(", "),
            drop.name,
            keep.name
        ),
    };
    Some((why, fix))
}

pub async fn invalid(db: &Db) -> Result<Vec<Finding>> {
    // NULLS NOT DISTINCT (15+) makes rows with NULL keys duplicates of each other too.
    let nulls_not_distinct = if db.version_num >= 150000 { "i.indnullsnotdistinct" } else { "false" };
    let table = qualified_relation_sql("i.indrelid");
    let sql = format!(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(ic.relname), pg_get_indexdef(i.indexrelid), \
         pg_relation_size(i.indexrelid)::int8, i.indisunique, {table}, \
         ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k), \
         pg_get_expr(i.indpred, i.indrelid, true), {nulls_not_distinct}, i.indisready \
         FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace \
         WHERE NOT i.indisvalid AND ($1::oid[] IS NULL OR i.indrelid = ANY($1))"
    );
    // Reading a definition or a size locks the table: a locked one is left out.
    let tables = "SELECT DISTINCT i.indrelid, quote_ident(n.nspname) || '.' || quote_ident(t.relname) FROM pg_index i \
                  JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
                  WHERE NOT i.indisvalid ORDER BY 2";
    let (rows, locked) = db.rows_skipping_locked(&sql, tables, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let index = InvalidIndex {
                name: r.get(0),
                definition: r.get(1),
                unique: r.get(3),
                table: r.get(4),
                keys: r.get(5),
                predicate: r.get(6),
                nulls_not_distinct: r.get(7),
                ready: r.get(8),
            };
            Finding::new(Severity::Warning, Category::Indexes, format!("Invalid index {}", index.name))
                .object(index.name.clone())
                .evidence(format!("{} ({})", index.definition, bytes(r.get(2))))
                .evidence(index.state())
                .fix(index.fix())
        })
        .chain(super::locked_relations_finding(Category::Indexes, "Invalid indexes", &locked))
        .collect())
}

/// An index with pg_index.indisvalid = false.
#[derive(Debug, Clone)]
pub struct InvalidIndex {
    /// Schema-qualified, quoted.
    pub name: String,
    /// pg_get_indexdef: `CREATE [UNIQUE] INDEX name ON table USING ...`.
    pub definition: String,
    pub unique: bool,
    pub table: String,
    /// Each key column or expression, as SQL.
    pub keys: Vec<String>,
    pub predicate: Option<String>,
    pub nulls_not_distinct: bool,
    /// pg_index.indisready: writes maintain it (the build got past its first phase).
    pub ready: bool,
}

impl InvalidIndex {
    /// What the invalid index still costs: a build that failed before it was marked ready (a unique
    /// build failing on duplicates, say) costs writes nothing.
    pub fn state(&self) -> &'static str {
        if self.ready {
            "left by a failed CREATE INDEX CONCURRENTLY or REINDEX: queries ignore it, writes still maintain it"
        } else {
            "left by a CREATE INDEX CONCURRENTLY or REINDEX that failed while building it (or an interrupted \
             DROP INDEX CONCURRENTLY): queries ignore it and writes do not maintain it, but it holds its name and space"
        }
    }

    /// A unique index usually failed on duplicate keys: REINDEX would fail on them again (and leave
    /// another invalid `_ccnew` index), so the duplicates are found and resolved first, then the
    /// index is dropped and built again. Any other invalid index is simply rebuilt.
    pub fn fix(&self) -> String {
        if !self.unique {
            return format!(
                "REINDEX INDEX CONCURRENTLY {};  -- or DROP INDEX CONCURRENTLY {};",
                self.name, self.name
            );
        }
        format!(
            "-- 1. find the duplicate keys and resolve them (delete or change the extra rows):\n{}\n\
             -- 2. then drop the invalid index and build it again:\n\
             DROP INDEX CONCURRENTLY {};\n{};",
            self.duplicates_query(),
            self.name,
            self.definition.replacen("CREATE UNIQUE INDEX ", "CREATE UNIQUE INDEX CONCURRENTLY ", 1)
        )
    }

    /// The key values that occur more than once among the rows the index covers. Rows with a NULL
    /// key never conflict unless the index says NULLS NOT DISTINCT.
    fn duplicates_query(&self) -> String {
        let keys = self.keys.join(", ");
        let mut filters: Vec<String> = Vec::new();
        if !self.nulls_not_distinct {
            filters.extend(self.keys.iter().map(|k| format!("({k}) IS NOT NULL")));
        }
        if let Some(p) = &self.predicate {
            filters.push(format!("({p})"));
        }
        let filter =
            if filters.is_empty() { String::new() } else { format!(" WHERE {}", filters.join(" AND ")) };
        format!(
            "SELECT {keys}, count(*) FROM {}{filter} GROUP BY {keys} HAVING count(*) > 1 ORDER BY count(*) DESC LIMIT 100;",
            self.table
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ix(name: &str, keys: &[&str], unique: bool) -> IndexKey {
        IndexKey {
            oid: 0,
            name: name.into(),
            quoted: name.into(),
            table: "t".into(),
            method: "btree".into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            include: vec![],
            expressions: String::new(),
            predicate: String::new(),
            unique,
            nulls_not_distinct: false,
            immediate: true,
            size: 0,
            definition: String::new(),
            pins: Pins::default(),
            partitioned: false,
            attached: false,
            scans: 0,
        }
    }

    fn invalid_index(unique: bool) -> InvalidIndex {
        InvalidIndex {
            name: "public.iu_t_v".into(),
            definition: format!(
                "CREATE {}INDEX iu_t_v ON public.iu_t USING btree (v)",
                if unique { "UNIQUE " } else { "" }
            ),
            unique,
            table: "iu_t".into(),
            keys: vec!["v".into()],
            predicate: None,
            nulls_not_distinct: false,
            ready: true,
        }
    }

    #[test]
    fn an_invalid_unique_index_is_fixed_by_resolving_duplicates_first() {
        let fix = invalid_index(true).fix();
        assert!(!fix.contains("REINDEX"), "REINDEX fails again on the duplicates: {fix}");
        let steps: Vec<usize> = [
            "SELECT v, count(*) FROM iu_t WHERE (v) IS NOT NULL GROUP BY v HAVING count(*) > 1",
            "DROP INDEX CONCURRENTLY public.iu_t_v;",
            "CREATE UNIQUE INDEX CONCURRENTLY iu_t_v ON public.iu_t USING btree (v);",
        ]
        .iter()
        .map(|step| fix.find(step).unwrap_or_else(|| panic!("no `{step}` in:\n{fix}")))
        .collect();
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "duplicates, then drop, then create: {fix}");
        assert!(invalid_index(false).fix().starts_with("REINDEX INDEX CONCURRENTLY public.iu_t_v;"));
    }

    #[test]
    fn only_a_ready_invalid_index_is_maintained_by_writes() {
        assert!(invalid_index(false).state().contains("writes still maintain it"));
        let not_ready = InvalidIndex { ready: false, ..invalid_index(false) };
        assert!(!not_ready.state().contains("writes still maintain it"), "{}", not_ready.state());
    }

    #[test]
    fn an_index_covered_by_several_is_dropped_once() {
        // prod_sku_idx is the same as the constraint's index and as another unique index.
        let found = redundancies(&[
            ix("prod_sku_idx", &["2/1978/0/100"], false),
            ix("prod_sku_key", &["2/1978/0/100"], true),
            ix("prod_sku_uniq2", &["2/1978/0/100"], true),
        ]);
        let dropped: Vec<(usize, Vec<usize>)> =
            one_per_index(&found, |_| true).into_iter().map(|(r, others)| (r.redundant, others)).collect();
        assert_eq!(dropped.iter().filter(|(r, _)| *r == 0).count(), 1, "{found:?}");
        assert_eq!(dropped[0].1.len(), 1, "the other keeper is named: {dropped:?}");
    }

    #[test]
    fn exact_duplicates_keep_the_unique_one() {
        let r = redundancies(&[ix("a_idx", &["2/1978/0"], false), ix("a_key", &["2/1978/0"], true)]);
        assert_eq!(r, vec![Redundancy { redundant: 0, keeper: 1, exact: true }]);
    }

    #[test]
    fn exact_duplicates_keep_the_scanned_one_then_the_first_by_name() {
        let scanned = IndexKey { scans: 100, ..ix("t_b", &["2/1978/0"], false) };
        let r = redundancies(&[ix("t_a", &["2/1978/0"], false), scanned]);
        assert_eq!(r, vec![Redundancy { redundant: 0, keeper: 1, exact: true }]);
        let r = redundancies(&[ix("t_a", &["2/1978/0"], false), ix("t_b", &["2/1978/0"], false)]);
        assert_eq!(r, vec![Redundancy { redundant: 1, keeper: 0, exact: true }]);
        // A unique index enforces something: it is kept however little it is scanned.
        let scanned = IndexKey { scans: 100, ..ix("t_b", &["2/1978/0"], false) };
        let r = redundancies(&[ix("t_a", &["2/1978/0"], true), scanned]);
        assert_eq!(r, vec![Redundancy { redundant: 1, keeper: 0, exact: true }]);
    }

    #[test]
    fn unique_indexes_that_differ_in_nulls_or_deferral_are_not_duplicates() {
        let mut nnd = ix("b_nnd", &["2/1978/0/100"], true);
        nnd.nulls_not_distinct = true;
        assert!(redundancies(&[ix("a", &["2/1978/0/100"], true), nnd.clone()]).is_empty());
        let mut deferred = ix("b_deferred", &["2/1978/0/100"], true);
        deferred.immediate = false;
        assert!(redundancies(&[ix("a", &["2/1978/0/100"], true), deferred]).is_empty());
        // A plain index on the same key answers the same queries and enforces nothing: it goes.
        let r = redundancies(&[ix("a_plain", &["2/1978/0/100"], false), nnd]);
        assert_eq!(r, vec![Redundancy { redundant: 0, keeper: 1, exact: true }]);
    }

    #[test]
    fn a_different_collation_is_a_different_index() {
        assert!(redundancies(&[ix("a", &["2/1978/0/100"], true), ix("b_ci", &["2/1978/0/16384"], true)])
            .is_empty());
        assert!(redundancies(&[
            ix("a", &["2/1978/0/950"], false),
            ix("ab", &["2/1978/0/100", "3/1978/0/0"], false)
        ])
        .is_empty());
    }

    #[test]
    fn the_constraint_index_is_kept_and_never_dropped() {
        let mut pkey = ix("z_pkey", &["1/1978/0/0"], true);
        pkey.pins = Pins { primary: true, constraint: Some("z_pkey".into()), referenced_by: vec![] };
        let r = redundancies(&[ix("a_id", &["1/1978/0/0"], true), pkey.clone()]);
        assert_eq!(r, vec![Redundancy { redundant: 0, keeper: 1, exact: true }]);
        let mut key = ix("a_key", &["1/1978/0/0"], true);
        key.pins.constraint = Some("a_key".into());
        let r = redundancies(&[key.clone(), pkey.clone()]);
        assert_eq!(r, vec![Redundancy { redundant: 0, keeper: 1, exact: true }]);
        let (_, fix) = pinned_fix(&key, &pkey).expect("no DROP INDEX for a constraint's index");
        assert!(!fix.lines().any(|l| l.starts_with("DROP") || l.starts_with("ALTER")), "{fix}");
        assert!(fix.contains("DROP CONSTRAINT a_key"), "{fix}");
    }

    #[test]
    fn prefix_is_covered_unless_unique_or_different_order() {
        let r = redundancies(&[ix("a", &["2/1978/0"], false), ix("ab", &["2/1978/0", "3/1978/0"], false)]);
        assert_eq!(r, vec![Redundancy { redundant: 0, keeper: 1, exact: false }]);
        assert!(redundancies(&[ix("a", &["2/1978/0"], true), ix("ab", &["2/1978/0", "3/1978/0"], false)])
            .is_empty());
        assert!(redundancies(&[ix("a", &["2/1978/3"], false), ix("ab", &["2/1978/0", "3/1978/0"], false)])
            .is_empty());
    }
}
