//! Per-statement statistics on the hot path: each client Query and Execute carries a small record
//! from the moment it is sent until the server completes it, then goes to [`crate::insight`].
//! Nothing here runs when insight is off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_wire::backend;
use pgpilot_wire::error::ErrorFields;

use super::client::Session;
use super::flow::Flow;
use crate::insight::{QueryKey, StatementEvent, Target};
use crate::pool::statements::PreparedStatement;
use crate::pool::ServerConn;

/// A statement in flight.
#[derive(Debug)]
pub struct Observed {
    key: QueryKey,
    started: Instant,
    rows: u64,
    error: Option<String>,
    parameters: Option<Vec<Option<String>>>,
    /// An Execute's portal and row limit: a cursor read in pieces is one call, as in
    /// pg_stat_statements, and each piece that stops at the limit returned that many rows.
    portal: Option<(Box<[u8]>, u64)>,
}

impl Observed {
    fn start(
        key: QueryKey,
        started: Instant,
        parameters: Option<Vec<Option<String>>>,
        portal: Option<(Box<[u8]>, u64)>,
    ) -> Box<Observed> {
        Box::new(Observed { key, started, rows: 0, error: None, parameters, portal })
    }
}

impl Flow {
    /// A record for a simple Query, when insight is on.
    /// `sql`: the text when it is valid UTF-8, as the caller has already checked.
    /// `look`: filled with the text's quick look when the key's look-up found it too.
    pub(super) fn observe_query(
        &self,
        s: &Session,
        text: &[u8],
        sql: Option<&str>,
        look: &mut Option<pgpilot_sql::QuickLook>,
    ) -> Option<Box<Observed>> {
        let insight = &s.shared.insight;
        if !insight.enabled() {
            return None;
        }
        let wants = insight.wants_parameters();
        let (key, constants) = match sql {
            Some(sql) if !wants && look.is_none() => {
                let (key, found) = crate::shapes::key_and_look(sql);
                *look = Some(found);
                (key, Vec::new())
            }
            Some(sql) => QueryKey::of_str(sql, wants),
            None => QueryKey::of(text, wants),
        };
        let parameters = wants.then(|| constants.into_iter().map(Some).collect());
        Some(Observed::start(key, self.last_client_activity, parameters, None))
    }

    /// An unnamed Parse: its text is what the next Bind of the unnamed statement runs.
    pub(super) fn observe_parse(&mut self, s: &Session, text: &[u8]) {
        if s.shared.insight.enabled() {
            self.unnamed_query = Some(statement_key(s, text));
        }
    }

    /// A Parse in session pooling, where statements are not otherwise tracked: the client's named
    /// statements are kept (by name, closed with Close) only so their Executes can be attributed.
    pub(super) fn observe_session_parse(&mut self, s: &mut Session, name: &[u8], query: &[u8], types: &[u8]) {
        if !s.shared.insight.enabled() {
            return;
        }
        if name.is_empty() {
            self.observe_parse(s, query);
        } else {
            s.statements.named.insert(name.into(), PreparedStatement::new(query, types));
        }
    }

    /// A Bind: remembers what the portal runs (and its text parameters, when they are logged).
    pub(super) fn observe_bind(&mut self, s: &Session, statement: &[u8], rest: &[u8]) {
        let insight = &s.shared.insight;
        if !insight.enabled() {
            return;
        }
        self.portal_query = if statement.is_empty() {
            // In transaction pooling the unnamed statement may have been parsed in an earlier
            // attachment (libpq's PQprepare, pgx's describe-then-execute): the session has it.
            self.unnamed_query.clone().or_else(|| s.unnamed.as_deref().map(|u| statement_key(s, &u.query)))
        } else {
            s.statements.named.get(statement).map(|p| key_of_prepared(s, p))
        };
        self.portal_parameters = insight.wants_parameters().then(|| bind_parameters(rest)).flatten();
    }

    /// A record for an Execute (`body` without the header) of the portal bound last, or the
    /// record of the portal it goes on reading.
    pub(super) fn observe_execute(&mut self, body: &[u8]) -> Option<Box<Observed>> {
        let (portal, limit) = pgpilot_wire::frontend::parse_execute(body).unwrap_or((b"", 0));
        let limit = u64::try_from(limit).unwrap_or(0);
        let same_portal = |obs: &Observed| obs.portal.as_ref().is_some_and(|(name, _)| **name == *portal);
        if let Some(i) = self.suspended.iter().position(|obs| same_portal(obs)) {
            let mut obs = self.suspended.swap_remove(i);
            obs.portal = Some((portal.into(), limit));
            return Some(obs);
        }
        let key = self.portal_query.clone()?;
        let parameters = self.portal_parameters.clone();
        Some(Observed::start(key, self.last_client_activity, parameters, Some((portal.into(), limit))))
    }

