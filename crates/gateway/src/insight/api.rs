//! The JSON monitoring API under /api/v1/monitoring (behind the bearer token when one is set;
//! see docs/api/openapi.yaml).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::explain::{analyze_query, AnalyzeRequest};
use super::store::StatementStats;
use crate::shared::Shared;

/// The API's routes; the caller puts them behind the token check.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/monitoring/statements", get(statements).delete(reset))
        .route("/api/v1/monitoring/slow-queries", get(slow_queries))
        .route("/api/v1/monitoring/analyze-query", post(analyze))
        .route("/api/v1/monitoring/health", get(health))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    #[default]
    TotalTime,
    Calls,
    MeanTime,
    MaxTime,
    P95,
    Errors,
    Rows,
}

impl SortKey {
    fn value(self, s: &StatementStats) -> f64 {
        let c = &s.counters;
        match self {
            SortKey::TotalTime => c.total_us as f64,
            SortKey::Calls => c.calls as f64,
            SortKey::MeanTime => c.total_us as f64 / c.calls.max(1) as f64,
            SortKey::MaxTime => c.max_us as f64,
            SortKey::P95 => s.p95_us,
            SortKey::Errors => c.errors as f64,
            SortKey::Rows => c.rows as f64,
        }
    }
}

#[derive(Debug, Deserialize)]
struct StatementsQuery {
    #[serde(default)]
    sort: SortKey,
    limit: Option<usize>,
    database: Option<String>,
    user: Option<String>,
}

fn ms(us: f64) -> f64 {
    us / 1e3
}

pub fn statement_json(s: &StatementStats) -> Value {
    let c = &s.counters;
    json!({
        "fingerprint": s.fingerprint.map(|f| format!("{f:016x}")).unwrap_or_else(|| "other".into()),
        "query": &*s.query,
        "database": &*s.database,
        "user": &*s.user,
        "calls": c.calls,
        "errors": c.errors,
        "rows": c.rows,
        "total_time_ms": ms(c.total_us as f64),
        "mean_time_ms": ms(c.total_us as f64 / c.calls.max(1) as f64),
        "max_time_ms": ms(c.max_us as f64),
        "p50_ms": ms(s.p50_us),
        "p95_ms": ms(s.p95_us),
        "p99_ms": ms(s.p99_us),
        "wait_time_ms": ms(c.wait_us as f64),
        "primary_calls": c.primary,
        "replica_calls": c.replica,
        "cache_hits": c.cache,
        "slow_calls": c.slow,
    })
}

async fn statements(State(shared): State<Arc<Shared>>, Query(q): Query<StatementsQuery>) -> Json<Value> {
    let snapshot = shared.insight.snapshot();
    let config = shared.insight.config();
    let wanted = |s: &&StatementStats| {
        q.database.as_deref().is_none_or(|d| *s.database == *d)
            && q.user.as_deref().is_none_or(|u| *s.user == *u)
    };
    let mut list: Vec<&StatementStats> = snapshot.statements.iter().filter(wanted).collect();
    list.sort_by(|a, b| q.sort.value(b).total_cmp(&q.sort.value(a)).then_with(|| a.query.cmp(&b.query)));
    list.truncate(q.limit.unwrap_or(100));
    let other: Vec<&StatementStats> =
        snapshot.other.iter().filter(|s| q.database.as_deref().is_none_or(|d| *s.database == *d)).collect();
    let mut totals = super::store::Counters::default();
    snapshot
        .statements
        .iter()
        .filter(wanted)
        .chain(other.iter().copied())
        .for_each(|s| totals.merge(&s.counters));
    Json(json!({
        "statements": list.into_iter().map(statement_json).collect::<Vec<_>>(),
        "other": other.into_iter().map(statement_json).collect::<Vec<_>>(),
        "summary": {
            "tracked": shared.insight.tracked_statements(),
            "max_statements": config.max_statements,
            "calls": totals.calls,
            "errors": totals.errors,
            "rows": totals.rows,
            "total_time_ms": ms(totals.total_us as f64),
            "primary_calls": totals.primary,
            "replica_calls": totals.replica,
            "cache_hits": totals.cache,
            "slow_calls": totals.slow,
        },
    }))
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.insight.reset();
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct SlowQueriesQuery {
    threshold_ms: Option<f64>,
    limit: Option<usize>,
    database: Option<String>,
}

async fn slow_queries(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<SlowQueriesQuery>,
) -> Result<Json<Value>, (StatusCode, &'static str)> {
    let config = shared.insight.config();
    let log_min_ms = config.log_min_duration.get().as_secs_f64() * 1e3;
    let threshold = q.threshold_ms.unwrap_or(log_min_ms);
    if !(threshold.is_finite() && threshold >= 0.0) {
        return Err((StatusCode::BAD_REQUEST, "threshold_ms must be a number of milliseconds, 0 or more"));
    }
    let list = shared.insight.slow_queries(threshold, q.database.as_deref(), q.limit.unwrap_or(100));
    Ok(Json(json!({
        "log_min_duration_ms": log_min_ms,
        "threshold_ms": threshold,
        "slow_queries": list,
    })))
}

async fn analyze(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<AnalyzeRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, Json(json!({"error": e.body_text()}))).into_response(),
    };
    if let Some(why) = explain_needs_a_token(&shared) {
        return (StatusCode::FORBIDDEN, Json(json!({ "error": why }))).into_response();
    }
    match analyze_query(&shared, req).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => (r.status, Json(r.body)).into_response(),
    }
}

/// EXPLAIN logs in as the user the request names, with that user's stored credentials. Where
/// clients must prove who they are, an open API would let any local process act as any user, the
/// superuser too (helper-148), so the API token is then required; under trust anyone may already
/// connect as anyone.
fn explain_needs_a_token(shared: &Shared) -> Option<String> {
    let config = shared.config.load();
    let auth = config.pgpilot.auth_type();
    let open = crate::http::configured_token(&config.pgpilot.http_token_file) == crate::http::ApiToken::Open;
    (open && auth != crate::config::AuthType::Trust).then(|| {
        format!(
            "analyze-query logs in as a client user without that user's password; with auth_type = {} \
             it needs the API token (http_token_file or PGPILOT_API_TOKEN)",
            auth.as_str()
        )
    })
}

async fn health(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(super::health::health(&shared))
}
