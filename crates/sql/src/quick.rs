//! A quick lexical look at a statement, for the hot path: most statements an application sends
//! are plain reads or plain DML whose literals change every time, so a cache keyed by the text never
//! hits and a full parse (tens of microseconds) would be paid per statement. This scan, a few
//! hundred nanoseconds, tells when no parse is needed: a single SELECT without function calls,
//! locking or INTO is a plain read; INSERT/UPDATE/DELETE are writes; and a text whose statements
//! start with none of the session-changing keywords changes no session state.
//!
//! It errs one way only: whenever it is not sure, it says "parse me".

/// What the scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuickLook {
    /// The first keyword of the first statement.
    pub first_word: FirstWord,
    /// Some statement starts with a keyword that may change session state.
    pub session_word: bool,
    /// A single SELECT with no '(' (so no function call or subquery), no FOR (locking), no INTO.
    pub plain_select: bool,
    /// A single INSERT, UPDATE, DELETE or MERGE (routing needs no parse: it is a write).
    pub plain_write: bool,
    /// Mentions set_config or an advisory-lock function, anywhere.
    pub session_function: bool,
    /// Some statement starts with CREATE, ALTER, DROP or DO (which may run any of them).
    pub ddl_word: bool,
    /// A comment mentions `pgpilot:`: hints must be read by the real parser.
    pub hint: bool,
    /// Dollar quoting, escape strings, or something unterminated: only a parse can tell.
    pub opaque: bool,
}

/// The first keyword of a statement, as far as the quick look cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirstWord {
    #[default]
    None,
    Select,
    /// INSERT, UPDATE, DELETE or MERGE.
    Write,
    Other,
}

impl FirstWord {
    fn of(word: &[u8]) -> FirstWord {
        let is = |k: &str| word.eq_ignore_ascii_case(k.as_bytes());
        if is("select") {
            FirstWord::Select
        } else if is("insert") || is("update") || is("delete") || is("merge") {
            FirstWord::Write
        } else {
            FirstWord::Other
        }
    }
}

/// First words of statements that may change session state: SET/RESET, prepared statements (and
/// EXPLAIN, which may EXECUTE one), DISCARD, LISTEN, cursors (WITH HOLD), CREATE (temporary
/// objects), LOAD, and DO/CALL. Temporary
/// objects made by statements starting otherwise are found by [`creates_temp_object`].
const SESSION_WORDS: &[&str] = &[
    "set",
    "reset",
    "prepare",
    "execute",
    "explain",
    "deallocate",
    "discard",
    "listen",
    "unlisten",
    "declare",
    "close",
    "create",
    "load",
    "do",
    "call",
];

impl QuickLook {
    /// Whether the statement could change session state (SET, PREPARE, LISTEN, temp tables,
    /// advisory locks...): only then does session tracking need the full classification.
    pub fn may_change_session(&self) -> bool {
        self.opaque || self.session_function || self.session_word
    }
}

