//! A statement pgpilot prepared on a server whose result type changed after DDL (`ALTER TABLE ...
//! ADD COLUMN` under a `SELECT *`): the server answers its Bind with SQLSTATE 0A000 "cached plan
//! must not change result type" for as long as that server copy lives. pgpilot drops the stale copy,
//! so the next use prepares it afresh, and, when the request ran outside an explicit transaction and
//! nothing of it reached the client, prepares it again and re-runs the request once, unseen.
//!
//! The same happens when the server lost pgpilot's statements to a DEALLOCATE pgpilot could not
//! see (in a function, or naming pgpilot's statement): 26000 "prepared statement does not exist".

use pgpilot_wire::backend::TxnStatus;
use pgpilot_wire::error::ErrorOrigin;
use pgpilot_wire::frontend;
use pgpilot_wire::{PgError, SqlState};

use super::client::Session;
use super::expect::{Expect, Reply};
use super::flow::Flow;
use crate::pool::ServerConn;

/// The SQLSTATE of a prepared statement whose result type changed (feature_not_supported).
const STALE_PLAN: &str = "0A000";

/// The SQLSTATE of a Bind of a statement the server does not have (invalid_sql_statement_name).
const NO_SUCH_STATEMENT: &str = "26000";

/// Recording of the client's request that may have to run again.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replan {
    /// Nothing recorded: the request in flight cannot be re-run.
    #[default]
    Off,
    /// A batch that began with a Bind of a pgpilot-prepared statement outside a transaction is
    /// being recorded into the server connection's replay buffer; `described` once the client
    /// asked for the result's description, so the new row type reaches it before any row. A batch
    /// that began with the client's Parse of a named statement is recorded from the message after
    /// it (the Parse was answered already, possibly from a server copy that turns out stale), and
    /// counts as described: the client knows no result type of it yet. `bound` once the batch's
    /// one Bind was recorded: a second statement might have had rows forwarded before it failed.
    Recording { described: bool, bound: bool },
    /// That batch is complete, up to its Sync, and nothing was forwarded after it.
    Ready { described: bool },
    /// Already re-run once in this attachment.
    Spent,
}

impl Flow {
    /// Called with each client message before it is handled: records a batch that could be re-run.
    pub(super) fn record_for_replan(&mut self, s: &Session, server: &mut ServerConn, tag: u8, msg: &[u8]) {
        use Replan::*;
        let batch_start = self.rewrite && (!self.unsynced || self.only_closes) && s.status == TxnStatus::Idle;
        self.only_closes = batch_start && tag == b'C';
        self.replan = match (self.replan, tag) {
            (Spent, _) => Spent,
            (_, b'B') if batch_start && names_statement(msg) => {
                server.replay.clear();
                Recording { described: false, bound: true }
            }
            (_, b'P') if batch_start && parses_named(msg) => {
                server.replay.clear();
                self.replan = Recording { described: true, bound: false };
                return;
            }
            (Recording { described, bound: false }, b'B') => Recording { described, bound: true },
            (Recording { bound, .. }, b'D') => Recording { described: true, bound },
            (Recording { described, bound }, b'E' | b'H' | b'S') => Recording { described, bound },
            _ => Off,
        };
        if let Recording { described, .. } = self.replan {
            server.replay.extend_from_slice(msg);
            if tag == b'S' {
                self.replan = Ready { described };
            }
        }
    }

