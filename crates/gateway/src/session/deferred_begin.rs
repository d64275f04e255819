//! `BEGIN READ ONLY` sent on its own while reads are split (asyncpg's `transaction(readonly=True)`,
//! psycopg's read-only connections, psql line by line; as a Query or as an extended-protocol batch
//! of its own, as pgJDBC and psycopg send a prepared BEGIN). Which server such a transaction belongs on
//! depends on what runs in it: a standby cannot read an unlogged table, give a transaction id,
//! LISTEN or run `SET TRANSACTION READ WRITE`, and a transaction cannot change servers once begun.
//! So pgpilot answers the BEGIN itself and sends it later, in front of the transaction's first
//! statement, to the server that statement is routed to. A transaction that ends before running
//! anything never takes a server at all.

use bytes::{Buf, BytesMut};
use pgpilot_sql::TxnControl;
use pgpilot_wire::backend::{self, TxnStatus};
use pgpilot_wire::frame::Header;
use pgpilot_wire::frontend;

use super::client::{Ending, Session};
use super::expect::{Expect, Reply};
use super::flow::{Flow, ParamSync};
use crate::config::PoolMode;
use crate::routing::{SessionRoute, Verdict};

impl Session {
    /// Answers a lone read-only BEGIN (a Query, or a batch of its own) itself, keeping it for the
    /// transaction's first statement, or a COMMIT or ROLLBACK (a Query) of a transaction so begun
    /// that ran nothing. True when the request at the front of the buffer (header `h`) was answered.
    pub(super) async fn begin_deferred(&mut self, h: Header) -> Result<bool, Ending> {
        if matches!(h.tag, b'P' | b'B') {
            return self.begin_batch_deferred().await;
        }
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
        let tag = self.hold_begin(msg, &sql);
        self.answer_locally(h.total, tag).await.map(|()| true)
    }

