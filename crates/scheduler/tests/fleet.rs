//! Once per fleet, safety limits, history and metrics: schedulers racing, lock timeouts.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{at, client, clock, config, run};
use pgpilot_scheduler::{Outcome, Scheduler, SchedulerHandle, SchedulerOptions, METRIC_NAMES};
use pgpilot_testkit::Cluster;

const RACE_JOBS: &str = r#"
[[jobs]]
name = "nightly"
kind = "sql"
schedule = "0 3 * * *"
database = "app"
sql = "SELECT pg_sleep(0.5); INSERT INTO race_log VALUES (default)"
"#;

fn start(
    cfg: &pgpilot_scheduler::JobsConfig,
    clock: Arc<pgpilot_scheduler::ManualClock>,
    name: &str,
) -> SchedulerHandle {
    start_with_grace(cfg, clock, name, Duration::from_secs(5))
}

fn start_with_grace(
    cfg: &pgpilot_scheduler::JobsConfig,
    clock: Arc<pgpilot_scheduler::ManualClock>,
    name: &str,
    shutdown_grace: Duration,
) -> SchedulerHandle {
    let options = SchedulerOptions { instance: name.into(), shutdown_grace, ..SchedulerOptions::default() };
    Scheduler::start_with(cfg.jobs.clone(), Arc::new(cfg.databases.clone()), clock, options)
}

