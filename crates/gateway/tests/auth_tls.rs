//! Client authentication (trust, md5, SCRAM) against the auth_file, server authentication with
//! passwords, md5 hashes and SCRAM pass-through, and TLS on both sides.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use pgpilot_gateway::config::{AuthType, ClientTlsMode, Config, DatabaseConfig, ServerTlsMode};
use pgpilot_testkit::Cluster;

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
    path
}

/// A cluster requiring SCRAM over TCP with a role `app` (password `app-secret`).
fn scram_cluster() -> Cluster {
    let pg = Cluster::builder().host_auth("scram-sha-256").start();
    pg.create_user("app", "app-secret");
    pg.psql("postgres", "GRANT ALL ON SCHEMA public TO app");
    pg
}

fn app_config(pg: &Cluster, auth: AuthType, userlist: &Path) -> Config {
    let mut c = config_for(pg);
    c.pgpilot.auth_type = Some(auth);
    c.pgpilot.auth_file = Some(userlist.to_path_buf());
    c.databases.insert(
        "appdb".into(),
        DatabaseConfig {
            primary: format!("postgres://127.0.0.1:{}/postgres", pg.port()),
            ..Default::default()
        },
    );
    c
}

fn with_password(gw: &pgpilot_gateway::Gateway, user: &str, password: &str) -> String {
    format!("{} password={password}", conninfo(gw, user, "appdb"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_clients_with_plain_secret_and_scram_servers() {
    let pg = scram_cluster();
    let dir = tempfile::tempdir().unwrap();
    let users = write_file(dir.path(), "userlist.txt", "\"app\" \"app-secret\"\n");
    let gw = start(app_config(&pg, AuthType::ScramSha256, &users)).await;
    let c = try_connect(&with_password(&gw, "app", "app-secret")).await.expect("right password");
    let who: String = c.query_one("SELECT current_user", &[]).await.unwrap().get(0);
    assert_eq!(who, "app");
    let err = try_connect(&with_password(&gw, "app", "wrong")).await.expect_err("wrong password is refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");
    let err = try_connect(&with_password(&gw, "nobody", "x")).await.expect_err("unknown user is refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");
    // Which databases exist is told only after the password, as PostgreSQL and PgBouncer tell it.
    let unknown_db = |password: &str| format!("{} password={password}", conninfo(&gw, "app", "nosuchdb"));
    let err = try_connect(&unknown_db("wrong")).await.expect_err("wrong password");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");
    let err = try_connect(&unknown_db("app-secret")).await.expect_err("no such database");
    assert_eq!(sqlstate(&err).as_deref(), Some("3D000"), "{err}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_clients_and_md5_servers() {
    let pg = Cluster::builder().host_auth("md5").setting("password_encryption = 'md5'").start();
    pg.create_user("app", "app-secret");
    let stored = pg.psql("postgres", "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'");
    assert!(stored.starts_with("md5"));
    let dir = tempfile::tempdir().unwrap();
    // Only the md5 hash is known to pgpilot: enough for md5 on both sides.
    let users = write_file(dir.path(), "userlist.txt", &format!("\"app\" \"{stored}\"\n"));
    let gw = start(app_config(&pg, AuthType::Md5, &users)).await;
    let c = try_connect(&with_password(&gw, "app", "app-secret")).await.expect("md5 login");
    assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
    let err = try_connect(&with_password(&gw, "app", "nope")).await.err().unwrap();
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"));
    // psql with PGPASSWORD over md5 too.
    let out = psql_as(&gw, "app", "appdb", "SELECT current_user", &[("PGPASSWORD", "app-secret")]).unwrap();
    assert_eq!(out, "app");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_verifier_passes_through_without_a_plaintext_password() {
    let pg = scram_cluster();
    let verifier = pg.psql("postgres", "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'");
    assert!(verifier.starts_with("SCRAM-SHA-256$"));
    let dir = tempfile::tempdir().unwrap();
    let users = write_file(dir.path(), "userlist.txt", &format!("\"app\" \"{verifier}\"\n"));
    let gw = start(app_config(&pg, AuthType::ScramSha256, &users)).await;
    let c = try_connect(&with_password(&gw, "app", "app-secret")).await.expect("SCRAM pass-through");
    let who: String = c.query_one("SELECT session_user", &[]).await.unwrap().get(0);
    assert_eq!(who, "app");
    assert!(try_connect(&with_password(&gw, "app", "wrong")).await.is_err());
    gw.shutdown().await;
}

/// The password set again on the server (a new salt) leaves auth_file's verifier outdated: the
/// client's proven key cannot log in there. That is a credentials problem, told to the client as
/// the server would tell it (28P01); the healthy server is not marked down for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outdated_scram_verifier_is_a_password_error_not_a_server_down() {
    let pg = scram_cluster();
    let verifier = pg.psql("postgres", "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'");
    pg.psql("postgres", "ALTER ROLE app PASSWORD 'app-secret'");
    let dir = tempfile::tempdir().unwrap();
    let users = write_file(dir.path(), "userlist.txt", &format!("\"app\" \"{verifier}\"\n"));
    let gw = start(app_config(&pg, AuthType::ScramSha256, &users)).await;
    for _ in 0..3 {
        let err = try_connect(&with_password(&gw, "app", "app-secret")).await.expect_err("outdated key");
        assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err:?}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let db = gw.shared().database("appdb").unwrap();
    let primary = &db.backends[db.primary_index()];
    assert_eq!(primary.failed_checks.load(std::sync::atomic::Ordering::Relaxed), 0, "counted as down");
    assert!(!primary.is_banned(), "the server was banned for an outdated verifier");
    gw.shutdown().await;
}

/// A SCRAM exchange that breaks gets PostgreSQL's SQLSTATEs: a message it cannot read, another
/// nonce or channel-binding data 08P01, a mandatory extension 0A000; a wrong proof is a wrong
/// password, 28P01.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_scram_exchanges_get_postgresqls_sqlstates() {
    let pg = scram_cluster();
    let dir = tempfile::tempdir().unwrap();
    let users = write_file(dir.path(), "userlist.txt", "\"app\" \"app-secret\"\n");
    let gw = start(app_config(&pg, AuthType::ScramSha256, &users)).await;
    let zero_proof = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    assert_eq!(scram_error(&gw, "n,,m=ext,n=,r=abcdef", |_| None).await, "0A000");
    assert_eq!(scram_error(&gw, "n,,n=,r=abcdef", |_| Some("garbage".into())).await, "08P01");
    let other_nonce = |r: &str| Some(format!("c=biws,r={r}x,p={zero_proof}"));
    assert_eq!(scram_error(&gw, "n,,n=,r=abcdef", other_nonce).await, "08P01");
    let other_binding = |r: &str| Some(format!("c=eSws,r={r},p={zero_proof}"));
    assert_eq!(scram_error(&gw, "n,,n=,r=abcdef", other_binding).await, "08P01");
    let wrong_proof = |r: &str| Some(format!("c=biws,r={r},p={zero_proof}"));
    assert_eq!(scram_error(&gw, "n,,n=,r=abcdef", wrong_proof).await, "28P01");
    gw.shutdown().await;
}

/// Logs in as `app` with a raw SCRAM exchange: `first` as the client-first-message, then what
/// `last` makes of the server's nonce (None: nothing more is sent). Returns the error's SQLSTATE.
async fn scram_error(
    gw: &pgpilot_gateway::Gateway,
    first: &str,
    last: impl Fn(&str) -> Option<String>,
) -> String {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr(gw)).await.unwrap();
    s.write_all(&startup_packet_with(3 << 16, &[("user", "app"), ("database", "appdb")])).await.unwrap();
    let mut got = read_until_any(&mut s).await;
    let mut initial = b"SCRAM-SHA-256\0".to_vec();
    initial.extend_from_slice(&(first.len() as i32).to_be_bytes());
    initial.extend_from_slice(first.as_bytes());
    s.write_all(&message(b'p', &initial)).await.unwrap();
    loop {
        for (tag, body) in backend_messages(&got) {
            if tag == b'E' {
                let code = body.split(|b| *b == 0).find_map(|f| f.strip_prefix(b"C"));
                return String::from_utf8_lossy(code.expect("a SQLSTATE")).into_owned();
            }
            if tag == b'R' && body.starts_with(&11i32.to_be_bytes()) {
                let server_first = String::from_utf8_lossy(&body[4..]).into_owned();
                let nonce = server_first.split(',').find_map(|a| a.strip_prefix("r=")).unwrap().to_string();
                if let Some(fin) = last(&nonce) {
                    s.write_all(&message(b'p', fin.as_bytes())).await.unwrap();
                }
            }
        }
        got = read_until_any(&mut s).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_password_from_file_and_trust_clients() {
    let pg = scram_cluster();
    let dir = tempfile::tempdir().unwrap();
    let pw = write_file(dir.path(), "pw", "app-secret\n");
    let mut c = config_for(&pg);
    c.databases.insert(
        "appdb".into(),
        DatabaseConfig {
            primary: format!("postgres://app@127.0.0.1:{}/postgres", pg.port()),
            password_file: Some(pw),
            ..Default::default()
        },
    );
    let gw = start(c).await;
    // The URL's user is the server user whatever the client logs in as.
    let out = psql_as(&gw, "whoever", "appdb", "SELECT current_user", &[]).unwrap();
    assert_eq!(out, "app");
    gw.shutdown().await;
}

fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let crt = write_file(dir, "server.crt", &cert.cert.pem());
    let key = write_file(dir, "server.key", &cert.signing_key.serialize_pem());
    (crt, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_for_clients() {
    let pg = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = self_signed(dir.path());
    let mut c = config_for(&pg);
    c.tls.client_tls_sslmode = ClientTlsMode::Require;
    c.tls.client_tls_cert_file = Some(crt.clone());
    c.tls.client_tls_key_file = Some(key.clone());
    assert_eq!(c.environment_problems(), Vec::<String>::new());
    // check-config reads the pair as serve does: a key of another certificate is a problem.
    let other = tempfile::tempdir().unwrap();
    let (_, other_key) = self_signed(other.path());
    let mut mismatched = c.clone();
    mismatched.tls.client_tls_key_file = Some(other_key);
    let problems = mismatched.environment_problems().join("; ");
    assert!(problems.contains("client_tls_key_file"), "{problems}");
    let socket_dir = tempfile::tempdir().unwrap();
    c.pgpilot.unix_socket_dir = Some(socket_dir.path().to_path_buf());
    let gw = start(c).await;
    let root = crt.to_string_lossy().to_string();
    let out = psql_as(
        &gw,
        "postgres",
        "postgres",
        "SELECT 'over tls'",
        &[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &root), ("PGHOST", "localhost")],
    );
    assert_eq!(out.unwrap(), "over tls");
    let out = psql_as(&gw, "postgres", "postgres", "SHOW CLIENTS", &[("PGSSLMODE", "require")]);
    assert!(out.is_err(), "admin db is postgres-less here");
    // SHOW CLIENTS gives the client's TLS protocol and cipher suite, as PgBouncer does.
    let clients = psql_as(&gw, "postgres", "pgbouncer", "SHOW CLIENTS", &[("PGSSLMODE", "require")]).unwrap();
    assert!(clients.lines().any(|l| l.contains("|TLSv1.3/TLS_")), "{clients}");
    let refused = psql_as(&gw, "postgres", "postgres", "SELECT 1", &[("PGSSLMODE", "disable")]);
    assert!(refused.unwrap_err().contains("SSL required"));
    unix_socket_clients_need_no_tls(&gw, socket_dir.path()).await;
    // Replies over about 16 KB are not held back by Nagle's algorithm (TCP_NODELAY is on the TCP
    // socket under the TLS session): without it each waited for the client's delayed ACK, 40 ms.
    let script = write_file(dir.path(), "large.sql", "SELECT repeat('x', 20000);\n");
    let latency = tls_pgbench_latency_ms(&gw, &script);
    assert!(latency < 25.0, "a 20 KB result over TLS took {latency} ms on average");
    gw.shutdown().await;
}

/// As PostgreSQL: TLS is for TCP; an SSLRequest on the Unix socket is answered 'N' and a client
/// there logs in without TLS even when TCP clients must use it.
async fn unix_socket_clients_need_no_tls(gw: &pgpilot_gateway::Gateway, dir: &Path) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = addr(gw).port();
    let path = dir.join(format!(".s.PGSQL.{port}"));
    let mut raw = tokio::net::UnixStream::connect(&path).await.expect("the Unix socket");
    raw.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await.unwrap();
    let mut answer = [0u8; 1];
    raw.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    let conninfo = format!("host={} port={port} user=postgres dbname=postgres", dir.display());
    let client = try_connect(&conninfo).await.expect("a Unix-socket client without TLS");
    let row = client.query_one("SELECT 'over the socket'", &[]).await.unwrap();
    assert_eq!(row.get::<_, &str>(0), "over the socket");
}

/// The average latency pgbench reports for 20 runs of `script` over a TLS connection to `gw`.
fn tls_pgbench_latency_ms(gw: &pgpilot_gateway::Gateway, script: &Path) -> f64 {
    let script = script.to_str().expect("a UTF-8 path");
    let text = pgbench_over(addr(gw), "require", &["-n", "-c", "1", "-t", "20", "-f", script]);
    let line = text.lines().find(|l| l.starts_with("latency average")).unwrap_or_else(|| panic!("{text}"));
    line.split_whitespace().nth(3).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_servers() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = self_signed(dir.path());
    // PostgreSQL insists its key belongs to it and is private.
    let _ = std::process::Command::new("chown").arg("postgres").arg(&key).arg(&crt).status();
    let _ = std::process::Command::new("chmod").arg("600").arg(&key).status();
    let _ = std::process::Command::new("chmod").arg("755").arg(dir.path()).status();
    let pg = Cluster::builder()
        .setting("ssl = on")
        .setting(&format!("ssl_cert_file = '{}'", crt.display()))
        .setting(&format!("ssl_key_file = '{}'", key.display()))
        .start();
    for (mode, host) in [(ServerTlsMode::Require, "127.0.0.1"), (ServerTlsMode::VerifyFull, "localhost")] {
        let gw = start(server_tls_config(&pg, mode, host, &crt)).await;
        let client = connect(&gw).await;
        let ssl: bool = client
            .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "{mode:?}: the server connection is not encrypted");
        // A 20 KB parameter is not held back by Nagle's algorithm on its way to the server
        // (TCP_NODELAY under the TLS session), which cost 40 ms per query.
        let large = "x".repeat(20_000);
        let started = std::time::Instant::now();
        for _ in 0..10 {
            let n: i32 = client.query_one("SELECT length($1::text)", &[&large]).await.unwrap().get(0);
            assert_eq!(n, 20_000);
        }
        let per_query = started.elapsed() / 10;
        assert!(per_query < std::time::Duration::from_millis(25), "{mode:?}: {per_query:?} per query");
        // SHOW SERVERS says so, as PgBouncer does, in use and idle.
        let servers = psql(&gw, "pgbouncer", "SHOW SERVERS").unwrap();
        assert!(servers.lines().skip(1).all(|l| l.contains("|TLSv1.")), "{servers}");
        drop(client);
        assert!(
            eventually(std::time::Duration::from_secs(5), || {
                let servers = psql(&gw, "pgbouncer", "SHOW SERVERS").unwrap();
                servers.lines().any(|l| l.contains("|idle|") && l.contains("|TLSv1."))
            })
            .await,
            "an idle server's TLS: {}",
            psql(&gw, "pgbouncer", "SHOW SERVERS").unwrap()
        );
        gw.shutdown().await;
    }
    // verify-ca with a CA that did not sign the server's certificate fails.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _) = self_signed(other.path());
    let mut c = config_for(&pg);
    c.tls.server_tls_sslmode = ServerTlsMode::VerifyCa;
    c.tls.server_tls_ca_file = Some(other_ca);
    let gw = start(c).await;
    assert!(try_connect(&conninfo(&gw, "postgres", "postgres")).await.is_err());
    gw.shutdown().await;
}

/// A server asking for a password pgpilot does not have (a forced user without one) is not
/// marked down by the health monitor, nor asked again before server_login_retry (the monitor
/// used to try ten times a second and report the server down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_server_password_neither_bans_the_server_nor_floods_it() {
    let pg = scram_cluster();
    let mut config = config_for(&pg);
    config.databases.insert(
        "appdb".into(),
        DatabaseConfig {
            primary: format!("postgres://app@127.0.0.1:{}/postgres", pg.port()),
            ..Default::default()
        },
    );
    config.pgpilot.server_login_retry = pgpilot_gateway::config::Secs::from_secs(60);
    let gw = start(config).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let db = gw.shared().database("appdb").unwrap();
    let primary = &db.backends[db.primary_index()];
    assert_eq!(primary.failed_checks.load(std::sync::atomic::Ordering::Relaxed), 0, "counted as down");
    assert!(!primary.is_banned(), "the server was banned for pgpilot's missing password");
    let err = try_connect(&conninfo(&gw, "app", "appdb")).await.expect_err("no password to log in with");
    let message = format!("{err:?}");
    assert!(message.contains("does not have"), "{message}");
    gw.shutdown().await;
}

/// A login the server refused for its password is remembered for server_login_retry: the next
/// clients get the same answer without another attempt against the server (as PgBouncer does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_server_login_is_not_retried_before_server_login_retry() {
    let pg = scram_cluster();
    let mut config = config_for(&pg);
    config.databases.insert(
        "appdb".into(),
        DatabaseConfig {
            primary: format!("postgres://app:not-the-password@127.0.0.1:{}/postgres", pg.port()),
            ..Default::default()
        },
    );
    config.pgpilot.server_login_retry = pgpilot_gateway::config::Secs::from_secs(60);
    let gw = start(config).await;
    let attempts = || {
        let log = std::fs::read_to_string(pg.log_path()).unwrap();
        log.matches("password authentication failed for user \"app\"").count()
    };
    let err = try_connect(&conninfo(&gw, "app", "appdb")).await.expect_err("the server refuses the login");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");
    // The first client and the health monitor may each have tried once, at the same moment.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let first = attempts();
    assert!((1..=2).contains(&first), "{first} attempts");
    for _ in 0..5 {
        let err = try_connect(&conninfo(&gw, "app", "appdb")).await.expect_err("the refusal is remembered");
        assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(attempts(), first, "the server was asked again within server_login_retry");
    gw.shutdown().await;
}

/// A cluster serving TLS with a self-signed certificate for `names`; returns it with the
/// certificate (which is its own CA).
fn tls_cluster(dir: &Path, names: &[&str]) -> (Cluster, PathBuf) {
    let cert =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    tls_cluster_with(dir, &cert)
}

/// A cluster serving TLS with `cert`; returns it with the certificate's file.
fn tls_cluster_with(dir: &Path, cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> (Cluster, PathBuf) {
    let (crt, key) = write_server_cert(dir, cert);
    let pg = Cluster::builder()
        .setting("ssl = on")
        .setting(&format!("ssl_cert_file = '{}'", crt.display()))
        .setting(&format!("ssl_key_file = '{}'", key.display()))
        .start();
    (pg, crt)
}

/// Writes a server's certificate and key as server.crt and server.key in `dir`, as PostgreSQL
/// insists: the key belongs to the server and is private.
fn write_server_cert(dir: &Path, cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> (PathBuf, PathBuf) {
    let crt = write_file(dir, "server.crt", &cert.cert.pem());
    let key = write_file(dir, "server.key", &cert.signing_key.serialize_pem());
    let _ = std::process::Command::new("chown").arg("postgres").arg(&key).arg(&crt).status();
    let _ = std::process::Command::new("chmod").arg("600").arg(&key).status();
    let _ = std::process::Command::new("chmod").arg("755").arg(dir).status();
    (crt, key)
}

/// A self-signed certificate for `names` that is its own CA (basicConstraints CA:TRUE, as
/// `openssl req -x509` makes by default), valid until `not_after`.
fn self_signed_ca(names: &[&str], not_after: (i32, u8, u8)) -> rcgen::CertifiedKey<rcgen::KeyPair> {
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let signing_key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&signing_key).unwrap();
    rcgen::CertifiedKey { cert, signing_key }
}

/// A gateway's config checking `pg`'s certificate with `mode` against `ca`, reaching it as `host`.
fn server_tls_config(pg: &Cluster, mode: ServerTlsMode, host: &str, ca: &Path) -> Config {
    let mut c = config_for(pg);
    c.tls.server_tls_sslmode = mode;
    c.tls.server_tls_ca_file = Some(ca.to_path_buf());
    c.databases.insert(
        "postgres".into(),
        DatabaseConfig {
            primary: format!("postgres://postgres@{host}:{}/postgres", pg.port()),
            ..Default::default()
        },
    );
    c
}

/// Why a login through a gateway checking the server with `mode` and `ca` (and `host` in the
/// server's URL) failed, or None when it succeeded over TLS.
async fn server_check_failure(pg: &Cluster, mode: ServerTlsMode, host: &str, ca: &Path) -> Option<String> {
    let gw = start(server_tls_config(pg, mode, host, ca)).await;
    let failure = match try_connect(&conninfo(&gw, "postgres", "postgres")).await {
        Ok(client) => {
            let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]);
            assert!(row.await.unwrap().get::<_, bool>(0), "{mode:?} to {host}: not encrypted");
            None
        }
        Err(e) => Some(e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_string())),
    };
    gw.shutdown().await;
    failure
}

