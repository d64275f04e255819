//! What the text cannot say, read from a live database: function volatility and relation facts.
//! Both catalogs are plain immutable values: load a new one to refresh and swap it in (ArcSwap).

mod functions;
mod implicit;
mod proc_worst;
mod relations;
mod search_path;

pub use functions::{FunctionCatalog, Volatility};
pub use implicit::ImplicitKind;
pub use relations::{Oid, RelKind, Relation, RelationCatalog, SearchPathSetFor, ViewDependencies};
pub use search_path::parse_search_path;

/// A catalog query failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading the catalog: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("reading the catalog: an answer of an unexpected shape")]
    Shape,
}
