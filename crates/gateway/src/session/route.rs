//! Routing from the session's side: which server a transaction starts on, falling back to the
//! primary when a replica cannot be reached, and pgpilot's own session settings (`SET pgpilot.route`).

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use pgpilot_sql::{IsolationLevel, TxnControl};
use pgpilot_wire::{backend, frontend, PgError, SqlState};

use super::client::{Ending, Session};
use crate::config::PoolMode;
use crate::pool::CheckoutError;
use crate::routing::backend::Outstanding;
use crate::routing::{place, replica_still_serves, verdict, Decision, Request, SessionRoute, Verdict};

/// What a locally answered statement batch does.
enum LocalAction {
    Prepare(Box<[u8]>, Arc<crate::pool::statements::PreparedStatement>),
    Close(Box<[u8]>),
}

/// The server a client is attached to, and why.
pub struct Attachment {
    pub backend: usize,
    pub may_write: bool,
    /// Something the client sent ran a statement (Query, Execute, a function call, COPY data). An
    /// attachment that only prepared or described (asyncpg prepares apart from running) wrote
    /// nothing, whatever routing assumed.
    pub executed: bool,
    /// The request makes a table a standby cannot read without CREATE (`SELECT ... INTO
    /// UNLOGGED t`): the catalog is read again once it has run.
    pub creates_unlogged: bool,
    /// Placed for a batch that only prepares and describes a read (asyncpg's Parse, Describe and
    /// Flush): on the primary without counting as a write, its Execute free to go elsewhere
    /// (`needs_other_server`); anything run in the same batch counts as a possible write.
    pub prepared_only: bool,
    _outstanding: Outstanding,
}

impl Attachment {
    pub fn is_replica(&self, primary: usize) -> bool {
        self.backend != primary
    }
}

impl Session {
    /// The text a Query, Parse or Bind message (`msg`, header included) runs.
    pub(super) fn text_of<'a>(&'a self, msg: &'a [u8]) -> Option<&'a [u8]> {
        match msg.first()? {
            b'Q' => frontend::parse_query(msg.get(5..)?),
            b'P' => Some(frontend::parse_parse(msg.get(5..)?)?.query),
            b'B' => {
                let bind = frontend::parse_bind(msg.get(5..)?)?;
                if bind.statement.is_empty() {
                    // lib/pq parses the unnamed statement in one batch and binds it in the next.
                    return self.unnamed.as_deref().map(|u| &*u.query);
                }
                Some(&self.statements.named.get(bind.statement)?.query)
            }
            _ => None,
        }
    }

    /// What the request starting with `msg` needs. Plain reads and plain writes are recognised by a
    /// quick lexical scan; everything else is classified with the PostgreSQL grammar (cached by text).
    pub(super) fn verdict_of(&mut self, msg: &[u8]) -> Verdict {
        let may_write = matches!(msg.first(), Some(b'F' | b'B' | b'E' | b'Q' | b'P'));
        let unknown = Verdict::Primary { reason: "unknown_statement", may_write };
        let Some(text) = self.text_of(msg) else { return unknown };
        if super::local_statements::is_local_setting(text) {
            // A SET of pgpilot's own settings, prepared (pgJDBC, psycopg): pgpilot applies it, no
            // server runs it, and it writes nothing. Counted as a write, it held the client's
            // reads on the primary for read-your-writes.
            return Verdict::Read { tag: None };
        }
        let sql = self.for_reading(super::frontend::readable(text));
        let quick = crate::shapes::look_of(&sql);
        let mut stated_isolation = None;
        let plain_read = quick.plain_select && self.db.plain_selects_only_read();
        let found = if plain_read && self.route != SessionRoute::Replica {
            Verdict::Read { tag: None }
        } else if quick.plain_write {
            Verdict::Primary { reason: "dml", may_write: true }
        } else {
            let stmt = self.shared.classifier.classify(&sql);
            // Only the grammar's verdict looks functions up along the search_path.
            self.refresh_search_path();
            if let Some(TxnControl::Begin(options)) = &stmt.transaction {
                stated_isolation = options.isolation;
            }
            verdict(&self.db, &stmt, &self.request())
        };
        self.routed_look = (msg[0] == b'Q').then_some(quick);
        let serializable = match stated_isolation.or_else(|| self.deferred_isolation()) {
            Some(level) => level == IsolationLevel::Serializable,
            None => self.serializable_by_default(),
        };
        if serializable && matches!(found, Verdict::Read { .. }) {
            // A standby refuses serializable transactions, the session's default ones too.
            return Verdict::Primary { reason: "serializable_transaction", may_write: false };
        }
        found
    }

    /// The isolation level the BEGIN pgpilot deferred (deferred_begin.rs) stated, if it did: it
    /// decides for the transaction's statements, not the session's default.
    fn deferred_isolation(&self) -> Option<IsolationLevel> {
        let begin = self.deferred_begin.as_deref()?;
        let sql = std::str::from_utf8(frontend::parse_query(begin.get(5..)?)?).ok()?;
        match &self.shared.classifier.classify(sql).transaction {
            Some(TxnControl::Begin(options)) => options.isolation,
            _ => None,
        }
    }

    /// The session's default_transaction_isolation (SET, SET SESSION CHARACTERISTICS, startup
    /// options) is serializable.
    pub(super) fn serializable_by_default(&self) -> bool {
        self.params
            .get("default_transaction_isolation")
            .is_some_and(|v| v.trim_matches(|c| c == '\'' || c == '"').eq_ignore_ascii_case("serializable"))
    }

