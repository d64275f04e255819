//! Suggestions never include an index that is a leading prefix of another suggested one: the
//! advisor's own next run would flag it as a prefix duplicate to drop.

mod common;

use pgpilot_advisor::IndexSuggestion;
use pgpilot_testkit::Cluster;

const INVOICES: &str = "
CREATE SCHEMA billing;
CREATE TABLE billing.invoices (
    id bigserial PRIMARY KEY,
    customer_id int NOT NULL,
    paid bool NOT NULL,
    due_date date NOT NULL,
    amount numeric(10,2) NOT NULL
);
-- Due dates relative to today: 2% overdue, the rest due within the next three weeks.
INSERT INTO billing.invoices (customer_id, paid, due_date, amount)
SELECT i % 5000, i % 20 <> 0,
       CASE WHEN i % 50 = 7 THEN current_date - (i % 30) ELSE current_date + 6 + (i % 14) END,
       (i % 700)::numeric
FROM generate_series(1, 200000) i;
";

/// The reported workload: a selective range for one statement (few unpaid invoices are overdue),
/// a range covering nearly every row for the other (a date a month ahead, written as a constant),
/// where the shorter index alone looks cheapest.
fn workload(month_ahead: &str) -> String {
    format!(
        "SELECT * FROM billing.invoices WHERE paid = false AND due_date < current_date + 5;\n\
         SELECT * FROM billing.invoices WHERE NOT paid AND due_date < '{month_ahead}';\n"
    )
}

/// The key of a suggestion's CREATE INDEX with its WHERE clause: `(a, b)` and ` WHERE ...`.
fn key_and_predicate(create: &str) -> (Vec<String>, String) {
    let open = create.find(" (").expect("a key list") + 2;
    let close = open + create[open..].find(')').expect("a closed key list");
    let key = create[open..close].split(", ").map(str::to_string).collect();
    (key, create[close + 1..].to_string())
}

fn prefix_pairs(suggestions: &[IndexSuggestion]) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for short in suggestions {
        for long in suggestions {
            let ((sk, sp), (lk, lp)) =
                (key_and_predicate(&short.create_statement), key_and_predicate(&long.create_statement));
            if short.table == long.table && sp == lp && sk.len() < lk.len() && lk.starts_with(&sk) {
                pairs.push((short.create_statement.clone(), long.create_statement.clone()));
            }
        }
    }
    pairs
}

#[tokio::test(flavor = "multi_thread")]
async fn no_suggestion_is_a_prefix_of_another() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE billing");
    cluster.psql("billing", INVOICES);
    cluster.psql("billing", "VACUUM ANALYZE billing.invoices");
    let url = cluster.url("postgres", "billing");
    let month_ahead = cluster.psql("billing", "SELECT (current_date + 30)::text");
    let report = common::advise_workload(&url, &workload(&month_ahead)).await;
    assert_eq!(report.index_method, "hypopg", "{:?}", report.notes);
    let suggested: Vec<&str> = report.index_suggestions.iter().map(|s| s.create_statement.as_str()).collect();
    assert!(!suggested.is_empty(), "{}", report.render_text(false));
    let pairs = prefix_pairs(&report.index_suggestions);
    assert!(pairs.is_empty(), "prefix pairs {pairs:#?} among {suggested:#?}");
    // The longer index kept serves both statements.
    let kept = report
        .index_suggestions
        .iter()
        .find(|s| s.create_statement.contains("(paid, due_date)"))
        .unwrap_or_else(|| panic!("{suggested:#?}"));
    assert_eq!(kept.statements.len(), 2, "{kept:#?}");
}
