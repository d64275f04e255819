//! Client messages on their way to the server: recorded in the expectation queue, and in
//! transaction pooling rewritten so named prepared statements and session state survive the
//! client moving between server connections.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::BytesMut;
use pgpilot_sql::{QuickLook, SessionEffect, SetAction, Statement};
use pgpilot_wire::{frontend, PgError, SqlState};

use super::client::{Ending, Session};
use super::expect::{
    Batch, BoundCopy, CursorChange, Expect, OnSkip, Reply, SqlStatementChange, CLOSE_COMPLETE, PARSE_COMPLETE,
};
use super::flow::Flow;
use super::params::SessionReset;
use crate::pool::statements::PreparedStatement;
use crate::pool::ServerConn;

impl Flow {
    /// Handles one whole client message (`msg` includes its five header bytes).
    pub(super) fn client_message(
        &mut self,
        s: &mut Session,
        server: &mut ServerConn,
        tag: u8,
        msg: &[u8],
    ) -> Result<(), Ending> {
        if self.server_skipping {
            match tag {
                b'S' => self.server_skipping = false,
                b'X' => {}
                // The server would discard it: so does pgpilot, noting nothing (a Parse sent there
                // never happened, for PostgreSQL and for the client's driver alike).
                _ => return Ok(()),
            }
        }
        let body = &msg[5..];
        self.describe_only = match tag {
            b'S' => true,
            b'P' | b'H' => self.describe_only,
            b'D' | b'C' => self.describe_only && body.first() == Some(&b'S'),
            _ => false,
        };
        self.record_for_replan(s, server, tag, msg);
        if matches!(tag, b'Q' | b'E' | b'F' | b'd') {
            if let Some(a) = s.attachment.as_mut() {
                a.executed = true;
            }
        }
        if s.attachment.as_ref().is_some_and(|a| a.prepared_only && !a.may_write) {
            // The batch placed as only preparing a read goes on here (asyncpg's Bind came before
            // the batch was ended): what it runs is judged as routing judges it.
            let look = s.routed_look;
            let may_write = match tag {
                b'B' | b'Q' => !matches!(s.verdict_of(msg), crate::routing::Verdict::Read { .. }),
                b'F' => true,
                _ => false,
            };
            s.routed_look = look;
            if let Some(a) = s.attachment.as_mut() {
                a.may_write = may_write;
            }
        }
        if self.cache_on {
            self.note_writes(s, tag, body);
        }
        match tag {
            b'Q' => return self.query(s, server, msg),
            b'S' => {
                self.unsynced = false;
                let batch = std::mem::take(&mut self.batch);
                self.start_request();
                self.to_server.extend_from_slice(msg);
                self.expected.push(Expect::Client(Reply::Sync(batch)));
                return Ok(());
            }
            b'P' if self.rewrite => return self.parse(s, server, body),
            b'P' => {
                let parse = frontend::parse_parse(body);
                self.note_extended_text(s, server, parse.as_ref().map(|p| p.query), false);
                if let Some(p) = parse {
                    self.observe_session_parse(s, p.name, p.query, p.param_types);
                }
            }
            b'B' if self.rewrite => return self.bind(s, server, body),
            b'E' if self.rewrite && self.execute_locally(s, body) => {
                self.unsynced = true;
                return Ok(());
            }
            b'D' if self.rewrite => return self.describe(s, server, body),
            b'C' if self.rewrite => return self.close(s, server, body),
            b'F' => {
                self.start_request();
                self.to_server.extend_from_slice(msg);
                let batch = Batch { pins: function_call_pin(body), ..Batch::default() };
                self.expected.push(Expect::Client(Reply::FunctionCall(batch)));
                return Ok(());
            }
            b'c' | b'f' => {
                if self.copy_in_open {
                    // The server ignored the Syncs sent during COPY: it ends the COPY's implicit
                    // transaction (or, after CopyFail, stops skipping) only at the client's next
                    // Sync, and is not clean until then.
                    self.copy_in_open = false;
                    self.unsynced = true;
                } else {
                    self.expected.push(Expect::CopyBoundary);
                }
            }
            b'B' => {
                if let Some(b) = frontend::parse_bind(body) {
                    self.observe_bind(s, b.statement, b.rest);
                }
            }
            b'C' => {
                if let Some((b'S', name)) = frontend::parse_target(body) {
                    s.statements.named.remove(name);
                }
            }
            // A Flush asks for answers as a Sync does (asyncpg prepares with Parse, Describe and
            // Flush): query_timeout counts from it.
            b'H' => self.start_request(),
            b'D' | b'E' | b'd' => {}
            b'X' => {
                self.client_terminated = true;
                return Ok(());
            }
            other => {
                return Err(Ending::Fatal(PgError::fatal(
                    SqlState::PROTOCOL_VIOLATION,
                    format!("invalid frontend message type {other}"),
                )))
            }
        }
        match tag {
            b'P' => {
                self.prepared.server_parses += 1;
                self.push_extended(Reply::Parse { client_name: None, hash: None })
            }
            b'B' => self.push_extended(Reply::Bind { statement: None, copy: BoundCopy::Kept }),
            b'D' => self.push_extended(Reply::Describe { statement: None }),
            b'C' => self.push_extended(Reply::Close),
            b'E' => {
                let observed = self.observe_execute(body);
                self.push_extended(Reply::Execute(observed))
            }
            _ => {}
        }
        self.to_server.extend_from_slice(msg);
        Ok(())
    }

