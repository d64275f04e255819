//! Relations from pg_class, with what the result cache needs: row level security, persistence,
//! system catalogs, partition and inheritance trees, cascading foreign keys and what views read.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::Instant;

use tokio_postgres::Client;

use super::implicit::time_input_types_cte;
use super::proc_worst::proc_worst_cte;
use super::search_path::schemas_to_search;
use super::{CatalogError, Volatility};
use crate::statement::TableRef;

/// A relation's object id.
pub type Oid = u32;

/// pg_class.relkind, for the kinds a statement can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelKind {
    Table,
    PartitionedTable,
    View,
    MaterializedView,
    Sequence,
    ForeignTable,
    Other,
}

impl RelKind {
    pub fn from_relkind(code: i8) -> RelKind {
        match code as u8 {
            b'r' => RelKind::Table,
            b'p' => RelKind::PartitionedTable,
            b'v' => RelKind::View,
            b'm' => RelKind::MaterializedView,
            b'S' => RelKind::Sequence,
            b'f' => RelKind::ForeignTable,
            _ => RelKind::Other,
        }
    }
}

/// One relation of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: Oid,
    pub schema: String,
    pub name: String,
    pub kind: RelKind,
    /// relrowsecurity: policies apply (to everyone but the owner and BYPASSRLS roles).
    pub row_security: bool,
    /// relforcerowsecurity: policies apply to the owner too.
    pub force_row_security: bool,
    /// relpersistence = 't'.
    pub temporary: bool,
    /// In pg_catalog, information_schema or a toast schema.
    pub system: bool,
    /// Has user-defined (not internal) triggers.
    pub has_triggers: bool,
    /// Has the trigger of `pgpilot cache install-triggers`, enabled (a trigger disabled, as
    /// `pg_restore --disable-triggers` and bulk loaders do, or firing only on replicas, reports
    /// nothing): writes made straight in PostgreSQL are heard of.
    pub cache_trigger: bool,
    /// A write runs code of the database's own (triggers, non-SELECT rules, defaults, generated
    /// columns, CHECK constraints or policies calling non-immutable user functions): it may change
    /// any other relation.
    pub write_runs_code: bool,
    /// A write to it may run such code on a relation it reaches, itself included (see
    /// [`RelationCatalog::write_reach`]): a partition's or an inheritance child's trigger, the
    /// trigger of a table a cascading foreign key changes, a view's base table's default.
    pub write_reaches_code: bool,
    /// Partition / inheritance parents, grandparents, ...
    pub ancestors: Vec<Oid>,
    /// Partitions / inheritance children, grandchildren, ...
    pub descendants: Vec<Oid>,
    /// For a view: every relation it reads, through nested views too.
    pub view_reads: Vec<Oid>,
    /// For a view: the worst volatility of the functions and operators its stored tree calls, or of
    /// the SQL value functions (CURRENT_TIMESTAMP, ...) in its definition. Immutable for others.
    pub view_volatility: Volatility,
    /// Relations with foreign keys to this one whose ON DELETE / ON UPDATE action changes them
    /// (CASCADE, SET NULL, SET DEFAULT).
    pub cascades_to: Vec<Oid>,
}

/// The relations of one database.
#[derive(Debug, Clone, Default)]
pub struct RelationCatalog {
    relations: Vec<Relation>,
    by_oid: HashMap<Oid, usize>,
    by_name: HashMap<String, Vec<usize>>,
    loaded_at: Option<Instant>,
}

/// Roles whose sessions of this database start with a search_path other than the default: one
/// row per role setting, NULL for a setting of every role (the database's own, or the server's
/// when the loading session's value does not come from a role or database setting).
pub(super) const SEARCH_PATH_SET_SQL: &str = "\
SELECT r.rolname FROM pg_catalog.pg_db_role_setting s \
  LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole, pg_catalog.unnest(s.setconfig) c \
  WHERE c LIKE 'search_path=%' AND s.setdatabase IN \
  (0, (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())) \
UNION ALL SELECT NULL FROM pg_catalog.pg_settings WHERE name = 'search_path' \
  AND reset_val <> '\"$user\", public' AND source NOT IN ('user', 'database', 'database user')";

