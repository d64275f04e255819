//! A complete depth-first walk over pg_query's parse tree.
//!
//! The walker in `generated.rs` visits every message-typed field of every node, so nothing the
//! grammar can nest (a function call in a window frame, a table in a JSON_TABLE, a writing CTE inside
//! a sub-select) escapes classification.

#[rustfmt::skip]
mod generated;

use pg_query::protobuf::Node;
use pg_query::NodeRef;

/// Receives every node of a tree in depth-first order.
pub(crate) trait Visitor: Sized {
    /// Called before a node's children; returning false skips them (the visitor may walk them itself).
    fn enter(&mut self, node: NodeRef<'_>) -> bool;
    /// Called after a node's children (also when `enter` skipped them).
    fn leave(&mut self, _node: NodeRef<'_>) {}
}

/// Visits one node and, unless the visitor declines, its children.
pub(crate) fn visit<V: Visitor>(v: &mut V, node: NodeRef<'_>) {
    if v.enter(node) {
        generated::walk_children(v, node);
    }
    v.leave(node);
}

/// Visits the node inside a protobuf `Node` wrapper (empty wrappers are skipped).
pub(crate) fn walk_node<V: Visitor>(v: &mut V, node: &Node) {
    if let Some(inner) = &node.node {
        visit(v, inner.to_ref());
    }
}
