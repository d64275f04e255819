//! Effects on the server session that a statement's own text does not show, found with what the
//! session knows: an object created without a schema while the search_path may lead with
//! `pg_temp` is a temporary one (`SET search_path = pg_temp; CREATE TABLE t`), and an EXECUTE
//! runs the body of a statement the client PREPAREd (a session advisory lock, a set_config)
//! without naming any of it.

use std::sync::Arc;

use pgpilot_sql::{QuickLook, SessionEffect, Statement};

use super::client::Session;
use super::expect::Batch;
use super::frontend::add_pin;

impl Session {
    /// Whether a statement whose words would not have it classified must be, for an effect its
    /// text hides: one that may create an object (neither a plain read nor a plain write) while
    /// the temporary schema may lead the search_path.
    pub(super) fn may_hide_effects(&self, look: &QuickLook) -> bool {
        !(look.plain_select || look.plain_write) && self.temp_schema_may_lead()
    }

    /// The search_path names `pg_temp` (where it leads, or follows only schemas that do not
    /// exist, unqualified objects are created there), or is being changed in the transaction
    /// under way and is not known.
    fn temp_schema_may_lead(&self) -> bool {
        self.search_path_in_flux || self.params.get("search_path").is_some_and(mentions_pg_temp)
    }

    /// Adds to `batch` the pin and the settings (set_config with constants in an executed body)
    /// that `stmt` brings beyond what its text says.
    pub(super) fn note_hidden_effects(&mut self, stmt: &Statement, batch: &mut Batch) {
        for effect in &stmt.session_effects {
            match effect {
                SessionEffect::CreateUnqualified(_) if self.temp_schema_may_lead() => {
                    add_pin(&mut batch.pins, pgpilot_sql::TEMPORARY_PIN)
                }
                SessionEffect::Execute { name } => {
                    let Some(body) = self.executed_body(stmt, name) else { continue };
                    if let Some(reason) = body.pin_reason() {
                        add_pin(&mut batch.pins, reason);
                    }
                    self.note_search_path(&body.settings);
                    batch.settings.extend(body.settings.iter().cloned());
                }
                _ => {}
            }
        }
    }

    /// The body of the statement `name` an EXECUTE runs, classified as if sent itself: one the
    /// same text PREPAREs, else the client's own.
    fn executed_body(&self, stmt: &Statement, name: &str) -> Option<Arc<Statement>> {
        let body_of = |s: &Statement| {
            s.session_effects.iter().find_map(|e| match e {
                SessionEffect::Prepare { name: n, body_sql, .. } if n == name => Some(body_sql.clone()),
                _ => None,
            })
        };
        let body = match body_of(stmt) {
            Some(body) => body,
            None => body_of(&self.shared.classifier.classify(self.statements.sql.get(name)?))?,
        };
        Some(self.shared.classifier.classify(&body))
    }
}

/// Whether a search_path value names the temporary schema (any case, quoted or not). Looked at
/// for most statements but plain reads and writes: no copy of the value is made.
fn mentions_pg_temp(path: &str) -> bool {
    path.as_bytes().windows(b"pg_temp".len()).any(|w| w.eq_ignore_ascii_case(b"pg_temp"))
}