    /// The server refused a Bind of the pgpilot-prepared statement `hash` with `code`: its result
    /// type changed (0A000), or the server no longer has it (26000, a DEALLOCATE pgpilot did not
    /// see); `outdated` when pgpilot made it fail because the client prepared the statement before
    /// its result type changed. Returns whether the error is handled here (the request re-runs,
    /// and the client learns any new result type from its Describe) rather than passed on.
    pub(super) fn bind_refused(
        &mut self,
        s: &mut Session,
        server: &mut ServerConn,
        hash: u64,
        code: &str,
        outdated: bool,
    ) -> bool {
        let server_name = server.statements.server_name(hash);
        if outdated {
            if code != NO_SUCH_STATEMENT {
                return false;
            }
        } else if code == NO_SUCH_STATEMENT && server_name.is_some() {
            // The server lost pgpilot's statement: someone ran DEALLOCATE (ALL) where pgpilot could
            // not see it. What else it lost is unknown, so every statement is prepared again.
            tracing::info!(database = %s.db.name, server_id = server.id,
                "the server lost prepared statements pgpilot made (a DEALLOCATE): preparing them again");
            server.statements.forget_prepared();
            let again = self.may_run_again(s);
            if again {
                self.run_again(s, server, None);
            }
            return again;
        } else {
            if code != STALE_PLAN || server_name.is_none() {
                return false;
            }
            result_type_changed(s, server, hash);
        }
        tracing::info!(
            database = %s.db.name,
            server_id = server.id,
            outdated,
            "a prepared statement's result type changed on the server (DDL): preparing it again"
        );
        // A client that executes without describing relies on the row type it learned before; it
        // gets PostgreSQL's error, as it would without pgpilot, and prepares again itself. So does
        // one whose Bind names a format per column of that row type (pgx): run again on a copy of
        // another row type, the Bind fails (08P01) or the formats fall on other columns.
        if !self.may_run_again(s)
            || !self.rerun_describes()
            || binds_formats_per_column(&server.replay, &s.limits)
        {
            // Dropped once the server is out of the transaction (see `drop_stale_statements`);
            // until then uses of it fail like this one, as they would without pgpilot.
            if !outdated {
                server.statements.mark_stale(hash);
            }
            return false;
        }
        // The re-run describes the new result type to the client.
        if outdated {
            let now = s.shared.statement_epochs.current(hash);
            for stmt in s.statements.named.values().filter(|st| st.hash == hash) {
                stmt.epoch.store(now, std::sync::atomic::Ordering::Relaxed);
                // The re-run tells the client the row type the server's copy has.
                stmt.row_shape.store(0, std::sync::atomic::Ordering::Relaxed);
            }
            self.run_again(s, server, None);
        } else {
            self.prepare_afresh(s, server, hash);
        }
        true
    }

    /// The server refused a Describe of pgpilot's statement `hash`. A copy whose result type
    /// changed (0A000) is dropped between transactions, and every client that prepared it before
    /// is told at its next Bind; a copy the server lost (26000) is forgotten with the rest. The
    /// client gets the error, and a driver prepares again after it, now on a fresh copy (without
    /// this, each new client's prepare met the same stale copy until the server connection closed).
    ///
    /// When the client parsed the statement in this very batch, outside a transaction, the copy
    /// it was given is dropped and the batch runs again on a fresh one, unseen: PostgreSQL would
    /// have planned the client's Parse anew. Returns whether the error is handled that way.
    pub(super) fn describe_refused(
        &mut self,
        s: &mut Session,
        server: &mut ServerConn,
        hash: u64,
        code: &str,
    ) -> bool {
        let again = self.may_run_again(s) && self.rerun_describes();
        match code {
            STALE_PLAN if server.statements.server_name(hash).is_some() => {
                result_type_changed(s, server, hash);
                if !again {
                    server.statements.mark_stale(hash);
                    return false;
                }
                tracing::info!(database = %s.db.name, server_id = server.id,
                    "a statement a client just prepared met a stale server copy (DDL): preparing it again");
            }
            NO_SUCH_STATEMENT => {
                server.statements.forget_prepared();
                if !again {
                    return false;
                }
            }
            _ => return false,
        }
        self.prepare_afresh(s, server, hash);
        true
    }

    /// Whether the Describe at the front could still be run again (see `describe_refused`): its
    /// ParameterDescription is then held back until the statement's row description arrives.
    pub(super) fn may_run_describe_again(&self) -> bool {
        matches!(self.replan, Replan::Recording { described: true, .. } | Replan::Ready { described: true })
            && matches!(self.expected.front(), Some(Expect::Client(Reply::Describe { statement: Some(_) })))
    }

    /// Passes on a ParameterDescription held back by `may_run_describe_again`.
    pub(super) fn release_held_parameters(&mut self) {
        if let Some(held) = self.held_parameters.take() {
            self.to_client.extend_from_slice(&held);
        }
    }

    /// Drops the server's stale copy of `hash` and runs the recorded request again, which
    /// prepares it anew; the client's statements of that text take the new result type.
    fn prepare_afresh(&mut self, s: &mut Session, server: &mut ServerConn, hash: u64) {
        let now = s.shared.statement_epochs.current(hash);
        for stmt in s.statements.named.values().filter(|st| st.hash == hash) {
            stmt.epoch.store(now, std::sync::atomic::Ordering::Relaxed);
        }
        let stale = server.statements.server_name(hash);
        if stale.is_some() {
            server.statements.remove(hash);
        }
        self.run_again(s, server, stale);
    }

