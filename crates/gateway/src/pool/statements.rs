//! Named prepared statements under transaction pooling. A client's statement is prepared on a
//! server under a name derived from its text and parameter types, so every client that prepares the
//! same statement shares one server-side copy, and names from different clients never collide.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::hashing::{ByHash, ByName};

/// A statement as the client prepared it.
#[derive(Debug)]
pub struct PreparedStatement {
    /// The name pgpilot gives it on servers.
    pub server_name: Box<[u8]>,
    pub query: Box<[u8]>,
    /// Parameter type section of the Parse message, verbatim.
    pub param_types: Box<[u8]>,
    pub hash: u64,
    /// The text may change session state (SET, PREPARE, DEALLOCATE ...): each Bind of it is
    /// classified. Known once at Parse, so a Bind of any other statement looks at no text.
    pub may_change_session: bool,
    /// The result type the client knows, as a generation of this statement (`StatementEpochs`).
    pub epoch: AtomicU32,
    /// The row type the client was told when it described the statement (0: not described), a
    /// hash of each column's name, type and modifier: a copy prepared later on another server
    /// must still have it (see session/row_shape.rs).
    pub row_shape: AtomicU64,
    /// Fingerprint and normalized text for statistics, computed on the first Execute.
    pub insight_key: std::sync::OnceLock<crate::insight::QueryKey>,
    /// When the client prepared it, on pgpilot's prepare clock: a server copy prepared before may
    /// predate DDL the client's own Parse saw.
    pub parsed: u64,
}

/// Orders clients' Parses and server copies' preparations, across all connections.
static PREPARE_CLOCK: AtomicU64 = AtomicU64::new(1);

fn prepare_tick() -> u64 {
    PREPARE_CLOCK.fetch_add(1, Relaxed)
}

/// The prepare clock now: whatever is prepared from here on has this tick or a later one.
pub fn prepare_clock() -> u64 {
    PREPARE_CLOCK.load(Relaxed)
}

/// The name pgpilot prepares the statement with this hash under on the servers.
pub fn server_name(hash: u64) -> String {
    format!("pgpilot_{hash:016x}")
}

/// The same statement whatever statistics it has gathered.
impl PartialEq for PreparedStatement {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.query == other.query && self.param_types == other.param_types
    }
}

impl Eq for PreparedStatement {}

impl PreparedStatement {
    pub fn new(query: &[u8], param_types: &[u8]) -> Arc<PreparedStatement> {
        // Text that is not UTF-8 (another client_encoding) is read as the session reads it.
        let may_change_session =
            pgpilot_sql::quick_look(&String::from_utf8_lossy(query)).may_change_session();
        PreparedStatement::under(query, param_types, None, may_change_session)
    }

    /// A statement prepared under `context`, the client's search_path and the settings that decide
    /// what its literals mean (None: the defaults). The same text under another search_path may
    /// name other tables, under another DateStyle read another date: it is another statement.
    pub fn under(
        query: &[u8],
        param_types: &[u8],
        context: Option<&str>,
        may_change_session: bool,
    ) -> Arc<PreparedStatement> {
        // A fixed seed: the same statement must get the same name on every server and instance.
        let mut h = foldhash::fast::FixedState::with_seed(0x7067_7069_6c6f_7421).build_hasher();
        h.write(query);
        h.write_u8(0);
        h.write(param_types);
        if let Some(context) = context {
            h.write_u8(0);
            h.write(context.as_bytes());
        }
        let hash = h.finish();
        Arc::new(PreparedStatement {
            server_name: server_name(hash).into_bytes().into_boxed_slice(),
            query: query.into(),
            param_types: param_types.into(),
            hash,
            may_change_session,
            epoch: AtomicU32::new(0),
            row_shape: AtomicU64::new(0),
            insight_key: std::sync::OnceLock::new(),
            parsed: prepare_tick(),
        })
    }

    pub fn epoch(&self) -> u32 {
        self.epoch.load(Relaxed)
    }
}