    /// The search_path's schemas, parsed again only when its value changed.
    /// The schemas of search_path as last refreshed.
    pub(super) fn schemas(&self) -> &[String] {
        self.search_path.as_ref().map_or(&[], |p| &p.2)
    }

    /// The schemas routing and the result cache resolve names with. A search_path being read
    /// back from the server, or one the server gives a client that set none (ALTER ROLE /
    /// DATABASE ... SET search_path), is a path pgpilot does not know: none then, so unqualified
    /// functions outside pg_catalog are unknown (primary), unqualified names are not cached, and
    /// writes to them invalidate everything.
    pub(super) fn known_schemas(&self) -> &[String] {
        if self.search_path_in_flux || self.search_path_from_server() {
            &[]
        } else {
            self.schemas()
        }
    }

    /// A search_path set by a statement on its way: until the server has it (and pgpilot knows
    /// it), statements sent right behind it run under it, so neither routing nor the cache may
    /// resolve their names by the old one.
    pub(super) fn note_search_path(&mut self, settings: &[pgpilot_sql::SetCommand]) {
        if settings.iter().any(|c| c.action.name().is_some_and(|n| n.eq_ignore_ascii_case("search_path"))) {
            self.search_path_in_flux = true;
        }
        // RESET ALL names none, and resets them all.
        if settings.iter().any(|c| c.action.name().is_none_or(is_parse_setting)) {
            self.parse_settings_in_flux = true;
        }
    }

    pub(super) fn refresh_search_path(&mut self) {
        let raw = self.params.get("search_path").unwrap_or("\"$user\", public");
        let user = self.current_user();
        if self.search_path.as_ref().is_none_or(|p| p.0 != raw || p.1 != user) {
            let schemas = pgpilot_sql::parse_search_path(raw, &user);
            self.search_path = Some(Box::new(SearchPath(raw.to_string(), user.into_owned(), schemas)));
        }
    }

