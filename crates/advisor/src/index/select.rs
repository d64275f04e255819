//! Choosing indexes: each candidate is created hypothetically and the statements on its table are
//! planned again; each statement keeps its best candidate, candidates another chosen index already
//! covers are dropped, and the survivors are validated together (a plan must use each one).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use anyhow::Result;

use super::candidates::Candidate;
use super::catalog::{Catalog, TableInfo};
use super::expression_sample::{self, ExpressionSample};
use super::names::IndexNames;
use super::planner::{PlanSummary, Planner};
use super::{lost_hot_updates, prefixes, write_overhead, AnalysedStatement, Costs};
use crate::options::IndexAdvisorSettings;
use crate::progress::Progress;
use crate::report::{Evidence, HelpedStatement, IndexSuggestion, RejectedCandidate};

/// A candidate after its hypothetical trial.
struct Trial {
    candidate: Candidate,
    size: Option<i64>,
    /// Statements whose cost fell enough with this index, and their cost with it.
    helped: Costs,
    /// For an expression index the planner could judge only with default estimates: the sample
    /// that shows the expression selective, and the expression.
    sampled: Option<(ExpressionSample, String)>,
}

impl Trial {
    /// Whether `plan` counts as helped by this index (see [`helps`]).
    fn helps(&self, plan: &PlanSummary, baseline: f64, settings: &IndexAdvisorSettings) -> bool {
        helps(plan.total_cost, baseline, settings, self.sampled.is_some())
    }
}

/// A plan using the index helps when its cost falls by `min_cost_reduction`; for an expression
/// index whose expression a sample shows selective, when it falls at all (the planner's figure
/// comes from default estimates, see [`expression_sample`]).
fn helps(cost: f64, baseline: f64, settings: &IndexAdvisorSettings, sampled_selective: bool) -> bool {
    if sampled_selective {
        cost < baseline
    } else {
        cost <= baseline * (1.0 - settings.min_cost_reduction)
    }
}

/// What a hypothetical trial of one candidate came to.
enum Outcome {
    Kept(Trial),
    Rejected(RejectedCandidate),
}

pub(super) async fn prove(
    planner: &Planner<'_>,
    statements: &[AnalysedStatement],
    catalog: &Catalog,
    candidates: Vec<(Candidate, Vec<usize>)>,
    settings: &IndexAdvisorSettings,
    names: &mut IndexNames,
    progress: &dyn Progress,
) -> Result<(Vec<IndexSuggestion>, Vec<RejectedCandidate>)> {
    planner.reset_hypothetical().await;
    progress.stage("testing hypothetical indexes", candidates.len() as u64);
    let mut trials = Vec::new();
    let mut rejected = Vec::new();
    for (candidate, _origins) in candidates {
        progress.advance(1);
        let Some(table) = catalog.tables.get(&candidate.table) else { continue };
        match try_candidate(planner, statements, table, candidate, settings).await {
            Outcome::Kept(trial) => trials.push(trial),
            Outcome::Rejected(r) => rejected.push(r),
        }
    }
    let chosen = without_prefixes(&trials, choose(&trials));
    progress.stage("validating the chosen indexes together", chosen.len() as u64);
    let chosen = chosen.into_iter().map(|i| &trials[i]).collect();
    let suggestions = validate(planner, statements, catalog, chosen, settings, names, &mut rejected).await?;
    rejected
        .sort_by(|a, b| b.best_cost_reduction.partial_cmp(&a.best_cost_reduction).unwrap_or(Ordering::Equal));
    Ok((suggestions, rejected))
}

/// A candidate not suggested: its table, its CREATE INDEX, why, and the best a plan gained with it.
fn rejection(
    table: &TableInfo,
    candidate: &Candidate,
    reason: String,
    best: Option<f64>,
) -> RejectedCandidate {
    RejectedCandidate {
        table: table.qualified(),
        index: candidate.create_sql(table, false, None),
        reason,
        best_cost_reduction: best,
    }
}

