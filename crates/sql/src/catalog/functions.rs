//! Function volatility from pg_proc: a function's own, or worse, that of what it depends on.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use tokio_postgres::{Client, SimpleQueryMessage};

use super::implicit::{implicit_sql, ImplicitCode, ImplicitKind};
use super::proc_worst::proc_worst_cte;
use super::relations::{SearchPathSetFor, TextRows};
use super::search_path::schemas_to_search;
use super::CatalogError;
use crate::statement::{FuncRef, Statement};

/// Every function of the database with its effective volatility (see `proc_worst_cte`).
fn functions_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "WITH RECURSIVE {} SELECT n.nspname::text, p.proname::text, w.code FROM pg_catalog.pg_proc p \
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace JOIN proc_worst w ON w.oid = p.oid",
            proc_worst_cte()
        )
    })
}

/// How much a function's result may change (pg_proc.provolatile). Ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Volatility {
    /// Same result for the same arguments, forever.
    Immutable,
    /// Same result within one statement; may depend on settings, time of the transaction, the role.
    Stable,
    /// May change on every call, may change the database.
    Volatile,
    /// Not in the catalog that was loaded (or in a schema that cannot be searched from here).
    Unknown,
}

impl Volatility {
    /// pg_proc.provolatile: 'i', 's' or 'v'.
    pub fn from_provolatile(code: i8) -> Volatility {
        match code as u8 {
            b'i' => Volatility::Immutable,
            b's' => Volatility::Stable,
            b'v' => Volatility::Volatile,
            _ => Volatility::Unknown,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Volatility::Immutable => "immutable",
            Volatility::Stable => "stable",
            Volatility::Volatile => "volatile",
            Volatility::Unknown => "unknown",
        }
    }
}

/// The volatility of every function of one database, by schema and name. Overloads collapse to the
/// worst volatility among them: the call's argument types are not known from the text. A
/// function's volatility is the worst of its own and of the functions it depends on (see
/// `proc_worst_cte`). Also holds what runs functions the text does not name ([`ImplicitKind`]).
#[derive(Debug, Clone, Default)]
pub struct FunctionCatalog {
    /// name → (schema, worst volatility of that name in that schema)
    by_name: Names,
    /// What runs functions the text does not name.
    implicit: ImplicitCode,
    loaded_at: Option<Instant>,
    /// Function DDL ran since this was read: until the catalog is read again, a call that may
    /// reach a function outside pg_catalog is unknown (the DDL may have made it write).
    outdated: bool,
    /// Whose sessions start with a search_path the server gives them (ALTER ROLE / DATABASE ...
    /// SET search_path): for a client of theirs that sets none, pgpilot does not know which
    /// schemas unqualified names resolve in.
    search_path_set_for: SearchPathSetFor,
}

pub(super) type Names = HashMap<Box<str>, Vec<(Box<str>, Volatility)>>;

pub(super) fn insert(names: &mut Names, schema: &str, name: &str, volatility: Volatility) {
    let schemas = names.entry(name.into()).or_default();
    match schemas.iter_mut().find(|(s, _)| &**s == schema) {
        Some((_, worst)) => *worst = (*worst).max(volatility),
        None => schemas.push((schema.into(), volatility)),
    }
}

impl FunctionCatalog {
    /// The queries [`FunctionCatalog::from_text_rows`] wants the answers of, in this order (the
    /// gateway's monitor runs them on a connection of its own).
    pub fn text_queries() -> [&'static str; 3] {
        [functions_sql(), implicit_sql(), super::relations::SEARCH_PATH_SET_SQL]
    }

    /// Builds the catalog from the text answers of [`FunctionCatalog::text_queries`]; None when an
    /// answer does not have the expected shape.
    pub fn from_text_rows(answers: &[TextRows; 3]) -> Option<FunctionCatalog> {
        fn text(row: &[Option<String>], i: usize) -> Option<&str> {
            row.get(i).and_then(|v| v.as_deref())
        }
        let code = |row: &[Option<String>], i: usize| {
            Some(Volatility::from_provolatile(text(row, i)?.bytes().next()? as i8))
        };
        let functions: Option<Vec<_>> =
            answers[0].iter().map(|row| Some((text(row, 0)?, text(row, 1)?, code(row, 2)?))).collect();
        let implicit: Option<Vec<_>> = answers[1]
            .iter()
            .map(|row| {
                let kind = ImplicitKind::from_code(text(row, 0)?)?;
                Some((kind, text(row, 1)?, text(row, 2)?, code(row, 3)?))
            })
            .collect();
        let mut catalog = FunctionCatalog::from_entries(functions?).with_implicit(implicit?);
        catalog.loaded_at = Some(Instant::now());
        catalog.search_path_set_for =
            SearchPathSetFor::from_roles(answers[2].iter().map(|row| text(row, 0).map(str::to_string)));
        Some(catalog)
    }

