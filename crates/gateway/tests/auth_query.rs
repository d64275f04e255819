//! auth_query: users missing from the auth_file are looked up in the database as auth_user (here
//! through a SECURITY DEFINER function, the least-privilege setup PgBouncer documents), for a role
//! stored as SCRAM and one stored as md5; wrong passwords and unknown users get the same error;
//! answers are cached for auth_query_cache_ttl (unknown users for auth_query_negative_ttl).

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use pgpilot_gateway::config::{AuthType, Config, DatabaseConfig, Secs};
use pgpilot_testkit::Cluster;

const SETUP: &str = "
SET password_encryption = 'scram-sha-256';
CREATE ROLE scram_user LOGIN PASSWORD 'scram-pw';
CREATE ROLE pgpilot_auth LOGIN PASSWORD 'auth-pw';
SET password_encryption = 'md5';
CREATE ROLE md5_user LOGIN PASSWORD 'md5-pw';
CREATE SCHEMA pgpilot_auth;
CREATE FUNCTION pgpilot_auth.lookup(p_user text) RETURNS TABLE (usename name, passwd text)
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog
  AS $$ SELECT usename, passwd FROM pg_shadow WHERE usename = p_user $$;
REVOKE ALL ON FUNCTION pgpilot_auth.lookup(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA pgpilot_auth TO pgpilot_auth;
GRANT EXECUTE ON FUNCTION pgpilot_auth.lookup(text) TO pgpilot_auth;
";

async fn login(
    gw: &pgpilot_gateway::Gateway,
    user: &str,
    password: &str,
) -> Result<String, (String, String)> {
    let conninfo = format!("{} password={password}", conninfo(gw, user, "appdb"));
    match try_connect(&conninfo).await {
        Ok(c) => Ok(c.query_one("SELECT current_user::text", &[]).await.expect("a query").get(0)),
        Err(e) => {
            let message = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string());
            Err((sqlstate(&e).unwrap_or_default(), message))
        }
    }
}

/// An auth_file holding only auth_user's password (everyone else is looked up) and a database
/// `appdb` whose pools log in as the client's user.
fn config_with_auth_user_only(pg: &Cluster, dir: &std::path::Path, auth: AuthType) -> Config {
    let userlist = dir.join("userlist.txt");
    std::fs::File::create(&userlist).unwrap().write_all(b"\"pgpilot_auth\" \"auth-pw\"\n").unwrap();
    let mut config = config_for(pg);
    config.pgpilot.auth_type = Some(auth);
    config.pgpilot.auth_file = Some(userlist);
    let primary = format!("postgres://127.0.0.1:{}/postgres", pg.port());
    config.databases.insert("appdb".into(), DatabaseConfig { primary, ..Default::default() });
    config
}