/// Scans `sql` once.
pub fn quick_look(sql: &str) -> QuickLook {
    let b = sql.as_bytes();
    let mut look = QuickLook::default();
    let mut i = 0;
    let mut at_statement_start = true;
    let mut paren = false;
    let mut lock_or_into = false;
    let mut statements = 0;
    // The previous word of the current statement (empty at its start).
    let mut prev_word: &[u8] = &[];
    while i < b.len() {
        let c = b[i];
        match c {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = crate::normalize::line_comment_end(b, i);
                look.hint |= contains_ci(&b[i..end], b"pgpilot:");
                i = end;
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => match find(&b[i + 2..], b"*/") {
                Some(p) => {
                    let end = i + 2 + p + 2;
                    look.hint |= contains_ci(&b[i..end], b"pgpilot:");
                    // Nested comments are legal in PostgreSQL; leave them to the parser.
                    look.opaque |= find(&b[i + 2..end - 2], b"/*").is_some();
                    i = end;
                    continue;
                }
                None => return opaque(look),
            },
            b'\'' => {
                if i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !is_ident(b[i - 2])) {
                    return opaque(look);
                }
                match skip_quoted(b, i, b'\'') {
                    Some(next) => i = next,
                    None => return opaque(look),
                }
                at_statement_start = false;
                continue;
            }
            b'"' => {
                // U&"\0073et_config": only the parser reads the name behind the escapes.
                if i >= 2 && b[i - 1] == b'&' && matches!(b[i - 2], b'u' | b'U') {
                    return opaque(look);
                }
                match skip_quoted(b, i, b'"') {
                    Some(next) => {
                        let name = &b[i + 1..next - 1];
                        look.session_word |= is_quoted_temp_schema(name);
                        // "set_config"(...), pg_catalog."pg_advisory_lock"(...) are those functions too.
                        look.session_function |= is_session_function(name);
                        i = next;
                    }
                    None => return opaque(look),
                }
                at_statement_start = false;
                continue;
            }
            b'$' if b.get(i + 1).is_some_and(|&n| n == b'$' || n.is_ascii_alphabetic() || n == b'_') => {
                return opaque(look);
            }
            b';' => {
                at_statement_start = true;
                prev_word = &[];
                i += 1;
                continue;
            }
            b'(' => paren = true,
            // A number is one token, as the normalizer reads it: `1e5` holds no word `e5`. (So a
            // text of a known shape looks the same whatever its numbers: see shape.rs.)
            b'0'..=b'9' | b'.' if c != b'.' || b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = crate::normalize::number_end(b, i);
                at_statement_start = false;
                continue;
            }
            _ if is_ident_start(c) => {
                let start = i;
                while i < b.len() && is_ident(b[i]) {
                    i += 1;
                }
                let word = &b[start..i];
                if at_statement_start {
                    statements += 1;
                    if statements == 1 {
                        look.first_word = FirstWord::of(word);
                    }
                    look.session_word |=
                        SESSION_WORDS.iter().any(|k| word.eq_ignore_ascii_case(k.as_bytes()));
                    look.ddl_word |= [&b"create"[..], b"alter", b"drop", b"do"]
                        .iter()
                        .any(|k| word.eq_ignore_ascii_case(k));
                    at_statement_start = false;
                } else if word.eq_ignore_ascii_case(b"for") || word.eq_ignore_ascii_case(b"into") {
                    lock_or_into = true;
                }
                // Only words starting with t or p can make a temporary object or be a session
                // function (set_config, pg_advisory_*): one test for most words.
                if matches!(word[0] | 0x20, b't' | b'p' | b's') {
                    look.session_word |= creates_temp_object(prev_word, word);
                    look.session_function |= is_session_function(word);
                }
                prev_word = word;
                continue;
            }
            _ if c.is_ascii_whitespace() => {}
            _ => at_statement_start = false,
        }
        i += 1;
    }
    let single = statements == 1;
    look.plain_select =
        single && look.first_word == FirstWord::Select && !paren && !lock_or_into && !look.hint;
    look.plain_write = single && look.first_word == FirstWord::Write && !look.hint;
    look
}

/// Whether `word` (after `prev`) may make a temporary object in a statement whose first word does
/// not say so: `SELECT ... INTO TEMP t`, `EXPLAIN ANALYZE CREATE TEMP TABLE ...`, or any name in the
/// pg_temp schema (`pg_temp.t`, `pg_temp_3.t`). A column or table called `temp` elsewhere does not
/// count, so reads of it stay unparsed; naming pg_temp in a read merely costs a parse.
fn creates_temp_object(prev: &[u8], word: &[u8]) -> bool {
    let is = |w: &[u8], k: &str| w.eq_ignore_ascii_case(k.as_bytes());
    if is(word, "temp") || is(word, "temporary") {
        // CREATE [GLOBAL | LOCAL] TEMP, INTO TEMP.
        return ["into", "create", "global", "local"].iter().any(|k| is(prev, k));
    }
    is(word, "pg_temp") || starts_with_ci(word, b"pg_temp_")
}

/// A function that changes the session: set_config, or one taking an advisory lock.
fn is_session_function(name: &[u8]) -> bool {
    starts_with_ci(name, b"set_config")
        || starts_with_ci(name, b"pg_advisory")
        || starts_with_ci(name, b"pg_try_advisory")
}

