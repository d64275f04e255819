//! A workload file: SQL statements separated by `;`, each optionally preceded by `-- calls: N`.

use std::path::Path;

use anyhow::{anyhow, Context, Result};

use super::WorkloadStatement;

pub fn read(path: &Path) -> Result<Vec<WorkloadStatement>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading workload file {}", path.display()))?;
    parse(&text).with_context(|| format!("in workload file {}", path.display()))
}

pub fn parse(text: &str) -> Result<Vec<WorkloadStatement>> {
    let pieces =
        pg_query::split_with_scanner(text).map_err(|e| anyhow!("cannot split into statements: {e}"))?;
    Ok(pieces
        .into_iter()
        .filter_map(|piece| {
            let calls = calls_comment(piece).unwrap_or(1);
            let query = strip_leading_comments(piece);
            (!query.is_empty()).then(|| WorkloadStatement {
                query: query.to_string(),
                calls,
                total_time_ms: None,
                source: "file".into(),
            })
        })
        .collect())
}

/// The N of a `-- calls: N` line among the statement's leading comment lines.
fn calls_comment(piece: &str) -> Option<u64> {
    piece.lines().map(str::trim).take_while(|l| l.is_empty() || l.starts_with("--")).find_map(|l| {
        l.trim_start_matches('-').trim().strip_prefix("calls:").and_then(|n| n.trim().parse().ok())
    })
}

fn strip_leading_comments(piece: &str) -> &str {
    let mut rest = piece.trim_start();
    while rest.starts_with("--") {
        rest = rest.split_once('\n').map(|(_, r)| r.trim_start()).unwrap_or("");
    }
    rest.trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_and_weights() {
        let text =
            "-- calls: 500\nSELECT * FROM orders WHERE user_id = $1;\n\n-- a note\nSELECT ';' FROM t;\n;\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].query, "SELECT * FROM orders WHERE user_id = $1");
        assert_eq!(s[0].calls, 500);
        assert_eq!(s[1].query, "SELECT ';' FROM t");
        assert_eq!(s[1].calls, 1);
    }
}
