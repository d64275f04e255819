//! Reads inside `BEGIN READ ONLY` transactions answered from the result cache, with a database's
//! `in_transactions = "read_only"`. A READ COMMITTED statement sees every commit made before it
//! started, and a read-only transaction cannot have written anything of its own, so such a read may
//! be answered, and filled, as if it ran alone. Any other statement in the transaction (a SET LOCAL,
//! SET TRANSACTION, a write attempt...) ends this for the rest of the transaction.
//!
//! The flow steps out between requests, keeping its server, so the session can look the request up
//! (an asynchronous lookup that may wait for Redis or a fill); on a miss the flow resumes with the
//! request, on a hit it resumes waiting for the next one.

use pgpilot_sql::{IsolationLevel, TxnControl};
use pgpilot_wire::backend::TxnStatus;

use super::client::{Ending, Session};
use super::flow::Flow;
use crate::cache::Bypass;
use crate::config::cache::InTransactions;

impl Flow {
    /// Called with each client message at a request boundary: notes whether a transaction starting
    /// now may use the cache, and says whether to step out so the session looks this one up.
    pub(super) fn consult_cache(&mut self, s: &mut Session, msg: &[u8]) -> bool {
        if !self.cache_on
            || s.mode != crate::config::PoolMode::Transaction
            || !matches!(msg.first(), Some(b'Q' | b'P' | b'B'))
        {
            return false;
        }
        count_bypassed_read(s, msg);
        if self.unsynced || s.db.cache.settings.load().in_transactions != InTransactions::ReadOnly {
            return false;
        }
        // With answers outstanding the status may be out of date: decide nothing then.
        let settled = !self.expected.client_pending();
        let Some(sql) = s.text_of(msg).and_then(|t| std::str::from_utf8(t).ok()) else {
            s.read_only_txn = false;
            return false;
        };
        if s.status == TxnStatus::Idle {
            s.read_only_txn = settled && begins_read_only_read_committed(s, sql);
            return false;
        }
        if !s.read_only_txn {
            return false;
        }
        if !only_reads(s, sql) {
            s.read_only_txn = false;
            return false;
        }
        self.expected.is_empty()
            && s.status == TxnStatus::InTransaction
            && !std::mem::take(&mut self.consulted)
    }
}

impl Session {
    /// The flow stepped out of a read-only transaction to look `h`'s request up: answer it from the
    /// cache if it is there, else send it on, on the server the transaction holds.
    pub(super) async fn resume_in_transaction(
        &mut self,
        h: pgpilot_wire::frame::Header,
    ) -> Result<(), Ending> {
        if !self.answer_from_cache(h).await? {
            self.consulted = true;
        }
        super::flow::run_attached(self, false).await
    }
}

/// Counts a SELECT the cache does not see because the session keeps its server (such reads never
/// reach the lookup): inside a transaction the cache does not serve (`in_transaction`), or outside
/// one in a session that changed its identity or is pinned. One count per execution: a Query, a
/// Parse of the unnamed statement (its Bind follows), or a Bind of a named statement.
fn count_bypassed_read(s: &Session, msg: &[u8]) {
    let reason = match s.status {
        TxnStatus::Idle if s.cache_identity_changed => Bypass::Identity,
        TxnStatus::Idle if s.pinned.is_some() => Bypass::PinnedSession,
        TxnStatus::Idle => return,
        _ if s.read_only_txn => return,
        _ => Bypass::InTransaction,
    };
    let counted = match msg.first() {
        Some(b'Q') => true,
        Some(b'P') => pgpilot_wire::frontend::parse_parse(msg.get(5..).unwrap_or_default())
            .is_some_and(|p| p.name.is_empty()),
        _ => pgpilot_wire::frontend::parse_bind(msg.get(5..).unwrap_or_default())
            .is_some_and(|b| !b.statement.is_empty()),
    };
    let read = || {
        s.text_of(msg)
            .and_then(|t| std::str::from_utf8(t).ok())
            // Any SELECT counts (count(*) too), not only those the cache might serve.
            .is_some_and(|sql| pgpilot_sql::quick_look(sql).first_word == pgpilot_sql::FirstWord::Select)
    };
    if counted && read() {
        s.shared.cache.stats.bypass(reason);
    }
}

/// A statement that reads and changes nothing of the session or the transaction.
fn only_reads(s: &Session, sql: &str) -> bool {
    let quick = pgpilot_sql::quick_look(sql);
    if quick.plain_select {
        return true;
    }
    let stmt = s.shared.classifier.classify(sql);
    stmt.parse_error.is_none()
        && !stmt.writes
        && stmt.transaction.is_none()
        && stmt.settings.is_empty()
        && stmt.session_effects.is_empty()
}

/// `BEGIN READ ONLY` / `START TRANSACTION READ ONLY`, alone, at READ COMMITTED (stated, or the
/// session's default as far as pgpilot knows it).
pub(super) fn begins_read_only_read_committed(s: &Session, sql: &str) -> bool {
    let quick = pgpilot_sql::quick_look(sql);
    if quick.plain_select || quick.plain_write {
        return false;
    }
    let stmt = s.shared.classifier.classify(sql);
    let Some(TxnControl::Begin(options)) = &stmt.transaction else { return false };
    let default_read_committed = || {
        s.params.get("default_transaction_isolation").is_none_or(|v| {
            let v = v.trim_matches('\'').to_ascii_lowercase();
            v == "read committed" || v == "read uncommitted"
        })
    };
    stmt.statement_count == 1
        && options.read_only == Some(true)
        && match options.isolation {
            None => default_read_committed(),
            Some(level) => matches!(level, IsolationLevel::ReadCommitted | IsolationLevel::ReadUncommitted),
        }
}
