//! The slow-query log: statements slower than log_min_duration are written to the log (target
//! `pgpilot::slow_query`) and kept in a ring for GET /api/v1/monitoring/slow-queries. Only slow
//! statements come here, so the one mutex is off the common path.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

use super::{StatementEvent, Target};

#[derive(Debug, Clone, Serialize)]
pub struct SlowQuery {
    /// When it finished, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    pub fingerprint: String,
    #[serde(serialize_with = "arc_str")]
    pub query: Arc<str>,
    #[serde(serialize_with = "arc_str")]
    pub database: Arc<str>,
    #[serde(serialize_with = "arc_str")]
    pub user: Arc<str>,
    pub client: String,
    /// The client's application_name, when it set one.
    pub application_name: Option<String>,
    pub server: String,
    pub target: Target,
    pub duration_ms: f64,
    pub wait_ms: f64,
    pub rows: u64,
    /// The SQLSTATE when it failed.
    pub error: Option<String>,
    /// Parameter values (text form) when log_parameters is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Vec<Option<String>>>,
}

fn arc_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

pub struct SlowLog {
    ring: Mutex<VecDeque<SlowQuery>>,
    capacity: std::sync::atomic::AtomicUsize,
}

impl SlowLog {
    pub fn new(capacity: usize) -> SlowLog {
        SlowLog {
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity: std::sync::atomic::AtomicUsize::new(capacity),
        }
    }

    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity, std::sync::atomic::Ordering::Relaxed);
        let mut ring = self.ring.lock();
        while ring.len() > capacity {
            ring.pop_front();
        }
    }

    /// Logs one slow statement and keeps it, its text cut to `max_text` bytes (see
    /// `store::bounded_text`). `parameters` is passed only when log_parameters is on.
    pub fn push(&self, ev: &StatementEvent<'_>, log_parameters: bool, max_text: usize) {
        let parameters = ev.parameters.filter(|_| log_parameters).map(|p| bounded_parameters(p, max_text));
        let q = SlowQuery {
            at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            fingerprint: format!("{:016x}", ev.fingerprint),
            query: super::store::bounded_text(ev.normalized, max_text),
            database: ev.database.clone(),
            user: ev.user.clone(),
            client: ev.client_addr.to_string(),
            application_name: ev
                .client_params
                .and_then(|p| p.get("application_name"))
                .filter(|name| !name.is_empty())
                .map(str::to_string),
            server: ev.server.to_string(),
            target: ev.target,
            duration_ms: millis(ev.duration),
            wait_ms: millis(ev.wait),
            rows: ev.rows,
            error: ev.error.map(str::to_string),
            parameters,
        };
        // An absent Option field is left out of the event: parameters appear only when configured,
        // as a JSON array (null for a NULL) that log pipelines can parse.
        let parameters_json = q.parameters.as_ref().and_then(|p| serde_json::to_string(p).ok());
        tracing::warn!(
            target: "pgpilot::slow_query",
            duration_ms = q.duration_ms,
            database = &*q.database,
            user = &*q.user,
            client = %q.client,
            application_name = q.application_name.as_deref(),
            server = %q.server,
            target_role = q.target.as_str(),
            rows = q.rows,
            error = q.error.as_deref(),
            parameters = parameters_json.as_deref(),
            query = &*q.query,
            "slow statement"
        );
        let capacity = self.capacity.load(std::sync::atomic::Ordering::Relaxed);
        if capacity == 0 {
            return;
        }
        let mut ring = self.ring.lock();
        while ring.len() >= capacity {
            ring.pop_front();
        }
        ring.push_back(q);
    }

    /// The newest first: those at least `threshold_ms` long, of `database` when given, up to `limit`.
    pub fn list(&self, threshold_ms: f64, database: Option<&str>, limit: usize) -> Vec<SlowQuery> {
        self.ring
            .lock()
            .iter()
            .rev()
            .filter(|q| q.duration_ms >= threshold_ms && database.is_none_or(|d| *q.database == *d))
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn clear(&self) {
        self.ring.lock().clear();
    }
}

/// Milliseconds to the microsecond, without the binary noise of a float product (151.719, not
/// 151.71945200000002).
fn millis(d: std::time::Duration) -> f64 {
    d.as_micros() as f64 / 1e3
}

