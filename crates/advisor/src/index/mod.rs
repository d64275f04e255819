//! The index advisor: workload → candidate indexes → proven with hypothetical indexes (or, without
//! hypopg, clearly labelled heuristics) → a small set of suggestions with their evidence.

pub mod apply;
mod btree_size;
pub mod candidates;
pub mod catalog;
mod expr;
mod expression_sample;
pub mod names;
pub mod parse;
pub mod plannable;
pub mod planner;
mod prefixes;
mod select;
mod views;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::Result;

use crate::db::{quote_ident, Db};
pub use crate::keywords::is_reserved;
use crate::options::IndexAdvisorSettings;
use crate::progress::Progress;
use crate::report::{
    Category, Finding, IndexSuggestion, RejectedCandidate, Severity, SkippedStatement, WriteOverhead,
    PARAMETERIZED_EXPRESSION,
};
use crate::workload::WorkloadStatement;
use candidates::{Candidate, Method};
use catalog::{Catalog, ElsewhereSchema, TableInfo};
pub use expr::deparse_expression;
use names::IndexNames;
use parse::StatementShape;
use planner::{PlanSummary, Planner};

/// A workload statement the advisor could plan.
#[derive(Debug, Clone)]
pub struct AnalysedStatement {
    pub workload: WorkloadStatement,
    pub shape: StatementShape,
    pub baseline: PlanSummary,
}

impl AnalysedStatement {
    fn touches(&self, table: u32) -> bool {
        self.shape.accesses.iter().any(|a| a.table == table)
    }
}

/// What the index advisor produced.
#[derive(Debug, Default)]
pub struct IndexAdvice {
    pub suggestions: Vec<IndexSuggestion>,
    /// Candidates the planner was asked about and that are not suggested.
    pub rejected: Vec<RejectedCandidate>,
    /// "hypopg" or "heuristic (why)".
    pub method: String,
    pub analysed: usize,
    pub skipped: Vec<SkippedStatement>,
    /// What the advisor's privileges kept it from analysing, for the report's notes.
    pub notes: Vec<String>,
    pub findings: Vec<Finding>,
    /// The statements as analysed, kept for `--apply` measurements.
    pub statements: Vec<AnalysedStatement>,
    pub catalog: Catalog,
}

pub async fn advise(
    db: &Db,
    workload: &[WorkloadStatement],
    settings: &IndexAdvisorSettings,
    hypopg_problem: Option<String>,
    progress: &dyn Progress,
) -> Result<IndexAdvice> {
    let mut advice = IndexAdvice {
        method: match &hypopg_problem {
            None => "hypopg".to_string(),
            Some(why) => format!("heuristic ({why})"),
        },
        ..Default::default()
    };
    let planner = Planner::new(db).await?;
    let mut skipped = Skipped::default();
    let (statements, catalog) =
        analyse_workload(db, workload, settings, &planner, &mut skipped, progress).await?;
    advice.notes.extend(skipped.privilege_notes(db).await);
    advice.notes.extend(skipped.unreadable_note());
    advice.skipped = skipped.statements;
    advice.analysed = statements.len();
    let unusable = non_immutable_functions(db, &statements).await?;
    let mut by_candidate: BTreeMap<Candidate, Vec<usize>> = BTreeMap::new();
    for (i, s) in statements.iter().enumerate() {
        if s.baseline.total_cost < settings.min_statement_cost {
            continue;
        }
        for access in s.shape.accesses.iter().filter(|a| a.is_selective()) {
            let Some(table) = catalog.tables.get(&access.table) else { continue };
            for c in candidates::for_access(access, table) {
                let uses_unusable =
                    c.key.iter().any(|k| unusable.iter().any(|f| k.sql.contains(&format!("{f}("))));
                if !uses_unusable && c.already_served_by(table).is_none() {
                    by_candidate.entry(c).or_default().push(i);
                }
            }
        }
    }
    let (gin, btree): (Vec<_>, Vec<_>) = by_candidate.into_iter().partition(|(c, _)| c.method == Method::Gin);
    let gin = candidates::fold_jsonb_path_ops(gin);
    let mut names = IndexNames::load(db, &catalog.schemas()).await?;
    if hypopg_problem.is_none() {
        let (proven, rejected) =
            select::prove(&planner, &statements, &catalog, btree, settings, &mut names, progress).await?;
        advice.suggestions.extend(proven);
        advice.rejected = rejected;
    } else {
        advice.findings.push(
            Finding::new(
                Severity::Info,
                Category::Advisor,
                "Index suggestions are heuristics, not proven by the planner",
            )
            .evidence(hypopg_problem.clone().unwrap_or_default())
            .fix(format!(
                "CREATE EXTENSION hypopg; -- Debian/Ubuntu package {}",
                crate::db::extension_package("hypopg", db.version_num).unwrap_or_default()
            )),
        );
        advice.suggestions.extend(select::heuristic(&statements, &catalog, btree, settings, &mut names));
    }
    advice.suggestions.extend(select::heuristic(&statements, &catalog, gin, settings, &mut names));
    rank(&mut advice.suggestions);
    advice.rejected.extend(parameterized_expressions(&statements, &catalog));
    advice.statements = statements;
    advice.catalog = catalog;
    Ok(advice)
}