/// A quoted identifier naming the temporary schema (quoted, the name is case-sensitive).
fn is_quoted_temp_schema(name: &[u8]) -> bool {
    name == b"pg_temp" || name.starts_with(b"pg_temp_")
}

fn opaque(mut look: QuickLook) -> QuickLook {
    look.opaque = true;
    look.plain_select = false;
    look.plain_write = false;
    look
}

/// Past a quoted token starting at `start`; a doubled quote is part of it. None if unterminated.
fn skip_quoted(b: &[u8], start: usize, q: u8) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident(c: u8) -> bool {
    crate::normalize::is_word(c)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

fn starts_with_ci(word: &[u8], prefix: &[u8]) -> bool {
    word.len() >= prefix.len() && word[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_reads_and_writes_need_no_parse() {
        let l = quick_look("SELECT abalance FROM pgbench_accounts WHERE aid = 83671;");
        assert!(l.plain_select && !l.may_change_session());
        let l = quick_look("UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 5;");
        assert!(l.plain_write && !l.plain_select && !l.may_change_session());
        assert!(quick_look("insert into t values ('it''s', 1)").plain_write);
    }

    #[test]
    fn ddl_is_seen_at_any_statement_start() {
        for sql in [
            "CREATE VIEW v AS SELECT 1",
            "/* deploy */ alter function f() volatile",
            "select 1; DROP TYPE t",
            "do 'begin end'",
        ] {
            assert!(quick_look(sql).ddl_word, "{sql}");
        }
        for sql in
            ["BEGIN", "END", "select 'create view'", "select \"drop\" from t", "UPDATE t SET alter = 1"]
        {
            assert!(!quick_look(sql).ddl_word, "{sql}");
        }
    }

    #[test]
    fn anything_that_might_matter_is_left_to_the_parser() {
        for sql in [
            "SELECT nextval('s')",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * INTO copy FROM t",
            "SELECT 1; SELECT 2",
            "/* pgpilot:primary */ SELECT 1",
            "SELECT 1 -- pgpilot:nocache",
            "SELECT $$ text $$",
            "SELECT E'\\x'",
            "SELECT 'unterminated",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        ] {
            assert!(!quick_look(sql).plain_select, "{sql}");
        }
    }

    #[test]
    fn session_changes_are_noticed() {
        for sql in [
            "SET search_path = app",
            "reset all",
            "PREPARE p AS SELECT 1",
            "select 1; listen x",
            "CREATE TEMP TABLE x(i int)",
            "SELECT set_config('a', 'b', false)",
            "SELECT pg_advisory_lock(1)",
            "select \"set_config\"('search_path', 's7', false)",
            "select pg_catalog.\"pg_advisory_lock\"(109)",
            "select U&\"\\0073et_config\"('search_path', 's7', false)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "DISCARD ALL",
            "SELECT $tag$ x $tag$",
            "SELECT * INTO TEMP t FROM x",
            "select a into temporary table t from x",
            "WITH w AS (SELECT 1) SELECT * INTO TEMP t FROM w",
            "EXPLAIN ANALYZE CREATE GLOBAL TEMPORARY TABLE t AS SELECT 1",
            "SELECT * INTO pg_temp.t FROM x",
            "SELECT * INTO PG_TEMP_4.t FROM x",
            "SELECT * INTO \"pg_temp\".t FROM x",
        ] {
            assert!(quick_look(sql).may_change_session(), "{sql}");
        }
        for sql in [
            "UPDATE t SET x = 1",
            "SELECT 'set_config'",
            "BEGIN",
            "COMMIT",
            "INSERT INTO t VALUES (1)",
            "SELECT * INTO copy FROM t",
            "SELECT temp, temporary FROM readings",
            "SELECT 1; SELECT temp FROM t",
            "SELECT 'into temp'",
            "SELECT * FROM \"PG_TEMP\".t",
        ] {
            assert!(!quick_look(sql).may_change_session(), "{sql}");
        }
    }
}
