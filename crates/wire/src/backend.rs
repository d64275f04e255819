//! Backend (server → client) messages: the ones pgpilot writes itself, and parsers for the ones it reads.

use bytes::{BufMut, BytesMut};

use crate::frame::{read_cstr, read_i32};

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TxnStatus {
    #[default]
    Idle,
    InTransaction,
    Failed,
}

impl TxnStatus {
    pub fn from_byte(b: u8) -> Option<TxnStatus> {
        match b {
            b'I' => Some(TxnStatus::Idle),
            b'T' => Some(TxnStatus::InTransaction),
            b'E' => Some(TxnStatus::Failed),
            _ => None,
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            TxnStatus::Idle => b'I',
            TxnStatus::InTransaction => b'T',
            TxnStatus::Failed => b'E',
        }
    }
}

/// Starts a message with a placeholder length; [`finish`] fills it in.
pub fn begin(out: &mut BytesMut, tag: u8) -> usize {
    let start = out.len();
    out.put_u8(tag);
    out.put_u32(0);
    start
}

/// Writes the length of the message that [`begin`] started at `start`.
pub fn finish(out: &mut BytesMut, start: usize) {
    let len = (out.len() - start - 1) as u32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

pub fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.extend_from_slice(s);
    out.put_u8(0);
}

pub fn auth_ok(out: &mut BytesMut) {
    auth_request(out, 0, &[]);
}

pub fn auth_cleartext(out: &mut BytesMut) {
    auth_request(out, 3, &[]);
}

pub fn auth_md5(out: &mut BytesMut, salt: [u8; 4]) {
    auth_request(out, 5, &salt);
}

/// AuthenticationSASL offering SCRAM-SHA-256.
pub fn auth_sasl(out: &mut BytesMut) {
    auth_request(out, 10, b"SCRAM-SHA-256\0\0");
}

pub fn auth_sasl_continue(out: &mut BytesMut, data: &[u8]) {
    auth_request(out, 11, data);
}

pub fn auth_sasl_final(out: &mut BytesMut, data: &[u8]) {
    auth_request(out, 12, data);
}

fn auth_request(out: &mut BytesMut, code: u32, data: &[u8]) {
    let start = begin(out, b'R');
    out.put_u32(code);
    out.extend_from_slice(data);
    finish(out, start);
}

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    let start = begin(out, b'S');
    put_cstr(out, name.as_bytes());
    put_cstr(out, value.as_bytes());
    finish(out, start);
}

pub fn backend_key_data(out: &mut BytesMut, pid: i32, secret: i32) {
    let start = begin(out, b'K');
    out.put_i32(pid);
    out.put_i32(secret);
    finish(out, start);
}

pub fn ready_for_query(out: &mut BytesMut, status: TxnStatus) {
    out.extend_from_slice(&[b'Z', 0, 0, 0, 5, status.byte()]);
}

/// The protocol version pgpilot speaks (3.0), as a startup packet encodes it.
pub const PROTOCOL_3_0: i32 = 3 << 16;

/// NegotiateProtocolVersion: the newest version we speak and the options we did not recognise.
/// The version goes whole (major in the high 16 bits), as PostgreSQL sends it: libpq 18 reads a
/// bare minor number as a downgrade to protocol 0 and refuses the connection.
pub fn negotiate_protocol_version(out: &mut BytesMut, version: i32, unrecognized: &[String]) {
    let start = begin(out, b'v');
    out.put_i32(version);
    out.put_i32(unrecognized.len() as i32);
    for o in unrecognized {
        put_cstr(out, o.as_bytes());
    }
    finish(out, start);
}

/// RowDescription of text-format columns of the given type OIDs.
pub fn row_description_typed(out: &mut BytesMut, columns: &[&str], types: &[u32]) {
    row_description_in_format(out, columns, types, 0);
}

/// RowDescription of columns all sent in `format` (0 text, 1 binary).
pub fn row_description_in_format(out: &mut BytesMut, columns: &[&str], types: &[u32], format: i16) {
    let start = begin(out, b'T');
    out.put_i16(columns.len() as i16);
    for (name, oid) in columns.iter().zip(types) {
        put_cstr(out, name.as_bytes());
        out.put_i32(0); // table oid
        out.put_i16(0); // column number
        out.put_u32(*oid);
        out.put_i16(if *oid == 20 { 8 } else { -1 });
        out.put_i32(-1);
        out.put_i16(format);
    }
    finish(out, start);
}

/// DataRow of text values; `None` is SQL NULL.
pub fn data_row<S: AsRef<str>>(out: &mut BytesMut, values: &[Option<S>]) {
    let start = begin(out, b'D');
    out.put_i16(values.len() as i16);
    for v in values {
        match v {
            Some(s) => {
                out.put_i32(s.as_ref().len() as i32);
                out.extend_from_slice(s.as_ref().as_bytes());
            }
            None => out.put_i32(-1),
        }
    }
    finish(out, start);
}

