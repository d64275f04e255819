//! Seeing through views. A statement that reads `recent_orders`, a view on `orders`, is planned
//! by PostgreSQL on `orders`, but its text names only the view: candidates come from the text, so
//! each view is replaced, for the analysis only, by its definition as a subquery
//! (`(SELECT ... FROM orders WHERE ...) AS recent_orders`), which the analysis resolves like any
//! subquery. The statement is still planned as written.

use std::collections::HashMap;

use crate::db::{quote_ident, Db};

/// Views on views are expanded level by level, at most this deep.
const MAX_DEPTH: usize = 8;

/// View definitions looked up so far: (schema, name) as written → definition, None for a non-view.
#[derive(Default)]
pub struct ViewDefinitions {
    known: HashMap<(Option<String>, String), Option<String>>,
}

impl ViewDefinitions {
    /// `query` with every view it reads replaced by its definition; the query itself when it
    /// reads none (or does not parse: the analysis reports that).
    pub async fn expand(&mut self, db: &Db, query: &str) -> String {
        let mut text = query.to_string();
        for _ in 0..MAX_DEPTH {
            let Some(expanded) = self.expand_once(db, &text).await else { break };
            text = expanded;
        }
        text
    }

    async fn expand_once(&mut self, db: &Db, query: &str) -> Option<String> {
        let parsed = pg_query::parse(query, 0).ok()?;
        let mut replacements = Vec::new();
        let ctes = cte_names(&parsed);
        for (node, ..) in parsed.protobuf.nodes() {
            let pg_query::NodeRef::RangeVar(rv) = node else { continue };
            let schema = (!rv.schemaname.is_empty()).then(|| rv.schemaname.clone());
            // A CTE of the same name hides the view.
            if schema.is_none() && ctes.contains(&rv.relname) {
                continue;
            }
            let Some(definition) = self.definition(db, schema, &rv.relname).await else { continue };
            let start = rv.location as usize;
            let end = relation_name_end(query.as_bytes(), start);
            // Without an alias the view's name stays the name its columns are qualified with.
            let alias =
                if rv.alias.is_some() { String::new() } else { format!(" AS {}", quote_ident(&rv.relname)) };
            replacements.push((start, end, format!("({definition}){alias}")));
        }
        if replacements.is_empty() {
            return None;
        }
        replacements.sort_by_key(|r| std::cmp::Reverse(r.0));
        let mut text = query.to_string();
        for (start, end, subquery) in replacements {
            text.replace_range(start..end, &subquery);
        }
        // A view written to (UPDATE recent_orders SET ...) cannot become a subquery: left as written.
        pg_query::parse(&text, 0).is_ok().then_some(text)
    }

    /// The definition of the view `schema.name` (found on the search_path when unqualified). None
    /// for a table, or when it cannot be looked up (a schema the advisor may not use: the analysis
    /// then says so for the statement as written).
    async fn definition(&mut self, db: &Db, schema: Option<String>, name: &str) -> Option<String> {
        let key = (schema, name.to_string());
        if let Some(known) = self.known.get(&key) {
            return known.clone();
        }
        let qualified = match &key.0 {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(name)),
            None => quote_ident(name),
        };
        let row = db
            .client
            .query_opt(
                "SELECT pg_get_viewdef(c.oid) FROM pg_class c WHERE c.oid = to_regclass($1) AND c.relkind = 'v'",
                &[&qualified],
            )
            .await;
        let definition =
            row.ok().flatten().map(|r| r.get::<_, String>(0).trim().trim_end_matches(';').to_string());
        self.known.insert(key, definition.clone());
        definition
    }
}

fn cte_names(parsed: &pg_query::ParseResult) -> Vec<String> {
    let mut names = Vec::new();
    for (node, ..) in parsed.protobuf.nodes() {
        if let pg_query::NodeRef::CommonTableExpr(c) = node {
            names.push(c.ctename.clone());
        }
    }
    names
}

/// Where the (possibly qualified, possibly quoted) relation name starting at `start` ends.
fn relation_name_end(sql: &[u8], start: usize) -> usize {
    let mut i = start;
    loop {
        if sql.get(i) == Some(&b'"') {
            i += 1;
            while i < sql.len() {
                // A doubled quote is a quote inside the name.
                if sql[i] == b'"' && sql.get(i + 1) != Some(&b'"') {
                    break;
                }
                i += if sql[i] == b'"' { 2 } else { 1 };
            }
            i += 1;
        } else {
            while i < sql.len()
                && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_' || sql[i] == b'$' || sql[i] >= 0x80)
            {
                i += 1;
            }
        }
        let after_spaces = i + sql[i.min(sql.len())..].iter().take_while(|c| c.is_ascii_whitespace()).count();
        if sql.get(after_spaces) != Some(&b'.') {
            return i.min(sql.len());
        }
        i = after_spaces + 1;
        i += sql[i.min(sql.len())..].iter().take_while(|c| c.is_ascii_whitespace()).count();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_and_quoted_names_end_where_they_end() {
        let sql = b"SELECT 1 FROM public . \"My \"\"View\"\" x\" v WHERE";
        assert_eq!(&sql[14..relation_name_end(sql, 14)], b"public . \"My \"\"View\"\" x\"");
        let sql = b"SELECT 1 FROM recent_orders";
        assert_eq!(relation_name_end(sql, 14), sql.len());
    }
}
