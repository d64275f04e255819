//! The row type a client learned of its prepared statement, checked on every server copy pgpilot
//! prepares for it later.
//!
//! A driver that described its statement once (lib/pq, sqlx, pgx, pgJDBC) decodes every later
//! result with that description. PostgreSQL holds the client's own copy, and after DDL that
//! changes the result type (`ALTER COLUMN ... TYPE`, `DROP COLUMN` under a `SELECT *`) it refuses
//! the next Bind with 0A000 "cached plan must not change result type". pgpilot prepares copies
//! from the text on whichever server the client lands on, and a copy made after the DDL has the
//! new type: without this check its rows reach the client unannounced (int8 values decoded as
//! int4, a column short). A copy prepared earlier, for another client, may have been prepared
//! under another schema too (before a DDL undone since). So each copy's own row type is learned
//! (from a client's Describe of it, or by describing it before the first Bind that needs it), and
//! a Bind whose statement the client knows with another row type than the copy's fails as
//! PostgreSQL's would.

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

/// The row type of a statement that returns no rows (NoData).
pub(super) const NO_ROWS: u64 = u64::MAX;

/// The row type in a RowDescription body: each column's name, type and type modifier, as
/// PostgreSQL compares result types (not the table a column comes from). Never 0 or NO_ROWS.
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
    h.finish().clamp(1, NO_ROWS - 1)
}

/// The client's Describe of its statement `stmt` answered with a RowDescription of this row type:
/// the one it now decodes that statement's results with, and the one of the server's copy. Only
/// that statement's: another name the client prepared with the same text keeps the row type it was
/// described with (asyncpg's explicit `prepare` beside its statement cache's entry of the same
/// query, the entry prepared again after DDL), as each has its own in PostgreSQL.
pub(super) fn record_described(server: &mut ServerConn, stmt: &PreparedStatement, shape: u64) {
    stmt.row_shape.store(shape, Relaxed);
    server.statements.set_shape(stmt.hash, shape);
}

/// Whether the client knows `stmt` with another row type than the server's copy has: its Bind
/// must fail (0A000), as its own copy's would have after the DDL that made the difference.
pub(super) fn differs_from_copy(stmt: &PreparedStatement, server: &ServerConn) -> bool {
    let known = stmt.row_shape.load(Relaxed);
    known != 0 && server.statements.shape(stmt.hash).is_some_and(|copy| copy != known)
}

impl Flow {
    /// Before each of the client's requests (`request`: its messages from the first on), outside a
    /// transaction or inside one: describes the server's copy of each statement the request binds
    /// that the client described before, when the copy's row type is not known yet, preparing the
    /// copy first if the server has none. Returns whether the request must wait for the answers
    /// (as for a settings sync); it is then looked at once more, and goes ahead.
    pub(super) fn check_copies(&mut self, s: &Session, server: &mut ServerConn, request: &[u8]) -> bool {
        if std::mem::take(&mut self.copies_checked_for_request) {
            self.copies_rechecked = false;
            return false;
        }
        // Most requests start with a Query: nothing to look at.
        let binds = matches!(request.first(), Some(b'B' | b'P'));
        if !binds || !self.rewrite || s.status == TxnStatus::Failed || s.statements.named.is_empty() {
            return false;
        }
        let wanted = copies_to_check(s, server, request);
        if wanted.is_empty() {
            return false;
        }
        for stmt in wanted {
            // A copy older than the client's Parse, or known with another row type, is prepared
            // again, not described: it may predate DDL the client's Parse saw (or DDL since
            // undone), and a Describe of it would then fail where the client's own statement would not.
            let stale = !server.statements.holds(&stmt)
                || server.statements.prepared_before(&stmt)
                || differs_from_copy(&stmt, server);
            if stale {
                self.prepare_on_server(server, &stmt);
                self.expected
                    .push(Expect::Injected(Reply::Parse { client_name: None, hash: Some(stmt.hash) }));
            }
            frontend::target(&mut self.to_server, b'D', b'S', &stmt.server_name);
            self.expected.push(Expect::Injected(Reply::CheckDescribe { hash: stmt.hash }));
        }
        // Between two of the client's requests a Sync ends nothing of its own, a transaction
        // included.
        frontend::sync(&mut self.to_server);
        self.expected.push(Expect::Injected(Reply::CheckSync));
        self.checking_copies = true;
        self.copies_checked_for_request = true;
        self.param_sync = ParamSync::Waiting;
        true
    }

    /// A copy's row type was just learned. Inside a transaction it may come from DDL the
    /// transaction makes and may roll back: it counts only until the transaction ends.
    pub(super) fn note_copy_shape(&mut self, s: &Session, hash: u64) {
        if s.status != TxnStatus::Idle {
            self.provisional_shapes.push(hash);
        }
    }

