//! Opening a job's connection: a server that never answers is given up on after the connect
//! timeout and retried per the job's retry policy; a login that cannot work is not retried.

mod common;

use std::time::{Duration, Instant};

use common::{at, clock, run};
use pgpilot_scheduler::{JobsConfig, Outcome};
use pgpilot_testkit::Cluster;
use tokio::net::TcpListener;

/// A server that accepts TCP connections and never says a word (a frozen primary, a load
/// balancer whose backend is gone). The accepted sockets stay open while the test runs.
async fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding a local port");
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    port
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_times_out_and_is_retried() {
    let port = silent_server().await;
    let config = JobsConfig::parse(&format!(
        "[[jobs]]\nname = \"frozen\"\nkind = \"sql\"\nschedule = \"@daily\"\nsql = \"SELECT 1\"\n\
         url = \"postgres://pilot:x@127.0.0.1:{port}/app?connect_timeout=1\"\n\
         retries = 1\nretry_backoff = \"100ms\"\n"
    ))
    .unwrap();
    let started = Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(30),
        run(&config, "frozen", &clock(at(2026, 5, 1, 3, 0, 0))),
    )
    .await
    .expect("the run gives up instead of waiting for the server forever");
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    let error = report.error.clone().unwrap_or_default();
    assert!(error.contains("within 1s"), "the error says what happened: {report:?}");
    assert!(
        report.notes.iter().any(|n| n.starts_with("connection attempt 1 failed")),
        "a timeout is transient: retried once as `retries = 1` says: {report:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_login_without_a_password_is_not_retried() {
    let cluster = Cluster::builder().host_auth("scram-sha-256").start();
    cluster.create_user("pilot", "secret");
    // A URL without a password takes PGPASSWORD's (docs/jobs.md); this job must have none. No
    // other test of this file reads the environment.
    std::env::remove_var("PGPASSWORD");
    let url = cluster.url("pilot", "postgres");
    let config = JobsConfig::parse(&format!(
        "[[jobs]]\nname = \"nopassword\"\nkind = \"sql\"\nschedule = \"@daily\"\nsql = \"SELECT 1\"\n\
         url = \"{url}\"\nretries = 3\nretry_backoff = \"5s\"\n"
    ))
    .unwrap();
    let started = Instant::now();
    let report = run(&config, "nopassword", &clock(at(2026, 5, 1, 3, 0, 0))).await;
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(report.error.as_deref().unwrap_or_default().contains("password missing"), "{report:?}");
    assert!(report.notes.is_empty(), "a configuration mistake is not retried: {report:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

/// helper-155: a job's session ended by the server (pg_terminate_backend, a fast shutdown) was
/// retried on the connection the server had closed, so the run waited retry_backoff for nothing
/// and recorded "connection closed" instead of the real error.
#[tokio::test]
async fn a_session_the_server_ends_is_recorded_with_its_error_and_not_retried() {
    let cluster = Cluster::start();
    let url = cluster.url("postgres", "postgres");
    let config = JobsConfig::parse(&format!(
        "[[jobs]]\nname = \"ended\"\nkind = \"sql\"\nschedule = \"@daily\"\n\
         sql = \"SELECT pg_sleep(30)\"\nurl = \"{url}\"\nretries = 2\nretry_backoff = \"5s\"\n"
    ))
    .unwrap();
    let killer = {
        let cluster_url = url.clone();
        tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&cluster_url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let ended = client
                    .query_one(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE query = 'SELECT pg_sleep(30)' AND pid <> pg_backend_pid()",
                        &[],
                    )
                    .await
                    .unwrap();
                if ended.get::<_, i64>(0) > 0 {
                    return;
                }
            }
            panic!("the job's statement never showed up");
        })
    };
    let started = Instant::now();
    let report = run(&config, "ended", &clock(at(2026, 5, 1, 3, 0, 0))).await;
    killer.await.unwrap();
    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    let error = report.error.clone().unwrap_or_default();
    assert!(error.contains("57P01") || error.contains("terminating connection"), "{report:?}");
    assert_eq!(report.attempts, 1, "{report:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}
