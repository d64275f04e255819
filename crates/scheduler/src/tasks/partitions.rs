//! The partitions job: premake future partitions from now, watch the default partition, retire old ones.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use tokio_postgres::Client;

use super::catalog::{self, Bound, Child, PartitionKey};
use super::periods::{self, MAX_IDENTIFIER_BYTES};
use super::{StopSignal, TaskContext, TaskOutput};
use crate::pg::{self, quote_ident, quote_literal, Context, JobError, Relation};
use crate::spec::PartitionsTask;

/// Counting rows in a default partition stops here: the number is a warning, not an inventory.
const DEFAULT_ROWS_CAP: i64 = 1_000_000;

struct Table<'a> {
    task: &'a PartitionsTask,
    rel: Relation,
    key: PartitionKey,
    children: Vec<Child>,
}

impl Table<'_> {
    /// The job's naming template for this table.
    fn template(&self) -> &str {
        self.task.naming.as_deref().unwrap_or(periods::default_template(self.task.interval))
    }

    /// True when `child` is a partition the job could have made: its bounds are exactly one of the
    /// job's periods and its name is the one the job gives that period. Only such partitions are
    /// retired; a hand-made one (an archive, a partition spanning a year, one named by another
    /// scheme or an earlier `naming`) is the DBA's, and detaching or dropping it could lose data.
    fn follows_naming(&self, child: &Child) -> bool {
        let Some((Bound::At(lower), Bound::At(upper))) = child.range else {
            return false;
        };
        if child.is_default || lower.time() != NaiveTime::MIN {
            return false;
        }
        let start = lower.date();
        let interval = self.task.interval;
        periods::period_start(interval, lower) == start
            && upper == midnight(periods::next_start(interval, start))
            && child.schema == self.rel.schema
            && child.name == periods::partition_name(self.template(), &self.rel.name, start)
    }

    fn default_partition(&self) -> Option<&Child> {
        self.children.iter().find(|c| c.is_default)
    }

    /// The partitions whose ranges overlap start..end, by lower bound, and the parts of start..end
    /// none of them covers.
    fn coverage(&self, start: NaiveDate, end: NaiveDate) -> Coverage<'_> {
        let (lo, hi) = (Bound::At(midnight(start)), Bound::At(midnight(end)));
        let mut overlapping: Vec<(&Child, Bound, Bound)> = self
            .children
            .iter()
            .filter_map(|c| match c.range {
                Some((from, to)) if !c.is_default && from < hi && lo < to => Some((c, from, to)),
                _ => None,
            })
            .collect();
        overlapping.sort_by_key(|(_, from, _)| *from);
        let mut gaps = Vec::new();
        let mut covered_to = lo;
        for (_, from, to) in &overlapping {
            if *from > covered_to {
                gaps.push((covered_to, *from));
            }
            covered_to = covered_to.max(*to);
        }
        if covered_to < hi {
            gaps.push((covered_to, hi));
        }
        Coverage { partitions: overlapping.into_iter().map(|(c, _, _)| c).collect(), gaps }
    }

    fn range_predicate(&self, start: NaiveDate, end: NaiveDate) -> String {
        let (col, ty) = (self.key.column_sql(), self.key.key_type);
        format!("{col} >= {} AND {col} < {}", ty.literal(start), ty.literal(end))
    }

    fn bounds_sql(&self, start: NaiveDate, end: NaiveDate) -> String {
        let ty = self.key.key_type;
        format!("FOR VALUES FROM ({}) TO ({})", ty.literal(start), ty.literal(end))
    }
}

fn midnight(day: NaiveDate) -> NaiveDateTime {
    day.and_hms_opt(0, 0, 0).unwrap_or_default()
}

/// How existing partitions cover a wanted period.
struct Coverage<'a> {
    partitions: Vec<&'a Child>,
    /// Ranges of the period no partition covers.
    gaps: Vec<(Bound, Bound)>,
}