    /// Notes what a statement passing to the server will invalidate when its transaction ends.
    fn note_writes(&mut self, s: &mut Session, tag: u8, body: &[u8]) {
        let inv = match tag {
            b'Q' => match frontend::parse_query(body) {
                Some(text) => s.invalidation_of_text(text),
                None => return,
            },
            b'P' => {
                let Some(p) = frontend::parse_parse(body) else { return };
                let inv = s.invalidation_of_text(p.query);
                if p.name.is_empty() {
                    self.unnamed_invalidation = Some(inv.clone());
                } else if !self.rewrite {
                    // Session pooling keeps no registry of its own: remember the text for Binds.
                    s.statements.named.insert(p.name.into(), PreparedStatement::new(p.query, p.param_types));
                }
                inv
            }
            b'B' => {
                let Some(b) = frontend::parse_bind(body) else { return };
                s.invalidation_of_bind(b.statement, self.unnamed_invalidation.as_ref())
            }
            b'F' => crate::cache::Invalidation::Everything,
            b'C' if !self.rewrite => {
                if let Some((b'S', name)) = frontend::parse_target(body) {
                    s.statements.named.remove(name);
                }
                return;
            }
            _ => return,
        };
        self.invalidation.merge(inv);
    }

    fn push_extended(&mut self, reply: Reply) {
        self.unsynced = true;
        self.expected.push(Expect::Client(reply));
    }

    /// A message PostgreSQL refuses as it is (a string without its NUL, a count of parameter types
    /// the body does not hold): sent on untouched, so that the server answers it with its own
    /// ERROR (08P01) and skips to Sync, and the session goes on as it would without pgpilot.
    fn pass_malformed(&mut self, tag: u8, body: &[u8], reply: Reply) {
        let start = pgpilot_wire::backend::begin(&mut self.to_server, tag);
        self.to_server.extend_from_slice(body);
        pgpilot_wire::backend::finish(&mut self.to_server, start);
        self.push_extended(reply);
    }

    /// Marks the start of a request that ends with ReadyForQuery, for timing.
    fn start_request(&mut self) {
        let arrived = self.arrived.take().unwrap_or(self.last_client_activity);
        if self.expected.ready_owed() == 0 || self.query_started.is_none() {
            self.query_started = Some(arrived);
        }
        if self.xact_started.is_none() && self.expected.ready_owed() == 0 {
            // The next transaction of an attachment that spans many (session pooling, pinned).
            self.xact_started = Some(self.last_client_activity);
        }
    }

    /// The classification of a statement that may change session state; None for the many that
    /// cannot (told by a quick scan, so plain statements with literals are never parsed here).
    /// `look`: routing's quick look at this same text, when it took one.
    fn classify(&self, s: &Session, sql: &str, look: Option<QuickLook>) -> Option<Arc<Statement>> {
        if !self.track_session {
            return None;
        }
        let look = look.unwrap_or_else(|| crate::shapes::look_of(sql));
        if !look.may_change_session() && !s.may_hide_effects(&look) {
            return None;
        }
        Some(s.shared.classifier.classify(sql))
    }

    /// SET and pinning effects of a statement sent with the extended protocol count at its Sync.
    /// `runs`: the statement runs in this batch (a Bind of it, or an unnamed Parse), so what it
    /// does to the server's prepared statements counts too.
    fn note_extended_text(
        &mut self,
        s: &mut Session,
        server: &mut ServerConn,
        text: Option<&[u8]>,
        runs: bool,
    ) {
        let Some(text) = text.filter(|_| self.track_session) else { return };
        self.note_looked_text(s, server, text, parsed_text_look(text), runs);
    }

    /// `note_extended_text` of a text whose quick look the caller has taken already.
    fn note_looked_text(
        &mut self,
        s: &mut Session,
        server: &mut ServerConn,
        text: &[u8],
        look: QuickLook,
        runs: bool,
    ) {
        if !self.track_session {
            return;
        }
        // A DROP of what pinned the client, perhaps.
        self.batch.may_end_pinned_state |= s.pinned.is_some() && (look.ddl_word || look.opaque);
        if !look.may_change_session() {
            return;
        }
        let sql = readable(text);
        let lossy = matches!(sql, Cow::Owned(_));
        let sql = s.for_reading(sql);
        let Some(stmt) = self.classify(s, &sql, Some(look)) else { return };
        s.note_search_path(&stmt.settings);
        self.batch.settings.extend(stmt.settings.iter().cloned());
        let foreign = foreign_text(s, text, lossy);
        if let Some(reason) = stmt.pin_reason().or_else(|| unreplayable(foreign, &stmt)) {
            add_pin(&mut self.batch.pins, reason);
        }
        self.batch.may_end_pinned_state |= super::pin_release::may_end_pinned_state(&stmt);
        if runs {
            s.note_hidden_effects(&stmt, &mut self.batch);
            self.batch.cursors.extend(CursorChange::of(&stmt));
        }
        // An EXECUTE of the client's SQL-level statement (asyncpg's fetch('EXECUTE q(1)')) needs it
        // on this server when described and when run. At the start of a batch pgpilot can still put
        // it there with a query of its own; inside one it cannot.
        let batch_start = self.rewrite && !self.unsynced;
        for effect in stmt.session_effects.iter().filter(|_| batch_start) {
            match effect {
                SessionEffect::Execute { name } => self.ensure_sql_prepared(s, server, name),
                // Another client's statement of that name left on this server would make it fail;
                // the client's own is put here, so that it fails as in PostgreSQL.
                SessionEffect::Prepare { name, .. } => self.ensure_sql_prepared(s, server, name),
                _ => {}
            }
        }
        // Run as a prepared statement these reach the server itself, pgpilot's statements included.
        for effect in stmt.session_effects.iter().filter(|_| runs) {
            match effect {
                SessionEffect::Discard(pgpilot_sql::DiscardTarget::All) => self.batch.discard_all = true,
                SessionEffect::Deallocate(None) => {
                    self.batch.sql_changes.push(SqlStatementChange::DeallocateAll)
                }
                // A SQL-level statement made on the server behind pgpilot's back: only the client
                // that made it may use that server from now on.
                SessionEffect::Prepare { .. } => add_pin(&mut self.batch.pins, "sql_prepare"),
                _ => {}
            }
        }
    }

