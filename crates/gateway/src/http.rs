//! The HTTP side: Prometheus metrics, health, and the JSON monitoring API.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::shared::{Phase, Shared};

pub async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves until the listener task is aborted.
pub async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let api = Router::new()
        .route("/api/v1/monitoring/pool-stats", get(pool_stats))
        .route("/api/v1/monitoring/replicas", get(replicas))
        .merge(crate::insight::routes())
        .merge(crate::jobs::routes())
        .merge(crate::advisor::routes())
        .merge(crate::cache::api::routes())
        .layer(middleware::from_fn_with_state(shared.clone(), require_token));
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .merge(api)
        .merge(crate::insight::dashboard_routes())
        .fallback(not_found)
        .with_state(shared.clone());
    if let ApiToken::Unusable(why) = configured_token(&shared.config.load().pgpilot.http_token_file) {
        tracing::warn!("{why}: the HTTP API answers 503 until the file holds a token");
    }
    if let Ok(local) = listener.local_addr() {
        // The advisor reads pgpilot's own statement statistics over this API.
        let host = if local.ip().is_unspecified() { "127.0.0.1".to_string() } else { local.ip().to_string() };
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        shared.advisor.set_self_url(format!("http://{host}:{}", local.port()));
    }
    // The probe lives as long as the HTTP side that shows what it finds; it stops with the gateway.
    let _probe = crate::insight::spawn_server_probe(&shared);
    if let Err(e) = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

/// An unknown path gets a JSON error like the API's others, not an empty body.
async fn not_found(uri: axum::http::Uri) -> Response {
    let error = format!("no endpoint {} (see docs/api/openapi.yaml)", uri.path());
    (StatusCode::NOT_FOUND, Json(json!({ "error": error }))).into_response()
}

/// What protects the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiToken {
    /// No token configured: the API is open (bind it to a private address).
    Open,
    Token(String),
    /// http_token_file is configured but missing, unreadable or empty: the API stays closed, as
    /// falling back to "no token" would open it to anyone.
    Unusable(String),
}

/// The API wants `Authorization: Bearer <token>` when a token is configured (http_token_file or PGPILOT_API_TOKEN).
async fn require_token(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let expected = match configured_token(&shared.config.load().pgpilot.http_token_file) {
        ApiToken::Open if acts_from_another_host(&request) => {
            return (
                StatusCode::FORBIDDEN,
                Json(json!({"error": "without a token (http_token_file or PGPILOT_API_TOKEN) the API's \
                    actions (POST) answer only on this host; reading stays open"})),
            )
                .into_response();
        }
        ApiToken::Open => return next.run(request).await,
        ApiToken::Token(t) => t,
        ApiToken::Unusable(why) => {
            tracing::warn!("HTTP API refused: {why}");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": format!("the API is closed: {why}")})),
            )
                .into_response();
        }
    };
    let given = bearer_token(&request);
    match given {
        Some(t) if pgpilot_wire::auth::constant_time_eq(t.trim().as_bytes(), expected.as_bytes()) => {
            next.run(request).await
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "a valid bearer token is required"})),
        )
            .into_response(),
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive, RFC 7235).
fn bearer_token(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// A request that acts (POST: EXPLAIN as a chosen user, invalidating the cache, running a job)
/// from another host: an open API answers those only on loopback, as the quick path's trust.
fn acts_from_another_host(request: &Request) -> bool {
    let peer = request.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0);
    request.method() != axum::http::Method::GET
        && request.method() != axum::http::Method::HEAD
        && !peer.is_some_and(|p| p.ip().is_loopback())
}

/// The token from http_token_file (read on every use, so a rotated file takes effect at once),
/// else PGPILOT_API_TOKEN.
pub fn configured_token(token_file: &Option<std::path::PathBuf>) -> ApiToken {
    if let Some(path) = token_file {
        return match std::fs::read_to_string(path) {
            Ok(t) if !t.trim().is_empty() => ApiToken::Token(t.trim().to_string()),
            Ok(_) => ApiToken::Unusable(format!("http_token_file {} is empty", path.display())),
            Err(e) => ApiToken::Unusable(format!("http_token_file {}: {e}", path.display())),
        };
    }
    match std::env::var("PGPILOT_API_TOKEN") {
        Ok(t) if !t.is_empty() => ApiToken::Token(t),
        _ => ApiToken::Open,
    }
}

/// The token to present to the API (the advisor reads pgpilot's own statistics over it).
pub fn api_token(shared: &Shared) -> Option<String> {
    match configured_token(&shared.config.load().pgpilot.http_token_file) {
        ApiToken::Token(t) => Some(t),
        _ => None,
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::render(&shared))
}