/// Whose sessions the server gives a search_path other than `"$user", public` (ALTER ROLE /
/// ALTER DATABASE ... SET search_path, or postgresql.conf): a client of theirs that sets none has
/// one pgpilot does not know (see [`SEARCH_PATH_SET_SQL`]).
#[derive(Debug, Clone, Default)]
pub struct SearchPathSetFor {
    every_role: bool,
    roles: Vec<String>,
}

impl SearchPathSetFor {
    pub(super) fn from_roles(roles: impl IntoIterator<Item = Option<String>>) -> SearchPathSetFor {
        let mut set = SearchPathSetFor::default();
        for role in roles {
            match role {
                Some(r) => set.roles.push(r),
                None => set.every_role = true,
            }
        }
        set
    }

    /// Whether sessions of `role` may start with a search_path pgpilot does not know.
    pub fn includes(&self, role: &str) -> bool {
        self.every_role || self.roles.iter().any(|r| r == role)
    }
}

/// Relations, and whether a write to them runs code of the database's own: user triggers, rules
/// other than a view's SELECT (`DO ALSO` / `DO INSTEAD` actions), and column defaults, generated
/// columns, CHECK constraints or policies that call a non-immutable function (directly or behind an
/// operator), columns of a domain (or an array of one, or a domain over one) whose CHECK
/// constraints or default do. Built-in functions are pinned and never appear in pg_depend, so only
/// user ones count.
const RELATIONS_SQL: &str = "\
WITH RECURSIVE calls AS ( \
  SELECT d.classid, d.objid FROM pg_catalog.pg_depend d \
  JOIN pg_catalog.pg_proc p ON p.oid = d.refobjid \
  WHERE d.refclassid = 'pg_catalog.pg_proc'::regclass AND p.provolatile <> 'i' \
  UNION \
  SELECT d.classid, d.objid FROM pg_catalog.pg_depend d \
  JOIN pg_catalog.pg_operator o ON o.oid = d.refobjid JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode \
  WHERE d.refclassid = 'pg_catalog.pg_operator'::regclass AND p.provolatile <> 'i'), \
domains(typ) AS ( \
  SELECT n.contypid FROM pg_catalog.pg_constraint n JOIN calls k \
    ON k.classid = 'pg_catalog.pg_constraint'::regclass AND k.objid = n.oid WHERE n.contypid <> 0 \
  UNION SELECT k.objid FROM calls k WHERE k.classid = 'pg_catalog.pg_type'::regclass \
  UNION SELECT t.oid FROM domains d JOIN pg_catalog.pg_type t \
    ON t.typbasetype = d.typ AND t.typtype = 'd' OR t.typelem = d.typ AND t.typcategory = 'A'), \
runs_code AS ( \
  SELECT tgrelid AS rel FROM pg_catalog.pg_trigger WHERE NOT tgisinternal AND tgname <> 'pgpilot_cache_bump' \
  UNION SELECT ev_class FROM pg_catalog.pg_rewrite WHERE ev_type <> '1' \
  UNION SELECT a.adrelid FROM pg_catalog.pg_attrdef a JOIN calls k \
    ON k.classid = 'pg_catalog.pg_attrdef'::regclass AND k.objid = a.oid \
  UNION SELECT n.conrelid FROM pg_catalog.pg_constraint n JOIN calls k \
    ON k.classid = 'pg_catalog.pg_constraint'::regclass AND k.objid = n.oid \
  UNION SELECT y.polrelid FROM pg_catalog.pg_policy y JOIN calls k \
    ON k.classid = 'pg_catalog.pg_policy'::regclass AND k.objid = y.oid \
  UNION SELECT a.attrelid FROM pg_catalog.pg_attribute a JOIN domains d ON d.typ = a.atttypid \
    WHERE a.attnum > 0 AND NOT a.attisdropped) \
SELECT c.oid, n.nspname::text, c.relname::text, c.relkind, c.relrowsecurity, c.relforcerowsecurity, \
       c.relpersistence = 't', \
       n.nspname IN ('pg_catalog', 'information_schema') OR n.nspname LIKE 'pg\\_toast%', \
       EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND t.tgname <> 'pgpilot_cache_bump'), \
       c.oid IN (SELECT rel FROM runs_code), \
       EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'pgpilot_cache_bump' \
               AND t.tgenabled IN ('O', 'A')) \
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')";

