//! The cache's HTTP API (GET /api/v1/cache/stats, POST /api/v1/cache/invalidate), the admin
//! console's SHOW CACHE and INVALIDATE CACHE, and its Prometheus lines.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::Invalidation;
use crate::shared::Shared;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/cache/stats", get(stats))
        .route("/api/v1/cache/invalidate", post(invalidate_request))
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(stats_json(&shared))
}

/// What to invalidate: a table, a tag, or everything, in one database or all of them.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    pub database: Option<String>,
    pub table: Option<String>,
    pub tag: Option<String>,
    #[serde(default)]
    pub all: bool,
}

async fn invalidate_request(
    State(shared): State<Arc<Shared>>,
    Json(req): Json<InvalidateRequest>,
) -> Response {
    match invalidate(&shared, &req) {
        Ok(n) => Json(json!({ "invalidated": n })).into_response(),
        Err(e) => {
            let status = match e {
                InvalidateError::Invalid(_) => StatusCode::BAD_REQUEST,
                InvalidateError::UnknownTable(_) => StatusCode::NOT_FOUND,
            };
            (status, Json(json!({ "error": e.to_string() }))).into_response()
        }
    }
}

/// Why a manual invalidation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidateError {
    #[error("{0}")]
    Invalid(String),
    /// No database chosen has the table (a typo would otherwise invalidate nothing, silently).
    #[error("no such table: {0}")]
    UnknownTable(String),
}

/// Invalidates what `req` names; returns how many databases had something invalidated (for a
/// table, the databases that have it, and everything of those whose catalog is not read yet).
pub fn invalidate(shared: &Shared, req: &InvalidateRequest) -> Result<u64, InvalidateError> {
    let targets = [req.table.is_some(), req.tag.is_some(), req.all].iter().filter(|t| **t).count();
    if targets != 1 {
        return Err(InvalidateError::Invalid("name exactly one of table, tag or all".into()));
    }
    let dbs = shared.databases.load();
    let chosen: Vec<_> = match &req.database {
        Some(name) => vec![dbs
            .get(name)
            .cloned()
            .ok_or_else(|| InvalidateError::Invalid(format!("no such database: {name}")))?],
        None => dbs.values().cloned().collect(),
    };
    if let Some(table) = &req.table {
        // Unknown wherever it could be looked up: most likely a typo, refused without dropping the
        // results of databases whose catalog is not read yet.
        let mut loaded = chosen.iter().filter(|db| db.cache.catalog_loaded.load(Relaxed)).peekable();
        let looked_up = loaded.peek().is_some();
        if looked_up && !loaded.any(|db| db.cache.invalidation_of_table(table).is_some()) {
            return Err(InvalidateError::UnknownTable(table.clone()));
        }
    }
    let mut touched = 0;
    for db in chosen {
        let inv = if let Some(table) = &req.table {
            match db.cache.invalidation_of_table(table) {
                Some(inv) => inv,
                None => continue,
            }
        } else if let Some(tag) = &req.tag {
            db.cache.versions.bump_tag(tag);
            shared.cache.publish_tag(&db.name, tag);
            Invalidation::Nothing
        } else {
            Invalidation::Everything
        };
        shared.invalidate_cached(&db, &inv);
        shared.cache.publish(&db.name, &inv);
        shared.cache.stats.invalidations.fetch_add(1, Relaxed);
        touched += 1;
    }
    Ok(touched)
}

