//! Foreign keys without an index on their referencing columns. Deleting a parent row, or changing
//! its key, makes PostgreSQL look the referencing rows up in the child table (`WHERE fkcol = $1`,
//! and row by row again for ON DELETE CASCADE / SET NULL): without an index each lookup is a
//! sequential scan of the whole child.

use anyhow::Result;

use super::indexes::FK_INDEXES;
use crate::db::Db;
use crate::options::HealthSettings;
use crate::report::{Category, Finding, IndexSuggestion, Severity};

/// A foreign key whose referencing columns lead no whole-table index that its lookups can use.
#[derive(Debug, Clone)]
struct UnindexedForeignKey {
    /// Quoted constraint name.
    name: String,
    /// Schema-qualified, quoted.
    child: String,
    parent: String,
    /// The referencing columns, quoted, in the key's order.
    columns: Vec<String>,
    /// pg_constraint.confdeltype: a no action, r restrict, c cascade, n set null, d set default.
    on_delete: String,
    partitioned: bool,
    /// Estimated rows of the child (all its leaf partitions).
    child_rows: f64,
    /// Partial indexes led by the key's columns: `name WHERE predicate`.
    partial_indexes: Vec<(String, String)>,
}

/// Foreign keys (each once: not the clones PostgreSQL keeps per partition) with no whole-table
/// index in `fk_index`, their child's estimated rows (statistics, or the live-row counter on a
/// table never analysed; a partitioned child counts its leaf partitions only: ANALYZE gives the
/// parent the sum of its partitions' rows, which it does not hold, and pg_partition_tree gives no
/// row for a plain table), and the partial indexes their columns lead.
const UNINDEXED: &str = "SELECT * FROM (SELECT quote_ident(c.conname), \
       quote_ident(cn.nspname) || '.' || quote_ident(ct.relname), \
       quote_ident(pn.nspname) || '.' || quote_ident(pt.relname), \
       ARRAY(SELECT quote_ident(a.attname) FROM unnest(c.conkey) WITH ORDINALITY k(attnum, n) \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.n), \
       c.confdeltype::text, ct.relkind = 'p', \
       (SELECT coalesce(sum(CASE WHEN r.reltuples > 0 THEN r.reltuples::float8 \
                                 ELSE pg_stat_get_live_tuples(r.oid)::float8 END), 0) \
          FROM (SELECT c.conrelid AS relid WHERE ct.relkind <> 'p' \
                UNION SELECT p.relid FROM pg_partition_tree(c.conrelid) p WHERE p.isleaf) leaf \
          JOIN pg_class r ON r.oid = leaf.relid) AS child_rows, \
       ARRAY(SELECT f.index_name FROM fk_index f WHERE f.conoid = c.oid ORDER BY f.rank), \
       ARRAY(SELECT f.predicate FROM fk_index f WHERE f.conoid = c.oid ORDER BY f.rank) \
     FROM pg_constraint c \
     JOIN pg_class ct ON ct.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = ct.relnamespace \
     JOIN pg_class pt ON pt.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pt.relnamespace \
     WHERE c.contype = 'f' AND c.conparentid = 0 AND ($1::oid[] IS NULL OR c.conrelid = ANY($1)) \
       AND NOT EXISTS (SELECT 1 FROM fk_index f WHERE f.conoid = c.oid AND f.predicate = '') \
     OFFSET 0) u WHERE child_rows >= $2 ORDER BY child_rows DESC, 1";

/// The tables with foreign keys, for checking them one by one when one is locked.
const CHILD_TABLES: &str = "SELECT DISTINCT c.conrelid, \
       quote_ident(n.nspname) || '.' || quote_ident(t.relname) FROM pg_constraint c \
     JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
     WHERE c.contype = 'f' ORDER BY 2";

