//! Memory for large client messages. A message is buffered whole before it is handled (its SQL is
//! classified for routing, caching and statistics), up to max_message_size. Each client alone is
//! bounded by that; all clients together by this budget, so that a few clients announcing huge
//! messages cannot take the process's memory (PgBouncer streams such messages instead).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use bytes::BytesMut;
use pgpilot_wire::{PgError, SqlState};

/// Messages up to this size are buffered without asking the budget.
pub const LARGE_MESSAGE: usize = 1 << 20;

/// Bytes of large client messages being received, across all clients.
#[derive(Debug, Default)]
pub struct InputBudget {
    in_use: AtomicUsize,
}

impl InputBudget {
    /// The budget for all clients' large messages together: room for two of the largest allowed.
    pub fn limit(max_message_size: usize) -> usize {
        max_message_size.saturating_mul(2)
    }

    pub fn in_use(&self) -> usize {
        self.in_use.load(Relaxed)
    }
}

/// The share of the budget one client holds for the message it is receiving.
#[derive(Debug, Default)]
pub struct Reservation {
    bytes: usize,
}

impl Reservation {
    /// Makes room in `buf` for the next part of a message of `total` bytes, taking it from the
    /// budget first when the message is large; refused with 53200 when the budget is spent.
    /// Called before each read while the message is incomplete. The room grows with what has
    /// arrived (doubling, never past `total`): a client that announces a huge message and sends
    /// it slowly, or not at all, holds what it sent, not what it announced (two clients stalled
    /// after announcing 256 MB each refused every other large message for as long as they
    /// stayed).
    pub fn fit(
        &mut self,
        budget: &InputBudget,
        limit: usize,
        buf: &mut BytesMut,
        total: usize,
    ) -> Result<(), PgError> {
        if total <= LARGE_MESSAGE {
            return Ok(());
        }
        let received = buf.len();
        let room = total.min(received.saturating_mul(2).max(received + LARGE_MESSAGE));
        if room > self.bytes {
            let more = room - self.bytes;
            let before = budget.in_use.fetch_add(more, Relaxed);
            if before + more > limit {
                budget.in_use.fetch_sub(more, Relaxed);
                return Err(PgError::fatal(
                    SqlState::OUT_OF_MEMORY,
                    format!(
                        "message of {total} bytes refused: large messages being received take {before} bytes, \
                         the limit for all clients is {limit} (twice max_message_size)"
                    ),
                ));
            }
            self.bytes = room;
        }
        if buf.capacity() < room {
            // Exactly the room: BytesMut's own growth would double past the message's end.
            let mut bigger = BytesMut::with_capacity(room);
            bigger.extend_from_slice(buf);
            *buf = bigger;
        }
        Ok(())
    }

    /// The message was handled (or the client left): its share goes back.
    pub fn release(&mut self, budget: &InputBudget) {
        if self.bytes > 0 {
            budget.in_use.fetch_sub(std::mem::take(&mut self.bytes), Relaxed);
            crate::memory::give_back();
        }
    }

    pub fn holds(&self) -> bool {
        self.bytes > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_messages_share_one_budget() {
        let budget = InputBudget::default();
        let limit = 8 << 20;
        let (mut a, mut b) = (Reservation::default(), Reservation::default());
        let (mut buf_a, mut buf_b) = (BytesMut::new(), BytesMut::new());
        assert!(a.fit(&budget, limit, &mut buf_a, 1000).is_ok(), "small messages need no budget");
        assert_eq!(budget.in_use(), 0);
        // Announced, not sent: the room is for the first part only.
        assert!(a.fit(&budget, limit, &mut buf_a, 5 << 20).is_ok());
        assert_eq!(budget.in_use(), LARGE_MESSAGE);
        assert!(buf_a.capacity() >= LARGE_MESSAGE && buf_a.capacity() < 2 * LARGE_MESSAGE);
        // As it arrives, the room grows to the whole message and no further.
        for _ in 0..4 {
            buf_a.resize(buf_a.capacity(), 7);
            assert!(a.fit(&budget, limit, &mut buf_a, 5 << 20).is_ok());
        }
        assert_eq!(buf_a.capacity(), 5 << 20);
        assert_eq!(budget.in_use(), 5 << 20);
        // Another message of 4 MB: its first parts fit beside the 5 MB, not the whole of it.
        assert!(b.fit(&budget, limit, &mut buf_b, 4 << 20).is_ok());
        buf_b.resize(buf_b.capacity(), 7);
        assert!(b.fit(&budget, limit, &mut buf_b, 4 << 20).is_ok());
        assert_eq!(budget.in_use(), 7 << 20);
        buf_b.resize(buf_b.capacity(), 7);
        let refused = b.fit(&budget, limit, &mut buf_b, 4 << 20).expect_err("over the budget");
        assert_eq!(refused.code, SqlState::OUT_OF_MEMORY);
        assert_eq!(budget.in_use(), 7 << 20, "a refused reservation takes nothing more");
        a.release(&budget);
        assert!(b.fit(&budget, limit, &mut buf_b, 4 << 20).is_ok());
        b.release(&budget);
        assert_eq!(budget.in_use(), 0);
    }
}
