//! Statements of the extended protocol pgpilot answers itself, Parse, Bind, Describe and Execute,
//! because on a server they would not do what the client means:
//!
//! - `DEALLOCATE name` as the unnamed statement (psycopg 3.0/3.1 evicting from its statement
//!   cache, and in pipeline mode always): the client's statements live on servers under pgpilot's
//!   names, so a server would answer 26000 and keep the statement. The name is forgotten at the
//!   Execute (restored when the batch fails before it), as a simple-protocol DEALLOCATE is.
//! - `SET pgpilot.route` / `SET pgpilot.cache` prepared as a named statement (psycopg prepares a
//!   statement it has run 5 times): on a server PostgreSQL refused `primary`, or kept a quoted
//!   value as a setting of its own that routing never saw. The setting is applied at each Execute,
//!   as the simple-protocol SET. Only values the setting takes are kept so; anything else goes to
//!   the server as before.

use pgpilot_sql::SessionEffect;
use pgpilot_wire::frontend;

use super::client::Session;
use super::expect::{Expect, OnSkip, BIND_COMPLETE, NO_DATA, NO_PARAMETERS, PARSE_COMPLETE};
use super::flow::Flow;
use crate::pool::ServerConn;

const DEALLOCATE_COMPLETE: &[u8] = b"C\0\0\0\x0fDEALLOCATE\0";
const SET_COMPLETE: &[u8] = b"C\0\0\0\x08SET\0";
const RESET_COMPLETE: &[u8] = b"C\0\0\0\x0aRESET\0";

/// What the Execute of a portal answered here does.
#[derive(Debug)]
enum LocalRun {
    /// Forgets the client's statement of this name.
    Deallocate(Box<str>),
    /// Applies this SET or RESET of pgpilot's own settings.
    Setting(Box<str>),
}

/// The statements and portal of the client's answered here.
#[derive(Debug, Default)]
pub(super) struct LocalStatements {
    /// The client's unnamed statement is a DEALLOCATE of this name.
    unnamed_deallocates: Option<Box<str>>,
    /// Portals bound from statements answered here, and what their Execute does.
    portals: Vec<(Box<[u8]>, LocalRun)>,
}

/// Whether `text` sets one of pgpilot's settings to a value it takes (or resets it).
pub(super) fn is_local_setting(text: &[u8]) -> bool {
    // The cheap look first: this runs at every Bind of a named statement.
    super::route::maybe_pgpilot_setting(text)
        && std::str::from_utf8(text).is_ok_and(super::route::takes_pgpilot_setting)
}

impl Flow {
    /// An unnamed Parse: answered here when it is `DEALLOCATE name` of a statement the client has.
    pub(super) fn parse_local_deallocate(
        &mut self,
        s: &mut Session,
        server: &mut ServerConn,
        text: &[u8],
        look: pgpilot_sql::QuickLook,
    ) -> bool {
        self.local.unnamed_deallocates = None;
        // In a failed transaction the server refuses it (25P02), and nothing is deallocated.
        if s.status == pgpilot_wire::backend::TxnStatus::Failed {
            return false;
        }
        let Some(name) = deallocated_name(s, text, look) else { return false };
        if !s.statements.named.contains_key(name.as_bytes()) && !s.statements.sql.contains_key(&*name) {
            // The server answers that it does not exist, as PostgreSQL would, once a copy left
            // there under that name (another client's, or this one's, deallocated since) is gone.
            if server.statements.sql.remove(&*name).is_some() {
                self.close_on_server(name.as_bytes());
            }
            return false;
        }
        s.unnamed = None;
        self.local.unnamed_deallocates = Some(name);
        self.answer_locally(PARSE_COMPLETE, OnSkip::Nothing);
        true
    }

    /// A named Parse of a setting of pgpilot's: kept by pgpilot, not prepared on the server.
    pub(super) fn parse_local_setting(
        &mut self,
        s: &mut Session,
        name: &[u8],
        query: &[u8],
        types: &[u8],
    ) -> bool {
        if name.is_empty() || !is_local_setting(query) {
            return false;
        }
        let stmt = s.new_statement(query, types);
        s.statements.named.insert(name.into(), stmt);
        self.answer_locally(PARSE_COMPLETE, OnSkip::Forget(name.into()));
        true
    }