async fn wait_idle(handles: &[&SchedulerHandle], ran: impl Fn(&SchedulerHandle) -> bool) {
    for _ in 0..200 {
        if handles.iter().all(|h| ran(h) && !h.status()[0].running) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the schedulers did not finish: {:?}", handles.iter().map(|h| h.status()).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_race_and_exactly_one_runs_each_slot() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE race_log (id serial, at timestamptz DEFAULT clock_timestamp())");
    let cfg = config(&cluster, RACE_JOBS);
    let (clock_a, clock_b) = (clock(at(2026, 5, 1, 2, 59, 59)), clock(at(2026, 5, 1, 2, 59, 59)));
    let a = start(&cfg, clock_a.clone(), "instance-a");
    let b = start(&cfg, clock_b.clone(), "instance-b");
    assert_eq!(a.status()[0].period_seconds, 86_400.0);

    // Both clocks pass 03:00 together: both wake, one takes the lock, the other is skipped.
    clock_a.set(at(2026, 5, 1, 3, 0, 0));
    clock_b.set(at(2026, 5, 1, 3, 0, 0));
    wait_idle(&[&a, &b], |h| h.status()[0].last_outcome.is_some()).await;
    let outcomes = [a.status()[0].last_outcome, b.status()[0].last_outcome];
    assert!(
        outcomes.contains(&Some(Outcome::Succeeded)) && outcomes.contains(&Some(Outcome::Skipped)),
        "{outcomes:?}"
    );
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM race_log"), "1");

    // The next night, instance B's clock is late: A has finished and released the lock when B
    // wakes, yet B does not run the slot again, because the history already holds it.
    clock_a.set(at(2026, 5, 2, 3, 0, 0));
    wait_idle(&[&a], |h| h.status()[0].last_start.is_some_and(|t| t >= at(2026, 5, 2, 3, 0, 0))).await;
    assert_eq!(a.status()[0].last_outcome, Some(Outcome::Succeeded));
    clock_b.set(at(2026, 5, 2, 3, 0, 2));
    wait_idle(&[&b], |h| h.status()[0].last_start.is_some_and(|t| t >= at(2026, 5, 2, 3, 0, 0))).await;
    let late = b.status()[0].clone();
    assert_eq!(late.last_outcome, Some(Outcome::Skipped), "{late:?}");
    assert!(late.last_error.unwrap_or_default().contains("already ran"));
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM race_log"), "2");
    // B learned the fleet's last success from the history table, so its metrics do not alert.
    assert!(late.last_success.is_some(), "instance B should know when the job last succeeded");

    // Two manual runs at once: one runs, the other finds the lock taken.
    let (ra, rb) = tokio::join!(a.run_now("nightly"), b.run_now("nightly"));
    let mut manual = [ra.unwrap().outcome, rb.unwrap().outcome];
    manual.sort();
    assert_eq!(manual, [Outcome::Succeeded, Outcome::Skipped]);
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM race_log"), "3");

    let history = a.history(Some("nightly"), 10).await.unwrap();
    assert_eq!(history.len(), 3, "{history:?}");
    assert!(history.iter().all(|r| r.outcome == "succeeded"));
    assert_eq!(history.iter().filter(|r| r.scheduled_for.is_some()).count(), 2);

    let mut metrics = String::new();
    a.render_prometheus(&mut metrics);
    assert!(
        metrics.contains("pgpilot_job_runs_total{job_name=\"nightly\",outcome=\"succeeded\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("pgpilot_job_period_seconds{job_name=\"nightly\"} 86400"), "{metrics}");
    for name in METRIC_NAMES.iter().filter(|n| !n.contains("default_partition")) {
        assert!(metrics.contains(&format!("\n{name}{{")), "{name} missing from\n{metrics}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_hitting_lock_timeout_fails_cleanly_and_harms_nothing() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE accounts (id int PRIMARY KEY, balance int); INSERT INTO accounts VALUES (1, 100)",
    );
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "touch"
        kind = "sql"
        schedule = "@hourly"
        database = "app"
        sql = "UPDATE accounts SET balance = balance + 1"
        lock_timeout = "200ms"
        statement_timeout = "5s"
        retries = 1
        retry_backoff = "50ms"
        "#,
    );
    let clock = clock(at(2026, 2, 1, 0, 0, 0));
    let holder = client(&cluster).await;
    holder.batch_execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE").await.unwrap();

    let report = run(&cfg, "touch", &clock).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert_eq!(report.attempts, 2, "one retry after the transient lock timeout");
    let error = report.error.clone().unwrap_or_default();
    assert!(error.contains("55P03") && error.contains("lock timeout"), "{error}");
    assert!(report.duration_seconds < 3.0, "it gave up promptly: {report:?}");

    // The lock holder never noticed; nothing changed; the failure is in the history.
    holder.batch_execute("UPDATE accounts SET balance = 50; COMMIT").await.unwrap();
    assert_eq!(cluster.psql("postgres", "SELECT balance FROM accounts"), "50");
    assert_eq!(
        cluster
            .psql("postgres", "SELECT outcome, attempts, error LIKE '%lock timeout%' FROM pgpilot.job_runs"),
        "failed|2|t"
    );
    // The job's advisory lock was released: with the table free the next run succeeds.
    let again = run(&cfg, "touch", &clock).await;
    assert_eq!(again.outcome, Outcome::Succeeded, "{again:?}");
    assert_eq!(again.rows, Some(1));
    assert_eq!(cluster.psql("postgres", "SELECT balance FROM accounts"), "51");
    assert_eq!(
        cluster.psql("postgres", "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"),
        "0",
        "no advisory lock left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sql_job_that_leaves_its_transaction_open_fails_and_clean_runs_warn_of_nothing() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE marks (n int)");
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "clean"
        kind = "sql"
        schedule = "@hourly"
        database = "app"
        sql = "BEGIN; INSERT INTO marks VALUES (1); COMMIT; INSERT INTO marks VALUES (2)"

        [[jobs]]
        name = "forgetful"
        kind = "sql"
        schedule = "@hourly"
        database = "app"
        sql = "BEGIN; INSERT INTO marks VALUES (3)"
        "#,
    );
    let clock = clock(at(2026, 2, 1, 0, 0, 0));
    let clean = run(&cfg, "clean", &clock).await;
    assert_eq!(clean.outcome, Outcome::Succeeded, "{clean:?}");
    let forgetful = run(&cfg, "forgetful", &clock).await;
    assert_eq!(forgetful.outcome, Outcome::Failed, "{forgetful:?}");
    let error = forgetful.error.clone().unwrap_or_default();
    assert!(error.contains("left a transaction open"), "{error}");

    assert_eq!(cluster.psql("postgres", "SELECT string_agg(n::text, ',' ORDER BY n) FROM marks"), "1,2");
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT string_agg(job || '=' || outcome, ',' ORDER BY job) FROM pgpilot.job_runs"
        ),
        "clean=succeeded,forgetful=failed",
        "both runs are in the history"
    );
    let log = std::fs::read_to_string(cluster.log_path()).expect("the server log");
    assert!(
        !log.contains("there is no transaction in progress"),
        "a run sent ROLLBACK outside a transaction:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_a_job_still_running_after_the_grace_period() {
    let cluster = Cluster::start();
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "long"
        kind = "sql"
        schedule = "0 3 * * *"
        database = "app"
        sql = "SELECT pg_sleep(60)"
        "#,
    );
    let clock = clock(at(2026, 5, 1, 2, 59, 59));
    let handle = start_with_grace(&cfg, clock.clone(), "a", Duration::from_millis(500));
    clock.set(at(2026, 5, 1, 3, 0, 0));
    cluster.wait_for(
        "1",
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'",
        Duration::from_secs(10),
    );

    let started = std::time::Instant::now();
    handle.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5), "shutdown took {:?}", started.elapsed());
    // The statement stopped on the server with the job, which recorded why and let go of its lock.
    assert_eq!(
        cluster.psql("postgres", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)'"),
        "0"
    );
    assert_eq!(
        cluster.psql("postgres", "SELECT outcome, error LIKE '%57014%' FROM pgpilot.job_runs"),
        "failed|t"
    );
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), "0");
    let last = handle.status()[0].clone();
    assert_eq!(last.last_outcome, Some(Outcome::Failed), "{last:?}");
}

