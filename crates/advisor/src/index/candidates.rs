//! Candidate indexes for what a statement asks of a table: equality columns first (most selective
//! first), then IN lists, then one range or the sort keys with their directions; partial indexes
//! for constant predicates; expression indexes; GIN for jsonb containment and full-text search;
//! INCLUDE columns for index-only scans.

use std::collections::BTreeSet;

use super::catalog::{KeyOrder, TableInfo};
use super::parse::TableAccess;
use crate::db::quote_ident;

/// One key element: a column (possibly DESC) or an expression, with an optional operator class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPart {
    /// SQL of the element: a quoted column or a parenthesised expression.
    pub sql: String,
    /// The plain column name, when the element is a column.
    pub column: Option<String>,
    pub desc: bool,
    pub opclass: Option<String>,
}

impl KeyPart {
    fn column(name: &str) -> Self {
        KeyPart { sql: quote_ident(name), column: Some(name.to_string()), desc: false, opclass: None }
    }
    fn expression(sql: &str) -> Self {
        KeyPart { sql: format!("({sql})"), column: None, desc: false, opclass: None }
    }
    /// True when an index key column ordered by `order` serves what this element asks of the
    /// column. A `*_pattern_ops` element is for `LIKE 'prefix%'`, which a btree serves only with a
    /// pattern operator class, or in the default class under a byte-wise ("C") collation: a
    /// default-opclass index in another collation cannot be used for it, however it is led.
    /// Any other element wants the column's ordinary order: the default class in the column's
    /// collation (a pattern-ops or other-collation index sorts differently).
    pub(crate) fn served_by(&self, order: &KeyOrder) -> bool {
        match &self.opclass {
            Some(wanted) if wanted.ends_with("_pattern_ops") => {
                order.opclass.ends_with("_pattern_ops") || (order.default_opclass && order.byte_order)
            }
            Some(wanted) => order.opclass == *wanted,
            None => order.default_opclass && order.column_collation,
        }
    }

    /// The element as written in CREATE INDEX: SQL, operator class, direction.
    pub(crate) fn render(&self) -> String {
        let mut s = self.sql.clone();
        if let Some(op) = &self.opclass {
            s.push(' ');
            s.push_str(op);
        }
        if self.desc {
            s.push_str(" DESC");
        }
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Btree,
    Gin,
}

/// A possible index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Candidate {
    pub table: u32,
    pub method: Method,
    pub key: Vec<KeyPart>,
    pub include: Vec<String>,
    pub predicate: Option<String>,
}

#[cfg(test)]
impl Candidate {
    /// A btree on plain columns of `table` (tests).
    pub(crate) fn btree_on(table: u32, columns: &[&str], predicate: Option<&str>) -> Candidate {
        Candidate {
            table,
            method: Method::Btree,
            key: columns.iter().map(|c| KeyPart::column(c)).collect(),
            include: Vec::new(),
            predicate: predicate.map(str::to_string),
        }
    }
}

impl Candidate {
    /// btree, partial, expression, covering, gin: the kind a person would call it.
    pub fn kind(&self) -> String {
        let mut kinds = Vec::new();
        if self.method == Method::Gin {
            kinds.push("gin");
        } else if self.key.len() > 1 {
            kinds.push("composite");
        } else {
            kinds.push("btree");
        }
        if self.key.iter().any(|k| k.column.is_none()) {
            kinds.push("expression");
        }
        if self.predicate.is_some() {
            kinds.push("partial");
        }
        if !self.include.is_empty() {
            kinds.push("covering");
        }
        kinds.join(", ")
    }

    /// `CREATE INDEX [CONCURRENTLY] [name] ON table USING method (...) INCLUDE (...) WHERE ...`.
    pub fn create_sql(&self, table: &TableInfo, concurrently: bool, name: Option<&str>) -> String {
        let mut sql = String::from("CREATE INDEX ");
        if concurrently {
            sql.push_str("CONCURRENTLY ");
        }
        if let Some(name) = name {
            sql.push_str(&quote_ident(name));
            sql.push(' ');
        }
        let method = match self.method {
            Method::Btree => "btree",
            Method::Gin => "gin",
        };
        let keys: Vec<String> = self.key.iter().map(KeyPart::render).collect();
        sql.push_str(&format!("ON {} USING {method} ({})", table.qualified(), keys.join(", ")));
        if !self.include.is_empty() {
            let inc: Vec<String> = self.include.iter().map(|c| quote_ident(c)).collect();
            sql.push_str(&format!(" INCLUDE ({})", inc.join(", ")));
        }
        if let Some(p) = &self.predicate {
            sql.push_str(&format!(" WHERE {p}"));
        }
        sql
    }

