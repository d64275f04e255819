//! The session's side of the result cache: a request that arrives while no server is attached is
//! looked up first (simple Query, or a whole Parse/Bind/Describe/Execute/Sync batch), answered
//! from memory on a hit without taking a server, and on a miss marked for a fill that the flow
//! collects from the server's answer. Writes are noted as they pass (`invalidation_of_text`) and
//! invalidate before their commit reaches the client (see `backend::ready`).

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use pgpilot_wire::backend::{self, TxnStatus};
use pgpilot_wire::frame::Header;
use pgpilot_wire::frontend;

use super::client::{Ending, Session};
use super::expect::{BIND_COMPLETE, PARSE_COMPLETE};
use crate::cache::key::{self, Protocol};
use crate::cache::{Bypass, Entry, Fill, Invalidation, ReadPlan};
use crate::config::cache::Consistency;
use crate::config::PoolMode;
use crate::pool::statements::PreparedStatement;

/// One message of an extended batch, as far as the answer goes.
#[derive(Debug, Clone, Copy)]
enum Step {
    Parse,
    Bind,
    DescribePortal,
    DescribeStatement,
    Execute,
    Flush,
    Sync,
}

/// A Parse of the batch: name, text, parameter types.
struct ParseMsg {
    name: Box<[u8]>,
    query: Arc<[u8]>,
    param_types: Box<[u8]>,
}

/// A Bind of the batch: portal, statement, the rest of the message (formats, values).
struct BindMsg {
    portal: Box<[u8]>,
    statement: Box<[u8]>,
    rest: Box<[u8]>,
}

/// An extended batch as the client sent it.
struct Batch {
    steps: Vec<Step>,
    parse: Option<ParseMsg>,
    bind: BindMsg,
    /// The Execute's row limit (asyncpg's fetchrow asks for one row); 0 for all.
    max_rows: u32,
    len: usize,
}

/// A cacheable request, read from the client's buffer.
struct Request {
    protocol: Protocol,
    text: Arc<[u8]>,
    param_types: Box<[u8]>,
    bind_rest: Box<[u8]>,
    /// The Execute's row limit, 0 for all.
    max_rows: u32,
    steps: Vec<Step>,
    /// A named statement the batch prepares: registered for the client on a hit.
    prepares: Option<(Box<[u8]>, Arc<PreparedStatement>)>,
    /// The batch parses the unnamed statement: on a hit it is still the client's.
    parses_unnamed: bool,
    /// Bytes of the client's buffer the request takes.
    len: usize,
}

