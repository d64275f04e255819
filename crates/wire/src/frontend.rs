//! Frontend (client → server) messages: parsers for what pgpilot inspects, builders for what it sends.

use bytes::{BufMut, BytesMut};

use crate::backend::{begin, finish, put_cstr};
use crate::frame::{read_cstr, read_i16, read_i32};

/// The SQL text of a Query body (without its terminating NUL).
pub fn parse_query(body: &[u8]) -> Option<&[u8]> {
    read_cstr(body, 0).map(|(s, _)| s)
}

/// A Parse message: statement name, query text, parameter type oids.
#[derive(Debug, PartialEq, Eq)]
pub struct Parse<'a> {
    pub name: &'a [u8],
    pub query: &'a [u8],
    /// The parameter type section exactly as sent (count + oids), to replay it byte for byte.
    pub param_types: &'a [u8],
}

pub fn parse_parse(body: &[u8]) -> Option<Parse<'_>> {
    let (name, pos) = read_cstr(body, 0)?;
    let (query, pos) = read_cstr(body, pos)?;
    // Unsigned, as PostgreSQL reads it: up to 65,535 parameters (libpq, pgJDBC send types).
    let (count, after) = read_i16(body, pos)?;
    let end = after + count as u16 as usize * 4;
    // Nothing may follow the types (PostgreSQL: "invalid message format").
    if body.len() != end {
        return None;
    }
    Some(Parse { name, query, param_types: &body[pos..end] })
}

/// A Bind message: portal, statement, and the remainder (formats, parameters, result formats) untouched.
#[derive(Debug, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    pub rest: &'a [u8],
}

pub fn parse_bind(body: &[u8]) -> Option<Bind<'_>> {
    let (portal, pos) = read_cstr(body, 0)?;
    let (statement, pos) = read_cstr(body, pos)?;
    Some(Bind { portal, statement, rest: &body[pos..] })
}

/// One parameter value of a Bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindValue<'a> {
    /// None for NULL.
    pub bytes: Option<&'a [u8]>,
    /// Sent in binary format (a text parameter's binary form is its text).
    pub binary: bool,
}

/// The parameter values of a Bind's remainder (after its portal and statement names), each with
/// its format; None when the remainder is malformed.
pub fn bind_values(rest: &[u8]) -> Option<Vec<BindValue<'_>>> {
    let (format_count, mut pos) = read_i16(rest, 0)?;
    let mut formats = Vec::with_capacity((format_count as u16).min(64) as usize);
    for _ in 0..format_count as u16 {
        let (f, next) = read_i16(rest, pos)?;
        formats.push(f);
        pos = next;
    }
    let (count, next) = read_i16(rest, pos)?;
    pos = next;
    let count = count as u16 as usize;
    let mut values = Vec::with_capacity(count.min(64));
    for i in 0..count {
        let binary = match formats.len() {
            0 => false,
            1 => formats[0] == 1,
            _ => formats.get(i) == Some(&1),
        };
        let (len, next) = read_i32(rest, pos)?;
        pos = next;
        if len < 0 {
            values.push(BindValue { bytes: None, binary });
            continue;
        }
        let bytes = rest.get(pos..pos.checked_add(len as usize)?)?;
        pos += len as usize;
        values.push(BindValue { bytes: Some(bytes), binary });
    }
    Some(values)
}

/// How many result format codes a Bind's remainder (after its portal and statement names) gives;
/// None when the remainder is malformed.
pub fn bind_result_format_count(rest: &[u8]) -> Option<u16> {
    result_formats_at(rest).map(|(n, _)| n)
}

/// The result format codes a Bind's remainder gives: none (all text), one (for every column) or
/// one per column; None when the remainder is malformed.
pub fn bind_result_formats(rest: &[u8]) -> Option<Vec<i16>> {
    let (count, mut pos) = result_formats_at(rest)?;
    let mut formats = Vec::with_capacity((count as usize).min(rest.len() / 2));
    for _ in 0..count {
        let (format, next) = read_i16(rest, pos)?;
        formats.push(format);
        pos = next;
    }
    Some(formats)
}

