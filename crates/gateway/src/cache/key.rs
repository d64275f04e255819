//! The cache key: everything that can change the bytes of a result. Database, login user, every
//! session parameter the client's server is brought to (role, search_path, TimeZone, DateStyle,
//! IntervalStyle, extra_float_digits, bytea_output, client_encoding... all of them but
//! application_name), the exact statement text, and for the extended protocol the parameter
//! types, the Bind message's formats and values and the result formats. The key is kept whole in
//! the entry and compared on every hit: a hash collision is a miss, never a wrong answer.

use crate::session::params::ParamSet;

/// Settings that cannot change a result.
const IGNORED: &[&str] = &["application_name"];

/// The protocol a result was read with (the bytes differ: text only, or the client's formats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Simple,
    Extended,
}

/// Writes the key into `out` (cleared first).
pub fn build(
    out: &mut Vec<u8>,
    protocol: Protocol,
    database: &str,
    user: &str,
    params: &ParamSet,
    text: &[u8],
    extended: Option<(&[u8], &[u8])>,
) {
    out.clear();
    out.push(match protocol {
        Protocol::Simple => b'Q',
        Protocol::Extended => b'E',
    });
    field(out, database.as_bytes());
    field(out, user.as_bytes());
    for (name, value) in params.iter() {
        if IGNORED.iter().any(|i| i.eq_ignore_ascii_case(name)) {
            continue;
        }
        field(out, name.as_bytes());
        field(out, value.as_bytes());
    }
    out.push(0xff);
    field(out, text);
    if let Some((param_types, bind_rest)) = extended {
        field(out, param_types);
        field(out, bind_rest);
    }
}

/// Adds an Execute's row limit to an extended-protocol key: the answer stored is the one to a
/// request that asked for at most `max_rows` rows and got them all.
pub fn row_limit(out: &mut Vec<u8>, max_rows: u32) {
    field(out, &max_rows.to_be_bytes());
}

/// Length-prefixed, so no two different field lists write the same bytes.
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_values_change_the_key() {
        let mut a = ParamSet::default();
        a.set("TimeZone", "UTC");
        let mut b = a.clone();
        b.set("TimeZone", "Europe/Paris");
        let mut c = a.clone();
        c.set("application_name", "other");
        let key = |p: &ParamSet, text: &[u8], ext: Option<(&[u8], &[u8])>| {
            let mut out = Vec::new();
            build(&mut out, Protocol::Extended, "db", "u", p, text, ext);
            out
        };
        assert_ne!(key(&a, b"select 1", None), key(&b, b"select 1", None));
        assert_eq!(key(&a, b"select 1", None), key(&c, b"select 1", None));
        assert_ne!(
            key(&a, b"select $1", Some((b"", b"\0\0\0\x01\0\0\0\x011"))),
            key(&a, b"select $1", Some((b"", b"\0\0\0\x01\0\0\0\x012")))
        );
    }
}
