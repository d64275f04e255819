//! Server messages on their way to the client: matched against the expectation queue, so answers
//! to pgpilot's own messages are dropped, answers pgpilot gives itself appear in order, and the
//! effects of a request (SET, PREPARE, DISCARD, pinning) count once the server has accepted it.

use pgpilot_sql::{SetAction, SetCommand, SetScope};
use pgpilot_wire::backend::{self, parse_parameter_status, TxnStatus};
use pgpilot_wire::error::ErrorFields;
use pgpilot_wire::{PgError, SqlState};

use super::params::{is_reported, SessionReset};
use super::route::is_parse_setting;

use super::client::Session;
use super::expect::{
    Batch, BoundCopy, CursorChange, Expect, OnSkip, Reply, SqlStatementChange, UnnamedBefore,
};
use super::flow::Flow;
use crate::config::PoolMode;
use crate::pool::ServerConn;

impl Flow {
    /// Handles one whole server message at `server.buf[start..end]`.
    pub(super) fn server_message(
        &mut self,
        s: &mut Session,
        server: &mut ServerConn,
        start: usize,
        end: usize,
    ) {
        let tag = server.buf[start];
        let injected = self.expected.front_is_injected();
        if !injected && self.capture.is_some() {
            self.capture_message(s, &server.buf[start..end]);
        }
        match tag {
            b'S' => {
                if let Some((k, v)) = parse_parameter_status(&server.buf[start + 5..end]) {
                    server.params.report(k, v);
                    if !injected {
                        s.params.report(k, v);
                        if k == "application_name" {
                            *s.reg.info.application_name.lock() = std::sync::Arc::from(v);
                            // A tag rule on the name follows the name the client sets later too.
                            s.find_tag();
                        }
                    }
                }
                // pgpilot's own statements only bring the server to the client's values: the
                // client is told too (after a RESET it was told the server's own default).
                self.to_client.extend_from_slice(&server.buf[start..end]);
                if injected {
                    self.settings_told += end - start;
                }
                return;
            }
            b'N' if injected => return,
            b'N' | b'E' if self.server_ending_between_transactions(s) => {
                self.server_ended_idle = true;
                let e = ErrorFields::parse(&server.buf[start + 5..end]);
                tracing::info!(server_id = server.id, code = %e.code, message = %e.message, "a pooled server connection is closing between transactions; the client goes on with another");
                return;
            }
            b'N' | b'A' => {
                self.to_client.extend_from_slice(&server.buf[start..end]);
                return;
            }
            _ => {}
        }
        self.emit_passive(s);
        if self.expected.is_empty() {
            // Nothing was asked: pass it on rather than lose it (it can only be an error before closing).
            self.to_client.extend_from_slice(&server.buf[start..end]);
            self.note_server_fatal(&server.buf[start..end]);
            return;
        }
        if tag == b't' && !injected && self.may_run_describe_again() {
            self.held_parameters = Some(server.buf[start..end].into());
            return;
        }
        if tag != b'E' {
            self.release_held_parameters();
        }
        match tag {
            b'E' => return self.server_error(s, server, start, end),
            b'G' if !self.expected.copy_in_started() => self.copy_in_open = true,
            // The client ended the COPY already (pipelined), and the Syncs it sent before that
            // were ignored: an extended-protocol COPY then waits for one more.
            b'G' if self.expected.ready_owed() == 0 => self.unsynced = true,
            b'C' => {
                let tag = &server.buf[start + 5..end];
                if let Some(observed) = self.expected.front_observed() {
                    Flow::observe_rows(observed, tag);
                }
                if !injected && matches!(tag, b"PREPARE\0" | b"DEALLOCATE\0" | b"DEALLOCATE ALL\0") {
                    self.expected.note_sql_change_run();
                }
                if !injected && matches!(tag, b"COMMIT\0" | b"ROLLBACK\0") {
                    self.ended_by_rollback = tag == b"ROLLBACK\0";
                    self.commit_seen |= tag == b"COMMIT\0";
                    self.rollback_seen |= tag == b"ROLLBACK\0";
                    self.rollback_in_request |= tag == b"ROLLBACK\0";
                }
            }
            b'D' if injected => match self.expected.front() {
                Some(Expect::Injected(Reply::Settings(read))) => {
                    let values = crate::pool::check::data_row(&server.buf[start + 5..end]);
                    self.resync_params |= read_back_settings(s, server, read, values.unwrap_or_default());
                }
                Some(Expect::Injected(Reply::PinCheck)) => {
                    let values = crate::pool::check::data_row(&server.buf[start + 5..end]);
                    if values.is_some_and(|v| matches!(v.first(), Some(Some(held)) if held == "f")) {
                        unpin(s, "its server holds nothing of its session any more");
                    }
                }
                _ => {}
            },
            b'T' | b'n' if injected => {
                if let Some(&Expect::Injected(Reply::CheckDescribe { hash })) = self.expected.front() {
                    let shape = match tag {
                        b'T' => super::row_shape::row_shape(&server.buf[start + 5..end]),
                        _ => super::row_shape::NO_ROWS,
                    };
                    server.statements.set_shape(hash, shape);
                    self.note_copy_shape(s, hash);
                }
            }
            b'T' => {
                if let Some(Expect::Client(
                    Reply::Describe { statement: Some(stmt) } | Reply::DescribePortal { statement: stmt },
                )) = self.expected.front()
                {
                    let stmt = stmt.clone();
                    let shape = super::row_shape::row_shape(&server.buf[start + 5..end]);
                    super::row_shape::record_described(server, &stmt, shape);
                    self.note_copy_shape(s, stmt.hash);
                }
            }
            _ => {}
        }
        if !injected {
            self.to_client.extend_from_slice(&server.buf[start..end]);
        }
        let ends = self.expected.front().and_then(Expect::reply).is_some_and(|r| r.ends_with(tag));
        if ends {
            let entry = self.expected.pop().expect("front exists");
            match entry {
                _ if tag == b'Z' => self.ready(s, server, entry, server.buf[start + 5]),
                Expect::Injected(Reply::Parse { hash: Some(h), .. }) => s.statements.text_accepted(h),
                Expect::Client(Reply::Execute(Some(observed))) if tag == b's' => {
                    self.observe_suspended(observed)
                }
                Expect::Client(Reply::Execute(Some(observed))) => self.observed_done(observed),
                _ => {}
            }
        }
        self.emit_passive(s);
    }