/// The expressions statements filter on that take a parameter, recorded as rejected: a statement
/// like `to_tsvector($1, body) @@ ...` (pg_stat_statements makes `'english'` a `$1`) would
/// otherwise get no suggestion and no word why.
fn parameterized_expressions(statements: &[AnalysedStatement], catalog: &Catalog) -> Vec<RejectedCandidate> {
    let expressions: BTreeSet<&(u32, String)> =
        statements.iter().flat_map(|s| &s.shape.parameterized_expressions).collect();
    expressions
        .into_iter()
        .filter_map(|(table, expr)| {
            let table = catalog.tables.get(table)?;
            Some(RejectedCandidate {
                table: table.qualified(),
                index: format!("CREATE INDEX ON {} ({expr})", table.qualified()),
                reason: format!(
                    "{PARAMETERIZED_EXPRESSION}, known only when the statement runs, so no index can match it \
                     (pg_stat_statements shows constants as $n: a text search configuration written in the \
                     query, to_tsvector('english', body), is a constant there too): index the expression with \
                     the value the application passes, and write that value in the query"
                ),
                best_cost_reduction: None,
            })
        })
        .collect()
}

/// Statements left out of the analysis, and which of the tables they read the advisor's role may
/// not SELECT from: EXPLAIN needs the privileges running the statement needs.
#[derive(Debug, Default)]
struct Skipped {
    statements: Vec<SkippedStatement>,
    /// Unreadable table (quoted, qualified) → skipped statements that read it.
    unreadable_tables: BTreeMap<String, usize>,
    /// Skipped statements that read at least one unreadable table.
    unreadable_statements: usize,
    /// Schema without USAGE for the advisor's role → skipped statements naming a table in it.
    no_usage: BTreeMap<String, usize>,
    /// Schema off the advisor's search_path → skipped statements naming one of its tables unqualified.
    off_search_path: BTreeMap<String, usize>,
}

impl Skipped {
    fn push(&mut self, query: &str, reason: String) {
        self.statements.push(SkippedStatement { query: query.to_string(), reason });
    }

    /// A statement EXPLAIN refused; counted against the tables it reads that the role cannot.
    fn unplannable(&mut self, query: &str, reason: String, unreadable: Vec<String>) {
        self.unreadable_statements += usize::from(!unreadable.is_empty());
        for table in unreadable {
            *self.unreadable_tables.entry(table).or_default() += 1;
        }
        self.push(query, reason);
    }

    /// A statement naming a table in a schema the role may not use.
    fn no_usage(&mut self, query: &str, schema: &str, reason: String) {
        *self.no_usage.entry(schema.to_string()).or_default() += 1;
        self.push(query, reason);
    }

    /// A statement naming unqualified a table the advisor's search_path does not reach.
    fn off_search_path(&mut self, query: &str, name: &str, schemas: &[ElsewhereSchema]) {
        let listed: Vec<&str> = schemas.iter().map(|s| s.schema.as_str()).collect();
        match schemas.iter().find(|s| !s.usable) {
            Some(blocked) if schemas.iter().all(|s| !s.usable) => self.no_usage(
                query,
                &blocked.schema,
                format!(
                    "table {name} is not on the advisor's search_path: it is in schema {}, on which the \
                     advisor's role has no USAGE",
                    listed.join(", ")
                ),
            ),
            _ => {
                for s in &listed {
                    *self.off_search_path.entry(s.to_string()).or_default() += 1;
                }
                self.push(
                    query,
                    format!(
                        "table {name} is not on the advisor's search_path (it is in schema {}): run the \
                         advisor with the application's search_path",
                        listed.join(", ")
                    ),
                );
            }
        }
    }

