//! Literals in statement texts: hiding them where a report shows live queries (they can hold
//! personal data), and turning the ones that vary into parameters when statements are merged.

use std::ops::Range;

use pg_query::protobuf::Token;

/// `sql` with its constants replaced by `$n`, as pg_stat_statements shows statements. Text that
/// does not parse (pg_stat_activity truncates long queries) goes through the gateway's lexical
/// normalizer instead, which also hides an unterminated literal up to the end.
pub fn without_literals(sql: &str) -> String {
    pg_query::normalize(sql).unwrap_or_else(|_| pgpilot_sql::normalize::normalize(sql, false).text)
}

/// A constant of a statement: where it is and how it is spelled.
type Literal<'a> = (Range<usize>, &'a str);

/// The byte ranges and texts of the constants in `sql`; None when it does not scan.
fn literals(sql: &str) -> Option<Vec<Literal<'_>>> {
    let tokens = pg_query::scan_tokens(sql).ok()?;
    let is_literal = |t: i32| {
        [Token::Sconst, Token::Usconst, Token::Iconst, Token::Fconst, Token::Bconst, Token::Xconst]
            .iter()
            .any(|&l| l as i32 == t)
    };
    Some(
        tokens
            .iter()
            .filter(|t| is_literal(t.token))
            .map(|t| {
                let range = t.start as usize..t.end as usize;
                (range.clone(), &sql[range])
            })
            .collect(),
    )
}

/// The highest `$n` in `sql`.
pub fn highest_param(sql: &str) -> Option<u32> {
    let tokens = pg_query::scan_tokens(sql).ok()?;
    Some(
        tokens
            .iter()
            .filter(|t| t.token == Token::Param as i32)
            .filter_map(|t| sql[t.start as usize + 1..t.end as usize].parse().ok())
            .max()
            .unwrap_or(0),
    )
}

/// For texts that are the same statement up to constants: the first text, with each constant
/// that is not the same in all of them replaced by a new `$n`. A constant shared by every text
/// stays (it can still become a partial index's predicate); one that varies must not, as it
/// describes only some of the calls. When the texts do not line up constant for constant (IN
/// lists of different lengths), every constant becomes a parameter.
pub fn parameterise_varying_literals(texts: &[&str]) -> String {
    let first = texts[0];
    let all_literals: Option<Vec<Vec<Literal>>> = texts.iter().map(|t| literals(t)).collect();
    let (Some(all_literals), Some(highest)) = (all_literals, highest_param(first)) else {
        return pg_query::normalize(first).unwrap_or_else(|_| first.to_string());
    };
    if all_literals.iter().any(|l| l.len() != all_literals[0].len()) {
        return pg_query::normalize(first).unwrap_or_else(|_| first.to_string());
    }
    let mut out = String::with_capacity(first.len());
    let mut copied_to = 0;
    let mut next_param = highest + 1;
    for (i, (range, value)) in all_literals[0].iter().enumerate() {
        if all_literals.iter().all(|l| l[i].1 == *value) {
            continue;
        }
        out.push_str(&first[copied_to..range.start]);
        out.push_str(&format!("${next_param}"));
        next_param += 1;
        copied_to = range.end;
    }
    out.push_str(&first[copied_to..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_query_literals_are_hidden() {
        assert_eq!(
            without_literals("update dup_t set c='SSN-123-45-6789' where a=4"),
            "update dup_t set c=$1 where a=$2"
        );
    }

    #[test]
    fn truncated_queries_are_hidden_lexically() {
        let truncated =
            "update dup_t set c=E'it''s \\' SSN-123-45-6789', d = $1, \"x1\" = 12.5e3 where b = 'SSN-98";
        assert_eq!(without_literals(truncated), "update dup_t set c=$2, d = $1, \"x1\" = $3 where b = $4");
        assert_eq!(without_literals("select $body$ secret $body$ from t2 where"), "select $1 from t2 where");
    }

    #[test]
    fn only_varying_literals_become_parameters() {
        let merged = parameterise_varying_literals(&[
            "SELECT * FROM orders WHERE status = 'shipped' AND customer_id = 42 LIMIT $1",
            "SELECT * FROM orders WHERE status = 'shipped' AND customer_id = 43 LIMIT $1",
        ]);
        assert_eq!(merged, "SELECT * FROM orders WHERE status = 'shipped' AND customer_id = $2 LIMIT $1");
        let varying = parameterise_varying_literals(&[
            "SELECT * FROM orders WHERE status = 'shipped' AND customer_id = 42",
            "SELECT * FROM orders WHERE status = 'pending' AND customer_id = 44",
        ]);
        assert_eq!(varying, "SELECT * FROM orders WHERE status = $1 AND customer_id = $2");
        let lists = parameterise_varying_literals(&[
            "SELECT * FROM t WHERE a IN (1, 2) AND b = 'x'",
            "SELECT * FROM t WHERE a IN (1, 2, 3) AND b = 'x'",
        ]);
        assert_eq!(lists, "SELECT * FROM t WHERE a IN ($1, $2) AND b = $3");
    }
}
