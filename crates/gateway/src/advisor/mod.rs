//! GET /api/v1/advisor/findings: the DBA advisor's report (crates/advisor: health checks, index
//! suggestions, configuration) for a configured database, as `pgpilot advise --format json` writes it.
//!
//! A run reads the whole catalog and may take seconds, so it never runs on a request's time: the
//! first request for a database starts one in the background and is answered 404 ("no report
//! yet"); later requests get the last report, and one that finds it older than
//! `refresh_interval` starts a refresh in the background while the old report is served. At most
//! one run per database is under way at a time. Nothing runs unless someone asks.

mod config;
mod target;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};

pub use config::AdvisorConfig;

use crate::config::FALLBACK_DATABASE;
use crate::shared::Shared;

/// The latest report of each database and the runs under way.
#[derive(Default)]
pub struct AdvisorCache {
    entries: Mutex<HashMap<String, Entry>>,
    /// The gateway's own HTTP address, so the advisor can read pgpilot's statement statistics.
    self_url: OnceLock<String>,
}

#[derive(Default)]
struct Entry {
    report: Option<Arc<Value>>,
    running: bool,
    last_start: Option<Instant>,
    /// When the report was made (for the refresh), monotonic.
    report_made: Option<Instant>,
    last_error: Option<String>,
    runs: u64,
}

/// What a request found, and whether it should start a run.
struct Lookup {
    report: Option<Arc<Value>>,
    running: bool,
    last_error: Option<String>,
    start: bool,
}

impl AdvisorCache {
    /// Called once the HTTP listener is bound.
    pub fn set_self_url(&self, url: String) {
        let _ = self.self_url.set(url);
    }

    /// Runs completed or started for `database` (for tests and the dashboard's note).
    pub fn runs(&self, database: &str) -> u64 {
        self.entries.lock().get(database).map(|e| e.runs).unwrap_or(0)
    }

    fn lookup(&self, database: &str, config: &AdvisorConfig) -> Lookup {
        let mut entries = self.entries.lock();
        let entry = entries.entry(database.to_string()).or_default();
        let due = match (&entry.report_made, &entry.last_start) {
            _ if entry.running => false,
            (_, None) => true,
            // The last run failed (or is older than its report): wait retry_interval.
            (None, Some(start)) => start.elapsed() >= config.retry_interval.get(),
            (Some(made), Some(start)) => {
                let interval = if entry.last_error.is_some() {
                    config.retry_interval.get()
                } else {
                    config.refresh_interval.get()
                };
                made.elapsed() >= config.refresh_interval.get() && start.elapsed() >= interval
            }
        };
        if due {
            entry.running = true;
            entry.last_start = Some(Instant::now());
            entry.runs += 1;
        }
        Lookup {
            report: entry.report.clone(),
            running: entry.running,
            last_error: entry.last_error.clone(),
            start: due,
        }
    }

    fn finish(&self, database: &str, result: Result<Value, String>) {
        let mut entries = self.entries.lock();
        let entry = entries.entry(database.to_string()).or_default();
        entry.running = false;
        match result {
            Ok(report) => {
                entry.report = Some(Arc::new(report));
                entry.report_made = Some(Instant::now());
                entry.last_error = None;
            }
            Err(e) => entry.last_error = Some(e),
        }
    }
}

pub fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/api/v1/advisor/findings", get(findings))
}

#[derive(Deserialize)]
struct FindingsQuery {
    database: Option<String>,
}

fn not_found(body: Value) -> Response {
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

async fn findings(State(shared): State<Arc<Shared>>, Query(q): Query<FindingsQuery>) -> Response {
    let config = shared.config.load_full();
    let settings = &config.advisor;
    if !settings.enabled {
        return not_found(json!({"error": "the advisor is off ([advisor] enabled = false)"}));
    }
    // The `*` fallback names no database of its own to look at.
    let first_named = config.databases.keys().find(|name| *name != FALLBACK_DATABASE).cloned();
    let Some(database) = q.database.or_else(|| settings.database.clone()).or(first_named) else {
        return not_found(json!({"error": "no database is configured by name (the advisor does not \
            look at the `*` fallback): name one in [advisor] database or with ?database="}));
    };
    if database == FALLBACK_DATABASE || !config.databases.contains_key(&database) {
        return not_found(json!({"error": format!("no such database: {database}")}));
    }
    let found = shared.advisor.lookup(&database, settings);
    if found.start {
        tokio::spawn(run(shared.clone(), database.clone()));
    }
    match found.report {
        Some(report) => {
            let mut body = (*report).clone();
            if let Value::Object(map) = &mut body {
                map.insert("refreshing".into(), json!(found.running));
                map.insert("last_error".into(), json!(found.last_error));
            }
            Json(body).into_response()
        }
        None => not_found(json!({
            "database": database,
            "status": if found.running { "running" } else { "failed" },
            "error": found.last_error.unwrap_or_else(|| "no report yet: the first advisor run is under way, ask again in a few seconds".into()),
        })),
    }
}

/// One advisor run in the background; its result replaces the cached report.
async fn run(shared: Arc<Shared>, database: String) {
    let started = Instant::now();
    let result = match target::options(&shared, &database) {
        Ok(options) => pgpilot_advisor::advise(&options, &pgpilot_advisor::NoProgress)
            .await
            .map_err(|e| format!("{e:#}"))
            .and_then(|report| serde_json::to_value(&report).map_err(|e| e.to_string())),
        Err(e) => Err(e),
    };
    match &result {
        Ok(report) => tracing::info!(
            database = %database,
            findings = report["findings"].as_array().map(Vec::len).unwrap_or(0),
            index_suggestions = report["index_suggestions"].as_array().map(Vec::len).unwrap_or(0),
            seconds = started.elapsed().as_secs_f64(),
            "advisor report refreshed"
        ),
        Err(e) => tracing::warn!(database = %database, error = %e, "advisor run failed"),
    }
    shared.advisor.finish(&database, result);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secs;

    fn settings(refresh_secs: u64) -> AdvisorConfig {
        AdvisorConfig {
            refresh_interval: Secs::from_secs(refresh_secs),
            retry_interval: Secs::from_secs(3600),
            ..Default::default()
        }
    }

    #[test]
    fn one_run_at_a_time_and_only_when_stale() {
        let cache = AdvisorCache::default();
        let fresh = settings(600);
        let first = cache.lookup("app", &fresh);
        assert!(first.start && first.report.is_none(), "the first request starts a run");
        assert!(!cache.lookup("app", &fresh).start, "not a second one while it runs");
        cache.finish("app", Ok(json!({"findings": []})));
        let served = cache.lookup("app", &fresh);
        assert!(!served.start && served.report.is_some(), "a fresh report is served as is");
        let stale = cache.lookup("app", &settings(0));
        assert!(stale.start, "a stale report starts a refresh");
        assert!(stale.report.is_some(), "and is served meanwhile");
        cache.finish("app", Err("connection refused".into()));
        let after_failure = cache.lookup("app", &settings(0));
        assert!(!after_failure.start, "a failed run waits retry_interval");
        assert_eq!(after_failure.last_error.as_deref(), Some("connection refused"));
        assert!(after_failure.report.is_some(), "the last good report stays");
        assert_eq!(cache.runs("app"), 2);
        assert!(cache.lookup("other", &fresh).start, "databases are separate");
    }
}
