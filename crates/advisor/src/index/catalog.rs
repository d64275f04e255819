//! What the index advisor needs to know about the tables a workload touches.

use std::collections::{BTreeSet, HashMap, HashSet};

use anyhow::Result;

use super::parse::Resolver;
use crate::db::{quote_ident, Db};

#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub type_name: String,
    /// Estimated distinct values (pg_stats.n_distinct made absolute); None without statistics.
    pub distinct: Option<f64>,
    pub avg_width: Option<i32>,
}

#[derive(Debug, Clone)]
pub struct ExistingIndex {
    pub name: String,
    pub method: String,
    /// Key columns in order; None for expression keys.
    pub columns: Vec<Option<String>>,
    pub predicate: Option<String>,
    pub valid: bool,
    /// Writes update it (indisready): an invalid index left by a failed concurrent build that
    /// never got there costs writers nothing.
    pub maintained: bool,
    /// How each key column is ordered, in key order.
    pub key_orders: Vec<KeyOrder>,
    /// Every column the index reads (key, INCLUDE, expressions, predicate): an UPDATE that sets
    /// one of them is never HOT.
    pub referenced_columns: Vec<String>,
}

/// How an index orders one key column: its operator class and collation decide which operators,
/// and so which predicates and sorts on the column, the index can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOrder {
    pub opclass: String,
    /// The type's default operator class (`text_ops`, `int4_ops`), not one such as `text_pattern_ops`.
    pub default_opclass: bool,
    /// The index compares the column byte by byte: its collation is "C" or "POSIX" (or the
    /// database's default, when that is). The default operator class then serves `LIKE 'prefix%'`
    /// too; in any other collation (libc's C.UTF-8 included) only a `*_pattern_ops` class does.
    /// False where this cannot be told: the candidate is then kept, for the planner to judge.
    pub byte_order: bool,
    /// The index orders the column in the column's own collation.
    pub column_collation: bool,
}

#[derive(Debug, Clone)]
pub struct TableInfo {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub reltuples: f64,
    pub live_rows: i64,
    /// A partitioned table: CREATE INDEX CONCURRENTLY does not work on it, only on its partitions.
    pub partitioned: bool,
    /// The advisor's role may SELECT from it: EXPLAIN of a statement reading it needs that.
    pub readable: bool,
    /// A partitioned table's leaf partitions (schema, name), where the planner looks for indexes.
    pub leaf_partitions: Vec<(String, String)>,
    pub columns: HashMap<String, ColumnInfo>,
    pub indexes: Vec<ExistingIndex>,
    pub inserts: i64,
    pub updates: i64,
    pub hot_updates: i64,
    pub deletes: i64,
}

impl TableInfo {
    /// `schema.table`, quoted where needed.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// The CREATE INDEX statement to suggest: CONCURRENTLY, except on a partitioned table where
    /// PostgreSQL does not support it.
    pub fn create_statement(
        &self,
        candidate: &super::candidates::Candidate,
        name: &str,
    ) -> (String, Option<&'static str>) {
        if self.partitioned {
            let note = "partitioned table: CREATE INDEX CONCURRENTLY is not supported on the parent; to avoid \
                        blocking writes, CREATE INDEX ... ON ONLY the parent, create the index CONCURRENTLY on \
                        each partition, then ALTER INDEX ... ATTACH PARTITION";
            (candidate.create_sql(self, false, Some(name)), Some(note))
        } else {
            (candidate.create_sql(self, true, Some(name)), None)
        }
    }

    /// Every column some index of the table reads: UPDATEs that set one are not HOT already.
    pub fn indexed_columns(&self) -> BTreeSet<&str> {
        self.indexes.iter().flat_map(|i| i.referenced_columns.iter().map(String::as_str)).collect()
    }

    /// Rows the planner believes the table has.
    pub fn rows(&self) -> f64 {
        if self.reltuples > 0.0 {
            self.reltuples
        } else {
            self.live_rows as f64
        }
    }
}

