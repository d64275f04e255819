//! Texts of sessions with `standard_conforming_strings = off`. There a backslash in a plain string
//! literal escapes the next character (`'O\'Brien'` is one literal), while pgpilot's readers — the
//! normalizer, the quick look, the PostgreSQL grammar it parses with — read plain strings as
//! standard ones, where it does not. Read that way, the rest of such a literal is taken for SQL:
//! its words reached the statistics and the slow log (a password among them), and a write could
//! pass for a string. Rewritten so that every plain literal is an E'' string, in which backslashes
//! escape in every reading, the text means for those readers what it means to the server.

use std::borrow::Cow;

use crate::normalize::{
    block_comment_end, continued_end, dollar_quoted_end, is_word, line_comment_end, quoted_close_with,
};

/// `sql` as a session with standard_conforming_strings = off means it, with each plain string
/// literal written as an E'' string (what the server runs is not changed: this is for reading).
/// Borrowed when the text has no backslash, which is then read the same either way.
pub fn with_escape_strings(sql: &str) -> Cow<'_, str> {
    let b = sql.as_bytes();
    if !b.contains(&b'\\') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        i = match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => line_comment_end(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => block_comment_end(b, i),
            b'"' => quoted_close_with(b, i, b'"', false).unwrap_or(b.len()),
            b'$' if i == 0 || !is_word(b[i - 1]) => dollar_quoted_end(b, i).unwrap_or(i + 1),
            b'\'' => {
                let escapes = match literal_kind(b, i) {
                    Kind::Escaped => true,
                    Kind::Verbatim => false,
                    Kind::Plain { prefix_len } => {
                        // `N'...'` becomes `E'...'`; after any other word (`date'...'`) the E
                        // stands apart, or it would be read as part of that word.
                        let (keep, marker) = match prefix_len {
                            0 => (i, "E"),
                            1 if matches!(b[i - 1], b'n' | b'N') => (i - 1, "E"),
                            _ => (i, " E"),
                        };
                        out.push_str(&sql[copied..keep]);
                        out.push_str(marker);
                        copied = i;
                        true
                    }
                };
                let close = quoted_close_with(b, i, b'\'', escapes).unwrap_or(b.len());
                continued_end(b, close, escapes)
            }
            _ => i + 1,
        };
    }
    out.push_str(&sql[copied..]);
    Cow::Owned(out)
}

/// What a `'` at `quote` opens, read as the server's lexer reads it.
enum Kind {
    /// E'...': backslash escapes already.
    Escaped,
    /// B'...', X'...', U&'...': no backslash escapes.
    Verbatim,
    /// A plain (or N'') string, after a word of `prefix_len` bytes (0: none).
    Plain { prefix_len: usize },
}

fn literal_kind(b: &[u8], quote: usize) -> Kind {
    let word_start = (0..quote).rev().take_while(|&k| is_word(b[k])).last().unwrap_or(quote);
    let prefix = &b[word_start..quote];
    match prefix {
        [b'e' | b'E'] => Kind::Escaped,
        [b'b' | b'B' | b'x' | b'X'] => Kind::Verbatim,
        [] if quote >= 2 && b[quote - 1] == b'&' && matches!(b[quote - 2], b'u' | b'U') => {
            let unicode = quote < 3 || !is_word(b[quote - 3]);
            if unicode {
                Kind::Verbatim
            } else {
                Kind::Plain { prefix_len: 0 }
            }
        }
        _ => Kind::Plain { prefix_len: prefix.len() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_literals_become_escape_strings_and_nothing_else_moves() {
        assert_eq!(with_escape_strings("SELECT 'a'"), "SELECT 'a'", "no backslash: as it is");
        assert_eq!(with_escape_strings(r"SELECT 'O\'Brien', 'x'"), r"SELECT E'O\'Brien', E'x'");
        assert_eq!(with_escape_strings(r"SELECT E'a\'b'"), r"SELECT E'a\'b'");
        assert_eq!(with_escape_strings(r"SELECT N'a\'b'"), r"SELECT E'a\'b'");
        assert_eq!(with_escape_strings(r"SELECT date'2026\'', x'1f'"), r"SELECT date E'2026\'', x'1f'");
        assert_eq!(with_escape_strings(r#"SELECT "a\'b" -- 'c\'"#), r#"SELECT "a\'b" -- 'c\'"#);
        assert_eq!(with_escape_strings(r"SELECT $$a\'$$, 'b\\'"), r"SELECT $$a\'$$, E'b\\'");
        assert_eq!(
            with_escape_strings("SELECT 'a\\'\n'b'"),
            "SELECT E'a\\'\n'b'",
            "a continuation stays one literal"
        );
        assert_eq!(with_escape_strings(r"SELECT 1 /* 'a\' */, 'q\''"), r"SELECT 1 /* 'a\' */, E'q\''");
    }

    #[test]
    fn the_rest_of_an_escaped_literal_is_never_read_as_sql() {
        let sql = r"select 'a\' ; ' ; delete from t; --'";
        let read = with_escape_strings(sql);
        assert_eq!(read, r"select E'a\' ; ' ; delete from t; --'");
        assert!(!crate::quick_look(&read).plain_select, "a read with a DELETE behind it");
        let normalized = crate::normalize::normalize(&read, false);
        assert!(normalized.text.contains("delete from t"), "{}", normalized.text);
        let secret = crate::normalize::normalize(&with_escape_strings(r"select 'pw\'HunterTwo'"), false);
        assert!(!secret.text.contains("HunterTwo"), "{}", secret.text);
    }
}
