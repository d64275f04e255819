//! `SET pgpilot.route` / `SET pgpilot.cache` prepared as a *named* statement (psycopg prepares a
//! statement it has run 5 times, pgJDBC after 5 executions of a PreparedStatement): prepared on a
//! server, the SET reached PostgreSQL, which refused `primary` or kept a quoted value as a setting
//! of its own that routing never saw. pgpilot keeps such a statement itself and answers its Parse,
//! Bind, Describe and Execute; at the Execute the setting is applied, as the simple-protocol SET.
//! Only values the setting takes are kept so; anything else goes to the server as before.

use pgpilot_wire::frontend;

use super::client::Session;
use super::expect::{Expect, OnSkip, BIND_COMPLETE, NO_DATA, NO_PARAMETERS, PARSE_COMPLETE};
use super::flow::Flow;

const SET_COMPLETE: &[u8] = b"C\0\0\0\x08SET\0";
const RESET_COMPLETE: &[u8] = b"C\0\0\0\x0aRESET\0";

/// Whether `text` sets one of pgpilot's settings to a value it takes (or resets it).
pub(super) fn is_local_setting(text: &[u8]) -> bool {
    super::route::maybe_pgpilot_setting(text)
        && std::str::from_utf8(text).is_ok_and(super::route::takes_pgpilot_setting)
}

impl Flow {
    /// A named Parse of such a statement: kept by pgpilot, not prepared on the server.
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
        self.unsynced = true;
        self.expected.push(Expect::Synthetic { bytes: PARSE_COMPLETE, on_skip: OnSkip::Forget(name.into()) });
        true
    }

    /// A Bind of such a statement: its portal is answered here too.
    pub(super) fn bind_local_setting(&mut self, query: &[u8], portal: &[u8]) -> bool {
        if self.local_setting_portal.as_ref().is_some_and(|(p, _)| **p == *portal) {
            self.local_setting_portal = None;
        }
        if !is_local_setting(query) {
            return false;
        }
        self.local_setting_portal = Some((portal.into(), String::from_utf8_lossy(query).into()));
        self.unsynced = true;
        self.expected.push(Expect::Synthetic { bytes: BIND_COMPLETE, on_skip: OnSkip::Nothing });
        true
    }

    /// A Describe of such a statement (`named_setting`: the named statement is one) or portal.
    pub(super) fn describe_local_setting(&mut self, kind: u8, name: &[u8], named_setting: bool) -> bool {
        let ours = match kind {
            b'S' => named_setting,
            _ => self.local_setting_portal.as_ref().is_some_and(|(p, _)| **p == *name),
        };
        if ours && kind == b'S' {
            self.expected.push(Expect::Synthetic { bytes: NO_PARAMETERS, on_skip: OnSkip::Nothing });
        }
        if ours {
            self.unsynced = true;
            self.expected.push(Expect::Synthetic { bytes: NO_DATA, on_skip: OnSkip::Nothing });
        }
        ours
    }

    /// An Execute of such a portal: the setting is applied.
    pub(super) fn execute_local_setting(&mut self, s: &mut Session, body: &[u8]) -> bool {
        let Some((portal, _)) = frontend::parse_execute(body) else { return false };
        let Some((_, sql)) = self.local_setting_portal.as_ref().filter(|(p, _)| **p == *portal) else {
            return false;
        };
        let sql = sql.clone();
        let done = match s.apply_pgpilot_settings(&sql) {
            Some(Ok("RESET")) => RESET_COMPLETE,
            _ => SET_COMPLETE,
        };
        self.unsynced = true;
        self.expected.push(Expect::Synthetic { bytes: done, on_skip: OnSkip::Nothing });
        true
    }
}
