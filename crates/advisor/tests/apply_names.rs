//! `--apply` and index names: a suggestion never takes a name that a relation of the schema or
//! another suggestion already has, and a failed build only ever removes the invalid index it
//! left itself, never an index that merely has the same name.

mod common;

use pgpilot_advisor::index::apply;
use pgpilot_advisor::report::{Evidence, IndexSuggestion, WriteOverhead};
use pgpilot_advisor::{ApplySettings, NoProgress, Target};
use pgpilot_testkit::Cluster;

/// A suggestion as `--apply` receives it, for a hand-written CREATE INDEX statement.
fn hand_made(table: &str, create_statement: &str) -> IndexSuggestion {
    IndexSuggestion {
        table: table.into(),
        create_statement: create_statement.into(),
        kind: "btree".into(),
        evidence: Evidence::Heuristic,
        rationale: String::new(),
        weighted_cost_before: 0.0,
        weighted_cost_after: None,
        statements: Vec::new(),
        estimated_size_bytes: None,
        write_overhead: WriteOverhead::default(),
    }
}

fn index_definitions(cluster: &Cluster, db: &str, table: &str) -> String {
    cluster.psql(
        db,
        &format!(
            "SELECT coalesce(string_agg(pg_get_indexdef(indexrelid), '; ' ORDER BY indexrelid), '') \
             FROM pg_index WHERE indrelid = '{table}'::regclass"
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn suggested_names_are_free_and_apply_never_drops_a_foreign_index() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE names");
    let url = cluster.url("postgres", "names");
    let long = "very_long_table_name_for_testing_index_name_truncation_xx";
    cluster.psql(
        "names",
        &format!(
            "CREATE TABLE victim_t (id int, a int, b text);
             INSERT INTO victim_t SELECT g, g, 'x' || g FROM generate_series(1, 100000) g;
             CREATE UNIQUE INDEX victim_t_a_idx ON victim_t (b);
             CREATE TABLE {long} (id int, customer_identifier_a int, customer_identifier_b int);
             INSERT INTO {long} SELECT g, g, g FROM generate_series(1, 100000) g;
             ANALYZE;"
        ),
    );
    let users_index = "CREATE UNIQUE INDEX victim_t_a_idx ON public.victim_t USING btree (b)";

    // The name the advisor would pick is the user's unique index: it picks another.
    let mut report = common::advise_workload(&url, "SELECT * FROM victim_t WHERE a > 99990;\n").await;
    let s = report.index_suggestions.iter().find(|s| s.table == "public.victim_t").expect("a suggestion");
    assert!(s.create_statement.contains(" victim_t_a_idx1 ON "), "{}", s.create_statement);
    let all: Vec<usize> = (0..report.index_suggestions.len()).collect();
    pgpilot_advisor::apply(&common::options(&url), &mut report, &all, &ApplySettings::default(), &NoProgress)
        .await
        .unwrap();
    assert!(report.applied.iter().all(|a| a.created), "{:?}", report.applied);
    assert!(index_definitions(&cluster, "names", "victim_t").contains(users_index));

    // Even when the name is taken after the advice (a race), the failed CREATE leaves the owner alone.
    let target = Target::parse(&url).unwrap();
    let clash = hand_made(
        "public.victim_t",
        "CREATE INDEX CONCURRENTLY victim_t_a_idx ON public.victim_t USING btree (a)",
    );
    let applied = apply::apply(&target, &[clash], &ApplySettings::default(), &NoProgress).await.unwrap();
    assert!(!applied[0].created);
    assert!(applied[0].error.as_deref().unwrap_or("").contains("already exists"), "{applied:?}");
    assert!(
        index_definitions(&cluster, "names", "victim_t").contains(users_index),
        "the user's index survives"
    );

    // A build that fails part-way leaves an invalid index of its own: that one is still removed.
    let failing = hand_made(
        "public.victim_t",
        "CREATE INDEX CONCURRENTLY victim_t_broken_idx ON public.victim_t USING btree ((1 / (a - 5)))",
    );
    let applied = apply::apply(&target, &[failing], &ApplySettings::default(), &NoProgress).await.unwrap();
    assert!(!applied[0].created);
    assert!(!index_definitions(&cluster, "names", "victim_t").contains("victim_t_broken_idx"));

    // Two suggestions whose names truncate to the same 63 bytes get different names; both apply.
    let mut report = common::advise_workload(
        &url,
        &format!(
            "SELECT * FROM {long} WHERE customer_identifier_a = $1;\n\
             SELECT * FROM {long} WHERE customer_identifier_b = $1;\n"
        ),
    )
    .await;
    let names: Vec<&str> = report
        .index_suggestions
        .iter()
        .map(|s| s.create_statement.split_whitespace().nth(3).unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{}", report.render_text(false));
    assert_ne!(names[0], names[1]);
    assert!(names.iter().all(|n| n.len() <= 63), "{names:?}");
    pgpilot_advisor::apply(
        &common::options(&url),
        &mut report,
        &[0, 1],
        &ApplySettings::default(),
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(report.applied.iter().all(|a| a.created), "{:?}", report.applied);
    let count =
        cluster.psql("names", &format!("SELECT count(*) FROM pg_index WHERE indrelid = '{long}'::regclass"));
    assert_eq!(count, "2");
}