    /// What the role and its search_path kept from analysis, with the GRANT or setting that fixes
    /// it: without them a run reads "0 analysed, 110 skipped" and says no more.
    async fn privilege_notes(&self, db: &Db) -> Vec<String> {
        if self.no_usage.is_empty() && self.off_search_path.is_empty() {
            return Vec::new();
        }
        let (role, path) =
            match db.client.query_one("SELECT current_user::text, current_setting('search_path')", &[]).await
            {
                Ok(r) => (quote_ident(&r.get::<_, String>(0)), r.get::<_, String>(1)),
                Err(_) => ("<advisor role>".to_string(), "?".to_string()),
            };
        let listed = |m: &BTreeMap<String, usize>| {
            m.iter().map(|(s, n)| format!("{s} ({n} statement(s))")).collect::<Vec<_>>().join(", ")
        };
        let quoted =
            |m: &BTreeMap<String, usize>| m.keys().map(|s| quote_ident(s)).collect::<Vec<_>>().join(", ");
        let mut notes = Vec::new();
        if !self.no_usage.is_empty() {
            notes.push(format!(
                "statements were skipped for index advice because the advisor's role has no USAGE on schema {}: \
                 GRANT USAGE ON SCHEMA {} TO {role}; (EXPLAIN also needs SELECT on the tables: GRANT SELECT ON \
                 ALL TABLES IN SCHEMA ..., or pg_read_all_data on PostgreSQL 14+)",
                listed(&self.no_usage),
                quoted(&self.no_usage)
            ));
        }
        if !self.off_search_path.is_empty() {
            notes.push(format!(
                "statements were skipped for index advice because they name tables unqualified that the \
                 advisor's search_path ({path}) does not reach; they are in schema {}: give the advisor the \
                 application's search_path, e.g. ALTER ROLE {role} SET search_path = {}, public",
                listed(&self.off_search_path),
                quoted(&self.off_search_path)
            ));
        }
        notes
    }

    /// One line saying which statements went unanalysed for lack of SELECT, and what grants it.
    fn unreadable_note(&self) -> Option<String> {
        if self.unreadable_tables.is_empty() {
            return None;
        }
        let tables: Vec<String> =
            self.unreadable_tables.iter().map(|(t, n)| format!("{t} ({n} statement(s))")).collect();
        Some(format!(
            "{} statement(s) were skipped for index advice: EXPLAIN needs SELECT on the tables a \
             statement reads, and this role lacks it on {}; grant SELECT on them (or pg_read_all_data on \
             PostgreSQL 14+), or run the advisor as their owner or a superuser",
            self.unreadable_statements,
            tables.join(", ")
        ))
    }
}

/// Parses, resolves and plans every workload statement; the ones that cannot be are skipped with a reason.
async fn analyse_workload(
    db: &Db,
    workload: &[WorkloadStatement],
    settings: &IndexAdvisorSettings,
    planner: &Planner<'_>,
    skipped: &mut Skipped,
    progress: &dyn Progress,
) -> Result<(Vec<AnalysedStatement>, Catalog)> {
    let mut names = Vec::new();
    let mut parsable = Vec::new();
    let mut views = views::ViewDefinitions::default();
    for w in workload.iter().take(settings.max_statements) {
        // Candidates come from the tables the views read; the statement is planned as written.
        let seen_through_views = views.expand(db, &w.query).await;
        match parse::referenced_tables(&seen_through_views) {
            Ok(tables) => {
                for t in &tables {
                    if !names.contains(t) {
                        names.push(t.clone());
                    }
                }
                parsable.push((w, seen_through_views, tables));
            }
            Err(e) => skipped.push(&w.query, e.to_string()),
        }
    }
    let catalog = Catalog::load(db, &names).await?;
    progress.stage("planning statements", parsable.len() as u64);
    let mut out = Vec::new();
    for (w, seen_through_views, tables) in parsable {
        progress.advance(1);
        if let Some(schema) = catalog.unusable_schema(&tables) {
            let reason =
                format!("permission denied for schema {schema} (the advisor's role has no USAGE on it)");
            skipped.no_usage(&w.query, schema, reason);
            continue;
        }
        if let Some((name, schemas)) = catalog.off_search_path(&tables) {
            skipped.off_search_path(&w.query, name, schemas);
            continue;
        }
        let shape = match parse::analyse(&seen_through_views, &catalog) {
            Ok(shape) if shape.accesses.is_empty() => {
                skipped.push(&w.query, "reads no user table".into());
                continue;
            }
            Ok(shape) => shape,
            Err(e) => {
                skipped.push(&w.query, e.to_string());
                continue;
            }
        };
        match planner.explain(&w.query, shape.param_count).await {
            Ok(baseline) => out.push(AnalysedStatement { workload: w.clone(), shape, baseline }),
            Err(e) => {
                let unreadable = shape
                    .accesses
                    .iter()
                    .filter_map(|a| catalog.tables.get(&a.table))
                    .filter(|t| !t.readable)
                    .map(TableInfo::qualified)
                    .collect::<BTreeSet<_>>();
                skipped.unplannable(
                    &w.query,
                    format!("EXPLAIN failed: {e}"),
                    unreadable.into_iter().collect(),
                )
            }
        }
    }
    Ok((out, catalog))
}

