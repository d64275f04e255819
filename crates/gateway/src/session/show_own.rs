//! `SHOW pgpilot.route` / `SHOW pgpilot.cache`: pgpilot's own settings never
//! reach a server (see `route::read_own_setting`), which would answer 42704 "unrecognized
//! configuration parameter". The session's values are shown here instead, as PostgreSQL shows a
//! custom setting's value after SET. The extended protocol's unnamed statement is answered in
//! `extended_settings`.

use bytes::{Buf, BytesMut};
use pgpilot_wire::backend;

use super::client::{Ending, Session};
use crate::routing::SessionRoute;

/// The setting `text` shows when it is `SHOW pgpilot.route` or `SHOW pgpilot.cache` alone (any
/// case, comments and a final `;` allowed).
pub(super) fn shown_own_setting(text: &[u8]) -> Option<&'static str> {
    // The cheap look first: this runs on every simple Query.
    let start = text.iter().position(|b| !b.is_ascii_whitespace())?;
    let commented = text[start..].starts_with(b"/*") || text[start..].starts_with(b"--");
    if !commented && !text[start..].get(..4)?.eq_ignore_ascii_case(b"show") {
        return None;
    }
    let sql = super::route::without_comments(std::str::from_utf8(text).ok()?);
    let mut words = sql.trim().trim_end_matches(';').split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("show") {
        return None;
    }
    let name = words.next()?.to_ascii_lowercase();
    if words.next().is_some() {
        return None;
    }
    ["pgpilot.route", "pgpilot.cache"].into_iter().find(|own| *own == name)
}

impl Session {
    /// Answers `SHOW name` of one of pgpilot's settings: one text column named after it.
    pub(super) async fn show_own_setting(&mut self, total: usize, name: &'static str) -> Result<(), Ending> {
        self.buf.advance(total);
        let mut out = BytesMut::with_capacity(96);
        own_setting_columns(&mut out, name, 0);
        self.own_setting_row(&mut out, name);
        backend::ready_for_query(&mut out, self.status);
        self.write(&out).await
    }

    /// The value `SHOW name` shows for this session.
    fn own_setting_value(&self, name: &str) -> &'static str {
        match name {
            "pgpilot.route" => match self.route {
                SessionRoute::Auto => "auto",
                SessionRoute::Primary => "primary",
                SessionRoute::Replica => "replica",
            },
            _ if self.cache_off => "off",
            _ => "on",
        }
    }

    /// What an Execute of `SHOW name` sends: the row and the command tag.
    pub(super) fn own_setting_row(&self, out: &mut BytesMut, name: &str) {
        backend::data_row(out, &[Some(self.own_setting_value(name))]);
        backend::command_complete(out, "SHOW");
    }
}

/// The RowDescription of `SHOW name`, its one text column sent in `format` (a text value's binary
/// form is its text).
pub(super) fn own_setting_columns(out: &mut BytesMut, name: &str, format: i16) {
    backend::row_description_in_format(out, &[name], &[TEXT_OID], format);
}

const TEXT_OID: u32 = 25;

#[cfg(test)]
mod tests {
    use super::shown_own_setting;

    #[test]
    fn only_a_show_of_pgpilots_own_settings_is_answered_here() {
        assert_eq!(shown_own_setting(b"SHOW pgpilot.cache"), Some("pgpilot.cache"));
        assert_eq!(shown_own_setting(b"  show PGPILOT.ROUTE ;"), Some("pgpilot.route"));
        assert_eq!(shown_own_setting(b"/* app */ SHOW pgpilot.route"), Some("pgpilot.route"));
        assert_eq!(shown_own_setting(b"SHOW pgpilot.other"), None);
        assert_eq!(shown_own_setting(b"SHOW search_path"), None);
        assert_eq!(shown_own_setting(b"SHOW pgpilot.cache; SELECT 1"), None);
        assert_eq!(shown_own_setting(b"SELECT 'SHOW pgpilot.cache'"), None);
    }
}
