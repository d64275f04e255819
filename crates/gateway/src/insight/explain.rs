//! POST /api/v1/monitoring/analyze-query: EXPLAIN (FORMAT JSON) of one read-only statement, on a
//! replica when the database has one. EXPLAIN ANALYZE runs the statement, so it needs
//! `allow_explain_analyze`, runs inside a READ ONLY transaction that is rolled back, under a
//! statement_timeout, and refuses server-administration functions the read-only guard lets through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use pgpilot_sql::{StatementKind, WriteReason};
use serde::Deserialize;
use serde_json::{json, Value};

use super::pgclient::{server_user_for, ClientError, PgConn};
use crate::config::ServerUrl;
use crate::databases::Database;
use crate::routing::{Backend, Role};
use crate::shared::Shared;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeRequest {
    pub query: String,
    /// The logical database; may be left out when only one is configured.
    #[serde(default)]
    pub database: Option<String>,
    /// EXPLAIN ANALYZE (executes the statement) instead of EXPLAIN.
    #[serde(default)]
    pub analyze: bool,
    /// Values for $1, $2, ... (strings, numbers, booleans or null), sent as text.
    #[serde(default)]
    pub params: Vec<Value>,
    /// The client user whose server login to use, when the database has no fixed server user.
    #[serde(default)]
    pub user: Option<String>,
}

/// A refusal or failure, with the HTTP status that says whose fault it is.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub body: Value,
}

fn refuse(status: StatusCode, error: impl Into<String>) -> Refusal {
    Refusal { status, body: json!({ "error": error.into() }) }
}

/// Functions that change the server without writing data, which a READ ONLY transaction allows.
const ADMIN_FUNCTION_PREFIXES: &[&str] = &[
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_wal_replay_",
    "pg_log_backend_memory_contexts",
    "pg_stat_reset",
    "pg_notify",
    "set_config",
    "pg_read_",
    "pg_ls_",
    "pg_stat_file",
    "lo_",
    "dblink",
];

/// Checks that `query` is one statement that only reads. Returns the text to EXPLAIN.
pub fn check_query(query: &str, analyze: bool) -> Result<String, Refusal> {
    let text = query.trim().trim_end_matches(|c: char| c == ';' || c.is_whitespace());
    if text.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "the query is empty"));
    }
    let statement = pgpilot_sql::analyze(text);
    if let Some(e) = &statement.parse_error {
        return Err(refuse(StatusCode::BAD_REQUEST, format!("the query does not parse: {e}")));
    }
    if statement.writes {
        let why = statement.write_reason.as_ref().map(WriteReason::as_str).unwrap_or("write");
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            body: json!({
                "error": format!("refused: the statement may write ({why}); only reads are explained here"),
                "reason": why,
            }),
        });
    }
    if statement.statement_count != 1 {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("one statement at a time, please: the text holds {}", statement.statement_count),
        ));
    }
    if statement.kind != StatementKind::Select {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "only queries (SELECT, VALUES, TABLE, WITH ... SELECT) can be explained here, not {}",
                statement.kind.as_str()
            ),
        ));
    }
    if analyze {
        if let Some(f) = statement
            .functions
            .iter()
            .find(|f| ADMIN_FUNCTION_PREFIXES.iter().any(|p| f.name.to_ascii_lowercase().starts_with(p)))
        {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                format!("refused: EXPLAIN ANALYZE would run {}(), which acts on the server", f.name),
            ));
        }
    }
    Ok(text.to_string())
}

fn param_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn pick_database(shared: &Shared, name: Option<&str>) -> Result<Arc<Database>, Refusal> {
    let databases = shared.databases.load();
    match name {
        Some(n) => databases
            .get(n)
            .cloned()
            .ok_or_else(|| refuse(StatusCode::NOT_FOUND, format!("no such database: {n}"))),
        None if databases.len() == 1 => Ok(databases.values().next().cloned().unwrap()),
        None => Err(refuse(StatusCode::BAD_REQUEST, "say which database: \"database\" is required")),
    }
}