/// Tables by oid and by the names statements used for them.
#[derive(Debug, Default)]
pub struct Catalog {
    pub tables: HashMap<u32, TableInfo>,
    names: HashMap<(Option<String>, String), u32>,
    /// Schemas statements name explicitly that the advisor's role has no USAGE on: their tables
    /// cannot be looked up (PostgreSQL raises an error even for to_regclass), nor planned.
    unusable_schemas: HashSet<String>,
    /// Unqualified names the search_path did not resolve, with the schemas that hold a table of
    /// that name: the application's search_path reaches them, the advisor's does not.
    off_search_path: HashMap<String, Vec<ElsewhereSchema>>,
}

/// A schema off the advisor's search_path holding a table a statement names unqualified.
#[derive(Debug, Clone, PartialEq)]
pub struct ElsewhereSchema {
    pub schema: String,
    /// The advisor's role has USAGE on it.
    pub usable: bool,
}

impl Resolver for Catalog {
    fn table(&self, schema: Option<&str>, name: &str) -> Option<u32> {
        self.names.get(&(schema.map(str::to_string), name.to_string())).copied()
    }
    fn has_column(&self, table: u32, column: &str) -> bool {
        self.tables.get(&table).is_some_and(|t| t.columns.contains_key(column))
    }
}

/// The schemas among `names` that exist and that the session's role has no USAGE privilege on.
async fn schemas_without_usage(db: &Db, names: &[(Option<String>, String)]) -> Result<HashSet<String>> {
    let schemas: Vec<&str> = names.iter().filter_map(|(s, _)| s.as_deref()).collect();
    let rows = db
        .client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname = ANY($1) AND NOT has_schema_privilege(oid, 'USAGE')",
            &[&schemas],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// For each of `names`, the schemas holding a table of that name (pg_class names every table,
/// whatever the role's privileges on its schema).
async fn schemas_holding(db: &Db, names: &[&str]) -> Result<HashMap<String, Vec<ElsewhereSchema>>> {
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = db
        .client
        .query(
            "SELECT c.relname::text, n.nspname::text, has_schema_privilege(n.oid, 'USAGE') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = ANY($1) AND c.relkind IN ('r', 'p', 'm', 'v') \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' \
             ORDER BY 1, 2",
            &[&names],
        )
        .await?;
    let mut out: HashMap<String, Vec<ElsewhereSchema>> = HashMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push(ElsewhereSchema { schema: r.get(1), usable: r.get(2) });
    }
    Ok(out)
}

impl Catalog {
    /// The schemas of the loaded tables, each once.
    pub fn schemas(&self) -> Vec<String> {
        let mut schemas: Vec<String> = self.tables.values().map(|t| t.schema.clone()).collect();
        schemas.sort();
        schemas.dedup();
        schemas
    }

