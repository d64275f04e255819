//! Index checks: unused, duplicate or prefix-covered, invalid.

use anyhow::Result;

use crate::db::Db;
use crate::options::HealthSettings;
use crate::report::{Category, Finding, Severity};
use crate::units::bytes;

pub async fn unused(db: &Db, settings: &HealthSettings) -> Result<Vec<Finding>> {
    let since = db
        .rows(
            "SELECT coalesce(to_char(greatest(d.stats_reset, pg_postmaster_start_time()), 'YYYY-MM-DD HH24:MI TZ'), '?') \
             FROM pg_stat_database d WHERE d.datname = current_database()",
        )
        .await?
        .first()
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_default();
    let rows = db
        .client
        .query(
            "SELECT s.schemaname::text || '.' || s.indexrelname::text, s.schemaname::text || '.' || s.relname::text, \
             pg_relation_size(s.indexrelid)::int8, pg_get_indexdef(s.indexrelid), \
             quote_ident(s.schemaname) || '.' || quote_ident(s.indexrelname) \
             FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid \
             WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary AND i.indisvalid \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid) \
               AND pg_relation_size(s.indexrelid) >= $1 \
             ORDER BY 3 DESC",
            &[&settings.unused_index_min_bytes],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let size: i64 = r.get(2);
            Finding::new(
                Severity::Warning,
                Category::Indexes,
                format!("Unused index {}", r.get::<_, String>(0)),
            )
            .object(r.get::<_, String>(0))
            .evidence(format!("0 scans since {since} on this server; {} on disk", bytes(size)))
            .evidence(format!("on {}: {}", r.get::<_, String>(1), r.get::<_, String>(3)))
            .evidence("every insert and non-HOT update of the table still maintains it")
            .fix(format!(
                "-- check replicas too (their scans are counted there), then:\nDROP INDEX CONCURRENTLY {};",
                r.get::<_, String>(4)
            ))
        })
        .collect())
}

/// One index as the duplicate check sees it.
#[derive(Debug, Clone)]
pub struct IndexKey {
    pub name: String,
    pub quoted: String,
    pub table: String,
    pub method: String,
    /// Key columns with operator class and options, as comparable strings.
    pub keys: Vec<String>,
    pub include: Vec<String>,
    pub expressions: String,
    pub predicate: String,
    pub unique: bool,
    pub size: i64,
    pub definition: String,
}

/// `redundant` is made unnecessary by `keeper`: an exact duplicate or a leading prefix of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Redundancy {
    pub redundant: usize,
    pub keeper: usize,
    pub exact: bool,
}

/// Finds duplicates and prefix-covered btree indexes among one table's indexes.
pub fn redundancies(indexes: &[IndexKey]) -> Vec<Redundancy> {
    let mut out = Vec::new();
    for (a, ia) in indexes.iter().enumerate() {
        for (b, ib) in indexes.iter().enumerate() {
            if a == b || ia.table != ib.table || ia.method != ib.method {
                continue;
            }
            if ia.expressions != ib.expressions || ia.predicate != ib.predicate {
                continue;
            }
            let exact = ia.keys == ib.keys && ia.include == ib.include;
            if exact {
                // Keep the unique one, else the first by name; report each pair once.
                let drop_a = (!ia.unique && ib.unique) || (ia.unique == ib.unique && ia.name > ib.name);
                if drop_a {
                    out.push(Redundancy { redundant: a, keeper: b, exact: true });
                }
                continue;
            }
            let prefix = ia.method == "btree"
                && !ia.unique
                && ia.include.is_empty()
                && ia.keys.len() < ib.keys.len()
                && ib.keys.starts_with(&ia.keys);
            if prefix {
                out.push(Redundancy { redundant: a, keeper: b, exact: false });
            }
        }
    }
    out
}

