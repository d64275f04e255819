//! Statement classification for pgpilot over the real PostgreSQL grammar (libpg_query).
//!
//! - [`Classifier`]: text → [`Statement`] (kind, writes, tables, functions, transaction control,
//!   settings, session effects, hints, fingerprint), cached by exact text; a hit costs well under a
//!   microsecond.
//! - [`FunctionCatalog`] and [`RelationCatalog`]: what the text cannot say (volatility, row level
//!   security, temporary and system relations, partitions, inheritance, views), loaded from a live
//!   database and cheap to consult.
//! - [`route`] and [`cacheability`]: pure decisions over both, with named reasons.

mod analyze;
mod cache;
mod escape_strings;
mod hints;
pub mod normalize;
pub mod quick;
pub mod shape;
mod statement;
mod walk;

pub use analyze::{analyze, mentions_time_word};
pub use cache::{Classifier, ClassifierStats, DEFAULT_MAX_CACHED_TEXT};
pub use escape_strings::with_escape_strings;
pub use hints::{parse_duration, scan_hints, CacheHint, Hints, RouteHint};
pub use quick::{quick_look, FirstWord, QuickLook};
pub use statement::*;

mod cacheability;
pub mod catalog;
mod route;

pub use cacheability::{cacheability, CacheableRead, NotCacheable};
pub use catalog::{
    parse_search_path, CatalogError, FunctionCatalog, ImplicitKind, Oid, RelKind, Relation, RelationCatalog,
    ViewDependencies, Volatility,
};
pub use route::{route, PrimaryReason, Route, READ_ONLY_VOLATILE_BUILTINS};