    /// The stem of a name in PostgreSQL's own style, table_col1_col2 (`_idx` and, on a
    /// collision, a number are added by [`super::names::IndexNames::claim`]).
    pub fn name_stem(&self, table: &TableInfo) -> String {
        let mut parts = vec![table.name.clone()];
        for k in &self.key {
            let word = k.column.clone().unwrap_or_else(|| {
                k.sql.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(20).collect::<String>()
            });
            parts.push(word);
        }
        if self.predicate.is_some() {
            parts.push("partial".into());
        }
        parts.join("_")
    }

    /// Every column of `table` the index would read: its plain key columns, its INCLUDE columns,
    /// and the columns named in its key expressions and predicate. An UPDATE that sets one of
    /// them cannot be HOT once the index exists.
    pub fn indexed_columns(&self, table: &TableInfo) -> BTreeSet<String> {
        let mut columns: BTreeSet<String> = self.key.iter().filter_map(|k| k.column.clone()).collect();
        columns.extend(self.include.iter().cloned());
        let expressions = self.key.iter().filter(|k| k.column.is_none()).map(|k| k.sql.as_str());
        for sql in expressions.chain(self.predicate.as_deref()) {
            columns.extend(columns_named_in(sql, table));
        }
        columns
    }

    /// Key columns (plain ones), in order.
    pub fn key_columns(&self) -> Vec<Option<&str>> {
        self.key.iter().map(|k| k.column.as_deref()).collect()
    }

    /// True when an existing valid index already serves this candidate: same method, same
    /// predicate (or none), and this candidate's plain key columns are a leading prefix of it,
    /// each ordered the way the candidate needs (operator class and collation: see
    /// [`KeyPart::served_by`]). What this cannot rule out is left to the planner's proof.
    pub fn already_served_by(&self, table: &TableInfo) -> Option<String> {
        if !self.include.is_empty() || self.method == Method::Gin {
            return None;
        }
        let wanted: Vec<Option<String>> = self.key.iter().map(|k| k.column.clone()).collect();
        if wanted.iter().any(Option::is_none) {
            return None;
        }
        table
            .indexes
            .iter()
            .find(|ix| {
                ix.valid
                    && ix.method == "btree"
                    && (ix.predicate.is_none() || ix.predicate.as_deref() == self.predicate.as_deref())
                    && ix.columns.len() >= wanted.len()
                    && ix.columns[..wanted.len()] == wanted[..]
                    && ix.key_orders.len() >= wanted.len()
                    && self.key.iter().zip(&ix.key_orders).all(|(k, order)| k.served_by(order))
                    && self.key.iter().all(|k| !k.desc)
            })
            .map(|ix| ix.name.clone())
    }
}

/// All candidates for one table access of one statement.
pub fn for_access(access: &TableAccess, table: &TableInfo) -> Vec<Candidate> {
    let mut out: BTreeSet<Candidate> = BTreeSet::new();
    let btree = |key: Vec<KeyPart>, predicate: Option<String>| Candidate {
        table: table.oid,
        method: Method::Btree,
        key,
        include: Vec::new(),
        predicate,
    };

    let eq = equality_columns(access, table, None);
    let mut keys = key_shapes(access, &eq);
    for key in &keys {
        out.insert(btree(key.clone(), None));
    }
    // Partial indexes: the constant predicate moves into WHERE and its column leaves the key.
    for (col, pred) in
        access.constant_predicates.iter().filter(|(col, pred)| fits_partial_index(table, col, pred))
    {
        let eq_without = equality_columns(access, table, Some(col));
        let mut shapes = key_shapes(access, &eq_without);
        shapes.retain(|k| !k.is_empty());
        if shapes.is_empty() {
            shapes.push(vec![KeyPart::column(col)]);
        }
        // A partial index is small: covering too, it answers the slice from the index alone.
        if let Some(longest) = shapes.iter().max_by_key(|k| k.len()) {
            out.extend(
                covering(access, longest)
                    .map(|include| Candidate { include, ..btree(longest.clone(), Some(pred.clone())) }),
            );
        }
        for key in shapes {
            out.insert(btree(key, Some(pred.clone())));
        }
    }
    // Covering: the fullest key plus the remaining projected columns, for an index-only scan.
    keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
    if let Some(best) = keys.first() {
        out.extend(covering(access, best).map(|include| Candidate { include, ..btree(best.clone(), None) }));
    }
    for expr in &access.expressions {
        out.insert(btree(vec![KeyPart::expression(expr)], None));
        if !eq.is_empty() {
            let mut key: Vec<KeyPart> = eq.iter().map(|c| KeyPart::column(c)).collect();
            key.push(KeyPart::expression(expr));
            out.insert(btree(key, None));
        }
    }
    for col in &access.prefix_like {
        let mut part = KeyPart::column(col);
        if table
            .columns
            .get(col)
            .is_some_and(|c| c.type_name.starts_with("text") || c.type_name.starts_with("character varying"))
        {
            part.opclass = Some(
                if table.columns[col].type_name.starts_with("text") {
                    "text_pattern_ops"
                } else {
                    "varchar_pattern_ops"
                }
                .into(),
            );
        }
        out.insert(btree(vec![part], None));
    }
    for (target, ops) in &access.gin {
        out.extend(gin_candidate(table, target, ops));
    }
    out.into_iter().filter(|c| !c.key.is_empty()).collect()
}