/// A slow statement's parameters, at most `max` bytes of values in all as its text is (a
/// 60,000-row VALUES list must not be logged, kept and served whole): a value that crosses the
/// budget is cut, and the ones after it are counted in a last entry.
fn bounded_parameters(values: &[Option<String>], max: usize) -> Vec<Option<String>> {
    let mut left = max;
    let mut kept = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let len = value.as_ref().map_or(0, String::len);
        if len <= left {
            left -= len;
            kept.push(value.clone());
            continue;
        }
        let mut more = values.len() - i;
        if let Some(v) = value.as_ref().filter(|_| left > 0) {
            let mut cut = left;
            while !v.is_char_boundary(cut) {
                cut -= 1;
            }
            kept.push(Some(format!("{}… ({} bytes more)", &v[..cut], v.len() - cut)));
            more -= 1;
        }
        if more > 0 {
            kept.push(Some(format!("… {more} more values")));
        }
        break;
    }
    kept
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use parking_lot::Mutex;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_log_line_has_the_context_and_parameters_only_when_configured() {
        let (query, db, user): (Arc<str>, Arc<str>, Arc<str>) =
            (Arc::from("SELECT * FROM users WHERE email = $1"), Arc::from("app"), Arc::from("web"));
        let params = vec![Some("alice@example.com".to_string()), None];
        let mut client = crate::session::params::ParamSet::default();
        client.set("application_name", "billing-worker");
        let ev = StatementEvent {
            fingerprint: 0xabc,
            normalized: &query,
            database: &db,
            user: &user,
            duration: Duration::from_nanos(150_123_456),
            wait: Duration::ZERO,
            rows: 1,
            error: None,
            target: Target::Primary,
            client_addr: "10.0.0.7:52144",
            server: "10.0.0.2:5432",
            parameters: Some(&params),
            client_params: Some(&client),
        };
        let out = Captured::default();
        let writer = out.clone();
        let subscriber =
            tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        let log = SlowLog::new(2);
        tracing::subscriber::with_default(subscriber, || {
            log.push(&ev, false, usize::MAX);
            log.push(&ev, true, usize::MAX);
            log.push(&ev, false, usize::MAX);
        });
        let text = String::from_utf8(out.0.lock().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for needle in
            ["WARN", "pgpilot::slow_query", "duration_ms=150.123 ", "database=\"app\"", "user=\"web\""]
        {
            assert!(lines[0].contains(needle), "{needle} in {}", lines[0]);
        }
        assert!(lines[0].contains("client=10.0.0.7:52144") && lines[0].contains("server=10.0.0.2:5432"));
        assert!(lines[0].contains("application_name=\"billing-worker\""), "{}", lines[0]);
        assert!(lines[0].contains("SELECT * FROM users WHERE email = $1"));
        assert!(!lines[0].contains("alice") && !lines[0].contains("parameters"), "{}", lines[0]);
        // A JSON array, NULL as null, not Rust's debug form.
        assert!(lines[1].contains(r#"parameters="[\"alice@example.com\",null]""#), "{}", lines[1]);
        // The ring keeps the newest two, and their parameters only where they were logged.
        let kept = log.list(0.0, None, 10);
        assert_eq!(kept.len(), 2);
        assert!(kept[0].parameters.is_none() && kept[1].parameters.is_some());
    }

    #[test]
    fn parameters_are_bounded_like_the_text() {
        let many: Vec<Option<String>> = (0..60_000).map(|i| Some(format!("value-{i}"))).collect();
        let kept = bounded_parameters(&many, 40);
        let bytes: usize = kept.iter().flatten().map(String::len).sum();
        assert!(bytes < 100, "{kept:?}");
        assert_eq!(kept[0].as_deref(), Some("value-0"));
        assert_eq!(kept.last().unwrap().as_deref(), Some("… 59994 more values"), "{kept:?}");
        // A long value is cut on a character boundary and says how much is missing.
        let wide = vec![None, Some("é".repeat(10)), Some("x".into())];
        assert_eq!(
            bounded_parameters(&wide, 5),
            vec![None, Some("éé… (16 bytes more)".into()), Some("… 1 more values".into())]
        );
        assert_eq!(bounded_parameters(&wide, 100), wide);
    }
}
