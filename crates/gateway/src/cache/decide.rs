//! Per database: the cache settings, the relation catalog, the table versions, and the two
//! decisions made per statement: may this read be cached (and under which rule), and what does
//! this write invalidate.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pgpilot_sql::{
    FuncRef, FunctionCatalog, Oid, RelKind, RelationCatalog, Statement, StatementKind, TableRef, Volatility,
};

use super::stats::Bypass;
use super::versions::Versions;
use crate::config::cache::{CacheRule, Consistency, DatabaseCache};

/// The cache state of one database.
pub struct DbCache {
    pub versions: Versions,
    pub relations: ArcSwap<RelationCatalog>,
    pub settings: ArcSwap<DatabaseCache>,
    enabled: AtomicBool,
    /// DDL ran through pgpilot: the relation catalog must be read again (a load that started
    /// after generation `catalog_wanted` was asked for) before anything is cached.
    catalog_wanted: AtomicU64,
    catalog_have: AtomicU64,
    pub catalog_loaded: AtomicBool,
    /// The LISTEN connection for the triggers' notifications.
    pub channel: super::channel::ChannelState,
    /// Reads pgpilot.cache_versions for `strict` results.
    pub oracle: super::oracle::Oracle,
    /// Misses seen lately, for filling on the primary only what repeats.
    pub misses: super::admission::MissLedger,
}

/// How a cacheable read is cached.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    pub relations: Box<[Oid]>,
    pub tags: Box<[Box<str>]>,
    pub ttl: Duration,
    pub consistency: Consistency,
    pub fingerprint: u64,
    /// `strict`: the tables whose trigger-kept versions guard the result (partitions included).
    pub watched: Box<[Oid]>,
}

/// What a statement that may write invalidates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Invalidation {
    #[default]
    Nothing,
    Relations(Vec<Oid>),
    /// Every cached result of the database.
    Everything,
    /// Everything, and the relation catalog is read again (DDL).
    Schema,
}

impl Invalidation {
    pub fn merge(&mut self, other: Invalidation) {
        match (std::mem::take(self), other) {
            (Invalidation::Schema, _) | (_, Invalidation::Schema) => *self = Invalidation::Schema,
            (Invalidation::Everything, _) | (_, Invalidation::Everything) => *self = Invalidation::Everything,
            (Invalidation::Nothing, o) | (o, Invalidation::Nothing) => *self = o,
            (Invalidation::Relations(mut a), Invalidation::Relations(b)) => {
                a.extend(b);
                a.sort_unstable();
                a.dedup();
                *self = Invalidation::Relations(a);
            }
        }
    }
}

impl DbCache {
    pub fn new(settings: &DatabaseCache) -> DbCache {
        DbCache {
            versions: Versions::default(),
            relations: ArcSwap::from_pointee(RelationCatalog::default()),
            settings: ArcSwap::from_pointee(settings.clone()),
            enabled: AtomicBool::new(settings.enabled),
            catalog_wanted: AtomicU64::new(0),
            catalog_have: AtomicU64::new(0),
            channel: Default::default(),
            oracle: Default::default(),
            misses: Default::default(),
            catalog_loaded: AtomicBool::new(false),
        }
    }

    /// One relaxed load: the whole cost of the cache for a database that does not use it.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// A reload changed the settings: results cached under the old ones go.
    pub fn update(&self, settings: &DatabaseCache) {
        if **self.settings.load() != *settings {
            self.versions.bump_all();
            self.settings.store(Arc::new(settings.clone()));
            self.enabled.store(settings.enabled, Relaxed);
        }
    }

    /// Whether DDL asked for a catalog newer than the one held.
    pub fn catalog_stale(&self) -> bool {
        self.catalog_have.load(SeqCst) < self.catalog_wanted.load(SeqCst)
    }

    /// Asks for the catalog to be read again.
    pub fn want_catalog(&self) {
        self.catalog_wanted.fetch_add(1, SeqCst);
    }

    /// The generation a load starting now satisfies.
    pub fn catalog_generation(&self) -> u64 {
        self.catalog_wanted.load(SeqCst)
    }

    /// A catalog whose reading started when `generation` was the one wanted. When DDL made
    /// straight in PostgreSQL changed what a cached result depends on (a cascading foreign key, a
    /// trigger, a partition, a table dropped or shadowed), results cached under the old catalog
    /// go: writes judged by it missed what they changed.
    pub fn set_relations(&self, catalog: RelationCatalog, generation: u64) {
        let triggers =
            catalog.relations().iter().any(|r| r.schema == "pgpilot" && r.name == "cache_versions");
        self.channel.set_required(triggers);
        if self.catalog_loaded.load(Relaxed) && self.relations.load().links_changed(&catalog) {
            self.versions.bump_all();
        }
        self.relations.store(Arc::new(catalog));
        self.catalog_loaded.store(true, Relaxed);
        self.catalog_have.fetch_max(generation, SeqCst);
    }

