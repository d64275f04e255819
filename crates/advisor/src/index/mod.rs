//! The index advisor: workload → candidate indexes → proven with hypothetical indexes (or, without
//! hypopg, clearly labelled heuristics) → a small set of suggestions with their evidence.

pub mod apply;
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
};
use crate::workload::WorkloadStatement;
use candidates::{Candidate, Method};
use catalog::{Catalog, TableInfo};
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
    advice.statements = statements;
    advice.catalog = catalog;
    Ok(advice)
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
            skipped.push(&w.query, reason);
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