async fn try_candidate(
    planner: &Planner<'_>,
    statements: &[AnalysedStatement],
    table: &TableInfo,
    candidate: Candidate,
    settings: &IndexAdvisorSettings,
) -> Outcome {
    let index = match planner.hypothetical_index(table, &candidate).await {
        Ok(h) => h,
        Err(e) => {
            let reason = format!("hypopg could not create it: {e}");
            return Outcome::Rejected(rejection(table, &candidate, reason, None));
        }
    };
    let size =
        match super::btree_size::estimate(&candidate, table, planner.rows_indexed(table, &candidate).await) {
            Some(bytes) => Some(bytes),
            None => planner.hypothetical_index_size(&index).await,
        };
    let mut used = Vec::new();
    for (i, s) in statements.iter().enumerate() {
        if !s.touches(candidate.table) || s.baseline.total_cost < settings.min_statement_cost {
            continue;
        }
        if let Ok(plan) = planner.explain(&s.workload.query, s.shape.param_count).await {
            if index.used_by(&plan) {
                used.push((i, plan));
            }
        }
    }
    planner.drop_all(&index).await;
    let reduction =
        |(i, plan): &(usize, PlanSummary)| 1.0 - plan.total_cost / statements[*i].baseline.total_cost;
    let best = used.iter().map(reduction).reduce(f64::max);
    let mut trial = Trial { candidate, size, helped: Costs::new(), sampled: None };
    let falls_short =
        used.iter().any(|(i, plan)| !trial.helps(plan, statements[*i].baseline.total_cost, settings));
    if falls_short && best.is_some_and(|b| b > 0.0) {
        trial.sampled = selective_expression(planner, table, &trial.candidate).await;
    }
    for (i, plan) in used {
        if trial.helps(&plan, statements[i].baseline.total_cost, settings) {
            trial.helped.insert(i, plan);
        }
    }
    if !trial.helped.is_empty() {
        return Outcome::Kept(trial);
    }
    let reason = match best {
        None => "no statement's plan used it".to_string(),
        Some(b) => format!(
            "plans used it, but no statement's cost fell by {:.0}% (at best {:.0}%)",
            100.0 * settings.min_cost_reduction,
            100.0 * b
        ),
    };
    Outcome::Rejected(rejection(table, &trial.candidate, reason, best))
}

/// The sample of the candidate's key expression, when it has one and it is selective.
async fn selective_expression(
    planner: &Planner<'_>,
    table: &TableInfo,
    candidate: &Candidate,
) -> Option<(ExpressionSample, String)> {
    let expression = candidate.key.iter().find(|k| k.column.is_none())?.sql.clone();
    let sample = expression_sample::sample(planner.db(), table, &expression).await?;
    sample.selective().then_some((sample, expression))
}

/// Each statement's best trial (lowest cost; near-ties go to the smaller index), then drops trials
/// whose statements another chosen trial serves nearly as well.
fn choose(trials: &[Trial]) -> Vec<usize> {
    let mut best: BTreeMap<usize, usize> = BTreeMap::new();
    for (t, trial) in trials.iter().enumerate() {
        for (s, plan) in &trial.helped {
            let better = match best.get(s) {
                None => true,
                Some(&b) => {
                    let current = trials[b].helped[s].total_cost;
                    if plan.total_cost < current * 0.95 {
                        true
                    } else if plan.total_cost <= current * 1.05 {
                        smaller(trial, &trials[b])
                    } else {
                        false
                    }
                }
            };
            if better {
                best.insert(*s, t);
            }
        }
    }
    let mut chosen: Vec<usize> = best.values().copied().collect();
    chosen.sort();
    chosen.dedup();
    // Fewest statements first: a narrow index is dropped when a broader chosen one covers it.
    chosen.sort_by_key(|&t| trials[t].helped.len());
    let mut kept: Vec<usize> = chosen.clone();
    for &t in &chosen {
        let mine: Vec<(usize, f64)> = best
            .iter()
            .filter(|(_, &b)| b == t)
            .map(|(&s, _)| (s, trials[t].helped[&s].total_cost))
            .collect();
        let covered_by_other = kept.iter().filter(|&&o| o != t).any(|&o| {
            mine.iter().all(|(s, cost)| trials[o].helped.get(s).is_some_and(|p| p.total_cost <= cost * 1.10))
        });
        if covered_by_other {
            kept.retain(|&k| k != t);
        }
    }
    kept
}

