//! The gateway's own per-statement statistics (works where pg_stat_statements is not installed):
//! GET {base}/api/v1/monitoring/statements?database={db}&limit=500 with an optional bearer token.

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

/// Answers larger than this are refused (ureq's default limit, kept on purpose: a gateway keeping
/// huge statement texts must not make the advisor hold hundreds of megabytes).
pub const MAX_ANSWER_BYTES: u64 = 10 * 1024 * 1024;

/// The statements asked for again after a too-big answer (then a tenth of that, down to one).
const RETRY_LIMIT: usize = 50;

/// What the gateway gave, and what the reader must be warned about.
#[derive(Debug, Default)]
pub struct Fetched {
    pub statements: Vec<WorkloadStatement>,
    /// Loud problems: the workload read is incomplete, or was not read at all.
    pub warnings: Vec<String>,
    /// Statements left out because the gateway kept only the start of their text.
    pub cut: usize,
}

impl Fetched {
    pub fn cut_note(&self) -> Option<String> {
        (self.cut > 0).then(|| {
            format!(
                "{} statement(s) from pgpilot left out: the gateway kept only the start of their text \
                 ([insight] max_query_text), which cannot be planned",
                self.cut
            )
        })
    }
}

/// How the gateway marks a text it kept only the start of (`[insight] max_query_text`).
fn is_cut(query: &str) -> bool {
    query.ends_with(" bytes more */") && query.contains(" /* … ")
}

/// Fetches the statements the gateway has seen for `database` (the gateway filters them; an older
/// one that does not is filtered here too). An answer over [`MAX_ANSWER_BYTES`] is asked again
/// for fewer statements, and the reader is warned that the workload is cut short.
pub async fn fetch(base_url: &str, token: Option<&str>, database: &str, limit: usize) -> Result<Fetched> {
    let limit = limit.max(1);
    let mut asked = limit;
    loop {
        let url = statements_url(base_url, database, asked);
        let token = token.map(str::to_string);
        let answer = tokio::task::spawn_blocking(move || get(&url, token.as_deref()))
            .await
            .map_err(|e| anyhow!("the HTTP request task failed: {e}"))??;
        match answer {
            Answer::Body(body) => {
                let (statements, cut): (Vec<_>, Vec<_>) =
                    parse(&body, database)?.into_iter().partition(|s| !is_cut(&s.query));
                let warnings =
                    (asked < limit).then(|| incomplete(database, limit, asked)).into_iter().collect();
                return Ok(Fetched { statements, warnings, cut: cut.len() });
            }
            Answer::TooBig if asked > 1 => asked = fewer(asked),
            Answer::TooBig => {
                return Ok(Fetched { warnings: vec![not_read(database)], ..Fetched::default() })
            }
        }
    }
}

/// The statements asked for after a too-big answer for `asked`: 500 → 50 → 5 → 1.
fn fewer(asked: usize) -> usize {
    if asked > RETRY_LIMIT {
        RETRY_LIMIT
    } else {
        (asked / 10).max(1)
    }
}

fn incomplete(database: &str, limit: usize, read: usize) -> String {
    format!(
        "WORKLOAD INCOMPLETE: the gateway's statements answer for database {database} with limit={limit} is over \
         {} MB; only its {read} most expensive statements were read. Lower [insight] max_query_text on the \
         gateway (huge statement texts) or pass fewer statements",
        MAX_ANSWER_BYTES >> 20
    )
}

fn not_read(database: &str) -> String {
    format!(
        "WORKLOAD NOT READ: even one statement of the gateway's answer for database {database} is over {} MB; \
         lower [insight] max_query_text on the gateway",
        MAX_ANSWER_BYTES >> 20
    )
}

fn statements_url(base_url: &str, database: &str, limit: usize) -> String {
    let database: String = url::form_urlencoded::byte_serialize(database.as_bytes()).collect();
    format!(
        "{}/api/v1/monitoring/statements?database={database}&limit={limit}",
        base_url.trim_end_matches('/')
    )
}

enum Answer {
    Body(String),
    /// Over MAX_ANSWER_BYTES.
    TooBig,
}

fn get(url: &str, token: Option<&str>) -> Result<Answer> {
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
    match response.body_mut().with_config().limit(MAX_ANSWER_BYTES).lossy_utf8(true).read_to_string() {
        Ok(body) => Ok(Answer::Body(body)),
        Err(ureq::Error::BodyExceedsLimit(_)) => Ok(Answer::TooBig),
        Err(e) => Err(anyhow!(e).context(format!("reading the answer of {url}"))),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_too_big_answer_is_asked_again_for_fewer_statements() {
        assert_eq!([500, 50, 5, 1].map(fewer), [50, 5, 1, 1]);
        assert!(is_cut("SELECT a FROM t WHERE b IN ( /* … 9000 bytes more */"));
        assert!(!is_cut("SELECT a FROM t /* bytes more */"));
        assert_eq!(
            statements_url("http://gw:9930/", "shop & co", 500),
            "http://gw:9930/api/v1/monitoring/statements?database=shop+%26+co&limit=500"
        );
    }
}