/// The columns an index on `key` must INCLUDE for an index-only scan of the access: its projected
/// columns outside the key (a partial index's constant predicate need not be among them: the
/// planner knows its value); none when that is nothing or more than four.
fn covering(access: &TableAccess, key: &[KeyPart]) -> Option<Vec<String>> {
    let projected = access.projected.as_ref()?;
    let in_key: BTreeSet<&str> = key.iter().filter_map(|k| k.column.as_deref()).collect();
    let include: Vec<String> = projected.iter().filter(|c| !in_key.contains(c.as_str())).cloned().collect();
    (!include.is_empty() && include.len() <= 4 && !key.is_empty()).then_some(include)
}

/// A column with at most this many distinct values (a status, a type, a flag) can name one of them
/// in a partial index's predicate: the index then serves a recurring slice of the table. On a
/// column with more, an equality constant is one value among many (a customer id that happened to
/// be in the workload text) and belongs in the key.
const MAX_DISTINCT_FOR_PARTIAL: f64 = 100.0;

/// Whether a constant predicate may become a partial index's WHERE: IS NULL, boolean tests and
/// `col = true` and the like always; `col = value` only on a low-cardinality column (known from its statistics).
fn fits_partial_index(table: &TableInfo, col: &str, pred: &str) -> bool {
    let value = pred.strip_prefix(&format!("{} = ", quote_ident(col)));
    let is_value_equality =
        value.is_some_and(|v| !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false"));
    !is_value_equality
        || table.columns.get(col).and_then(|c| c.distinct).is_some_and(|d| d <= MAX_DISTINCT_FOR_PARTIAL)
}

/// Equality (and join, IN) columns, most selective first, without `skip`.
fn equality_columns(access: &TableAccess, table: &TableInfo, skip: Option<&String>) -> Vec<String> {
    let mut eq: Vec<String> = access.eq.iter().filter(|c| Some(*c) != skip).cloned().collect();
    let distinct = |c: &String| table.columns.get(c).and_then(|i| i.distinct).unwrap_or(100.0);
    eq.sort_by(|a, b| distinct(b).partial_cmp(&distinct(a)).unwrap_or(std::cmp::Ordering::Equal));
    for j in &access.join {
        if !eq.contains(j) && Some(j) != skip {
            eq.push(j.clone());
        }
    }
    eq
}

/// The key orderings worth trying for the given equality columns.
fn key_shapes(access: &TableAccess, eq: &[String]) -> Vec<Vec<KeyPart>> {
    let base: Vec<KeyPart> = eq
        .iter()
        .chain(access.in_list.iter().filter(|c| !eq.contains(c)))
        .map(|c| KeyPart::column(c))
        .collect();
    let in_base = |c: &str| base.iter().any(|k| k.column.as_deref() == Some(c));
    let sort: Vec<KeyPart> = access
        .sort
        .iter()
        .filter(|(c, _)| !in_base(c))
        .map(|(c, desc)| KeyPart { desc: *desc, ..KeyPart::column(c) })
        .collect();
    let mut shapes = Vec::new();
    let range = access.range.iter().find(|c| !in_base(c));
    // Equality columns followed by the sort keys: rows come out already ordered, so a LIMIT stops early.
    if !sort.is_empty() {
        shapes.push(base.iter().cloned().chain(sort.iter().cloned()).collect::<Vec<_>>());
    }
    if let Some(r) = range {
        let mut k = base.clone();
        k.push(KeyPart::column(r));
        shapes.push(k);
    }
    if !access.group.is_empty() && sort.is_empty() {
        let group: Vec<KeyPart> =
            access.group.iter().filter(|c| !in_base(c)).map(|c| KeyPart::column(c)).collect();
        shapes.push(base.iter().cloned().chain(group).collect());
    }
    if !base.is_empty() {
        shapes.push(base.clone());
        if base.len() > 1 {
            shapes.push(vec![base[0].clone()]);
        }
    }
    shapes
}

/// The name an SQL identifier stands for, as PostgreSQL reads it: a quoted one keeps its case (its
/// doubled quotes undone), an unquoted one folds to lower case. None when `sql` is not a single
/// identifier (an expression, say). The parser's targets are written with `quote_ident`, so a
/// mixed-case column arrives quoted (`"Data"`) and must be looked up as `Data`.
pub(crate) fn identifier_name(sql: &str) -> Option<String> {
    if let Some(inner) = sql.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        let lone_quote = inner.replace("\"\"", "").contains('"');
        return (!inner.is_empty() && !lone_quote).then(|| inner.replace("\"\"", "\""));
    }
    let mut chars = sql.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_alphabetic() || c == '_');
    let plain = starts_well && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$');
    plain.then(|| sql.to_ascii_lowercase())
}