    fn query(&mut self, s: &mut Session, server: &mut ServerConn, msg: &[u8]) -> Result<(), Ending> {
        // Taken first: it belongs to this message only, whichever way it is handled.
        let mut look = self.first_look.take();
        self.forget_local_statements(b'Q', b"");
        if self.rewrite {
            // A simple Query destroys the unnamed statement, the client's and the server's alike
            // (the server's when the Query reaches it: see `unnamed_out_of_step`).
            s.unnamed = None;
        }
        let Some(text) = frontend::parse_query(&msg[5..]) else {
            // As PostgreSQL: an error, and the session goes on (its text has no end).
            let invalid = PgError::error(SqlState::PROTOCOL_VIOLATION, "invalid string in message");
            self.unnamed_out_of_step();
            self.refuse_query(s, invalid);
            return Ok(());
        };
        // Checked once here for all that reads the text below, and read as the server reads it.
        let valid = std::str::from_utf8(text).ok();
        let reread = valid.map(|sql| s.for_reading(Cow::Borrowed(sql)));
        let sql = reread.as_deref();
        match sql.and_then(|sql| s.apply_pgpilot_settings(sql)) {
            Some(Ok(tag)) => {
                self.unnamed_out_of_step();
                self.expected.push(Expect::SyntheticCommand(tag));
                return Ok(());
            }
            Some(Err(refused)) => {
                self.unnamed_out_of_step();
                self.refuse_query(s, refused);
                return Ok(());
            }
            None => {}
        }
        let mut batch = Batch { observed: self.observe_query(s, text, sql, &mut look), ..Batch::default() };
        // A text none of whose statements starts with CREATE, ALTER or DROP (BEGIN, a SELECT, a
        // write) is no DDL: the look, already at hand, spares the scan.
        if look.is_none_or(|l| l.opaque || l.ddl_word) {
            self.function_ddl |= super::function_ddl::mentions_function_ddl(text);
            // A DROP of what pinned the client, perhaps.
            batch.may_end_pinned_state = s.pinned.is_some();
        }
        if !self.track_session {
            // Session pooling: the client's server is its own, and only a reset needs pgpilot, to
            // give the client its login values back.
            match sql.and_then(SessionReset::of_query) {
                Some(SessionReset::ResetAll) => batch.reset_all = true,
                Some(SessionReset::DiscardAll) => batch.discard_all = true,
                None => batch.settings.extend(sql.and_then(SessionReset::of_one)),
            }
        }
        let read = sql.map_or_else(|| s.for_reading(readable(text)), Cow::Borrowed);
        if let Some(stmt) = self.classify(s, &read, look) {
            let undecoded = unreplayable(foreign_text(s, text, valid.is_none()), &stmt);
            if let Some(tag) = self.deallocate_locally(s, &stmt) {
                self.unnamed_out_of_step();
                self.expected.push(Expect::SyntheticCommand(tag));
                return Ok(());
            }
            s.note_search_path(&stmt.settings);
            batch.settings = stmt.settings.clone();
            batch.set_config_runs = stmt.set_config_runs;
            batch.single_statement = stmt.statement_count == 1 && self.quiet_start(s);
            batch.pins = stmt.pin_reason().or(undecoded);
            batch.may_end_pinned_state |= super::pin_release::may_end_pinned_state(&stmt);
            s.note_hidden_effects(&stmt, &mut batch);
            batch.cursors.extend(CursorChange::of(&stmt));
            for effect in &stmt.session_effects {
                match effect {
                    // Not rewriting (max_prepared_statements = 0), or a text pgpilot could not
                    // decode: the statement stays where it is made, and so does its client.
                    SessionEffect::Prepare { .. } if !self.rewrite || undecoded.is_some() => {
                        batch.pins = Some("sql_prepare")
                    }
                    SessionEffect::Prepare { name, statement_sql, .. } => {
                        // A name the client has already prepared must fail as in PostgreSQL
                        // (42P05, the first statement kept): it is put on this server first, so
                        // the server itself refuses the PREPARE, in a transaction block too.
                        if s.statements.named.contains_key(name.as_bytes()) {
                            self.hold_protocol_name(s, server, name);
                        } else {
                            self.ensure_sql_prepared(s, server, name);
                        }
                        batch
                            .sql_changes
                            .push(SqlStatementChange::Prepare(name.clone(), statement_sql.clone()));
                    }
                    SessionEffect::Execute { name } if self.rewrite => {
                        self.ensure_sql_prepared(s, server, name)
                    }
                    // Among other statements (a lone one the client has is answered by pgpilot):
                    // the server must hold the client's own statement of that name, or none, so
                    // the DEALLOCATE fails as in PostgreSQL rather than drop a copy left there.
                    SessionEffect::Deallocate(Some(name)) if self.rewrite => {
                        self.ensure_sql_prepared(s, server, name);
                        batch.sql_changes.push(SqlStatementChange::Deallocate(name.clone()));
                    }
                    SessionEffect::Discard(pgpilot_sql::DiscardTarget::All) => batch.discard_all = true,
                    SessionEffect::Deallocate(None) => {
                        batch.sql_changes.push(SqlStatementChange::DeallocateAll)
                    }
                    _ => {}
                }
            }
        }
        self.start_request();
        // The server drops its unnamed statement as it runs the Query.
        self.unnamed_in_step |= self.rewrite;
        self.to_server.extend_from_slice(msg);
        self.expected.push(Expect::Client(Reply::Query(batch)));
        Ok(())
    }

