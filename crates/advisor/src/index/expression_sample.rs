//! How selective an expression is, from a bounded sample of its table. A hypothetical expression
//! index has no statistics (ANALYZE gathers them only for a real one), so the planner judges
//! `lower(email) = $1` with its default guess (0.5% of the rows) both with and without it: the
//! cost it gives the index falls short of what the index does once ANALYZE knows the values.

use super::catalog::TableInfo;
use crate::db::Db;

/// Rows read from the sample at most.
const SAMPLE_ROWS: i64 = 10_000;
/// An expression is selective when the sample holds at least this many distinct values: a value
/// then matches at most 1% of the rows on average (the sample's distinct values are a lower bound
/// for the table's).
const MIN_DISTINCT: i64 = 100;

/// What a sample of a table says about one expression of its rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpressionSample {
    pub rows: i64,
    pub distinct: i64,
}

impl ExpressionSample {
    pub fn selective(&self) -> bool {
        self.distinct >= MIN_DISTINCT
    }

    /// The largest share of the rows one value matches on average, from the sample.
    pub fn share_per_value(&self) -> f64 {
        1.0 / self.distinct.max(1) as f64
    }

    /// The sentence the suggestion carries: the planner's proof used guesses, this is the sample.
    pub fn note(&self, expression: &str, table: &TableInfo) -> String {
        format!(
            "the planner judged this expression index with default estimates (a hypothetical index has no \
             statistics; its cost fell less than the threshold asks): a sample of {} rows holds {} distinct \
             values of {expression}, so a value matches about {:.2}% of the rows or fewer; run ANALYZE {} \
             after creating it so the planner has the expression's statistics",
            self.rows,
            self.distinct,
            100.0 * self.share_per_value(),
            table.qualified()
        )
    }
}

/// Samples `expression` (SQL over `table`'s columns) from at most [`SAMPLE_ROWS`] rows, read
/// with `TABLESAMPLE SYSTEM` (whole pages, a fraction sized for about three times that many
/// rows). None when the sample cannot be read (privileges, the statement timeout).
pub async fn sample(db: &Db, table: &TableInfo, expression: &str) -> Option<ExpressionSample> {
    let rows = table.rows().max(1.0);
    let percent = (300.0 * SAMPLE_ROWS as f64 / rows).clamp(0.001, 100.0);
    let sql = format!(
        "SELECT count(*)::int8, count(DISTINCT v)::int8 FROM \
         (SELECT {expression} AS v FROM {} TABLESAMPLE SYSTEM ({percent}) LIMIT {SAMPLE_ROWS}) s",
        table.qualified()
    );
    let row = match db.client.query_one(&sql, &[]).await {
        Ok(row) => row,
        Err(e) => {
            tracing::debug!("sampling {expression} of {} failed: {e}", table.qualified());
            return None;
        }
    };
    Some(ExpressionSample { rows: row.get(0), distinct: row.get(1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_distinct_values_are_selective() {
        assert!(ExpressionSample { rows: 10_000, distinct: 9_800 }.selective());
        assert!(!ExpressionSample { rows: 10_000, distinct: 3 }.selective());
        assert_eq!(ExpressionSample { rows: 500, distinct: 200 }.share_per_value(), 0.005);
    }
}
