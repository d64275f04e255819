//! The row type a client learned of its prepared statement, checked on every server copy pgpilot
//! prepares for it later.
//!
//! A driver that described its statement once (lib/pq, sqlx, pgx, pgJDBC) decodes every later
//! result with that description. PostgreSQL holds the client's own copy, and after DDL that
//! changes the result type (`ALTER COLUMN ... TYPE`, `DROP COLUMN` under a `SELECT *`) it refuses
//! the next Bind with 0A000 "cached plan must not change result type". pgpilot prepares copies
//! from the text on whichever server the client lands on, and a copy made after the DDL has the
//! new type: without this check its rows reach the client unannounced (int8 values decoded as
//! int4, a column short). So before the first Bind of such a copy, the copy is described, and a
//! row type other than the client's makes that Bind fail as PostgreSQL's would.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use pgpilot_wire::backend::TxnStatus;
use pgpilot_wire::frontend;

use super::client::Session;
use super::expect::{Expect, Reply};
use super::flow::{Flow, ParamSync};
use crate::pool::statements::PreparedStatement;
use crate::pool::ServerConn;

/// Copies checked before one request at most; further ones go unchecked.
const MAX_CHECKS: usize = 16;

/// The row type in a RowDescription body: each column's name, type and type modifier, as
/// PostgreSQL compares result types (not the table a column comes from). Never 0.
pub(super) fn row_shape(body: &[u8]) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(0x726f_7773_6861_7065).build_hasher();
    let count = body.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    h.write_u16(count);
    let mut rest = body.get(2..).unwrap_or_default();
    for _ in 0..count {
        let Some(end) = rest.iter().position(|&b| b == 0) else { break };
        let name = &rest[..end];
        // After the name: table oid (4), column number (2), type oid (4), length (2),
        // modifier (4), format (2).
        let Some(field) = rest.get(end + 1..end + 19) else { break };
        h.write(name);
        h.write(&field[6..10]);
        h.write(&field[12..16]);
        rest = &rest[end + 19..];
    }
    h.finish().max(1)
}

/// The client's Describe of its statement `hash` answered with this RowDescription body: the row
/// type it now decodes that statement's results with.
pub(super) fn record_described(s: &Session, hash: u64, body: &[u8]) {
    let shape = row_shape(body);
    for stmt in s.statements.named.values().filter(|st| st.hash == hash) {
        stmt.row_shape.store(shape, Relaxed);
    }
}

impl Flow {
    /// Before the client's request, outside a transaction: prepares and describes each statement
    /// the request binds that the client described before and this server has no copy of. The
    /// request waits for the answers (as for a settings sync).
    pub(super) fn check_fresh_copies(&mut self, s: &Session, server: &mut ServerConn) {
        // Most requests start with a Query or a Parse: nothing to look at.
        let binds_first = s.buf.first() == Some(&b'B');
        if !binds_first || !self.rewrite || s.status != TxnStatus::Idle || s.statements.named.is_empty() {
            return;
        }
        let wanted = fresh_copies_to_check(s, server);
        if wanted.is_empty() {
            return;
        }
        for stmt in wanted {
            self.prepare_on_server(server, &stmt);
            self.expected.push(Expect::Injected(Reply::Parse { client_name: None, hash: Some(stmt.hash) }));
            frontend::target(&mut self.to_server, b'D', b'S', &stmt.server_name);
            let seen = stmt.row_shape.load(Relaxed);
            self.expected.push(Expect::Injected(Reply::CheckDescribe { hash: stmt.hash, seen }));
        }
        frontend::sync(&mut self.to_server);
        self.expected.push(Expect::Injected(Reply::CheckSync));
        self.checking_copies = true;
        self.param_sync = ParamSync::Waiting;
    }

