//! What the fleet shares through pgpilot.job_runs: figures every instance exports alike, history
//! dated and pruned by the database's clock, runs whose connection was lost, standbys.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{at, clock, config, run};
use pgpilot_scheduler::{JobsConfig, ManualClock, Outcome, Scheduler, SchedulerHandle, SchedulerOptions};
use pgpilot_testkit::Cluster;

/// A scheduler that reads the fleet's figures back every 100 ms.
fn start(cfg: &JobsConfig, clock: Arc<ManualClock>, instance: &str) -> SchedulerHandle {
    start_reading_every(cfg, clock, instance, Duration::from_millis(100))
}

fn start_reading_every(
    cfg: &JobsConfig,
    clock: Arc<ManualClock>,
    instance: &str,
    fleet_refresh: Duration,
) -> SchedulerHandle {
    let options =
        SchedulerOptions { instance: instance.into(), fleet_refresh, ..SchedulerOptions::default() };
    Scheduler::start_with(cfg.jobs.clone(), Arc::new(cfg.databases.clone()), clock, options)
}

/// The value of `metric{job_name="job"}` in the scheduler's /metrics text, if it has one.
fn metric(handle: &SchedulerHandle, metric: &str, job: &str) -> Option<f64> {
    let mut text = String::new();
    handle.render_prometheus(&mut text);
    let prefix = format!("{metric}{{job_name=\"{job}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.parse().expect("a number"))
}

/// Waits until the metric has the value (the fleet's figures are read back every 100 ms).
async fn wait_for_metric(handle: &SchedulerHandle, name: &str, job: &str, expected: Option<f64>) {
    for _ in 0..100 {
        if metric(handle, name, job) == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} of {job} stayed {:?}, expected {expected:?}", metric(handle, name, job));
}

/// Seconds since the epoch of a time the database computes, to the millisecond as exported.
fn db_epoch(cluster: &Cluster, sql_time: &str) -> f64 {
    let sql = format!("SELECT (floor(extract(epoch FROM {sql_time}) * 1000) / 1000)::float8");
    cluster.psql("postgres", &sql).parse().unwrap()
}

const DEFAULT_ROWS: &str = "pgpilot_job_default_partition_rows";
const LAST_SUCCESS: &str = "pgpilot_job_last_success_timestamp_seconds";
const SCHEDULED_SINCE: &str = "pgpilot_job_scheduled_since_timestamp_seconds";

/// A partitioned table whose default partition holds two rows, and a partitions job `ev` on it.
fn table_with_rows_in_its_default_partition(cluster: &Cluster) -> JobsConfig {
    cluster.psql(
        "postgres",
        "CREATE TABLE ev (t timestamptz NOT NULL) PARTITION BY RANGE (t);
         CREATE TABLE ev_default PARTITION OF ev DEFAULT;
         INSERT INTO ev VALUES ('2100-01-01'), ('2100-01-02');",
    );
    config(
        cluster,
        r#"
        [[jobs]]
        name = "ev"
        kind = "partitions"
        schedule = "0 3 * * *"
        database = "app"
        table = "ev"
        interval = "monthly"
        premake = 1
        "#,
    )
}

/// Instance A counts two rows in the default partition; they are deleted and instance B's run
/// counts none. A exports B's figure, not its own stale one: the alert on it stops everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_exports_the_fleets_latest_default_partition_count() {
    let cluster = Cluster::start();
    let cfg = table_with_rows_in_its_default_partition(&cluster);
    let now = clock(at(2026, 12, 7, 0, 0, 0));
    let (a, b) = (start(&cfg, now.clone(), "a"), start(&cfg, now.clone(), "b"));
    let first = a.run_now("ev").await.unwrap();
    assert_eq!((first.outcome, first.default_partition_rows), (Outcome::Succeeded, Some(2)), "{first:?}");
    assert_eq!(metric(&a, DEFAULT_ROWS, "ev"), Some(2.0));
    wait_for_metric(&b, DEFAULT_ROWS, "ev", Some(2.0)).await;

    cluster.psql("postgres", "DELETE FROM ev_default");
    let second = b.run_now("ev").await.unwrap();
    assert_eq!(second.default_partition_rows, Some(0), "{second:?}");
    wait_for_metric(&a, DEFAULT_ROWS, "ev", Some(0.0)).await;
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT string_agg(default_partition_rows::text, ',' ORDER BY id) FROM pgpilot.job_runs"
        ),
        "2,0"
    );
    // Both instances also agree on the last success, the database's time of B's run.
    let recorded = db_epoch(&cluster, "(SELECT max(finished_at) FROM pgpilot.job_runs)");
    wait_for_metric(&a, LAST_SUCCESS, "ev", Some(recorded)).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// A quarterly job last succeeded 97 days ago and has failed since. The 90-day prune keeps that