    /// Whom `$user` in the search_path names on the server: the role a SET ROLE took, else the
    /// user the pool logs in as (a database may force one), which need not be the client's login
    /// name. (A SET SESSION AUTHORIZATION turns the cache off for the session.)
    fn current_user(&self) -> Cow<'_, str> {
        match self.params.get("role").map(role_name) {
            Some(role) if !role.is_empty() && role != "none" => role,
            _ => Cow::Borrowed(&self.pools.pools[self.db.primary_index()].target.user),
        }
    }

    fn request(&self) -> Request<'_> {
        Request {
            session_route: self.route,
            tag: self.tag.as_deref(),
            write_mark: self.write_mark,
            fill_lsn: None,
            search_path: self.known_schemas(),
        }
    }

    /// The client set no search_path and the server gives its sessions one pgpilot does not know.
    fn search_path_from_server(&self) -> bool {
        // The server's role is the pool's login user (a database may force one).
        let server_user = &self.pools.pools[self.db.primary_index()].target.user;
        self.db.functions.load().search_path_set_for(server_user) && self.params.get("search_path").is_none()
    }

    /// Where the request starting with `msg` should run; `batch` is all that is buffered from `msg` on.
    pub(super) fn decide(&mut self, msg: &[u8], batch: &[u8]) -> Decision {
        let primary = self.db.primary_index();
        if self.mode == PoolMode::Session || !self.db.splits_reads() {
            return Decision { backend: primary, may_write: true, reason: "primary_only" };
        }
        let mut verdict = self.verdict_of(msg);
        // In a transaction the client began READ ONLY (held by deferred_begin.rs) nothing that
        // follows can write, so a batch still arriving (asyncpg's Parse, Describe, Flush of the
        // transaction's first statement) goes where its first statement belongs.
        let read_only_txn = self.deferred_begin.is_some();
        if matches!(verdict, Verdict::Read { .. }) && !read_only_txn && !self.batch_reads_only(batch) {
            // A read prepared apart from its Execute (asyncpg: Parse, Describe, Flush) writes
            // nothing: counted as a write, it moved the read-your-writes mark and its Execute,
            // arriving while the primary was still attached, ran there (helper-170).
            if describe_only(batch, &self.limits) {
                return Decision { backend: primary, may_write: false, reason: "describe_batch" };
            }
            verdict = Verdict::Primary { reason: "pipelined_batch", may_write: true };
        }
        self.write_mark.settle(&self.db);
        if self.pending_fill.is_some() && matches!(verdict, Verdict::Read { .. }) {
            if let Some(decision) = self.place_fill(&verdict) {
                return decision;
            }
        }
        let decision = place(&self.db, &verdict, &self.request());
        self.overflow_to_primary(decision)
    }

    /// Where a read that fills the result cache runs, or None to place it as any read (its answer
    /// is then stored only if it comes from the primary). A replica's answer may be stored only
    /// when the replica has replayed a primary position read after the last change to what the
    /// result depends on: otherwise it may lack commits made before the fill took its versions.
    /// With no such replica the fill reads on the primary, but only for a result missed before of
    /// a statement whose results are hit, so that reads which never repeat stay on the replicas.
    fn place_fill(&mut self, verdict: &Verdict) -> Option<Decision> {
        let primary = self.db.primary_index();
        let fill = self.pending_fill.as_deref()?;
        // `strict` results carry versions read on the primary just now: no position known yet
        // follows them.
        let since_ms = match fill.pg_snapshot {
            None => Some(self.db.cache.versions.last_bump_us(&fill.plan.relations, &fill.plan.tags) / 1000),
            Some(_) => None,
        };
        let position = since_ms.and_then(|ms| self.db.backends[primary].history.first_after(ms));
        if let Some(position) = position {
            let request = Request { fill_lsn: Some(position.lsn), ..self.request() };
            let decision = place(&self.db, verdict, &request);
            if decision.backend != primary {
                let fill = self.pending_fill.as_deref_mut()?;
                fill.replica = Some(decision.backend);
                fill.read_sent_us = fill.read_sent_us.min(position.at_ms * 1000);
                return Some(decision);
            }
        }
        let (hash, fingerprint) = (fill.hash, fill.plan.fingerprint);
        let repeated = self.db.cache.misses.missed_before(hash);
        if repeated && self.shared.cache.stats.worth_filling(fingerprint) {
            // Hits then serve every client without any server.
            return Some(Decision { backend: primary, may_write: false, reason: "cache_fill" });
        }
        None
    }

    /// With `primary_reads = "overflow"`, a read whose replica has no free server runs on the
    /// primary when the primary has one.
    fn overflow_to_primary(&self, decision: Decision) -> Decision {
        let primary = self.db.primary_index();
        let routing = self.db.routing.load();
        if decision.backend == primary
            || routing.primary_reads != crate::config::PrimaryReads::Overflow
            || self.db.backends[primary].outstanding.load(Relaxed) >= routing.overflow_servers
            || self.pools.pools[decision.backend].has_free_server()
            || !self.pools.pools[primary].has_free_server()
        {
            return decision;
        }
        Decision { backend: primary, may_write: false, reason: "overflow" }
    }

    /// Whether the extended-protocol batch starting with `batch`'s first message reads only, up to
    /// its Sync. A batch may carry a write after a read with no Sync between them (a pipeline, or
    /// asyncpg preparing a SELECT with Flush before it sends a COPY): it may go to a replica only
    /// when all of it up to the Sync has arrived and every statement in it reads. A simple Query is
    /// a request of its own.
    fn batch_reads_only(&mut self, batch: &[u8]) -> bool {
        batch.first() == Some(&b'Q') || self.batch_reads(batch) == BatchReads::ToSync
    }

    /// What the statements after the first of the extended batch `batch` do, as far as it has
    /// arrived (the first is the caller's to judge).
    fn batch_reads(&mut self, batch: &[u8]) -> BatchReads {
        let look = self.routed_look;
        let limits = self.limits;
        // Statements the batch parses: a Bind of one runs what its Parse (judged) prepared, and
        // only that Parse tells what (pgJDBC and node-postgres parse a named statement and bind
        // it in one batch; the name means nothing before the Parse has run).
        let mut parsed: Vec<&[u8]> = Vec::new();
        let mut found = BatchReads::Unfinished;
        for (i, frame) in pgpilot_wire::FrontendFrames::new(batch, &limits).enumerate() {
            let later_statement = i > 0
                && match frame.tag {
                    b'P' | b'Q' => true,
                    // A Bind of the unnamed statement runs what a Parse of this batch (checked) or
                    // the request that started on this server left.
                    b'B' => frontend::parse_bind(frame.body())
                        .is_some_and(|b| !b.statement.is_empty() && !parsed.contains(&b.statement)),
                    _ => false,
                };
            if frame.tag == b'P' {
                parsed.extend(frontend::parse_parse(frame.body()).map(|p| p.name));
            }
            match frame.tag {
                b'S' => {
                    found = BatchReads::ToSync;
                    break;
                }
                _ if later_statement => {
                    if !matches!(self.verdict_of(frame.msg), Verdict::Read { .. }) {
                        found = BatchReads::Not;
                        break;
                    }
                }
                // A Flush asks for answers before the rest of the batch is known.
                b'H' => found = BatchReads::Not,
                b'P' | b'B' | b'D' | b'E' | b'C' => {}
                _ => {
                    found = BatchReads::Not;
                    break;
                }
            }
        }
        self.routed_look = look;
        found
    }

    /// Whether the extended batch at the front of the client's input reads only as far as it has
    /// arrived, and its Sync has not: placed now it would go to the primary as a possible write
    /// (`batch_reads_only`), so it waits for the rest. Drivers send a batch in several writes
    /// (asyncpg writes Bind, Execute and Sync apart: most of its reads ran on the primary with
    /// statement_cache_size=0), and PostgreSQL answers nothing of a batch before its Sync or a
    /// Flush, so the client waits for nothing meanwhile.
    pub(super) fn awaits_rest_of_batch(&mut self) -> bool {
        let splits = self.mode == PoolMode::Transaction && self.db.splits_reads();
        if !splits
            || self.deferred_begin.is_some()
            || self.buf.len() > BATCH_WAIT_LIMIT
            || !matches!(self.buf.first(), Some(b'P' | b'B'))
        {
            return false;
        }
        // Most batches arrive whole: one holding its Sync or a Flush is never `Unfinished`, and
        // is placed without being judged here as well as in `decide`.
        let limits = self.limits;
        if pgpilot_wire::FrontendFrames::new(&self.buf, &limits).any(|f| matches!(f.tag, b'S' | b'H')) {
            return false;
        }
        let buf = std::mem::take(&mut self.buf);
        let first = pgpilot_wire::FrontendFrames::new(&buf, &limits).next();
        let waits = self.batch_reads(&buf) == BatchReads::Unfinished
            && first.is_some_and(|f| matches!(self.verdict_of(f.msg), Verdict::Read { .. }));
        self.routed_look = None;
        self.buf = buf;
        waits
    }

    /// Attached to a replica between transactions, a request the replica may no longer serve (one
    /// that must run on the primary, or a read the replica no longer qualifies for) waits until the
    /// replica has answered everything, then starts over elsewhere. A read the replica may still
    /// serve stays: placing it again could pick another server each time and never settle.
    ///
    /// On the primary for a read, a request that may write marks the attachment as writing: it
    /// moves the read-your-writes mark and must not be replayed elsewhere. So does one of a client
    /// pinned there (by a lock or LISTEN, which write nothing): the mark is moved when the pin ends.
    pub(super) fn needs_other_server(&mut self, msg: &[u8], batch: &[u8]) -> bool {
        let primary = self.db.primary_index();
        let Some(&Attachment { backend, may_write, prepared_only, executed, .. }) = self.attachment.as_ref()
        else {
            return false;
        };
        // A pinned client keeps its server whatever comes: it could not be given up.
        let pinned_elsewhere = self.pinned.is_some() && backend != primary;
        if may_write
            || pinned_elsewhere
            || self.status != pgpilot_wire::backend::TxnStatus::Idle
            || !matches!(msg[0], b'Q' | b'P' | b'B')
        {
            return false;
        }
        let verdict = self.verdict_of(msg);
        if backend == primary {
            if prepared_only && !executed && matches!(verdict, Verdict::Read { .. }) {
                // Only prepared here so far: the read is placed as any other.
                return true;
            }
            if let (Verdict::Primary { may_write: true, .. }, Some(a)) = (&verdict, self.attachment.as_mut())
            {
                a.may_write = true;
            }
            return false;
        }
        match verdict {
            Verdict::Primary { .. } => true,
            Verdict::Read { .. } if self.route == SessionRoute::Primary => true,
            Verdict::Read { .. } if !self.batch_reads_only(batch) => true,
            Verdict::Read { tag } => {
                let tag = tag.as_deref().or(self.tag.as_deref());
                self.write_mark.settle(&self.db);
                !replica_still_serves(&self.db, backend, tag, self.write_mark)
            }
        }
    }

    /// Where the first buffered message should run. The buffer is taken out meanwhile, so the
    /// message is read in place while routing borrows the session.
    fn decide_first(&mut self) -> Decision {
        self.routed_look = None;
        self.refresh_tag();
        let buf = std::mem::take(&mut self.buf);
        let first = match pgpilot_wire::frame::peek_frontend(&buf, &self.limits) {
            Ok(Some(h)) if buf.len() >= h.total && matches!(h.tag, b'Q' | b'P' | b'B') => &buf[..h.total],
            _ => &buf[..buf.len().min(1)],
        };
        let decision = self.decide(first, &buf);
        self.buf = buf;
        decision
    }

    /// Routes the buffered request and attaches a server; a replica that cannot be reached is banned
    /// and the request goes elsewhere.
    /// False when the client cancelled its request while waiting for a server: it was answered.
    pub(super) async fn attach_routed(&mut self) -> Result<bool, Ending> {
        let started = std::time::Instant::now();
        self.db.wait_roles_checked().await;
        // A failover while waiting sends the request to the new primary; bounded in case roles flap.
        for _ in 0..100 {
            let decision = self.decide_first();
            tracing::debug!(client = %self.reg.info.addr, backend = decision.backend, reason = decision.reason, "routed");
            let pool = self.pools.pools[decision.backend].clone();
            let replica = decision.backend != self.db.primary_index();
            let db = self.db.clone();
            // A replica banned while the client waits for one of its connections is left for
            // another server at once, not after query_wait_timeout.
            let still_primary = move || {
                if replica {
                    !db.backends[decision.backend].is_banned()
                } else {
                    db.primary_index() == decision.backend
                }
            };
            match self.attach(&pool, replica, &still_primary).await {
                Ok(()) => {
                    let backend = self.db.backends[decision.backend].clone();
                    let counter = if decision.may_write { &backend.writes } else { &backend.reads };
                    counter.fetch_add(1, Relaxed);
                    let creates_unlogged =
                        decision.reason == "select_into" && super::function_ddl::mentions_unlogged(&self.buf);
                    self.attachment = Some(Attachment {
                        backend: decision.backend,
                        may_write: decision.may_write,
                        executed: false,
                        creates_unlogged,
                        prepared_only: decision.reason == "describe_batch",
                        _outstanding: Outstanding::new(backend),
                    });
                    return Ok(true);
                }
                Err(CheckoutError::Rerouted) if self.reg.info.take_cancel() => {
                    self.record_unsent(SqlState::QUERY_CANCELED.code(), started.elapsed());
                    self.drop_cancelled_request().await?;
                    return Ok(false);
                }
                Err(CheckoutError::Rerouted) => continue,
                Err(CheckoutError::Closed) if self.follow_reconfigured_database() => {
                    self.db.wait_roles_checked().await;
                }
                Err(CheckoutError::ClientGone) => return Err(Ending::ClientGone),
                Err(e @ (CheckoutError::Closing | CheckoutError::QueryTimeout)) => {
                    return Err(self.refused_unsent(e, started))
                }
                Err(e) if replica && !e.is_login_refusal() => {
                    let ban = self.db.routing.load().ban_time.get().as_millis() as u64;
                    self.db.backends[decision.backend].ban(ban, &e.to_string());
                }
                Err(e) => return Err(self.refused_unsent(e, started)),
            }
        }
        Err(Ending::Fatal(super::welcome::checkout_error(CheckoutError::Closed, &self.db.name)))
    }

    /// The FATAL that ends a client whose request got no server, counted as its statement's failure.
    fn refused_unsent(&self, e: CheckoutError, started: std::time::Instant) -> Ending {
        if matches!(e, CheckoutError::WaitTimeout(_)) {
            super::pin_release::warn_if_pins_hold_the_servers(&self.shared, &self.db.name);
        }
        let error = super::welcome::checkout_error(e, &self.db.name);
        self.record_unsent(error.code.code(), started.elapsed());
        Ending::Fatal(error)
    }

    /// The replica group again when a reload changed the database's routing settings since it was
    /// found (tag rules apply to connected clients too, helper-170).
    fn refresh_tag(&mut self) {
        let routing = self.db.routing.load();
        if !self.tag_from.as_ref().is_some_and(|from| Arc::ptr_eq(from, &routing)) {
            self.find_tag();
        }
    }

    /// The replica group of the client's database's tag rules, for its application_name now.
    pub(super) fn find_tag(&mut self) {
        self.tag_from = Some(self.db.routing.load_full());
        let application_name = self.reg.info.application_name.lock().clone();
        self.tag = super::replica_tag(&self.db, &self.user, &application_name);
    }

    /// The client's database was reconfigured by a reload (its servers changed) and its pools
    /// retired: the client carries on with the database as it is now, as PgBouncer's clients do.
    /// False when the database is gone.
    fn follow_reconfigured_database(&mut self) -> bool {
        let Ok((db, pools)) = self.shared.pools_for(&self.db.name, &self.user) else { return false };
        if Arc::ptr_eq(&db, &self.db) {
            return false;
        }
        tracing::info!(client = %self.reg.info.addr, database = %db.name, "the database's servers changed: the client goes on with the new ones");
        // The client counts in its pools' clients (SHOW DATABASES, cl_active): it moves with it.
        self.pools.clients.fetch_sub(1, Relaxed);
        pools.clients.fetch_add(1, Relaxed);
        self.db = db;
        self.pools = pools;
        self.find_tag();
        true
    }

    /// The request at the front was cancelled before any server saw it: it is dropped (a simple
    /// Query, a fastpath FunctionCall, or an extended batch through its Sync) and answered as
    /// PostgreSQL answers a cancelled statement. An extended batch whose Sync has not come yet (a
    /// pipeline that Flushed) gets the error now, and the client's messages are dropped up to that
    /// Sync, which is answered then, as PostgreSQL skips to Sync after an error.
    pub(super) async fn drop_cancelled_request(&mut self) -> Result<(), Ending> {
        let mut frames = pgpilot_wire::FrontendFrames::new(&self.buf, &self.limits);
        // A FunctionCall, like a Query, is a request of its own, answered with ReadyForQuery.
        let ended = frames.any(|f| matches!(f.tag, b'Q' | b'S' | b'F'));
        let pos = frames.consumed();
        self.count_input_without_server(&self.buf[..pos]);
        self.buf.advance(pos);
        let mut out = BytesMut::new();
        PgError::error(SqlState::QUERY_CANCELED, "canceling statement due to user request").encode(&mut out);
        if ended {
            backend::ready_for_query(&mut out, self.status);
        } else {
            self.discard_to_sync = true;
        }
        self.write(&out).await
    }

    /// Ends the attachment's bookkeeping: a transaction that may have written on the primary moves
    /// the client's read-your-writes mark.
    pub(super) fn end_attachment(&mut self) {
        if let Some(a) = self.attachment.take() {
            // Only reads that could go to a replica need the mark.
            if a.may_write && a.executed && a.backend == self.db.primary_index() && self.db.splits_reads() {
                self.write_mark.committed(crate::routing::backend::now_ms());
            }
        }
    }

    /// `SET pgpilot.route = ...`: pgpilot's own settings are applied here and never reach a server.
    /// Read from the text, not the grammar: `primary` is a reserved word PostgreSQL would reject.
    /// Returns the CommandComplete tag when the statement is such a setting, or the error a value
    /// it does not take gets (as PostgreSQL's for an enum setting: 22023).
    pub(super) fn apply_pgpilot_settings(&mut self, sql: &str) -> Option<Result<&'static str, PgError>> {
        let (setting, tag) = match read_own_setting(sql)? {
            Ok(read) => read,
            Err(refused) => return Some(Err(refused)),
        };
        if setting != OwnSetting::Local
            && self.status != pgpilot_wire::backend::TxnStatus::Idle
            && self.pgpilot_settings_before.is_none()
        {
            self.pgpilot_settings_before = Some((self.route, self.cache_off));
        }
        match setting {
            // Routing cannot change inside a transaction, and outside one SET LOCAL does nothing.
            OwnSetting::Local => {}
            OwnSetting::Route(route) => self.route = route,
            OwnSetting::Cache { on } => self.cache_off = !on,
        }
        Some(Ok(tag))
    }

    /// Counts the Parse and Bind messages of `input`, client messages answered (or dropped) without
    /// a server, in the statistics of the database's primary pool.
    pub(super) fn count_input_without_server(&self, input: &[u8]) {
        let mut counts = crate::stats::PreparedCounts::default();
        for frame in pgpilot_wire::FrontendFrames::new(input, &self.limits) {
            counts.client_message(frame.tag);
        }
        if !counts.is_empty() {
            self.pools.pools[self.db.primary_index()].stats.prepared(counts);
        }
    }

    /// Answers a statement pgpilot handled itself, with an error.
    pub(super) async fn refuse_locally(&mut self, total: usize, error: &PgError) -> Result<(), Ending> {
        use bytes::Buf;
        self.buf.advance(total);
        let mut out = BytesMut::with_capacity(128);
        error.encode(&mut out);
        backend::ready_for_query(&mut out, self.status);
        self.write(&out).await
    }

    /// A named statement the client prepares now: under its search_path and the settings that
    /// decide what its constants mean, and of the result type its text has now.
    pub(super) fn new_statement(
        &self,
        query: &[u8],
        param_types: &[u8],
    ) -> Arc<crate::pool::statements::PreparedStatement> {
        let may_change_session = super::frontend::parsed_text_look(query).may_change_session();
        let context = if self.parse_settings_in_flux {
            Some(format!("unsettled, client {}\0", self.reg.info.id))
        } else {
            self.parse_context()
        };
        let stmt = crate::pool::statements::PreparedStatement::under(
            query,
            param_types,
            context.as_deref(),
            may_change_session,
        );
        stmt.epoch.store(self.shared.statement_epochs.current(stmt.hash), Relaxed);
        stmt
    }

    /// What a server copy of a statement prepared now depends on besides its text: PostgreSQL
    /// converts its text from the client's encoding, reads its names by the search_path, and its
    /// literals (`'03/04/2024'::date`, `'a\\b'`, `'12:00'::timestamptz`) and the constants it
    /// folds (`0.1::float8::text`, `'\\x01'::bytea::text`) by these settings, once, when it is
    /// prepared. Clients share server copies, so a copy prepared under other values is another
    /// statement. None when the client set none of them (no allocation).
    fn parse_context(&self) -> Option<String> {
        let mut context: Option<String> = None;
        for name in PARSE_SETTINGS {
            if let Some(value) = self.params.get(name) {
                let c = context.get_or_insert_with(String::new);
                c.push_str(name);
                c.push('=');
                c.push_str(value);
                c.push('\0');
            }
        }
        context
    }

    /// RESET ALL and DISCARD ALL reset pgpilot's own settings too.
    pub(super) fn reset_pgpilot_settings(&mut self) {
        self.route = SessionRoute::default();
        self.cache_off = false;
    }

    /// Whether a Parse may take `name`, after the batch's earlier `actions`.
    fn name_free(&self, name: &[u8], actions: &[LocalAction]) -> bool {
        let last = actions.iter().rev().find_map(|a| match a {
            LocalAction::Close(n) if **n == *name => Some(true),
            LocalAction::Prepare(n, _) if **n == *name => Some(false),
            _ => None,
        });
        last.unwrap_or_else(|| !self.statements.named.contains_key(name) && !self.is_sql_prepared(name))
    }

    /// Whether the client made a statement of this name with SQL PREPARE (one namespace with Parse).
    pub(super) fn is_sql_prepared(&self, name: &[u8]) -> bool {
        std::str::from_utf8(name).is_ok_and(|n| self.statements.sql.contains_key(n))
    }

    /// A batch of nothing but Parse and Close of named statements (and Flush), ended by Sync, outside
    /// a transaction, when no server is free: in transaction pooling pgpilot answers it without
    /// taking one. Drivers prepare and drop statements this way (libpq's PQprepare); a prepared
    /// statement reaches a server with its first Bind. Holding no server here keeps a client that
    /// prepares synchronously (pgbench -M prepared) from waiting on servers its own thread's other
    /// clients hold. A server that is free checks the Parse as PostgreSQL would (a table that does
    /// not exist, a type that does not match): only the grammar is checked here.
    pub(super) async fn statements_locally(&mut self) -> Result<bool, Ending> {
        use bytes::Buf;
        let pool = &self.pools.pools[self.db.primary_index()];
        if self.mode != PoolMode::Transaction
            || self.status != pgpilot_wire::backend::TxnStatus::Idle
            || pool.settings.load().max_prepared == 0
        {
            return Ok(false);
        }
        let mut actions = Vec::new();
        let mut frames = pgpilot_wire::FrontendFrames::new(&self.buf, &self.limits);
        loop {
            let Some(frame) = frames.next() else { return Ok(false) };
            let body = frame.body();
            match frame.tag {
                // A statement made with SQL PREPARE lives on a server: closing it takes one.
                b'C' => match frontend::parse_target(body) {
                    Some((b'S', name)) if !name.is_empty() && !self.is_sql_prepared(name) => {
                        actions.push(LocalAction::Close(name.into()))
                    }
                    _ => return Ok(false),
                },
                b'P' => match frontend::parse_parse(body) {
                    // Only text the grammar accepts is acknowledged without a server.
                    // A name in use fails, on a server (frontend.rs), unless this batch closed it.
                    Some(p)
                        if !p.name.is_empty() && self.parses(p.query) && self.name_free(p.name, &actions) =>
                    {
                        let stmt = self.new_statement(p.query, p.param_types);
                        actions.push(LocalAction::Prepare(p.name.into(), stmt));
                    }
                    _ => return Ok(false),
                },
                b'H' => {}
                b'S' => break,
                _ => return Ok(false),
            }
        }
        let pos = frames.consumed();
        let prepares = actions.iter().any(|a| matches!(a, LocalAction::Prepare(..)));
        if prepares && self.server_free_for_request() {
            return Ok(false);
        }
        let mut out = BytesMut::with_capacity(actions.len() * 5 + 6);
        for action in actions {
            match action {
                LocalAction::Close(name) => {
                    self.statements.close(&name);
                    out.extend_from_slice(super::expect::CLOSE_COMPLETE);
                }
                LocalAction::Prepare(name, stmt) => {
                    self.statements.prepare_unchecked(name, stmt);
                    out.extend_from_slice(super::expect::PARSE_COMPLETE);
                }
            }
        }
        backend::ready_for_query(&mut out, self.status);
        self.count_input_without_server(&self.buf[..pos]);
        self.buf.advance(pos);
        self.write(&out).await?;
        Ok(true)
    }

    /// Whether the server the buffered request would run on can be had without waiting.
    fn server_free_for_request(&mut self) -> bool {
        let backend = self.decide_first().backend;
        self.pools.pools[backend].has_free_server()
    }

    /// The grammar accepts it as one statement (or none): PostgreSQL refuses several in a Parse
    /// (42601), which the server says when it gets the Parse.
    fn parses(&self, query: &[u8]) -> bool {
        std::str::from_utf8(query).is_ok_and(|sql| {
            let stmt = self.shared.classifier.classify(sql);
            stmt.parse_error.is_none() && stmt.statement_count <= 1
        })
    }

    /// Answers a Query pgpilot handled itself: CommandComplete and ReadyForQuery.
    pub(super) async fn answer_locally(&mut self, total: usize, tag: &str) -> Result<(), Ending> {
        use bytes::Buf;
        self.buf.advance(total);
        let mut out = BytesMut::with_capacity(32);
        backend::command_complete(&mut out, tag);
        backend::ready_for_query(&mut out, self.status);
        self.write(&out).await
    }
}

