//! Advising a hot standby: the report says the server is a read-only standby, every fix that
//! writes is marked to be run on the primary, and an index unused on the standby is only
//! information (its usage counters count this server's queries, not the primary's).

mod common;

use std::io::Write;

use pgpilot_advisor::{advise, Category, NoProgress, Report, Severity};
use pgpilot_testkit::Cluster;

const PLANTED: &str = "
CREATE EXTENSION hypopg;
CREATE EXTENSION pgstattuple;
CREATE INDEX orders_status_unused ON orders (status);
CREATE INDEX orders_total_a ON orders (total);
CREATE INDEX orders_total_b ON orders (total);
CREATE MATERIALIZED VIEW order_totals AS SELECT status, count(*) FROM orders GROUP BY status WITH NO DATA;
";

const ON_THE_PRIMARY: &str = "-- run on the primary";

/// Categories whose fixes write: a standby refuses them.
const WRITING: [Category; 5] = [
    Category::Indexes,
    Category::Bloat,
    Category::Wraparound,
    Category::Sequences,
    Category::MaterializedViews,
];

async fn advise_standby(url: &str) -> Report {
    let mut workload = tempfile::NamedTempFile::new().unwrap();
    writeln!(workload, "-- calls: 1000\n{};", common::RECENT_ORDERS).unwrap();
    let mut opts = common::options(url);
    opts.workload.file = Some(workload.path().to_path_buf());
    opts.health.unused_index_min_bytes = 0;
    advise(&opts, &NoProgress).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_is_named_and_its_writing_fixes_go_to_the_primary() {
    let primary = Cluster::start();
    common::database_with_orders(&primary, "shop");
    primary.psql("shop", PLANTED);
    // pg_basebackup asks for a spread checkpoint: with nothing left to flush it is immediate.
    primary.psql("postgres", "CHECKPOINT");
    let replica = primary.start_replica();
    replica.wait_caught_up(&primary);

    let report = advise_standby(&replica.url("postgres", "shop")).await;
    let text = report.render_text(false);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["standby"], true, "{text}");
    assert!(text.contains("STANDBY: this server is a read-only hot standby"), "{text}");
    assert!(report.notes.iter().any(|n| n.contains("pg_is_in_recovery()")), "{text}");

    let unused = report.findings.iter().find(|f| f.title == "Unused index public.orders_status_unused");
    let unused = unused.unwrap_or_else(|| panic!("no unused-index finding:\n{text}"));
    assert_eq!(unused.severity, Severity::Info, "{text}");
    assert!(unused.evidence.iter().any(|e| e.contains("usage counters are per server")), "{text}");

    let writing: Vec<_> = report.findings.iter().filter(|f| WRITING.contains(&f.category)).collect();
    assert!(writing.iter().any(|f| f.title.contains("uplicate")), "a duplicate index is planted:\n{text}");
    for finding in writing {
        if let Some(fix) = &finding.fix {
            assert!(
                fix.starts_with(ON_THE_PRIMARY),
                "`{}` not marked for the primary:\n{text}",
                finding.title
            );
        }
    }
    assert!(!report.index_suggestions.is_empty(), "hypopg plans on a standby too:\n{text}");
    for suggestion in &report.index_suggestions {
        assert!(suggestion.rationale.contains("on the primary"), "{text}");
    }
    // The text report says it beside each suggestion, proven ones included.
    let said = text.matches("Create it on the primary").count();
    assert_eq!(said, report.index_suggestions.len(), "{text}");
}