const INHERITS_SQL: &str = "SELECT inhrelid, inhparent FROM pg_catalog.pg_inherits";

const CASCADES_SQL: &str = "\
SELECT confrelid, conrelid FROM pg_catalog.pg_constraint \
WHERE contype = 'f' AND (confdeltype IN ('c', 'n', 'd') OR confupdtype IN ('c', 'n', 'd'))";

/// What each user view's rewrite rule depends on: the relations it reads (pg_depend, and the range
/// table of its stored tree for pinned system catalogs), and the volatility of every function its
/// stored tree calls (each as volatile as what it depends on: an aggregate's transition function,
/// a parameter default). A conversion to a type whose input may read 'now' (a composite, domain,
/// array or range over a date/time type, see `time_input_types_cte`) counts as stable: pg_depend
/// records the types of a rule that are not built in. Functions are taken from the tree itself
/// (function calls, operators, aggregates, window functions, TABLESAMPLE methods): pg_depend records
/// no dependency on pinned built-in functions, so now() or random() would not be seen there.
fn view_depends_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "WITH RECURSIVE {}, {}, rules AS ( \
  SELECT r.oid, r.ev_class AS view, r.ev_action FROM pg_catalog.pg_rewrite r \
  JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind = 'v' \
  JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace \
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')), \
refs AS ( \
  SELECT view, m[1] AS field, m[2]::oid AS id FROM rules, \
  LATERAL regexp_matches(ev_action::text, \
    ':(relid|funcid|opfuncid|aggfnoid|winfnoid|tsmhandler|opno) ([0-9]+)', 'g') m) \
SELECT r.view, d.refobjid, NULL::\"char\" FROM rules r \
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid \
  WHERE d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> r.view \
UNION \
SELECT view, id, NULL FROM refs WHERE field = 'relid' AND id NOT IN (0, view) \
UNION \
SELECT view, w.oid, w.code::\"char\" FROM refs JOIN proc_worst w ON w.oid = refs.id \
  WHERE field NOT IN ('relid', 'opno') \
UNION \
SELECT view, w.oid, w.code::\"char\" FROM refs JOIN pg_catalog.pg_operator o ON o.oid = refs.id \
  JOIN proc_worst w ON w.oid = o.oprcode WHERE field = 'opno' \
UNION \
SELECT r.view, d.refobjid, 's'::\"char\" FROM rules r \
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid \
  AND d.refclassid = 'pg_catalog.pg_type'::regclass JOIN time_input_types y ON y.typ = d.refobjid",
            proc_worst_cte(),
            time_input_types_cte!()
        )
    })
}

/// Definitions of user views, to find SQL value functions (CURRENT_TIMESTAMP ...) that pg_depend
/// does not record.
const VIEW_DEFS_SQL: &str = "\
SELECT c.oid, pg_catalog.pg_get_viewdef(c.oid) FROM pg_catalog.pg_class c \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema')";

/// Text rows of one query (None for NULL), as a simple-protocol client reads them.
pub type TextRows = Vec<Vec<Option<String>>>;

impl RelationCatalog {
    /// The queries [`RelationCatalog::from_text_rows`] wants the answers of, in this order, for
    /// callers that run them on a connection of their own (the gateway's monitor).
    pub fn text_queries() -> [&'static str; 5] {
        [RELATIONS_SQL, INHERITS_SQL, CASCADES_SQL, view_depends_sql(), VIEW_DEFS_SQL]
    }

