//! `--apply` when CREATE INDEX CONCURRENTLY gives up on lock_timeout (a writer keeps a transaction
//! open): the invalid index the failed build left is dropped once the writer is done, with a
//! longer wait of its own; when even that wait is not enough, the report says so and gives the
//! DROP statement. A failed build shows no before/after measurement.

mod common;

use std::time::Duration;

use pgpilot_advisor::index::apply;
use pgpilot_advisor::report::{Evidence, HelpedStatement, IndexSuggestion, WriteOverhead};
use pgpilot_advisor::{ApplySettings, NoProgress, Target};
use pgpilot_testkit::Cluster;

fn suggestion(name: &str) -> IndexSuggestion {
    IndexSuggestion {
        table: "public.people".into(),
        create_statement: format!("CREATE INDEX CONCURRENTLY {name} ON public.people USING btree (name)"),
        kind: "btree".into(),
        evidence: Evidence::Hypothetical,
        rationale: String::new(),
        weighted_cost_before: 1000.0,
        weighted_cost_after: Some(10.0),
        statements: vec![HelpedStatement {
            query: "SELECT * FROM people WHERE name = 'n77'".into(),
            calls: 1,
            cost_before: 1000.0,
            cost_after: Some(10.0),
        }],
        estimated_size_bytes: None,
        write_overhead: WriteOverhead::default(),
    }
}

/// A writer holding a row lock in an open transaction for `secs`.
async fn writer(url: &str, secs: u64) -> tokio::task::JoinHandle<()> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute("BEGIN; UPDATE people SET name = name WHERE id = 3").await.unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        client.batch_execute("ROLLBACK").await.unwrap();
    })
}

/// A report holding only these applied indexes, to render.
fn report_of(applied: Vec<pgpilot_advisor::report::AppliedIndex>) -> pgpilot_advisor::Report {
    pgpilot_advisor::Report {
        database: "app".into(),
        target: String::new(),
        server_version: String::new(),
        standby: false,
        generated_at_unix: 0,
        duration_ms: 0,
        index_method: String::new(),
        workload: Default::default(),
        findings: Vec::new(),
        index_suggestions: Vec::new(),
        rejected_candidates: Vec::new(),
        settings: Vec::new(),
        pool: None,
        applied,
        notes: Vec::new(),
    }
}

fn invalid_indexes(cluster: &Cluster) -> String {
    cluster.psql(
        "app",
        "SELECT coalesce(string_agg(indexrelid::regclass::text, ','), '') FROM pg_index WHERE NOT indisvalid",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_that_times_out_leaves_no_invalid_index_or_says_so() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE app");
    cluster.psql(
        "app",
        "CREATE TABLE people (id int PRIMARY KEY, name text);
         INSERT INTO people SELECT g, 'n' || g FROM generate_series(1, 50000) g; ANALYZE people;",
    );
    let url = cluster.url("postgres", "app");
    let target = Target::parse(&url).unwrap();

    // The writer outlasts lock_timeout but not the cleanup's longer wait.
    let settings =
        ApplySettings { lock_timeout_ms: 500, cleanup_min_lock_timeout_ms: 20_000, ..Default::default() };
    let done = writer(&url, 3).await;
    let applied =
        apply::apply(&target, &[suggestion("people_name_idx")], &settings, &NoProgress).await.unwrap();
    done.await.unwrap();
    let a = &applied[0];
    assert!(!a.created, "{a:?}");
    assert!(a.error.as_deref().unwrap_or_default().contains("lock timeout"), "{a:?}");
    assert!(a.measurements.is_empty(), "nothing changed, nothing to compare: {a:?}");
    assert_eq!(a.left_behind, None, "{a:?}");
    assert_eq!(invalid_indexes(&cluster), "", "the failed build's index is dropped");

    // The writer outlasts the cleanup too: the invalid index stays, and the report says what to run.
    let settings =
        ApplySettings { lock_timeout_ms: 300, cleanup_min_lock_timeout_ms: 1_000, ..Default::default() };
    let done = writer(&url, 6).await;
    let applied =
        apply::apply(&target, &[suggestion("people_name_idx")], &settings, &NoProgress).await.unwrap();
    let a = &applied[0];
    assert_eq!(invalid_indexes(&cluster), "people_name_idx");
    let drop = a.left_behind.as_deref().expect("the DROP statement to run by hand");
    assert_eq!(drop, "DROP INDEX CONCURRENTLY IF EXISTS public.people_name_idx;");
    let report = report_of(applied.clone());
    let text = report.render_text(false);
    assert!(text.contains("INVALID index") && text.contains(drop), "{text}");
    // The build gave up waiting for the writer, before writes began to maintain the index.
    assert_eq!(cluster.psql("app", "SELECT indisready FROM pg_index WHERE NOT indisvalid"), "f");
    let html = report.render_html();
    for rendered in [&text, &html] {
        assert!(!rendered.contains("writes still maintain it"), "{rendered}");
        assert!(
            rendered.contains("writes do not maintain it, but it holds its name and space"),
            "{rendered}"
        );
    }
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"left_behind\"") && json.contains("\"left_behind_ready\":false"), "{json}");
    done.await.unwrap();
    cluster.psql("app", drop);
    assert_eq!(invalid_indexes(&cluster), "");
}
