//! Making a normalized statement (pg_stat_statements', or pgpilot's own statistics) something the
//! planner accepts. Normalization replaces every constant with `$n`, which leaves two shapes
//! PostgreSQL refuses to PREPARE although the application's statement was fine:
//! - a typed literal, `interval '60 days'`, becomes `interval $3`: a syntax error. It is written
//!   as the equivalent cast, `$3::interval`;
//! - a constant whose type came from its spelling (`jsonb_build_object('rating', ...)`) becomes a
//!   parameter of no inferable type. PREPARE is retried with such a parameter declared `text`,
//!   which is what an unadorned string literal would have been resolved to.

use std::borrow::Cow;

/// Type names that may prefix a literal (`interval '1 day'`, `date '2024-01-01'`).
const LITERAL_TYPES: &[&str] = &[
    "interval",
    "date",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "numeric",
    "decimal",
    "int",
    "int2",
    "int4",
    "int8",
    "integer",
    "smallint",
    "bigint",
    "real",
    "float",
    "float4",
    "float8",
    "bool",
    "boolean",
    "text",
    "varchar",
    "char",
    "uuid",
    "json",
    "jsonb",
    "inet",
    "cidr",
    "bytea",
    "money",
];

/// `interval $3` → `$3::interval`, outside quotes.
pub fn typed_literal_params(sql: &str) -> Cow<'_, str> {
    let b = sql.as_bytes();
    let mut out = String::new();
    let (mut copied, mut i) = (0, 0);
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                i += 1 + b[i + 1..].iter().position(|&c| c == q).map_or(b.len(), |p| p + 1);
                continue;
            }
            c if c.is_ascii_alphabetic() && (i == 0 || !is_ident(b[i - 1]) && b[i - 1] != b'.') => {
                let end = i + b[i..].iter().take_while(|&&c| is_ident(c)).count();
                let word = &sql[i..end];
                let spaces = b[end..].iter().take_while(|c| c.is_ascii_whitespace()).count();
                let param = end + spaces;
                let digits =
                    b.get(param + 1..).map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count());
                let literal_type = LITERAL_TYPES.iter().any(|t| word.eq_ignore_ascii_case(t));
                if literal_type && spaces > 0 && b.get(param) == Some(&b'$') && digits > 0 {
                    let after = param + 1 + digits;
                    out.push_str(&sql[copied..i]);
                    out.push_str(&sql[param..after]);
                    out.push_str("::");
                    out.push_str(word);
                    copied = after;
                    i = after;
                } else {
                    i = end;
                }
                continue;
            }
            _ => i += 1,
        }
    }
    if copied == 0 {
        return Cow::Borrowed(sql);
    }
    out.push_str(&sql[copied..]);
    Cow::Owned(out)
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// The parameter PostgreSQL could not type, from its error message
/// ("could not determine data type of parameter $3").
pub fn untyped_parameter(message: &str) -> Option<usize> {
    let rest = message.strip_prefix("could not determine data type of parameter $")?;
    rest.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_literals_become_casts() {
        assert_eq!(
            typed_literal_params("SELECT 1 FROM t WHERE booked_at > now() - interval $3 ORDER BY 1 LIMIT $4"),
            "SELECT 1 FROM t WHERE booked_at > now() - $3::interval ORDER BY 1 LIMIT $4"
        );
        assert_eq!(typed_literal_params("SELECT DATE $1, x::date"), "SELECT $1::DATE, x::date");
        for untouched in [
            "SELECT date FROM t WHERE id = $1",
            "SELECT 'interval $1' FROM t",
            "SELECT \"interval\" $1",
            "SELECT my_interval $1",
            "SELECT s.interval $1",
        ] {
            assert!(matches!(typed_literal_params(untouched), Cow::Borrowed(_)), "{untouched}");
        }
    }

    #[test]
    fn the_untyped_parameter_is_read_from_the_error() {
        assert_eq!(untyped_parameter("could not determine data type of parameter $3"), Some(3));
        assert_eq!(untyped_parameter("syntax error at or near \"$3\""), None);
    }
}