impl Session {
    /// Looks the buffered request up in the cache; true when it was answered from there.
    pub(super) async fn answer_from_cache(&mut self, h: Header) -> Result<bool, Ending> {
        let started = std::time::Instant::now();
        let cache = self.shared.clone();
        let stats = &cache.cache.stats;
        if self.cache_off {
            stats.bypass(Bypass::SessionOff);
            return Ok(false);
        }
        if self.status != TxnStatus::Idle && !self.read_only_txn {
            stats.bypass(Bypass::InTransaction);
            return Ok(false);
        }
        if self.cache_identity_changed {
            stats.bypass(Bypass::Identity);
            return Ok(false);
        }
        if !self.db.cache.channel.serving() || !cache.cache.serving() {
            stats.bypass(Bypass::ChannelDown);
            return Ok(false);
        }
        let request = match h.tag {
            b'Q' => self.simple_request(h),
            b'P' | b'B' => match self.extended_request() {
                Ok(r) => r,
                Err(why) => {
                    why.into_iter().for_each(|b| stats.bypass(b));
                    return Ok(false);
                }
            },
            _ => None,
        };
        let Some(request) = request else { return Ok(false) };
        let Ok(sql) = std::str::from_utf8(&request.text) else { return Ok(false) };
        let sql = &*self.for_reading(std::borrow::Cow::Borrowed(sql));
        if crate::shapes::look_of(sql).plain_write {
            // No parse for a write here: its flow classifies it once for invalidation.
            stats.bypass(Bypass::Statement(pgpilot_sql::NotCacheable::NotASelect));
            return Ok(false);
        }
        if binds_time_literal(&request) {
            stats.bypass(Bypass::Statement(pgpilot_sql::NotCacheable::TimeLiteral));
            return Ok(false);
        }
        self.refresh_search_path();
        let stmt = cache.classifier.classify(sql);
        let functions = self.db.functions.load();
        let plan = match self.db.cache.plan_read(&stmt, &functions, self.known_schemas()) {
            Ok(p) => p,
            Err(why) => {
                stats.bypass(why);
                return Ok(false);
            }
        };
        let pg_snapshot = match plan.consistency {
            Consistency::Bounded => None,
            Consistency::Strict if !self.db.cache.channel.required() => {
                stats.bypass(Bypass::StrictUnavailable);
                return Ok(false);
            }
            Consistency::Strict => match self.db.cache.oracle.versions(&cache, &self.db).await {
                Some(map) => Some(crate::cache::oracle::sum(&map, &plan.watched)),
                None => {
                    stats.bypass(Bypass::ChannelDown);
                    return Ok(false);
                }
            },
        };
        // Not kept in the session: an idle client holds no buffer.
        let mut key_buf = Vec::with_capacity(request.text.len() + request.bind_rest.len() + 256);
        let ext =
            (request.protocol == Protocol::Extended).then_some((&*request.param_types, &*request.bind_rest));
        key::build(
            &mut key_buf,
            request.protocol,
            &self.db.name,
            &self.user,
            &self.params,
            &request.text,
            ext,
        );
        if request.max_rows != 0 {
            key::row_limit(&mut key_buf, request.max_rows);
        }
        let hash = cache.cache.hash(&key_buf);
        let fresh = |e: &Arc<Entry>| e.pg_snapshot == pg_snapshot;
        let mut found = cache.cache.get(&self.db.cache, hash, &key_buf).filter(fresh);
        if found.is_none() {
            found = cache.cache.get_shared(&self.db.name, &self.db.cache, hash, &key_buf, pg_snapshot).await;
        }
        let mut fill = None;
        if found.is_none() {
            match cache.cache.begin_fill(hash) {
                Ok(guard) => fill = Some(guard),
                Err(mut rx) => {
                    stats.fill_waits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let wait = cache.cache.global.load().fill_wait.get();
                    let _ = tokio::time::timeout(wait, rx.changed()).await;
                    found = cache.cache.get(&self.db.cache, hash, &key_buf).filter(fresh);
                }
            }
        }
        let answered = match found {
            Some(entry) => self.answer_hit(&request, &entry, &stmt.normalized, started).await?,
            None => false,
        };
        if !answered && fill.is_none() {
            // Found but lacking a part this batch asks for (a Describe), or filled meanwhile by a
            // client whose answer could not be stored: fill it again.
            fill = cache.cache.begin_fill(hash).ok();
        }
        if !answered {
            stats.lookup(plan.fingerprint, &stmt.normalized, false);
            if let Some(guard) = fill {
                let snapshot = self.db.cache.versions.snapshot(&plan.relations, &plan.tags);
                let max_bytes = cache.cache.global.load().max_entry_bytes as usize;
                let mut fill = new_fill(hash, &key_buf, plan, snapshot, max_bytes, guard);
                fill.read_sent_us = crate::cache::versions::now_us();
                fill.row_limited = request.max_rows != 0;
                fill.pg_snapshot = pg_snapshot;
                self.pending_fill = Some(Box::new(fill));
            }
        }
        Ok(answered)
    }

