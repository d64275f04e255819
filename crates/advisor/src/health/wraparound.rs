//! Transaction-ID and multixact wraparound, and sequences near their limit.
//!
//! XIDs and multixact IDs are 32-bit counters compared modulo 2^31: a database whose oldest
//! unfrozen ID is 2^31 − 1 old would see the past as the future. PostgreSQL refuses new IDs a few
//! million short of that (3 million since 14), so anti-wraparound vacuum must freeze long before.

use anyhow::Result;

use crate::db::Db;
use crate::report::{Category, Finding, Severity};
use crate::units::count;

/// The largest age an XID or multixact can reach before wraparound (2^31 − 1).
pub const WRAP_LIMIT: i64 = 2_147_483_647;
/// PostgreSQL 14+ stops assigning IDs this many before the limit (1 million before 14).
pub const STOP_MARGIN: i64 = 3_000_000;

/// How far a database is towards wraparound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WraparoundAssessment {
    pub age: i64,
    /// Percent of the way to wraparound.
    pub percent: f64,
    /// IDs left before PostgreSQL stops accepting writes.
    pub remaining: i64,
    pub severity: Option<Severity>,
}

/// Critical past half the way; a warning once the age is 25% past the freeze max age (autovacuum
/// should have frozen the table by then: it is stuck or too slow).
pub fn assess(age: i64, freeze_max_age: i64) -> WraparoundAssessment {
    let percent = 100.0 * age as f64 / WRAP_LIMIT as f64;
    let remaining = (WRAP_LIMIT - STOP_MARGIN - age).max(0);
    let severity = if age >= WRAP_LIMIT / 2 {
        Some(Severity::Critical)
    } else if age as f64 > freeze_max_age as f64 * 1.25 {
        Some(Severity::Warning)
    } else {
        None
    };
    WraparoundAssessment { age, percent, remaining, severity }
}

pub async fn check(db: &Db) -> Result<Vec<Finding>> {
    let rows = db
        .rows(
            "SELECT datname::text, age(datfrozenxid)::int8, mxid_age(datminmxid)::int8, \
             current_setting('autovacuum_freeze_max_age')::int8, \
             current_setting('autovacuum_multixact_freeze_max_age')::int8 \
             FROM pg_database WHERE datallowconn ORDER BY 2 DESC",
        )
        .await?;
    let oldest = db
        .rows(
            "SELECT c.oid::regclass::text || ' (' || age(c.relfrozenxid) || ')' FROM pg_class c \
             WHERE c.relkind IN ('r', 'm', 't') AND c.relfrozenxid <> '0' ORDER BY age(c.relfrozenxid) DESC LIMIT 5",
        )
        .await?;
    let oldest: Vec<String> = oldest.iter().map(|r| r.get(0)).collect();
    let mut out = Vec::new();
    for r in rows {
        let db_name: String = r.get(0);
        for (kind, age, limit) in
            [("transaction ID", r.get::<_, i64>(1), r.get::<_, i64>(3)), ("multixact", r.get(2), r.get(4))]
        {
            let a = assess(age, limit);
            let Some(severity) = a.severity else { continue };
            let mut f = Finding::new(
                severity,
                Category::Wraparound,
                format!("Database {db_name} is {:.1}% of the way to {kind} wraparound", a.percent),
            )
            .object(db_name.clone())
            .evidence(format!(
                "oldest unfrozen {kind} is {} old (autovacuum freezes from {}); {} left before PostgreSQL stops accepting writes",
                count(a.age),
                count(limit),
                count(a.remaining)
            ));
            if db_name == db.database && !oldest.is_empty() {
                f = f.evidence(format!("oldest tables here: {}", oldest.join(", ")));
            }
            out.push(f.fix(
                "find what stops vacuum (long transactions, prepared transactions, stale replication slots), then\n\
                 VACUUM (FREEZE, VERBOSE) on the oldest tables; raise autovacuum_max_workers / lower cost delay",
            ));
        }
    }
    Ok(out)
}

/// Percent of a sequence's usable range consumed, and the severity (75% warning, 90% critical).
pub fn sequence_usage(last_value: i64, limit: i64) -> (f64, Option<Severity>) {
    let pct = if limit > 0 { 100.0 * last_value as f64 / limit as f64 } else { 0.0 };
    let severity = match pct {
        p if p >= 90.0 => Some(Severity::Critical),
        p if p >= 75.0 => Some(Severity::Warning),
        _ => None,
    };
    (pct, severity)
}

