//! Typed message headers: a tag byte and a big-endian length that counts itself but not the tag.

use thiserror::Error;

/// Bytes in a regular message header: one tag byte and a four-byte length.
pub const HEADER_LEN: usize = 5;

/// The header of one message found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Length of the whole message including the tag byte.
    pub total: usize,
}

impl Header {
    /// Body length: the message minus its five header bytes.
    pub fn body_len(&self) -> usize {
        self.total - HEADER_LEN
    }
}

/// Bounds on message lengths read from the wire: nothing larger is ever buffered.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages that carry SQL text, parameters or rows (Query, Parse, Bind, FunctionCall, CopyData...).
    pub large: usize,
    /// Control messages (Sync, Flush, Terminate, Describe, Close, Execute...).
    pub small: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // PostgreSQL accepts at most 1 GB for data-bearing messages and 10000 bytes for control messages.
        Limits { large: 1 << 30, small: 10_000 }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {} for message type {tag:?}", *len as i32)]
    BadLength { tag: char, len: u32 },
    #[error("message of type {tag:?} is {len} bytes, over the limit of {limit}")]
    TooLarge { tag: char, len: usize, limit: usize },
    #[error("invalid frontend message type {0}")]
    UnknownType(u8),
}

/// Every message type a client may send after its startup packet.
fn frontend_known(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P' | b'B' | b'E' | b'D' | b'C' | b'S' | b'H' | b'X' | b'F' | b'd' | b'c' | b'f' | b'p'
    )
}

/// Frontend message types whose length PostgreSQL bounds as "small".
fn frontend_small(tag: u8) -> bool {
    matches!(tag, b'S' | b'H' | b'X' | b'D' | b'C' | b'E' | b'c')
}

/// Reads the header at the front of `buf`, if five bytes are there, and checks the length against `limits`.
/// `small_tags` picks which message types get the small bound.
fn peek(buf: &[u8], limits: &Limits, small: impl Fn(u8) -> bool) -> Result<Option<Header>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let tag = buf[0];
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    // A length is an Int32: one with the sign bit set is negative, not huge.
    if len < 4 || len > i32::MAX as u32 {
        return Err(FrameError::BadLength { tag: tag as char, len });
    }
    let limit = if small(tag) { limits.small } else { limits.large };
    let total = len as usize + 1;
    if total > limit {
        return Err(FrameError::TooLarge { tag: tag as char, len: total, limit });
    }
    Ok(Some(Header { tag, total }))
}

/// The header of the frontend (client) message at the front of `buf`.
pub fn peek_frontend(buf: &[u8], limits: &Limits) -> Result<Option<Header>, FrameError> {
    // Refused on its first byte, as PostgreSQL does: its length is not waited for.
    match buf.first() {
        Some(&tag) if !frontend_known(tag) => Err(FrameError::UnknownType(tag)),
        _ => peek(buf, limits, frontend_small),
    }
}

/// The header of the backend (server) message at the front of `buf`. Servers are trusted more than
/// clients, but a length is still bounded so a broken server cannot make us allocate without limit.
pub fn peek_backend(buf: &[u8], limits: &Limits) -> Result<Option<Header>, FrameError> {
    peek(buf, limits, |_| false)
}

/// One whole frontend message found in a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub tag: u8,
    /// The message, header included.
    pub msg: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The message without its five header bytes.
    pub fn body(&self) -> &'a [u8] {
        &self.msg[HEADER_LEN..]
    }
}

/// The whole frontend messages at the front of a buffer, in order. It stops at the first message
/// that has not fully arrived or is malformed: a caller that must tell those apart (and answer a
/// malformed one) uses `peek_frontend`.
pub struct FrontendFrames<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: &'a Limits,
}

impl<'a> FrontendFrames<'a> {
    pub fn new(buf: &'a [u8], limits: &'a Limits) -> Self {
        FrontendFrames { buf, pos: 0, limits }
    }

    /// Bytes of the messages yielded so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for FrontendFrames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        let rest = &self.buf[self.pos..];
        let h = peek_frontend(rest, self.limits).ok()??;
        let msg = rest.get(..h.total)?;
        self.pos += h.total;
        Some(Frame { tag: h.tag, msg })
    }
}

/// Reads a NUL-terminated string starting at `pos`; returns it and the position after the NUL.
pub fn read_cstr(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    // Most names are empty (the unnamed statement and portal): no scan for those.
    if rest.first() == Some(&0) {
        return Some((&[], pos + 1));
    }
    // memchr: every simple Query's text and every Parse's is scanned for its end.
    let end = memchr::memchr(0, rest)?;
    Some((&rest[..end], pos + end + 1))
}

pub fn read_i16(buf: &[u8], pos: usize) -> Option<(i16, usize)> {
    let b = buf.get(pos..pos + 2)?;
    Some((i16::from_be_bytes([b[0], b[1]]), pos + 2))
}

pub fn read_i32(buf: &[u8], pos: usize) -> Option<(i32, usize)> {
    let b = buf.get(pos..pos + 4)?;
    Some((i32::from_be_bytes([b[0], b[1], b[2], b[3]]), pos + 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_needs_five_bytes() {
        assert_eq!(peek_frontend(b"Q\0\0", &Limits::default()), Ok(None));
    }

    #[test]
    fn header_reads_tag_and_length() {
        let h = peek_frontend(b"Q\0\0\0\x09abcd", &Limits::default()).unwrap().unwrap();
        assert_eq!(h, Header { tag: b'Q', total: 10 });
        assert_eq!(h.body_len(), 5);
    }

    #[test]
    fn length_below_four_is_rejected() {
        assert!(matches!(
            peek_frontend(b"Q\0\0\0\x03", &Limits::default()),
            Err(FrameError::BadLength { .. })
        ));
        let negative = peek_frontend(b"Q\xff\xff\xff\xff", &Limits::default()).unwrap_err();
        assert_eq!(negative.to_string(), "invalid message length -1 for message type 'Q'");
    }

    #[test]
    fn an_unknown_message_type_is_refused_on_its_first_byte() {
        assert_eq!(peek_frontend(b"y", &Limits::default()), Err(FrameError::UnknownType(b'y')));
        assert_eq!(peek_frontend(b"\0\0\0\x08", &Limits::default()), Err(FrameError::UnknownType(0)));
    }

    #[test]
    fn small_messages_have_a_small_bound() {
        let err = peek_frontend(b"S\0\x01\0\0", &Limits::default()).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { tag: 'S', .. }));
        assert!(peek_frontend(b"Q\0\x01\0\0", &Limits::default()).unwrap().is_some());
    }

    #[test]
    fn frames_stop_at_an_incomplete_or_malformed_message() {
        let limits = Limits::default();
        let buf = b"P\0\0\0\x05xS\0\0\0\x04Q\0\0\0\x09ab";
        let mut frames = FrontendFrames::new(buf, &limits);
        let first = frames.next().unwrap();
        assert_eq!((first.tag, first.body()), (b'P', &b"x"[..]));
        assert_eq!(frames.next().unwrap().tag, b'S');
        assert!(frames.next().is_none(), "the Query has not fully arrived");
        assert_eq!(frames.consumed(), 11);
        let bad = b"S\0\0\0\x04Q\0\0\0\x02";
        assert_eq!(FrontendFrames::new(bad, &limits).count(), 1);
    }

    #[test]
    fn huge_length_is_rejected_before_any_allocation() {
        let err = peek_frontend(b"Q\x7f\xff\xff\xff", &Limits::default()).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
    }
}