/// Generations of statements whose result type changed on the servers (DDL under a `SELECT *`).
/// Clients share server copies, so the first client to meet the change (PostgreSQL's 0A000 "cached
/// plan must not change result type") cannot be the only one told: every client that prepared the
/// statement before must get that error too, or it decodes rows of the new type with the row
/// description it learned before. A client's statement carries the generation current when it was
/// prepared; a server copy, the generation it was prepared for.
#[derive(Debug, Default)]
pub struct StatementEpochs {
    changed: Mutex<ByHash<u32>>,
    any: AtomicBool,
}

/// Statements remembered at most: beyond, a further changed statement is not tracked.
const EPOCHS_KEPT: usize = 100_000;

impl StatementEpochs {
    /// The current generation of statement `hash` (0 for one never changed: the usual fast path).
    pub fn current(&self, hash: u64) -> u32 {
        if !self.any.load(Relaxed) {
            return 0;
        }
        self.changed.lock().get(&hash).copied().unwrap_or(0)
    }

    /// The server refused a copy prepared for generation `seen`: a new generation begins, unless
    /// another server's refusal began it already.
    pub fn changed(&self, hash: u64, seen: u32) {
        let mut changed = self.changed.lock();
        if changed.len() >= EPOCHS_KEPT && !changed.contains_key(&hash) {
            return;
        }
        let epoch = changed.entry(hash).or_insert(0);
        if *epoch == seen {
            *epoch += 1;
        }
        self.any.store(true, Relaxed);
    }
}

/// One statement prepared on a server.
#[derive(Debug)]
struct ServerCopy {
    stmt: Arc<PreparedStatement>,
    /// The registry's tick at its last use (least recently used first out).
    used: u64,
    /// The generation it was prepared for.
    epoch: u32,
    /// Its row type, fixed when it was prepared: the server returns rows of it or refuses the
    /// Bind (0A000). 0 until described.
    shape: u64,
    /// When it was prepared, on the prepare clock.
    prepared: u64,
}

/// What one server connection has prepared, bounded by max_prepared_statements (least recently
/// used first out), plus SQL-level PREPAREd names.
#[derive(Debug, Default)]
pub struct ServerStatements {
    /// Statement hash → (statement, last use, the generation it was prepared for).
    by_hash: ByHash<ServerCopy>,
    tick: u64,
    /// SQL-level prepared statements (PREPARE name AS ...): name → the PREPARE text.
    pub sql: ByName<String, String>,
    /// Statements whose plan the server refused after DDL, to drop between transactions.
    stale: Vec<u64>,
}

impl ServerStatements {
    /// Whether this exact statement is prepared here and usable; marks it used. A copy the server
    /// refused after DDL does not count: it has to be closed and prepared again.
    /// A copy prepared for an older generation than the client's is stale too.
    pub fn touch(&mut self, stmt: &PreparedStatement) -> bool {
        if self.holds(stmt) {
            self.tick += 1;
            if let Some(copy) = self.by_hash.get_mut(&stmt.hash) {
                copy.used = self.tick;
            }
            return true;
        }
        let older = self.by_hash.get(&stmt.hash).is_some_and(|copy| *copy.stmt == *stmt);
        if older && !self.stale.contains(&stmt.hash) {
            self.stale.push(stmt.hash);
        }
        false
    }

    /// Whether this exact statement is prepared here and usable (not refused after DDL, nor
    /// prepared for an older generation than the client's), without marking it used.
    pub fn holds(&self, stmt: &PreparedStatement) -> bool {
        !self.stale.contains(&stmt.hash)
            && self
                .by_hash
                .get(&stmt.hash)
                .is_some_and(|copy| *copy.stmt == *stmt && copy.epoch >= stmt.epoch())
    }

    /// The row type of the copy of `hash` here, once described (see session/row_shape.rs).
    pub fn shape(&self, hash: u64) -> Option<u64> {
        self.by_hash.get(&hash).map(|copy| copy.shape).filter(|s| *s != 0)
    }

    /// The copy of `hash` here was described: it returns rows of this type.
    pub fn set_shape(&mut self, hash: u64, shape: u64) {
        if let Some(copy) = self.by_hash.get_mut(&hash) {
            copy.shape = shape;
        }
    }

