//! `BEGIN READ ONLY` sent on its own while reads are split (asyncpg's `transaction(readonly=True)`,
//! psycopg's read-only connections, psql line by line). Which server such a transaction belongs on
//! depends on what runs in it: a standby cannot read an unlogged table, give a transaction id,
//! LISTEN or run `SET TRANSACTION READ WRITE`, and a transaction cannot change servers once begun.
//! So pgpilot answers the BEGIN itself and sends it later, in front of the transaction's first
//! statement, to the server that statement is routed to. A transaction that ends before running
//! anything never takes a server at all.

use pgpilot_sql::TxnControl;
use pgpilot_wire::backend::TxnStatus;
use pgpilot_wire::frame::Header;
use pgpilot_wire::frontend;

use super::client::{Ending, Session};
use super::expect::{Expect, Reply};
use super::flow::{Flow, ParamSync};
use crate::config::PoolMode;
use crate::routing::{SessionRoute, Verdict};

impl Session {
    /// Answers a lone read-only BEGIN (a Query) itself, keeping it for the transaction's first
    /// statement, or a COMMIT or ROLLBACK of a transaction so begun that ran nothing. True when
    /// the Query at the front of the buffer (header `h`) was answered.
    pub(super) async fn begin_deferred(&mut self, h: Header) -> Result<bool, Ending> {
        if h.tag != b'Q' {
            return Ok(false);
        }
        if self.deferred_begin.is_some() {
            return self.end_deferred_transaction(h).await;
        }
        let text = frontend::parse_query(&self.buf[5..h.total]).unwrap_or_default();
        if !may_begin(text) || !self.may_defer_begin() {
            return Ok(false);
        }
        let msg: Box<[u8]> = self.buf[..h.total].into();
        let Some(sql) = self.deferrable_begin(&msg) else { return Ok(false) };
        let read_committed = super::txn_cache::begins_read_only_read_committed(self, &sql);
        self.deferred_begin = Some(msg);
        self.status = TxnStatus::InTransaction;
        // The result cache may answer this transaction's reads as it would on a server.
        self.read_only_txn = read_committed
            && self.db.cache.settings.load().in_transactions
                == crate::config::cache::InTransactions::ReadOnly;
        // The tag PostgreSQL gives: START TRANSACTION for that spelling.
        let tag = if first_word_is(sql.as_bytes(), b"start") { "START TRANSACTION" } else { "BEGIN" };
        self.answer_locally(h.total, tag).await.map(|()| true)
    }

    /// Splitting is on for this client and nothing holds it to a server.
    fn may_defer_begin(&self) -> bool {
        self.mode == PoolMode::Transaction
            && self.status == TxnStatus::Idle
            && self.pinned.is_none()
            && self.route != SessionRoute::Primary
            && self.db.splits_reads()
    }

    /// The text of `msg` when it is a Query of one BEGIN / START TRANSACTION that routing would
    /// send to a replica (read only, not serializable, no hint naming the primary or a replica
    /// group).
    fn deferrable_begin(&mut self, msg: &[u8]) -> Option<String> {
        let sql = std::str::from_utf8(frontend::parse_query(&msg[5..])?).ok()?;
        let stmt = self.shared.classifier.classify(sql);
        let lone_begin = stmt.statement_count == 1 && matches!(stmt.transaction, Some(TxnControl::Begin(_)));
        let to_replica = lone_begin && matches!(self.verdict_of(msg), Verdict::Read { tag: None });
        to_replica.then(|| sql.to_string())
    }

    /// A COMMIT or ROLLBACK (no AND CHAIN) of a deferred transaction: nothing ran, so nothing
    /// needs a server; pgpilot's own settings changed in it are kept or undone as PostgreSQL does.
    async fn end_deferred_transaction(&mut self, h: Header) -> Result<bool, Ending> {
        let text = frontend::parse_query(&self.buf[5..h.total]).and_then(|t| std::str::from_utf8(t).ok());
        let Some(sql) = text else { return Ok(false) };
        let stmt = self.shared.classifier.classify(sql);
        let (tag, rolled_back) = match stmt.transaction {
            _ if stmt.statement_count != 1 => return Ok(false),
            Some(TxnControl::Commit { chain: false }) => ("COMMIT", false),
            Some(TxnControl::Rollback { chain: false }) => ("ROLLBACK", true),
            _ => return Ok(false),
        };
        self.deferred_begin = None;
        self.read_only_txn = false;
        if let Some((route, cache_off)) = self.pgpilot_settings_before.take() {
            if rolled_back {
                (self.route, self.cache_off) = (route, cache_off);
            }
        }
        self.status = TxnStatus::Idle;
        self.answer_locally(h.total, tag).await.map(|()| true)
    }
}

/// Sends the client's deferred BEGIN ahead of its request, which waits for it as for settings.
pub(super) fn inject_deferred_begin(s: &mut Session, flow: &mut Flow) {
    if let Some(begin) = s.deferred_begin.take() {
        flow.to_server.extend_from_slice(&begin);
        flow.expected.push(Expect::Injected(Reply::DeferredBegin));
        flow.param_sync = ParamSync::Waiting;
    }
}

/// Whether `text` starts with BEGIN or START (after comments): a cheap test, so that other
/// Queries are not classified here.
fn may_begin(text: &[u8]) -> bool {
    first_word_is(text, b"begin") || first_word_is(text, b"start")
}

/// Whether the statement's first word (after comments) starts with `word`, in any case.
fn first_word_is(text: &[u8], word: &[u8]) -> bool {
    let text = super::function_ddl::skip_comments(text);
    text.len() >= word.len() && text[..word.len()].eq_ignore_ascii_case(word)
}
