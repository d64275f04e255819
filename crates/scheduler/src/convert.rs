//! `pgpilot partitions convert`: a reviewed plan for turning a plain table into a range-partitioned one.
//!
//! The plan keeps the existing table whole and attaches it as the partition holding everything
//! before a boundary, so no row is copied and the exclusive lock lasts only for catalog changes:
//! 1. online: a CHECK constraint proving every row is before the boundary (validated without
//!    blocking writes), and unique indexes widened with the partition column, built CONCURRENTLY;
//! 2. one short transaction: rename, create the partitioned table, attach the old table (the
//!    validated CHECK spares the scan), premake partitions, add keys (they adopt existing indexes);
//! 3. afterwards: ANALYZE and a partitions job to keep partitions coming.
//!
//! Nothing is run: the plan is printed for a person to read, adjust and run.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use crate::pg::{self, quote_ident, Context, JobError, Relation};
use crate::spec::PartitionInterval;
use crate::tasks::periods;

/// What to convert and how.
#[derive(Clone, Debug)]
pub struct ConvertRequest {
    pub table: String,
    pub column: String,
    pub interval: PartitionInterval,
    /// Partitions to create after the boundary.
    pub premake: u32,
    pub naming: Option<String>,
    /// The `[databases.NAME]` the printed job should name, when known.
    pub database: Option<String>,
    /// Now, in UTC: the boundary is the first period start comfortably after it.
    pub now: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub title: String,
    /// Why and what it locks.
    pub explanation: String,
    pub sql: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConvertPlan {
    pub table: String,
    pub column: String,
    /// Rows before this go to the old table, attached as a partition; later rows to new partitions.
    pub boundary: NaiveDate,
    pub facts: Vec<String>,
    pub warnings: Vec<String>,
    pub steps: Vec<Step>,
    /// A `[[jobs]]` table that keeps the partitions coming afterwards.
    pub job_toml: String,
}

/// One PRIMARY KEY or UNIQUE constraint of the table.
struct KeyConstraint {
    name: String,
    primary: bool,
    columns: Vec<String>,
}

struct Facts {
    rel: Relation,
    column_type: String,
    structure: Structure,
    dependents: Dependents,
}

struct Structure {
    keys: Vec<KeyConstraint>,
    /// (name, definition, unique) of indexes that back no constraint.
    plain_indexes: Vec<(String, String, bool)>,
    /// (name, kind c/f/x, definition).
    other_constraints: Vec<(String, char, String)>,
    identity_columns: Vec<String>,
    /// (column, sequence) for sequences owned by a column (serial).
    owned_sequences: Vec<(String, String)>,
}

struct Dependents {
    /// (name, relkind, definition of a plain view).
    views: Vec<(String, char, Option<String>)>,
    referencing_fks: Vec<String>,
    triggers: Vec<String>,
}

pub async fn plan(client: &Client, req: &ConvertRequest) -> Result<ConvertPlan, JobError> {
    client
        .batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET statement_timeout = '60s'")
        .await
        .context(|| "preparing the session".into())?;
    // The table name is the user's, resolved with their search_path.
    let rel = pg::find_relation(client, &req.table).await?;
    let req = &ConvertRequest { column: pg::column_name(&req.column), ..req.clone() };
    // regclass::text, pg_get_viewdef and the like leave out the schema of whatever is visible on
    // search_path, and the script may run with another one ("$user" first, say): a bare view name
    // would then make a new view elsewhere. With only pg_catalog on the path every name is qualified.
    let saved: String = client
        .query_one("SELECT current_setting('search_path')", &[])
        .await
        .context(|| "reading search_path".into())?
        .get(0);
    client.batch_execute("SET search_path = pg_catalog").await.context(|| "setting search_path".into())?;
    let plan = plan_with_qualified_names(client, req, rel).await;
    client
        .execute("SELECT set_config('search_path', $1, false)", &[&saved])
        .await
        .context(|| "restoring search_path".into())?;
    plan
}

async fn plan_with_qualified_names(
    client: &Client,
    req: &ConvertRequest,
    rel: Relation,
) -> Result<ConvertPlan, JobError> {
    let facts = gather(client, req, rel).await?;
    let job_table = sql_name(client, &facts.rel).await?;
    let boundary = boundary(req);
    let mut plan = ConvertPlan {
        table: facts.rel.display(),
        column: req.column.clone(),
        boundary,
        facts: Vec::new(),
        warnings: Vec::new(),
        steps: Vec::new(),
        job_toml: String::new(),
    };
    describe_size_and_range(client, &facts, req, boundary, &mut plan).await?;
    warn_about(&facts, req, &mut plan);
    plan.steps.push(prepare_step(&facts, req, boundary));
    plan.steps.push(swap_step(&facts, req, boundary));
    plan.steps.push(after_step(&facts));
    plan.job_toml = job_toml(&facts, req, &job_table);
    Ok(plan)
}

/// The first period start at least min(one period, 7 days) away, so the swap has time to happen.
fn boundary(req: &ConvertRequest) -> NaiveDate {
    let now = req.now.naive_utc();
    let mut b = periods::next_start(req.interval, periods::period_start(req.interval, now));
    let period_days = (periods::next_start(req.interval, b) - b).num_days().min(7);
    while (b.and_hms_opt(0, 0, 0).unwrap_or(now) - now).num_days() < period_days {
        b = periods::next_start(req.interval, b);
    }
    b
}

/// A bound that means the same whatever TimeZone the session running the script has.
fn bound_literal(key_type: &str, day: NaiveDate) -> String {
    match key_type {
        "date" => format!("'{}'", day.format("%Y-%m-%d")),
        "timestamp with time zone" => format!("'{} 00:00:00+00'", day.format("%Y-%m-%d")),
        _ => format!("'{} 00:00:00'", day.format("%Y-%m-%d")),
    }
}

/// `base_suffix`, cut so it stays a distinct identifier within PostgreSQL's 63 bytes.
fn derived_name(base: &str, suffix: &str) -> String {
    let mut cut = base.len().min(periods::MAX_IDENTIFIER_BYTES - suffix.len());
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &base[..cut])
}