    /// Builds the catalog from the text answers of [`RelationCatalog::text_queries`]; None when an
    /// answer does not have the expected shape.
    pub fn from_text_rows(answers: &[TextRows; 5]) -> Option<RelationCatalog> {
        fn text(row: &[Option<String>], i: usize) -> Option<&str> {
            row.get(i).and_then(|v| v.as_deref())
        }
        let oid = |row: &[Option<String>], i: usize| text(row, i)?.parse::<Oid>().ok();
        let flag = |row: &[Option<String>], i: usize| text(row, i) == Some("t");
        let mut relations = Vec::new();
        for row in &answers[0] {
            relations.push(Relation {
                oid: oid(row, 0)?,
                schema: text(row, 1)?.to_string(),
                name: text(row, 2)?.to_string(),
                kind: RelKind::from_relkind(text(row, 3)?.bytes().next()? as i8),
                row_security: flag(row, 4),
                force_row_security: flag(row, 5),
                temporary: flag(row, 6),
                system: flag(row, 7),
                has_triggers: flag(row, 8),
                write_runs_code: flag(row, 9),
                cache_trigger: flag(row, 10),
                write_reaches_code: false,
                ancestors: Vec::new(),
                descendants: Vec::new(),
                view_reads: Vec::new(),
                view_volatility: Volatility::Immutable,
                cascades_to: Vec::new(),
            });
        }
        let pairs = |rows: &TextRows| -> Option<Vec<(Oid, Oid)>> {
            rows.iter().map(|r| Some((oid(r, 0)?, oid(r, 1)?))).collect()
        };
        let inherits = pairs(&answers[1])?;
        let cascades = pairs(&answers[2])?;
        let mut view_deps = ViewDependencies::default();
        for row in &answers[3] {
            match text(row, 2) {
                None => view_deps.reads.push((oid(row, 0)?, oid(row, 1)?)),
                Some(code) => view_deps
                    .volatility
                    .push((oid(row, 0)?, Volatility::from_provolatile(code.bytes().next()? as i8))),
            }
        }
        for row in &answers[4] {
            if text(row, 1).is_none_or(reads_the_clock_or_session) {
                view_deps.volatility.push((oid(row, 0)?, Volatility::Stable));
            }
        }
        let mut catalog = RelationCatalog::build(relations, &inherits, &cascades, &view_deps);
        catalog.loaded_at = Some(Instant::now());
        Some(catalog)
    }

    /// Reads the relations of the connected database.
    pub async fn load(client: &Client) -> Result<RelationCatalog, CatalogError> {
        let mut relations = Vec::new();
        for row in client.query(RELATIONS_SQL, &[]).await? {
            relations.push(Relation {
                oid: row.get(0),
                schema: row.get(1),
                name: row.get(2),
                kind: RelKind::from_relkind(row.get(3)),
                row_security: row.get(4),
                force_row_security: row.get(5),
                temporary: row.get(6),
                system: row.get(7),
                has_triggers: row.get(8),
                write_runs_code: row.get(9),
                cache_trigger: row.get(10),
                write_reaches_code: false,
                ancestors: Vec::new(),
                descendants: Vec::new(),
                view_reads: Vec::new(),
                view_volatility: Volatility::Immutable,
                cascades_to: Vec::new(),
            });
        }
        let inherits: Vec<(Oid, Oid)> =
            client.query(INHERITS_SQL, &[]).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
        let cascades: Vec<(Oid, Oid)> =
            client.query(CASCADES_SQL, &[]).await?.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut view_deps = ViewDependencies::default();
        for row in client.query(view_depends_sql(), &[]).await? {
            let code: Option<i8> = row.get(2);
            match code {
                None => view_deps.reads.push((row.get(0), row.get(1))),
                Some(code) => view_deps.volatility.push((row.get(0), Volatility::from_provolatile(code))),
            }
        }
        for row in client.query(VIEW_DEFS_SQL, &[]).await? {
            let definition: String = row.get(1);
            if reads_the_clock_or_session(&definition) {
                view_deps.volatility.push((row.get(0), Volatility::Stable));
            }
        }
        let mut catalog = RelationCatalog::build(relations, &inherits, &cascades, &view_deps);
        catalog.loaded_at = Some(Instant::now());
        Ok(catalog)
    }