impl Coverage<'_> {
    fn partition_names(&self) -> String {
        self.partitions.iter().map(|c| c.display()).collect::<Vec<_>>().join(", ")
    }

    fn gap_text(&self) -> String {
        let text = |b: &Bound| match b {
            Bound::At(t) if t.time() == NaiveTime::MIN => t.date().to_string(),
            Bound::At(t) => t.to_string(),
            Bound::MinValue => "MINVALUE".into(),
            Bound::MaxValue => "MAXVALUE".into(),
        };
        self.gaps
            .iter()
            .map(|(from, to)| format!("{}..{}", text(from), text(to)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub async fn run(
    client: &Client,
    task: &PartitionsTask,
    ctx: &TaskContext,
    out: &mut TaskOutput,
) -> Result<(), JobError> {
    let rel = pg::find_relation(client, &task.table).await?;
    let key = catalog::partition_key(client, &rel).await?;
    // Bounds are written and read as wall-clock times in the job's zone.
    client
        .batch_execute(&format!("SET DateStyle = 'ISO'; SET TimeZone = {}", quote_literal(&task.time_zone)))
        .await
        .context(|| format!("setting TimeZone to {}", task.time_zone))?;
    let (now_local, cutoff) = local_times(client, ctx, task).await?;
    let children = catalog::children(client, &rel, ctx.server_version).await?;
    let mut table = Table { task, rel, key, children };

    finish_pending_detaches(client, &table, cutoff, &ctx.stop, out).await?;
    premake(client, &mut table, now_local, &ctx.stop, out).await?;
    watch_default(client, &table, out).await?;
    if let Some(cutoff) = cutoff {
        retire(client, &table, cutoff, ctx, out).await?;
    }
    Ok(())
}

/// Now and the retention cutoff as wall-clock times in the job's zone (PostgreSQL does the zone
/// and calendar arithmetic). Now comes from the scheduler's clock, never from the table's data.
async fn local_times(
    client: &Client,
    ctx: &TaskContext,
    task: &PartitionsTask,
) -> Result<(NaiveDateTime, Option<NaiveDateTime>), JobError> {
    let retention = task.retention.as_ref().map(|r| r.interval().to_sql()).unwrap_or_else(|| "0".into());
    let row = client
        .query_one(
            // Partitions are made ahead by pgpilot's clock, but retired by the earlier of it and
            // the database's: a host clock running fast must not drop data early.
            "SELECT ($1::timestamptz AT TIME ZONE $2)::timestamp,
                    ((least($1::timestamptz, now()) AT TIME ZONE $2) - $3::text::interval)::timestamp",
            &[&ctx.now, &task.time_zone, &retention],
        )
        .await
        .context(|| "computing the current period".into())?;
    let cutoff: NaiveDateTime = row.get(1);
    Ok((row.get(0), task.retention.as_ref().map(|_| cutoff)))
}

/// True when the partition's whole range ends at or before the retention cutoff: the job retires it.
fn past_retention(child: &Child, cutoff: Option<NaiveDateTime>) -> bool {
    match (child.range, cutoff) {
        (Some((_, Bound::At(upper))), Some(cutoff)) => !child.is_default && upper <= cutoff,
        _ => false,
    }
}

/// A DETACH ... CONCURRENTLY interrupted by a cancel or crash leaves the partition half-detached:
/// queries on the parent no longer see it, and nothing can be attached in its place until the
/// detach is finalized. The job finishes it only for a partition past retention, which it would
/// retire anyway. Finishing someone else's detach of a partition the job keeps would leave its
/// period without a partition for good (and the detached table holding the name the job would
/// make it under), while the run reported success: the run fails instead and says what to do.
async fn finish_pending_detaches(
    client: &Client,
    table: &Table<'_>,
    cutoff: Option<NaiveDateTime>,
    stop: &StopSignal,
    out: &mut TaskOutput,
) -> Result<(), JobError> {
    for child in table.children.iter().filter(|c| c.detach_pending) {
        if !past_retention(child, cutoff) || !table.follows_naming(child) {
            out.problem(kept_partition_half_detached(table, child));
            continue;
        }
        stop.check(|| format!("finishing the detach of {}", child.display()))?;
        let sql = format!("ALTER TABLE {} DETACH PARTITION {} FINALIZE", table.rel.sql(), child.sql());
        client
            .batch_execute(&sql)
            .await
            .context(|| format!("finishing the detach of {}", child.display()))?;
        out.note(format!("finished the interrupted detach of {} (past retention)", child.display()));
    }
    Ok(())
}

/// What the DBA should do about a half-detached partition the job keeps.
fn kept_partition_half_detached(table: &Table<'_>, child: &Child) -> String {
    let (parent, part) = (table.rel.sql(), child.sql());
    let why = match table.task.retention {
        _ if !table.follows_naming(child) => "it does not follow the job's naming",
        Some(_) => "it is not past `retention`",
        None => "the job has no `retention`",
    };
    format!(
        "{} is half-detached from {}: a DETACH PARTITION ... CONCURRENTLY was interrupted, and queries and \
         inserts on the table no longer see it ({}). pgpilot finishes only the detaches of partitions it \
         would retire, and {why}, so it left it as it is. To keep it, finish the detach and attach it again: \
         ALTER TABLE {parent} DETACH PARTITION {part} FINALIZE; ALTER TABLE {parent} ATTACH PARTITION {part} {}; \
         to let it go, run only the FINALIZE and rename or drop {part}, and the next run makes a new partition \
         for its range",
        child.display(),
        table.rel.display(),
        child.bound,
        child.bound
    )
}

/// Creates the missing partitions of the current and the next `premake` periods, and notes
/// those it made (also when making a later one fails).
async fn premake(
    client: &Client,
    table: &mut Table<'_>,
    now_local: NaiveDateTime,
    stop: &StopSignal,
    out: &mut TaskOutput,
) -> Result<(), JobError> {
    let mut created = Vec::new();
    let result = create_missing(client, table, now_local, stop, &mut created, out).await;
    out.partitions_created = created.len();
    if !created.is_empty() {
        out.note(format!("created {}", created.join(", ")));
    }
    result
}

async fn create_missing(
    client: &Client,
    table: &mut Table<'_>,
    now_local: NaiveDateTime,
    stop: &StopSignal,
    created: &mut Vec<String>,
    out: &mut TaskOutput,
) -> Result<(), JobError> {
    let task = table.task;
    let template = table.template().to_string();
    for (start, end) in periods::wanted_periods(task.interval, now_local, task.premake) {
        let coverage = table.coverage(start, end);
        if !coverage.partitions.is_empty() {
            // The period's own partition would overlap these, so PostgreSQL would refuse it.
            report_existing(table, start, end, &coverage, out);
            continue;
        }
        let name = periods::partition_name(&template, &table.rel.name, start);
        if name.len() > MAX_IDENTIFIER_BYTES {
            out.problem(format!(
                "partition name {name} is longer than {MAX_IDENTIFIER_BYTES} bytes; set a shorter `naming` template"
            ));
            continue;
        }
        stop.check(|| format!("creating partition {name}"))?;
        if create_partition(client, table, &name, start, end, out).await? {
            created.push(name.clone());
            table.children.push(Child {
                schema: table.rel.schema.clone(),
                name,
                is_default: false,
                range: Some((Bound::At(midnight(start)), Bound::At(midnight(end)))),
                bound: table.bounds_sql(start, end),
                detach_pending: false,
            });
        }
    }
    Ok(())
}

/// A period that existing partitions cover wholly is fine. One they cover only in part leaves
/// ranges where inserts fail (no partition for the row) unless a default partition catches them.
fn report_existing(
    table: &Table<'_>,
    start: NaiveDate,
    end: NaiveDate,
    coverage: &Coverage<'_>,
    out: &mut TaskOutput,
) {
    let names = coverage.partition_names();
    let exact = Some((Bound::At(midnight(start)), Bound::At(midnight(end))));
    if coverage.gaps.is_empty() {
        if coverage.partitions.len() != 1 || coverage.partitions[0].range != exact {
            out.note(format!("{start}..{end} is already covered by {names}"));
        }
        return;
    }
    // Bounds are wall-clock times in the job's zone, which says so: the server may run in another.
    let gaps = format!("{} ({})", coverage.gap_text(), table.task.time_zone);
    match table.default_partition() {
        Some(default) => out.note(format!(
            "{start}..{end} is only partly covered by {names}; rows for {gaps} go to the default partition {}",
            default.display()
        )),
        None => out.problem(format!(
            "{start}..{end} is only partly covered by {names}: no partition takes rows for {gaps} \
             (the period's own partition would overlap {names}); create partitions for those ranges by hand"
        )),
    }
}

/// Makes one partition. Rows for its range already sitting in the default partition would make
/// CREATE ... PARTITION OF fail; they are moved when the job allows it, reported otherwise.
async fn create_partition(
    client: &Client,
    table: &Table<'_>,
    name: &str,
    start: NaiveDate,
    end: NaiveDate,
    out: &mut TaskOutput,
) -> Result<bool, JobError> {
    let qualified = format!("{}.{}", quote_ident(&table.rel.schema), quote_ident(name));
    if let Some(taken) = name_taken(client, table, name, &qualified, start, end).await? {
        out.problem(taken);
        return Ok(false);
    }
    if let Some(default) = table.default_partition() {
        let count_sql =
            format!("SELECT count(*) FROM {} WHERE {}", default.sql(), table.range_predicate(start, end));
        let waiting: i64 = client
            .query_one(&count_sql, &[])
            .await
            .context(|| format!("counting rows for {start}..{end} in {}", default.display()))?
            .get(0);
        if waiting > 0 {
            if !table.task.move_default_rows {
                out.problem(format!(
                    "{waiting} rows for {start}..{end} sit in the default partition {}, so {name} was not created; \
                     set `move_default_rows = true` to move them into it",
                    default.display()
                ));
                return Ok(false);
            }
            let keys = catalog::referencing_foreign_keys(client, &table.rel).await?;
            if !keys.is_empty() {
                out.problem(cannot_move_referenced(table, default, name, waiting, start, end, &keys));
                return Ok(false);
            }
            let moved = move_from_default(client, table, default, &qualified, start, end).await?;
            out.rows_moved += moved;
            out.note(format!("moved {moved} rows from {} into {name}", default.display()));
            return Ok(true);
        }
    }
    let owner = owner_of(client, table).await?;
    // One simple query, so one transaction: the partition is never seen with the job's owner.
    let sql = format!(
        "CREATE TABLE {qualified} PARTITION OF {} {}; ALTER TABLE {qualified} OWNER TO {owner}",
        table.rel.sql(),
        table.bounds_sql(start, end)
    );
    client.batch_execute(&sql).await.context(|| format!("creating partition {name}"))?;
    Ok(true)
}

/// Why rows in the default partition were left there although the job may move them.
fn cannot_move_referenced(
    table: &Table<'_>,
    default: &Child,
    name: &str,
    waiting: i64,
    start: NaiveDate,
    end: NaiveDate,
    keys: &[String],
) -> String {
    format!(
        "{waiting} rows for {start}..{end} sit in the default partition {}, so {name} was not created; they \
         were not moved because {} references {}: moving deletes them from the default partition first, \
         which would fire the foreign key's ON DELETE action (CASCADE deletes the referencing rows) or fail; \
         drop the foreign key, let a run move the rows (`pgpilot jobs run`), then add the key back",
        default.display(),
        keys.join(", "),
        table.rel.display()
    )
}

/// The partitioned table's owner, quoted. A partition the job makes is given to it, as
/// pg_partman does: made by a job role (a member of the owner role), it would belong to that
/// role, and the owner's own migrations (ALTER TABLE on the parent recurses) would fail on it.
async fn owner_of(client: &Client, table: &Table<'_>) -> Result<String, JobError> {
    let row = client
        .query_one(
            "SELECT quote_ident(pg_get_userbyid(relowner)) FROM pg_class WHERE oid = $1",
            &[&table.rel.oid],
        )
        .await
        .context(|| format!("reading the owner of {}", table.rel.display()))?;
    Ok(row.get(0))
}

/// Why the partition for start..end cannot be made under `name` (`qualified` in the table's
/// schema) when a relation there already has it — typically a partition of this table detached earlier (by retention, or
/// by hand) and kept: PostgreSQL would refuse with 42P07, which says nothing of what to do.
async fn name_taken(
    client: &Client,
    table: &Table<'_>,
    name: &str,
    qualified: &str,
    start: NaiveDate,
    end: NaiveDate,
) -> Result<Option<String>, JobError> {
    let row = client
        .query_opt(
            "SELECT c.relkind::text, (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = c.oid LIMIT 1)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2",
            &[&table.rel.schema, &name],
        )
        .await
        .context(|| format!("looking for a relation named {name}"))?;
    let Some(row) = row else { return Ok(None) };
    let (kind, parent): (String, Option<String>) = (row.get(0), row.get(1));
    let existing = format!("{}.{}", table.rel.schema, name);
    let bounds = portable_bounds(client, table, start, end).await?;
    Ok(Some(match (kind.as_str(), parent) {
        ("r", None) => format!(
            "no partition for {start}..{end}: {existing} already exists as a table that is not a partition of {} \
             (a partition detached earlier?), so it cannot be created. To put it back: ALTER TABLE {} ATTACH \
             PARTITION {qualified} {bounds}; or rename or drop {qualified}, and the next run creates an empty partition",
            table.rel.display(),
            table.rel.sql()
        ),
        (_, parent) => format!(
            "no partition for {start}..{end}: the name {existing} is taken by {} (relkind {kind}); rename that or \
             set a `naming` template that gives another name",
            parent.map_or_else(|| "another relation".to_string(), |p| format!("a partition of {p}"))
        ),
    }))
}

/// `FOR VALUES FROM (...) TO (...)` for start..end as the server prints such bounds: a timestamptz
/// bound carries its offset, so the statement means the same in a session of any TimeZone.
async fn portable_bounds(
    client: &Client,
    table: &Table<'_>,
    start: NaiveDate,
    end: NaiveDate,
) -> Result<String, JobError> {
    let type_name = match table.key.key_type {
        catalog::KeyType::Date => "date",
        catalog::KeyType::Timestamp => "timestamp",
        catalog::KeyType::TimestampTz => "timestamptz",
    };
    let sql = format!(
        "SELECT format('FOR VALUES FROM (%L) TO (%L)', {}::{type_name}, {}::{type_name})",
        table.key.key_type.literal(start),
        table.key.key_type.literal(end)
    );
    let row =
        client.query_one(&sql, &[]).await.context(|| format!("writing the bounds of {start}..{end}"))?;
    Ok(row.get(0))
}

/// In one transaction: a new table shaped like the parent, the default partition's rows for its
/// range moved into it, then attached. Readers see the rows in one place or the other, never both.
///
/// The transaction first locks the parent (ONLY, not its partitions) and then the default partition
/// in SHARE ROW EXCLUSIVE mode, which blocks writes but not reads. Without it a row for the range
/// inserted into the default partition after the DELETE made ATTACH fail with 23514 ("updated
/// partition constraint for default partition ... would be violated"). With it such an insert
/// waits and, once the partition is attached, goes into it: the insert locks the parent before it
/// picks a partition, so it sees the new one. The order is ATTACH's own (the parent, then the
/// default partition) and an insert's, so the job never holds the default partition while it
/// queues for the parent.
async fn move_from_default(
    client: &Client,
    table: &Table<'_>,
    default: &Child,
    qualified: &str,
    start: NaiveDate,
    end: NaiveDate,
) -> Result<i64, JobError> {
    let columns: Vec<String> = client
        .query(
            "SELECT quote_ident(attname) FROM pg_attribute
              WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
              ORDER BY attnum",
            &[&table.rel.oid],
        )
        .await
        .context(|| format!("reading the columns of {}", table.rel.display()))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let columns = columns.join(", ");
    let owner = owner_of(client, table).await?;
    let steps = [
        format!("LOCK TABLE ONLY {} IN SHARE ROW EXCLUSIVE MODE", table.rel.sql()),
        format!("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE", default.sql()),
        format!(
            "CREATE TABLE {qualified} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE \
             INCLUDING COMMENTS INCLUDING GENERATED)",
            table.rel.sql()
        ),
        format!(
            "WITH moved AS (DELETE FROM {} WHERE {} RETURNING {columns}) INSERT INTO {qualified} ({columns}) \
             SELECT {columns} FROM moved",
            default.sql(),
            table.range_predicate(start, end)
        ),
        format!(
            "ALTER TABLE {} ATTACH PARTITION {qualified} {}",
            table.rel.sql(),
            table.bounds_sql(start, end)
        ),
        format!("ALTER TABLE {qualified} OWNER TO {owner}"),
    ];
    const MOVE_STEP: usize = 3;
    client.batch_execute("BEGIN").await.context(|| "BEGIN".into())?;
    let mut moved = 0;
    for (i, sql) in steps.iter().enumerate() {
        match client.execute(sql.as_str(), &[]).await {
            Ok(n) if i == MOVE_STEP => moved = n as i64,
            Ok(_) => {}
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(JobError::Postgres {
                    context: format!("moving rows for {start}..{end} out of {}", default.display()),
                    source: e,
                });
            }
        }
    }
    client.batch_execute("COMMIT").await.context(|| "COMMIT".into())?;
    Ok(moved)
}

/// Rows in the default partition mean a partition was missing when they arrived (or they are bogus).
async fn watch_default(client: &Client, table: &Table<'_>, out: &mut TaskOutput) -> Result<(), JobError> {
    let Some(default) = table.default_partition() else {
        return Ok(());
    };
    let sql = format!("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT {DEFAULT_ROWS_CAP}) d", default.sql());
    let rows: i64 = client
        .query_one(&sql, &[])
        .await
        .context(|| format!("counting rows in {}", default.display()))?
        .get(0);
    out.default_rows = Some(rows);
    if rows > 0 {
        let range_sql = format!(
            "SELECT min({col})::text, max({col})::text FROM {}",
            default.sql(),
            col = table.key.column_sql()
        );
        let range =
            client.query_one(&range_sql, &[]).await.context(|| format!("reading {}", default.display()))?;
        let (lo, hi): (Option<String>, Option<String>) = (range.get(0), range.get(1));
        let more = if rows >= DEFAULT_ROWS_CAP { "at least " } else { "" };
        out.note(format!(
            "default partition {} holds {more}{rows} rows ({} from {} to {})",
            default.display(),
            table.key.column,
            lo.unwrap_or_default(),
            hi.unwrap_or_default()
        ));
    }
    Ok(())
}

/// The partitions a run retired, as far as it got.
#[derive(Default)]
struct Retired {
    /// Detached (and dropped, when the job drops them).
    done: Vec<String>,
    /// Detached, but the drop that was to follow failed.
    detached_only: Option<String>,
}

/// Detaches (and optionally drops) partitions whose whole range ends at or before the cutoff,
/// and notes those it retired (also when a later one fails).
async fn retire(
    client: &Client,
    table: &Table<'_>,
    cutoff: NaiveDateTime,
    ctx: &TaskContext,
    out: &mut TaskOutput,
) -> Result<(), JobError> {
    // DETACH CONCURRENTLY (PostgreSQL 14+) takes only a SHARE UPDATE EXCLUSIVE lock on the parent,
    // but PostgreSQL refuses it when the table has a default partition.
    let has_default = table.default_partition().is_some();
    let concurrently = ctx.server_version >= 140000 && !has_default;
    // Past retention but not named as the job names its partitions: someone else's, left alone.
    for child in table
        .children
        .iter()
        .filter(|c| !c.detach_pending && past_retention(c, Some(cutoff)) && !table.follows_naming(c))
    {
        out.note(format!("left alone: {} does not follow the job's naming", child.display()));
    }
    let mut retired = Retired::default();
    let result = retire_each(client, table, cutoff, concurrently, &ctx.stop, &mut retired).await;
    out.partitions_retired = retired.done.len();
    let detached_any = !retired.done.is_empty() || retired.detached_only.is_some();
    // A wall-clock time in the job's zone, which says so: the server may run in another.
    let cutoff = format!("{} {}", cutoff.format("%Y-%m-%d %H:%M:%S"), table.task.time_zone);
    if !retired.done.is_empty() {
        let verb = if table.task.retention_drop { "detached and dropped" } else { "detached" };
        out.note(format!("{verb} {} (older than {cutoff})", retired.done.join(", ")));
    }
    if let Some(name) = retired.detached_only {
        out.note(format!("detached {name} (older than {cutoff}), which is left to drop"));
    }
    if detached_any && !concurrently {
        let why =
            if has_default { "the table has a default partition" } else { "the server is older than 14" };
        out.note(format!("detached without CONCURRENTLY because {why}"));
    }
    result
}

async fn retire_each(
    client: &Client,
    table: &Table<'_>,
    cutoff: NaiveDateTime,
    concurrently: bool,
    stop: &StopSignal,
    retired: &mut Retired,
) -> Result<(), JobError> {
    let old = table
        .children
        .iter()
        .filter(|c| !c.detach_pending && past_retention(c, Some(cutoff)) && table.follows_naming(c));
    let how = if concurrently { " CONCURRENTLY" } else { "" };
    for child in old {
        stop.check(|| format!("detaching {}", child.display()))?;
        let sql = format!("ALTER TABLE {} DETACH PARTITION {}{how}", table.rel.sql(), child.sql());
        client.batch_execute(&sql).await.context(|| format!("detaching {}", child.display()))?;
        if table.task.retention_drop {
            retired.detached_only = Some(child.display());
            let drop = format!("DROP TABLE {}", child.sql());
            client.batch_execute(&drop).await.context(|| format!("dropping {}", child.display()))?;
            retired.detached_only = None;
        }
        retired.done.push(child.display());
    }
    Ok(())
}
