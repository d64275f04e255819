//! A statement's identity in the statistics, computed for every statement the gateway forwards.

use std::cell::RefCell;
use std::sync::Arc;

/// A statement's identity in the statistics: its lexical fingerprint and normalized text.
#[derive(Debug, Clone)]
pub struct QueryKey {
    pub fingerprint: u64,
    pub normalized: Arc<str>,
}

/// Normalized texts seen lately on this thread, so that the many statements differing only in
/// their constants share one allocation instead of making one each.
struct Interner {
    scratch: String,
    texts: crate::hashing::ByHash<Arc<str>>,
    bytes: usize,
}

/// Past this many bytes of text the interner starts over (its memory stays bounded).
const INTERNED_BYTES: usize = 1 << 20;
/// Longer texts are not interned (nor is their buffer kept).
const INTERNED_TEXT_MAX: usize = 8 * 1024;

thread_local! {
    static INTERNER: RefCell<Interner> =
        RefCell::new(Interner { scratch: String::new(), texts: Default::default(), bytes: 0 });
    /// Keys of Parse texts, which repeat exactly (see text_memo.rs).
    static STATEMENT_KEYS: RefCell<crate::text_memo::TextMemo<QueryKey>> =
        RefCell::new(crate::text_memo::TextMemo::new(INTERNED_BYTES));
}

impl Interner {
    fn intern(&mut self, fingerprint: u64) -> Arc<str> {
        match self.texts.get(&fingerprint) {
            Some(text) if **text == *self.scratch => return text.clone(),
            // Another spelling of the same statement (unquoted words fold case in the fingerprint):
            // it keeps its own text, as the statistics show each entry as first written.
            Some(_) => return Arc::from(self.scratch.as_str()),
            None => {}
        }
        if self.bytes + self.scratch.len() > INTERNED_BYTES {
            self.texts.clear();
            self.bytes = 0;
        }
        let text: Arc<str> = Arc::from(self.scratch.as_str());
        self.bytes += text.len();
        self.texts.insert(fingerprint, text.clone());
        text
    }
}

impl QueryKey {
    /// The key of a statement sent with Parse: remembered by its exact text, as drivers send the
    /// same parameterized texts again and again.
    pub fn of_statement(text: &[u8]) -> QueryKey {
        STATEMENT_KEYS.with_borrow_mut(|memo| memo.get_or_make(text, || QueryKey::of(text, false).0))
    }

    /// Normalizes `text` (constants become $n); the constants come back too when asked for.
    pub fn of(text: &[u8], keep_constants: bool) -> (QueryKey, Vec<String>) {
        // The plain check first: `from_utf8_lossy` validates valid text several times slower.
        match std::str::from_utf8(text) {
            Ok(sql) => QueryKey::of_str(sql, keep_constants),
            Err(_) => QueryKey::of_str(&String::from_utf8_lossy(text), keep_constants),
        }
    }

    /// `of` for a text already known to be UTF-8.
    pub fn of_str(sql: &str, keep_constants: bool) -> (QueryKey, Vec<String>) {
        if !keep_constants && sql.len() <= crate::shapes::SHAPE_TEXT_MAX {
            return (crate::shapes::key_of(sql), Vec::new());
        }
        INTERNER.with_borrow_mut(|interner| {
            let (fingerprint, constants) =
                pgpilot_sql::normalize::normalize_into(sql, keep_constants, &mut interner.scratch);
            if interner.scratch.len() > INTERNED_TEXT_MAX {
                // One huge statement must not pin its size on the thread.
                let normalized = Arc::from(std::mem::take(&mut interner.scratch));
                return (QueryKey { fingerprint, normalized }, constants);
            }
            (QueryKey { fingerprint, normalized: interner.intern(fingerprint) }, constants)
        })
    }

    /// A normalized key, with the places of the text's constants noted for a shape.
    pub(crate) fn with_spans(sql: &str, spans: &mut Vec<(u32, u32)>) -> (QueryKey, bool) {
        INTERNER.with_borrow_mut(|interner| {
            let (fingerprint, reusable) =
                pgpilot_sql::normalize::normalize_with_spans(sql, &mut interner.scratch, spans);
            (QueryKey { fingerprint, normalized: interner.intern(fingerprint) }, reusable)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_differing_in_constants_share_one_text() {
        let (a, _) = QueryKey::of(b"SELECT abalance FROM pgbench_accounts WHERE aid = 17", false);
        let (b, constants) = QueryKey::of(b"SELECT abalance FROM pgbench_accounts WHERE aid = 123456", true);
        assert_eq!(&*a.normalized, "SELECT abalance FROM pgbench_accounts WHERE aid = $1");
        assert!(Arc::ptr_eq(&a.normalized, &b.normalized), "the second text was allocated again");
        assert_eq!(constants, vec!["123456".to_string()]);
        // Another spelling: the same statement, shown as written.
        let (lower, _) = QueryKey::of(b"select abalance from pgbench_accounts where aid = 5", false);
        assert_eq!(lower.fingerprint, a.fingerprint);
        assert_eq!(&*lower.normalized, "select abalance from pgbench_accounts where aid = $1");
        let (again, _) = QueryKey::of(b"SELECT abalance FROM pgbench_accounts WHERE aid = 9", false);
        assert!(Arc::ptr_eq(&a.normalized, &again.normalized), "the other spelling replaced the first");
        let (c, _) = QueryKey::of(b"SELECT $1, 'x', 12 FROM t", false);
        assert_eq!(&*c.normalized, "SELECT $1, $2, $3 FROM t");
        assert_ne!(c.fingerprint, a.fingerprint);
    }

    #[test]
    fn a_long_statement_is_keyed_but_not_kept() {
        let long = format!("SELECT '{}'", "x".repeat(INTERNED_TEXT_MAX * 2));
        let (k, _) = QueryKey::of(b"SELECT 1", false);
        let (l, _) = QueryKey::of(long.as_bytes(), false);
        assert_eq!(&*l.normalized, "SELECT $1");
        let long_text = format!("SELECT \"{}\"", "y".repeat(INTERNED_TEXT_MAX * 2));
        let (m, _) = QueryKey::of(long_text.as_bytes(), false);
        assert_eq!(m.normalized.len(), long_text.len());
        INTERNER.with_borrow(|i| {
            assert!(i.scratch.capacity() <= INTERNED_TEXT_MAX * 2, "the long text's buffer was kept");
            assert!(!i.texts.values().any(|t| t.len() > INTERNED_TEXT_MAX));
        });
        assert_eq!(&*k.normalized, "SELECT $1");
    }

    /// The key found by shape is the key normalizing gives (keeping constants never uses shapes).
    #[test]
    fn keys_found_by_shape_are_the_normalized_keys() {
        let texts = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 5;",
            "select abalance from pgbench_accounts where aid = 6",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 'x';",
            "SELECT abalance FROM pgbench_accounts WHERE aid IN (1, 2);",
            "SELECT abalance FROM pgbench_accounts WHERE aid IN (3, 4, 5);",
            "UPDATE t SET v = 'a' WHERE id = -1",
            "UPDATE t SET v = 'b$1' WHERE id = -2",
            "UPDATE t SET v = 'c' WHERE id = -3",
        ];
        for _ in 0..2 {
            for text in texts {
                let (by_shape, _) = QueryKey::of(text.as_bytes(), false);
                let (normalized, _) = QueryKey::of(text.as_bytes(), true);
                assert_eq!(by_shape.fingerprint, normalized.fingerprint, "{text}");
                assert_eq!(by_shape.normalized, normalized.normalized, "{text}");
            }
        }
    }
}
