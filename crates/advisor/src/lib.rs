//! pgpilot's DBA advisor: index suggestions proven with hypothetical indexes and generic plans,
//! health checks of the whole database, and configuration and pool-sizing advice.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use pgpilot_advisor::{advise, AdviseOptions, NoProgress};
//! let report = advise(&AdviseOptions::new("postgres://app@127.0.0.1/app"), &NoProgress).await?;
//! println!("{}", report.render_text(false));
//! # Ok(()) }
//! ```

pub mod config;
pub mod connect;
pub mod db;
pub mod health;
pub mod index;
mod keywords;
pub mod options;
mod pgpass;
pub mod progress;
pub mod render;
pub mod report;
pub mod sqltext;
pub mod tls;
pub mod units;
pub mod workload;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;

pub use config::machine::{MachineSpec, StorageKind, WorkloadKind};
pub use connect::Target;
pub use index::apply::ApplySettings;
pub use options::{AdviseOptions, HealthSettings, IndexAdvisorSettings, PoolInputs, WorkloadSources};
pub use progress::{NoProgress, Progress, TerminalProgress};
pub use report::{Category, Finding, IndexSuggestion, Report, Severity};

use crate::config::load::LoadMethod;
use crate::config::pgtune::TuneInput;
use crate::config::pool::{Load, PoolAdvice, PoolSizingInput};
use crate::db::Db;
use crate::report::WorkloadSummary;
use crate::workload::WorkloadStatement;

/// Runs the whole advisor against one database and returns its report.
pub async fn advise(opts: &AdviseOptions, progress: &dyn Progress) -> Result<Report> {
    let started = Instant::now();
    let generated_at_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let target = Target::parse(&opts.url)?;
    progress.stage("connecting", 1);
    let db = Db::open(&target, opts.statement_timeout_ms).await?;
    let hypopg_problem = db.ensure_extension("hypopg", opts.index.install_extensions).await?;
    let pgstattuple = db.ensure_extension("pgstattuple", opts.index.install_extensions).await?.is_none();
    // From here on the advisor only reads: a slip can never write.
    db.client.batch_execute("SET default_transaction_read_only = on").await?;
    // Before any planning: planning probes indexes and would count as their use.
    let mut scans = health::usage::IndexScans::read(&db, &target.server(), opts.scan_ledger.as_deref()).await;
    let mut notes = Vec::new();
    if let Ok(scans) = &mut scans {
        scans.add_replicas(health::usage::read_replicas(&opts.replicas, opts.statement_timeout_ms).await);
        notes.extend(scans.unreachable.iter().map(|why| {
            format!(
                "a replica could not be read ({why}): its index scans are not counted, so an index only it \
                 uses can be reported unused; check it before dropping one"
            )
        }));
    }
    progress.advance(1);

    let mut workload_warnings = Vec::new();
    let (statements, sources) = read_workload(&db, opts, &mut notes, &mut workload_warnings).await?;
    for warning in &workload_warnings {
        tracing::warn!("{warning}");
    }
    let latency = workload::statement_latency(&statements);
    let mut report = Report {
        database: db.database.clone(),
        target: target.describe(),
        server_version: db.version.clone(),
        standby: db.in_recovery,
        generated_at_unix,
        duration_ms: 0,
        index_method: String::new(),
        workload: WorkloadSummary {
            sources,
            statements: statements.len(),
            mean_latency_ms: latency.mean_ms,
            latency_excluded: latency.excluded,
            warnings: workload_warnings,
            ..Default::default()
        },
        findings: Vec::new(),
        index_suggestions: Vec::new(),
        rejected_candidates: Vec::new(),
        settings: Vec::new(),
        pool: None,
        applied: Vec::new(),
        notes: Vec::new(),
    };

    if opts.skip_indexes {
        report.index_method = "skipped".into();
    } else if statements.is_empty() {
        report.index_method = "none (no workload)".into();
        notes.push(
            "no workload statements: install pg_stat_statements, point --from-pgpilot at a running gateway, \
             or pass --workload-file"
                .into(),
        );
    } else {
        // A failing index advisor (a lost connection, an odd catalog) must not hide the health checks.
        match index::advise(&db, &statements, &opts.index, hypopg_problem, progress).await {
            Ok(advice) => {
                report.index_method = advice.method;
                report.workload.analysed = advice.analysed;
                report.workload.skipped = advice.skipped;
                notes.extend(advice.notes);
                report.findings.extend(advice.findings);
                report.index_suggestions = advice.suggestions;
                report.rejected_candidates = advice.rejected;
            }
            Err(e) => {
                report.index_method = "failed".into();
                notes.push(format!("the index advisor failed: {e:#}"));
            }
        }
    }

    if let Ok(scans) = &scans {
        if let Err(e) = scans.record_own_scans(&db) {
            notes.push(format!("the advisor's own index scans could not be recorded: {e:#}"));
        }
    }
    let (mut findings, mut health_notes) =
        health::run(&db, &opts.health, pgstattuple, &scans, &report.index_suggestions, progress).await;
    report.findings.append(&mut findings);
    notes.append(&mut health_notes);

    progress.stage("configuration", 2);
    configuration(&db, &target, opts, &mut report, &mut notes).await;
    progress.advance(1);
    report.pool = pool_advice(&db, opts, &report.workload, &mut notes).await;
    progress.advance(1);

    if db.in_recovery {
        health::standby::mark_findings(&mut report.findings);
        health::standby::mark_suggestions(&mut report.index_suggestions);
        notes.insert(0, health::standby::NOTE.into());
    }
    report.notes = notes;
    report.sort();
    report.duration_ms = started.elapsed().as_millis() as u64;
    progress.finish();
    Ok(report)
}