    /// DEALLOCATE of a statement the client prepared through pgpilot is answered here: the server
    /// connection the client holds now may not have it, and others may still use the shared copy.
    fn deallocate_locally(&mut self, s: &mut Session, stmt: &Statement) -> Option<&'static str> {
        // Without rewriting the client's statements live on the server under its own names. In
        // a failed transaction the server refuses it (25P02), and nothing is deallocated.
        if !self.rewrite || stmt.statement_count != 1 || s.status == pgpilot_wire::backend::TxnStatus::Failed
        {
            return None;
        }
        let effect = stmt.session_effects.iter().find_map(|e| match e {
            SessionEffect::Deallocate(name) => Some(name),
            _ => None,
        })?;
        match effect {
            None => {
                s.statements.named.clear();
                s.statements.sql.clear();
                Some("DEALLOCATE ALL")
            }
            Some(name) => {
                let known = s.statements.named.remove(name.as_bytes()).is_some()
                    | s.statements.sql.remove(name).is_some();
                known.then_some("DEALLOCATE")
            }
        }
    }

    /// A PREPARE of `name` fails if this server holds another client's statement of that name.
    fn make_room_for_sql_name(&mut self, server: &mut ServerConn, name: &str) {
        if server.statements.sql.remove(name).is_some() {
            self.inject_query(&format!("DEALLOCATE {}", quote_ident(name)));
        }
    }

    /// A SQL PREPARE of a name the client holds from a protocol Parse, which PostgreSQL refuses
    /// (42P05: both share one namespace), while pgpilot keeps that statement under a name of its
    /// own: a stand-in takes the client's name on this server first, so the server refuses it.
    /// The registry knows the stand-in, and a client that needs the name deallocates it.
    fn hold_protocol_name(&mut self, s: &Session, server: &mut ServerConn, name: &str) {
        // In a failed transaction the server refuses the PREPARE before looking at its name.
        if server.statements.sql.contains_key(name) || s.status == pgpilot_wire::backend::TxnStatus::Failed {
            return;
        }
        let stand_in = format!("PREPARE {} AS SELECT NULL", quote_ident(name));
        self.inject_query(&stand_in);
        server.statements.sql.insert(name.to_string(), stand_in);
    }

    /// EXECUTE of a statement the client PREPAREd on another server: prepare it here first. A name
    /// the client never prepared but another client left on this server is deallocated first, so
    /// the client gets PostgreSQL's "does not exist" rather than someone else's statement.
    fn ensure_sql_prepared(&mut self, s: &Session, server: &mut ServerConn, name: &str) {
        let Some(text) = s.statements.sql.get(name) else {
            self.make_room_for_sql_name(server, name);
            return;
        };
        if server.statements.sql.get(name) == Some(text) {
            return;
        }
        if server.statements.sql.contains_key(name) {
            self.inject_query(&format!("DEALLOCATE {}", quote_ident(name)));
        }
        let replay = Batch { replays_sql_prepare: true, ..Batch::default() };
        self.inject_reply(text, Reply::Query(replay));
        server.statements.sql.insert(name.to_string(), text.clone());
    }

    /// A Bind or Describe of a name the client never prepared with Parse: a statement it made
    /// with SQL PREPARE, or none. The server must hold the client's own statement of that name,
    /// never another client's. At the start of a batch a query of pgpilot's puts it there; inside
    /// one only another client's statement can be removed (with a Close), so the client's own
    /// statement missing from this server gets the server's "does not exist".
    fn sql_statement_for_protocol(&mut self, s: &Session, server: &mut ServerConn, name: &[u8]) {
        let Ok(name) = std::str::from_utf8(name) else { return };
        if !self.rewrite {
            return;
        }
        if !self.unsynced {
            self.ensure_sql_prepared(s, server, name);
            return;
        }
        let held = server.statements.sql.get(name);
        if held.is_some() && held != s.statements.sql.get(name) {
            server.statements.sql.remove(name);
            self.close_on_server(name.as_bytes());
        }
    }

    /// A protocol Close of a statement the client made with SQL PREPARE closes it, as in
    /// PostgreSQL, where both share one namespace: on this server when it holds the client's
    /// copy, and for the client's next servers in any case. False when the name is not one.
    fn close_sql_prepared(&mut self, s: &mut Session, server: &mut ServerConn, name: &[u8]) -> bool {
        let Ok(name) = std::str::from_utf8(name) else { return false };
        let Some(text) = s.statements.sql.remove(name) else { return false };
        if server.statements.sql.get(name) == Some(&text) {
            server.statements.sql.remove(name);
            frontend::target(&mut self.to_server, b'C', b'S', name.as_bytes());
            self.expected.push(Expect::Client(Reply::Close));
        } else {
            self.expected.push(Expect::Synthetic { bytes: CLOSE_COMPLETE, on_skip: OnSkip::Nothing });
        }
        true
    }

    /// The message being handled starts a request outside a transaction with nothing of the
    /// client's still in flight ahead of it (where a BEGIN may be): the session's status is the
    /// one it runs under.
    fn quiet_start(&self, s: &Session) -> bool {
        s.status == pgpilot_wire::backend::TxnStatus::Idle && !self.expected.client_pending()
    }

    /// A Sync of pgpilot's own, ending the batch the client has not ended; its ReadyForQuery is
    /// not the client's.
    pub(super) fn inject_sync(&mut self) {
        frontend::sync(&mut self.to_server);
        self.expected.push(Expect::Injected(Reply::Sync(Batch::default())));
    }

    /// Answers a simple Query with `refused`, as PostgreSQL's error: inside a transaction it fails
    /// the transaction, so the server raises it.
    fn refuse_query(&mut self, s: &Session, refused: PgError) {
        if s.status == pgpilot_wire::backend::TxnStatus::InTransaction {
            let mut raise = BytesMut::new();
            frontend::query(&mut raise, &raise_sql(&refused));
            self.start_request();
            self.to_server.extend_from_slice(&raise);
            self.expected.push(Expect::Client(Reply::Query(Batch::default())));
        } else {
            self.expected.push(Expect::SyntheticError(Box::new(refused)));
        }
    }

    pub(super) fn inject_query(&mut self, sql: &str) {
        self.inject_reply(sql, Reply::Query(Batch::default()));
    }

    /// Sends a Query of pgpilot's own, whose answer is handled as `reply` and not sent on.
    pub(super) fn inject_reply(&mut self, sql: &str, reply: Reply) {
        let mut out = BytesMut::with_capacity(sql.len() + 6);
        frontend::query(&mut out, sql);
        self.to_server.extend_from_slice(&out);
        self.expected.push(Expect::Injected(reply));
        self.unnamed_out_of_step();
    }

    /// The server's unnamed statement is no longer the client's: a Query of pgpilot's own dropped
    /// it there and not the client's (helper-132: an unnamed SET, whose value pgpilot reads back
    /// with a Query, was gone when the client bound it again), or a Query pgpilot answered itself
    /// dropped the client's and never reached the server, whose statement a Bind of the unnamed
    /// statement right behind it would run. It is parsed again (or closed) before such a Bind.
    pub(super) fn unnamed_out_of_step(&mut self) {
        if self.rewrite {
            self.unnamed_in_step = false;
        }
    }

    fn parse(&mut self, s: &mut Session, server: &mut ServerConn, body: &[u8]) -> Result<(), Ending> {
        let Some(p) = frontend::parse_parse(body) else {
            self.pass_malformed(b'P', body, Reply::Parse { client_name: None, hash: None });
            return Ok(());
        };
        // Taken once for all that reads the text below. A Parse's text carries no constants to
        // tell texts of a shape apart: looked up by exact text.
        let look = parsed_text_look(p.query);
        if look.opaque || look.ddl_word {
            self.function_ddl |= super::function_ddl::mentions_function_ddl(p.query);
        }
        if p.name.is_empty() && self.parse_local_deallocate(s, server, p.query, look) {
            return Ok(());
        }
        // A named SET of pgpilot's own settings is kept by pgpilot (`parse_local_setting`): noted
        // as a setting, its value was read back from the server after the batch, which held the
        // server (the primary, for `pgpilot.route = primary`) for the client's next read.
        let own_setting = !p.name.is_empty() && super::local_statements::is_local_setting(p.query);
        if !own_setting {
            self.note_looked_text(s, server, p.query, look, p.name.is_empty());
        }
        if p.name.is_empty() {
            let before = s.remember_unnamed(p.query, p.param_types);
            self.unnamed_in_step = true;
            self.observe_parse(s, p.query);
            self.push_extended(Reply::UnnamedParse(before));
            self.parse_on_server(b"", p.query, p.param_types);
            return Ok(());
        }
        if s.statements.named.contains_key(p.name) || s.is_sql_prepared(p.name) {
            // PostgreSQL refuses it and keeps the first statement.
            frontend::bind(&mut self.to_server, b"", DUPLICATE_PARSE_NAME, &[0, 0, 0, 0, 0, 0]);
            let checked_in_failed_transaction = checked_in_failed_transaction(s, p.query);
            self.push_extended(Reply::DuplicateParse { name: p.name.into(), checked_in_failed_transaction });
            self.unsynced = true;
            return Ok(());
        }
        if self.parse_local_setting(s, p.name, p.query, p.param_types) {
            return Ok(());
        }
        let stmt = s.new_statement(p.query, p.param_types);
        let client_name: Box<[u8]> = p.name.into();
        s.statements.named.insert(client_name.clone(), stmt.clone());
        self.unsynced = true;
        // The server's copy answers for the Parse only where a stale copy (DDL since) can be
        // prepared again unseen: outside a transaction, with nothing of the client's in flight
        // ahead of it (a BEGIN may be). Elsewhere PostgreSQL plans the Parse afresh, and so must
        // the server: pgJDBC's first execution inside a transaction failed with 0A000.
        if self.quiet_start(s) && server.statements.touch(&stmt) {
            self.expected
                .push(Expect::Synthetic { bytes: PARSE_COMPLETE, on_skip: OnSkip::Forget(client_name) });
            return Ok(());
        }
        self.prepare_on_server(server, &stmt);
        self.expected
            .push(Expect::Client(Reply::Parse { client_name: Some(client_name), hash: Some(stmt.hash) }));
        Ok(())
    }

    /// Writes a Parse of `stmt` under its server name, closing the least recently used statement
    /// first when the server holds max_prepared_statements already.
    pub(super) fn prepare_on_server(&mut self, server: &mut ServerConn, stmt: &Arc<PreparedStatement>) {
        server.statements.unmark_stale(stmt.hash);
        if let Some(evicted) = server.statements.insert(stmt.clone(), self.max_prepared) {
            self.close_on_server(&evicted.server_name);
        }
        // Closed first, always: a copy may be there that the registry does not know of (refused
        // after DDL, or kept when an error made the server skip pgpilot's Close of it), and a
        // Parse under a name in use fails. Closing a name not in use is no error.
        self.close_on_server(&stmt.server_name);
        self.parse_on_server(&stmt.server_name, &stmt.query, &stmt.param_types);
    }

    /// Writes a Parse for the server, counted as one (SHOW STATS' server_parse_count).
    fn parse_on_server(&mut self, name: &[u8], query: &[u8], param_types: &[u8]) {
        self.prepared.server_parses += 1;
        frontend::parse(&mut self.to_server, name, query, param_types);
    }

    /// Closes a statement pgpilot prepared on the server; its CloseComplete is not the client's.
    pub(super) fn close_on_server(&mut self, server_name: &[u8]) {
        frontend::target(&mut self.to_server, b'C', b'S', server_name);
        self.expected.push(Expect::Injected(Reply::Close));
    }

    /// Makes sure the server has the client's statement `stmt`; returns its server name and what
    /// is known of that copy.
    fn server_name_for(
        &mut self,
        s: &Session,
        server: &mut ServerConn,
        stmt: &Arc<PreparedStatement>,
    ) -> (Box<[u8]>, BoundCopy) {
        // A client that described the statement is judged by the row type it knows against the
        // copy's (row_shape.rs), which is exact: a generation begun later, when some server's copy
        // turned out stale, may postdate the client's own Parse of the new row type.
        let described = stmt.row_shape.load(std::sync::atomic::Ordering::Relaxed) != 0;
        if !described && stmt.epoch() < s.shared.statement_epochs.current(stmt.hash) {
            // The server is made to fail this Bind (no statement has this name), so its transaction
            // fails as it would have without pgpilot, and the client is told why.
            return (OUTDATED_PLAN_NAME.into(), BoundCopy::Outdated);
        }
        if server.statements.touch(stmt) {
            return (stmt.server_name.clone(), BoundCopy::Kept);
        }
        self.prepare_on_server(server, stmt);
        self.expected.push(Expect::Injected(Reply::Parse { client_name: None, hash: Some(stmt.hash) }));
        (stmt.server_name.clone(), BoundCopy::Fresh { per_column_formats: false })
    }

    /// The client's named statement `name` (None for the unnamed one, or a name it never prepared).
    fn named_statement(s: &Session, name: &[u8]) -> Option<Arc<PreparedStatement>> {
        if name.is_empty() {
            return None;
        }
        s.statements.named.get(name).cloned()
    }

    fn bind(&mut self, s: &mut Session, server: &mut ServerConn, body: &[u8]) -> Result<(), Ending> {
        let Some(b) = frontend::parse_bind(body) else {
            self.pass_malformed(b'B', body, Reply::Bind { statement: None, copy: BoundCopy::Kept });
            return Ok(());
        };
        if self.bind_local_deallocate(b.statement, b.portal) {
            return Ok(());
        }
        self.observe_bind(s, b.statement, b.rest);
        let Some(stmt) = Flow::named_statement(s, b.statement) else {
            let foreign = self.foreign_name(s, b.statement);
            if b.statement.is_empty() {
                self.unnamed_in_step_for(s);
            } else if foreign.is_none() {
                self.sql_statement_for_protocol(s, server, b.statement);
            }
            if b.portal.is_empty() {
                self.unnamed_portal_statement = None;
            }
            frontend::bind(&mut self.to_server, b.portal, foreign.as_deref().unwrap_or(b.statement), b.rest);
            self.push_extended(Reply::Bind { statement: None, copy: BoundCopy::Kept });
            return Ok(());
        };
        if self.bind_local_setting(&stmt.query, b.portal) {
            return Ok(());
        }
        if stmt.may_change_session {
            self.note_extended_text(s, server, Some(&stmt.query), true);
        }
        let (mut server_name, mut copy) = self.server_name_for(s, server, &stmt);
        if copy == BoundCopy::Kept && super::row_shape::differs_from_copy(&stmt, server) {
            tracing::info!(database = %s.db.name, server_id = server.id,
                "a prepared statement's row type on this server differs from the one the client was told (DDL): its Bind fails as in PostgreSQL");
            (server_name, copy) = (OUTDATED_PLAN_NAME.into(), BoundCopy::Outdated);
        }
        frontend::bind(&mut self.to_server, b.portal, &server_name, b.rest);
        if b.portal.is_empty() {
            self.unnamed_portal_statement = (copy != BoundCopy::Outdated).then(|| stmt.clone());
        }
        if let BoundCopy::Fresh { per_column_formats } = &mut copy {
            // Only a client that described the statement knows its columns; another one's wrong
            // count of formats is its own mistake, refused with 08P01 as PostgreSQL refuses it
            // (helper-132: such a Bind got 0A000, which asyncpg answers by preparing again).
            *per_column_formats = stmt.row_shape.load(std::sync::atomic::Ordering::Relaxed) != 0
                && frontend::bind_formats_per_column(b.rest);
        }
        self.push_extended(Reply::Bind { statement: Some(stmt.hash), copy });
        Ok(())
    }

    fn describe(&mut self, s: &mut Session, server: &mut ServerConn, body: &[u8]) -> Result<(), Ending> {
        let Some((kind, name)) = frontend::parse_target(body) else {
            self.pass_malformed(b'D', body, Reply::Describe { statement: None });
            return Ok(());
        };
        let named = Flow::named_statement(s, name).filter(|_| kind == b'S');
        let named_setting =
            named.as_ref().is_some_and(|st| super::local_statements::is_local_setting(&st.query));
        if self.describe_locally(kind, name, named_setting) {
            return Ok(());
        }
        let (target, statement) = match named {
            Some(stmt) => {
                // Described, it tells the client the result type it has now.
                stmt.epoch.fetch_max(
                    s.shared.statement_epochs.current(stmt.hash),
                    std::sync::atomic::Ordering::Relaxed,
                );
                (Cow::Owned(self.server_name_for(s, server, &stmt).0.into_vec()), Some(stmt))
            }
            None if kind == b'S' && name.is_empty() => {
                self.unnamed_in_step_for(s);
                (Cow::Borrowed(name), None)
            }
            None if kind == b'S' => match self.foreign_name(s, name) {
                Some(foreign) => (Cow::Owned(foreign), None),
                None => {
                    self.sql_statement_for_protocol(s, server, name);
                    (Cow::Borrowed(name), None)
                }
            },
            None => (Cow::Borrowed(name), None),
        };
        frontend::target(&mut self.to_server, b'D', kind, &target);
        match self.unnamed_portal_statement.clone().filter(|_| kind == b'P' && name.is_empty()) {
            Some(statement) => self.push_extended(Reply::DescribePortal { statement }),
            None => self.push_extended(Reply::Describe { statement }),
        }
        Ok(())
    }

    /// A statement name the client never prepared (neither with Parse nor with SQL PREPARE) as it
    /// is sent to the server: under a name no session has, so PostgreSQL answers "does not exist"
    /// as on the client's own connection, even where another client left a statement of that
    /// name on this server unseen (a differential fuzzer bound one). The error names the client's.
    fn foreign_name(&self, s: &Session, name: &[u8]) -> Option<Vec<u8>> {
        let own_sql = std::str::from_utf8(name).is_ok_and(|n| s.statements.sql.contains_key(n));
        (self.rewrite && !name.is_empty() && !own_sql).then(|| [FOREIGN_NAME_PREFIX, name].concat())
    }

    /// Before a Bind or Describe of the unnamed statement: the server's is another client's when
    /// the client parsed its own in an earlier transaction (on this server or another), so the
    /// client's is parsed again first; a client that has none gets the server's closed, so the
    /// server answers as it would have ("does not exist").
    fn unnamed_in_step_for(&mut self, s: &Session) {
        if std::mem::replace(&mut self.unnamed_in_step, true) {
            return;
        }
        match s.unnamed.as_deref() {
            Some(u) => {
                self.parse_on_server(b"", &u.query, &u.param_types);
                self.expected.push(Expect::Injected(Reply::Parse { client_name: None, hash: None }));
            }
            None => self.close_on_server(b""),
        }
    }

    /// Closing a named statement only forgets the client's name: other clients may share the
    /// server-side copy, which max_prepared_statements bounds.
    fn close(&mut self, s: &mut Session, server: &mut ServerConn, body: &[u8]) -> Result<(), Ending> {
        let Some((kind, name)) = frontend::parse_target(body) else {
            self.pass_malformed(b'C', body, Reply::Close);
            return Ok(());
        };
        self.forget_local_statements(kind, name);
        self.unsynced = true;
        if kind == b'S' && name.is_empty() {
            self.unnamed_in_step = true;
            frontend::target(&mut self.to_server, b'C', kind, name);
            self.expected.push(Expect::Client(Reply::UnnamedClose(s.unnamed.take())));
            return Ok(());
        }
        if kind == b'S' && !name.is_empty() {
            if self.close_sql_prepared(s, server, name) {
                return Ok(());
            }
            let on_skip = match s.statements.named.remove_entry(name) {
                Some((name, stmt)) => OnSkip::Restore(name, stmt),
                None => OnSkip::Nothing,
            };
            self.expected.push(Expect::Synthetic { bytes: CLOSE_COMPLETE, on_skip });
            return Ok(());
        }
        frontend::target(&mut self.to_server, b'C', kind, name);
        self.expected.push(Expect::Client(Reply::Close));
        Ok(())
    }
}

