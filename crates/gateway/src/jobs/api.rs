//! GET /api/v1/jobs (what the scheduler knows of each job) and GET /api/v1/jobs/history (recorded
//! runs from pgpilot.job_runs), behind the API token like the rest of /api/v1.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pgpilot_scheduler::SchedulerError;
use serde::Deserialize;
use serde_json::json;

use crate::shared::Shared;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/api/v1/jobs", get(list)).route("/api/v1/jobs/history", get(history))
}

async fn list(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let handle = shared.jobs.load_full();
    let jobs = handle.as_ref().map(|h| h.status()).unwrap_or_default();
    Json(json!({ "scheduler": if handle.is_some() { "running" } else { "off" }, "jobs": jobs }))
}

#[derive(Deserialize)]
struct HistoryQuery {
    job: Option<String>,
    limit: Option<usize>,
}

async fn history(State(shared): State<Arc<Shared>>, Query(q): Query<HistoryQuery>) -> Response {
    if q.limit == Some(0) {
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": "limit must be at least 1" })))
            .into_response();
    }
    let limit = q.limit.unwrap_or(20).min(1000);
    let Some(handle) = shared.jobs.load_full() else {
        return match q.job {
            // No scheduler, no jobs: a job asked for by name is as unknown as with one.
            Some(job) => {
                let error = format!("no job named {job:?} (no [jobs] are configured)");
                (StatusCode::NOT_FOUND, Json(json!({ "error": error }))).into_response()
            }
            None => Json(json!({ "runs": [], "errors": [] })).into_response(),
        };
    };
    if q.job.is_none() {
        // Every job's history: the databases that answer are shown, the others named in
        // `errors`; only when none answers is it a 502.
        return match handle.history_each(None, limit).await {
            Ok(history) if history.errors.is_empty() || !all_failed(&history) => {
                Json(json!({ "runs": history.runs, "errors": history.errors })).into_response()
            }
            Ok(history) => {
                let error = history.errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                (StatusCode::BAD_GATEWAY, Json(json!({ "error": error, "errors": history.errors })))
                    .into_response()
            }
            Err(e) => (StatusCode::BAD_GATEWAY, Json(json!({ "error": e.to_string() }))).into_response(),
        };
    }
    match handle.history(q.job.as_deref(), limit).await {
        Ok(runs) => Json(json!({ "runs": runs, "errors": [] })).into_response(),
        Err(e @ SchedulerError::UnknownJob(_)) => {
            (StatusCode::NOT_FOUND, Json(json!({ "error": e.to_string() }))).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, Json(json!({ "error": e.to_string() }))).into_response(),
    }
}

/// True when no database's history could be read.
fn all_failed(history: &pgpilot_scheduler::History) -> bool {
    history.databases_read == 0 && !history.errors.is_empty()
}