/// What the statements of an extended batch do, as far as it has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchReads {
    /// Each reads, up to the batch's Sync.
    ToSync,
    /// One may write, or the batch asked for answers (Flush) or ended otherwise.
    Not,
    /// Each reads so far, and the rest has not arrived.
    Unfinished,
}

/// The most of a batch a client's input holds while it waits for the rest (`awaits_rest_of_batch`):
/// beyond it the batch is placed as it is.
const BATCH_WAIT_LIMIT: usize = 64 * 1024;

/// A batch, as far as it has arrived, of Parse, Describe and Close of statements and Flush only:
/// nothing in it runs.
fn describe_only(batch: &[u8], limits: &pgpilot_wire::frame::Limits) -> bool {
    let mut frames = pgpilot_wire::FrontendFrames::new(batch, limits);
    frames.all(|f| match f.tag {
        b'P' | b'H' => true,
        b'D' | b'C' => f.body().first() == Some(&b'S'),
        _ => false,
    })
}

/// The settings a statement is parsed and planned under that change what it means or returns
/// (see `parse_context`).
const PARSE_SETTINGS: [&str; 13] = [
    "search_path",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "extra_float_digits",
    "bytea_output",
    // The text itself is converted from the client's encoding when it is parsed.
    "client_encoding",
    // `x = NULL` is rewritten to `x IS NULL` at parse time.
    "transform_null_equals",
    // How array and XML literals, backslashes and money literals are read.
    "array_nulls",
    "xmloption",
    "backslash_quote",
    "lc_monetary",
];