    /// Writes a hit; false when the entry lacks a part this batch asks for (a Describe the fill
    /// did not see).
    async fn answer_hit(
        &mut self,
        request: &Request,
        entry: &Entry,
        normalized: &str,
        started: std::time::Instant,
    ) -> Result<bool, Ending> {
        let mut out = BytesMut::with_capacity(entry.body.len() + 128);
        for step in &request.steps {
            match step {
                Step::Parse => out.extend_from_slice(PARSE_COMPLETE),
                Step::Bind => out.extend_from_slice(BIND_COMPLETE),
                Step::DescribeStatement => {
                    let (Some(p), Some(r)) = (&entry.param_description, &entry.statement_row_description)
                    else {
                        return Ok(false);
                    };
                    out.extend_from_slice(p);
                    out.extend_from_slice(r);
                }
                Step::DescribePortal => match &entry.row_description {
                    Some(r) => out.extend_from_slice(r),
                    None => return Ok(false),
                },
                Step::Execute => {
                    if request.protocol == Protocol::Simple {
                        match &entry.row_description {
                            Some(r) => out.extend_from_slice(r),
                            None => return Ok(false),
                        }
                    }
                    out.extend_from_slice(&entry.body);
                }
                Step::Flush => {}
                Step::Sync => backend::ready_for_query(&mut out, self.status),
            }
        }
        if let Some((name, stmt)) = &request.prepares {
            self.statements.named.insert(name.clone(), stmt.clone());
        }
        match request.protocol {
            Protocol::Extended if request.parses_unnamed => {
                self.remember_unnamed(&request.text, &request.param_types);
            }
            Protocol::Extended => {}
            // A simple Query destroys the unnamed statement.
            Protocol::Simple => self.unnamed = None,
        }
        self.count_input_without_server(&self.buf[..request.len]);
        self.buf.advance(request.len);
        let stats = &self.shared.cache.stats;
        // Counted before the client can see the answer.
        stats.lookup(entry.fingerprint, normalized, true);
        let took = started.elapsed();
        stats.hit_times[entry.pg_snapshot.is_some() as usize].record(took);
        self.observe_hit(request, entry, took);
        stats.hit_bytes.fetch_add(out.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.reg.info.touch();
        self.write(&out).await?;
        Ok(true)
    }

    /// A statement answered from the cache counts in the workload statistics too, as a call that
    /// ran in the cache.
    fn observe_hit(&self, request: &Request, entry: &Entry, took: std::time::Duration) {
        let insight = &self.shared.insight;
        if !insight.enabled() {
            return;
        }
        let key = match request.protocol {
            Protocol::Simple => super::observe::reread_key(self, &request.text)
                .unwrap_or_else(|| crate::insight::QueryKey::of(&request.text, false).0),
            Protocol::Extended => super::observe::statement_key(self, &request.text),
        };
        insight.record(&crate::insight::StatementEvent {
            fingerprint: key.fingerprint,
            normalized: &key.normalized,
            database: &self.db.name,
            user: &self.user,
            duration: took,
            wait: std::time::Duration::ZERO,
            rows: rows_of(&entry.body),
            error: None,
            target: crate::insight::Target::Cache,
            client_addr: &self.reg.info.addr,
            server: "cache",
            parameters: None,
            client_params: Some(&self.params),
        });
    }

    fn simple_request(&self, h: Header) -> Option<Request> {
        let text = frontend::parse_query(&self.buf[5..h.total])?;
        Some(Request {
            protocol: Protocol::Simple,
            text: Arc::from(text),
            param_types: Box::default(),
            bind_rest: Box::default(),
            max_rows: 0,
            steps: vec![Step::Execute, Step::Sync],
            prepares: None,
            parses_unnamed: false,
            len: h.total,
        })
    }

    /// A whole extended batch ending with Sync: at most one Parse, one Bind of it (or of a
    /// statement prepared before), at most one Describe, one Execute without a row limit.
    /// Err(None): not a batch the cache answers; Err(Some): one it refuses for a counted reason.
    fn extended_request(&self) -> Result<Option<Request>, Option<Bypass>> {
        let max_prepared = self.pools.pools[self.db.primary_index()].settings.load().max_prepared;
        if self.mode != PoolMode::Transaction || max_prepared == 0 {
            return Err(Some(Bypass::UnknownStatement));
        }
        let Some(batch) = self.scan_batch()? else { return Ok(None) };
        if batch.max_rows != 0 && self.status != TxnStatus::Idle {
            // Inside a transaction the portal outlives the Sync: the client may fetch more of it.
            return Err(Some(Bypass::PartialFetch));
        }
        let parses_unnamed = batch.parse.as_ref().is_some_and(|p| p.name.is_empty());
        let (text, param_types, prepares) = match batch.parse {
            Some(p) if p.name == batch.bind.statement => {
                let prepares = (!p.name.is_empty()).then(|| {
                    let stmt = self.new_statement(&p.query, &p.param_types);
                    (p.name.clone(), stmt)
                });
                (p.query, p.param_types, prepares)
            }
            Some(_) => return Err(None),
            None if batch.bind.statement.is_empty() => return Err(Some(Bypass::UnknownStatement)),
            None => {
                let stmt =
                    self.statements.named.get(&batch.bind.statement).ok_or(Some(Bypass::UnknownStatement))?;
                (Arc::from(&*stmt.query), stmt.param_types.clone(), None)
            }
        };
        Ok(Some(Request {
            protocol: Protocol::Extended,
            text,
            param_types,
            bind_rest: batch.bind.rest,
            max_rows: batch.max_rows,
            steps: batch.steps,
            prepares,
            parses_unnamed,
            len: batch.len,
        }))
    }

    /// Reads the buffered batch up to its Sync; Ok(None) when it is not all there yet.
    fn scan_batch(&self) -> Result<Option<Batch>, Option<Bypass>> {
        let mut frames = pgpilot_wire::FrontendFrames::new(&self.buf, &self.limits);
        let mut steps = Vec::with_capacity(5);
        let mut parse: Option<ParseMsg> = None;
        let mut bind: Option<BindMsg> = None;
        let executed = |steps: &[Step]| steps.iter().any(|s| matches!(s, Step::Execute));
        let mut limit = 0;
        loop {
            let Some(frame) = frames.next() else { return Ok(None) };
            let body = frame.body();
            match (frame.tag, bind.as_ref()) {
                (b'P', None) if parse.is_none() => {
                    let p = frontend::parse_parse(body).ok_or(None)?;
                    parse = Some(ParseMsg {
                        name: p.name.into(),
                        query: Arc::from(p.query),
                        param_types: p.param_types.into(),
                    });
                    steps.push(Step::Parse);
                }
                (b'B', None) => {
                    let b = frontend::parse_bind(body).ok_or(None)?;
                    bind = Some(BindMsg {
                        portal: b.portal.into(),
                        statement: b.statement.into(),
                        rest: b.rest.into(),
                    });
                    steps.push(Step::Bind);
                }
                (b'D', Some(b)) if !executed(&steps) => match frontend::parse_target(body).ok_or(None)? {
                    (b'P', name) if name == &*b.portal => steps.push(Step::DescribePortal),
                    (b'S', name) if name == &*b.statement => steps.push(Step::DescribeStatement),
                    _ => return Err(None),
                },
                (b'E', Some(b)) if !executed(&steps) => {
                    let (portal, max_rows) = frontend::parse_execute(body).ok_or(None)?;
                    if portal != &*b.portal {
                        return Err(None);
                    }
                    // A limited Execute is cached when its answer is complete (the fill gives up
                    // on PortalSuspended), under a key with the limit.
                    limit = max_rows as u32;
                    steps.push(Step::Execute);
                }
                (b'H', _) => steps.push(Step::Flush),
                (b'S', Some(_)) if executed(&steps) => {
                    steps.push(Step::Sync);
                    let bind = bind.expect("matched Some");
                    return Ok(Some(Batch { steps, parse, bind, max_rows: limit, len: frames.consumed() }));
                }
                _ => return Err(None),
            }
        }
    }

    /// What a statement passing to the server invalidates when its transaction ends.
    pub(super) fn invalidation_of_text(&mut self, text: &[u8]) -> Invalidation {
        // pgpilot's own settings never reach a server, and `primary` does not parse as a value
        // (a reserved word): taken for text it cannot account for, each named-statement SET
        // dropped every result of the database and had the catalog read again.
        if super::local_statements::is_local_setting(text) {
            return Invalidation::Nothing;
        }
        let Ok(sql) = std::str::from_utf8(text) else { return Invalidation::Everything };
        let sql = &*self.for_reading(std::borrow::Cow::Borrowed(sql));
        if crate::shapes::look_of(sql).plain_select && self.db.plain_selects_only_read() {
            return Invalidation::Nothing;
        }
        self.refresh_search_path();
        let stmt = self.shared.classifier.classify(sql);
        if stmt.settings.iter().any(|s| s.action.name() == Some("session_authorization")) {
            self.cache_identity_changed = true;
        }
        self.note_search_path(&stmt.settings);
        let functions = self.db.functions.load();
        let on_request = crate::routing::sent_to_primary_on_request(&stmt, self.route);
        self.db.cache.invalidation_of(&stmt, &functions, self.known_schemas(), on_request)
    }

    /// What a Bind of `statement` (the client's name) invalidates; `unnamed` is what the last
    /// unnamed Parse of this attachment invalidates, if there was one.
    pub(super) fn invalidation_of_bind(
        &mut self,
        statement: &[u8],
        unnamed: Option<&Invalidation>,
    ) -> Invalidation {
        if statement.is_empty() {
            return unnamed.cloned().unwrap_or(Invalidation::Everything);
        }
        match self.statements.named.get(statement).map(|s| s.query.clone()) {
            Some(text) => self.invalidation_of_text(&text),
            None => Invalidation::Everything,
        }
    }

    /// Bumps the versions of what a finished transaction wrote.
    pub(super) fn invalidate(&self, inv: &Invalidation) {
        let n = self.shared.invalidate_cached(&self.db, inv);
        if n > 0 {
            self.shared.cache.stats.invalidations.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            self.shared.cache.publish(&self.db.name, inv);
        }
    }
}

/// A parameter value holding 'now', 'today', 'tomorrow' or 'yesterday' (alone, beside a time, in a
/// range or an array): cast to a date or time type it is the time the server runs the statement,
/// as the same literal in the text would be. Binary values count too: a text parameter's binary
/// form is its text. A value too long to read on every request counts as one (not cached).
fn binds_time_literal(request: &Request) -> bool {
    /// Longer values are not read for the words on every hit: such requests are not cached.
    const SCANNED_MAX: usize = 64 * 1024;
    if request.protocol != Protocol::Extended {
        return false;
    }
    // A malformed Bind is refused by the server: no answer to cache.
    let values = pgpilot_wire::frontend::bind_values(&request.bind_rest).unwrap_or_default();
    values.iter().filter_map(|v| v.bytes).any(|v| v.len() > SCANNED_MAX || pgpilot_sql::mentions_time_word(v))
}

/// The row count of a cached answer, from the CommandComplete that ends it ("SELECT 3"): the
/// last message, found from the end (its tag is short) without walking the rows.
fn rows_of(body: &[u8]) -> u64 {
    let start = (0..body.len().saturating_sub(5)).rev().take(96).find(|&i| {
        body[i] == b'C'
            && u32::from_be_bytes([body[i + 1], body[i + 2], body[i + 3], body[i + 4]]) as usize + 1
                == body.len() - i
    });
    start.map_or(0, |start| backend::rows_in_tag(backend::parse_command_tag(&body[start + 5..])))
}

fn new_fill(
    hash: u64,
    key: &[u8],
    plan: ReadPlan,
    snapshot: u64,
    max_bytes: usize,
    guard: crate::cache::FillGuard,
) -> Fill {
    Fill {
        hash,
        key: key.into(),
        plan,
        snapshot,
        read_sent_us: 0,
        replica: None,
        pg_snapshot: None,
        row_description: None,
        param_description: None,
        statement_row_description: None,
        describing_statement: false,
        body: BytesMut::new(),
        max_bytes,
        row_limited: false,
        _guard: guard,
    }
}
