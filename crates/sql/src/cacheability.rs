//! May a statement's result be cached, and which relations does a cached result depend on?
//!
//! Default-deny: only a single plain read whose every function is immutable and whose every relation
//! is a known, ordinary, permanent, non-system relation without row level security qualifies.
//! Session-level refusals (inside an explicit transaction, `SET pgpilot.cache = off`, a client pinned
//! by temporary tables, partial fetches, size caps) belong to the caller.

use crate::catalog::{FunctionCatalog, Oid, RelKind, Relation, RelationCatalog, Volatility};
use crate::statement::{Statement, StatementKind, TableRef};

/// A read that may be cached, and what invalidates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheableRead {
    /// Every relation the result depends on (views expanded to what they read), sorted. A write to
    /// any relation whose [`RelationCatalog::invalidation_set`] meets this list invalidates it.
    pub relations: Vec<Oid>,
}

/// Why a result is not cached. Each has a stable snake_case name for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotCacheable {
    Unparsed,
    /// A `/* pgpilot:nocache */` hint.
    NoCacheHint,
    /// Not a SELECT (or VALUES / TABLE).
    NotASelect,
    MultiStatement,
    /// A data-modifying statement inside WITH.
    WritingCte,
    SelectInto,
    /// FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE.
    Locking,
    /// Anything else that writes (nextval, advisory locks...).
    Writes,
    VolatileFunction,
    /// Stable functions and SQL value functions (now(), CURRENT_TIMESTAMP, current_user ...).
    StableFunction,
    UnknownFunction,
    /// 'now', 'today', 'tomorrow', 'yesterday' as a date/time literal (or a bound parameter value).
    TimeLiteral,
    /// A column or expression cast to a date/time type: it may be text holding 'now'.
    TimeInputCast,
    /// TABLESAMPLE without REPEATABLE: another sample each time.
    RandomSample,
    SystemCatalog,
    TemporaryTable,
    RowLevelSecurity,
    /// A sequence: nextval changes it without any write the cache could see.
    Sequence,
    /// A foreign table: its data changes on another server.
    ForeignTable,
    /// A relation the catalog does not know (not created yet, a temporary table, a stale catalog).
    UnknownRelation,
}

impl NotCacheable {
    pub fn as_str(&self) -> &'static str {
        match self {
            NotCacheable::Unparsed => "unparsed",
            NotCacheable::NoCacheHint => "nocache_hint",
            NotCacheable::NotASelect => "not_a_select",
            NotCacheable::MultiStatement => "multi_statement",
            NotCacheable::WritingCte => "writing_cte",
            NotCacheable::SelectInto => "select_into",
            NotCacheable::Locking => "locking_clause",
            NotCacheable::Writes => "writes",
            NotCacheable::VolatileFunction => "volatile_function",
            NotCacheable::StableFunction => "stable_function",
            NotCacheable::UnknownFunction => "unknown_function",
            NotCacheable::TimeLiteral => "time_literal",
            NotCacheable::TimeInputCast => "time_input_cast",
            NotCacheable::RandomSample => "tablesample",
            NotCacheable::SystemCatalog => "system_catalog",
            NotCacheable::TemporaryTable => "temporary_table",
            NotCacheable::RowLevelSecurity => "row_level_security",
            NotCacheable::Sequence => "sequence",
            NotCacheable::ForeignTable => "foreign_table",
            NotCacheable::UnknownRelation => "unknown_relation",
        }
    }

    /// Every reason, for registering metrics up front.
    pub const ALL: [NotCacheable; 20] = [
        NotCacheable::Unparsed,
        NotCacheable::NoCacheHint,
        NotCacheable::NotASelect,
        NotCacheable::MultiStatement,
        NotCacheable::WritingCte,
        NotCacheable::SelectInto,
        NotCacheable::Locking,
        NotCacheable::Writes,
        NotCacheable::VolatileFunction,
        NotCacheable::StableFunction,
        NotCacheable::UnknownFunction,
        NotCacheable::TimeLiteral,
        NotCacheable::TimeInputCast,
        NotCacheable::RandomSample,
        NotCacheable::SystemCatalog,
        NotCacheable::TemporaryTable,
        NotCacheable::RowLevelSecurity,
        NotCacheable::Sequence,
        NotCacheable::ForeignTable,
        NotCacheable::UnknownRelation,
    ];
}