pub async fn duplicates(db: &Db) -> Result<Vec<Finding>> {
    let rows = db
        .rows(
            "SELECT ic.relname::text, quote_ident(n.nspname) || '.' || quote_ident(ic.relname), \
             i.indrelid::regclass::text, am.amname::text, \
             ARRAY(SELECT i.indkey[k]::text || '/' || i.indclass[k]::text || '/' || i.indoption[k]::text \
                   FROM generate_series(0, i.indnkeyatts - 1) k), \
             ARRAY(SELECT i.indkey[k]::text FROM generate_series(i.indnkeyatts, i.indnatts - 1) k), \
             coalesce(pg_get_expr(i.indexprs, i.indrelid), ''), coalesce(pg_get_expr(i.indpred, i.indrelid), ''), \
             i.indisunique, pg_relation_size(i.indexrelid)::int8, pg_get_indexdef(i.indexrelid) \
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace \
             JOIN pg_am am ON am.oid = ic.relam \
             WHERE i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' \
             ORDER BY 3, 1",
        )
        .await?;
    let indexes: Vec<IndexKey> = rows
        .iter()
        .map(|r| IndexKey {
            name: r.get(0),
            quoted: r.get(1),
            table: r.get(2),
            method: r.get(3),
            keys: r.get(4),
            include: r.get(5),
            expressions: r.get(6),
            predicate: r.get(7),
            unique: r.get(8),
            size: r.get(9),
            definition: r.get(10),
        })
        .collect();
    Ok(redundancies(&indexes)
        .into_iter()
        .map(|r| {
            let (drop, keep) = (&indexes[r.redundant], &indexes[r.keeper]);
            let title = if r.exact {
                format!("Duplicate index {} (same as {})", drop.name, keep.name)
            } else {
                format!("Index {} is a prefix of {}", drop.name, keep.name)
            };
            Finding::new(Severity::Warning, Category::Indexes, title)
                .object(drop.quoted.clone())
                .evidence(format!("{} ({})", drop.definition, bytes(drop.size)))
                .evidence(format!("{} ({})", keep.definition, bytes(keep.size)))
                .evidence(if r.exact {
                    "both indexes answer exactly the same queries; writes maintain both".to_string()
                } else {
                    "queries on the leading columns can use the longer index".to_string()
                })
                .fix(format!("DROP INDEX CONCURRENTLY {};", drop.quoted))
        })
        .collect())
}

pub async fn invalid(db: &Db) -> Result<Vec<Finding>> {
    // NULLS NOT DISTINCT (15+) makes rows with NULL keys duplicates of each other too.
    let nulls_not_distinct = if db.version_num >= 150000 { "i.indnullsnotdistinct" } else { "false" };
    let sql = format!(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(ic.relname), pg_get_indexdef(i.indexrelid), \
         pg_relation_size(i.indexrelid)::int8, i.indisunique, i.indrelid::regclass::text, \
         ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k), \
         pg_get_expr(i.indpred, i.indrelid, true), {nulls_not_distinct} \
         FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace \
         WHERE NOT i.indisvalid"
    );
    let rows = db.rows(&sql).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let index = InvalidIndex {
                name: r.get(0),
                definition: r.get(1),
                unique: r.get(3),
                table: r.get(4),
                keys: r.get(5),
                predicate: r.get(6),
                nulls_not_distinct: r.get(7),
            };
            Finding::new(Severity::Warning, Category::Indexes, format!("Invalid index {}", index.name))
                .object(index.name.clone())
                .evidence(format!("{} ({})", index.definition, bytes(r.get(2))))
                .evidence("left by a failed CREATE INDEX CONCURRENTLY or REINDEX: queries ignore it, writes still maintain it")
                .fix(index.fix())
        })
        .collect())
}

/// An index with pg_index.indisvalid = false.
#[derive(Debug, Clone)]
pub struct InvalidIndex {
    /// Schema-qualified, quoted.
    pub name: String,
    /// pg_get_indexdef: `CREATE [UNIQUE] INDEX name ON table USING ...`.
    pub definition: String,
    pub unique: bool,
    pub table: String,
    /// Each key column or expression, as SQL.
    pub keys: Vec<String>,
    pub predicate: Option<String>,
    pub nulls_not_distinct: bool,
}

