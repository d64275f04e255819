//! Function volatility from pg_proc.

use std::collections::HashMap;
use std::time::Instant;

use tokio_postgres::Client;

use super::search_path::schemas_to_search;
use super::CatalogError;
use crate::statement::FuncRef;

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
/// worst volatility among them: the call's argument types are not known from the text.
#[derive(Debug, Clone, Default)]
pub struct FunctionCatalog {
    /// name → (schema, worst volatility of that name in that schema)
    by_name: HashMap<Box<str>, Vec<(Box<str>, Volatility)>>,
    loaded_at: Option<Instant>,
}

impl FunctionCatalog {
    /// Reads pg_proc (functions, procedures, aggregates, window functions) of the connected database.
    pub async fn load(client: &Client) -> Result<FunctionCatalog, CatalogError> {
        let rows = client
            .query(
                "SELECT n.nspname::text, p.proname::text, p.provolatile \
                 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace",
                &[],
            )
            .await?;
        let mut catalog = FunctionCatalog::from_entries(rows.iter().map(|row| {
            let schema: String = row.get(0);
            let name: String = row.get(1);
            let code: i8 = row.get(2);
            (schema, name, Volatility::from_provolatile(code))
        }));
        catalog.loaded_at = Some(Instant::now());
        Ok(catalog)
    }

    /// A catalog from (schema, name, volatility) triples; overloads keep the worst volatility.
    pub fn from_entries<S: AsRef<str>>(
        entries: impl IntoIterator<Item = (S, S, Volatility)>,
    ) -> FunctionCatalog {
        let mut by_name: HashMap<Box<str>, Vec<(Box<str>, Volatility)>> = HashMap::new();
        for (schema, name, volatility) in entries {
            let schemas = by_name.entry(name.as_ref().into()).or_default();
            match schemas.iter_mut().find(|(s, _)| &**s == schema.as_ref()) {
                Some((_, worst)) => *worst = (*worst).max(volatility),
                None => schemas.push((schema.as_ref().into(), volatility)),
            }
        }
        FunctionCatalog { by_name, loaded_at: None }
    }

    /// The volatility of a call. A qualified name is looked up in its schema. An unqualified one is
    /// judged by the worst function of that name in any schema PostgreSQL would search (pg_catalog and
    /// the search_path): overload resolution may pick any of them depending on argument types.
    /// `search_path` holds schema names with `$user` already expanded (see [`super::parse_search_path`]).
    pub fn volatility(&self, func: &FuncRef, search_path: &[String]) -> Volatility {
        let Some(schemas) = self.by_name.get(func.name.as_str()) else { return Volatility::Unknown };
        let in_schema = |schema: &str| schemas.iter().find(|(s, _)| &**s == schema).map(|(_, v)| *v);
        match func.schema.as_deref() {
            Some(schema) => in_schema(schema).unwrap_or(Volatility::Unknown),
            None => schemas_to_search(search_path).filter_map(in_schema).max().unwrap_or(Volatility::Unknown),
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