pub fn stats_json(shared: &Shared) -> Value {
    let cache = &shared.cache;
    let s = &cache.stats;
    let (entries, bytes) = cache.usage();
    let mut databases = Vec::new();
    let mut any_enabled = false;
    for (name, db) in shared.databases.load().iter() {
        let settings = db.cache.settings.load();
        any_enabled |= settings.enabled;
        let channel = db.cache.channel.summary();
        databases.push(json!({
            "database": name,
            "enabled": settings.enabled,
            "ttl_seconds": settings.ttl.get().as_secs_f64(),
            "consistency": settings.consistency.as_str(),
            "rules": settings.rules.len(),
            "catalog_loaded": db.cache.catalog_loaded.load(Relaxed),
            "triggers_installed": channel.required,
            "invalidation_channel_up": channel.up,
            "notifications": channel.notifications,
            "notification_delay_ms": {
                "last": channel.last_ms, "p99": channel.p99_ms, "max": channel.max_ms,
            },
        }));
    }
    let bypasses: serde_json::Map<String, Value> =
        s.bypasses().into_iter().map(|(r, n)| (r.to_string(), json!(n))).collect();
    let fingerprints: Vec<Value> = s
        .top_fingerprints(50)
        .into_iter()
        .map(|(f, h, m, text)| {
            json!({
                "fingerprint": format!("{f:016x}"), "hits": h, "misses": m,
                "hit_rate": if h + m > 0 { h as f64 / (h + m) as f64 } else { 0.0 }, "query": text,
            })
        })
        .collect();
    json!({
        "enabled": any_enabled,
        "hits": s.hits.load(Relaxed),
        "misses": s.misses.load(Relaxed),
        "hit_rate": s.hit_rate(),
        "fills": s.fills.load(Relaxed),
        "fills_from_replicas": s.fills_from_replicas.load(Relaxed),
        "fills_raced": s.fills_raced.load(Relaxed),
        "fill_waits": s.fill_waits.load(Relaxed),
        "evictions": s.evictions.load(Relaxed),
        "expirations": s.expirations.load(Relaxed),
        "invalidations": s.invalidations.load(Relaxed),
        "entries": entries,
        "bytes": bytes,
        "max_bytes": cache.max_bytes(),
        "hit_bytes": s.hit_bytes.load(Relaxed),
        "hit_duration_ms": {
            "bounded": { "p50": s.hit_times[0].quantile_ms(0.5), "p99": s.hit_times[0].quantile_ms(0.99) },
            "strict": { "p50": s.hit_times[1].quantile_ms(0.5), "p99": s.hit_times[1].quantile_ms(0.99) },
        },
        "redis": cache.redis_state(),
        "bypasses": bypasses,
        "databases": databases,
        "fingerprints": fingerprints,
    })
}

