//! `pgpilot:` directives in SQL comments.
//!
//! Comments are not part of the parse tree, so the text is scanned with PostgreSQL's own lexer: a
//! directive inside a string literal or a dollar-quoted body is not a comment and is ignored.
//!
//! Recognised, in `/* ... */` or `-- ...` comments, several per comment allowed:
//! `pgpilot:primary`, `pgpilot:replica`, `pgpilot:tag=NAME`, `pgpilot:nocache`,
//! `pgpilot:cache [ttl=30s] [tags=a,b]`.

use std::time::Duration;

const MARKER: &str = "pgpilot:";

/// Where a hint asks the statement to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteHint {
    Primary,
    Replica,
}

/// A `pgpilot:cache` directive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheHint {
    pub ttl: Option<Duration>,
    pub tags: Vec<String>,
}

/// Every directive found in a statement's comments.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hints {
    pub route: Option<RouteHint>,
    /// Replica group tag (`pgpilot:tag=analytics`).
    pub tag: Option<String>,
    pub cache: Option<CacheHint>,
    pub nocache: bool,
    /// Directives that were not understood, as written (for a warning).
    pub unrecognized: Vec<String>,
}

impl Hints {
    pub fn is_empty(&self) -> bool {
        *self == Hints::default()
    }
}

/// Finds the directives in the comments of `sql`. Cheap when the text has no `pgpilot:` at all.
pub fn scan_hints(sql: &str) -> Hints {
    let mut hints = Hints::default();
    if !contains_marker(sql) {
        return hints;
    }
    for comment in comments(sql) {
        parse_comment(comment, &mut hints);
    }
    hints
}

fn contains_marker(sql: &str) -> bool {
    sql.as_bytes().windows(MARKER.len()).any(|w| w.eq_ignore_ascii_case(MARKER.as_bytes()))
}

/// The text of every comment, found by PostgreSQL's lexer; falls back to a plain scan when the lexer
/// rejects the text (an unterminated literal), so hints on broken text still count.
fn comments(sql: &str) -> Vec<&str> {
    match pg_query::scan(sql) {
        Ok(scan) => scan
            .tokens
            .iter()
            .filter(|t| {
                matches!(
                    pg_query::protobuf::Token::try_from(t.token),
                    Ok(pg_query::protobuf::Token::CComment | pg_query::protobuf::Token::SqlComment)
                )
            })
            .filter_map(|t| sql.get(t.start as usize..t.end as usize))
            .collect(),
        Err(_) => vec![sql],
    }
}

fn parse_comment(comment: &str, hints: &mut Hints) {
    let body = comment.trim_start_matches("/*").trim_end_matches("*/").trim_start_matches("--");
    let lower = body.to_ascii_lowercase();
    let starts: Vec<usize> = lower.match_indices(MARKER).map(|(i, _)| i).collect();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(body.len());
        parse_directive(body[start + MARKER.len()..end].trim(), hints);
    }
}

fn parse_directive(directive: &str, hints: &mut Hints) {
    let mut words = directive.split_whitespace();
    let Some(head) = words.next() else {
        hints.unrecognized.push(String::new());
        return;
    };
    let (name, inline_value) = match head.split_once('=') {
        Some((n, v)) => (n.to_ascii_lowercase(), Some(v)),
        None => (head.to_ascii_lowercase(), None),
    };
    match (name.as_str(), inline_value) {
        ("primary", None) => hints.route = Some(RouteHint::Primary),
        ("replica", None) => hints.route = Some(RouteHint::Replica),
        ("nocache", None) => hints.nocache = true,
        ("tag", Some(tag)) if !tag.is_empty() => hints.tag = Some(tag.to_string()),
        ("cache", None) => match parse_cache(words) {
            Some(cache) => hints.cache = Some(cache),
            None => hints.unrecognized.push(directive.to_string()),
        },
        _ => hints.unrecognized.push(directive.to_string()),
    }
}

fn parse_cache<'a>(words: impl Iterator<Item = &'a str>) -> Option<CacheHint> {
    let mut cache = CacheHint::default();
    for word in words {
        let (key, value) = word.split_once('=')?;
        match key.to_ascii_lowercase().as_str() {
            "ttl" => cache.ttl = Some(parse_duration(value)?),
            "tags" | "tag" => {
                cache.tags.extend(value.split(',').filter(|t| !t.is_empty()).map(str::to_string))
            }
            _ => return None,
        }
    }
    Some(cache)
}

/// `500ms`, `30s`, `5m`, `2h`, `1d`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.to_ascii_lowercase().as_str() {
        "ms" => number / 1000.0,
        "" | "s" | "sec" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        _ => return None,
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_in_block_and_line_comments() {
        let h = scan_hints("/* pgpilot:replica pgpilot:tag=analytics */ SELECT 1 -- pgpilot:nocache");
        assert_eq!(h.route, Some(RouteHint::Replica));
        assert_eq!(h.tag.as_deref(), Some("analytics"));
        assert!(h.nocache);
        assert!(h.unrecognized.is_empty());
    }

    #[test]
    fn cache_directive_with_ttl_and_tags() {
        let h = scan_hints("SELECT * FROM orders /* pgpilot:cache ttl=30s tags=user:42,orders */");
        assert_eq!(
            h.cache,
            Some(CacheHint {
                ttl: Some(Duration::from_secs(30)),
                tags: vec!["user:42".into(), "orders".into()]
            })
        );
        let h = scan_hints("/* PGPILOT:CACHE */ SELECT 1");
        assert_eq!(h.cache, Some(CacheHint::default()));
    }

    #[test]
    fn directives_inside_literals_are_not_hints() {
        assert!(scan_hints("SELECT '/* pgpilot:primary */'").is_empty());
        assert!(scan_hints("SELECT $$ -- pgpilot:primary $$").is_empty());
        assert!(scan_hints("SELECT 1").is_empty());
    }

    #[test]
    fn malformed_directives_are_reported() {
        let h = scan_hints("/* pgpilot:cache ttl=forever */ /* pgpilot:bogus */ SELECT 1");
        assert_eq!(h.cache, None);
        assert_eq!(h.unrecognized, vec!["cache ttl=forever".to_string(), "bogus".to_string()]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("5y"), None);
    }
}