    /// Feeds the fill of a cache miss with the first answer of the attachment.
    fn capture_message(&mut self, s: &Session, msg: &[u8]) {
        let Some(fill) = self.capture.as_mut() else { return };
        match fill.capture(msg) {
            crate::cache::Captured::Continue => {}
            crate::cache::Captured::Abandon(why) => {
                s.shared.cache.stats.bypass(why);
                self.capture = None;
            }
            crate::cache::Captured::Complete => {
                let fill = self.capture.take().expect("checked above");
                // Outside a transaction, or inside one whose reads may use the cache (txn_cache.rs).
                if msg.get(5) == Some(&b'I') || (msg.get(5) == Some(&b'T') && s.read_only_txn) {
                    s.shared.cache.store(&s.db.name, &s.db.cache, *fill);
                }
            }
        }
    }

    /// Answers pgpilot gives itself, emitted once everything before them has been answered.
    pub(super) fn emit_passive(&mut self, s: &Session) {
        loop {
            match self.expected.front() {
                Some(Expect::Synthetic { bytes, .. }) => self.to_client.extend_from_slice(bytes),
                Some(Expect::SyntheticCommand(tag)) => {
                    backend::command_complete(&mut self.to_client, tag);
                    backend::ready_for_query(&mut self.to_client, s.status);
                }
                Some(Expect::SyntheticError(error)) => {
                    error.encode(&mut self.to_client);
                    backend::ready_for_query(&mut self.to_client, s.status);
                }
                Some(Expect::CopyBoundary) => {}
                _ => return,
            }
            self.expected.pop();
        }
    }

    /// Whether a notice or error the server sends now, with nothing asked of it, can only be its
    /// goodbye (pg_terminate_backend or a shutdown reaching a pooled connection, maybe before the
    /// client's request was even sent) and concerns the pool alone: transaction pooling, the
    /// client between transactions with nothing in flight. Passed on, it was a FATAL followed by
    /// answers from the next server (asyncpg failed on the rows after it).
    fn server_ending_between_transactions(&self, s: &Session) -> bool {
        self.expected.is_empty() && self.server_holds_nothing_of(s)
    }

    /// As [`Self::server_ending_between_transactions`], with pgpilot's settings sync the one
    /// answer awaited (the client's request waits behind it, unsent).
    fn server_ending_between_transactions_but_for_the_sync(&self, s: &Session) -> bool {
        self.expected.len() == 1 && self.server_holds_nothing_of(s)
    }

    /// Transaction pooling, the client between transactions, unpinned, no batch half sent: the
    /// server holds nothing of the client's that another could not give it.
    fn server_holds_nothing_of(&self, s: &Session) -> bool {
        !self.unsynced && s.mode == PoolMode::Transaction && s.pinned.is_none() && s.status == TxnStatus::Idle
    }

    /// The server ends the session itself (idle_in_transaction_session_timeout, an administrator's
    /// pg_terminate_backend): its FATAL, passed on, is the client's last word.
    fn note_server_fatal(&mut self, msg: &[u8]) {
        if msg.first() == Some(&b'E') {
            let severity = ErrorFields::parse(msg.get(5..).unwrap_or_default()).severity;
            self.server_said_fatal |= matches!(severity.as_str(), "FATAL" | "PANIC");
        }
    }

    fn server_error(&mut self, s: &mut Session, server: &mut ServerConn, start: usize, end: usize) {
        self.batch_failed = true;
        if self.own_request_failed(s, server, start, end) {
            return;
        }
        let survives = self.expected.front().and_then(Expect::reply).is_some_and(Reply::survives_error);
        if !self.tell_client_why(s, server, start, end) {
            return;
        }
        if survives {
            if let Some(observed) = self.expected.front_observed() {
                Flow::observe_error(observed, &server.buf[start + 5..end]);
            }
            return;
        }
        self.skip_to_sync(s, server, start, end);
    }

