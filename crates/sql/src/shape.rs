//! A statement's shape: its text with the places of its constants. Applications send the same
//! statements again and again with other constants (`... WHERE aid = 4711`, then `= 815`), and
//! normalizing each costs a full tokenization on the hot path. A text that matches a shape seen
//! before — the same bytes outside the constants, and at each constant's place a constant the
//! normalizer would cut out the same way — normalizes to the same text and fingerprint, so the
//! earlier result stands for it.
//!
//! Why a match is enough: the normalizer reads left to right, and what it has read decides how it
//! reads on. Bytes outside the constants are equal; each constant is read by the normalizer's own
//! rule for its first byte, in the same state (a string right after another constant is not
//! matched: the bytes before a string say whether it takes escapes); and the constants it reads
//! the content of (a `$` inside one renumbers the parameters, a string ending in PASSWORD makes the
//! next word a secret, an `IN (...)` list of constants is written as one) are never part of a
//! shape. The quick look reads numbers and strings as the normalizer does, so it matches too.

use crate::normalize::{ends_with_password, number_end, quoted_close, starts_number};

/// Whether normalization may note this constant in a shape: a number (maybe negative) or a plain
/// string, closed, with no `$`, that does not end in PASSWORD. Prefixed strings (E'', B'', X'', N'', U&'')
/// and dollar quoting are left to the normalizer.
pub(crate) fn matchable_constant(raw: &[u8]) -> bool {
    match raw.first() {
        Some(b'0'..=b'9' | b'.' | b'-') => true,
        Some(b'\'') => quoted_close(raw, 0, b'\'') == Some(raw.len()) && matchable_string(raw),
        _ => false,
    }
}

/// A closed plain string: matchable unless the normalizer reads its content.
fn matchable_string(raw: &[u8]) -> bool {
    !raw.contains(&b'$') && !string_ends_with_password(raw)
}

fn string_ends_with_password(raw: &[u8]) -> bool {
    let body = raw.strip_suffix(b"'").unwrap_or(raw);
    std::str::from_utf8(body).map_or(true, ends_with_password)
}

/// Whether `text` has the shape of `template`, whose constants `normalize_with_spans` noted at
/// `spans`: then both normalize to the same text and fingerprint.
pub fn same_shape(template: &[u8], spans: &[(u32, u32)], text: &[u8]) -> bool {
    let (mut t, mut n) = (0usize, 0usize);
    for &(start, end) in spans {
        let (start, end) = (start as usize, end as usize);
        let fixed = &template[t..start];
        if !text[n..].starts_with(fixed) {
            return false;
        }
        // Whether a string takes backslash escapes is read from the bytes before it (an E), which
        // here would be the previous constant's.
        if fixed.is_empty() && t > 0 && template[start] == b'\'' {
            return false;
        }
        n += fixed.len();
        let Some(constant_end) = constant_end(text, n, template[start]) else { return false };
        if template[start] == b'\'' && !matchable_string(&text[n..constant_end]) {
            return false;
        }
        n = constant_end;
        t = end;
    }
    text[n..] == template[t..]
}

/// Where the constant at `i` ends when it is of the kind a template's constant starting with
/// `kind` is, read as the normalizer reads it; None for another kind, or a string never closed.
fn constant_end(b: &[u8], i: usize, kind: u8) -> Option<usize> {
    let c = *b.get(i)?;
    match kind {
        b'0'..=b'9' if c.is_ascii_digit() => Some(number_end(b, i)),
        b'.' if c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit) => Some(number_end(b, i)),
        b'-' if c == b'-' && starts_number(b, i + 1) => Some(number_end(b, i + 1)),
        b'\'' if c == b'\'' => quoted_close(b, i, b'\''),
        _ => None,
    }
}

