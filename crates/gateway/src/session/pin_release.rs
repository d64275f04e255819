//! Letting a pinned client go once its server holds nothing of its session any more.
//!
//! LISTEN, temporary objects, session advisory locks, WITH HOLD cursors and SQL PREPAREs pgpilot
//! could not follow pin a client to its server in transaction pooling. Each can end: UNLISTEN,
//! DROP, ON COMMIT DROP, a rollback of the transaction that made it, an unlock, DISCARD,
//! DEALLOCATE, a `pg_try_advisory_lock` that took nothing.
//! Application pools keep their connections for hours, so a pin that outlives its cause holds a
//! server for nothing, and a few such connections use up a pool (helper-144: an ORM's staging
//! table `ON COMMIT DROP` starved every other client). After a request that may have ended such
//! state, once its transaction is over, pgpilot asks the server whether any is left.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use pgpilot_sql::{pin_may_end, SessionEffect, Statement, HOLD_CURSOR_PIN};

/// One row, one boolean: does the server hold anything of the client's session that another
/// client must not see or inherit? Temporary objects of any kind (pg_temp holds types, functions
/// and operators as well as relations), channels listened to, session advisory locks, open
/// cursors (only WITH HOLD ones outlive a transaction); `$statements` adds more conditions.
macro_rules! held_state_query {
    ($statements:literal) => {
        concat!(
            "SELECT pg_catalog.pg_my_temp_schema() <> 0 AND (\
     EXISTS (SELECT FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_type WHERE typnamespace = pg_catalog.pg_my_temp_schema()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_proc WHERE pronamespace = pg_catalog.pg_my_temp_schema()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_operator WHERE oprnamespace = pg_catalog.pg_my_temp_schema()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_opfamily WHERE opfnamespace = pg_catalog.pg_my_temp_schema()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_conversion WHERE connamespace = pg_catalog.pg_my_temp_schema()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_collation WHERE collnamespace = pg_catalog.pg_my_temp_schema())) \
     OR EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) \
     OR EXISTS (SELECT FROM pg_catalog.pg_cursors)",
            $statements
        )
    };
}

const HELD_STATE_QUERY: &str = held_state_query!("");

/// For a client a SQL PREPARE pgpilot could not follow pinned (one sent inside a protocol-level
/// statement, as pgJDBC sends every query): statements made with PREPARE count too. Only then:
/// statements pgpilot placed for other clients count as well, and would keep any pin.
const HELD_STATE_OR_STATEMENTS_QUERY: &str =
    held_state_query!(" OR EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql)");

/// Does `stmt` end session state that pins (so the server is worth asking afterwards)?
pub(super) fn may_end_pinned_state(stmt: &Statement) -> bool {
    stmt.session_effects.iter().any(|e| {
        matches!(
            e,
            SessionEffect::Unlisten(_)
                | SessionEffect::Deallocate(_)
                | SessionEffect::Discard(_)
                | SessionEffect::AdvisoryUnlock
                | SessionEffect::CloseCursor(_)
        )
    })
}

/// What decides whether a pinned client may be let go.
#[derive(Debug, Default)]
pub(super) struct PinRelease {
    /// A reason the server cannot be asked about pinned the client too (LOAD, a DO block, SET
    /// SESSION AUTHORIZATION...): it stays pinned for the session.
    lasting: bool,
    /// Something that may have ended the client's pinned state ran: ask once its transaction is
    /// over.
    check_due: bool,
    /// A SQL PREPARE pgpilot could not follow pinned the client: ask about statements too.
    sql_prepared: bool,
}

impl PinRelease {
    /// The client was pinned for `reason` (whether or not it is the reason shown).
    pub(super) fn pinned_for(&mut self, reason: &str) {
        match reason {
            // Followed cursor by cursor, without asking (backend.rs follow_hold_cursors).
            HOLD_CURSOR_PIN => {}
            // Made in a transaction that may yet roll back, or a lock that may not have been taken.
            _ if pin_may_end(reason) => {
                self.check_due = true;
                self.sql_prepared |= reason == "sql_prepare";
            }
            _ => self.lasting = true,
        }
    }

    pub(super) fn may_have_ended(&mut self) {
        self.check_due = true;
    }

    /// Whether to ask the server now: the client is pinned for checkable reasons only and
    /// something may have ended them. The question is taken.
    pub(super) fn take_due(&mut self, pinned: Option<&str>) -> bool {
        pinned.is_some() && !self.lasting && std::mem::take(&mut self.check_due)
    }

    /// The question to ask.
    pub(super) fn query(&self) -> &'static str {
        if self.sql_prepared {
            HELD_STATE_OR_STATEMENTS_QUERY
        } else {
            HELD_STATE_QUERY
        }
    }
}

/// When a client timed out waiting for a server of `database`: says so if pinned clients hold
/// servers of it, since that is the cause an operator cannot see from the timeout alone. At most
/// once every ten seconds (a pool exhausted times out many clients at once, and the count walks
/// every client).
pub(crate) fn warn_if_pins_hold_the_servers(shared: &crate::shared::Shared, database: &str) {
    static LAST_WARNED_S: AtomicU64 = AtomicU64::new(0);
    let now_s = crate::registry::now_us() / 1_000_000;
    let last = LAST_WARNED_S.load(Relaxed);
    if now_s < last + 10 || LAST_WARNED_S.compare_exchange(last, now_s, Relaxed, Relaxed).is_err() {
        return;
    }
    let clients = shared.registry.all();
    let pinned = clients
        .iter()
        .filter(|c| {
            &**c.database.lock() == database && c.server.lock().is_some() && c.pinned.lock().is_some()
        })
        .count();
    if pinned > 0 {
        tracing::warn!(
            database,
            pinned_clients = pinned,
            "a client waited query_wait_timeout for a server while pinned clients hold servers of this database \
             (SHOW CLIENTS, column pinned: LISTEN, temporary tables, session advisory locks, LOAD...)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgpilot_sql::TEMPORARY_PIN;

    #[test]
    fn a_lasting_reason_keeps_the_client_pinned_whatever_ends() {
        let mut release = PinRelease::default();
        release.pinned_for("listen");
        release.pinned_for("load");
        release.may_have_ended();
        assert!(!release.take_due(Some("listen")));
    }

    #[test]
    fn with_hold_cursors_are_followed_without_asking() {
        let mut release = PinRelease::default();
        release.pinned_for(HOLD_CURSOR_PIN);
        assert!(!release.take_due(Some(HOLD_CURSOR_PIN)));
        release.may_have_ended();
        assert!(release.take_due(Some(HOLD_CURSOR_PIN)), "nor do they keep a client pinned for good");
    }

    #[test]
    fn a_checkable_pin_is_checked_once_per_chance() {
        let mut release = PinRelease::default();
        release.pinned_for(TEMPORARY_PIN);
        assert!(release.take_due(Some(TEMPORARY_PIN)));
        assert!(!release.take_due(Some(TEMPORARY_PIN)), "asked once");
        release.may_have_ended();
        assert!(release.take_due(Some(TEMPORARY_PIN)));
        release.may_have_ended();
        assert!(!release.take_due(None), "an unpinned client is not asked about");
    }
}