    /// A request pgpilot made of its own (a settings sync, a copy's check, a re-prepare) failed:
    /// handled here, true, or the error belongs to the client's request.
    fn own_request_failed(
        &mut self,
        s: &mut Session,
        server: &mut ServerConn,
        start: usize,
        end: usize,
    ) -> bool {
        let front = self.expected.front().expect("checked non-empty");
        let injected = matches!(front, Expect::Injected(_));
        let survives = front.reply().is_some_and(Reply::survives_error);
        if let Some(reply) = front.reply().filter(|r| injected && r.holds_request()) {
            let e = ErrorFields::parse(&server.buf[start + 5..end]);
            // The server ended (a restart, an administrator), or an earlier client's
            // statement_timeout cut the sync short before it was lifted (a timeout of a few
            // milliseconds on a busy machine, helper-151): nothing of the client's ran, so its
            // request moves to another server, a bounded number of times.
            let moves = matches!(reply, Reply::ParamSync)
                && (e.severity == "FATAL" || e.code == SqlState::QUERY_CANCELED.code())
                && s.retries < super::flow::MAX_RETRIES;
            if moves && self.server_ending_between_transactions_but_for_the_sync(s) {
                tracing::info!(server_id = server.id, code = %e.code, message = %e.message, "a server failed the session's settings before the client's request was sent; the client goes on with another");
                self.param_sync = super::flow::ParamSync::Moved;
                self.settings_unknown = true;
                return true;
            }
            let what = refused_preamble(reply);
            tracing::warn!(server_id = server.id, code = %e.code, message = %e.message, "the server refused {what}; closing the client and the server connection");
            let message = format!("pgpilot could not give {what} to a server connection: {}", e.message);
            let mut error = PgError::fatal(SqlState::from_server(&e.code), message);
            error.detail = Some(format!("The server answered SQLSTATE {}.", e.code));
            self.param_sync = super::flow::ParamSync::Failed(error);
            self.settings_unknown = true;
            return true;
        }
        let checking = self.checking_copies
            && matches!(
                front,
                Expect::Injected(Reply::Parse { .. } | Reply::CheckDescribe { .. } | Reply::Close)
            );
        if checking {
            let error = server.buf[start..end].to_vec();
            self.copy_check_failed(s, server, &error);
            return true;
        }
        if injected && survives {
            let e = ErrorFields::parse(&server.buf[start + 5..end]);
            tracing::warn!(server_id = server.id, code = %e.code, message = %e.message, "a statement pgpilot ran for a client failed");
            let replayed = matches!(front, Expect::Injected(Reply::Query(b)) if b.replays_sql_prepare);
            if replayed && e.severity == "ERROR" {
                self.replay_error = Some(server.buf[start..end].into());
            }
            // What the server holds is now unknown: it goes to no other client.
            server.params = Default::default();
            self.settings_unknown = true;
            return true;
        }
        false
    }

    /// Puts the error the client is owed in its stream: the server's, or what PostgreSQL would
    /// have said had it held the client's own statements. False when a statement prepared again
    /// took the failed request over.
    fn tell_client_why(
        &mut self,
        s: &mut Session,
        server: &mut ServerConn,
        start: usize,
        end: usize,
    ) -> bool {
        let front = self.expected.front().expect("checked non-empty");
        let code = ErrorFields::parse(&server.buf[start + 5..end]).code;
        // A format per column of the row type the client learned, refused by a copy just prepared
        // from its text: PostgreSQL, holding the client's own copy, would have said 0A000, which
        // drivers answer by preparing again (pgJDBC does not for 08P01).
        let copy = match front {
            Expect::Client(Reply::Bind { copy, .. }) => Some(*copy),
            _ => None,
        };
        let reshaped = code == "08P01" && copy == Some(BoundCopy::Fresh { per_column_formats: true });
        let outdated = reshaped || copy == Some(BoundCopy::Outdated);
        let (duplicate, refused_as_failed) = match front {
            Expect::Client(Reply::DuplicateParse { name, checked_in_failed_transaction }) => {
                let refused = *checked_in_failed_transaction && s.status == TxnStatus::Failed;
                (Some(String::from_utf8_lossy(name).into_owned()), refused)
            }
            _ => (None, false),
        };
        let described = match front {
            Expect::Client(Reply::Describe { statement }) => statement.as_ref().map(|st| st.hash),
            _ => None,
        };
        // The statement whose server name the error may quote.
        let named = match front {
            Expect::Client(Reply::Bind { statement: Some(hash), .. }) => Some(*hash),
            _ => described,
        };
        let missing = named.filter(|_| code == "26000");
        if let Expect::Client(Reply::Bind { statement: Some(hash), .. }) = *front {
            if !reshaped && self.bind_refused(s, server, hash, &code, outdated) {
                self.batch_failed = false;
                return false;
            }
        }
        if let Some(hash) = described {
            if self.describe_refused(s, server, hash, &code) {
                self.held_parameters = None;
                self.batch_failed = false;
                return false;
            }
        }
        self.release_held_parameters();
        // The client must see why its request failed, even when pgpilot's own Parse was what failed.
        if refused_as_failed {
            // PostgreSQL checks the transaction before the name.
            in_failed_transaction().encode(&mut self.to_client);
        } else if let Some(error) = self.replay_error.take().filter(|_| code == "26000" || code == "25P02") {
            // EXECUTE of a statement pgpilot failed to prepare again on this server: the client
            // is owed why that PREPARE failed, as PostgreSQL's EXECUTE would have said it.
            self.to_client.extend_from_slice(&error);
        } else if let Some(name) = duplicate {
            PgError::error(
                SqlState::DUPLICATE_PREPARED_STATEMENT,
                format!("prepared statement \"{name}\" already exists"),
            )
            .encode(&mut self.to_client);
        } else if outdated && code == "26000" && s.status == TxnStatus::Failed {
            // The outdated Bind went under a name never prepared, which the server looks up
            // before it sees the transaction failed: PostgreSQL would have said 25P02.
            in_failed_transaction().encode(&mut self.to_client);
        } else if reshaped || (outdated && code == "26000") {
            // The outdated Bind went under a name never prepared: its 26000 stands for 0A000.
            super::replan::outdated_plan_error(&mut self.to_client);
        } else if let Some(name) = missing.and_then(|hash| self.client_name_of(s, hash)) {
            // The server names pgpilot's copy of the statement; the client knows its own name.
            PgError::error(
                SqlState::UNDEFINED_PREPARED_STATEMENT,
                format!("prepared statement \"{name}\" does not exist"),
            )
            .encode(&mut self.to_client);
        } else if let Some(error) = self.check_error.take().filter(|_| code == "25P02") {
            self.to_client.extend_from_slice(&error);
        } else if self.cancel_sent.is_some() && code == "57014" {
            // pgpilot's cancel, not the user's: say so, as PostgreSQL's statement_timeout does.
            PgError::error(SqlState::QUERY_CANCELED, "canceling statement due to query_timeout")
                .encode(&mut self.to_client);
        } else if let Some(renamed) = named.and_then(|h| self.with_client_name(s, h, &server.buf[start..end]))
        {
            // "bind message supplies 0 parameters, but prepared statement "s1" requires 1".
            self.to_client.extend_from_slice(&renamed);
        } else if let Some(renamed) = without_foreign_prefix(&server.buf[start..end]) {
            self.to_client.extend_from_slice(&renamed);
        } else {
            self.to_client.extend_from_slice(&server.buf[start..end]);
            self.note_server_fatal(&server.buf[start..end]);
        }
        true
    }

