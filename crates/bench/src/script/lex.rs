//! Splits a pgbench-style script into SQL commands and backslash meta-commands.
//!
//! SQL commands end at `;` (or at `\gset`/`\aset`, which attach to the command they end) and may
//! span lines. Quotes, dollar quotes and comments are respected, comments are dropped, and
//! `:name` outside quotes is recorded as a possible variable reference (`::` casts are not).

use super::ScriptError;

#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Var(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum RawCommand {
    Sql { pieces: Vec<Piece>, capture: Option<Capture>, line: usize },
    Meta { name: String, args: String, line: usize },
}

/// `\gset [prefix]` stores the single row's columns as variables; `\aset` every row's.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    pub prefix: String,
    pub all_rows: bool,
}

struct Lexer<'a> {
    src: &'a [u8],
    text: &'a str,
    pos: usize,
    line: usize,
    pieces: Vec<Piece>,
    current: String,
    start_line: usize,
    out: Vec<RawCommand>,
}

pub fn split(text: &str) -> Result<Vec<RawCommand>, ScriptError> {
    let mut lx = Lexer {
        src: text.as_bytes(),
        text,
        pos: 0,
        line: 1,
        pieces: Vec::new(),
        current: String::new(),
        start_line: 1,
        out: Vec::new(),
    };
    lx.run()?;
    Ok(lx.out)
}

impl<'a> Lexer<'a> {
    fn run(&mut self) -> Result<(), ScriptError> {
        while self.pos < self.src.len() {
            let c = self.src[self.pos];
            match c {
                b';' => {
                    self.pos += 1;
                    self.end_sql(None);
                }
                b'\\' => self.meta()?,
                b'\'' => self.quoted(b'\'', self.is_escape_string()),
                b'"' => self.quoted(b'"', false),
                b'-' if self.peek(1) == Some(b'-') => self.line_comment(),
                b'/' if self.peek(1) == Some(b'*') => self.block_comment()?,
                b'$' if self.dollar_tag().is_some() => self.dollar_quoted()?,
                b':' if self.peek(1) == Some(b':') => self.take(2),
                b':' if self.peek(1).is_some_and(is_ident_start) => self.variable(),
                _ => self.take_char(),
            }
        }
        self.end_sql(None);
        Ok(())
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.src.get(self.pos + ahead).copied()
    }

    fn take(&mut self, n: usize) {
        let end = (self.pos + n).min(self.src.len());
        self.push_text(end);
    }

    fn take_char(&mut self) {
        let len = self.text[self.pos..].chars().next().map_or(1, char::len_utf8);
        self.take(len);
    }

    fn push_text(&mut self, end: usize) {
        let chunk = &self.text[self.pos..end];
        if self.current.trim().is_empty() && self.pieces.is_empty() && chunk.trim().is_empty() {
            self.start_line = self.line + chunk.matches('\n').count();
        }
        self.line += chunk.matches('\n').count();
        self.current.push_str(chunk);
        self.pos = end;
    }

    fn flush_text(&mut self) {
        if !self.current.is_empty() {
            self.pieces.push(Piece::Text(std::mem::take(&mut self.current)));
        }
    }

    fn has_sql(&self) -> bool {
        !self.current.trim().is_empty() || !self.pieces.is_empty()
    }

    fn end_sql(&mut self, capture: Option<Capture>) {
        self.flush_text();
        let mut pieces = std::mem::take(&mut self.pieces);
        trim_pieces(&mut pieces);
        if !pieces.is_empty() {
            self.out.push(RawCommand::Sql { pieces, capture, line: self.start_line });
        }
        self.start_line = self.line;
    }

    fn is_escape_string(&self) -> bool {
        is_escape_string(self.src, self.pos)
    }

    fn quoted(&mut self, quote: u8, backslash_escapes: bool) {
        self.push_text(quote_end(self.src, self.pos, quote, backslash_escapes));
    }

    fn line_comment(&mut self) {
        let end = self.text[self.pos..].find('\n').map_or(self.src.len(), |n| self.pos + n);
        self.pos = end;
    }

    fn block_comment(&mut self) -> Result<(), ScriptError> {
        let mut depth = 0;
        let mut i = self.pos;
        while i < self.src.len() {
            if self.src[i..].starts_with(b"/*") {
                depth += 1;
                i += 2;
            } else if self.src[i..].starts_with(b"*/") {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    break;
                }
            } else {
                i += 1;
            }
        }
        if depth != 0 {
            return Err(ScriptError::at(self.line, "unterminated /* comment"));
        }
        self.line += self.text[self.pos..i].matches('\n').count();
        self.pos = i;
        self.current.push(' ');
        Ok(())
    }

    fn dollar_tag(&self) -> Option<usize> {
        dollar_tag_len(self.src, self.pos)
    }

    fn dollar_quoted(&mut self) -> Result<(), ScriptError> {
        let tag_len = self.dollar_tag().unwrap_or(2);
        match dollar_quote_end(self.text, self.pos, tag_len) {
            Some(end) => {
                self.take(end - self.pos);
                Ok(())
            }
            None => Err(ScriptError::at(self.line, "unterminated dollar-quoted string")),
        }
    }

    fn variable(&mut self) {
        let start = self.pos + 1;
        let mut end = start;
        while end < self.src.len() && is_ident_char(self.src[end]) {
            end += 1;
        }
        self.flush_text();
        self.pieces.push(Piece::Var(self.text[start..end].to_string()));
        self.pos = end;
    }

    fn meta(&mut self) -> Result<(), ScriptError> {
        let line = self.line;
        let mut end = self.pos + 1;
        let mut args = String::new();
        // The name, then the rest of the line; a trailing backslash continues on the next line.
        while end < self.src.len() && is_ident_char(self.src[end]) {
            end += 1;
        }
        let name = self.text[self.pos + 1..end].to_ascii_lowercase();
        let mut i = end;
        loop {
            let eol = self.text[i..].find('\n').map_or(self.src.len(), |n| i + n);
            let chunk = self.text[i..eol].trim_end_matches('\r');
            if let Some(cont) = chunk.strip_suffix('\\') {
                args.push_str(cont);
                args.push(' ');
                self.line += 1;
                i = (eol + 1).min(self.src.len());
            } else {
                args.push_str(chunk);
                i = eol;
                break;
            }
        }
        self.pos = i;
        let args = args.trim().to_string();
        match name.as_str() {
            "gset" | "aset" => {
                if !self.has_sql() {
                    return Err(ScriptError::at(line, format!("\\{name} must follow an SQL command")));
                }
                self.end_sql(Some(Capture { prefix: args, all_rows: name == "aset" }));
            }
            _ if self.has_sql() => {
                return Err(ScriptError::at(
                    line,
                    format!("\\{name} inside an SQL command: end the SQL command with ; first"),
                ))
            }
            _ => self.out.push(RawCommand::Meta { name, args, line }),
        }
        Ok(())
    }
}