fn refused(user: &str) -> (String, String) {
    ("28P01".into(), format!("password authentication failed for user \"{user}\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_looked_up_as_auth_user_for_md5_and_scram_and_cached() {
    let pg = Cluster::builder().host_auth("md5").start();
    pg.psql("postgres", SETUP);
    let stored = pg.psql(
        "postgres",
        "SELECT string_agg(rolname || ':' || left(rolpassword, 6), ',' ORDER BY rolname) FROM pg_authid \
         WHERE rolname IN ('scram_user', 'md5_user')",
    );
    assert!(stored.starts_with("md5_user:md5") && stored.contains("scram_user:SCRAM-"), "{stored}");

    let dir = tempfile::tempdir().unwrap();
    let mut config = config_with_auth_user_only(&pg, dir.path(), AuthType::Md5);
    config.pgpilot.auth_user = Some("pgpilot_auth".into());
    config.pgpilot.auth_query_cache_ttl = Secs::from_secs(2);
    config.pgpilot.auth_query_negative_ttl = Secs::from_secs(1);
    config.databases.get_mut("appdb").unwrap().auth_query =
        Some("SELECT usename, passwd FROM pgpilot_auth.lookup($1)".into());
    let gw = start(config).await;
    let queries = || gw.shared().auth_query.queries();

    // SCRAM verifier: the client does SCRAM with pgpilot, the server gets the proven key.
    assert_eq!(login(&gw, "scram_user", "scram-pw").await, Ok("scram_user".into()));
    // md5 hash: the client does md5, the pools log in with the hash.
    assert_eq!(login(&gw, "md5_user", "md5-pw").await, Ok("md5_user".into()));
    assert_eq!(queries(), 2);

    // Wrong passwords and unknown users: the same refusal, so user names cannot be probed.
    assert_eq!(login(&gw, "scram_user", "nope").await, Err(refused("scram_user")));
    assert_eq!(login(&gw, "md5_user", "nope").await, Err(refused("md5_user")));
    assert_eq!(login(&gw, "ghost", "boo").await, Err(refused("ghost")));
    assert_eq!(login(&gw, "ghost", "boo").await, Err(refused("ghost")));
    assert_eq!(queries(), 3, "answers are cached, \"no such user\" too");

    // A user created meanwhile stays unknown for the negative TTL, then logs in.
    pg.psql("postgres", "CREATE ROLE ghost LOGIN PASSWORD 'boo'");
    assert_eq!(login(&gw, "ghost", "boo").await, Err(refused("ghost")));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(login(&gw, "ghost", "boo").await, Ok("ghost".into()));

    // A changed password is seen once the cached answer expires.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = queries();
    assert_eq!(login(&gw, "md5_user", "md5-pw").await, Ok("md5_user".into()), "looked up afresh");
    pg.psql("postgres", "SET password_encryption = 'md5'; ALTER ROLE md5_user PASSWORD 'md5-new'");
    assert_eq!(login(&gw, "md5_user", "md5-new").await, Err(refused("md5_user")), "still the cached hash");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(login(&gw, "md5_user", "md5-new").await, Ok("md5_user".into()), "looked up again");
    assert_eq!(login(&gw, "md5_user", "md5-pw").await, Err(refused("md5_user")));
    assert_eq!(queries(), before + 2);

    // auth_user itself comes from the auth_file, not from a lookup; the counter is in /metrics.
    let metrics = pgpilot_gateway::metrics::render(gw.shared());
    assert!(metrics.contains(&format!("pgpilot_auth_queries_total {}\n", queries())), "{metrics}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_auth_query_refuses_with_a_clear_error() {
    let pg = Cluster::builder().host_auth("md5").start();
    pg.psql("postgres", SETUP);
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_with_auth_user_only(&pg, dir.path(), AuthType::ScramSha256);
    // Per database, with PgBouncer's default query: pg_shadow is for superusers only.
    config.databases.get_mut("appdb").unwrap().auth_user = Some("pgpilot_auth".into());
    let gw = start(config).await;
    let err = login(&gw, "scram_user", "scram-pw").await.unwrap_err();
    assert_eq!(err.0, "08006", "{err:?}");
    assert!(err.1.contains("auth_query failed"), "{err:?}");
    assert!(!err.1.contains("pg_shadow"), "the server's message stays in pgpilot's log: {err:?}");
    gw.shutdown().await;
}

/// A database served by the `*` fallback looks its users up in itself, as PgBouncer does (the
/// common setup: `* = host=...` with auth_user), and an auth_dbname may name such a database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_of_the_fallback_entry_look_users_up_too() {
    let pg = Cluster::builder().host_auth("md5").start();
    pg.psql("postgres", SETUP);
    pg.psql("template1", "CREATE DATABASE reportdb TEMPLATE postgres");
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_with_auth_user_only(&pg, dir.path(), AuthType::ScramSha256);
    config.databases.remove("appdb");
    let fallback = format!("postgres://127.0.0.1:{}", pg.port());
    config.databases.insert("*".into(), DatabaseConfig { primary: fallback, ..Default::default() });
    config.pgpilot.auth_user = Some("pgpilot_auth".into());
    config.pgpilot.auth_query = Some("SELECT usename, passwd FROM pgpilot_auth.lookup($1)".into());
    assert_eq!(config.validate(), Vec::<String>::new());
    let gw = start(config.clone()).await;
    let as_scram = format!("{} password=scram-pw", conninfo(&gw, "scram_user", "reportdb"));
    let c = try_connect(&as_scram).await.expect("a login to a database of the fallback entry");
    let row = c.query_one("SELECT current_user::text, current_database()::text", &[]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), ("scram_user".into(), "reportdb".into()));
    gw.shutdown().await;

    config.pgpilot.auth_dbname = Some("reportdb".into());
    assert_eq!(config.validate(), Vec::<String>::new(), "auth_dbname may name a database of the fallback");
    let gw = start(config).await;
    let as_scram = format!("{} password=scram-pw", conninfo(&gw, "scram_user", "postgres"));
    let c = try_connect(&as_scram).await.expect("a login looked up in auth_dbname");
    assert_eq!(c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0), 1);
    gw.shutdown().await;
}

/// helper-148: auth_user with no auth_file at all (its password in a database's URL, as the docs
/// allow) used to let every client in without a password on loopback, auth_query never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_user_without_a_users_file_still_authenticates_clients() {
    let pg = Cluster::builder().host_auth("md5").start();
    pg.psql("postgres", SETUP);
    let mut config = config_for(&pg);
    config.pgpilot.auth_type = None;
    config.pgpilot.auth_user = Some("pgpilot_auth".into());
    config.pgpilot.auth_query = Some("SELECT usename, passwd FROM pgpilot_auth.lookup($1)".into());
    // auth_user's password: the URL of the database the lookups run in.
    config.pgpilot.auth_dbname = Some("authdb".into());
    let primary = format!("postgres://pgpilot_auth:auth-pw@127.0.0.1:{}/postgres", pg.port());
    config.databases.insert("authdb".into(), DatabaseConfig { primary, ..Default::default() });
    let primary = format!("postgres://127.0.0.1:{}/postgres", pg.port());
    config.databases.insert("appdb".into(), DatabaseConfig { primary, ..Default::default() });
    let gw = start(config).await;

    // No password (an empty one: tokio-postgres sends it when asked) and a wrong one.
    assert_eq!(login(&gw, "scram_user", "''").await, Err(refused("scram_user")));
    assert_eq!(login(&gw, "pgpilot_auth", "''").await, Err(refused("pgpilot_auth")));
    assert_eq!(login(&gw, "scram_user", "nope").await, Err(refused("scram_user")));
    assert_eq!(login(&gw, "scram_user", "scram-pw").await, Ok("scram_user".into()));
    assert!(gw.shared().auth_query.queries() >= 1, "the lookup ran");
    gw.shutdown().await;
}