/// Drops chosen trials that lead another chosen trial (the prefix rule of the duplicate check). The
/// joint validation then plans their statements with the longer index alone, so their benefit is
/// counted there, at the cost the longer index really gives them.
fn without_prefixes(trials: &[Trial], chosen: Vec<usize>) -> Vec<usize> {
    let candidates: Vec<&Candidate> = chosen.iter().map(|&t| &trials[t].candidate).collect();
    let folded = prefixes::prefix_keepers(&candidates);
    chosen.into_iter().enumerate().filter(|(i, _)| !folded.contains_key(i)).map(|(_, t)| t).collect()
}

/// Moves the statements of each candidate that leads another into that one (the prefix rule of the
/// duplicate check): the longer index serves them too, and only it is suggested.
fn fold_prefix_statements(grouped: BTreeMap<Candidate, Vec<usize>>) -> BTreeMap<Candidate, Vec<usize>> {
    let entries: Vec<(Candidate, Vec<usize>)> = grouped.into_iter().collect();
    let candidates: Vec<&Candidate> = entries.iter().map(|(c, _)| c).collect();
    let keepers = prefixes::prefix_keepers(&candidates);
    let mut statements: Vec<Vec<usize>> = entries.iter().map(|(_, s)| s.clone()).collect();
    for (&redundant, &keeper) in &keepers {
        let moved = std::mem::take(&mut statements[redundant]);
        statements[keeper].extend(moved);
    }
    entries
        .into_iter()
        .zip(statements)
        .enumerate()
        .filter(|(i, _)| !keepers.contains_key(i))
        .map(|(_, ((candidate, _), mut stmts))| {
            stmts.sort();
            stmts.dedup();
            (candidate, stmts)
        })
        .collect()
}

fn smaller(a: &Trial, b: &Trial) -> bool {
    match (a.size, b.size) {
        (Some(x), Some(y)) if x != y => x < y,
        _ => {
            (a.candidate.key.len() + a.candidate.include.len())
                < (b.candidate.key.len() + b.candidate.include.len())
        }
    }
}

/// Creates the chosen indexes together and plans every affected statement once more: an index no
/// plan uses is dropped, and the report's before/after costs come from this joint run.
async fn validate(
    planner: &Planner<'_>,
    statements: &[AnalysedStatement],
    catalog: &Catalog,
    chosen: Vec<&Trial>,
    settings: &IndexAdvisorSettings,
    names: &mut IndexNames,
    rejected: &mut Vec<RejectedCandidate>,
) -> Result<Vec<IndexSuggestion>> {
    let mut created: Vec<(&Trial, super::planner::Hypothetical)> = Vec::new();
    for trial in chosen {
        let Some(table) = catalog.tables.get(&trial.candidate.table) else { continue };
        match planner.hypothetical_index(table, &trial.candidate).await {
            Ok(index) => created.push((trial, index)),
            Err(e) => {
                let reason = format!("hypopg could not create it with the other chosen indexes: {e}");
                rejected.push(rejection(table, &trial.candidate, reason, None));
            }
        }
    }
    let mut joint: HashMap<usize, super::planner::PlanSummary> = HashMap::new();
    for (i, s) in statements.iter().enumerate() {
        if created.iter().any(|(t, _)| s.touches(t.candidate.table)) {
            if let Ok(plan) = planner.explain(&s.workload.query, s.shape.param_count).await {
                joint.insert(i, plan);
            }
        }
    }
    planner.reset_hypothetical().await;
    let mut out = Vec::new();
    for (trial, index) in created {
        let table = &catalog.tables[&trial.candidate.table];
        let helped: Vec<(usize, f64)> = joint
            .iter()
            .filter(|(i, plan)| {
                index.used_by(plan) && trial.helps(plan, statements[**i].baseline.total_cost, settings)
            })
            .map(|(i, plan)| (*i, plan.total_cost))
            .collect();
        if helped.is_empty() {
            let reason = "no plan used it enough with the other chosen indexes created too".to_string();
            rejected.push(rejection(table, &trial.candidate, reason, None));
            continue;
        }
        out.push(suggestion(trial, table, statements, &helped, names));
    }
    Ok(out)
}