    /// The first schema among a statement's tables that the advisor's role may not use.
    pub fn unusable_schema<'a>(&self, tables: &'a [(Option<String>, String)]) -> Option<&'a str> {
        tables.iter().filter_map(|(schema, _)| schema.as_deref()).find(|s| self.unusable_schemas.contains(*s))
    }

    /// The first unqualified table name of a statement that the advisor's search_path does not
    /// resolve while some schema holds a table of that name.
    pub fn off_search_path<'a>(
        &'a self,
        tables: &'a [(Option<String>, String)],
    ) -> Option<(&'a str, &'a [ElsewhereSchema])> {
        tables
            .iter()
            .filter(|(schema, name)| schema.is_none() && !self.names.contains_key(&(None, name.clone())))
            .find_map(|(_, name)| Some((name.as_str(), self.off_search_path.get(name)?.as_slice())))
    }

    /// Resolves names the way the session's search_path does and loads those tables. System
    /// catalogs are left out: monitoring queries on them are not the application's workload.
    /// Names in a schema the role may not use are left unresolved (see `unusable_schema`): looking
    /// one up would fail the whole query, and with it the advice on every other statement.
    pub async fn load(db: &Db, names: &[(Option<String>, String)]) -> Result<Catalog> {
        let mut catalog =
            Catalog { unusable_schemas: schemas_without_usage(db, names).await?, ..Default::default() };
        let texts: Vec<Option<String>> = names
            .iter()
            .map(|(s, n)| match s {
                Some(s) if catalog.unusable_schemas.contains(s) => None,
                Some(s) => Some(format!("{}.{}", quote_ident(s), quote_ident(n))),
                None => Some(quote_ident(n)),
            })
            .collect();
        let rows = db
            .client
            .query(
                "SELECT u.ord::int8, c.oid FROM unnest($1::text[]) WITH ORDINALITY u(name, ord) \
                 JOIN pg_class c ON c.oid = to_regclass(u.name) JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname !~ '^pg_toast'",
                &[&texts],
            )
            .await?;
        for row in rows {
            let ord: i64 = row.get(0);
            let oid: u32 = row.get(1);
            catalog.names.insert(names[(ord - 1) as usize].clone(), oid);
        }
        let unresolved: Vec<&str> = names
            .iter()
            .filter(|(s, n)| s.is_none() && !catalog.names.contains_key(&(None, n.clone())))
            .map(|(_, n)| n.as_str())
            .collect();
        catalog.off_search_path = schemas_holding(db, &unresolved).await?;
        let oids: Vec<u32> = catalog.names.values().copied().collect();
        catalog.load_tables(db, &oids).await?;
        Ok(catalog)
    }

    /// Leaf partitions of the partitioned tables (pg_partition_tree: PostgreSQL 12+).
    async fn load_leaf_partitions(&mut self, db: &Db) -> Result<()> {
        let parents: Vec<u32> = self.tables.values().filter(|t| t.partitioned).map(|t| t.oid).collect();
        if parents.is_empty() || db.version_num < 120000 {
            return Ok(());
        }
        let rows = db
            .client
            .query(
                "SELECT p.oid, n.nspname::text, c.relname::text FROM unnest($1::oid[]) p(oid) \
                 CROSS JOIN LATERAL pg_partition_tree(p.oid::regclass) t \
                 JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE t.isleaf AND c.relkind = 'r'",
                &[&parents],
            )
            .await?;
        for r in rows {
            let parent: u32 = r.get(0);
            if let Some(table) = self.tables.get_mut(&parent) {
                table.leaf_partitions.push((r.get(1), r.get(2)));
            }
        }
        Ok(())
    }

    async fn load_tables(&mut self, db: &Db, oids: &[u32]) -> Result<()> {
        let rows = db
            .client
            .query(
                // A partitioned table holds no rows and counts no writes: its partitions do.
                "SELECT c.oid, n.nspname::text, c.relname::text, c.reltuples::float8, \
                 s.live, s.ins, s.upd, s.hot, s.del, c.relkind = 'p', has_table_privilege(c.oid, 'SELECT') \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 CROSS JOIN LATERAL ( \
                   WITH RECURSIVE tree(relid) AS ( \
                     SELECT c.oid \
                     UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.relid \
                     WHERE c.relkind = 'p') \
                   SELECT coalesce(sum(t.n_live_tup), 0)::int8 AS live, coalesce(sum(t.n_tup_ins), 0)::int8 AS ins, \
                     coalesce(sum(t.n_tup_upd), 0)::int8 AS upd, coalesce(sum(t.n_tup_hot_upd), 0)::int8 AS hot, \
                     coalesce(sum(t.n_tup_del), 0)::int8 AS del \
                   FROM tree JOIN pg_stat_all_tables t ON t.relid = tree.relid) s \
                 WHERE c.oid = ANY($1)",
                &[&oids],
            )
            .await?;
        for r in rows {
            let oid: u32 = r.get(0);
            self.tables.insert(
                oid,
                TableInfo {
                    oid,
                    schema: r.get(1),
                    name: r.get(2),
                    reltuples: r.get(3),
                    partitioned: r.get(9),
                    readable: r.get(10),
                    leaf_partitions: Vec::new(),
                    live_rows: r.get(4),
                    columns: HashMap::new(),
                    indexes: Vec::new(),
                    inserts: r.get(5),
                    updates: r.get(6),
                    hot_updates: r.get(7),
                    deletes: r.get(8),
                },
            );
        }
        self.load_leaf_partitions(db).await?;
        let columns = db
            .client
            .query(
                "SELECT a.attrelid, a.attname::text, format_type(a.atttypid, a.atttypmod), \
                 s.n_distinct::float8, s.avg_width \
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname \
                      AND s.attname = a.attname AND NOT s.inherited \
                 WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped",
                &[&oids],
            )
            .await?;
        for r in columns {
            let oid: u32 = r.get(0);
            let Some(table) = self.tables.get_mut(&oid) else { continue };
            let n_distinct: Option<f64> = r.get(3);
            let rows = table.rows();
            let distinct = n_distinct.map(|d| if d < 0.0 { -d * rows } else { d });
            table.columns.insert(r.get(1), ColumnInfo { type_name: r.get(2), distinct, avg_width: r.get(4) });
        }
        let indexes = db
            .client
            .query(
                "SELECT i.indrelid, ic.relname::text, am.amname::text, i.indisvalid, \
                 pg_get_expr(i.indpred, i.indrelid), \
                 ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY u(k, ord) \
                       LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.k \
                       WHERE u.ord <= i.indnkeyatts ORDER BY u.ord), \
                 k.opclasses, k.default_opclasses, k.byte_order, k.column_collation, i.indisready, \
                 ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum > 0 \
                   AND (a.attnum = ANY(i.indkey::int2[]) OR EXISTS (SELECT 1 FROM pg_depend d \
                     WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid \
                       AND d.refclassid = 'pg_class'::regclass AND d.refobjid = i.indrelid \
                       AND d.refobjsubid = a.attnum))) \
                 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam \
                 CROSS JOIN LATERAL ( \
                   SELECT array_agg(oc.opcname::text ORDER BY u.ord) AS opclasses, \
                     array_agg(oc.opcdefault ORDER BY u.ord) AS default_opclasses, \
                     array_agg(CASE WHEN u.coll = 0 THEN false \
                                    WHEN u.coll = 100 THEN (SELECT d.datcollate IN ('C', 'POSIX') FROM pg_database d \
                                                             WHERE d.datname = current_database()) \
                                    ELSE coalesce(co.collcollate IN ('C', 'POSIX'), false) END ORDER BY u.ord) AS byte_order, \
                     array_agg(u.coll = coalesce(a.attcollation, 0) ORDER BY u.ord) AS column_collation \
                   FROM unnest(i.indkey::int2[], i.indclass::oid[], i.indcollation::oid[]) WITH ORDINALITY u(k, cls, coll, ord) \
                   JOIN pg_opclass oc ON oc.oid = u.cls \
                   LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.k \
                   LEFT JOIN pg_collation co ON co.oid = u.coll \
                   WHERE u.ord <= i.indnkeyatts) k \
                 WHERE i.indrelid = ANY($1)",
                &[&oids],
            )
            .await?;
        for r in indexes {
            let oid: u32 = r.get(0);
            if let Some(table) = self.tables.get_mut(&oid) {
                table.indexes.push(ExistingIndex {
                    name: r.get(1),
                    method: r.get(2),
                    valid: r.get(3),
                    maintained: r.get(10),
                    predicate: r.get(4),
                    columns: r.get(5),
                    key_orders: key_orders(&r),
                    referenced_columns: r.get(11),
                });
            }
        }
        Ok(())
    }
}

/// The key columns' orders from the index query's parallel arrays (columns 6 to 9).
fn key_orders(row: &tokio_postgres::Row) -> Vec<KeyOrder> {
    let opclasses: Vec<String> = row.get::<_, Option<Vec<String>>>(6).unwrap_or_default();
    let defaults: Vec<bool> = row.get::<_, Option<Vec<bool>>>(7).unwrap_or_default();
    let byte_order: Vec<Option<bool>> = row.get::<_, Option<Vec<Option<bool>>>>(8).unwrap_or_default();
    let column_collation: Vec<bool> = row.get::<_, Option<Vec<bool>>>(9).unwrap_or_default();
    opclasses
        .into_iter()
        .zip(defaults)
        .zip(byte_order.into_iter().zip(column_collation))
        .map(|((opclass, default_opclass), (byte_order, column_collation))| KeyOrder {
            opclass,
            default_opclass,
            byte_order: byte_order.unwrap_or(false),
            column_collation,
        })
        .collect()
}