/// s29 finding 1: a retention run is between batches, in its pause, nearly all the time, so the
/// cancel sent at shutdown found nothing to cancel and the batches went on (the run then recorded
/// success, or stayed 'running' when the process exited). It must stop before its next batch and
/// record a failure with the rows deleted so far; meanwhile its history row shows its progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_a_retention_run_between_its_batches() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE audit (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL);
         CREATE INDEX ON audit (created_at);
         INSERT INTO audit (created_at) SELECT '2020-01-01' FROM generate_series(1, 3000);",
    );
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "trim"
        kind = "retention"
        schedule = "0 3 * * *"
        database = "app"
        table = "audit"
        column = "created_at"
        older_than = "1 day"
        batch_size = 50
        pause = "300ms"
        "#,
    );
    let clock = clock(at(2026, 5, 1, 2, 59, 59));
    let handle = start_with_grace(&cfg, clock.clone(), "a", Duration::from_millis(500));
    clock.set(at(2026, 5, 1, 3, 0, 0));
    // The running row counts the committed batches before the run ends.
    cluster.wait_for(
        "running|t",
        "SELECT outcome, rows_affected >= 50 FROM pgpilot.job_runs",
        Duration::from_secs(15),
    );

    let stopping = std::time::Instant::now();
    handle.shutdown().await;
    assert!(stopping.elapsed() < Duration::from_secs(3), "shutdown took {:?}", stopping.elapsed());
    let left: i64 = cluster.psql("postgres", "SELECT count(*) FROM audit").parse().unwrap();
    assert!(left > 0 && left < 3000, "{left} rows left");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        cluster.psql("postgres", "SELECT count(*) FROM audit"),
        left.to_string(),
        "a batch ran after the stop"
    );
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT outcome, error LIKE '%57014%', rows_affected, detail LIKE '%before the failure%' FROM pgpilot.job_runs"
        ),
        format!("failed|t|{}|t", 3000 - left)
    );
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), "0");
    let last = handle.status()[0].clone();
    assert_eq!(last.last_outcome, Some(Outcome::Failed), "{last:?}");
    assert_eq!(last.last_rows, Some(3000 - left), "{last:?}");
}

/// What a reload does to the scheduler it replaces: no new run starts, the run in progress goes
/// on past the grace period uncancelled, and the successor cannot run the job alongside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_replaced_by_a_reload_lets_its_run_finish_and_its_successor_waits() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE reload_log (id serial, at timestamptz DEFAULT clock_timestamp())");
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "long"
        kind = "sql"
        schedule = "0 3 * * *"
        database = "app"
        retries = 0
        sql = "SELECT pg_sleep(3); INSERT INTO reload_log DEFAULT VALUES"
        "#,
    );
    let clock = clock(at(2026, 5, 1, 2, 59, 59));
    let old = start_with_grace(&cfg, clock.clone(), "old", Duration::from_millis(500));
    clock.set(at(2026, 5, 1, 3, 0, 0));
    cluster.wait_for(
        "1",
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(3)%'",
        Duration::from_secs(10),
    );

    old.stop_scheduling();
    let new = start(&cfg, clock.clone(), "new");
    let overlapping = new.run_now("long").await.unwrap();
    assert_eq!(overlapping.outcome, Outcome::Skipped, "{overlapping:?}");
    assert!(!old.is_idle(), "the old scheduler's run is still going");

    wait_idle(&[&old], |h| h.is_idle()).await;
    let finished = old.status()[0].clone();
    assert_eq!(finished.last_outcome, Some(Outcome::Succeeded), "{finished:?}");
    assert_eq!(
        cluster.psql("postgres", "SELECT outcome, instance FROM pgpilot.job_runs ORDER BY id"),
        "succeeded|old"
    );
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM reload_log"), "1");
    // The old scheduler starts nothing more, even when its next slot comes.
    clock.set(at(2026, 5, 2, 3, 0, 0));
    wait_idle(&[&new], |h| h.status()[0].last_start.is_some_and(|t| t >= at(2026, 5, 2, 3, 0, 0))).await;
    assert_eq!(new.status()[0].last_outcome, Some(Outcome::Succeeded));
    assert_eq!(old.status()[0].last_start, finished.last_start);
    assert_eq!(
        cluster.psql("postgres", "SELECT string_agg(instance, ',' ORDER BY id) FROM pgpilot.job_runs"),
        "old,new"
    );
    new.shutdown().await;
    old.shutdown().await;
}