    /// Whether the copy of `stmt` here was prepared before the client's Parse of it: DDL since
    /// may have changed its row type, which the client's own Parse would have seen.
    pub fn prepared_before(&self, stmt: &PreparedStatement) -> bool {
        self.by_hash.get(&stmt.hash).is_some_and(|copy| copy.prepared < stmt.parsed)
    }

    /// The generation the copy of `hash` here was prepared for.
    pub fn epoch(&self, hash: u64) -> Option<u32> {
        self.by_hash.get(&hash).map(|copy| copy.epoch)
    }

    /// Records a statement about to be prepared here; returns the one evicted to stay within `capacity`.
    pub fn insert(
        &mut self,
        stmt: Arc<PreparedStatement>,
        capacity: usize,
    ) -> Option<Arc<PreparedStatement>> {
        self.tick += 1;
        let evicted = if self.by_hash.len() >= capacity.max(1) && !self.by_hash.contains_key(&stmt.hash) {
            let oldest = self.by_hash.iter().min_by_key(|(_, copy)| copy.used).map(|(h, _)| *h);
            oldest.and_then(|h| self.by_hash.remove(&h)).map(|copy| copy.stmt)
        } else {
            None
        };
        let epoch = stmt.epoch();
        let prepared = prepare_tick();
        self.by_hash.insert(stmt.hash, ServerCopy { stmt, used: self.tick, epoch, shape: 0, prepared });
        evicted
    }

    /// The server-side name of the statement `hash` prepared here.
    pub fn server_name(&self, hash: u64) -> Option<Box<[u8]>> {
        self.by_hash.get(&hash).map(|copy| copy.stmt.server_name.clone())
    }

    pub fn mark_stale(&mut self, hash: u64) {
        if !self.stale.contains(&hash) {
            self.stale.push(hash);
        }
    }

    /// Takes `hash` off the stale list; true when it was there, and so still prepared on the
    /// server under its name (the caller closes it before preparing it again).
    pub fn unmark_stale(&mut self, hash: u64) {
        self.stale.retain(|h| *h != hash);
    }

    /// Marks stale every copy prepared at `tick` or later: prepared inside a transaction that
    /// rolled back, a copy may have been planned against DDL the rollback undid, and the server
    /// would refuse it (0A000) to the next client that uses it.
    pub fn mark_stale_prepared_since(&mut self, tick: u64) {
        for (hash, copy) in self.by_hash.iter() {
            if copy.prepared >= tick && !self.stale.contains(hash) {
                self.stale.push(*hash);
            }
        }
    }

