//! The duplicate-index check on real PostgreSQL: indexes that differ in collation or in NULLS NOT
//! DISTINCT enforce different rules and are not duplicates; a unique index is never dropped for a
//! plain one; the index behind a constraint is kept (PostgreSQL refuses DROP INDEX of it) and
//! every DROP offered runs.

mod common;

use pgpilot_advisor::{advise, Category, Finding, NoProgress, Report};
use pgpilot_testkit::Cluster;

const PLANTED: &str = "
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE accounts (id int PRIMARY KEY, email text, sso_ref text, code text);
INSERT INTO accounts SELECT g, 'u' || g || '@x.com', CASE WHEN g > 1 THEN 'r' || g END, 'c' || g
  FROM generate_series(1, 20000) g;
CREATE UNIQUE INDEX accounts_email ON accounts (email);
CREATE UNIQUE INDEX accounts_email_nocase ON accounts (email COLLATE ci);
CREATE UNIQUE INDEX accounts_sso ON accounts (sso_ref);
CREATE UNIQUE INDEX accounts_sso_single_null ON accounts (sso_ref) NULLS NOT DISTINCT;
CREATE INDEX accounts_code ON accounts (code);
CREATE INDEX accounts_code_c ON accounts (code COLLATE \"C\");
CREATE INDEX accounts_email_plain ON accounts (email);
CREATE TABLE dc (id int CONSTRAINT dc_pkey PRIMARY KEY, code text CONSTRAINT dc_code_key UNIQUE, ref int);
INSERT INTO dc SELECT g, 'c' || g, g FROM generate_series(1, 10000) g;
CREATE UNIQUE INDEX a_dc_id ON dc (id);
CREATE UNIQUE INDEX a_dc_code ON dc (code);
ALTER TABLE dc ADD CONSTRAINT dc_ref_key UNIQUE (ref), ADD CONSTRAINT dc_ref_key2 UNIQUE (ref);
";

fn duplicates(report: &Report) -> Vec<&Finding> {
    report
        .findings
        .iter()
        .filter(|f| f.category == Category::Indexes && f.title.starts_with("Duplicate"))
        .collect()
}

fn titled<'a>(report: &'a Report, title: &str) -> &'a Finding {
    duplicates(report)
        .into_iter()
        .find(|f| f.title == title)
        .unwrap_or_else(|| panic!("no finding `{title}` in:\n{}", report.render_text(false)))
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_respect_collation_nulls_uniqueness_and_constraints() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE dups");
    cluster.psql("dups", PLANTED);
    let mut opts = common::options(&cluster.url("postgres", "dups"));
    opts.skip_indexes = true;
    let report = advise(&opts, &NoProgress).await.unwrap();
    let text = report.render_text(false);

    for kept in ["accounts_email_nocase", "accounts_sso_single_null", "accounts_code_c", "accounts_code"] {
        assert!(
            !duplicates(&report).iter().any(|f| f.title.contains(kept)),
            "{kept} is no duplicate:\n{text}"
        );
    }
    assert!(
        !duplicates(&report).iter().any(|f| f.title.starts_with("Duplicate index accounts_sso ")),
        "{text}"
    );
    // A plain index on a unique index's key enforces nothing: it is the one to drop.
    let plain = titled(&report, "Duplicate index accounts_email_plain (same as accounts_email)");
    assert_eq!(plain.fix.as_deref(), Some("DROP INDEX CONCURRENTLY public.accounts_email_plain;"));
    // The constraints' indexes are kept, the extra ones go.
    titled(&report, "Duplicate index a_dc_id (same as dc_pkey)");
    titled(&report, "Duplicate index a_dc_code (same as dc_code_key)");
    // Both back a constraint: no DROP INDEX (refused), the constraint to drop is named instead.
    let both = titled(&report, "Duplicate index dc_ref_key2 (same as dc_ref_key)");
    let fix = both.fix.as_deref().unwrap_or_default();
    assert!(fix.lines().all(|l| l.starts_with("--")), "nothing to run blindly: {fix}");
    assert!(fix.contains("ALTER TABLE public.dc DROP CONSTRAINT dc_ref_key2"), "{fix}");

    // Every DROP offered runs, and the rules the kept indexes enforce still hold.
    for stmt in duplicates(&report).iter().filter_map(|f| f.fix.as_deref()).flat_map(str::lines) {
        if stmt.starts_with("DROP") {
            cluster.try_psql("dups", stmt).unwrap_or_else(|e| panic!("{stmt}: {e}"));
        }
    }
    let rejected = |sql: &str| assert!(cluster.try_psql("dups", sql).is_err(), "accepted: {sql}");
    rejected("INSERT INTO accounts (id, email) VALUES (100001, 'U5@X.COM')");
    rejected("INSERT INTO accounts (id, email, sso_ref) VALUES (100002, 'new@x.com', NULL)");
    rejected("INSERT INTO dc VALUES (1, 'new', 100001)");
    rejected("INSERT INTO dc VALUES (100001, 'c1', 100001)");
}

