//! `DEALLOCATE name` sent with the extended protocol (psycopg 3.0/3.1 evicting from its statement
//! cache, and in pipeline mode always): the client's statements live on servers under pgpilot's
//! names, so a server would answer 26000 and keep the statement. pgpilot answers the unnamed
//! statement's Parse, Bind, Describe and Execute itself, as it answers a simple-protocol
//! DEALLOCATE, and forgets the name at the Execute (restored when the batch fails before it).

use pgpilot_sql::SessionEffect;
use pgpilot_wire::frontend;

use super::client::Session;
use super::expect::{Expect, OnSkip, BIND_COMPLETE, NO_DATA, NO_PARAMETERS, PARSE_COMPLETE};
use super::flow::Flow;

const DEALLOCATE_COMPLETE: &[u8] = b"C\0\0\0\x0fDEALLOCATE\0";

/// The unnamed statement (and maybe a portal) answered here: a DEALLOCATE of `name`.
#[derive(Debug, Default)]
pub(super) struct LocalDeallocate {
    name: Option<Box<str>>,
    portal: Option<Box<[u8]>>,
}

impl Flow {
    /// An unnamed Parse: answered here when it is `DEALLOCATE name` of a statement the client has.
    pub(super) fn parse_local_deallocate(&mut self, s: &mut Session, text: &[u8]) -> bool {
        self.local_deallocate = LocalDeallocate::default();
        let Some(name) = deallocated_name(s, text) else { return false };
        if !s.statements.named.contains_key(name.as_bytes()) && !s.statements.sql.contains_key(&*name) {
            // The server answers that it does not exist, as PostgreSQL would.
            return false;
        }
        s.unnamed = None;
        self.local_deallocate.name = Some(name);
        self.unsynced = true;
        self.expected.push(Expect::Synthetic { bytes: PARSE_COMPLETE, on_skip: OnSkip::Nothing });
        true
    }

    /// A Bind: answered here when it binds the DEALLOCATE answered here.
    pub(super) fn bind_local_deallocate(&mut self, statement: &[u8], portal: &[u8]) -> bool {
        if self.local_deallocate.portal.as_deref() == Some(portal) {
            self.local_deallocate.portal = None;
        }
        if !statement.is_empty() || self.local_deallocate.name.is_none() {
            return false;
        }
        self.local_deallocate.portal = Some(portal.into());
        self.expected.push(Expect::Synthetic { bytes: BIND_COMPLETE, on_skip: OnSkip::Nothing });
        true
    }

    /// A Describe of that statement or its portal.
    pub(super) fn describe_local_deallocate(&mut self, kind: u8, name: &[u8]) -> bool {
        let ours = match kind {
            b'S' => name.is_empty() && self.local_deallocate.name.is_some(),
            _ => self.local_deallocate.portal.as_deref() == Some(name),
        };
        if ours && kind == b'S' {
            self.expected.push(Expect::Synthetic { bytes: NO_PARAMETERS, on_skip: OnSkip::Nothing });
        }
        if ours {
            self.expected.push(Expect::Synthetic { bytes: NO_DATA, on_skip: OnSkip::Nothing });
        }
        ours
    }

    /// An Execute of that portal: the DEALLOCATE takes effect.
    pub(super) fn execute_local_deallocate(&mut self, s: &mut Session, body: &[u8]) -> bool {
        let Some((portal, _)) = frontend::parse_execute(body) else { return false };
        if self.local_deallocate.portal.as_deref() != Some(portal) {
            return false;
        }
        let name = self.local_deallocate.name.as_deref().unwrap_or_default();
        let on_skip = match s.statements.named.remove_entry(name.as_bytes()) {
            Some((name, stmt)) => OnSkip::Restore(name, stmt),
            None => {
                s.statements.sql.remove(name);
                OnSkip::Nothing
            }
        };
        self.expected.push(Expect::Synthetic { bytes: DEALLOCATE_COMPLETE, on_skip });
        true
    }

    /// A Close, or a simple Query (which destroys the unnamed statement and portal).
    pub(super) fn forget_local_deallocate(&mut self, kind: u8, name: &[u8]) {
        match kind {
            b'S' if name.is_empty() => self.local_deallocate = LocalDeallocate::default(),
            b'P' if self.local_deallocate.portal.as_deref() == Some(name) => {
                self.local_deallocate.portal = None
            }
            b'Q' => self.local_deallocate = LocalDeallocate::default(),
            _ => {}
        }
    }
}

/// The statement `DEALLOCATE [PREPARE] name` names, when `text` is one.
fn deallocated_name(s: &Session, text: &[u8]) -> Option<Box<str>> {
    let sql = std::str::from_utf8(text).ok()?;
    if !crate::shapes::look_of(sql).session_word {
        return None;
    }
    let stmt = s.shared.classifier.classify(sql);
    if stmt.statement_count != 1 {
        return None;
    }
    stmt.session_effects.iter().find_map(|e| match e {
        SessionEffect::Deallocate(Some(name)) => Some(name.as_str().into()),
        _ => None,
    })
}
