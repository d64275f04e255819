//! Transaction-ID and multixact wraparound, and sequences near their limit.
//!
//! XIDs and multixact IDs are 32-bit counters compared modulo 2^31: a database whose oldest
//! unfrozen ID is 2^31 − 1 old would see the past as the future. PostgreSQL refuses new IDs a few
//! million short of that (3 million since 14), so anti-wraparound vacuum must freeze long before.

use anyhow::Result;

use super::horizon::{self, HorizonHolder};
use crate::db::{qualified_relation_sql, Db};
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
        .rows(&format!(
            "SELECT {} || ' (' || age(c.relfrozenxid) || ')' FROM pg_class c \
             WHERE c.relkind IN ('r', 'm', 't') AND c.relfrozenxid <> '0' ORDER BY age(c.relfrozenxid) DESC LIMIT 5",
            qualified_relation_sql("c.oid")
        ))
        .await?;
    let oldest: Vec<String> = oldest.iter().map(|r| r.get(0)).collect();
    // Held back past the age autovacuum freezes from, the age cannot come down until they end.
    let freeze_max_age = rows.first().map_or(i64::MAX, |r| r.get::<_, i64>(3));
    let holders = horizon::holders(db, freeze_max_age).await?;
    let mut out = Vec::new();
    for r in rows {
        let db_name: String = r.get(0);
        for (kind, age, limit) in
            [("transaction ID", r.get::<_, i64>(1), r.get::<_, i64>(3)), ("multixact", r.get(2), r.get(4))]
        {
            let a = assess(age, limit);
            let Some(severity) = a.severity else { continue };
            let held = if kind == "transaction ID" { holders.as_slice() } else { &[] };
            let mut f = Finding::new(severity, Category::Wraparound, wraparound_title(&db_name, kind, &a, limit, held))
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
            for holder in held {
                f = f.evidence(holder.describe());
            }
            out.push(f.fix(wraparound_fix(held)));
        }
    }
    Ok(out)
}

/// What is wrong: past half the way, how near wraparound is; before that, that vacuum has not
/// frozen what autovacuum_(multixact_)freeze_max_age says it should have (a figure like "0.1% of
/// the way to wraparound" reads as nothing to worry about).
/// When something holds the horizon back, the title says vacuum cannot freeze, not that it does not.
fn wraparound_title(
    db_name: &str,
    kind: &str,
    a: &WraparoundAssessment,
    freeze_max_age: i64,
    held: &[HorizonHolder],
) -> String {
    if a.severity == Some(Severity::Critical) {
        return format!("Database {db_name} is {:.1}% of the way to {kind} wraparound", a.percent);
    }
    let setting =
        if kind == "multixact" { "autovacuum_multixact_freeze_max_age" } else { "autovacuum_freeze_max_age" };
    let why = match held.len() {
        0 => "vacuum is not freezing it".to_string(),
        1 => "an old transaction or snapshot stops vacuum from freezing it".to_string(),
        n => format!("{n} old transactions or snapshots stop vacuum from freezing it"),
    };
    format!(
        "Database {db_name}: oldest {kind} age {} is beyond {setting} ({}): {why}",
        count(a.age),
        count(freeze_max_age)
    )
}