    pub fn take_stale(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.stale)
    }

    pub fn has_stale(&self) -> bool {
        !self.stale.is_empty()
    }

    pub fn remove(&mut self, hash: u64) {
        self.by_hash.remove(&hash);
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// pgpilot's copies and SQL-prepared statements together: what the server holds as far as
    /// pgpilot knows (SHOW SERVERS' prepared_statements).
    pub fn held(&self) -> usize {
        self.by_hash.len() + self.sql.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// DISCARD ALL / DEALLOCATE ALL ran on the server.
    pub fn clear(&mut self) {
        self.forget_prepared();
        self.sql.clear();
    }

    /// Forgets pgpilot's own statements, which the server may no longer have (a DEALLOCATE pgpilot
    /// could not see, in a function or a DO block): each is prepared again at its next use, and a
    /// Close before every Parse makes that safe whether or not the server still had it.
    pub fn forget_prepared(&mut self) {
        self.by_hash.clear();
        self.stale.clear();
    }
}

/// A client's prepared statements, by the names the client uses.
#[derive(Debug, Default)]
pub struct ClientStatements {
    pub named: ByName<Box<[u8]>, Arc<PreparedStatement>>,
    /// SQL-level PREPARE name → the PREPARE statement's text, to replay it elsewhere.
    pub sql: ByName<String, String>,
    /// Names pgpilot acknowledged without a server (session/route.rs `statements_locally`), with
    /// their statement's hash, until a server accepts the text: if the first one given it
    /// refuses it, the name is free again, as a Parse PostgreSQL refuses takes no name.
    unverified: Vec<(Box<[u8]>, u64)>,
}

/// Names acknowledged without a server that are remembered until a server checks them: a client
/// preparing more before binding any is rare (bounded all the same).
const UNVERIFIED_KEPT: usize = 256;

impl ClientStatements {
    /// A Parse pgpilot acknowledged without a server: the name is the client's unless the first
    /// server given the text refuses it.
    pub fn prepare_unchecked(&mut self, name: Box<[u8]>, stmt: Arc<PreparedStatement>) {
        if self.unverified.len() == UNVERIFIED_KEPT {
            self.unverified.remove(0);
        }
        self.unverified.push((name.clone(), stmt.hash));
        self.named.insert(name, stmt);
    }

    /// A Close pgpilot answered without a server.
    pub fn close(&mut self, name: &[u8]) {
        self.named.remove(name);
        self.unverified.retain(|(n, _)| **n != *name);
    }

    pub fn is_empty(&self) -> bool {
        self.named.is_empty() && self.sql.is_empty()
    }

    /// Protocol and SQL statements together (SHOW CLIENTS' prepared_statements).
    pub fn len(&self) -> usize {
        self.named.len() + self.sql.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_name_different_types_different_name() {
        let a = PreparedStatement::new(b"select $1", &[0, 1, 0, 0, 0, 23]);
        let b = PreparedStatement::new(b"select $1", &[0, 1, 0, 0, 0, 23]);
        let c = PreparedStatement::new(b"select $1", &[0, 1, 0, 0, 0, 25]);
        assert_eq!(a.server_name, b.server_name);
        assert_ne!(a.server_name, c.server_name);
    }

    #[test]
    fn least_recently_used_is_evicted() {
        let mut s = ServerStatements::default();
        let a = PreparedStatement::new(b"a", b"");
        let b = PreparedStatement::new(b"b", b"");
        let c = PreparedStatement::new(b"c", b"");
        assert!(s.insert(a.clone(), 2).is_none());
        assert!(s.insert(b.clone(), 2).is_none());
        assert!(s.touch(&a));
        let evicted = s.insert(c.clone(), 2).unwrap();
        assert_eq!(evicted.query, b.query);
        assert!(s.touch(&a) && s.touch(&c) && !s.touch(&b));
    }
}

/// A client's statements, allocated on first change: most clients of a pooler never prepare
/// anything, and there may be tens of thousands of them.
#[derive(Debug, Default)]
pub struct LazyStatements(Option<Box<ClientStatements>>);

static NO_STATEMENTS: std::sync::LazyLock<ClientStatements> =
    std::sync::LazyLock::new(ClientStatements::default);

impl LazyStatements {
    /// A server took the text of the statement `hash`: names acknowledged for it stay.
    pub fn text_accepted(&mut self, hash: u64) {
        if let Some(statements) = self.0.as_deref_mut() {
            statements.unverified.retain(|(_, h)| *h != hash);
        }
    }

    /// A server refused the text of the statement `hash`: names acknowledged for it without a
    /// server are free again, as a Parse PostgreSQL refuses takes no name.
    pub fn text_refused(&mut self, hash: u64) {
        let Some(statements) = self.0.as_deref_mut() else { return };
        let names = &mut statements.named;
        statements.unverified.retain(|(name, h)| {
            if *h != hash {
                return true;
            }
            if names.get(name).is_some_and(|stmt| stmt.hash == hash) {
                names.remove(name);
            }
            false
        });
    }
}

impl std::ops::Deref for LazyStatements {
    type Target = ClientStatements;
    fn deref(&self) -> &ClientStatements {
        self.0.as_deref().unwrap_or(&NO_STATEMENTS)
    }
}

impl std::ops::DerefMut for LazyStatements {
    fn deref_mut(&mut self) -> &mut ClientStatements {
        self.0.get_or_insert_with(Default::default)
    }
}