/// `suggested`: the index advisor's suggestions; one that starts with a key's columns serves the
/// key too, and is the fix named (a DBA shown both `(account_id)` for the key and
/// `(account_id, booked_at)` for the workload would build two where one does).
pub async fn unindexed(
    db: &Db,
    settings: &HealthSettings,
    suggested: &[IndexSuggestion],
) -> Result<Vec<Finding>> {
    // Reading an index's predicate (pg_get_expr) locks its table: a locked one is left out.
    let sql = format!(
        "WITH fk_index AS ({FK_INDEXES} AND ($1::oid[] IS NULL OR c.conrelid = ANY($1))) {UNINDEXED}"
    );
    let min_rows = settings.unindexed_foreign_key_min_rows as f64;
    let (rows, locked) = db.rows_skipping_locked(&sql, CHILD_TABLES, &[&min_rows]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let index_names: Vec<String> = r.get(7);
            let predicates: Vec<String> = r.get(8);
            UnindexedForeignKey {
                name: r.get(0),
                child: r.get(1),
                parent: r.get(2),
                columns: r.get(3),
                on_delete: r.get(4),
                partitioned: r.get(5),
                child_rows: r.get(6),
                partial_indexes: index_names.into_iter().zip(predicates).collect(),
            }
        })
        .filter(|fk| !fk.partial_indexes.iter().any(|(_, p)| only_excludes_nulls(p, &fk.columns)))
        .map(|fk| finding(&fk, covering_suggestion(&fk, suggested)))
        .chain(super::locked_relations_finding(Category::Indexes, "Foreign key indexes", &locked))
        .collect())
}

/// True when an index predicate (as pg_get_expr writes it) only leaves out rows whose key columns
/// are NULL: `(customer_id IS NOT NULL)`. The key's lookups (`col = $1`) imply it, so the planner
/// uses such an index for them; rows with a NULL key never reference a parent anyway.
fn only_excludes_nulls(predicate: &str, columns: &[String]) -> bool {
    let bare = predicate.replace(['(', ')'], "");
    bare.split(" AND ").all(|term| {
        term.trim().strip_suffix(" IS NOT NULL").is_some_and(|col| columns.iter().any(|c| c == col.trim()))
    })
}

/// What the key's referential action makes a parent DELETE do to the child, when it writes to it.
fn on_delete_action(code: &str) -> Option<&'static str> {
    match code {
        "c" => Some("ON DELETE CASCADE"),
        "n" => Some("ON DELETE SET NULL"),
        "d" => Some("ON DELETE SET DEFAULT"),
        _ => None,
    }
}

/// The suggested btree index (without a predicate) on the key's table whose leading columns are
/// the key's.
fn covering_suggestion<'a>(
    fk: &UnindexedForeignKey,
    suggested: &'a [IndexSuggestion],
) -> Option<&'a IndexSuggestion> {
    suggested
        .iter()
        .find(|s| s.table == fk.child && leading_columns(&s.create_statement).starts_with(&fk.columns))
}

/// The plain columns a suggested btree index without a predicate starts with, as its CREATE INDEX
/// writes them (quoted where quote_ident quotes, as the key's columns are); none for others.
fn leading_columns(create_statement: &str) -> Vec<String> {
    const KEY: &str = " USING btree (";
    let Some(start) = create_statement.find(KEY).filter(|_| !create_statement.contains(" WHERE ")) else {
        return Vec::new();
    };
    let mut elements = Vec::new();
    let (mut depth, mut quoted, mut element) = (0, false, String::new());
    for c in create_statement[start + KEY.len()..].chars() {
        match c {
            // A doubled quote inside a name toggles twice.
            '"' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth == 0 => break,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                elements.push(std::mem::take(&mut element));
                continue;
            }
            _ => {}
        }
        element.push(c);
    }
    elements.push(element);
    elements
        .iter()
        .map(|e| e.trim())
        .take_while(|e| !e.starts_with('('))
        .map(|e| column_of(e).to_string())
        .collect()
}

/// The column of a key element (`"Name" DESC`, `col text_pattern_ops`): up to the first space
/// outside quotes.
fn column_of(element: &str) -> &str {
    let mut quoted = false;
    for (i, c) in element.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => return &element[..i],
            _ => {}
        }
    }
    element
}

