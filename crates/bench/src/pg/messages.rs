//! Encoding of the frontend messages on the hot path and in-place scanning of backend replies.

use bytes::{BufMut, BytesMut};

/// Transaction status reported by ReadyForQuery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    pub(crate) fn from_byte(b: u8) -> TxStatus {
        match b {
            b'T' => TxStatus::InTransaction,
            b'E' => TxStatus::Failed,
            _ => TxStatus::Idle,
        }
    }
}

/// What one request produced, up to and including ReadyForQuery.
#[derive(Debug)]
pub struct Reply {
    pub status: TxStatus,
    pub rows: u64,
    pub error: Option<super::DbError>,
}

/// Column names and the first row's values (text format), for `\gset`.
#[derive(Debug, Default)]
pub struct RowCapture {
    pub columns: Vec<String>,
    pub first_row: Option<Vec<Option<String>>>,
    pub rows: u64,
}

pub(crate) fn query(buf: &mut BytesMut, sql: &str) {
    frame(buf, b'Q', |b| put_cstr(b, sql.as_bytes()));
}

/// Parse with no declared parameter types: the server infers them, as pgbench does.
pub(crate) fn parse(buf: &mut BytesMut, name: &str, sql: &str) {
    frame(buf, b'P', |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, sql.as_bytes());
        b.put_i16(0);
    });
}

/// Bind the unnamed portal with text parameters and text results.
pub(crate) fn bind<'a>(buf: &mut BytesMut, statement: &str, params: impl ExactSizeIterator<Item = &'a [u8]>) {
    frame(buf, b'B', |b| {
        b.put_u8(0); // unnamed portal
        put_cstr(b, statement.as_bytes());
        b.put_i16(0); // all parameters in text format
        b.put_i16(params.len() as i16);
        for p in params {
            b.put_i32(p.len() as i32);
            b.put_slice(p);
        }
        b.put_i16(0); // all results in text format
    });
}

pub(crate) fn close_statement(buf: &mut BytesMut, name: &str) {
    frame(buf, b'C', |b| {
        b.put_u8(b'S');
        put_cstr(b, name.as_bytes());
    });
}

pub(crate) fn describe_portal(buf: &mut BytesMut) {
    frame(buf, b'D', |b| {
        b.put_u8(b'P');
        b.put_u8(0);
    });
}

pub(crate) fn execute(buf: &mut BytesMut) {
    frame(buf, b'E', |b| {
        b.put_u8(0);
        b.put_i32(0);
    });
}

pub(crate) fn sync(buf: &mut BytesMut) {
    buf.put_slice(&[b'S', 0, 0, 0, 4]);
}

pub(crate) fn terminate(buf: &mut BytesMut) {
    buf.put_slice(&[b'X', 0, 0, 0, 4]);
}

fn frame(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

/// The length (tag included) of the first complete message in `buf`, if there is one.
pub(crate) fn complete_frame(buf: &[u8]) -> Option<usize> {
    if buf.len() < 5 {
        return None;
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize + 1;
    (buf.len() >= len).then_some(len)
}

/// The fields of an ErrorResponse body: SQLSTATE (`C`), severity (`V`) and message (`M`).
pub(crate) fn parse_error(body: &[u8]) -> super::DbError {
    let mut err = super::DbError { code: String::new(), severity: String::new(), message: String::new() };
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        match field {
            b'C' => err.code = value,
            b'V' => err.severity = value,
            b'M' => err.message = value,
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    err
}

/// Column names of a RowDescription body.
pub(crate) fn parse_row_description(body: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let count = body.get(..2).map_or(0, |b| i16::from_be_bytes([b[0], b[1]]).max(0) as usize);
    let mut rest = body.get(2..).unwrap_or(&[]);
    for _ in 0..count {
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        names.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        // name\0 then table oid(4) column(2) type oid(4) size(2) modifier(4) format(2)
        rest = rest.get(end + 1 + 18..).unwrap_or(&[]);
    }
    names
}

/// Values of a DataRow body in text format.
pub(crate) fn parse_data_row(body: &[u8]) -> Vec<Option<String>> {
    let count = body.get(..2).map_or(0, |b| i16::from_be_bytes([b[0], b[1]]).max(0) as usize);
    let mut values = Vec::with_capacity(count);
    let mut rest = body.get(2..).unwrap_or(&[]);
    for _ in 0..count {
        let Some(len) = rest.get(..4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]])) else { break };
        rest = &rest[4..];
        if len < 0 {
            values.push(None);
            continue;
        }
        let len = (len as usize).min(rest.len());
        values.push(Some(String::from_utf8_lossy(&rest[..len]).into_owned()));
        rest = &rest[len..];
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_their_length() {
        let mut b = BytesMut::new();
        query(&mut b, "SELECT 1");
        assert_eq!(&b[..], b"Q\0\0\0\x0dSELECT 1\0");
        assert_eq!(complete_frame(&b), Some(14));
        assert_eq!(complete_frame(&b[..10]), None);
    }

    #[test]
    fn error_fields() {
        let body = b"SERROR\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0\0";
        let e = parse_error(body);
        assert_eq!((e.code.as_str(), e.severity.as_str()), ("42P01", "ERROR"));
        assert!(e.message.contains("does not exist"));
    }

    #[test]
    fn data_rows() {
        let mut body = vec![0, 2];
        body.extend_from_slice(&2i32.to_be_bytes());
        body.extend_from_slice(b"42");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(parse_data_row(&body), vec![Some("42".to_string()), None]);
    }
}
