//! Giving memory back to the system after a large client message. The allocator keeps freed
//! pages for reuse; after one 200 MB query a proxy held 450 MB for as long as it ran, which a
//! container's memory limit counts. The binary, which chooses the allocator, says how.

use std::sync::OnceLock;

static GIVE_BACK: OnceLock<fn()> = OnceLock::new();

/// How to return freed memory to the system (mimalloc's `mi_collect(true)`); set once at start.
pub fn set_give_back(f: fn()) {
    let _ = GIVE_BACK.set(f);
}

/// Returns freed memory to the system: after a large message's buffers are dropped (rare, and
/// worth the walk over the allocator's pages).
pub(crate) fn give_back() {
    if let Some(f) = GIVE_BACK.get() {
        f();
    }
}
