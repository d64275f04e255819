//! What the hot path works out from a simple Query's text — its statistics key and its quick
//! look — remembered by shape (pgpilot_sql::shape). Such a text carries its constants inline, so
//! it differs every time and no memo by exact text ever hits; but a text of a shape seen before
//! has that shape's key and look, found without reading it again.

use std::cell::RefCell;

use pgpilot_sql::shape::{same_shape, shape_key};
use pgpilot_sql::QuickLook;

use crate::hashing::ByHash;
use crate::insight::QueryKey;

/// Longer texts are read every time rather than kept (`QueryKey::of_str` keeps no long text
/// either).
pub(crate) const SHAPE_TEXT_MAX: usize = 8 * 1024;
/// Past this many bytes of kept shapes the memo starts over (its memory stays bounded).
const SHAPE_BYTES: usize = 1 << 20;
/// Shapes kept under one key (statements starting alike up to their first constant).
const PER_KEY: usize = 4;

thread_local! {
    static SHAPES: RefCell<Shapes> = RefCell::new(Shapes::default());
}

#[derive(Default)]
struct Shapes {
    by_key: ByHash<Vec<Shape>>,
    bytes: usize,
    /// The spans of the text being normalized, kept to reuse their allocation.
    spans: Vec<(u32, u32)>,
}

struct Shape {
    text: Box<[u8]>,
    spans: Box<[(u32, u32)]>,
    key: QueryKey,
    look: QuickLook,
}

impl Shape {
    fn size(&self) -> usize {
        self.text.len() + self.spans.len() * 8 + std::mem::size_of::<Shape>()
    }
}

/// The statistics key of `sql` (constants not kept).
pub fn key_of(sql: &str) -> QueryKey {
    debug_assert!(sql.len() <= SHAPE_TEXT_MAX, "QueryKey::of_str reads long texts itself");
    SHAPES.with_borrow_mut(|shapes| shapes.shape_of(sql).key.clone())
}

/// Both, found with one look-up (the simple Query path wants both).
pub fn key_and_look(sql: &str) -> (QueryKey, QuickLook) {
    if sql.len() > SHAPE_TEXT_MAX {
        return (QueryKey::of_str(sql, false).0, pgpilot_sql::quick_look(sql));
    }
    SHAPES.with_borrow_mut(|shapes| {
        let shape = shapes.shape_of(sql);
        (shape.key.clone(), shape.look)
    })
}

/// The quick look at `sql`.
pub fn look_of(sql: &str) -> QuickLook {
    if sql.len() > SHAPE_TEXT_MAX {
        return pgpilot_sql::quick_look(sql);
    }
    SHAPES.with_borrow_mut(|shapes| shapes.shape_of(sql).look)
}

impl Shapes {
    fn shape_of(&mut self, sql: &str) -> &Shape {
        let text = sql.as_bytes();
        let hash = shape_key(text);
        let known = self
            .by_key
            .get(&hash)
            .and_then(|shapes| shapes.iter().position(|shape| same_shape(&shape.text, &shape.spans, text)));
        if let Some(at) = known {
            return &self.by_key[&hash][at];
        }
        let mut spans = std::mem::take(&mut self.spans);
        let (key, reusable) = QueryKey::with_spans(sql, &mut spans);
        // A text whose shape may not stand for others is kept without its constants' places:
        // found again by this very text only.
        let places = if reusable { spans.as_slice() } else { &[] };
        let shape =
            Shape { text: text.into(), spans: places.into(), key, look: pgpilot_sql::quick_look(sql) };
        self.spans = spans;
        self.remember(hash, shape)
    }

    fn remember(&mut self, hash: u64, shape: Shape) -> &Shape {
        if self.bytes + shape.size() > SHAPE_BYTES {
            self.by_key.clear();
            self.bytes = 0;
        }
        self.bytes += shape.size();
        let shapes = self.by_key.entry(hash).or_default();
        if shapes.len() == PER_KEY {
            self.bytes -= shapes.remove(0).size();
        }
        shapes.push(shape);
        shapes.last().expect("just pushed")
    }
}