    /// Builds a catalog from relations (their derived fields are recomputed), `(child, parent)`
    /// inheritance pairs and `(referenced, referencing)` cascading foreign keys.
    pub fn build(
        mut relations: Vec<Relation>,
        inherits: &[(Oid, Oid)],
        cascades: &[(Oid, Oid)],
        views: &ViewDependencies,
    ) -> RelationCatalog {
        let parents = multimap(inherits.iter().copied());
        let children = multimap(inherits.iter().map(|&(child, parent)| (parent, child)));
        let cascade_map = multimap(cascades.iter().copied());
        let view_reads = multimap(views.reads.iter().copied());
        let mut view_volatility: HashMap<Oid, Volatility> = HashMap::new();
        for &(view, v) in &views.volatility {
            let worst = view_volatility.entry(view).or_insert(Volatility::Immutable);
            *worst = (*worst).max(v);
        }
        for rel in &mut relations {
            rel.ancestors = closure(rel.oid, &parents);
            rel.descendants = closure(rel.oid, &children);
            rel.cascades_to = closure(rel.oid, &cascade_map);
            rel.view_reads = closure(rel.oid, &view_reads);
        }
        // A view is as volatile as anything in the views it reads.
        let own: HashMap<Oid, Volatility> = view_volatility.clone();
        for rel in &mut relations {
            let worst = std::iter::once(rel.oid)
                .chain(rel.view_reads.iter().copied())
                .filter_map(|oid| own.get(&oid).copied())
                .max()
                .unwrap_or(Volatility::Immutable);
            rel.view_volatility = worst;
        }
        let by_oid = relations.iter().enumerate().map(|(i, r)| (r.oid, i)).collect();
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in relations.iter().enumerate() {
            by_name.entry(r.name.clone()).or_default().push(i);
        }
        let mut catalog = RelationCatalog { relations, by_oid, by_name, loaded_at: None };
        let reaches_code: Vec<bool> = catalog.relations.iter().map(|r| catalog.reach_runs_code(r)).collect();
        for (rel, reaches) in catalog.relations.iter_mut().zip(reaches_code) {
            rel.write_reaches_code = reaches;
        }
        catalog
    }

    /// Whether a write through `rel` may fire code on a relation it reaches: the relations its rows
    /// may change, and their ancestors (a parent's row triggers are cloned to its partitions).
    fn reach_runs_code(&self, rel: &Relation) -> bool {
        self.write_reach(rel).iter().filter_map(|oid| self.by_oid(*oid)).any(|r| {
            r.write_runs_code || r.ancestors.iter().filter_map(|a| self.by_oid(*a)).any(|a| a.write_runs_code)
        })
    }

    /// The relations whose rows a write through `rel` may change: itself, its partitions or
    /// inheritance descendants, the relations its cascading foreign keys reach and, for a view,
    /// the relations it reads (a write through an updatable view), transitively.
    pub fn write_reach(&self, rel: &Relation) -> HashSet<Oid> {
        let mut changed: HashSet<Oid> = HashSet::new();
        let mut pending = vec![rel.oid];
        while let Some(oid) = pending.pop() {
            if !changed.insert(oid) {
                continue;
            }
            let Some(r) = self.by_oid(oid) else { continue };
            pending.extend(r.descendants.iter().chain(&r.cascades_to).chain(&r.view_reads));
        }
        changed
    }

    /// The relation a name refers to. A qualified name is looked up in its schema; an unqualified one
    /// in pg_catalog (first, unless the path places it) and then the search_path. Temporary relations
    /// of the client's own session cannot be seen from here: `pg_temp` is skipped, and a client that
    /// created temporary tables must not have its reads cached (its session is pinned anyway).
    pub fn resolve(&self, table: &TableRef, search_path: &[String]) -> Option<&Relation> {
        let candidates = self.by_name.get(&table.name)?;
        let in_schema =
            |schema: &str| candidates.iter().map(|&i| &self.relations[i]).find(|r| r.schema == schema);
        match table.schema.as_deref() {
            Some(schema) => in_schema(schema),
            None => schemas_to_search(search_path).find_map(in_schema),
        }
    }

    pub fn by_oid(&self, oid: Oid) -> Option<&Relation> {
        self.by_oid.get(&oid).map(|&i| &self.relations[i])
    }