impl InvalidIndex {
    /// A unique index usually failed on duplicate keys: REINDEX would fail on them again (and leave
    /// another invalid `_ccnew` index), so the duplicates are found and resolved first, then the
    /// index is dropped and built again. Any other invalid index is simply rebuilt.
    pub fn fix(&self) -> String {
        if !self.unique {
            return format!(
                "REINDEX INDEX CONCURRENTLY {};  -- or DROP INDEX CONCURRENTLY {};",
                self.name, self.name
            );
        }
        format!(
            "-- 1. find the duplicate keys and resolve them (delete or change the extra rows):\n{}\n\
             -- 2. then drop the invalid index and build it again:\n\
             DROP INDEX CONCURRENTLY {};\n{};",
            self.duplicates_query(),
            self.name,
            self.definition.replacen("CREATE UNIQUE INDEX ", "CREATE UNIQUE INDEX CONCURRENTLY ", 1)
        )
    }

    /// The key values that occur more than once among the rows the index covers. Rows with a NULL
    /// key never conflict unless the index says NULLS NOT DISTINCT.
    fn duplicates_query(&self) -> String {
        let keys = self.keys.join(", ");
        let mut filters: Vec<String> = Vec::new();
        if !self.nulls_not_distinct {
            filters.extend(self.keys.iter().map(|k| format!("({k}) IS NOT NULL")));
        }
        if let Some(p) = &self.predicate {
            filters.push(format!("({p})"));
        }
        let filter =
            if filters.is_empty() { String::new() } else { format!(" WHERE {}", filters.join(" AND ")) };
        format!(
            "SELECT {keys}, count(*) FROM {}{filter} GROUP BY {keys} HAVING count(*) > 1 ORDER BY count(*) DESC LIMIT 100;",
            self.table
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ix(name: &str, keys: &[&str], unique: bool) -> IndexKey {
        IndexKey {
            name: name.into(),
            quoted: name.into(),
            table: "t".into(),
            method: "btree".into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            include: vec![],
            expressions: String::new(),
            predicate: String::new(),
            unique,
            size: 0,
            definition: String::new(),
        }
    }

    fn invalid_index(unique: bool) -> InvalidIndex {
        InvalidIndex {
            name: "public.iu_t_v".into(),
            definition: format!(
                "CREATE {}INDEX iu_t_v ON public.iu_t USING btree (v)",
                if unique { "UNIQUE " } else { "" }
            ),
            unique,
            table: "iu_t".into(),
            keys: vec!["v".into()],
            predicate: None,
            nulls_not_distinct: false,
        }
    }

    #[test]
    fn an_invalid_unique_index_is_fixed_by_resolving_duplicates_first() {
        let fix = invalid_index(true).fix();
        assert!(!fix.contains("REINDEX"), "REINDEX fails again on the duplicates: {fix}");
        let steps: Vec<usize> = [
            "SELECT v, count(*) FROM iu_t WHERE (v) IS NOT NULL GROUP BY v HAVING count(*) > 1",
            "DROP INDEX CONCURRENTLY public.iu_t_v;",
            "CREATE UNIQUE INDEX CONCURRENTLY iu_t_v ON public.iu_t USING btree (v);",
        ]
        .iter()
        .map(|step| fix.find(step).unwrap_or_else(|| panic!("no `{step}` in:\n{fix}")))
        .collect();
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "duplicates, then drop, then create: {fix}");
        assert!(invalid_index(false).fix().starts_with("REINDEX INDEX CONCURRENTLY public.iu_t_v;"));
    }

    #[test]
    fn exact_duplicates_keep_the_unique_one() {
        let r = redundancies(&[ix("a_idx", &["2/1978/0"], false), ix("a_key", &["2/1978/0"], true)]);
        assert_eq!(r, vec![Redundancy { redundant: 0, keeper: 1, exact: true }]);
    }

    #[test]
    fn prefix_is_covered_unless_unique_or_different_order() {
        let r = redundancies(&[ix("a", &["2/1978/0"], false), ix("ab", &["2/1978/0", "3/1978/0"], false)]);
        assert_eq!(r, vec![Redundancy { redundant: 0, keeper: 1, exact: false }]);
        assert!(redundancies(&[ix("a", &["2/1978/0"], true), ix("ab", &["2/1978/0", "3/1978/0"], false)])
            .is_empty());
        assert!(redundancies(&[ix("a", &["2/1978/3"], false), ix("ab", &["2/1978/0", "3/1978/0"], false)])
            .is_empty());
    }
}
