//! The unused-index check counts the scans of the database's replicas: an index only reads on a
//! replica use is used. A replica that cannot be read is named in a note, and the DROP still says
//! to check the replicas; with no replica known the check is as before.

mod common;

use std::time::Duration;

use pgpilot_advisor::{advise, AdviseOptions, Category, Finding, NoProgress, Report};
use pgpilot_testkit::Cluster;

const SCHEMA: &str = "
CREATE TABLE events (id int PRIMARY KEY, kind int, at timestamptz);
INSERT INTO events SELECT g, g % 300, now() - g * interval '1 min' FROM generate_series(1, 50000) g;
CREATE INDEX events_kind_read_on_replica ON events (kind);
CREATE INDEX events_at_unused ON events (at);
ANALYZE events;
";

/// Nothing listens there.
const UNREACHABLE: &str = "postgres://postgres@127.0.0.1:1/shop";

fn unused<'a>(report: &'a Report, index: &str) -> Option<&'a Finding> {
    let title = format!("Unused index {index}");
    report.findings.iter().find(|f| f.category == Category::Indexes && f.title == title)
}

async fn run(opts: &AdviseOptions) -> Report {
    advise(opts, &NoProgress).await.unwrap()
}

/// A primary whose index `events_kind_read_on_replica` only its replica's readers scan.
fn primary_and_replica() -> (Cluster, Cluster) {
    let primary = Cluster::start();
    primary.psql("postgres", "CREATE DATABASE shop");
    primary.psql("shop", SCHEMA);
    primary.psql("postgres", "CHECKPOINT");
    let replica = primary.start_replica();
    replica.wait_caught_up(&primary);
    replica.psql(
        "shop",
        "SET enable_seqscan = off; SET enable_bitmapscan = off; SELECT count(*) FROM events WHERE kind = 7",
    );
    let scanned =
        "SELECT idx_scan > 0 FROM pg_stat_user_indexes WHERE indexrelname = 'events_kind_read_on_replica'";
    replica.wait_for_in("shop", "t", scanned, Duration::from_secs(15));
    (primary, replica)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_scanned_on_a_replica_is_used() {
    let (primary, replica) = primary_and_replica();
    let mut opts = common::options(&primary.url("postgres", "shop"));
    opts.skip_indexes = true;
    opts.health.unused_index_min_bytes = 0;
    opts.health.unused_index_min_stats_days = 0;

    // No replica known: the primary's counters alone, and the DROP says to check the replicas.
    let alone = run(&opts).await;
    let text = alone.render_text(false);
    let looks_unused =
        unused(&alone, "public.events_kind_read_on_replica").unwrap_or_else(|| panic!("{text}"));
    assert!(looks_unused.fix.as_deref().unwrap_or_default().starts_with("-- check replicas too"), "{text}");

    // The replica counts: its scans make the index used; the other index is unused on both, and
    // its DROP needs no further check.
    let replica_url = replica.url("postgres", "shop");
    opts.replicas = vec![replica_url.clone()];
    let report = run(&opts).await;
    let text = report.render_text(false);
    assert!(
        unused(&report, "public.events_kind_read_on_replica").is_none(),
        "scanned on the replica:\n{text}"
    );
    let everywhere = unused(&report, "public.events_at_unused").unwrap_or_else(|| panic!("{text}"));
    let replica_name = format!("on replica postgres@127.0.0.1:{}/shop", replica.port());
    assert!(everywhere.evidence[0].contains(&replica_name), "{everywhere:?}");
    assert_eq!(everywhere.fix.as_deref(), Some("DROP INDEX CONCURRENTLY public.events_at_unused;"), "{text}");
    assert!(!report.notes.iter().any(|n| n.contains("replica")), "{:#?}", report.notes);

    // A replica that cannot be read: said in a note, and the DROP says to check the replicas.
    opts.replicas = vec![replica_url, UNREACHABLE.into()];
    let report = run(&opts).await;
    let text = report.render_text(false);
    assert!(unused(&report, "public.events_kind_read_on_replica").is_none(), "{text}");
    let note = report.notes.iter().find(|n| n.contains("a replica could not be read"));
    let note = note.unwrap_or_else(|| panic!("no note on the unreachable replica:\n{text}"));
    assert!(note.contains("postgres@127.0.0.1:1/shop"), "{note}");
    let everywhere = unused(&report, "public.events_at_unused").unwrap_or_else(|| panic!("{text}"));
    assert!(everywhere.fix.as_deref().unwrap_or_default().starts_with("-- check replicas too"), "{text}");
}
