//! Foreign keys whose referencing columns no index leads: deleting or updating a parent row then
//! scans the whole child table. Only children big enough for that to matter are reported.

mod common;

use pgpilot_advisor::{Category, Finding, Report, Severity};
use pgpilot_testkit::Cluster;

const SCHEMA: &str = r#"
CREATE SCHEMA "Sales";
CREATE TABLE "Sales".customers (id int PRIMARY KEY, region int NOT NULL, UNIQUE (id, region));
INSERT INTO "Sales".customers SELECT i, i % 10 FROM generate_series(1, 2000) i;

-- Unindexed, big, ON DELETE CASCADE: reported.
CREATE TABLE "Sales"."Orders" (id bigserial PRIMARY KEY, "Customer Id" int REFERENCES "Sales".customers ON DELETE CASCADE);
INSERT INTO "Sales"."Orders" ("Customer Id") SELECT i % 2000 + 1 FROM generate_series(1, 20000) i;

-- Two-column key led by an index in another column order: served.
CREATE TABLE "Sales".shipments (id bigserial PRIMARY KEY, customer_id int, region int, at date,
    FOREIGN KEY (customer_id, region) REFERENCES "Sales".customers (id, region));
CREATE INDEX shipments_region_customer_at ON "Sales".shipments (region, customer_id, at);
INSERT INTO "Sales".shipments (customer_id, region) SELECT i % 2000 + 1, (i % 2000 + 1) % 10 FROM generate_series(1, 20000) i;

-- A partial index that only leaves out NULL keys serves the key's lookups: served.
CREATE TABLE "Sales".refunds (id bigserial PRIMARY KEY, customer_id int REFERENCES "Sales".customers);
CREATE INDEX refunds_customer ON "Sales".refunds (customer_id) WHERE customer_id IS NOT NULL;
INSERT INTO "Sales".refunds (customer_id) SELECT CASE WHEN i % 3 = 0 THEN i % 2000 + 1 END FROM generate_series(1, 20000) i;

-- A partial index on other rows does not: reported, naming it.
CREATE TABLE "Sales".notes (id bigserial PRIMARY KEY, customer_id int REFERENCES "Sales".customers, open bool NOT NULL);
CREATE INDEX notes_open_customer ON "Sales".notes (customer_id) WHERE open;
INSERT INTO "Sales".notes (customer_id, open) SELECT i % 2000 + 1, i % 5 = 0 FROM generate_series(1, 20000) i;

-- Small: a scan of it costs next to nothing, not reported.
CREATE TABLE "Sales".tiny (id int PRIMARY KEY, customer_id int REFERENCES "Sales".customers);
INSERT INTO "Sales".tiny SELECT i, i FROM generate_series(1, 100) i;
"#;

