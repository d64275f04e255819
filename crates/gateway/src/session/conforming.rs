//! What pgpilot reads of a session's SQL texts when the session has
//! `standard_conforming_strings = off` (a legacy application, or a database or role that sets it):
//! backslashes in plain string literals escape there, and texts with one are read as the server
//! reads them (pgpilot_sql::with_escape_strings) for routing, the cache and the statistics. The
//! text sent to the server is never changed.

use std::borrow::Cow;

use super::client::Session;

impl Session {
    /// `sql` as pgpilot's readers must see it to read it as the server does.
    pub(super) fn for_reading<'a>(&self, sql: Cow<'a, str>) -> Cow<'a, str> {
        if !self.reads_otherwise(sql.as_bytes()) {
            return sql;
        }
        Cow::Owned(pgpilot_sql::with_escape_strings(&sql).into_owned())
    }

    /// `text` (bytes of a statement the client sent) as pgpilot's readers must see it, when that
    /// differs from the text; None when it reads the same.
    pub(super) fn reread(&self, text: &[u8]) -> Option<String> {
        if !self.reads_otherwise(text) {
            return None;
        }
        let sql = String::from_utf8_lossy(text);
        Some(pgpilot_sql::with_escape_strings(&sql).into_owned())
    }

    /// Whether the server reads `text` otherwise than pgpilot's readers would: it has a backslash
    /// (checked first: nearly every text has none, and then the setting does not matter), and
    /// backslashes in the session's plain string literals are escapes.
    fn reads_otherwise(&self, text: &[u8]) -> bool {
        text.contains(&b'\\') && self.params.get("standard_conforming_strings").is_some_and(is_off)
    }
}

/// A boolean setting's value (as SET spells it, maybe quoted) that means off.
fn is_off(value: &str) -> bool {
    let v = value.trim().trim_matches(|c| c == '\'' || c == '"').trim();
    ["off", "false", "no", "0", "f", "n", "of"].iter().any(|w| v.eq_ignore_ascii_case(w))
}