/// Notes why a batch pins its client; a WITH HOLD cursor never hides a reason that lasts.
/// The pin a FunctionCall message asks for: set_config and the session advisory-lock functions
/// change the session where pgpilot cannot follow (by their pg_proc OIDs, fixed for built-ins).
fn function_call_pin(body: &[u8]) -> Option<&'static str> {
    let oid = u32::from_be_bytes(body.get(..4)?.try_into().ok()?);
    match oid {
        // set_config(text, text, boolean)
        2078 => Some("function_call_set_config"),
        // pg_advisory_lock, pg_advisory_lock_shared, pg_try_advisory_lock(_shared); bigint, then int, int
        2880..=2883 | 2886..=2889 => Some("advisory_lock"),
        _ => None,
    }
}

pub(super) fn add_pin(pins: &mut Option<&'static str>, reason: &'static str) {
    if pgpilot_sql::pin_replaces(*pins, reason) {
        *pins = Some(reason);
    }
}

/// The name a Bind of an outdated statement is sent under: never prepared, so the server fails it.
pub(super) const OUTDATED_PLAN_NAME: &[u8] = b"pgpilot_outdated_plan";

/// Likewise for a Parse under a name in use (Reply::DuplicateParse).
const DUPLICATE_PARSE_NAME: &[u8] = b"pgpilot_duplicate_statement_name";