/// A self-signed server certificate that is its own CA (CA:TRUE) is trusted when the CA file
/// holds that very certificate, as libpq's OpenSSL and PgBouncer trust it; rustls alone refused
/// every login with CaUsedAsEndEntity. The host name (verify-full), the CA file's contents and the
/// certificate's validity still decide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_ca_certificate_in_the_ca_file_is_trusted() {
    const VALID: (i32, u8, u8) = (2090, 1, 1);
    let dir = tempfile::tempdir().unwrap();
    let server = self_signed_ca(&["localhost"], VALID);
    let (pg, crt) = tls_cluster_with(dir.path(), &server);
    let other = tempfile::tempdir().unwrap();
    let stranger = self_signed_ca(&["localhost"], VALID);
    let other_ca = write_file(other.path(), "other.crt", &stranger.cert.pem());
    let bundle = write_file(other.path(), "bundle.crt", &(stranger.cert.pem() + &server.cert.pem()));
    let (full, ca) = (ServerTlsMode::VerifyFull, ServerTlsMode::VerifyCa);
    for (mode, host, ca_file) in
        [(full, "localhost", &crt), (full, "localhost", &bundle), (ca, "127.0.0.1", &crt)]
    {
        let failure = server_check_failure(&pg, mode, host, ca_file).await;
        assert_eq!(failure, None, "{mode:?} to {host} with {}", ca_file.display());
    }
    let refusals = [
        (full, "127.0.0.1", &crt, "not valid for name"),
        (full, "localhost", &other_ca, "UnknownIssuer"),
        (ca, "localhost", &other_ca, "UnknownIssuer"),
    ];
    for (mode, host, ca_file, why) in refusals {
        let failure = server_check_failure(&pg, mode, host, ca_file).await;
        let failure =
            failure.unwrap_or_else(|| panic!("{mode:?} to {host} with {}: let through", ca_file.display()));
        assert!(failure.contains(why), "{mode:?} to {host}: {failure}");
    }
    // The same certificate once expired is refused, though the CA file holds it.
    let expired = self_signed_ca(&["localhost"], (2001, 1, 1));
    let (expired_crt, _) = write_server_cert(dir.path(), &expired);
    pg.psql("postgres", "SELECT pg_reload_conf()");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let failure = server_check_failure(&pg, ca, "localhost", &expired_crt).await;
    let failure = failure.expect("an expired certificate was let through");
    assert!(failure.contains("expired"), "{failure}");
}

