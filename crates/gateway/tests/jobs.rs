//! Maintenance jobs inside the running gateway: a job run through the scheduler handle leaves its
//! row in pgpilot.job_runs and shows in SHOW JOBS, GET /api/v1/jobs(/history) and /metrics; a
//! failing job is counted; a reload that changes [[jobs]] restarts the scheduler; shutdown stops it.
//! Runs are triggered with run_now (no waiting for a cron slot), except where what matters is a
//! scheduled run in progress during a reload: those tests wait for the next minute's slot.

mod common;

use std::time::Duration;

use common::*;
use pgpilot_gateway::config::Config;
use pgpilot_scheduler::Outcome;
use pgpilot_testkit::Cluster;
use serde_json::Value;

fn jobs_from(toml: &str) -> Vec<pgpilot_scheduler::JobSpec> {
    Config::parse(toml).expect("jobs parse").jobs
}

const JOBS: &str = r#"
[[jobs]]
name = "marks"
kind = "sql"
schedule = "@yearly"
database = "postgres"
sql = "INSERT INTO job_marks DEFAULT VALUES"

[[jobs]]
name = "broken"
kind = "sql"
schedule = "0 3 * * *"
database = "postgres"
sql = "SELECT 1/0"
"#;

async fn get(url: String) -> (u16, String) {
    http_get(url).await
}