/// The largest value a column of this type can hold.
pub fn type_max(type_name: &str) -> Option<i64> {
    match type_name {
        "smallint" => Some(i16::MAX as i64),
        "integer" => Some(i32::MAX as i64),
        "bigint" => Some(i64::MAX),
        _ => None,
    }
}

pub async fn sequences(db: &Db) -> Result<Vec<Finding>> {
    let rows = db
        .rows(
            "SELECT quote_ident(s.schemaname) || '.' || quote_ident(s.sequencename), s.last_value, s.max_value, \
             (SELECT format_type(a.atttypid, NULL) FROM pg_depend d JOIN pg_attribute a \
                ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
              WHERE d.classid = 'pg_class'::regclass AND d.objid = (quote_ident(s.schemaname) || '.' || quote_ident(s.sequencename))::regclass \
                AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i') LIMIT 1), \
             (SELECT d.refobjid::regclass::text || '.' || quote_ident(a.attname) FROM pg_depend d JOIN pg_attribute a \
                ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
              WHERE d.classid = 'pg_class'::regclass AND d.objid = (quote_ident(s.schemaname) || '.' || quote_ident(s.sequencename))::regclass \
                AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i') LIMIT 1) \
             FROM pg_sequences s WHERE s.last_value IS NOT NULL AND s.increment_by > 0",
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let (name, last, max): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
        let column_type: Option<String> = r.get(3);
        let column: Option<String> = r.get(4);
        let limit = column_type.as_deref().and_then(type_max).map_or(max, |t| t.min(max));
        let (pct, severity) = sequence_usage(last, limit);
        let Some(severity) = severity else { continue };
        let mut f = Finding::new(
            severity,
            Category::Sequences,
            format!("Sequence {name} has used {pct:.1}% of its range"),
        )
        .object(name.clone())
        .evidence(format!("last value {} of {}", count(last), count(limit)));
        f = match (&column, column_type.as_deref()) {
            (Some(col), Some(t)) if type_max(t).is_some_and(|m| m < max) => f
                .evidence(format!("it feeds {col}, a {t} column: the column overflows before the sequence"))
                .fix(format!(
                    "ALTER TABLE ... ALTER COLUMN ... TYPE bigint for {col} (rewrites the table: plan it, or migrate \
                     through a new bigint column)"
                )),
            _ => f.fix(format!("ALTER SEQUENCE {name} AS bigint MAXVALUE 9223372036854775807;")),
        };
        out.push(f);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraparound_arithmetic_against_known_values() {
        // Defaults: autovacuum_freeze_max_age = 200 million.
        let fresh = assess(150_000_000, 200_000_000);
        assert_eq!(fresh.severity, None);
        assert!((fresh.percent - 6.984919).abs() < 1e-5, "{}", fresh.percent);
        assert_eq!(fresh.remaining, 2_147_483_647 - 3_000_000 - 150_000_000);

        assert_eq!(assess(250_000_000, 200_000_000).severity, None); // exactly 1.25×: autovacuum still has room
        let behind = assess(300_000_000, 200_000_000);
        assert_eq!(behind.severity, Some(Severity::Warning));
        assert!((behind.percent - 13.969839).abs() < 1e-5);

        let half = assess(1_073_741_823, 200_000_000);
        assert_eq!(half.severity, Some(Severity::Critical));
        assert!((half.percent - 50.0).abs() < 1e-6);

        let stop = assess(2_144_483_647, 200_000_000);
        assert_eq!(stop.remaining, 0);
        // Multixacts use their own freeze age (400 million by default).
        assert_eq!(assess(450_000_000, 400_000_000).severity, None);
        assert_eq!(assess(520_000_000, 400_000_000).severity, Some(Severity::Warning));
    }

    #[test]
    fn sequences_against_column_types() {
        assert_eq!(sequence_usage(1_000, i32::MAX as i64).1, None);
        let (pct, sev) = sequence_usage(1_700_000_000, type_max("integer").unwrap());
        assert!((pct - 79.162).abs() < 0.01);
        assert_eq!(sev, Some(Severity::Warning));
        assert_eq!(sequence_usage(2_000_000_000, i32::MAX as i64).1, Some(Severity::Critical));
        assert_eq!(sequence_usage(30_000, type_max("smallint").unwrap()).1, Some(Severity::Critical));
    }
}