    /// The transaction ended. Committed whole, the row types learned inside it hold (drivers that
    /// prepare inside their transactions, as asyncpg does, would otherwise have each copy
    /// described again, one more round trip, in every transaction). Rolled back, or a savepoint
    /// of it, copies described inside it are described again at their next use: after a
    /// rolled-back `ALTER TABLE` a copy prepared before it has its old row type again, and every
    /// client that knew that one failed with 0A000 against the type recorded inside the
    /// transaction. Copies prepared inside it are dropped: they keep the type of the undone DDL.
    pub(super) fn settle_provisional_shapes(&mut self, server: &mut ServerConn) {
        let rolled_back = std::mem::take(&mut self.rollback_seen);
        if rolled_back {
            // Prepared under DDL the rollback undid, a copy keeps that row type, and the server
            // refuses it to the next client (0A000) where PostgreSQL would give that client rows.
            server.statements.mark_stale_prepared_since(self.transaction_tick);
        }
        self.transaction_tick = crate::pool::statements::prepare_clock();
        if self.commit_seen && !rolled_back {
            self.provisional_shapes.clear();
            return;
        }
        for hash in self.provisional_shapes.drain(..) {
            server.statements.set_shape(hash, 0);
        }
    }

    /// The checks ended (the server answered their Sync): the client's request goes ahead, and
    /// its Binds compare row types (frontend.rs).
    pub(super) fn copies_checked(&mut self) {
        self.checking_copies = false;
        if matches!(self.param_sync, ParamSync::Waiting) {
            self.param_sync = ParamSync::Done;
        }
    }

    /// A check failed with `error` (the text no longer prepares: a table dropped; or the copy's
    /// plan is refused after DDL, 0A000). The server skips to the checks' Sync; outside a
    /// transaction a refused copy is prepared afresh and described (once), and the client's Bind
    /// compares row types with that; a text that no longer prepares meets the client's request
    /// itself, as it would without pgpilot. Inside one, the failure ended the transaction: the client's request would meet 25P02
    /// there, and is told the check's error instead, the one its own copy's Bind would have met
    /// (asyncpg prepares again only when told 0A000). A copy refused after DDL is dropped once
    /// the transaction ends.
    pub(super) fn copy_check_failed(&mut self, s: &mut Session, server: &mut ServerConn, error: &[u8]) {
        let code = pgpilot_wire::error::ErrorFields::parse(error.get(5..).unwrap_or_default()).code;
        if let Some(Expect::Injected(Reply::CheckDescribe { hash })) = self.expected.front() {
            if code == "0A000" {
                server.statements.mark_stale(*hash);
                // Outside a transaction the client's Bind would get a fresh copy, of the row type
                // the table has now, which the client may not know (a column dropped and another
                // added since the client described it: as many columns, other names and types,
                // decoded with the old ones). The copies are checked again, prepared afresh.
                if s.status == TxnStatus::Idle && !self.copies_rechecked {
                    self.copies_rechecked = true;
                    self.copies_checked_for_request = false;
                }
            }
        }
        if s.status != TxnStatus::Idle {
            self.check_error = Some(error.into());
        }
        for entry in self.expected.skip_to_sync() {
            super::backend::forget(s, server, entry);
        }
    }
}

/// The statements the client's request binds (before any Parse of a named statement or Close of
/// its own, which may change what a name means) that it described before and whose copy on
/// `server` has no known row type (or is missing).
fn copies_to_check(s: &Session, server: &ServerConn, request: &[u8]) -> Vec<Arc<PreparedStatement>> {
    let mut wanted: Vec<Arc<PreparedStatement>> = Vec::new();
    for frame in pgpilot_wire::FrontendFrames::new(request, &s.limits) {
        match frame.tag {
            // An unnamed statement (pgJDBC's BEGIN before the first Bind of a transaction).
            b'P' if frame.body().first() == Some(&0) => {}
            b'B' => {
                let Some(bind) = frontend::parse_bind(frame.body()) else { break };
                let Some(stmt) =
                    s.statements.named.get(bind.statement).filter(|_| !bind.statement.is_empty())
                else {
                    continue;
                };
                let described = stmt.row_shape.load(Relaxed) != 0;
                let copy_known =
                    server.statements.holds(stmt) && server.statements.shape(stmt.hash).is_some();
                // Known with another row type than the client's: the copy may be the stale one
                // (asyncpg, preparing again after 0A000, kept meeting other servers' copies from
                // before the DDL and failing on them), or one prepared while DDL since undone was
                // in force (lib/pq's statement kept failing on that server after the column added
                // was dropped again, where PostgreSQL ran it). It is prepared afresh and described.
                let copy_stale = copy_known && differs_from_copy(stmt, server);
                let check = !copy_known || copy_stale;
                if described && check && !wanted.iter().any(|w| w.hash == stmt.hash) {
                    wanted.push(stmt.clone());
                    if wanted.len() == MAX_CHECKS {
                        break;
                    }
                }
            }
            b'D' | b'E' | b'H' => {}
            // The request ends at its Sync; what follows is another's, checked before it is sent.
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
