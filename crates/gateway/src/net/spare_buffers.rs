//! Read buffers let go by clients that went idle, kept for the next client that reads. An idle
//! client holds no buffer (there may be tens of thousands of them), so without these every request
//! would allocate and free one; a few spares per worker thread spare that for busy clients.

use std::cell::RefCell;

use bytes::BytesMut;

/// Spares kept per worker thread: enough for the clients that go idle and wake between two turns
/// of the runtime, bounded so that the idle process stays small (at most this × `LARGEST`).
const SPARES: usize = 16;
/// A buffer that grew past this is let go rather than kept.
const LARGEST: usize = 16 * 1024;

thread_local! {
    static KEPT: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Takes a spare buffer (empty), if this thread keeps one.
pub fn take() -> Option<BytesMut> {
    KEPT.with_borrow_mut(Vec::pop)
}

/// Gives `buf` up: kept as a spare when it is small and this thread keeps few, otherwise freed.
pub fn give_back(mut buf: BytesMut) {
    buf.clear();
    // Room at the front that reading moved past is reclaimed without allocating, where the buffer
    // is its allocation's only owner; one that is not (or is too big) is simply dropped.
    if buf.capacity() == 0 || buf.capacity() > LARGEST {
        return;
    }
    KEPT.with_borrow_mut(|kept| {
        if kept.len() < SPARES {
            kept.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_buffers_come_back_and_large_ones_go() {
        while take().is_some() {}
        let mut small = BytesMut::with_capacity(8192);
        small.extend_from_slice(b"left over");
        give_back(small);
        let again = take().expect("kept");
        assert!(again.is_empty() && again.capacity() >= 8192);
        give_back(BytesMut::with_capacity(LARGEST * 2));
        assert!(take().is_none(), "a large buffer is not kept");
        for _ in 0..SPARES + 5 {
            give_back(BytesMut::with_capacity(1024));
        }
        let mut n = 0;
        while take().is_some() {
            n += 1;
        }
        assert_eq!(n, SPARES);
    }
}