/// success (and the latest run), so the last-success metric, and the alert on it, remain; and the
/// job counts as scheduled since its earliest recorded run, whenever this instance started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prune_keeps_the_latest_success_and_a_restart_keeps_the_scheduled_since() {
    let cluster = Cluster::start();
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "q"
        kind = "sql"
        schedule = "0 0 1 */3 *"
        database = "app"
        sql = "SELECT 1/0"
        retries = 0
        "#,
    );
    let now = clock(Utc::now());
    assert_eq!(run(&cfg, "q", &now).await.outcome, Outcome::Failed, "the first run makes the table");
    cluster.psql(
        "postgres",
        "DELETE FROM pgpilot.job_runs;
         INSERT INTO pgpilot.job_runs (job, kind, instance, started_at, finished_at, outcome)
         VALUES ('q', 'sql', 'x:1', now() - interval '97 days', now() - interval '97 days', 'succeeded'),
                ('q', 'sql', 'x:1', now() - interval '95 days', now() - interval '95 days', 'failed'),
                ('q', 'sql', 'x:1', now() - interval '92 days', now() - interval '92 days', 'failed');",
    );
    let report = run(&cfg, "q", &now).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT string_agg(outcome || ':' || (now() - started_at > interval '90 days'), ',' ORDER BY id)
               FROM pgpilot.job_runs"
        ),
        "succeeded:true,failed:false",
        "the old failures are pruned, the latest success is kept"
    );

    // An instance started now: the success 97 days ago is the fleet's last, and the job has been
    // scheduled at least since that run, not since this instance started.
    let handle = start(&cfg, now.clone(), "restarted");
    let success =
        db_epoch(&cluster, "(SELECT finished_at FROM pgpilot.job_runs WHERE outcome = 'succeeded')");
    wait_for_metric(&handle, LAST_SUCCESS, "q", Some(success)).await;
    let first_run = db_epoch(&cluster, "(SELECT min(started_at) FROM pgpilot.job_runs)");
    wait_for_metric(&handle, SCHEDULED_SINCE, "q", Some(first_run)).await;
    handle.shutdown().await;
}

/// A reload that leaves a job as it was keeps when this instance started scheduling it; one that
/// changes the job starts it afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_scheduled_since_of_an_unchanged_job() {
    let jobs = |schedule: &str| {
        JobsConfig::parse(&format!(
            "[databases.app]\nprimary = \"postgres://u@127.0.0.1:1/app\"\n\
             [[jobs]]\nname = \"kept\"\nkind = \"analyze\"\nschedule = \"@daily\"\ndatabase = \"app\"\n\
             [[jobs]]\nname = \"changed\"\nkind = \"analyze\"\nschedule = \"{schedule}\"\ndatabase = \"app\"\n"
        ))
        .unwrap()
    };
    let (started, reloaded) = (at(2026, 5, 1, 0, 0, 0), at(2026, 5, 3, 0, 0, 0));
    let first = start(&jobs("@daily"), clock(started), "a");
    // The reload two days later (a clock of its own: the first scheduler's slots do not come).
    let next = jobs("@hourly");
    let options = SchedulerOptions { instance: "a".into(), ..SchedulerOptions::default() };
    let second = Scheduler::replace(
        &first,
        next.jobs.clone(),
        Arc::new(next.databases.clone()),
        clock(reloaded),
        options,
    );
    assert_eq!(metric(&second, SCHEDULED_SINCE, "kept"), Some(started.timestamp() as f64));
    assert_eq!(metric(&second, SCHEDULED_SINCE, "changed"), Some(reloaded.timestamp() as f64));
    first.shutdown().await;
    second.shutdown().await;
}

