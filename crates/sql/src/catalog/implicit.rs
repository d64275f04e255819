//! What runs a function the statement's text does not name: user operators, casts to types with
//! a cast function or a domain CHECK constraint, views whose query calls a volatile function. Most
//! databases have none that may write, and then a statement calling no function by name writes
//! nothing; a database that has one has its plain SELECTs looked at for them.

use std::sync::OnceLock;

use super::functions::{insert, Names};
use super::proc_worst::{proc_worst_cte, sql_list};
use super::Volatility;
use crate::statement::{Statement, TableRef};

/// `time_input_types(typ)`: the types whose input reads text with a date/time type's input, where
/// 'now' is the current time: date, time, timestamp, timestamptz and timetz (1082, 1083, 1114,
/// 1184, 1266; the grammar knows them by name, see `takes_time_words`), and, recursively,
/// composites with an attribute of one (table row types too), domains over, arrays of, ranges and
/// multiranges over one (`rngmultitypid` is read through to_jsonb: PostgreSQL 13 has no
/// multiranges). To follow `WITH RECURSIVE`.
macro_rules! time_input_types_cte {
    () => {
        "type_links(outer_t, inner_t) AS ( \
  SELECT oid, typbasetype FROM pg_catalog.pg_type WHERE typtype = 'd' \
  UNION ALL SELECT oid, typelem FROM pg_catalog.pg_type WHERE typcategory = 'A' AND typelem <> 0 \
  UNION ALL SELECT rngtypid, rngsubtype FROM pg_catalog.pg_range \
  UNION ALL SELECT (pg_catalog.to_jsonb(r) ->> 'rngmultitypid')::oid, r.rngtypid FROM pg_catalog.pg_range r \
    WHERE pg_catalog.to_jsonb(r) ? 'rngmultitypid' \
  UNION ALL SELECT t.oid, a.atttypid FROM pg_catalog.pg_type t JOIN pg_catalog.pg_attribute a \
    ON a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped WHERE t.typtype = 'c'), \
time_input_types(typ) AS ( \
  SELECT oid FROM pg_catalog.pg_type WHERE oid IN (1082, 1083, 1114, 1184, 1266) \
  UNION SELECT l.outer_t FROM time_input_types y JOIN type_links l ON l.inner_t = y.typ)"
    };
}
pub(super) use time_input_types_cte;