/// Functions used in candidate expressions that are not IMMUTABLE (an index cannot use them).
async fn non_immutable_functions(db: &Db, statements: &[AnalysedStatement]) -> Result<HashSet<String>> {
    let wanted: HashSet<(String, usize)> =
        statements.iter().flat_map(|s| s.shape.expression_functions.iter().cloned()).collect();
    let mut bad = HashSet::new();
    for (name, nargs) in wanted {
        let row = db
            .client
            .query_one(
                "SELECT count(*) FILTER (WHERE provolatile = 'i') FROM pg_proc WHERE proname = $1 AND pronargs = $2",
                &[&name, &(nargs as i16)],
            )
            .await?;
        if row.get::<_, i64>(0) == 0 {
            bad.insert(name);
        }
    }
    Ok(bad)
}

/// The workload's UPDATE statements on a table that can be HOT now (they set no column an existing
/// index reads) and could not be with a new index (they set a column it reads): PostgreSQL updates
/// a row in place of its page, without touching any index, only when no indexed column changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LostHotUpdates {
    /// Their calls in the workload.
    pub calls: u64,
    pub statements: usize,
    /// The columns they set that the new index reads.
    pub columns: BTreeSet<String>,
}

/// The UPDATE statements of `statements` that the index `candidate` on `table` would make non-HOT.
pub(crate) fn lost_hot_updates(
    statements: &[AnalysedStatement],
    table: &TableInfo,
    candidate: &Candidate,
) -> LostHotUpdates {
    let indexed_now = table.indexed_columns();
    let indexed_then = candidate.indexed_columns(table);
    let mut lost = LostHotUpdates::default();
    for s in statements {
        let Some(access) = s.shape.accesses.iter().find(|a| a.table == table.oid) else { continue };
        let already_not_hot = access.set_columns.iter().any(|c| indexed_now.contains(c.as_str()));
        let newly_indexed: Vec<&String> = access.set_columns.intersection(&indexed_then).collect();
        if already_not_hot || newly_indexed.is_empty() {
            continue;
        }
        lost.calls += s.workload.calls;
        lost.statements += 1;
        lost.columns.extend(newly_indexed.into_iter().cloned());
    }
    lost
}

/// What one more index costs the table's writers, from its statistics and from the workload's
/// UPDATE statements it would make non-HOT.
pub fn write_overhead(table: &TableInfo, lost_hot: &LostHotUpdates) -> WriteOverhead {
    let existing = table.indexes.iter().filter(|i| i.maintained).count() as u32;
    let hot_pct =
        if table.updates > 0 { 100.0 * table.hot_updates as f64 / table.updates as f64 } else { 0.0 };
    let mut summary = format!(
        "{existing} → {} indexes to maintain on every insert and non-HOT update; since statistics reset \
         {} inserts, {} updates ({hot_pct:.0}% HOT), {} deletes",
        existing + 1,
        table.inserts,
        table.updates,
        table.deletes
    );
    if lost_hot.calls > 0 {
        summary.push_str(&lost_hot_text(lost_hot, existing + 1));
    }
    WriteOverhead {
        existing_indexes: existing,
        inserts: table.inserts,
        updates: table.updates,
        hot_updates: table.hot_updates,
        deletes: table.deletes,
        updates_losing_hot: lost_hot.calls,
        summary,
    }
}

/// The HOT updates an index would cost, said plainly: they are the cheap ones, and they stop being.
fn lost_hot_text(lost: &LostHotUpdates, indexes_then: u32) -> String {
    let columns: Vec<String> = lost.columns.iter().map(|c| quote_ident(c)).collect();
    format!(
        "; LOSES HOT UPDATES: {} UPDATE statement(s) of the workload ({} calls) set {}, which this index \
         reads: they can be HOT now and could not be with it (each such update would write all {indexes_then} \
         indexes and leave dead index entries): weigh this before creating it",
        lost.statements,
        lost.calls,
        columns.join(", ")
    )
}

/// Suggestions that would make the workload's HOT updates non-HOT come after those that would
/// not, each group by the cost it saves: their gain is paid for by every such update.
fn rank(suggestions: &mut [IndexSuggestion]) {
    let saved = |s: &IndexSuggestion| s.weighted_cost_before - s.weighted_cost_after.unwrap_or(0.0);
    suggestions.sort_by(|a, b| {
        let costs_hot = |s: &IndexSuggestion| s.write_overhead.updates_losing_hot > 0;
        costs_hot(a)
            .cmp(&costs_hot(b))
            .then_with(|| saved(b).partial_cmp(&saved(a)).unwrap_or(std::cmp::Ordering::Equal))
    });
}

/// Statement index → its planned cost under some set of hypothetical indexes.
pub(crate) type Costs = HashMap<usize, PlanSummary>;