/// Decides whether the result of `stmt` may be cached, given the database's catalogs and the
/// session's search_path (schemas, `$user` expanded).
pub fn cacheability(
    stmt: &Statement,
    functions: &FunctionCatalog,
    relations: &RelationCatalog,
    search_path: &[String],
) -> Result<CacheableRead, NotCacheable> {
    statement_shape(stmt)?;
    time_input_conversion(stmt, functions, relations, search_path)?;
    function_volatility(stmt, functions, search_path)?;
    let mut deps = Vec::new();
    for table in &stmt.tables_read {
        let Some(rel) = relations.resolve(table, search_path) else {
            return Err(if stmt.shape.system_catalog {
                NotCacheable::SystemCatalog
            } else {
                NotCacheable::UnknownRelation
            });
        };
        check_relation(rel)?;
        // A foreign partition, a view's base table: whatever rows the read may return.
        for oid in relations.read_reach(rel) {
            match relations.by_oid(oid) {
                Some(inner) => check_relation(inner)?,
                None => return Err(NotCacheable::UnknownRelation),
            }
        }
        deps.extend(relations.read_dependencies(rel));
    }
    deps.sort_unstable();
    deps.dedup();
    Ok(CacheableRead { relations: deps })
}

/// What the text alone rules out.
fn statement_shape(stmt: &Statement) -> Result<(), NotCacheable> {
    if stmt.kind == StatementKind::Unparsed {
        return Err(NotCacheable::Unparsed);
    }
    if stmt.hints.nocache {
        return Err(NotCacheable::NoCacheHint);
    }
    if stmt.statement_count > 1 {
        return Err(NotCacheable::MultiStatement);
    }
    if stmt.kind != StatementKind::Select {
        return Err(NotCacheable::NotASelect);
    }
    let shape = &stmt.shape;
    if shape.writing_cte {
        return Err(NotCacheable::WritingCte);
    }
    if shape.select_into {
        return Err(NotCacheable::SelectInto);
    }
    if shape.locking.is_some() {
        return Err(NotCacheable::Locking);
    }
    if stmt.writes {
        return Err(NotCacheable::Writes);
    }
    if shape.time_literal {
        return Err(NotCacheable::TimeLiteral);
    }
    if shape.time_input {
        return Err(NotCacheable::TimeInputCast);
    }
    if shape.random_sample {
        return Err(NotCacheable::RandomSample);
    }
    if !stmt.value_functions.is_empty() {
        return Err(NotCacheable::StableFunction);
    }
    Ok(())
}

/// A value read at run time converted to a composite, domain, array or range over a date/time
/// type (`row(s)::comp`, `s::comp`, an XMLTABLE column of such a type): its text may hold 'now'
/// there too. A table's row type counts whatever its columns: ALTER TABLE ADD COLUMN changes it
/// without the function catalog, which lists the others, being read again.
fn time_input_conversion(
    stmt: &Statement,
    functions: &FunctionCatalog,
    relations: &RelationCatalog,
    search_path: &[String],
) -> Result<(), NotCacheable> {
    let to_row_type = stmt
        .input_casts
        .iter()
        .any(|t| relations.resolve(&TableRef::new(t.schema.as_deref(), &t.name), search_path).is_some());
    if to_row_type || functions.converts_time_input(stmt) {
        return Err(NotCacheable::TimeInputCast);
    }
    Ok(())
}

/// Only immutable functions keep a result valid; the worst one decides the reason. Those the
/// text does not name count too: user operators, casts to types with cast functions or domain
/// CHECK constraints, views calling volatile functions.
fn function_volatility(
    stmt: &Statement,
    catalog: &FunctionCatalog,
    search_path: &[String],
) -> Result<(), NotCacheable> {
    let named = stmt.functions.iter().map(|f| catalog.volatility(f, search_path)).max();
    let worst = named.max(Some(catalog.implicit_volatility(stmt)).filter(|v| *v != Volatility::Immutable));
    match worst {
        None | Some(Volatility::Immutable) => Ok(()),
        Some(Volatility::Stable) => Err(NotCacheable::StableFunction),
        Some(Volatility::Volatile) => Err(NotCacheable::VolatileFunction),
        Some(Volatility::Unknown) => Err(NotCacheable::UnknownFunction),
    }
}

fn check_relation(rel: &Relation) -> Result<(), NotCacheable> {
    if rel.system {
        return Err(NotCacheable::SystemCatalog);
    }
    if rel.temporary {
        return Err(NotCacheable::TemporaryTable);
    }
    if rel.row_security || rel.force_row_security {
        return Err(NotCacheable::RowLevelSecurity);
    }
    match rel.kind {
        RelKind::Sequence => return Err(NotCacheable::Sequence),
        RelKind::ForeignTable => return Err(NotCacheable::ForeignTable),
        RelKind::Other => return Err(NotCacheable::UnknownRelation),
        _ => {}
    }
    match rel.view_volatility {
        Volatility::Immutable => Ok(()),
        Volatility::Stable => Err(NotCacheable::StableFunction),
        Volatility::Volatile => Err(NotCacheable::VolatileFunction),
        Volatility::Unknown => Err(NotCacheable::UnknownFunction),
    }
}