/// A certificate for `alt_names` whose subject's Common Name is `common_name`, signed by `ca` or
/// (None) by itself as its own CA, as `openssl req -x509 -subj "/CN=..."` makes it.
fn named_cert(
    common_name: &str,
    alt_names: &[&str],
    ca: Option<&rcgen::Issuer<'_, rcgen::KeyPair>>,
) -> rcgen::CertifiedKey<rcgen::KeyPair> {
    let mut params =
        rcgen::CertificateParams::new(alt_names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    let signing_key = rcgen::KeyPair::generate().unwrap();
    let cert = match ca {
        Some(ca) => params.signed_by(&signing_key, ca).unwrap(),
        None => {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.self_signed(&signing_key).unwrap()
        }
    };
    rcgen::CertifiedKey { cert, signing_key }
}

/// verify-full takes the Common Name as the host name of a certificate whose subjectAltName
/// names no host, as libpq does (PostgreSQL's docs make such server certificates); webpki alone
/// refused them as "not valid for name". A subjectAltName host name excludes the Common Name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_falls_back_to_the_common_name_without_alt_names() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "a private CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_file = write_file(dir.path(), "ca.crt", &ca_cert.pem());
    let ca = rcgen::Issuer::new(ca_params, ca_key);
    let cn_only = named_cert("localhost", &[], Some(&ca));
    let (pg, _) = tls_cluster_with(dir.path(), &cn_only);
    let full = ServerTlsMode::VerifyFull;
    assert_eq!(server_check_failure(&pg, full, "localhost", &ca_file).await, None);
    let failure = server_check_failure(&pg, full, "127.0.0.1", &ca_file).await;
    assert!(failure.is_some_and(|f| f.contains("not valid for name")), "CN=localhost let 127.0.0.1 through");

    let serve = |cert: &rcgen::CertifiedKey<rcgen::KeyPair>| {
        let (crt, _) = write_server_cert(dir.path(), cert);
        pg.psql("postgres", "SELECT pg_reload_conf()");
        crt
    };
    serve(&named_cert("localhost", &["other.example"], Some(&ca)));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let failure = server_check_failure(&pg, full, "localhost", &ca_file).await;
    assert!(failure.is_some_and(|f| f.contains("not valid for name")), "the CN beat the subjectAltName");

    // PostgreSQL's docs' own: self-signed, CN only, and the CA file is the certificate itself.
    let own = serve(&named_cert("LocalHost", &[], None));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(server_check_failure(&pg, full, "localhost", &own).await, None);
    let failure = server_check_failure(&pg, full, "127.0.0.1", &own).await;
    assert!(failure.is_some_and(|f| f.contains("not valid for name")), "CN=LocalHost let 127.0.0.1 through");
}