    /// Whether the failed request can run again unseen: it began a batch outside a transaction,
    /// every message of it the client sent was recorded (up to its Sync, with nothing sent after
    /// it; or no Sync yet, as drivers that Flush and wait send), and it has not run again already.
    /// (The status is the one before this batch: everything ahead of it has been answered.)
    fn may_run_again(&self, s: &Session) -> bool {
        let whole = match self.replan {
            Replan::Ready { .. } => self.expected.sync_is_last_after_front(),
            Replan::Recording { .. } => true,
            _ => false,
        };
        whole && s.status == TxnStatus::Idle
    }

    /// Whether the client learns the result type from the re-run before any row.
    fn rerun_describes(&self) -> bool {
        matches!(self.replan, Replan::Ready { described: true } | Replan::Recording { described: true, .. })
    }

    /// Runs the recorded request again after it failed (`may_run_again` said it may), closing the
    /// server's stale copy `close` first; the error is then hidden from the client.
    fn run_again(&mut self, s: &mut Session, server: &mut ServerConn, close: Option<Box<[u8]>>) {
        if matches!(self.replan, Replan::Recording { .. }) {
            // No Sync yet (the client flushed and waits): pgpilot's own ends the failed batch,
            // which changed nothing on the server, so it listens again.
            self.inject_sync();
        }
        if let Some(name) = close {
            // After the failed batch's Sync, when the server listens again.
            self.close_on_server(&name);
        }
        self.replan = Replan::Spent;
        self.expected.pop();
        drop(self.expected.skip_to_sync());
        self.expected.hide_front();
        let replay = std::mem::take(&mut server.replay);
        let limits = s.limits;
        // Recorded from whole messages that were handled once already: they handle again.
        for frame in pgpilot_wire::FrontendFrames::new(&replay, &limits) {
            let _ = self.client_message(s, server, frame.tag, frame.msg);
        }
        server.replay = replay;
        server.replay.clear();
    }

    /// Between transactions: deallocates the server copies found stale, so their next use
    /// prepares them afresh.
    pub(super) fn drop_stale_statements(&mut self, server: &mut ServerConn) {
        for hash in server.statements.take_stale() {
            if let Some(name) = server.statements.server_name(hash) {
                server.statements.remove(hash);
                self.inject_query(&format!("DEALLOCATE \"{}\"", String::from_utf8_lossy(&name)));
            }
        }
    }
}

/// The server's copy of `hash` has an outdated result type: a new generation of the statement
/// begins, so every other client that prepared it before is told at its next Bind.
fn result_type_changed(s: &Session, server: &ServerConn, hash: u64) {
    // Met inside a transaction, the change may be the transaction's own DDL, which may roll
    // back: other clients are not told (a copy of theirs that did change fails on its server,
    // and fresh copies are described before use).
    if s.status != TxnStatus::Idle {
        return;
    }
    let seen = server.statements.epoch(hash).unwrap_or(0);
    s.shared.statement_epochs.changed(hash, seen);
}

/// Whether a recorded request binds with a format per result column (more than one format code).
fn binds_formats_per_column(replay: &[u8], limits: &pgpilot_wire::Limits) -> bool {
    pgpilot_wire::FrontendFrames::new(replay, limits).any(|f| {
        f.tag == b'B'
            && frontend::parse_bind(f.body()).is_some_and(|b| frontend::bind_formats_per_column(b.rest))
    })
}

/// Whether a Parse (header included) prepares a named statement, the kind pgpilot prepares.
fn parses_named(msg: &[u8]) -> bool {
    msg.get(5..).and_then(frontend::parse_parse).is_some_and(|p| !p.name.is_empty())
}

/// Whether a Bind (header included) binds a named statement, the kind pgpilot prepares.
fn names_statement(msg: &[u8]) -> bool {
    msg.get(5..).and_then(frontend::parse_bind).is_some_and(|b| !b.statement.is_empty())
}

/// PostgreSQL's error for a prepared statement whose result type changed, with the file and
/// routine it names: drivers (asyncpg) recognise it by the routine, then prepare again.
pub(super) fn outdated_plan_error(out: &mut bytes::BytesMut) {
    static REVALIDATE: ErrorOrigin = ErrorOrigin { file: "plancache.c", routine: "RevalidateCachedQuery" };
    PgError::error(SqlState::FEATURE_NOT_SUPPORTED, "cached plan must not change result type")
        .with_origin(&REVALIDATE)
        .encode(out);
}