    /// A Bind of the unnamed statement: answered here when that is a DEALLOCATE answered here.
    pub(super) fn bind_local_deallocate(&mut self, statement: &[u8], portal: &[u8]) -> bool {
        let run = self.local.unnamed_deallocates.clone().filter(|_| statement.is_empty());
        self.bind_locally(portal, run.map(LocalRun::Deallocate))
    }

    /// A Bind of a named statement (`query`): answered here when it is a setting of pgpilot's.
    pub(super) fn bind_local_setting(&mut self, query: &[u8], portal: &[u8]) -> bool {
        let run = is_local_setting(query).then(|| LocalRun::Setting(String::from_utf8_lossy(query).into()));
        self.bind_locally(portal, run)
    }

    /// A Bind replaces any portal of its name; one whose Execute is `run` is answered here.
    fn bind_locally(&mut self, portal: &[u8], run: Option<LocalRun>) -> bool {
        self.local.portals.retain(|(p, _)| **p != *portal);
        let Some(run) = run else { return false };
        self.local.portals.push((portal.into(), run));
        self.answer_locally(BIND_COMPLETE, OnSkip::Nothing);
        true
    }

    /// A Describe of a statement (`named_setting`: the named statement is a setting of pgpilot's)
    /// or a portal answered here.
    pub(super) fn describe_locally(&mut self, kind: u8, name: &[u8], named_setting: bool) -> bool {
        let ours = match kind {
            b'S' => named_setting || (name.is_empty() && self.local.unnamed_deallocates.is_some()),
            _ => self.local.portals.iter().any(|(p, _)| **p == *name),
        };
        if ours && kind == b'S' {
            self.answer_locally(NO_PARAMETERS, OnSkip::Nothing);
        }
        if ours {
            self.answer_locally(NO_DATA, OnSkip::Nothing);
        }
        ours
    }

    /// An Execute of a portal answered here: the DEALLOCATE or the setting takes effect.
    pub(super) fn execute_locally(&mut self, s: &mut Session, body: &[u8]) -> bool {
        let Some((portal, _)) = frontend::parse_execute(body) else { return false };
        let Some((_, run)) = self.local.portals.iter().find(|(p, _)| **p == *portal) else { return false };
        let (done, on_skip) = match run {
            LocalRun::Deallocate(name) => match s.statements.named.remove_entry(name.as_bytes()) {
                Some((name, stmt)) => (DEALLOCATE_COMPLETE, OnSkip::Restore(name, stmt)),
                None => {
                    s.statements.sql.remove(&**name);
                    (DEALLOCATE_COMPLETE, OnSkip::Nothing)
                }
            },
            LocalRun::Setting(sql) => match s.apply_pgpilot_settings(sql) {
                Some(Ok("RESET")) => (RESET_COMPLETE, OnSkip::Nothing),
                _ => (SET_COMPLETE, OnSkip::Nothing),
            },
        };
        self.answer_locally(done, on_skip);
        true
    }

    /// A Close, or a simple Query (which destroys the unnamed statement, and the DEALLOCATE's
    /// portals made from it).
    pub(super) fn forget_local_statements(&mut self, kind: u8, name: &[u8]) {
        match kind {
            b'S' | b'Q' if name.is_empty() => {
                self.local.unnamed_deallocates = None;
                self.local.portals.retain(|(_, run)| !matches!(run, LocalRun::Deallocate(_)));
            }
            b'P' => self.local.portals.retain(|(p, _)| **p != *name),
            _ => {}
        }
    }

    /// One answer of a batch that stays open until the client's Sync.
    fn answer_locally(&mut self, bytes: &'static [u8], on_skip: OnSkip) {
        self.unsynced = true;
        self.expected.push(Expect::Synthetic { bytes, on_skip });
    }
}

/// The statement `DEALLOCATE [PREPARE] name` names, when `text` (of quick look `look`) is one.
fn deallocated_name(s: &Session, text: &[u8], look: pgpilot_sql::QuickLook) -> Option<Box<str>> {
    if !look.session_word {
        return None;
    }
    let sql = std::str::from_utf8(text).ok()?;
    let stmt = s.shared.classifier.classify(sql);
    if stmt.statement_count != 1 {
        return None;
    }
    stmt.session_effects.iter().find_map(|e| match e {
        SessionEffect::Deallocate(Some(name)) => Some(name.as_str().into()),
        _ => None,
    })
}
