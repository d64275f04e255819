//! Client authentication (trust, md5, SCRAM) against the auth_file, server authentication with
//! passwords, md5 hashes and SCRAM pass-through, and TLS on both sides.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;
use pgpilot_gateway::config::{AuthType, ClientTlsMode, DatabaseConfig, ServerTlsMode};
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

fn app_config(pg: &Cluster, auth: AuthType, userlist: &Path) -> pgpilot_gateway::config::Config {
    let mut c = config_for(pg);
    c.pgpilot.auth_type = auth;
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
    c.tls.client_tls_key_file = Some(key);
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
    let refused = psql_as(&gw, "postgres", "postgres", "SELECT 1", &[("PGSSLMODE", "disable")]);
    assert!(refused.unwrap_err().contains("SSL required"));
    gw.shutdown().await;
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
        let mut c = config_for(&pg);
        c.tls.server_tls_sslmode = mode;
        c.tls.server_tls_ca_file = Some(crt.clone());
        c.databases.insert(
            "postgres".into(),
            DatabaseConfig {
                primary: format!("postgres://postgres@{host}:{}/postgres", pg.port()),
                ..Default::default()
            },
        );
        let gw = start(c).await;
        let client = connect(&gw).await;
        let ssl: bool = client
            .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "{mode:?}: the server connection is not encrypted");
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