    /// The portal stopped at its row limit (PortalSuspended): its record waits for the next
    /// Execute of the same portal.
    pub(super) fn observe_suspended(&mut self, mut obs: Box<Observed>) {
        obs.rows += obs.portal.as_ref().map_or(0, |(_, limit)| *limit);
        self.suspended.push(obs);
    }

    /// The transaction ended, and with it every portal: a cursor not read to its end counts now.
    pub(super) fn observe_portals_closed(&mut self) {
        for obs in std::mem::take(&mut self.suspended) {
            self.observed_done(obs);
        }
    }

    /// Counts the rows of a CommandComplete (`body` without the header).
    pub(super) fn observe_rows(obs: &mut Observed, body: &[u8]) {
        obs.rows += backend::rows_in_tag(backend::parse_command_tag(body));
    }

    /// Notes the SQLSTATE of an ErrorResponse (`body` without the header).
    pub(super) fn observe_error(obs: &mut Observed, body: &[u8]) {
        obs.error = Some(ErrorFields::parse(body).code.to_string());
    }

    /// The statement completed; it is recorded once every message of this server read is handled.
    pub(super) fn observed_done(&mut self, obs: Box<Observed>) {
        self.finished.push(obs);
    }

    /// One event to insight for each statement the server's bytes just handled completed.
    pub(super) fn record_finished(&mut self, s: &mut Session, server: &ServerConn) {
        let now = self.server_activity;
        let Some(timed) = self.finished.take(now) else { return };
        let wait = std::mem::take(&mut s.wait_before_send);
        let target = match &s.attachment {
            Some(a) if a.is_replica(s.db.primary_index()) => Target::Replica,
            _ => Target::Primary,
        };
        for (i, (obs, duration)) in timed.enumerate() {
            s.shared.insight.record(&StatementEvent {
                fingerprint: obs.key.fingerprint,
                normalized: &obs.key.normalized,
                database: &s.db.name,
                user: &s.user,
                duration,
                wait: if i == 0 { wait } else { Duration::ZERO },
                rows: obs.rows,
                error: obs.error.as_deref(),
                target,
                client_addr: &s.reg.info.addr,
                server: &server.pool().id.server,
                parameters: obs.parameters.as_deref(),
                client_params: Some(&s.params),
            });
        }
    }
}

/// Statements completed by the server bytes now being handled, and when the previous ones were.
///
/// A statement is timed from when its request arrived to when its completion arrived. In a batch
/// or pipeline all requests arrive together, and PostgreSQL sends the results together too (it
/// flushes at Sync, or when its buffer fills), so statements completed by one read cannot be timed
/// apart: they share equally the time since the first of them could have begun, which is no
/// earlier than the completion of the statements before them. The total stays exact and no
/// statement is charged its whole batch.
#[derive(Default)]
pub(super) struct Finished {
    /// The usual single statement, held without allocating.
    first: Option<Box<Observed>>,
    #[allow(clippy::vec_box)] // each record travels boxed in the expectation queue
    more: Vec<Box<Observed>>,
    /// When the previous read of this attachment completed statements.
    last: Option<Instant>,
}

impl Finished {
    fn push(&mut self, obs: Box<Observed>) {
        match self.first {
            None => self.first = Some(obs),
            Some(_) => self.more.push(obs),
        }
    }

    /// The statements completed at `now` with their durations, emptied.
    fn take(&mut self, now: Instant) -> Option<impl Iterator<Item = (Box<Observed>, Duration)> + '_> {
        let first = self.first.take()?;
        let count = 1 + self.more.len() as u32;
        let earliest = self.more.iter().map(|o| o.started).fold(first.started, Instant::min);
        let began = self.last.map_or(earliest, |last| earliest.max(last));
        self.last = Some(now);
        let share = now.saturating_duration_since(began) / count;
        Some(std::iter::once(first).chain(self.more.drain(..)).map(move |obs| (obs, share)))
    }
}

