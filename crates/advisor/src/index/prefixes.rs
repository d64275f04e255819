//! Suggestions that are leading prefixes of other suggestions are folded into them, by the very
//! rule the duplicate-index health check applies (`health::indexes::redundancies`): an index the
//! advisor's next run would flag as a prefix duplicate to drop is never suggested next to its keeper.

use std::collections::BTreeMap;

use super::candidates::{Candidate, Method};
use crate::health::indexes::{redundancies, IndexKey, Pins};

/// A candidate as the duplicate check sees an index. Key elements compare by their SQL (column or
/// expression, operator class, direction) where the check compares attnum/opclass/option/collation:
/// the same distinctions, since candidates always use the column's default collation.
fn as_index_key(candidate: &Candidate) -> IndexKey {
    let expressions: Vec<&str> =
        candidate.key.iter().filter(|k| k.column.is_none()).map(|k| k.sql.as_str()).collect();
    IndexKey {
        oid: 0,
        name: String::new(),
        quoted: String::new(),
        table: candidate.table.to_string(),
        method: match candidate.method {
            Method::Btree => "btree",
            Method::Gin => "gin",
        }
        .to_string(),
        keys: candidate.key.iter().map(|k| k.render()).collect(),
        include: candidate.include.clone(),
        expressions: expressions.join(", "),
        predicate: candidate.predicate.clone().unwrap_or_default(),
        unique: false,
        nulls_not_distinct: false,
        immediate: true,
        size: 0,
        definition: String::new(),
        pins: Pins::default(),
        partitioned: false,
        attached: false,
        scans: 0,
    }
}

/// Position of each candidate the prefix rule makes redundant → position of the candidate it folds
/// into: the one with the most key columns among those it leads. That one is never redundant
/// itself (a prefix of a longer one would make the folded candidate a prefix of that one too).
pub(super) fn prefix_keepers(candidates: &[&Candidate]) -> BTreeMap<usize, usize> {
    let keys: Vec<IndexKey> = candidates.iter().map(|c| as_index_key(c)).collect();
    let mut keepers: BTreeMap<usize, usize> = BTreeMap::new();
    for r in redundancies(&keys).into_iter().filter(|r| !r.exact) {
        let keeper = keepers.entry(r.redundant).or_insert(r.keeper);
        if candidates[r.keeper].key.len() > candidates[*keeper].key.len() {
            *keeper = r.keeper;
        }
    }
    keepers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn btree(key: &[&str], predicate: Option<&str>) -> Candidate {
        Candidate::btree_on(1, key, predicate)
    }

    #[test]
    fn a_prefix_folds_into_the_longest_candidate_it_leads() {
        let (a, ab, abc) = (btree(&["a"], None), btree(&["a", "b"], None), btree(&["a", "b", "c"], None));
        let keepers = prefix_keepers(&[&a, &ab, &abc]);
        assert_eq!(keepers, BTreeMap::from([(0, 2), (1, 2)]));
    }

    #[test]
    fn other_predicates_orders_and_tables_do_not_fold() {
        let a = btree(&["a"], None);
        let partial = btree(&["a", "b"], Some("NOT paid"));
        let mut desc = btree(&["a", "b"], None);
        desc.key[0].desc = true;
        let other_table = Candidate { table: 2, ..btree(&["a", "b"], None) };
        assert!(prefix_keepers(&[&a, &partial, &desc, &other_table]).is_empty());
    }
}