pub(super) fn is_parse_setting(name: &str) -> bool {
    PARSE_SETTINGS.iter().any(|s| s.eq_ignore_ascii_case(name))
}

/// A SET or RESET of pgpilot's own settings, read and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnSetting {
    /// `SET LOCAL pgpilot.x`: accepted, with no effect.
    Local,
    Route(SessionRoute),
    Cache {
        on: bool,
    },
}

/// `sql` as a SET or RESET of pgpilot's own settings, with its CommandComplete tag; the error a
/// value the setting does not take gets (as PostgreSQL's for an enum setting: 22023); None when
/// `sql` is no such statement.
fn read_own_setting(sql: &str) -> Option<Result<(OwnSetting, &'static str), PgError>> {
    if !maybe_pgpilot_setting(sql.as_bytes()) {
        return None;
    }
    let sql = &*without_comments(sql);
    if is_local_pgpilot_setting(sql) {
        return Some(Ok((OwnSetting::Local, "SET")));
    }
    let (name, value) = pgpilot_setting(sql)?;
    let tag = if value.is_some() { "SET" } else { "RESET" };
    let refused = |hint: &str| {
        let shown = value.as_deref().unwrap_or_default().trim_matches(|c| c == '\'' || c == '"');
        PgError::error(
            SqlState::INVALID_PARAMETER_VALUE,
            format!("invalid value for parameter \"{name}\": \"{shown}\""),
        )
        .with_hint(format!("Available values: {hint}."))
    };
    let setting = match name.as_str() {
        "pgpilot.route" => match value.as_deref().map(SessionRoute::parse) {
            None => OwnSetting::Route(SessionRoute::default()),
            Some(Some(route)) => OwnSetting::Route(route),
            Some(None) => return Some(Err(refused("auto, primary, replica"))),
        },
        "pgpilot.cache" => match value.as_deref().map(switch) {
            None => OwnSetting::Cache { on: true },
            Some(Some(on)) => OwnSetting::Cache { on },
            Some(None) => return Some(Err(refused("on, off"))),
        },
        _ => return None,
    };
    Some(Ok((setting, tag)))
}