fn fk_findings(report: &Report) -> Vec<&Finding> {
    report.findings.iter().filter(|f| f.title.contains("no index for foreign key")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_keys_without_a_supporting_index_are_reported() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE fks");
    cluster.psql("fks", SCHEMA);
    cluster.psql("fks", "ANALYZE");
    let url = cluster.url("postgres", "fks");
    let report = common::advise_workload(&url, "SELECT 1;").await;

    let found = fk_findings(&report);
    let titles: Vec<&str> = found.iter().map(|f| f.title.as_str()).collect();
    assert_eq!(found.len(), 2, "{titles:#?}\n{}", report.render_text(false));

    let orders = found.iter().find(|f| f.title.contains(r#""Sales"."Orders""#)).expect("Orders reported");
    assert_eq!(orders.severity, Severity::Warning);
    assert_eq!(orders.category, Category::Indexes);
    assert_eq!(
        orders.fix.as_deref(),
        Some(r#"CREATE INDEX CONCURRENTLY ON "Sales"."Orders" ("Customer Id");"#)
    );
    let evidence = orders.evidence.join("\n");
    assert!(evidence.contains("ON DELETE CASCADE"), "{evidence}");
    assert!(evidence.contains(r#""Sales".customers"#), "{evidence}");

    let notes = found.iter().find(|f| f.title.contains(r#""Sales".notes"#)).expect("notes reported");
    assert!(notes.evidence.iter().any(|e| e.contains("notes_open_customer")), "{:?}", notes.evidence);

    // Terminal, HTML and JSON all come from the same findings.
    assert!(report.render_text(false).contains(&orders.title));
    assert!(report.render_html().contains("no index for foreign key"));
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("no index for foreign key"));
}

/// An index the advisor suggests for the workload that starts with a key's columns serves the
/// key too: the finding names that index as its fix, not a second index on the key alone (the
/// demo's report proposed `(account_id, booked_at)` and, below it, `(account_id)` for the key).
#[tokio::test(flavor = "multi_thread")]
async fn a_key_served_by_a_suggested_index_names_that_index_as_its_fix() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE fks2");
    cluster.psql("fks2", SCHEMA);
    cluster
        .psql("fks2", r#"ALTER TABLE "Sales"."Orders" ADD COLUMN placed date DEFAULT '2026-01-01'; ANALYZE"#);
    let url = cluster.url("postgres", "fks2");
    let workload = r#"SELECT * FROM "Sales"."Orders" WHERE "Customer Id" = 5 AND placed > '2025-12-01';"#;
    let report = common::advise_workload(&url, workload).await;
    let suggestion = report
        .index_suggestions
        .iter()
        .find(|s| s.table == r#""Sales"."Orders""# && s.create_statement.contains(r#"("Customer Id""#))
        .unwrap_or_else(|| panic!("no suggestion led by the key's column:\n{}", report.render_text(false)));
    let found = fk_findings(&report);
    let orders = found.iter().find(|f| f.title.contains(r#""Sales"."Orders""#)).expect("Orders reported");
    assert_eq!(orders.fix.as_deref(), Some(format!("{};", suggestion.create_statement).as_str()));
    assert!(orders.evidence.iter().any(|e| e.contains("serves the key too")), "{:?}", orders.evidence);
    // Another key, which no suggestion serves, keeps its own fix.
    let notes = found.iter().find(|f| f.title.contains(r#""Sales".notes"#)).expect("notes reported");
    assert_eq!(notes.fix.as_deref(), Some(r#"CREATE INDEX CONCURRENTLY ON "Sales".notes (customer_id);"#));
}

/// A partitioned child's rows are its partitions': ANALYZE also gives the parent their sum, which
/// must not be counted again (6,000 rows read as ~12,000, past the 10,000-row threshold).
#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_child_counts_its_partitions_rows_once() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE fkparts");
    cluster.psql(
        "fkparts",
        "CREATE TABLE parent (id int PRIMARY KEY);
         INSERT INTO parent SELECT generate_series(1, 1000);
         CREATE TABLE small_child (id int, pid int REFERENCES parent, d date NOT NULL) PARTITION BY RANGE (d);
         CREATE TABLE small_child_1 PARTITION OF small_child FOR VALUES FROM ('2020-01-01') TO ('2030-01-01');
         INSERT INTO small_child SELECT i, 1 + i % 1000, '2021-01-01' FROM generate_series(1, 6000) i;
         CREATE TABLE big_child (id int, pid int REFERENCES parent, d date NOT NULL) PARTITION BY RANGE (d);
         CREATE TABLE big_child_1 PARTITION OF big_child FOR VALUES FROM ('2020-01-01') TO ('2025-01-01');
         CREATE TABLE big_child_2 PARTITION OF big_child FOR VALUES FROM ('2025-01-01') TO ('2030-01-01');
         INSERT INTO big_child SELECT i, 1 + i % 1000, date '2021-01-01' + (i % 2) * 1500
           FROM generate_series(1, 12000) i;
         ANALYZE;",
    );
    let mut opts = common::options(&cluster.url("postgres", "fkparts"));
    opts.skip_indexes = true;
    let report = pgpilot_advisor::advise(&opts, &pgpilot_advisor::NoProgress).await.unwrap();
    let text = report.render_text(false);
    let found = fk_findings(&report);
    assert!(!found.iter().any(|f| f.title.contains("public.small_child ")), "6,000 rows:\n{text}");
    let big =
        found.iter().find(|f| f.title.contains("public.big_child ")).unwrap_or_else(|| panic!("{text}"));
    assert!(big.evidence.iter().any(|e| e.contains("(~12000 rows)")), "{big:?}");
}
