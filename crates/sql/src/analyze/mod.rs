//! The miss path: parse a text with the PostgreSQL grammar and derive a [`Statement`].

mod collector;
pub use collector::mentions_time_word;
mod top;

use std::sync::Arc;

use collector::Collector;

use crate::hints::scan_hints;
use crate::statement::{ReadShape, Statement, StatementKind, WriteReason};

/// Parses and classifies `sql`. Never fails: text the grammar rejects becomes `Unparsed`.
pub fn analyze(sql: &str) -> Statement {
    let hints = scan_hints(sql);
    let tree = match pg_query::parse(sql, 0) {
        Ok(parsed) => parsed.protobuf,
        Err(e) => return unparsed(sql, hints, e.to_string()),
    };
    let mut c = Collector::new();
    let mut kinds = Vec::with_capacity(tree.stmts.len());
    let mut transaction = None;
    let mut invalidates_everything = false;
    for raw in &tree.stmts {
        let Some(stmt) = raw.stmt.as_deref() else { continue };
        let top = top::analyze_top(stmt, statement_text(sql, raw), &mut c);
        kinds.push(top.kind);
        transaction = transaction.or(top.transaction);
        invalidates_everything |= top.invalidates_everything;
    }
    let kind = kinds.first().copied().unwrap_or(StatementKind::Empty);
    let set_config_runs = match tree.stmts.as_slice() {
        [only] => only.stmt.as_deref().is_some_and(top::only_set_config_calls),
        _ => false,
    };
    let fingerprint = pg_query::fingerprint(sql, 0, 0).map(|f| f.value).unwrap_or_else(|_| stable_hash(sql));
    let normalized: Arc<str> = pg_query::normalize(sql).map(Arc::from).unwrap_or_else(|_| Arc::from(sql));
    Statement {
        kind,
        statement_count: kinds.len(),
        kinds: kinds.into_boxed_slice(),
        writes: c.write_reason.is_some(),
        writes_data: c.writes_data,
        write_reason: c.write_reason,
        tables_read: c.tables_read,
        tables_written: c.tables_written,
        functions: c.functions,
        operators: c.operators,
        cast_types: c.cast_types,
        input_casts: c.input_casts,
        selected_fields: c.selected_fields,
        value_functions: c.value_functions,
        transaction,
        settings: c.settings,
        set_config_runs,
        session_effects: c.session_effects,
        hints,
        fingerprint,
        normalized,
        shape: c.shape,
        invalidates_everything,
        parse_error: None,
    }
}

/// The text of one statement of a multi-statement string (`stmt_len` 0 means "to the end").
fn statement_text<'a>(sql: &'a str, raw: &pg_query::protobuf::RawStmt) -> &'a str {
    let start = usize::try_from(raw.stmt_location).unwrap_or(0).min(sql.len());
    let end = match usize::try_from(raw.stmt_len) {
        Ok(0) | Err(_) => sql.len(),
        Ok(len) => (start + len).min(sql.len()),
    };
    sql.get(start..end).unwrap_or(sql)
}

/// Text the grammar rejects: it may be anything, so it may write anything.
fn unparsed(sql: &str, hints: crate::hints::Hints, error: String) -> Statement {
    Statement {
        kind: StatementKind::Unparsed,
        kinds: Box::new([StatementKind::Unparsed]),
        statement_count: 1,
        writes: true,
        writes_data: true,
        write_reason: Some(WriteReason::Unparsed),
        tables_read: Vec::new(),
        tables_written: Vec::new(),
        functions: Vec::new(),
        operators: Vec::new(),
        cast_types: Vec::new(),
        input_casts: Vec::new(),
        selected_fields: Vec::new(),
        value_functions: Vec::new(),
        transaction: None,
        settings: Vec::new(),
        set_config_runs: false,
        session_effects: Vec::new(),
        hints,
        fingerprint: stable_hash(sql),
        normalized: Arc::from(sql),
        shape: ReadShape::default(),
        invalidates_everything: true,
        parse_error: Some(error),
    }
}

/// FNV-1a: a fingerprint for text pg_query cannot fingerprint, stable across runs and builds.
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
