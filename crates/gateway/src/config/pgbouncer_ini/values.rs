//! PgBouncer's value syntaxes: connection strings (`key=value key='quoted '' value'`), C integers
//! (`strtol` with base 0: `10`, `0x1f`, `0777`), booleans (integers), seconds (`5`, `0.5`) and
//! comma-separated lists.

use super::super::duration::Secs;

/// Splits a connection string into its pairs, as PgBouncer's loader does: a key runs to `=` or a
/// space, a value to the next space unless it is single-quoted (`''` is a quote); empty values are
/// an error. Keys are compared in lower case.
pub fn connstr_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let key_end = rest.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(rest.len());
        let key = &rest[..key_end];
        let after_key = rest[key_end..].trim_start();
        let after_eq = after_key
            .strip_prefix('=')
            .filter(|_| !key.is_empty())
            .ok_or_else(|| format!("syntax error near {:?}: expected key=value", truncate(rest)))?
            .trim_start();
        let (value, after_value) = if let Some(quoted) = after_eq.strip_prefix('\'') {
            unquote(quoted).ok_or_else(|| format!("{key}: unterminated quoted value"))?
        } else {
            let end = after_eq.find(char::is_whitespace).unwrap_or(after_eq.len());
            (after_eq[..end].to_string(), &after_eq[end..])
        };
        if value.is_empty() {
            return Err(format!("{key}: empty value"));
        }
        out.push((key.to_ascii_lowercase(), value));
        rest = after_value.trim_start();
    }
    Ok(out)
}

/// The value after an opening quote, up to the closing one; `''` is a literal quote.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\'' {
            if matches!(chars.peek(), Some((_, '\''))) {
                chars.next();
                value.push('\'');
            } else {
                return Some((value, &s[i + 1..]));
            }
        } else {
            value.push(c);
        }
    }
    None
}

fn truncate(s: &str) -> String {
    s.chars().take(30).collect()
}

/// An integer as C's `strtol(value, &end, 0)` reads it, refusing trailing junk.
pub fn int(value: &str) -> Result<i64, String> {
    let v = value.trim();
    let (negative, digits) = match v.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let parsed = if let Some(hex) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16)
    } else if digits.len() > 1 && digits.starts_with('0') {
        i64::from_str_radix(&digits[1..], 8)
    } else {
        digits.parse::<i64>()
    };
    parsed.map(|n| if negative { -n } else { n }).map_err(|_| format!("{value:?} is not an integer"))
}

/// A count that must not be negative (PgBouncer treats negative per-database values as "not set").
pub fn count(value: &str) -> Result<usize, String> {
    let n = int(value)?;
    usize::try_from(n).map_err(|_| format!("{value:?} must not be negative"))
}

/// PgBouncer's booleans are integers (0 off, anything else on); the usual words are accepted too.
pub fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        other => int(other).map(|n| n != 0).map_err(|_| format!("{value:?} is not 0 or 1")),
    }
}

/// Seconds, fractions allowed, as PgBouncer's time settings; negative values are refused.
pub fn seconds(value: &str) -> Result<Secs, String> {
    let v = value.trim();
    match v.parse::<f64>() {
        Ok(n) if n >= 0.0 && n.is_finite() => Ok(Secs(std::time::Duration::from_secs_f64(n))),
        Ok(_) => Err(format!("{value:?} must be a non-negative number of seconds")),
        Err(_) => super::super::duration::parse(v),
    }
}

/// `a, b,c` → ["a", "b", "c"].
pub fn list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_split_like_pgbouncer() {
        let pairs = connstr_pairs(
            "host=db.example  port = 5433 dbname=app user=u password='it''s a secret' connect_query='SELECT 1'",
        )
        .unwrap();
        let get = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("host"), Some("db.example"));
        assert_eq!(get("port"), Some("5433"));
        assert_eq!(get("password"), Some("it's a secret"));
        assert_eq!(get("connect_query"), Some("SELECT 1"));
        assert_eq!(connstr_pairs("").unwrap(), vec![]);
        assert_eq!(connstr_pairs("Pool_Size=5").unwrap(), vec![("pool_size".into(), "5".into())]);
    }

    #[test]
    fn broken_connection_strings_are_refused() {
        assert!(connstr_pairs("host").is_err());
        assert!(connstr_pairs("=x").is_err());
        assert!(connstr_pairs("host=").unwrap_err().contains("empty value"));
        assert!(connstr_pairs("password='abc").unwrap_err().contains("unterminated"));
    }

    #[test]
    fn numbers_booleans_and_seconds() {
        assert_eq!(int("0777").unwrap(), 0o777);
        assert_eq!(int("0x10").unwrap(), 16);
        assert_eq!(int("-1").unwrap(), -1);
        assert!(int("12abc").is_err());
        assert!(count("-1").is_err());
        assert!(boolean("1").unwrap() && !boolean("0").unwrap() && boolean("yes").unwrap());
        assert!(boolean("maybe").is_err());
        assert_eq!(seconds("2.5").unwrap(), Secs::from_millis(2500));
        assert_eq!(seconds("90s").unwrap(), Secs::from_secs(90));
        assert!(seconds("-1").is_err());
        assert_eq!(list(" a, b ,,c"), vec!["a", "b", "c"]);
    }
}