async fn get_json(url: String) -> Value {
    let (status, body) = get(url.clone()).await;
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url} is not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_inside_the_gateway_and_show_everywhere() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE job_marks (id serial PRIMARY KEY, at timestamptz DEFAULT now())");
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&cluster);
    config.jobs = jobs_from(JOBS);
    // From a file, so that RELOAD can pick up a changed [[jobs]] list.
    let path = dir.path().join("pgpilot.toml");
    std::fs::write(&path, toml::to_string(&config).expect("the config serializes")).unwrap();
    let config = Config::load(&path).expect("the written config loads");
    assert_eq!(config.jobs.len(), 2);
    let gw = start(config).await;
    let handle = gw.jobs().expect("jobs are configured: the scheduler runs");
    let base = format!("http://{}", gw.http_addr().unwrap());

    // Scheduled, not yet run.
    let listed = get_json(format!("{base}/api/v1/jobs")).await;
    assert_eq!(listed["scheduler"], "running");
    assert_eq!(listed["jobs"][0]["name"], "marks");
    assert!(listed["jobs"][0]["next_run"].is_string(), "{listed}");
    assert!(listed["jobs"][0]["last_outcome"].is_null(), "{listed}");

    let report = handle.run_now("marks").await.expect("the job exists");
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM job_marks"), "1");
    let recorded = cluster.psql(
        "postgres",
        "SELECT outcome || ' ' || attempts FROM pgpilot.job_runs WHERE job = 'marks' ORDER BY id",
    );
    assert_eq!(recorded, "succeeded 1", "one history row");

    let failed = handle.run_now("broken").await.expect("the job exists");
    assert_eq!(failed.outcome, Outcome::Failed);
    assert!(failed.error.as_deref().is_some_and(|e| e.contains("division by zero")), "{failed:?}");
    assert_eq!(failed.attempts, 1, "division by zero is not transient: no retry");

    // The admin console.
    let show = psql(&gw, "pgpilot", "SHOW JOBS").expect("SHOW JOBS");
    let lines: Vec<&str> = show.lines().collect();
    assert_eq!(lines.len(), 2, "{show}");
    let marks: Vec<&str> = lines[0].split('|').collect();
    assert_eq!(&marks[..4], ["marks", "sql", "@yearly", "true"], "{show}");
    assert_eq!(marks[7], "succeeded", "{show}");
    assert!(marks[10].ends_with("UTC"), "last_success is a time: {show}");
    let broken: Vec<&str> = lines[1].split('|').collect();
    assert_eq!(broken[7], "failed", "{show}");
    assert!(broken[11].contains("division by zero"), "{show}");
    let help = psql(&gw, "pgpilot", "SHOW HELP").unwrap();
    assert!(help.contains("JOBS"), "{help}");

    // The API.
    let listed = get_json(format!("{base}/api/v1/jobs")).await;
    let jobs = listed["jobs"].as_array().unwrap();
    assert_eq!(jobs[0]["last_outcome"], "succeeded");
    assert!(jobs[0]["last_success"].is_string());
    assert_eq!(jobs[1]["last_outcome"], "failed");
    let history = get_json(format!("{base}/api/v1/jobs/history?job=marks")).await;
    let runs = history["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{history}");
    assert_eq!(runs[0]["outcome"], "succeeded");
    assert!(runs[0]["instance"].as_str().unwrap().ends_with(&format!(":{}", std::process::id())));
    let (status, body) = get(format!("{base}/api/v1/jobs/history?job=nope")).await;
    assert_eq!(status, 404, "{body}");
    // Every job's history: both runs, and no database that failed to answer.
    let all = get_json(format!("{base}/api/v1/jobs/history")).await;
    assert_eq!(all["runs"].as_array().unwrap().len(), 2, "{all}");
    assert_eq!(all["errors"], serde_json::json!([]), "{all}");

    // The metrics.
    let (_, metrics) = get(format!("{base}/metrics")).await;
    assert!(metrics.contains("pgpilot_job_last_success_timestamp_seconds{job_name=\"marks\"} "), "{metrics}");
    assert!(metrics.contains("pgpilot_job_runs_total{job_name=\"marks\",outcome=\"succeeded\"} 1\n"));
    assert!(metrics.contains("pgpilot_job_failures_total{job_name=\"broken\"} 1\n"));
    assert!(metrics.contains("pgpilot_job_period_seconds{job_name=\"broken\"} 86400\n"));
    assert!(!metrics.contains("pgpilot_job_last_success_timestamp_seconds{job_name=\"broken\"}"));
    // Every series the job alert rules (deploy/prometheus/pgpilot-jobs.rules.yml) use is declared.
    for name in pgpilot_scheduler::METRIC_NAMES {
        assert!(metrics.contains(&format!("# TYPE {name} ")), "{name} is not in /metrics");
    }

    // A reload that drops a job and adds one restarts the scheduler with the new list.
    let mut next = Config::load(&path).unwrap();
    next.jobs = jobs_from(&JOBS.replace("name = \"broken\"", "name = \"renamed\""));
    std::fs::write(&path, toml::to_string(&next).unwrap()).unwrap();
    gw.reload().expect("reload");
    let handle = gw.jobs().expect("still scheduling");
    let names: Vec<String> = handle.status().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["marks", "renamed"]);
    let report = handle.run_now("marks").await.unwrap();
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");

    let shared = gw.shared().clone();
    let started = std::time::Instant::now();
    gw.shutdown().await;
    assert!(shared.jobs.load().is_none(), "the scheduler is gone after shutdown");
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown took {:?}", started.elapsed());
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM pgpilot.job_runs WHERE job = 'marks'"), "2");
}

/// One job run every minute; the config is written to a file so that RELOAD re-reads it.
fn every_minute(
    cluster: &Cluster,
    dir: &std::path::Path,
    shutdown_secs: u64,
    sql: &str,
) -> std::path::PathBuf {
    let mut config = config_for(cluster);
    config.pgpilot.shutdown_timeout = pgpilot_gateway::config::Secs::from_secs(shutdown_secs);
    config.jobs = jobs_from(&format!(
        "[[jobs]]\nname = \"slow\"\nkind = \"sql\"\nschedule = \"* * * * *\"\ndatabase = \"postgres\"\n\
         retries = 0\nsql = \"{sql}\"\n"
    ));
    let path = dir.join("pgpilot.toml");
    std::fs::write(&path, toml::to_string(&config).expect("the config serializes")).unwrap();
    path
}

/// A second job for reloads to add beside the one under test.
const OTHER_JOB: &str =
    "[[jobs]]\nname = \"other\"\nkind = \"sql\"\nschedule = \"@daily\"\ndatabase = \"postgres\"\nsql = \"SELECT 1\"\n";