/// Whether `sql` is SET or RESET of pgpilot's own settings with a value it takes.
pub(super) fn takes_pgpilot_setting(sql: &str) -> bool {
    matches!(read_own_setting(sql), Some(Ok(_)))
}

/// A boolean setting's value, as PostgreSQL spells them (quoted or not); None for anything else.
fn switch(value: &str) -> Option<bool> {
    match value.trim_matches(|c| c == '\'' || c == '"').to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "t" | "y" => Some(true),
        "off" | "false" | "no" | "0" | "f" | "n" => Some(false),
        _ => None,
    }
}

/// A cheap first look, on every Query: only SET/RESET texts naming pgpilot.* go further.
pub fn maybe_pgpilot_setting(text: &[u8]) -> bool {
    let start = text.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(text.len());
    let t = &text[start..];
    let stripped;
    let t = if t.starts_with(b"/*") || t.starts_with(b"--") {
        // Tools that tag statements (sqlcommenter, marginalia) put comments first.
        stripped = without_comments(&String::from_utf8_lossy(t)).trim_start().to_string();
        stripped.as_bytes()
    } else {
        t
    };
    let verb = t.len() >= 5 && (t[..3].eq_ignore_ascii_case(b"set") || t[..5].eq_ignore_ascii_case(b"reset"));
    verb && t.windows(8).any(|w| w.eq_ignore_ascii_case(b"pgpilot."))
}