/// Times in the history are the database's: an instance whose clock is 100 days fast dates its
/// run correctly and prunes nobody's history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_dated_and_pruned_by_the_database_clock() {
    let cluster = Cluster::start();
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "tick"
        kind = "sql"
        schedule = "@daily"
        database = "app"
        sql = "SELECT 1"
        "#,
    );
    let right = clock(Utc::now());
    for _ in 0..3 {
        assert_eq!(run(&cfg, "tick", &right).await.outcome, Outcome::Succeeded);
    }
    let fast = clock(Utc::now() + chrono::Duration::days(100));
    assert_eq!(run(&cfg, "tick", &fast).await.outcome, Outcome::Succeeded);
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT count(*) || ' ' || bool_and(started_at <= now() AND finished_at <= now()) FROM pgpilot.job_runs"
        ),
        "4 true"
    );
}

/// The server restarts while a run goes on: the run's end, with the real error, is recorded on
/// a new connection instead of leaving the row 'running' for the next run to call abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_server_restarts_records_its_failure() {
    let cluster = Cluster::start();
    let cfg = config(
        &cluster,
        r#"
        [[jobs]]
        name = "sleepy"
        kind = "sql"
        schedule = "@daily"
        database = "app"
        sql = "SELECT pg_sleep(30)"
        retries = 0

        [[jobs]]
        name = "quick"
        kind = "sql"
        schedule = "@daily"
        database = "app"
        sql = "SELECT 1"
        "#,
    );
    // The history table exists before the restart.
    let now = clock(Utc::now());
    assert_eq!(run(&cfg, "quick", &now).await.outcome, Outcome::Succeeded);
    let running = {
        let (cfg, now) = (cfg.clone(), now.clone());
        tokio::spawn(async move { run(&cfg, "sleepy", &now).await })
    };
    cluster.wait_for(
        "1",
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'",
        Duration::from_secs(10),
    );
    tokio::task::block_in_place(|| cluster.restart());
    let report = running.await.unwrap();
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT outcome || ' ' || (finished_at IS NOT NULL) || ' '
                    || coalesce(error LIKE '%running the job''s SQL%', false)
               FROM pgpilot.job_runs WHERE job = 'sleepy'"
        ),
        "failed true true"
    );

    // A row whose end was really never recorded says so without claiming the instance stopped.
    cluster.psql(
        "postgres",
        "INSERT INTO pgpilot.job_runs (job, kind, instance, started_at, outcome)
         VALUES ('quick', 'sql', 'x:1', now(), 'running')",
    );
    assert_eq!(run(&cfg, "quick", &now).await.outcome, Outcome::Succeeded);
    assert_eq!(
        cluster.psql("postgres", "SELECT error FROM pgpilot.job_runs WHERE outcome = 'abandoned'"),
        "its end was never recorded (the instance stopped or lost its connection)"
    );
}

/// A job pointed at a standby fails saying so, and which server it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_a_standby_says_the_server_is_a_standby() {
    let primary = Cluster::start();
    let standby = primary.start_replica();
    let cfg = config(
        &primary,
        &format!(
            "[[jobs]]\nname = \"on-standby\"\nkind = \"sql\"\nschedule = \"@daily\"\nurl = \"{}\"\nsql = \"SELECT 1\"\n",
            standby.admin_url()
        ),
    );
    let report = run(&cfg, "on-standby", &clock(Utc::now())).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    let error = report.error.unwrap_or_default();
    let server = format!("127.0.0.1:{}/postgres", standby.port());
    assert!(error.contains("is a standby") && error.contains(&server), "{error}");
}