/// Rows (kind, schema, name, code) of what runs functions the text does not name, worse than
/// immutable:
/// - 'o': user operators (not in pg_catalog or information_schema) by their function;
/// - 't': types a cast to may run such a function: the target of a cast created by a user
///   (pg_cast oids of initdb are below 16384), a domain whose CHECK constraint calls one
///   (directly or behind a user operator), a domain over such a type;
/// - 'u': unlogged tables, sequences and materialized views, the partitioned and inheritance
///   parents over them, and views reading them directly: a standby cannot read them (listed
///   whatever their functions; the code column is unused);
/// - 'f': user functions (not C or internal) whose source names such a relation (a whole-word
///   match, case-insensitive: a false match only sends a call to the primary);
/// - 'r': user views whose stored query calls a volatile function, or a stable built-in a standby
///   refuses such as txid_current() (see `proc_worst_cte`; read-only built-ins excepted,
///   the list is spliced in; an extension's own views, such as pg_stat_statements over its
///   volatile function of the same name, are taken to read only), casts to a domain above, or reads such a view or table; and tables
///   whose SELECT policies call a volatile function. Always 'v';
/// - 'a': user functions a row's field selection may call (`a.name` is `name(a)` when the row has
///   no column `name`): one argument (others defaulted), of a composite or pseudo-type (`record`,
///   `anyelement`).
/// - 'd': types whose input reads text with a date/time type's input, where `'now'` is the
///   current time: composites with an attribute of such a type (table row types too), domains
///   over, arrays of, ranges and multiranges over one, recursively (the built-in date/time
///   types themselves are known by name). Always 's'.
pub(super) fn implicit_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let read_only = sql_list(crate::route::READ_ONLY_VOLATILE_BUILTINS);
        format!(
            "WITH RECURSIVE {cte}, \
ops(oid, nspname, oprname, code) AS ( \
  SELECT o.oid, n.nspname::text, o.oprname::text, w.code FROM pg_catalog.pg_operator o \
  JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace JOIN proc_worst w ON w.oid = o.oprcode \
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND w.code <> 'i'), \
con_calls(typ, code) AS ( \
  SELECT n.contypid, w.code FROM pg_catalog.pg_constraint n \
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_constraint'::regclass AND d.objid = n.oid \
  JOIN proc_worst w ON d.refclassid = 'pg_catalog.pg_proc'::regclass AND w.oid = d.refobjid \
  WHERE n.contypid <> 0 AND w.code <> 'i' \
  UNION ALL \
  SELECT n.contypid, o.code FROM pg_catalog.pg_constraint n \
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_constraint'::regclass AND d.objid = n.oid \
  JOIN ops o ON d.refclassid = 'pg_catalog.pg_operator'::regclass AND o.oid = d.refobjid \
  WHERE n.contypid <> 0 \
  UNION ALL \
  SELECT c.casttarget, w.code FROM pg_catalog.pg_cast c JOIN proc_worst w ON w.oid = c.castfunc \
  WHERE c.oid >= 16384 AND w.code <> 'i'), \
types(typ, code) AS ( \
  SELECT typ, code FROM con_calls \
  UNION \
  SELECT t.oid, y.code FROM types y JOIN pg_catalog.pg_type t ON t.typbasetype = y.typ AND t.typtype = 'd'), \
{time_cte}, \
unlogged(oid) AS ( \
  SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relpersistence = 'u' AND c.relkind IN ('r', 'p', 'm', 'S') \
  UNION \
  SELECT i.inhparent FROM unlogged u JOIN pg_catalog.pg_inherits i ON i.inhrelid = u.oid), \
rules AS ( \
  SELECT r.oid, r.ev_class AS rel, r.ev_action FROM pg_catalog.pg_rewrite r \
  JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind = 'v' AND r.ev_type = '1' \
  JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace \
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e WHERE e.classid = 'pg_catalog.pg_class'::regclass \
    AND e.objid = v.oid AND e.deptype = 'e')), \
rule_calls(rel, func) AS ( \
  SELECT rel, m[1]::oid FROM rules, \
  LATERAL regexp_matches(ev_action::text, ':(?:funcid|opfuncid|aggfnoid|winfnoid|tsmhandler) ([0-9]+)', 'g') m \
  UNION \
  SELECT rel, o.oprcode::oid FROM rules, \
  LATERAL regexp_matches(ev_action::text, ':opno ([0-9]+)', 'g') m, pg_catalog.pg_operator o \
  WHERE o.oid = m[1]::oid), \
writing_rels(rel) AS ( \
  SELECT c.rel FROM rule_calls c JOIN proc_worst w ON w.oid = c.func AND w.code = 'v' \
  JOIN pg_catalog.pg_proc p ON p.oid = c.func JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
  WHERE NOT (n.nspname = 'pg_catalog' AND p.proname IN ({read_only})) \
  UNION \
  SELECT r.rel FROM rules r JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass \
  AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_type'::regclass \
  JOIN types y ON y.typ = d.refobjid AND y.code = 'v' \
  UNION \
  SELECT y.polrelid FROM pg_catalog.pg_policy y \
  JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_policy'::regclass AND d.objid = y.oid \
  LEFT JOIN proc_worst w ON d.refclassid = 'pg_catalog.pg_proc'::regclass AND w.oid = d.refobjid \
  LEFT JOIN ops o ON d.refclassid = 'pg_catalog.pg_operator'::regclass AND o.oid = d.refobjid \
  WHERE y.polcmd IN ('r', '*') AND 'v' IN (w.code, o.code) \
  UNION \
  SELECT r.rel FROM writing_rels x JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_class'::regclass \
  AND d.refobjid = x.rel AND d.classid = 'pg_catalog.pg_rewrite'::regclass \
  JOIN rules r ON r.oid = d.objid) \
SELECT 'o', nspname, oprname, code FROM ops \
UNION ALL \
SELECT 'a', n.nspname::text, p.proname::text, w.code FROM pg_catalog.pg_proc p \
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace JOIN proc_worst w ON w.oid = p.oid \
  JOIN pg_catalog.pg_type t ON t.oid = p.proargtypes[0] \
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prokind = 'f' \
  AND p.pronargs >= 1 AND p.pronargs - p.pronargdefaults <= 1 AND t.typtype IN ('c', 'p') AND w.code <> 'i' \
UNION ALL \
SELECT 't', n.nspname::text, t.typname::text, y.code FROM types y \
  JOIN pg_catalog.pg_type t ON t.oid = y.typ JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
UNION ALL \
SELECT 'd', n.nspname::text, t.typname::text, 's' FROM time_input_types y \
  JOIN pg_catalog.pg_type t ON t.oid = y.typ JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
  WHERE y.typ NOT IN (1082, 1083, 1114, 1184, 1266) \
UNION ALL \
SELECT 'r', n.nspname::text, c.relname::text, 'v' FROM writing_rels x \
  JOIN pg_catalog.pg_class c ON c.oid = x.rel JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
UNION ALL \
SELECT 'u', n.nspname::text, c.relname::text, 'v' FROM unlogged u \
  JOIN pg_catalog.pg_class c ON c.oid = u.oid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
UNION ALL \
SELECT DISTINCT 'u', n.nspname::text, v.relname::text, 'v' FROM pg_catalog.pg_depend d \
  JOIN pg_catalog.pg_rewrite r ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid \
  JOIN pg_catalog.pg_class v ON v.oid = r.ev_class AND v.relkind IN ('v', 'm') \
  JOIN unlogged t ON d.refclassid = 'pg_catalog.pg_class'::regclass AND t.oid = d.refobjid \
  AND t.oid <> v.oid \
  JOIN pg_catalog.pg_namespace n ON n.oid = v.relnamespace \
UNION ALL \
SELECT DISTINCT 'f', n.nspname::text, p.proname::text, 'v' FROM pg_catalog.pg_proc p \
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace, unlogged u \
  JOIN pg_catalog.pg_class c ON c.oid = u.oid \
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prolang NOT IN (12, 13) \
  AND p.prosrc ~* ('\\m' || pg_catalog.regexp_replace(c.relname, '(\\W)', '\\\\\\1', 'g') || '\\M')",
            cte = proc_worst_cte(),
            time_cte = time_input_types_cte!(),
        )
    })
}