/// A URL's own `sslmode=verify-full` / `verify-ca` checks the server's certificate against the
/// URL's `sslrootcert`, whatever `[tls]` says (it used to only refuse servers without TLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_urls_verify_mode_checks_the_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, crt) = tls_cluster(dir.path(), &["localhost"]);
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _) = self_signed(other.path());
    let port = pg.port();
    let cases = [
        ("verify-full", "localhost", &crt, true),
        ("verify-full", "localhost", &other_ca, false),
        ("verify-ca", "localhost", &other_ca, false),
        // verify-ca does not check the name; verify-full does.
        ("verify-ca", "127.0.0.1", &crt, true),
        ("verify-full", "127.0.0.1", &crt, false),
    ];
    for (mode, host, ca, ok) in cases {
        let mut c = config_for(&pg);
        c.tls.server_tls_sslmode = ServerTlsMode::Require;
        c.databases.insert(
            "postgres".into(),
            DatabaseConfig {
                primary: format!(
                    "postgres://postgres@{host}:{port}/postgres?sslmode={mode}&sslrootcert={}",
                    ca.display()
                ),
                ..Default::default()
            },
        );
        let gw = start(c).await;
        let result = try_connect(&conninfo(&gw, "postgres", "postgres")).await;
        match result {
            Ok(client) => {
                assert!(ok, "{mode} to {host} with the wrong CA or name was let through");
                let ssl: bool = client
                    .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
                    .await
                    .unwrap()
                    .get(0);
                assert!(ssl, "{mode}: not encrypted");
            }
            Err(e) => assert!(!ok, "{mode} to {host}: {e}"),
        }
        gw.shutdown().await;
    }
}