    /// Extended protocol: the failed message's request and everything up to Sync, which the
    /// server skips, are undone from what the session and server are thought to hold.
    fn skip_to_sync(&mut self, s: &mut Session, server: &mut ServerConn, start: usize, end: usize) {
        if std::mem::take(&mut self.copy_in_open) {
            // COPY IN failed before the client ended it: the server ignored the Syncs sent during
            // it (dropped from the queue when it began) and waits for the client's next one, so it
            // is not clean until that is answered (pg8000's failed COPY left its server, given to
            // another client, discarding everything).
            self.unsynced = true;
        }
        let failed = self.expected.pop();
        if let Some(Expect::Injected(Reply::Parse { hash: Some(h), .. })) = failed {
            s.statements.text_refused(h);
        }
        // PostgreSQL drops the unnamed statement before it parses the new one: a Parse of it that
        // failed (not one skipped) leaves none.
        let unnamed_parse_failed = matches!(failed, Some(Expect::Client(Reply::UnnamedParse(_))));
        let mut undone: Vec<Expect> = failed.into_iter().chain(self.expected.skip_to_sync()).collect();
        // A statement that failed at Parse or Bind counts as failed too, like one failing at Execute.
        let first_execute = undone.iter().position(|e| matches!(e, Expect::Client(Reply::Execute(Some(_)))));
        if let Some(Expect::Client(Reply::Execute(Some(mut observed)))) =
            first_execute.map(|i| undone.remove(i))
        {
            Flow::observe_error(&mut observed, &server.buf[start + 5..end]);
            self.observed_done(observed);
        }
        // Undone last first: a Close and a Parse of one name in the request leave what was there
        // before both, as the server, which ran neither, has it.
        // A change to the unnamed statement the client made after the Sync (a Close, a Parse)
        // stands: the state undone to becomes what that one undoes to.
        let mut skipped = Vec::new();
        for entry in undone.into_iter().rev() {
            match entry {
                Expect::Client(Reply::UnnamedParse(UnnamedBefore::Was(was)) | Reply::UnnamedClose(was)) => {
                    if let Err(was) = self.expected.pass_unnamed_before(was) {
                        s.unnamed = was;
                    }
                }
                Expect::Client(Reply::UnnamedParse(UnnamedBefore::Same)) => {}
                entry => skipped.extend(forget(s, server, entry)),
            }
        }
        if unnamed_parse_failed && self.expected.pass_unnamed_before(None).is_err() {
            s.unnamed = None;
        }
        // Bounded: only the latest few matter to the Binds right behind them.
        for name in skipped.into_iter().rev() {
            if self.skipped_names.len() == 8 {
                self.skipped_names.remove(0);
            }
            self.skipped_names.push(name);
        }
        // Messages the client sends from now until its Sync are skipped too (pipelines that Flush
        // rather than Sync between statements): none of them may be waited for.
        self.server_skipping = !self.expected.front().and_then(Expect::reply).is_some_and(Reply::is_sync);
    }

    /// The server's message `msg` with pgpilot's name of statement `hash` replaced by the
    /// client's, when it quotes it.
    fn with_client_name(&self, s: &Session, hash: u64, msg: &[u8]) -> Option<Vec<u8>> {
        let ours = format!("\"{}\"", crate::pool::statements::server_name(hash));
        if !msg.windows(ours.len()).any(|w| w == ours.as_bytes()) {
            return None;
        }
        let theirs = format!("\"{}\"", self.client_name_of(s, hash)?);
        replaced_in_message(msg, ours.as_bytes(), theirs.as_bytes())
    }