async fn health(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    match shared.phase() {
        Phase::Running => (StatusCode::OK, Json(json!({"status": "ok", "clients": shared.registry.count()}))),
        _ => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"}))),
    }
}

async fn pool_stats(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(pool_stats_json(&shared))
}

async fn replicas(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(replicas_json(&shared))
}

/// Every server of every database with its discovered role, health, lag and routed traffic.
pub fn replicas_json(shared: &Shared) -> serde_json::Value {
    let mut servers = Vec::new();
    for (name, db) in shared.databases.load().iter() {
        let routing = db.routing.load();
        for b in &db.backends {
            let (lag_bytes, lag_ms) = b.lag();
            servers.push(json!({
                "database": name,
                "server": &*b.address,
                "role": b.role().as_str(),
                "configured_primary": b.configured_primary,
                "state": b.state_name(&routing),
                "banned": b.is_banned(),
                "lag_bytes": lag_bytes,
                "lag_seconds": lag_ms as f64 / 1e3,
                "reads_routed": b.reads.load(std::sync::atomic::Ordering::Relaxed),
                "writes_routed": b.writes.load(std::sync::atomic::Ordering::Relaxed),
                "outstanding": b.outstanding.load(std::sync::atomic::Ordering::Relaxed),
                "weight": b.weight(),
                "tags": &**b.tags(),
                "last_error": b.last_error.lock().clone(),
            }));
        }
    }
    json!({ "replicas": servers })
}

pub fn pool_stats_json(shared: &Shared) -> serde_json::Value {
    let mut pools = Vec::new();
    for db in shared.databases.load().values() {
        for set in db.pool_sets() {
            for (i, pool) in set.all().enumerate() {
                let c = pool.counts();
                let settings = pool.settings.load();
                let t = pool.stats.totals();
                let clients = set.clients_of(db, i);
                pools.push(json!({
                    "database": &*pool.id.database,
                    "user": &*pool.id.user,
                    "server": &*pool.id.server,
                    "role": db.role_name(i),
                    "pool_mode": settings.mode.as_str(),
                    "pool_size": settings.size,
                    "clients_active": clients.saturating_sub(c.waiting),
                    "clients_waiting": c.waiting,
                    "servers_active": c.active,
                    "servers_idle": c.idle,
                    "servers_login": c.opening,
                    "servers_total": c.total,
                    "utilization": if settings.size > 0 { c.active as f64 / settings.size as f64 } else { 0.0 },
                    "max_wait_ms": c.max_wait.as_secs_f64() * 1e3,
                    "transactions": t.xacts,
                    "queries": t.queries,
                    "server_assignments": t.assignments,
                    "avg_wait_us": t.wait_time_us.checked_div(t.assignments).unwrap_or(0),
                    "avg_xact_us": t.xact_time_us.checked_div(t.xacts).unwrap_or(0),
                    "bytes_received": t.received,
                    "bytes_sent": t.sent,
                    "client_parses": t.client_parses,
                    "server_parses": t.server_parses,
                    "binds": t.binds,
                    "last_error": pool.last_error.lock().clone(),
                }));
            }
        }
    }
    let config = shared.config.load();
    json!({
        "clients": shared.registry.count(),
        "max_client_conn": config.pgpilot.max_client_conn,
        "pools": pools,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::ConnectInfo;

    fn request(method: &str, peer: &str, authorization: Option<&str>) -> Request {
        let mut builder = Request::builder().method(method).uri("/api/v1/cache/invalidate");
        if let Some(a) = authorization {
            builder = builder.header(header::AUTHORIZATION, a);
        }
        let mut request = builder.body(Body::empty()).unwrap();
        request.extensions_mut().insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        request
    }

    #[test]
    fn an_open_api_acts_only_for_this_host() {
        assert!(acts_from_another_host(&request("POST", "10.1.2.3:5555", None)));
        assert!(!acts_from_another_host(&request("POST", "127.0.0.1:5555", None)));
        assert!(!acts_from_another_host(&request("POST", "[::1]:5555", None)));
        assert!(!acts_from_another_host(&request("GET", "10.1.2.3:5555", None)), "reading stays open");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(&request("GET", "127.0.0.1:1", Some("bearer t0ken"))), Some("t0ken"));
        assert_eq!(bearer_token(&request("GET", "127.0.0.1:1", Some("Bearer t0ken"))), Some("t0ken"));
        assert_eq!(bearer_token(&request("GET", "127.0.0.1:1", Some("Basic dXNlcg=="))), None);
    }
}