fn suggestion(
    trial: &Trial,
    table: &TableInfo,
    statements: &[AnalysedStatement],
    helped: &[(usize, f64)],
    names: &mut IndexNames,
) -> IndexSuggestion {
    let mut helped_statements: Vec<HelpedStatement> = helped
        .iter()
        .map(|&(i, after)| HelpedStatement {
            query: statements[i].workload.query.clone(),
            calls: statements[i].workload.calls,
            cost_before: statements[i].baseline.total_cost,
            cost_after: Some(after),
        })
        .collect();
    helped_statements.sort_by_key(|s| std::cmp::Reverse(s.calls));
    let weight = |s: &HelpedStatement, c: f64| s.calls.max(1) as f64 * c;
    let before: f64 = helped_statements.iter().map(|s| weight(s, s.cost_before)).sum();
    let after: f64 = helped_statements.iter().map(|s| weight(s, s.cost_after.unwrap_or(s.cost_before))).sum();
    let name = names.claim(&table.schema, &trial.candidate.name_stem(table));
    let (create_statement, note) = table.create_statement(&trial.candidate, &name);
    let mut rationale = format!(
        "the planner chose this hypothetical index for {} statement(s); their weighted cost falls {:.0}%",
        helped_statements.len(),
        if before > 0.0 { 100.0 * (1.0 - after / before) } else { 0.0 }
    );
    if let Some((sample, expression)) = &trial.sampled {
        rationale = format!("{rationale}; {}", sample.note(expression, table));
    }
    if let Some(note) = note {
        rationale = format!("{rationale}; {note}");
    }
    IndexSuggestion {
        table: table.qualified(),
        create_statement,
        kind: trial.candidate.kind(),
        evidence: Evidence::Hypothetical,
        rationale,
        weighted_cost_before: before,
        weighted_cost_after: Some(after),
        statements: helped_statements,
        estimated_size_bytes: trial.size,
        write_overhead: write_overhead(table, &lost_hot_updates(statements, table, &trial.candidate)),
    }
}

/// Without proof: a candidate is suggested when a statement it serves scans its (large enough)
/// table sequentially. One per table access: the fullest key (partial when a constant predicate
/// recurs), never a covering variant.
pub(super) fn heuristic(
    statements: &[AnalysedStatement],
    catalog: &Catalog,
    candidates: Vec<(Candidate, Vec<usize>)>,
    settings: &IndexAdvisorSettings,
    names: &mut IndexNames,
) -> Vec<IndexSuggestion> {
    let mut best_per_access: BTreeMap<(usize, u32), Candidate> = BTreeMap::new();
    for (candidate, origins) in candidates {
        let Some(table) = catalog.tables.get(&candidate.table) else { continue };
        if table.rows() < settings.heuristic_min_rows as f64 || !candidate.include.is_empty() {
            continue;
        }
        for s in origins {
            let statement = &statements[s];
            if !statement.baseline.seq_scans.contains(&table.name)
                || filter_keeps_much_of_the_table(statement, table, &candidate)
            {
                continue;
            }
            let score = |c: &Candidate| c.key.len() + usize::from(c.predicate.is_some());
            let entry = best_per_access.entry((s, candidate.table)).or_insert_with(|| candidate.clone());
            if score(&candidate) > score(entry) {
                *entry = candidate.clone();
            }
        }
    }
    let mut grouped: BTreeMap<Candidate, Vec<usize>> = BTreeMap::new();
    for ((s, _), c) in best_per_access {
        grouped.entry(c).or_default().push(s);
    }
    fold_prefix_statements(grouped)
        .into_iter()
        .map(|(candidate, stmts)| {
            let table = &catalog.tables[&candidate.table];
            let helped: Vec<HelpedStatement> = stmts
                .iter()
                .map(|&i| HelpedStatement {
                    query: statements[i].workload.query.clone(),
                    calls: statements[i].workload.calls,
                    cost_before: statements[i].baseline.total_cost,
                    cost_after: None,
                })
                .collect();
            let before = helped.iter().map(|s| s.calls.max(1) as f64 * s.cost_before).sum();
            let why = if candidate.method == super::candidates::Method::Gin {
                "hypopg cannot simulate GIN indexes"
            } else {
                "hypopg is not available"
            };
            let name = names.claim(&table.schema, &candidate.name_stem(table));
            let (create_statement, note) = table.create_statement(&candidate, &name);
            let mut rationale = format!(
                "HEURISTIC, not proven ({why}): {} statement(s) scan all ~{:.0} rows of {} sequentially on \
                 a predicate this index serves",
                helped.len(),
                table.rows(),
                table.qualified()
            );
            if let Some(note) = note {
                rationale = format!("{rationale}; {note}");
            }
            IndexSuggestion {
                table: table.qualified(),
                create_statement,
                kind: candidate.kind(),
                evidence: Evidence::Heuristic,
                rationale,
                weighted_cost_before: before,
                weighted_cost_after: None,
                statements: helped,
                estimated_size_bytes: estimate_size(&candidate, table),
                write_overhead: write_overhead(table, &lost_hot_updates(statements, table, &candidate)),
            }
        })
        .collect()
}

