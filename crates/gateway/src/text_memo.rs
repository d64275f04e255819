//! Facts worked out from a statement text, remembered by the exact text. Drivers send the same
//! parameterized texts again and again (an unnamed Parse before every Bind, in JDBC, node-postgres,
//! psycopg and pgbench -M extended): working them out again each time cost more than the rest of
//! the message's handling. Texts with inline literals differ every time and only churn a memo,
//! so this is for Parse texts, not simple Query texts.

use std::hash::BuildHasher;

use crate::hashing::ByHash;

/// Longer texts are worked out every time rather than kept.
const TEXT_MAX: usize = 8 * 1024;

/// A bounded memo from text to `V`: past `max_bytes` of kept text it starts over.
pub struct TextMemo<V> {
    entries: ByHash<(Box<[u8]>, V)>,
    hasher: foldhash::fast::FixedState,
    bytes: usize,
    max_bytes: usize,
}

impl<V: Clone> TextMemo<V> {
    pub fn new(max_bytes: usize) -> Self {
        TextMemo {
            entries: ByHash::default(),
            hasher: foldhash::fast::FixedState::with_seed(0x7e47_4d3e),
            bytes: 0,
            max_bytes,
        }
    }

    /// The value for `text`, made by `make` when it is not remembered.
    pub fn get_or_make(&mut self, text: &[u8], make: impl FnOnce() -> V) -> V {
        let hash = self.hasher.hash_one(text);
        if let Some((kept, value)) = self.entries.get(&hash) {
            if **kept == *text {
                return value.clone();
            }
        }
        let value = make();
        if text.len() <= TEXT_MAX {
            if self.bytes + text.len() > self.max_bytes {
                self.entries.clear();
                self.bytes = 0;
            }
            self.bytes += text.len();
            // A hash collision replaces the other text: both stay correct, one is made again.
            if let Some((old, _)) = self.entries.insert(hash, (text.into(), value.clone())) {
                self.bytes -= old.len();
            }
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_worked_out_once_and_memory_stays_bounded() {
        let mut memo = TextMemo::new(64);
        let mut made = 0;
        for _ in 0..3 {
            assert_eq!(
                memo.get_or_make(b"SELECT $1", || {
                    made += 1;
                    9
                }),
                9
            );
        }
        assert_eq!(made, 1, "a remembered text was worked out again");
        assert_eq!(memo.get_or_make(b"SELECT $2", || 7), 7, "another text got the first one's value");
        for i in 0..100 {
            memo.get_or_make(format!("SELECT {i:08}").as_bytes(), || i);
        }
        assert!(memo.bytes <= 64, "kept {} bytes", memo.bytes);
        let long = vec![b'x'; TEXT_MAX + 1];
        memo.get_or_make(&long, || 1);
        assert!(memo.entries.values().all(|(t, _)| t.len() <= TEXT_MAX));
    }
}
