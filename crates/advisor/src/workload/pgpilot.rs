//! The gateway's own per-statement statistics (works where pg_stat_statements is not installed):
//! GET {base}/api/v1/monitoring/statements?limit=500 with an optional bearer token.

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;

use super::WorkloadStatement;

#[derive(Debug, Deserialize)]
struct StatementsResponse {
    statements: Vec<GatewayStatement>,
}

#[derive(Debug, Deserialize)]
struct GatewayStatement {
    query: String,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    calls: u64,
    #[serde(default)]
    total_time_ms: Option<f64>,
}

/// Fetches the statements the gateway has seen for `database` (all when the gateway does not say).
pub async fn fetch(
    base_url: &str,
    token: Option<&str>,
    database: &str,
    limit: usize,
) -> Result<Vec<WorkloadStatement>> {
    let url = format!("{}/api/v1/monitoring/statements?limit={limit}", base_url.trim_end_matches('/'));
    let token = token.map(str::to_string);
    let body = tokio::task::spawn_blocking(move || get(&url, token.as_deref()))
        .await
        .map_err(|e| anyhow!("the HTTP request task failed: {e}"))??;
    parse(&body, database)
}

fn get(url: &str, token: Option<&str>) -> Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(15)))
        .http_status_as_error(true)
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.call().with_context(|| format!("GET {url}"))?;
    response.body_mut().read_to_string().with_context(|| format!("reading the answer of {url}"))
}

pub fn parse(body: &str, database: &str) -> Result<Vec<WorkloadStatement>> {
    let parsed: StatementsResponse =
        serde_json::from_str(body).context("the gateway's statements answer is not the expected JSON")?;
    Ok(parsed
        .statements
        .into_iter()
        .filter(|s| s.database.as_deref().is_none_or(|d| d == database))
        .map(|s| WorkloadStatement {
            query: s.query,
            calls: s.calls,
            total_time_ms: s.total_time_ms,
            source: "pgpilot".into(),
        })
        .collect())
}