    /// Reads pg_proc (functions, procedures, aggregates, window functions) of the connected
    /// database, and what runs functions the text does not name.
    pub async fn load(client: &Client) -> Result<FunctionCatalog, CatalogError> {
        let mut answers: [TextRows; 3] = Default::default();
        for (answer, sql) in answers.iter_mut().zip(FunctionCatalog::text_queries()) {
            *answer = client
                .simple_query(sql)
                .await?
                .iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(row) => {
                        Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect())
                    }
                    _ => None,
                })
                .collect();
        }
        FunctionCatalog::from_text_rows(&answers).ok_or(CatalogError::Shape)
    }

    /// A catalog from (schema, name, volatility) triples; overloads keep the worst volatility.
    pub fn from_entries<S: AsRef<str>>(
        entries: impl IntoIterator<Item = (S, S, Volatility)>,
    ) -> FunctionCatalog {
        let mut by_name = Names::new();
        for (schema, name, volatility) in entries {
            insert(&mut by_name, schema.as_ref(), name.as_ref(), volatility);
        }
        FunctionCatalog { by_name, ..FunctionCatalog::default() }
    }

    /// Adds (kind, schema, name, volatility) of operators, types and relations that run functions
    /// the text does not name.
    pub fn with_implicit<S: AsRef<str>>(
        mut self,
        entries: impl IntoIterator<Item = (ImplicitKind, S, S, Volatility)>,
    ) -> FunctionCatalog {
        for (kind, schema, name, volatility) in entries {
            self.implicit.add(kind, schema.as_ref(), name.as_ref(), volatility);
        }
        self
    }

    /// Does anything in the database run a volatile function where the text names none (a user
    /// operator, a cast, a domain, a view)? Most databases have nothing of the kind: then a
    /// statement that calls no function by name calls no volatile one.
    pub fn has_implicit_writers(&self) -> bool {
        self.implicit.has_writers()
    }

    /// Whether sessions of `role` start with a search_path pgpilot does not know.
    pub fn search_path_set_for(&self, role: &str) -> bool {
        self.search_path_set_for.includes(role)
    }

    /// Does the database have relations a standby cannot read (unlogged ones)? Then a plain
    /// SELECT must be parsed to see whether it reads one.
    pub fn has_standby_unreadable(&self) -> bool {
        self.implicit.has_unlogged()
    }

    /// Whether `stmt` reads an unlogged relation (or a view over one): only the primary can.
    pub fn reads_standby_unreadable(&self, stmt: &Statement) -> bool {
        self.implicit.reads_unlogged(stmt)
    }

    /// Whether `stmt` converts a value read at run time to a type whose input may read 'now' (a
    /// composite, domain, array or range over a date/time type). A catalog outdated by DDL does
    /// not know the types made since: any such conversion counts.
    pub fn converts_time_input(&self, stmt: &Statement) -> bool {
        self.implicit.converts_time_input(stmt) || self.outdated && !stmt.input_casts.is_empty()
    }

    /// The worst volatility of what `stmt` runs without naming it: the user operators it uses,
    /// the types it casts to, the views (and tables with policies) it reads, the functions its
    /// field selections (`a.name`) may call in attribute notation. Immutable when none.
    pub fn implicit_volatility(&self, stmt: &Statement) -> Volatility {
        self.implicit.volatility(stmt)
    }

    /// The volatility of a call. A qualified name is looked up in its schema. An unqualified one is
    /// judged by the worst function of that name in any schema PostgreSQL would search (pg_catalog and
    /// the search_path): overload resolution may pick any of them depending on argument types.
    /// `search_path` holds schema names with `$user` already expanded (see [`super::parse_search_path`]).
    /// Built-ins that run a query given as text are taken as volatile: the query may write.
    pub fn volatility(&self, func: &FuncRef, search_path: &[String]) -> Volatility {
        if self.outdated && !self.resolves_in_pg_catalog(func, search_path) {
            return Volatility::Unknown;
        }
        let declared = self.declared_volatility(func, search_path);
        if func.runs_query_text() {
            return declared.max(Volatility::Volatile);
        }
        declared
    }

    fn declared_volatility(&self, func: &FuncRef, search_path: &[String]) -> Volatility {
        let Some(schemas) = self.by_name.get(func.name.as_str()) else { return Volatility::Unknown };
        let in_schema = |schema: &str| schemas.iter().find(|(s, _)| &**s == schema).map(|(_, v)| *v);
        match func.schema.as_deref() {
            Some(schema) => in_schema(schema).unwrap_or(Volatility::Unknown),
            None => schemas_to_search(search_path).filter_map(in_schema).max().unwrap_or(Volatility::Unknown),
        }
    }

    /// This catalog, marked as outdated by function DDL (see `outdated`).
    pub fn outdated(&self) -> FunctionCatalog {
        FunctionCatalog { outdated: true, ..self.clone() }
    }

    /// Whether the call can only reach a pg_catalog function.
    pub fn resolves_in_pg_catalog(&self, func: &FuncRef, search_path: &[String]) -> bool {
        match func.schema.as_deref() {
            Some(schema) => schema == "pg_catalog",
            None => {
                self.by_name
                    .get(func.name.as_str())
                    .is_some_and(|s| s.iter().any(|(s, _)| &**s == "pg_catalog"))
                    && !self.defined_outside_pg_catalog(&func.name, search_path)
            }
        }
    }

    /// Is a function of this name defined in a schema of the path other than pg_catalog?
    pub fn defined_outside_pg_catalog(&self, name: &str, search_path: &[String]) -> bool {
        self.by_name.get(name).is_some_and(|schemas| {
            schemas_to_search(search_path)
                .filter(|s| *s != "pg_catalog")
                .any(|schema| schemas.iter().any(|(s, _)| &**s == schema))
        })
    }

    /// How many distinct (schema, name) pairs are known.
    pub fn len(&self) -> usize {
        self.by_name.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// When the catalog was read from the server (None when built from entries).
    pub fn loaded_at(&self) -> Option<Instant> {
        self.loaded_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(schemas: &[&str]) -> Vec<String> {
        schemas.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_outdated_catalog_knows_only_pg_catalog() {
        let catalog = FunctionCatalog::from_entries([
            ("pg_catalog", "now", Volatility::Stable),
            ("public", "g", Volatility::Stable),
            ("public", "lower", Volatility::Immutable),
            ("pg_catalog", "lower", Volatility::Immutable),
        ])
        .outdated();
        let p = path(&["public"]);
        assert_eq!(catalog.volatility(&FuncRef::new(None, "now"), &p), Volatility::Stable);
        assert_eq!(catalog.volatility(&FuncRef::new(Some("pg_catalog"), "now"), &p), Volatility::Stable);
        assert_eq!(catalog.volatility(&FuncRef::new(None, "g"), &p), Volatility::Unknown);
        // public.lower may have been made to write: the call may reach it.
        assert_eq!(catalog.volatility(&FuncRef::new(None, "lower"), &p), Volatility::Unknown);
        assert_eq!(catalog.volatility(&FuncRef::new(None, "lower"), &[]), Volatility::Immutable);
    }

    #[test]
    fn overloads_take_the_worst_and_unqualified_names_search_the_path() {
        let catalog = FunctionCatalog::from_entries([
            ("pg_catalog", "now", Volatility::Stable),
            ("pg_catalog", "lower", Volatility::Immutable),
            ("app", "f", Volatility::Immutable),
            ("app", "f", Volatility::Volatile),
            ("other", "g", Volatility::Immutable),
            ("app", "lower", Volatility::Volatile),
        ]);
        let p = path(&["app", "public"]);
        assert_eq!(catalog.volatility(&FuncRef::new(None, "now"), &p), Volatility::Stable);
        assert_eq!(catalog.volatility(&FuncRef::new(None, "f"), &p), Volatility::Volatile);
        assert_eq!(catalog.volatility(&FuncRef::new(None, "g"), &p), Volatility::Unknown);
        assert_eq!(catalog.volatility(&FuncRef::new(Some("other"), "g"), &p), Volatility::Immutable);
        assert_eq!(catalog.volatility(&FuncRef::new(Some("pg_catalog"), "lower"), &p), Volatility::Immutable);
        // app.lower could win overload resolution for some argument types.
        assert_eq!(catalog.volatility(&FuncRef::new(None, "lower"), &p), Volatility::Volatile);
        assert_eq!(
            catalog.volatility(&FuncRef::new(None, "lower"), &path(&["public"])),
            Volatility::Immutable
        );
        assert_eq!(catalog.volatility(&FuncRef::new(None, "nope"), &p), Volatility::Unknown);
        assert_eq!(catalog.len(), 5);
    }
}