async fn server_connection_is_encrypted(gw: &pgpilot_gateway::Gateway) -> Result<bool, String> {
    let client = try_connect(&conninfo(gw, "postgres", "postgres")).await.map_err(|e| e.to_string())?;
    let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await;
    Ok(row.map_err(|e| e.to_string())?.get(0))
}

/// libpq's second attempt: under prefer a login pg_hba.conf refuses over TLS (hostnossl) or a
/// TLS handshake that fails is tried again in the clear, under allow a login refused in the clear
/// (hostssl) again over TLS. pgpilot's prefer (the default, and a converted pgbouncer.ini's
/// when server_tls_sslmode is unset) used to fail every login on such servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_and_allow_try_the_other_way_as_libpq_does() {
    let dir = tempfile::tempdir().unwrap();
    let (pg, _) = tls_cluster(dir.path(), &["localhost"]);
    let reconfigure = |hba_line: &str, settings: &[&str]| {
        std::fs::write(pg.data_dir().join("pg_hba.conf"), format!("local all all trust\n{hba_line}\n"))
            .unwrap();
        for setting in settings {
            pg.psql("postgres", setting);
        }
        pg.psql("postgres", "SELECT pg_reload_conf()");
    };
    let defaults: &[&str] = &["ALTER SYSTEM RESET ALL"];
    let cases = [
        ("hostnossl all all 127.0.0.1/32 trust", defaults, ServerTlsMode::Prefer, Ok(false)),
        ("hostssl all all 127.0.0.1/32 trust", defaults, ServerTlsMode::Prefer, Ok(true)),
        ("hostssl all all 127.0.0.1/32 trust", defaults, ServerTlsMode::Allow, Ok(true)),
        ("hostnossl all all 127.0.0.1/32 trust", defaults, ServerTlsMode::Allow, Ok(false)),
        ("hostnossl all all 127.0.0.1/32 trust", defaults, ServerTlsMode::Require, Err(())),
        // TLS 1.2 with CBC suites only, which rustls does not speak: the handshake fails.
        (
            "host all all 127.0.0.1/32 trust",
            &[
                "ALTER SYSTEM SET ssl_max_protocol_version = 'TLSv1.2'",
                "ALTER SYSTEM SET ssl_ciphers = 'AES128-SHA'",
            ],
            ServerTlsMode::Prefer,
            Ok(false),
        ),
    ];
    for (hba_line, settings, mode, expected) in cases {
        reconfigure(hba_line, settings);
        let mut c = config_for(&pg);
        c.tls.server_tls_sslmode = mode;
        let gw = start(c).await;
        let got = server_connection_is_encrypted(&gw).await;
        match expected {
            Ok(encrypted) => assert_eq!(got, Ok(encrypted), "{mode:?} with `{hba_line}`, {settings:?}"),
            Err(()) => assert!(got.is_err(), "{mode:?} with `{hba_line}` logged in: {got:?}"),
        }
        gw.shutdown().await;
    }
}

