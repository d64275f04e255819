//! A hot standby (`pg_is_in_recovery()`) is read-only: it refuses every statement that writes
//! (CREATE/DROP INDEX, REINDEX, VACUUM, ALTER TABLE/SEQUENCE, REFRESH, CREATE EXTENSION), and its
//! activity counters (index scans, sequential scans) count only the queries run on it. The report
//! says so once, and the fixes that write are marked to be run on the primary.

use crate::report::{Category, Finding, IndexSuggestion};

/// The report's note on a standby.
pub const NOTE: &str = "this server is a hot standby (pg_is_in_recovery() is true): it is read-only, so \
     fixes that write (CREATE/DROP INDEX, REINDEX, VACUUM, ALTER, REFRESH, CREATE EXTENSION) are marked \
     to be run on the primary, and index and sequential-scan counters are this standby's own";

/// The first line of a fix that writes, on a standby. SQL comment, so the fix stays runnable.
pub const ON_THE_PRIMARY: &str = "-- run on the primary: this server is a read-only standby\n";

/// Why a standby's unused-index finding says little: usage is counted per server.
pub const PER_SERVER_USAGE: &str = "usage counters are per server: these are this standby's scans only; \
     the primary and other replicas count their own";

/// What bloat means on a standby: a physical replica holds the primary's pages.
const REPLICATED_BLOAT: &str = "a standby holds the primary's pages: this bloat is the primary's, and \
     rewriting the relation there fixes it here too";

/// Categories whose fixes write to the database. Locks, activity and connections fixes
/// (pg_cancel_backend, pg_terminate_backend) and ALTER SYSTEM (configuration) do run on a standby.
fn fix_writes(category: Category) -> bool {
    matches!(
        category,
        Category::Indexes
            | Category::Tables
            | Category::Bloat
            | Category::Wraparound
            | Category::Sequences
            | Category::MaterializedViews
            | Category::Advisor
    )
}

/// Marks the fixes that write as to be run on the primary, and says what bloat means here.
pub fn mark_findings(findings: &mut [Finding]) {
    for finding in findings.iter_mut().filter(|f| fix_writes(f.category)) {
        if finding.category == Category::Bloat {
            finding.evidence.push(REPLICATED_BLOAT.into());
        }
        if let Some(fix) = finding.fix.as_mut().filter(|fix| !fix.starts_with(ON_THE_PRIMARY)) {
            fix.insert_str(0, ON_THE_PRIMARY);
        }
    }
}

/// Index suggestions are created on the primary; a standby replays them.
pub fn mark_suggestions(suggestions: &mut [IndexSuggestion]) {
    for suggestion in suggestions {
        suggestion.rationale.push_str(
            ". Create it on the primary (this server is a read-only standby); the standby gets it by replication.",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Severity;

    #[test]
    fn only_fixes_that_write_are_marked_and_only_once() {
        let mut findings = vec![
            Finding::new(Severity::Warning, Category::Bloat, "b").fix("VACUUM FULL t;"),
            Finding::new(Severity::Warning, Category::Locks, "l").fix("SELECT pg_terminate_backend(1);"),
            Finding::new(Severity::Info, Category::Indexes, "u")
                .fix(format!("{ON_THE_PRIMARY}DROP INDEX i;")),
        ];
        mark_findings(&mut findings);
        assert_eq!(findings[0].fix.as_deref(), Some(&*format!("{ON_THE_PRIMARY}VACUUM FULL t;")));
        assert_eq!(findings[1].fix.as_deref(), Some("SELECT pg_terminate_backend(1);"));
        assert_eq!(findings[2].fix.as_deref(), Some(&*format!("{ON_THE_PRIMARY}DROP INDEX i;")));
    }
}