/// Vacuum freezes nothing newer than the horizon: whatever holds it is ended first, or the
/// VACUUM (FREEZE) and more autovacuum workers are wasted.
fn wraparound_fix(held: &[HorizonHolder]) -> String {
    if held.is_empty() {
        return "find what stops vacuum (long transactions, prepared transactions, stale replication slots), then\n\
                VACUUM (FREEZE, VERBOSE) on the oldest tables; raise autovacuum_max_workers / lower cost delay"
            .to_string();
    }
    let mut steps: Vec<String> = held.iter().map(HorizonHolder::release).collect();
    steps.push(
        "-- then autovacuum freezes by itself; to hurry it, VACUUM (FREEZE, VERBOSE) the oldest tables"
            .to_string(),
    );
    steps.join("\n")
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

/// The serial or identity column a sequence feeds, both parts quoted.
#[derive(Debug, Clone, PartialEq)]
pub struct OwningColumn {
    pub table: String,
    pub column: String,
}

fn is_narrower_than_bigint(type_name: &str) -> bool {
    type_max(type_name).is_some_and(|m| m < i64::MAX)
}

/// The statements that give a sequence room: the column it feeds must become bigint too when it
/// is narrower (the sequence's own bigint range is useless to an int column), so must the narrower
/// columns of foreign keys that reference that column (the first child row of a parent past 2^31
/// would fail "integer out of range"), and the sequence itself bigint when it is not already
/// (serial sequences stay `AS integer` after ALTER TABLE).
pub fn sequence_fix(
    sequence: &str,
    sequence_max: i64,
    narrow_column: Option<&OwningColumn>,
    narrow_references: &[OwningColumn],
) -> String {
    let mut steps = Vec::new();
    if let Some(col) = narrow_column {
        steps.push(format!(
            "ALTER TABLE {} ALTER COLUMN {} TYPE bigint;  -- rewrites the table under an exclusive lock: \
             plan it, or migrate through a new bigint column",
            col.table, col.column
        ));
    }
    for col in narrow_references {
        steps.push(format!(
            "ALTER TABLE {} ALTER COLUMN {} TYPE bigint;  -- a foreign key to it: rewrites that table too",
            col.table, col.column
        ));
    }
    if sequence_max < i64::MAX {
        steps.push(format!("ALTER SEQUENCE {sequence} AS bigint MAXVALUE 9223372036854775807;"));
    }
    steps.join("\n")
}

/// The columns narrower than bigint of foreign keys referencing the column a sequence feeds
/// (`fed`, below), as (table, column) pairs one after the other in a text[] (both quoted).
const NARROW_REFERENCES_SQL: &str =
    "(SELECT array_agg(u.pair ORDER BY rn.nspname, rc.relname, ra.attname, u.o) \
      FROM pg_constraint c \
      JOIN LATERAL generate_subscripts(c.confkey, 1) AS k ON c.confkey[k] = fed.refobjsubid \
      JOIN pg_attribute ra ON ra.attrelid = c.conrelid AND ra.attnum = c.conkey[k] \
      JOIN pg_class rc ON rc.oid = c.conrelid JOIN pg_namespace rn ON rn.oid = rc.relnamespace \
      CROSS JOIN LATERAL unnest(ARRAY[quote_ident(rn.nspname) || '.' || quote_ident(rc.relname), \
                                      quote_ident(ra.attname)]) WITH ORDINALITY AS u(pair, o) \
      WHERE c.contype = 'f' AND c.confrelid = fed.refobjid \
        AND ra.atttypid IN ('int2'::regtype, 'int4'::regtype))";

pub async fn sequences(db: &Db) -> Result<Vec<Finding>> {
    // `fed`: the serial or identity column the sequence feeds, found once for its type, its
    // name and the foreign keys that reference it.
    let rows = db
        .rows(&format!(
            "SELECT quote_ident(s.schemaname) || '.' || quote_ident(s.sequencename), s.last_value, s.max_value, \
             format_type(a.atttypid, NULL), \
             CASE WHEN a.attname IS NOT NULL THEN ARRAY[{owner}, quote_ident(a.attname)] END, \
             {references} \
             FROM pg_sequences s \
             LEFT JOIN LATERAL (SELECT d.refobjid, d.refobjsubid FROM pg_depend d \
               WHERE d.classid = 'pg_class'::regclass \
                 AND d.objid = (quote_ident(s.schemaname) || '.' || quote_ident(s.sequencename))::regclass \
                 AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i') LIMIT 1) fed ON true \
             LEFT JOIN pg_attribute a ON a.attrelid = fed.refobjid AND a.attnum = fed.refobjsubid \
             WHERE s.last_value IS NOT NULL AND s.increment_by > 0",
            owner = qualified_relation_sql("fed.refobjid"),
            references = NARROW_REFERENCES_SQL,
        ))
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let (name, last, max): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
        let column_type: Option<String> = r.get(3);
        // (table, column) of the serial or identity column the sequence feeds.
        let column: Option<Vec<String>> = r.get(4);
        let column = column.and_then(|c| match c.as_slice() {
            [table, column] => Some(OwningColumn { table: table.clone(), column: column.clone() }),
            _ => None,
        });
        let references: Option<Vec<String>> = r.get(5);
        let references = references.unwrap_or_default();
        let mut narrow_references: Vec<OwningColumn> = references
            .chunks_exact(2)
            .map(|pair| OwningColumn { table: pair[0].clone(), column: pair[1].clone() })
            .collect();
        // Two foreign keys on one column (a duplicate constraint) widen it once.
        narrow_references.dedup();
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
        let narrow_column =
            column.as_ref().zip(column_type.as_deref()).filter(|(_, t)| is_narrower_than_bigint(t));
        if let Some((col, t)) = narrow_column {
            f = f.evidence(format!(
                "it feeds {}.{} (type {t}): widening only the sequence makes inserts fail with \
                 \"{t} out of range\" (or, for an identity, wrap to negative ids)",
                col.table, col.column
            ));
        }
        if !narrow_references.is_empty() {
            let named: Vec<String> =
                narrow_references.iter().map(|c| format!("{}.{}", c.table, c.column)).collect();
            f = f.evidence(format!(
                "foreign keys reference the column it feeds from narrower columns ({}): widened with it, \
                 or their rows for new ids fail \"integer out of range\"",
                named.join(", ")
            ));
        }
        f = f.fix(sequence_fix(&name, max, narrow_column.map(|(c, _)| c), &narrow_references));
        out.push(f);
    }
    Ok(out)
}

