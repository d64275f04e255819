//! Making a normalized statement (pg_stat_statements', or pgpilot's own statistics) something the
//! planner accepts. Normalization replaces every constant with `$n`, which leaves two shapes
//! PostgreSQL refuses to PREPARE although the application's statement was fine:
//! - a typed literal, `interval '60 days'`, becomes `interval $3`: a syntax error. It is written
//!   as the equivalent cast, `$3::interval`;
//! - a constant whose type came from its spelling (`jsonb_build_object('rating', ...)`) becomes a
//!   parameter of no inferable type. PREPARE is retried with such a parameter declared `text`,
//!   which is what an unadorned string literal would have been resolved to;
//! - arithmetic between constants (`user_id = 40 + 2`) becomes `$1 + $2`, which no type can be
//!   inferred for: PostgreSQL resolves an operator from its operands, and two `unknown` operands
//!   match every `+` ("operator is not unique: unknown + unknown"). The application's constants
//!   folded to one value of the type the context wants, so the statement is planned with the whole
//!   parameter-only expression replaced by its first parameter (`user_id = $1`): a generic plan
//!   does not look at the values, and the parameter gets its type from the context as
//!   pg_stat_statements' `$n` for a single constant already does.

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

/// True when PostgreSQL could not resolve an operator because its operands are all parameters
/// of unknown type ("operator is not unique: unknown + unknown").
pub fn untypeable_operator(message: &str) -> bool {
    message.starts_with("operator is not unique:") && message.contains("unknown")
}

/// `sql` with every expression made of parameters and operators only (`$1 + $2 * ($3 - $4)`)
/// replaced by its first parameter (`$1`); None when there is none (or `sql` does not parse).
pub fn fold_parameter_arithmetic(sql: &str) -> Option<String> {
    let parsed = pg_query::parse(sql, 0).ok()?;
    let mut spans: Vec<(usize, usize, i32)> = Vec::new();
    for (node, ..) in parsed.protobuf.nodes() {
        let pg_query::NodeRef::AExpr(e) = node else { continue };
        let Some(pieces) = parameter_only(e) else { continue };
        let start = pieces.iter().map(|p| p.start).min()?;
        let end = pieces.iter().map(|p| p.end).max()?;
        let first = pieces.iter().filter_map(|p| p.parameter).next()?;
        let (start, end) = balance_parentheses(sql.as_bytes(), start, end);
        spans.push((start, end, first));
    }
    // Only the outermost expressions: an inner one is replaced with the one around it.
    let mut outermost: Vec<(usize, usize, i32)> = spans
        .iter()
        .filter(|&&(s, e, _)| !spans.iter().any(|&(os, oe, _)| os <= s && e <= oe && (os, oe) != (s, e)))
        .copied()
        .collect();
    if outermost.is_empty() {
        return None;
    }
    // From the end, so the earlier offsets stay right.
    outermost.sort_by_key(|&(s, ..)| std::cmp::Reverse(s));
    outermost.dedup();
    let mut folded = sql.to_string();
    for (start, end, first) in outermost {
        folded.replace_range(start..end, &format!("${first}"));
    }
    Some(folded)
}

/// A piece of the text of a parameter-only expression: a parameter, or a prefix operator.
struct Piece {
    start: usize,
    end: usize,
    parameter: Option<i32>,
}

/// The parameters (in text order) and prefix operators of an operator expression whose operands
/// are parameters or such expressions themselves; None when anything else (a column, a typed
/// constant, a cast) takes part.
fn parameter_only(e: &pg_query::protobuf::AExpr) -> Option<Vec<Piece>> {
    if e.kind != pg_query::protobuf::AExprKind::AexprOp as i32 {
        return None;
    }
    let mut pieces = match e.lexpr.as_deref() {
        // A prefix operator (-$1): its text starts at the operator.
        None => vec![Piece { start: e.location as usize, end: e.location as usize, parameter: None }],
        Some(left) => operand_pieces(left)?,
    };
    pieces.extend(operand_pieces(e.rexpr.as_deref()?)?);
    Some(pieces)
}

fn operand_pieces(node: &pg_query::protobuf::Node) -> Option<Vec<Piece>> {
    match node.node.as_ref()? {
        pg_query::NodeEnum::ParamRef(p) => {
            let start = p.location as usize;
            Some(vec![Piece {
                start,
                end: start + format!("${}", p.number).len(),
                parameter: Some(p.number),
            }])
        }
        pg_query::NodeEnum::AExpr(e) => parameter_only(e),
        _ => None,
    }
}

/// Widens `start..end` over the parentheses of the expression it spans: from the first
/// parameter to the end of the last, `$1 * ($2 - $3` lacks the closing one.
fn balance_parentheses(sql: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    let depth = |s: usize, e: usize| {
        sql[s..e].iter().fold(0i64, |d, &c| d + i64::from(c == b'(') - i64::from(c == b')'))
    };
    while depth(start, end) > 0 && end < sql.len() {
        end += 1;
    }
    while depth(start, end) < 0 && start > 0 {
        start -= 1;
    }
    (start, end)
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
    fn arithmetic_between_parameters_is_folded_into_one() {
        let fold = |sql| fold_parameter_arithmetic(sql);
        assert_eq!(
            fold("SELECT id FROM t WHERE a = $1 + $2 * ($3 - $4) AND b > $5 LIMIT $6").as_deref(),
            Some("SELECT id FROM t WHERE a = $1 AND b > $5 LIMIT $6")
        );
        assert_eq!(
            fold("SELECT x FROM t WHERE a > ((($1) + $2)) - c").as_deref(),
            Some("SELECT x FROM t WHERE a > (($1)) - c")
        );
        assert_eq!(fold("SELECT -$1 + $2, a + $3 FROM t").as_deref(), Some("SELECT $1, a + $3 FROM t"));
        assert_eq!(fold("SELECT a * $1 FROM t WHERE b = $2::int + $3"), None);
    }

    #[test]
    fn the_untyped_parameter_is_read_from_the_error() {
        assert_eq!(untyped_parameter("could not determine data type of parameter $3"), Some(3));
        assert_eq!(untyped_parameter("syntax error at or near \"$3\""), None);
    }
}