/// A partitioned table named in a vacuum job stands for its partitions: the parent keeps no
/// counts, its partitions hold the dead and inserted rows, and each over the threshold is vacuumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_of_a_partitioned_table_vacuums_its_busy_partitions() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE ev (id int) PARTITION BY RANGE (id);
         CREATE TABLE ev_low PARTITION OF ev FOR VALUES FROM (0) TO (10000);
         CREATE TABLE ev_high PARTITION OF ev FOR VALUES FROM (10000) TO (20000);
         INSERT INTO ev SELECT generate_series(1, 5000); INSERT INTO ev SELECT generate_series(10001, 10010);
         SELECT pg_stat_force_next_flush();",
    );
    cluster.wait_for(
        "5000",
        "SELECT n_ins_since_vacuum FROM pg_stat_user_tables WHERE relname = 'ev_low'",
        Duration::from_secs(10),
    );
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "vacuum"
        kind = "vacuum"
        schedule = "@daily"
        database = "app"
        tables = ["ev"]
        min_changes = 1000
        "#,
    );
    let report = run(&cfg, "vacuum", &clock(at(2026, 2, 1, 0, 0, 0))).await;
    assert_eq!((report.outcome, report.rows), (Outcome::Succeeded, Some(1)), "{report:?}");
    assert_eq!(
        cluster.psql("postgres", "SELECT relname FROM pg_stat_user_tables WHERE last_vacuum IS NOT NULL"),
        "ev_low"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_and_vacuum_only_tables_over_the_threshold() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE TABLE busy (id int); CREATE TABLE quiet (id int);
         INSERT INTO busy SELECT generate_series(1, 5000); INSERT INTO quiet SELECT generate_series(1, 10);
         SELECT pg_stat_force_next_flush();",
    );
    // Statistics reach pg_stat_user_tables asynchronously.
    cluster.wait_for(
        "5000",
        "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'busy'",
        Duration::from_secs(10),
    );
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "analyze"
        kind = "analyze"
        schedule = "@hourly"
        database = "app"
        schemas = ["public"]
        min_changes = 100
        scale_factor = 0.0

        [[jobs]]
        name = "vacuum"
        kind = "vacuum"
        schedule = "@daily"
        database = "app"
        tables = ["busy", "quiet"]
        min_changes = 1000
        "#,
    );
    let clock = clock(at(2026, 2, 1, 0, 0, 0));
    let report = run(&cfg, "analyze", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(report.rows, Some(1), "{report:?}");
    assert_eq!(
        cluster.psql("postgres", "SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL"),
        "busy"
    );
    let report = run(&cfg, "vacuum", &clock).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(report.rows, Some(1), "{report:?}");
    assert_eq!(
        cluster.psql("postgres", "SELECT relname FROM pg_stat_user_tables WHERE last_vacuum IS NOT NULL"),
        "busy"
    );
    // A listed table that does not exist fails the run, after the others are done.
    cluster.psql(
        "postgres",
        "INSERT INTO quiet SELECT generate_series(1, 5000); SELECT pg_stat_force_next_flush();",
    );
    cluster.wait_for(
        "5010",
        "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'quiet'",
        Duration::from_secs(10),
    );
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "analyze-listed"
        kind = "analyze"
        schedule = "@hourly"
        database = "app"
        tables = ["public.no_such", "quiet"]
        min_changes = 100
        "#,
    );
    let report = run(&cfg, "analyze-listed", &clock).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(report.error.as_deref().unwrap_or_default().contains("public.no_such"), "{report:?}");
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'quiet' AND last_analyze IS NOT NULL"
        ),
        "1",
        "the existing table was analyzed"
    );
}

/// A job's session checks its client while a statement runs (PostgreSQL 14+): if pgpilot dies
/// mid-run, the server stops the job instead of letting it commit a run marked abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_session_checks_that_its_client_is_alive() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE checks (setting text)");
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "probe"
        kind = "sql"
        schedule = "@hourly"
        database = "app"
        sql = "INSERT INTO checks SELECT current_setting('client_connection_check_interval')"
        "#,
    );
    let report = run(&cfg, "probe", &clock(at(2026, 2, 1, 0, 0, 0))).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(cluster.psql("postgres", "SELECT setting FROM checks"), "1s");
}
