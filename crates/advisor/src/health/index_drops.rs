//! The unused-index and duplicate-index checks, made to agree on what to drop. Each check alone is
//! right, together they could drop every index of a column list: of two exact duplicates the
//! duplicate check dropped the one the planner scans while the unused check dropped the other;
//! a prefix was dropped for a longer index that was itself dropped as unused. So:
//!
//! - of equivalent indexes, the one scanned most is kept (`IndexKey::keep_rank`);
//! - a duplicate or prefix is dropped only for a keeper whose columns stay served: the keeper is
//!   not dropped as unused, or is itself dropped for a keeper that stays;
//! - an index the duplicate check drops gets no unused-index finding too (one DROP per index).
//!
//! An unused index may still be dropped with the prefix it covers when that prefix is unused too:
//! then no query is left without the index it uses.

use std::collections::{HashMap, HashSet};

use anyhow::Result;

use super::indexes::{self, IndexKey, Redundancy, UnusedIndex};
use super::usage::IndexScans;
use crate::db::{quote_ident, Db};
use crate::options::HealthSettings;
use crate::report::{Category, Finding};
use crate::units::count;

/// The unused, duplicate and prefix-covered indexes; a part that cannot run becomes a note.
pub async fn check(
    db: &Db,
    settings: &HealthSettings,
    scans: &Result<IndexScans>,
) -> (Vec<Finding>, Vec<String>) {
    let mut notes = Vec::new();
    let scans =
        scans.as_ref().map_err(|e| notes.push(format!("unused indexes check could not run: {e:#}"))).ok();
    let (unused, unused_locked) = match scans {
        Some(scans) => indexes::unused(db, settings, scans).await.unwrap_or_else(|e| {
            notes.push(format!("unused indexes check could not run: {e:#}"));
            Default::default()
        }),
        None => Default::default(),
    };
    let (keys, duplicates_locked) = indexes::index_keys(db, scans).await.unwrap_or_else(|e| {
        notes.push(format!("duplicate indexes check could not run: {e:#}"));
        Default::default()
    });
    let mut findings = match scans {
        Some(scans) => findings(db, settings, scans, &unused, &keys),
        None => redundancy_findings(&keys, &indexes::redundancies(&keys), None),
    };
    findings.extend(super::locked_relations_finding(Category::Indexes, "Unused indexes", &unused_locked));
    findings.extend(super::locked_relations_finding(
        Category::Indexes,
        "Duplicate indexes",
        &duplicates_locked,
    ));
    (findings, notes)
}

fn findings(
    db: &Db,
    settings: &HealthSettings,
    scans: &IndexScans,
    unused: &[UnusedIndex],
    keys: &[IndexKey],
) -> Vec<Finding> {
    // Dropping a partitioned index drops its partitions' indexes with it: they can be keepers too.
    let dropped_as_unused: HashSet<u32> = unused
        .iter()
        .filter(|u| u.offers_drop(scans, settings))
        .flat_map(|u| std::iter::once(u.oid).chain(u.leaves().iter().copied()))
        .collect();
    let all = indexes::redundancies(keys);
    let lasting = lasting_redundancies(keys, &all, &dropped_as_unused);
    let mut out = redundancy_findings(keys, &lasting, Some(scans));
    let dropped_as_redundant = dropped_by(keys, &lasting);
    let kept_for = kept_because_their_keeper_goes(keys, &all, &lasting, &dropped_as_unused);
    for index in unused.iter().filter(|u| !dropped_as_redundant.contains(&u.oid)) {
        let finding = indexes::unused_finding(index, scans, settings, db.in_recovery);
        out.push(match kept_for.get(&index.oid) {
            Some(kept) => finding.evidence(format!(
                "it covers {} (the same or leading columns): the duplicate check keeps {} while this index \
                 goes, so those columns stay indexed",
                kept.join(", "),
                if kept.len() == 1 { "it" } else { "them" }
            )),
            None => finding,
        });
    }
    out
}

/// The redundancies whose keeper's columns stay served by an index: the keeper is not dropped as
/// unused, or is itself redundant to a keeper that stays so. Redundancies only ever point to a
/// longer or better-ranked index, so following them ends.
fn lasting_redundancies(
    keys: &[IndexKey],
    all: &[Redundancy],
    dropped_as_unused: &HashSet<u32>,
) -> Vec<Redundancy> {
    let mut served: HashMap<usize, bool> = HashMap::new();
    all.iter()
        .filter(|r| stays_served(r.keeper, keys, all, dropped_as_unused, &mut served))
        .cloned()
        .collect()
}

/// The queries index `i` answers still find an index when every lasting fix has run.
fn stays_served(
    i: usize,
    keys: &[IndexKey],
    all: &[Redundancy],
    dropped_as_unused: &HashSet<u32>,
    served: &mut HashMap<usize, bool>,
) -> bool {
    if let Some(&known) = served.get(&i) {
        return known;
    }
    let answer = !dropped_as_unused.contains(&keys[i].oid)
        || all
            .iter()
            .filter(|r| r.redundant == i)
            .any(|r| stays_served(r.keeper, keys, all, dropped_as_unused, served));
    served.insert(i, answer);
    answer
}

/// The indexes whose duplicate or prefix finding drops them (one held by a constraint is not: its
/// finding only names the constraint).
fn dropped_by(keys: &[IndexKey], lasting: &[Redundancy]) -> HashSet<u32> {
    lasting.iter().map(|r| &keys[r.redundant]).filter(|k| !k.pins.pinned()).map(|k| k.oid).collect()
}

/// For each index dropped as unused, the indexes it covers that are kept only because it goes
/// (every one of their keepers is dropped as unused), quoted.
fn kept_because_their_keeper_goes(
    keys: &[IndexKey],
    all: &[Redundancy],
    lasting: &[Redundancy],
    dropped_as_unused: &HashSet<u32>,
) -> HashMap<u32, Vec<String>> {
    let still_redundant: HashSet<usize> = lasting.iter().map(|r| r.redundant).collect();
    let mut kept: HashMap<u32, Vec<String>> = HashMap::new();
    for r in all.iter().filter(|r| !still_redundant.contains(&r.redundant)) {
        let covered = &keys[r.redundant];
        if !dropped_as_unused.contains(&covered.oid) {
            let names = kept.entry(keys[r.keeper].oid).or_default();
            names.push(covered.quoted.clone());
            names.dedup();
        }
    }
    kept
}

/// One finding per duplicate or prefix-covered index, with both indexes' scans when they are known
/// (an unused index dropped here gets no unused-index finding of its own).
fn redundancy_findings(
    keys: &[IndexKey],
    lasting: &[Redundancy],
    scans: Option<&IndexScans>,
) -> Vec<Finding> {
    let redundant: HashSet<usize> = lasting.iter().map(|r| r.redundant).collect();
    indexes::one_per_index(lasting, |keeper| !redundant.contains(&keeper))
        .into_iter()
        .map(|(r, others)| {
            let (drop, keep) = (&keys[r.redundant], &keys[r.keeper]);
            let finding = indexes::redundancy_finding(drop, keep, r.exact);
            let finding = match scans {
                Some(scans) => finding.evidence(format!(
                    "scans {}: {} {}, {} {}",
                    scans.counted_where(),
                    quote_ident(&drop.name),
                    count(drop.scans),
                    quote_ident(&keep.name),
                    count(keep.scans)
                )),
                None => finding,
            };
            if others.is_empty() {
                return finding;
            }
            let names: Vec<String> = others.iter().map(|&o| quote_ident(&keys[o].name)).collect();
            finding.evidence(format!("also covered by {}", names.join(", ")))
        })
        .collect()
}