    /// The check of the fresh copy of `hash` found this row type (None: the statement returns no
    /// rows now). Another than the client's starts a new generation of the statement, so the
    /// client's Bind fails with 0A000 (see replan.rs) and the client learns the new type when it
    /// prepares again; the fresh copy already has that type.
    pub(super) fn fresh_copy_described(
        &mut self,
        s: &Session,
        server: &mut ServerConn,
        hash: u64,
        seen: u64,
        shape: Option<u64>,
    ) {
        if shape == Some(seen) {
            return;
        }
        tracing::info!(database = %s.db.name, server_id = server.id,
            "a prepared statement's result type changed since the client described it (DDL): its next use fails as in PostgreSQL");
        super::replan::result_type_changed(s, server, hash);
        server.statements.set_epoch(hash, s.shared.statement_epochs.current(hash));
    }

    /// The checks ended (the server answered their Sync): the client's request goes ahead.
    pub(super) fn fresh_copies_checked(&mut self) {
        self.checking_copies = false;
        if matches!(self.param_sync, ParamSync::Waiting) {
            self.param_sync = ParamSync::Done;
        }
    }

    /// A check failed (the text no longer prepares: a table dropped). The server skips to the
    /// checks' Sync; the client's request prepares the statement again itself and gets the
    /// server's error there, as it would without pgpilot.
    pub(super) fn fresh_copy_check_failed(&mut self, s: &mut Session, server: &mut ServerConn) {
        for entry in self.expected.skip_to_sync() {
            super::backend::forget(s, server, entry);
        }
    }
}

/// The statements the client's request binds (before any Parse or Close of its own, which may
/// change what a name means) that it described before and `server` has no copy of.
fn fresh_copies_to_check(s: &Session, server: &ServerConn) -> Vec<Arc<PreparedStatement>> {
    let mut wanted: Vec<Arc<PreparedStatement>> = Vec::new();
    for frame in pgpilot_wire::FrontendFrames::new(&s.buf, &s.limits) {
        match frame.tag {
            b'B' => {
                let Some(bind) = frontend::parse_bind(frame.body()) else { break };
                let Some(stmt) =
                    s.statements.named.get(bind.statement).filter(|_| !bind.statement.is_empty())
                else {
                    continue;
                };
                let current = stmt.epoch() >= s.shared.statement_epochs.current(stmt.hash);
                let described = stmt.row_shape.load(Relaxed) != 0;
                if described
                    && current
                    && !server.statements.holds(stmt)
                    && !wanted.iter().any(|w| w.hash == stmt.hash)
                {
                    wanted.push(stmt.clone());
                    if wanted.len() == MAX_CHECKS {
                        break;
                    }
                }
            }
            b'D' | b'E' | b'H' | b'S' => {}
            _ => break,
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row_description(columns: &[(&str, u32, u32, i32)]) -> Vec<u8> {
        let mut body = (columns.len() as u16).to_be_bytes().to_vec();
        for (name, table, type_oid, typmod) in columns {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&table.to_be_bytes());
            body.extend_from_slice(&1u16.to_be_bytes());
            body.extend_from_slice(&type_oid.to_be_bytes());
            body.extend_from_slice(&4i16.to_be_bytes());
            body.extend_from_slice(&typmod.to_be_bytes());
            body.extend_from_slice(&0i16.to_be_bytes());
        }
        body
    }

    #[test]
    fn a_row_type_is_its_columns_names_types_and_modifiers() {
        let before = row_shape(&row_description(&[("a", 16384, 23, -1), ("b", 16384, 25, -1)]));
        // The table recreated with the same columns: PostgreSQL keeps the plan's result type.
        assert_eq!(before, row_shape(&row_description(&[("a", 16999, 23, -1), ("b", 16999, 25, -1)])));
        assert_ne!(before, row_shape(&row_description(&[("a", 16384, 20, -1), ("b", 16384, 25, -1)])));
        assert_ne!(before, row_shape(&row_description(&[("a", 16384, 23, -1)])));
        assert_ne!(before, row_shape(&row_description(&[("x", 16384, 23, -1), ("b", 16384, 25, -1)])));
        assert_ne!(before, row_shape(&row_description(&[("a", 16384, 23, 8), ("b", 16384, 25, -1)])));
        assert_ne!(row_shape(&[]), 0);
    }
}
