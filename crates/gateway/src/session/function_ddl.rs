//! Spotting function DDL in the statements clients send: routing sends a call of a function that
//! may write to the primary, and learns that a function writes from the catalog, which the monitor
//! otherwise reads only every minute. The catalog also lists what runs functions the text does not
//! name (operators, casts, domains, aggregates, views, policies): their DDL counts too.

/// What DDL must mention to change the function catalog.
const CATALOG_OBJECTS: &[&[u8]] = &[
    b"function",
    b"procedure",
    b"routine",
    b"aggregate",
    b"operator",
    b"cast",
    b"domain",
    b"type",
    b"view",
    b"policy",
    b"extension",
    // CREATE UNLOGGED TABLE, ALTER TABLE ... SET UNLOGGED: the catalog lists what a standby
    // cannot read.
    b"unlogged",
];

/// Whether a statement of `text` starts (after comments) with CREATE, ALTER or DROP and mentions
/// a function, a procedure, or another object the function catalog lists, or is a DO block (which
/// may run any DDL, as migrations' do: a false positive costs one catalog read). Each `;` may start a
/// statement (`SELECT 1; ALTER FUNCTION f() VOLATILE`); one inside a string only costs a look. A
/// false positive costs one catalog read.
pub fn mentions_function_ddl(text: &[u8]) -> bool {
    let mut statements = text;
    loop {
        // memchr: this runs on every simple Query's text.
        let end = memchr::memchr(b';', statements).unwrap_or(statements.len());
        if is_catalog_ddl(&statements[..end]) {
            return true;
        }
        match statements.get(end + 1..) {
            Some(rest) => statements = rest,
            None => return false,
        }
    }
}

fn is_catalog_ddl(statement: &[u8]) -> bool {
    let rest = skip_comments(statement);
    let word_len = rest.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    let word = &rest[..word_len];
    if word.eq_ignore_ascii_case(b"do") {
        return true;
    }
    let ddl = [&b"create"[..], b"alter", b"drop"].iter().any(|k| word.eq_ignore_ascii_case(k));
    ddl && CATALOG_OBJECTS.iter().any(|k| contains_ignore_case(rest, k))
}

/// Whether `text` says UNLOGGED anywhere (only asked of a SELECT ... INTO).
pub fn mentions_unlogged(text: &[u8]) -> bool {
    contains_ignore_case(text, b"unlogged")
}

pub(super) fn skip_comments(mut text: &[u8]) -> &[u8] {
    loop {
        text = text.trim_ascii_start();
        if let Some(rest) = text.strip_prefix(b"--") {
            text = rest.iter().position(|&c| c == b'\n').map_or(&[][..], |i| &rest[i..]);
        } else if let Some(rest) = text.strip_prefix(b"/*") {
            text = rest.windows(2).position(|w| w == b"*/").map_or(&[][..], |i| &rest[i + 2..]);
        } else {
            return text;
        }
    }
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::mentions_function_ddl;

    #[test]
    fn function_and_procedure_ddl_is_spotted() {
        assert!(mentions_function_ddl(
            b"CREATE OR REPLACE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql"
        ));
        assert!(mentions_function_ddl(b"  /* deploy */ -- v2\n drop procedure p"));
        assert!(mentions_function_ddl(b"ALTER FUNCTION f() VOLATILE"));
        assert!(mentions_function_ddl(b"alter routine f() volatile"));
        assert!(mentions_function_ddl(b"DO $$BEGIN EXECUTE 'alter function f() volatile'; END$$"));
        assert!(!mentions_function_ddl(b"select 'do'"));
        assert!(!mentions_function_ddl(b"SELECT my_function()"));
        assert!(mentions_function_ddl(b"CREATE OPERATOR ### (FUNCTION = w, LEFTARG = int, RIGHTARG = int)"));
        assert!(mentions_function_ddl(b"create or replace view v as select 1"));
        assert!(mentions_function_ddl(b"CREATE DOMAIN d AS int CHECK (VALUE > 0)"));
        assert!(!mentions_function_ddl(b"CREATE TABLE t(x int)"));
        assert!(!mentions_function_ddl(b"/* unterminated"));
        assert!(mentions_function_ddl(b"SELECT 1; ALTER FUNCTION f() VOLATILE"));
        assert!(mentions_function_ddl(
            b"BEGIN; create or replace function f() returns int as 'select 1' language sql; COMMIT;"
        ));
        assert!(!mentions_function_ddl(b"SELECT 1; SELECT 'create function';"));
    }
}
