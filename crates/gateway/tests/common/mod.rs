//! Shared test harness: a real PostgreSQL cluster from testkit and a gateway in front of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use pgpilot_gateway::config::{Config, DatabaseConfig, QuickStart};
use pgpilot_gateway::Gateway;
use pgpilot_testkit::{pg_bin_dir, Cluster};

/// A config whose only database `postgres` points at the cluster, with trust auth on loopback.
pub fn config_for(cluster: &Cluster) -> Config {
    let mut c = Config::default();
    c.pgpilot.listen = pgpilot_gateway::config::OneOrMany(vec!["127.0.0.1:0".into()]);
    c.pgpilot.http = Some("127.0.0.1:0".into());
    c.pgpilot.auth_type = Some(pgpilot_gateway::config::AuthType::Trust);
    c.pgpilot.admin_users = vec!["postgres".into()];
    c.pgpilot.default_pool_size = 5;
    c.pgpilot.log_connections = false;
    c.pgpilot.log_disconnections = false;
    c.tls.server_tls_sslmode = pgpilot_gateway::config::ServerTlsMode::Disable;
    // The insight probe keeps its own server connections; tests that count connections want only the pools'.
    c.insight.server_probe_interval = pgpilot_gateway::config::Secs::from_secs(0);
    c.databases
        .insert("postgres".into(), DatabaseConfig { primary: cluster.admin_url(), ..Default::default() });
    c
}

pub async fn start(config: Config) -> Gateway {
    init_logs();
    Gateway::start(config, QuickStart::default()).await.expect("gateway starts")
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PGPILOT_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn addr(gw: &Gateway) -> SocketAddr {
    gw.addrs()[0]
}

/// tokio-postgres connection string through the gateway.
pub fn conninfo(gw: &Gateway, user: &str, db: &str) -> String {
    let a = addr(gw);
    format!("host={} port={} user={user} dbname={db} sslmode=disable", a.ip(), a.port())
}

pub async fn connect(gw: &Gateway) -> tokio_postgres::Client {
    connect_as(gw, "postgres", "postgres").await
}

pub async fn connect_as(gw: &Gateway, user: &str, db: &str) -> tokio_postgres::Client {
    try_connect(&conninfo(gw, user, db)).await.expect("connecting through the gateway")
}

pub async fn try_connect(conninfo: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// psql through the gateway (simple query protocol), returning unaligned tuples-only output.
pub fn psql(gw: &Gateway, db: &str, sql: &str) -> Result<String, String> {
    psql_as(gw, "postgres", db, sql, &[])
}

pub fn psql_as(
    gw: &Gateway,
    user: &str,
    db: &str,
    sql: &str,
    env: &[(&str, &str)],
) -> Result<String, String> {
    let a = addr(gw);
    let bin = pg_bin_dir().expect("PostgreSQL binaries");
    let out = Command::new(bin.tool("psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-tA",
            "-h",
            &a.ip().to_string(),
            "-p",
            &a.port().to_string(),
        ])
        .args(["-U", user, "-d", db, "-c", sql])
        .env("PGSSLMODE", "disable")
        .envs(env.iter().copied())
        .output()
        .expect("running psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim_end().to_string())
    }
}

/// The SQLSTATE of a tokio-postgres error, if the server (or pgpilot) sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

/// Polls `f` until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// Runs pgbench against `addr` and returns its output; panics when pgbench fails.
pub fn pgbench(addr: SocketAddr, args: &[&str]) -> String {
    pgbench_over(addr, "disable", args)
}

/// `pgbench` with PGSSLMODE `sslmode`.
pub fn pgbench_over(addr: SocketAddr, sslmode: &str, args: &[&str]) -> String {
    let bin = pg_bin_dir().expect("PostgreSQL binaries");
    let out = Command::new(bin.tool("pgbench"))
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string(), "-U", "postgres"])
        .args(args)
        .arg("postgres")
        .env("PGSSLMODE", sslmode)
        .output()
        .expect("running pgbench");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

/// GET over HTTP (off the async runtime's threads): the status and the body.
pub async fn http_get(url: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut resp = agent.get(&url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap_or_default())
    })
    .await
    .unwrap()
}

/// Waits until the result cache's relation catalog of database `postgres` lists `table` (and the
/// function catalog is loaded): before that nothing is cached.
pub async fn wait_cache_catalog(gw: &Gateway, table: &str) {
    let db = gw.shared().database("postgres").unwrap();
    let ok = eventually(Duration::from_secs(20), || {
        !db.cache.catalog_stale()
            && db.cache.relations.load().relations().iter().any(|r| r.name == table)
            && !db.functions.load().is_empty()
    })
    .await;
    assert!(ok, "the relation catalog never listed {table}");
}

/// Raw protocol: a startup packet for user and database `postgres`.
pub fn startup_packet() -> Vec<u8> {
    startup_packet_with(3 << 16, &[("user", "postgres"), ("database", "postgres")])
}

/// Raw protocol: a startup packet asking for protocol `version` (major << 16 | minor).
pub fn startup_packet_with(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        for text in [k, v] {
            body.extend_from_slice(text.as_bytes());
            body.push(0);
        }
    }
    body.push(0);
    let mut p = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    p.extend(body);
    p
}

/// Raw protocol: a frontend message.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Raw protocol: a simple Query.
pub fn query_message(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// Raw protocol: reads until a ReadyForQuery with status idle; returns everything read.
pub async fn read_until_ready(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"Z\0\0\0\x05I") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Raw protocol: whatever one read brings (at least a byte), within 5 s.
pub async fn read_until_any(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(n > 0, "closed early");
    buf[..n].to_vec()
}

/// Raw protocol: a logged-in connection as `postgres`, ready for queries.
pub async fn raw_login(addr: SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&startup_packet()).await.unwrap();
    read_until_ready(&mut s).await;
    s
}

/// Raw protocol: backend bytes split into (tag, body) messages.
pub fn backend_messages(bytes: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 5 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos + 1..pos + 5].try_into().unwrap()) as usize;
        out.push((bytes[pos], &bytes[pos + 5..pos + 1 + len]));
        pos += 1 + len;
    }
    out
}

/// The type bytes of the backend messages in `bytes`, in order (b"TDCZ" for a one-row SELECT).
pub fn message_tags(bytes: &[u8]) -> Vec<u8> {
    backend_messages(bytes).iter().map(|m| m.0).collect()
}

/// Raw protocol: a Parse with no parameter types.
pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for text in [name, sql] {
        body.extend_from_slice(text.as_bytes());
        body.push(0);
    }
    body.extend_from_slice(&[0, 0]);
    message(b'P', &body)
}

/// Raw protocol: a Bind of `statement` to the unnamed portal, Execute of it, and nothing more.
pub fn bind_execute(statement: &str) -> Vec<u8> {
    let mut body = vec![0];
    body.extend_from_slice(statement.as_bytes());
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
    let mut out = message(b'B', &body);
    out.extend(message(b'E', &[0, 0, 0, 0, 0]));
    out
}

/// Raw protocol: a Sync.
pub fn sync() -> Vec<u8> {
    message(b'S', &[])
}