    /// Every relation whose cached reads a write to `rel` must invalidate, sorted: those of its
    /// [`RelationCatalog::write_reach`] and their ancestors (a parent's reads include its children).
    /// Siblings of a partition are untouched.
    pub fn invalidation_set(&self, rel: &Relation) -> Vec<Oid> {
        let changed = self.write_reach(rel);
        let mut set: Vec<Oid> = changed.iter().copied().collect();
        for oid in &changed {
            if let Some(r) = self.by_oid(*oid) {
                set.extend(&r.ancestors);
            }
        }
        set.sort_unstable();
        set.dedup();
        set
    }

    /// Every relation whose rows a read of `rel` may return, sorted: itself and, for a view, what
    /// it reads, with the partitions and inheritance descendants of each. What any of them is
    /// (a foreign table, a temporary child, row level security) decides whether the read may be
    /// cached.
    pub fn read_reach(&self, rel: &Relation) -> Vec<Oid> {
        let mut reach = vec![rel.oid];
        reach.extend(&rel.view_reads);
        for oid in std::iter::once(&rel.oid).chain(&rel.view_reads) {
            if let Some(r) = self.by_oid(*oid) {
                reach.extend(&r.descendants);
            }
        }
        reach.sort_unstable();
        reach.dedup();
        reach
    }

    /// The relations a cached read of `rel` depends on: itself and, for a view, what it reads.
    pub fn read_dependencies(&self, rel: &Relation) -> Vec<Oid> {
        let mut deps = vec![rel.oid];
        deps.extend(&rel.view_reads);
        deps.sort_unstable();
        deps.dedup();
        deps
    }

    /// Whether `newer` (this database's catalog read again) differs in what results cached under
    /// this one depend on: a relation (temporary ones aside) dropped or changed in any fact kept
    /// (its foreign keys' cascades, triggers, partitions, views' reads, row level security...), or
    /// a new one named like an existing one (a read of that name may now resolve to it).
    pub fn links_changed(&self, newer: &RelationCatalog) -> bool {
        let kept = |r: &&Relation| !r.temporary;
        self.relations.iter().filter(kept).any(|old| newer.by_oid(old.oid) != Some(old))
            || newer
                .relations
                .iter()
                .filter(kept)
                .any(|new| self.by_oid(new.oid).is_none() && self.by_name.contains_key(&new.name))
    }

    pub fn relations(&self) -> &[Relation] {
        &self.relations
    }

    pub fn len(&self) -> usize {
        self.relations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }

    pub fn loaded_at(&self) -> Option<Instant> {
        self.loaded_at
    }
}

/// What views depend on, as read from pg_depend and their definitions.
#[derive(Debug, Clone, Default)]
pub struct ViewDependencies {
    /// (view, relation it reads)
    pub reads: Vec<(Oid, Oid)>,
    /// (view, volatility of something it evaluates)
    pub volatility: Vec<(Oid, Volatility)>,
}

/// Does a view definition evaluate CURRENT_TIMESTAMP, CURRENT_USER and the like, or 'now'
/// (written, or read from a column cast to a date/time type)?
fn reads_the_clock_or_session(definition: &str) -> bool {
    let statement = crate::analyze::analyze(definition);
    let shape = &statement.shape;
    !statement.value_functions.is_empty()
        || shape.time_literal
        || shape.time_input
        || statement.parse_error.is_some()
}

fn multimap(pairs: impl Iterator<Item = (Oid, Oid)>) -> HashMap<Oid, Vec<Oid>> {
    let mut map: HashMap<Oid, Vec<Oid>> = HashMap::new();
    for (from, to) in pairs {
        map.entry(from).or_default().push(to);
    }
    map
}

/// Everything reachable from `start` (excluding itself), sorted.
fn closure(start: Oid, edges: &HashMap<Oid, Vec<Oid>>) -> Vec<Oid> {
    let mut seen: HashSet<Oid> = HashSet::new();
    let mut pending: Vec<Oid> = edges.get(&start).cloned().unwrap_or_default();
    while let Some(oid) = pending.pop() {
        if oid != start && seen.insert(oid) {
            if let Some(next) = edges.get(&oid) {
                pending.extend(next);
            }
        }
    }
    let mut out: Vec<Oid> = seen.into_iter().collect();
    out.sort_unstable();
    out
}
