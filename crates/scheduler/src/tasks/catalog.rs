//! What a partitioned table looks like in the catalog: its key and its partitions' bounds.

use chrono::{NaiveDate, NaiveDateTime};
use tokio_postgres::Client;

use crate::pg::{quote_ident, Context, JobError, Relation};

/// The types a time-based partition key may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Date,
    Timestamp,
    TimestampTz,
}

impl KeyType {
    /// A bound literal; for timestamptz it is read in the session's TimeZone, which the job sets.
    pub fn literal(self, day: NaiveDate) -> String {
        match self {
            KeyType::Date => format!("'{}'", day.format("%Y-%m-%d")),
            KeyType::Timestamp | KeyType::TimestampTz => format!("'{} 00:00:00'", day.format("%Y-%m-%d")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PartitionKey {
    pub column: String,
    pub key_type: KeyType,
}

impl PartitionKey {
    /// `"column"`, safe to put in SQL.
    pub fn column_sql(&self) -> String {
        quote_ident(&self.column)
    }
}

/// One end of a range partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bound {
    MinValue,
    At(NaiveDateTime),
    MaxValue,
}

#[derive(Clone, Debug)]
pub struct Child {
    pub schema: String,
    pub name: String,
    pub is_default: bool,
    /// None when the bound could not be read (then it is left alone).
    pub range: Option<(Bound, Bound)>,
    /// The bound as pg_get_expr printed it (`FOR VALUES FROM (...) TO (...)`, `DEFAULT`), what an
    /// `ATTACH PARTITION` putting it back would say.
    pub bound: String,
    pub detach_pending: bool,
}

impl Child {
    pub fn sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

/// The single time column a table is range-partitioned on, or why the job cannot manage it.
pub async fn partition_key(client: &Client, table: &Relation) -> Result<PartitionKey, JobError> {
    if table.kind != b'p' as i8 {
        return Err(JobError::Invalid(format!("{} is not a partitioned table", table.display())));
    }
    let row = client
        .query_one(
            "SELECT p.partstrat::text, p.partnatts::int, p.partattrs[0]::int,
                    coalesce(a.attname::text, ''), coalesce(a.atttypid::regtype::text, '')
               FROM pg_partitioned_table p
               LEFT JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
              WHERE p.partrelid = $1",
            &[&table.oid],
        )
        .await
        .context(|| format!("reading the partition key of {}", table.display()))?;
    let (strategy, columns, attnum): (String, i32, i32) = (row.get(0), row.get(1), row.get(2));
    let (column, type_name): (String, String) = (row.get(3), row.get(4));
    if strategy != "r" || columns != 1 || attnum == 0 {
        return Err(JobError::Invalid(format!(
            "{} must be partitioned BY RANGE on one column (not an expression) for the partitions job",
            table.display()
        )));
    }
    let key_type = match type_name.as_str() {
        "date" => KeyType::Date,
        "timestamp without time zone" => KeyType::Timestamp,
        "timestamp with time zone" => KeyType::TimestampTz,
        other => {
            return Err(JobError::Invalid(format!(
                "{} is partitioned on {column} of type {other}; the partitions job handles date, timestamp and timestamptz",
                table.display()
            )))
        }
    };
    Ok(PartitionKey { column, key_type })
}

/// The table's partitions with their bounds. The session must use DateStyle ISO and the job's
/// TimeZone, so the bounds read back as wall-clock times in that zone.
pub async fn children(
    client: &Client,
    table: &Relation,
    server_version: i32,
) -> Result<Vec<Child>, JobError> {
    let pending = if server_version >= 140000 { "i.inhdetachpending" } else { "false" };
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, pg_get_expr(c.relpartbound, c.oid), {pending}
           FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE i.inhparent = $1
          ORDER BY c.relname"
    );
    let rows = client
        .query(&sql, &[&table.oid])
        .await
        .context(|| format!("listing partitions of {}", table.display()))?;
    Ok(rows
        .iter()
        .map(|row| {
            let bound: Option<String> = row.get(2);
            let bound = bound.unwrap_or_default();
            Child {
                schema: row.get(0),
                name: row.get(1),
                is_default: bound.trim() == "DEFAULT",
                range: parse_range(&bound),
                bound,
                detach_pending: row.get(3),
            }
        })
        .collect())
}

/// The foreign keys that reference `table`, as "constraint NAME of TABLE". Rows they point at
/// cannot be moved out of the default partition: the move deletes them there first, which fires
/// each key's ON DELETE action (CASCADE would delete the referencing rows; NO ACTION fails, 23503).
pub async fn referencing_foreign_keys(client: &Client, table: &Relation) -> Result<Vec<String>, JobError> {
    let rows = client
        .query(
            "SELECT DISTINCT format('constraint %I of %s', conname, conrelid::regclass)
               FROM pg_constraint WHERE contype = 'f' AND confrelid = $1 AND conparentid = 0
              ORDER BY 1",
            &[&table.oid],
        )
        .await
        .context(|| format!("reading the foreign keys that reference {}", table.display()))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Reads `FOR VALUES FROM ('2026-01-01 00:00:00+00') TO (MAXVALUE)` as printed by pg_get_expr.
pub fn parse_range(text: &str) -> Option<(Bound, Bound)> {
    let rest = text.trim().strip_prefix("FOR VALUES FROM (")?;
    let (from, rest) = rest.split_once(") TO (")?;
    let to = rest.strip_suffix(')')?;
    Some((parse_bound(from)?, parse_bound(to)?))
}

fn parse_bound(text: &str) -> Option<Bound> {
    match text.trim() {
        "MINVALUE" => Some(Bound::MinValue),
        "MAXVALUE" => Some(Bound::MaxValue),
        quoted => {
            let inner = quoted.strip_prefix('\'')?.split('\'').next()?;
            if inner.len() >= 19 {
                NaiveDateTime::parse_from_str(&inner[..19], "%Y-%m-%d %H:%M:%S").ok().map(Bound::At)
            } else {
                let day = NaiveDate::parse_from_str(inner, "%Y-%m-%d").ok()?;
                day.and_hms_opt(0, 0, 0).map(Bound::At)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bounds_as_postgres_prints_them() {
        let at = |s: &str| Bound::At(NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap());
        assert_eq!(
            parse_range("FOR VALUES FROM ('2026-01-01 00:00:00+01') TO ('2026-02-01 00:00:00+01')"),
            Some((at("2026-01-01 00:00:00"), at("2026-02-01 00:00:00")))
        );
        assert_eq!(
            parse_range("FOR VALUES FROM ('2026-01-01') TO ('2026-01-02')"),
            Some((at("2026-01-01 00:00:00"), at("2026-01-02 00:00:00")))
        );
        assert_eq!(
            parse_range("FOR VALUES FROM (MINVALUE) TO ('2026-01-01 00:00:00')"),
            Some((Bound::MinValue, at("2026-01-01 00:00:00")))
        );
        assert_eq!(parse_range("DEFAULT"), None);
        assert_eq!(parse_range("FOR VALUES FROM ('infinity') TO ('2026-01-01')"), None);
    }
}