/// Adds [`OTHER_JOB`] to the config file at `path` and has `gw` reload it.
fn reload_with_another_job(gw: &pgpilot_gateway::Gateway, path: &std::path::Path) {
    let mut next = Config::load(path).unwrap();
    next.jobs.extend(jobs_from(OTHER_JOB));
    std::fs::write(path, toml::to_string(&next).unwrap()).unwrap();
    gw.reload().expect("reload");
}

/// Blocks (off the runtime's workers' hot path) until the minute's run of `sql` is on the server.
fn wait_until_running(cluster: &Cluster, sql: &str) {
    let query = format!("SELECT count(*) FROM pg_stat_activity WHERE query = '{}'", sql.replace('\'', "''"));
    tokio::task::block_in_place(|| cluster.wait_for("1", &query, Duration::from_secs(75)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_jobs_lets_the_run_in_progress_finish() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE slow_marks (id serial PRIMARY KEY)");
    let dir = tempfile::tempdir().unwrap();
    // A shutdown_timeout shorter than the run: a reload that shut the old scheduler down would
    // cancel it.
    let sql = "SELECT pg_sleep(4); INSERT INTO slow_marks DEFAULT VALUES";
    let path = every_minute(&cluster, dir.path(), 1, sql);
    let gw = start(Config::load(&path).unwrap()).await;
    wait_until_running(&cluster, sql);

    reload_with_another_job(&gw, &path);
    assert_eq!(gw.jobs().unwrap().status().len(), 2, "the new scheduler took over");
    tokio::task::block_in_place(|| {
        cluster.wait_for(
            "succeeded|",
            "SELECT outcome || '|' || coalesce(error, '') FROM pgpilot.job_runs WHERE job = 'slow' AND finished_at IS NOT NULL",
            Duration::from_secs(15),
        )
    });
    assert_eq!(cluster.psql("postgres", "SELECT count(*) FROM slow_marks"), "1");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_jobs_as_long_as_the_reloaded_shutdown_timeout_says() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT pg_sleep(60)";
    let path = every_minute(&cluster, dir.path(), 30, sql);
    let gw = start(Config::load(&path).unwrap()).await;
    wait_until_running(&cluster, sql);

    // Only shutdown_timeout changes: the scheduler keeps running, yet shutdown must use the new value.
    let mut next = Config::load(&path).unwrap();
    next.pgpilot.shutdown_timeout = pgpilot_gateway::config::Secs::from_secs(1);
    std::fs::write(&path, toml::to_string(&next).unwrap()).unwrap();
    gw.reload().expect("reload");
    let started = std::time::Instant::now();
    gw.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown took {:?}", started.elapsed());
    assert_eq!(
        cluster.psql(
            "postgres",
            "SELECT outcome, error LIKE '%57014%' FROM pgpilot.job_runs WHERE job = 'slow'"
        ),
        "failed|t",
        "the run was cancelled after the reloaded grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_jobs_nothing_runs_and_the_api_says_so() {
    let cluster = Cluster::start();
    let gw = start(config_for(&cluster)).await;
    assert!(gw.jobs().is_none());
    let base = format!("http://{}", gw.http_addr().unwrap());
    let listed = get_json(format!("{base}/api/v1/jobs")).await;
    assert_eq!(listed["scheduler"], "off");
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(0));
    let (_, metrics) = get(format!("{base}/metrics")).await;
    assert!(!metrics.contains("pgpilot_job_"), "no job metrics without jobs");
    assert_eq!(psql(&gw, "pgpilot", "SHOW JOBS").unwrap(), "");
    gw.shutdown().await;
    let schema = cluster.psql("postgres", "SELECT count(*) FROM pg_namespace WHERE nspname = 'pgpilot'");
    assert_eq!(schema, "0", "nothing touched the database");
}

#[test]
fn bad_jobs_are_named_by_validation() {
    let mut config = Config::parse(
        "[databases.app]\nprimary = \"postgres://app@127.0.0.1/app\"\n\
         [[jobs]]\nname = \"x\"\nkind = \"analyze\"\nschedule = \"every day\"\ndatabase = \"other\"\n",
    )
    .unwrap();
    config.pgpilot.auth_type = Some(pgpilot_gateway::config::AuthType::Trust);
    let problems = config.validate();
    assert!(
        problems.iter().any(|p| p.starts_with("[[jobs]] job `x`") && p.contains("every day")),
        "{problems:?}"
    );
    assert!(problems.iter().any(|p| p.contains("there is no [databases.other] table")), "{problems:?}");
    let err =
        Config::parse("[[jobs]]\nname = \"y\"\nkind = \"vacuum\"\nschedule = \"@daily\"\n").unwrap_err();
    assert!(err.contains("job `y`") && err.contains("database"), "{err}");
}

/// After a failover, jobs run on the primary the monitor found, not on the configured one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_follow_a_promoted_replica() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE TABLE job_marks (id serial PRIMARY KEY, at timestamptz DEFAULT now())");
    let replica = cluster.start_replica();
    replica.wait_caught_up(&cluster);
    let mut config = config_for(&cluster);
    let db = config.databases.get_mut("postgres").unwrap();
    db.replicas = pgpilot_gateway::config::OneOrMany(vec![pgpilot_gateway::config::ReplicaConfig::Url(
        replica.admin_url(),
    )]);
    db.routing.health_check_interval = pgpilot_gateway::config::Secs::from_millis(200);
    config.jobs = jobs_from(JOBS);
    let gw = start(config).await;
    let handle = gw.jobs().expect("the scheduler runs");
    cluster.stop();
    replica.promote();
    let c = connect(&gw).await;
    let mut moved = false;
    for _ in 0..50 {
        if c.batch_execute("SELECT 1 FROM job_marks FOR UPDATE").await.is_ok() {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(moved, "writes never moved to the promoted replica");
    let report = handle.run_now("marks").await.expect("the job exists");
    assert_eq!(report.outcome, pgpilot_scheduler::Outcome::Succeeded, "{report:?}");
    assert_eq!(replica.psql("postgres", "SELECT count(*) FROM job_marks"), "1");
    gw.shutdown().await;
}

/// A run in progress when a reload changes [[jobs]] stays this instance's run: the new scheduler
/// shows it running, does not mistake it for another instance's, and counts its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_across_a_reload_stays_visible_and_is_counted() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT pg_sleep(4); SELECT 1/0";
    let mut config = config_for(&cluster);
    config.jobs = jobs_from(&format!(
        "[[jobs]]\nname = \"slow\"\nkind = \"sql\"\nschedule = \"@yearly\"\ndatabase = \"postgres\"\n\
         retries = 0\nsql = \"{sql}\"\n"
    ));
    let path = dir.path().join("pgpilot.toml");
    std::fs::write(&path, toml::to_string(&config).expect("the config serializes")).unwrap();
    let gw = start(Config::load(&path).unwrap()).await;
    let before = gw.jobs().expect("the scheduler runs");
    let run = tokio::spawn(async move { before.run_now("slow").await });
    wait_until_running(&cluster, sql);

    reload_with_another_job(&gw, &path);
    let after = gw.jobs().expect("still scheduling");
    assert_eq!(after.status().len(), 2, "the new scheduler took over");
    assert!(after.status()[0].running, "{:?}", after.status()[0]);
    let base = format!("http://{}", gw.http_addr().unwrap());
    let (_, metrics) = get(format!("{base}/metrics")).await;
    assert!(metrics.contains("pgpilot_job_running{job_name=\"slow\"} 1\n"), "{metrics}");
    let metrics = the_run_is_this_instances_and_counted(&after, "slow", run, &base).await;
    assert!(
        metrics.contains("pgpilot_job_runs_total{job_name=\"slow\",outcome=\"failed\"} 1\n"),
        "{metrics}"
    );
    gw.shutdown().await;
}

/// The run `run` of job `name`, still going, is this instance's to `jobs` (a second run is
/// skipped as running here), and when it fails its outcome is counted; returns /metrics after.
async fn the_run_is_this_instances_and_counted(
    jobs: &pgpilot_scheduler::SchedulerHandle,
    name: &str,
    run: tokio::task::JoinHandle<Result<pgpilot_scheduler::RunReport, pgpilot_scheduler::SchedulerError>>,
    base: &str,
) -> String {
    let again = jobs.run_now(name).await.unwrap();
    assert_eq!(again.outcome, Outcome::Skipped);
    assert_eq!(again.error.as_deref(), Some("it is already running on this instance"), "{again:?}");
    let finished = run.await.unwrap().unwrap();
    assert_eq!(finished.outcome, Outcome::Failed, "{finished:?}");
    let status = jobs.status().into_iter().find(|s| s.name == name).unwrap();
    assert!(!status.running, "{status:?}");
    assert_eq!(status.last_outcome, Some(Outcome::Failed), "{status:?}");
    assert!(status.last_error.unwrap_or_default().contains("division by zero"));
    let (_, metrics) = get(format!("{base}/metrics")).await;
    assert!(metrics.contains(&format!("pgpilot_job_failures_total{{job_name=\"{name}\"}} 1\n")), "{metrics}");
    assert!(metrics.contains(&format!("pgpilot_job_running{{job_name=\"{name}\"}} 0\n")), "{metrics}");
    metrics
}

/// A job removed by a reload while it runs, then put back (through a reload that left no job at
/// all), finds its run in progress on this instance: shown running, its lock (no "another
/// instance" skip), its counters from before the removal, and the run's outcome counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_removed_and_put_back_mid_run_keeps_its_run() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT pg_sleep(4); SELECT 1/0";
    let slow = format!(
        "[[jobs]]\nname = \"slow2\"\nkind = \"sql\"\nschedule = \"@yearly\"\ndatabase = \"postgres\"\n\
         retries = 0\nsql = \"{sql}\"\n"
    );
    let other = OTHER_JOB;
    let mut config = config_for(&cluster);
    config.jobs = jobs_from(&slow);
    let path = dir.path().join("pgpilot.toml");
    let write = |jobs: Vec<pgpilot_scheduler::JobSpec>| {
        let mut next = Config::load(&path).unwrap();
        next.jobs = jobs;
        std::fs::write(&path, toml::to_string(&next).unwrap()).unwrap();
    };
    std::fs::write(&path, toml::to_string(&config).expect("the config serializes")).unwrap();
    let gw = start(Config::load(&path).unwrap()).await;
    let before = gw.jobs().expect("the scheduler runs");
    let first = before.clone();
    let run = tokio::spawn(async move { first.run_now("slow2").await });
    wait_until_running(&cluster, sql);
    let skipped = before.run_now("slow2").await.unwrap();
    assert_eq!(skipped.outcome, Outcome::Skipped, "{skipped:?}");

    // Removed (another job left), then no job at all, then put back as it was.
    write(jobs_from(other));
    gw.reload().expect("reload");
    assert_eq!(gw.jobs().expect("still scheduling").status().len(), 1);
    write(Vec::new());
    gw.reload().expect("reload");
    assert!(gw.jobs().is_none(), "no job configured");
    write(jobs_from(&slow));
    gw.reload().expect("reload");

    let after = gw.jobs().expect("scheduling again");
    let status = after.status()[0].clone();
    assert_eq!(status.name, "slow2");
    assert!(status.running, "{status:?}");
    let base = format!("http://{}", gw.http_addr().unwrap());
    let (_, metrics) = get(format!("{base}/metrics")).await;
    assert!(metrics.contains("pgpilot_job_running{job_name=\"slow2\"} 1\n"), "{metrics}");
    assert!(
        metrics.contains("pgpilot_job_runs_total{job_name=\"slow2\",outcome=\"skipped\"} 1\n"),
        "{metrics}"
    );
    let metrics = the_run_is_this_instances_and_counted(&after, "slow2", run, &base).await;
    assert!(
        metrics.contains("pgpilot_job_runs_total{job_name=\"slow2\",outcome=\"failed\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pgpilot_job_runs_total{job_name=\"slow2\",outcome=\"skipped\"} 2\n"),
        "{metrics}"
    );
    gw.shutdown().await;
}