/// An instance that finds a slot already run by another takes the winner's figures at once,
/// without waiting for its next reading of the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_skipping_a_slot_takes_the_winners_figures() {
    let cluster = Cluster::start();
    let cfg = table_with_rows_in_its_default_partition(&cluster);
    let hour = Duration::from_secs(3600);
    let (clock_a, clock_b) = (clock(at(2026, 12, 7, 2, 59, 59)), clock(at(2026, 12, 7, 2, 59, 59)));
    let a = start_reading_every(&cfg, clock_a.clone(), "a", hour);
    let b = start_reading_every(&cfg, clock_b.clone(), "b", hour);
    assert_eq!(a.run_now("ev").await.unwrap().default_partition_rows, Some(2));
    assert_eq!(metric(&a, DEFAULT_ROWS, "ev"), Some(2.0));

    cluster.psql("postgres", "DELETE FROM ev_default");
    clock_b.set(at(2026, 12, 7, 3, 0, 0));
    wait_for_metric(&b, DEFAULT_ROWS, "ev", Some(0.0)).await;
    clock_a.set(at(2026, 12, 7, 3, 0, 1));
    wait_for_metric(&a, DEFAULT_ROWS, "ev", Some(0.0)).await;
    let skipped = a.status()[0].clone();
    assert_eq!(skipped.last_outcome, Some(Outcome::Skipped), "{skipped:?}");
    a.shutdown().await;
    b.shutdown().await;
}

/// A history table an older pgpilot made, without the column for default-partition counts, gets
/// it at the next run; its rows stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_table_made_by_an_older_pgpilot_is_upgraded() {
    let cluster = Cluster::start();
    cluster.psql(
        "postgres",
        "CREATE SCHEMA pgpilot;
         CREATE TABLE pgpilot.job_runs (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, job text NOT NULL, kind text NOT NULL,
             scheduled_for timestamptz, instance text NOT NULL, started_at timestamptz NOT NULL,
             finished_at timestamptz, outcome text NOT NULL, attempts int NOT NULL DEFAULT 1,
             rows_affected bigint, detail text, error text);
         CREATE UNIQUE INDEX job_runs_once_per_slot ON pgpilot.job_runs (job, scheduled_for)
             WHERE scheduled_for IS NOT NULL;
         INSERT INTO pgpilot.job_runs (job, kind, instance, started_at, finished_at, outcome)
         VALUES ('old', 'sql', 'x:1', now(), now(), 'succeeded');",
    );
    let cfg = table_with_rows_in_its_default_partition(&cluster);
    let report = run(&cfg, "ev", &clock(Utc::now())).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT string_agg(job || ':' || coalesce(default_partition_rows::text, '-'), ',' ORDER BY id)
               FROM pgpilot.job_runs"
        ),
        "old:-,ev:2"
    );
}

/// s27 finding 3: the history of every job failed as a whole when one job's database was down.
/// The databases that answer are read; the one that does not is named with its jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_of_all_jobs_names_an_unreachable_database_and_shows_the_others() {
    let cluster = Cluster::start();
    // A port nothing listens on: bound, then released.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = config(
        &cluster,
        &format!(
            r#"
        [[jobs]]
        name = "good"
        kind = "sql"
        schedule = "@daily"
        database = "app"
        sql = "select 1"

        [[jobs]]
        name = "down"
        kind = "sql"
        schedule = "@daily"
        url = "postgres://postgres@127.0.0.1:{down}/app?connect_timeout=2"
        sql = "select 1"
        "#
        ),
    );
    let clock = clock(at(2026, 3, 1, 0, 0, 0));
    assert_eq!(run(&cfg, "good", &clock).await.outcome, Outcome::Succeeded);

    let history = pgpilot_scheduler::history_each(&cfg.jobs, &cfg.databases, None, 10).await;
    assert_eq!(history.runs.iter().map(|r| r.job.as_str()).collect::<Vec<_>>(), ["good"], "{history:?}");
    assert_eq!(history.databases_read, 1);
    assert_eq!(history.errors.len(), 1, "{history:?}");
    let error = &history.errors[0];
    assert_eq!(error.jobs, ["down"]);
    assert_eq!(error.database.as_deref(), Some(format!("127.0.0.1:{down}/app").as_str()));
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("no history from 127.0.0.1:{down}/app (jobs down): connecting")),
        "{text}"
    );
    let json = serde_json::to_value(&history).unwrap();
    assert_eq!(json["errors"][0]["jobs"][0], "down", "{json}");
    assert_eq!(json["runs"][0]["job"], "good", "{json}");

    // Asked for by name, the unreachable job's history is still an error, the other's is not.
    assert!(pgpilot_scheduler::history_of(&cfg.jobs, &cfg.databases, Some("down"), 10).await.is_err());
    let good = pgpilot_scheduler::history_of(&cfg.jobs, &cfg.databases, Some("good"), 10).await.unwrap();
    assert_eq!(good.len(), 1);
}