fn finding(fk: &UnindexedForeignKey, covering: Option<&IndexSuggestion>) -> Finding {
    let columns = fk.columns.join(", ");
    let finding = Finding::new(
        Severity::Warning,
        Category::Indexes,
        format!("{} ({columns}) has no index for foreign key {} to {}", fk.child, fk.name, fk.parent),
    )
    .object(fk.child.clone())
    .evidence(format!("no valid index on {} (~{:.0} rows) starts with {columns}", fk.child, fk.child_rows))
    .evidence(format!(
        "each DELETE of a {} row, and each UPDATE of its key, looks up the referencing rows of {}: \
         without an index, a sequential scan of the whole table per parent row",
        fk.parent, fk.child
    ));
    let finding = match on_delete_action(&fk.on_delete) {
        Some(action) => finding.evidence(format!(
            "{action}: deleting parent rows also changes their children, found by those same scans"
        )),
        None => finding,
    };
    let finding = fk.partial_indexes.iter().fold(finding, |f, (index, predicate)| {
        f.evidence(format!(
            "partial index {index} (WHERE {predicate}) starts with these columns, but the key's lookups \
             are not limited to its rows and cannot use it"
        ))
    });
    match covering {
        Some(index) => finding
            .evidence("the index suggested for the workload starts with these columns and serves the key too")
            .fix(format!("{};", index.create_statement)),
        None => finding.fix(fix(fk)),
    }
}

/// CREATE INDEX on the referencing columns, in the key's order. CONCURRENTLY keeps writes going,
/// except on a partitioned table, where PostgreSQL does not support it on the parent.
fn fix(fk: &UnindexedForeignKey) -> String {
    let columns = fk.columns.join(", ");
    if fk.partitioned {
        return format!(
            "-- partitioned table: CREATE INDEX CONCURRENTLY is not supported on the parent; to avoid \
             blocking writes, CREATE INDEX ... ON ONLY the parent, create the index CONCURRENTLY on each \
             partition, then ALTER INDEX ... ATTACH PARTITION\nCREATE INDEX ON {} ({columns});",
            fk.child
        );
    }
    format!("CREATE INDEX CONCURRENTLY ON {} ({columns});", fk.child)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_suggested_btree_index_s_leading_columns_are_read_from_its_statement() {
        let read = |sql: &str| leading_columns(sql);
        assert_eq!(
            read("CREATE INDEX CONCURRENTLY ON public.t USING btree (account_id, booked_at DESC)"),
            cols(&["account_id", "booked_at"])
        );
        assert_eq!(
            read("CREATE INDEX i ON s.t USING btree (\"Odd, name\" text_pattern_ops, (lower(x)), y)"),
            cols(&["\"Odd, name\""])
        );
        assert_eq!(read("CREATE INDEX i ON t USING btree (a) INCLUDE (b)"), cols(&["a"]));
        assert!(read("CREATE INDEX i ON t USING btree (a) WHERE b").is_empty());
        assert!(read("CREATE INDEX i ON t USING gin (a jsonb_path_ops)").is_empty());
    }

    #[test]
    fn a_predicate_that_only_leaves_out_null_keys_is_recognised() {
        assert!(only_excludes_nulls("(customer_id IS NOT NULL)", &cols(&["customer_id"])));
        assert!(only_excludes_nulls("((a IS NOT NULL) AND (\"B\" IS NOT NULL))", &cols(&["a", "\"B\""])));
        assert!(!only_excludes_nulls("open", &cols(&["customer_id"])));
        assert!(!only_excludes_nulls("(other IS NOT NULL)", &cols(&["customer_id"])));
        assert!(!only_excludes_nulls("((customer_id IS NOT NULL) AND open)", &cols(&["customer_id"])));
    }

    #[test]
    fn the_fix_is_schema_qualified_and_concurrent_where_it_can_be() {
        let fk = UnindexedForeignKey {
            name: "orders_customer_fkey".into(),
            child: "public.orders".into(),
            parent: "public.customers".into(),
            columns: cols(&["\"Customer Id\"", "region"]),
            on_delete: "a".into(),
            partitioned: false,
            child_rows: 50_000.0,
            partial_indexes: vec![],
        };
        assert_eq!(fix(&fk), "CREATE INDEX CONCURRENTLY ON public.orders (\"Customer Id\", region);");
        let partitioned = UnindexedForeignKey { partitioned: true, ..fk };
        assert!(fix(&partitioned).ends_with("\nCREATE INDEX ON public.orders (\"Customer Id\", region);"));
    }
}
