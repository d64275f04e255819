//! What a reset of the statistics forgets of the per-database totals. The statement entries go,
//! as pg_stat_statements_reset() drops them, but the Prometheus counters built from their sums go
//! on from where they were, as pg_stat_database's do: a reset must not look like a restart.

use std::sync::Arc;

use parking_lot::Mutex;

use super::store::{Counters, Snapshot};

#[derive(Default)]
pub(super) struct CarriedTotals {
    inner: Mutex<DatabaseCounts>,
}

/// Sums per database, and failures per database and SQLSTATE.
#[derive(Default)]
pub struct DatabaseCounts {
    pub totals: Vec<(Arc<str>, Counters)>,
    pub errors: Vec<(Arc<str>, String, u64)>,
}

impl CarriedTotals {
    /// Keeps the sums of `forgotten`, the statistics as they were just before a reset.
    pub(super) fn carry(&self, forgotten: &Snapshot) {
        let mut carried = self.inner.lock();
        add_totals(&mut carried.totals, &forgotten.database_totals());
        add_errors(&mut carried.errors, &forgotten.errors);
    }

    /// Per-database totals and failures by SQLSTATE since the start: `now`'s plus what resets forgot.
    pub(super) fn since_start(&self, now: &Snapshot) -> DatabaseCounts {
        let mut totals = now.database_totals();
        let mut errors = now.errors.clone();
        let carried = self.inner.lock();
        if carried.totals.is_empty() && carried.errors.is_empty() {
            return DatabaseCounts { totals, errors };
        }
        add_totals(&mut totals, &carried.totals);
        add_errors(&mut errors, &carried.errors);
        totals.sort_by(|a, b| a.0.cmp(&b.0));
        errors.sort();
        DatabaseCounts { totals, errors }
    }
}

fn add_totals(into: &mut Vec<(Arc<str>, Counters)>, from: &[(Arc<str>, Counters)]) {
    for (db, c) in from {
        match into.iter_mut().find(|(d, _)| d == db) {
            Some((_, t)) => t.merge(c),
            None => into.push((db.clone(), *c)),
        }
    }
}

fn add_errors(into: &mut Vec<(Arc<str>, String, u64)>, from: &[(Arc<str>, String, u64)]) {
    for (db, code, n) in from {
        match into.iter_mut().find(|(d, c, _)| d == db && c == code) {
            Some((_, _, total)) => *total += n,
            None => into.push((db.clone(), code.clone(), *n)),
        }
    }
}