/// The note for sequences whose last value pg_sequences hides from this role: it shows NULL
/// without SELECT or USAGE on the sequence (pg_monitor does not give them), so their use of their
/// range went unchecked and a sequence about to overflow would not be reported.
pub async fn unreadable_sequences(db: &Db) -> Result<Option<String>> {
    // The CASE keeps has_sequence_privilege, which raises an error for any other relation, from
    // being evaluated before the relkind test.
    let rows = db
        .rows(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'S' AND NOT pg_is_other_temp_schema(n.oid) \
               AND CASE WHEN c.relkind = 'S' THEN NOT has_sequence_privilege(c.oid, 'SELECT,USAGE') END \
             ORDER BY 1",
        )
        .await?;
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    if names.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "{} sequence(s) could not be checked for overflow: this role has neither SELECT nor USAGE on them, \
         so pg_sequences hides their last value; grant SELECT on them (GRANT SELECT ON ALL SEQUENCES IN \
         SCHEMA ..., or pg_read_all_data on PostgreSQL 14+), or run the advisor as their owner or a \
         superuser: {}",
        names.len(),
        super::some_of(&names)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_says_the_freeze_max_age_is_exceeded() {
        let a = assess(1_000_000, 50_000);
        assert_eq!(
            wraparound_title("app", "transaction ID", &a, 50_000, &[]),
            "Database app: oldest transaction ID age 1,000,000 is beyond autovacuum_freeze_max_age (50,000): \
             vacuum is not freezing it"
        );
        let near = assess(WRAP_LIMIT / 2 + 1, 200_000_000);
        assert!(wraparound_title("app", "multixact", &near, 200_000_000, &[]).contains("50.0% of the way"));
    }

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
    fn an_int_column_is_widened_with_its_sequence() {
        let col = OwningColumn { table: "sq1".into(), column: "id".into() };
        let serial = sequence_fix("public.sq1_id_seq", i32::MAX as i64, Some(&col), &[]);
        assert!(serial.starts_with("ALTER TABLE sq1 ALTER COLUMN id TYPE bigint;"), "{serial}");
        assert!(serial.ends_with("ALTER SEQUENCE public.sq1_id_seq AS bigint MAXVALUE 9223372036854775807;"));
        // A bigint sequence feeding an int column: only the column needs widening.
        let bigint_sequence = sequence_fix("public.sq1_id_seq", i64::MAX, Some(&col), &[]);
        assert!(
            bigint_sequence.starts_with("ALTER TABLE sq1") && !bigint_sequence.contains("ALTER SEQUENCE")
        );
        // A sequence feeding a bigint column (or none): only the sequence.
        assert_eq!(
            sequence_fix("public.s", i32::MAX as i64, None, &[]),
            "ALTER SEQUENCE public.s AS bigint MAXVALUE 9223372036854775807;"
        );
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
