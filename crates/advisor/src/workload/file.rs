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

/// The N of a `-- calls: N` line among the statement's leading comments (line or block ones, in
/// any order: a `/* note */` above the weight must not hide it).
fn calls_comment(piece: &str) -> Option<u64> {
    leading_comments(piece).0.into_iter().find_map(|comment| {
        let line = comment.strip_prefix("--")?;
        line.trim_start_matches('-').trim().strip_prefix("calls:").and_then(|n| n.trim().parse().ok())
    })
}

fn strip_leading_comments(piece: &str) -> &str {
    leading_comments(piece).1.trim()
}

/// The comments before a statement (each with its `--` or `/*`), and the text after them.
fn leading_comments(piece: &str) -> (Vec<&str>, &str) {
    let mut comments = Vec::new();
    let mut rest = piece.trim_start();
    loop {
        let end = if rest.starts_with("--") {
            rest.find('\n').unwrap_or(rest.len())
        } else if rest.starts_with("/*") {
            block_comment_len(rest)
        } else {
            return (comments, rest);
        };
        comments.push(&rest[..end]);
        rest = rest[end..].trim_start();
    }
}

/// The length of the block comment `text` starts with; PostgreSQL's block comments nest. An
/// unterminated one runs to the end.
fn block_comment_len(text: &str) -> usize {
    let mut depth = 0usize;
    let mut i = 0;
    let bytes = text.as_bytes();
    while i + 1 < bytes.len() {
        match &bytes[i..i + 2] {
            b"/*" => {
                depth += 1;
                i += 2;
            }
            b"*/" => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    text.len()
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

    #[test]
    fn weights_after_block_comments_count() {
        let text = "-- calls: 10\nSELECT 1;\n/* lookups by creator */\n-- calls: 7\nSELECT 2;\n\
                    -- calls: 3\n/* a /* nested */ note */\nSELECT 3;\n";
        let s = parse(text).unwrap();
        let weights: Vec<(&str, u64)> = s.iter().map(|w| (w.query.as_str(), w.calls)).collect();
        assert_eq!(weights, [("SELECT 1", 10), ("SELECT 2", 7), ("SELECT 3", 3)]);
    }
}