    /// The name under which the client knows the statement with this hash (prepared, or whose
    /// Parse the server skipped just before).
    fn client_name_of(&self, s: &Session, hash: u64) -> Option<String> {
        let prepared = s.statements.named.iter().map(|(name, stmt)| (stmt.hash, name));
        let skipped = self.skipped_names.iter().rev().map(|(h, name)| (*h, name));
        let (_, name) = prepared.chain(skipped).find(|(h, _)| *h == hash)?;
        Some(String::from_utf8_lossy(name).into_owned())
    }

    /// ReadyForQuery ended a Query, Sync or FunctionCall.
    fn ready(&mut self, s: &mut Session, server: &mut ServerConn, entry: Expect, status_byte: u8) {
        let status = TxnStatus::from_byte(status_byte).unwrap_or(TxnStatus::Idle);
        if status == TxnStatus::Idle && !self.suspended.is_empty() {
            self.observe_portals_closed();
        }
        let failed = std::mem::take(&mut self.batch_failed);
        if matches!(&entry, Expect::Injected(r) if r.holds_request())
            && !self.settings_unknown
            && !self.checking_copies
        {
            self.param_sync = super::flow::ParamSync::Done;
        }
        if matches!(entry, Expect::Injected(Reply::CheckSync)) {
            self.copies_checked();
        }
        let (client, reply) = match entry {
            Expect::Client(r) => (true, r),
            Expect::Injected(r) => (false, r),
            _ => return,
        };
        if !client {
            return;
        }
        self.check_error = None;
        self.replay_error = None;
        // A transaction that ended here ended by a rollback: its last COMMIT or ROLLBACK said
        // ROLLBACK, or it failed, in a request without a COMMIT (an implicit transaction).
        let rolled_back =
            status == TxnStatus::Idle && (self.ended_by_rollback || failed && !self.commit_seen);
        if status == TxnStatus::Idle {
            if let Some((route, cache_off)) = s.pgpilot_settings_before.take() {
                if s.status == TxnStatus::Failed || self.ended_by_rollback {
                    (s.route, s.cache_off) = (route, cache_off);
                }
            }
            self.ended_by_rollback = false;
        }
        s.status = status;
        if status == TxnStatus::Idle {
            // A local path ended; a session-level one is recorded by now, or still to be read back
            // (a SET in the transaction that just committed), and unknown until then: the
            // client's next statement may come before the answer.
            s.search_path_in_flux =
                self.settings_to_read.iter().any(|n| n.eq_ignore_ascii_case("search_path"));
            s.parse_settings_in_flux = self.settings_to_read.iter().any(|n| is_parse_setting(n));
            self.settle_provisional_shapes(server);
        }
        if status == TxnStatus::Idle && std::mem::take(&mut self.function_ddl) {
            s.db.want_functions();
        }
        self.requests += 1;
        let committed = std::mem::take(&mut self.commit_seen);
        if status == TxnStatus::Idle && self.invalidation != crate::cache::Invalidation::Nothing {
            // Before this ReadyForQuery reaches the client: no read that starts after the client
            // learns of the commit can be answered from a result read before it.
            let inv = std::mem::take(&mut self.invalidation);
            s.invalidate(&inv);
        } else if committed && self.invalidation != crate::cache::Invalidation::Nothing {
            // COMMIT AND CHAIN: committed, yet the transaction goes on. What was noted is
            // invalidated now and kept: writes sent behind the COMMIT are noted there too, and
            // commit only when the chained transaction does.
            s.invalidate(&self.invalidation.clone());
        }
        let now = self.server_activity;
        self.last_answer = now;
        if let Some(q) = self.query_started.take() {
            self.query_time_us += now.duration_since(q).as_micros() as u64;
            if self.expected.ready_owed() > 0 {
                self.query_started = Some(now);
            }
        }
        self.cancel_sent = None;
        let mut batch = match reply {
            Reply::Query(b) | Reply::Sync(b) | Reply::FunctionCall(b) => b,
            _ => Batch::default(),
        };
        if let Some(observed) = batch.observed.take() {
            self.observed_done(observed);
        }
        self.apply_batch(s, server, batch, Outcome { failed, rolled_back }, status);
        if status == TxnStatus::Idle && std::mem::take(&mut s.tell_reported) {
            self.tell_before_ready(s);
        }
        if status == TxnStatus::Idle && server.statements.has_stale() {
            self.drop_stale_statements(server);
        }
        if status == TxnStatus::Idle && self.expected.ready_owed() == 0 {
            if let Some(x) = self.xact_started.take() {
                server.pool().stats.transaction(now.duration_since(x).as_micros() as u64);
            }
            if s.mode == crate::config::PoolMode::Session || s.pinned.is_some() {
                self.record_stats(server);
            }
            s.reg.info.set_prepared(s.statements.len());
            // Released from here: the pool takes this as when it went idle.
            server.last_used = now;
        }
    }