    /// May the result of `stmt` be cached, and how.
    pub fn plan_read(
        &self,
        stmt: &Statement,
        functions: &FunctionCatalog,
        search_path: &[String],
    ) -> Result<ReadPlan, Bypass> {
        if !self.catalog_loaded.load(Relaxed) || self.catalog_stale() {
            return Err(Bypass::CatalogLoading);
        }
        let relations = self.relations.load();
        let read =
            pgpilot_sql::cacheability(stmt, functions, &relations, search_path).map_err(Bypass::Statement)?;
        if self.channel.required() && read.relations.iter().any(|oid| lacks_trigger(&relations, *oid)) {
            return Err(Bypass::TableWithoutTrigger);
        }
        let settings = self.settings.load();
        let mut plan = ReadPlan {
            relations: read.relations.into(),
            tags: Box::default(),
            ttl: settings.ttl.get(),
            consistency: settings.consistency,
            fingerprint: stmt.fingerprint,
            watched: Box::default(),
        };
        let matches = |r: &&CacheRule| {
            r.fingerprint_value() == Some(stmt.fingerprint)
                || r.tables.iter().any(|t| {
                    let table = table_ref(t);
                    relations
                        .resolve(&table, search_path)
                        .is_some_and(|rel| plan.relations.contains(&rel.oid))
                })
        };
        // A table an operator said never to cache stays uncached in every read of it: joined
        // with a table of an earlier rule, or under an application's hint.
        if settings.rules.iter().filter(matches).any(|r| r.cache == Some(false)) {
            return Err(Bypass::Rule);
        }
        let rule = settings.rules.iter().find(matches);
        let mut tags: Vec<Box<str>> = Vec::new();
        if let Some(rule) = rule {
            plan.ttl = rule.ttl.map(|t| t.get()).unwrap_or(plan.ttl);
            plan.consistency = rule.consistency.unwrap_or(plan.consistency);
            tags.extend(rule.tags.iter().map(|t| t.as_str().into()));
        }
        if let Some(hint) = &stmt.hints.cache {
            plan.ttl = hint.ttl.unwrap_or(plan.ttl);
            // Added to the rule's: invalidating by the rule's tag still reaches hinted results.
            tags.extend(hint.tags.iter().map(|t| t.as_str().into()));
        }
        tags.sort_unstable();
        tags.dedup();
        plan.tags = tags.into();
        if stmt.hints.cache.is_none() && rule.is_none() && settings.only_rules {
            return Err(Bypass::Rule);
        }
        if plan.consistency == Consistency::Strict {
            // A write through a parent (partitioned or inherited) bumps only the parent's version
            // (its statement triggers fire on the table the statement names): a read of a child
            // watches its ancestors too.
            let mut watched: Vec<Oid> = plan.relations.to_vec();
            for oid in plan.relations.iter() {
                if let Some(rel) = relations.by_oid(*oid) {
                    watched.extend(&rel.descendants);
                    watched.extend(&rel.ancestors);
                }
            }
            watched.sort_unstable();
            watched.dedup();
            plan.watched = watched.into();
        }
        Ok(plan)
    }