pub fn command_complete(out: &mut BytesMut, tag: &str) {
    let start = begin(out, b'C');
    put_cstr(out, tag.as_bytes());
    finish(out, start);
}

pub fn empty_query_response(out: &mut BytesMut) {
    out.extend_from_slice(&[b'I', 0, 0, 0, 4]);
}

pub fn parse_complete(out: &mut BytesMut) {
    out.extend_from_slice(&[b'1', 0, 0, 0, 4]);
}

pub fn bind_complete(out: &mut BytesMut) {
    out.extend_from_slice(&[b'2', 0, 0, 0, 4]);
}

pub fn close_complete(out: &mut BytesMut) {
    out.extend_from_slice(&[b'3', 0, 0, 0, 4]);
}

pub fn no_data(out: &mut BytesMut) {
    out.extend_from_slice(&[b'n', 0, 0, 0, 4]);
}

pub fn notification(out: &mut BytesMut, pid: i32, channel: &str, payload: &str) {
    let start = begin(out, b'A');
    out.put_i32(pid);
    put_cstr(out, channel.as_bytes());
    put_cstr(out, payload.as_bytes());
    finish(out, start);
}

/// Parses a ParameterStatus body into (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let (name, pos) = read_cstr(body, 0)?;
    let (value, _) = read_cstr(body, pos)?;
    Some((std::str::from_utf8(name).ok()?, std::str::from_utf8(value).ok()?))
}

/// Parses a BackendKeyData body into (pid, secret).
pub fn parse_backend_key(body: &[u8]) -> Option<(i32, i32)> {
    let (pid, pos) = read_i32(body, 0)?;
    let (secret, _) = read_i32(body, pos)?;
    Some((pid, secret))
}

/// Parses a NotificationResponse body into (pid, channel, payload).
pub fn parse_notification(body: &[u8]) -> Option<(i32, &str, &str)> {
    let (pid, pos) = read_i32(body, 0)?;
    let (channel, pos) = read_cstr(body, pos)?;
    let (payload, _) = read_cstr(body, pos)?;
    Some((pid, std::str::from_utf8(channel).ok()?, std::str::from_utf8(payload).ok()?))
}

/// The tag of a CommandComplete body ("SELECT 1", "INSERT 0 5"...).
pub fn parse_command_tag(body: &[u8]) -> &[u8] {
    read_cstr(body, 0).map(|(s, _)| s).unwrap_or(body)
}

/// The number of rows a CommandComplete tag reports (the last number in it), if any.
pub fn rows_in_tag(tag: &[u8]) -> u64 {
    // Read by hand: this runs for every statement's CommandComplete.
    let last = tag.rsplit(|&b| b == b' ').next().unwrap_or(&[]);
    if last.is_empty() || last.len() > 19 || !last.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    last.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0'))
}

/// What a server asks for in an Authentication message.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    Ok,
    Cleartext,
    Md5 { salt: [u8; 4] },
    Sasl { mechanisms: Vec<&'a str> },
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    Unsupported(i32),
}

pub fn parse_auth_request(body: &[u8]) -> Option<AuthRequest<'_>> {
    let (code, pos) = read_i32(body, 0)?;
    let rest = &body[pos..];
    Some(match code {
        0 => AuthRequest::Ok,
        3 => AuthRequest::Cleartext,
        5 => AuthRequest::Md5 { salt: rest.get(..4)?.try_into().ok()? },
        10 => AuthRequest::Sasl {
            mechanisms: rest
                .split(|&b| b == 0)
                .filter(|m| !m.is_empty())
                .filter_map(|m| std::str::from_utf8(m).ok())
                .collect(),
        },
        11 => AuthRequest::SaslContinue(rest),
        12 => AuthRequest::SaslFinal(rest),
        other => AuthRequest::Unsupported(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_from_tags() {
        assert_eq!(rows_in_tag(b"SELECT 42"), 42);
        assert_eq!(rows_in_tag(b"INSERT 0 5"), 5);
        assert_eq!(rows_in_tag(b"BEGIN"), 0);
        assert_eq!(rows_in_tag(b"UPDATE 9999999999999999999"), 9_999_999_999_999_999_999);
        assert_eq!(rows_in_tag(b"UPDATE 99999999999999999999"), 0);
        assert_eq!(rows_in_tag(b"SELECT "), 0);
        assert_eq!(rows_in_tag(b"SELECT 4x"), 0);
    }

    #[test]
    fn parameter_status_round_trip() {
        let mut out = BytesMut::new();
        parameter_status(&mut out, "TimeZone", "UTC");
        assert_eq!(parse_parameter_status(&out[5..]), Some(("TimeZone", "UTC")));
    }

    #[test]
    fn sasl_mechanisms_are_listed() {
        let mut out = BytesMut::new();
        auth_sasl(&mut out);
        assert_eq!(
            parse_auth_request(&out[5..]),
            Some(AuthRequest::Sasl { mechanisms: vec!["SCRAM-SHA-256"] })
        );
    }
}
