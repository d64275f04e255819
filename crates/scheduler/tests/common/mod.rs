//! Shared test setup: a throwaway cluster and jobs written the way users write them, in TOML.
#![allow(dead_code)]

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use pgpilot_scheduler::{run_once, JobSpec, JobsConfig, ManualClock, RunReport};
use pgpilot_testkit::Cluster;

/// Jobs parsed from `[[jobs]]` TOML, with `[databases.app]` pointing at the cluster.
pub fn config(cluster: &Cluster, jobs_toml: &str) -> JobsConfig {
    let text = format!("[databases.app]\nprimary = \"{}\"\n\n{jobs_toml}", cluster.admin_url());
    JobsConfig::parse(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"))
}

pub fn job<'a>(config: &'a JobsConfig, name: &str) -> &'a JobSpec {
    config.jobs.iter().find(|j| j.name == name).unwrap_or_else(|| panic!("no job {name}"))
}

pub fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

pub fn clock(t: DateTime<Utc>) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(t))
}

pub async fn run(config: &JobsConfig, name: &str, clock: &ManualClock) -> RunReport {
    run_once(job(config, name), &config.databases, clock).await
}

/// psql output lines as a vector.
pub fn lines(cluster: &Cluster, sql: &str) -> Vec<String> {
    let out = cluster.psql("postgres", sql);
    out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

/// A client for the test's own queries.
pub async fn client(cluster: &Cluster) -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&cluster.conninfo("postgres", "postgres"), tokio_postgres::NoTls)
            .await
            .expect("connecting to the test cluster");
    tokio::spawn(conn);
    client
}