/// Prometheus lines.
pub fn render_metrics(shared: &Shared, out: &mut String) {
    use crate::metrics::{header, label};
    let s = &shared.cache.stats;
    let (entries, bytes) = shared.cache.usage();
    let counters: [(&str, &str, u64); 9] = [
        ("pgpilot_cache_hits_total", "Reads answered from the result cache.", s.hits.load(Relaxed)),
        ("pgpilot_cache_misses_total", "Cacheable reads not found in the cache.", s.misses.load(Relaxed)),
        ("pgpilot_cache_fills_total", "Results stored in the cache.", s.fills.load(Relaxed)),
        (
            "pgpilot_cache_fills_from_replicas_total",
            "Results stored from a replica that had replayed the last change to what they read.",
            s.fills_from_replicas.load(Relaxed),
        ),
        (
            "pgpilot_cache_fills_raced_total",
            "Results not stored because a table they read was written meanwhile.",
            s.fills_raced.load(Relaxed),
        ),
        (
            "pgpilot_cache_evictions_total",
            "Results evicted for the memory budget.",
            s.evictions.load(Relaxed),
        ),
        ("pgpilot_cache_expirations_total", "Results that reached their TTL.", s.expirations.load(Relaxed)),
        (
            "pgpilot_cache_invalidations_total",
            "Tables, tags or databases invalidated.",
            s.invalidations.load(Relaxed),
        ),
        (
            "pgpilot_cache_fill_waits_total",
            "Misses that waited for another client's fill of the same result.",
            s.fill_waits.load(Relaxed),
        ),
    ];
    for (name, help, n) in counters {
        header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {n}");
    }
    header(
        out,
        "pgpilot_cache_bypass_total",
        "counter",
        "Reads not served from or stored in the cache, by reason.",
    );
    for (reason, n) in s.bypasses() {
        let _ = writeln!(out, "pgpilot_cache_bypass_total{{reason=\"{reason}\"}} {n}");
    }
    header(
        out,
        "pgpilot_cache_hit_duration_seconds",
        "histogram",
        "Time pgpilot took to answer a hit, from the whole request read to the answer written.",
    );
    for (times, consistency) in s.hit_times.iter().zip(["bounded", "strict"]) {
        let name = "pgpilot_cache_hit_duration_seconds";
        let l = format!("consistency=\"{consistency}\"");
        let mut cumulative = 0;
        for (bound, n) in super::hit_time::BOUNDS_US.iter().zip(times.counts()) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
        }
        cumulative += times.counts()[super::hit_time::BOUNDS_US.len()];
        let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum{{{l}}} {}", times.sum_us() as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{l}}} {cumulative}");
    }
    header(out, "pgpilot_cache_entries", "gauge", "Results held in memory.");
    let _ = writeln!(out, "pgpilot_cache_entries {entries}");
    header(out, "pgpilot_cache_bytes", "gauge", "Bytes of results held in memory.");
    let _ = writeln!(out, "pgpilot_cache_bytes {bytes}");
    header(out, "pgpilot_cache_hit_ratio", "gauge", "Hits over lookups since start.");
    let _ = writeln!(out, "pgpilot_cache_hit_ratio {}", s.hit_rate());
    header(
        out,
        "pgpilot_cache_invalidation_channel_up",
        "gauge",
        "1 while a database's invalidation channel (LISTEN for the triggers) is up; 0 serves nothing from cache.",
    );
    header(
        out,
        "pgpilot_cache_notification_delay_seconds",
        "gauge",
        "Delay of the last invalidation notification.",
    );
    let redis = shared.cache.redis.state.summary();
    if redis.required {
        header(
            out,
            "pgpilot_cache_redis_up",
            "gauge",
            "1 while the shared Redis link is up; 0 serves nothing from cache, on any database.",
        );
        let _ = writeln!(out, "pgpilot_cache_redis_up {}", redis.up as u8);
    }
    for (name, db) in shared.databases.load().iter() {
        let c = db.cache.channel.summary();
        if c.required {
            let _ = writeln!(
                out,
                "pgpilot_cache_invalidation_channel_up{{database=\"{}\"}} {}",
                label(name),
                c.up as u8
            );
            let _ = writeln!(
                out,
                "pgpilot_cache_notification_delay_seconds{{database=\"{}\"}} {}",
                label(name),
                c.last_ms / 1e3
            );
        }
    }
    header(
        out,
        "pgpilot_cache_fingerprint_hits_total",
        "counter",
        "Hits per statement fingerprint (top 50).",
    );
    header(
        out,
        "pgpilot_cache_fingerprint_misses_total",
        "counter",
        "Misses per statement fingerprint (top 50).",
    );
    for (f, h, m, _) in s.top_fingerprints(50) {
        let _ = writeln!(out, "pgpilot_cache_fingerprint_hits_total{{fingerprint=\"{f:016x}\"}} {h}");
        let _ = writeln!(out, "pgpilot_cache_fingerprint_misses_total{{fingerprint=\"{f:016x}\"}} {m}");
    }
}

/// SHOW CACHE: one row per database, then totals.
pub fn show(shared: &Shared) -> crate::admin::ResultSet {
    use crate::admin::resultset::{v as cell, Cell};
    let mut rs = crate::admin::ResultSet::new(&[
        "database",
        "enabled",
        "ttl",
        "consistency",
        "hits",
        "misses",
        "hit_rate",
        "entries",
        "bytes",
        "channel",
        "notify_delay_ms",
    ]);
    let v = stats_json(shared);
    for db in v["databases"].as_array().into_iter().flatten() {
        let channel = if db["triggers_installed"].as_bool() == Some(true) {
            if db["invalidation_channel_up"].as_bool() == Some(true) {
                "up"
            } else {
                "down"
            }
        } else {
            "pgpilot"
        };
        rs.row(vec![
            cell(db["database"].as_str()),
            cell(db["enabled"].to_string()),
            cell(format!("{}s", db["ttl_seconds"])),
            cell(db["consistency"].as_str()),
            Cell::NULL,
            Cell::NULL,
            Cell::NULL,
            Cell::NULL,
            Cell::NULL,
            cell(channel),
            cell(db["notification_delay_ms"]["max"].to_string()),
        ]);
    }
    let count = |k: &str| cell(v.get(k).and_then(Value::as_u64));
    rs.row(vec![
        cell("*"),
        cell(v.get("enabled").map(|x| x.to_string())),
        Cell::NULL,
        Cell::NULL,
        count("hits"),
        count("misses"),
        cell(v.get("hit_rate").and_then(Value::as_f64).map(|r| format!("{r:.4}"))),
        count("entries"),
        count("bytes"),
        Cell::NULL,
        Cell::NULL,
    ]);
    rs
}