/// verify modes need a CA; unknown URL parameters (security ones above all) are not ignored.
#[test]
fn verify_modes_without_a_ca_and_unknown_url_parameters_are_refused() {
    let mut c = pgpilot_gateway::config::Config::default();
    let mut with_primary = |primary: &str| {
        c.databases.insert("d".into(), DatabaseConfig { primary: primary.into(), ..Default::default() });
        c.validate().join("; ")
    };
    let problems = with_primary("postgres://u@h/db?sslmode=verify-full");
    assert!(problems.contains("sslrootcert"), "{problems}");
    let problems = with_primary("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/does/not/exist");
    assert!(problems.contains("/does/not/exist does not exist"), "{problems}");
    let problems = with_primary("postgres://u@h/db?sslmode=verify-full&sslrootcert=system");
    assert!(!problems.contains("sslrootcert") && !problems.contains("[databases.d]"), "{problems}");
    let problems = with_primary("postgres://u@h/db?sslmode=require&sslcert=/c.pem");
    assert!(problems.contains("\"sslcert\" is not supported"), "{problems}");
}

/// A config whose one database `appdb` points nowhere: for what happens before any server.
fn offline_config(auth: AuthType, userlist: &Path) -> pgpilot_gateway::config::Config {
    let mut c = pgpilot_gateway::config::Config::default();
    c.pgpilot.listen = pgpilot_gateway::config::OneOrMany(vec!["127.0.0.1:0".into()]);
    c.pgpilot.http = Some("127.0.0.1:0".into());
    c.pgpilot.auth_type = Some(auth);
    c.pgpilot.auth_file = Some(userlist.to_path_buf());
    c.tls.server_tls_sslmode = ServerTlsMode::Disable;
    c.insight.server_probe_interval = pgpilot_gateway::config::Secs::from_secs(0);
    c.databases.insert(
        "appdb".into(),
        DatabaseConfig { primary: "postgres://app@127.0.0.1:1/postgres".into(), ..Default::default() },
    );
    c
}