/// A session holding one table locked (reading an index definition or a size waits for the lock)
/// leaves that table out of the duplicate and size checks, named; every other table is checked.
#[tokio::test(flavor = "multi_thread")]
async fn a_locked_table_is_left_out_and_the_rest_checked() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE locked");
    cluster.psql(
        "locked",
        "CREATE TABLE items (id int PRIMARY KEY, sku text);
         INSERT INTO items SELECT g, 'sku-' || g FROM generate_series(1, 10000) g;
         CREATE INDEX items_sku_a ON items (sku);
         CREATE INDEX items_sku_b ON items (sku);
         CREATE TABLE tiny_lookup (id int PRIMARY KEY, label text);
         CREATE INDEX tiny_lookup_label ON tiny_lookup (label) WHERE label <> '';",
    );
    let url = cluster.url("postgres", "locked");
    let holder = common::hold_access_exclusive(&url, "tiny_lookup").await;

    let mut opts = common::options(&url);
    opts.skip_indexes = true;
    let report = advise(&opts, &NoProgress).await.unwrap();
    let text = report.render_text(false);

    assert!(!report.notes.iter().any(|n| n.contains("could not run") && n.contains("lock")), "{text}");
    titled(&report, "Duplicate index items_sku_b (same as items_sku_a)");
    let info = |title: &str| {
        report
            .findings
            .iter()
            .find(|f| f.title == title)
            .unwrap_or_else(|| panic!("no `{title}` in:\n{text}"))
    };
    for skipped in
        ["Duplicate indexes not checked on 1 locked relation(s)", "Sizes not checked on 1 locked relation(s)"]
    {
        assert!(info(skipped).evidence.iter().any(|e| e == "locked: public.tiny_lookup"), "{text}");
    }
    let largest =
        report.findings.iter().find(|f| f.title.starts_with("Largest")).unwrap_or_else(|| panic!("{text}"));
    assert!(largest.evidence.iter().any(|e| e.starts_with("table public.items:")), "{largest:?}");
    holder.batch_execute("ROLLBACK").await.unwrap();
}

/// A title names indexes as the fix does: quoted where SQL needs it, so `"Dup B"` in the title is
/// the `"Dup B"` the DROP drops (it read `Dup B`, which names nothing in SQL).
#[tokio::test(flavor = "multi_thread")]
async fn titles_quote_names_as_the_fix_does() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE quoted");
    cluster.psql(
        "quoted",
        r#"CREATE TABLE "Weird" (id int PRIMARY KEY, v text);
           CREATE INDEX "Dup A" ON "Weird" (v);
           CREATE INDEX "Dup B" ON "Weird" (v);
           CREATE INDEX "i<b>1" ON "Weird" (v, id);"#,
    );
    let mut opts = common::options(&cluster.url("postgres", "quoted"));
    opts.skip_indexes = true;
    let report = advise(&opts, &NoProgress).await.unwrap();
    let duplicate = titled(&report, r#"Duplicate index "Dup B" (same as "Dup A")"#);
    assert_eq!(duplicate.fix.as_deref(), Some(r#"DROP INDEX CONCURRENTLY public."Dup B";"#), "{duplicate:?}");
    let prefix = report
        .findings
        .iter()
        .find(|f| f.title.starts_with("Index "))
        .unwrap_or_else(|| panic!("{}", report.render_text(false)));
    assert_eq!(prefix.title, r#"Index "Dup A" is a prefix of "i<b>1""#, "{prefix:?}");
}

/// A table named with a line break and a terminal escape: the text report shows them escaped
/// (no line the report did not write, no colour change), the fix it prints stays on its line,
/// and the JSON keeps the DROP that runs.
#[tokio::test(flavor = "multi_thread")]
async fn control_characters_in_names_are_escaped_in_the_text_report() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE evil");
    let table = "\"evil\nDROP TABLE x;\x1b[31mred\"";
    cluster.psql(
        "evil",
        &format!(
            "CREATE TABLE {table} (id int, v int); \
             INSERT INTO {table} SELECT g, g % 1000 FROM generate_series(1, 50000) g; \
             CREATE INDEX \"ix\nnl\" ON {table} (v); CREATE INDEX ix_dup2 ON {table} (v); ANALYZE {table}"
        ),
    );
    let url = cluster.url("postgres", "evil");
    let report = advise(&common::options(&url), &NoProgress).await.unwrap();
    let text = report.render_text(false);
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(!text.lines().any(|l| l.starts_with("DROP TABLE x;") || l == "nl\")"), "{text}");
    assert!(text.contains("evil\\nDROP TABLE x;\\x1b[31mred"), "{text}");
    let finding = duplicates(&report).into_iter().next().unwrap_or_else(|| panic!("{text}"));
    let fix = finding.fix.as_deref().unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(fix).await.unwrap_or_else(|e| panic!("{fix}: {e}"));
}