/// Put in front of a statement name the client never prepared (`foreign_name`): no server
/// holds one so named.
pub(super) const FOREIGN_NAME_PREFIX: &[u8] = b"pgpilot_unknown_";

/// A statement that fails with `error`'s code, message and hint on the server (plpgsql, which
/// PostgreSQL installs in every database). No `$` of the client's reaches the dollar quotes.
fn raise_sql(error: &PgError) -> String {
    // E'' reads backslashes the same whatever standard_conforming_strings the client set.
    let literal =
        |text: &str| format!("E'{}'", text.replace('$', "?").replace('\\', "\\\\").replace('\'', "''"));
    let mut using = format!("ERRCODE = '{}', MESSAGE = {}", error.code.code(), literal(&error.message));
    if let Some(hint) = &error.hint {
        using += &format!(", HINT = {}", literal(hint));
    }
    format!("DO $pgpilot$ BEGIN RAISE EXCEPTION USING {using}; END $pgpilot$")
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Statement text as pgpilot reads it to classify it. A client_encoding other than UTF8 (LATIN1)
/// sends text that is not UTF-8; read with each byte that does not decode as U+FFFD it still shows
/// its keywords and its ASCII names, which is all classification needs, and a statement pgpilot
/// did not read could leave session state behind on a shared server. Values read from it may be
/// wrong: see [`unreplayable`]. The bytes sent to the server are never these.
pub(super) fn readable(text: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(text)
}

/// Whether what [`readable`] made of `text` may not be the client's characters: bytes had to be
/// replaced (`lossy`), or the client's encoding is not UTF-8 and the text has bytes beyond ASCII
/// (WIN1252 or EUC_JP bytes that happen to be valid UTF-8 read as other characters).
fn foreign_text(s: &Session, text: &[u8], lossy: bool) -> bool {
    let utf8 = s.params.get("client_encoding").is_none_or(|e| {
        let e = e.trim().replace(['-', '_'], "");
        e.eq_ignore_ascii_case("UTF8")
            || e.eq_ignore_ascii_case("UNICODE")
            || e.eq_ignore_ascii_case("SQLASCII")
    });
    lossy || (!utf8 && !text.is_ascii())
}

/// Why a statement ties its client to this server when its text was `foreign` (see
/// [`foreign_text`]): a session setting or SQL PREPARE with characters beyond ASCII cannot be
/// replayed on another server as the client wrote it.
fn unreplayable(foreign: bool, stmt: &Statement) -> Option<&'static str> {
    if !foreign {
        return None;
    }
    let setting =
        stmt.settings.iter().filter(|c| c.scope == pgpilot_sql::SetScope::Session).any(|c| match &c.action {
            SetAction::Set { name, value } | SetAction::SetConfig { name, value } => {
                !name.is_ascii() || !value.is_ascii()
            }
            SetAction::SetDefault { name } | SetAction::Reset { name } => !name.is_ascii(),
            SetAction::ResetAll => false,
        });
    let prepare = stmt.session_effects.iter().any(|e| {
        matches!(e, SessionEffect::Prepare { name, statement_sql, .. }
            if !name.is_ascii() || !statement_sql.is_ascii())
    });
    (setting || prepare).then_some("undecoded_text")
}

