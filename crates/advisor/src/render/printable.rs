//! Text from the database shown on a terminal. A table, role or application name, a query or a
//! prepared transaction's gid can hold control characters: written raw, `\x1b[31m` recolours the
//! terminal and a newline makes a line the report never wrote (`evil\nDROP TABLE x;`). They are
//! shown escaped; the JSON report and the SQL the advisor runs keep the names as they are.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every control character escaped: `\n`, `\r`, `\t`, `\\x1b`, `\u{85}`.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_printable(&mut out, c);
    }
    Cow::Owned(out)
}

fn push_printable(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x80 && c.is_control() => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if c.is_control() => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// Where SQL text is, for telling its own line breaks from those inside a name or a literal.
#[derive(Clone, Copy, PartialEq)]
enum Lexeme {
    Code,
    Identifier,
    Literal,
    Comment,
}

/// The lines of a text of several lines (a fix of several statements), each escaped as by
/// [`printable`]: a line break inside a double-quoted identifier or a string literal is part of a
/// name or value and is escaped; the others break lines.
pub fn printable_lines(s: &str) -> Vec<String> {
    let mut lines = vec![String::new()];
    let mut state = Lexeme::Code;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let breaks_line = c == '\n' && matches!(state, Lexeme::Code | Lexeme::Comment);
        state = match (state, c) {
            (Lexeme::Code, '"') => Lexeme::Identifier,
            (Lexeme::Code, '\'') => Lexeme::Literal,
            (Lexeme::Code, '-') if chars.peek() == Some(&'-') => Lexeme::Comment,
            (Lexeme::Identifier, '"') | (Lexeme::Literal, '\'') | (Lexeme::Comment, '\n') => Lexeme::Code,
            (state, _) => state,
        };
        if breaks_line {
            lines.push(String::new());
        } else {
            push_printable(lines.last_mut().expect("never empty"), c);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            printable("evil\nDROP TABLE x;\x1b[31mred\u{85}"),
            "evil\\nDROP TABLE x;\\x1b[31mred\\u{85}"
        );
        assert!(matches!(printable("plain \"Mixed\""), Cow::Borrowed(_)));
    }

    #[test]
    fn only_line_breaks_outside_names_and_literals_break_lines() {
        let fix = "-- it's a comment\nDROP INDEX public.\"ix\nnl\";\nSELECT 'a\nb';";
        assert_eq!(
            printable_lines(fix),
            ["-- it's a comment", "DROP INDEX public.\"ix\\nnl\";", "SELECT 'a\\nb';"]
        );
    }
}