/// The columns of `table` an SQL expression names: its words that, read as identifiers, are
/// one of the table's columns (a string constant never is).
fn columns_named_in(sql: &str, table: &TableInfo) -> Vec<String> {
    let Ok(scanned) = pg_query::scan(sql) else { return Vec::new() };
    scanned
        .tokens
        .iter()
        .filter(|t| t.token != pg_query::protobuf::Token::Sconst as i32)
        .filter_map(|t| sql.get(t.start as usize..t.end as usize))
        .filter_map(identifier_name)
        .filter(|name| table.columns.contains_key(name))
        .collect()
}

/// The GIN candidates, each with the statements it helps, with every `jsonb_path_ops` candidate
/// folded into the default-opclass (`jsonb_ops`) one on the same column and rows, when there is
/// one: `jsonb_ops` serves `@>` as well as `?`, so one index answers both statements, where two
/// would be maintained on every write of the column.
pub fn fold_jsonb_path_ops(gin: Vec<(Candidate, Vec<usize>)>) -> Vec<(Candidate, Vec<usize>)> {
    let (path_ops, mut kept): (Vec<_>, Vec<_>) = gin.into_iter().partition(|(c, _)| is_jsonb_path_ops(c));
    for (path, statements) in path_ops {
        let serving = kept.iter_mut().find(|(c, _)| c.serves_as_jsonb_ops(&path));
        match serving {
            Some((_, helped)) => {
                helped.extend(statements);
                helped.sort_unstable();
                helped.dedup();
            }
            None => kept.push((path, statements)),
        }
    }
    kept
}

fn is_jsonb_path_ops(candidate: &Candidate) -> bool {
    matches!(candidate.key.as_slice(), [k] if k.opclass.as_deref() == Some("jsonb_path_ops"))
}

impl Candidate {
    /// This is the default-opclass GIN on the column and rows of the `jsonb_path_ops` candidate `path`.
    fn serves_as_jsonb_ops(&self, path: &Candidate) -> bool {
        let same_column = match (self.key.as_slice(), path.key.as_slice()) {
            ([mine], [theirs]) => mine.opclass.is_none() && mine.sql == theirs.sql,
            _ => false,
        };
        self.method == Method::Gin
            && self.table == path.table
            && self.predicate == path.predicate
            && same_column
    }
}