    /// Effects of a finished request: PREPARE and DISCARD when they succeed, pinning at once.
    /// A setting a lone statement set outside a transaction is taken as written; otherwise what
    /// the server holds when the transaction ends is read back (savepoints, a ROLLBACK later in
    /// the same request, an error: the server knows what stuck).
    fn apply_batch(
        &mut self,
        s: &mut Session,
        server: &mut ServerConn,
        batch: Batch,
        outcome: Outcome,
        now: TxnStatus,
    ) {
        let failed = outcome.failed;
        if let Some(reason) = batch.pins {
            pin(s, reason);
        }
        if batch.may_end_pinned_state {
            s.pin_release.may_have_ended();
        }
        follow_hold_cursors(s, &batch.cursors, batch.discard_all, outcome, now);
        // A failed request keeps what its PREPAREs and DEALLOCATEs did before the error (they
        // are not undone with the transaction), for the client and on this server.
        let run = if failed { batch.sql_changes_run } else { batch.sql_changes.len() };
        for change in batch.sql_changes.into_iter().take(run) {
            apply_sql_change(s, server, change);
        }
        if !failed {
            if batch.discard_all {
                forget_all_statements(s, server);
            }
            if batch.reset_all {
                self.reset_to_login(s, server, SessionReset::ResetAll);
            }
            if batch.discard_all {
                self.reset_to_login(s, server, SessionReset::DiscardAll);
            }
        }
        let exact = batch.single_statement && !failed && now == TxnStatus::Idle;
        let set_config_as_written = exact && batch.set_config_runs;
        // Inside a transaction, or in a request that rolled back (`BEGIN; RESET x; ROLLBACK`), a
        // reset may not have held.
        let may_be_undone = now != TxnStatus::Idle || std::mem::take(&mut self.rollback_in_request);
        let settings = &batch.settings;
        for (i, cmd) in settings.iter().enumerate().filter(|(_, c)| c.scope == SetScope::Session) {
            let later = &settings[i + 1..];
            match &cmd.action {
                SetAction::ResetAll if !failed && !may_be_undone => {
                    self.reset_to_login(s, server, SessionReset::ResetAll);
                    keep_reported_set_later(s, server, later);
                }
                // Inside a transaction a reset may be undone by a ROLLBACK: what the server holds
                // once it ends tells (`check_reset_later`).
                SetAction::ResetAll if !failed => {
                    let names: Vec<Box<str>> =
                        s.params.iter().chain(server.params.iter()).map(|(n, _)| n.into()).collect();
                    for name in names.iter().filter(|n| !SessionReset::ResetAll.keeps(n) && !set_in(later, n))
                    {
                        self.check_reset_later(name);
                    }
                }
                // A SET later in the request decides (`RESET x; SET x = ...`).
                SetAction::Reset { name } | SetAction::SetDefault { name }
                    if !failed && set_in(later, name) => {}
                SetAction::Set { name, .. } | SetAction::SetDefault { name } | SetAction::Reset { name }
                    if !failed && name.eq_ignore_ascii_case("session_authorization") =>
                {
                    // It ends a SET ROLE too (unless a later statement set one): read the role back.
                    self.read_back_later("role");
                }
                SetAction::Reset { name } | SetAction::SetDefault { name } if !failed && may_be_undone => {
                    self.check_reset_later(name);
                }
                SetAction::Reset { name } | SetAction::SetDefault { name } if !failed => {
                    self.settings_to_read.retain(|n| !n.eq_ignore_ascii_case(name));
                    s.params.reset_to(name, &s.reset_params);
                    s.tell_reported |= is_reported(name);
                    // The server has its own default now (a reported one was just reported); a
                    // client that keeps it gets its login value back at the request's end.
                    server.params.apply(cmd);
                    self.resync_params = true;
                }
                // set_config may not have run (WHERE false, a CASE branch not taken) or have run
                // with a value computed at run time: the server says what it holds. A lone
                // `SELECT set_config('a', 'b', false)` ran as written: no need to ask.
                SetAction::SetConfig { name, .. } if !is_reported(name) && !set_config_as_written => {
                    s.search_path_in_flux |= name.eq_ignore_ascii_case("search_path");
                    self.read_back_later(name);
                }
                _ if exact => {
                    s.params.apply(cmd);
                    server.params.apply(cmd);
                }
                SetAction::Set { name, .. }
                    if !is_reported(name)
                        && !self.settings_to_read.iter().any(|n| n.eq_ignore_ascii_case(name)) =>
                {
                    // Until it is read back, the cache does not know the path.
                    s.search_path_in_flux |= name.eq_ignore_ascii_case("search_path");
                    self.settings_to_read.push(name.as_str().into());
                }
                _ => {}
            }
        }
        s.parse_settings_in_flux |= self.settings_to_read.iter().any(|n| is_parse_setting(n));
        // Not inside a batch the client is still sending: a Query there would run in its middle.
        if now == TxnStatus::Idle && !self.unsynced && !self.settings_to_read.is_empty() {
            let read = SettingsRead {
                names: std::mem::take(&mut self.settings_to_read),
                resets: std::mem::take(&mut self.resets_to_check),
            };
            self.inject_reply(&read.query(), Reply::Settings(Box::new(read)));
        }
        if now == TxnStatus::Idle && !self.unsynced && s.pin_release.take_due(s.pinned) {
            self.inject_reply(s.pin_release.query(), Reply::PinCheck);
        }
        // A client that keeps its server (session pooling, pinned) gets its login values back here:
        // no later attachment will sync them.
        let keeps_server = s.mode == crate::config::PoolMode::Session || s.pinned.is_some();
        if now == TxnStatus::Idle && !self.unsynced && keeps_server && std::mem::take(&mut self.resync_params)
        {
            super::flow::inject_param_sync(s, server, self);
        }
    }