/// A key under which to look for the shapes a text may have: a hash of its bytes up to the first
/// one that may start a constant. Texts of one shape share those bytes, whatever their constants.
pub fn shape_key(text: &[u8]) -> u64 {
    let end = text.iter().position(|&c| MAY_START_CONSTANT[c as usize]).unwrap_or(text.len());
    let prefix = &text[..end];
    let mut hash = (end as u64).wrapping_mul(SEED);
    let mut chunks = prefix.chunks_exact(8);
    for chunk in &mut chunks {
        hash = mix(hash, u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix(hash, u64::from_le_bytes(last))
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

fn mix(hash: u64, word: u64) -> u64 {
    (hash.rotate_left(5) ^ word).wrapping_mul(SEED)
}

/// Bytes a matchable constant may start with.
static MAY_START_CONSTANT: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'\'';
        c += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::{normalize, normalize_with_spans};
    use crate::quick_look;

    /// Normalizes `template` noting its shape; says whether `text` matches it, checking that a
    /// match normalizes the same.
    fn matches(template: &str, text: &str) -> bool {
        let (mut normalized, mut spans) = (String::new(), Vec::new());
        let (fingerprint, reusable) = normalize_with_spans(template, &mut normalized, &mut spans);
        assert_eq!(normalize(template, false).text, normalized, "{template}");
        if !reusable || !same_shape(template.as_bytes(), &spans, text.as_bytes()) {
            return false;
        }
        assert_eq!(quick_look(template), quick_look(text), "{template} / {text}");
        let again = normalize(text, false);
        assert_eq!(
            (again.fingerprint, again.text.as_str()),
            (fingerprint, normalized.as_str()),
            "{template} / {text}"
        );
        assert_eq!(shape_key(template.as_bytes()), shape_key(text.as_bytes()), "{template} / {text}");
        true
    }

    #[test]
    fn texts_differing_in_constants_match() {
        let t = "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;";
        assert!(matches(t, "SELECT abalance FROM pgbench_accounts WHERE aid = 5;"));
        assert!(matches(t, t));
        assert!(matches(
            "SELECT * FROM t WHERE a = 'x' AND b > -2.5e3 AND c < .5",
            "SELECT * FROM t WHERE a = 'it''s' AND b > -7 AND c < .25"
        ));
        assert!(matches("UPDATE t SET v = v + 1 WHERE id = 2", "UPDATE t SET v = v + 100 WHERE id = 99999"));
        assert!(matches("SELECT 1", "SELECT 1_000.5"));
        assert!(matches("SELECT now()", "SELECT now()"));
        assert!(matches("SELECT $1::int, 5", "SELECT $1::int, 6"));
    }

    #[test]
    fn other_statements_or_constants_read_otherwise_do_not() {
        let t = "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;";
        assert!(!matches(t, "SELECT abalance FROM pgbench_accounts WHERE aid = 4711 OR true;"));
        assert!(!matches(t, "SELECT abalance FROM pgbench_accounts WHERE aid = 'x';"));
        assert!(!matches(t, "SELECT abalance FROM pgbench_accounts WHERE aid = 47x;"));
        assert!(!matches(t, "SELECT abalance FROM pgbench_accounts WHERE aid = "));
        assert!(!matches("SELECT 'a'", "SELECT 'a$1'"), "a $ inside renumbers the parameters");
        assert!(!matches("SELECT 'a' x", "SELECT 'PASSWORD ' x"), "the word after it is a secret");
        assert!(!matches("SELECT * FROM t WHERE a - 1 > 0", "SELECT * FROM t WHERE a --1 > 0\n"));
        assert!(!matches("SELECT x FROM t WHERE id IN (1, 2)", "SELECT x FROM t WHERE id IN (3, 4)"));
        assert!(!matches("SELECT E'a\\'b'", "SELECT E'c\\'d'"));
        assert!(!matches("SELECT $$a$$", "SELECT $$b$$"));
        assert!(!matches("SELECT 'a', 1", "SELECT 1, 'a'"));
    }

    #[test]
    fn a_string_running_to_the_end_matches_nothing() {
        assert!(!matches("SELECT 'abc", "SELECT 'de"));
        assert!(!matches("SELECT 'abc", "SELECT 'de' x"));
        assert!(!matches("SELECT ''", "SELECT '"));
    }

    /// Random texts from fragments the normalizer treats specially, each against variants with a
    /// few bytes changed: whenever the shape says they match, they must normalize the same.
    #[test]
    fn a_match_always_normalizes_the_same() {
        const FRAGMENTS: &[&str] = &[
            "SELECT ",
            "a",
            "x1",
            " ",
            "=",
            "-",
            "--",
            "\n",
            ".",
            "5",
            "12",
            "1e",
            "'",
            "''",
            "E'",
            "\\",
            "$1",
            "$$",
            "$",
            "/*",
            "*/",
            "IN (",
            ",",
            ")",
            "(",
            "password ",
            "PASSWORD",
            ";",
            "U&'",
            "0x",
            "in",
            "\"",
            "é",
            " ORDER BY ",
            "group by ",
            " desc",
            " union ",
        ];
        const CHANGES: &[u8] = b"0123456789'.- xe$;,()";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut matched, mut normalized, mut spans) = (0, String::new(), Vec::new());
        for _ in 0..20_000 {
            let template: String = (0..1 + next(12)).map(|_| FRAGMENTS[next(FRAGMENTS.len())]).collect();
            let (fingerprint, reusable) = normalize_with_spans(&template, &mut normalized, &mut spans);
            for _ in 0..8 {
                let mut variant = template.clone().into_bytes();
                for _ in 0..1 + next(3) {
                    let at = next(variant.len() + 1);
                    match next(3) {
                        0 if at < variant.len() => variant[at] = CHANGES[next(CHANGES.len())],
                        1 => variant.insert(at, CHANGES[next(CHANGES.len())]),
                        _ if at < variant.len() => drop(variant.remove(at)),
                        _ => {}
                    }
                }
                let Ok(variant) = String::from_utf8(variant) else { continue };
                if reusable && same_shape(template.as_bytes(), &spans, variant.as_bytes()) {
                    matched += 1;
                    assert_eq!(quick_look(&template), quick_look(&variant), "{template:?} / {variant:?}");
                    let again = normalize(&variant, false);
                    assert_eq!(
                        (again.fingerprint, again.text.as_str()),
                        (fingerprint, normalized.as_str()),
                        "{template:?} / {variant:?}"
                    );
                    assert_eq!(shape_key(template.as_bytes()), shape_key(variant.as_bytes()));
                }
            }
        }
        assert!(matched > 1000, "only {matched} variants matched: the test tries too little");
    }
}
