//! Index names that are free: a suggested name must not collide with a relation already in the
//! table's schema (indexes share pg_class's namespace with tables, views, sequences...), nor with
//! another suggestion of the same report. A collision would make `--apply` fail, and worse, it
//! used to make its cleanup drop the index that owned the name.

use std::collections::HashSet;

use anyhow::Result;

use crate::db::Db;

/// PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Relation names taken in the schemas a report suggests indexes for, plus the names it has
/// handed out so far.
#[derive(Debug, Default)]
pub struct IndexNames {
    taken: HashSet<(String, String)>,
}

impl IndexNames {
    /// Every relation name in `schemas`, from pg_class.
    pub async fn load(db: &Db, schemas: &[String]) -> Result<IndexNames> {
        let rows = db
            .client
            .query(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1)",
                &[&schemas],
            )
            .await?;
        Ok(IndexNames { taken: rows.iter().map(|r| (r.get(0), r.get(1))).collect() })
    }

    /// Names already taken, for tests.
    pub fn with_taken<'a>(names: impl IntoIterator<Item = (&'a str, &'a str)>) -> IndexNames {
        IndexNames { taken: names.into_iter().map(|(s, n)| (s.to_string(), n.to_string())).collect() }
    }

    /// The first free name among `{stem}_idx`, `{stem}_idx1`, `{stem}_idx2`... in `schema`, each
    /// at most 63 bytes (the stem is shortened, not the suffix, so the names stay distinct), and
    /// reserves it.
    pub fn claim(&mut self, schema: &str, stem: &str) -> String {
        let mut attempt = 0u32;
        loop {
            let suffix = if attempt == 0 { "_idx".to_string() } else { format!("_idx{attempt}") };
            let base = truncate_at_char(stem, MAX_IDENTIFIER_BYTES - suffix.len()).trim_end_matches('_');
            let name = format!("{base}{suffix}");
            if self.taken.insert((schema.to_string(), name.clone())) {
                return name;
            }
            attempt += 1;
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_relations_are_never_reused() {
        let mut names = IndexNames::with_taken([("public", "victim_t_a_idx"), ("public", "victim_t_a_idx1")]);
        assert_eq!(names.claim("public", "victim_t_a"), "victim_t_a_idx2");
        assert_eq!(
            names.claim("other", "victim_t_a"),
            "victim_t_a_idx",
            "another schema is another namespace"
        );
    }

    #[test]
    fn one_report_never_repeats_a_name() {
        let mut names = IndexNames::default();
        let first = names.claim("public", "t_a_partial");
        let second = names.claim("public", "t_a_partial");
        assert_eq!((first.as_str(), second.as_str()), ("t_a_partial_idx", "t_a_partial_idx1"));
    }

    #[test]
    fn long_stems_are_cut_before_the_suffix() {
        let table = "very_long_table_name_for_testing_index_name_truncation_xx";
        let mut names = IndexNames::default();
        let a = names.claim("public", &format!("{table}_customer_identifier_a"));
        let b = names.claim("public", &format!("{table}_customer_identifier_b"));
        assert_ne!(a, b);
        assert!(a.len() <= MAX_IDENTIFIER_BYTES && b.len() <= MAX_IDENTIFIER_BYTES, "{a} {b}");
        assert!(b.ends_with("_idx1"), "{b}");
    }

    #[test]
    fn multibyte_names_are_cut_on_a_character_boundary() {
        let mut names = IndexNames::default();
        let name = names.claim("public", &"é".repeat(40));
        assert!(name.len() <= MAX_IDENTIFIER_BYTES && name.ends_with("_idx"), "{name}");
    }
}