/// What runs a function the statement's text does not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImplicitKind {
    /// A user-defined operator: its function.
    Operator,
    /// A type a cast to runs a function for: a user cast's function, a domain's CHECK constraint.
    Type,
    /// A view whose query calls a volatile function, or a table whose SELECT policies do.
    Relation,
    /// An unlogged relation, or a view over one: a standby cannot read it.
    StandbyUnreadable,
    /// A function whose source names such a relation.
    StandbyUnreadableFunction,
    /// A function a field selection (`a.name`) may call in attribute notation.
    AttributeFunction,
    /// A type whose input reads a date/time type's text (a composite, domain, array or range
    /// over one): not code, but a value converted to it may read 'now'.
    TimeInputType,
}

impl ImplicitKind {
    /// The kind column of [`implicit_sql`]'s rows.
    pub(super) fn from_code(code: &str) -> Option<ImplicitKind> {
        match code {
            "o" => Some(ImplicitKind::Operator),
            "t" => Some(ImplicitKind::Type),
            "r" => Some(ImplicitKind::Relation),
            "u" => Some(ImplicitKind::StandbyUnreadable),
            "f" => Some(ImplicitKind::StandbyUnreadableFunction),
            "a" => Some(ImplicitKind::AttributeFunction),
            "d" => Some(ImplicitKind::TimeInputType),
            _ => None,
        }
    }
}

/// The user operators, cast target types and relations of one database that run functions worse
/// than immutable, by name.
#[derive(Debug, Clone, Default)]
pub(super) struct ImplicitCode {
    operators: Names,
    types: Names,
    relations: Names,
    attribute_functions: Names,
    /// Relations a standby cannot read (not code: kept apart from the writers).
    unlogged: Names,
    /// Functions that read them.
    unlogged_readers: Names,
    /// Types a value read at run time reads 'now' through (not code either).
    time_input_types: Names,
    /// Any of them is volatile: it may write.
    writers: bool,
}