async fn gather(client: &Client, req: &ConvertRequest, rel: Relation) -> Result<Facts, JobError> {
    match rel.kind as u8 {
        b'r' => {}
        b'p' => return Err(JobError::Invalid(format!("{} is already partitioned", rel.display()))),
        _ => return Err(JobError::Invalid(format!("{} is not a table", rel.display()))),
    }
    let col = client
        .query_opt(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
              WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped",
            &[&rel.oid, &req.column],
        )
        .await
        .context(|| "reading the column".into())?
        .ok_or_else(|| JobError::Invalid(format!("{} has no column {}", rel.display(), req.column)))?;
    let column_type: String = col.get(0);
    if !matches!(column_type.as_str(), "date" | "timestamp without time zone" | "timestamp with time zone") {
        return Err(JobError::Invalid(format!(
            "{} is {column_type}; time partitioning needs date, timestamp or timestamptz",
            req.column
        )));
    }
    let structure = read_structure(client, rel.oid).await?;
    let dependents = read_dependents(client, rel.oid).await?;
    Ok(Facts { rel, column_type, structure, dependents })
}

/// Keys, indexes, constraints and sequences of the table itself.
async fn read_structure(client: &Client, oid: u32) -> Result<Structure, JobError> {
    let q = |what: &'static str| move || format!("reading {what}");
    let keys = client
        .query(
            "SELECT c.conname::text, c.contype = 'p',
                    array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i)
               FROM pg_constraint c WHERE c.conrelid = $1 AND c.contype IN ('p', 'u') ORDER BY c.contype, c.conname",
            &[&oid],
        )
        .await
        .context(q("keys"))?
        .iter()
        .map(|r| KeyConstraint { name: r.get(0), primary: r.get(1), columns: r.get(2) })
        .collect();
    let plain_indexes = client
        .query(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), i.indisunique
               FROM pg_index i WHERE i.indrelid = $1
                AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = $1)
              ORDER BY 1",
            &[&oid],
        )
        .await
        .context(q("indexes"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let other_constraints = client
        .query(
            "SELECT conname::text, contype::text, pg_get_constraintdef(oid) FROM pg_constraint
              WHERE conrelid = $1 AND contype IN ('c', 'f', 'x') ORDER BY conname",
            &[&oid],
        )
        .await
        .context(q("constraints"))?
        .iter()
        .map(|r| (r.get(0), r.get::<_, String>(1).chars().next().unwrap_or('?'), r.get(2)))
        .collect();
    let identity_columns = client
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attidentity <> '' AND NOT attisdropped",
            &[&oid],
        )
        .await
        .context(q("identity columns"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let owned_sequences = client
        .query(
            "SELECT a.attname::text, s.oid::regclass::text
               FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
               JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
              WHERE d.refobjid = $1 AND d.deptype = 'a' AND d.classid = 'pg_class'::regclass",
            &[&oid],
        )
        .await
        .context(q("sequences"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(Structure { keys, plain_indexes, other_constraints, identity_columns, owned_sequences })
}

/// What depends on the table: views, other tables' foreign keys, triggers.
async fn read_dependents(client: &Client, oid: u32) -> Result<Dependents, JobError> {
    let q = |what: &'static str| move || format!("reading {what}");
    let views = client
        .query(
            "SELECT DISTINCT v.oid::regclass::text, v.relkind::text,
                    CASE WHEN v.relkind = 'v' THEN pg_get_viewdef(v.oid) END
               FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
              WHERE d.refobjid = $1 AND d.classid = 'pg_rewrite'::regclass AND v.oid <> $1",
            &[&oid],
        )
        .await
        .context(q("dependent views"))?
        .iter()
        .map(|r| (r.get(0), r.get::<_, String>(1).chars().next().unwrap_or('?'), r.get(2)))
        .collect();
    let referencing_fks = client
        .query(
            "SELECT format('%s on %s', conname, conrelid::regclass) FROM pg_constraint
              WHERE confrelid = $1 AND contype = 'f' AND conrelid <> $1",
            &[&oid],
        )
        .await
        .context(q("foreign keys"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let triggers = client
        .query("SELECT tgname::text FROM pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal", &[&oid])
        .await
        .context(q("triggers"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Dependents { views, referencing_fks, triggers })
}

async fn describe_size_and_range(
    client: &Client,
    facts: &Facts,
    req: &ConvertRequest,
    boundary: NaiveDate,
    plan: &mut ConvertPlan,
) -> Result<(), JobError> {
    let size = client
        .query_one(
            "SELECT reltuples::int8, pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class WHERE oid = $1",
            &[&facts.rel.oid],
        )
        .await
        .context(|| "reading the table's size".into())?;
    let (rows, bytes): (i64, String) = (size.get(0), size.get(1));
    let rows = if rows < 0 {
        "an unknown number of rows (never analyzed)".to_string()
    } else {
        format!("about {rows} rows")
    };
    plan.facts.push(format!("{}: {rows}, {bytes} with indexes", facts.rel.display()));
    let col = quote_ident(&req.column);
    let sql = format!(
        "SELECT min({col})::text, max({col})::text, count(*) FILTER (WHERE {col} >= {b}),
                count(*) FILTER (WHERE {col} IS NULL)
           FROM {}",
        facts.rel.sql(),
        b = bound_literal(&facts.column_type, boundary)
    );
    match client.query_one(&sql, &[]).await {
        Ok(r) => {
            let (lo, hi): (Option<String>, Option<String>) = (r.get(0), r.get(1));
            let (after, nulls): (i64, i64) = (r.get(2), r.get(3));
            plan.facts.push(format!(
                "{} ranges from {} to {}",
                req.column,
                lo.unwrap_or_else(|| "-".into()),
                hi.unwrap_or_else(|| "-".into())
            ));
            if after > 0 {
                plan.warnings.push(format!(
                    "{after} rows have {} on or after the boundary {boundary}; step 1's CHECK will fail until they \
                     are corrected or deleted (bogus future timestamps?)",
                    req.column
                ));
            }
            if nulls > 0 {
                plan.warnings.push(format!(
                    "{nulls} rows have a NULL {}; a range partition cannot hold them (fill them in first)",
                    req.column
                ));
            }
        }
        Err(e) => {
            plan.facts.push(format!("the range of {} could not be read: {}", req.column, pg::describe(&e)))
        }
    }
    Ok(())
}

fn warn_about(facts: &Facts, req: &ConvertRequest, plan: &mut ConvertPlan) {
    for k in facts.structure.keys.iter().filter(|k| !k.columns.contains(&req.column)) {
        plan.warnings.push(format!(
            "{} {} ({}) does not include {}: a partitioned table can only enforce uniqueness together with the \
             partition column, so the new table's key becomes ({}, {}); uniqueness of ({}) alone then holds only \
             within each partition",
            if k.primary { "PRIMARY KEY" } else { "UNIQUE" },
            k.name,
            k.columns.join(", "),
            req.column,
            k.columns.join(", "),
            req.column,
            k.columns.join(", ")
        ));
    }
    for (name, _, unique) in &facts.structure.plain_indexes {
        if *unique {
            plan.warnings.push(format!(
                "unique index {name} cannot be carried to the partitioned table unless it includes {}; it stays on the old partition only",
                req.column
            ));
        }
    }
    for (name, kind, _) in &facts.structure.other_constraints {
        if *kind == 'x' {
            plan.warnings.push(format!(
                "exclusion constraint {name} is not carried over; recreate it including {}",
                req.column
            ));
        }
    }
    for fk in &facts.dependents.referencing_fks {
        plan.warnings.push(format!(
            "foreign key {fk} references this table; after the swap it points at the old partition only. \
             Recreate it against the new table (its key must then include {})",
            req.column
        ));
    }
    for (name, kind, _) in &facts.dependents.views {
        if *kind == 'm' {
            plan.warnings.push(format!(
                "materialized view {name} keeps reading the old partition; recreate it after the swap"
            ));
        }
    }
    for t in &facts.dependents.triggers {
        plan.warnings
            .push(format!("trigger {t} stays on the old partition; create it on the new table for new rows"));
    }
}

fn prepare_step(facts: &Facts, req: &ConvertRequest, boundary: NaiveDate) -> Step {
    let table = facts.rel.sql();
    let col = quote_ident(&req.column);
    let mut sql = Vec::new();
    for k in facts.structure.keys.iter().filter(|k| !k.columns.contains(&req.column)) {
        let name = quote_ident(&derived_name(&k.name, &format!("_{}", req.column)));
        let cols: Vec<String> = k.columns.iter().map(|c| quote_ident(c)).chain([col.clone()]).collect();
        sql.push(format!("CREATE UNIQUE INDEX CONCURRENTLY {name} ON {table} ({});", cols.join(", ")));
        sql.push(format!("ALTER TABLE {table} ADD CONSTRAINT {name} UNIQUE USING INDEX {name};"));
    }
    let check = quote_ident(&derived_name(&facts.rel.name, "_legacy_bound"));
    sql.push(format!(
        "ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({col} IS NOT NULL AND {col} < {}) NOT VALID;",
        bound_literal(&facts.column_type, boundary)
    ));
    sql.push(format!("ALTER TABLE {table} VALIDATE CONSTRAINT {check};"));
    Step {
        title: "prepare (online)".into(),
        explanation: format!(
            "Builds what the swap needs without blocking reads or writes: unique indexes that include {} \
             (CONCURRENTLY, outside a transaction), and a CHECK that every row is before {boundary}, \
             validated under a SHARE UPDATE EXCLUSIVE lock. From here on, rows dated {boundary} or later are \
             refused until the swap, so run step 2 before then.",
            req.column
        ),
        sql,
    }
}

fn swap_step(facts: &Facts, req: &ConvertRequest, boundary: NaiveDate) -> Step {
    let (schema, name) = (&facts.rel.schema, &facts.rel.name);
    let table = facts.rel.sql();
    let legacy_name = derived_name(name, "_legacy");
    let legacy = format!("{}.{}", quote_ident(schema), quote_ident(&legacy_name));
    let col = quote_ident(&req.column);
    let lit = |d: NaiveDate| bound_literal(&facts.column_type, d);
    let mut sql = vec![
        "BEGIN;".to_string(),
        "SET LOCAL lock_timeout = '5s';".to_string(),
        format!("ALTER TABLE {table} RENAME TO {};", quote_ident(&legacy_name)),
        format!(
            "CREATE TABLE {table} (LIKE {legacy} INCLUDING DEFAULTS INCLUDING GENERATED INCLUDING IDENTITY \
             INCLUDING STORAGE INCLUDING COMMENTS INCLUDING STATISTICS) PARTITION BY RANGE ({col});"
        ),
    ];
    for (cname, kind, def) in &facts.structure.other_constraints {
        if *kind == 'c' {
            sql.push(format!("ALTER TABLE {table} ADD CONSTRAINT {} {def};", quote_ident(cname)));
        }
    }
    for c in &facts.structure.identity_columns {
        sql.push(format!("ALTER TABLE {legacy} ALTER COLUMN {} DROP IDENTITY;", quote_ident(c)));
    }
    sql.push(format!(
        "ALTER TABLE {table} ATTACH PARTITION {legacy} FOR VALUES FROM (MINVALUE) TO ({});",
        lit(boundary)
    ));
    sql.extend(premade_partitions(facts, req, boundary));
    sql.extend(carried_over(facts, req, &legacy));
    sql.push(format!(
        "ALTER TABLE {legacy} DROP CONSTRAINT {};",
        quote_ident(&derived_name(&facts.rel.name, "_legacy_bound"))
    ));
    sql.push("COMMIT;".into());
    Step {
        title: "swap (one short transaction)".into(),
        explanation: format!(
            "Takes ACCESS EXCLUSIVE locks for catalog changes only: the old table becomes partition {legacy_name} \
             for everything before {boundary} (the validated CHECK spares a scan), new partitions follow, and keys \
             and indexes on the new table adopt the old table's matching indexes instead of building new ones. \
             lock_timeout makes it give up rather than queue behind long transactions; just retry."
        ),
        sql,
    }
}

/// The partitions after the boundary, made in the same transaction so new rows have a home.
fn premade_partitions(facts: &Facts, req: &ConvertRequest, boundary: NaiveDate) -> Vec<String> {
    let (schema, name, table) = (&facts.rel.schema, &facts.rel.name, facts.rel.sql());
    let lit = |d: NaiveDate| bound_literal(&facts.column_type, d);
    let mut sql = Vec::new();
    let template = req.naming.as_deref().unwrap_or(periods::default_template(req.interval));
    let mut start = boundary;
    for _ in 0..req.premake.max(1) {
        let end = periods::next_start(req.interval, start);
        let part = format!(
            "{}.{}",
            quote_ident(schema),
            quote_ident(&periods::partition_name(template, name, start))
        );
        sql.push(format!(
            "CREATE TABLE {part} PARTITION OF {table} FOR VALUES FROM ({}) TO ({});",
            lit(start),
            lit(end)
        ));
        start = end;
    }
    sql
}

/// Keys, indexes, foreign keys, sequences and views moved to the new table after the attach.
fn carried_over(facts: &Facts, req: &ConvertRequest, legacy: &str) -> Vec<String> {
    let (table, col) = (facts.rel.sql(), quote_ident(&req.column));
    let mut sql = Vec::new();
    for k in &facts.structure.keys {
        let mut cols: Vec<String> = k.columns.iter().map(|c| quote_ident(c)).collect();
        if !k.columns.contains(&req.column) {
            cols.push(col.clone());
        }
        let what = if k.primary { "PRIMARY KEY" } else { "UNIQUE" };
        let cname = quote_ident(&derived_name(&k.name, "_p"));
        sql.push(format!("ALTER TABLE {table} ADD CONSTRAINT {cname} {what} ({});", cols.join(", ")));
    }
    for (_, def, _) in facts.structure.plain_indexes.iter().filter(|(_, _, unique)| !unique) {
        // "CREATE INDEX name ON schema.table USING ..." -> unnamed, so PostgreSQL picks a free name;
        // on a partitioned table it adopts the old table's identical index instead of building one.
        if let Some(on) = def.find(" ON ") {
            sql.push(format!("CREATE INDEX{};", &def[on..]));
        }
    }
    for (cname, kind, def) in &facts.structure.other_constraints {
        if *kind == 'f' {
            sql.push(format!("ALTER TABLE {table} ADD CONSTRAINT {} {def};", quote_ident(cname)));
        }
    }
    for c in &facts.structure.identity_columns {
        sql.push(format!(
            "SELECT setval(pg_get_serial_sequence('{}', '{c}'), coalesce((SELECT max({}) FROM {legacy}), 0) + 1, false);",
            table.replace('\'', "''"),
            quote_ident(c)
        ));
    }
    for (c, seq) in &facts.structure.owned_sequences {
        if !facts.structure.identity_columns.contains(c) {
            sql.push(format!("ALTER SEQUENCE {seq} OWNED BY {table}.{};", quote_ident(c)));
        }
    }
    for (view, kind, def) in &facts.dependents.views {
        if let (Some(def), 'v') = (def, kind) {
            sql.push(format!("CREATE OR REPLACE VIEW {view} AS {};", def.trim().trim_end_matches(';')));
        }
    }
    sql
}

fn after_step(facts: &Facts) -> Step {
    Step {
        title: "afterwards".into(),
        explanation:
            "Statistics for the new parent (autovacuum never analyzes a partitioned table), and a \
                      partitions job so future partitions keep coming (see the [[jobs]] table printed below)."
                .into(),
        sql: vec![format!("ANALYZE {};", facts.rel.sql())],
    }
}

/// The table as the partitions job reads its `table`: an SQL name, quoted by the server's own
/// rules (`public."MyEvents"`, `public."Audit Log"`, `public.events`), so it names this table and
/// not a lower-case namesake, whatever the search_path.
async fn sql_name(client: &Client, rel: &Relation) -> Result<String, JobError> {
    let row = client
        .query_one("SELECT format('%I.%I', $1::text, $2::text)", &[&rel.schema, &rel.name])
        .await
        .context(|| "quoting the table's name".into())?;
    Ok(row.get(0))
}

fn job_toml(facts: &Facts, req: &ConvertRequest, table_sql_name: &str) -> String {
    let interval = format!("{:?}", req.interval).to_lowercase();
    format!(
        "[[jobs]]\nname = {name}\nkind = \"partitions\"\nschedule = \"@daily\"\ndatabase = {database}\n\
         table = {table}\ninterval = \"{interval}\"\npremake = {premake}\n",
        name = toml_string(&format!("{}-partitions", facts.rel.name)),
        table = toml_string(table_sql_name),
        premake = req.premake.max(1),
        database = toml_string(req.database.as_deref().unwrap_or("CHANGE-ME"))
    )
}

/// A TOML string holding `text` exactly (quotes and backslashes in names escaped as TOML wants).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

impl ConvertPlan {
    /// The plan as a SQL script whose comments explain each step.
    pub fn render(&self) -> String {
        let mut out = format!(
            "-- pgpilot partitions convert: {} -> partitioned BY RANGE ({}), boundary {}\n\
             -- Nothing has been run. Review, adjust, and run each step yourself (psql -v ON_ERROR_STOP=1).\n--\n",
            self.table, self.column, self.boundary
        );
        for f in &self.facts {
            out.push_str(&format!("-- {f}\n"));
        }
        if !self.warnings.is_empty() {
            out.push_str("--\n-- WARNINGS:\n");
            for w in &self.warnings {
                out.push_str(&format!("--   * {w}\n"));
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            out.push_str(&format!("\n-- Step {}: {}\n", i + 1, step.title));
            for line in wrap(&step.explanation, 100) {
                out.push_str(&format!("-- {line}\n"));
            }
            for s in &step.sql {
                out.push_str(s);
                out.push('\n');
            }
        }
        out.push_str("\n-- Then add this job to pgpilot.toml:\n");
        for line in self.job_toml.lines() {
            out.push_str(&format!("--   {line}\n"));
        }
        out
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("one line at least");
        if !last.is_empty() && last.len() + word.len() + 1 > width {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}