/// A prepared statement's key, normalized once however often it runs.
fn key_of_prepared(s: &Session, p: &Arc<PreparedStatement>) -> QueryKey {
    reread_key(s, &p.query)
        .unwrap_or_else(|| p.insight_key.get_or_init(|| QueryKey::of(&p.query, false).0).clone())
}

/// The statistics key of a statement's text, read as the session's server reads it.
pub(super) fn statement_key(s: &Session, text: &[u8]) -> QueryKey {
    reread_key(s, text).unwrap_or_else(|| QueryKey::of_statement(text))
}

/// The statistics key of `text` as the session's server reads it, when pgpilot's readers would
/// read the text itself otherwise (standard_conforming_strings = off: session/conforming.rs).
pub(super) fn reread_key(s: &Session, text: &[u8]) -> Option<QueryKey> {
    s.reread(text).map(|reread| QueryKey::of(reread.as_bytes(), false).0)
}

/// The text-format parameter values of a Bind body after its portal and statement names
/// (binary ones are shown as such); None when the message is malformed.
fn bind_parameters(rest: &[u8]) -> Option<Vec<Option<String>>> {
    let values = pgpilot_wire::frontend::bind_values(rest)?;
    let shown = |v: pgpilot_wire::frontend::BindValue| {
        v.bytes.map(|bytes| match v.binary {
            true => format!("<{} bytes binary>", bytes.len()),
            false => match String::from_utf8_lossy(bytes) {
                text if pgpilot_sql::normalize::looks_secret(&text) => {
                    pgpilot_sql::normalize::REDACTED_VALUE.to_string()
                }
                text => text.into_owned(),
            },
        })
    };
    Some(values.into_iter().map(shown).collect())
}

impl Session {
    /// The request at the front of the client's input, refused with `error` before any server saw
    /// it (query_wait_timeout, a cancel while it waited, no server to be had): a failed call of
    /// its statement, so the statistics, the failures by SQLSTATE and the error rate see what the
    /// client saw.
    pub(super) fn record_unsent(&self, error: &str, waited: Duration) {
        let insight = &self.shared.insight;
        if !insight.enabled() {
            return;
        }
        let Ok(Some(h)) = pgpilot_wire::frame::peek_frontend(&self.buf, &self.limits) else { return };
        let Some(text) = self.buf.get(..h.total).and_then(|msg| self.text_of(msg)) else { return };
        let key = statement_key(self, text);
        insight.record(&StatementEvent {
            fingerprint: key.fingerprint,
            normalized: &key.normalized,
            database: &self.db.name,
            user: &self.user,
            duration: Duration::ZERO,
            wait: waited,
            rows: 0,
            error: Some(error),
            target: Target::Unsent,
            client_addr: &self.reg.info.addr,
            server: "",
            parameters: None,
            client_params: Some(&self.params),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::bind_parameters;

    #[test]
    fn bind_parameters_in_text_binary_and_null() {
        // Two format codes (text, binary), three values: "42", four binary bytes, NULL.
        let mut rest = vec![0, 2, 0, 0, 0, 1, 0, 3];
        rest.extend_from_slice(&2i32.to_be_bytes());
        rest.extend_from_slice(b"42");
        rest.extend_from_slice(&4i32.to_be_bytes());
        rest.extend_from_slice(&[0, 0, 0, 7]);
        rest.extend_from_slice(&(-1i32).to_be_bytes());
        let values = bind_parameters(&rest).unwrap();
        assert_eq!(values, vec![Some("42".into()), Some("<4 bytes binary>".into()), None]);
        assert_eq!(bind_parameters(&rest[..rest.len() - 2]), None, "truncated");
        assert_eq!(bind_parameters(&[0, 0, 0, 1, 0x7f, 0xff, 0xff, 0xff]), None, "length past the end");
    }

    #[test]
    fn bound_credentials_are_never_shown() {
        let mut rest = vec![0, 0, 0, 2];
        for value in [&b"host=h user=u password=s3cret"[..], b"postgresql://u:s3cret@h/db"] {
            rest.extend_from_slice(&(value.len() as i32).to_be_bytes());
            rest.extend_from_slice(value);
        }
        let values = bind_parameters(&rest).unwrap();
        assert_eq!(values, vec![Some("<redacted>".into()), Some("<redacted>".into())]);
    }
}