/// `sql` with its comments (outside quotes) replaced by a space.
pub(super) fn without_comments(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains("--") && !sql.contains("/*") {
        return std::borrow::Cow::Borrowed(sql);
    }
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                out.push_str(&sql[copied..i]);
                out.push(' ');
                i = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p);
                copied = i;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                out.push_str(&sql[copied..i]);
                out.push(' ');
                i = pgpilot_sql::normalize::block_comment_end(b, i);
                copied = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&sql[copied.min(sql.len())..]);
    std::borrow::Cow::Owned(out)
}

/// `SET [SESSION] pgpilot.x = v`, `SET pgpilot.x TO v`, `RESET pgpilot.x` (one statement, any case,
/// quotes optional): the name and the value (None for RESET or DEFAULT).
/// `SET LOCAL pgpilot.x ...`: accepted, with no effect.
fn is_local_pgpilot_setting(sql: &str) -> bool {
    let mut words = sql.split_whitespace();
    let mut next_is = |w: &str| words.next().is_some_and(|x| x.eq_ignore_ascii_case(w));
    next_is("set")
        && next_is("local")
        && words.next().is_some_and(|name| name.to_ascii_lowercase().starts_with("pgpilot."))
        && !sql.contains(';')
}

pub fn pgpilot_setting(sql: &str) -> Option<(String, Option<String>)> {
    let text = sql.trim().trim_end_matches(';').trim();
    let lower = text.to_ascii_lowercase();
    let mut words = lower.split_whitespace();
    let verb = words.next()?;
    let rest_start = text.len() - text[verb.len()..].trim_start().len();
    let mut rest = &text[rest_start..];
    if verb == "reset" {
        let name = rest.trim().to_ascii_lowercase();
        return name.starts_with("pgpilot.").then_some((name, None));
    }
    if verb != "set" {
        return None;
    }
    if rest.to_ascii_lowercase().starts_with("session ") {
        rest = rest[8..].trim_start();
    }
    let name_end = rest.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(rest.len());
    let name = rest[..name_end].to_ascii_lowercase();
    if !name.starts_with("pgpilot.") || text.contains(';') {
        return None;
    }
    let mut value = rest[name_end..].trim_start();
    if let Some(v) = value.strip_prefix('=') {
        value = v;
    } else if value.len() > 2 && value[..2].eq_ignore_ascii_case("to") {
        value = &value[2..];
    } else {
        return None;
    }
    let value = value.trim().trim_matches(|c| c == '\'' || c == '"').to_ascii_lowercase();
    Some((name, (value != "default").then_some(value)))
}

