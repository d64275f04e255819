//! Wraparound held by an old transaction: no VACUUM (FREEZE) can bring the age down while a
//! session keeps its transaction ID, so the fix ends that session first.

use pgpilot_advisor::{advise, Category, NoProgress};
use pgpilot_testkit::Cluster;

mod common;

/// Uses up `n` transaction IDs, each committed on its own.
const BURN: &str = "CREATE PROCEDURE burn(n int) LANGUAGE plpgsql AS $$
BEGIN FOR i IN 1..n LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$";

#[tokio::test(flavor = "multi_thread")]
async fn a_session_holding_an_old_xid_is_ended_before_freezing() {
    let cluster = Cluster::builder().setting("autovacuum_freeze_max_age = 100000").start();
    let url = common::database_with_orders(&cluster, "frz");
    let (holder, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    holder.batch_execute("BEGIN; SELECT pg_current_xact_id()").await.unwrap();
    let pid: i32 = holder.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    cluster.psql("frz", BURN);
    // Past 1.25 × the smallest autovacuum_freeze_max_age (100,000); CALL alone, outside any
    // transaction block, so that it may commit.
    cluster.psql("frz", "CALL burn(140000)");
    // What autovacuum would do, done now: it cannot freeze past the held ID.
    cluster.psql("frz", "VACUUM (FREEZE)");

    let report = advise(&common::options(&url), &NoProgress).await.unwrap();
    let text = report.render_text(false);
    let finding = report
        .findings
        .iter()
        .find(|f| f.category == Category::Wraparound && f.object.as_deref() == Some("frz"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(finding.title.contains("stops vacuum from freezing it"), "{text}");
    assert!(
        finding
            .evidence
            .iter()
            .any(|e| e.starts_with(&format!("pid {pid} (user postgres on frz, idle in transaction"))),
        "{text}"
    );
    let fix = finding.fix.as_deref().unwrap();
    assert!(fix.starts_with(&format!("SELECT pg_terminate_backend({pid});")), "{fix}");
    assert!(!fix.contains("autovacuum_max_workers"), "{fix}");
    holder.batch_execute("ROLLBACK").await.unwrap();
}