fn gin_candidate(table: &TableInfo, target: &str, ops: &BTreeSet<String>) -> Option<Candidate> {
    let name = identifier_name(target).filter(|n| table.columns.contains_key(n));
    let column = name.as_ref().and_then(|n| table.columns.get(n));
    let type_name = column.map(|c| c.type_name.as_str()).unwrap_or("");
    let key = if let Some(name) = &name {
        let opclass =
            (type_name == "jsonb" && ops.iter().all(|o| o == "@>")).then(|| "jsonb_path_ops".to_string());
        let is_text_search = type_name == "tsvector";
        let is_container = type_name == "jsonb" || type_name.ends_with("[]") || is_text_search;
        if !is_container {
            return None;
        }
        KeyPart { opclass, ..KeyPart::column(name) }
    } else if target.starts_with("to_tsvector(") {
        KeyPart::expression(target)
    } else {
        return None;
    };
    Some(Candidate {
        table: table.oid,
        method: Method::Gin,
        key: vec![key],
        include: Vec::new(),
        predicate: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::catalog::ColumnInfo;
    use crate::index::parse::{analyse, MapResolver};
    use std::collections::HashMap;

    fn table() -> TableInfo {
        let col = |t: &str, d: f64| ColumnInfo { type_name: t.into(), distinct: Some(d), avg_width: Some(8) };
        TableInfo {
            oid: 1,
            schema: "public".into(),
            name: "orders".into(),
            reltuples: 100_000.0,
            live_rows: 100_000,
            partitioned: false,
            readable: true,
            leaf_partitions: Vec::new(),
            columns: HashMap::from([
                ("id".into(), col("bigint", 100_000.0)),
                ("user_id".into(), col("integer", 1000.0)),
                ("created_at".into(), col("timestamp with time zone", 90_000.0)),
                ("status".into(), col("text", 3.0)),
                ("data".into(), col("jsonb", 10.0)),
                ("total".into(), col("numeric", 5000.0)),
            ]),
            indexes: vec![],
            inserts: 0,
            updates: 0,
            hot_updates: 0,
            deletes: 0,
        }
    }

    fn candidates(q: &str) -> Vec<String> {
        let r = MapResolver::default().with_table(
            1,
            "orders",
            &["id", "user_id", "created_at", "status", "data", "total"],
        );
        let shape = analyse(q, &r).unwrap();
        let t = table();
        for_access(&shape.accesses[0], &t).iter().map(|c| c.create_sql(&t, true, None)).collect()
    }

    #[test]
    fn equality_then_sort_direction() {
        let c = candidates("SELECT * FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 10");
        assert!(
            c.contains(
                &"CREATE INDEX CONCURRENTLY ON public.orders USING btree (user_id, created_at DESC)"
                    .to_string()
            ),
            "{c:#?}"
        );
    }

    #[test]
    fn partial_for_constant_predicate() {
        let c = candidates("SELECT id FROM orders WHERE status = 'pending' ORDER BY created_at");
        assert!(
            c.contains(&"CREATE INDEX CONCURRENTLY ON public.orders USING btree (created_at) WHERE status = 'pending'".to_string()),
            "{c:#?}"
        );
    }

    #[test]
    fn a_partial_index_is_offered_covering_too() {
        let c =
            candidates("SELECT id, total FROM orders WHERE status = 'pending' ORDER BY created_at LIMIT 50");
        assert!(
            c.contains(
                &"CREATE INDEX CONCURRENTLY ON public.orders USING btree (created_at) INCLUDE (id, total) WHERE status = 'pending'"
                    .to_string()
            ),
            "{c:#?}"
        );
    }

    #[test]
    fn no_partial_index_on_one_value_of_a_high_cardinality_column() {
        let c = candidates("SELECT * FROM orders WHERE status = 'shipped' AND user_id = 42");
        assert!(c.iter().all(|s| !s.contains("WHERE user_id")), "{c:#?}");
        assert!(
            c.contains(
                &"CREATE INDEX CONCURRENTLY ON public.orders USING btree (user_id) WHERE status = 'shipped'"
                    .to_string()
            ),
            "{c:#?}"
        );
    }

    #[test]
    fn gin_with_path_ops_for_containment_only() {
        let c = candidates("SELECT id FROM orders WHERE data @> $1");
        assert!(
            c.contains(
                &"CREATE INDEX CONCURRENTLY ON public.orders USING gin (data jsonb_path_ops)".to_string()
            ),
            "{c:#?}"
        );
    }

    #[test]
    fn identifiers_are_read_as_postgresql_reads_them() {
        assert_eq!(identifier_name("\"Data\"").as_deref(), Some("Data"));
        assert_eq!(identifier_name("\"a\"\"b\"").as_deref(), Some("a\"b"));
        assert_eq!(identifier_name("Data").as_deref(), Some("data"));
        assert_eq!(identifier_name("to_tsvector('english', body)"), None);
        assert_eq!(identifier_name("\"a\"b\""), None);
    }

    #[test]
    fn covering_index_for_narrow_projection() {
        let c = candidates("SELECT total FROM orders WHERE user_id = $1");
        assert!(
            c.contains(
                &"CREATE INDEX CONCURRENTLY ON public.orders USING btree (user_id) INCLUDE (total)"
                    .to_string()
            ),
            "{c:#?}"
        );
    }

    #[test]
    fn partitioned_tables_are_not_indexed_concurrently() {
        let r = MapResolver::default().with_table(1, "orders", &["user_id"]);
        let shape = analyse("SELECT * FROM orders WHERE user_id = $1", &r).unwrap();
        let t = TableInfo { partitioned: true, ..table() };
        let c = for_access(&shape.accesses[0], &t).remove(0);
        let (sql, note) = t.create_statement(&c, "orders_user_id_idx");
        assert_eq!(sql, "CREATE INDEX orders_user_id_idx ON public.orders USING btree (user_id)");
        assert!(note.unwrap().contains("ATTACH PARTITION"));
    }

    #[test]
    fn most_selective_equality_first() {
        let c = candidates("SELECT * FROM orders WHERE status = $1 AND user_id = $2");
        assert!(
            c.contains(
                &"CREATE INDEX CONCURRENTLY ON public.orders USING btree (user_id, status)".to_string()
            ),
            "{c:#?}"
        );
    }

    #[test]
    fn an_index_writes_do_not_update_costs_them_nothing() {
        let index = |name: &str, maintained: bool| super::super::catalog::ExistingIndex {
            name: name.into(),
            method: "btree".into(),
            columns: vec![Some("id".into())],
            predicate: None,
            valid: maintained,
            maintained,
            key_orders: Vec::new(),
            referenced_columns: vec!["id".into()],
        };
        // A failed CREATE UNIQUE INDEX CONCURRENTLY left one that was never marked ready.
        let t =
            TableInfo { indexes: vec![index("orders_pkey", true), index("orders_uniq", false)], ..table() };
        let overhead = super::super::write_overhead(&t, &Default::default());
        assert!(overhead.summary.starts_with("1 → 2 indexes to maintain"), "{}", overhead.summary);
    }

    #[test]
    fn a_prefix_like_candidate_is_served_only_by_an_index_that_can_match_patterns() {
        let order = |opclass: &str, default_opclass: bool, byte_order: bool| KeyOrder {
            opclass: opclass.into(),
            default_opclass,
            byte_order,
            column_collation: true,
        };
        let existing = |order: KeyOrder| TableInfo {
            indexes: vec![super::super::catalog::ExistingIndex {
                name: "orders_status_idx".into(),
                method: "btree".into(),
                columns: vec![Some("status".into())],
                predicate: None,
                valid: true,
                maintained: true,
                key_orders: vec![order],
                referenced_columns: vec!["status".into()],
            }],
            ..table()
        };
        let r = MapResolver::default().with_table(1, "orders", &["status"]);
        let like = analyse("SELECT id FROM orders WHERE status LIKE 'pend%'", &r).unwrap();
        let pattern = |t: &TableInfo| {
            for_access(&like.accesses[0], t)
                .into_iter()
                .find(|c| c.key.iter().any(|k| k.opclass.as_deref() == Some("text_pattern_ops")))
                .expect("a text_pattern_ops candidate")
        };
        // A default-opclass btree in a non-C collation cannot serve LIKE: the candidate stays.
        let non_c = existing(order("text_ops", true, false));
        assert_eq!(pattern(&non_c).already_served_by(&non_c), None);
        // In a byte-wise collation, or with a pattern operator class, it can.
        let c = existing(order("text_ops", true, true));
        assert_eq!(pattern(&c).already_served_by(&c).as_deref(), Some("orders_status_idx"));
        let ops = existing(order("text_pattern_ops", false, false));
        assert_eq!(pattern(&ops).already_served_by(&ops).as_deref(), Some("orders_status_idx"));
        // A pattern-ops index does not give equality, ranges and sorts their ordinary order.
        let eq = analyse("SELECT id FROM orders WHERE status > $1 ORDER BY status", &r).unwrap();
        let plain = for_access(&eq.accesses[0], &ops).remove(0);
        assert_eq!(plain.already_served_by(&ops), None);
        assert_eq!(plain.already_served_by(&non_c).as_deref(), Some("orders_status_idx"));
    }
}