/// An empty password in the auth_file logs no one in, with any auth_type (PostgreSQL never
/// accepts one; PgBouncer refuses it too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_password_never_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let users = write_file(dir.path(), "userlist.txt", "\"emptyuser\" \"\"\n");
    for auth in [AuthType::Plain, AuthType::Md5, AuthType::ScramSha256] {
        let gw = start(offline_config(auth, &users)).await;
        let err = try_connect(&format!("{} password=''", conninfo(&gw, "emptyuser", "appdb")))
            .await
            .expect_err("an empty password is refused");
        assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{auth:?}: {err}");
        assert!(format!("{err:?}").contains("password authentication failed"), "{auth:?}: {err:?}");
        gw.shutdown().await;
    }
}

/// client_login_timeout bounds the whole login: a client that spends most of it before its
/// startup packet and then stalls in authentication is closed at the timeout, not twice it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_login_timeout_is_one_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let users = write_file(dir.path(), "userlist.txt", "\"app\" \"app-secret\"\n");
    let mut c = offline_config(AuthType::Md5, &users);
    c.pgpilot.client_login_timeout = pgpilot_gateway::config::Secs::from_millis(2000);
    let gw = start(c).await;
    let started = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1400)).await;
    s.write_all(&startup_packet_with(3 << 16, &[("user", "app"), ("database", "appdb")])).await.unwrap();
    // The md5 challenge, then nothing from the client: the connection must end at ~2 s.
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(6), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("still open after {:?}", started.elapsed()),
        }
    }
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_millis(2800), "closed after {took:?}, not at the 2 s timeout");
    gw.shutdown().await;
}