    /// After a reset the server reported its own defaults, but the client's values are its login
    /// ones again: it is told them before this ReadyForQuery, as PostgreSQL tells them, since a
    /// driver encodes and escapes its next statement by what it was told last (client_encoding,
    /// standard_conforming_strings). The ReadyForQuery is the last message written.
    fn tell_before_ready(&mut self, s: &mut Session) {
        let at = self.to_client.len().saturating_sub(6);
        let ready = <[u8; 6]>::try_from(&self.to_client[at..]).ok().filter(|r| r[0] == b'Z');
        let Some(ready) = ready else {
            // Not found where expected: told with the next request, as before.
            s.tell_reported = true;
            return;
        };
        self.to_client.truncate(at);
        s.params.write_reported(&mut self.to_client);
        self.to_client.extend_from_slice(&ready);
    }

    /// A RESET of `name` that a ROLLBACK (or ROLLBACK TO) may undo: `name` is read back when the
    /// transaction ends, with the value a RESET gives there (pg_settings.reset_val). The same
    /// value means the reset held: the client is back to its login value (as PostgreSQL restores
    /// a startup packet's), which the next sync gives the server. Another means it was undone.
    fn check_reset_later(&mut self, name: &str) {
        if !self.resets_to_check.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            self.resets_to_check.push(name.into());
        }
        self.read_back_later(name);
    }

    /// Reads `name` back from the server once the request is done.
    fn read_back_later(&mut self, name: &str) {
        if !self.settings_to_read.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            self.settings_to_read.push(name.into());
        }
    }

    /// RESET ALL and DISCARD ALL: the client is back to the values it logged in with (PostgreSQL
    /// restores the startup packet's); the server to its own, which the next sync corrects. A role
    /// set with SET ROLE stays on both after RESET ALL, as PostgreSQL leaves it.
    fn reset_to_login(&mut self, s: &mut Session, server: &mut ServerConn, reset: SessionReset) {
        self.settings_to_read.retain(|n| reset.keeps(n));
        s.reset_pgpilot_settings();
        // The server reported its own defaults; the client's login values are told next time.
        s.tell_reported = true;
        let login = s.reset_params.clone();
        s.params.reset_to_login(&login, reset);
        server.params.after_reset(reset);
        self.resync_params = true;
    }
}

/// Whether `commands` set `name` for the session.
fn set_in(commands: &[SetCommand], name: &str) -> bool {
    commands.iter().any(|c| {
        c.scope == SetScope::Session
            && matches!(&c.action, SetAction::Set { name: n, .. } | SetAction::SetConfig { name: n, .. } if n.eq_ignore_ascii_case(name))
    })
}

/// After a RESET ALL, reported settings set again later in the same request (`RESET ALL; SET
/// application_name = ...`) have the value the server reported last, not the login one.
fn keep_reported_set_later(s: &mut Session, server: &ServerConn, later: &[SetCommand]) {
    for c in later.iter().filter(|c| c.scope == SetScope::Session) {
        if let SetAction::Set { name, .. } | SetAction::SetConfig { name, .. } = &c.action {
            if let Some(value) = server.params.get(name).filter(|_| is_reported(name)) {
                s.params.set(name, value);
            }
        }
    }
}

/// The row of a settings read-back: each value is now the client's and the server's.
fn read_back_settings(
    s: &mut Session,
    server: &mut ServerConn,
    read: &SettingsRead,
    values: Vec<Option<String>>,
) -> bool {
    let (current, reset_values) = values.split_at(read.names.len().min(values.len()));
    let mut reset_held = false;
    for (name, value) in read.names.iter().zip(current) {
        if name.eq_ignore_ascii_case("search_path") {
            s.search_path_in_flux = false;
        }
        server.params.read_back(name, value.as_deref());
        let reset_value = read.resets.iter().position(|n| n == name).and_then(|i| reset_values.get(i));
        match reset_value {
            // A reported setting keeps what the server reported when it was reset, which the
            // client was told then and has encoded and escaped by since (client_encoding): it
            // would learn its login value only after its next statement was written.
            Some(Some(_)) if is_reported(name) => {}
            Some(Some(r)) if Some(r) == value.as_ref() => {
                s.params.reset_to(name, &s.reset_params);
                reset_held = true;
            }
            _ => s.params.read_back(name, value.as_deref()),
        }
    }
    s.parse_settings_in_flux = false;
    reset_held
}

/// Settings pgpilot reads back from the server when a transaction ends: their values, and for
/// those a RESET in it may have reset, the value a RESET gives.
#[derive(Debug)]
pub struct SettingsRead {
    pub names: Vec<Box<str>>,
    pub resets: Vec<Box<str>>,
}

impl SettingsRead {
    /// One row: `current_setting` of each name, then `reset_val` of each reset one.
    fn query(&self) -> String {
        let literal = super::params::literal;
        let current = self.names.iter().map(|n| format!("pg_catalog.current_setting({}, true)", literal(n)));
        let reset = self.resets.iter().map(|n| {
            format!(
                "(SELECT reset_val FROM pg_catalog.pg_settings WHERE lower(name) = lower({}))",
                literal(n)
            )
        });
        format!("SELECT {}", current.chain(reset).collect::<Vec<_>>().join(", "))
    }
}

/// Undoes the bookkeeping of a request the server failed or skipped; returns the hash and client
/// name of a named statement whose Parse did not happen.
pub(super) fn forget(s: &mut Session, server: &mut ServerConn, entry: Expect) -> Option<(u64, Box<[u8]>)> {
    match entry {
        Expect::Client(Reply::Parse { client_name, hash })
        | Expect::Injected(Reply::Parse { client_name, hash }) => {
            if let Some(h) = hash {
                server.statements.remove(h);
            }
            let name = client_name?;
            s.statements.named.remove(&name).map(|stmt| (stmt.hash, name))
        }
        Expect::Synthetic { on_skip: OnSkip::Forget(name), .. } => {
            s.statements.named.remove(&name).map(|stmt| (stmt.hash, name))
        }
        Expect::Synthetic { on_skip: OnSkip::Restore(name, stmt), .. } => {
            s.statements.named.insert(name, stmt);
            None
        }
        _ => None,
    }
}