/// Without the planner's proof, an index is suggested for a filter only when it keeps at most this
/// share of the table: a filter that keeps more reads the rows faster by a sequential scan, and the
/// planner would not use the index for it.
const HEURISTIC_MAX_SHARE: f64 = 0.3;

/// True when the planner expects the statement's sequential scan of `table` to return more than
/// [`HEURISTIC_MAX_SHARE`] of its rows, and `candidate` serves nothing but that filter: none of its
/// key columns is a join column (looked up once per row of the other side) or a sort or grouping
/// key (read in order, a LIMIT stops early).
fn filter_keeps_much_of_the_table(
    statement: &AnalysedStatement,
    table: &TableInfo,
    candidate: &Candidate,
) -> bool {
    let Some(&rows) = statement.baseline.seq_scan_rows.get(&table.name) else { return false };
    let Some(access) = statement.shape.accesses.iter().find(|a| a.table == table.oid) else {
        return false;
    };
    let serves_more_than_the_filter = candidate.key.iter().filter_map(|k| k.column.as_ref()).any(|c| {
        access.join.contains(c) || access.sort.iter().any(|(s, _)| s == c) || access.group.contains(c)
    });
    !serves_more_than_the_filter && rows > HEURISTIC_MAX_SHARE * table.rows()
}

/// Without hypopg: from the statistics as with it (a partial index taken as whole), or for keys
/// without them rows × (key widths + tuple overhead) at 90% fill.
fn estimate_size(candidate: &Candidate, table: &TableInfo) -> Option<i64> {
    if let Some(bytes) = super::btree_size::estimate(candidate, table, table.rows()) {
        return Some(bytes);
    }
    let width: i64 = candidate
        .key
        .iter()
        .map(|k| {
            k.column.as_ref().and_then(|c| table.columns.get(c)).and_then(|c| c.avg_width).unwrap_or(16)
                as i64
        })
        .sum();
    let rows = table.rows();
    (rows > 0.0).then(|| ((rows * (width + 16) as f64) / 0.9) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn btree(columns: &[&str]) -> Candidate {
        Candidate::btree_on(7, columns, None)
    }

    #[test]
    fn heuristic_prefixes_hand_their_statements_to_the_longer_index() {
        let grouped =
            BTreeMap::from([(btree(&["paid"]), vec![1, 2]), (btree(&["paid", "due_date"]), vec![0, 1])]);
        let folded = fold_prefix_statements(grouped);
        assert_eq!(folded, BTreeMap::from([(btree(&["paid", "due_date"]), vec![0, 1, 2])]));
    }
}