fn trim_pieces(pieces: &mut Vec<Piece>) {
    if let Some(Piece::Text(t)) = pieces.first_mut() {
        *t = t.trim_start().to_string();
    }
    if let Some(Piece::Text(t)) = pieces.last_mut() {
        *t = t.trim_end().to_string();
    }
    pieces.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

pub(super) fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// Whether the quote at `open` starts an `E'...'` string, where a backslash escapes.
pub(super) fn is_escape_string(src: &[u8], open: usize) -> bool {
    open > 0 && matches!(src[open - 1], b'E' | b'e') && (open < 2 || !is_ident_char(src[open - 2]))
}

/// The position after the quote opened at `open` (the end of `src` when it is not closed): a
/// doubled quote stays inside, and so does a backslash-escaped one when `backslash_escapes`.
pub(super) fn quote_end(src: &[u8], open: usize, quote: u8, backslash_escapes: bool) -> usize {
    let mut i = open + 1;
    while i < src.len() {
        match src[i] {
            b'\\' if backslash_escapes => i += 2,
            q if q == quote && src.get(i + 1) == Some(&quote) => i += 2,
            q if q == quote => return i + 1,
            _ => i += 1,
        }
    }
    src.len()
}

/// The length of the `$tag$` starting at `at`, when one does (`$1` is a parameter, not a tag).
pub(super) fn dollar_tag_len(src: &[u8], at: usize) -> Option<usize> {
    let rest = &src[at + 1..];
    let end = rest.iter().position(|&b| !is_ident_char(b))?;
    (rest[end] == b'$' && rest.first().is_none_or(|&b| !b.is_ascii_digit())).then_some(end + 2)
}

/// The position after the dollar-quoted string whose `tag_len`-byte tag starts at `at`; None
/// when the closing tag is missing.
pub(super) fn dollar_quote_end(text: &str, at: usize, tag_len: usize) -> Option<usize> {
    let tag = &text[at..at + tag_len];
    let body = at + tag_len;
    text[body..].find(tag).map(|n| body + n + tag_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql_texts(cmds: &[RawCommand]) -> Vec<String> {
        cmds.iter()
            .filter_map(|c| match c {
                RawCommand::Sql { pieces, .. } => Some(
                    pieces
                        .iter()
                        .map(|p| match p {
                            Piece::Text(t) => t.clone(),
                            Piece::Var(v) => format!("<{v}>"),
                        })
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn splits_sql_and_meta() {
        let script = "\\set aid random(1, \\\n 100000 * :scale)\n-- a comment; with a semicolon\n\
                      SELECT abalance FROM pgbench_accounts\n  WHERE aid = :aid;\nEND;\n";
        let cmds = split(script).unwrap();
        assert_eq!(
            cmds[0],
            RawCommand::Meta { name: "set".into(), args: "aid random(1,   100000 * :scale)".into(), line: 1 }
        );
        assert_eq!(
            sql_texts(&cmds),
            vec!["SELECT abalance FROM pgbench_accounts\n  WHERE aid = <aid>", "END"]
        );
        match &cmds[1] {
            RawCommand::Sql { line, .. } => assert_eq!(*line, 4),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn quotes_casts_and_dollar_quotes_are_not_variables() {
        let cmds = split("SELECT ':x; no', $f$ :y; $f$, 1::int, E'it\\'s :z;', \"a:b\" FROM t WHERE c = :c;")
            .unwrap();
        assert_eq!(
            sql_texts(&cmds),
            vec!["SELECT ':x; no', $f$ :y; $f$, 1::int, E'it\\'s :z;', \"a:b\" FROM t WHERE c = <c>"]
        );
    }

    #[test]
    fn gset_ends_a_command_and_meta_inside_sql_is_an_error() {
        let cmds = split("SELECT 1 AS one \\gset p_\nSELECT :p_one;").unwrap();
        assert!(matches!(&cmds[0], RawCommand::Sql { capture: Some(c), .. } if c.prefix == "p_"));
        assert_eq!(sql_texts(&cmds)[1], "SELECT <p_one>");
        assert!(split("SELECT 1\n\\sleep 1\n").is_err());
        assert!(split("SELECT /* open").is_err());
    }

    #[test]
    fn last_command_needs_no_semicolon() {
        assert_eq!(sql_texts(&split("SELECT 1;\nSELECT 2\n").unwrap()), vec!["SELECT 1", "SELECT 2"]);
    }
}