thread_local! {
    /// The quick look at each Parse text (see text_memo.rs).
    static PARSE_LOOKS: std::cell::RefCell<crate::text_memo::TextMemo<QuickLook>> =
        std::cell::RefCell::new(crate::text_memo::TextMemo::new(1 << 20));
}

/// The quick look at a Parse text, remembered by the text.
pub(super) fn parsed_text_look(text: &[u8]) -> QuickLook {
    PARSE_LOOKS.with_borrow_mut(|memo| memo.get_or_make(text, || pgpilot_sql::quick_look(&readable(text))))
}

/// Whether a Query (header included) may be a DEALLOCATE, which pgpilot answers itself from the
/// client's transaction status: a cheap look at its first word, run for every Query sent while
/// others are in flight.
pub(super) fn may_deallocate(msg: &[u8]) -> bool {
    let text = msg.get(5..).unwrap_or_default().trim_ascii_start();
    text.get(..10).is_some_and(|word| word.eq_ignore_ascii_case(b"deallocate"))
}

/// Whether PostgreSQL refuses a Parse of `text` in a failed transaction (25P02) before it looks
/// at the statement's name: all texts but an empty one and those that end the transaction
/// (COMMIT, ROLLBACK, ROLLBACK TO, PREPARE TRANSACTION). A text with a syntax error fails with its
/// own error first there; it is counted as refused here.
fn checked_in_failed_transaction(s: &Session, text: &[u8]) -> bool {
    use pgpilot_sql::TxnControl;
    let Ok(sql) = std::str::from_utf8(text) else { return true };
    let stmt = s.shared.classifier.classify(sql);
    let ends_transaction = matches!(
        stmt.transaction,
        Some(
            TxnControl::Commit { .. }
                | TxnControl::Rollback { .. }
                | TxnControl::RollbackTo(_)
                | TxnControl::PrepareTransaction(_)
        )
    );
    stmt.statement_count > 0 && !ends_transaction
}
