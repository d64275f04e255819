//! The shared tier: results stored in Redis (with the link's connection) so another pgpilot
//! instance can answer them without its own read. A result from Redis is taken only when it is
//! provably as fresh as one of this instance's own:
//!
//! - always: nothing it depends on was invalidated here since `CLOCK_SKEW` before its read was
//!   sent on the other instance (writes through this instance invalidate before their commit is
//!   acknowledged; others' arrive by notification, as for results of its own; manual
//!   invalidations on any instance arrive the same way);
//! - `strict`, besides: its `pgpilot.cache_versions` sum is the current one (read by this request
//!   anyway). That sum alone would miss manual invalidations, which change no table.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pgpilot_sql::Oid;

use super::Entry;
use crate::config::cache::Consistency;

/// Tolerated difference between instances' clocks.
pub const CLOCK_SKEW_US: u64 = 100_000;
const FORMAT: u8 = 1;

/// The Redis key of a result.
pub fn redis_key(database: &str, hash: u64) -> String {
    format!("pgpilot:cache:r:{database}:{hash:016x}")
}

/// A result as another instance stored it.
pub struct SharedResult {
    pub read_sent_us: u64,
    pub entry: Entry,
}

pub fn encode(entry: &Entry, read_sent_us: u64) -> Vec<u8> {
    let mut out = BytesMut::with_capacity(entry.body.len() + entry.key.len() + 256);
    out.put_u8(FORMAT);
    out.put_u64(read_sent_us);
    out.put_u64(entry.ttl.as_millis() as u64);
    out.put_u8(entry.pg_snapshot.is_some() as u8);
    out.put_u64(entry.pg_snapshot.unwrap_or(0));
    out.put_u64(entry.fingerprint);
    out.put_u8(matches!(entry.consistency, Consistency::Strict) as u8);
    field(&mut out, &entry.key);
    out.put_u32(entry.relations.len() as u32);
    entry.relations.iter().for_each(|r| out.put_u32(*r));
    out.put_u32(entry.tags.len() as u32);
    entry.tags.iter().for_each(|t| field(&mut out, t.as_bytes()));
    for part in [&entry.row_description, &entry.param_description, &entry.statement_row_description] {
        out.put_u8(part.is_some() as u8);
        field(&mut out, part.as_deref().unwrap_or_default());
    }
    field(&mut out, &entry.body);
    out.to_vec()
}

fn field(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

/// Reads a stored result; None for anything malformed (treated as a miss).
pub fn decode(bytes: &[u8]) -> Option<SharedResult> {
    let mut b = Bytes::copy_from_slice(bytes);
    let need = |b: &Bytes, n: usize| (b.remaining() >= n).then_some(());
    need(&b, 1 + 8 + 8 + 1 + 8 + 8 + 1)?;
    if b.get_u8() != FORMAT {
        return None;
    }
    let read_sent_us = b.get_u64();
    let ttl = std::time::Duration::from_millis(b.get_u64());
    let has_pg = b.get_u8() == 1;
    let pg = b.get_u64();
    let fingerprint = b.get_u64();
    let consistency = if b.get_u8() == 1 { Consistency::Strict } else { Consistency::Bounded };
    let key = take(&mut b)?;
    need(&b, 4)?;
    let n = b.get_u32() as usize;
    need(&b, n.checked_mul(4)?)?;
    let relations: Box<[Oid]> = (0..n).map(|_| b.get_u32()).collect();
    need(&b, 4)?;
    let n = b.get_u32() as usize;
    let mut tags = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        tags.push(String::from_utf8(take(&mut b)?.to_vec()).ok()?.into_boxed_str());
    }
    let mut parts = [None, None, None];
    for part in parts.iter_mut() {
        need(&b, 1)?;
        let present = b.get_u8() == 1;
        let bytes = take(&mut b)?;
        *part = present.then_some(bytes);
    }
    let body = take(&mut b)?;
    let [row_description, param_description, statement_row_description] = parts;
    Some(SharedResult {
        read_sent_us,
        entry: Entry {
            key: key.to_vec().into_boxed_slice(),
            relations,
            tags: tags.into_boxed_slice(),
            snapshot: 0,
            pg_snapshot: has_pg.then_some(pg),
            row_description,
            param_description,
            statement_row_description,
            body,
            ttl,
            consistency,
            fingerprint,
            stored_at: std::time::Instant::now(),
        },
    })
}

fn take(b: &mut Bytes) -> Option<Bytes> {
    if b.remaining() < 4 {
        return None;
    }
    let n = b.get_u32() as usize;
    (b.remaining() >= n).then(|| b.split_to(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_reads_back_whole() {
        let e = Entry {
            key: b"key".to_vec().into(),
            relations: vec![1, 2].into(),
            tags: vec!["user:1".into()].into(),
            snapshot: 9,
            pg_snapshot: Some(5),
            row_description: Some(Bytes::from_static(b"T...")),
            param_description: None,
            statement_row_description: Some(Bytes::from_static(b"n")),
            body: Bytes::from_static(b"D..C.."),
            ttl: std::time::Duration::from_secs(30),
            consistency: Consistency::Strict,
            fingerprint: 7,
            stored_at: std::time::Instant::now(),
        };
        let back = decode(&encode(&e, 123)).unwrap();
        assert_eq!(back.read_sent_us, 123);
        let b = back.entry;
        assert_eq!(
            (&*b.key, &*b.relations, b.pg_snapshot, b.fingerprint),
            (&b"key"[..], &[1, 2][..], Some(5), 7)
        );
        assert_eq!(
            (b.row_description, b.param_description, b.body),
            (e.row_description.clone(), None, e.body.clone())
        );
        assert_eq!(b.tags[0].as_ref(), "user:1");
        assert!(decode(b"\x02garbage").is_none());
        assert!(decode(&encode(&e, 1)[..20]).is_none());
    }
}