    /// What a statement run through pgpilot invalidates once its transaction ends. Errs towards
    /// invalidating everything: any text it cannot account for (DDL, CALL, DO, user functions that
    /// may write, tables with triggers, names it cannot resolve) drops every result of the database.
    /// `sent_to_primary_on_request` (a hint or `SET pgpilot.route = primary`) makes every function
    /// outside pg_catalog one that may write, whatever its declared volatility.
    pub fn invalidation_of(
        &self,
        stmt: &Statement,
        functions: &FunctionCatalog,
        search_path: &[String],
        sent_to_primary_on_request: bool,
    ) -> Invalidation {
        use StatementKind as K;
        if matches!(stmt.transaction, Some(pgpilot_sql::TxnControl::CommitPrepared(_))) {
            // What the prepared transaction wrote is not known here.
            return Invalidation::Everything;
        }
        // User operators, casts and views run functions the text does not name.
        let calls_user_code = stmt.functions.iter().any(|f| {
            may_write_through(f, functions, search_path)
                || sent_to_primary_on_request && !functions.resolves_in_pg_catalog(f, search_path)
        }) || functions.has_implicit_writers()
            && functions.implicit_volatility(stmt) == Volatility::Volatile;
        let harmless = stmt.kinds.iter().all(|k| {
            matches!(
                k,
                K::Select
                    | K::Transaction(_)
                    | K::Set
                    | K::Show
                    | K::Listen
                    | K::Unlisten
                    | K::Notify
                    | K::Prepare
                    | K::Deallocate
                    | K::Discard
                    | K::DeclareCursor
                    | K::Fetch
                    | K::CloseCursor
                    | K::Lock
                    | K::Explain { analyze: false }
                    | K::Vacuum
                    | K::Empty
                    | K::Copy(pgpilot_sql::CopyDirection::To)
            )
        });
        if stmt.kinds.iter().any(|k| matches!(k, K::Ddl | K::Unparsed | K::Utility)) {
            // The catalog may change (RLS, new tables, partitions): read it again, now and at commit.
            self.want_catalog();
            return Invalidation::Schema;
        }
        if stmt.invalidates_everything || calls_user_code {
            return Invalidation::Everything;
        }
        if harmless && stmt.tables_written.is_empty() {
            return Invalidation::Nothing;
        }
        let dml = stmt.kinds.iter().all(|k| {
            matches!(
                k,
                K::Select
                    | K::Insert
                    | K::Update
                    | K::Delete
                    | K::Merge
                    | K::Copy(_)
                    | K::Truncate
                    | K::Transaction(_)
                    | K::Lock
            )
        });
        if !dml {
            return Invalidation::Everything;
        }
        if self.catalog_stale() {
            // DDL (here or through another instance) may have made new links between tables
            // (a foreign key that cascades, a partition): the catalog held may miss some.
            return Invalidation::Everything;
        }
        let relations = self.relations.load();
        let mut oids = Vec::new();
        for t in &stmt.tables_written {
            let Some(rel) = relations.resolve(t, search_path) else {
                return Invalidation::Everything;
            };
            // A trigger of a partition, of a table a cascading foreign key changes, of a view's
            // base table may change any other table.
            if rel.write_reaches_code {
                return Invalidation::Everything;
            }
            oids.extend(relations.invalidation_set(rel));
        }
        oids.sort_unstable();
        oids.dedup();
        if oids.is_empty() {
            Invalidation::Nothing
        } else {
            Invalidation::Relations(oids)
        }
    }

    /// Bumps the versions of what `inv` names; returns how many invalidations that was.
    pub fn apply(&self, inv: &Invalidation) -> u64 {
        match inv {
            Invalidation::Nothing => 0,
            Invalidation::Relations(oids) => {
                oids.iter().for_each(|&o| self.versions.bump_relation(o));
                oids.len() as u64
            }
            Invalidation::Everything => {
                self.versions.bump_all();
                1
            }
            Invalidation::Schema => {
                self.want_catalog();
                self.versions.bump_all();
                1
            }
        }
    }

    /// A table named by a person (`schema.table` or `table`, public first): what invalidating it
    /// bumps; None when the database has no such table. Before the catalog is first read nothing is
    /// cached from it, and any name drops everything.
    pub fn invalidation_of_table(&self, name: &str) -> Option<Invalidation> {
        if !self.catalog_loaded.load(Relaxed) {
            return Some(Invalidation::Everything);
        }
        let relations = self.relations.load();
        let path = vec!["public".to_string()];
        let rel = relations.resolve(&table_ref(name), &path)?;
        Some(Invalidation::Relations(relations.invalidation_set(rel)))
    }
}

/// Built-in functions (pg_catalog) do not write user tables, but those that run a query given as
/// text (`query_to_xml`, `ts_stat`) may run one that does; any other volatile or unknown function
/// may write. An unqualified name is a built-in only when no schema of the path defines a function
/// of that name too (`public.length(integer)` would win over pg_catalog's for an integer).
fn may_write_through(f: &FuncRef, functions: &FunctionCatalog, search_path: &[String]) -> bool {
    if f.runs_query_text() {
        return true;
    }
    if functions.resolves_in_pg_catalog(f, search_path) {
        let builtin = FuncRef::new(Some("pg_catalog"), &f.name);
        if functions.volatility(&builtin, search_path) != Volatility::Unknown {
            return false;
        }
    }
    matches!(functions.volatility(f, search_path), Volatility::Volatile | Volatility::Unknown)
}

/// `schema.table` or `table`, folded to lower case unless double-quoted.
pub fn table_ref(name: &str) -> TableRef {
    let fold = |s: &str| {
        if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
            s[1..s.len() - 1].replace("\"\"", "\"")
        } else {
            s.to_ascii_lowercase()
        }
    };
    match name.split_once('.') {
        Some((schema, table)) => TableRef::new(Some(&fold(schema)), &fold(table)),
        None => TableRef::new(None, &fold(name)),
    }
}

/// A table (not a view, a sequence or a catalog) without the trigger that reports writes made
/// straight in PostgreSQL.
fn lacks_trigger(relations: &RelationCatalog, oid: Oid) -> bool {
    relations.by_oid(oid).is_some_and(|rel| {
        matches!(rel.kind, RelKind::Table | RelKind::PartitionedTable) && !rel.system && !rel.cache_trigger
    })
}
