//! `COPY ... FROM STDIN` and `COPY ... TO STDOUT` in a script: their data travels over the
//! connection in a sub-protocol the clients do not speak, so every transaction would fail at run
//! time and lose its connection. They are refused when the script is compiled, before anything
//! connects. A server-side `COPY` (to or from a file or a program) is an ordinary command.

use super::lex::{self, Piece};

/// Whether an SQL command is a COPY whose data goes through the client.
pub(super) fn copies_through_client(pieces: &[Piece]) -> bool {
    let mut words = pieces.iter().flat_map(|p| match p {
        Piece::Text(t) => bare_words(t),
        Piece::Var(_) => Vec::new(),
    });
    words.next().is_some_and(|w| w.eq_ignore_ascii_case("copy"))
        && words.any(|w| w.eq_ignore_ascii_case("stdin") || w.eq_ignore_ascii_case("stdout"))
}

/// The unquoted words of SQL text: quoted strings, quoted identifiers and dollar-quoted bodies
/// are skipped (a file named 'stdin' is not STDIN), with the lexer's own rules. The lexer has
/// already kept each quote whole within one piece and dropped comments.
fn bare_words(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => i = lex::quote_end(bytes, i, b'\'', lex::is_escape_string(bytes, i)),
            b'"' => i = lex::quote_end(bytes, i, b'"', false),
            b'$' => {
                i = lex::dollar_tag_len(bytes, i)
                    .map_or(i + 1, |tag_len| lex::dollar_quote_end(text, i, tag_len).unwrap_or(text.len()))
            }
            b if lex::is_ident_char(b) => {
                let start = i;
                while i < bytes.len() && lex::is_ident_char(bytes[i]) {
                    i += 1;
                }
                words.push(&text[start..i]);
            }
            _ => i += 1,
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(sql: &str) -> Vec<Piece> {
        vec![Piece::Text(sql.into())]
    }

    #[test]
    fn copy_through_the_client_is_recognised() {
        for sql in [
            "COPY t FROM STDIN",
            "copy t (a, b) from stdin with (format csv)",
            "COPY (SELECT 1) TO STDOUT",
            "\tCopy t TO stdout",
        ] {
            assert!(copies_through_client(&text(sql)), "{sql}");
        }
    }

    #[test]
    fn other_commands_and_server_side_copy_are_not() {
        for sql in [
            "COPY t FROM '/tmp/stdin'",
            "COPY t TO PROGRAM 'cat > /dev/null'",
            "COPY t FROM $$/data/stdin$$",
            "SELECT 'COPY t FROM STDIN'",
            "SELECT stdin FROM copy",
            "INSERT INTO copy_log VALUES ('stdout')",
            "COPY \"stdin\" FROM '/f'",
            "COPY t FROM 'C:\\' WHERE false",
            "COPY t FROM E'it\\'s stdin'",
        ] {
            assert!(!copies_through_client(&text(sql)), "{sql}");
        }
        // A variable in the middle does not hide what follows it.
        let pieces = vec![
            Piece::Text("COPY t (".into()),
            Piece::Var("col".into()),
            Piece::Text(") FROM STDIN".into()),
        ];
        assert!(copies_through_client(&pieces));
    }
}