fn apply_sql_change(s: &mut Session, server: &mut ServerConn, change: SqlStatementChange) {
    match change {
        SqlStatementChange::Prepare(name, text) => {
            server.statements.sql.insert(name.clone(), text.clone());
            s.statements.sql.insert(name, text);
        }
        SqlStatementChange::Deallocate(name) => {
            server.statements.sql.remove(&name);
            s.statements.sql.remove(&name);
        }
        SqlStatementChange::DeallocateAll => forget_all_statements(s, server),
    }
}

/// DEALLOCATE ALL or DISCARD ALL ran on the server: none of the client's statements is left, nor
/// any of pgpilot's copies there.
fn forget_all_statements(s: &mut Session, server: &mut ServerConn) {
    s.statements.named.clear();
    s.statements.sql.clear();
    server.statements.clear();
}

/// PostgreSQL's refusal of a statement in a failed transaction.
fn in_failed_transaction() -> PgError {
    PgError::error(
        SqlState::IN_FAILED_SQL_TRANSACTION,
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

/// Ties the client to its server for the session (transaction pooling); a lasting reason replaces
/// a WITH HOLD cursor's, which ends with the cursors.
fn pin(s: &mut Session, reason: &'static str) {
    if s.mode != crate::config::PoolMode::Transaction {
        return;
    }
    s.pin_release.pinned_for(reason);
    if pgpilot_sql::pin_replaces(s.pinned, reason) {
        tracing::debug!(client = %s.reg.info.addr, reason, "client pinned to its server connection");
        s.pinned = Some(reason);
        *s.reg.info.pinned.lock() = Some(reason);
        crate::metrics::count_pin(reason);
    }
}

/// How a request ended.
#[derive(Clone, Copy)]
struct Outcome {
    /// One of its statements failed.
    failed: bool,
    /// The transaction it ended was rolled back.
    rolled_back: bool,
}

/// Keeps the client's WITH HOLD cursors. One declared in a transaction exists once that
/// transaction commits (a rollback drops it, and a DECLARE that failed made none); a CLOSE takes
/// effect at once (PostgreSQL does not undo it with its transaction). In a failed request a CLOSE
/// may not have run, and the cursor is kept. A client they alone pinned is let go once none is
/// open, outside a transaction.
fn follow_hold_cursors(
    s: &mut Session,
    changes: &[CursorChange],
    discard_all: bool,
    outcome: Outcome,
    now: TxnStatus,
) {
    for change in changes {
        match change {
            CursorChange::Declared(name) => s.hold_cursors_pending.push(name.clone()),
            CursorChange::Closed(name) if !outcome.failed => {
                s.hold_cursors.retain(|c| c != name);
                s.hold_cursors_pending.retain(|c| c != name);
            }
            CursorChange::ClosedAll if !outcome.failed => {
                s.hold_cursors.clear();
                s.hold_cursors_pending.clear();
            }
            _ => {}
        }
    }
    if discard_all && !outcome.failed {
        s.hold_cursors.clear();
        s.hold_cursors_pending.clear();
    }
    if now == TxnStatus::Idle {
        let declared = std::mem::take(&mut s.hold_cursors_pending);
        if !outcome.rolled_back {
            s.hold_cursors.extend(declared);
        }
    }
    if s.pinned == Some(pgpilot_sql::HOLD_CURSOR_PIN) && s.hold_cursors.is_empty() && now == TxnStatus::Idle {
        unpin(s, "its WITH HOLD cursors are closed");
    }
}

/// Lets a pinned client go: its server goes back to the pool when the request is done. Called
/// outside a transaction, when the server holds no cursor of the client's.
fn unpin(s: &mut Session, why: &'static str) {
    if s.pinned.take().is_some() {
        tracing::debug!(client = %s.reg.info.addr, why, "client no longer pinned to its server connection");
        *s.reg.info.pinned.lock() = None;
        s.pin_release = Default::default();
        // One taken as open after its savepoint was rolled back to is known gone now.
        s.hold_cursors.clear();
    }
}

/// What an injected Query the client's request waits behind gives the server, for the error
/// when the server refuses it.
fn refused_preamble(reply: &Reply) -> &'static str {
    match reply {
        Reply::DeferredBegin => "the transaction the client began",
        _ => "this session's settings",
    }
}

/// The server's error about a name sent under [`super::frontend::FOREIGN_NAME_PREFIX`], with the
/// name as the client gave it; None for any other message.
fn without_foreign_prefix(msg: &[u8]) -> Option<Vec<u8>> {
    let quoted = [b"\"", super::frontend::FOREIGN_NAME_PREFIX].concat();
    replaced_in_message(msg, &quoted, b"\"")
}

/// The backend message `msg` with every `from` in its body made `to`, its length set to match;
/// None when the body has no `from`.
fn replaced_in_message(msg: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    let mut rest = msg.get(5..)?;
    rest.windows(from.len()).position(|w| w == from)?;
    let mut out = msg[..5].to_vec();
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    let len = (out.len() - 1) as u32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    Some(out)
}