/// How many result format codes a Bind's remainder gives, and where the first one is.
fn result_formats_at(rest: &[u8]) -> Option<(u16, usize)> {
    let (format_count, pos) = read_i16(rest, 0)?;
    let mut pos = pos.checked_add(2 * format_count as u16 as usize)?;
    let (count, next) = read_i16(rest, pos)?;
    pos = next;
    for _ in 0..count as u16 {
        let (len, next) = read_i32(rest, pos)?;
        pos = if len < 0 { next } else { next.checked_add(len as usize)? };
    }
    read_i16(rest, pos).map(|(n, next)| (n as u16, next))
}

/// Whether a Bind (the part after its portal and statement names) names a format per result
/// column, rather than none or one for all: formats chosen for the row type the client learned.
pub fn bind_formats_per_column(rest: &[u8]) -> bool {
    bind_result_format_count(rest).is_some_and(|n| n > 1)
}

/// Describe and Close both carry a kind ('S' statement or 'P' portal) and a name.
pub fn parse_target(body: &[u8]) -> Option<(u8, &[u8])> {
    let kind = *body.first()?;
    let (name, _) = read_cstr(body, 1)?;
    Some((kind, name))
}

/// An Execute message: portal and row limit (0 = all rows).
pub fn parse_execute(body: &[u8]) -> Option<(&[u8], i32)> {
    let (portal, pos) = read_cstr(body, 0)?;
    let (max_rows, _) = read_i32(body, pos)?;
    Some((portal, max_rows))
}

pub fn query(out: &mut BytesMut, sql: &str) {
    let start = begin(out, b'Q');
    put_cstr(out, sql.as_bytes());
    finish(out, start);
}

/// Parse with the parameter type section copied verbatim from a client's Parse.
pub fn parse(out: &mut BytesMut, name: &[u8], query: &[u8], param_types: &[u8]) {
    let start = begin(out, b'P');
    put_cstr(out, name);
    put_cstr(out, query);
    if param_types.is_empty() {
        out.put_i16(0);
    } else {
        out.extend_from_slice(param_types);
    }
    finish(out, start);
}

/// Bind with the statement renamed and the rest of the client's message copied verbatim.
pub fn bind(out: &mut BytesMut, portal: &[u8], statement: &[u8], rest: &[u8]) {
    let start = begin(out, b'B');
    put_cstr(out, portal);
    put_cstr(out, statement);
    out.extend_from_slice(rest);
    finish(out, start);
}

/// Describe ('S' or 'P') or Close ('C' tag) of a named statement or portal.
pub fn target(out: &mut BytesMut, tag: u8, kind: u8, name: &[u8]) {
    let start = begin(out, tag);
    out.put_u8(kind);
    put_cstr(out, name);
    finish(out, start);
}

pub fn sync(out: &mut BytesMut) {
    out.extend_from_slice(&[b'S', 0, 0, 0, 4]);
}

pub fn flush(out: &mut BytesMut) {
    out.extend_from_slice(&[b'H', 0, 0, 0, 4]);
}

pub fn terminate(out: &mut BytesMut) {
    out.extend_from_slice(&[b'X', 0, 0, 0, 4]);
}

pub fn password(out: &mut BytesMut, password: &[u8]) {
    let start = begin(out, b'p');
    put_cstr(out, password);
    finish(out, start);
}

pub fn sasl_initial_response(out: &mut BytesMut, mechanism: &str, data: &[u8]) {
    let start = begin(out, b'p');
    put_cstr(out, mechanism.as_bytes());
    out.put_i32(data.len() as i32);
    out.extend_from_slice(data);
    finish(out, start);
}

pub fn sasl_response(out: &mut BytesMut, data: &[u8]) {
    let start = begin(out, b'p');
    out.extend_from_slice(data);
    finish(out, start);
}