impl ImplicitCode {
    pub(super) fn add(&mut self, kind: ImplicitKind, schema: &str, name: &str, volatility: Volatility) {
        let names = match kind {
            ImplicitKind::Operator => &mut self.operators,
            ImplicitKind::Type => &mut self.types,
            ImplicitKind::Relation => &mut self.relations,
            ImplicitKind::AttributeFunction => &mut self.attribute_functions,
            ImplicitKind::StandbyUnreadable => {
                insert(&mut self.unlogged, schema, name, volatility);
                return;
            }
            ImplicitKind::StandbyUnreadableFunction => {
                insert(&mut self.unlogged_readers, schema, name, volatility);
                return;
            }
            ImplicitKind::TimeInputType => {
                insert(&mut self.time_input_types, schema, name, volatility);
                return;
            }
        };
        insert(names, schema, name, volatility);
        self.writers |= volatility >= Volatility::Volatile;
    }

    pub(super) fn has_writers(&self) -> bool {
        self.writers
    }

    pub(super) fn has_unlogged(&self) -> bool {
        !self.unlogged.is_empty()
    }

    /// Whether `stmt` reads a relation a standby cannot read (matched by name as written, like
    /// the rest: a false match only sends a read to the primary).
    pub(super) fn reads_unlogged(&self, stmt: &Statement) -> bool {
        let named =
            |names: &Names, schema: Option<&str>, name: &str| worst_named(names, schema, name).is_some();
        !self.unlogged.is_empty()
            && (stmt.tables_read.iter().any(|t| named(&self.unlogged, t.schema.as_deref(), &t.name))
                || stmt.functions.iter().any(|f| named(&self.unlogged_readers, f.schema.as_deref(), &f.name)))
    }

    /// Whether `stmt` converts a value read at run time to a type whose input reads a date/time
    /// type's text (matched by name as written, like the rest: a false match only costs a
    /// cached result).
    pub(super) fn converts_time_input(&self, stmt: &Statement) -> bool {
        let types = &self.time_input_types;
        stmt.input_casts.iter().any(|t| worst_named(types, t.schema.as_deref(), &t.name).is_some())
    }

    /// The worst volatility of the user operators `stmt` uses, the types it casts to and the
    /// views (and tables with policies) it reads. Immutable when none.
    pub(super) fn volatility(&self, stmt: &Statement) -> Volatility {
        let mut worst = Volatility::Immutable;
        if self.operators.is_empty()
            && self.types.is_empty()
            && self.relations.is_empty()
            && self.attribute_functions.is_empty()
        {
            return worst;
        }
        let mut see = |names: &Names, schema: Option<&str>, name: &str| {
            if let Some(v) = worst_named(names, schema, name) {
                worst = worst.max(v);
            }
        };
        for op in &stmt.operators {
            see(&self.operators, op.schema.as_deref(), &op.name);
        }
        for ty in &stmt.cast_types {
            see(&self.types, ty.schema.as_deref(), &ty.name);
        }
        for TableRef { schema, name } in &stmt.tables_read {
            see(&self.relations, schema.as_deref(), name);
        }
        // Taken for a call whether or not the row has a column of that name: which it has is not
        // known here, and a false match only costs a replica read or a cached result.
        for field in &stmt.selected_fields {
            see(&self.attribute_functions, None, field);
            see(&self.types, None, field);
        }
        worst
    }
}

/// The worst volatility of a name as written: a qualified name in its schema, an unqualified one
/// in any schema (the server's search_path is not always known here, and a false match only
/// costs a replica read or a cached result).
fn worst_named(names: &Names, schema: Option<&str>, name: &str) -> Option<Volatility> {
    let schemas = names.get(name)?;
    match schema {
        Some(schema) => schemas.iter().find(|(s, _)| &**s == schema).map(|(_, v)| *v),
        None => schemas.iter().map(|(_, v)| *v).max(),
    }
}