/// Creates the given suggestions (`--apply`) and records the before/after measurements in the report.
pub async fn apply(
    opts: &AdviseOptions,
    report: &mut Report,
    chosen: &[usize],
    settings: &ApplySettings,
    progress: &dyn Progress,
) -> Result<()> {
    let target = Target::parse(&opts.url)?;
    let suggestions: Vec<IndexSuggestion> =
        chosen.iter().filter_map(|&i| report.index_suggestions.get(i).cloned()).collect();
    report.applied = index::apply::apply(&target, &suggestions, settings, progress).await?;
    progress.finish();
    Ok(())
}

async fn read_workload(
    db: &Db,
    opts: &AdviseOptions,
    notes: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<(Vec<WorkloadStatement>, Vec<String>)> {
    let mut statements = Vec::new();
    let mut sources = Vec::new();
    let limit = opts.index.max_statements;
    if opts.workload.pg_stat_statements {
        match db.has_extension("pg_stat_statements").await {
            Ok(true) => match workload::pgss::read(db, limit).await {
                Ok(pgss) => {
                    sources.push(format!("pg_stat_statements ({} statements)", pgss.statements.len()));
                    notes.extend(pgss.hidden_note());
                    statements.extend(pgss.statements);
                }
                Err(e) => notes.push(format!("pg_stat_statements could not be read: {e:#}")),
            },
            _ => notes.push("pg_stat_statements is not installed in this database".into()),
        }
    }
    if let Some(url) = &opts.workload.pgpilot_url {
        let database = opts.workload.pgpilot_database.as_deref().unwrap_or(&db.database);
        match workload::pgpilot::fetch(url, opts.workload.pgpilot_token.as_deref(), database, limit).await {
            Ok(fetched) => {
                sources.push(format!("pgpilot at {url} ({} statements)", fetched.statements.len()));
                notes.extend(fetched.cut_note());
                warnings.extend(fetched.warnings);
                statements.extend(fetched.statements);
            }
            Err(e) => unreadable_source(opts, notes, format!("pgpilot statistics could not be read: {e:#}"))?,
        }
    }
    if let Some(path) = &opts.workload.file {
        match workload::file::read(path) {
            Ok(s) => {
                sources.push(format!("file {} ({} statements)", path.display(), s.len()));
                statements.extend(s);
            }
            Err(e) => unreadable_source(opts, notes, format!("{e:#}"))?,
        }
    }
    let mut merged = workload::merge(statements);
    workload::sort_by_weight(&mut merged);
    Ok((merged, sources))
}

/// A workload source named by the user that could not be read: the run fails when the sources are
/// `required`, else the report says so in a note.
fn unreadable_source(opts: &AdviseOptions, notes: &mut Vec<String>, why: String) -> Result<()> {
    if opts.workload.required {
        anyhow::bail!("{why}");
    }
    notes.push(why);
    Ok(())
}

async fn configuration(
    db: &Db,
    target: &Target,
    opts: &AdviseOptions,
    report: &mut Report,
    notes: &mut Vec<String>,
) {
    let local = target.is_local().then(config::machine::detect_local).unwrap_or_default();
    let memory = opts.machine.memory_bytes.or(local.memory_bytes);
    let cpus = opts.machine.cpus.or(local.cpus);
    let (Some(memory), Some(cpus)) = (memory, cpus) else {
        notes.push(
            "the database server's memory and CPUs are unknown (it is not local): pass --memory and --cpus \
             for configuration advice"
                .into(),
        );
        return;
    };
    let storage = match opts.storage {
        Some(s) => s,
        None => {
            let detected = if target.is_local() { data_directory_storage(db).await } else { None };
            detected.unwrap_or_else(|| {
                notes.push("storage kind unknown: assumed SSD (pass --storage hdd|ssd|san)".into());
                StorageKind::Ssd
            })
        }
    };
    let connections = db
        .client
        .query_one("SELECT current_setting('max_connections')::int", &[])
        .await
        .ok()
        .map(|r| r.get::<_, i32>(0) as u32);
    let input = TuneInput {
        memory_kb: memory / 1024,
        cpus,
        connections,
        storage,
        workload: opts.workload_kind,
        version_num: db.version_num,
    };
    match config::settings::advise(db, &input).await {
        Ok((advice, finding)) => {
            report.settings = advice;
            if let Some(mut f) = finding {
                f.evidence.insert(
                    0,
                    format!(
                        "for {} of memory, {cpus} CPUs, {} storage, {} workload (PGTune's formulas)",
                        units::bytes(memory as i64),
                        storage.label(),
                        opts.workload_kind.label()
                    ),
                );
                report.findings.push(f);
            }
        }
        Err(e) => notes.push(format!("settings could not be read: {e:#}")),
    }
}

async fn data_directory_storage(db: &Db) -> Option<StorageKind> {
    let row = db.client.query_one("SELECT current_setting('data_directory', true)", &[]).await.ok()?;
    let dir: Option<String> = row.get(0);
    config::machine::detect_storage(std::path::Path::new(&dir?))
}

async fn pool_advice(
    db: &Db,
    opts: &AdviseOptions,
    workload: &WorkloadSummary,
    notes: &mut Vec<String>,
) -> Option<PoolAdvice> {
    let row = db
        .client
        .query_one(
            "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int",
            &[],
        )
        .await
        .ok()?;
    let (load, source) = match (opts.pool.target_tps, workload.mean_latency_ms) {
        (Some(rate), Some(latency)) => {
            (Load::Target { statements_per_s: rate, mean_latency_ms: latency }, "--target-tps".to_string())
        }
        (Some(_), None) => {
            notes.push(
                "--target-tps needs a measured statement latency (pg_stat_statements or pgpilot): no pool sizing"
                    .into(),
            );
            return None;
        }
        (None, _) => {
            let measured = config::load::measure(db, opts.workload.pg_stat_statements).await?;
            let source = format!(
                "measured over {:.0} s by {} (pass --target-tps for your peak)",
                measured.window_s,
                match measured.method {
                    LoadMethod::PgStatStatements => "pg_stat_statements",
                    LoadMethod::ActiveBackends => "sampling pg_stat_activity",
                }
            );
            (Load::Measured(measured), source)
        }
    };
    let cpus = opts.machine.cpus.or_else(|| {
        Target::parse(&opts.url)
            .ok()
            .filter(|t| t.is_local())
            .and_then(|_| config::machine::detect_local().cpus)
    });
    let given_rate = matches!(load, Load::Target { .. });
    let input = PoolSizingInput {
        load,
        max_connections: row.get::<_, i32>(0) as u32,
        reserved_connections: row.get::<_, i32>(1) as u32,
        app_instances: opts.pool.app_instances.max(1),
        cpus,
    };
    let mut advice = config::pool::size(&input, &source);
    if given_rate {
        advice.explanation.insert(1, latency_basis(&workload.latency_excluded));
    }
    Some(advice)
}

/// Which statements the latency is the mean of: maintenance and sleeps say nothing about how long
/// the application holds a pooled connection.
fn latency_basis(excluded: &[String]) -> String {
    let basis = "latency: the mean of ordinary statements (SELECT, INSERT, UPDATE, DELETE, MERGE)";
    if excluded.is_empty() {
        basis.to_string()
    } else {
        format!("{basis}; left out: {}", excluded.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The gateway spawns the advisor on its runtime: the futures must be Send.
    #[test]
    fn advise_and_apply_futures_are_send() {
        let opts = AdviseOptions::new("postgres://nobody@127.0.0.1:1/none");
        let advising = advise(&opts, &NoProgress);
        assert_send(&advising);
        let settings = ApplySettings::default();
        let mut report: Option<Report> = None;
        if let Some(r) = report.as_mut() {
            let applying = apply(&opts, r, &[], &settings, &NoProgress);
            assert_send(&applying);
        }
    }
}