/// The body of a SASLInitialResponse: mechanism and client-first-message.
pub fn parse_sasl_initial(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mechanism, pos) = read_cstr(body, 0)?;
    let (len, pos) = read_i32(body, pos)?;
    let data = if len < 0 { &[][..] } else { body.get(pos..pos + len as usize)? };
    Some((mechanism, data))
}

/// The password in a PasswordMessage body (cleartext or md5 response).
pub fn parse_password(body: &[u8]) -> Option<&[u8]> {
    read_cstr(body, 0).map(|(s, _)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trip_keeps_param_types() {
        let mut out = BytesMut::new();
        let types = [0u8, 2, 0, 0, 0, 23, 0, 0, 0, 25];
        parse(&mut out, b"s1", b"select $1, $2", &types);
        let p = parse_parse(&out[5..]).unwrap();
        assert_eq!(p, Parse { name: b"s1", query: b"select $1, $2", param_types: &types });
    }

    #[test]
    fn truncated_parse_is_rejected() {
        assert_eq!(parse_parse(b"s1\0select 1\0\0\x05\0\0"), None);
        assert_eq!(parse_parse(b"s1\0select 1\0\0\x01\0\0\0\x17junk"), None, "trailing bytes");
    }

    #[test]
    fn a_parse_takes_up_to_65535_parameter_types() {
        for count in [32_768u16, 65_535] {
            let mut body = b"s1\0select\0".to_vec();
            body.extend_from_slice(&count.to_be_bytes());
            body.extend(std::iter::repeat_n([0, 0, 0, 23], count as usize).flatten());
            let p = parse_parse(&body).unwrap_or_else(|| panic!("{count} types refused"));
            assert_eq!(p.param_types.len(), 2 + count as usize * 4);
        }
    }

    #[test]
    fn bind_rename_keeps_the_rest() {
        let mut out = BytesMut::new();
        bind(&mut out, b"", b"pgpilot_1", b"\0\0\0\0\0\0");
        let b = parse_bind(&out[5..]).unwrap();
        assert_eq!(b.statement, b"pgpilot_1");
        assert_eq!(b.rest, b"\0\0\0\0\0\0");
    }

    #[test]
    fn bind_values_with_their_formats_and_nulls() {
        // Formats: text, binary, text; values 'now', binary 7, NULL.
        let rest = b"\0\x03\0\0\0\x01\0\0\0\x03\0\0\0\x03now\0\0\0\x01\x07\xff\xff\xff\xff\0\0";
        let value = |bytes: Option<&'static [u8]>, binary| BindValue { bytes, binary };
        assert_eq!(
            bind_values(rest),
            Some(vec![value(Some(b"now"), false), value(Some(b"\x07"), true), value(None, false)])
        );
        assert_eq!(bind_values(b"\0\0\0\x01\0\0\0\x02hi\0\0"), Some(vec![value(Some(b"hi"), false)]));
        assert_eq!(bind_values(b"\0\0\0\x01\0\0\0\x09hi"), None, "truncated");
    }

    #[test]
    fn bind_result_formats_are_counted_after_the_values() {
        let rest = b"\0\x01\0\x01\0\x02\0\0\0\x01\x07\xff\xff\xff\xff\0\x02\0\x01\0\x01";
        assert_eq!(bind_result_format_count(rest), Some(2));
        assert_eq!(bind_result_format_count(b"\0\0\0\0\0\0"), Some(0));
        assert_eq!(bind_result_format_count(b"\0\0\0\x01\0\0\0\x09hi"), None, "truncated");
        assert_eq!(bind_result_formats(rest), Some(vec![1, 1]));
        assert_eq!(bind_result_formats(b"\0\0\0\0\0\0"), Some(vec![]));
        assert_eq!(bind_result_formats(b"\0\0\0\0\0\x02\0\x01"), None, "a code missing");
    }
}