    /// Keeps `begin` (a Query of `sql`) for the transaction's first statement, the client in a
    /// transaction from now on; the CommandComplete tag PostgreSQL gives it.
    fn hold_begin(&mut self, begin: Box<[u8]>, sql: &str) -> &'static str {
        let read_committed = super::txn_cache::begins_read_only_read_committed(self, sql);
        self.deferred_begin = Some(begin);
        self.status = TxnStatus::InTransaction;
        // The result cache may answer this transaction's reads as it would on a server.
        self.read_only_txn = read_committed
            && self.db.cache.settings.load().in_transactions
                == crate::config::cache::InTransactions::ReadOnly;
        // The tag PostgreSQL gives: START TRANSACTION for that spelling.
        if first_word_is(sql.as_bytes(), b"start") {
            "START TRANSACTION"
        } else {
            "BEGIN"
        }
    }

    /// A read-only BEGIN sent with the extended protocol (pgJDBC's and psycopg's prepared
    /// statements, node-postgres), in a batch of its own up to its Sync: held back as a Query's
    /// BEGIN is, and answered here. Sent to a replica at once, the transaction's first statement
    /// failed there when a standby refuses it (25006 for `txid_current()`). A statement the batch
    /// prepares is the client's, and prepared on the servers its later Binds run on.
    async fn begin_batch_deferred(&mut self) -> Result<bool, Ending> {
        let rewrites = self.pools.pools[self.db.primary_index()].settings.load().max_prepared > 0;
        if !rewrites || !self.may_defer_begin() {
            return Ok(false);
        }
        let Some(batch) = BeginBatch::read(self) else { return Ok(false) };
        let Some(text) = std::str::from_utf8(&batch.text).ok().filter(|t| may_begin(t.as_bytes())) else {
            return Ok(false);
        };
        let mut msg = BytesMut::with_capacity(text.len() + 6);
        frontend::query(&mut msg, text);
        let Some(sql) = self.deferrable_begin(&msg) else { return Ok(false) };
        if let Some(p) = &batch.parse {
            if p.name.is_empty() {
                self.remember_unnamed(&p.query, &p.param_types);
            } else {
                let stmt = self.new_statement(&p.query, &p.param_types);
                self.statements.named.insert(p.name.clone(), stmt);
            }
        }
        let tag = self.hold_begin(msg.to_vec().into(), &sql);
        let mut out = BytesMut::with_capacity(batch.answers.len() * 7 + 32);
        batch.answers.iter().for_each(|a| out.extend_from_slice(a));
        backend::command_complete(&mut out, tag);
        backend::ready_for_query(&mut out, self.status);
        self.count_input_without_server(&self.buf[..batch.len]);
        self.buf.advance(batch.len);
        self.write(&out).await.map(|()| true)
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

/// An extended-protocol batch whose only statement is a BEGIN: an optional Parse, then Bind,
/// Describe (optional, of the statement or the portal), Execute and Sync. The statement and the
/// portal take no parameters (a BEGIN has none); the portal is the unnamed one.
struct BeginBatch {
    /// The BEGIN's text.
    text: Box<[u8]>,
    /// What the batch's Parse prepares.
    parse: Option<ParsedBegin>,
    /// PostgreSQL's answers up to the Execute's CommandComplete, which follows them.
    answers: Vec<&'static [u8]>,
    /// Bytes of the batch, its Sync included.
    len: usize,
}

/// The statement a BEGIN batch parses, kept as the client's.
struct ParsedBegin {
    name: Box<[u8]>,
    query: Box<[u8]>,
    param_types: Box<[u8]>,
}

impl BeginBatch {
    /// The batch at the front of the client's input when it has arrived whole and is of that
    /// form; any other batch is sent on as it is.
    fn read(s: &Session) -> Option<BeginBatch> {
        let mut frames = pgpilot_wire::FrontendFrames::new(&s.buf, &s.limits);
        let mut batch = BeginBatch { text: Box::default(), parse: None, answers: Vec::new(), len: 0 };
        // The statement the batch parses or binds, by name; then whether Bind and Execute came.
        let mut statement: Option<&[u8]> = None;
        let (mut bound, mut executed) = (false, false);
        for (i, frame) in frames.by_ref().enumerate() {
            let body = frame.body();
            match frame.tag {
                b'P' if i == 0 => {
                    let p = frontend::parse_parse(body).filter(|p| p.param_types == [0, 0])?;
                    if !p.name.is_empty()
                        && (s.statements.named.contains_key(p.name) || s.is_sql_prepared(p.name))
                    {
                        // PostgreSQL refuses a name in use: the server says so.
                        return None;
                    }
                    batch.parse = Some(ParsedBegin {
                        name: p.name.into(),
                        query: p.query.into(),
                        param_types: p.param_types.into(),
                    });
                    batch.text = p.query.into();
                    statement = Some(p.name);
                    batch.answers.push(super::expect::PARSE_COMPLETE);
                }
                b'B' if !bound => {
                    let b = frontend::parse_bind(body)?;
                    let no_values = frontend::bind_values(b.rest).is_some_and(|v| v.is_empty());
                    if !b.portal.is_empty() || !no_values || statement.is_some_and(|n| n != b.statement) {
                        return None;
                    }
                    if statement.is_none() {
                        batch.text = statement_text(s, b.statement)?;
                        statement = Some(b.statement);
                    }
                    bound = true;
                    batch.answers.push(super::expect::BIND_COMPLETE);
                }
                b'D' if !executed => match frontend::parse_target(body)? {
                    (b'S', name) if statement == Some(name) => {
                        batch.answers.push(super::expect::NO_PARAMETERS);
                        batch.answers.push(super::expect::NO_DATA);
                    }
                    (b'P', b"") if bound => batch.answers.push(super::expect::NO_DATA),
                    _ => return None,
                },
                b'E' if bound && !executed => {
                    executed = frontend::parse_execute(body).is_some_and(|(portal, _)| portal.is_empty());
                    if !executed {
                        return None;
                    }
                }
                b'S' if executed => {
                    batch.len = frames.consumed();
                    return Some(batch);
                }
                _ => return None,
            }
        }
        None
    }
}

/// The text of the client's statement `name` (the unnamed one for an empty name).
fn statement_text(s: &Session, name: &[u8]) -> Option<Box<[u8]>> {
    if name.is_empty() {
        return s.unnamed.as_deref().map(|u| u.query.clone());
    }
    s.statements.named.get(name).map(|st| st.query.clone())
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