pub async fn analyze_query(shared: &Shared, req: AnalyzeRequest) -> Result<Value, Refusal> {
    let config = shared.insight.config();
    if req.analyze && !config.allow_explain_analyze {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "EXPLAIN ANALYZE is disabled: set allow_explain_analyze = true in [insight] to allow it",
        ));
    }
    let text = check_query(&req.query, req.analyze)?;
    let db = pick_database(shared, req.database.as_deref())?;
    let user = server_user_for(&db, req.user.as_deref()).ok_or_else(|| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("database {} has no fixed server user and no pool yet: pass \"user\"", db.name),
        )
    })?;
    let timeout = config.explain_timeout.enabled().unwrap_or(Duration::from_secs(10));
    let (mut conn, role) = connect_replica_first(shared, &db, &user, timeout).await?;
    let options = if req.analyze { "FORMAT JSON, ANALYZE, BUFFERS" } else { "FORMAT JSON" };
    let params: Vec<Option<String>> = req.params.iter().map(param_text).collect();
    let started = Instant::now();
    let result = tokio::time::timeout(timeout + Duration::from_secs(2), async {
        conn.simple(&format!(
            "BEGIN TRANSACTION READ ONLY; SET LOCAL statement_timeout = {}",
            timeout.as_millis().max(1)
        ))
        .await?;
        let rows = conn.extended(&format!("EXPLAIN ({options}) {text}"), &params).await;
        let _ = conn.simple("ROLLBACK").await;
        rows
    })
    .await;
    let server = conn.address().to_string();
    conn.close().await;
    let rows = match result {
        Err(_) => return Err(refuse(StatusCode::GATEWAY_TIMEOUT, format!("EXPLAIN on {server} timed out"))),
        Ok(Err(ClientError::Server { code, message })) => {
            return Err(Refusal {
                status: StatusCode::BAD_REQUEST,
                body: json!({"error": message, "sqlstate": code, "server": server}),
            })
        }
        Ok(Err(e)) => return Err(refuse(StatusCode::BAD_GATEWAY, e.to_string())),
        Ok(Ok(rows)) => rows,
    };
    let plan_text = rows.first().and_then(|r| r.first().cloned().flatten()).unwrap_or_default();
    let plan: Value = serde_json::from_str(&plan_text)
        .map_err(|e| refuse(StatusCode::BAD_GATEWAY, format!("EXPLAIN output is not JSON: {e}")))?;
    Ok(json!({
        "database": &*db.name,
        "user": user,
        "server": server,
        "role": role,
        "analyze": req.analyze,
        "elapsed_ms": started.elapsed().as_secs_f64() * 1e3,
        "total_cost": plan[0]["Plan"]["Total Cost"],
        "plan": plan,
    }))
}

/// A healthy replica (as the router's monitor sees them) when one answers, else the primary,
/// else any server. Which one ran it is reported.
async fn connect_replica_first(
    shared: &Shared,
    db: &Arc<Database>,
    user: &str,
    timeout: Duration,
) -> Result<(PgConn, &'static str), Refusal> {
    let connect_timeout = timeout.min(Duration::from_secs(5));
    let primary = db.primary_index();
    // Before the monitor's first check a configured replica counts as one.
    let rank = |b: &Backend| match (b.role(), b.is_banned()) {
        _ if b.index == primary => 1,
        (Role::Replica, false) => 0,
        (Role::Unknown, false) if !b.configured_primary => 0,
        _ => 2,
    };
    let mut backends: Vec<&Arc<Backend>> = db.backends.iter().collect();
    backends.sort_by_key(|b| (rank(b), b.index));
    let candidates: Vec<(&ServerUrl, &'static str)> = backends
        .iter()
        .map(|b| {
            let role = match b.role() {
                _ if b.index == primary => "primary",
                Role::Unknown if !b.configured_primary => "replica",
                r => r.as_str(),
            };
            (&b.url, role)
        })
        .collect();
    let mut errors = Vec::new();
    for (url, role) in candidates {
        match PgConn::connect(shared, db, url, user, connect_timeout).await {
            Ok(c) => return Ok((c, role)),
            Err(e) => {
                tracing::debug!(server = %url.address(), error = %e, "EXPLAIN: cannot use this server");
                errors.push(format!("{} ({role}): {e}", url.address()));
            }
        }
    }
    Err(Refusal {
        status: StatusCode::BAD_GATEWAY,
        body: json!({"error": format!("no server of {} accepted the EXPLAIN connection", db.name), "servers": errors}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pass_and_everything_else_is_refused_with_a_reason() {
        assert_eq!(
            check_query("  SELECT * FROM t WHERE id = $1 ;\n", false).unwrap(),
            "SELECT * FROM t WHERE id = $1"
        );
        assert!(check_query("WITH x AS (SELECT 1) SELECT * FROM x", false).is_ok());
        for (sql, status) in [
            ("DELETE FROM t", StatusCode::FORBIDDEN),
            ("UPDATE t SET a = 1", StatusCode::FORBIDDEN),
            ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", StatusCode::FORBIDDEN),
            ("SELECT * FROM t FOR UPDATE", StatusCode::FORBIDDEN),
            ("SELECT nextval('s')", StatusCode::FORBIDDEN),
            ("SELECT 1; SELECT 2", StatusCode::BAD_REQUEST),
            ("SELECT 1; DROP TABLE t", StatusCode::FORBIDDEN),
            ("VACUUM t", StatusCode::FORBIDDEN),
            ("SHOW work_mem", StatusCode::BAD_REQUEST),
            ("EXPLAIN SELECT 1", StatusCode::BAD_REQUEST),
            ("SELEC 1", StatusCode::BAD_REQUEST),
            ("", StatusCode::BAD_REQUEST),
        ] {
            let r = check_query(sql, false).expect_err(sql);
            assert_eq!(r.status, status, "{sql}: {}", r.body);
            assert!(r.body["error"].as_str().is_some_and(|e| !e.is_empty()), "{sql}");
        }
        assert!(check_query("SELECT pg_terminate_backend(1)", false).is_ok(), "plain EXPLAIN runs nothing");
        let r = check_query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", true).unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
}
