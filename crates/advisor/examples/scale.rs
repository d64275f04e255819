//! The advisor's performance goal: a database with 500 tables and 200 distinct statements is
//! advised in under 30 seconds. Starts a throwaway cluster, builds the schema, times `advise`.
//!
//! cargo run --release -p pgpilot-advisor --example scale [TABLES] [STATEMENTS] [ROWS_PER_TABLE]

use std::io::Write;
use std::time::Instant;

use pgpilot_advisor::report::Evidence;
use pgpilot_advisor::{advise, apply, AdviseOptions, ApplySettings, NoProgress};
use pgpilot_testkit::Cluster;

fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let tables = args.first().copied().unwrap_or(500);
    let statements = args.get(1).copied().unwrap_or(200);
    let rows = args.get(2).copied().unwrap_or(10_000);

    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE scale");
    let load = Instant::now();
    cluster.psql(
        "scale",
        &format!(
            "DO $$ BEGIN FOR t IN 0..{} LOOP
               EXECUTE format('CREATE TABLE t%s (id bigserial PRIMARY KEY, account_id int NOT NULL,
                 created_at timestamptz NOT NULL, state text NOT NULL, amount int NOT NULL, payload jsonb NOT NULL)', t);
               EXECUTE format('INSERT INTO t%s (account_id, created_at, state, amount, payload)
                 SELECT i %% 500, now() - i * interval ''1 minute'', CASE WHEN i %% 100 = 0 THEN ''open'' ELSE ''closed'' END,
                        i %% 1000, jsonb_build_object(''k'', i %% 10) FROM generate_series(1, {rows}) i', t);
             END LOOP; END $$",
            tables - 1
        ),
    );
    cluster.psql("scale", "ANALYZE");
    eprintln!("loaded {tables} tables × {rows} rows in {:.1} s", load.elapsed().as_secs_f64());

    let mut file = tempfile::NamedTempFile::new()?;
    for i in 0..statements {
        let t = (i * 13) % tables;
        let u = (t + 1) % tables;
        let sql = match i % 5 {
            0 => {
                format!("SELECT id, amount FROM t{t} WHERE account_id = $1 ORDER BY created_at DESC LIMIT 20")
            }
            1 => format!("SELECT * FROM t{t} WHERE state = 'open' ORDER BY created_at LIMIT 50"),
            2 => format!(
                "SELECT count(*) FROM t{t} WHERE created_at > now() - interval '1 hour' AND amount = $1"
            ),
            3 => {
                format!("SELECT a.id FROM t{t} a JOIN t{u} b ON b.account_id = a.account_id WHERE a.id = $1")
            }
            _ => format!("UPDATE t{t} SET amount = amount + 1 WHERE account_id = $1 AND state = $2"),
        };
        writeln!(file, "-- calls: {}\n{sql};", 1000 - i)?;
    }
    let mut opts = AdviseOptions::new(cluster.url("postgres", "scale"));
    opts.workload.pg_stat_statements = false;
    opts.workload.file = Some(file.path().to_path_buf());
    opts.index.install_extensions = true;
    opts.machine.memory_bytes = Some(8 << 30);
    opts.machine.cpus = Some(2);
    opts.pool.target_tps = Some(1000.0);

    let runtime = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    let mut report = runtime.block_on(advise(&opts, &NoProgress))?;
    let elapsed = started.elapsed().as_secs_f64();
    let (c, w, i) = report.counts();
    println!(
        "advised {tables} tables / {} statements ({} analysed, {} skipped) in {elapsed:.2} s: \
         {} index suggestions, {c} critical / {w} warning / {i} info findings",
        report.workload.statements,
        report.workload.analysed,
        report.workload.skipped.len(),
        report.index_suggestions.len()
    );
    // The five heaviest proven suggestions, created for real and measured before and after.
    let chosen: Vec<usize> = report
        .index_suggestions
        .iter()
        .enumerate()
        .filter(|(_, s)| s.evidence == Evidence::Hypothetical)
        .map(|(i, _)| i)
        .take(5)
        .collect();
    runtime.block_on(apply(&opts, &mut report, &chosen, &ApplySettings::default(), &NoProgress))?;
    for a in &report.applied {
        for m in &a.measurements {
            let ms = |v: Option<f64>| v.map(|x| format!("{x:.3} ms")).unwrap_or_else(|| "not run".into());
            println!(
                "{}\n  {}: {} -> {} (cost {:.0} -> {:.0}; {})",
                a.create_statement,
                m.query,
                ms(m.before_ms),
                ms(m.after_ms),
                m.cost_before,
                m.cost_after,
                m.note
            );
        }
    }
    Ok(())
}