/// A TLS client pgpilot turns away (here: it stalls after the handshake past
/// client_login_timeout) has its connection closed by pgpilot, not kept until it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_client_is_closed_at_the_login_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let users = write_file(dir.path(), "userlist.txt", "\"app\" \"app-secret\"\n");
    let (crt, key) = self_signed(dir.path());
    let mut c = offline_config(AuthType::Md5, &users);
    c.pgpilot.client_login_timeout = pgpilot_gateway::config::Secs::from_millis(1000);
    c.tls.client_tls_sslmode = ClientTlsMode::Allow;
    c.tls.client_tls_cert_file = Some(crt.clone());
    c.tls.client_tls_key_file = Some(key);
    let gw = start(c).await;
    let started = std::time::Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(addr(&gw)).await.unwrap();
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await.unwrap();
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(&crt).unwrap()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let client_port = tls.get_ref().0.local_addr().unwrap().port();
    // Stall: no startup packet. pgpilot must say why and end the connection, which reads as EOF.
    let mut got = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(6), tls.read_to_end(&mut got)).await;
    let took = started.elapsed();
    assert!(matches!(read, Ok(Ok(_)) | Ok(Err(_))), "the connection was not closed: {read:?} after {took:?}");
    assert!(String::from_utf8_lossy(&got).contains("client_login_timeout"), "{got:?}");
    assert!(took < std::time::Duration::from_millis(2500), "closed only after {took:?}");
    // Closed, not only shut down for writing: pgpilot no longer holds the socket (a closed
    // socket lingering in FIN_WAIT is the kernel's, with inode 0) though the client keeps its end.
    let gateway_port = addr(&gw).port();
    let held = || held_tcp_socket(gateway_port, client_port);
    assert!(
        eventually(std::time::Duration::from_secs(2), || !held()).await,
        "pgpilot still holds the socket"
    );
    drop(tls);
    gw.shutdown().await;
}

/// Whether a process still holds the TCP socket from `local_port` to `remote_port`
/// (/proc/net/tcp lists sockets no process holds any more with inode 0).
fn held_tcp_socket(local_port: u16, remote_port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |field: &str| field.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() > 9 && port(f[1]) == Some(local_port) && port(f[2]) == Some(remote_port) && f[9] != "0"
    })
}

fn bearer_get(url: &str, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(t) = token {
        request = request.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = request.call().unwrap();
    (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap_or_default())
}

/// A configured http_token_file that is missing or empty closes the API (it used to open it to
/// anyone, as if no token were configured); once it holds a token, the token is required.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_empty_token_file_closes_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let users = write_file(dir.path(), "userlist.txt", "\"app\" \"app-secret\"\n");
    let token_file = dir.path().join("token");
    let mut c = offline_config(AuthType::Md5, &users);
    c.pgpilot.http_token_file = Some(token_file.clone());
    let problems = c.environment_problems().join("; ");
    assert!(problems.contains("http_token_file"), "check-config must report it: {problems}");
    let gw = start(c).await;
    let url = format!("http://{}/api/v1/monitoring/pool-stats", gw.http_addr().unwrap());
    let get = |token: Option<&'static str>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || bearer_get(&url, token))
    };
    let (status, body) = get(None).await.unwrap();
    assert_eq!(status, 503, "missing token file: {body}");
    assert!(body.contains("http_token_file"), "{body}");
    std::fs::write(&token_file, "\n").unwrap();
    let (status, body) = get(None).await.unwrap();
    assert_eq!(status, 503, "empty token file: {body}");
    std::fs::write(&token_file, "t0ken\n").unwrap();
    assert_eq!(get(None).await.unwrap().0, 401);
    assert_eq!(get(Some("wrong")).await.unwrap().0, 401);
    assert_eq!(get(Some("t0ken")).await.unwrap().0, 200);
    // /health stays open for load balancers.
    let (status, _) = http_get(format!("http://{}/health", gw.http_addr().unwrap())).await;
    assert_eq!(status, 200);
    gw.shutdown().await;
}

/// check-config reports an unset password_env variable: serve refuses to start without it.
#[test]
fn an_unset_password_env_is_a_problem_for_check_config() {
    let mut c = pgpilot_gateway::config::Config::default();
    c.databases.insert(
        "d".into(),
        DatabaseConfig {
            primary: "postgres://u@h/db".into(),
            password_env: Some("PGPILOT_TEST_SURELY_UNSET_PASSWORD".into()),
            ..Default::default()
        },
    );
    let problems = c.environment_problems().join("; ");
    assert!(problems.contains("$PGPILOT_TEST_SURELY_UNSET_PASSWORD is not set"), "{problems}");
}