/// A search_path setting as the session last read it: the raw value, whom `$user` named, and
/// the schemas.
pub(super) struct SearchPath(String, String, Vec<String>);

/// The role a `role` setting's SQL text names (`'alice'`, as SET ROLE's value is kept, or a
/// plain name from set_config).
fn role_name(value: &str) -> Cow<'_, str> {
    match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(quoted) if quoted.contains("''") => Cow::Owned(quoted.replace("''", "'")),
        Some(quoted) => Cow::Borrowed(quoted),
        None => Cow::Borrowed(value),
    }
}

#[cfg(test)]
mod tests {
    use super::pgpilot_setting;

    #[test]
    fn pgpilot_settings_are_read_from_the_text() {
        assert_eq!(
            pgpilot_setting("SET pgpilot.route = primary"),
            Some(("pgpilot.route".into(), Some("primary".into())))
        );
        assert_eq!(
            pgpilot_setting("set session PGPILOT.ROUTE to 'Replica';"),
            Some(("pgpilot.route".into(), Some("replica".into())))
        );
        assert_eq!(pgpilot_setting("SET pgpilot.route TO DEFAULT"), Some(("pgpilot.route".into(), None)));
        assert_eq!(pgpilot_setting("RESET pgpilot.route"), Some(("pgpilot.route".into(), None)));
        assert_eq!(pgpilot_setting("SET search_path = x"), None);
        assert_eq!(pgpilot_setting("SET pgpilot.route = primary; DROP TABLE x"), None);
        assert!(super::is_local_pgpilot_setting("set LOCAL pgpilot.route = primary"));
        // Comments that tools add before or after a statement.
        for tagged in [
            "/* app:x */ SET pgpilot.route = primary",
            "-- note\nSET pgpilot.route = primary",
            "SET pgpilot.route = primary /* app:x, q:'--' */",
            "SET pgpilot.route = primary -- note",
            "SET pgpilot.route /* a /* nested */ one */ = primary;",
        ] {
            assert!(super::maybe_pgpilot_setting(tagged.as_bytes()), "{tagged}");
            let sql = super::without_comments(tagged);
            assert_eq!(
                pgpilot_setting(&sql),
                Some(("pgpilot.route".into(), Some("primary".into()))),
                "{tagged}"
            );
        }
        assert_eq!(&*super::without_comments("SET x = '--not a comment'"), "SET x = '--not a comment'");
        assert!(!super::maybe_pgpilot_setting(b"/* SET pgpilot.route = primary */ SELECT 1"));
        assert!(!super::is_local_pgpilot_setting("SET LOCAL search_path = x"));
    }
}
