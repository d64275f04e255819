//! The dashboard in a real browser: headless Chromium (Debian's chromium + chromium-driver, over
//! WebDriver) loads the page from a running pgpilot with traffic, is asked for the API token, and
//! shows the same numbers the API serves.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pgpilot_gateway::insight::{StatementEvent, Target};
use pgpilot_testkit::Cluster;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// chromedriver on a free port, killed on drop, with one browser session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        for (bin, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} is missing: install it with `apt-get install -y {package}` (Debian)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while agent().get(&format!("{base}/status")).call().is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1400,2400".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let mut browser = Browser { driver, base, session: String::new(), _profile: profile };
        let created = browser.call("POST", "/session", Some(caps));
        browser.session = created["sessionId"].as_str().expect("a session id").to_string();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let result = match method {
            "GET" => agent().get(&url).call(),
            "DELETE" => agent().delete(&url).call(),
            _ => agent()
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(json!({})).to_string()),
        };
        let mut resp = result.unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let text = resp.body_mut().read_to_string().unwrap();
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("WebDriver answer ({e}): {text}"));
        assert!(resp.status().is_success(), "WebDriver {method} {path}: {text}");
        v["value"].clone()
    }

    fn session(&self, path: &str, body: Value) -> Value {
        self.call("POST", &format!("/session/{}{path}", self.session), Some(body))
    }

    fn open(&self, url: &str) {
        self.session("/url", json!({"url": url}));
    }

    fn js(&self, script: &str) -> Value {
        self.session("/execute/sync", json!({"script": script, "args": []}))
    }

    fn element(&self, css: &str) -> String {
        let v = self.session("/element", json!({"using": "css selector", "value": css}));
        v[ELEMENT].as_str().expect("an element").to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.session(&format!("/element/{id}/value"), json!({"text": text}));
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.session(&format!("/element/{id}/click"), json!({}));
    }

    /// Polls `script` (which returns a boolean) until true.
    fn wait_for(&self, what: &str, script: &str) {
        let started = Instant::now();
        while self.js(script) != json!(true) {
            assert!(started.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let v = self.call("GET", &format!("/session/{}/screenshot", self.session), None);
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = agent().delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn api(base: &str, path: &str, token: &str) -> Value {
    let mut resp = agent()
        .get(&format!("{base}{path}"))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
}

fn number(text: &str) -> u64 {
    text.replace(',', "").trim().parse().unwrap_or_else(|_| panic!("not a whole number: {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_the_api_serves() {
    let pg = Cluster::start();
    pg.psql("postgres", "CREATE TABLE accounts(id int PRIMARY KEY, balance int); INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 100) g");
    let token = "dashboard-token";
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), token).unwrap();
    let mut config = config_for(&pg);
    config.pgpilot.http_token_file = Some(token_file.path().to_path_buf());
    config.insight.server_probe_interval = pgpilot_gateway::config::Secs::from_secs(1);
    let gw = start(config).await;
    let base = format!("http://{}", gw.http_addr().unwrap());

    // Traffic through the pool, then statements planted as the session will report them.
    let client = connect(&gw).await;
    for i in 0..120 {
        client.query("SELECT balance FROM accounts WHERE id = $1", &[&(i % 100 + 1)]).await.unwrap();
    }
    client
        .batch_execute("BEGIN; UPDATE accounts SET balance = balance + 1 WHERE id = 1; COMMIT")
        .await
        .unwrap();
    let insight = &gw.shared().insight;
    let (db, user): (Arc<str>, Arc<str>) = (Arc::from("postgres"), Arc::from("postgres"));
    let planted: [(u64, &str, u64, u64, Target); 3] = [
        (0x1111, "SELECT balance FROM accounts WHERE id = $1", 1_234, 1_000, Target::Primary),
        (0x2222, "UPDATE accounts SET balance = balance + $1 WHERE id = $2", 57, 3_000, Target::Primary),
        (0x3333, "SELECT pg_sleep($1)", 3, 400_000, Target::Replica),
    ];
    for (fingerprint, text, calls, us, target) in planted {
        let query: Arc<str> = Arc::from(text);
        for _ in 0..calls {
            insight.record(&StatementEvent {
                fingerprint,
                normalized: &query,
                database: &db,
                user: &user,
                duration: Duration::from_micros(us),
                wait: Duration::ZERO,
                rows: 1,
                error: None,
                target,
                client_addr: "127.0.0.1:40000",
                server: &pg.addr(),
                parameters: None,
                client_params: None,
            });
        }
    }

    let page = format!("{base}/");
    let screenshot = std::env::var_os("PGPILOT_DASHBOARD_SCREENSHOT");
    let numbers = tokio::task::spawn_blocking(move || {
        let browser = Browser::start();
        browser.open(&page);
        // The API wants the token: the page asks for it.
        browser.wait_for("the token dialog", "return document.getElementById('token-dialog').open === true");
        browser.type_into("#token-input", token);
        browser.click("#token-save");
        browser.wait_for("two updates", "return Number(document.body.dataset.updates || 0) >= 2");
        // The planted statements beside the ones the session recorded from the traffic above.
        browser.wait_for("the planted statements", "return ['1111', '2222', '3333'].every(f => document.querySelector(`#statements tr[data-fingerprint='000000000000${f}']`))");
        browser.wait_for("the server probe", "return document.querySelectorAll('#servers li[data-server]').length >= 1");
        if let Some(path) = screenshot {
            browser.screenshot(std::path::Path::new(&path));
        }
        browser.js(
            "const text = (row, t) => row.querySelector(`[data-test=${t}]`).textContent;
             return {
               pools: [...document.querySelectorAll('#pools tr[data-pool]')].map(r => [r.dataset.pool, text(r, 'transactions'), text(r, 'queries')]),
               statements: [...document.querySelectorAll('#statements tr[data-fingerprint]')].map(r => [r.dataset.fingerprint, text(r, 'calls'), text(r, 'p95')]),
               slow: [...document.querySelectorAll('#slow tr[data-fingerprint]')].map(r => [r.dataset.fingerprint, text(r, 'duration')]),
               status: document.getElementById('status').textContent,
               routing: document.querySelector('[data-test=routing-primary]').textContent,
               cache: document.getElementById('cache').textContent,
               advisor: document.getElementById('advisor').textContent,
               banner: document.getElementById('banner').hidden,
               kpiClients: document.getElementById('kpi-clients').textContent,
             };",
        )
    })
    .await
    .unwrap();

    // Pools: the transaction and query counts shown are the API's.
    let stats = api(&base, "/api/v1/monitoring/pool-stats", token);
    let shown: Vec<(String, u64, u64)> = numbers["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_string(),
                number(r[1].as_str().unwrap()),
                number(r[2].as_str().unwrap()),
            )
        })
        .collect();
    let api_pools = stats["pools"].as_array().unwrap();
    assert_eq!(shown.len(), api_pools.len(), "{numbers}");
    for p in api_pools {
        let key = format!(
            "{}/{}@{}",
            p["database"].as_str().unwrap(),
            p["user"].as_str().unwrap(),
            p["server"].as_str().unwrap()
        );
        let row =
            shown.iter().find(|r| r.0 == key).unwrap_or_else(|| panic!("pool {key} not shown: {numbers}"));
        assert_eq!(row.1, p["transactions"].as_u64().unwrap(), "transactions of {key}");
        assert_eq!(row.2, p["queries"].as_u64().unwrap(), "queries of {key}");
        assert!(row.1 >= 121, "the traffic went through the pool: {row:?}");
    }

    // Top statements: calls and p95 as the API has them, in the API's order.
    let statements = api(&base, "/api/v1/monitoring/statements?limit=15", token);
    let api_rows = statements["statements"].as_array().unwrap();
    let shown = numbers["statements"].as_array().unwrap();
    assert_eq!(shown.len(), api_rows.len());
    for (s, row) in api_rows.iter().zip(shown) {
        assert_eq!(row[0], s["fingerprint"], "same order as the API (by total time)");
        assert_eq!(number(row[1].as_str().unwrap()), s["calls"].as_u64().unwrap());
    }
    assert_eq!(shown[0][0], "0000000000001111", "1234 × 1 ms is the largest total, then 3 × 400 ms");
    assert_eq!(shown[0][1], "1,234");
    assert_eq!(shown[1][2], "400 ms", "p95 of the 400 ms statement");
    let slow: Vec<_> =
        numbers["slow"].as_array().unwrap().iter().filter(|r| r[0] == "0000000000003333").collect();
    assert_eq!(slow.len(), 3, "the three 400 ms calls are slow: {numbers}");
    assert_eq!(slow[0][1], "400 ms");
    // 1,291 planted on the primary plus the 121 statements the traffic sent; 3 on the replica.
    assert_eq!(numbers["routing"], "Primary 99.8% (1,412)");
    assert_eq!(numbers["cache"], "The result cache is off.", "no database enables it: {numbers}");
    // The first look starts an advisor run in the background: "no report yet", or the report if
    // a later refresh already brought it; never still loading.
    let advisor = numbers["advisor"].as_str().unwrap();
    assert!(!advisor.contains("Loading"), "the advisor panel was filled: {numbers}");
    assert!(
        advisor.contains("first check of the database is running")
            || ["critical", "warning", "info", "No findings"].iter().any(|w| advisor.contains(w)),
        "{numbers}"
    );
    assert_eq!(numbers["banner"], true, "no error banner");
    assert!(matches!(numbers["status"].as_str(), Some("ok" | "warning" | "critical")), "{numbers}");
    drop(client);
    gw.shutdown().await;
}

/// When the advisor cannot give a report, the panel says why (the API's 404 carries the reason).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_advisor_panel_says_why_there_is_no_report() {
    let pg = Cluster::start();
    let mut config = config_for(&pg);
    config.advisor.enabled = false;
    let gw = start(config).await;
    let page = format!("http://{}/", gw.http_addr().unwrap());
    let advisor = tokio::task::spawn_blocking(move || {
        let browser = Browser::start();
        browser.open(&page);
        browser.wait_for("an update", "return Number(document.body.dataset.updates || 0) >= 1");
        browser.wait_for(
            "the advisor panel",
            "return !document.getElementById('advisor').textContent.includes('Loading')",
        );
        browser.js("return document.getElementById('advisor').textContent;")
    })
    .await
    .unwrap();
    assert_eq!(advisor, "No advisor report: the advisor is off ([advisor] enabled = false)", "{advisor}");
    gw.shutdown().await;
}
