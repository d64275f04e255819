//! Expressions written back as SQL: constants for partial-index predicates, indexable
//! expressions written without table qualifiers.

use pg_query::protobuf::{self, a_const};
use pg_query::NodeEnum;

/// The text of a string constant (for LIKE patterns).
pub(super) fn constant_text(node: &protobuf::Node) -> Option<String> {
    match &node.node {
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(a_const::Val::Sval(s)) => Some(s.sval.clone()),
            _ => None,
        },
        Some(NodeEnum::TypeCast(tc)) => tc.arg.as_deref().and_then(constant_text),
        _ => None,
    }
}

/// A constant written back as SQL (`'pending'`, `true`, `42`, `'2024-01-01'::date`).
pub(super) fn constant_sql(node: &protobuf::Node) -> Option<String> {
    if let Some(NodeEnum::AConst(c)) = &node.node {
        if c.isnull {
            return None;
        }
    }
    deparse_expression(node)
}

/// Deparses an expression by wrapping it in `SELECT expr` (the deparser only takes statements).
pub fn deparse_expression(node: &protobuf::Node) -> Option<String> {
    let target = protobuf::ResTarget { val: Some(Box::new(node.clone())), ..Default::default() };
    let select = protobuf::SelectStmt {
        target_list: vec![protobuf::Node { node: Some(NodeEnum::ResTarget(Box::new(target))) }],
        limit_option: protobuf::LimitOption::Default as i32,
        op: protobuf::SetOperation::SetopNone as i32,
        ..Default::default()
    };
    let sql = NodeEnum::SelectStmt(Box::new(select)).deparse(Default::default()).ok()?;
    sql.strip_prefix("SELECT ").map(str::to_string)
}

/// Drops table qualifiers from every column reference (index expressions name bare columns).
pub(super) fn unqualify(node: &mut protobuf::Node) {
    let Some(inner) = node.node.as_mut() else { return };
    match inner {
        NodeEnum::ColumnRef(c) if c.fields.len() > 1 => {
            let last = c.fields.pop().expect("len > 1");
            c.fields = vec![last];
        }
        NodeEnum::FuncCall(f) => f.args.iter_mut().for_each(unqualify),
        NodeEnum::AExpr(e) => {
            for side in [&mut e.lexpr, &mut e.rexpr].into_iter().flatten() {
                unqualify(side);
            }
        }
        NodeEnum::TypeCast(tc) => {
            if let Some(a) = tc.arg.as_mut() {
                unqualify(a);
            }
        }
        NodeEnum::CoalesceExpr(c) => c.args.iter_mut().for_each(unqualify),
        NodeEnum::List(l) => l.items.iter_mut().for_each(unqualify),
        _ => {}
    }
}
